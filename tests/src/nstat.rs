//! Kernel SNMP counters of a namespace, named the way `nstat` names them (`IpForwDatagrams`,
//! `Ip6OutForwDatagrams`, `TcpExtTCPTimeouts`, ...). Absolute values: take two readings and
//! subtract.
//!
//! Read from `/proc/thread-self/net/{snmp,snmp6,netstat}` on a thread inside the namespace
//! (`/proc/net` would show the process's main-thread namespace instead).

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::netns::NetNs;

/// Parses the `/proc/net/snmp` / `/proc/net/netstat` format: pairs of lines
/// `Ip: Forwarding DefaultTTL ...` / `Ip: 1 64 ...`, into `IpForwarding`, `IpDefaultTTL`, ...
/// (negative values such as `IpExtOutOctets`-style wraps are skipped).
fn parse_paired(text: &str, out: &mut BTreeMap<String, u64>) {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((p1, n)), Some((p2, v))) = (names.split_once(':'), values.split_once(':')) else {
            continue;
        };
        if p1 != p2 {
            continue;
        }
        for (name, val) in n.split_whitespace().zip(v.split_whitespace()) {
            if let Ok(val) = val.parse::<u64>() {
                out.insert(format!("{p1}{name}"), val);
            }
        }
    }
}

/// Parses `/proc/net/snmp6`: `Ip6InReceives   123` per line.
fn parse_flat(text: &str, out: &mut BTreeMap<String, u64>) {
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let Ok(v) = v.parse::<u64>() {
                out.insert(k.to_string(), v);
            }
        }
    }
}

/// All counters of `/proc/net/snmp`, `/proc/net/snmp6` and `/proc/net/netstat` in `ns`.
pub fn counters(ns: &NetNs) -> Result<BTreeMap<String, u64>> {
    let texts = ns.run_in(|| -> Result<[String; 3]> {
        let rd = |f: &str| {
            let p = format!("/proc/thread-self/net/{f}");
            std::fs::read_to_string(&p).with_context(|| format!("read {p}"))
        };
        Ok([rd("snmp")?, rd("snmp6")?, rd("netstat")?])
    })?;
    let mut out = BTreeMap::new();
    parse_paired(&texts[0], &mut out);
    parse_flat(&texts[1], &mut out);
    parse_paired(&texts[2], &mut out);
    Ok(out)
}

/// One counter (nstat name), e.g. `counter(ns, "IpForwDatagrams")`.
pub fn counter(ns: &NetNs, name: &str) -> Result<u64> {
    counters(ns)?
        .get(name)
        .copied()
        .with_context(|| format!("no counter {name} in netns {}", ns.name()))
}

/// `(IpForwDatagrams, Ip6OutForwDatagrams)`: how many IPv4 / IPv6 packets the *kernel*
/// forwarded in `ns` so far (absolute values).
pub fn forwarded_datagrams(ns: &NetNs) -> Result<(u64, u64)> {
    let c = counters(ns)?;
    let get = |k: &str| {
        c.get(k)
            .copied()
            .with_context(|| format!("no counter {k} in netns {}", ns.name()))
    };
    Ok((get("IpForwDatagrams")?, get("Ip6OutForwDatagrams")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let snmp = "Ip: Forwarding DefaultTTL InReceives ForwDatagrams\nIp: 1 64 10 7\n\
                    Icmp: InMsgs OutRateLimitHost\nIcmp: 3 -1\n";
        let mut m = BTreeMap::new();
        parse_paired(snmp, &mut m);
        assert_eq!(m["IpForwDatagrams"], 7);
        assert_eq!(m["IcmpInMsgs"], 3);
        assert!(!m.contains_key("IcmpOutRateLimitHost"));
        parse_flat("Ip6InReceives   5\nIp6OutForwDatagrams 9\n", &mut m);
        assert_eq!(m["Ip6OutForwDatagrams"], 9);
    }
}
