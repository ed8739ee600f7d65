//! Per-nexthop counters with vrfd running: UDP flows over a two-member group of `ip nexthop`
//! objects are forwarded by XDP (the router's IpForwDatagrams stays still); each member's
//! counter in `vrfctl stats --json` and `/metrics` equals the datagrams its receiving host got
//! (counted there, by a socket), and each member carries its share. A member deleted gives its
//! counter slot back: it leaves the report, and the next nexthop takes the slot from zero.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::daemon::{json_log_lines, log_message, vrf_toml, Vrfd};
use tests::{forwarded_datagrams, NetNs, TopologySpec};

const DST: &str = "10.9.0.5";
const PORT: u16 = 5555;
const FLOWS: u16 = 64;
const PER_FLOW: u64 = 10;
const PAYLOAD: usize = 100;
/// A datagram as the Ethernet frame XDP counted.
const FRAME: u64 = 14 + 20 + 8 + PAYLOAD as u64;
const FOLLOW: Duration = Duration::from_secs(1);

/// The `nexthops` rows of `vrfctl stats --json`.
fn nexthops(vrfd: &Vrfd<'_>) -> Vec<Value> {
    let v = vrfd
        .vrfctl_json(&["stats", "--json"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    v["nexthops"].as_array().cloned().unwrap_or_default()
}

fn row(rows: &[Value], nhid: u64) -> Option<Value> {
    rows.iter().find(|r| r["nhid"] == nhid).cloned()
}

/// Polls the report until nexthop `nhid` is in it (`present`) or gone.
fn await_row(vrfd: &Vrfd<'_>, nhid: u64, present: bool) -> Option<Value> {
    let t0 = Instant::now();
    loop {
        let r = row(&nexthops(vrfd), nhid);
        if r.is_some() == present {
            return r;
        }
        assert!(
            t0.elapsed() < FOLLOW,
            "nexthop {nhid} present={present} not within {FOLLOW:?}: {:?}",
            nexthops(vrfd)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A UDP socket on DST:PORT in the host, to count what reaches it.
fn receiver(host: &NetNs) -> UdpSocket {
    let s = host
        .run_in(|| UdpSocket::bind(SocketAddr::new(DST.parse().unwrap(), PORT)))
        .unwrap_or_else(|e| panic!("bind in {}: {e}", host.name()));
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // Room for every datagram of the run: the default buffer holds about 200 (SO_RCVBUFFORCE:
    // root).
    let rc = tests::traffic::force_receive_buffer(&s, 8 << 20);
    assert!(rc.is_ok(), "SO_RCVBUFFORCE: {rc:?}");
    s
}

/// Datagrams waiting on `s` (until it is quiet for 300 ms).
fn drain(s: &UdpSocket) -> u64 {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while let Ok(len) = s.recv(&mut buf) {
        assert_eq!(len, PAYLOAD);
        n += 1;
    }
    n
}

/// `FLOWS` flows (each its own source port) of `PER_FLOW` datagrams to DST:PORT.
fn send_flows(sender: &NetNs) {
    sender.run_in(|| {
        let dst = SocketAddr::new(DST.parse::<IpAddr>().unwrap(), PORT);
        for _ in 0..FLOWS {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..PER_FLOW {
                s.send_to(&[7u8; PAYLOAD], dst).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
}

/// `vrf_xdp_nexthop_forwarded_{packets,bytes}_total` of nexthop `nhid` in a scrape.
fn metric(body: &str, name: &str, nhid: u64) -> Option<u64> {
    let label = format!("nhid=\"{nhid}\"");
    body.lines()
        .filter(|l| l.starts_with(&format!("vrf_xdp_{name}_total{{")) && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn scrape(ns: &NetNs, addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    ns.run_in(|| {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    })
}

fn metrics_addr(vrfd: &Vrfd<'_>) -> SocketAddr {
    let log = vrfd.log();
    json_log_lines(&log)
        .iter()
        .find(|l| log_message(l).is_some_and(|m| m.starts_with("serving metrics")))
        .and_then(|l| l["fields"]["address"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no `serving metrics` line in:\n{log}"))
}

#[test]
fn per_nexthop_counters_add_up_to_what_the_hosts_received() {
    let topo = TopologySpec::two_vrfs_three_members()
        .with_prefix("nhc")
        .built_for_xdp();
    let r = topo.router();
    let red = topo.vrf("red");
    let table = red.table.to_string();
    let members: Vec<&str> = red.members.iter().map(|m| m.ifname.as_str()).collect();
    let vrfd = Vrfd::start_with(
        r,
        &vrf_toml("red", red.table, &members),
        &["--metrics", "127.0.0.1:0"],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let (b, c) = (topo.host("red", 1), topo.host("red", 2));
    for h in [b, c] {
        h.ip(&["addr", "add", &format!("{DST}/32"), "dev", "lo"])
            .unwrap();
    }
    let nh = |args: &str| {
        r.ip(&args.split(' ').collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("ip {args}: {e:#}"))
    };
    // Onlink: the gateways are connected in the VRF table, not in main where the kernel checks.
    nh("nexthop add id 31 via 10.0.2.2 dev red1 onlink");
    nh("nexthop add id 32 via 10.0.3.2 dev red2 onlink");
    nh("nexthop add id 33 group 31/32");
    nh(&format!("route add 10.9.0.0/24 nhid 33 table {table}"));
    let first31 = await_row(&vrfd, 31, true).unwrap();
    let first32 = await_row(&vrfd, 32, true).unwrap();
    assert_eq!(first31["vrf"], "red");
    assert_eq!(first31["gateway"], "10.0.2.2");
    assert_eq!(first31["dev"], "red1");
    assert_eq!(first32["dev"], "red2");
    assert!(
        row(&nexthops(&vrfd), 33).is_none(),
        "a group is no nexthop of its own"
    );

    let (rb, rc) = (receiver(b), receiver(c));
    let before = forwarded_datagrams(r).unwrap();
    send_flows(topo.host("red", 0));
    let (got_b, got_c) = (drain(&rb), drain(&rc));
    assert_eq!(
        forwarded_datagrams(r).unwrap().0,
        before.0,
        "the kernel forwarded some datagrams, not XDP"
    );
    let total = u64::from(FLOWS) * PER_FLOW;
    assert_eq!(got_b + got_c, total, "datagrams lost: B {got_b}, C {got_c}");
    // 64 flows over two equal members: each takes a fair share (binomial, ±4σ is about ±16).
    for got in [got_b, got_c] {
        assert!((160..=480).contains(&got), "B {got_b}, C {got_c}");
    }

    let rows = nexthops(&vrfd);
    let (n31, n32) = (row(&rows, 31).unwrap(), row(&rows, 32).unwrap());
    assert_eq!(n31["packets"], got_b, "{n31}");
    assert_eq!(n32["packets"], got_c, "{n32}");
    assert_eq!(n31["bytes"], got_b * FRAME, "{n31}");
    assert_eq!(n32["bytes"], got_c * FRAME, "{n32}");
    let text = String::from_utf8(vrfd.vrfctl(&["stats"]).unwrap().stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("nhid 31 ") && l.contains("red1") && l.contains("10.0.2.2")),
        "{text}"
    );
    let body = scrape(r, metrics_addr(&vrfd));
    assert_eq!(
        metric(&body, "nexthop_forwarded_packets", 31),
        Some(got_b),
        "{body}"
    );
    assert_eq!(
        metric(&body, "nexthop_forwarded_bytes", 32),
        Some(got_c * FRAME)
    );

    // A member deleted: the group shrinks, its slot is given back; the next nexthop takes it
    // from zero.
    let slot32 = n32["slot"].as_u64().unwrap();
    nh("nexthop del id 32");
    await_row(&vrfd, 32, false);
    assert_eq!(
        row(&nexthops(&vrfd), 31).unwrap()["packets"],
        got_b,
        "nexthop 31 keeps its slot and counts"
    );
    nh("nexthop add id 34 via 10.0.3.2 dev red2 onlink");
    nh("nexthop replace id 33 group 31/34");
    let n34 = await_row(&vrfd, 34, true).unwrap();
    assert_eq!(n34["slot"], slot32, "the freed slot is reused: {n34}");
    assert_eq!(n34["packets"], 0, "a reused slot starts from zero: {n34}");

    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
}
