//! The numbers the demo judges by: the data plane's own (`vrfctl stats --json`), the router
//! kernel's (how many packets *it* forwarded: the independent witness), and what the hosts sent.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::Value;

use super::proc::{in_ns, run};

/// One VRF's XDP counters (ingress on its members), from `vrfctl stats --json`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Xdp {
    pub rx: u64,
    pub forwarded: u64,
    pub forwarded_bytes: u64,
    pub passed: u64,
    pub dropped: u64,
    /// Packets by reason (`forwarded`, `multicast`, `no_route`, …).
    pub reasons: BTreeMap<String, u64>,
}

impl Xdp {
    /// What was counted since `earlier`.
    pub fn since(&self, earlier: &Xdp) -> Xdp {
        Xdp {
            rx: self.rx.saturating_sub(earlier.rx),
            forwarded: self.forwarded.saturating_sub(earlier.forwarded),
            forwarded_bytes: self.forwarded_bytes.saturating_sub(earlier.forwarded_bytes),
            passed: self.passed.saturating_sub(earlier.passed),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            reasons: self
                .reasons
                .iter()
                .map(|(k, v)| {
                    let before = earlier.reasons.get(k).copied().unwrap_or(0);
                    (k.clone(), v.saturating_sub(before))
                })
                .collect(),
        }
    }

    /// The non-zero reasons other than forwarding, e.g. `multicast 4`.
    pub fn not_forwarded(&self) -> Vec<(String, u64)> {
        self.reasons
            .iter()
            .filter(|(k, v)| **v != 0 && k.as_str() != "forwarded")
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Parses `vrfctl stats --json`: `{"vrfs": [{"name", "rx_packets", "forwarded_packets",
/// "forwarded_bytes", "passed_packets", "dropped_packets", "reasons": {REASON: packets}}]}`.
pub fn parse_vrfctl_stats(json: &str) -> Result<BTreeMap<String, Xdp>> {
    let v: Value = serde_json::from_str(json).context("`vrfctl stats --json` is not JSON")?;
    let vrfs = v["vrfs"]
        .as_array()
        .context("`vrfctl stats --json` has no \"vrfs\" array")?;
    let mut out = BTreeMap::new();
    for vrf in vrfs {
        let name = vrf["name"]
            .as_str()
            .with_context(|| format!("a VRF without a name in `vrfctl stats --json`: {vrf}"))?;
        let num = |key: &str| {
            vrf[key]
                .as_u64()
                .with_context(|| format!("VRF {name}: no \"{key}\" in `vrfctl stats --json`"))
        };
        let reasons = vrf["reasons"]
            .as_object()
            .map(|r| {
                r.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            name.to_owned(),
            Xdp {
                rx: num("rx_packets")?,
                forwarded: num("forwarded_packets")?,
                forwarded_bytes: num("forwarded_bytes")?,
                passed: num("passed_packets")?,
                dropped: num("dropped_packets")?,
                reasons,
            },
        );
    }
    Ok(out)
}

/// The kernel's SNMP counters in namespace `ns` (`IpForwDatagrams`, `Ip6OutMcastPkts`,
/// `IpExtOutMcastPkts`, …, as nstat names them), read by a `cat` inside it.
pub fn snmp(ns: &str) -> Result<BTreeMap<String, u64>> {
    let text =
        run(in_ns(ns, "cat").args(["/proc/net/snmp", "/proc/net/snmp6", "/proc/net/netstat"]))?;
    Ok(parse_snmp(&text))
}

/// Both formats, concatenated: pairs of lines `Ip: Forwarding …` / `Ip: 1 …` (snmp, netstat)
/// and lines `Ip6InReceives 5` (snmp6).
fn parse_snmp(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if let (Some((prefix, names)), Some((prefix2, values))) = (
            lines[i].split_once(':'),
            lines.get(i + 1).and_then(|l| l.split_once(':')),
        ) {
            if prefix == prefix2 {
                for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                    if let Ok(v) = v.parse() {
                        out.insert(format!("{prefix}{n}"), v);
                    }
                }
                i += 2;
                continue;
            }
        }
        let mut it = lines[i].split_whitespace();
        if let (Some(k), Some(Ok(v))) = (it.next(), it.next().map(str::parse)) {
            out.insert(k.to_owned(), v);
        }
        i += 1;
    }
    out
}

/// How many packets the router's kernel forwarded (IPv4 + IPv6) so far.
pub fn kernel_forwarded(router: &str) -> Result<u64> {
    let c = snmp(router)?;
    let get = |k: &str| {
        c.get(k)
            .copied()
            .with_context(|| format!("no {k} in the router's /proc/net counters"))
    };
    Ok(get("IpForwDatagrams")? + get("Ip6OutForwDatagrams")?)
}

/// Unicast packets a host has sent so far: frames out of its `eth0` minus the multicast ones
/// (IPv6 MLD reports, which the router's kernel handles and nobody forwards).
pub fn host_unicast_sent(ns: &str) -> Result<u64> {
    let out = run(in_ns(ns, "ip").args(["-s", "-j", "link", "show", "dev", "eth0"]))?;
    let v: Value = serde_json::from_str(&out).context("`ip -s -j link` output")?;
    let frames = v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .with_context(|| format!("no tx packets in `ip -s -j link show dev eth0`: {out}"))?;
    let c = snmp(ns)?;
    let mcast = ["IpExtOutMcastPkts", "Ip6OutMcastPkts"]
        .iter()
        .map(|k| c.get(*k).copied().unwrap_or(0))
        .sum::<u64>();
    Ok(frames.saturating_sub(mcast))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_formats() {
        let text = "Ip: Forwarding DefaultTTL ForwDatagrams\nIp: 1 64 7\n\
                    Ip6InReceives                   \t5\nIp6OutForwDatagrams 9\n\
                    IpExt: InNoRoutes OutMcastPkts\nIpExt: 0 3\n";
        let c = parse_snmp(text);
        assert_eq!(c["IpForwDatagrams"], 7);
        assert_eq!(c["Ip6InReceives"], 5);
        assert_eq!(c["Ip6OutForwDatagrams"], 9);
        assert_eq!(c["IpExtOutMcastPkts"], 3);
    }

    #[test]
    fn vrfctl_stats_json() {
        let json = r#"{"vrfs": [{"name": "red", "table": 110, "rx_packets": 12,
            "rx_bytes": 1200, "forwarded_packets": 10, "forwarded_bytes": 1000,
            "passed_packets": 2, "passed_bytes": 200, "dropped_packets": 0,
            "dropped_bytes": 0, "reasons": {"forwarded": 10, "multicast": 2}}]}"#;
        let s = parse_vrfctl_stats(json).unwrap();
        let red = &s["red"];
        assert_eq!((red.rx, red.forwarded, red.passed), (12, 10, 2));
        assert_eq!(red.not_forwarded(), vec![("multicast".to_owned(), 2)]);
        let zero = Xdp::default();
        assert_eq!(red.since(red).forwarded, 0);
        assert_eq!(red.since(&zero), *red);
        assert!(parse_vrfctl_stats(r#"{"vrfs": [{"name": "x"}]}"#).is_err());
    }
}
