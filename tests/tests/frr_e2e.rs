//! An FRR router on the fast path, end to end with the real daemons. FRR (zebra, staticd, bgpd)
//! runs in the router namespace in the default VRF (the host kernel has no vrf.ko), vrfd serves
//! it with `table = "main"`. BIRD in a peer namespace announces a few thousand prefixes over two
//! BGP sessions (two links): most on both (FRR installs them through one two-path nexthop
//! group), a block on one session only (a singleton nexthop), and a block it later withdraws.
//!
//! Witnesses: `ip route` shows every BGP route with an `nhid`; datagrams from a source host to a
//! sample of the prefixes arrive at the peer while the router's kernel forwards none of them
//! (nstat IpForwDatagrams) and vrfd's forwarded counter grows; `vrfctl lookup` answers as `ip
//! route get` does (the same path for a single path; a path of the route's group for ECMP); when
//! BIRD withdraws the block and FRR removes it, the fast path follows within a second.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::daemon::Vrfd;
use tests::{
    add_permanent_neigh, bird::Bird, forwarded_datagrams, frr::Frr, mac, require_root, set_gro,
    veth_pair, NetNs,
};
use vrf_common::{Direction, Reason};

/// Announced on both sessions: two equal paths.
const ECMP: (u8, usize) = (200, 2000);
/// Announced on session 1 only: one path.
const SINGLE: (u8, usize) = (210, 200);
/// Announced on both, then withdrawn (`birdc disable block_routes`).
const BLOCK: (u8, usize) = (220, 300);
/// Announced on both with link bandwidths 1 and 3 (the BGP link-bandwidth extended community):
/// FRR installs a group weighted 25/75.
const WEIGHTED: (u8, usize) = (230, 100);
/// How soon the fast path must follow the kernel.
const FOLLOW: Duration = Duration::from_secs(1);
/// How long FRR and BIRD may take to converge (BGP sessions, a few thousand routes, shared cores).
const CONVERGE: Duration = Duration::from_secs(90);
const PORT: u16 = 5201;

/// The `i`-th /24 of a block: 10.<first + i/256>.<i%256>.0.
fn prefix(block: (u8, usize), i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, block.0 + (i / 256) as u8, (i % 256) as u8, 0)
}

fn host_in(block: (u8, usize), i: usize) -> Ipv4Addr {
    let p = prefix(block, i).octets();
    Ipv4Addr::new(p[0], p[1], p[2], 7)
}

fn bird_conf() -> String {
    let mut conf = String::from("log stderr all;\nrouter id 10.0.1.2;\nprotocol device { }\n");
    for (name, block) in [
        ("ecmp_routes", ECMP),
        ("single_routes", SINGLE),
        ("block_routes", BLOCK),
        ("weighted_routes", WEIGHTED),
    ] {
        writeln!(conf, "protocol static {name} {{\n  ipv4;").unwrap();
        for i in 0..block.1 {
            writeln!(conf, "  route {}/24 blackhole;", prefix(block, i)).unwrap();
        }
        conf += "}\n";
    }
    // `proto` is the name of the protocol a route came from. Link bandwidth: transitive
    // two-octet-AS extended community 0x0004, AS 65002 (0xfdea), bytes/s as an IEEE float
    // (1e6 = 0x49742400, 3e6 = 0x4a371b00); BIRD sends no non-transitive ones over eBGP.
    for (session, single, bandwidth) in [
        (1, "", 0x49742400u32),
        (2, "if proto = \"single_routes\" then reject;", 0x4a371b00),
    ] {
        write!(
            conf,
            "protocol bgp s{session} {{
  local 10.0.{session}.2 as 65002;
  neighbor 10.0.{session}.1 as 65001;
  ipv4 {{
    import none;
    export filter {{
      if source != RTS_STATIC then reject;
      {single}
      if proto = \"weighted_routes\" then bgp_ext_community.add((generic, 0x0004fdea, {bandwidth:#x}));
      accept;
    }};
    next hop self;
  }};
}}
"
        )
        .unwrap();
    }
    conf
}

const BGPD_CONF: &str = "hostname bgpd
router bgp 65001
 bgp router-id 10.0.1.1
 no bgp ebgp-requires-policy
 neighbor 10.0.1.2 remote-as 65002
 neighbor 10.0.2.2 remote-as 65002
 address-family ipv4 unicast
  maximum-paths 64
 exit-address-family
";

const VRFD_CONF: &str = "[[vrf]]
name = \"default\"
table = \"main\"
interfaces = [\"r0\", \"r1\", \"r2\"]
";

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// FRR's routes in the main table, by destination (`10.200.0.0/24`).
fn bgp_routes(router: &NetNs) -> BTreeMap<String, Value> {
    let all = json(&router.ip(&["-j", "route", "show", "proto", "bgp"]).unwrap());
    all.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["dst"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

/// The (dev, gateway) paths of one route of `ip -j route show`.
fn paths(route: &Value) -> BTreeSet<(String, String)> {
    let hop = |h: &Value| {
        (
            h["dev"].as_str().unwrap_or("?").to_owned(),
            h["gateway"].as_str().unwrap_or("?").to_owned(),
        )
    };
    match route["nexthops"].as_array() {
        Some(hops) => hops.iter().map(hop).collect(),
        None => BTreeSet::from([hop(route)]),
    }
}

/// The weights of a route's paths (`ip` prints rtnh_hops + 1), in path order.
fn weights(route: &Value) -> Vec<u64> {
    route["nexthops"]
        .as_array()
        .map(|hops| {
            hops.iter()
                .map(|h| h["weight"].as_u64().unwrap_or(1))
                .collect()
        })
        .unwrap_or_default()
}

/// Packets received on the peer's `dev`.
fn rx_packets(ns: &NetNs, dev: &str) -> u64 {
    let v = json(&ns.ip(&["-j", "-s", "link", "show", dev]).unwrap());
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap()
}

/// `ip route get DST from 10.0.0.2 iif r0`: the kernel's (dev, gateway) for a forwarded packet.
fn route_get(router: &NetNs, dst: Ipv4Addr) -> (String, String) {
    let dst = dst.to_string();
    let v = json(
        &router
            .ip(&["-j", "route", "get", &dst, "from", "10.0.0.2", "iif", "r0"])
            .unwrap_or_else(|e| panic!("{e:#}")),
    );
    (
        v[0]["dev"].as_str().unwrap_or("?").to_owned(),
        v[0]["gateway"].as_str().unwrap_or("?").to_owned(),
    )
}

/// `vrfctl lookup` for a packet from the source host: (action/reason, dev, gateway).
fn lookup(vrfd: &Vrfd<'_>, dst: Ipv4Addr) -> (String, String, String) {
    let v = vrfd
        .lookup("default", Some("r0"), Some("10.0.0.2"), &dst.to_string())
        .unwrap_or_else(|e| panic!("{e:#}"));
    (
        format!(
            "{}/{}",
            v["action"].as_str().unwrap_or("?"),
            v["reason"].as_str().unwrap_or("?")
        ),
        v["oif"].as_str().unwrap_or("?").to_owned(),
        v["gateway"].as_str().unwrap_or("?").to_owned(),
    )
}

fn forwarded_by_xdp(vrfd: &Vrfd<'_>) -> u64 {
    let maps = vrfd.maps().unwrap_or_else(|e| panic!("{e:#}"));
    let vrf = vrf_user::inspect::vrfs(&maps)
        .unwrap()
        .into_iter()
        .find(|v| v.name == "default")
        .expect("vrfd serves `default`");
    maps.vrf_counters(vrf.slot, Direction::Ingress)
        .unwrap()
        .by_reason[Reason::Forwarded as usize]
        .packets
}

#[test]
fn frr_routes_from_bird_are_forwarded_by_xdp_and_followed_on_withdrawal() {
    require_root();
    assert!(
        tests::frr::available() && tests::bird::available(),
        "FRR and BIRD are not installed: run `cargo xtask setup`"
    );
    // src (h0 10.0.0.2) — r0 [router, FRR + vrfd] r1, r2 — p1, p2 [peer, BIRD, far host].
    let router = NetNs::new("frre2e").unwrap();
    let peer = NetNs::new("birde2e").unwrap();
    let src = NetNs::new("srce2e").unwrap();
    veth_pair(&router, "r0", &src, "h0").unwrap();
    router
        .ip(&["addr", "add", "10.0.0.1/24", "dev", "r0"])
        .unwrap();
    src.ip(&["addr", "add", "10.0.0.2/24", "dev", "h0"])
        .unwrap();
    for i in 1..=2 {
        let (r, p) = (format!("r{i}"), format!("p{i}"));
        veth_pair(&router, &r, &peer, &p).unwrap();
        router
            .ip(&["addr", "add", &format!("10.0.{i}.1/24"), "dev", &r])
            .unwrap();
        peer.ip(&["addr", "add", &format!("10.0.{i}.2/24"), "dev", &p])
            .unwrap();
    }
    for (ns, devs) in [
        (&router, &["lo", "r0", "r1", "r2"][..]),
        (&peer, &["lo", "p1", "p2"]),
        (&src, &["lo", "h0"]),
    ] {
        for d in devs {
            ns.ip(&["link", "set", d, "up"]).unwrap();
        }
    }
    for key in [
        "net.ipv4.ip_forward",
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
    ] {
        let v = if key.ends_with("forward") { "1" } else { "0" };
        router.sysctl(key, v).unwrap();
    }
    // Exact witnesses: no ARP on the data path; XDP_REDIRECT into a veth needs GRO on the
    // receiving peer; the sender's frames carry finished checksums.
    for (ns, dev, addr, peer_ns, peer_dev) in [
        (&router, "r0", "10.0.0.2", &src, "h0"),
        (&router, "r1", "10.0.1.2", &peer, "p1"),
        (&router, "r2", "10.0.2.2", &peer, "p2"),
        (&src, "h0", "10.0.0.1", &router, "r0"),
    ] {
        add_permanent_neigh(ns, dev, addr, mac(peer_ns, peer_dev).unwrap()).unwrap();
    }
    set_gro(&peer, "p1", true).unwrap();
    set_gro(&peer, "p2", true).unwrap();
    src.exec_ok(&["ethtool", "-K", "h0", "tx", "off"]).unwrap();
    src.ip(&["route", "add", "default", "via", "10.0.0.1"])
        .unwrap();
    // The peer is also the far host: it accepts every announced address.
    for local in [
        "10.200.0.0/13",
        "10.210.0.0/16",
        "10.220.0.0/15",
        "10.230.0.0/16",
    ] {
        peer.ip(&["route", "add", "local", local, "dev", "lo"])
            .unwrap();
    }

    let vrfd = Vrfd::start(&router, VRFD_CONF).unwrap_or_else(|e| panic!("{e:#}"));
    let bird = Bird::start(&peer, &bird_conf()).unwrap();
    let frr = Frr::start(&router, BGPD_CONF, "hostname staticd\n").unwrap();

    // FRR installs everything: ECMP and BLOCK with both paths, SINGLE with one.
    let total = ECMP.1 + SINGLE.1 + BLOCK.1 + WEIGHTED.1;
    let t0 = Instant::now();
    let routes = loop {
        let routes = bgp_routes(&router);
        let two = routes.values().filter(|r| paths(r).len() == 2).count();
        let weighted = routes.values().filter(|r| weights(r) == [25, 75]).count();
        if routes.len() == total && two == total - SINGLE.1 && weighted == WEIGHTED.1 {
            break routes;
        }
        assert!(
            t0.elapsed() < CONVERGE,
            "{} of {total} prefixes installed ({two} with two paths) after {CONVERGE:?}\n{}\n{}",
            routes.len(),
            frr.vtysh("show bgp summary").unwrap_or_default(),
            bird.birdc(&["show", "protocols"]).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("FRR installed {total} routes after {:?}", t0.elapsed());
    let nhids: BTreeSet<u64> = routes
        .values()
        .map(|r| r["nhid"].as_u64().unwrap_or_else(|| panic!("no nhid: {r}")))
        .collect();
    assert_eq!(nhids.len(), 3, "two groups, one singleton: {nhids:?}");
    let both = BTreeSet::from([
        ("r1".to_owned(), "10.0.1.2".to_owned()),
        ("r2".to_owned(), "10.0.2.2".to_owned()),
    ]);

    // A sample: every 40th ECMP prefix, every 20th single-path one, every 30th of the block.
    let sample: Vec<(Ipv4Addr, BTreeSet<(String, String)>)> =
        [(ECMP, 40), (SINGLE, 20), (BLOCK, 30), (WEIGHTED, 10)]
            .into_iter()
            .flat_map(|(block, step)| (0..block.1).step_by(step).map(move |i| (block, i)))
            .map(|(block, i)| {
                let route = &routes[&format!("{}/24", prefix(block, i))];
                (host_in(block, i), paths(route))
            })
            .collect();

    // vrfd has followed (the last routes may have landed a moment ago) and agrees with the
    // kernel: the very path for a single path, a path of the group for ECMP.
    let t1 = Instant::now();
    for (dst, kernel_paths) in &sample {
        let (fate, dev, gw) = loop {
            let l = lookup(&vrfd, *dst);
            if l.0 == "forward/forwarded" || t1.elapsed() > FOLLOW * 5 {
                break l;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(fate, "forward/forwarded", "{dst}");
        let got = route_get(&router, *dst);
        assert!(kernel_paths.contains(&got), "{dst}: kernel {got:?}");
        if kernel_paths.len() == 1 {
            assert_eq!((dev, gw), got, "{dst}: vrfctl lookup vs ip route get");
        } else {
            assert_eq!(kernel_paths, &both, "{dst}");
            assert!(
                kernel_paths.contains(&(dev.clone(), gw.clone())),
                "{dst}: {dev} {gw}"
            );
        }
    }

    // Datagrams to the sample, 4 flows each: they arrive, and the router's kernel forwards none.
    let flows = 4u16;
    let receiver = peer
        .run_in(|| UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], PORT))))
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let senders: Vec<UdpSocket> = (0..flows)
        .map(|f| {
            src.run_in(|| UdpSocket::bind(SocketAddr::from(([10, 0, 0, 2], 40000 + f))))
                .unwrap()
        })
        .collect();
    let kernel_before = forwarded_datagrams(&router).unwrap().0;
    let xdp_before = forwarded_by_xdp(&vrfd);
    let sent = sample.len() * usize::from(flows);
    let mut received = 0;
    let mut buf = [0u8; 64];
    // In batches the receiver's socket buffer holds (a few hundred small datagrams).
    for (n, batch) in sample.chunks(20).enumerate() {
        for (dst, _) in batch {
            for s in &senders {
                s.send_to(dst.to_string().as_bytes(), SocketAddr::from((*dst, PORT)))
                    .unwrap();
            }
        }
        let want = ((n + 1) * 20 * usize::from(flows)).min(sent);
        let deadline = Instant::now() + Duration::from_secs(5);
        while received < want && Instant::now() < deadline {
            if receiver.recv(&mut buf).is_ok() {
                received += 1;
            }
        }
    }
    let kernel = forwarded_datagrams(&router).unwrap().0 - kernel_before;
    let xdp = forwarded_by_xdp(&vrfd) - xdp_before;
    eprintln!("{sent} datagrams: {received} received, XDP forwarded {xdp}, kernel {kernel}");
    assert_eq!(
        received, sent,
        "datagrams lost (XDP {xdp}, kernel {kernel})"
    );
    assert_eq!(
        kernel, 0,
        "the router's kernel forwarded datagrams: not the XDP path"
    );
    assert!(
        xdp >= sent as u64,
        "vrfd's forwarded counter: +{xdp} for {sent}"
    );

    // The weighted group in the maps: 1024 buckets split 256/768 (±1 rounding), and flows to one
    // weighted prefix arriving on p1 and p2 in proportion.
    let wdst = host_in(WEIGHTED, 0);
    let maps = vrfd.maps().unwrap_or_else(|e| panic!("{e:#}"));
    let wprefix = format!("{}/24", prefix(WEIGHTED, 0));
    let (_, _, wroute) = maps
        .routes()
        .unwrap()
        .into_iter()
        .find(|(_, p, _)| p.to_string() == wprefix)
        .expect("the weighted route is in the data plane");
    let group = maps.nexthops.get(&wroute.nexthop, 0).unwrap();
    let mut by_oif: BTreeMap<u32, usize> = BTreeMap::new();
    for &b in &group.buckets {
        *by_oif
            .entry(group.paths[usize::from(b)].ifindex)
            .or_default() += 1;
    }
    let r1 = tests::ifindex(&router, "r1").unwrap();
    let r2 = tests::ifindex(&router, "r2").unwrap();
    let (b1, b2) = (by_oif.get(&r1).copied(), by_oif.get(&r2).copied());
    assert!(
        b1.is_some_and(|n| n.abs_diff(256) <= 1) && b2.is_some_and(|n| n.abs_diff(768) <= 1),
        "buckets per oif {by_oif:?} (r1 = {r1}, r2 = {r2})"
    );
    let weighted_flows = 400u16;
    let (p1_before, p2_before) = (rx_packets(&peer, "p1"), rx_packets(&peer, "p2"));
    let kernel_before = forwarded_datagrams(&router).unwrap().0;
    let mut got = 0;
    for batch in (0..weighted_flows).collect::<Vec<_>>().chunks(100) {
        src.run_in(|| {
            for f in batch {
                let s = UdpSocket::bind(SocketAddr::from(([10, 0, 0, 2], 41000 + f))).unwrap();
                s.send_to(b"w", SocketAddr::from((wdst, PORT))).unwrap();
            }
        });
        let want = batch[batch.len() - 1] + 1;
        let deadline = Instant::now() + Duration::from_secs(5);
        while got < want && Instant::now() < deadline {
            if receiver.recv(&mut buf).is_ok() {
                got += 1;
            }
        }
    }
    let (n1, n2) = (
        rx_packets(&peer, "p1") - p1_before,
        rx_packets(&peer, "p2") - p2_before,
    );
    let kernel = forwarded_datagrams(&router).unwrap().0 - kernel_before;
    eprintln!("{weighted_flows} weighted flows: {got} received, p1 {n1}, p2 {n2}, kernel {kernel}");
    assert_eq!(got, weighted_flows, "weighted flows lost");
    assert_eq!(kernel, 0, "the router's kernel forwarded weighted flows");
    // Weight 75 of 100: 300 of 400 expected, σ ≈ 8.7; 6 % is over 2.7σ (BGP keepalives add
    // a packet or two to either link).
    let share = n2 as f64 / (n1 + n2) as f64;
    assert!(
        (share - 0.75).abs() < 0.06,
        "p2 took {share}: p1 {n1}, p2 {n2}"
    );

    // BIRD withdraws the block; once the kernel has dropped it, the fast path follows.
    bird.birdc(&["disable", "block_routes"]).unwrap();
    let t2 = Instant::now();
    let block: BTreeSet<String> = (0..BLOCK.1)
        .map(|i| format!("{}/24", prefix(BLOCK, i)))
        .collect();
    loop {
        let left = bgp_routes(&router)
            .keys()
            .filter(|d| block.contains(*d))
            .count();
        if left == 0 {
            break;
        }
        assert!(
            t2.elapsed() < CONVERGE,
            "{left} block routes still installed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let gone = Instant::now();
    eprintln!("FRR removed the block after {:?}", gone - t2);
    // The fast path's FIB, read from vrfd's pinned maps.
    loop {
        let left = maps
            .routes()
            .unwrap()
            .iter()
            .filter(|(_, p, _)| block.contains(&p.to_string()))
            .count();
        if left == 0 {
            break;
        }
        assert!(
            gone.elapsed() < FOLLOW,
            "{left} block routes still in the data plane {FOLLOW:?} after the kernel removed them"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "the data plane followed {:?} after the kernel",
        gone.elapsed()
    );
    for i in (0..BLOCK.1).step_by(30) {
        let (fate, ..) = lookup(&vrfd, host_in(BLOCK, i));
        assert!(fate.starts_with("pass/"), "{}: {fate}", host_in(BLOCK, i));
    }
    // The rest stays on the fast path.
    assert_eq!(lookup(&vrfd, host_in(ECMP, 0)).0, "forward/forwarded");

    drop(frr);
    drop(bird);
    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
}
