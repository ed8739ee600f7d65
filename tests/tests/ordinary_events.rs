//! Ordinary events are never fatal (#13): more declared VRFs than the data plane has slots
//! (the extras are reported and left to the kernel, the rest served), links that come and go
//! thousands of times with routes through them (stats slots reclaimed, resyncs bounded), and
//! dumps the kernel interrupts many times in a row (the VRFs go to the kernel until one
//! succeeds). In each, vrfd stays up and a served VRF forwards on the XDP path afterwards (the
//! kernel's own IpForwDatagrams stays put).
use std::time::{Duration, Instant};

use tests::daemon::{json_log_lines, log_message, topology_config, vrf_toml, Vrfd};
use tests::{forwarded_datagrams, list_own_netns, ping, Topology, TopologySpec};
use vrf_common::{Direction, Reason, MAX_VRFS};
use vrf_user::netlink::FAIL_DUMPS_ENV;

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

/// A→B in `vrf`: every packet delivered, and each forwarded by XDP (`on_xdp`: none by the
/// kernel) or each by the kernel (none by XDP).
fn forwards(topo: &Topology, vrfd: &Vrfd<'_>, vrf: &str, on_xdp: bool, what: &str) {
    let r = topo.router();
    let (xdp, kernel) = (forwarded(vrfd, vrf), forwarded_datagrams(r).unwrap().0);
    let p = ping(topo.host(vrf, 0), topo.host_addr(vrf, 1, false), 3).unwrap();
    assert!(p.all_received(), "{what}: {p:?}");
    let (xdp_now, kernel_now) = (forwarded(vrfd, vrf), forwarded_datagrams(r).unwrap().0);
    if on_xdp {
        assert!(xdp_now >= xdp + 6, "{what}: not on the XDP path");
        assert_eq!(kernel_now, kernel, "{what}: the kernel forwarded");
    } else {
        assert_eq!(xdp_now, xdp, "{what}: XDP forwarded");
        assert!(
            kernel_now >= kernel + 6,
            "{what}: the kernel did not forward"
        );
    }
}

/// A→B in red: every packet on the XDP path, none forwarded by the kernel.
fn red_forwards_on_xdp(topo: &Topology, vrfd: &Vrfd<'_>, what: &str) {
    forwards(topo, vrfd, "red", true, what);
}

fn topology(prefix: &str) -> Topology {
    let topo = TopologySpec::two_vrfs_identical()
        .with_prefix(prefix)
        .built_for_xdp();
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

/// Removes the test hook's flag file even when the test fails.
struct FlagFile(std::path::PathBuf);

impl Drop for FlagFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Dumps the kernel interrupts many times in a row (forced with the VRFD_TEST_FAIL_DUMPS
/// hook: every attempt of a resync fails while the flag file exists): vrfd stays up, every
/// VRF goes to the kernel meanwhile (the kernel's IpForwDatagrams witness it), the retries
/// back off, and the first dump that succeeds serves the VRFs on the XDP path again.
#[test]
fn dumps_interrupted_many_times_in_a_row_leave_the_vrfs_to_the_kernel_until_one_succeeds() {
    let prefix = "oe_dumps";
    let topo = topology(prefix);
    let r = topo.router();
    let flag = FlagFile(std::env::temp_dir().join(format!(
        "vrf-xdp-fail-dumps-{}-{prefix}",
        std::process::id()
    )));
    let _ = std::fs::remove_file(&flag.0);
    let mut vrfd = Vrfd::start_with_env(
        r,
        &topology_config(&topo),
        &[],
        &[(FAIL_DUMPS_ENV, flag.0.to_str().unwrap())],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    red_forwards_on_xdp(&topo, &vrfd, "before");

    std::fs::write(&flag.0, b"").unwrap();
    // An IPv4 address that goes takes routes with it silently: only a dump tells which.
    let member = topo.member_ifname("red", 0).to_string();
    r.ip(&["addr", "add", "10.254.0.1/32", "dev", &member])
        .unwrap();
    r.ip(&["addr", "del", "10.254.0.1/32", "dev", &member])
        .unwrap();
    vrfd.wait_for_message(
        "the kernel's tables could not be read: every VRF goes to the kernel until a dump succeeds",
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", vrfd.log()));
    vrfd.wait_for_message(
        "the kernel's tables still cannot be read",
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", vrfd.log()));
    vrfd.check_running().unwrap();
    // Meanwhile red is the kernel's: every packet delivered, by the kernel.
    forwards(&topo, &vrfd, "red", false, "while the kernel is unread");
    let shown = vrfd.show_vrf("red").unwrap();
    assert_eq!(shown["degraded"], true, "{shown}");

    drop(flag);
    vrfd.wait_for_message(
        "the kernel's tables are read again: the VRFs are served",
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", vrfd.log()));
    red_forwards_on_xdp(&topo, &vrfd, "after the dumps succeed again");
    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}

/// The netlink socket overruns (a 4 KiB receive buffer, and a burst of 20,000 routes while vrfd
/// is stopped for a moment with SIGSTOP, shorter than the dead-man switch's lease): the
/// notifications lost are made good by a resync, vrfd stays up, and the maps then hold the
/// kernel's answer for every route (`vrfctl verify`, the kernel asked with RTM_GETROUTE).
#[test]
fn a_netlink_overrun_is_made_good_by_a_resync() {
    let prefix = "oe_overrun";
    let topo = topology(prefix);
    let r = topo.router();
    let mut vrfd = Vrfd::start_with(
        r,
        &topology_config(&topo),
        &[
            "--netlink-receive-buffer",
            "4096",
            "--metrics",
            "127.0.0.1:0",
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    red_forwards_on_xdp(&topo, &vrfd, "before");
    let table = topo.vrf("red").table.to_string();
    let gateway = topo.host_addr4("red", 1).to_string();
    let lines: Vec<String> = (0..20_000u32)
        .map(|i| {
            format!(
                "route add 10.{}.{}.0/24 via {gateway} table {table}",
                100 + i / 256,
                i % 256
            )
        })
        .collect();
    // vrfd stopped while the burst arrives: nothing reads the socket, so it must overrun.
    let pid = vrfd.pid().expect("vrfd runs") as libc::pid_t;
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    batch(r, &lines);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let t0 = Instant::now();
    let resyncs = loop {
        let n = vrfd.metric("vrf_xdp_resyncs_total").unwrap().unwrap_or(0.0);
        if n >= 1.0 || t0.elapsed() > Duration::from_secs(20) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        resyncs >= 1.0,
        "no overrun, no resync: the test proves nothing"
    );
    vrfd.check_running().unwrap();
    // Every route of red, asked of the kernel and of the loaded program.
    let t0 = Instant::now();
    loop {
        let out = vrfd
            .vrfctl(&["verify", "--vrf", "red", "--json"])
            .unwrap_or_else(|e| panic!("{e:#}"));
        if out.status.code() == Some(0) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the maps never agreed with the kernel after the overrun: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    red_forwards_on_xdp(&topo, &vrfd, "after the overrun");
    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}

/// A FIB map that fills (`--fib4-entries 64`, then 100 more routes in red's table): red's
/// table is degraded (its traffic goes to the kernel, which forwards it), blue, whose routes are
/// in, stays on the XDP path, vrfd stays up; once red's table shrinks again it is served again.
#[test]
fn a_full_map_degrades_the_table_that_does_not_fit_until_it_fits_again() {
    let prefix = "oe_full";
    let topo = topology(prefix);
    let r = topo.router();
    let mut vrfd = Vrfd::start_with(r, &topology_config(&topo), &["--fib4-entries", "64"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    red_forwards_on_xdp(&topo, &vrfd, "before");
    let table = topo.vrf("red").table.to_string();
    let gateway = topo.host_addr4("red", 1).to_string();
    let route =
        |verb: &str, i: u32| format!("route {verb} 10.200.{i}.0/24 via {gateway} table {table}");
    batch(r, &(0..100).map(|i| route("add", i)).collect::<Vec<_>>());
    vrfd.wait_for_message(
        "a map is full: the VRF is degraded, its traffic goes to the kernel",
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", vrfd.log()));
    vrfd.check_running().unwrap();
    assert_eq!(vrfd.show_vrf("red").unwrap()["degraded"], true);
    assert_eq!(vrfd.show_vrf("blue").unwrap()["degraded"], false);
    // Red is the kernel's now: delivered, by the kernel.
    forwards(&topo, &vrfd, "red", false, "red while degraded");
    // Blue's routes are in: still on the XDP path.
    forwards(&topo, &vrfd, "blue", true, "blue while red is degraded");

    batch(r, &(0..100).map(|i| route("del", i)).collect::<Vec<_>>());
    let t0 = Instant::now();
    while vrfd.show_vrf("red").unwrap()["degraded"] != false {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "red never served again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    red_forwards_on_xdp(&topo, &vrfd, "after red's table shrank");
    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}
