//! `vrfctl verify` against a running vrfd: the kernel (RTM_GETROUTE with a member as iif) and the
//! loaded program (BPF_PROG_TEST_RUN) agree on a destination inside every route of every VRF;
//! then one FIB entry is corrupted directly through the pinned map (a write no vrfd would make)
//! and verify names that route and exits 1.
//!
//! Topology: red (table 110) and blue (table 120), three members each (host A 10.0.1.2, B
//! 10.0.2.2, C 10.0.3.2), vrfd declaring both; the test adds gateway, blackhole and unreachable
//! routes, IPv4 and IPv6, with a more specific route inside a shorter one.
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::daemon::{start_on, Vrfd};
use tests::{fastpath, list_own_netns, require_root, MemberSpec, Topology, TopologySpec};

fn topology3(prefix: &str) -> Topology {
    require_root();
    let mut spec = TopologySpec::two_vrfs_identical().with_prefix(prefix);
    for v in &mut spec.vrfs {
        v.members
            .push(MemberSpec::dual("10.0.3.0/24", "fd00:3::/64"));
    }
    let topo = spec
        .build()
        .unwrap_or_else(|e| panic!("building the topology: {e:#}"));
    fastpath::complete_host_checksums(&topo).unwrap_or_else(|e| panic!("{e:#}"));
    topo
}

/// `vrfctl verify ARGS --json`: exit code and the report.
fn verify(vrfd: &Vrfd<'_>, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = vrfd.vrfctl(&all).unwrap_or_else(|e| panic!("{e:#}"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "vrfctl verify: not JSON ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// Corrupt what the program reads for red's `victim`: its nexthop group (which no other route
/// shares) gets the paths of `donor`'s group. Both FIBs (the flat IPv4 table and the trie) name
/// the group, so the program's answer changes whichever it reads.
fn corrupt(vrfd: &Vrfd<'_>, victim: &str, donor: &str) {
    let mut maps = vrfd.maps().unwrap();
    let routes = maps.routes().unwrap();
    let find = |p: &str| {
        routes
            .iter()
            .find(|(t, prefix, _)| *t == 110 && prefix.to_string() == p)
            .unwrap_or_else(|| panic!("no {p} in table 110 of the maps"))
            .2
    };
    let (victim, donor) = (find(victim), find(donor));
    assert_ne!(victim.nexthop, donor.nexthop);
    let groups = maps.nexthop_groups().unwrap();
    let group = |id: u32| {
        groups
            .iter()
            .find(|(g, _)| *g == id)
            .unwrap_or_else(|| panic!("no nexthop group {id}"))
            .1
    };
    maps.set_nexthop_group(victim.nexthop, &group(donor.nexthop))
        .unwrap();
}

fn await_lookup(vrfd: &Vrfd<'_>, vrf: &str, dst: &str, want_oif: &str) {
    let t0 = Instant::now();
    loop {
        let v = vrfd
            .lookup(vrf, Some(&format!("{vrf}0")), None, dst)
            .unwrap_or_else(|e| panic!("{e:#}"));
        if v["action"] == "forward" && v["oif"] == want_oif {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{vrf}: {dst} not forwarded via {want_oif} by vrfd: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn verify_agrees_with_the_kernel_then_reports_a_corrupted_fib_entry() {
    let prefix = "vf_verify";
    let topo = topology3(prefix);
    let vrfd = start_on(&topo);
    let r = topo.router();
    for (vrf, table) in [("red", "110"), ("blue", "120")] {
        let dev = |i: usize| format!("{vrf}{i}");
        for route in [
            vec!["10.9.0.0/16", "via", "10.0.2.2", "dev", &dev(1)],
            vec!["10.9.1.0/24", "via", "10.0.3.2", "dev", &dev(2)],
            vec!["10.7.0.0/16", "via", "10.0.3.2", "dev", &dev(2)],
            vec!["blackhole", "10.6.0.0/16"],
            vec!["unreachable", "10.5.0.0/16"],
            vec!["fd09::/32", "via", "fd00:2::2", "dev", &dev(1)],
            vec!["blackhole", "fd06::/32"],
        ] {
            let mut args = vec!["route", "add"];
            args.extend(route);
            args.extend(["table", table]);
            r.ip(&args).unwrap_or_else(|e| panic!("{e:#}"));
        }
    }
    for vrf in ["red", "blue"] {
        await_lookup(&vrfd, vrf, "10.9.128.1", &format!("{vrf}1"));
        await_lookup(&vrfd, vrf, "10.9.1.1", &format!("{vrf}2"));
        await_lookup(&vrfd, vrf, "fd09::1", &format!("{vrf}1"));
    }

    let (code, report) = verify(&vrfd, &[]);
    eprintln!("{report:#}");
    assert_eq!(report["mismatches"], serde_json::json!([]), "{report:#}");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["vrfs"], 2);
    // Per VRF at least: 3 + 3 connected, 5 + 2 added routes (vrfd's maps add the local
    // table's entries and defaults too: asked about as well, passed by the program).
    assert!(report["checked"].as_u64().unwrap() >= 26, "{report:#}");
    assert_eq!(report["shadowed"], 0, "{report:#}");
    // Per VRF: the 6 connected hosts, 10.9/16 (as an address outside 10.9.1/24), 10.9.1/24,
    // 10.7/16, fd09::/32.
    assert_eq!(report["forwarded"], 2 * 10, "{report:#}");
    // The blackholes, dropped by both.
    assert_eq!(report["dropped"], 4, "{report:#}");
    let passed = report["passed_to_kernel"].as_array().unwrap();
    assert!(
        passed
            .iter()
            .any(|p| p["prefix"] == "10.5.0.0/16" && p["kernel"] == "EHOSTUNREACH"),
        "the unreachable route is passed to the kernel: {report:#}"
    );

    // Corrupt red's 10.9.0.0/16: its nexthops become 10.7.0.0/16's (via host C, out of red2).
    corrupt(&vrfd, "10.9.0.0/16", "10.7.0.0/16");

    let (code, report) = verify(&vrfd, &[]);
    assert_eq!(code, 1, "{report:#}");
    let mismatches = report["mismatches"].as_array().unwrap();
    assert_eq!(mismatches.len(), 1, "{report:#}");
    let m = &mismatches[0];
    assert_eq!(m["vrf"], "red");
    assert_eq!(m["prefix"], "10.9.0.0/16");
    // 10.9.0.0/16 minus 10.9.1.0/24: the largest free part is 10.9.128.0/17.
    assert_eq!(m["destination"], "10.9.128.1");
    assert_eq!(m["iif"], "red0");
    assert_eq!(
        m["kernel"], "unicast 10.9.0.0/16 table 110 via 10.0.2.2 dev red1",
        "{m:#}"
    );
    assert_eq!(m["data_plane"], "forward via 10.0.3.2 dev red2", "{m:#}");

    // The person's output says the same, and blue alone is still clean.
    let out = vrfd.vrfctl(&["verify"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("MISMATCH VRF red table 110 route 10.9.0.0/16")
            && text.contains("1 mismatches"),
        "{text}"
    );
    let (code, report) = verify(&vrfd, &["--vrf", "blue"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["vrfs"], 1, "{report:#}");
    let (_, report) = verify(&vrfd, &["--vrf", "red", "--sample", "3"]);
    assert_eq!(report["checked"], 3, "{report:#}");
    let out = vrfd.vrfctl(&["verify", "--vrf", "green"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no VRF named \"green\""));

    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}

/// vrfd runs the same differential itself with `verify_interval`: clean, its gauges say so and
/// when it ran; a corrupted FIB entry shows up in `vrf_xdp_verify_mismatches` and its log.
#[test]
fn vrfd_verifies_periodically_and_exports_the_mismatches() {
    let prefix = "vf_period";
    let topo = topology3(prefix);
    topo.remove_all_rules();
    let config = format!(
        "verify_interval = 1\n\n{}",
        tests::daemon::topology_config(&topo)
    );
    let vrfd = Vrfd::start_with(topo.router(), &config, &["--metrics", "127.0.0.1:0"])
        .unwrap_or_else(|e| panic!("starting vrfd: {e:#}"));
    let r = topo.router();
    for route in [
        ["10.9.0.0/16", "via", "10.0.2.2", "dev", "red1"],
        ["10.7.0.0/16", "via", "10.0.3.2", "dev", "red2"],
    ] {
        let mut args = vec!["route", "add"];
        args.extend(route);
        args.extend(["table", "110"]);
        r.ip(&args).unwrap_or_else(|e| panic!("{e:#}"));
    }
    await_lookup(&vrfd, "red", "10.9.128.1", "red1");
    await_lookup(&vrfd, "red", "10.7.0.1", "red2");
    let metric = |name: &str| vrfd.metric(name).unwrap_or_else(|e| panic!("{e:#}"));
    // A run that started after the routes were mirrored.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let t0 = Instant::now();
    while metric("vrf_xdp_verify_last_run_seconds").unwrap_or(0.0) <= since {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no periodic verify ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metric("vrf_xdp_verify_mismatches"),
        Some(0.0),
        "{}",
        vrfd.log()
    );

    corrupt(&vrfd, "10.9.0.0/16", "10.7.0.0/16");
    let t0 = Instant::now();
    while metric("vrf_xdp_verify_mismatches") != Some(1.0) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the corrupted entry was not found: {:?}\n{}",
            metric("vrf_xdp_verify_mismatches"),
            vrfd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = vrfd.log();
    assert!(
        log.contains("the fast path disagrees with the kernel") && log.contains("10.9.0.0/16"),
        "{log}"
    );

    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}
