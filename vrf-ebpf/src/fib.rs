//! Per-VRF FIB lookups: one LPM trie per family, keyed `table ‖ address`, a flat table in front
//! of the IPv4 trie for the tables that have one, and multipath choice.
use aya_ebpf::maps::lpm_trie::Key;
use vrf_common::{
    flat4_bucket, table_key, Fib4Key, Fib6Key, Nexthop, Route, FIB_TABLE_BITS, FLAT4_BUCKET_WAYS,
    FLAT4_CHUNK, FLAT4_L1_ENTRIES, MAX_PATHS, NEXTHOP_BUCKET_BITS,
};

use crate::maps::{FIB4, FIB6, FLAT4_CHUNKS, FLAT4_DIR, FLAT4_L1, FLAT4_ROUTES, NEXTHOPS};

#[inline(always)]
pub fn lookup4(table: u32, addr: [u8; 4]) -> Option<Route> {
    if let Some(slot) = flat4_slot(table) {
        return flat4(slot, u32::from_be_bytes(addr));
    }
    let key = Key::new(
        FIB_TABLE_BITS + 32,
        Fib4Key {
            table: table_key(table),
            addr,
        },
    );
    FIB4.get(&key).copied()
}

/// The flat slot of `table`, if it has one. Table 0 never has one: a way being written may
/// be read with its slot set before its table.
#[inline(always)]
fn flat4_slot(table: u32) -> Option<u32> {
    let bucket = FLAT4_DIR.get(flat4_bucket(table))?;
    let mut i = 0;
    while i < FLAT4_BUCKET_WAYS {
        let way = bucket.ways[i];
        if way.table == table && way.slot != 0 && table != 0 {
            return Some(way.slot - 1);
        }
        i += 1;
    }
    None
}

/// Two or three array reads (16 bits, then 8, then 8) and the route value. A slot's first
/// level is the table's complete answer: no entry is no route, as a trie miss would be.
#[inline(always)]
fn flat4(slot: u32, addr: u32) -> Option<Route> {
    // The first level is 256 rows of 256: row = slot's rows + top 8 bits, then the next 8.
    let row = FLAT4_L1.get(slot.wrapping_mul(FLAT4_L1_ENTRIES >> 8) | (addr >> 24))?;
    let mut e = *row.get(((addr >> 16) & 0xff) as usize)?;
    if e & FLAT4_CHUNK != 0 {
        let chunk = FLAT4_CHUNKS.get(e & !FLAT4_CHUNK)?;
        e = *chunk.get(((addr >> 8) & 0xff) as usize)?;
        if e & FLAT4_CHUNK != 0 {
            let chunk = FLAT4_CHUNKS.get(e & !FLAT4_CHUNK)?;
            e = *chunk.get((addr & 0xff) as usize)?;
            if e & FLAT4_CHUNK != 0 {
                // No fourth level: userspace never writes this.
                return None;
            }
        }
    }
    if e == 0 {
        return None;
    }
    FLAT4_ROUTES.get(e).copied()
}

#[inline(always)]
pub fn lookup6(table: u32, addr: [u8; 16]) -> Option<Route> {
    let key = Key::new(
        FIB_TABLE_BITS + 128,
        Fib6Key {
            table: table_key(table),
            addr,
        },
    );
    FIB6.get(&key).copied()
}

/// The route's path for a flow with hash `hash`: stable per flow, spread across the set in
/// proportion to the weights userspace put into the group's buckets.
#[inline(always)]
pub fn select_path(route: &Route, hash: u32) -> Option<Nexthop> {
    let group = unsafe { NEXTHOPS.get(route.nexthop) }?;
    let count = group.count as usize;
    if count == 0 || count > MAX_PATHS {
        return None;
    }
    // The hash's top bits name a bucket: always below NEXTHOP_BUCKETS, a bound the verifier sees.
    let bucket = (hash >> (32 - NEXTHOP_BUCKET_BITS)) as usize;
    // black_box keeps both bound checks below as written, for older verifiers (6.1) that
    // track a bound only on the register the compare was made on.
    let idx = core::hint::black_box(*group.buckets.get(bucket)? as usize);
    if idx >= count || idx >= MAX_PATHS {
        return None;
    }
    group.paths.get(idx).copied()
}

/// Does any path of `route` leave through `ifindex`? (strict reverse-path filter)
#[inline(always)]
pub fn uses_link(route: &Route, ifindex: u32) -> bool {
    let Some(group) = (unsafe { NEXTHOPS.get(route.nexthop) }) else {
        return false;
    };
    let mut i = 0;
    while i < MAX_PATHS {
        if (i as u32) < group.count && group.paths[i].ifindex == ifindex {
            return true;
        }
        i += 1;
    }
    false
}

/// Flow hash over addresses, protocol and ports (ports 0 when absent): every packet of a flow
/// takes the same path.
#[inline(always)]
pub fn flow_hash(src: u32, dst: u32, protocol: u8, ports: u32) -> u32 {
    let mut h = src ^ dst.rotate_left(16) ^ ports ^ (protocol as u32).wrapping_mul(0x9e37_79b9);
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^ (h >> 16)
}

/// An IPv6 address folded to 32 bits for hashing.
#[inline(always)]
pub fn fold6(addr: &[u8; 16]) -> u32 {
    let w = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    w(0) ^ w(4) ^ w(8) ^ w(12)
}
