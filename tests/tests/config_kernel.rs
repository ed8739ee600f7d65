//! Configurations only the kernel can refuse (`config::check_against_kernel`), at start (exit 2,
//! one message naming the problem, nothing left behind) and on SIGHUP (refused, the running
//! configuration stays): a declared VRF named like a kernel VRF device (needs vrf.ko: VM lane),
//! a declared member enslaved to a bridge.
use std::time::{Duration, Instant};

use tests::daemon::{log_has_message, vrf_toml, Vrfd};
use tests::{list_own_netns, TopologySpec};

#[test]
fn a_member_enslaved_to_a_bridge_is_refused_at_start_and_on_reload() {
    let prefix = "ck_bridge";
    let topo = TopologySpec::two_vrfs_identical()
        .with_prefix(prefix)
        .built();
    let r = topo.router();
    r.ip(&["link", "add", "ckbr", "type", "bridge"]).unwrap();
    r.ip(&["link", "set", "red1", "master", "ckbr"]).unwrap();
    topo.remove_all_rules();
    let bad = format!(
        "{}{}",
        vrf_toml("red", 110, &["red0", "red1"]),
        vrf_toml("blue", 120, &["blue0", "blue1"])
    );
    let (exited, pin_path) = Vrfd::run_to_exit_with(r, &bad, "plain").unwrap();
    eprintln!("{}", exited.log);
    assert_eq!(exited.status.code(), Some(2), "{}", exited.log);
    assert!(
        exited
            .log
            .contains("member \"red1\" is enslaved to bridge \"ckbr\""),
        "{}",
        exited.log
    );
    assert!(!pin_path.exists(), "a refused vrfd left pins");
    let rules = r.ip(&["rule", "show"]).unwrap();
    assert!(
        !rules.contains("iif red0"),
        "a refused vrfd added rules:\n{rules}"
    );

    // Released, vrfd starts; enslaved again, a reload that declares it is refused and the
    // running configuration stays.
    r.ip(&["link", "set", "red1", "nomaster"]).unwrap();
    let good = format!(
        "{}{}",
        vrf_toml("red", 110, &["red0"]),
        vrf_toml("blue", 120, &["blue0", "blue1"])
    );
    let mut vrfd = Vrfd::start(r, &good).unwrap_or_else(|e| panic!("{e:#}"));
    r.ip(&["link", "set", "red1", "master", "ckbr"]).unwrap();
    std::fs::write(vrfd.config_path(), &bad).unwrap();
    let pid = vrfd.pid().unwrap();
    tests::run_ok("kill", &["-HUP", &pid.to_string()]).unwrap();
    let t0 = Instant::now();
    while !log_has_message(
        &vrfd.log(),
        "SIGHUP: configuration refused, the running one stays",
    ) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "reload not refused:\n{}",
            vrfd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(vrfd.log().contains("enslaved to bridge"), "{}", vrfd.log());
    vrfd.check_running().unwrap();
    assert_eq!(
        vrfd.show_vrf("red").unwrap()["members"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}
