//! Every decision of the XDP program for IPv6, packet by packet through BPF_PROG_TEST_RUN (see
//! `xdp_decisions.rs` for IPv4, `xdp_decisions_both.rs` for the cases run for both versions,
//! `tests::dataplane` for the fixture). Forwarded frames carry a non-zero traffic class and flow label, so the check that
//! only the hop limit changed covers them.

use std::collections::BTreeMap;

use tests::dataplane::nexthop;
use tests::dataplane::*;
use vrf_common::{Reason, LINK_RPF_LOOSE, LINK_RPF_STRICT};

/// A UDP frame from `src` to `dst` on `ingress`, with hop limit `hop`.
fn udp6_hop(fx: &Fixture, ingress: Iface, src: &str, dst: &str, hop: u8) -> Vec<u8> {
    let mut s = fx.spec(ingress, src, dst);
    s.ttl = hop;
    with_flow_label(s.udp().unwrap())
}

fn udp6(fx: &Fixture, ingress: Iface, src: &str, dst: &str) -> Vec<u8> {
    udp6_hop(fx, ingress, src, dst, 64)
}

/// Just the IPv6 header, next header 59 (none), payload length 0: 54 bytes.
fn bare6(fx: &Fixture, dst: &str) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&fx.r0.mac);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&VERSION_CLASS_FLOW);
    f.extend_from_slice(&[0, 0, 59, 64]);
    f.extend_from_slice(&ip6(RED_SRC6));
    f.extend_from_slice(&ip6(dst));
    f
}

fn ip6(s: &str) -> [u8; 16] {
    match ip(s) {
        std::net::IpAddr::V6(a) => a.octets(),
        other => panic!("{other} is not IPv6"),
    }
}

fn set_payload_len(frame: &mut [u8], len: u16) {
    frame[18..20].copy_from_slice(&len.to_be_bytes());
}

fn via_r1_gateway(fx: &mut Fixture, prefix: &str) {
    let r1 = fx.r1.ifindex;
    fx.unicast(RED_TABLE, prefix, &[nexthop(r1, Some(ip(RED_GW6)))]);
}

fn r1_gw_mac(fx: &Fixture) -> [u8; 6] {
    neigh_mac(fx.r1.id, 1, true)
}

// Forwarding.

#[test]
fn forwards_ipv6_via_link_local_gateway() {
    let mut fx = Fixture::new();
    let mac = fx.red_via_fe80_on_r2("fd00:70::/48", true);
    let r2 = fx.r2;
    let frame = udp6(&fx, fx.r0, RED_SRC6, "fd00:70::5");
    fx.expect_forward(fx.r0, &frame, r2, "fe80::1", mac, RED);
}

#[test]
fn hop_limit_2_is_forwarded_with_hop_limit_1() {
    let mut fx = Fixture::new();
    let frame = udp6_hop(&fx, fx.r0, RED_SRC6, RED_REMOTE6, 2);
    let mac = r1_gw_mac(&fx);
    let out = fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW6, mac, RED);
    assert_eq!(out[14 + 7], 1);
}

#[test]
fn ipv6_with_zero_payload_length_is_forwarded() {
    let mut fx = Fixture::new();
    let frame = bare6(&fx, RED_REMOTE6);
    let mac = r1_gw_mac(&fx);
    fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW6, mac, RED);
}

// Header checks.

#[test]
fn hop_by_hop_header_passes_as_hop_by_hop() {
    let mut fx = Fixture::new();
    let mut frame = udp6(&fx, fx.r0, RED_SRC6, RED_REMOTE6);
    let payload = u16::from_be_bytes([frame[18], frame[19]]);
    // Hop-by-hop header (next: UDP, 8 bytes, PadN) in front of the UDP header.
    frame.splice(54..54, [17, 0, 1, 4, 0, 0, 0, 0]);
    frame[20] = 0;
    set_payload_len(&mut frame, payload + 8);
    fx.expect_pass(fx.r0, &frame, Reason::PassHopByHop);
}

#[test]
fn ipv6_version_not_6_is_dropped_as_malformed() {
    let mut fx = Fixture::new();
    let mut frame = udp6(&fx, fx.r0, RED_SRC6, RED_REMOTE6);
    frame[14] = 0x4a;
    fx.expect_drop(fx.r0, &frame, Reason::DropMalformed);
}

#[test]
fn ipv6_payload_length_beyond_the_frame_is_dropped_as_malformed() {
    let mut fx = Fixture::new();
    let mut frame = udp6(&fx, fx.r0, RED_SRC6, RED_REMOTE6);
    let len = (frame.len() - 54 + 1) as u16;
    set_payload_len(&mut frame, len);
    fx.expect_drop(fx.r0, &frame, Reason::DropMalformed);
}

#[test]
fn truncated_ipv6_header_is_dropped_as_malformed() {
    let mut fx = Fixture::new();
    let frame = udp6(&fx, fx.r0, RED_SRC6, RED_REMOTE6)[..14 + 39].to_vec();
    fx.expect_drop(fx.r0, &frame, Reason::DropMalformed);
}

// Addresses the kernel treats specially.

#[test]
fn multicast_destination_passes_as_multicast() {
    let mut fx = Fixture::new();
    via_r1_gateway(&mut fx, "ff00::/8");
    for dst in ["ff02::1", "ff0e::1:2"] {
        let frame = udp6(&fx, fx.r0, RED_SRC6, dst);
        fx.expect_pass(fx.r0, &frame, Reason::PassMulticast);
    }
}

#[test]
fn ipv6_to_a_multicast_mac_passes_as_multicast() {
    // 33:33:… with a unicast IPv6 destination that would be forwarded.
    let mut fx = Fixture::new();
    let mut frame = udp6(&fx, fx.r0, RED_SRC6, RED_REMOTE6);
    frame[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 0x09]);
    fx.expect_pass(fx.r0, &frame, Reason::PassMulticast);
}

#[test]
fn ipv6_to_another_mac_passes_as_other_host() {
    let mut fx = Fixture::new();
    let mut frame = udp6(&fx, fx.r0, RED_SRC6, RED_REMOTE6);
    frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0x99, 0x01]);
    fx.expect_pass(fx.r0, &frame, Reason::PassOtherHost);
}

#[test]
fn addresses_just_outside_fe80_10_are_not_link_local() {
    // fec0::/10 (old site-local) and fe40::/10 are routed like any unicast address.
    let mut fx = Fixture::new();
    via_r1_gateway(&mut fx, "fe00::/8");
    let mac = r1_gw_mac(&fx);
    for dst in ["fec0::1", "fe7f::1"] {
        let frame = udp6(&fx, fx.r0, RED_SRC6, dst);
        fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW6, mac, RED);
    }
}

// Hop limit.

#[test]
fn hop_limit_1_passes_as_ttl() {
    let mut fx = Fixture::new();
    let frame = udp6_hop(&fx, fx.r0, RED_SRC6, RED_REMOTE6, 1);
    fx.expect_pass(fx.r0, &frame, Reason::PassTtl);
}

#[test]
fn hop_limit_0_passes_as_ttl() {
    let mut fx = Fixture::new();
    let frame = udp6_hop(&fx, fx.r0, RED_SRC6, RED_REMOTE6, 0);
    fx.expect_pass(fx.r0, &frame, Reason::PassTtl);
}

// Routes.

// Neighbours.

#[test]
fn ipv6_neighbour_key_does_not_match_an_ipv4_entry() {
    // a01:263:: and 10.1.2.99 share their 16 key bytes; only the family differs.
    let mut fx = Fixture::new();
    let r2 = fx.r2;
    fx.unicast(
        RED_TABLE,
        "fd00:41::/48",
        &[nexthop(r2.ifindex, Some(ip("a01:263::")))],
    );
    fx.neighbour(r2, "10.1.2.99", neigh_mac(r2.id, 99, false));
    let frame = udp6(&fx, fx.r0, RED_SRC6, "fd00:41::5");
    fx.expect_pass(fx.r0, &frame, Reason::PassNoNeighbour);
}

// MTU.

// Ingress link and VRF state.

// Egress.

// Multipath.

#[test]
fn multipath_spreads_flows_over_every_path_and_keeps_each_flow_on_one() {
    let mut fx = Fixture::new();
    let (r1, r2, r3) = (fx.r1, fx.r2, fx.r3);
    let paths = [
        (r1, "fd00:1:1::1"),
        (r2, "fd00:1:2::1"),
        (r3, "fd00:1:3::1"),
    ];
    let hops: Vec<_> = paths
        .iter()
        .map(|(l, gw)| nexthop(l.ifindex, Some(ip(gw))))
        .collect();
    fx.unicast(RED_TABLE, "fd00:43::/48", &hops);
    let want: BTreeMap<[u8; 6], [u8; 6]> = paths
        .iter()
        .map(|(l, _)| (l.mac, neigh_mac(l.id, 1, true)))
        .collect();
    let frames: Vec<Vec<u8>> = (0..300u16)
        .map(|i| {
            let mut s = fx.spec(fx.r0, RED_SRC6, "fd00:43::5");
            s.src_port = 10000 + i;
            with_flow_label(s.udp().unwrap())
        })
        .collect();
    let before = fx.snapshot();
    let first = fx.run_many(fx.r0.ifindex, &frames);
    let again = fx.run_many(fx.r0.ifindex, &frames);
    let mut tally: BTreeMap<[u8; 6], usize> = BTreeMap::new();
    for ((f, a), b) in frames.iter().zip(&first).zip(&again) {
        let src: [u8; 6] = a.frame[6..12].try_into().unwrap();
        assert_forwarded(f, &a.frame, src, want[&src]);
        assert_eq!(hex(&a.frame), hex(&b.frame), "same flow, same path");
        *tally.entry(src).or_default() += 1;
    }
    assert_eq!(tally.len(), 3, "{tally:?}");
    assert!(tally.values().all(|&n| n >= 50), "{tally:?}");
    let bytes: u64 = frames.iter().map(|f| 2 * f.len() as u64).sum();
    fx.assert_counted(&before, fx.r0, RED, Reason::Forwarded, 600, bytes);
    // The explain program picks the same path as the fast path.
    let by_mac: BTreeMap<[u8; 6], u32> = paths.iter().map(|(l, _)| (l.mac, l.ifindex)).collect();
    for (f, r) in frames.iter().zip(&first).take(30) {
        let e = fx.explain(fx.r0.ifindex, f).unwrap();
        assert_eq!(e.oif, Some(by_mac[&r.frame[6..12]]));
    }
}

// Leaks between VRFs.

// Reverse-path filter: the kernel has none for IPv6 (rp_filter is IPv4 only).

#[test]
fn rpf_flags_do_not_apply_to_ipv6() {
    let mut fx = Fixture::new();
    fx.update_link(fx.r0, |l| l.flags |= LINK_RPF_STRICT | LINK_RPF_LOOSE);
    // No route back to the source at all.
    let frame = udp6(&fx, fx.r0, "fd00:99::1", RED_REMOTE6);
    let mac = r1_gw_mac(&fx);
    fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW6, mac, RED);
}

// Ethernet padding.

#[test]
fn padded_minimum_frame_is_forwarded_with_the_padding_trimmed() {
    let mut fx = Fixture::new();
    let mut frame = bare6(&fx, RED_REMOTE6);
    assert_eq!(frame.len(), 54);
    frame.resize(60, 0xee);
    let mac = r1_gw_mac(&fx);
    let out = fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW6, mac, RED);
    assert_eq!(out.len(), 54);
}

#[test]
fn padded_frame_passed_to_the_kernel_keeps_its_padding() {
    let mut fx = Fixture::new();
    let mut frame = bare6(&fx, "fd00:99::1");
    frame.resize(60, 0xee);
    fx.expect_pass(fx.r0, &frame, Reason::PassNoRoute);
}
