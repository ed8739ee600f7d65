//! The forward rewrite: MACs, TTL / hop limit, IPv4 checksum.
use crate::{
    forward::Verdict,
    parse::{EthHdr, Frame, Ipv4Hdr, Ipv6Hdr, ETH_LEN},
};

/// Rewrite a frame the decision chose to forward (headers already validated by it; the bounds
/// are checked again because trimming moved the frame's end).
#[inline(always)]
pub fn apply(frame: Frame, v: &Verdict) -> bool {
    let Some(eth) = frame.ptr_at::<EthHdr>(0) else {
        return false;
    };
    if !step(frame, v) {
        return false;
    }
    macs(eth, v.src_mac, v.dst_mac);
    true
}

/// TTL / hop limit of the IP header at `ETH_LEN` of `frame` (a tagged frame passes a view
/// `VLAN_HLEN` later).
#[inline(always)]
pub fn step(frame: Frame, v: &Verdict) -> bool {
    if v.step_ttl && v.ip_version == 4 {
        let Some(ip) = frame.ptr_at::<Ipv4Hdr>(ETH_LEN) else {
            return false;
        };
        decrease_ttl(ip);
    } else if v.step_ttl {
        let Some(ip) = frame.ptr_at::<Ipv6Hdr>(ETH_LEN) else {
            return false;
        };
        decrease_hop_limit(ip);
    }
    true
}

#[inline(always)]
pub fn macs(eth: *mut EthHdr, src: [u8; 6], dst: [u8; 6]) {
    unsafe {
        (*eth).src = src;
        (*eth).dst = dst;
    }
}

/// TTL − 1 with the incremental checksum update of RFC 1624 (as the kernel's ip_decrease_ttl):
/// the TTL is the high byte of its 16-bit word, so the sum drops by 0x0100 in network order.
#[inline(always)]
pub fn decrease_ttl(ip: *mut Ipv4Hdr) {
    unsafe {
        let mut check = u16::from_ne_bytes((*ip).check) as u32;
        check += u16::to_be(0x0100) as u32;
        let check = (check + (check >= 0xffff) as u32) as u16;
        (*ip).check = check.to_ne_bytes();
        (*ip).ttl -= 1;
    }
}

#[inline(always)]
pub fn decrease_hop_limit(ip: *mut Ipv6Hdr) {
    unsafe { (*ip).hop_limit -= 1 }
}
