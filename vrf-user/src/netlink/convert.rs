//! Pure conversions from netlink-packet-route messages to the [`crate::model`] types.
//!
//! Every function looks at one parsed message and nothing else: no socket, no state. `None`
//! means "not something vrfd mirrors" (another address family, a route cache entry, a proxy
//! neighbour, a bridge port notification…), never "could not understand": a message the crate
//! could not parse never reaches these functions (see `codec.rs`).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{
        BondMode, BondPortState, BondXmitHashPolicy, InfoBond, InfoBondPort, InfoData,
        InfoPortData, InfoVlan, InfoVrf, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo,
        LinkMessage, VlanProtocol as NlVlanProtocol, VlanQosMapping,
    },
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage},
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteMetric, RouteNextHop,
        RouteNextHopFlags, RouteVia,
    },
    rule::{RuleAttribute, RuleFlags, RuleMessage},
    AddressFamily, RouteNetlinkMessage,
};

use crate::model::{
    AddrInfo, FwMark, IpFamily, KernelEvent, LinkInfo, NeighInfo, PathInfo, RouteInfo, RouteKind,
    RuleAction, RuleInfo, Vlan, VlanProtocol,
};

/// The netlink family of an [`IpFamily`].
pub fn address_family(family: IpFamily) -> AddressFamily {
    match family {
        IpFamily::V4 => AddressFamily::Inet,
        IpFamily::V6 => AddressFamily::Inet6,
    }
}

fn ip_family(family: AddressFamily) -> Option<IpFamily> {
    match family {
        AddressFamily::Inet => Some(IpFamily::V4),
        AddressFamily::Inet6 => Some(IpFamily::V6),
        _ => None,
    }
}

fn rule_action(action: netlink_packet_route::rule::RuleAction) -> RuleAction {
    use netlink_packet_route::rule::RuleAction as Nl;
    match action {
        Nl::ToTable => RuleAction::ToTable,
        Nl::Goto => RuleAction::Goto,
        Nl::Nop => RuleAction::Nop,
        Nl::Blackhole | Nl::Unreachable | Nl::Prohibit => RuleAction::Verdict,
        other => RuleAction::Other(u8::from(other)),
    }
}

/// The model event for one kernel notification, if vrfd mirrors that kind of object.
///
/// RTM_NEWRULE / RTM_DELRULE become [`KernelEvent::RulesChanged`]; RTM_DELLINK of a real link
/// (family AF_UNSPEC; AF_BRIDGE ones only mean "left the bridge") becomes
/// [`KernelEvent::DelLink`].
pub fn event(msg: &RouteNetlinkMessage) -> Option<KernelEvent> {
    match msg {
        RouteNetlinkMessage::NewLink(m) => link(m).map(KernelEvent::NewLink),
        RouteNetlinkMessage::DelLink(m) => (m.header.interface_family == AddressFamily::Unspec
            && m.header.index != 0)
            .then_some(KernelEvent::DelLink(m.header.index)),
        RouteNetlinkMessage::NewAddress(m) => address(m).map(KernelEvent::NewAddr),
        RouteNetlinkMessage::DelAddress(m) => address(m).map(KernelEvent::DelAddr),
        RouteNetlinkMessage::NewRoute(m) => route(m).map(KernelEvent::NewRoute),
        RouteNetlinkMessage::DelRoute(m) => route(m).map(KernelEvent::DelRoute),
        RouteNetlinkMessage::NewNeighbour(m) => neighbour(m).map(KernelEvent::NewNeigh),
        RouteNetlinkMessage::DelNeighbour(m) => neighbour(m).map(KernelEvent::DelNeigh),
        RouteNetlinkMessage::NewRule(m) | RouteNetlinkMessage::DelRule(m) => {
            is_ip(m.header.family).then_some(KernelEvent::RulesChanged)
        }
        _ => None,
    }
}

fn is_ip(family: AddressFamily) -> bool {
    ip_family(family).is_some()
}

fn mac6(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

/// A link. `None` for messages that do not describe a network interface as such: the
/// AF_BRIDGE (bridge port) variants of RTM_NEWLINK, and messages without a name.
pub fn link(msg: &LinkMessage) -> Option<LinkInfo> {
    if msg.header.interface_family != AddressFamily::Unspec || msg.header.index == 0 {
        return None;
    }
    let mut name = None;
    let mut mac = None;
    let mut mtu = 0;
    let mut master = None;
    let mut kind = None;
    let mut vrf_table = None;
    let mut parent = None;
    let mut other_netns = false;
    let (mut vlan_id, mut vlan_protocol) = (None, VlanProtocol::Dot1Q);
    let mut egress_pcp = false;
    let mut bond_backup = false;
    let (mut bond_mode, mut bond_hash) = (None, BondXmitHashPolicy::Layer2);
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(a) => mac = mac6(a),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::Controller(m) if *m != 0 => master = Some(*m),
            LinkAttribute::Link(l) if *l != 0 => parent = Some(*l),
            LinkAttribute::LinkNetNsId(_) => other_netns = true,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        NlLinkInfo::Kind(k) => kind = Some(k.to_string()),
                        NlLinkInfo::Data(InfoData::Vlan(data)) => {
                            for d in data {
                                match d {
                                    InfoVlan::Id(id) => vlan_id = Some(*id),
                                    InfoVlan::Protocol(NlVlanProtocol::Ieee8021Ad) => {
                                        vlan_protocol = VlanProtocol::Dot1Ad
                                    }
                                    // The kernel dumps only mappings to a non-zero PCP.
                                    InfoVlan::EgressQos(maps) => {
                                        egress_pcp = maps.iter().any(|m| {
                                            matches!(m, VlanQosMapping::Mapping(_, pcp) if *pcp != 0)
                                        })
                                    }
                                    _ => {}
                                }
                            }
                        }
                        NlLinkInfo::Data(InfoData::Bond(data)) => {
                            for d in data {
                                match d {
                                    InfoBond::Mode(m) => bond_mode = Some(*m),
                                    InfoBond::XmitHashPolicy(h) => bond_hash = *h,
                                    _ => {}
                                }
                            }
                        }
                        NlLinkInfo::PortData(InfoPortData::BondPort(data)) => {
                            bond_backup = data.iter().any(|d| {
                                matches!(d, InfoBondPort::BondPortState(BondPortState::Backup))
                            });
                        }
                        NlLinkInfo::Data(InfoData::Vrf(data)) => {
                            for d in data {
                                if let InfoVrf::TableId(t) = d {
                                    vrf_table = Some(*t);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let flags = msg.header.flags;
    Some(LinkInfo {
        ifindex: msg.header.index,
        name: name?,
        mac,
        mtu,
        up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp),
        admin_up: flags.contains(LinkFlags::Up),
        master,
        kind,
        vrf_table,
        // A veth's IFLA_LINK names its peer, in another namespace when IFLA_LINK_NETNSID is set.
        parent: parent.filter(|_| !other_netns),
        vlan: vlan_id.map(|id| Vlan {
            id,
            protocol: vlan_protocol,
            egress_pcp,
        }),
        bond_backup,
        bond_xdp: match bond_mode {
            Some(BondMode::BalanceRr | BondMode::ActiveBackup) => true,
            Some(BondMode::BalanceXor | BondMode::Ieee8023Ad) => !matches!(
                bond_hash,
                BondXmitHashPolicy::Encap23 | BondXmitHashPolicy::Encap34
            ),
            _ => false,
        },
    })
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// What a path's gateway attributes say: `Ok(None)` for no gateway, `Err` for a gateway the
/// model cannot express (MPLS, AF_PACKET via…).
fn gateway_of(attrs: &[RouteAttribute]) -> Result<Option<IpAddr>, &'static str> {
    let mut gw = None;
    for attr in attrs {
        match attr {
            RouteAttribute::Gateway(a) => {
                gw = Some(route_addr(a).ok_or("gateway is not an IP address")?);
            }
            RouteAttribute::Via(RouteVia::Inet(v4)) => gw = Some(IpAddr::V4(*v4)),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => gw = Some(IpAddr::V6(*v6)),
            RouteAttribute::Via(_) => return Err("RTA_VIA of a non-IP family"),
            _ => {}
        }
    }
    Ok(gw)
}

fn has_encap(attrs: &[RouteAttribute]) -> bool {
    attrs.iter().any(|a| {
        matches!(a, RouteAttribute::Encap(_))
            || matches!(a, RouteAttribute::EncapType(t) if u16::from(*t) != 0)
    })
}

fn next_hop(nh: &RouteNextHop) -> Result<PathInfo, &'static str> {
    if has_encap(&nh.attributes) {
        return Err("lightweight tunnel encapsulation (RTA_ENCAP) on a nexthop");
    }
    Ok(PathInfo {
        ifindex: nh.interface_index,
        gateway: gateway_of(&nh.attributes)?,
        weight: u32::from(nh.hops) + 1,
        dead: nh
            .flags
            .intersects(RouteNextHopFlags::Dead | RouteNextHopFlags::Linkdown),
    })
}

/// A route. `None` for other families (MPLS, multicast routing tables) and for route cache
/// entries (RTM_F_CLONED: IPv4 exceptions, IPv6 PMTU / redirect clones), which are no routes.
pub fn route(msg: &RouteMessage) -> Option<RouteInfo> {
    let h = &msg.header;
    let unspecified = match h.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    if h.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let mut unsupported: Option<&'static str> = None;
    let mut flag = |why: &'static str| {
        unsupported.get_or_insert(why);
    };

    let mut table = u32::from(h.table);
    let mut dst = None;
    let mut metric = 0;
    let mut oif = None;
    let mut mtu = None;
    let mut nexthop_id = None;
    let mut multipath = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => match route_addr(a) {
                Some(a) => dst = Some(a),
                None => return None,
            },
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Metrics(metrics) => {
                for m in metrics {
                    if let RouteMetric::Mtu(v) = m {
                        mtu = Some(*v);
                    }
                }
            }
            RouteAttribute::NhId(id) => nexthop_id = Some(*id),
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            RouteAttribute::Encap(_) => flag("lightweight tunnel encapsulation (RTA_ENCAP)"),
            RouteAttribute::EncapType(t) if u16::from(*t) != 0 => {
                flag("lightweight tunnel encapsulation (RTA_ENCAP_TYPE)")
            }
            RouteAttribute::CacheInfo(ci) if ci.expires != 0 => flag("expiring route"),
            RouteAttribute::Expires(e) if *e != 0 => flag("expiring route (RTA_EXPIRES)"),
            _ => {}
        }
    }
    if h.source_prefix_length != 0 {
        flag("source-specific route (RTA_SRC)");
    }
    let prefix = match IpNet::new(dst.unwrap_or(unspecified), h.destination_prefix_length) {
        Ok(p) => p.trunc(),
        Err(_) => return None,
    };

    let mut paths = Vec::new();
    if let Some(hops) = multipath {
        for nh in hops {
            match next_hop(nh) {
                Ok(p) => paths.push(p),
                Err(why) => flag(why),
            }
        }
    } else {
        match gateway_of(&msg.attributes) {
            Ok(gateway) => {
                if oif.is_some() || gateway.is_some() {
                    paths.push(PathInfo {
                        ifindex: oif.unwrap_or(0),
                        gateway,
                        weight: 1,
                        dead: h.flags.intersects(RouteFlags::Dead | RouteFlags::Linkdown),
                    });
                }
            }
            Err(why) => flag(why),
        }
    }

    // A type the data plane has no name for (RTN_XRESOLVE, RTN_UNSPEC) is the kernel's to serve.
    let kind = RouteKind::from_u16(u16::from(u8::from(h.kind))).unwrap_or_else(|| {
        flag("route type the data plane does not model");
        RouteKind::Unicast
    });
    Some(RouteInfo {
        table,
        prefix,
        kind,
        metric,
        tos: h.tos,
        paths,
        mtu,
        nexthop_id,
        unsupported,
    })
}

/// A neighbour entry of AF_INET / AF_INET6. `None` for bridge FDB entries (AF_BRIDGE) and proxy
/// entries (NTF_PROXY), which are not ARP/NDP cache entries.
pub fn neighbour(msg: &NeighbourMessage) -> Option<NeighInfo> {
    if !is_ip(msg.header.family) || msg.header.flags.contains(NeighbourFlags::Proxy) {
        return None;
    }
    let mut addr = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                addr = Some(IpAddr::V4(*a))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                addr = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(l) => mac = mac6(l),
            _ => {}
        }
    }
    Some(NeighInfo {
        ifindex: msg.header.ifindex,
        addr: addr?,
        mac,
        state: u16::from(msg.header.state),
    })
}

/// An interface address. IFA_LOCAL is the local address when present (IPv4, and peer
/// configurations where IFA_ADDRESS is the peer); IFA_ADDRESS otherwise.
pub fn address(msg: &AddressMessage) -> Option<AddrInfo> {
    if !is_ip(msg.header.family) {
        return None;
    }
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    Some(AddrInfo {
        ifindex: msg.header.index,
        addr: local.or(address)?,
        prefix_len: msg.header.prefix_len,
    })
}

/// A policy routing rule of AF_INET / AF_INET6.
pub fn rule(msg: &RuleMessage) -> Option<RuleInfo> {
    let h = &msg.header;
    let mut info = RuleInfo {
        family: ip_family(h.family)?,
        priority: 0,
        table: u32::from(h.table),
        action: rule_action(h.action),
        iif: None,
        oif: None,
        l3mdev: false,
        // "not …" inverts the whole match: conservatively an extra selector.
        has_other_selectors: h.tos != 0
            || h.src_len != 0
            || h.dst_len != 0
            || h.flags.contains(RuleFlags::Invert),
        fwmark: FwMark::default(),
    };
    let mut mask = None;
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::Priority(p) => info.priority = *p,
            RuleAttribute::Table(t) => info.table = *t,
            RuleAttribute::Iifname(n) => info.iif = Some(n.clone()),
            RuleAttribute::Oifname(n) => info.oif = Some(n.clone()),
            RuleAttribute::L3MDev(on) => info.l3mdev = *on,
            RuleAttribute::FwMark(m) => {
                info.fwmark.mark = *m;
                info.has_other_selectors |= *m != 0;
            }
            RuleAttribute::FwMask(m) => {
                mask = Some(*m);
                info.has_other_selectors |= *m != 0;
            }
            RuleAttribute::TunId(id) if *id != 0 => info.has_other_selectors = true,
            RuleAttribute::Source(_)
            | RuleAttribute::Destination(_)
            | RuleAttribute::Realm(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_) => info.has_other_selectors = true,
            // Attributes this crate version does not know (FRA_DSCP, FRA_FLOWLABEL, … on newer
            // kernels) may well be selectors: assume they are.
            RuleAttribute::Other(_) => info.has_other_selectors = true,
            // Goto target, suppress_prefixlength / suppress_ifgroup (post-lookup filters, always
            // reported, -1 when unset), protocol (who installed the rule): not selectors.
            _ => {}
        }
    }
    // A mark without a mask is matched exactly (the kernel's own default).
    info.fwmark.mask = mask.unwrap_or(if info.fwmark.mark != 0 { u32::MAX } else { 0 });
    Some(info)
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::{
        link::InfoKind,
        neighbour::NeighbourState,
        route::{RouteHeader, RouteLwEnCapType, RouteType},
        rule::RuleAction,
    };

    use super::*;
    use crate::model::{NUD_PERMANENT, NUD_REACHABLE};

    const RT_TABLE_COMPAT: u8 = 252;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// Serialises the message with the crate and parses it back, as it would come off the
    /// socket: proves the attributes survive the crate's own encoding (e.g. the nested
    /// RTA_MULTIPATH, which parses with the route's family).
    fn wire(msg: RouteNetlinkMessage) -> RouteNetlinkMessage {
        let mut nl = NetlinkMessage::from(msg);
        nl.finalize();
        let mut buf = vec![0; nl.buffer_len()];
        nl.serialize(&mut buf);
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf)
            .unwrap()
            .payload
        {
            NetlinkPayload::InnerMessage(m) => m,
            other => panic!("{other:?}"),
        }
    }

    /// `m` serialized and parsed again, as the kernel's answer would come.
    fn route_on_the_wire(m: RouteMessage) -> RouteMessage {
        let RouteNetlinkMessage::NewRoute(parsed) = wire(RouteNetlinkMessage::NewRoute(m)) else {
            panic!()
        };
        parsed
    }

    fn route_msg(family: AddressFamily, kind: RouteType) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.kind = kind;
        m
    }

    fn nexthop(ifindex: u32, hops: u8, gw: Ipv4Addr, flags: RouteNextHopFlags) -> RouteNextHop {
        let mut nh = RouteNextHop::default();
        nh.interface_index = ifindex;
        nh.hops = hops;
        nh.flags = flags;
        nh.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        nh
    }

    fn link_msg(index: u32, attrs: Vec<LinkAttribute>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Broadcast;
        m.attributes = attrs;
        m
    }

    #[test]
    fn vrf_link_with_table() {
        let m = link_msg(
            7,
            vec![
                LinkAttribute::IfName("vrf-blue".into()),
                LinkAttribute::Address(vec![2, 0, 0, 0, 0, 7]),
                LinkAttribute::Mtu(65575),
                LinkAttribute::LinkInfo(vec![
                    NlLinkInfo::Kind(InfoKind::Vrf),
                    NlLinkInfo::Data(InfoData::Vrf(vec![InfoVrf::TableId(100_000)])),
                ]),
            ],
        );
        assert_eq!(
            link(&m),
            Some(LinkInfo {
                ifindex: 7,
                name: "vrf-blue".into(),
                mac: Some([2, 0, 0, 0, 0, 7]),
                mtu: 65575,
                up: true,
                admin_up: true,
                master: None,
                kind: Some("vrf".into()),
                vrf_table: Some(100_000),
                parent: None,
                vlan: None,
                bond_backup: false,
                bond_xdp: false,
            })
        );
    }

    #[test]
    fn bond_slave_state_through_the_wire_format() {
        let slave = |state| {
            let m = link_msg(
                11,
                vec![
                    LinkAttribute::IfName("sb".into()),
                    LinkAttribute::Controller(20),
                    LinkAttribute::LinkInfo(vec![
                        NlLinkInfo::Kind(InfoKind::Veth),
                        NlLinkInfo::PortKind(netlink_packet_route::link::InfoPortKind::Bond),
                        NlLinkInfo::PortData(InfoPortData::BondPort(vec![
                            InfoBondPort::BondPortState(state),
                        ])),
                    ]),
                ],
            );
            let RouteNetlinkMessage::NewLink(m) = wire(RouteNetlinkMessage::NewLink(m)) else {
                panic!("not a link message")
            };
            link(&m).unwrap()
        };
        assert!(slave(BondPortState::Backup).bond_backup);
        let active = slave(BondPortState::Active);
        assert!(!active.bond_backup);
        assert_eq!(active.master, Some(20));
    }

    #[test]
    fn a_bond_takes_xdp_frames_only_in_the_modes_the_kernel_transmits_them_in() {
        let bond = |mode, hash| {
            let m = link_msg(
                20,
                vec![
                    LinkAttribute::IfName("bond0".into()),
                    LinkAttribute::LinkInfo(vec![
                        NlLinkInfo::Kind(InfoKind::Bond),
                        NlLinkInfo::Data(InfoData::Bond(vec![
                            InfoBond::Mode(mode),
                            InfoBond::XmitHashPolicy(hash),
                        ])),
                    ]),
                ],
            );
            let RouteNetlinkMessage::NewLink(m) = wire(RouteNetlinkMessage::NewLink(m)) else {
                panic!("not a link message")
            };
            link(&m).unwrap().bond_xdp
        };
        use BondXmitHashPolicy::{Encap34, Layer2, Layer34};
        assert!(bond(BondMode::ActiveBackup, Layer2));
        assert!(bond(BondMode::BalanceRr, Layer2));
        assert!(bond(BondMode::Ieee8023Ad, Layer34));
        assert!(
            !bond(BondMode::Ieee8023Ad, Encap34),
            "encap hash: bond_xdp_check refuses"
        );
        assert!(!bond(BondMode::Broadcast, Layer2));
        assert!(!bond(BondMode::BalanceAlb, Layer2));
    }

    #[test]
    fn vlan_link_with_parent_id_and_protocol() {
        let vlan = |proto| {
            link_msg(
                9,
                vec![
                    LinkAttribute::IfName("r0.100".into()),
                    LinkAttribute::Address(vec![2, 0, 0, 0, 0, 9]),
                    LinkAttribute::Mtu(1500),
                    LinkAttribute::Link(4),
                    LinkAttribute::LinkInfo(vec![
                        NlLinkInfo::Kind(InfoKind::Vlan),
                        NlLinkInfo::Data(InfoData::Vlan(vec![
                            InfoVlan::Id(100),
                            InfoVlan::Protocol(proto),
                        ])),
                    ]),
                ],
            )
        };
        // Through the wire format, as the kernel's bytes arrive.
        let RouteNetlinkMessage::NewLink(m) = wire(RouteNetlinkMessage::NewLink(vlan(
            NlVlanProtocol::Ieee8021Q,
        ))) else {
            panic!("not a link message")
        };
        let l = link(&m).unwrap();
        assert_eq!(l.kind.as_deref(), Some("vlan"));
        assert_eq!(l.parent, Some(4));
        assert_eq!(
            l.vlan,
            Some(Vlan {
                id: 100,
                protocol: VlanProtocol::Dot1Q,
                egress_pcp: false,
            })
        );
        let ad = link(&vlan(NlVlanProtocol::Ieee8021Ad)).unwrap();
        assert_eq!(ad.vlan.map(|v| v.protocol), Some(VlanProtocol::Dot1Ad));
        // A veth's IFLA_LINK is its peer, elsewhere when a netns id comes with it.
        let mut veth = vlan(NlVlanProtocol::Ieee8021Q);
        veth.attributes.push(LinkAttribute::LinkNetNsId(1));
        assert_eq!(link(&veth).unwrap().parent, None);
        // `egress-qos-map 0:3`: the kernel would tag with PCP 3.
        let mut qos = vlan(NlVlanProtocol::Ieee8021Q);
        if let LinkAttribute::LinkInfo(infos) = &mut qos.attributes[4] {
            if let NlLinkInfo::Data(InfoData::Vlan(data)) = &mut infos[1] {
                data.push(InfoVlan::EgressQos(vec![VlanQosMapping::Mapping(0, 3)]));
            }
        }
        let RouteNetlinkMessage::NewLink(qos) = wire(RouteNetlinkMessage::NewLink(qos)) else {
            panic!("not a link message")
        };
        assert!(link(&qos).unwrap().vlan.unwrap().egress_pcp);
    }

    #[test]
    fn member_link_master_and_carrier() {
        let mut m = link_msg(
            3,
            vec![
                LinkAttribute::IfName("eth1".into()),
                LinkAttribute::Address(vec![0xaa, 0xbb, 0xcc, 0, 0, 1]),
                LinkAttribute::Mtu(1500),
                LinkAttribute::Controller(7),
                LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(InfoKind::Other("foo".into()))]),
            ],
        );
        m.header.flags = LinkFlags::Up; // no carrier
        let l = link(&m).unwrap();
        assert_eq!(l.master, Some(7));
        assert_eq!(l.kind.as_deref(), Some("foo"));
        assert_eq!(l.vrf_table, None);
        assert!(!l.up);

        // Not 6 bytes (an IPv6 tunnel's "address"): no MAC.
        let m = link_msg(
            4,
            vec![
                LinkAttribute::IfName("ip6tnl0".into()),
                LinkAttribute::Address(vec![0; 16]),
            ],
        );
        assert_eq!(link(&m).unwrap().mac, None);

        // AF_BRIDGE notifications describe bridge ports, not links; nameless messages are
        // useless.
        let mut m = link_msg(3, vec![LinkAttribute::IfName("eth1".into())]);
        m.header.interface_family = AddressFamily::Bridge;
        assert_eq!(link(&m), None);
        assert!(event(&RouteNetlinkMessage::DelLink(m)).is_none());
        assert_eq!(link(&link_msg(3, vec![])), None);
        assert!(matches!(
            event(&RouteNetlinkMessage::DelLink(link_msg(9, vec![]))),
            Some(KernelEvent::DelLink(9))
        ));
    }

    #[test]
    fn multipath_route_in_a_large_table() {
        let mut m = route_msg(AddressFamily::Inet, RouteType::Unicast);
        m.header.table = RT_TABLE_COMPAT;
        m.header.destination_prefix_length = 24;
        m.attributes = vec![
            RouteAttribute::Table(100_000),
            RouteAttribute::Destination(RouteAddress::Inet(v4("10.9.0.0"))),
            RouteAttribute::Priority(20),
            RouteAttribute::MultiPath(vec![
                nexthop(3, 0, v4("10.1.0.2"), RouteNextHopFlags::empty()),
                nexthop(4, 2, v4("10.2.0.2"), RouteNextHopFlags::Linkdown),
                nexthop(5, 0, v4("10.3.0.2"), RouteNextHopFlags::Onlink),
            ]),
        ];
        let expect = RouteInfo {
            table: 100_000,
            prefix: net("10.9.0.0/24"),
            kind: RouteKind::Unicast,
            metric: 20,
            tos: 0,
            paths: vec![
                PathInfo {
                    ifindex: 3,
                    gateway: Some(v4("10.1.0.2").into()),
                    weight: 1,
                    dead: false,
                },
                PathInfo {
                    ifindex: 4,
                    gateway: Some(v4("10.2.0.2").into()),
                    weight: 3,
                    dead: true,
                },
                PathInfo {
                    ifindex: 5,
                    gateway: Some(v4("10.3.0.2").into()),
                    weight: 1,
                    dead: false,
                },
            ],
            mtu: None,
            nexthop_id: None,
            unsupported: None,
        };
        assert_eq!(route(&m), Some(expect.clone()));
        assert_eq!(route(&route_on_the_wire(m)), Some(expect));
    }

    #[test]
    fn table_attribute_wins_over_header() {
        let mut m = route_msg(AddressFamily::Inet6, RouteType::Unicast);
        m.header.table = 110;
        m.header.destination_prefix_length = 64;
        m.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet6(v6("2001:db8:1::"))),
            RouteAttribute::Table(256),
            RouteAttribute::Oif(2),
            RouteAttribute::Gateway(RouteAddress::Inet6(v6("fe80::1"))),
            RouteAttribute::Priority(1024),
        ];
        let r = route(&m).unwrap();
        assert_eq!(r.table, 256);
        assert_eq!(r.prefix, net("2001:db8:1::/64"));
        assert_eq!(r.metric, 1024);
        assert_eq!(
            r.paths,
            vec![PathInfo {
                ifindex: 2,
                gateway: Some(v6("fe80::1").into()),
                weight: 1,
                dead: false
            }]
        );

        // Without RTA_TABLE the header's 8-bit table is all there is.
        m.attributes
            .retain(|a| !matches!(a, RouteAttribute::Table(_)));
        assert_eq!(route(&m).unwrap().table, 110);
    }

    #[test]
    fn default_blackhole_and_single_path_routes() {
        // Default route: no RTA_DST.
        let mut m = route_msg(AddressFamily::Inet, RouteType::Unicast);
        m.header.tos = 0x10;
        m.header.flags = RouteFlags::Linkdown;
        m.attributes = vec![
            RouteAttribute::Oif(3),
            RouteAttribute::Gateway(RouteAddress::Inet(v4("10.1.0.254"))),
            RouteAttribute::Metrics(vec![RouteMetric::Mtu(1400), RouteMetric::Hoplimit(9)]),
        ];
        let r = route(&m).unwrap();
        assert_eq!(r.prefix, net("0.0.0.0/0"));
        assert_eq!(r.tos, 0x10);
        assert_eq!(r.mtu, Some(1400));
        assert!(r.paths[0].dead);
        assert_eq!(r.id().prefix, net("0.0.0.0/0"));

        // Blackhole: a kind, no path.
        let mut m = route_msg(AddressFamily::Inet6, RouteType::BlackHole);
        m.header.destination_prefix_length = 48;
        m.attributes = vec![RouteAttribute::Destination(RouteAddress::Inet6(v6(
            "2001:db8::",
        )))];
        let r = route(&m).unwrap();
        assert_eq!(r.kind, RouteKind::Blackhole);
        assert!(r.paths.is_empty());
        assert_eq!(r.unsupported, None);

        // Local route.
        let mut m = route_msg(AddressFamily::Inet, RouteType::Local);
        m.header.table = 255;
        m.header.destination_prefix_length = 32;
        m.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet(v4("10.1.0.1"))),
            RouteAttribute::Oif(3),
        ];
        let r = route(&m).unwrap();
        assert_eq!((r.table, r.kind), (255, RouteKind::Local));
        assert_eq!(r.paths[0].gateway, None);
    }

    #[test]
    fn ipv4_via_ipv6_gateway_and_nexthop_object() {
        let mut m = route_msg(AddressFamily::Inet, RouteType::Unicast);
        m.header.destination_prefix_length = 16;
        m.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet(v4("172.16.0.0"))),
            RouteAttribute::Oif(3),
            RouteAttribute::Via(RouteVia::Inet6(v6("fe80::2"))),
            RouteAttribute::NhId(42),
        ];
        let r = route(&m).unwrap();
        assert_eq!(r.paths[0].gateway, Some(v6("fe80::2").into()));
        assert_eq!(r.nexthop_id, Some(42));
        assert_eq!(route(&route_on_the_wire(m)), Some(r));
    }

    #[test]
    fn routes_left_to_the_kernel_or_skipped() {
        // Cache clones are not routes.
        let mut m = route_msg(AddressFamily::Inet6, RouteType::Unicast);
        m.header.flags = RouteFlags::Cloned;
        assert_eq!(route(&m), None);

        // Other families.
        assert_eq!(
            route(&route_msg(AddressFamily::Mpls, RouteType::Unicast)),
            None
        );

        // Source-specific IPv6 route.
        let mut m = route_msg(AddressFamily::Inet6, RouteType::Unicast);
        m.header.source_prefix_length = 64;
        m.attributes = vec![
            RouteAttribute::Source(RouteAddress::Inet6(v6("2001:db8:5::"))),
            RouteAttribute::Oif(2),
        ];
        assert!(route(&m).unwrap().unsupported.unwrap().contains("RTA_SRC"));

        // Lightweight tunnel encapsulation.
        let mut m = route_msg(AddressFamily::Inet, RouteType::Unicast);
        m.attributes = vec![
            RouteAttribute::Oif(2),
            RouteAttribute::EncapType(RouteLwEnCapType::Mpls),
        ];
        assert!(route(&m).unwrap().unsupported.unwrap().contains("encap"));

        // … also on one nexthop of a multipath route.
        let mut nh = nexthop(3, 0, v4("10.1.0.2"), RouteNextHopFlags::empty());
        nh.attributes
            .push(RouteAttribute::EncapType(RouteLwEnCapType::Ip));
        let mut m = route_msg(AddressFamily::Inet, RouteType::Unicast);
        m.attributes = vec![RouteAttribute::MultiPath(vec![
            nh,
            nexthop(4, 0, v4("10.2.0.2"), RouteNextHopFlags::empty()),
        ])];
        let r = route(&m).unwrap();
        assert!(r.unsupported.is_some());
        assert_eq!(r.paths.len(), 1);

        // MPLS via.
        let mut m = route_msg(AddressFamily::Inet, RouteType::Unicast);
        m.attributes = vec![
            RouteAttribute::Oif(2),
            RouteAttribute::Via(RouteVia::Packet(vec![1])),
        ];
        assert!(route(&m).unwrap().unsupported.is_some());
    }

    #[test]
    fn neighbours() {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = 3;
        m.header.state = NeighbourState::Permanent;
        m.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4("10.1.0.2"))),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 2]),
        ];
        let n = neighbour(&m).unwrap();
        assert_eq!(
            n,
            NeighInfo {
                ifindex: 3,
                addr: v4("10.1.0.2").into(),
                mac: Some([2, 0, 0, 0, 0, 2]),
                state: NUD_PERMANENT
            }
        );
        assert!(n.usable());

        let mut m6 = NeighbourMessage::default();
        m6.header.family = AddressFamily::Inet6;
        m6.header.ifindex = 3;
        m6.header.state = NeighbourState::Reachable;
        m6.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6("fe80::2"))),
            NeighbourAttribute::LinkLayerAddress(vec![0; 20]), // InfiniBand: not a MAC
        ];
        let n = neighbour(&m6).unwrap();
        assert_eq!((n.mac, n.state), (None, NUD_REACHABLE));

        let mut proxy = m.clone();
        proxy.header.flags = NeighbourFlags::Proxy;
        assert_eq!(neighbour(&proxy), None);
        let mut fdb = m;
        fdb.header.family = AddressFamily::Bridge;
        assert_eq!(neighbour(&fdb), None);
    }

    #[test]
    fn addresses() {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = 32;
        m.header.index = 4;
        // Point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours.
        m.attributes = vec![
            AddressAttribute::Address(v4("10.0.0.2").into()),
            AddressAttribute::Local(v4("10.0.0.1").into()),
        ];
        assert_eq!(
            address(&m),
            Some(AddrInfo {
                ifindex: 4,
                addr: v4("10.0.0.1").into(),
                prefix_len: 32
            })
        );
        let mut m6 = AddressMessage::default();
        m6.header.family = AddressFamily::Inet6;
        m6.header.prefix_len = 64;
        m6.header.index = 4;
        m6.attributes = vec![AddressAttribute::Address(v6("2001:db8::1").into())];
        assert_eq!(address(&m6).unwrap().addr, IpAddr::from(v6("2001:db8::1")));
        assert!(matches!(
            event(&RouteNetlinkMessage::DelAddress(m6)),
            Some(KernelEvent::DelAddr(_))
        ));
    }

    fn rule_msg(family: AddressFamily, attrs: Vec<RuleAttribute>) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = family;
        m.header.action = RuleAction::ToTable;
        m.attributes = attrs;
        m
    }

    #[test]
    fn rules() {
        let mut m = rule_msg(
            AddressFamily::Inet,
            vec![
                RuleAttribute::Priority(1000),
                RuleAttribute::Iifname("veth0".into()),
                RuleAttribute::Table(100_000),
                RuleAttribute::SuppressPrefixLen(u32::MAX),
                RuleAttribute::SuppressIfGroup(u32::MAX),
            ],
        );
        m.header.table = 0;
        assert_eq!(
            rule(&m),
            Some(RuleInfo {
                family: IpFamily::V4,
                priority: 1000,
                table: 100_000,
                action: crate::model::RuleAction::ToTable,
                iif: Some("veth0".into()),
                oif: None,
                l3mdev: false,
                has_other_selectors: false,
                fwmark: FwMark::default(),
            })
        );

        let mut l3 = rule_msg(AddressFamily::Inet6, vec![RuleAttribute::L3MDev(true)]);
        l3.header.table = 0;
        let r = rule(&l3).unwrap();
        assert!(r.l3mdev && !r.has_other_selectors);
        assert_eq!((r.family, r.priority, r.table), (IpFamily::V6, 0, 0));

        // Header table when there is no FRA_TABLE.
        let mut main = rule_msg(AddressFamily::Inet, vec![RuleAttribute::Priority(32766)]);
        main.header.table = 254;
        assert_eq!(rule(&main).unwrap().table, 254);

        for selectors in [
            vec![RuleAttribute::FwMark(1)],
            vec![RuleAttribute::Source(v4("10.0.0.0").into())],
            vec![
                RuleAttribute::Oifname("x".into()),
                RuleAttribute::IpProtocol(6.into()),
            ],
        ] {
            assert!(
                rule(&rule_msg(AddressFamily::Inet, selectors))
                    .unwrap()
                    .has_other_selectors
            );
        }
        // fwmark as the kernel matches it: a bare mark exactly, a mask as given.
        let mark = |attrs| rule(&rule_msg(AddressFamily::Inet, attrs)).unwrap().fwmark;
        assert_eq!(mark(vec![]), FwMark::default());
        assert_eq!(
            mark(vec![RuleAttribute::FwMark(1)]),
            FwMark {
                mark: 1,
                mask: u32::MAX
            }
        );
        let m = mark(vec![RuleAttribute::FwMark(0), RuleAttribute::FwMask(0xff)]);
        assert!(m.matches(0) && !m.matches(1) && m.matches(0x100));

        let mut tos = rule_msg(AddressFamily::Inet, vec![]);
        tos.header.tos = 0x10;
        assert!(rule(&tos).unwrap().has_other_selectors);
        let mut not = rule_msg(
            AddressFamily::Inet,
            vec![RuleAttribute::Iifname("a".into())],
        );
        not.header.flags = RuleFlags::Invert;
        assert!(rule(&not).unwrap().has_other_selectors);

        assert!(matches!(
            event(&RouteNetlinkMessage::DelRule(main)),
            Some(KernelEvent::RulesChanged)
        ));
        assert_eq!(rule(&rule_msg(AddressFamily::Bridge, vec![])), None);
    }
}
