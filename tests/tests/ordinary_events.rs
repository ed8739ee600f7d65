//! Ordinary events are never fatal (#13): more declared VRFs than the data plane has slots
//! (the extras are reported and left to the kernel, the rest served), and links that come and
//! go thousands of times with routes through them (stats slots reclaimed, resyncs bounded). In
//! both, vrfd stays up and a served VRF still forwards on the XDP path (the kernel's own
//! IpForwDatagrams stays put).
use std::time::{Duration, Instant};

use tests::daemon::{json_log_lines, log_message, topology_config, vrf_toml, Vrfd};
use tests::{
    fastpath, forwarded_datagrams, list_own_netns, ping, require_root, Topology, TopologySpec,
};
use vrf_common::{Direction, Reason, MAX_VRFS};

fn forwarded(vrfd: &Vrfd<'_>, vrf: &str) -> u64 {
    let maps = vrfd.maps().unwrap();
    let v = vrf_user::inspect::vrfs(&maps)
        .unwrap()
        .into_iter()
        .find(|v| v.name == vrf)
        .unwrap_or_else(|| panic!("VRF {vrf} not served"));
    maps.vrf_counters(v.slot, Direction::Ingress)
        .unwrap()
        .by_reason[Reason::Forwarded as usize]
        .packets
}

/// A→B in red: every packet on the XDP path, none forwarded by the kernel.
fn red_forwards_on_xdp(topo: &Topology, vrfd: &Vrfd<'_>, what: &str) {
    let r = topo.router();
    let (before, kernel) = (forwarded(vrfd, "red"), forwarded_datagrams(r).unwrap().0);
    let p = ping(topo.host("red", 0), topo.host_addr("red", 1, false), 3).unwrap();
    assert!(p.all_received(), "{what}: {p:?}");
    assert!(
        forwarded(vrfd, "red") >= before + 6,
        "{what}: not on the XDP path"
    );
    assert_eq!(
        forwarded_datagrams(r).unwrap().0,
        kernel,
        "{what}: the kernel forwarded"
    );
}

fn topology(prefix: &str) -> Topology {
    require_root();
    let topo = TopologySpec::two_vrfs_identical()
        .with_prefix(prefix)
        .build()
        .unwrap_or_else(|e| panic!("{e:#}"));
    fastpath::complete_host_checksums(&topo).unwrap();
    topo.remove_all_rules();
    topo
}

fn batch(ns: &tests::NetNs, lines: &[String]) {
    let path = std::env::temp_dir().join(format!(
        "vrf-xdp-ordinary-{}-{}",
        std::process::id(),
        ns.name()
    ));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let _ = ns.ip(&["-force", "-batch", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn more_declared_vrfs_than_slots_are_reported_and_the_rest_served() {
    let prefix = "oe_vrfs";
    let topo = topology(prefix);
    let r = topo.router();
    let extra = 300 - 2;
    let mut lines = Vec::new();
    for i in 0..extra {
        lines.push(format!("link add xm{i} type veth peer name xp{i}"));
        lines.push(format!("link set xm{i} up"));
        lines.push(format!("link set xp{i} up"));
    }
    batch(r, &lines);
    let mut config = topology_config(&topo);
    for i in 0..extra {
        config.push_str(&vrf_toml(
            &format!("x{i:03}"),
            1000 + i as u32,
            &[&format!("xm{i}")],
        ));
    }
    // 300 members to attach and 600 rules to add: longer than Vrfd::start's 10 s here.
    let mut vrfd = Vrfd::spawn(r, &config, "json", &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let t0 = Instant::now();
    while !tests::daemon::log_has_message(&vrfd.log(), "ready") {
        vrfd.check_running().unwrap();
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "not ready:\n{}",
            vrfd.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("ready after {:?}", t0.elapsed());
    let unserved: Vec<String> = json_log_lines(&vrfd.log())
        .iter()
        .filter(|l| log_message(l).is_some_and(|m| m.contains("this one is not served")))
        .filter_map(|l| l["fields"]["vrf"].as_str().map(String::from))
        .collect();
    assert_eq!(unserved.len(), 300 - MAX_VRFS as usize, "{unserved:?}");
    let shown = vrfd.show().unwrap();
    assert_eq!(shown["vrfs"].as_array().unwrap().len(), MAX_VRFS as usize);
    vrfd.check_running().unwrap();
    red_forwards_on_xdp(&topo, &vrfd, "with 300 declared VRFs");
    // The kernel path of the unserved ones is there: their rules were added.
    let rules = r.ip(&["rule", "show"]).unwrap();
    assert!(rules.contains(&format!("iif xm{} lookup {}", extra - 1, 1000 + extra - 1)));
    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}

/// 5,000 link add/route/delete cycles: vrfd stays up, red keeps
/// forwarding, stats slots are reclaimed and resyncs stay bounded. The kernel adds a per-device
/// IPv6 route of one prefix and metric for every link (`multicast ff00::/8 dev X table local`);
/// a mirror that took the second as a replace of the first resynced on nearly every cycle.
#[test]
fn links_that_come_and_go_thousands_of_times_are_not_fatal() {
    let prefix = "oe_links";
    let topo = topology(prefix);
    let r = topo.router();
    let cycles = 5000;
    let mut vrfd = Vrfd::start_with(r, &topology_config(&topo), &["--metrics", "127.0.0.1:0"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    red_forwards_on_xdp(&topo, &vrfd, "before");
    let t0 = Instant::now();
    for chunk in (0..cycles).collect::<Vec<_>>().chunks(100) {
        let mut lines = Vec::new();
        for i in chunk {
            lines.push(format!("link add cy{i} type veth peer name cyp{i}"));
            lines.push(format!("link set cy{i} up"));
            lines.push(format!("link set cyp{i} up"));
            lines.push(format!(
                "route add 10.77.{}.0/24 dev cy{i} table 110",
                i % 256
            ));
            lines.push(format!("-6 route add fd77:{i:x}::/64 dev cy{i} table 110"));
            lines.push(format!("link del cy{i}"));
        }
        batch(r, &lines);
        vrfd.check_running().unwrap();
    }
    eprintln!("{cycles} link cycles in {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    vrfd.check_running().unwrap();
    let resyncs = vrfd.metric("vrf_xdp_resyncs_total").unwrap().unwrap_or(0.0);
    eprintln!("resyncs: {resyncs}");
    assert!(
        resyncs <= 20.0,
        "{resyncs} resyncs for {cycles} link cycles"
    );
    // Nothing of them is left in the maps, and red still forwards on the XDP path.
    let links = vrfd.maps().unwrap().links().unwrap();
    assert!(links.len() <= 8, "links left in the maps: {}", links.len());
    red_forwards_on_xdp(&topo, &vrfd, "after the link cycles");
    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}
