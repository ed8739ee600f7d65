//! Links and addresses inside a [`NetNs`], via `ip -n NS ...` and `ethtool`.

use anyhow::{bail, Context, Result};

use crate::netns::NetNs;

/// Creates a veth pair: `name_a` in `ns_a`, its peer `name_b` directly in `ns_b`
/// (`ip -n A link add name_a type veth peer name name_b netns B`). Both ends stay down.
pub fn veth_pair(ns_a: &NetNs, name_a: &str, ns_b: &NetNs, name_b: &str) -> Result<()> {
    check_ifname(name_a)?;
    check_ifname(name_b)?;
    ns_a.ip(&[
        "link",
        "add",
        "name",
        name_a,
        "type",
        "veth",
        "peer",
        "name",
        name_b,
        "netns",
        ns_b.name(),
    ])?;
    Ok(())
}

fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 15
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        bail!("invalid interface name {name:?} (1..=15 bytes, no '/', ':' or whitespace)");
    }
    Ok(())
}

/// `ip link set IF up`.
pub fn set_up(ns: &NetNs, ifname: &str) -> Result<()> {
    ns.ip(&["link", "set", "dev", ifname, "up"])?;
    Ok(())
}

/// `ip link set IF down`.
pub fn set_down(ns: &NetNs, ifname: &str) -> Result<()> {
    ns.ip(&["link", "set", "dev", ifname, "down"])?;
    Ok(())
}

/// `ip addr add CIDR dev IF [extra_flags...]`; the family follows from `cidr`.
/// `extra_flags` e.g. `&["noprefixroute"]`, `&["nodad"]` (IPv6), `&["nodad", "noprefixroute"]`.
pub fn add_addr(ns: &NetNs, ifname: &str, cidr: &str, extra_flags: &[&str]) -> Result<()> {
    let mut args = vec!["addr", "add", cidr, "dev", ifname];
    args.extend_from_slice(extra_flags);
    ns.ip(&args)?;
    Ok(())
}

/// `ip link set IF address MAC`.
pub fn set_mac(ns: &NetNs, ifname: &str, mac: [u8; 6]) -> Result<()> {
    ns.ip(&["link", "set", "dev", ifname, "address", &mac_to_string(mac)])?;
    Ok(())
}

/// `ip link set IF mtu MTU`.
pub fn set_mtu(ns: &NetNs, ifname: &str, mtu: u32) -> Result<()> {
    ns.ip(&["link", "set", "dev", ifname, "mtu", &mtu.to_string()])?;
    Ok(())
}

/// `ethtool -K IF gro on|off` inside the namespace. GRO on a veth end lets frames that XDP
/// redirects into its peer be delivered (see ENVIRONMENT.md).
pub fn set_gro(ns: &NetNs, ifname: &str, on: bool) -> Result<()> {
    ns.exec([
        "ethtool",
        "-K",
        ifname,
        "gro",
        if on { "on" } else { "off" },
    ])?;
    Ok(())
}

/// The parsed `ip -j link show dev IF` object.
pub fn link_json(ns: &NetNs, ifname: &str) -> Result<serde_json::Value> {
    let out = ns.ip(&["-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("parse `ip -j link show dev {ifname}` output: {out}"))?;
    v.as_array()
        .and_then(|a| a.first())
        .cloned()
        .with_context(|| format!("no link {ifname} in netns {}", ns.name()))
}

/// Interface index of `ifname` inside `ns`.
pub fn ifindex(ns: &NetNs, ifname: &str) -> Result<u32> {
    let v = link_json(ns, ifname)?;
    let idx = v["ifindex"]
        .as_u64()
        .with_context(|| format!("no ifindex in {v}"))?;
    Ok(u32::try_from(idx)?)
}

/// MAC address of `ifname` inside `ns`.
pub fn mac(ns: &NetNs, ifname: &str) -> Result<[u8; 6]> {
    let v = link_json(ns, ifname)?;
    let s = v["address"]
        .as_str()
        .with_context(|| format!("no address in {v}"))?;
    parse_mac(s)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("bad MAC {s:?}");
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        m[i] = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {s:?}"))?;
    }
    Ok(m)
}

/// Formats `aa:bb:cc:dd:ee:ff`.
pub fn mac_to_string(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// `ip neigh replace ADDR lladdr MAC dev IF nud permanent` (family from `addr`).
pub fn add_permanent_neigh(ns: &NetNs, ifname: &str, addr: &str, mac: [u8; 6]) -> Result<()> {
    ns.ip(&[
        "neigh",
        "replace",
        addr,
        "lladdr",
        &mac_to_string(mac),
        "dev",
        ifname,
        "nud",
        "permanent",
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_roundtrip() {
        let m = parse_mac("02:0a:ff:00:10:9b").unwrap();
        assert_eq!(m, [2, 10, 255, 0, 16, 155]);
        assert_eq!(mac_to_string(m), "02:0a:ff:00:10:9b");
        assert!(parse_mac("02:0a:ff:00:10").is_err());
    }
}
