//! Neighbour resolution from the kernel's usable entries, mirrored by the daemon, and the mark
//! that tells vrfd which of them the fast path used (the kernel never sees that traffic).
use vrf_common::{Neigh, NeighKey, NEIGH_USED};

use crate::maps::NEIGH;

#[inline(always)]
pub fn lookup(ifindex: u32, family: u32, addr: [u8; 16]) -> Option<[u8; 6]> {
    let key = NeighKey {
        ifindex,
        family,
        addr,
    };
    let n: *mut Neigh = NEIGH.get_ptr_mut(key)?;
    unsafe {
        // Neighbour activity for vrfd to report (NTF_USE): written only when it changes, so a
        // busy neighbour's entry is not dirtied by every packet on every CPU.
        if (*n).used == 0 {
            (*n).used = NEIGH_USED;
        }
        Some((*n).mac)
    }
}

/// An IPv4 address in the 16-byte neighbour-key form.
#[inline(always)]
pub fn v4(addr: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = addr[0];
    a[1] = addr[1];
    a[2] = addr[2];
    a[3] = addr[3];
    a
}
