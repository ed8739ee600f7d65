//! Where a frame really arrived and how it leaves: 802.1Q members on a trunk, bonds on their
//! slaves. XDP runs on the device that receives (the trunk, a bond's slaves); the member is
//! found by (device, VLAN id) in `PORTS`, and a frame for a VLAN member leaves tagged through
//! its parent. Whatever is not a plain single 802.1Q tag goes to the kernel.
use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use vrf_common::{
    Link, PortKey, Reason, ETH_P_8021AD, ETH_P_8021Q, LINK_MEMBER, LINK_TAGS_HIDDEN, LINK_TRUNK,
    LINK_VLAN, VLAN_HLEN,
};

use crate::{
    forward::Verdict,
    maps::{LINKS, PORTS, VLAN_PORTS},
    parse::{EthHdr, Frame, VlanEthHdr, ETH_LEN},
    rewrite,
};

/// The member a frame belongs to, with the view of it the decision reads.
pub struct Ingress {
    /// The frame with its IP header at `ETH_LEN` (past the tag, if any).
    pub l3: Frame,
    pub dst_mac: [u8; 6],
    /// The ethertype in front of the IP header.
    pub proto: [u8; 2],
    pub ifindex: u32,
    pub link: Link,
    pub tagged: bool,
}

/// The device XDP serves for `ifindex`: the link itself, or the bond it is a slave of. Only
/// members and trunks are served.
#[inline(always)]
pub fn port(ifindex: u32) -> Option<(u32, Link)> {
    let (ifindex, link) = match unsafe { LINKS.get(ifindex) } {
        Some(l) => (ifindex, *l),
        None => {
            let bond = *unsafe { PORTS.get(key(ifindex, 0)) }?;
            (bond, *unsafe { LINKS.get(bond) }?)
        }
    };
    if link.flags & (LINK_MEMBER | LINK_TRUNK) == 0 {
        return None;
    }
    Some((ifindex, link))
}

/// The member of `port` a frame belongs to, or why the kernel gets it (counted on the port).
/// A tagged frame is never looked up in the trunk's own VRF.
#[inline(always)]
pub fn ingress(frame: Frame, ifindex: u32, port: &Link) -> Result<Ingress, Reason> {
    if port.flags & LINK_TAGS_HIDDEN != 0 {
        return Err(Reason::PassVlanHidden);
    }
    let eth = frame.ptr_at::<EthHdr>(0).ok_or(Reason::PassNotIp)?;
    let (dst_mac, proto) = unsafe { ((*eth).dst, (*eth).proto) };
    // On a link without VLAN members a tag is just not IP.
    if port.flags & LINK_TRUNK == 0 || (proto != ETH_P_8021Q && proto != ETH_P_8021AD) {
        if port.flags & LINK_MEMBER == 0 {
            return Err(Reason::PassNotMember);
        }
        return Ok(Ingress {
            l3: frame,
            dst_mac,
            proto,
            ifindex,
            link: *port,
            tagged: false,
        });
    }
    if proto == ETH_P_8021AD {
        return Err(Reason::PassVlanQinQ);
    }
    let tag = frame.ptr_at::<VlanEthHdr>(0).ok_or(Reason::PassNotIp)?;
    let (tci, inner) = unsafe { (u16::from_be_bytes((*tag).tci), (*tag).proto) };
    if inner == ETH_P_8021Q || inner == ETH_P_8021AD {
        return Err(Reason::PassVlanStacked);
    }
    let vid = tci & 0x0fff;
    if vid == 0 {
        return Err(Reason::PassVlanPriority);
    }
    let member = *unsafe { PORTS.get(key(ifindex, vid)) }.ok_or(Reason::PassVlanUnknown)?;
    let link = *unsafe { LINKS.get(member) }.ok_or(Reason::PassVlanUnknown)?;
    if link.flags & LINK_MEMBER == 0 {
        return Err(Reason::PassVlanUnknown);
    }
    Ok(Ingress {
        l3: frame.skip(VLAN_HLEN),
        dst_mac,
        proto: inner,
        ifindex: member,
        link,
        tagged: true,
    })
}

/// Where a forwarded frame is transmitted and with which VLAN id (0: untagged).
pub struct Out {
    pub tx: u32,
    pub vid: u16,
}

#[inline(always)]
pub fn out(v: &Verdict) -> Option<Out> {
    if v.out_flags & LINK_VLAN == 0 {
        return Some(Out { tx: v.oif, vid: 0 });
    }
    let p = unsafe { VLAN_PORTS.get(v.oif) }?;
    Some(Out {
        tx: p.parent,
        vid: p.vid,
    })
}

/// Pop or push the tag (moving the head; the addresses are rewritten after). A failure leaves
/// the frame as it was.
#[inline(always)]
pub fn retag(ctx: &XdpContext, tagged_in: bool, tagged_out: bool) -> bool {
    let delta = match (tagged_in, tagged_out) {
        (true, false) => VLAN_HLEN as i32,
        (false, true) => -(VLAN_HLEN as i32),
        _ => return true,
    };
    unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) == 0 }
}

/// The forward rewrite of a frame whose head `retag` has set: addresses, the tag when
/// leaving through a VLAN member, TTL.
#[inline(always)]
pub fn rewrite(frame: Frame, v: &Verdict, vid: u16) -> bool {
    if vid == 0 {
        return rewrite::apply(frame, v);
    }
    let Some(h) = frame.ptr_at::<VlanEthHdr>(0) else {
        return false;
    };
    if !rewrite::step(frame.skip(VLAN_HLEN), v) {
        return false;
    }
    // The ethertype behind the tag is already in place: it was the frame's own.
    unsafe {
        (*h).dst = v.dst_mac;
        (*h).src = v.src_mac;
        (*h).tpid = ETH_P_8021Q;
        (*h).tci = vid.to_be_bytes();
    }
    true
}

#[inline(always)]
fn key(ifindex: u32, vid: u16) -> PortKey {
    PortKey {
        ifindex,
        vid,
        _pad: 0,
    }
}

const _: () = assert!(ETH_LEN + VLAN_HLEN == core::mem::size_of::<VlanEthHdr>());
