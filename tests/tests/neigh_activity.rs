//! Neighbour activity: the fast path marks the neighbours it sends to, and
//! `NeighActivity::tick` reports them to the kernel (NTF_USE), so the kernel keeps revalidating
//! neighbours whose traffic it never sees. The scenario: host B's entry on the router is a learnt
//! one at rest (STALE, no static entry), A→B traffic takes the XDP path, then B changes its MAC
//! silently (no gratuitous ARP: arp_notify is off). Without reports, the router's entry stays
//! STALE, and the fast path keeps sending to the old MAC: a blackhole. With them the kernel
//! probes B (DELAY, PROBE, FAILED, then a fresh broadcast ARP), learns the new MAC, vrfd mirrors
//! it, and traffic recovers within the kernel's reachability timers (shortened here).
//!
//! vrfd does not call `tick` yet (its loop is being reshaped): the test calls it on vrfd's pinned
//! maps, from a thread in the router's namespace, as vrfd will.
use std::net::IpAddr;
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tests::daemon::Vrfd;
use tests::{
    fastpath, forwarded_datagrams, list_own_netns, mac_to_string, ping, require_root, set_mac,
    Topology, TopologySpec,
};
use vrf_common::{Direction, Reason};
use vrf_user::{maps::Maps, neigh_activity::NeighActivity};

/// Ticks every 200 ms on vrfd's pins until dropped; counts what it reported.
struct Ticker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<usize>>,
}

impl Ticker {
    fn start(topo: &Topology, vrfd: &Vrfd<'_>) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let pins = vrfd.pin_path().to_path_buf();
        let handle = topo.router().spawn_thread(move || {
            let mut activity = NeighActivity::new().expect("netlink socket");
            let mut maps = Maps::from_pins(&pins).expect("vrfd's pins");
            let mut reported = 0;
            while !flag.load(Ordering::Relaxed) {
                let t = activity.tick(&mut maps).expect("tick");
                reported += t.reported;
                std::thread::sleep(Duration::from_millis(200));
            }
            reported
        });
        Ticker {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().expect("ticker thread")
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

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
    require_root();
    let prefix = "na_mac";
    let topo = TopologySpec::two_vrfs_identical()
        .with_prefix(prefix)
        .build()
        .unwrap_or_else(|e| panic!("{e:#}"));
    fastpath::complete_host_checksums(&topo).unwrap();
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
    let vrfd = tests::daemon::start_on(&topo);
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
    let used = vrfd.maps().unwrap().used_neighbours().unwrap();
    assert!(
        used.iter()
            .any(|(k, n)| k.ifindex == b.ifindex && n.mac == b.host_mac),
        "the fast path did not mark B's entry: {used:?}"
    );

    // B takes a new MAC without telling anyone.
    let new_mac = [0x02, 0x00, 0x5e, 0x13, 0x13, 0x02];
    set_mac(&b.host, tests::HOST_IFNAME, new_mac).unwrap();

    // Without activity reports the kernel never revalidates: a blackhole, long after the
    // entry's reachable time has run out.
    let p = ping(a, b_addr, 20).unwrap();
    assert_eq!(p.received, 0, "B answered at its old MAC? {p:?}");
    assert_eq!(
        map_mac(),
        Some(b.host_mac),
        "the kernel relearnt B by itself"
    );

    // With them, the kernel reprobes B and traffic recovers within its timers.
    let ticker = Ticker::start(&topo, &vrfd);
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
    let reported = ticker.finish();
    assert!(reported > 0, "no NTF_USE was accepted");

    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}
