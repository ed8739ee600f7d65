//! The dead-man switch: the data plane decides only while vrfd keeps its heartbeat fresh.
//!
//! One array lookup (inlined by the verifier) and one coarse clock read (the jiffy-resolution
//! clock, no hardware read) per packet. No BPF timer: only a BPF program can arm one, so each
//! beat would be a program run rather than a map write, and an upgrade would beat the old
//! build's timer through the old build's program.
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;

use crate::maps::HEARTBEAT;

/// 1 in every program vrfd loads. The benchmark loads a copy with 0 (`set_global`) to measure
/// what the switch costs per packet: `.rodata` is frozen, so the verifier sees a constant and
/// removes the lookup and the clock read.
#[no_mangle]
static DEADMAN: u8 = 1;

/// vrfd stopped refreshing the deadline: the maps may be stale, the kernel must decide.
#[inline(always)]
pub fn vrfd_gone() -> bool {
    if unsafe { core::ptr::read_volatile(&DEADMAN) } == 0 {
        return false;
    }
    match HEARTBEAT.get(0) {
        Some(hb) => hb.expired(unsafe { bpf_ktime_get_coarse_ns() }),
        // Index 0 always exists; a missing entry cannot vouch for vrfd.
        None => true,
    }
}
