//! Per-VRF and per-member counters of the data plane, summed over CPUs: what `vrfctl stats` prints
//! and what vrfd's `/metrics` exports. Pure functions over [`Maps`] and [`inspect::vrfs`]; reading
//! only copies the per-CPU arrays out (no locks anywhere near the fast path).
//!
//! The top-level numbers of a VRF are its `Ingress` counters (XDP on its members). Other
//! directions (`VrfEgress`, `MemberTx`) go under `directions` by name, each with the same fields,
//! once a program counts them.
use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr, time::Duration};

use anyhow::{anyhow, Result};
use serde::{ser::SerializeMap, Serialize, Serializer};
use vrf_common::{Action, Counter, Counters, Direction, Reason, NH_GATEWAY, NH_GATEWAY6};

use crate::{
    inspect::{self, VrfReport},
    maps::{addr_from16, Maps},
};

/// What `vrfctl stats --json` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub vrfs: Vec<VrfStats>,
    /// What the data plane forwarded per kernel nexthop (the kernel's own nexthop counters
    /// never see it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nexthops: Vec<NexthopStats>,
}

/// One kernel nexthop's forwarded packets and bytes: a nexthop object (`nhid`) or a path of a
/// route without one, named by where it leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NexthopStats {
    /// The VRF of the nexthop's device; empty for a device in no VRF vrfd serves.
    pub vrf: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nhid: Option<u32>,
    /// None for a directly connected path.
    pub gateway: Option<IpAddr>,
    pub dev: String,
    pub ifindex: u32,
    /// The counter slot (reused once the nexthop is gone).
    pub slot: u32,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VrfStats {
    pub name: String,
    pub table: u32,
    /// Ingress: every packet that arrived on a member while it was one.
    #[serde(flatten)]
    pub totals: Totals,
    /// Directions other than ingress that counted something, by [`Direction::name`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub directions: BTreeMap<&'static str, Totals>,
    /// The members now, each with its own ingress counters (asked for with `--interfaces`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<InterfaceStats>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InterfaceStats {
    pub name: String,
    pub ifindex: u32,
    pub up: bool,
    #[serde(flatten)]
    pub totals: Totals,
}

/// One counter set: every packet is counted under `rx` and under exactly one reason, whose
/// action says whether it was forwarded, passed to the kernel or dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub passed_packets: u64,
    pub passed_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// Packets by reason name (every reason but `rx`, zeros included).
    pub reasons: Reasons,
}

/// Every reason's packets and bytes; serialized as `{"<reason>": packets, ...}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reasons(pub Counters);

impl Reasons {
    pub fn get(&self, reason: Reason) -> Counter {
        self.0.by_reason[reason as usize]
    }

    /// The outcome reasons (all but `rx`) with their counts, in `Reason` order.
    pub fn iter(&self) -> impl Iterator<Item = (Reason, Counter)> + '_ {
        Reason::ALL
            .into_iter()
            .filter(|r| r.action() != Action::None)
            .map(|r| (r, self.get(r)))
    }
}

impl Serialize for Reasons {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(Reason::COUNT - 1))?;
        for (r, c) in self.iter() {
            map.serialize_entry(r.name(), &c.packets)?;
        }
        map.end()
    }
}

impl Totals {
    pub fn from_counters(c: &Counters) -> Totals {
        let reasons = Reasons(*c);
        let action = |a: Action| {
            reasons
                .iter()
                .filter(|(r, _)| r.action() == a)
                .fold(Counter::default(), |t, (_, c)| Counter {
                    packets: t.packets + c.packets,
                    bytes: t.bytes + c.bytes,
                })
        };
        let rx = reasons.get(Reason::Rx);
        let (fwd, pass, drop) = (
            action(Action::Forward),
            action(Action::Pass),
            action(Action::Drop),
        );
        Totals {
            rx_packets: rx.packets,
            rx_bytes: rx.bytes,
            forwarded_packets: fwd.packets,
            forwarded_bytes: fwd.bytes,
            passed_packets: pass.packets,
            passed_bytes: pass.bytes,
            dropped_packets: drop.packets,
            dropped_bytes: drop.bytes,
            reasons,
        }
    }

    /// Packets and bytes of one action (`Action::None`: rx).
    pub fn action(&self, a: Action) -> Counter {
        let (packets, bytes) = match a {
            Action::None => (self.rx_packets, self.rx_bytes),
            Action::Forward => (self.forwarded_packets, self.forwarded_bytes),
            Action::Pass => (self.passed_packets, self.passed_bytes),
            Action::Drop => (self.dropped_packets, self.dropped_bytes),
        };
        Counter { packets, bytes }
    }

    /// What was counted since `earlier` (0 where a counter went back: its slot was reset).
    pub fn since(&self, earlier: &Totals) -> Totals {
        let mut d = Counters::default();
        for (i, c) in d.by_reason.iter_mut().enumerate() {
            let (now, then) = (self.reasons.0.by_reason[i], earlier.reasons.0.by_reason[i]);
            c.packets = now.packets.saturating_sub(then.packets);
            c.bytes = now.bytes.saturating_sub(then.bytes);
        }
        Totals::from_counters(&d)
    }
}

/// Which VRFs and how much detail.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only this VRF (an error when there is none by that name).
    pub vrf: Option<String>,
    /// Break each VRF down per member.
    pub interfaces: bool,
}

/// The counters of every active VRF (or the one asked for) of the data plane behind `maps`.
/// Member names are resolved in the calling thread's network namespace.
pub fn collect(maps: &Maps, opts: &Options) -> Result<Report> {
    let mut vrfs = inspect::vrfs(maps)?;
    if let Some(name) = &opts.vrf {
        vrfs.retain(|v| &v.name == name);
        if vrfs.is_empty() {
            return Err(anyhow!("no VRF named {name:?} (vrfctl show lists them)"));
        }
    }
    let mut nexthops = of_nexthops(maps, &vrfs)?;
    if let Some(name) = &opts.vrf {
        nexthops.retain(|n| &n.vrf == name);
    }
    Ok(Report {
        vrfs: of_vrfs(maps, &vrfs, opts.interfaces)?,
        nexthops,
    })
}

/// Every live per-nexthop counter, its VRF named from `vrfs` (as [`inspect::vrfs`] found them).
pub fn of_nexthops(maps: &Maps, vrfs: &[VrfReport]) -> Result<Vec<NexthopStats>> {
    let links: BTreeMap<u32, u32> = maps.links()?.into_iter().map(|(i, l)| (i, l.vrf)).collect();
    maps.nexthop_slots()?
        .into_iter()
        .map(|(slot, info)| {
            let vrf = links
                .get(&info.ifindex)
                .and_then(|slot| vrfs.iter().find(|v| v.slot == *slot))
                .map(|v| v.name.clone())
                .unwrap_or_default();
            let family = if info.flags & NH_GATEWAY6 != 0 { 6 } else { 4 };
            let c = maps.nexthop_counter(slot)?;
            Ok(NexthopStats {
                vrf,
                nhid: (info.nhid != 0).then_some(info.nhid),
                gateway: (info.flags & NH_GATEWAY != 0)
                    .then(|| addr_from16(family, info.gateway))
                    .flatten(),
                dev: inspect::ifname(info.ifindex).unwrap_or_else(|| info.ifindex.to_string()),
                ifindex: info.ifindex,
                slot,
                packets: c.packets,
                bytes: c.bytes,
            })
        })
        .collect()
}

/// The counters of `vrfs` (as [`inspect::vrfs`] found them), in the same order.
pub fn of_vrfs(maps: &Maps, vrfs: &[VrfReport], interfaces: bool) -> Result<Vec<VrfStats>> {
    vrfs.iter()
        .map(|v| {
            let mut directions = BTreeMap::new();
            for dir in [Direction::VrfEgress, Direction::MemberTx] {
                let t = Totals::from_counters(&maps.vrf_counters(v.slot, dir)?);
                if t.rx_packets != 0 {
                    directions.insert(dir.name(), t);
                }
            }
            let interfaces = if interfaces {
                let members = v.members.iter().map(|m| {
                    Ok(InterfaceStats {
                        name: m.name.clone(),
                        ifindex: m.ifindex,
                        up: m.up,
                        totals: Totals::from_counters(
                            &maps.link_counters(m.stats_slot, Direction::Ingress)?,
                        ),
                    })
                });
                Some(members.collect::<Result<Vec<_>>>()?)
            } else {
                None
            };
            Ok(VrfStats {
                name: v.name.clone(),
                table: v.table,
                totals: Totals::from_counters(&maps.vrf_counters(v.slot, Direction::Ingress)?),
                directions,
                interfaces,
            })
        })
        .collect()
}

// Human-readable output.

/// A count in SI units as `ip -h -s link` prints it: `987`, `12.3k`, `1.2M`.
pub fn human(n: f64) -> String {
    const UNITS: [&str; 6] = ["", "k", "M", "G", "T", "P"];
    let mut v = n;
    let mut u = 0;
    while v >= 999.95 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{}", v.round() as u64)
    } else if v < 99.95 {
        format!("{v:.1}{}", UNITS[u])
    } else {
        format!("{v:.0}{}", UNITS[u])
    }
}

/// Bytes in SI units: `768 B`, `3.4 GB`.
pub fn human_bytes(n: u64) -> String {
    with_unit(human(n as f64), "B")
}

/// A bit rate: `0 bit/s`, `9.6 Gbit/s`.
pub fn human_bits(bits_per_second: f64) -> String {
    with_unit(human(bits_per_second), "bit/s")
}

fn with_unit(n: String, unit: &str) -> String {
    match n.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => format!("{} {}{unit}", &n[..i], &n[i..]),
        None => format!("{n} {unit}"),
    }
}

const NAME_WIDTH: usize = 16;

/// `vrfctl stats`: one row per VRF (and per member with `--interfaces`), then the VRF's
/// non-zero reasons.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let lead = |name: &str, table: &str| format!("{name:<w$} {table:>10}", w = NAME_WIDTH);
    header(
        &mut out,
        [lead("VRF", "TABLE"), lead("", "")],
        16,
        "packets    bytes",
    );
    for v in &report.vrfs {
        counts_row(&mut out, &v.name, &v.table.to_string(), &v.totals);
        for m in v.interfaces.iter().flatten() {
            counts_row(&mut out, &member_name(m), "", &m.totals);
        }
        let reasons: Vec<String> = v
            .totals
            .reasons
            .iter()
            .filter(|(_, c)| c.packets != 0)
            .map(|(r, c)| format!("{} {}", r.name(), human(c.packets as f64)))
            .collect();
        if !reasons.is_empty() {
            let _ = writeln!(out, "  reasons: {}", reasons.join(", "));
        }
        for (dir, t) in &v.directions {
            counts_row(&mut out, &format!("  [{dir}]"), "", t);
        }
    }
    if !report.nexthops.is_empty() {
        out.push_str(&nexthops_table(&report.nexthops));
    }
    out
}

/// The per-nexthop rows of `vrfctl stats`: what the data plane forwarded through each.
pub fn nexthops_table(nexthops: &[NexthopStats]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<12} {:<w$} {:<24} {:<w$} {:>9} {:>9}",
        "NEXTHOP",
        "VRF",
        "GATEWAY",
        "DEV",
        "FORWARDED",
        "BYTES",
        w = NAME_WIDTH
    );
    for n in nexthops {
        let id = n.nhid.map_or("-".to_string(), |i| format!("nhid {i}"));
        let gw = n
            .gateway
            .map_or("(connected)".to_string(), |g| g.to_string());
        let vrf = if n.vrf.is_empty() { "-" } else { &n.vrf };
        let _ = writeln!(
            out,
            "{id:<12} {vrf:<w$} {gw:<24} {:<w$} {:>9} {:>9}",
            n.dev,
            human(n.packets as f64),
            human_bytes(n.bytes),
            w = NAME_WIDTH
        );
    }
    out
}

/// The counts' columns, in both tables: what arrived, then each action.
const COLUMNS: [(Action, &str); 4] = [
    (Action::None, "RX"),
    (Action::Forward, "FORWARDED"),
    (Action::Pass, "PASSED"),
    (Action::Drop, "DROPPED"),
];

/// A table's two header lines: `lead` (the columns before the counts), then each count's title
/// centred on `width`, and `units` under each.
fn header(out: &mut String, lead: [String; 2], width: usize, units: &str) {
    let titles: Vec<String> = COLUMNS
        .iter()
        .map(|(_, t)| format!("{t:^width$}"))
        .collect();
    let titles = format!("{}  {}", lead[0], titles.join("  "));
    let _ = writeln!(out, "{}", titles.trim_end());
    let _ = writeln!(out, "{}  {}", lead[1], [units; 4].join("  "));
}

/// A member's row name: indented under its VRF, marked when down.
fn member_name(m: &InterfaceStats) -> String {
    format!("  {}{}", m.name, if m.up { "" } else { " (down)" })
}

fn counts_row(out: &mut String, name: &str, table: &str, t: &Totals) {
    let cells: Vec<String> = COLUMNS
        .into_iter()
        .map(|(a, _)| {
            let c = t.action(a);
            format!("{:>7} {:>8}", human(c.packets as f64), human_bytes(c.bytes))
        })
        .collect();
    let _ = writeln!(
        out,
        "{name:<w$} {table:>10}  {}",
        cells.join("  "),
        w = NAME_WIDTH
    );
}

/// Rates between two reports taken `elapsed` apart, for `vrfctl stats --watch`. VRFs (and
/// members) are matched by name; one not in `before` has no rate yet and shows `-`.
pub fn rates_table(before: &Report, after: &Report, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut out = String::new();
    let lead = |name: &str| format!("{name:<w$}", w = NAME_WIDTH);
    header(
        &mut out,
        [lead("VRF"), lead("")],
        21,
        "packets/s      bits/s",
    );
    let row = |out: &mut String, name: &str, now: &Totals, then: Option<&Totals>| {
        let cells: Vec<String> = COLUMNS
            .into_iter()
            .map(|(a, _)| match then {
                Some(then) => {
                    let d = now.since(then).action(a);
                    format!(
                        "{:>9} {:>11}",
                        human(d.packets as f64 / secs),
                        human_bits(d.bytes as f64 * 8.0 / secs)
                    )
                }
                None => format!("{:>9} {:>11}", "-", "-"),
            })
            .collect();
        let _ = writeln!(out, "{name:<w$}  {}", cells.join("  "), w = NAME_WIDTH);
    };
    for v in &after.vrfs {
        let prev = before.vrfs.iter().find(|p| p.name == v.name);
        row(&mut out, &v.name, &v.totals, prev.map(|p| &p.totals));
        for m in v.interfaces.iter().flatten() {
            let then = prev
                .and_then(|p| p.interfaces.as_ref())
                .and_then(|ms| ms.iter().find(|x| x.ifindex == m.ifindex))
                .map(|x| &x.totals);
            row(&mut out, &member_name(m), &m.totals, then);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(entries: &[(Reason, u64, u64)]) -> Counters {
        let mut c = Counters::default();
        for (r, p, b) in entries {
            c.by_reason[*r as usize] = Counter {
                packets: *p,
                bytes: *b,
            };
            c.by_reason[Reason::Rx as usize].packets += p;
            c.by_reason[Reason::Rx as usize].bytes += b;
        }
        c
    }

    #[test]
    fn totals_sum_reasons_by_action() {
        let t = Totals::from_counters(&counters(&[
            (Reason::Forwarded, 7, 700),
            (Reason::PassNoRoute, 3, 300),
            (Reason::PassMulticast, 1, 90),
            (Reason::DropBlackhole, 2, 200),
            (Reason::DropChecksum, 1, 60),
        ]));
        assert_eq!((t.rx_packets, t.rx_bytes), (14, 1350));
        assert_eq!((t.forwarded_packets, t.forwarded_bytes), (7, 700));
        assert_eq!((t.passed_packets, t.passed_bytes), (4, 390));
        assert_eq!((t.dropped_packets, t.dropped_bytes), (3, 260));
        assert_eq!(t.reasons.get(Reason::PassNoRoute).bytes, 300);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let t = Totals::from_counters(&counters(&[
            (Reason::Forwarded, 7, 700),
            (Reason::DropBlackhole, 2, 200),
        ]));
        let report = Report {
            vrfs: vec![VrfStats {
                name: "red".into(),
                table: 110,
                totals: t,
                directions: BTreeMap::new(),
                interfaces: None,
            }],
            nexthops: Vec::new(),
        };
        let v = serde_json::to_value(&report).unwrap();
        let red = &v["vrfs"][0];
        assert_eq!(red["name"], "red");
        assert_eq!(red["table"], 110);
        assert_eq!(red["rx_packets"], 9);
        assert_eq!(red["forwarded_bytes"], 700);
        assert_eq!(red["dropped_packets"], 2);
        assert_eq!(red["passed_packets"], 0);
        assert_eq!(red["reasons"]["forwarded"], 7);
        assert_eq!(red["reasons"]["blackhole"], 2);
        assert_eq!(red["reasons"]["no_route"], 0);
        assert!(red["reasons"].get("rx").is_none());
        assert_eq!(red["reasons"].as_object().unwrap().len(), Reason::COUNT - 1);
        assert!(red.get("interfaces").is_none() && red.get("directions").is_none());
    }

    #[test]
    fn since_saturates_on_reset() {
        let a = Totals::from_counters(&counters(&[(Reason::Forwarded, 10, 1000)]));
        let b = Totals::from_counters(&counters(&[(Reason::Forwarded, 4, 400)]));
        assert_eq!(a.since(&b).forwarded_packets, 6);
        assert_eq!(b.since(&a), Totals::default());
    }

    #[test]
    fn the_table_lines_up_under_its_header() {
        let t = |entries: &[(Reason, u64, u64)]| Totals::from_counters(&counters(entries));
        let red0 = t(&[
            (Reason::Forwarded, 8_012, 844_000),
            (Reason::PassUnreachable, 3_204, 426_000),
            (Reason::DropBlackhole, 4_001, 568_000),
        ]);
        let red1 = t(&[
            (Reason::Forwarded, 8_088, 844_000),
            (Reason::PassUnreachable, 2_101, 110_000),
            (Reason::PassMulticast, 2, 220),
        ]);
        let mut red = red0.reasons.0;
        for (c, d) in red.by_reason.iter_mut().zip(red1.reasons.0.by_reason) {
            c.packets += d.packets;
            c.bytes += d.bytes;
        }
        let member = |name: &str, ifindex, totals| InterfaceStats {
            name: name.into(),
            ifindex,
            up: true,
            totals,
        };
        let report = Report {
            vrfs: vec![VrfStats {
                name: "red".into(),
                table: 110,
                totals: Totals::from_counters(&red),
                directions: BTreeMap::new(),
                interfaces: Some(vec![member("red0", 4, red0), member("red1", 5, red1)]),
            }],
            nexthops: Vec::new(),
        };
        let out = table(&report);
        println!("{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[2],
            "red                     110    25.4k   2.8 MB    16.1k   1.7 MB     5.3k   536 kB     4.0k   568 kB"
        );
        assert_eq!(lines[3].trim_start(), "red0                         15.2k   1.8 MB     8.0k   844 kB     3.2k   426 kB     4.0k   568 kB");
        assert_eq!(
            lines[5],
            "  reasons: forwarded 16.1k, multicast 2, unreachable 5.3k, blackhole 4.0k"
        );
        // Each column's header is centred over its packets and bytes.
        let col = |line: &str, word: &str| line.find(word).unwrap();
        assert!(col(lines[0], "FORWARDED") > col(lines[1], "packets"));
        assert!(col(lines[0], "DROPPED") < lines[1].rfind("bytes").unwrap());
    }

    #[test]
    fn rates_are_deltas_over_the_elapsed_time() {
        let report = |fwd: u64| Report {
            vrfs: vec![VrfStats {
                name: "red".into(),
                table: 110,
                totals: Totals::from_counters(&counters(&[(Reason::Forwarded, fwd, fwd * 1000)])),
                directions: BTreeMap::new(),
                interfaces: None,
            }],
            nexthops: Vec::new(),
        };
        let out = rates_table(&report(500), &report(1500), Duration::from_secs(2));
        println!("{out}");
        let row: Vec<&str> = out.lines().nth(2).unwrap().split_whitespace().collect();
        // VRF, then packets/s and bits/s for rx, forwarded, passed, dropped.
        assert_eq!(
            row,
            [
                "red", "500", "4.0", "Mbit/s", "500", "4.0", "Mbit/s", "0", "0", "bit/s", "0", "0",
                "bit/s"
            ]
        );
        let first = rates_table(
            &Report {
                vrfs: vec![],
                nexthops: vec![],
            },
            &report(1),
            Duration::from_secs(2),
        );
        assert!(first.lines().nth(2).unwrap().ends_with('-'), "{first}");
    }

    #[test]
    fn nexthop_rows_name_the_nexthop_and_its_counts() {
        let n = |nhid, gateway: Option<&str>, dev: &str, packets| NexthopStats {
            vrf: "red".into(),
            nhid,
            gateway: gateway.map(|g| g.parse().unwrap()),
            dev: dev.into(),
            ifindex: 3,
            slot: 1,
            packets,
            bytes: packets * 142,
        };
        let rows = [
            n(Some(31), Some("10.0.2.2"), "red1", 198),
            n(None, None, "red0", 12_000),
        ];
        let out = nexthops_table(&rows);
        println!("{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].starts_with("NEXTHOP      VRF"), "{out}");
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["nhid", "31", "red", "10.0.2.2", "red1", "198", "28.1", "kB"]
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["-", "red", "(connected)", "red0", "12.0k", "1.7", "MB"]
        );
        let v = serde_json::to_value(&rows[1]).unwrap();
        assert!(v.get("nhid").is_none() && v["gateway"].is_null(), "{v}");
        assert_eq!(
            serde_json::to_value(&rows[0]).unwrap()["gateway"],
            "10.0.2.2"
        );
    }

    #[test]
    fn human_units_read_like_ip_s_link() {
        assert_eq!(human(0.0), "0");
        assert_eq!(human(999.0), "999");
        assert_eq!(human(1234.0), "1.2k");
        assert_eq!(human(98_234.0), "98.2k");
        assert_eq!(human(123_456.0), "123k");
        assert_eq!(human(1_200_000.0), "1.2M");
        assert_eq!(human_bytes(768), "768 B");
        assert_eq!(human_bytes(3_400_000_000), "3.4 GB");
        assert_eq!(human_bits(9.6e9), "9.6 Gbit/s");
        assert_eq!(human_bits(0.0), "0 bit/s");
    }
}
