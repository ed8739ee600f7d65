//! End to end: the XDP fast path forwards real traffic between network namespaces.
//!
//! Topology ([`TopologySpec::two_vrfs_identical`]): a router namespace with two emulated VRFs,
//! red (table 110) and blue (table 120), each with host A (10.0.1.2, fd00:1::2) behind member 0
//! and host B (10.0.2.2, fd00:2::2) behind member 1: the same addresses in both VRFs. A
//! [`DataPlane`] is loaded, its maps filled through the loader library from the topology (not
//! through vrfd: see `tests::fastpath`), and XDP attached natively to the four members inside the
//! router namespace. The hosts' veths have TX checksum offload off, as a NIC's frames would: see
//! `fastpath::complete_host_checksums` for why XDP-redirected veth traffic needs it.
//!
//! The witness that traffic took the XDP path and not the kernel's: the router's own forwarding
//! counters (`IpForwDatagrams`, `Ip6OutForwDatagrams`, what `nstat` reads) do not move, while the
//! data plane's per-VRF `forwarded` counter grows by at least what the hosts sent. The witness is
//! itself checked: once XDP is detached, the same pings move the kernel's counters.
//!
//! Isolation is checked at the receiving hosts, not with our own counters: a datagram one VRF
//! sends must never reach the other VRF's host with the same address.
//!
//! Every test builds its own topology (distinct namespace prefix) and data plane, so the tests
//! run in parallel with each other and with other test files. The data plane is declared after
//! the topology, so it is dropped (and detached) first, also when a test panics.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tests::fastpath::{self, describe_counters, Programmed};
use tests::{
    family, forwarded_datagrams, list_own_netns, ping, tcp_transfer, udp_transfer, NetNs, Topology,
    TopologySpec,
};
use vrf_common::{Counters, Reason};
use vrf_user::dataplane::DataPlane;

const VRFS: [&str; 2] = ["red", "blue"];
/// Echo requests per ping run.
const PINGS: u32 = 5;
/// Bytes of each TCP transfer.
const TCP_BYTES: u64 = 2 * 1024 * 1024;
/// Datagrams (and their size) of each UDP flow.
const UDP_COUNT: u64 = 1000;
const UDP_SIZE: usize = 1000;
/// Marked datagrams per VRF and family in the isolation tests.
const MARKED: u64 = 50;

fn other(vrf: &str) -> &'static str {
    if vrf == "red" {
        "blue"
    } else {
        "red"
    }
}

/// Builds the topology under `prefix`; panics with the cause.
fn topology(prefix: &str) -> Topology {
    TopologySpec::two_vrfs_identical()
        .with_prefix(prefix)
        .built()
}

/// Loads, programs and attaches the data plane; panics with the cause.
fn attach(topo: &Topology) -> (DataPlane, Programmed) {
    fastpath::load_and_attach(topo).unwrap_or_else(|e| {
        panic!(
            "loading and attaching the data plane: {e:#}\n{}",
            topo.describe()
        )
    })
}

/// Ingress counters of every VRF (by name), plus the router's kernel forwarding counters.
struct Snapshot {
    vrfs: Vec<(String, Counters)>,
    kernel: (u64, u64),
}

impl Snapshot {
    fn take(topo: &Topology, dp: &DataPlane, p: &Programmed) -> Snapshot {
        Snapshot {
            vrfs: fastpath::ingress_counters(dp, p)
                .expect("reading the VRF counters")
                .into_iter()
                .collect(),
            kernel: forwarded_datagrams(topo.router()).expect("reading the router's nstat"),
        }
    }

    fn vrf(&self, name: &str) -> &Counters {
        &self
            .vrfs
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no VRF {name} in the snapshot"))
            .1
    }
}

/// What changed between two snapshots.
struct Delta {
    vrfs: Vec<(String, Counters)>,
    /// (IpForwDatagrams, Ip6OutForwDatagrams) of the router.
    kernel: (u64, u64),
}

impl Delta {
    fn between(before: &Snapshot, after: &Snapshot) -> Delta {
        Delta {
            vrfs: after
                .vrfs
                .iter()
                .map(|(n, c)| (n.clone(), fastpath::counters_delta(before.vrf(n), c)))
                .collect(),
            kernel: (
                after.kernel.0 - before.kernel.0,
                after.kernel.1 - before.kernel.1,
            ),
        }
    }

    fn vrf(&self, name: &str) -> &Counters {
        &self
            .vrfs
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no VRF {name} in the delta"))
            .1
    }

    fn packets(&self, vrf: &str, reason: Reason) -> u64 {
        self.vrf(vrf).by_reason[reason as usize].packets
    }

    fn bytes(&self, vrf: &str, reason: Reason) -> u64 {
        self.vrf(vrf).by_reason[reason as usize].bytes
    }

    /// For failure messages.
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

    /// The router's kernel forwarded nothing at all. No allowance is needed: the hosts and the
    /// router have permanent neighbour entries both ways, so no packet waits for address
    /// resolution (the one case where the fast path hands a forwardable packet to the kernel),
    /// and what the hosts emit on their own (IPv6 router solicitations, MLD reports) is
    /// multicast, which the kernel receives but never forwards. A non-zero count is a packet the
    /// fast path failed to forward; the message lists the data plane's counters by reason.
    fn assert_kernel_idle(&self, what: &str) {
        assert_eq!(
            self.kernel,
            (0, 0),
            "{what}: the router's kernel forwarded (IPv4, IPv6) packets although XDP is \
             attached\n{}",
            self.describe()
        );
    }
}

/// The non-zero entries of `m`.
fn nonzero(m: &std::collections::BTreeMap<String, u64>) -> Vec<(&str, u64)> {
    m.iter()
        .filter(|(_, v)| **v != 0)
        .map(|(k, v)| (k.as_str(), *v))
        .collect()
}

fn host_counter_sum(nss: &[&NetNs], name: &str) -> u64 {
    nss.iter()
        .map(|ns| tests::counter(ns, name).unwrap_or_else(|e| panic!("{e:#}")))
        .sum()
}

#[test]
fn traffic_within_each_vrf_takes_the_xdp_path() {
    let t0 = Instant::now();
    let topo = topology("xdpfwd");
    let (dp, p) = attach(&topo);
    eprintln!(
        "setup (topology, load, program, attach): {:?}",
        t0.elapsed()
    );
    let start = Snapshot::take(&topo, &dp, &p);
    let errors_before = fastpath::host_receive_errors(&topo).unwrap();
    let host_errors = || {
        format!(
            "host receive errors now: {:?}",
            nonzero(&fastpath::host_receive_errors(&topo).unwrap())
        )
    };

    for vrf in VRFS {
        let (a, b) = (topo.host(vrf, 0), topo.host(vrf, 1));

        // Pings: every echo request crosses the router at A's member, every reply at B's.
        for v6 in [false, true] {
            let t = Instant::now();
            let before = Snapshot::take(&topo, &dp, &p);
            let r = ping(a, topo.host_addr(vrf, 1, v6), PINGS).expect("running ping");
            let d = Delta::between(&before, &Snapshot::take(&topo, &dp, &p));
            let what = format!("{vrf} ping A→B {}", family(v6));
            eprintln!("{what}: {r:?} in {:?}", t.elapsed());
            assert!(
                r.all_received(),
                "{what}: {r:?}\n{}\n{}",
                d.describe(),
                host_errors()
            );
            assert!(
                d.packets(vrf, Reason::Forwarded) >= 2 * u64::from(PINGS),
                "{what}: {vrf}'s forwarded counter must grow by the {} requests and replies\n{}",
                2 * PINGS,
                d.describe()
            );
            assert_eq!(
                d.packets(other(vrf), Reason::Forwarded),
                0,
                "{what}: the other VRF forwarded something\n{}",
                d.describe()
            );
            d.assert_kernel_idle(&what);
        }

        // TCP: the payload arrives whole and intact, and every segment either host sent (data
        // and ACKs, counted by the hosts' own TcpOutSegs) was forwarded by the fast path.
        for v6 in [false, true] {
            let t = Instant::now();
            let before = Snapshot::take(&topo, &dp, &p);
            let segs_before = host_counter_sum(&[a, b], "TcpOutSegs");
            let got =
                tcp_transfer(b, topo.host_addr(vrf, 1, v6), a, TCP_BYTES).expect("TCP transfer");
            let segs = host_counter_sum(&[a, b], "TcpOutSegs") - segs_before;
            let d = Delta::between(&before, &Snapshot::take(&topo, &dp, &p));
            let what = format!("{vrf} TCP A→B {}", family(v6));
            eprintln!("{what}: {got} bytes, {segs} segments in {:?}", t.elapsed());
            assert_eq!(
                got,
                TCP_BYTES,
                "{what}: bytes received\n{}\n{}",
                d.describe(),
                host_errors()
            );
            assert!(
                d.packets(vrf, Reason::Forwarded) >= segs,
                "{what}: the hosts sent {segs} TCP segments, the fast path forwarded fewer\n{}",
                d.describe()
            );
            assert!(
                d.bytes(vrf, Reason::Forwarded) >= TCP_BYTES,
                "{what}: fewer bytes forwarded than the payload\n{}",
                d.describe()
            );
            assert_eq!(
                d.packets(other(vrf), Reason::Forwarded),
                0,
                "{what}: the other VRF forwarded something\n{}",
                d.describe()
            );
            d.assert_kernel_idle(&what);
        }

        // UDP: every datagram arrives, intact.
        for v6 in [false, true] {
            let t = Instant::now();
            let before = Snapshot::take(&topo, &dp, &p);
            let u = udp_transfer(b, topo.host_addr(vrf, 1, v6), a, UDP_COUNT, UDP_SIZE)
                .expect("UDP transfer");
            let d = Delta::between(&before, &Snapshot::take(&topo, &dp, &p));
            let what = format!("{vrf} UDP A→B {}", family(v6));
            eprintln!("{what}: {u:?} in {:?}", t.elapsed());
            assert_eq!(
                (u.sent, u.received, u.corrupt),
                (UDP_COUNT, UDP_COUNT, 0),
                "{what}: (sent, received intact, corrupt)\n{}\n{}",
                d.describe(),
                host_errors()
            );
            assert!(
                d.packets(vrf, Reason::Forwarded) >= u.sent,
                "{what}: {} datagrams sent, fewer forwarded\n{}",
                u.sent,
                d.describe()
            );
            assert_eq!(
                d.packets(other(vrf), Reason::Forwarded),
                0,
                "{what}: the other VRF forwarded something\n{}",
                d.describe()
            );
            d.assert_kernel_idle(&what);
        }
    }

    let total = Delta::between(&start, &Snapshot::take(&topo, &dp, &p));
    eprintln!("whole test: {}", total.describe());
    total.assert_kernel_idle("all traffic");
    for vrf in VRFS {
        // Nothing the hosts sent each other was left to the kernel for want of a neighbour.
        assert_eq!(
            total.packets(vrf, Reason::PassNoNeighbour),
            0,
            "{vrf}: packets fell back to the kernel without a neighbour\n{}",
            total.describe()
        );
    }
    // Intact all the way: no host dropped anything for a bad header or checksum (the data plane
    // rewrites MACs, TTL / hop limit and the IPv4 header checksum; TCP and UDP checksums do not
    // cover those).
    let errors_after = fastpath::host_receive_errors(&topo).unwrap();
    assert_eq!(
        errors_after, errors_before,
        "the hosts dropped damaged packets"
    );
    drop(dp);
    drop(topo);
    assert!(list_own_netns("xdpfwd").unwrap().is_empty());
    eprintln!("total: {:?}", t0.elapsed());
}

#[test]
fn kernel_forwarding_counters_witness_the_path() {
    let t0 = Instant::now();
    let topo = topology("xdpwit");
    let (dp, p) = attach(&topo);

    let ping_all = |label: &str| {
        for vrf in VRFS {
            for v6 in [false, true] {
                let r = ping(topo.host(vrf, 0), topo.host_addr(vrf, 1, v6), PINGS)
                    .expect("running ping");
                assert!(
                    r.all_received(),
                    "{label}: {vrf} ping A→B {}: {r:?}",
                    family(v6)
                );
            }
        }
    };

    // With XDP: the kernel forwards nothing.
    let before = Snapshot::take(&topo, &dp, &p);
    ping_all("with XDP");
    let with_xdp = Delta::between(&before, &Snapshot::take(&topo, &dp, &p));
    with_xdp.assert_kernel_idle("pings with XDP attached");
    for vrf in VRFS {
        assert!(
            with_xdp.packets(vrf, Reason::Forwarded) >= 4 * u64::from(PINGS),
            "{vrf}: forwarded counter with XDP\n{}",
            with_xdp.describe()
        );
    }

    // Without: the same pings are forwarded by the kernel, and its counters say so. Each VRF
    // sends PINGS requests and gets PINGS replies per family, all through the router.
    drop(dp);
    for m in topo.members() {
        assert!(
            !fastpath::xdp_attached(topo.router(), &m.ifname).unwrap(),
            "{} still has XDP after the data plane was dropped",
            m.ifname
        );
    }
    let (f4, f6) = forwarded_datagrams(topo.router()).unwrap();
    ping_all("without XDP");
    let (g4, g6) = forwarded_datagrams(topo.router()).unwrap();
    let want = 2 * 2 * u64::from(PINGS);
    eprintln!(
        "without XDP: IpForwDatagrams +{}, Ip6OutForwDatagrams +{} (with XDP: +{}, +{})",
        g4 - f4,
        g6 - f6,
        with_xdp.kernel.0,
        with_xdp.kernel.1
    );
    assert!(
        g4 - f4 >= want,
        "IpForwDatagrams grew by {} without XDP, expected at least {want}",
        g4 - f4
    );
    assert!(
        g6 - f6 >= want,
        "Ip6OutForwDatagrams grew by {} without XDP, expected at least {want}",
        g6 - f6
    );
    drop(topo);
    assert!(list_own_netns("xdpwit").unwrap().is_empty());
    eprintln!("total: {:?}", t0.elapsed());
}

// Marked datagrams: each carries "<marker> <seq>", so a receiver tells whose they are.

fn marker(vrf: &str) -> String {
    format!("vrf-{vrf}")
}

/// A UDP socket bound to `addr:port` inside `ns` (port 0: the kernel picks one).
fn bind(ns: &NetNs, addr: IpAddr, port: u16) -> UdpSocket {
    let s = ns
        .run_in(|| UdpSocket::bind(SocketAddr::new(addr, port)))
        .unwrap_or_else(|e| panic!("binding UDP {addr}:{port} in {}: {e}", ns.name()));
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("set_read_timeout");
    s
}

/// Sends `count` datagrams `"<marker> <seq>"` from `ns` to `dst`; returns how many were sent.
fn send_marked(ns: &NetNs, dst: SocketAddr, marker: &str, count: u64) -> u64 {
    let any: IpAddr = if dst.is_ipv6() {
        "::".parse().unwrap()
    } else {
        "0.0.0.0".parse().unwrap()
    };
    let s = bind(ns, any, 0);
    let mut sent = 0;
    for seq in 0..count {
        // An unreachable destination may report ECONNREFUSED/EHOSTUNREACH from an earlier ICMP
        // error on the next send: that is not a datagram sent.
        if s.send_to(format!("{marker} {seq}").as_bytes(), dst).is_ok() {
            sent += 1;
        }
        if seq % 10 == 9 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    sent
}

/// Every datagram waiting on `s`, until it has been quiet for 300 ms.
fn drain(s: &UdpSocket) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(300) {
        match s.recv_from(&mut buf) {
            Ok((n, _)) => {
                out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                quiet_since = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    out
}

/// How many of `got` carry `marker`, and the others.
fn split_by_marker(got: &[String], marker: &str) -> (u64, Vec<String>) {
    let prefix = format!("{marker} ");
    let mine = got.iter().filter(|m| m.starts_with(&prefix)).count() as u64;
    let others = got
        .iter()
        .filter(|m| !m.starts_with(&prefix))
        .cloned()
        .collect();
    (mine, others)
}

/// A receiver on host B's address of one family in each VRF, all on the same port, so that a
/// datagram delivered to the wrong VRF's host would be accepted there.
struct Receivers {
    port: u16,
    /// (VRF, socket) for red and blue.
    socks: Vec<(&'static str, UdpSocket)>,
}

impl Receivers {
    fn new(topo: &Topology, v6: bool) -> Receivers {
        let addr = topo.host_addr("red", 1, v6);
        assert_eq!(addr, topo.host_addr("blue", 1, v6), "identical addressing");
        let red = bind(topo.host("red", 1), addr, 0);
        let port = red.local_addr().unwrap().port();
        let blue = bind(topo.host("blue", 1), addr, port);
        Receivers {
            port,
            socks: vec![("red", red), ("blue", blue)],
        }
    }

    fn dst(&self, topo: &Topology, v6: bool) -> SocketAddr {
        SocketAddr::new(topo.host_addr("red", 1, v6), self.port)
    }

    /// Everything each VRF's host B received, by VRF.
    fn drain(&self) -> Vec<(&'static str, Vec<String>)> {
        self.socks.iter().map(|(v, s)| (*v, drain(s))).collect()
    }
}

#[test]
fn each_vrf_reaches_only_its_own_host_with_the_same_address() {
    let t0 = Instant::now();
    let topo = topology("xdpown");
    let (dp, p) = attach(&topo);
    let before = Snapshot::take(&topo, &dp, &p);

    for v6 in [false, true] {
        let rx = Receivers::new(&topo, v6);
        let dst = rx.dst(&topo, v6);
        for vrf in VRFS {
            let sent = send_marked(topo.host(vrf, 0), dst, &marker(vrf), MARKED);
            assert_eq!(sent, MARKED, "{vrf} A could not send to {dst}");
        }
        for (vrf, got) in rx.drain() {
            let (mine, others) = split_by_marker(&got, &marker(vrf));
            let what = format!("{vrf} B ({dst}, {})", family(v6));
            eprintln!(
                "{what}: {mine} of its own VRF's datagrams, {} others",
                others.len()
            );
            assert!(
                others.is_empty(),
                "{what} received datagrams that are not its VRF's: {:?}",
                &others[..others.len().min(5)]
            );
            assert_eq!(mine, MARKED, "{what}: its VRF's datagrams received");
        }
    }

    let d = Delta::between(&before, &Snapshot::take(&topo, &dp, &p));
    d.assert_kernel_idle("marked datagrams");
    for vrf in VRFS {
        assert!(
            d.packets(vrf, Reason::Forwarded) >= 2 * MARKED,
            "{vrf}: its marked datagrams did not go through the fast path\n{}",
            d.describe()
        );
    }
    drop(dp);
    drop(topo);
    assert!(list_own_netns("xdpown").unwrap().is_empty());
    eprintln!("total: {:?}", t0.elapsed());
}

#[test]
fn a_vrf_without_a_route_does_not_reach_the_other_vrfs_host() {
    let t0 = Instant::now();
    let topo = topology("xdpiso");
    let (mut dp, p) = attach(&topo);

    // Blue loses its way to host B: the connected routes of member 1 go, from the data plane and
    // from the kernel, leaving blue's `unreachable default`. Red keeps everything.
    let blue_b = topo.member("blue", 1);
    let (s4, s6) = (blue_b.subnet4.unwrap(), blue_b.subnet6.unwrap());
    for (prefix, fam) in [(s4.to_string(), "-4"), (s6.to_string(), "-6")] {
        dp.maps
            .remove_route(blue_b.table, prefix.parse().unwrap())
            .unwrap();
        topo.router()
            .ip(&[
                fam,
                "route",
                "del",
                &prefix,
                "table",
                &blue_b.table.to_string(),
            ])
            .unwrap();
    }
    // The kernel agrees: blue A's packets to B's address have no route (unreachable default).
    for (dst, src) in [("10.0.2.2", "10.0.1.2"), ("fd00:2::2", "fd00:1::2")] {
        let r = topo
            .router()
            .ip(&["route", "get", dst, "from", src, "iif", "blue0"]);
        assert!(r.is_err(), "kernel still routes blue A → {dst}: {r:?}");
    }

    for v6 in [false, true] {
        let what = format!(
            "blue A → {} ({})",
            topo.host_addr("blue", 1, v6),
            family(v6)
        );
        let rx = Receivers::new(&topo, v6);
        let dst = rx.dst(&topo, v6);
        let before = Snapshot::take(&topo, &dp, &p);
        let kernel_before = tests::counters(topo.router()).unwrap();

        let r = ping(topo.host("blue", 0), topo.host_addr("blue", 1, v6), 3).expect("ping");
        assert_eq!(
            r.received, 0,
            "{what}: ping must fail without a route: {r:?}"
        );
        let blue_sent = send_marked(topo.host("blue", 0), dst, &marker("blue"), MARKED);
        assert_eq!(blue_sent, MARKED, "{what}: blue A could not send");
        // Positive control: red's host B is listening on that port and reachable from red.
        let red_sent = send_marked(topo.host("red", 0), dst, &marker("red"), MARKED);
        assert_eq!(red_sent, MARKED);

        let got = rx.drain();
        let d = Delta::between(&before, &Snapshot::take(&topo, &dp, &p));
        for (vrf, got) in &got {
            let (blue_count, _) = split_by_marker(got, &marker("blue"));
            let (red_count, _) = split_by_marker(got, &marker("red"));
            eprintln!("{what}: {vrf} B received {red_count} red, {blue_count} blue datagrams");
            assert_eq!(
                blue_count,
                0,
                "{what}: {vrf} B received blue's datagrams although blue has no route\n{}",
                d.describe()
            );
            let want_red = if *vrf == "red" { MARKED } else { 0 };
            assert_eq!(
                red_count,
                want_red,
                "{what}: red's datagrams at {vrf} B\n{}",
                d.describe()
            );
        }
        assert!(
            got.iter().all(|(_, g)| g
                .iter()
                .all(|m| m.starts_with("vrf-red ") || m.starts_with("vrf-blue "))),
            "unexpected datagrams: {got:?}"
        );

        // How it went: red forwarded by the fast path; blue left to the kernel (the fast path met
        // the unreachable default), which forwarded nothing.
        d.assert_kernel_idle(&what);
        assert!(
            d.packets("red", Reason::Forwarded) >= MARKED,
            "{what}: red's control traffic\n{}",
            d.describe()
        );
        assert_eq!(
            d.packets("blue", Reason::Forwarded),
            0,
            "{what}: blue forwarded something\n{}",
            d.describe()
        );
        assert!(
            d.packets("blue", Reason::PassUnreachable) >= 3 + MARKED,
            "{what}: blue's packets should meet the unreachable default\n{}",
            d.describe()
        );
        // The kernel's account: it received blue's packets and neither forwarded nor delivered
        // them. IPv6 counts the drop as Ip6InNoRoutes (ip6_pkt_drop). IPv4 has no such counter
        // for an `unreachable` route (EHOSTUNREACH: ip_error only tries to send the ICMP error),
        // so there the witness is IpInReceives (red's packets, forwarded by XDP, never reach the
        // kernel's IP layer) with IpInDelivers unchanged. The ICMP errors themselves cannot
        // reach blue A here: without vrf.ko the router's own output lookups match no `iif` rule
        // and the main table has no route to the tenants, so ping just times out.
        let kernel_after = tests::counters(topo.router()).unwrap();
        let delta = |name: &str| kernel_after[name] - kernel_before[name];
        let (seen, delivered) = if v6 {
            ("Ip6InNoRoutes", "Ip6InDelivers")
        } else {
            ("IpInReceives", "IpInDelivers")
        };
        eprintln!(
            "{what}: router {seen} +{}, {delivered} +{}",
            delta(seen),
            delta(delivered)
        );
        assert!(
            delta(seen) >= 3 + MARKED,
            "{what}: the router's kernel counted {} {seen}, expected at least the 3 pings and \
             {MARKED} datagrams\n{}",
            delta(seen),
            d.describe()
        );
        if !v6 {
            // (IPv6 delivers the hosts' MLD reports locally, so only IPv4 is exact.)
            assert_eq!(
                delta(delivered),
                0,
                "{what}: the router delivered blue's packets"
            );
        }
    }

    // Red still reaches its B both ways, through the fast path.
    for v6 in [false, true] {
        let r = ping(topo.host("red", 0), topo.host_addr("red", 1, v6), 3).unwrap();
        assert!(
            r.all_received(),
            "red A→B {} after blue's removal: {r:?}",
            family(v6)
        );
    }
    drop(dp);
    drop(topo);
    assert!(list_own_netns("xdpiso").unwrap().is_empty());
    eprintln!("total: {:?}", t0.elapsed());
}
