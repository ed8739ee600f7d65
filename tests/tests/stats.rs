//! Per-VRF statistics: `vrf_user::stats` (what `vrfctl stats` prints), vrfd's `/metrics`, and
//! `vrfctl stats` as a process, each checked against traffic whose count is known exactly.
//!
//! - Packet level: the data-plane fixture (`tests::dataplane`, two VRFs in a private namespace)
//!   runs a known number of frames of known size and decision through BPF_PROG_TEST_RUN; the
//!   stats module and the exporter's rendering must report exactly those packets and bytes, per
//!   VRF, per reason and per member.
//! - Process level: vrfd with `--metrics 127.0.0.1:0` on the two-VRF topology; pings (each is a
//!   request forwarded from member 0 and a reply forwarded from member 1), UDP into a blackhole
//!   and into the `unreachable default` route. Hosts' IPv6 neighbour discovery and MLD frames
//!   also reach the members (passed as multicast / link-local / local), so exact numbers are
//!   asserted on the reasons the test alone causes; `vrfctl stats --json` and `/metrics` must
//!   agree on every number. A member then goes down, leaves its VRF (renamed away) and comes
//!   back: no counter is reset. Without vrfd, `vrfctl stats` fails with one clear line.
//!
//! The binaries come from `cargo build --release -p vrf-user` (see `tests::bin_path`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::daemon::{json_log_lines, log_message, topology_config, vrfctl_in, Vrfd};
use tests::dataplane::*;
use tests::{list_own_netns, ping, NetNs, Topology, TopologySpec};
use vrf_common::{Reason, RouteKind};
use vrf_user::daemon::export::{self, DaemonMetrics};
use vrf_user::dataplane::{XdpAction, XDP_DROP, XDP_PASS, XDP_REDIRECT};
use vrf_user::stats::{self, Report};

// ---------------------------------------------------------------------------------------------
// The exposition, parsed.

/// One sample line of the OpenMetrics text: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Every sample of an exposition (comments skipped).
fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("sample {l:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|e| panic!("value of {l:?}: {e}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels end with }");
                    (name.to_string(), parse_labels(body))
                }
            };
            Sample {
                name,
                labels,
                value,
            }
        })
        .collect()
}

/// `k="v",k2="v2"` with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "label {key} of {body:?}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(e) => value.push(e),
                    None => panic!("dangling escape in {body:?}"),
                },
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

struct Exposition {
    text: String,
    samples: Vec<Sample>,
}

impl Exposition {
    fn new(text: String) -> Exposition {
        assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
        let samples = parse_exposition(&text);
        Exposition { text, samples }
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the one sample of `name` with (at least) `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert_eq!(
            found.len(),
            1,
            "one sample {name}{labels:?}, found {found:?}\n{}",
            self.text
        );
        found[0].value as u64
    }

    /// The sum over every sample of `name` with `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels).map(|s| s.value as u64).sum()
    }

    fn count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.matching(name, labels).count()
    }

    /// Whether any sample has label `key` = `value`.
    fn mentions(&self, key: &str, value: &str) -> bool {
        self.samples
            .iter()
            .any(|s| s.labels.get(key).map(String::as_str) == Some(value))
    }
}

/// Every number of `report` (as `vrfctl stats --interfaces --json` prints it) must be in the
/// exposition, exactly: per VRF rx and each reason, per action bytes, per member rx and actions.
fn assert_metrics_match(m: &Exposition, report: &Value) {
    for v in report["vrfs"].as_array().expect("vrfs") {
        let vrf = v["name"].as_str().unwrap();
        let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{vrf}.{k} in {v}"));
        let at = [("vrf", vrf), ("direction", "ingress")];
        assert_eq!(
            m.get("vrf_xdp_vrf_rx_packets_total", &at),
            n("rx_packets"),
            "{vrf} rx"
        );
        assert_eq!(
            m.get("vrf_xdp_vrf_rx_bytes_total", &at),
            n("rx_bytes"),
            "{vrf} rx bytes"
        );
        let reasons = v["reasons"].as_object().expect("reasons");
        assert_eq!(reasons.len(), Reason::COUNT - 1, "every reason but rx: {v}");
        assert_eq!(
            m.count("vrf_xdp_vrf_packets_total", &at),
            reasons.len(),
            "one sample per reason for {vrf}"
        );
        for (reason, packets) in reasons {
            let labels = [at[0], at[1], ("reason", reason.as_str())];
            assert_eq!(
                m.get("vrf_xdp_vrf_packets_total", &labels),
                packets.as_u64().unwrap(),
                "{vrf} {reason}"
            );
        }
        for (action, field) in [
            ("forward", "forwarded"),
            ("pass", "passed"),
            ("drop", "dropped"),
        ] {
            let labels = [at[0], at[1], ("action", action)];
            assert_eq!(
                m.sum("vrf_xdp_vrf_packets_total", &labels),
                n(&format!("{field}_packets")),
                "{vrf} {action} packets"
            );
            assert_eq!(
                m.sum("vrf_xdp_vrf_bytes_total", &labels),
                n(&format!("{field}_bytes")),
                "{vrf} {action} bytes"
            );
        }
        let info_labels = [("vrf", vrf)];
        let info = m.matching("vrf_xdp_vrf_info", &info_labels).next();
        assert_eq!(
            info.map(|s| s.labels["table"].clone()),
            Some(v["table"].to_string()),
            "vrf_xdp_vrf_info of {vrf}"
        );
        for i in v["interfaces"]
            .as_array()
            .expect("interfaces (--interfaces)")
        {
            let ifname = i["name"].as_str().unwrap();
            let n = |k: &str| i[k].as_u64().unwrap();
            let at = [
                ("vrf", vrf),
                ("interface", ifname),
                ("direction", "ingress"),
            ];
            assert_eq!(
                m.get("vrf_xdp_interface_rx_packets_total", &at),
                n("rx_packets"),
                "{ifname} rx"
            );
            assert_eq!(
                m.get("vrf_xdp_interface_rx_bytes_total", &at),
                n("rx_bytes"),
                "{ifname} rx bytes"
            );
            for (action, field) in [
                ("forward", "forwarded"),
                ("pass", "passed"),
                ("drop", "dropped"),
            ] {
                let labels = [at[0], at[1], at[2], ("action", action)];
                assert_eq!(
                    m.get("vrf_xdp_interface_packets_total", &labels),
                    n(&format!("{field}_packets")),
                    "{ifname} {action}"
                );
                assert_eq!(
                    m.get("vrf_xdp_interface_bytes_total", &labels),
                    n(&format!("{field}_bytes")),
                    "{ifname} {action} bytes"
                );
            }
            assert_eq!(
                m.get("vrf_xdp_interface_up", &[("interface", ifname)]),
                u64::from(i["up"].as_bool().unwrap()),
                "{ifname} up"
            );
        }
    }
}

fn vrf<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["vrfs"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no VRF {name} in {report:#}"))
}

fn member<'a>(vrf: &'a Value, name: &str) -> &'a Value {
    vrf["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no member {name} in {vrf:#}"))
}

/// `{"<reason>": packets}` of a VRF or member object, without the zeros.
fn nonzero_reasons(v: &Value) -> BTreeMap<String, u64> {
    v["reasons"]
        .as_object()
        .expect("reasons")
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .filter(|(_, n)| *n != 0)
        .collect()
}

// =============================================================================================
// Packet level.

/// A UDP frame on `ingress` from `src` to `dst` whose payload is `payload` bytes.
fn udp(fx: &Fixture, ingress: Iface, src: &str, dst: &str, payload: usize) -> Vec<u8> {
    let mut s = fx.spec(ingress, src, dst);
    s.payload_len = payload;
    s.udp().unwrap()
}

/// `n` copies of `frame` through `xdp_vrf` on `ingress`, each with the XDP action `action`.
fn run_n(fx: &mut Fixture, ingress: Iface, frame: &[u8], n: usize, action: XdpAction) {
    let results = fx.run_many(ingress.ifindex, &vec![frame.to_vec(); n]);
    for r in results {
        assert_eq!(
            action_name(r.action),
            action_name(action),
            "frame on {}: {}",
            ingress.name,
            hex(frame)
        );
    }
}

#[test]
fn stats_and_metrics_count_exactly_the_frames_the_program_decided() {
    let mut fx = Fixture::new();
    fx.typed_route(RED_TABLE, "10.66.0.0/16", RouteKind::Blackhole);
    let (r0, r2, b0) = (fx.r0, fx.r2, fx.b0);

    // Red: 7 forwarded (6 from r0, 1 from r2), 3 without a route, 2 into a blackhole; blue: 5
    // forwarded and 4 IPv6 without a route. Sizes differ per kind so that bytes tell them apart.
    let fwd = udp(&fx, r0, RED_SRC4, RED_REMOTE4, 100);
    let fwd_r2 = udp(&fx, r2, RED_SRC4, RED_REMOTE4, 150);
    let no_route = udp(&fx, r0, RED_SRC4, "10.99.0.1", 200);
    let blackhole = udp(&fx, r0, RED_SRC4, "10.66.0.1", 300);
    let blue_fwd = udp(&fx, b0, BLUE_SRC4, BLUE_REMOTE4, 50);
    let blue_no_route6 = udp(&fx, b0, BLUE_SRC6, "fd00:99::1", 10);
    run_n(&mut fx, r0, &fwd, 6, XDP_REDIRECT);
    run_n(&mut fx, r2, &fwd_r2, 1, XDP_REDIRECT);
    run_n(&mut fx, r0, &no_route, 3, XDP_PASS);
    run_n(&mut fx, r0, &blackhole, 2, XDP_DROP);
    run_n(&mut fx, b0, &blue_fwd, 5, XDP_REDIRECT);
    run_n(&mut fx, b0, &blue_no_route6, 4, XDP_PASS);
    let len = |f: &Vec<u8>| f.len() as u64;

    let all = stats::Options {
        vrf: None,
        interfaces: true,
    };
    let report: Report = fx
        .ns
        .run_in(|| stats::collect(&fx.dp.maps, &all))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let names: Vec<&str> = report.vrfs.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["blue", "red"], "active VRFs only, by name");

    let red = &report.vrfs[1];
    let t = &red.totals;
    assert_eq!(red.table, RED_TABLE);
    let red_fwd_bytes = 6 * len(&fwd) + len(&fwd_r2);
    assert_eq!(
        (t.rx_packets, t.rx_bytes),
        (12, red_fwd_bytes + 3 * len(&no_route) + 2 * len(&blackhole))
    );
    assert_eq!((t.forwarded_packets, t.forwarded_bytes), (7, red_fwd_bytes));
    assert_eq!((t.passed_packets, t.passed_bytes), (3, 3 * len(&no_route)));
    assert_eq!(
        (t.dropped_packets, t.dropped_bytes),
        (2, 2 * len(&blackhole))
    );
    for (reason, c) in t.reasons.iter() {
        let want = match reason {
            Reason::Forwarded => (7, red_fwd_bytes),
            Reason::PassNoRoute => (3, 3 * len(&no_route)),
            Reason::DropBlackhole => (2, 2 * len(&blackhole)),
            _ => (0, 0),
        };
        assert_eq!((c.packets, c.bytes), want, "red {}", reason.name());
    }
    let members = red.interfaces.as_ref().expect("--interfaces");
    let by_name: BTreeMap<&str, &stats::InterfaceStats> =
        members.iter().map(|m| (m.name.as_str(), m)).collect();
    assert_eq!(
        by_name.keys().copied().collect::<Vec<_>>(),
        ["r0", "r1", "r2", "r3"]
    );
    let r0s = &by_name["r0"].totals;
    assert_eq!(
        (
            r0s.rx_packets,
            r0s.forwarded_packets,
            r0s.passed_packets,
            r0s.dropped_packets
        ),
        (11, 6, 3, 2)
    );
    assert_eq!(r0s.forwarded_bytes, 6 * len(&fwd));
    let r2s = &by_name["r2"].totals;
    assert_eq!((r2s.rx_packets, r2s.forwarded_bytes), (1, len(&fwd_r2)));
    assert_eq!(
        by_name["r1"].totals.rx_packets, 0,
        "r1 forwarded out, received nothing"
    );

    let blue = &report.vrfs[0];
    assert_eq!(blue.totals.forwarded_packets, 5);
    assert_eq!(blue.totals.forwarded_bytes, 5 * len(&blue_fwd));
    assert_eq!(blue.totals.reasons.get(Reason::PassNoRoute).packets, 4);
    assert_eq!(blue.totals.passed_bytes, 4 * len(&blue_no_route6));
    assert_eq!(blue.totals.dropped_packets, 0);

    // The JSON `vrfctl stats --json` prints.
    let json = serde_json::to_value(&report).unwrap();
    let red_json = vrf(&json, "red");
    assert_eq!(red_json["table"], RED_TABLE);
    assert_eq!(red_json["rx_packets"], 12);
    assert_eq!(red_json["forwarded_packets"], 7);
    assert_eq!(red_json["passed_packets"], 3);
    assert_eq!(red_json["dropped_packets"], 2);
    assert_eq!(red_json["dropped_bytes"], 2 * len(&blackhole));
    assert_eq!(
        nonzero_reasons(red_json),
        BTreeMap::from([
            ("blackhole".to_string(), 2),
            ("forwarded".to_string(), 7),
            ("no_route".to_string(), 3)
        ])
    );
    assert_eq!(member(red_json, "r0")["forwarded_packets"], 6);

    // The exporter's rendering of the same maps.
    let text = fx
        .ns
        .run_in(|| export::render(&fx.dp.maps, &DaemonMetrics::default()))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let m = Exposition::new(text);
    fn red_at(reason: &str) -> [(&str, &str); 3] {
        [("vrf", "red"), ("reason", reason), ("direction", "ingress")]
    }
    assert_eq!(m.get("vrf_xdp_vrf_packets_total", &red_at("forwarded")), 7);
    assert_eq!(m.get("vrf_xdp_vrf_packets_total", &red_at("no_route")), 3);
    assert_eq!(m.get("vrf_xdp_vrf_packets_total", &red_at("blackhole")), 2);
    assert_eq!(
        m.get("vrf_xdp_vrf_bytes_total", &red_at("forwarded")),
        red_fwd_bytes
    );
    assert_eq!(
        m.get("vrf_xdp_vrf_bytes_total", &red_at("blackhole")),
        2 * len(&blackhole)
    );
    assert_eq!(
        m.get(
            "vrf_xdp_vrf_packets_total",
            &[
                ("vrf", "red"),
                ("reason", "blackhole"),
                ("action", "drop"),
                ("direction", "ingress")
            ]
        ),
        2,
        "a blackhole is a drop"
    );
    assert_eq!(
        m.get(
            "vrf_xdp_vrf_rx_packets_total",
            &[("vrf", "red"), ("direction", "ingress")]
        ),
        12
    );
    assert_eq!(
        m.get(
            "vrf_xdp_vrf_packets_total",
            &[
                ("vrf", "blue"),
                ("reason", "no_route"),
                ("direction", "ingress")
            ]
        ),
        4
    );
    assert_eq!(
        m.get(
            "vrf_xdp_interface_packets_total",
            &[("interface", "r0"), ("action", "pass")]
        ),
        3
    );
    assert_eq!(
        m.get(
            "vrf_xdp_interface_packets_total",
            &[("interface", "r2"), ("action", "forward")]
        ),
        1
    );
    assert_eq!(
        m.get(
            "vrf_xdp_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1
    );
    assert_eq!(m.get("vrf_xdp_resyncs_total", &[]), 0);
    assert_metrics_match(&m, &json);

    // A VRF that is gone disappears from both.
    fx.update_vrf(BLUE, |v| v.flags = 0);
    let report = fx.ns.run_in(|| stats::collect(&fx.dp.maps, &all)).unwrap();
    assert_eq!(
        report
            .vrfs
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        ["red"]
    );
    let m = Exposition::new(
        fx.ns
            .run_in(|| export::render(&fx.dp.maps, &DaemonMetrics::default()))
            .unwrap(),
    );
    assert!(!m.mentions("vrf", "blue"), "blue is gone:\n{}", m.text);
    assert_eq!(m.get("vrf_xdp_vrf_packets_total", &red_at("forwarded")), 7);

    // `--vrf` picks one; an unknown name is an error that says so.
    let one = stats::Options {
        vrf: Some("nosuch".into()),
        interfaces: false,
    };
    let err = fx
        .ns
        .run_in(|| stats::collect(&fx.dp.maps, &one))
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("no VRF named \"nosuch\""),
        "{err:#}"
    );
}

// =============================================================================================
// Process level.

const PINGS4: u32 = 5;
const PINGS6: u32 = 3;
/// ICMP echo with ping's default 56 bytes of data, as an Ethernet frame.
const PING4_FRAME: u64 = 14 + 20 + 8 + 56;
const PING6_FRAME: u64 = 14 + 40 + 8 + 56;
const UDP_PAYLOAD: usize = 100;
const UDP4_FRAME: u64 = 14 + 20 + 8 + UDP_PAYLOAD as u64;
const BLACKHOLED: u64 = 4;
const UNREACHABLE: u64 = 3;
const FOLLOW: Duration = Duration::from_secs(2);

/// Where vrfd serves its metrics (it logs the address it bound).
fn metrics_addr(vrfd: &Vrfd<'_>) -> SocketAddr {
    let log = vrfd.log();
    json_log_lines(&log)
        .iter()
        .find(|l| log_message(l).is_some_and(|m| m.starts_with("serving metrics")))
        .and_then(|l| l["fields"]["address"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no `serving metrics` line with an address in:\n{log}"))
}

/// `GET PATH` on vrfd's metrics address from inside its namespace: (status line, headers, body).
fn http_get(ns: &NetNs, addr: SocketAddr, path: &str) -> (String, String, String) {
    ns.run_in(|| {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not HTTP: {resp:?}"));
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (status.to_string(), headers.to_lowercase(), body.to_string())
    })
}

fn scrape(ns: &NetNs, addr: SocketAddr) -> Exposition {
    let (status, headers, body) = http_get(ns, addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(
        headers.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{headers}"
    );
    Exposition::new(body)
}

fn stats_json(vrfd: &Vrfd<'_>) -> Value {
    vrfd.vrfctl_json(&["stats", "--interfaces", "--json"])
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// `vrfctl stats --json` and `/metrics` read at one moment: host noise (ND, MLD) may land
/// between two reads, so read JSON, metrics, JSON until both JSON reads are equal; the metrics
/// read between them then saw the same counters.
fn consistent_read(vrfd: &Vrfd<'_>, ns: &NetNs, addr: SocketAddr) -> (Value, Exposition) {
    for _ in 0..20 {
        let before = stats_json(vrfd);
        let m = scrape(ns, addr);
        if stats_json(vrfd) == before {
            return (before, m);
        }
    }
    panic!("the counters never stood still for one vrfctl + /metrics read");
}

/// Polls `f` every 20 ms until it returns true, for at most `timeout`.
fn await_true(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `count` UDP datagrams of `UDP_PAYLOAD` bytes from `ns` to `dst` port 9.
fn send_udp(ns: &NetNs, dst: &str, count: u64) {
    let dst: SocketAddr = format!("{dst}:9").parse().unwrap();
    ns.run_in(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..count {
            s.send_to(&[0x5a; UDP_PAYLOAD], dst).unwrap();
        }
    });
}

fn ping_all(topo: &Topology, vrf: &str, v6: bool, count: u32) {
    let r = ping(topo.host(vrf, 0), topo.host_addr(vrf, 1, v6), count).unwrap();
    assert!(r.all_received(), "{vrf} ping A→B (v6 {v6}): {r:?}");
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v:#}"))
}

#[test]
fn vrfctl_stats_and_metrics_agree_exactly_with_the_traffic_sent() {
    let t0 = Instant::now();
    let prefix = "st_vrfd";
    let topo = TopologySpec::two_vrfs_identical()
        .with_prefix(prefix)
        .built_for_xdp();
    let router = topo.router();
    let vrfd = Vrfd::start_with(
        router,
        &topology_config(&topo),
        &["--metrics", "127.0.0.1:0"],
    )
    .unwrap_or_else(|e| panic!("starting vrfd: {e:#}"));
    let addr = metrics_addr(&vrfd);
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    // Fresh VRFs count nothing forwarded yet.
    let fresh = stats_json(&vrfd);
    for name in ["red", "blue"] {
        assert_eq!(u(vrf(&fresh, name), "forwarded_packets"), 0, "{fresh:#}");
    }

    // Known traffic: pings in red (both families) and blue, UDP into a blackhole and into
    // red's `unreachable default`.
    router
        .ip(&["route", "add", "blackhole", "10.66.0.0/16", "table", "110"])
        .unwrap();
    await_true("vrfd mirrors the blackhole route", FOLLOW, || {
        vrfd.maps()
            .unwrap()
            .routes()
            .unwrap()
            .iter()
            .any(|(t, p, r)| {
                *t == 110
                    && p.to_string() == "10.66.0.0/16"
                    && r.kind == RouteKind::Blackhole as u16
            })
    });
    ping_all(&topo, "red", false, PINGS4);
    ping_all(&topo, "red", true, PINGS6);
    ping_all(&topo, "blue", false, 2);
    send_udp(topo.host("red", 0), "10.66.0.1", BLACKHOLED);
    send_udp(topo.host("red", 0), "10.99.0.1", UNREACHABLE);

    let (json, m) = consistent_read(&vrfd, router, addr);
    eprintln!("vrfctl stats --interfaces --json:\n{json:#}");
    assert_metrics_match(&m, &json);

    let red = vrf(&json, "red");
    let fwd = u64::from(PINGS4 + PINGS6);
    let fwd_bytes = u64::from(PINGS4) * PING4_FRAME + u64::from(PINGS6) * PING6_FRAME;
    assert_eq!(u(red, "table"), 110);
    assert_eq!(
        u(red, "forwarded_packets"),
        2 * fwd,
        "each ping: request and reply"
    );
    assert_eq!(u(red, "forwarded_bytes"), 2 * fwd_bytes);
    assert_eq!(red["reasons"]["blackhole"], BLACKHOLED);
    assert_eq!(red["reasons"]["unreachable"], UNREACHABLE);
    assert_eq!(u(red, "dropped_packets"), BLACKHOLED);
    assert_eq!(u(red, "dropped_bytes"), BLACKHOLED * UDP4_FRAME);
    for (name, forwarded, blackholed) in [("red0", fwd, BLACKHOLED), ("red1", fwd, 0)] {
        let mm = member(red, name);
        assert_eq!(u(mm, "forwarded_packets"), forwarded, "{name}: {mm:#}");
        assert_eq!(u(mm, "forwarded_bytes"), fwd_bytes, "{name}");
        assert_eq!(mm["reasons"]["blackhole"], blackholed, "{name}");
        assert_eq!(mm["up"], true);
    }
    let blue = vrf(&json, "blue");
    assert_eq!(u(blue, "forwarded_packets"), 4);
    assert_eq!(u(blue, "forwarded_bytes"), 4 * PING4_FRAME);
    assert_eq!(u(blue, "dropped_packets"), 0);
    assert_eq!(blue["reasons"]["unreachable"], 0);
    assert_eq!(u(member(blue, "blue0"), "forwarded_packets"), 2);
    assert_eq!(u(member(blue, "blue1"), "forwarded_packets"), 2);
    // Every packet is counted once under rx and once under its reason.
    for v in [red, blue] {
        let sum: u64 = v["reasons"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(sum, u(v, "rx_packets"), "{v:#}");
    }
    // vrfd's own metrics.
    assert!(
        m.get("vrf_xdp_sync_events_total", &[("kind", "route")]) >= 1,
        "the blackhole route"
    );
    assert_eq!(m.get("vrf_xdp_resyncs_total", &[]), 0);
    assert!(m.get("vrf_xdp_vrf_routes", &[("vrf", "red"), ("family", "ipv4")]) >= 3);
    assert_eq!(m.get("vrf_xdp_vrf_degraded", &[("vrf", "red")]), 0);
    assert!(m.get("vrf_xdp_vrf_neighbours", &[("vrf", "red")]) >= 4);
    assert_eq!(m.get("vrf_xdp_build_info", &[]), 1);
    let (status, _, _) = http_get(router, addr, "/nothing");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // The table, per member, and one VRF.
    let out = vrfd.vrfctl(&["stats", "--interfaces"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    eprintln!("vrfctl stats --interfaces:\n{table}");
    for line in [
        "red ",
        "blue ",
        "  red0 ",
        "  red1 ",
        "  blue0 ",
        "  reasons: ",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(line)),
            "{line:?} in\n{table}"
        );
    }
    assert!(table.contains("blackhole 4"), "{table}");
    let only_red = vrfd
        .vrfctl_json(&["stats", "--vrf", "red", "--json"])
        .unwrap();
    let names: Vec<&str> = only_red["vrfs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["red"]);
    assert!(
        only_red["vrfs"][0].get("interfaces").is_none(),
        "no --interfaces"
    );
    let out = vrfd.vrfctl(&["stats", "--vrf", "nosuch"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no VRF named \"nosuch\""));

    // --watch redraws until SIGINT, then exits 0.
    let vrfctl = tests::bin_path("vrfctl");
    let mut watch = router
        .spawn([
            vrfctl.as_os_str(),
            "--pin-path".as_ref(),
            vrfd.pin_path().as_os_str(),
            "stats".as_ref(),
            "--interfaces".as_ref(),
            "--watch".as_ref(),
            "0.2".as_ref(),
        ])
        .unwrap();
    watch
        .wait_for_log(
            |l| l.matches("over the last").count() >= 2,
            Duration::from_secs(5),
        )
        .unwrap();
    watch.signal(libc::SIGINT).unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = watch.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "vrfctl --watch ignored SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let screen = watch.log();
    assert!(
        status.success(),
        "vrfctl stats --watch after SIGINT: {status}\n{screen}"
    );
    assert!(
        screen.contains("\x1b[H\x1b[2J") && screen.contains("packets/s"),
        "{screen:?}"
    );
    assert!(screen.contains("  red1 "), "{screen}");
    drop(watch);

    // A member going down, leaving the VRF and coming back keeps its counters (and its VRF's),
    // and goes on counting. Members are declared by name: renamed, red1 leaves red.
    let red1_up = |j: &Value| -> Option<bool> {
        vrf(j, "red")["interfaces"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == "red1")?["up"]
            .as_bool()
    };
    router.ip(&["link", "set", "red1", "down"]).unwrap();
    await_true("vrfctl stats shows red1 down", FOLLOW, || {
        red1_up(&stats_json(&vrfd)) == Some(false)
    });
    let down = stats_json(&vrfd);
    assert_eq!(
        u(vrf(&down, "red"), "forwarded_packets"),
        2 * fwd,
        "{down:#}"
    );
    assert_eq!(
        u(member(vrf(&down, "red"), "red1"), "forwarded_packets"),
        fwd
    );
    router
        .ip(&["link", "set", "red1", "name", "st_away"])
        .unwrap();
    await_true("red1 leaves red", FOLLOW, || {
        let j = stats_json(&vrfd);
        vrf(&j, "red")["interfaces"].as_array().unwrap().len() == 1
    });
    let left = stats_json(&vrfd);
    assert_eq!(
        u(vrf(&left, "red"), "forwarded_packets"),
        2 * fwd,
        "{left:#}"
    );
    assert_eq!(
        u(member(vrf(&left, "red"), "red0"), "forwarded_packets"),
        fwd
    );
    router
        .ip(&["link", "set", "st_away", "name", "red1"])
        .unwrap();
    router.ip(&["link", "set", "red1", "up"]).unwrap();
    topo.restore_member("red", 1);
    let red1 = topo.member("red", 1);
    await_true("red1 up with its neighbour mirrored", FOLLOW, || {
        let maps = vrfd.maps().unwrap();
        red1_up(&stats_json(&vrfd)) == Some(true)
            && maps
                .neighbour(red1.ifindex, red1.host4().into())
                .unwrap()
                .is_some()
            && maps.routes().unwrap().iter().any(|(t, p, r)| {
                *t == 110 && p.to_string() == "10.0.2.0/24" && r.kind == RouteKind::Unicast as u16
            })
    });
    ping_all(&topo, "red", false, PINGS4);
    let (json, m) = consistent_read(&vrfd, router, addr);
    assert_metrics_match(&m, &json);
    let red = vrf(&json, "red");
    let again = u64::from(PINGS4);
    assert_eq!(u(red, "forwarded_packets"), 2 * fwd + 2 * again, "{json:#}");
    assert_eq!(u(member(red, "red0"), "forwarded_packets"), fwd + again);
    assert_eq!(u(member(red, "red1"), "forwarded_packets"), fwd + again);
    assert_eq!(red["reasons"]["blackhole"], BLACKHOLED, "nothing reset");

    // Without vrfd: a clear message and exit status 1.
    let pin_path = vrfd.pin_path().to_path_buf();
    vrfd.stop()
        .unwrap_or_else(|e| panic!("stopping vrfd: {e:#}"));
    let never = tests::daemon::unique_pin_path().unwrap();
    for pin in [pin_path.as_path(), never.as_path()] {
        for args in [
            vec!["stats"],
            vec!["stats", "--json"],
            vec!["stats", "--interfaces", "--watch", "1"],
        ] {
            let out = vrfctl_in(router, pin, &args).unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let what = format!("vrfctl --pin-path {} {}", pin.display(), args.join(" "));
            assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
            assert!(out.stdout.is_empty(), "{what} printed {:?}", out.stdout);
            assert!(
                stderr.starts_with("vrfctl: no vrfd is running with pin path ")
                    && stderr.lines().count() == 1,
                "{what}: {stderr:?}"
            );
        }
    }

    drop(topo);
    assert!(
        list_own_netns(prefix).unwrap().is_empty(),
        "namespaces left behind"
    );
    eprintln!("total: {:?}", t0.elapsed());
}
