//! The data plane against the kernel, on random tables.
//!
//! A router namespace holds several VRFs built the policy-routing way (`tests::differential`),
//! thousands of random routes per VRF (every prefix length, nested and overlapping prefixes,
//! multipath, leaks out of another VRF's member, blackhole, unreachable, prohibit, throw, local,
//! alternates by metric, TOS and weighted routes, routes through nexthop objects: singletons,
//! shared ones, weighted groups, blackholes) and the local table's own prefixes, installed in the
//! kernel with one `ip -batch`. The data plane's maps are filled by vrfd's own sync path
//! (rtnetlink and nexthop snapshots → `engine::Engine` → `plan` → `MapWriter`). Then, for many random (VRF, ingress member,
//! source, destination) cases, the kernel is asked (`ip route get fibmatch DST from SRC iif IF`
//! over rtnetlink) and the loaded program is run on a UDP or TCP frame (both `xdp_vrf` and
//! `xdp_vrf_explain`, through BPF_PROG_TEST_RUN), and:
//! - a forward must be a kernel unicast route's path: same egress, gateway (or the destination
//!   when connected), a neighbour the kernel has on that link, its MAC and the egress link's MAC
//!   in the frame, TTL / hop limit one lower, valid IPv4 checksum, nothing else changed;
//! - a drop must be a blackhole route for the kernel too (EINVAL, also from an ordinary source);
//! - a pass is always allowed and must leave the frame untouched, but among cases the kernel
//!   forwards with every path resolved (neighbours present, no path out of the ingress, no TOS
//!   route around) at most 5 % may be passed, so a data plane that passes everything
//!   fails (not 0 %: on purpose the data plane leaves to the kernel multipath routes whose paths
//!   lead into different VRFs — the kernel validates the source in the table of the path it
//!   picks — and packets whose source route it cannot classify, e.g. throw or unsupported);
//! - both programs must agree, and every kind of kernel answer must have occurred.
//!
//! The seed is printed (`VRF_XDP_SEED=… ` replays it); `VRF_XDP_LONG=1` runs ≥ 10k routes per
//! VRF and ≥ 100k cases.

use std::time::Instant;

use rand::{rngs::StdRng, SeedableRng};
use tests::differential::{
    check::{CaseGen, Checker},
    ip_batch,
    oracle::RouteOracle,
    seed, sync_data_plane, tables, Lab, Scale,
};

struct Run {
    name: &'static str,
    scale: Scale,
    /// Share of cases whose source the kernel's IPv4 source validation may call martian.
    martian_sources: f64,
    /// Demand every kind of answer (big runs only).
    coverage: bool,
    /// Random `rp_filter` per member, IPv4 forwarding off on one.
    sysctls: bool,
    /// Routes leaking out of another VRF's member.
    leaks: bool,
}

fn differential(run: Run) {
    tests::require_root();
    let seed = seed(run.name);
    let scale = run.scale;
    println!("{}: {scale:?}", run.name);
    let t0 = Instant::now();
    let lab = Lab::build("diff", scale.vrfs, scale.members).expect("building the lab");
    let mut rng = StdRng::seed_from_u64(seed);
    let plan = tables::generate(&lab, &mut rng, scale.routes_per_vrf, run.leaks);
    let lines = plan.lines(&lab);
    let report = ip_batch(&lab.router, &lines).expect("ip -batch");
    let t_install = t0.elapsed();
    println!(
        "installed {} routes, {} neighbours, {} local-table prefixes with {} batch lines in {:.2?}; {} refused",
        plan.routes.len(),
        plan.neighbours.len(),
        plan.local_table.len(),
        report.lines,
        t_install,
        report.failures.len()
    );
    for (n, line, why) in report.failures.iter().take(10) {
        println!("  refused line {n}: `{line}`: {why}");
    }
    assert!(
        report.failures.len() * 100 <= report.lines,
        "seed {seed}: the kernel refused {} of {} generated lines (first: {:?})",
        report.failures.len(),
        report.lines,
        report.failures.first()
    );
    if run.sysctls {
        let changed = lab
            .randomize_sysctls(&mut rng)
            .expect("setting rp_filter / forwarding");
        println!("members' (rp_filter, IPv4 forwarding): {changed:?}");
    }
    let neighbours = lab
        .kernel_neighbours()
        .expect("reading the kernel's neighbours");

    let t1 = Instant::now();
    let declared = lab.declared();
    let (mut dp, sync) = lab
        .router
        .run_in(|| sync_data_plane(declared))
        .expect("syncing the data plane from the kernel");
    println!(
        "synced {} FIB entries, {} nexthop groups, {} neighbours in {:.2?}",
        sync.routes,
        sync.groups,
        sync.neighbours,
        t1.elapsed()
    );
    assert!(
        sync.degraded.is_empty(),
        "seed {seed}: VRFs left to the kernel, the comparison would be empty: {:?}",
        sync.degraded
    );

    let cases = CaseGen::new(&lab, &plan, run.martian_sources);
    let mut checker = Checker::new(&lab, &plan, neighbours);
    let t2 = Instant::now();
    lab.router
        .run_in(|| -> anyhow::Result<()> {
            let mut oracle = RouteOracle::new()?;
            for n in 0..scale.cases {
                let c = cases.case(&mut rng);
                checker.check(&mut oracle, &mut dp, n, &c)?;
            }
            Ok(())
        })
        .expect("running the cases");
    let stats = &checker.stats;
    println!(
        "{} cases in {:.2?} (total {:.2?})\n{}",
        stats.cases,
        t2.elapsed(),
        t0.elapsed(),
        stats.summary()
    );
    for m in &stats.missed_examples {
        println!("  resolved but passed: {m}");
    }
    drop(dp);

    if !stats.discrepancies.is_empty() {
        let shown: Vec<&String> = stats.discrepancies.iter().take(25).collect();
        panic!(
            "seed {seed} ({}): {} of {} cases differ from the kernel:\n{}",
            run.name,
            stats.discrepancies.len(),
            stats.cases,
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        stats.resolved * 20 >= stats.cases,
        "seed {seed}: only {} of {} cases are fully resolved kernel forwards: the generator is off",
        stats.resolved,
        stats.cases
    );
    let missed = stats.resolved - stats.resolved_forwarded;
    assert!(
        missed * 20 <= stats.resolved,
        "seed {seed}: the data plane passed {missed} of {} cases the kernel forwards with every path resolved: {:?}\n{}",
        stats.resolved,
        stats.resolved_missed,
        stats.missed_examples.join("\n")
    );
    if run.coverage {
        let seen = |label: &str| stats.pairs.keys().any(|(k, _)| k == label);
        for label in [
            "unicast",
            "local",
            "broadcast",
            "EINVAL",
            "EHOSTUNREACH",
            "EACCES",
            "ENETUNREACH",
        ] {
            assert!(
                seen(label),
                "seed {seed}: no case got the kernel answer {label}"
            );
        }
        assert!(stats.dropped > 0, "seed {seed}: no blackhole drop");
        assert!(stats.forwarded_v6 > 0, "seed {seed}: no IPv6 forward");
        assert!(
            stats.forwarded_multipath > 0,
            "seed {seed}: no multipath forward"
        );
        assert!(
            stats.forwarded_leak > 0,
            "seed {seed}: no forward out of another VRF's member"
        );
        assert!(
            stats.forwarded_weighted > 0,
            "seed {seed}: no forward over weighted paths"
        );
        assert!(
            stats.forwarded_nexthop_object > 0,
            "seed {seed}: no forward through a nexthop object"
        );
    }
}

/// The CI-sized run (`VRF_XDP_LONG=1`: ≥ 10k routes per VRF, ≥ 100k cases).
#[test]
fn data_plane_decides_as_the_kernel_on_random_tables() {
    differential(Run {
        name: "differential",
        scale: Scale::from_env(),
        martian_sources: 0.0,
        coverage: true,
        sysctls: false,
        leaks: true,
    });
}

/// The same with a random `rp_filter` (off, strict, loose) on each member and IPv4 forwarding
/// off on one: the reverse-path check and the forwarding switch against the kernel's. Without
/// leaks (see the next test for those).
#[test]
fn reverse_path_filter_and_forwarding_switch_decide_as_the_kernel() {
    let mut scale = Scale::from_env();
    scale.cases = scale.cases.min(30_000);
    differential(Run {
        name: "differential",
        scale,
        martian_sources: 0.0,
        coverage: false,
        sysctls: true,
        leaks: false,
    });
}

/// rp_filter with leaks: with VRFs made of `ip rule iif <member> lookup <table>`, the kernel's
/// source validation looks the source up with `flowi4_iif = <egress>`
/// (`__fib_validate_source`), i.e. in the table of the *egress* member's VRF; a path out of
/// another VRF's member is checked against that VRF's table (and for multipath, the path the
/// kernel's own hash picks). See `reverse_path_filter_looks_in_the_egress_vrf`.
#[test]
fn reverse_path_filter_with_leaks_decides_as_the_kernel() {
    let mut scale = Scale::from_env();
    scale.cases = scale.cases.min(30_000);
    differential(Run {
        name: "differential",
        scale,
        martian_sources: 0.0,
        coverage: false,
        sysctls: true,
        leaks: true,
    });
}

/// Sources the kernel's IPv4 source validation refuses when it forwards: the router's own
/// addresses, subnet broadcast addresses, addresses inside `local` routes. With VRF rules in
/// place `fib_validate_source` always does the full check (`fib4_has_custom_rules`): a reverse
/// lookup of the source whose result is local or broadcast makes the packet martian (EINVAL,
/// dropped). 30 % of the cases get such a source.
#[test]
fn martian_sources_are_never_forwarded_on_random_tables() {
    let mut scale = Scale::from_env();
    scale.cases = scale.cases.min(20_000);
    differential(Run {
        name: "differential",
        scale,
        martian_sources: 0.3,
        coverage: false,
        sysctls: false,
        leaks: true,
    });
}

/// The minimal case of the bug above: red0 (10.0.0.1/24) and red1 (10.0.1.1/24) in one VRF, a
/// neighbour 10.0.1.100 on red1. A packet arriving on red0 for 10.0.1.100 is forwarded by both
/// from an ordinary source; from the router's own address (10.0.0.1 or 10.0.1.1), from the
/// subnet broadcast address 10.0.0.255, or from inside a `local` route of the VRF's table the
/// kernel refuses it (`ip route get 10.0.1.100 from 10.0.0.1 iif red0`: EINVAL, the packet is a
/// martian and dropped), so the data plane must not forward it either.
#[test]
fn ipv4_source_that_is_the_routers_own_address_is_not_forwarded() {
    use std::net::IpAddr;
    use tests::differential::ip_batch_ok;
    use vrf_user::{dataplane::XDP_REDIRECT, packet::FrameSpec};

    tests::require_root();
    let lab = Lab::build("martian", 1, 2).expect("lab");
    let (red0, red1) = (lab.member(0, 0).clone(), lab.member(0, 1).clone());
    ip_batch_ok(
        &lab.router,
        &[
            format!(
                "neigh replace 10.0.1.100 lladdr 02:5e:00:00:00:01 dev {} nud permanent",
                red1.name
            ),
            format!(
                "route add local 198.51.100.0/24 dev {} table 110",
                red0.name
            ),
        ],
    )
    .expect("configuring");
    let declared = lab.declared();
    let (mut dp, sync) = lab
        .router
        .run_in(|| sync_data_plane(declared))
        .expect("sync");
    assert!(sync.degraded.is_empty(), "{:?}", sync.degraded);
    let dst: IpAddr = "10.0.1.100".parse().unwrap();
    let results = lab
        .router
        .run_in(|| -> anyhow::Result<Vec<(String, String, String)>> {
            let mut oracle = RouteOracle::new()?;
            let mut out = Vec::new();
            for src in [
                "10.0.0.2",
                "10.0.0.1",
                "10.0.1.1",
                "10.0.0.255",
                "198.51.100.7",
            ] {
                let src: IpAddr = src.parse()?;
                let kernel = oracle.route_get(red0.ifindex, src, dst)?;
                let mut spec = FrameSpec::new(src, dst);
                spec.dst_mac = red0.mac;
                let e = dp.explain(red0.ifindex, &spec.udp()?)?;
                let dp_forwards = e.action == XDP_REDIRECT;
                out.push((
                    src.to_string(),
                    kernel.label(),
                    format!(
                        "{}{}",
                        if dp_forwards { "forward " } else { "" },
                        e.reason.name()
                    ),
                ));
            }
            Ok(out)
        })
        .expect("asking both");
    drop(dp);
    println!("(source, kernel, data plane): {results:#?}");
    assert_eq!(
        (results[0].1.as_str(), results[0].2.as_str()),
        ("unicast", "forward forwarded"),
        "an ordinary source is forwarded by both"
    );
    for (src, kernel, data_plane) in &results[1..] {
        assert_eq!(kernel, "EINVAL", "the kernel refuses source {src}");
        assert!(
            !data_plane.starts_with("forward"),
            "from {src} the kernel drops the packet as martian (EINVAL), the data plane forwards it ({data_plane})"
        );
    }
}

/// IPv6 forwarding is decided by `net.ipv6.conf.all.forwarding` (or a member's
/// `force_forwarding`), not by the member's own `forwarding` (ip6_forward checks
/// `devconf_all->forwarding`; the per-interface value only makes the interface a router for
/// ND / RA). With `all.forwarding=0` and `red0.forwarding=1` the kernel does not forward IPv6
/// arriving on red0 (seen below: host A cannot reach host B), so the data plane, filled by vrfd's
/// sync path from the same sysctls, must not forward it either.
#[test]
fn ipv6_forwarding_follows_all_forwarding_not_the_members_flag() {
    use std::net::IpAddr;
    use tests::topology::TopologySpec;
    use vrf_user::{config::DeclaredVrf, dataplane::XDP_REDIRECT, packet::FrameSpec};

    tests::require_root();
    let topo = TopologySpec::two_vrfs_identical()
        .with_prefix("fwd6")
        .build()
        .expect("topology");
    let router = topo.router();
    router
        .sysctl("net.ipv6.conf.all.forwarding", "0")
        .expect("sysctl");
    for m in ["red0", "red1"] {
        router
            .sysctl(&format!("net/ipv6/conf/{m}/forwarding"), "1")
            .expect("sysctl");
    }
    // The kernel's account: IPv4 still crosses red, IPv6 does not.
    let v4 = tests::ping(topo.host("red", 0), topo.host_addr("red", 1, false), 2).unwrap();
    let v6 = tests::ping(topo.host("red", 0), topo.host_addr("red", 1, true), 2).unwrap();
    assert!(
        v4.all_received(),
        "IPv4 red A → B through the kernel: {v4:?}"
    );
    assert_eq!(
        v6.received, 0,
        "IPv6 red A → B through the kernel with all.forwarding=0: {v6:?}"
    );

    let declared = vec![DeclaredVrf {
        name: "red".into(),
        table: 110,
        interfaces: vec!["red0".into(), "red1".into()],
        rule_priority: 1000,
        netfilter: Default::default(),
    }];
    let (mut dp, _) = router.run_in(|| sync_data_plane(declared)).expect("sync");
    let a = topo.member("red", 0);
    let (src, dst): (IpAddr, IpAddr) = (a.host6().into(), topo.host_addr("red", 1, true));
    let e = router
        .run_in(|| {
            let mut spec = FrameSpec::new(src, dst);
            spec.src_mac = a.host_mac;
            spec.dst_mac = a.router_mac;
            dp.explain(a.ifindex, &spec.udp()?)
        })
        .expect("explain");
    drop(dp);
    assert_ne!(
        e.action,
        XDP_REDIRECT,
        "the kernel does not forward IPv6 here, the data plane does ({})",
        e.reason.name()
    );
}

/// The minimal case of the rp_filter bug: red (red0 10.0.0.1/24, red1) and blue (blue0, blue1)
/// with identical addressing; red's table sends 198.51.100.0/24 out of blue1 (a leak, `onlink`
/// via 10.0.1.5, a neighbour on blue1) and has 203.0.113.0/24 on red0. Packets arrive on red0:
/// - rp_filter=1, from 10.0.0.2: the kernel looks 10.0.0.2 up from blue1, in blue's table, where
///   it is on blue0, not red0: martian (EINVAL); XDP checks red's table, finds red0, forwards;
/// - rp_filter=2, from 203.0.113.9: blue's table has no route to it: martian for the kernel;
///   red's table has one: XDP forwards.
///
/// A control path inside red (10.0.1.0/24 out of red1) is forwarded by both.
#[test]
fn reverse_path_filter_looks_in_the_egress_vrf() {
    use std::net::IpAddr;
    use tests::differential::ip_batch_ok;
    use vrf_user::{dataplane::XDP_REDIRECT, packet::FrameSpec};

    tests::require_root();
    let lab = Lab::build("rpfleak", 2, 2).expect("lab");
    let (red0, red1, blue1) = (
        lab.member(0, 0).clone(),
        lab.member(0, 1).clone(),
        lab.member(1, 1).clone(),
    );
    ip_batch_ok(
        &lab.router,
        &[
            format!(
                "neigh replace 10.0.1.5 lladdr 02:5e:00:00:00:05 dev {} nud permanent",
                blue1.name
            ),
            format!(
                "neigh replace 10.0.1.6 lladdr 02:5e:00:00:00:06 dev {} nud permanent",
                red1.name
            ),
            format!(
                "route add 198.51.100.0/24 via 10.0.1.5 dev {} onlink table 110",
                blue1.name
            ),
            format!("route add 203.0.113.0/24 dev {} table 110", red0.name),
        ],
    )
    .expect("configuring");
    let mut results = Vec::new();
    for (rp, src, dst) in [
        ("1", "10.0.0.2", "10.0.1.6"),
        ("1", "10.0.0.2", "198.51.100.7"),
        ("2", "203.0.113.9", "10.0.1.6"),
        ("2", "203.0.113.9", "198.51.100.7"),
    ] {
        lab.router
            .sysctl(&format!("net/ipv4/conf/{}/rp_filter", red0.name), rp)
            .expect("rp_filter");
        let declared = lab.declared();
        let (mut dp, _) = lab
            .router
            .run_in(|| sync_data_plane(declared))
            .expect("sync");
        let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let (kernel, forwarded, reason) = lab
            .router
            .run_in(|| -> anyhow::Result<_> {
                let kernel = RouteOracle::new()?.route_get(red0.ifindex, src, dst)?;
                let mut spec = FrameSpec::new(src, dst);
                spec.dst_mac = red0.mac;
                let e = dp.explain(red0.ifindex, &spec.udp()?)?;
                Ok((kernel, e.action == XDP_REDIRECT, e.reason.name()))
            })
            .expect("asking both");
        drop(dp);
        println!(
            "rp_filter={rp} {src} → {dst}: kernel {}, data plane {reason}",
            kernel.label()
        );
        results.push((rp, src, dst, kernel, forwarded, reason));
    }
    for (rp, src, dst, kernel, forwarded, reason) in &results {
        if dst.to_string() == "10.0.1.6" {
            assert!(
                kernel.is_unicast() && *forwarded,
                "control rp_filter={rp} {src} → {dst}: kernel {kernel:?}, data plane {reason}"
            );
        } else {
            assert!(
                !kernel.is_unicast(),
                "the kernel refuses {src} → {dst} (rp_filter={rp})"
            );
            assert!(
                !forwarded,
                "rp_filter={rp} {src} → {dst} out of blue1: the kernel refuses it ({}), the data plane forwards it",
                kernel.label()
            );
        }
    }
}
