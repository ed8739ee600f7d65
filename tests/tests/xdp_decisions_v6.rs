//! Every decision of the XDP program for IPv6, packet by packet through BPF_PROG_TEST_RUN (see
//! `xdp_decisions.rs` for IPv4 and the version-independent decisions, `tests::dataplane` for the
//! fixture). Forwarded frames carry a non-zero traffic class and flow label, so the check that
//! only the hop limit changed covers them.

use std::collections::BTreeMap;

use tests::dataplane::nexthop;
use tests::dataplane::*;
use vrf_common::{
    Reason, Route, RouteKind, LINK_FWD4, LINK_FWD6, LINK_RPF_LOOSE, LINK_RPF_STRICT, LINK_UP,
    VRF_DEGRADED,
};
use vrf_user::dataplane::{XdpAction, XDP_DROP, XDP_PASS};

/// Version 6, traffic class 0xab, flow label 0xcdef1.
const VERSION_CLASS_FLOW: [u8; 4] = [0x6a, 0xbc, 0xde, 0xf1];

fn with_flow_label(mut frame: Vec<u8>) -> Vec<u8> {
    frame[14..18].copy_from_slice(&VERSION_CLASS_FLOW);
    frame
}

/// A UDP frame from `src` to `dst` on `ingress`, with hop limit `hop`.
fn udp6_hop(fx: &Fixture, ingress: Iface, src: &str, dst: &str, hop: u8) -> Vec<u8> {
    let mut s = fx.spec(ingress, src, dst);
    s.ttl = hop;
    with_flow_label(s.udp().unwrap())
}

fn udp6(fx: &Fixture, ingress: Iface, src: &str, dst: &str) -> Vec<u8> {
    udp6_hop(fx, ingress, src, dst, 64)
}

/// A UDP frame whose IPv6 packet (header included) is exactly `ip_len` bytes long.
fn udp6_of_ip_len(fx: &Fixture, dst: &str, ip_len: usize) -> Vec<u8> {
    let mut s = fx.spec(fx.r0, RED_SRC6, dst);
    s.payload_len = ip_len - 48;
    let f = with_flow_label(s.udp().unwrap());
    assert_eq!(f.len(), 14 + ip_len);
    f
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
fn forwards_ipv6_via_gateway() {
    let mut fx = Fixture::new();
    let frame = udp6(&fx, fx.r0, RED_SRC6, RED_REMOTE6);
    let mac = r1_gw_mac(&fx);
    fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW6, mac, RED);
}

#[test]
fn forwards_ipv6_tcp_via_gateway() {
    let mut fx = Fixture::new();
    let frame = with_flow_label(fx.spec(fx.r0, RED_SRC6, RED_REMOTE6).tcp().unwrap());
    let mac = r1_gw_mac(&fx);
    fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW6, mac, RED);
}

#[test]
fn forwards_ipv6_to_directly_connected_destination() {
    let mut fx = Fixture::new();
    let frame = udp6(&fx, fx.r0, RED_SRC6, RED_DIRECT6);
    let mac = neigh_mac(fx.r1.id, 7, true);
    fx.expect_forward(fx.r0, &frame, fx.r1, RED_DIRECT6, mac, RED);
}

#[test]
fn forwards_ipv6_via_link_local_gateway() {
    let mut fx = Fixture::new();
    let r2 = fx.r2;
    fx.unicast(
        RED_TABLE,
        "fd00:70::/48",
        &[nexthop(r2.ifindex, Some(ip("fe80::1")))],
    );
    let mac = neigh_mac(r2.id, 0xfe, true);
    fx.neighbour(r2, "fe80::1", mac);
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
fn link_local_destination_passes_as_link_local() {
    let mut fx = Fixture::new();
    via_r1_gateway(&mut fx, "fe80::/10");
    for dst in ["fe80::5", "febf:ffff::1"] {
        let frame = udp6(&fx, fx.r0, RED_SRC6, dst);
        fx.expect_pass(fx.r0, &frame, Reason::PassLinkLocal);
    }
}

#[test]
fn link_local_source_passes_as_link_local() {
    let mut fx = Fixture::new();
    let frame = udp6(&fx, fx.r0, "fe80::2", RED_REMOTE6);
    fx.expect_pass(fx.r0, &frame, Reason::PassLinkLocal);
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

#[test]
fn loopback_source_passes_as_martian() {
    let mut fx = Fixture::new();
    let frame = udp6(&fx, fx.r0, "::1", RED_REMOTE6);
    fx.expect_pass(fx.r0, &frame, Reason::PassMartian);
}

#[test]
fn loopback_destination_passes_as_martian() {
    let mut fx = Fixture::new();
    via_r1_gateway(&mut fx, "::1/128");
    let frame = udp6(&fx, fx.r0, RED_SRC6, "::1");
    fx.expect_pass(fx.r0, &frame, Reason::PassMartian);
}

#[test]
fn unspecified_source_passes_as_martian() {
    let mut fx = Fixture::new();
    let frame = udp6(&fx, fx.r0, "::", RED_REMOTE6);
    fx.expect_pass(fx.r0, &frame, Reason::PassMartian);
}

#[test]
fn unspecified_destination_passes_as_martian() {
    let mut fx = Fixture::new();
    via_r1_gateway(&mut fx, "::/128");
    let frame = udp6(&fx, fx.r0, RED_SRC6, "::");
    fx.expect_pass(fx.r0, &frame, Reason::PassMartian);
}

#[test]
fn v4_mapped_source_passes_as_martian() {
    let mut fx = Fixture::new();
    let frame = udp6(&fx, fx.r0, "::ffff:10.1.0.2", RED_REMOTE6);
    fx.expect_pass(fx.r0, &frame, Reason::PassMartian);
}

#[test]
fn v4_mapped_destination_passes_as_martian() {
    let mut fx = Fixture::new();
    via_r1_gateway(&mut fx, "::ffff:0:0/96");
    let frame = udp6(&fx, fx.r0, RED_SRC6, "::ffff:10.100.0.9");
    fx.expect_pass(fx.r0, &frame, Reason::PassMartian);
}

#[test]
fn multicast_source_passes_as_martian() {
    let mut fx = Fixture::new();
    let frame = udp6(&fx, fx.r0, "ff02::1", RED_REMOTE6);
    fx.expect_pass(fx.r0, &frame, Reason::PassMartian);
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

#[test]
fn destination_without_route_passes_as_no_route() {
    let mut fx = Fixture::new();
    let frame = udp6(&fx, fx.r0, RED_SRC6, "fd00:99::1");
    fx.expect_pass(fx.r0, &frame, Reason::PassNoRoute);
}

/// A route of `kind` for fd00:40::/48 that still has a usable path via r1's gateway.
fn typed_route_case(kind: RouteKind, action: XdpAction, reason: Reason) {
    let mut fx = Fixture::new();
    let r1 = fx.r1.ifindex;
    fx.route(
        RED_TABLE,
        "fd00:40::/48",
        kind,
        0,
        &[nexthop(r1, Some(ip(RED_GW6)))],
    );
    let frame = udp6(&fx, fx.r0, RED_SRC6, "fd00:40::5");
    fx.expect(fx.r0, &frame, action, reason);
}

#[test]
fn local_route_passes_as_local() {
    typed_route_case(RouteKind::Local, XDP_PASS, Reason::PassLocal);
}

#[test]
fn anycast_route_passes_as_local() {
    typed_route_case(RouteKind::Anycast, XDP_PASS, Reason::PassLocal);
}

#[test]
fn multicast_route_passes_as_multicast() {
    typed_route_case(RouteKind::Multicast, XDP_PASS, Reason::PassMulticast);
}

#[test]
fn blackhole_route_drops_as_blackhole() {
    typed_route_case(RouteKind::Blackhole, XDP_DROP, Reason::DropBlackhole);
}

#[test]
fn unreachable_route_passes_as_unreachable() {
    typed_route_case(RouteKind::Unreachable, XDP_PASS, Reason::PassUnreachable);
}

#[test]
fn prohibit_route_passes_as_prohibit() {
    typed_route_case(RouteKind::Prohibit, XDP_PASS, Reason::PassProhibit);
}

#[test]
fn throw_route_passes_as_throw() {
    typed_route_case(RouteKind::Throw, XDP_PASS, Reason::PassThrow);
}

#[test]
fn unicast_route_with_missing_nexthop_group_passes_as_unsupported() {
    let mut fx = Fixture::new();
    fx.route_raw(
        RED_TABLE,
        "fd00:40::/48",
        Route {
            kind: RouteKind::Unicast as u16,
            mtu: 0,
            nexthop: 4242,
        },
    );
    let frame = udp6(&fx, fx.r0, RED_SRC6, "fd00:40::5");
    fx.expect_pass(fx.r0, &frame, Reason::PassUnsupported);
}

#[test]
fn longest_prefix_match_wins() {
    let mut fx = Fixture::new();
    let (r1, r2, r3) = (fx.r1, fx.r2, fx.r3);
    fx.unicast(
        RED_TABLE,
        "fd00:20::/32",
        &[nexthop(r1.ifindex, Some(ip(RED_GW6)))],
    );
    fx.unicast(
        RED_TABLE,
        "fd00:20:5::/48",
        &[nexthop(r2.ifindex, Some(ip("fd00:1:2::1")))],
    );
    fx.unicast(
        RED_TABLE,
        "fd00:20:5:8000::/49",
        &[nexthop(r3.ifindex, Some(ip("fd00:1:3::1")))],
    );
    fx.unicast(
        RED_TABLE,
        "fd00:20:5:8000::200/128",
        &[nexthop(r1.ifindex, Some(ip(RED_DIRECT6)))],
    );
    for (dst, egress, gw, host) in [
        ("fd00:20:6::1", r1, RED_GW6, 1),
        ("fd00:20:5::1", r2, "fd00:1:2::1", 1),
        ("fd00:20:5:7fff::1", r2, "fd00:1:2::1", 1),
        ("fd00:20:5:8000::1", r3, "fd00:1:3::1", 1),
        ("fd00:20:5:8000::200", r1, RED_DIRECT6, 7),
        ("fd00:20:5:8000::201", r3, "fd00:1:3::1", 1),
    ] {
        let frame = udp6(&fx, fx.r0, RED_SRC6, dst);
        let mac = neigh_mac(egress.id, host, true);
        fx.expect_forward(fx.r0, &frame, egress, gw, mac, RED);
    }
}

#[test]
fn more_specific_prefix_in_another_table_never_matches() {
    let mut fx = Fixture::new();
    let (r1, b1) = (fx.r1, fx.b1);
    fx.unicast(
        RED_TABLE,
        "fd00:30::/32",
        &[nexthop(r1.ifindex, Some(ip(RED_GW6)))],
    );
    for table in [0, BLUE_TABLE, RED_TABLE - 1, RED_TABLE + 1] {
        fx.unicast(
            table,
            "fd00:30:1::/48",
            &[nexthop(b1.ifindex, Some(ip(BLUE_GW6)))],
        );
    }
    let frame = udp6(&fx, fx.r0, RED_SRC6, "fd00:30:1::5");
    let mac = r1_gw_mac(&fx);
    fx.expect_forward(fx.r0, &frame, r1, RED_GW6, mac, RED);
}

#[test]
fn default_route_of_another_table_never_matches() {
    let mut fx = Fixture::new();
    let b1 = fx.b1.ifindex;
    for table in [0, BLUE_TABLE, RED_TABLE - 1, RED_TABLE + 1] {
        fx.unicast(table, "::/0", &[nexthop(b1, Some(ip(BLUE_GW6)))]);
    }
    let frame = udp6(&fx, fx.r0, RED_SRC6, "fd00:31::1");
    fx.expect_pass(fx.r0, &frame, Reason::PassNoRoute);
}

// Neighbours.

#[test]
fn gateway_without_neighbour_passes_as_no_neighbour() {
    let mut fx = Fixture::new();
    let r2 = fx.r2.ifindex;
    fx.unicast(
        RED_TABLE,
        "fd00:41::/48",
        &[nexthop(r2, Some(ip("fd00:1:2::99")))],
    );
    let frame = udp6(&fx, fx.r0, RED_SRC6, "fd00:41::5");
    fx.expect_pass(fx.r0, &frame, Reason::PassNoNeighbour);
}

#[test]
fn connected_destination_without_neighbour_passes_as_no_neighbour() {
    let mut fx = Fixture::new();
    let frame = udp6(&fx, fx.r0, RED_SRC6, "fd00:1:1::99");
    fx.expect_pass(fx.r0, &frame, Reason::PassNoNeighbour);
}

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

#[test]
fn ipv6_larger_than_the_egress_mtu_passes_as_mtu() {
    let mut fx = Fixture::new();
    fx.update_link(fx.r1, |l| l.mtu = 1280);
    let frame = udp6_of_ip_len(&fx, RED_REMOTE6, 1281);
    fx.expect_pass(fx.r0, &frame, Reason::PassMtu);
}

#[test]
fn ipv6_of_exactly_the_egress_mtu_is_forwarded() {
    let mut fx = Fixture::new();
    fx.update_link(fx.r1, |l| l.mtu = 1280);
    let frame = udp6_of_ip_len(&fx, RED_REMOTE6, 1280);
    let mac = r1_gw_mac(&fx);
    fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW6, mac, RED);
}

#[test]
fn route_mtu_tighter_than_the_link_passes_larger_packets_as_mtu() {
    let mut fx = Fixture::new();
    let r1 = fx.r1.ifindex;
    fx.route(
        RED_TABLE,
        "fd00:42::/48",
        RouteKind::Unicast,
        1300,
        &[nexthop(r1, Some(ip(RED_GW6)))],
    );
    let frame = udp6_of_ip_len(&fx, "fd00:42::5", 1301);
    fx.expect_pass(fx.r0, &frame, Reason::PassMtu);
}

#[test]
fn route_mtu_tighter_than_the_link_forwards_packets_that_fit() {
    let mut fx = Fixture::new();
    let r1 = fx.r1.ifindex;
    fx.route(
        RED_TABLE,
        "fd00:42::/48",
        RouteKind::Unicast,
        1300,
        &[nexthop(r1, Some(ip(RED_GW6)))],
    );
    let frame = udp6_of_ip_len(&fx, "fd00:42::5", 1300);
    let mac = r1_gw_mac(&fx);
    fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW6, mac, RED);
}

#[test]
fn route_mtu_looser_than_the_link_does_not_raise_it() {
    let mut fx = Fixture::new();
    fx.update_link(fx.r1, |l| l.mtu = 1280);
    let r1 = fx.r1.ifindex;
    fx.route(
        RED_TABLE,
        "fd00:42::/48",
        RouteKind::Unicast,
        1400,
        &[nexthop(r1, Some(ip(RED_GW6)))],
    );
    let frame = udp6_of_ip_len(&fx, "fd00:42::5", 1281);
    fx.expect_pass(fx.r0, &frame, Reason::PassMtu);
}

// Ingress link and VRF state.

#[test]
fn ipv6_forwarding_off_on_the_ingress_link_passes_as_forwarding_off() {
    let mut fx = Fixture::new();
    fx.update_link(fx.r0, |l| l.flags &= !LINK_FWD6);
    let frame = udp6(&fx, fx.r0, RED_SRC6, RED_REMOTE6);
    fx.expect_pass(fx.r0, &frame, Reason::PassForwardingOff);
    // IPv4 forwarding is still on.
    let v4 = fx.udp(fx.r0, RED_SRC4, RED_REMOTE4);
    let mac = neigh_mac(fx.r1.id, 1, false);
    fx.expect_forward(fx.r0, &v4, fx.r1, RED_GW4, mac, RED);
}

#[test]
fn ipv6_with_only_ipv4_forwarding_cleared_is_forwarded() {
    let mut fx = Fixture::new();
    fx.update_link(fx.r0, |l| l.flags &= !LINK_FWD4);
    let frame = udp6(&fx, fx.r0, RED_SRC6, RED_REMOTE6);
    let mac = r1_gw_mac(&fx);
    fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW6, mac, RED);
}

#[test]
fn degraded_vrf_passes_as_degraded() {
    let mut fx = Fixture::new();
    fx.update_vrf(RED, |v| v.flags |= VRF_DEGRADED);
    let frame = udp6(&fx, fx.r0, RED_SRC6, RED_REMOTE6);
    fx.expect_pass(fx.r0, &frame, Reason::PassDegraded);
}

#[test]
fn member_of_an_unconfigured_vrf_slot_passes_as_degraded() {
    let mut fx = Fixture::new();
    let r1 = fx.r1.ifindex;
    fx.unicast(0, "fd00:100::/32", &[nexthop(r1, Some(ip(RED_GW6)))]);
    fx.update_link(fx.r0, |l| l.vrf = INACTIVE_SLOT);
    let r0 = Iface {
        vrf: INACTIVE_SLOT,
        ..fx.r0
    };
    let frame = udp6(&fx, r0, RED_SRC6, RED_REMOTE6);
    fx.expect_pass(r0, &frame, Reason::PassDegraded);
}

// Egress.

#[test]
fn egress_link_down_passes_as_egress() {
    let mut fx = Fixture::new();
    fx.update_link(fx.r1, |l| l.flags &= !LINK_UP);
    let frame = udp6(&fx, fx.r0, RED_SRC6, RED_REMOTE6);
    fx.expect_pass(fx.r0, &frame, Reason::PassEgress);
}

#[test]
fn egress_not_a_redirect_target_passes_as_egress() {
    let mut fx = Fixture::new();
    fx.remove_tx_port(fx.r1);
    let frame = udp6(&fx, fx.r0, RED_SRC6, RED_REMOTE6);
    fx.expect_pass(fx.r0, &frame, Reason::PassEgress);
}

#[test]
fn egress_equal_to_ingress_passes_as_egress() {
    let mut fx = Fixture::new();
    let r0 = fx.r0;
    fx.neighbour(r0, "fd00:1::9", neigh_mac(r0.id, 9, true));
    let frame = udp6(&fx, r0, RED_SRC6, "fd00:1::9");
    fx.expect_pass(r0, &frame, Reason::PassEgress);
}

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

#[test]
fn route_leaked_to_a_blue_member_is_forwarded_out_of_it() {
    let mut fx = Fixture::new();
    let b1 = fx.b1;
    fx.unicast(
        RED_TABLE,
        "fd00:50::/48",
        &[nexthop(b1.ifindex, Some(ip(BLUE_GW6)))],
    );
    let frame = udp6(&fx, fx.r0, RED_SRC6, "fd00:50::5");
    let mac = neigh_mac(b1.id, 1, true);
    fx.expect_forward(fx.r0, &frame, b1, BLUE_GW6, mac, RED);
}

#[test]
fn route_through_the_blue_vrf_device_is_looked_up_again_in_blue() {
    let mut fx = Fixture::new();
    let (b1, vblue) = (fx.b1, fx.vblue);
    fx.unicast(RED_TABLE, "fd00:60::/32", &[nexthop(vblue.ifindex, None)]);
    fx.unicast(
        BLUE_TABLE,
        "fd00:60:1::/48",
        &[nexthop(b1.ifindex, Some(ip(BLUE_DIRECT6)))],
    );
    let frame = udp6(&fx, fx.r0, RED_SRC6, "fd00:60:1::5");
    let mac = neigh_mac(b1.id, 7, true);
    fx.expect_forward(fx.r0, &frame, b1, BLUE_DIRECT6, mac, BLUE);
}

#[test]
fn vrf_device_hop_without_a_route_in_the_target_vrf_passes_as_no_route() {
    let mut fx = Fixture::new();
    let vblue = fx.vblue.ifindex;
    fx.unicast(RED_TABLE, "fd00:60::/32", &[nexthop(vblue, None)]);
    let frame = udp6(&fx, fx.r0, RED_SRC6, "fd00:60:1::5");
    let r0 = fx.r0;
    // Counted in the ingress VRF, decided (and explained) in blue's table.
    let e = fx.expect_in_vrf(r0, &frame, XDP_PASS, Reason::PassNoRoute, RED);
    assert_eq!(e.vrf, BLUE, "decided in blue's table");
}

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

// VRF isolation.

#[test]
fn identical_destination_in_red_and_blue_leaves_through_each_vrfs_own_member() {
    let mut fx = Fixture::new();
    let (r1, b1) = (fx.r1, fx.b1);
    fx.unicast(
        RED_TABLE,
        "fd00:9::/48",
        &[nexthop(r1.ifindex, Some(ip("fd00:0:9::1")))],
    );
    fx.unicast(
        BLUE_TABLE,
        "fd00:9::/48",
        &[nexthop(b1.ifindex, Some(ip("fd00:0:9::1")))],
    );
    let (red_mac, blue_mac) = (neigh_mac(r1.id, 0x91, true), neigh_mac(b1.id, 0x91, true));
    fx.neighbour(r1, "fd00:0:9::1", red_mac);
    fx.neighbour(b1, "fd00:0:9::1", blue_mac);
    let from_red = udp6(&fx, fx.r0, "fd00:0:1::2", "fd00:9::5");
    fx.expect_forward(fx.r0, &from_red, r1, "fd00:0:9::1", red_mac, RED);
    let from_blue = udp6(&fx, fx.b0, "fd00:0:1::2", "fd00:9::5");
    fx.expect_forward(fx.b0, &from_blue, b1, "fd00:0:9::1", blue_mac, BLUE);
}

#[test]
fn destination_routed_only_in_blue_is_not_forwarded_from_red() {
    let mut fx = Fixture::new();
    let frame = udp6(&fx, fx.r0, RED_SRC6, BLUE_REMOTE6);
    fx.expect_pass(fx.r0, &frame, Reason::PassNoRoute);
    let frame = udp6(&fx, fx.b0, BLUE_SRC6, BLUE_REMOTE6);
    let mac = neigh_mac(fx.b1.id, 1, true);
    fx.expect_forward(fx.b0, &frame, fx.b1, BLUE_GW6, mac, BLUE);
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
