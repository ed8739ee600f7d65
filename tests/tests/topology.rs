//! Proves the topology library itself works, without any eBPF: the kernel forwards within each
//! emulated VRF, and every guard cleans up (also on panic).

use std::net::IpAddr;

use tests::{
    forwarded_datagrams, list_own_netns, ping, require_root, tcp_transfer, udp_transfer, NetNs,
    PinDir, Topology, TopologySpec,
};

fn ip_netns_list() -> Vec<String> {
    tests::ip(&["netns", "list"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn two_vrfs_forward_within_each_vrf_and_clean_up() {
    require_root();
    let prefix = "topotest";
    let topo = Topology::build(&TopologySpec::two_vrfs_identical().with_prefix(prefix))
        .expect("build topology");
    let names = topo.netns_names();
    assert_eq!(names.len(), 5, "{}", topo.describe());
    assert_eq!(list_own_netns(prefix).unwrap().len(), 5);

    // Member interfaces and the identical addressing.
    assert_eq!(topo.member_ifname("red", 0), "red0");
    assert_eq!(topo.member_ifname("blue", 1), "blue1");
    for vrf in ["red", "blue"] {
        assert_eq!(topo.host_addr4(vrf, 0).to_string(), "10.0.1.2");
        assert_eq!(topo.router_addr4(vrf, 1).to_string(), "10.0.2.1");
        assert_eq!(topo.host_addr6(vrf, 1).to_string(), "fd00:2::2");
        assert_eq!(
            tests::ifindex(topo.router(), topo.member_ifname(vrf, 0)).unwrap(),
            topo.member_ifindex(vrf, 0)
        );
        assert_eq!(
            tests::mac(topo.host(vrf, 0), "eth0").unwrap(),
            topo.host_mac(vrf, 0)
        );
    }
    assert_eq!(
        topo.router().sysctl_get("net.ipv4.ip_forward").unwrap(),
        "1"
    );
    // The sysctl written through a setns'd thread is what a process in the namespace sees.
    assert_eq!(
        topo.router()
            .exec_ok(&["cat", "/proc/sys/net/ipv6/conf/all/forwarding"])
            .unwrap()
            .trim(),
        "1"
    );
    let rules = topo.router().ip(&["-6", "rule", "show"]).unwrap();
    assert!(rules.contains("iif red0 lookup 110"), "{rules}");
    let t120 = topo
        .router()
        .ip(&["route", "show", "table", "120"])
        .unwrap();
    assert!(t120.contains("unreachable default"), "{t120}");
    assert!(t120.contains("10.0.2.0/24 dev blue1"), "{t120}");
    let gro = topo
        .host("blue", 0)
        .exec_ok(&["ethtool", "-k", "eth0"])
        .unwrap();
    assert!(gro.contains("generic-receive-offload: on"), "{gro}");

    let (f4_before, f6_before) = forwarded_datagrams(topo.router()).unwrap();
    for vrf in ["red", "blue"] {
        for v6 in [false, true] {
            let a = topo.host(vrf, 0);
            let b = topo.host(vrf, 1);
            let r = ping(a, topo.host_addr(vrf, 1, v6), 3).unwrap();
            assert!(
                r.all_received(),
                "{vrf} A->B v6={v6}: {r:?}\n{}",
                topo.describe()
            );
            let r = ping(b, topo.host_addr(vrf, 0, v6), 3).unwrap();
            assert!(
                r.all_received(),
                "{vrf} B->A v6={v6}: {r:?}\n{}",
                topo.describe()
            );
        }
    }
    let (f4, f6) = forwarded_datagrams(topo.router()).unwrap();
    // 2 VRFs x 2 directions x 3 echo requests + 3 replies.
    assert!(
        f4 - f4_before >= 24,
        "IpForwDatagrams delta {}",
        f4 - f4_before
    );
    assert!(
        f6 - f6_before >= 24,
        "Ip6OutForwDatagrams delta {}",
        f6 - f6_before
    );

    // VRF isolation: the router has no route from red into blue's hosts other than its own
    // identical ones; the unreachable default stops anything else.
    let r = ping(topo.host("red", 0), "192.0.2.1", 1).unwrap();
    assert_eq!(r.received, 0);

    // TCP and UDP through the router, verified on the receiving side.
    let n = tcp_transfer(
        topo.host("blue", 1),
        IpAddr::V6(topo.host_addr6("blue", 1)),
        topo.host("blue", 0),
        4 << 20,
    )
    .unwrap();
    assert_eq!(n, 4 << 20);
    let u = udp_transfer(
        topo.host("red", 0),
        IpAddr::V4(topo.host_addr4("red", 0)),
        topo.host("red", 1),
        200,
        1000,
    )
    .unwrap();
    assert_eq!((u.sent, u.received, u.corrupt), (200, 200, 0), "{u:?}");

    drop(topo);
    let left = ip_netns_list();
    for n in &names {
        assert!(!left.contains(n), "{n} still exists after drop: {left:?}");
    }
    assert!(list_own_netns(prefix).unwrap().is_empty());
}

#[test]
fn tcp_to_unreachable_address_reports_zero() {
    require_root();
    let topo = Topology::build(&TopologySpec::two_vrfs_identical().with_prefix("topounr"))
        .expect("build topology");
    // With red1 down on the router, red's table only has the unreachable default for
    // 10.0.2.0/24: the connection fails and nothing arrives (bounded by the 2 s timeout).
    tests::set_down(topo.router(), "red1").unwrap();
    let n = tests::traffic::tcp_transfer_with(
        topo.host("red", 1),
        IpAddr::V4(topo.host_addr4("red", 1)),
        topo.host("red", 0),
        1000,
        std::time::Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(n.received, 0, "{n:?}");
    assert!(n.client_error.is_some(), "{n:?}");
}

#[test]
fn panic_inside_test_still_cleans_up() {
    require_root();
    let prefix = "topopanic";
    let reached = std::sync::atomic::AtomicBool::new(false);
    let result = std::panic::catch_unwind(|| {
        let ns = NetNs::new(prefix).unwrap();
        let ns2 = NetNs::new(prefix).unwrap();
        tests::veth_pair(&ns, "a", &ns2, "b").unwrap();
        let _server = ns.spawn(["sleep", "30"]).unwrap();
        let _pins = PinDir::new().unwrap();
        assert_eq!(list_own_netns(prefix).unwrap().len(), 2);
        // Also a panic inside run_in propagates.
        reached.store(true, std::sync::atomic::Ordering::SeqCst);
        ns.run_in(|| panic!("boom inside the namespace"));
    });
    let msg = result.expect_err("the closure should have panicked");
    assert!(
        reached.load(std::sync::atomic::Ordering::SeqCst),
        "setup failed before the intended panic: {:?}",
        msg.downcast_ref::<String>()
    );
    assert_eq!(
        msg.downcast_ref::<&str>(),
        Some(&"boom inside the namespace")
    );
    assert!(
        list_own_netns(prefix).unwrap().is_empty(),
        "namespaces left: {:?}",
        list_own_netns(prefix).unwrap()
    );
}

#[test]
fn run_in_sees_the_namespace() {
    require_root();
    let ns = NetNs::new("toporunin").unwrap();
    let other = NetNs::new("toporunin").unwrap();
    tests::veth_pair(&ns, "v0", &other, "v1").unwrap();
    // if_nametoindex uses a socket, so it resolves in the thread's namespace.
    let idx = ns.run_in(|| {
        let c = std::ffi::CString::new("v0").unwrap();
        // SAFETY: valid C string.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    });
    assert_eq!(idx, tests::ifindex(&ns, "v0").unwrap());
    // A closure may borrow from the caller.
    let name = String::from("v1");
    let idx1 = other.run_in(|| tests::ifindex(&other, &name).unwrap());
    assert!(idx1 > 0);
    // Background processes run in the namespace and are stopped by the guard.
    let mut p = ns
        .spawn(["sh", "-c", "ip -o link show v0; echo ready; sleep 30"])
        .unwrap();
    p.wait_for_log(|l| l.contains("ready"), std::time::Duration::from_secs(5))
        .unwrap();
    assert!(p.log().contains("v0"), "{}", p.log());
    let pid = p.pid();
    drop(p);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn pin_dir_is_unique_and_removed() {
    require_root();
    let a = PinDir::new().unwrap();
    let b = PinDir::new().unwrap();
    assert_ne!(a.path(), b.path());
    assert!(tests::bpffs::is_bpffs_mounted(tests::BPFFS).unwrap());
    std::fs::create_dir(a.join("sub")).unwrap();
    let p = a.path().to_path_buf();
    drop(a);
    assert!(!p.exists());
}

#[test]
fn unique_ifnames() {
    let a = tests::unique_ifname("veth");
    let b = tests::unique_ifname("veth");
    assert_ne!(a, b);
    assert!(a.len() <= 15);
}
