//! Weighted and wide multipath, packet by packet through BPF_PROG_TEST_RUN: a group's buckets
//! (filled by `maps::nexthop_group` in proportion to the weights) decide the path, so flows
//! spread as the weights say, every one of 64 paths is used, and a flow keeps its path.

use std::collections::{BTreeMap, BTreeSet};

use tests::dataplane::*;
use vrf_common::{Nexthop, Route, RouteKind, MAX_PATHS};
use vrf_user::dataplane::XDP_REDIRECT;
use vrf_user::writer::nexthop_group;

const PREFIX: &str = "10.43.0.0/24";

/// A route in red to PREFIX over `paths` (link, gateway host byte, weight), each gateway
/// `10.1.<link>.<host>` with its own neighbour MAC. Returns neighbour MAC → path index.
fn weighted_route(fx: &mut Fixture, paths: &[(Iface, u8, u32)]) -> BTreeMap<[u8; 6], usize> {
    let hops: Vec<(Nexthop, u32)> = paths
        .iter()
        .map(|(l, host, w)| {
            let gw = format!("10.1.{}.{host}", l.id);
            (nexthop(l.ifindex, Some(ip(&gw))), *w)
        })
        .collect();
    let group = nexthop_group(&hops).expect("nexthop group");
    let id = fx.raw_group(&group);
    fx.route_raw(
        RED_TABLE,
        PREFIX,
        Route {
            kind: RouteKind::Unicast as u16,
            mtu: 0,
            nexthop: id,
        },
    );
    let mut by_mac = BTreeMap::new();
    for (i, (l, host, _)) in paths.iter().enumerate() {
        let mac = neigh_mac(l.id, *host, false);
        fx.neighbour(*l, &format!("10.1.{}.{host}", l.id), mac);
        assert!(by_mac.insert(mac, i).is_none());
    }
    by_mac
}

/// `n` UDP flows (distinct port pairs) into PREFIX.
fn flows(fx: &Fixture, n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut s = fx.spec(fx.r0, RED_SRC4, "10.43.0.5");
            s.src_port = 1024 + (i % 60_000) as u16;
            s.dst_port = 443 + (i / 60_000) as u16;
            s.udp().unwrap()
        })
        .collect()
}

/// Path index of every frame, checking each was forwarded through one of the group's paths.
fn tally(fx: &mut Fixture, by_mac: &BTreeMap<[u8; 6], usize>, frames: &[Vec<u8>]) -> Vec<usize> {
    let results = fx.run_many(fx.r0.ifindex, frames);
    let mut count = vec![0; by_mac.len()];
    for r in &results {
        assert_eq!(r.action, XDP_REDIRECT, "{}", action_name(r.action));
        let dst: [u8; 6] = r.frame[0..6].try_into().unwrap();
        count[by_mac[&dst]] += 1;
    }
    count
}

#[test]
fn weights_one_to_three_split_flows_one_to_three() {
    let mut fx = Fixture::new();
    let (r1, r2) = (fx.r1, fx.r2);
    let by_mac = weighted_route(&mut fx, &[(r1, 1, 1), (r2, 1, 3)]);
    let n = 4000;
    let frames = flows(&fx, n);
    let count = tally(&mut fx, &by_mac, &frames);
    let share = count[1] as f64 / n as f64;
    assert!(
        (share - 0.75).abs() < 0.03,
        "{count:?}: weight 3 of 4 took {share}"
    );
}

#[test]
fn sixty_four_paths_are_all_used_evenly() {
    let mut fx = Fixture::new();
    let links = [fx.r1, fx.r2, fx.r3];
    let paths: Vec<(Iface, u8, u32)> = (0..MAX_PATHS)
        .map(|i| (links[i % 3], 10 + i as u8, 1))
        .collect();
    assert_eq!(paths.len(), 64);
    let by_mac = weighted_route(&mut fx, &paths);
    let n = 64 * 100;
    let frames = flows(&fx, n);
    let count = tally(&mut fx, &by_mac, &frames);
    // 100 expected per path; a binomial spread of ±3σ is about ±30.
    assert!(count.iter().all(|&c| (55..=145).contains(&c)), "{count:?}");
}

#[test]
fn a_flow_keeps_its_path_in_a_weighted_group() {
    let mut fx = Fixture::new();
    let (r1, r2, r3) = (fx.r1, fx.r2, fx.r3);
    let by_mac = weighted_route(&mut fx, &[(r1, 1, 5), (r2, 1, 1), (r3, 1, 2)]);
    let mut used = BTreeSet::new();
    for flow in 0..60u16 {
        // The same 5-tuple with different TTL and payload each time.
        let frames: Vec<Vec<u8>> = (0..5u16)
            .map(|k| {
                let mut s = fx.spec(fx.r0, RED_SRC4, "10.43.0.5");
                s.src_port = 30000 + flow * 17;
                s.ttl = 64 - k as u8;
                s.payload_len = 18 + k as usize * 10;
                s.udp().unwrap()
            })
            .collect();
        let count = tally(&mut fx, &by_mac, &frames);
        let taken: Vec<usize> = (0..3).filter(|&i| count[i] > 0).collect();
        assert_eq!(taken.len(), 1, "flow {flow} took paths {taken:?}");
        used.insert(taken[0]);
    }
    assert_eq!(used.len(), 3, "60 flows must use all 3 paths");
}
