//! Neighbour activity: the fast path marks the neighbours it sends to, and
//! `NeighActivity::tick` reports them to the kernel (NTF_USE), so the kernel keeps revalidating
//! neighbours whose traffic it never sees. The scenario: host B's entry on the router is a learnt
//! one at rest (STALE, no static entry), A→B traffic takes the XDP path, then B changes its MAC
//! silently (no gratuitous ARP: arp_notify is off). Without reports, the router's entry stays
//! STALE, and the fast path keeps sending to the old MAC: a blackhole. With them the kernel
//! probes B (DELAY, PROBE, FAILED, then a fresh broadcast ARP), learns the new MAC, vrfd mirrors
//! it, and traffic recovers within the kernel's reachability timers (shortened here).
//!
//! vrfd reports every `neigh_activity::INTERVAL` in its own loop; the test witnesses the reports
//! in its `vrf_xdp_neighbour_activity_reports_total` metric and the recovery at host B.
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tests::daemon::{topology_config, Vrfd};
use tests::{forwarded_datagrams, list_own_netns, mac_to_string, ping, set_mac, TopologySpec};
use vrf_common::{Direction, Reason};

const REPORTS: &str = "vrf_xdp_neighbour_activity_reports_total";

fn forwarded(vrfd: &Vrfd<'_>) -> u64 {
    let maps = vrfd.maps().unwrap();
    let red = vrf_user::inspect::vrfs(&maps)
        .unwrap()
        .into_iter()
        .find(|v| v.name == "red")
        .unwrap();
    maps.vrf_counters(red.slot, Direction::Ingress)
        .unwrap()
        .by_reason[Reason::Forwarded as usize]
        .packets
}

#[test]
fn a_host_that_changes_its_mac_silently_is_reprobed_and_traffic_recovers() {
    let prefix = "na_mac";
    let topo = TopologySpec::two_vrfs_identical()
        .with_prefix(prefix)
        .built_for_xdp();
    let r = topo.router();
    let b = topo.member("red", 1);
    let b_addr: IpAddr = topo.host_addr("red", 1, false);
    // The kernel's timers short enough for a test.
    for (k, v) in [
        ("base_reachable_time_ms", "1000"),
        ("delay_first_probe_time", "1"),
        ("retrans_time_ms", "200"),
    ] {
        r.sysctl(&format!("net/ipv4/neigh/{}/{k}", b.ifname), v)
            .unwrap();
    }
    topo.remove_all_rules();
    let vrfd = Vrfd::start_with(
        topo.router(),
        &topology_config(&topo),
        &["--metrics", "127.0.0.1:0"],
    )
    .unwrap_or_else(|e| panic!("starting vrfd: {e:#}"));
    let a = topo.host("red", 0);
    let map_mac = || vrfd.maps().unwrap().neighbour(b.ifindex, b_addr).unwrap();

    // B's entry is a learnt one at rest (STALE), not static: one the kernel resolved and has not
    // used since. Letting the kernel resolve B here would race the control below: an entry the
    // kernel itself used revalidates by its own timers, and on 6.18 those probes keep refreshing
    // its use, so it never comes to rest.
    r.ip(&[
        "neigh",
        "replace",
        &b_addr.to_string(),
        "lladdr",
        &mac_to_string(b.host_mac),
        "dev",
        &b.ifname,
        "nud",
        "stale",
    ])
    .unwrap();
    let t0 = Instant::now();
    while map_mac() != Some(b.host_mac) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "vrfd never mirrored B"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Now XDP forwards A→B, and marks B's entry used.
    let (before, kernel_before) = (forwarded(&vrfd), forwarded_datagrams(r).unwrap());
    let p = ping(a, b_addr, 3).unwrap();
    assert!(p.all_received(), "{p:?}");
    assert!(forwarded(&vrfd) >= before + 6, "A→B not on the XDP path");
    assert_eq!(forwarded_datagrams(r).unwrap().0, kernel_before.0);
    // vrfd reported B's use to the kernel (its marks are cleared by the report, so the map
    // itself says nothing here: the metric does).
    let t0 = Instant::now();
    while vrfd.metric(REPORTS).unwrap().unwrap_or(0.0) < 1.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "vrfd reported no neighbour activity"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // B takes a new MAC without telling anyone.
    let new_mac = [0x02, 0x00, 0x5e, 0x13, 0x13, 0x02];
    set_mac(&b.host, tests::HOST_IFNAME, new_mac).unwrap();

    // The fast path keeps using B's old entry, and vrfd keeps reporting it: the kernel
    // reprobes B (unicast to the old MAC, unanswered), fails the entry, resolves B afresh by
    // broadcast and learns the new MAC; vrfd mirrors it. All within the kernel's timers.
    let t0 = Instant::now();
    loop {
        let p = ping(a, b_addr, 1).unwrap();
        if p.all_received() && map_mac() == Some(new_mac) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "traffic did not recover: map has {:?}, kernel: {}",
            map_mac().map(mac_to_string),
            r.ip(&["neigh", "show", "dev", &b.ifname])
                .unwrap_or_default()
        );
    }
    eprintln!("recovered after {:?}", t0.elapsed());
    // And on the XDP path again.
    let (before, kernel_before) = (forwarded(&vrfd), forwarded_datagrams(r).unwrap());
    let p = ping(a, b_addr, 3).unwrap();
    assert!(p.all_received(), "{p:?}");
    assert!(
        forwarded(&vrfd) >= before + 6,
        "recovered traffic not on the XDP path"
    );
    assert_eq!(forwarded_datagrams(r).unwrap().0, kernel_before.0);
    assert!(vrfd.metric(REPORTS).unwrap().unwrap_or(0.0) >= 2.0);

    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}
