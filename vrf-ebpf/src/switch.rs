//! The dead-man switch: the data plane decides only while vrfd keeps its heartbeat fresh.
//!
//! Per packet, one array lookup (inlined by the verifier) and a compare: no clock read. The
//! clock is read by the beat (`xdp_vrf_beat`, run by vrfd with each refresh of `HEARTBEAT`),
//! which arms a BPF timer for what is left of the lease; the timer's callback expires the
//! switch. The timer lives in the pinned `SWITCH` map, so it fires with vrfd gone (crashed,
//! hung, killed): that is its purpose.
use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS},
    helpers::{
        bpf_ktime_get_ns, bpf_timer_cancel, bpf_timer_init, bpf_timer_set_callback, bpf_timer_start,
    },
};
use vrf_common::SwitchState;

use crate::maps::{SwitchSlot, HEARTBEAT, SWITCH};

/// 1 in every program vrfd loads. The benchmark loads a copy with 0 (`set_global`) to measure
/// what the switch costs per packet: `.rodata` is frozen, so the verifier sees a constant and
/// removes the lookup.
#[no_mangle]
static DEADMAN: u8 = 1;

/// The timers' clock (bpf_timer_init's flags): CLOCK_MONOTONIC, the one vrfd writes
/// deadlines in.
const CLOCK_MONOTONIC: u64 = 1;

/// vrfd stopped beating: the maps may be stale, the kernel must decide.
#[inline(always)]
pub fn vrfd_gone() -> bool {
    if unsafe { core::ptr::read_volatile(&DEADMAN) } == 0 {
        return false;
    }
    match SWITCH.get(0) {
        Some(s) => {
            let state = unsafe { core::ptr::read_volatile(&s.state) };
            state == SwitchState::Expired as u64
        }
        // Index 0 always exists; a missing entry cannot vouch for vrfd.
        None => true,
    }
}

/// The timer ran out: vrfd did not beat within its lease.
unsafe extern "C" fn expire(
    _map: *mut core::ffi::c_void,
    _key: *mut u32,
    slot: *mut SwitchSlot,
) -> i32 {
    unsafe { core::ptr::write_volatile(&mut (*slot).state, SwitchState::Expired as u64) };
    0
}

/// Arm the switch for what is left of `HEARTBEAT`'s deadline: XDP_PASS when armed (alive),
/// XDP_DROP when the deadline is 0 (unarmed) or past (expired), XDP_ABORTED when the timer
/// could not be armed (then expired: nothing vouches for vrfd).
#[inline(always)]
pub fn beat() -> u32 {
    let (Some(hb), Some(slot)) = (HEARTBEAT.get(0), SWITCH.get_ptr_mut(0)) else {
        return XDP_ABORTED;
    };
    let deadline = hb.deadline_ns;
    let now = unsafe { bpf_ktime_get_ns() };
    unsafe {
        let timer = core::ptr::addr_of_mut!((*slot).timer);
        let state = core::ptr::addr_of_mut!((*slot).state);
        if deadline == 0 || now >= deadline {
            bpf_timer_cancel(timer);
            let s = if deadline == 0 {
                SwitchState::Unarmed
            } else {
                SwitchState::Expired
            };
            core::ptr::write_volatile(state, s as u64);
            return XDP_DROP;
        }
        let map = core::ptr::addr_of!(SWITCH) as *mut core::ffi::c_void;
        // -EBUSY once initialised: the same timer, re-armed below.
        bpf_timer_init(timer, map, CLOCK_MONOTONIC);
        if bpf_timer_set_callback(timer, expire as *mut core::ffi::c_void) != 0
            || bpf_timer_start(timer, deadline - now, 0) != 0
        {
            core::ptr::write_volatile(state, SwitchState::Expired as u64);
            return XDP_ABORTED;
        }
        core::ptr::write_volatile(state, SwitchState::Alive as u64);
    }
    XDP_PASS
}
