//! Independent checks of what the data plane did with a frame, written from the kernel's rules
//! (not from `forward.rs`): which IP headers the kernel's receive path drops (`ip_rcv_core`,
//! `ip6_rcv_core`), and what a correctly forwarded frame looks like. Every function returns an
//! explanation instead of panicking, so fuzzers and differential runs can collect and report.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const ETH_LEN: usize = 14;
pub const ETH_P_IP: [u8; 2] = [0x08, 0x00];
pub const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];

fn be16(b: &[u8]) -> usize {
    u16::from_be_bytes([b[0], b[1]]) as usize
}

/// RFC 1071 one's-complement sum of `bytes` (16-bit big-endian words, odd byte padded), folded.
pub fn ones_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in bytes.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Sets the IPv4 header checksum of an Ethernet frame to the sender's value (over IHL × 4 bytes,
/// as far as the frame has them). Frames too short for a checksum field are left alone.
pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    if frame.len() < ETH_LEN + 20 {
        return;
    }
    let ihl = ((frame[ETH_LEN] & 0x0f) as usize * 4).clamp(20, frame.len() - ETH_LEN);
    frame[ETH_LEN + 10] = 0;
    frame[ETH_LEN + 11] = 0;
    let c = !ones_sum(&frame[ETH_LEN..ETH_LEN + ihl]);
    frame[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&c.to_be_bytes());
}

/// Why the kernel's `ip_rcv_core` drops this IPv4 packet (the bytes after the Ethernet header,
/// i.e. `skb->data` with `skb->len` = `ip.len()`), or `None` when it passes it on to routing.
///
/// The kernel's order: room for a 20-byte header; version 4 and IHL ≥ 5; room for IHL × 4 bytes;
/// the header checksum; the total length within the packet and not shorter than the header.
pub fn ipv4_rcv_drop(ip: &[u8]) -> Option<&'static str> {
    if ip.len() < 20 {
        return Some("shorter than an IPv4 header");
    }
    let ihl = (ip[0] & 0x0f) as usize * 4;
    if ip[0] >> 4 != 4 {
        return Some("version is not 4");
    }
    if ihl < 20 {
        return Some("IHL below 5");
    }
    if ip.len() < ihl {
        return Some("header (IHL) beyond the packet");
    }
    if ones_sum(&ip[..ihl]) != 0xffff {
        return Some("bad header checksum");
    }
    let tot = be16(&ip[2..4]);
    if tot > ip.len() {
        return Some("total length beyond the packet");
    }
    if tot < ihl {
        return Some("total length shorter than the header");
    }
    None
}

/// Why the kernel's `ip6_rcv_core` drops this IPv6 packet, or `None`.
///
/// Room for the fixed header; version 6; a multicast or v4-mapped source; a loopback source or
/// destination (on a non-loopback device); a multicast destination of scope 0 or 1; the payload
/// length beyond the packet (unless 0 with a hop-by-hop header: a jumbogram, the kernel's own).
pub fn ipv6_rcv_drop(ip: &[u8]) -> Option<&'static str> {
    if ip.len() < 40 {
        return Some("shorter than an IPv6 header");
    }
    if ip[0] >> 4 != 6 {
        return Some("version is not 6");
    }
    let src = addr6(&ip[8..24]);
    let dst = addr6(&ip[24..40]);
    if src.is_multicast() {
        return Some("multicast source");
    }
    if src.is_loopback() || dst.is_loopback() {
        return Some("loopback address");
    }
    if src.to_ipv4_mapped().is_some() {
        return Some("v4-mapped source");
    }
    if dst.is_multicast() && dst.octets()[1] & 0x0f <= 1 {
        return Some("multicast destination of scope 0 or 1");
    }
    let plen = be16(&ip[4..6]);
    if (plen != 0 || ip[6] != 0) && 40 + plen > ip.len() {
        return Some("payload length beyond the packet");
    }
    None
}

pub fn addr4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

pub fn addr6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// Why the kernel drops this frame before routing when it arrives addressed to the receiving
/// link's own MAC (`ip_rcv_core` / `ip6_rcv_core`), or `None`. Frames that are not plain IPv4 /
/// IPv6 (VLAN tags, ARP…) are not dropped by these.
pub fn kernel_rx_drop(frame: &[u8]) -> Option<&'static str> {
    if frame.len() < ETH_LEN {
        return None;
    }
    let ethertype = [frame[12], frame[13]];
    if ethertype == ETH_P_IP {
        ipv4_rcv_drop(&frame[ETH_LEN..])
    } else if ethertype == ETH_P_IPV6 {
        ipv6_rcv_drop(&frame[ETH_LEN..])
    } else {
        None
    }
}

/// The destination address of a plain IPv4 / IPv6 frame whose fixed header is there.
pub fn ip_dst(frame: &[u8]) -> Option<IpAddr> {
    ip_addr_at(frame, 16, 24)
}

/// The source address, likewise.
pub fn ip_src(frame: &[u8]) -> Option<IpAddr> {
    ip_addr_at(frame, 12, 8)
}

/// The address at `v4` / `v6` bytes into the fixed IPv4 / IPv6 header, if it is all there.
fn ip_addr_at(frame: &[u8], v4: usize, v6: usize) -> Option<IpAddr> {
    let ethertype = [*frame.get(12)?, *frame.get(13)?];
    if ethertype == ETH_P_IP && frame.len() >= ETH_LEN + 20 {
        Some(addr4(&frame[ETH_LEN + v4..]).into())
    } else if ethertype == ETH_P_IPV6 && frame.len() >= ETH_LEN + 40 {
        Some(addr6(&frame[ETH_LEN + v6..]).into())
    } else {
        None
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `output` is `input` forwarded exactly once: destination MAC `dst_mac`, source MAC `src_mac`,
/// the same ethertype, TTL / hop limit exactly one lower, a valid IPv4 header checksum, Ethernet
/// padding beyond the IP packet trimmed, and every other byte identical.
pub fn check_forwarded(
    input: &[u8],
    output: &[u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
) -> Result<(), String> {
    if output.len() < ETH_LEN || input.len() < ETH_LEN {
        return Err(format!("output frame of {} bytes", output.len()));
    }
    if output[..6] != dst_mac || output[6..12] != src_mac {
        return Err(format!(
            "MACs {} → {}, expected {} → {}",
            hex(&output[6..12]),
            hex(&output[..6]),
            hex(&src_mac),
            hex(&dst_mac)
        ));
    }
    if output[12..14] != input[12..14] {
        return Err("ethertype changed".into());
    }
    let ethertype = [input[12], input[13]];
    let ip_in = &input[ETH_LEN..];
    let ip_out = &output[ETH_LEN..];
    if ethertype == ETH_P_IP {
        if ip_in.len() < 20 {
            return Err("forwarded an IPv4 frame without a full header".into());
        }
        let tot = be16(&ip_in[2..4]);
        let ihl = (ip_in[0] & 0x0f) as usize * 4;
        if tot > ip_in.len() || ihl < 20 || ihl > tot {
            return Err("forwarded an IPv4 packet with an inconsistent length".into());
        }
        if ip_out.len() != tot {
            return Err(format!(
                "output IP packet is {} bytes, the input's total length is {tot} (padding must be trimmed, nothing else)",
                ip_out.len()
            ));
        }
        if ip_in[8] == 0 || ip_out[8] != ip_in[8] - 1 {
            return Err(format!("TTL {} → {}", ip_in[8], ip_out[8]));
        }
        if ones_sum(&ip_out[..ihl]) != 0xffff {
            return Err(format!(
                "output IPv4 header checksum does not verify: {}",
                hex(&ip_out[..ihl])
            ));
        }
        for (i, (a, b)) in ip_in[..tot].iter().zip(ip_out).enumerate() {
            if a != b && !matches!(i, 8 | 10 | 11) {
                return Err(format!(
                    "IPv4 byte {i} changed from {a:02x} to {b:02x} (only TTL and checksum may)"
                ));
            }
        }
    } else if ethertype == ETH_P_IPV6 {
        if ip_in.len() < 40 {
            return Err("forwarded an IPv6 frame without a full header".into());
        }
        let len = 40 + be16(&ip_in[4..6]);
        if len > ip_in.len() {
            return Err("forwarded an IPv6 packet longer than the frame".into());
        }
        if ip_out.len() != len {
            return Err(format!(
                "output IP packet is {} bytes, the input's is {len}",
                ip_out.len()
            ));
        }
        if ip_in[7] == 0 || ip_out[7] != ip_in[7] - 1 {
            return Err(format!("hop limit {} → {}", ip_in[7], ip_out[7]));
        }
        for (i, (a, b)) in ip_in[..len].iter().zip(ip_out).enumerate() {
            if a != b && i != 7 {
                return Err(format!(
                    "IPv6 byte {i} changed from {a:02x} to {b:02x} (only the hop limit may)"
                ));
            }
        }
    } else {
        return Err(format!(
            "forwarded a frame of ethertype {}",
            hex(&input[12..14])
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_header() -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETH_P_IP);
        f.extend_from_slice(&[
            0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0; 8]);
        fix_ipv4_checksum(&mut f);
        f
    }

    #[test]
    fn ipv4_rules() {
        let f = v4_header();
        assert_eq!(ipv4_rcv_drop(&f[14..]), None);
        assert!(ipv4_rcv_drop(&f[14..30]).is_some());
        let mut bad = f.clone();
        bad[24] ^= 1;
        assert_eq!(ipv4_rcv_drop(&bad[14..]), Some("bad header checksum"));
        let mut long = f.clone();
        long[17] = 200;
        fix_ipv4_checksum(&mut long);
        assert_eq!(
            ipv4_rcv_drop(&long[14..]),
            Some("total length beyond the packet")
        );
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 18]);
        assert_eq!(ipv4_rcv_drop(&padded[14..]), None);
    }

    #[test]
    fn forwarded_check() {
        let f = v4_header();
        let mut out = f.clone();
        out[..6].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        out[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 8]);
        out[22] -= 1;
        fix_ipv4_checksum(&mut out);
        assert_eq!(
            check_forwarded(&f, &out, [2, 0, 0, 0, 0, 8], [2, 0, 0, 0, 0, 9]),
            Ok(())
        );
        assert!(check_forwarded(&f, &f, [2, 0, 0, 0, 0, 8], [2, 0, 0, 0, 0, 9]).is_err());
    }
}
