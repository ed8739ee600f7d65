//! What vrfctl reads from a running vrfd's pins: VRFs, members, and the program's own answer
//! for a packet. Shared by `vrfctl show` and `vrfctl lookup` (and the tests).
use std::{ffi::CStr, net::IpAddr, path::Path};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;
use vrf_common::{prog_names, Vrf, LINK_MEMBER, MAX_VRFS, VRF_ACTIVE, VRF_DEGRADED};

use crate::{
    dataplane::{PinnedExplain, XDP_DROP, XDP_PASS, XDP_REDIRECT},
    maps::Maps,
    packet::FrameSpec,
};

/// Where vrfd pins its maps unless told otherwise.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/vrf-xdp";

/// The maps of the vrfd that pinned them under `dir`, or a message saying none runs there.
pub fn open(dir: &Path) -> Result<Maps> {
    require_running(dir)?;
    Maps::from_pins(dir)
}

fn require_running(dir: &Path) -> Result<()> {
    if !dir.join(prog_names::XDP_VRF_EXPLAIN).exists() {
        bail!(
            "no vrfd is running with pin path {} (start vrfd, or pass --pin-path)",
            dir.display()
        );
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct VrfReport {
    pub name: String,
    pub table: u32,
    #[serde(skip)]
    pub slot: u32,
    /// "device" for a kernel VRF, "declared" for one from the config.
    pub kind: &'static str,
    pub members: Vec<MemberReport>,
    pub routes4: u32,
    pub routes6: u32,
    pub neighbours: u32,
    /// Some or all of the VRF's traffic goes to the kernel (a map overflowed, or a reason below).
    pub degraded: bool,
    /// Why the kernel decides the VRF's IPv4 / IPv6 traffic ("netfilter", "ipsec", "rule").
    pub kernel4: Vec<&'static str>,
    pub kernel6: Vec<&'static str>,
    /// Netfilter is bypassed for this VRF by the configuration.
    pub netfilter_bypass: bool,
}

/// The per-family kernel reasons a VRF entry carries, by the names `vrfctl show` prints.
fn kernel_reasons(flags: u32, v6: bool) -> Vec<&'static str> {
    use vrf_common::{
        VRF_IPSEC4, VRF_IPSEC6, VRF_LOCAL_MARKED4, VRF_LOCAL_MARKED6, VRF_LOCAL_RULE4,
        VRF_LOCAL_RULE6, VRF_NETFILTER4, VRF_NETFILTER6, VRF_RULE4, VRF_RULE6,
    };
    // "host rule": the host's own traffic (tc egress) goes to the kernel; "host marked rule":
    // only its marked packets do.
    let bits = if v6 {
        [
            (VRF_NETFILTER6, "netfilter"),
            (VRF_IPSEC6, "ipsec"),
            (VRF_RULE6, "rule"),
            (VRF_LOCAL_RULE6, "host rule"),
            (VRF_LOCAL_MARKED6, "host marked rule"),
        ]
    } else {
        [
            (VRF_NETFILTER4, "netfilter"),
            (VRF_IPSEC4, "ipsec"),
            (VRF_RULE4, "rule"),
            (VRF_LOCAL_RULE4, "host rule"),
            (VRF_LOCAL_MARKED4, "host marked rule"),
        ]
    };
    bits.iter()
        .filter(|(b, _)| flags & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

#[derive(Debug, Serialize)]
pub struct MemberReport {
    pub name: String,
    pub ifindex: u32,
    pub up: bool,
    #[serde(skip)]
    pub stats_slot: u32,
    /// Why the kernel, not XDP, gets this member's frames, when a link flag says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// A bond's slaves whose frames XDP serves for it (backup slaves are the kernel's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

/// A member whose frames arrive on a trunk that may strip VLAN tags: XDP cannot tell its frames
/// from the trunk's, and reading the stripped tag (`bpf_xdp_metadata_rx_vlan_tag`) needs a
/// device-bound program aya 0.14 cannot load.
fn tags_hidden_reason(
    maps: &Maps,
    links: &[(u32, vrf_common::Link)],
    member: u32,
) -> Option<String> {
    use vrf_common::{LINK_TAGS_HIDDEN, LINK_VLAN};
    let hidden = |i: u32| {
        links
            .iter()
            .any(|(j, l)| *j == i && l.flags & LINK_TAGS_HIDDEN != 0)
    };
    let flags = links.iter().find(|(i, _)| *i == member)?.1.flags;
    let trunk = if flags & LINK_VLAN != 0 {
        maps.vlan_ports.get(&member, 0).ok()?.parent
    } else {
        member
    };
    hidden(trunk).then(|| {
        let name = ifname(trunk).unwrap_or_else(|| format!("if{trunk}"));
        format!("vlan tags may be stripped on {name} (rx-vlan-offload, or a veth member trunk)")
    })
}

/// Every active VRF with its members.
pub fn vrfs(maps: &Maps) -> Result<Vec<VrfReport>> {
    let links = maps.links()?;
    // Untagged ports (bond slaves) by the member they stand for.
    let mut ports: Vec<(u32, u32)> = maps
        .ports
        .iter()
        .filter_map(|e| e.ok())
        .filter(|(k, _)| k.vid == 0)
        .map(|(k, member)| (member, k.ifindex))
        .collect();
    ports.sort_unstable();
    let mut out = Vec::new();
    for slot in 0..MAX_VRFS {
        let v: Vrf = maps.vrf(slot)?;
        if v.flags & VRF_ACTIVE == 0 {
            continue;
        }
        let mut members: Vec<MemberReport> = links
            .iter()
            .filter(|(_, l)| l.flags & LINK_MEMBER != 0 && l.vrf == slot)
            .map(|(i, l)| MemberReport {
                name: ifname(*i).unwrap_or_else(|| format!("if{i}")),
                ifindex: *i,
                up: l.flags & vrf_common::LINK_UP != 0,
                stats_slot: l.stats_slot,
                kernel: tags_hidden_reason(maps, &links, *i),
                ports: ports
                    .iter()
                    .filter(|(m, _)| m == i)
                    .map(|(_, p)| ifname(*p).unwrap_or_else(|| format!("if{p}")))
                    .collect(),
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        out.push(VrfReport {
            name: cstr(&v.name),
            table: v.table,
            slot,
            kind: if v.ifindex != 0 { "device" } else { "declared" },
            members,
            routes4: v.routes4,
            routes6: v.routes6,
            neighbours: v.neighbours,
            degraded: v.flags & (VRF_DEGRADED | vrf_common::VRF_KERNEL4 | vrf_common::VRF_KERNEL6)
                != 0,
            kernel4: kernel_reasons(v.flags, false),
            kernel6: kernel_reasons(v.flags, true),
            netfilter_bypass: v.flags & vrf_common::VRF_NETFILTER_BYPASS != 0,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The data plane's answer for one packet, as `vrfctl lookup --json` prints it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct LookupReport {
    pub action: &'static str,
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oif: Option<String>,
    /// The next router, when the route has a gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// The address whose MAC the frame is sent to (the gateway, or the destination itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub neighbour: Option<IpAddr>,
    pub vrf: String,
    pub iif: String,
}

/// Run the loaded program on a UDP packet from `src` to `dst` arriving on a member of `vrf`
/// (`iif`, or its first member), and report what it did.
pub fn lookup(
    dir: &Path,
    vrf: &str,
    iif: Option<&str>,
    src: Option<IpAddr>,
    dst: IpAddr,
) -> Result<LookupReport> {
    require_running(dir)?;
    let mut explain = PinnedExplain::open(dir)?;
    let report = vrfs(&explain.maps)?
        .into_iter()
        .find(|v| v.name == vrf)
        .ok_or_else(|| anyhow!("no VRF named {vrf:?} (vrfctl show lists them)"))?;
    let member = match iif {
        Some(name) => report
            .members
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| anyhow!("{name:?} is not a member of VRF {vrf:?}"))?,
        None => report
            .members
            .first()
            .ok_or_else(|| anyhow!("VRF {vrf:?} has no members"))?,
    };
    let link = explain
        .maps
        .link(member.ifindex)?
        .ok_or_else(|| anyhow!("member {} vanished", member.name))?;
    let src = src.unwrap_or(match dst {
        // Documentation addresses: not martian, so the answer is about the destination.
        IpAddr::V4(_) => "198.51.100.1".parse()?,
        IpAddr::V6(_) => "2001:db8::1".parse()?,
    });
    let mut spec = FrameSpec::new(src, dst);
    spec.dst_mac = link.mac;
    let frame = spec.udp()?;
    let e = explain.explain(member.ifindex, &frame).with_context(|| {
        format!(
            "running the data plane on a packet to {dst} from {}",
            member.name
        )
    })?;
    let action = match e.action {
        XDP_REDIRECT => "forward",
        XDP_PASS => "pass",
        XDP_DROP => "drop",
        other => bail!("the program returned XDP action {other}"),
    };
    Ok(LookupReport {
        action,
        reason: e.reason.name(),
        oif: e.oif.map(|i| ifname(i).unwrap_or_else(|| format!("if{i}"))),
        gateway: e.neighbour.filter(|n| *n != dst),
        neighbour: e.neighbour,
        vrf: vrf.to_string(),
        iif: member.name.clone(),
    })
}

/// An interface's name in the calling thread's network namespace.
pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf is IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}
