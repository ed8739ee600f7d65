//! vrfd going away and coming back: the dead-man switch (a stopped or killed vrfd hands every
//! packet to the kernel within 2 s), and a vrfd that resumes serves the fast path again.
//!
//! Topology: [`TopologySpec::two_vrfs_identical`] (red table 110, blue table 120; host A behind
//! member 0, host B behind member 1). Host B of red answers for 10.9.0.5, routed via B in table
//! 110. The witnesses are the kernel's: whether A's pings to 10.9.0.5 still arrive after the
//! route became `unreachable` behind a vrfd that cannot see it, and the router's
//! IpForwDatagrams (the kernel forwarded it, not XDP).

use std::time::{Duration, Instant};

use tests::daemon::Vrfd;
use tests::fastpath;
use tests::{forwarded_datagrams, list_own_netns, ping, require_root, Topology, TopologySpec};
use vrf_common::{Direction, Reason};

/// The limit: after vrfd stops, the kernel decides within this.
const SWITCH_LIMIT: Duration = Duration::from_secs(2);
const DST: &str = "10.9.0.5";

fn topology(prefix: &str) -> Topology {
    require_root();
    let topo = TopologySpec::two_vrfs_identical()
        .with_prefix(prefix)
        .build()
        .unwrap_or_else(|e| panic!("building the topology: {e:#}"));
    fastpath::complete_host_checksums(&topo).unwrap_or_else(|e| panic!("{e:#}"));
    // vrfd adds the iif rules itself; the topology's own would hide a vrfd that added none.
    for m in topo.members() {
        for fam in ["-4", "-6"] {
            let table = m.table.to_string();
            topo.router()
                .ip(&[
                    fam, "rule", "del", "iif", &m.ifname, "lookup", &table, "pref", "1000",
                ])
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
    }
    topo.host("red", 1)
        .ip(&["addr", "add", "10.9.0.5/32", "dev", "lo"])
        .unwrap();
    topo.router()
        .ip(&[
            "route",
            "add",
            "10.9.0.0/24",
            "via",
            "10.0.2.2",
            "dev",
            "red1",
            "table",
            "110",
        ])
        .unwrap();
    topo
}

fn config(topo: &Topology) -> String {
    let mut s = String::new();
    for v in topo.vrfs() {
        let members: Vec<String> = v
            .members
            .iter()
            .map(|m| format!("{:?}", m.ifname))
            .collect();
        s += &format!(
            "[[vrf]]\nname = {:?}\ntable = {}\ninterfaces = [{}]\n\n",
            v.name,
            v.table,
            members.join(", ")
        );
    }
    s
}

fn lookup(vrfd: &Vrfd<'_>, dst: &str) -> String {
    let v = vrfd
        .lookup("red", Some("red0"), None, dst)
        .unwrap_or_else(|e| panic!("{e:#}"));
    format!(
        "{}/{}",
        v["action"].as_str().unwrap_or("?"),
        v["reason"].as_str().unwrap_or("?")
    )
}

fn await_lookup(vrfd: &Vrfd<'_>, dst: &str, want: &str, timeout: Duration) {
    let t0 = Instant::now();
    loop {
        let got = lookup(vrfd, dst);
        if got == want {
            return;
        }
        assert!(t0.elapsed() < timeout, "lookup {dst}: {got}, want {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Red A pings `dst` `n` times: all answered, and the router's kernel forwarded none (XDP did).
fn assert_xdp_path(topo: &Topology, dst: &str, what: &str) {
    let before = forwarded_datagrams(topo.router()).unwrap();
    let p = ping(topo.host("red", 0), dst, 4).unwrap();
    let after = forwarded_datagrams(topo.router()).unwrap();
    assert!(p.all_received(), "{what}: ping {dst}: {p:?}");
    assert_eq!(
        after.0 - before.0,
        0,
        "{what}: the router's kernel forwarded IPv4: not the XDP path"
    );
}

/// Red A pings `dst`: all answered, every request and reply forwarded by the router's kernel.
fn assert_kernel_path(topo: &Topology, dst: &str, what: &str) {
    let before = forwarded_datagrams(topo.router()).unwrap();
    let p = ping(topo.host("red", 0), dst, 4).unwrap();
    let after = forwarded_datagrams(topo.router()).unwrap();
    assert!(p.all_received(), "{what}: ping {dst}: {p:?}");
    assert!(
        after.0 - before.0 >= 8,
        "{what}: the kernel forwarded {} IPv4 packets, want ≥ 8 (4 requests, 4 replies)",
        after.0 - before.0
    );
}

/// After `signal` (SIGSTOP or SIGKILL) reaches vrfd, `10.9.0.0/24` becomes unreachable in the
/// kernel: A's pings to 10.9.0.5 must stop arriving within 2 s (the stale fast path would go
/// on forwarding them). Returns how long that took.
fn route_change_followed_without_vrfd(topo: &Topology, vrfd: &Vrfd<'_>, signal: i32) -> Duration {
    let pid = vrfd.pid().expect("vrfd runs") as libc::pid_t;
    // SAFETY: plain kill(2) on the vrfd this test started.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill({pid}, {signal})"
    );
    let t0 = Instant::now();
    topo.router()
        .ip(&[
            "route",
            "replace",
            "unreachable",
            "10.9.0.0/24",
            "table",
            "110",
        ])
        .unwrap();
    loop {
        let sent = t0.elapsed();
        let p = ping(topo.host("red", 0), DST, 1).unwrap();
        if p.received == 0 {
            assert!(
                sent <= SWITCH_LIMIT,
                "the kernel's unreachable route took effect only {sent:?} after vrfd stopped"
            );
            return sent;
        }
        assert!(
            sent <= SWITCH_LIMIT,
            "{DST} still forwarded {sent:?} after vrfd stopped and its route became unreachable"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stopped_vrfd_hands_everything_to_the_kernel_within_2s_and_resumes_on_sigcont() {
    let prefix = "rs_stop";
    let topo = topology(prefix);
    let vrfd = Vrfd::start(topo.router(), &config(&topo)).unwrap_or_else(|e| panic!("{e:#}"));
    await_lookup(&vrfd, DST, "forward/forwarded", Duration::from_secs(2));
    assert_xdp_path(&topo, DST, "vrfd running");

    let took = route_change_followed_without_vrfd(&topo, &vrfd, libc::SIGSTOP);
    eprintln!("SIGSTOP: the kernel's route change took effect after {took:?}");
    // Everything else goes to the kernel too, counted under its own reason.
    let maps = vrfd.maps().unwrap();
    let slot = vrf_user::inspect::vrfs(&maps)
        .unwrap()
        .iter()
        .find(|r| r.name == "red")
        .expect("red is served")
        .slot;
    let gone = |m: &vrf_user::maps::Maps| {
        m.vrf_counters(slot, Direction::Ingress).unwrap().by_reason[Reason::PassVrfdGone as usize]
            .packets
    };
    let before = gone(&maps);
    assert_kernel_path(&topo, "10.0.2.2", "vrfd stopped");
    assert!(
        gone(&maps) >= before + 8,
        "vrfd_gone counted {}",
        gone(&maps) - before
    );
    assert_eq!(lookup(&vrfd, "10.0.2.2"), "pass/vrfd_gone");

    // SIGCONT: vrfd reads the events it missed and beats again; the fast path resumes.
    // SAFETY: plain kill(2) on the vrfd this test started.
    unsafe { libc::kill(vrfd.pid().unwrap() as libc::pid_t, libc::SIGCONT) };
    await_lookup(
        &vrfd,
        "10.0.2.2",
        "forward/forwarded",
        Duration::from_secs(2),
    );
    await_lookup(&vrfd, DST, "pass/unreachable", Duration::from_secs(2));
    assert_xdp_path(&topo, "10.0.2.2", "vrfd continued");

    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}

#[test]
fn a_killed_vrfd_leaves_the_kernel_deciding_and_a_new_one_resumes_the_fast_path() {
    let prefix = "rs_kill";
    let topo = topology(prefix);
    let vrfd = Vrfd::start(topo.router(), &config(&topo)).unwrap_or_else(|e| panic!("{e:#}"));
    await_lookup(&vrfd, DST, "forward/forwarded", Duration::from_secs(2));
    assert_xdp_path(&topo, DST, "vrfd running");

    let took = route_change_followed_without_vrfd(&topo, &vrfd, libc::SIGKILL);
    eprintln!("SIGKILL: the kernel's route change took effect after {took:?}");
    assert_kernel_path(&topo, "10.0.2.2", "vrfd killed");
    drop(vrfd);

    let vrfd = Vrfd::start(topo.router(), &config(&topo)).unwrap_or_else(|e| panic!("{e:#}"));
    await_lookup(&vrfd, DST, "pass/unreachable", Duration::from_secs(2));
    assert_xdp_path(&topo, "10.0.2.2", "a new vrfd");
    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}
