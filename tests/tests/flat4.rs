//! The flat IPv4 FIB against the kernel's own LPM trie (FIB4), the oracle: random tables with
//! every prefix length 0..32, inserts, replacements and deletes in random order.
//! - map-reading: the flat maps, read as the program reads them, give every prefix's first and
//!   last address and random addresses the answer the kernel's trie lookup gives;
//! - packets: xdp_vrf (BPF_PROG_TEST_RUN) decides by the flat table exactly what the trie's
//!   answer implies (forwarded out of the route's path, or the route kind's reason).
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aya::maps::lpm_trie::Key;
use ipnet::{IpNet, Ipv4Net};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tests::dataplane::{ip, neigh_mac, nexthop, Fixture, RED_SRC4, RED_TABLE};
use vrf_common::{table_key, Fib4Key, Reason, Route, RouteKind, FIB_TABLE_BITS};
use vrf_user::{dataplane::DataPlane, flat4::Flat4, maps::Maps};

/// The kernel's answer: the LPM trie's longest match for `addr` in `table`.
fn trie_lookup(maps: &Maps, table: u32, addr: Ipv4Addr) -> Option<Route> {
    let key = Key::new(
        FIB_TABLE_BITS + 32,
        Fib4Key {
            table: table_key(table),
            addr: addr.octets(),
        },
    );
    maps.fib4.get(&key, 0).ok()
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

/// A random prefix of any length, nested densely inside `base/14` (short ones rarer: a /0
/// rewrites 2^16 first-level entries).
fn random_prefix(rng: &mut StdRng, base: u32) -> Ipv4Net {
    let len = if rng.random_range(0..4) == 0 {
        rng.random_range(0..=32u8)
    } else {
        rng.random_range(12..=32u8)
    };
    let addr = (base | (rng.random::<u32>() & 0x0003_ffff)) & mask(len);
    Ipv4Net::new(addr.into(), len).expect("valid prefix")
}

#[test]
fn flat_fib_and_lpm_trie_agree_over_random_churn() {
    tests::require_root();
    let mut dp = DataPlane::load().expect("loading the data plane");
    let maps = &mut dp.maps;
    let mut flat = Flat4::new(maps.flat4.sizes());
    let mut rng = StdRng::seed_from_u64(0x15b);
    // Three tables sharing address space: one flat table must never answer for another.
    let tables = [110u32, 111, 4_000_000];
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let mut sets: BTreeMap<u32, BTreeMap<Ipv4Net, Route>> = BTreeMap::new();
    let mut checked = 0usize;
    for step in 0..2500 {
        let table = tables[rng.random_range(0..tables.len())];
        let set = sets.entry(table).or_default();
        if !set.is_empty() && rng.random_range(0..100) < 35 {
            let net = *set.keys().nth(rng.random_range(0..set.len())).unwrap();
            set.remove(&net);
            maps.remove_route(table, IpNet::V4(net)).unwrap();
            flat.set(table, net, None);
        } else {
            let net = random_prefix(&mut rng, base);
            let route = Route {
                kind: if rng.random_range(0..10) == 0 {
                    RouteKind::Blackhole as u16
                } else {
                    RouteKind::Unicast as u16
                },
                mtu: 0,
                nexthop: rng.random_range(1..40),
            };
            set.insert(net, route);
            maps.insert_route(table, IpNet::V4(net), &route).unwrap();
            flat.set(table, net, Some(route));
        }
        maps.flat4.sync(&mut flat).unwrap();
        if step % 50 != 49 {
            continue;
        }
        for (&table, set) in &sets {
            let served = !set.is_empty();
            // Entry by entry: each prefix's first and last address.
            let mut addrs: Vec<Ipv4Addr> = set
                .keys()
                .flat_map(|n| [n.network(), n.broadcast()])
                .collect();
            // Address by address: random ones in and around the routes.
            addrs.extend(
                (0..300).map(|_| Ipv4Addr::from(base ^ (rng.random::<u32>() & 0x0007_ffff))),
            );
            for a in addrs {
                let want = trie_lookup(maps, table, a);
                let got = maps.flat4.lookup(table, a).unwrap();
                if served {
                    assert_eq!(
                        got,
                        Some(want),
                        "step {step}, table {table}, address {a}: flat vs trie"
                    );
                } else {
                    assert!(
                        got.is_none_or(|r| r.is_none()),
                        "an empty table answers nothing"
                    );
                }
                checked += 1;
            }
        }
        // The trie holds exactly the shadow (the oracle is the table we meant).
        let mut trie: Vec<(u32, Ipv4Net, Route)> = maps
            .routes()
            .unwrap()
            .into_iter()
            .filter_map(|(t, p, r)| match p {
                IpNet::V4(p) => Some((t, p, r)),
                IpNet::V6(_) => None,
            })
            .collect();
        trie.sort_by_key(|(t, p, _)| (*t, *p));
        let want: Vec<(u32, Ipv4Net, Route)> = sets
            .iter()
            .flat_map(|(t, s)| s.iter().map(move |(p, r)| (*t, *p, *r)))
            .collect();
        assert_eq!(trie, want, "step {step}: the trie holds the table");
    }
    assert_eq!(
        flat.flat_tables().len(),
        sets.values().filter(|s| !s.is_empty()).count(),
        "every non-empty table is flat"
    );
    assert!(checked > 10_000, "checked {checked} addresses");
    // Emptied, the flat FIB gives every chunk back and names no table.
    for (table, set) in &sets {
        for net in set.keys() {
            maps.remove_route(*table, IpNet::V4(*net)).unwrap();
            flat.set(*table, *net, None);
        }
    }
    maps.flat4.sync(&mut flat).unwrap();
    assert_eq!(flat.chunks_used(), 0);
    for table in tables {
        assert_eq!(
            maps.flat4.lookup(table, Ipv4Addr::from(base)).unwrap(),
            None
        );
    }
}

#[test]
fn xdp_decides_by_the_flat_table_what_the_trie_answers() {
    let mut fx = Fixture::new();
    let mut rng = StdRng::seed_from_u64(0x15b2);
    // Three gateways' groups in the red table.
    let paths = [
        (fx.r1, "10.1.1.1", 1u8),
        (fx.r2, "10.1.2.1", 1),
        (fx.r3, "10.1.3.1", 1),
    ];
    let groups: Vec<u32> = paths
        .iter()
        .map(|(link, gw, _)| {
            fx.unicast(
                RED_TABLE,
                "192.0.2.0/32",
                &[nexthop(link.ifindex, Some(ip(gw)))],
            )
        })
        .collect();
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let kinds = [
        RouteKind::Blackhole,
        RouteKind::Unreachable,
        RouteKind::Prohibit,
    ];
    let mut decided = 0;
    for _round in 0..6 {
        for _ in 0..150 {
            // Not /0../9: they would cover the connected 10.1/16 the frames come from.
            let mut net = random_prefix(&mut rng, base);
            if net.prefix_len() < 10 {
                net = Ipv4Net::new(net.network(), 10).unwrap().trunc();
            }
            let route = if rng.random_range(0..8) == 0 {
                Route {
                    kind: kinds[rng.random_range(0..kinds.len())] as u16,
                    mtu: 0,
                    nexthop: 0,
                }
            } else {
                Route {
                    kind: RouteKind::Unicast as u16,
                    mtu: 0,
                    nexthop: groups[rng.random_range(0..groups.len())],
                }
            };
            fx.route_raw(RED_TABLE, &net.to_string(), route);
        }
        for _ in 0..150 {
            let dst = Ipv4Addr::from(base | (rng.random::<u32>() & 0x0003_ffff));
            let want = trie_lookup(&fx.dp.maps, RED_TABLE, dst);
            assert_eq!(
                fx.dp
                    .maps
                    .flat4
                    .lookup(RED_TABLE, dst)
                    .unwrap()
                    .map(|r| r.map(|r| r.kind)),
                Some(want.map(|r| r.kind)),
                "the red table is flat and agrees at {dst}"
            );
            let frame = fx.udp(fx.r0, RED_SRC4, &dst.to_string());
            match want {
                Some(r) if r.kind == RouteKind::Unicast as u16 => {
                    let i = groups.iter().position(|g| *g == r.nexthop).unwrap();
                    let (link, gw, host) = paths[i];
                    fx.expect_forward(
                        fx.r0,
                        &frame,
                        link,
                        gw,
                        neigh_mac(link.id, host, false),
                        fx.r0.vrf,
                    );
                }
                Some(r) => {
                    let reason = match RouteKind::from_u16(r.kind) {
                        Some(RouteKind::Blackhole) => Reason::DropBlackhole,
                        Some(RouteKind::Unreachable) => Reason::PassUnreachable,
                        _ => Reason::PassProhibit,
                    };
                    if reason == Reason::DropBlackhole {
                        fx.expect_drop(fx.r0, &frame, reason);
                    } else {
                        fx.expect_pass(fx.r0, &frame, reason);
                    }
                }
                None => {
                    fx.expect_pass(fx.r0, &frame, Reason::PassNoRoute);
                }
            }
            decided += 1;
        }
    }
    assert_eq!(decided, 900);
}
