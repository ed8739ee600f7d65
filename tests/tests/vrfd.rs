//! End to end: the `vrfd` daemon (and `vrfctl`) as real processes on namespace topologies.
//!
//! Topology ([`TopologySpec::two_vrfs_identical`]): a router namespace with two VRFs emulated
//! with policy routing, red (table 110) and blue (table 120), each with host A (10.0.1.2,
//! fd00:1::2) behind member 0 (`red0`, `blue0`) and host B (10.0.2.2, fd00:2::2) behind member 1
//! (`red1`, `blue1`): the same addresses in both VRFs. vrfd is given only the VRFs' names, tables
//! and member interface names; it must find everything else in the kernel (routes, neighbours,
//! links), add the `ip rule iif <member> lookup <table>` rules, attach XDP, and follow every
//! change made behind its back with iproute2.
//!
//! The topology adds its own `iif` rules at priority 1000; unless a test says otherwise they are
//! deleted before vrfd starts, so that the rules vrfd adds are the only ones (and a vrfd that
//! added none would forward nothing). `with_no_persist_sigterm_…` keeps some of them to check that vrfd neither
//! duplicates nor removes rules it did not add.
//!
//! Witnesses: the router's kernel forwarding counters (`IpForwDatagrams`, `Ip6OutForwDatagrams`)
//! stay put when traffic takes the XDP path; the data plane's per-VRF counters read from vrfd's
//! pinned maps; what the hosts receive; `vrfctl show --json` / `vrfctl lookup --json`.
//!
//! Beyond the scenarios 1–10 (one test each, named after what it asserts): a rule ahead of a
//! VRF's own degrades it, and three regression tests for vrfd bugs these tests found (a bad
//! config reported twice with colour codes, a deleted VRF rule not noticed, an IPv4 multipath
//! route the kernel deleted with its link forwarded again).
//!
//! The binaries come from `cargo build --release -p vrf-user` (see `tests::bin_path`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::daemon::{
    fate, json_log_lines, log_message, start_on, topology_config, vrfctl_in, Vrfd,
};
use tests::fastpath::{self, describe_counters};
use tests::{
    family, forwarded_datagrams, list_own_netns, mac_to_string, ping, tcp_transfer, udp_transfer,
    MemberSpec, NetNs, Topology, TopologySpec,
};
use vrf_common::{Counters, Direction, Reason};

const VRFS: [&str; 2] = ["red", "blue"];
const PINGS: u32 = 4;
/// How soon vrfd must have followed a kernel change.
const FOLLOW: Duration = Duration::from_secs(1);

fn fam_flag(v6: bool) -> &'static str {
    if v6 {
        "-6"
    } else {
        "-4"
    }
}

// ---------------------------------------------------------------------------------------------
// Topology and configuration.

/// The two-VRF identical topology under `prefix`, hosts' TX checksum offload off (needed for
/// TCP/UDP redirected by XDP between veths, see `fastpath::complete_host_checksums`).
fn topology(prefix: &str) -> Topology {
    topology_from(TopologySpec::two_vrfs_identical().with_prefix(prefix))
}

/// The same with a third member (host C: 10.0.3.2, fd00:3::2) in each VRF.
fn topology3(prefix: &str) -> Topology {
    let mut spec = TopologySpec::two_vrfs_identical().with_prefix(prefix);
    for v in &mut spec.vrfs {
        v.members
            .push(MemberSpec::dual("10.0.3.0/24", "fd00:3::/64"));
    }
    topology_from(spec)
}

fn topology_from(spec: TopologySpec) -> Topology {
    spec.built_for_xdp()
}

/// SIGTERM; exit 0, pins gone (checked by `Vrfd::stop`), and no XDP left on any member.
fn stop(vrfd: Vrfd<'_>, topo: &Topology) -> String {
    let log = vrfd
        .stop()
        .unwrap_or_else(|e| panic!("stopping vrfd: {e:#}"));
    for m in topo.members() {
        assert!(
            !fastpath::xdp_attached(topo.router(), &m.ifname).unwrap(),
            "{} still has XDP after vrfd stopped; log:\n{log}",
            m.ifname
        );
    }
    log
}

fn finish(topo: Topology, prefix: &str, t0: Instant) {
    drop(topo);
    assert!(
        list_own_netns(prefix).unwrap().is_empty(),
        "namespaces left behind"
    );
    eprintln!("total: {:?}", t0.elapsed());
}

/// Every `ip rule` of one family in `ns`, as iproute2's JSON objects.
fn rules(ns: &NetNs, v6: bool) -> Vec<Value> {
    let out = ns.ip(&[fam_flag(v6), "-j", "rule", "show"]).unwrap();
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The rules `iif IIF lookup TABLE` (any priority) of one family, as (priority, iif, table).
fn iif_rules(ns: &NetNs, v6: bool) -> Vec<(u64, String, String)> {
    rules(ns, v6)
        .iter()
        .filter_map(|r| {
            Some((
                r["priority"].as_u64()?,
                r["iif"].as_str()?.to_string(),
                r["table"].as_str()?.to_string(),
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Polling and lookups.

/// Calls `f` until it returns `Ok`, for at most `timeout`; panics with the last `Err` otherwise.
/// Returns the value and how long it took.
fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let t0 = Instant::now();
    loop {
        match f() {
            Ok(v) => return (v, t0.elapsed()),
            Err(last) => {
                if t0.elapsed() > timeout {
                    panic!("{what}: not within {timeout:?}; last: {last}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lookup(vrfd: &Vrfd<'_>, vrf: &str, iif: Option<&str>, from: Option<&str>, dst: &str) -> String {
    fate(
        &vrfd
            .lookup(vrf, iif, from, dst)
            .unwrap_or_else(|e| panic!("{e:#}")),
    )
}

/// Polls `vrfctl lookup` until its fate is `want`; returns how long that took.
fn await_fate(
    vrfd: &Vrfd<'_>,
    vrf: &str,
    iif: Option<&str>,
    dst: &str,
    want: &str,
    timeout: Duration,
) -> Duration {
    let what = format!("vrfctl lookup --vrf {vrf} --iif {iif:?} {dst} → {want}");
    let ((), took) = poll(&what, timeout, || {
        let got = lookup(vrfd, vrf, iif, None, dst);
        if got == want {
            Ok(())
        } else {
            Err(got)
        }
    });
    eprintln!("{what}: after {took:?}");
    took
}

// ---------------------------------------------------------------------------------------------
// Counters.

/// Ingress counters of every VRF vrfd serves (from its pins), and the router's kernel
/// forwarding counters.
struct Snapshot {
    vrfs: BTreeMap<String, Counters>,
    kernel: (u64, u64),
}

impl Snapshot {
    fn take(topo: &Topology, vrfd: &Vrfd<'_>) -> Snapshot {
        let maps = vrfd.maps().unwrap_or_else(|e| panic!("{e:#}"));
        let reports = vrf_user::inspect::vrfs(&maps).unwrap_or_else(|e| panic!("{e:#}"));
        let vrfs = reports
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    maps.vrf_counters(r.slot, Direction::Ingress).unwrap(),
                )
            })
            .collect();
        Snapshot {
            vrfs,
            kernel: forwarded_datagrams(topo.router()).unwrap(),
        }
    }
}

struct Delta {
    vrfs: BTreeMap<String, Counters>,
    kernel: (u64, u64),
}

impl Delta {
    fn between(a: &Snapshot, b: &Snapshot) -> Delta {
        Delta {
            vrfs: b
                .vrfs
                .iter()
                .map(|(n, c)| {
                    let before = a.vrfs.get(n).copied().unwrap_or_default();
                    (n.clone(), fastpath::counters_delta(&before, c))
                })
                .collect(),
            kernel: (b.kernel.0 - a.kernel.0, b.kernel.1 - a.kernel.1),
        }
    }

    fn packets(&self, vrf: &str, r: Reason) -> u64 {
        self.vrfs
            .get(vrf)
            .map_or(0, |c| c.by_reason[r as usize].packets)
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "router kernel: IpForwDatagrams +{}, Ip6OutForwDatagrams +{}",
            self.kernel.0, self.kernel.1
        );
        for (n, c) in &self.vrfs {
            s += &format!("\n  {n} ingress: {}", describe_counters(c));
        }
        s
    }

    fn assert_kernel_idle(&self, what: &str) {
        assert_eq!(
            self.kernel,
            (0, 0),
            "{what}: the router's kernel forwarded (IPv4, IPv6) packets: not the XDP path\n{}",
            self.describe()
        );
    }
}

/// Host B's member of red restored as the topology made it (routes, permanent neighbours);
/// vrfd must follow: from red0 both families forward via red1 again, and pings take XDP.
fn restore_host_b(topo: &Topology, vrfd: &Vrfd<'_>, what: &str) {
    topo.restore_member("red", 1);
    for dst in ["10.0.2.2", "fd00:2::2"] {
        await_fate(
            vrfd,
            "red",
            Some("red0"),
            dst,
            "forward/forwarded via red1",
            FOLLOW,
        );
    }
    for v6 in [false, true] {
        assert_ping_via_xdp(topo, vrfd, "red", v6, what);
    }
}

/// Pings A→B in `vrf` (`v6` family): all received, forwarded by XDP (kernel +0, the VRF's
/// forwarded counter grows by requests and replies).
fn assert_ping_via_xdp(topo: &Topology, vrfd: &Vrfd<'_>, vrf: &str, v6: bool, what: &str) {
    let before = Snapshot::take(topo, vrfd);
    let r = ping(topo.host(vrf, 0), topo.host_addr(vrf, 1, v6), PINGS).unwrap();
    let d = Delta::between(&before, &Snapshot::take(topo, vrfd));
    let what = format!("{what}: {vrf} ping A→B {}", family(v6));
    assert!(r.all_received(), "{what}: {r:?}\n{}", d.describe());
    assert!(
        d.packets(vrf, Reason::Forwarded) >= 2 * u64::from(PINGS),
        "{what}: forwarded counter\n{}",
        d.describe()
    );
    d.assert_kernel_idle(&what);
}

// ---------------------------------------------------------------------------------------------
// Kernel state helpers.

/// Distinct prefixes of the router's local table of one family (what vrfd overlays into every
/// VRF's FIB).
fn local_prefixes(topo: &Topology, v6: bool) -> BTreeSet<String> {
    let out = topo
        .router()
        .ip(&[fam_flag(v6), "-j", "route", "show", "table", "local"])
        .unwrap();
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["dst"].as_str().map(str::to_string))
        .collect()
}

/// A neighbour as (ifindex, address, MAC).
type NeighEntry = (u32, IpAddr, [u8; 6]);

/// The kernel's usable neighbours (a MAC, and reachable, stale, delay, probe, permanent or
/// noarp: what the data plane may use) on the members of `vrf`. `nud all`: plain `ip neigh`
/// hides NOARP entries, such as the multicast ones (`ff02::16`) the router's MLD reports create.
fn kernel_neighbours(topo: &Topology, vrf: &str) -> BTreeSet<NeighEntry> {
    const USABLE: [&str; 6] = ["REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP"];
    let mut out = BTreeSet::new();
    for m in &topo.vrf(vrf).members {
        let j = topo
            .router()
            .ip(&["-j", "neigh", "show", "dev", &m.ifname, "nud", "all"])
            .unwrap();
        for n in serde_json::from_str::<Value>(&j)
            .unwrap()
            .as_array()
            .unwrap()
        {
            let states: Vec<&str> = n["state"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let (Some(dst), Some(mac)) = (n["dst"].as_str(), n["lladdr"].as_str()) else {
                continue;
            };
            if states.iter().any(|s| USABLE.contains(s)) {
                out.insert((
                    m.ifindex,
                    dst.parse().unwrap(),
                    tests::parse_mac(mac).unwrap(),
                ));
            }
        }
    }
    out
}

/// The neighbours in vrfd's pinned map on the members of `vrf`.
fn map_neighbours(topo: &Topology, vrfd: &Vrfd<'_>, vrf: &str) -> BTreeSet<NeighEntry> {
    let members: BTreeSet<u32> = topo.vrf(vrf).members.iter().map(|m| m.ifindex).collect();
    let maps = vrfd.maps().unwrap();
    maps.neigh
        .iter()
        .map(|e| e.unwrap())
        .filter(|(k, _)| members.contains(&k.ifindex))
        .map(|(k, v)| {
            let addr = vrf_user::maps::addr_from16(k.family, k.addr).expect("family 4 or 6");
            (k.ifindex, addr, v.mac)
        })
        .collect()
}

/// Polls until vrfd's neighbour map for `vrf` holds exactly the kernel's usable neighbours and
/// `vrfctl show` counts them; returns them.
fn await_neighbours_mirrored(topo: &Topology, vrfd: &Vrfd<'_>, vrf: &str) -> BTreeSet<NeighEntry> {
    let (set, took) = poll(&format!("{vrf}'s neighbours mirrored"), FOLLOW, || {
        let kernel = kernel_neighbours(topo, vrf);
        let map = map_neighbours(topo, vrfd, vrf);
        if kernel != map {
            return Err(format!("kernel {kernel:?}\n  map {map:?}"));
        }
        let v = vrfd.show_vrf(vrf).map_err(|e| format!("{e:#}"))?;
        if v["neighbours"].as_u64() != Some(kernel.len() as u64) {
            return Err(format!(
                "vrfctl show counts {} for {kernel:?}",
                v["neighbours"]
            ));
        }
        Ok(kernel)
    });
    eprintln!("{vrf}: {} neighbours mirrored after {took:?}", set.len());
    set
}

// =============================================================================================
// 1.

#[test]
fn traffic_in_both_vrfs_with_identical_addressing_takes_the_xdp_path() {
    let t0 = Instant::now();
    let prefix = "vd_traffic";
    let topo = topology(prefix);
    let vrfd = start_on(&topo);
    eprintln!("vrfd ready after {:?}", t0.elapsed());

    // vrfctl show: both VRFs, their tables, their members (up), not degraded.
    let show = vrfd.show().unwrap();
    let vrfs = show["vrfs"].as_array().expect("vrfs array");
    let names: Vec<&str> = vrfs.iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(names, ["blue", "red"], "vrfctl show --json: {show:#}");
    for v in vrfs {
        let name = v["name"].as_str().unwrap();
        let want = topo.vrf(name);
        assert_eq!(v["table"], want.table, "{name}'s table: {v:#}");
        assert_eq!(v["kind"], "declared", "{v:#}");
        assert_eq!(v["degraded"], false, "{name} degraded: {v:#}");
        let members: Vec<(String, u64, bool)> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap().to_string(),
                    m["ifindex"].as_u64().unwrap(),
                    m["up"].as_bool().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(String, u64, bool)> = want
            .members
            .iter()
            .map(|m| (m.ifname.clone(), u64::from(m.ifindex), true))
            .collect();
        assert_eq!(members, expected, "{name}'s members: {v:#}");
        // Two connected routes and the unreachable default per family, plus the local table.
        assert!(v["routes4"].as_u64().unwrap() >= 3, "{v:#}");
        assert!(v["routes6"].as_u64().unwrap() >= 3, "{v:#}");
    }
    // Neighbours: exactly the kernel's usable ones (hosts A and B, v4 and v6, permanent, and
    // whatever IPv6 learned of their link-local addresses), on each VRF's own members.
    for vrf in VRFS {
        let n = await_neighbours_mirrored(&topo, &vrfd, vrf);
        for m in &topo.vrf(vrf).members {
            for addr in [IpAddr::from(m.host4()), IpAddr::from(m.host6())] {
                assert!(
                    n.contains(&(m.ifindex, addr, m.host_mac)),
                    "{vrf}: {addr} on {} missing from {n:?}",
                    m.ifname
                );
            }
        }
    }

    let start_snap = Snapshot::take(&topo, &vrfd);
    for vrf in VRFS {
        let (a, b) = (topo.host(vrf, 0), topo.host(vrf, 1));
        for v6 in [false, true] {
            let what = format!("{vrf} {}", family(v6));
            assert_ping_via_xdp(&topo, &vrfd, vrf, v6, "traffic");

            let before = Snapshot::take(&topo, &vrfd);
            let got = tcp_transfer(b, topo.host_addr(vrf, 1, v6), a, 1 << 20).unwrap();
            let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
            assert_eq!(got, 1 << 20, "{what} TCP A→B bytes\n{}", d.describe());
            assert!(d.packets(vrf, Reason::Forwarded) > 0, "{}", d.describe());
            d.assert_kernel_idle(&format!("{what} TCP"));

            let before = Snapshot::take(&topo, &vrfd);
            let u = udp_transfer(b, topo.host_addr(vrf, 1, v6), a, 500, 800).unwrap();
            let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
            assert_eq!(
                (u.sent, u.received, u.corrupt),
                (500, 500, 0),
                "{what} UDP A→B\n{}",
                d.describe()
            );
            assert!(d.packets(vrf, Reason::Forwarded) >= 500, "{}", d.describe());
            d.assert_kernel_idle(&format!("{what} UDP"));
        }
    }
    let total = Delta::between(&start_snap, &Snapshot::take(&topo, &vrfd));
    eprintln!("all traffic: {}", total.describe());
    total.assert_kernel_idle("all traffic");

    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}

// =============================================================================================
// 2.

#[test]
fn route_add_replace_del_in_a_vrf_table_changes_forwarding_within_a_second() {
    let t0 = Instant::now();
    let prefix = "vd_routes";
    let topo = topology(prefix);
    let vrfd = start_on(&topo);
    let r = topo.router();
    let red_b = topo.host("red", 1);

    // Host B of red answers for 10.9.0.5 and fd00:9::5 (so a real ping can follow the route).
    red_b
        .ip(&["addr", "add", "10.9.0.5/32", "dev", "lo"])
        .unwrap();
    red_b
        .ip(&["addr", "add", "fd00:9::5/128", "dev", "lo", "nodad"])
        .unwrap();

    let blue_unaffected = |step: &str| {
        for dst in ["10.9.0.5", "fd00:9::5"] {
            assert_eq!(
                lookup(&vrfd, "blue", Some("blue0"), None, dst),
                "pass/unreachable",
                "{step}: blue's lookup of {dst} changed"
            );
        }
        for dst in ["10.0.2.2", "fd00:2::2"] {
            assert_eq!(
                lookup(&vrfd, "blue", Some("blue0"), None, dst),
                format!("forward/forwarded via blue1"),
                "{step}: blue's lookup of {dst} changed"
            );
        }
    };
    blue_unaffected("before");

    for v6 in [false, true] {
        let (net, dst, gw_b, gw_a) = if v6 {
            ("fd00:9::/64", "fd00:9::5", "fd00:2::2", "fd00:1::2")
        } else {
            ("10.9.0.0/24", "10.9.0.5", "10.0.2.2", "10.0.1.2")
        };
        let fam = family(v6);
        assert_eq!(
            lookup(&vrfd, "red", Some("red0"), None, dst),
            "pass/unreachable",
            "{fam}: before any route"
        );

        // add: via host B (red1). Looked up as arriving from red0.
        r.ip(&[
            "route", "add", net, "via", gw_b, "dev", "red1", "table", "110",
        ])
        .unwrap();
        let took = await_fate(
            &vrfd,
            "red",
            Some("red0"),
            dst,
            &format!("forward/forwarded via red1 gw {gw_b}"),
            FOLLOW,
        );
        eprintln!("{fam} add followed in {took:?}");
        // The real thing: red A reaches the address behind B, through XDP.
        let before = Snapshot::take(&topo, &vrfd);
        let p = ping(topo.host("red", 0), dst, PINGS).unwrap();
        let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
        assert!(
            p.all_received(),
            "{fam} ping {dst} via B: {p:?}\n{}",
            d.describe()
        );
        d.assert_kernel_idle(&format!("{fam} ping {dst}"));
        blue_unaffected("after add");

        // replace: via host A (red0). Looked up as arriving from red1.
        r.ip(&[
            "route", "replace", net, "via", gw_a, "dev", "red0", "table", "110",
        ])
        .unwrap();
        await_fate(
            &vrfd,
            "red",
            Some("red1"),
            dst,
            &format!("forward/forwarded via red0 gw {gw_a}"),
            FOLLOW,
        );
        assert_eq!(
            lookup(&vrfd, "red", Some("red0"), None, dst),
            "pass/egress",
            "{fam}: out of the interface it came in: the kernel's (ICMP redirect)"
        );
        blue_unaffected("after replace");

        // del: back to the table's unreachable default.
        r.ip(&["route", "del", net, "table", "110"]).unwrap();
        await_fate(&vrfd, "red", Some("red1"), dst, "pass/unreachable", FOLLOW);
        await_fate(&vrfd, "red", Some("red0"), dst, "pass/unreachable", FOLLOW);
        let p = ping(topo.host("red", 0), dst, 2).unwrap();
        assert_eq!(p.received, 0, "{fam} ping {dst} after del: {p:?}");
        blue_unaffected("after del");
    }

    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}

// =============================================================================================
// 3.

#[test]
fn a_neighbour_whose_mac_changes_is_followed() {
    let t0 = Instant::now();
    let prefix = "vd_neigh";
    let topo = topology(prefix);
    let vrfd = start_on(&topo);
    let red_b = topo.member("red", 1);
    let blue_b = topo.member("blue", 1);
    let fake = [0x02, 0x00, 0x5e, 0x10, 0x99, 0x99];

    let map_mac = |ifindex: u32, addr: IpAddr| -> Option<[u8; 6]> {
        vrfd.maps()
            .unwrap()
            .neighbour(ifindex, addr)
            .unwrap_or_else(|e| panic!("{e:#}"))
    };
    for v6 in [false, true] {
        let fam = family(v6);
        let addr = topo.host_addr("red", 1, v6);
        assert_eq!(map_mac(red_b.ifindex, addr), Some(red_b.host_mac), "{fam}");

        topo.router()
            .ip(&[
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &mac_to_string(fake),
                "dev",
                &red_b.ifname,
                "nud",
                "permanent",
            ])
            .unwrap();
        let ((), took) = poll(
            &format!("{fam}: map follows the new MAC"),
            FOLLOW,
            || match map_mac(red_b.ifindex, addr) {
                Some(m) if m == fake => Ok(()),
                other => Err(format!("{:?}", other.map(mac_to_string))),
            },
        );
        eprintln!("{fam}: new MAC in the map after {took:?}");
        assert_eq!(
            lookup(&vrfd, "red", Some("red0"), None, &addr.to_string()),
            "forward/forwarded via red1",
            "{fam}: still forwarded, to the new MAC"
        );
        // Blue's neighbour with the same address is untouched.
        assert_eq!(
            map_mac(blue_b.ifindex, addr),
            Some(blue_b.host_mac),
            "{fam}: blue's neighbour"
        );
        // The next frames go to the new MAC: forwarded by XDP, and host B (another MAC) drops them.
        let before = Snapshot::take(&topo, &vrfd);
        let p = ping(topo.host("red", 0), addr, 2).unwrap();
        let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
        assert_eq!(
            p.received,
            0,
            "{fam}: frames to the fake MAC reached B: {p:?}\n{}\nmap {:?}\nkernel {}",
            d.describe(),
            map_mac(red_b.ifindex, addr).map(mac_to_string),
            topo.router()
                .ip(&["neigh", "show", "dev", &red_b.ifname])
                .unwrap()
        );
        assert!(
            d.packets("red", Reason::Forwarded) >= 2,
            "{fam}: requests forwarded to the fake MAC\n{}",
            d.describe()
        );
        d.assert_kernel_idle(&format!("{fam} ping with the fake MAC"));

        // And back.
        topo.router()
            .ip(&[
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &mac_to_string(red_b.host_mac),
                "dev",
                &red_b.ifname,
                "nud",
                "permanent",
            ])
            .unwrap();
        poll(
            &format!("{fam}: map follows the MAC back"),
            FOLLOW,
            || match map_mac(red_b.ifindex, addr) {
                Some(m) if m == red_b.host_mac => Ok(()),
                other => Err(format!("{:?}", other.map(mac_to_string))),
            },
        );
        assert_ping_via_xdp(&topo, &vrfd, "red", v6, "MAC restored");
    }

    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}

// =============================================================================================
// 4.

#[test]
fn a_member_going_down_and_up_is_followed() {
    let t0 = Instant::now();
    let prefix = "vd_updown";
    let topo = topology(prefix);
    let vrfd = start_on(&topo);
    let r = topo.router();
    let red_b = topo.member("red", 1);

    let member_up = |name: &str| -> Result<bool, String> {
        let v = vrfd.show_vrf("red").map_err(|e| format!("{e:#}"))?;
        v["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name))
            .and_then(|m| m["up"].as_bool())
            .ok_or_else(|| format!("no member {name}: {v}"))
    };
    assert_eq!(member_up("red1"), Ok(true));

    r.ip(&["link", "set", "red1", "down"]).unwrap();
    poll(
        "vrfctl show reports red1 down",
        FOLLOW,
        || match member_up("red1")? {
            false => Ok(()),
            true => Err("up".into()),
        },
    );
    // The kernel removed the connected routes through red1 and flushed its neighbours, even the
    // permanent ones (and the IPv6 address): lookups through it go to the kernel.
    assert_eq!(
        r.ip(&["neigh", "show", "dev", "red1"]).unwrap().trim(),
        "",
        "the kernel keeps neighbours on a down link"
    );
    for dst in ["10.0.2.2", "fd00:2::2"] {
        let f = lookup(&vrfd, "red", Some("red0"), None, dst);
        assert!(f.starts_with("pass/"), "red {dst} with red1 down: {f}");
        eprintln!("red {dst} with red1 down: {f}");
        assert_eq!(
            lookup(&vrfd, "blue", Some("blue0"), None, dst),
            "forward/forwarded via blue1",
            "blue is unaffected"
        );
    }
    for addr in [red_b.host4().into(), IpAddr::from(red_b.host6())] {
        assert_eq!(
            vrfd.maps().unwrap().neighbour(red_b.ifindex, addr).unwrap(),
            None,
            "vrfd keeps the flushed neighbour {addr}"
        );
    }
    let p = ping(topo.host("red", 0), "10.0.2.2", 2).unwrap();
    assert_eq!(p.received, 0, "ping through a down member: {p:?}");
    assert_ping_via_xdp(&topo, &vrfd, "blue", false, "red1 down");

    r.ip(&["link", "set", "red1", "up"]).unwrap();
    poll("vrfctl show reports red1 up", FOLLOW, || {
        match member_up("red1")? {
            true => Ok(()),
            false => Err("down".into()),
        }
    });
    // Nothing comes back by itself (routes added by hand, permanent neighbours): re-add them.
    restore_host_b(&topo, &vrfd, "red1 up again");

    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}

// =============================================================================================
// 5.

#[test]
fn a_multipath_route_spreads_flows_over_its_nexthops() {
    let t0 = Instant::now();
    let prefix = "vd_multipath";
    // Flows arrive from host C (red2) and leave through A (red0) or B (red1).
    let topo = topology3(prefix);
    let vrfd = start_on(&topo);
    let r = topo.router();
    r.ip(&[
        "route",
        "add",
        "10.7.0.0/24",
        "table",
        "110",
        "nexthop",
        "via",
        "10.0.1.2",
        "dev",
        "red0",
        "nexthop",
        "via",
        "10.0.2.2",
        "dev",
        "red1",
    ])
    .unwrap();
    r.ip(&[
        "-6",
        "route",
        "add",
        "fd00:7::/64",
        "table",
        "110",
        "nexthop",
        "via",
        "fd00:1::2",
        "dev",
        "red0",
        "nexthop",
        "via",
        "fd00:2::2",
        "dev",
        "red1",
    ])
    .unwrap();
    let gw_of = |oif: &str, v6: bool| match (oif, v6) {
        ("red0", false) => "10.0.1.2",
        ("red1", false) => "10.0.2.2",
        ("red0", true) => "fd00:1::2",
        ("red1", true) => "fd00:2::2",
        _ => panic!("unexpected oif {oif}"),
    };

    for v6 in [false, true] {
        let fam = family(v6);
        let dst_of = |x: u32| {
            if v6 {
                format!("fd00:7::{x:x}")
            } else {
                format!("10.7.0.{x}")
            }
        };
        let sources: Vec<String> = if v6 {
            vec!["fd00:3::2".into(), "fd00:3::3".into(), "2001:db8::7".into()]
        } else {
            vec!["10.0.3.2".into(), "10.0.3.3".into(), "198.51.100.7".into()]
        };
        // Let vrfd see the route first.
        poll(&format!("{fam}: multipath route followed"), FOLLOW, || {
            let f = lookup(&vrfd, "red", Some("red2"), None, &dst_of(1));
            if f.starts_with("forward/") {
                Ok(())
            } else {
                Err(f)
            }
        });
        let mut answers: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut per_oif: BTreeMap<String, u32> = BTreeMap::new();
        for src in &sources {
            for x in 1..=24 {
                let dst = dst_of(x);
                let v = vrfd.lookup("red", Some("red2"), Some(src), &dst).unwrap();
                let f = fate(&v);
                let oif = v["oif"].as_str().unwrap_or("").to_string();
                assert!(oif == "red0" || oif == "red1", "{fam} {src} → {dst}: {f}");
                assert_eq!(
                    f,
                    format!("forward/forwarded via {oif} gw {}", gw_of(&oif, v6)),
                    "{fam} {src} → {dst}"
                );
                *per_oif.entry(oif).or_default() += 1;
                answers.insert((src.clone(), dst), f);
            }
        }
        eprintln!("{fam}: flows per nexthop {per_oif:?}");
        assert_eq!(
            per_oif.len(),
            2,
            "{fam}: both nexthops must appear: {per_oif:?}"
        );
        // Stable: the same (src, dst) always gets the same answer.
        for ((src, dst), f) in &answers {
            assert_eq!(
                &lookup(&vrfd, "red", Some("red2"), Some(src), dst),
                f,
                "{fam}: {src} → {dst} changed its nexthop"
            );
        }
    }

    // Real packets go where lookup says. Hosts A and B accept all of 10.7.0.0/24 and
    // fd00:7::/64 (local routes on lo); host C sends one marked datagram per destination from
    // port 40000 to port 5201, the ports `vrfctl lookup` puts in its packet.
    for m in [topo.member("red", 0), topo.member("red", 1)] {
        m.host
            .ip(&["route", "add", "local", "10.7.0.0/24", "dev", "lo"])
            .unwrap();
        m.host
            .ip(&["-6", "route", "add", "local", "fd00:7::/64", "dev", "lo"])
            .unwrap();
    }
    for v6 in [false, true] {
        let fam = family(v6);
        let any: IpAddr = if v6 {
            "::".parse().unwrap()
        } else {
            "0.0.0.0".parse().unwrap()
        };
        let recv: Vec<(&str, UdpSocket)> = [("red0", 0), ("red1", 1)]
            .into_iter()
            .map(|(oif, i)| {
                let s = topo
                    .host("red", i)
                    .run_in(|| UdpSocket::bind(SocketAddr::new(any, 5201)))
                    .unwrap();
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                (oif, s)
            })
            .collect();
        let c_addr = topo.host_addr("red", 2, v6);
        let sender = topo
            .host("red", 2)
            .run_in(|| UdpSocket::bind(SocketAddr::new(c_addr, 40000)))
            .unwrap();
        let mut expected: BTreeMap<String, &str> = BTreeMap::new();
        let before = Snapshot::take(&topo, &vrfd);
        for x in 1..=24u32 {
            let dst = if v6 {
                format!("fd00:7::{x:x}")
            } else {
                format!("10.7.0.{x}")
            };
            let v = vrfd
                .lookup("red", Some("red2"), Some(&c_addr.to_string()), &dst)
                .unwrap();
            let oif = if v["oif"] == "red0" { "red0" } else { "red1" };
            expected.insert(dst.clone(), oif);
            let ip: IpAddr = dst.parse().unwrap();
            sender
                .send_to(dst.as_bytes(), SocketAddr::new(ip, 5201))
                .unwrap();
        }
        let mut got: BTreeMap<String, &str> = BTreeMap::new();
        for (oif, s) in &recv {
            let mut buf = [0u8; 128];
            let quiet = Instant::now();
            let mut last = Instant::now();
            while last.elapsed() < Duration::from_millis(300)
                && quiet.elapsed() < Duration::from_secs(5)
            {
                if let Ok(n) = s.recv(&mut buf) {
                    let dst = String::from_utf8_lossy(&buf[..n]).into_owned();
                    assert!(
                        got.insert(dst.clone(), oif).is_none(),
                        "{fam}: {dst} received twice"
                    );
                    last = Instant::now();
                }
            }
        }
        let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
        assert_eq!(
            got,
            expected,
            "{fam}: where each flow arrived vs vrfctl lookup\n{}",
            d.describe()
        );
        d.assert_kernel_idle(&format!("{fam} multipath datagrams"));
    }

    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}

// =============================================================================================
// 6.

#[test]
fn flushing_a_table_or_neighbours_behind_vrfds_back_converges() {
    let t0 = Instant::now();
    let prefix = "vd_flush";
    let topo = topology(prefix);
    let vrfd = start_on(&topo);
    let r = topo.router();
    let probes = [
        ("red0", "10.0.2.2"),
        ("red1", "10.0.1.2"),
        ("red0", "10.9.9.9"),
        ("red0", "fd00:2::2"),
        ("red1", "fd00:1::2"),
        ("red0", "fd00:9::9"),
    ];

    r.ip(&["-4", "route", "flush", "table", "110"]).unwrap();
    r.ip(&["-6", "route", "flush", "table", "110"]).unwrap();
    assert_eq!(
        r.ip(&["-4", "route", "show", "table", "110"])
            .unwrap()
            .trim(),
        ""
    );
    assert_eq!(
        r.ip(&["-6", "route", "show", "table", "110"])
            .unwrap()
            .trim(),
        ""
    );
    for (iif, dst) in probes {
        await_fate(&vrfd, "red", Some(iif), dst, "pass/no_route", FOLLOW);
    }
    let (l4, l6) = (local_prefixes(&topo, false), local_prefixes(&topo, true));
    let ((), _) = poll("red's route counts = the local table's", FOLLOW, || {
        let v = vrfd.show_vrf("red").map_err(|e| format!("{e:#}"))?;
        let got = (v["routes4"].as_u64(), v["routes6"].as_u64());
        let want = (Some(l4.len() as u64), Some(l6.len() as u64));
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "(routes4, routes6) {got:?}, want {want:?}: local {l4:?} {l6:?}"
            ))
        }
    });
    for dst in ["10.0.2.2", "fd00:2::2"] {
        assert_eq!(
            lookup(&vrfd, "blue", Some("blue0"), None, dst),
            "forward/forwarded via blue1",
            "blue is unaffected by red's flush"
        );
    }
    let p = ping(topo.host("red", 0), "10.0.2.2", 2).unwrap();
    assert_eq!(p.received, 0, "red without routes: {p:?}");

    // Re-add the table as the topology made it.
    for fam in ["-4", "-6"] {
        r.ip(&[
            fam,
            "route",
            "add",
            "unreachable",
            "default",
            "metric",
            "4278198272",
            "table",
            "110",
        ])
        .unwrap();
    }
    topo.restore_member("red", 0);
    topo.restore_member("red", 1);
    for (iif, dst) in probes {
        let want = match dst {
            "10.0.2.2" | "fd00:2::2" => "forward/forwarded via red1",
            "10.0.1.2" | "fd00:1::2" => "forward/forwarded via red0",
            _ => "pass/unreachable",
        };
        await_fate(&vrfd, "red", Some(iif), dst, want, FOLLOW);
    }
    for v6 in [false, true] {
        assert_ping_via_xdp(&topo, &vrfd, "red", v6, "table re-added");
    }

    // Neighbours. A plain `ip neigh flush dev red1` keeps permanent entries (iproute2 flushes
    // only dynamic ones unless told `nud all`), so flush them all.
    r.ip(&["neigh", "flush", "dev", "red1", "nud", "all"])
        .unwrap();
    assert_eq!(r.ip(&["neigh", "show", "dev", "red1"]).unwrap().trim(), "");
    for dst in ["10.0.2.2", "fd00:2::2"] {
        await_fate(&vrfd, "red", Some("red0"), dst, "pass/no_neighbour", FOLLOW);
    }
    let left = await_neighbours_mirrored(&topo, &vrfd, "red");
    let red_b = topo.member("red", 1);
    assert!(
        !left
            .iter()
            .any(|(i, a, _)| *i == red_b.ifindex && (*a == red_b.host4() || *a == red_b.host6())),
        "host B's neighbours survived the flush in the map: {left:?}"
    );
    restore_host_b(&topo, &vrfd, "neighbours re-added");

    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}

// =============================================================================================
// 7.

#[test]
fn every_bad_config_exits_2_with_one_clear_message_and_leaves_nothing() {
    let t0 = Instant::now();
    let prefix = "vd_badconf";
    let topo = topology(prefix);
    // No rules of the topology's own: any rule vrfd added would show.
    topo.remove_all_rules();
    let rules_before = (rules(topo.router(), false), rules(topo.router(), true));

    let good_blue = "[[vrf]]\nname = \"blue\"\ntable = 120\ninterfaces = [\"blue0\", \"blue1\"]\n";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown interface",
            format!(
                "[[vrf]]\nname = \"red\"\ntable = 110\ninterfaces = [\"red0\", \"nosuch0\"]\n{good_blue}"
            ),
            vec!["\"nosuch0\"", "does not exist"],
        ),
        (
            "duplicate name",
            format!(
                "[[vrf]]\nname = \"blue\"\ntable = 110\ninterfaces = [\"red0\", \"red1\"]\n{good_blue}"
            ),
            vec!["\"blue\"", "declared twice"],
        ),
        (
            "duplicate table",
            format!(
                "[[vrf]]\nname = \"red\"\ntable = 120\ninterfaces = [\"red0\", \"red1\"]\n{good_blue}"
            ),
            vec!["table 120", "\"red\"", "\"blue\""],
        ),
        (
            "one interface in two VRFs",
            "[[vrf]]\nname = \"red\"\ntable = 110\ninterfaces = [\"red0\", \"red1\"]\n\
             [[vrf]]\nname = \"blue\"\ntable = 120\ninterfaces = [\"blue0\", \"red1\"]\n"
                .to_string(),
            vec!["\"red1\"", "two VRFs"],
        ),
        (
            "malformed TOML",
            "[[vrf]\nname = \"red\"\ntable = 110\ninterfaces = [\"red0\"]\n".to_string(),
            vec!["line 1"],
        ),
        (
            "unknown key",
            "[[vrf]]\nname = \"red\"\ntable = 110\ninterfaces = [\"red0\", \"red1\"]\ncolour = \"red\"\n"
                .to_string(),
            vec!["colour"],
        ),
    ];

    let mut failures = Vec::new();
    for (what, text, needles) in &cases {
        let (exited, pin_path) =
            Vrfd::run_to_exit(topo.router(), text).unwrap_or_else(|e| panic!("{what}: {e:#}"));
        let log = &exited.log;
        eprintln!("--- {what}: {} ---\n{log}", exited.status);
        let mut problems = Vec::new();
        if exited.status.code() != Some(2) {
            problems.push(format!("exit status {} (want 2)", exited.status));
        }
        // One human-readable message (every other line is a JSON log record): it starts with
        // "vrfd: " and may go on over a few lines (TOML errors show the offending line).
        let plain: Vec<&str> = log
            .lines()
            .filter(|l| !l.trim().is_empty() && serde_json::from_str::<Value>(l).is_err())
            .collect();
        let message = plain.join("\n");
        let starts = plain.iter().filter(|l| l.starts_with("vrfd: ")).count();
        if starts != 1 || !plain.first().is_some_and(|l| l.starts_with("vrfd: ")) {
            problems.push(format!(
                "want one message starting with \"vrfd: \": {plain:?}"
            ));
        }
        for n in needles {
            if !message.contains(n) {
                problems.push(format!("message {message:?} does not name {n}"));
            }
        }
        if message.contains("panicked") {
            problems.push("vrfd panicked".into());
        }
        // The JSON log says it once, at ERROR, and never that it was ready.
        let records = json_log_lines(log);
        let errors = records.iter().filter(|r| r["level"] == "ERROR").count();
        if errors > 1 {
            problems.push(format!("{errors} ERROR records"));
        }
        if records.iter().any(|r| log_message(r) == Some("ready")) {
            problems.push("it said ready".into());
        }
        // Nothing left behind.
        if pin_path.exists() {
            problems.push(format!("pin path {} exists", pin_path.display()));
        }
        let rules_after = (rules(topo.router(), false), rules(topo.router(), true));
        if rules_after != rules_before {
            problems.push(format!("ip rules changed: {rules_after:?}"));
        }
        for m in topo.members() {
            if fastpath::xdp_attached(topo.router(), &m.ifname).unwrap() {
                problems.push(format!("XDP left on {}", m.ifname));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{what}: {}\n  log: {log}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "bad configs:\n{}", failures.join("\n"));
    finish(topo, prefix, t0);
}

// =============================================================================================
// 8.

#[test]
fn vrfctl_show_and_lookup_without_vrfd_fail_clearly() {
    let t0 = Instant::now();
    let prefix = "vd_novrfd";
    let topo = topology(prefix);
    let ns = topo.router();

    // Three ways of "no vrfd": a pin path that never existed, an empty directory on bpffs, and
    // the path of a vrfd that has stopped.
    let never = tests::daemon::unique_pin_path().unwrap();
    let empty = tests::PinDir::new().unwrap();
    let vrfd = start_on(&topo);
    let stopped = vrfd.pin_path().to_path_buf();
    assert!(
        vrfd.vrfctl(&["show"]).unwrap().status.success(),
        "vrfctl show with vrfd running"
    );
    stop(vrfd, &topo);

    for pin in [never.as_path(), empty.path(), stopped.as_path()] {
        for args in [
            vec!["show"],
            vec!["show", "--json"],
            vec!["lookup", "--vrf", "red", "10.0.2.2"],
            vec!["lookup", "--vrf", "red", "10.0.2.2", "--json"],
        ] {
            let out = vrfctl_in(ns, pin, &args).unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let what = format!("vrfctl --pin-path {} {}", pin.display(), args.join(" "));
            eprintln!("{what}: {} {stderr:?}", out.status);
            assert!(!out.status.success(), "{what} succeeded: {out:?}");
            assert_eq!(out.status.code(), Some(1), "{what}: exit status");
            assert!(
                out.stdout.is_empty(),
                "{what} printed {:?}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert_eq!(
                stderr.lines().count(),
                1,
                "{what}: one line of message: {stderr}"
            );
            assert!(
                stderr.starts_with("vrfctl: no vrfd is running with pin path ")
                    && stderr.contains(&pin.display().to_string()),
                "{what}: message {stderr:?}"
            );
        }
    }
    drop(empty);
    finish(topo, prefix, t0);
}

// =============================================================================================
// 9.

#[test]
fn vrfctl_lookup_agrees_with_the_packets_fate() {
    let t0 = Instant::now();
    let prefix = "vd_agree";
    let topo = topology(prefix);
    let vrfd = start_on(&topo);
    let r = topo.router();
    let hosts: Vec<&NetNs> = topo.members().map(|m| &m.host).collect();
    let host_rx = || -> Vec<u64> {
        hosts
            .iter()
            .map(|h| tests::counter(h, "IpInReceives").unwrap())
            .collect()
    };

    // Forwarded: lookup says forward via red1; a real ping gets through and is counted.
    for (v6, src, dst) in [
        (false, "10.0.1.2", "10.0.2.2"),
        (true, "fd00:1::2", "fd00:2::2"),
    ] {
        let f = lookup(&vrfd, "red", Some("red0"), Some(src), dst);
        assert_eq!(f, "forward/forwarded via red1", "lookup {dst}");
        assert_ping_via_xdp(&topo, &vrfd, "red", v6, "lookup said forward");
    }

    // No route: without its unreachable default, red's table has nothing for 10.99.0.1.
    r.ip(&[
        "-4",
        "route",
        "del",
        "unreachable",
        "default",
        "metric",
        "4278198272",
        "table",
        "110",
    ])
    .unwrap();
    await_fate(
        &vrfd,
        "red",
        Some("red0"),
        "10.99.0.1",
        "pass/no_route",
        FOLLOW,
    );
    assert_eq!(
        lookup(&vrfd, "red", Some("red0"), Some("10.0.1.2"), "10.99.0.1"),
        "pass/no_route"
    );
    // Unreachable: blue keeps its default.
    assert_eq!(
        lookup(&vrfd, "blue", Some("blue0"), Some("10.0.1.2"), "10.99.0.1"),
        "pass/unreachable"
    );
    for (vrf, reason) in [
        ("red", Reason::PassNoRoute),
        ("blue", Reason::PassUnreachable),
    ] {
        let rx_before = host_rx();
        let before = Snapshot::take(&topo, &vrfd);
        let p = ping(topo.host(vrf, 0), "10.99.0.1", PINGS).unwrap();
        let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
        let rx_after = host_rx();
        assert_eq!(p.received, 0, "{vrf}: ping 10.99.0.1 got answers: {p:?}");
        assert_eq!(
            rx_after,
            rx_before,
            "{vrf}: a host received IPv4 packets (IpInReceives per host)\n{}",
            d.describe()
        );
        assert_eq!(
            d.packets(vrf, Reason::Forwarded),
            0,
            "{vrf}\n{}",
            d.describe()
        );
        assert!(
            d.packets(vrf, reason) >= u64::from(PINGS),
            "{vrf}: the {} echo requests must be counted as {}\n{}",
            PINGS,
            reason.name(),
            d.describe()
        );
        d.assert_kernel_idle(&format!("{vrf} ping 10.99.0.1"));
    }

    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}

// =============================================================================================
// 10.

#[test]
fn with_no_persist_sigterm_exits_0_detaches_xdp_removes_its_pins_and_leaves_the_vrfs_rules() {
    let t0 = Instant::now();
    let prefix = "vd_sigterm";
    let topo = topology(prefix);
    let ns = topo.router();
    // Red's rules are vrfd's to add; blue's stay the topology's (vrfd must leave them alone).
    topo.remove_rules(&["red"]);
    let want_rules = |with_red: bool| -> BTreeSet<(u64, String, String)> {
        topo.members()
            .filter(|m| with_red || m.vrf == "blue")
            .map(|m| (1000, m.ifname.clone(), m.table.to_string()))
            .collect()
    };
    let vrfd = Vrfd::start_with(ns, &topology_config(&topo), &["--no-persist"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pins = vrfd.pin_path().to_path_buf();

    for v6 in [false, true] {
        let got = iif_rules(ns, v6);
        let set: BTreeSet<_> = got.iter().cloned().collect();
        assert_eq!(
            got.len(),
            set.len(),
            "{}: duplicate rules {got:?}",
            family(v6)
        );
        assert_eq!(
            set,
            want_rules(true),
            "{} rules while vrfd runs",
            family(v6)
        );
    }
    let added: Vec<String> = json_log_lines(&vrfd.log())
        .iter()
        .filter(|r| log_message(r) == Some("added ip rule"))
        .map(|r| r["fields"]["iif"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        added.iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"red0".to_string(), &"red1".to_string()]),
        "vrfd logs the rules it added: {added:?}"
    );
    assert_eq!(added.len(), 4, "red0 and red1, IPv4 and IPv6: {added:?}");
    for m in topo.members() {
        assert!(
            fastpath::xdp_attached(ns, &m.ifname).unwrap(),
            "no XDP on {} while vrfd runs",
            m.ifname
        );
    }
    assert!(pins.is_dir());
    assert_ping_via_xdp(&topo, &vrfd, "red", false, "vrfd's own rules");

    let log = vrfd
        .stop_removing_everything()
        .unwrap_or_else(|e| panic!("stopping vrfd: {e:#}"));
    assert!(
        json_log_lines(&log)
            .iter()
            .any(|r| log_message(r) == Some("SIGTERM: shutting down")),
        "log: {log}"
    );
    for m in topo.members() {
        let d = ns.ip(&["-d", "link", "show", "dev", &m.ifname]).unwrap();
        assert!(!d.contains("xdp"), "ip -d link show {}: {d}", m.ifname);
    }
    // The declared VRFs' rules are the VRFs (#13): they stay, or red's traffic would be routed
    // by the main table.
    for v6 in [false, true] {
        let got = iif_rules(ns, v6);
        assert_eq!(
            got.iter().cloned().collect::<BTreeSet<_>>(),
            want_rules(true),
            "{} rules after vrfd stopped: {got:?}",
            family(v6)
        );
        assert_eq!(got.len(), 4, "{got:?}");
    }
    assert!(!pins.exists(), "pins left at {}", pins.display());
    // The explicit full removal takes vrfd's own (red's) and leaves the topology's (blue's).
    tests::daemon::remove_rules_detached(ns, &pins);
    for v6 in [false, true] {
        let got = iif_rules(ns, v6);
        assert_eq!(
            got.iter().cloned().collect::<BTreeSet<_>>(),
            want_rules(false),
            "{} rules after vrfd --detach --remove-rules: {got:?}",
            family(v6)
        );
        assert_eq!(got.len(), 2, "{got:?}");
    }
    finish(topo, prefix, t0);
}

// =============================================================================================
// 7b.

#[test]
fn a_bad_config_in_the_default_log_format_is_reported_once_without_escape_codes() {
    let t0 = Instant::now();
    let prefix = "vd_badplain";
    let topo = topology(prefix);
    let cases = [
        (
            "duplicate table",
            "[[vrf]]\nname = \"red\"\ntable = 120\ninterfaces = [\"red0\"]\n\
             [[vrf]]\nname = \"blue\"\ntable = 120\ninterfaces = [\"blue0\"]\n",
            "table 120 is used by both",
        ),
        (
            "unknown interface",
            "[[vrf]]\nname = \"red\"\ntable = 110\ninterfaces = [\"nosuch0\"]\n",
            "\"nosuch0\" does not exist",
        ),
    ];
    let mut failures = Vec::new();
    for (what, text, needle) in cases {
        let (exited, _) = Vrfd::run_to_exit_with(topo.router(), text, "plain").unwrap();
        let log = &exited.log;
        eprintln!("--- {what}: {} ---\n{log}", exited.status);
        assert_eq!(exited.status.code(), Some(2), "{what}: {log}");
        let times = log.matches(needle).count();
        if times != 1 {
            failures.push(format!(
                "{what}: the message appears {times} times: {log:?}"
            ));
        }
        if log.contains('\x1b') {
            failures.push(format!(
                "{what}: ANSI escape codes in output that is not a terminal: {log:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    finish(topo, prefix, t0);
}

// =============================================================================================
// Beyond the list: policy rules changed behind vrfd's back, and a route the kernel deletes
// silently.

/// Whether the router's kernel routes `dst` from `src` arriving on `iif` (`ip route get`).
fn kernel_routes(topo: &Topology, dst: &str, src: &str, iif: &str) -> Result<String, String> {
    topo.router()
        .ip(&["route", "get", dst, "from", src, "iif", iif])
        .map_err(|e| format!("{e:#}"))
}

#[test]
fn a_rule_ahead_of_a_vrfs_rule_degrades_it_until_removed() {
    let t0 = Instant::now();
    let prefix = "vd_ruleahead";
    let topo = topology(prefix);
    let vrfd = start_on(&topo);
    let r = topo.router();
    let degraded = |vrf: &str| vrfd.show_vrf(vrf).unwrap()["degraded"].as_bool().unwrap();

    // A rule at priority 500 that could send red0's traffic elsewhere: the fast path cannot know
    // what the kernel will decide for red's IPv4, so that goes to the kernel (IPv6 does not).
    r.ip(&[
        "rule", "add", "iif", "red0", "lookup", "main", "pref", "500",
    ])
    .unwrap();
    poll("red degraded", FOLLOW, || match degraded("red") {
        true => Ok(()),
        false => Err("not degraded".into()),
    });
    assert!(!degraded("blue"), "blue has no rule ahead of its own");
    for (iif, dst) in [("red0", "10.0.2.2"), ("red1", "10.0.1.2")] {
        assert_eq!(
            lookup(&vrfd, "red", Some(iif), None, dst),
            "pass/policy_rule"
        );
    }
    assert_ping_via_xdp(&topo, &vrfd, "red", true, "an IPv4 rule ahead, red's IPv6");
    // The kernel forwards red's pings (main has no route, so table 110 still decides).
    let before = Snapshot::take(&topo, &vrfd);
    let p = ping(topo.host("red", 0), "10.0.2.2", PINGS).unwrap();
    let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
    assert!(p.all_received(), "red ping while degraded: {p:?}");
    assert!(
        d.kernel.0 >= 2 * u64::from(PINGS),
        "the kernel forwards a degraded VRF's traffic\n{}",
        d.describe()
    );
    assert_eq!(d.packets("red", Reason::Forwarded), 0, "{}", d.describe());
    assert_ping_via_xdp(&topo, &vrfd, "blue", false, "red degraded");

    r.ip(&["rule", "del", "pref", "500"]).unwrap();
    poll("red no longer degraded", FOLLOW, || match degraded("red") {
        false => Ok(()),
        true => Err("degraded".into()),
    });
    assert_red4_fast_again(&topo, &vrfd, "rule ahead removed");

    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}

#[test]
fn a_vrf_rule_deleted_behind_vrfds_back_is_restored_or_its_traffic_left_to_the_kernel() {
    let t0 = Instant::now();
    let prefix = "vd_ruledel";
    let topo = topology(prefix);
    let vrfd = start_on(&topo);
    let r = topo.router();

    let mut failures = Vec::new();
    for (v6, src, dst) in [
        (false, "10.0.1.2", "10.0.2.2"),
        (true, "fd00:1::2", "fd00:2::2"),
    ] {
        let fam = family(v6);
        r.ip(&[
            fam_flag(v6),
            "rule",
            "del",
            "iif",
            "red0",
            "lookup",
            "110",
            "pref",
            "1000",
        ])
        .unwrap();
        std::thread::sleep(FOLLOW);
        // Either vrfd put its rule back (the kernel routes red0's traffic in table 110 again),
        // or the fast path leaves red0's traffic to the kernel: never forward what the kernel
        // would not.
        let kernel = kernel_routes(&topo, dst, src, "red0");
        let fast = lookup(&vrfd, "red", Some("red0"), Some(src), dst);
        let before = Snapshot::take(&topo, &vrfd);
        let p = ping(topo.host("red", 0), dst, 2).unwrap();
        let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
        let report = format!(
            "{fam}, 1 s after `ip {} rule del iif red0 lookup 110 pref 1000`: kernel `ip route get \
             {dst} from {src} iif red0`: {kernel:?}; vrfctl lookup: {fast}; ping A→B: {p:?}\n{}",
            fam_flag(v6),
            d.describe()
        );
        eprintln!("{report}");
        if !(kernel.is_ok() || fast.starts_with("pass/")) || (p.received > 0) != kernel.is_ok() {
            failures.push(report);
        }
        assert_eq!(
            lookup(&vrfd, "blue", Some("blue0"), None, dst),
            "forward/forwarded via blue1",
            "blue is unaffected"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}

#[test]
fn a_multipath_route_the_kernel_drops_with_its_link_is_not_forwarded_after_the_link_returns() {
    let t0 = Instant::now();
    let prefix = "vd_mpdown";
    let topo = topology3(prefix);
    let vrfd = start_on(&topo);
    let r = topo.router();
    let b = topo.member("red", 1);
    let mac = mac_to_string(b.host_mac);
    // Host B answers for 10.8.0.5 and fd00:8::5; the router knows a second gateway address of
    // host B (.3), so the route has two paths, both through red1.
    b.host
        .ip(&["addr", "add", "10.8.0.5/32", "dev", "lo"])
        .unwrap();
    b.host
        .ip(&["addr", "add", "fd00:8::5/128", "dev", "lo", "nodad"])
        .unwrap();
    b.host
        .ip(&["addr", "add", "10.0.2.3/24", "dev", "eth0"])
        .unwrap();
    b.host
        .ip(&["addr", "add", "fd00:2::3/64", "dev", "eth0", "nodad"])
        .unwrap();
    let add_gateways = || {
        for gw in ["10.0.2.3", "fd00:2::3"] {
            r.ip(&[
                "neigh",
                "replace",
                gw,
                "lladdr",
                &mac,
                "dev",
                "red1",
                "nud",
                "permanent",
            ])
            .unwrap();
        }
    };
    add_gateways();
    r.ip(&[
        "route",
        "add",
        "10.8.0.0/24",
        "table",
        "110",
        "nexthop",
        "via",
        "10.0.2.2",
        "dev",
        "red1",
        "nexthop",
        "via",
        "10.0.2.3",
        "dev",
        "red1",
    ])
    .unwrap();
    r.ip(&[
        "-6",
        "route",
        "add",
        "fd00:8::/64",
        "table",
        "110",
        "nexthop",
        "via",
        "fd00:2::2",
        "dev",
        "red1",
        "nexthop",
        "via",
        "fd00:2::3",
        "dev",
        "red1",
    ])
    .unwrap();
    let c = topo.host("red", 2);
    for (dst, src) in [("10.8.0.5", "10.0.3.2"), ("fd00:8::5", "fd00:3::2")] {
        poll(&format!("{dst} forwarded"), FOLLOW, || {
            let f = lookup(&vrfd, "red", Some("red2"), Some(src), dst);
            if f.starts_with("forward/forwarded via red1") {
                Ok(())
            } else {
                Err(f)
            }
        });
        let p = ping(c, dst, 2).unwrap();
        assert!(p.all_received(), "C → {dst} before: {p:?}");
    }

    r.ip(&["link", "set", "red1", "down"]).unwrap();
    r.ip(&["link", "set", "red1", "up"]).unwrap();
    topo.restore_member("red", 1);
    add_gateways();
    std::thread::sleep(FOLLOW);
    let mut failures = Vec::new();
    for (v6, dst, src) in [
        (true, "fd00:8::5", "fd00:3::2"),
        (false, "10.8.0.5", "10.0.3.2"),
    ] {
        let fam = family(v6);
        let shown = r
            .ip(&[fam_flag(v6), "route", "show", "table", "110", "match", dst])
            .unwrap();
        assert!(
            shown.contains("unreachable default") && !shown.contains("nexthop"),
            "{fam}: the kernel dropped the multipath route with its link: {shown}"
        );
        let kernel = kernel_routes(&topo, dst, src, "red2");
        let fast = lookup(&vrfd, "red", Some("red2"), Some(src), dst);
        let before = Snapshot::take(&topo, &vrfd);
        let p = ping(c, dst, 2).unwrap();
        let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
        let report = format!(
            "{fam}, red1 down and up again: kernel table 110 for {dst}: {:?}; `ip route get {dst} \
             from {src} iif red2`: {kernel:?}; vrfctl lookup: {fast}; ping C→{dst}: {p:?}\n{}",
            shown.trim(),
            d.describe()
        );
        eprintln!("{report}");
        if fast != "pass/unreachable" || p.received != 0 {
            failures.push(report);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}

/// The case (#13): `ip route add unreachable P`, `ip route append P via G`, `ip route
/// del P via G`: the kernel keeps the unreachable route; so must vrfd (it once forgot both aliases
/// and forwarded by a covering route). And the other way round: deleting the unreachable alias
/// leaves the gateway route in use.
#[test]
fn deleting_one_ipv4_alias_keeps_the_other_as_the_kernel_does() {
    let t0 = Instant::now();
    let prefix = "vd_alias";
    let topo = topology(prefix);
    let vrfd = start_on(&topo);
    let r = topo.router();
    let ip = |args: &[&str]| r.ip(args).unwrap_or_else(|e| panic!("ip {args:?}: {e:#}"));
    let dst = "10.9.1.1";
    let kernel = || kernel_routes(&topo, dst, "10.0.1.2", "red0");

    ip(&[
        "route",
        "add",
        "10.0.0.0/8",
        "via",
        "10.0.2.2",
        "dev",
        "red1",
        "table",
        "110",
    ]);
    await_fate(
        &vrfd,
        "red",
        Some("red0"),
        dst,
        "forward/forwarded via red1 gw 10.0.2.2",
        FOLLOW,
    );
    ip(&["route", "add", "unreachable", "10.9.0.0/16", "table", "110"]);
    ip(&[
        "route",
        "append",
        "10.9.0.0/16",
        "via",
        "10.0.1.2",
        "dev",
        "red0",
        "table",
        "110",
    ]);
    ip(&[
        "route",
        "del",
        "10.9.0.0/16",
        "via",
        "10.0.1.2",
        "dev",
        "red0",
        "table",
        "110",
    ]);
    assert!(
        kernel().is_err(),
        "the kernel keeps unreachable: {:?}",
        kernel()
    );
    await_fate(&vrfd, "red", Some("red0"), dst, "pass/unreachable", FOLLOW);
    // Stays so (no later event changes it back).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        lookup(&vrfd, "red", Some("red0"), None, dst),
        "pass/unreachable"
    );

    // The other way round: the appended gateway route outlives the unreachable one.
    ip(&[
        "route",
        "append",
        "10.9.0.0/16",
        "via",
        "10.0.2.2",
        "dev",
        "red1",
        "table",
        "110",
    ]);
    ip(&["route", "del", "unreachable", "10.9.0.0/16", "table", "110"]);
    assert!(kernel().is_ok(), "the kernel forwards: {:?}", kernel());
    await_fate(
        &vrfd,
        "red",
        Some("red0"),
        dst,
        "forward/forwarded via red1 gw 10.0.2.2",
        FOLLOW,
    );

    // prepend puts an alias ahead: it is the one in use.
    ip(&[
        "route",
        "prepend",
        "unreachable",
        "10.9.0.0/16",
        "table",
        "110",
    ]);
    assert!(
        kernel().is_err(),
        "prepended unreachable wins: {:?}",
        kernel()
    );
    await_fate(&vrfd, "red", Some("red0"), dst, "pass/unreachable", FOLLOW);

    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}

// ---------------------------------------------------------------------------------------------
// The kernel's whole decision (issue #11): for each case the kernel alone refuses (the
// oracle), with vrfd the refused traffic does not arrive at the receiving host, traffic the
// case does not concern keeps the fast path, and a change made while vrfd runs is followed.

/// `nft -f -` in the router namespace.
fn nft(topo: &Topology, script: &str) {
    let mut cmd = topo.router().command("nft");
    cmd.args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn nft");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nft -f - <<{script}>>: {out:?}");
}

/// Deletes the nftables tables named in `tables` ("ip NAME") however the test ends.
struct NftTables<'a>(&'a Topology, &'static [&'static str]);

impl Drop for NftTables<'_> {
    fn drop(&mut self) {
        for t in self.1 {
            let args: Vec<&str> = ["delete", "table"]
                .into_iter()
                .chain(t.split(' '))
                .collect();
            let _ = self.0.router().exec(std::iter::once("nft").chain(args));
        }
    }
}

/// Red's IPv4 from red0 takes the fast path again, within a second (vrfctl lookup), and a
/// ping proves it.
fn assert_red4_fast_again(topo: &Topology, vrfd: &Vrfd<'_>, what: &str) {
    await_fate(
        vrfd,
        "red",
        Some("red0"),
        "10.0.2.2",
        "forward/forwarded via red1",
        FOLLOW,
    );
    assert_ping_via_xdp(topo, vrfd, "red", false, what);
}

/// One ping A→B in `vrf`: did B answer?
fn reaches(topo: &Topology, vrf: &str, v6: bool) -> bool {
    ping(topo.host(vrf, 0), topo.host_addr(vrf, 1, v6), 2)
        .unwrap()
        .received
        > 0
}

const FWD_DROP: &str = "table ip vx_fw {
  chain vx_forward { type filter hook forward priority 0; policy accept;
    iifname \"red0\" ip daddr 10.0.2.2 drop; }
}";

#[test]
fn an_nftables_forward_drop_is_honoured_live_and_bypassed_only_by_request() {
    let t0 = Instant::now();
    let prefix = "vd_nftdrop";
    let topo = topology(prefix);
    let _tables = NftTables(&topo, &["ip vx_fw"]);
    // The oracle: the kernel alone drops red A→B; blue's identical traffic passes.
    nft(&topo, FWD_DROP);
    assert!(
        !reaches(&topo, "red", false),
        "the kernel alone forwards it?"
    );
    assert!(
        reaches(&topo, "blue", false),
        "the kernel alone drops blue?"
    );
    topo.router()
        .exec(["nft", "delete", "table", "ip", "vx_fw"])
        .unwrap();
    // Added while vrfd runs: followed within a second.
    let vrfd = start_on(&topo);
    assert_ping_via_xdp(&topo, &vrfd, "red", false, "before the chain");
    nft(&topo, FWD_DROP);
    await_fate(
        &vrfd,
        "red",
        Some("red0"),
        "10.0.2.2",
        "pass/netfilter",
        FOLLOW,
    );
    let before = Snapshot::take(&topo, &vrfd);
    assert!(
        !reaches(&topo, "red", false),
        "B received what nftables drops"
    );
    assert!(
        reaches(&topo, "blue", false),
        "the rule does not concern blue"
    );
    let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
    assert_eq!(d.packets("red", Reason::Forwarded), 0, "{}", d.describe());
    assert!(
        d.packets("red", Reason::PassNetfilter) >= 2,
        "{}",
        d.describe()
    );
    // IPv6 is no concern of an `ip` table: still the fast path.
    assert_ping_via_xdp(&topo, &vrfd, "red", true, "IPv4 forward chain");
    // Gone: the fast path comes back within a second.
    topo.router()
        .exec(["nft", "delete", "table", "ip", "vx_fw"])
        .unwrap();
    assert_red4_fast_again(&topo, &vrfd, "forward chain removed");
    stop(vrfd, &topo);

    // By request: red's firewall is skipped, and vrfd says so once.
    nft(&topo, FWD_DROP);
    let bypass = topology_config(&topo).replace(
        "name = \"red\"\n",
        "name = \"red\"\nnetfilter = \"bypass\"\n",
    );
    let vrfd = Vrfd::start(topo.router(), &bypass).unwrap();
    assert_ping_via_xdp(
        &topo,
        &vrfd,
        "red",
        false,
        "netfilter bypassed for red by request",
    );
    assert_eq!(
        lookup(&vrfd, "blue", Some("blue0"), None, "10.0.2.2"),
        "pass/netfilter",
        "blue still honours netfilter"
    );
    let log = stop(vrfd, &topo);
    let said = json_log_lines(&log)
        .iter()
        .filter(|l| log_message(l).is_some_and(|m| m.contains("bypass")))
        .count();
    assert_eq!(said, 1, "the bypass is logged once: {log}");
    drop(_tables);
    finish(topo, prefix, t0);
}

#[test]
fn a_postrouting_masquerade_is_left_to_the_kernel() {
    let t0 = Instant::now();
    let prefix = "vd_masq";
    let topo = topology(prefix);
    let _tables = NftTables(&topo, &["ip vx_nat"]);
    let vrfd = start_on(&topo);
    nft(
        &topo,
        "table ip vx_nat {
           chain post { type nat hook postrouting priority 100; oifname \"red1\" masquerade; }
         }",
    );
    await_fate(
        &vrfd,
        "red",
        Some("red0"),
        "10.0.2.2",
        "pass/netfilter",
        FOLLOW,
    );
    // B sees what the kernel's NAT makes of A's datagram: the router's address on red1.
    let b = topo.host_addr4("red", 1);
    let server = topo
        .member("red", 1)
        .host
        .run_in(|| UdpSocket::bind(SocketAddr::new(b.into(), 0)))
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let client = topo
        .host("red", 0)
        .run_in(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap();
    client
        .send_to(b"masq", server.local_addr().unwrap())
        .unwrap();
    let mut buf = [0u8; 16];
    let (_, from) = server.recv_from(&mut buf).expect("B received nothing");
    assert_eq!(
        from.ip(),
        IpAddr::from(topo.router_addr4("red", 1)),
        "B saw A's datagram unmasqueraded"
    );
    assert_ping_via_xdp(&topo, &vrfd, "red", true, "IPv4 nat chain");
    // The NAT table gone: red's IPv4 takes the fast path again.
    topo.router()
        .exec(["nft", "delete", "table", "ip", "vx_nat"])
        .unwrap();
    assert_red4_fast_again(&topo, &vrfd, "nat table removed");
    stop(vrfd, &topo);
    drop(_tables);
    finish(topo, prefix, t0);
}

/// Deletes every xfrm policy of the router namespace however the test ends.
struct XfrmFlush<'a>(&'a Topology);

impl Drop for XfrmFlush<'_> {
    fn drop(&mut self) {
        let _ = self.0.router().ip(&["xfrm", "policy", "flush"]);
    }
}

#[test]
fn an_ipsec_block_policy_is_honoured_live() {
    let t0 = Instant::now();
    let prefix = "vd_xfrm";
    let topo = topology(prefix);
    let _flush = XfrmFlush(&topo);
    let r = topo.router();
    let block = [
        "xfrm",
        "policy",
        "add",
        "src",
        "10.0.1.0/24",
        "dst",
        "10.0.2.0/24",
        "dir",
        "fwd",
        "action",
        "block",
    ];
    // The oracle: the kernel alone blocks it.
    r.ip(&block).unwrap();
    assert!(
        !reaches(&topo, "red", false),
        "the kernel alone forwards it?"
    );
    r.ip(&["xfrm", "policy", "flush"]).unwrap();
    let vrfd = start_on(&topo);
    assert_ping_via_xdp(&topo, &vrfd, "red", false, "before the policy");
    r.ip(&block).unwrap();
    await_fate(&vrfd, "red", Some("red0"), "10.0.2.2", "pass/ipsec", FOLLOW);
    let before = Snapshot::take(&topo, &vrfd);
    assert!(
        !reaches(&topo, "red", false),
        "B received what IPsec blocks"
    );
    let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
    assert!(d.packets("red", Reason::PassIpsec) >= 2, "{}", d.describe());
    assert_eq!(d.packets("red", Reason::Forwarded), 0, "{}", d.describe());
    assert_ping_via_xdp(&topo, &vrfd, "red", true, "an IPv4 policy");
    r.ip(&["xfrm", "policy", "flush"]).unwrap();
    assert_red4_fast_again(&topo, &vrfd, "policy removed");
    stop(vrfd, &topo);
    drop(_flush);
    finish(topo, prefix, t0);
}

#[test]
fn a_rule_of_equal_priority_listed_before_the_vrfs_rule_decides_first() {
    let t0 = Instant::now();
    let prefix = "vd_rulesame";
    let topo = topology(prefix);
    let r = topo.router();
    // Listed before the rules vrfd adds at the same priority 1000 (a new rule goes after the
    // existing ones of its priority), so the kernel evaluates it first: A's traffic to B's
    // subnet hits a blackhole in table 300, in both VRFs (A has the same address in each).
    r.ip(&["route", "add", "blackhole", "10.0.2.0/24", "table", "300"])
        .unwrap();
    r.ip(&[
        "rule", "add", "from", "10.0.1.2", "lookup", "300", "pref", "1000",
    ])
    .unwrap();
    let vrfd = start_on(&topo);
    let rules = r.ip(&["rule", "show", "pref", "1000"]).unwrap();
    assert!(
        rules.find("from 10.0.1.2").unwrap() < rules.find("iif red0").unwrap(),
        "the test's premise: {rules}"
    );
    assert_eq!(
        lookup(&vrfd, "red", Some("red0"), None, "10.0.2.2"),
        "pass/policy_rule"
    );
    let before = Snapshot::take(&topo, &vrfd);
    assert!(
        !reaches(&topo, "red", false),
        "B received what table 300 blackholes"
    );
    let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
    assert_eq!(d.packets("red", Reason::Forwarded), 0, "{}", d.describe());
    assert_ping_via_xdp(&topo, &vrfd, "red", true, "an IPv4 rule");
    // Removed: the fast path again within a second; a rule that excludes mark 0 (forwarded
    // packets carry none) added ahead while vrfd runs changes nothing.
    r.ip(&[
        "rule", "del", "from", "10.0.1.2", "lookup", "300", "pref", "1000",
    ])
    .unwrap();
    await_fate(
        &vrfd,
        "red",
        Some("red0"),
        "10.0.2.2",
        "forward/forwarded via red1",
        FOLLOW,
    );
    r.ip(&[
        "rule", "add", "fwmark", "0x1", "lookup", "300", "pref", "900",
    ])
    .unwrap();
    std::thread::sleep(FOLLOW);
    assert_ping_via_xdp(&topo, &vrfd, "red", false, "a fwmark rule ahead");
    r.ip(&["rule", "del", "pref", "900"]).unwrap();
    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}

#[test]
fn disable_ipv6_on_the_ingress_member_sends_its_ipv6_to_the_kernel() {
    let t0 = Instant::now();
    let prefix = "vd_noipv6";
    let topo = topology(prefix);
    let vrfd = start_on(&topo);
    let r = topo.router();
    r.sysctl("net.ipv6.conf.red0.disable_ipv6", "1").unwrap();
    await_fate(
        &vrfd,
        "red",
        Some("red0"),
        "fd00:2::2",
        "pass/ipv6_disabled",
        FOLLOW,
    );
    let before = Snapshot::take(&topo, &vrfd);
    assert!(
        !reaches(&topo, "red", true),
        "B received IPv6 the kernel drops in ip6_rcv"
    );
    let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
    assert_eq!(d.packets("red", Reason::Forwarded), 0, "{}", d.describe());
    assert_ping_via_xdp(&topo, &vrfd, "red", false, "IPv6 off on red0");
    assert_ping_via_xdp(&topo, &vrfd, "blue", true, "IPv6 off on red0 only");
    r.sysctl("net.ipv6.conf.red0.disable_ipv6", "0").unwrap();
    topo.restore_member("red", 0);
    await_fate(
        &vrfd,
        "red",
        Some("red0"),
        "fd00:2::2",
        "forward/forwarded via red1",
        FOLLOW,
    );
    assert_ping_via_xdp(&topo, &vrfd, "red", true, "IPv6 on again");
    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}

/// A 1400-byte don't-fragment IPv6 ping from red's A to B (after A forgets what it learnt of
/// the path): the "Packet too big: mtu=N" that came back, if any, and whether B answered.
fn big_ping6(topo: &Topology) -> (Option<u32>, bool) {
    let a = topo.host("red", 0);
    a.exec(["ip", "-6", "route", "flush", "cache"]).unwrap();
    let b = topo.host_addr("red", 1, true).to_string();
    // ping exits 1 on a loss: the output is what matters.
    let out = a
        .command("ping")
        .args(["-6", "-n", "-c1", "-W2", "-M", "do", "-s", "1400", &b])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mtu = text
        .split("Packet too big: mtu=")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok());
    (mtu, text.contains(" 0% packet loss"))
}

#[test]
fn the_ipv6_mtu_of_the_egress_link_is_the_kernels_and_the_sender_learns_it() {
    let t0 = Instant::now();
    let prefix = "vd_mtu6";
    let topo = topology(prefix);
    let r = topo.router();
    let mtu6 = "net.ipv6.conf.red1.mtu";
    // The oracle: the kernel alone answers Packet Too Big with red1's IPv6 MTU, not its 1500.
    // The router's own ICMP errors are routed by main (rules send only members' ingress to
    // table 110): give main the way back to red's A, as a router that answers would have.
    let a_net = format!("{}/64", topo.host_addr("red", 0, true));
    r.exec_ok(&["ip", "-6", "route", "add", &a_net, "dev", "red0"])
        .unwrap();
    r.sysctl(mtu6, "1300").unwrap();
    assert_eq!(big_ping6(&topo), (Some(1300), false), "the kernel alone");
    r.sysctl(mtu6, "1500").unwrap();
    assert_eq!(big_ping6(&topo), (None, true), "the kernel alone, 1500");

    let vrfd = start_on(&topo);
    // While vrfd runs: a tighter IPv6 MTU is followed within a second.
    r.sysctl(mtu6, "1300").unwrap();
    std::thread::sleep(FOLLOW);
    let before = Snapshot::take(&topo, &vrfd);
    assert_eq!(
        big_ping6(&topo),
        (Some(1300), false),
        "a packet over red1's IPv6 MTU must meet the kernel's Packet Too Big, not leave by XDP"
    );
    let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
    assert!(d.packets("red", Reason::PassMtu) >= 1, "{}", d.describe());
    assert_eq!(d.packets("red", Reason::Forwarded), 0, "{}", d.describe());
    // Packets that fit still take the fast path.
    assert_ping_via_xdp(&topo, &vrfd, "red", true, "IPv6 MTU 1300, small packets");
    // Back to 1500: the big ping is forwarded again (by XDP: nothing is too big now).
    r.sysctl(mtu6, "1500").unwrap();
    std::thread::sleep(FOLLOW);
    let before = Snapshot::take(&topo, &vrfd);
    assert_eq!(big_ping6(&topo), (None, true), "IPv6 MTU 1500 again");
    let d = Delta::between(&before, &Snapshot::take(&topo, &vrfd));
    assert!(d.packets("red", Reason::Forwarded) >= 1, "{}", d.describe());
    stop(vrfd, &topo);
    finish(topo, prefix, t0);
}
