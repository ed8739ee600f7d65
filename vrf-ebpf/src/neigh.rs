//! Neighbour resolution from the kernel's usable entries, mirrored by the daemon.
use vrf_common::{Neigh, NeighKey};

use crate::maps::NEIGH;

#[inline(always)]
pub fn lookup(ifindex: u32, family: u32, addr: [u8; 16]) -> Option<[u8; 6]> {
    let key = NeighKey {
        ifindex,
        family,
        addr,
    };
    unsafe { NEIGH.get(key) }.map(|n: &Neigh| n.mac)
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
