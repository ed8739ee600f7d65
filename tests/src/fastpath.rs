//! Programs a loaded [`DataPlane`] straight from a [`Topology`], through the loader library's
//! typed map writers (no vrfd): what the daemon would mirror from the kernel for the emulated
//! VRFs, written by hand so the fast path can be tested on its own.
//!
//! For VRF number `v` of the topology (slot `v + 1`; slot 0 is left unused so a link that
//! wrongly carries a zeroed VRF field hits an inactive slot) and each of its members:
//! - `VRFS[slot]`: `VRF_ACTIVE`, the table, the name;
//! - `LINKS[member]`: up, member, IPv4 and IPv6 forwarding on, the VRF slot, a stats slot of its
//!   own, the member's MTU and the router-side MAC; the member is a `TX_PORTS` redirect target;
//! - the table's routes as the kernel holds them: each member subnet (v4 and v6) as a connected
//!   unicast route through a nexthop group of one path out of that member, the router's own
//!   addresses as local routes, and the `unreachable default` (v4 and v6);
//! - each host's addresses as neighbours on the member, with the host's MAC (the topology
//!   installs the same entries, permanent, in the kernel).
//!
//! TX_PORTS resolves ifindexes in the caller's network namespace, and XDP attaches there too:
//! both are done on a thread inside the router namespace.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{ensure, Context, Result};
use ipnet::IpNet;
use vrf_common::{
    Counter, Counters, Direction, Link, Reason, Route, RouteKind, Vrf as VrfEntry, LINK_FWD4,
    LINK_FWD6, LINK_MEMBER, LINK_UP, VRF_ACTIVE,
};
use vrf_user::dataplane::{AttachedMode, DataPlane, XdpAttachMode};

use crate::link;
use crate::netns::NetNs;
use crate::topology::{Member, Nth, Topology, HOST_IFNAME};

/// What [`program`] wrote, for the assertions of a test.
#[derive(Clone, Debug, Default)]
pub struct Programmed {
    /// VRF name → slot.
    pub slots: BTreeMap<String, u32>,
    /// Member ifindex (router namespace) → stats slot.
    pub stats_slots: BTreeMap<u32, u32>,
    /// Member ifindex → nexthop group id of its connected routes.
    pub groups: BTreeMap<u32, u32>,
}

impl Programmed {
    /// The slot of VRF `name`; panics if the topology has no such VRF.
    pub fn slot(&self, name: &str) -> u32 {
        *self
            .slots
            .get(name)
            .unwrap_or_else(|| panic!("no VRF {name:?} was programmed"))
    }
}

/// The VRF slot [`program`] gives VRF number `index` of the topology.
pub fn slot_of_index(index: usize) -> u32 {
    u32::try_from(index + 1).expect("VRF index fits u32")
}

/// The NUL-padded name field of a `Vrf` entry (cut to 15 bytes).
fn vrf_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let bytes = name.as_bytes();
    let n = bytes.len().min(15);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// L3 MTU of `ifname` in `ns`.
pub fn link_mtu(ns: &NetNs, ifname: &str) -> Result<u32> {
    let v = link::link_json(ns, ifname)?;
    let mtu = v["mtu"]
        .as_u64()
        .with_context(|| format!("no mtu in {v}"))?;
    Ok(u32::try_from(mtu)?)
}

/// Whether `ip link` shows an XDP program on `ifname` in `ns`.
pub fn xdp_attached(ns: &NetNs, ifname: &str) -> Result<bool> {
    let v = link::link_json(ns, ifname)?;
    Ok(v.get("xdp").is_some_and(|x| !x.is_null()))
}

fn host_prefix(addr: IpAddr) -> IpNet {
    IpNet::from(addr)
}

fn program_member(
    dp: &mut DataPlane,
    topo: &Topology,
    m: &Member,
    slot: u32,
    stats_slot: u32,
    group: u32,
) -> Result<()> {
    let mtu = link_mtu(topo.router(), &m.ifname)?;
    dp.maps.set_link(
        m.ifindex,
        &Link {
            vrf: slot,
            stats_slot,
            mtu,
            mac: m.router_mac,
            flags: LINK_UP | LINK_MEMBER | LINK_FWD4 | LINK_FWD6,
            mtu6: mtu,
        },
    )?;
    dp.maps.reset_link_counters(stats_slot)?;
    dp.maps.add_tx_port(m.ifindex)?;
    dp.maps.set_nexthop_group(
        group,
        &vrf_user::writer::nexthop_group(&[crate::dataplane::nexthop(m.ifindex, None)])?,
    )?;
    let connected = Route {
        kind: RouteKind::Unicast as u16,
        mtu: 0,
        nexthop: group,
    };
    let local = Route {
        kind: RouteKind::Local as u16,
        mtu: 0,
        nexthop: 0,
    };
    // The subnet, the router's own address (.1) and the host's neighbour entry (.2).
    for net in [m.subnet4.map(IpNet::V4), m.subnet6.map(IpNet::V6)]
        .into_iter()
        .flatten()
    {
        dp.maps.insert_route(m.table, net, &connected)?;
        dp.maps
            .insert_route(m.table, host_prefix(net.nth(1)), &local)?;
        dp.maps.set_neighbour(m.ifindex, net.nth(2), m.host_mac)?;
    }
    Ok(())
}

fn program_here(dp: &mut DataPlane, topo: &Topology) -> Result<Programmed> {
    let mut out = Programmed::default();
    let unreachable = Route {
        kind: RouteKind::Unreachable as u16,
        mtu: 0,
        nexthop: 0,
    };
    let mut stats_slot = 0u32;
    let mut group = 0u32;
    for (i, v) in topo.vrfs().iter().enumerate() {
        let slot = slot_of_index(i);
        dp.maps.set_vrf(
            slot,
            &VrfEntry {
                table: v.table,
                flags: VRF_ACTIVE,
                ifindex: 0,
                routes4: 0,
                routes6: 0,
                neighbours: 0,
                name: vrf_name(&v.name),
            },
        )?;
        dp.maps.reset_vrf_counters(slot)?;
        dp.maps
            .insert_route(v.table, "0.0.0.0/0".parse()?, &unreachable)?;
        dp.maps
            .insert_route(v.table, "::/0".parse()?, &unreachable)?;
        out.slots.insert(v.name.clone(), slot);
        for m in &v.members {
            stats_slot += 1;
            group += 1;
            program_member(dp, topo, m, slot, stats_slot, group)
                .with_context(|| format!("programming member {} of VRF {}", m.ifname, v.name))?;
            out.stats_slots.insert(m.ifindex, stats_slot);
            out.groups.insert(m.ifindex, group);
        }
    }
    Ok(out)
}

/// Fills `dp`'s maps for every VRF and member of `topo` (see the module documentation). Runs in
/// the router namespace, where the members' ifindexes mean something to TX_PORTS.
pub fn program(dp: &mut DataPlane, topo: &Topology) -> Result<Programmed> {
    topo.router().run_in(|| program_here(dp, topo))
}

/// Attaches the fast path natively to every member of `topo`, inside the router namespace, and
/// checks that the kernel agrees (`ip link` shows the program on each member).
pub fn attach_members(dp: &mut DataPlane, topo: &Topology) -> Result<()> {
    topo.router().run_in(|| -> Result<()> {
        for m in topo.members() {
            let mode = dp
                .attach(m.ifindex, XdpAttachMode::Native)
                .with_context(|| format!("attaching XDP natively to {}", m.ifname))?;
            ensure!(
                mode == AttachedMode::Native,
                "{} attached in {mode} mode, not native",
                m.ifname
            );
        }
        Ok(())
    })?;
    for m in topo.members() {
        ensure!(
            xdp_attached(topo.router(), &m.ifname)?,
            "ip link does not show XDP on {} after attach",
            m.ifname
        );
    }
    Ok(())
}

/// Turns TX checksum offload off on every host's veth end, so that the hosts put complete
/// TCP/UDP checksums in their packets.
///
/// Why: with offload on, a host's veth hands its peer TCP/UDP packets as CHECKSUM_PARTIAL skbs
/// whose checksum field holds only the pseudo-header sum, to be finished by "hardware". The kernel
/// forwarding path keeps that state with the skb, but XDP sees bare frames: a frame redirected by
/// XDP into another veth becomes a fresh skb with an unfinished checksum, which the receiving
/// host drops (`UdpInCsumErrors`, `TcpInCsumErrors`; ICMP, always checksummed in software, still
/// gets through). Frames from a real NIC carry finished checksums, so this is a property of
/// veth test topologies (like GRO on the receiving peer, see ENVIRONMENT.md), not of the data
/// plane. Known from xdp-project/xdp-tutorial#160 and #357.
pub fn complete_host_checksums(topo: &Topology) -> Result<()> {
    for m in topo.members() {
        m.host
            .exec(["ethtool", "-K", HOST_IFNAME, "tx", "off"])
            .with_context(|| format!("TX checksum offload off in {}", m.host.name()))?;
    }
    Ok(())
}

/// Checksum and header error counters of the hosts (`IpInHdrErrors`, `UdpInCsumErrors`, …),
/// summed over every host of `topo`: what a host drops because a frame arrived damaged.
pub fn host_receive_errors(topo: &Topology) -> Result<BTreeMap<String, u64>> {
    const NAMES: [&str; 8] = [
        "IpInHdrErrors",
        "IpExtInCsumErrors",
        "Ip6InHdrErrors",
        "IcmpInCsumErrors",
        "Icmp6InCsumErrors",
        "TcpInCsumErrors",
        "UdpInCsumErrors",
        "Udp6InCsumErrors",
    ];
    let mut out: BTreeMap<String, u64> = NAMES.iter().map(|n| (n.to_string(), 0)).collect();
    for m in topo.members() {
        let c = crate::nstat::counters(&m.host)?;
        for n in NAMES {
            *out.get_mut(n).expect("listed") += c.get(n).copied().unwrap_or(0);
        }
    }
    Ok(out)
}

/// Loads a data plane, programs it from `topo` and attaches it to every member (after
/// [`complete_host_checksums`]).
pub fn load_and_attach(topo: &Topology) -> Result<(DataPlane, Programmed)> {
    complete_host_checksums(topo)?;
    let mut dp = DataPlane::load().context("loading the data plane")?;
    let programmed = program(&mut dp, topo)?;
    attach_members(&mut dp, topo)?;
    Ok((dp, programmed))
}

/// One reason's counter of VRF `slot` at member ingress.
pub fn vrf_counter(dp: &DataPlane, slot: u32, reason: Reason) -> Result<Counter> {
    Ok(dp.maps.vrf_counters(slot, Direction::Ingress)?.by_reason[reason as usize])
}

/// Every VRF slot's ingress counters.
pub fn ingress_counters(dp: &DataPlane, p: &Programmed) -> Result<BTreeMap<String, Counters>> {
    p.slots
        .iter()
        .map(|(name, &slot)| {
            Ok((
                name.clone(),
                dp.maps.vrf_counters(slot, Direction::Ingress)?,
            ))
        })
        .collect()
}

/// `reason=packets/bytes` for every non-zero reason, for failure messages.
pub fn describe_counters(c: &Counters) -> String {
    let parts: Vec<String> = Reason::ALL
        .iter()
        .zip(c.by_reason.iter())
        .filter(|(_, v)| v.packets != 0)
        .map(|(r, v)| format!("{}={}p/{}B", r.name(), v.packets, v.bytes))
        .collect();
    if parts.is_empty() {
        "(all zero)".into()
    } else {
        parts.join(" ")
    }
}

/// The difference `after - before`, reason by reason.
pub fn counters_delta(before: &Counters, after: &Counters) -> Counters {
    let mut d = *after;
    for (x, b) in d.by_reason.iter_mut().zip(before.by_reason.iter()) {
        x.packets = x.packets.saturating_sub(b.packets);
        x.bytes = x.bytes.saturating_sub(b.bytes);
    }
    d
}
