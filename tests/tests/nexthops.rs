//! Routes through nexthop objects (`ip nexthop`, what FRR installs) on the fast path, with vrfd
//! running: each kind (gateway, dev, onlink, blackhole, group, weighted group), a nexthop replaced
//! in place, a nexthop deleted (its routes go, with no RTM_DELROUTE), a group changed — under
//! `net.ipv4.nexthop_compat_mode` 1 and 0. Checked with `vrfctl lookup` against `ip route get`,
//! and a real ping forwarded by XDP (the router's IpForwDatagrams stays still).
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::daemon::{fate, vrf_toml, Vrfd};
use tests::{forwarded_datagrams, ping, TopologySpec};
use vrf_common::{Direction, Reason};

const FOLLOW: Duration = Duration::from_secs(1);

/// Polls `vrfctl lookup --vrf red --iif IIF DST` until it answers `want`.
fn await_fate(vrfd: &Vrfd<'_>, iif: &str, dst: &str, want: &str) {
    let t0 = Instant::now();
    loop {
        let got = fate(
            &vrfd
                .lookup("red", Some(iif), None, dst)
                .unwrap_or_else(|e| panic!("{e:#}")),
        );
        if got == want {
            eprintln!("lookup {dst} from {iif} → {want} after {:?}", t0.elapsed());
            return;
        }
        assert!(
            t0.elapsed() < FOLLOW,
            "lookup {dst} from {iif}: {got}, want {want} within {FOLLOW:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Packets red's XDP dropped as blackholed.
fn blackholed(vrfd: &Vrfd<'_>) -> u64 {
    let maps = vrfd.maps().unwrap_or_else(|e| panic!("{e:#}"));
    let red = vrf_user::inspect::vrfs(&maps)
        .unwrap()
        .into_iter()
        .find(|v| v.name == "red")
        .expect("vrfd serves red");
    maps.vrf_counters(red.slot, Direction::Ingress)
        .unwrap()
        .by_reason[Reason::DropBlackhole as usize]
        .packets
}

/// The kernel's answer for a packet from `src` arriving on `iif`: (dev, gateway).
fn route_get(r: &tests::NetNs, iif: &str, src: &str, dst: &str) -> (String, Option<String>) {
    let out = r
        .ip(&["-j", "route", "get", dst, "from", src, "iif", iif])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let v: Value = serde_json::from_str(&out).unwrap();
    (
        v[0]["dev"].as_str().unwrap_or("?").to_owned(),
        v[0]["gateway"].as_str().map(str::to_owned),
    )
}

fn every_kind_of_nexthop_is_followed(compat: u8) {
    let prefix = format!("nh{compat}");
    let topo = TopologySpec::two_vrfs_three_members()
        .with_prefix(&prefix)
        .built_for_xdp();
    let r = topo.router();
    r.sysctl("net.ipv4.nexthop_compat_mode", &compat.to_string())
        .unwrap();
    let red = topo.vrf("red");
    let table = red.table.to_string();
    let members: Vec<&str> = red.members.iter().map(|m| m.ifname.as_str()).collect();
    // The topology's own `iif` rules are the ones vrfd adds: vrfd keeps them.
    let config = vrf_toml("red", red.table, &members);
    let vrfd = Vrfd::start(r, &config).unwrap_or_else(|e| panic!("{e:#}"));
    topo.host("red", 1)
        .ip(&["addr", "add", "10.9.0.5/32", "dev", "lo"])
        .unwrap();
    let nh = |args: &str| {
        r.ip(&args.split(' ').collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("ip {args}: {e:#}"))
    };
    let route = |net: &str, id: u32| nh(&format!("route add {net} nhid {id} table {table}"));

    // Gateway singleton, checked against the kernel and with real packets through XDP.
    // Onlink: the gateways are connected in the VRF table, not in main where the kernel checks.
    nh("nexthop add id 11 via 10.0.2.2 dev red1 onlink");
    route("10.9.0.0/24", 11);
    await_fate(
        &vrfd,
        "red0",
        "10.9.0.5",
        "forward/forwarded via red1 gw 10.0.2.2",
    );
    assert_eq!(
        route_get(r, "red0", "10.0.1.2", "10.9.0.5"),
        ("red1".to_owned(), Some("10.0.2.2".to_owned()))
    );
    let before = forwarded_datagrams(r).unwrap();
    let p = ping(topo.host("red", 0), "10.9.0.5", 4).unwrap();
    assert!(p.all_received(), "{p:?}");
    let after = forwarded_datagrams(r).unwrap();
    assert_eq!(before.0, after.0, "the kernel forwarded the pings, not XDP");

    // Dev and onlink singletons, a blackhole.
    nh("nexthop add id 13 dev red1");
    route("10.0.2.2/32", 13);
    await_fate(&vrfd, "red0", "10.0.2.2", "forward/forwarded via red1");
    nh("nexthop add id 12 via 10.0.2.2 dev red1 onlink");
    route("10.9.2.0/24", 12);
    await_fate(
        &vrfd,
        "red0",
        "10.9.2.1",
        "forward/forwarded via red1 gw 10.0.2.2",
    );
    nh("nexthop add id 14 blackhole");
    route("10.9.3.0/24", 14);
    // The kernel drops what a blackhole nexthop carries (EINVAL), and so does XDP.
    await_fate(&vrfd, "red0", "10.9.3.1", "drop/blackhole");
    let err = r
        .ip(&[
            "route", "get", "10.9.3.1", "from", "10.0.1.2", "iif", "red0",
        ])
        .unwrap_err();
    assert!(format!("{err:#}").contains("Invalid argument"), "{err:#}");
    let (before, dropped) = (forwarded_datagrams(r).unwrap(), blackholed(&vrfd));
    let p = ping(topo.host("red", 0), "10.9.3.1", 3).unwrap();
    assert_eq!(p.received, 0, "{p:?}");
    assert_eq!(forwarded_datagrams(r).unwrap(), before);
    assert!(blackholed(&vrfd) >= dropped + 3, "XDP dropped the pings");
    nh("-6 nexthop add id 16 blackhole");
    nh(&format!("-6 route add fd00:93::/64 nhid 16 table {table}"));
    await_fate(&vrfd, "red0", "fd00:93::1", "drop/blackhole");

    // A weighted group 11,1/15,3 (via B and via A), looked up from C.
    nh("nexthop add id 15 via 10.0.1.2 dev red0 onlink");
    nh("nexthop add id 21 group 11,1/15,3");
    route("10.9.4.0/24", 21);
    let t0 = Instant::now();
    loop {
        let f = fate(&vrfd.lookup("red", Some("red2"), None, "10.9.4.1").unwrap());
        if f.starts_with("forward/forwarded via red") {
            break;
        }
        assert!(t0.elapsed() < FOLLOW, "weighted group: {f}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Replaced in place: the route moves with it (no route message under compat 0).
    nh("nexthop replace id 11 via 10.0.3.2 dev red2 onlink");
    await_fate(
        &vrfd,
        "red0",
        "10.9.0.5",
        "forward/forwarded via red2 gw 10.0.3.2",
    );
    // The group changes: only via A now.
    nh("nexthop replace id 21 group 15");
    await_fate(
        &vrfd,
        "red2",
        "10.9.4.1",
        "forward/forwarded via red0 gw 10.0.1.2",
    );
    // Deleted: its routes go although the kernel sends no RTM_DELROUTE.
    nh("nexthop del id 15");
    await_fate(&vrfd, "red2", "10.9.4.1", "pass/unreachable");
    nh("nexthop del id 11");
    await_fate(&vrfd, "red0", "10.9.0.5", "pass/unreachable");
    assert!(
        !r.ip(&["route", "show", "table", &table])
            .unwrap()
            .contains("10.9.0.0/24"),
        "the kernel deleted the route with its nexthop"
    );

    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn every_kind_of_nexthop_is_followed_in_compat_mode_1() {
    every_kind_of_nexthop_is_followed(1);
}

#[test]
fn every_kind_of_nexthop_is_followed_in_compat_mode_0() {
    every_kind_of_nexthop_is_followed(0);
}
