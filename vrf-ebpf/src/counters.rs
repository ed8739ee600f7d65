//! Per-CPU counters per VRF and per link: `Rx` plus the one outcome of every packet.
use aya_ebpf::maps::PerCpuArray;
use vrf_common::{stats_index, Counters, Direction, Link, Reason, LINK_MEMBER};

use crate::forward::Verdict;

use crate::maps::{LINK_STATS, NEXTHOP_STATS, VRF_STATS};

#[inline(always)]
pub fn count(link: &Link, dir: Direction, reason: Reason, bytes: u64) {
    add(&VRF_STATS, stats_index(link.vrf, dir), reason, bytes);
    add(
        &LINK_STATS,
        stats_index(link.stats_slot, dir),
        reason,
        bytes,
    );
}

/// A frame the port passes before any member is known: a member port counts it in its VRF too,
/// a trunk that is no member only on its own link.
#[inline(always)]
pub fn count_port(port: &Link, reason: Reason, bytes: u64) {
    if port.flags & LINK_MEMBER != 0 {
        count(port, Direction::Ingress, reason, bytes);
    } else {
        add(
            &LINK_STATS,
            stats_index(port.stats_slot, Direction::Ingress),
            reason,
            bytes,
        );
    }
}

#[inline(always)]
fn add(map: &PerCpuArray<Counters>, index: u32, reason: Reason, bytes: u64) {
    let Some(c) = map.get_ptr_mut(index) else {
        return;
    };
    // Per-CPU slots: no other writer, plain adds suffice.
    let c = unsafe { &mut (*c).by_reason };
    c[Reason::Rx as usize].packets += 1;
    c[Reason::Rx as usize].bytes += bytes;
    let r = reason as usize;
    if reason != Reason::Rx && r < c.len() {
        c[r].packets += 1;
        c[r].bytes += bytes;
    }
}

/// A forwarded packet on its path's nexthop counter: one array update, no lookup.
#[inline(always)]
pub fn count_path(verdict: &Verdict, bytes: u64) {
    if verdict.reason != Reason::Forwarded {
        return;
    }
    if let Some(c) = NEXTHOP_STATS.get_ptr_mut(verdict.path_slot) {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
