//! The one forwarding decision, made the kernel's way (ip_rcv_core → ip_route_input_slow →
//! ip_forward, and their IPv6 twins), in the same order: what the kernel drops for a bad header is
//! dropped; anything the kernel would answer, deliver locally, signal or treat specially is passed
//! to it untouched; only plain unicast forwarding with a known neighbour is done here.
use vrf_common::{
    vrf_kernel_reason, Link, Nexthop, Reason, Route, RouteKind, Vrf, LINK_FWD4, LINK_FWD6,
    LINK_MEMBER, LINK_RPF_LOOSE, LINK_RPF_STRICT, LINK_UP, LINK_V6_DISABLED, LINK_VRF_DEVICE,
    NH_GATEWAY, NH_GATEWAY6, VRF_ACTIVE, VRF_DEGRADED,
};

use crate::{
    fib,
    maps::{LINKS, VRFS},
    neigh,
    parse::{self, EthHdr, Frame, Ipv4Hdr, Ipv6Hdr, ETH_LEN, IPV4_LEN, IPV6_LEN},
};

/// The outcome of one packet, with what `EXPLAIN`, the redirect and the rewrite need. The
/// decision never writes the frame: a redirect that fails must hand the kernel the original.
#[derive(Clone, Copy)]
pub struct Verdict {
    pub reason: Reason,
    /// Egress ifindex when forwarded.
    pub oif: u32,
    /// VRF slot of the table that decided.
    pub vrf: u32,
    /// Neighbour address family (4 or 6) and address when forwarded.
    pub family: u32,
    pub neighbour: [u8; 16],
    /// Bytes beyond the IP packet (Ethernet padding) to trim before sending, as the kernel does.
    pub trim: u32,
    /// IP version of the packet (4 or 6), for the rewrite.
    pub ip_version: u8,
    /// Forwarded packets lose one TTL / hop; packets the host sends keep theirs.
    pub step_ttl: bool,
    /// Source MAC (the egress link's) and destination MAC (the neighbour's).
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// The egress link's `LINK_*` flags (a VLAN member leaves tagged through its parent).
    pub out_flags: u16,
}

impl Verdict {
    #[inline(always)]
    pub fn only(reason: Reason, vrf: u32) -> Self {
        Verdict {
            reason,
            oif: 0,
            vrf,
            family: 0,
            neighbour: [0; 16],
            trim: 0,
            ip_version: 0,
            step_ttl: false,
            src_mac: [0; 6],
            dst_mac: [0; 6],
            out_flags: 0,
        }
    }
}

/// Where a unicast route leads: the path, its egress link and the table that chose it.
struct Egress {
    path: Nexthop,
    link: Link,
    vrf: u32,
}

/// Decide the fate of the frame that arrived on member `ifindex` (`LOCAL_OUT = false`), or that
/// the host sends through VRF device `ifindex` (`LOCAL_OUT = true`: the VRF egress path, where
/// the kernel neither checks nor steps the TTL, and forwarding sysctls and rp_filter play no
/// part).
#[inline(always)]
pub fn decide<const LOCAL_OUT: bool>(frame: Frame, ifindex: u32, member: &Link) -> Verdict {
    let Some(eth) = frame.ptr_at::<EthHdr>(0) else {
        return Verdict::only(Reason::PassNotIp, member.vrf);
    };
    let (dst_mac, proto) = unsafe { ((*eth).dst, (*eth).proto) };
    decide_l3::<LOCAL_OUT>(frame, dst_mac, proto, ifindex, member)
}

/// The decision once the L2 header is read: `frame`'s IP header starts at `ETH_LEN` (for a
/// tagged frame the caller passes a view that starts `VLAN_HLEN` later), `proto` is the
/// ethertype in front of it.
#[inline(always)]
pub fn decide_l3<const LOCAL_OUT: bool>(
    frame: Frame,
    dst_mac: [u8; 6],
    proto: [u8; 2],
    ifindex: u32,
    member: &Link,
) -> Verdict {
    let vrf_slot = member.vrf;
    if proto != parse::ETH_P_IP && proto != parse::ETH_P_IPV6 {
        return Verdict::only(Reason::PassNotIp, vrf_slot);
    }
    // Group-addressed frames (33:33:…, 01:00:5e:…, broadcast): never forwarded as unicast.
    if dst_mac[0] & 1 != 0 {
        return Verdict::only(Reason::PassMulticast, vrf_slot);
    }
    // ip_rcv drops PACKET_OTHERHOST, ip_forward anything but PACKET_HOST.
    if !LOCAL_OUT && dst_mac != member.mac {
        return Verdict::only(Reason::PassOtherHost, vrf_slot);
    }
    let Some(vrf) = VRFS.get(vrf_slot).copied() else {
        return Verdict::only(Reason::PassDegraded, vrf_slot);
    };
    if proto == parse::ETH_P_IP {
        ipv4::<LOCAL_OUT>(frame, ifindex, member, &vrf)
    } else {
        ipv6::<LOCAL_OUT>(frame, ifindex, member, &vrf)
    }
}

#[inline(always)]
fn ipv4<const LOCAL_OUT: bool>(frame: Frame, ifindex: u32, member: &Link, vrf: &Vrf) -> Verdict {
    let slot = member.vrf;
    let only = |r| Verdict::only(r, slot);
    // ip_rcv_core: the checks that make the kernel drop.
    let Some(ip) = frame.ptr_at::<Ipv4Hdr>(ETH_LEN) else {
        return only(Reason::DropMalformed);
    };
    let (vihl, tot_len) = unsafe {
        (
            (*ip).version_ihl,
            u16::from_be_bytes((*ip).tot_len) as usize,
        )
    };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < IPV4_LEN || tot_len < ihl || ETH_LEN + tot_len > frame.len() {
        return only(Reason::DropMalformed);
    }
    if ihl != IPV4_LEN {
        return only(Reason::PassIpOptions);
    }
    if parse::ipv4_header_sum(ip) != 0xffff {
        return only(Reason::DropChecksum);
    }
    let (src, dst, ttl, protocol, frag) = unsafe {
        (
            (*ip).saddr,
            (*ip).daddr,
            (*ip).ttl,
            (*ip).protocol,
            u16::from_be_bytes((*ip).frag_off),
        )
    };

    // ip_route_input_slow, before the FIB.
    if dst[0] >= 224 {
        // Multicast, the limited broadcast and class E all stay with the kernel.
        return only(Reason::PassMulticast);
    }
    if src[0] >= 224 || src[0] == 0 || src[0] == 127 || dst[0] == 0 || dst[0] == 127 {
        return only(Reason::PassMartian);
    }
    if (dst[0] == 169 && dst[1] == 254) || (src[0] == 169 && src[1] == 254) {
        return only(Reason::PassLinkLocal);
    }
    if let Some(r) = vrf_state(vrf, member, if LOCAL_OUT { 0 } else { LINK_FWD4 }, false) {
        return only(r);
    }

    let route = match classify(fib::lookup4(vrf.table, dst)) {
        Ok(route) => route,
        Err(r) => return only(r),
    };
    // Ports only from an unfragmented packet, so every fragment of a flow hashes alike.
    let ports = if frag & 0x3fff == 0 {
        parse::ports(&frame, ETH_LEN + IPV4_LEN, protocol)
    } else {
        0
    };
    let hash = fib::flow_hash(
        u32::from_ne_bytes(src),
        u32::from_ne_bytes(dst),
        protocol,
        ports,
    );
    let egress = match egress(&route, hash, slot, ifindex, false, |table| {
        fib::lookup4(table, dst)
    }) {
        Ok(e) => e,
        Err((r, vrf)) => return Verdict::only(r, vrf),
    };
    if !LOCAL_OUT && !source_valid(src, vrf, member, ifindex, &egress.link) {
        return only(Reason::PassMartian);
    }

    // ip_forward (the local output path sends any TTL but 0 as it is).
    if (!LOCAL_OUT && ttl <= 1) || ttl == 0 {
        return only(Reason::PassTtl);
    }
    if !fits(LOCAL_OUT, false, tot_len, &route, &egress.link) {
        return only(Reason::PassMtu);
    }
    let (family, neighbour) = if egress.path.flags & NH_GATEWAY == 0 {
        (4, neigh::v4(dst))
    } else if egress.path.flags & NH_GATEWAY6 != 0 {
        (6, egress.path.gateway)
    } else {
        (4, egress.path.gateway)
    };
    // An IPv6 gateway needs neighbour discovery, which disable_ipv6 turns off on that link.
    if family == 6 && egress.link.flags & LINK_V6_DISABLED != 0 {
        return Verdict::only(Reason::PassIpv6Disabled, egress.vrf);
    }
    let Some(mac) = neigh::lookup(egress.path.ifindex, family, neighbour) else {
        return Verdict::only(Reason::PassNoNeighbour, egress.vrf);
    };
    Verdict {
        reason: Reason::Forwarded,
        oif: egress.path.ifindex,
        vrf: egress.vrf,
        family,
        neighbour,
        trim: (frame.len() - ETH_LEN - tot_len) as u32,
        ip_version: 4,
        step_ttl: !LOCAL_OUT,
        src_mac: egress.link.mac,
        dst_mac: mac,
        out_flags: egress.link.flags,
    }
}

#[inline(always)]
fn ipv6<const LOCAL_OUT: bool>(frame: Frame, ifindex: u32, member: &Link, vrf: &Vrf) -> Verdict {
    let slot = member.vrf;
    let only = |r| Verdict::only(r, slot);
    // ip6_rcv_core: disable_ipv6 on the ingress link drops before anything is looked at.
    if !LOCAL_OUT && member.flags & LINK_V6_DISABLED != 0 {
        return only(Reason::PassIpv6Disabled);
    }
    let Some(ip) = frame.ptr_at::<Ipv6Hdr>(ETH_LEN) else {
        return only(Reason::DropMalformed);
    };
    let (version, payload_len, nexthdr, hop_limit, src, dst) = unsafe {
        (
            (*ip).version_class_flow[0] >> 4,
            u16::from_be_bytes((*ip).payload_len) as usize,
            (*ip).nexthdr,
            (*ip).hop_limit,
            (*ip).saddr,
            (*ip).daddr,
        )
    };
    if version != 6 {
        return only(Reason::DropMalformed);
    }
    if nexthdr == parse::IPPROTO_HOPOPTS {
        // Router alert, jumbograms: the kernel's.
        return only(Reason::PassHopByHop);
    }
    if ETH_LEN + IPV6_LEN + payload_len > frame.len() {
        return only(Reason::DropMalformed);
    }
    if dst[0] == 0xff {
        return only(Reason::PassMulticast);
    }
    if src[0] == 0xff || is_special6(&src) || is_special6(&dst) {
        return only(Reason::PassMartian);
    }
    if (dst[0] == 0xfe && dst[1] & 0xc0 == 0x80) || (src[0] == 0xfe && src[1] & 0xc0 == 0x80) {
        return only(Reason::PassLinkLocal);
    }
    if let Some(r) = vrf_state(vrf, member, if LOCAL_OUT { 0 } else { LINK_FWD6 }, true) {
        return only(r);
    }

    let route = match classify(fib::lookup6(vrf.table, dst)) {
        Ok(route) => route,
        Err(r) => return only(r),
    };
    let ports = parse::ports(&frame, ETH_LEN + IPV6_LEN, nexthdr);
    let hash = fib::flow_hash(fib::fold6(&src), fib::fold6(&dst), nexthdr, ports);
    let egress = match egress(&route, hash, slot, ifindex, true, |table| {
        fib::lookup6(table, dst)
    }) {
        Ok(e) => e,
        Err((r, vrf)) => return Verdict::only(r, vrf),
    };

    // ip6_forward.
    if (!LOCAL_OUT && hop_limit <= 1) || hop_limit == 0 {
        return only(Reason::PassTtl);
    }
    // ip6_output drops what would leave through a link with disable_ipv6.
    if egress.link.flags & LINK_V6_DISABLED != 0 {
        return Verdict::only(Reason::PassIpv6Disabled, egress.vrf);
    }
    if !fits(
        LOCAL_OUT,
        true,
        IPV6_LEN + payload_len,
        &route,
        &egress.link,
    ) {
        return only(Reason::PassMtu);
    }
    let neighbour = if egress.path.flags & NH_GATEWAY == 0 {
        dst
    } else {
        egress.path.gateway
    };
    let Some(mac) = neigh::lookup(egress.path.ifindex, 6, neighbour) else {
        return Verdict::only(Reason::PassNoNeighbour, egress.vrf);
    };
    Verdict {
        reason: Reason::Forwarded,
        oif: egress.path.ifindex,
        vrf: egress.vrf,
        family: 6,
        neighbour,
        trim: (frame.len() - ETH_LEN - IPV6_LEN - payload_len) as u32,
        ip_version: 6,
        step_ttl: !LOCAL_OUT,
        src_mac: egress.link.mac,
        dst_mac: mac,
        out_flags: egress.link.flags,
    }
}

/// `::`, `::1` and IPv4-mapped `::ffff:a.b.c.d`: the kernel drops or keeps these itself.
#[inline(always)]
fn is_special6(a: &[u8; 16]) -> bool {
    let mut head_zero = true;
    let mut i = 0;
    while i < 10 {
        head_zero &= a[i] == 0;
        i += 1;
    }
    head_zero
        && ((a[10] == 0 && a[11] == 0 && a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] <= 1)
            || (a[10] == 0xff && a[11] == 0xff))
}

/// Reasons the VRF or the ingress link leave every packet of one family to the kernel.
#[inline(always)]
fn vrf_state(vrf: &Vrf, member: &Link, fwd_flag: u16, v6: bool) -> Option<Reason> {
    if vrf.flags & VRF_ACTIVE == 0 || vrf.flags & VRF_DEGRADED != 0 {
        return Some(Reason::PassDegraded);
    }
    // Netfilter, IPsec or an earlier rule could act on this family: the host's own traffic too.
    if let Some(r) = vrf_kernel_reason(vrf.flags, v6) {
        return Some(r);
    }
    // The local output path passes no flag: forwarding sysctls do not apply to it.
    if fwd_flag != 0 && member.flags & fwd_flag == 0 {
        return Some(Reason::PassForwardingOff);
    }
    None
}

/// The kernel's route types: only unicast is ours to forward.
#[inline(always)]
fn classify(route: Option<Route>) -> Result<Route, Reason> {
    let Some(route) = route else {
        return Err(Reason::PassNoRoute);
    };
    match RouteKind::from_u16(route.kind) {
        Some(RouteKind::Unicast) => Ok(route),
        Some(RouteKind::Local) | Some(RouteKind::Broadcast) | Some(RouteKind::Anycast) => {
            Err(Reason::PassLocal)
        }
        Some(RouteKind::Multicast) => Err(Reason::PassMulticast),
        Some(RouteKind::Blackhole) => Err(Reason::DropBlackhole),
        Some(RouteKind::Unreachable) => Err(Reason::PassUnreachable),
        Some(RouteKind::Prohibit) => Err(Reason::PassProhibit),
        Some(RouteKind::Throw) => Err(Reason::PassThrow),
        _ => Err(Reason::PassUnsupported),
    }
}

/// `__fib_validate_source`, which the kernel runs on every forwarded IPv4 packet once custom
/// rules exist (any VRF setup has them), rp_filter or not. It looks the source up in the table
/// the rules give for `iif = <egress link>` — with policy-routing VRFs the egress member's own
/// table — or, for kernel VRFs (`flowi4_l3mdev`), the ingress VRF's table. Anything but a
/// unicast answer (local, broadcast: a martian source) refuses the packet; with rp_filter, no
/// answer refuses it too, and strict mode needs a path back through the ingress link.
/// Where the right table is not known, the packet goes to the kernel.
#[inline(always)]
fn source_valid(
    src: [u8; 4],
    ingress_vrf: &Vrf,
    member: &Link,
    ifindex: u32,
    egress: &Link,
) -> bool {
    let table = if ingress_vrf.ifindex != 0 {
        ingress_vrf.table
    } else if egress.flags & LINK_MEMBER != 0 {
        match VRFS.get(egress.vrf) {
            Some(v) if v.flags & VRF_ACTIVE != 0 => v.table,
            _ => return false,
        }
    } else {
        return false;
    };
    let rpf = member.flags & (LINK_RPF_STRICT | LINK_RPF_LOOSE) != 0;
    let Some(back) = fib::lookup4(table, src) else {
        // The kernel goes on to later rules (main): without rp_filter a miss is fine.
        return !rpf;
    };
    match RouteKind::from_u16(back.kind) {
        Some(RouteKind::Unicast) => {
            member.flags & LINK_RPF_STRICT == 0 || fib::uses_link(&back, ifindex)
        }
        // fib_lookup fails on these: "last resort", refused only under rp_filter.
        Some(RouteKind::Unreachable) | Some(RouteKind::Prohibit) | Some(RouteKind::Blackhole) => {
            !rpf
        }
        // Local, broadcast, throw (later rules decide), anything not modelled.
        _ => false,
    }
}

/// The path for this flow and its egress link; a path through a VRF device (a route leaked
/// into another VRF) is followed by one more lookup in that VRF's table. A failure names the
/// VRF whose table it happened in.
#[inline(always)]
fn egress(
    route: &Route,
    hash: u32,
    slot: u32,
    ifindex: u32,
    v6: bool,
    lookup: impl Fn(u32) -> Option<Route>,
) -> Result<Egress, (Reason, u32)> {
    let path = fib::select_path(route, hash).ok_or((Reason::PassUnsupported, slot))?;
    let mut link = *unsafe { LINKS.get(path.ifindex) }.ok_or((Reason::PassEgress, slot))?;
    let (path, vrf) = if link.flags & LINK_VRF_DEVICE != 0 {
        let target = link.vrf;
        let other = VRFS.get(target).ok_or((Reason::PassEgress, slot))?;
        if other.flags & VRF_ACTIVE == 0 || other.flags & VRF_DEGRADED != 0 {
            return Err((Reason::PassDegraded, target));
        }
        // The leaked-into VRF's firewall, IPsec or rules concern the packet as well.
        if let Some(r) = vrf_kernel_reason(other.flags, v6) {
            return Err((r, target));
        }
        let leaked = classify(lookup(other.table)).map_err(|r| (r, target))?;
        let path = fib::select_path(&leaked, hash).ok_or((Reason::PassUnsupported, target))?;
        link = *unsafe { LINKS.get(path.ifindex) }.ok_or((Reason::PassEgress, target))?;
        if link.flags & LINK_VRF_DEVICE != 0 {
            return Err((Reason::PassUnsupported, target));
        }
        (path, target)
    } else {
        (path, slot)
    };
    if link.flags & LINK_UP == 0 || path.ifindex == ifindex {
        return Err((Reason::PassEgress, vrf));
    }
    Ok(Egress { path, link, vrf })
}

/// Does the packet fit the path? On the local output path a GSO packet's IP length is the whole
/// super-packet: the tc entry checks the egress MTU GSO-aware (bpf_check_mtu) instead, and only
/// a route MTU metric, which that helper does not know, sends the packet to the kernel here.
#[inline(always)]
fn fits(local_out: bool, v6: bool, ip_len: usize, route: &Route, link: &Link) -> bool {
    if local_out {
        // bpf_check_mtu knows the device MTU only: a tighter IPv6 one is the kernel's to apply.
        route.mtu == 0 && (!v6 || link.mtu6 >= link.mtu)
    } else {
        ip_len <= mtu(route, link, v6)
    }
}

/// The route's MTU metric when it is tighter than the link's (for IPv6, the link's IPv6 MTU).
#[inline(always)]
fn mtu(route: &Route, link: &Link, v6: bool) -> usize {
    let m = if v6 { link.mtu6 } else { link.mtu } as usize;
    if route.mtu != 0 && (route.mtu as usize) < m {
        route.mtu as usize
    } else {
        m
    }
}
