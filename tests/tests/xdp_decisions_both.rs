//! The XDP program's decisions that do not depend on the IP version, one set of cases run for
//! IPv4 and IPv6 ([`FAMILIES`]): each case is written once against a [`Family`] (its sources,
//! gateways and frames; IPv6 frames carry a flow label) with the prefixes each version uses.
//! Version-specific decisions stay in `xdp_decisions.rs` (IPv4) and `xdp_decisions_v6.rs`.
//! Every check is the fixture's: action, reason, egress and neighbour, the frame, the counters.

use tests::dataplane::*;
use vrf_common::{Reason, Route, RouteKind, LINK_UP, VRF_DEGRADED};
use vrf_user::dataplane::{XDP_DROP, XDP_PASS};

/// Runs `case` for IPv4, then IPv6, saying which on stderr (shown when one fails).
fn for_each_family(mut case: impl FnMut(Family)) {
    for fam in FAMILIES {
        eprintln!("--- {}", fam.name());
        case(fam);
    }
}

// Forwarding.

#[test]
fn forwards_via_gateway() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let frame = fam.udp(&fx, fx.r0, fam.red_src, fam.red_remote);
        let mac = fam.mac(fx.r1, 1);
        fx.expect_forward(fx.r0, &frame, fx.r1, fam.red_gw, mac, RED);
    });
}

#[test]
fn forwards_tcp_via_gateway() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let tcp = fx.spec(fx.r0, fam.red_src, fam.red_remote).tcp().unwrap();
        let frame = fam.finish(tcp);
        let mac = fam.mac(fx.r1, 1);
        fx.expect_forward(fx.r0, &frame, fx.r1, fam.red_gw, mac, RED);
    });
}

#[test]
fn forwards_to_directly_connected_destination() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let frame = fam.udp(&fx, fx.r0, fam.red_src, fam.red_direct);
        let mac = fam.mac(fx.r1, 7);
        fx.expect_forward(fx.r0, &frame, fx.r1, fam.red_direct, mac, RED);
    });
}

// Routes.

#[test]
fn destination_without_route_passes_as_no_route() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let dst = fam.pick("10.99.0.1", "fd00:99::1");
        let frame = fam.udp(&fx, fx.r0, fam.red_src, dst);
        fx.expect_pass(fx.r0, &frame, Reason::PassNoRoute);
    });
}

#[test]
fn each_route_kind_other_than_unicast_is_left_to_the_kernel_or_dropped_as_it_says() {
    for (kind, action, reason) in [
        (RouteKind::Local, XDP_PASS, Reason::PassLocal),
        (RouteKind::Anycast, XDP_PASS, Reason::PassLocal),
        (RouteKind::Multicast, XDP_PASS, Reason::PassMulticast),
        (RouteKind::Blackhole, XDP_DROP, Reason::DropBlackhole),
        (RouteKind::Unreachable, XDP_PASS, Reason::PassUnreachable),
        (RouteKind::Prohibit, XDP_PASS, Reason::PassProhibit),
        (RouteKind::Throw, XDP_PASS, Reason::PassThrow),
    ] {
        eprintln!("--- {kind:?}");
        for_each_family(|fam| typed_route_case(fam, kind, action, reason));
    }
}

#[test]
fn unicast_route_with_missing_nexthop_group_passes_as_unsupported() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        fx.route_raw(
            RED_TABLE,
            fam.pick("10.40.0.0/24", "fd00:40::/48"),
            Route {
                kind: RouteKind::Unicast as u16,
                mtu: 0,
                nexthop: 4242,
            },
        );
        let frame = fam.udp(&fx, fx.r0, fam.red_src, fam.pick("10.40.0.5", "fd00:40::5"));
        fx.expect_pass(fx.r0, &frame, Reason::PassUnsupported);
    });
}

#[test]
fn default_route_of_another_table_never_matches() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let b1 = fx.b1.ifindex;
        for table in [0, BLUE_TABLE, RED_TABLE - 1, RED_TABLE + 1] {
            let default = fam.pick("0.0.0.0/0", "::/0");
            fx.unicast(table, default, &[nexthop(b1, Some(ip(fam.blue_gw)))]);
        }
        let dst = fam.pick("10.31.0.1", "fd00:31::1");
        let frame = fam.udp(&fx, fx.r0, fam.red_src, dst);
        fx.expect_pass(fx.r0, &frame, Reason::PassNoRoute);
    });
}

// Neighbours.

#[test]
fn gateway_without_neighbour_passes_as_no_neighbour() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let r2 = fx.r2.ifindex;
        fx.unicast(
            RED_TABLE,
            fam.pick("10.41.0.0/24", "fd00:41::/48"),
            &[nexthop(r2, Some(ip(fam.pick("10.1.2.99", "fd00:1:2::99"))))],
        );
        let frame = fam.udp(&fx, fx.r0, fam.red_src, fam.pick("10.41.0.5", "fd00:41::5"));
        fx.expect_pass(fx.r0, &frame, Reason::PassNoNeighbour);
    });
}

#[test]
fn connected_destination_without_neighbour_passes_as_no_neighbour() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let dst = fam.pick("10.1.1.99", "fd00:1:1::99");
        let frame = fam.udp(&fx, fx.r0, fam.red_src, dst);
        fx.expect_pass(fx.r0, &frame, Reason::PassNoNeighbour);
    });
}

// MTU: a smaller link MTU of each version's (IPv6's minimum is 1280), a route MTU below it.

fn small_link_mtu(fam: Family) -> u32 {
    fam.pick(1000, 1280)
}

fn route_mtu(fam: Family) -> u16 {
    fam.pick(800, 1300)
}

/// r1's MTU as the writer writes it: the device's, and IPv6's never above it.
fn set_link_mtu(fx: &mut Fixture, mtu: u32) {
    fx.update_link(fx.r1, |l| {
        l.mtu = mtu;
        l.mtu6 = l.mtu6.min(mtu);
    });
}

#[test]
fn ipv6_forwarding_uses_the_links_ipv6_mtu_and_ipv4_ignores_it() {
    // `net.ipv6.conf.r1.mtu = 1280` under a 1500 device MTU: ip6_forward checks 1280.
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        fx.update_link(fx.r1, |l| l.mtu6 = 1280);
        let big = fam.udp_of_ip_len(&fx, fam.red_remote, 1281);
        let fits = fam.udp_of_ip_len(&fx, fam.red_remote, 1280);
        let mac = fam.mac(fx.r1, 1);
        if fam.v6 {
            fx.expect_pass(fx.r0, &big, Reason::PassMtu);
        } else {
            fx.expect_forward(fx.r0, &big, fx.r1, fam.red_gw, mac, RED);
        }
        fx.expect_forward(fx.r0, &fits, fx.r1, fam.red_gw, mac, RED);
    });
}

#[test]
fn larger_than_the_egress_mtu_passes_as_mtu() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let mtu = small_link_mtu(fam);
        set_link_mtu(&mut fx, mtu);
        let frame = fam.udp_of_ip_len(&fx, fam.red_remote, mtu as usize + 1);
        fx.expect_pass(fx.r0, &frame, Reason::PassMtu);
    });
}

#[test]
fn exactly_the_egress_mtu_is_forwarded() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let mtu = small_link_mtu(fam);
        set_link_mtu(&mut fx, mtu);
        let frame = fam.udp_of_ip_len(&fx, fam.red_remote, mtu as usize);
        let mac = fam.mac(fx.r1, 1);
        fx.expect_forward(fx.r0, &frame, fx.r1, fam.red_gw, mac, RED);
    });
}

/// A route (10.42.0.0/24, fd00:42::/48) via r1's gateway with route MTU `mtu`.
fn route_with_mtu(fx: &mut Fixture, fam: Family, mtu: u16) {
    let r1 = fx.r1.ifindex;
    let prefix = fam.pick("10.42.0.0/24", "fd00:42::/48");
    fx.route(
        RED_TABLE,
        prefix,
        RouteKind::Unicast,
        mtu,
        &[nexthop(r1, Some(ip(fam.red_gw)))],
    );
}

#[test]
fn route_mtu_tighter_than_the_link_passes_larger_packets_as_mtu() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        route_with_mtu(&mut fx, fam, route_mtu(fam));
        let dst = fam.pick("10.42.0.5", "fd00:42::5");
        let frame = fam.udp_of_ip_len(&fx, dst, route_mtu(fam) as usize + 1);
        fx.expect_pass(fx.r0, &frame, Reason::PassMtu);
    });
}

#[test]
fn route_mtu_tighter_than_the_link_forwards_packets_that_fit() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        route_with_mtu(&mut fx, fam, route_mtu(fam));
        let dst = fam.pick("10.42.0.5", "fd00:42::5");
        let frame = fam.udp_of_ip_len(&fx, dst, route_mtu(fam) as usize);
        let mac = fam.mac(fx.r1, 1);
        fx.expect_forward(fx.r0, &frame, fx.r1, fam.red_gw, mac, RED);
    });
}

#[test]
fn route_mtu_looser_than_the_link_does_not_raise_it() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let mtu = small_link_mtu(fam);
        set_link_mtu(&mut fx, mtu);
        route_with_mtu(&mut fx, fam, 1400);
        let dst = fam.pick("10.42.0.5", "fd00:42::5");
        let frame = fam.udp_of_ip_len(&fx, dst, mtu as usize + 1);
        fx.expect_pass(fx.r0, &frame, Reason::PassMtu);
    });
}

// Ingress link and VRF state.

#[test]
fn forwarding_off_on_the_ingress_link_passes_as_forwarding_off_for_that_version_only() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        fx.update_link(fx.r0, |l| l.flags &= !fam.fwd_flag);
        let frame = fam.udp(&fx, fx.r0, fam.red_src, fam.red_remote);
        fx.expect_pass(fx.r0, &frame, Reason::PassForwardingOff);
        // The other version's forwarding is still on.
        let other = fam.other();
        let frame = other.udp(&fx, fx.r0, other.red_src, other.red_remote);
        let mac = other.mac(fx.r1, 1);
        fx.expect_forward(fx.r0, &frame, fx.r1, other.red_gw, mac, RED);
    });
}

#[test]
fn degraded_vrf_passes_as_degraded() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        fx.update_vrf(RED, |v| v.flags |= VRF_DEGRADED);
        let frame = fam.udp(&fx, fx.r0, fam.red_src, fam.red_remote);
        fx.expect_pass(fx.r0, &frame, Reason::PassDegraded);
        // Blue is unaffected.
        let blue = fam.udp(&fx, fx.b0, fam.blue_src, fam.blue_remote);
        let mac = fam.mac(fx.b1, 1);
        fx.expect_forward(fx.b0, &blue, fx.b1, fam.blue_gw, mac, BLUE);
    });
}

#[test]
fn member_of_an_unconfigured_vrf_slot_passes_as_degraded() {
    // Slot 3 was never set: table 0, not active. Table 0 does route the destination.
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let r1 = fx.r1.ifindex;
        let remote = fam.pick("10.100.0.0/16", "fd00:100::/32");
        fx.unicast(0, remote, &[nexthop(r1, Some(ip(fam.red_gw)))]);
        fx.update_link(fx.r0, |l| l.vrf = INACTIVE_SLOT);
        let r0 = Iface {
            vrf: INACTIVE_SLOT,
            ..fx.r0
        };
        let frame = fam.udp(&fx, r0, fam.red_src, fam.red_remote);
        fx.expect_pass(r0, &frame, Reason::PassDegraded);
    });
}

// Egress.

#[test]
fn egress_link_down_passes_as_egress() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        fx.update_link(fx.r1, |l| l.flags &= !LINK_UP);
        let frame = fam.udp(&fx, fx.r0, fam.red_src, fam.red_remote);
        fx.expect_pass(fx.r0, &frame, Reason::PassEgress);
    });
}

#[test]
fn egress_not_a_redirect_target_passes_as_egress() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        fx.remove_tx_port(fx.r1);
        let frame = fam.udp(&fx, fx.r0, fam.red_src, fam.red_remote);
        fx.expect_pass(fx.r0, &frame, Reason::PassEgress);
    });
}

#[test]
fn egress_equal_to_ingress_passes_as_egress() {
    // The kernel sends an ICMP redirect for these.
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let r0 = fx.r0;
        let dst = fam.pick("10.1.0.9", "fd00:1::9");
        fx.neighbour(r0, dst, fam.mac(r0, 9));
        let frame = fam.udp(&fx, r0, fam.red_src, dst);
        fx.expect_pass(r0, &frame, Reason::PassEgress);
    });
}

// Leaks between VRFs.

#[test]
fn route_leaked_to_a_blue_member_is_forwarded_out_of_it() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let b1 = fx.b1;
        fx.unicast(
            RED_TABLE,
            fam.pick("10.50.0.0/24", "fd00:50::/48"),
            &[nexthop(b1.ifindex, Some(ip(fam.blue_gw)))],
        );
        let frame = fam.udp(&fx, fx.r0, fam.red_src, fam.pick("10.50.0.5", "fd00:50::5"));
        let mac = fam.mac(b1, 1);
        // Decided by red's table alone.
        fx.expect_forward(fx.r0, &frame, b1, fam.blue_gw, mac, RED);
    });
}

#[test]
fn route_through_the_blue_vrf_device_is_looked_up_again_in_blue() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let (b1, vblue) = (fx.b1, fx.vblue);
        let via_device = fam.pick("10.60.0.0/16", "fd00:60::/32");
        fx.unicast(RED_TABLE, via_device, &[nexthop(vblue.ifindex, None)]);
        // Blue's own route for the destination decides the egress and the neighbour.
        fx.unicast(
            BLUE_TABLE,
            fam.pick("10.60.1.0/24", "fd00:60:1::/48"),
            &[nexthop(b1.ifindex, Some(ip(fam.blue_direct)))],
        );
        let dst = fam.pick("10.60.1.5", "fd00:60:1::5");
        let frame = fam.udp(&fx, fx.r0, fam.red_src, dst);
        let mac = fam.mac(b1, 7);
        fx.expect_forward(fx.r0, &frame, b1, fam.blue_direct, mac, BLUE);
    });
}

#[test]
fn vrf_device_hop_without_a_route_in_the_target_vrf_passes_as_no_route() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let vblue = fx.vblue.ifindex;
        let via_device = fam.pick("10.60.0.0/16", "fd00:60::/32");
        fx.unicast(RED_TABLE, via_device, &[nexthop(vblue, None)]);
        let dst = fam.pick("10.60.1.5", "fd00:60:1::5");
        let frame = fam.udp(&fx, fx.r0, fam.red_src, dst);
        let r0 = fx.r0;
        // Counted in the ingress VRF, decided (and explained) in blue's table.
        let e = fx.expect_in_vrf(r0, &frame, XDP_PASS, Reason::PassNoRoute, RED);
        assert_eq!(e.vrf, BLUE, "decided in blue's table");
    });
}

// VRF isolation.

#[test]
fn destination_routed_only_in_blue_is_not_forwarded_from_red() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let frame = fam.udp(&fx, fx.r0, fam.red_src, fam.blue_remote);
        fx.expect_pass(fx.r0, &frame, Reason::PassNoRoute);
        // Control: from blue it is forwarded.
        let frame = fam.udp(&fx, fx.b0, fam.blue_src, fam.blue_remote);
        let mac = fam.mac(fx.b1, 1);
        fx.expect_forward(fx.b0, &frame, fx.b1, fam.blue_gw, mac, BLUE);
    });
}

#[test]
fn identical_destination_in_red_and_blue_leaves_through_each_vrfs_own_member() {
    // Same prefix, same gateway address in both VRFs: only the tables tell them apart.
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let (r1, b1) = (fx.r1, fx.b1);
        let prefix = fam.pick("10.9.0.0/24", "fd00:9::/48");
        let gw = fam.pick("10.0.9.1", "fd00:0:9::1");
        fx.unicast(RED_TABLE, prefix, &[nexthop(r1.ifindex, Some(ip(gw)))]);
        fx.unicast(BLUE_TABLE, prefix, &[nexthop(b1.ifindex, Some(ip(gw)))]);
        let (red_mac, blue_mac) = (fam.mac(r1, 0x91), fam.mac(b1, 0x91));
        fx.neighbour(r1, gw, red_mac);
        fx.neighbour(b1, gw, blue_mac);
        let (src, dst) = fam.pick(("10.0.0.2", "10.9.0.5"), ("fd00:0:1::2", "fd00:9::5"));
        let from_red = fam.udp(&fx, fx.r0, src, dst);
        fx.expect_forward(fx.r0, &from_red, r1, gw, red_mac, RED);
        let from_blue = fam.udp(&fx, fx.b0, src, dst);
        fx.expect_forward(fx.b0, &from_blue, b1, gw, blue_mac, BLUE);
    });
}

// Martians and link-local addresses: each version's own, one table.

fn via_r1_gateway(fx: &mut Fixture, fam: Family, prefix: &str) {
    let r1 = fx.r1.ifindex;
    fx.unicast(RED_TABLE, prefix, &[nexthop(r1, Some(ip(fam.red_gw)))]);
}

#[test]
fn martian_sources_pass_as_martian() {
    for (fam, sources) in [
        // The zero network, unspecified, loopback, multicast, limited broadcast.
        (
            V4,
            &[
                "0.1.2.3",
                "0.0.0.0",
                "127.0.0.1",
                "224.0.0.9",
                "255.255.255.255",
            ][..],
        ),
        // Loopback, unspecified, v4-mapped, multicast.
        (V6, &["::1", "::", "::ffff:10.1.0.2", "ff02::1"][..]),
    ] {
        for src in sources {
            eprintln!("--- {src}");
            let mut fx = Fixture::new();
            let frame = fam.udp(&fx, fx.r0, src, fam.red_remote);
            fx.expect_pass(fx.r0, &frame, Reason::PassMartian);
        }
    }
}

#[test]
fn martian_destinations_pass_as_martian_though_a_route_covers_them() {
    for (fam, route, dst) in [
        (V4, "0.0.0.0/8", "0.1.2.3"),
        (V4, "127.0.0.0/8", "127.0.0.5"),
        (V6, "::1/128", "::1"),
        (V6, "::/128", "::"),
        (V6, "::ffff:0:0/96", "::ffff:10.100.0.9"),
    ] {
        eprintln!("--- {dst}");
        let mut fx = Fixture::new();
        via_r1_gateway(&mut fx, fam, route);
        let frame = fam.udp(&fx, fx.r0, fam.red_src, dst);
        fx.expect_pass(fx.r0, &frame, Reason::PassMartian);
    }
}

#[test]
fn link_local_destination_passes_as_link_local() {
    for (fam, route, dsts) in [
        (V4, "169.254.0.0/16", &["169.254.10.20"][..]),
        (V6, "fe80::/10", &["fe80::5", "febf:ffff::1"][..]),
    ] {
        let mut fx = Fixture::new();
        via_r1_gateway(&mut fx, fam, route);
        for dst in dsts {
            eprintln!("--- {dst}");
            let frame = fam.udp(&fx, fx.r0, fam.red_src, dst);
            fx.expect_pass(fx.r0, &frame, Reason::PassLinkLocal);
        }
    }
}

#[test]
fn link_local_source_passes_as_link_local() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let src = fam.pick("169.254.1.1", "fe80::2");
        let frame = fam.udp(&fx, fx.r0, src, fam.red_remote);
        fx.expect_pass(fx.r0, &frame, Reason::PassLinkLocal);
    });
}

// Longest prefix match, inside one table only.

#[test]
fn longest_prefix_match_wins() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let (r1, r2, r3) = (fx.r1, fx.r2, fx.r3);
        let gw2 = fam.pick("10.1.2.1", "fd00:1:2::1");
        let gw3 = fam.pick("10.1.3.1", "fd00:1:3::1");
        let prefixes = fam.pick(
            [
                "10.20.0.0/16",
                "10.20.5.0/24",
                "10.20.5.128/25",
                "10.20.5.200/32",
            ],
            [
                "fd00:20::/32",
                "fd00:20:5::/48",
                "fd00:20:5:8000::/49",
                "fd00:20:5:8000::200/128",
            ],
        );
        let paths = [(r1, fam.red_gw), (r2, gw2), (r3, gw3), (r1, fam.red_direct)];
        for (prefix, (link, gw)) in prefixes.into_iter().zip(paths) {
            fx.unicast(RED_TABLE, prefix, &[nexthop(link.ifindex, Some(ip(gw)))]);
        }
        let probes: &[(&str, Iface, &str, u8)] = if fam.v6 {
            &[
                ("fd00:20:6::1", r1, RED_GW6, 1),
                ("fd00:20:5::1", r2, gw2, 1),
                ("fd00:20:5:7fff::1", r2, gw2, 1),
                ("fd00:20:5:8000::1", r3, gw3, 1),
                ("fd00:20:5:8000::200", r1, RED_DIRECT6, 7),
                ("fd00:20:5:8000::201", r3, gw3, 1),
            ]
        } else {
            &[
                ("10.20.6.1", r1, RED_GW4, 1),
                ("10.20.5.1", r2, gw2, 1),
                ("10.20.5.127", r2, gw2, 1),
                ("10.20.5.128", r3, gw3, 1),
                ("10.20.5.199", r3, gw3, 1),
                ("10.20.5.200", r1, RED_DIRECT4, 7),
                ("10.20.5.201", r3, gw3, 1),
            ]
        };
        for &(dst, egress, gw, host) in probes {
            let frame = fam.udp(&fx, fx.r0, fam.red_src, dst);
            let mac = fam.mac(egress, host);
            fx.expect_forward(fx.r0, &frame, egress, gw, mac, RED);
        }
    });
}

#[test]
fn more_specific_prefix_in_another_table_never_matches() {
    for_each_family(|fam| {
        let mut fx = Fixture::new();
        let (r1, b1) = (fx.r1, fx.b1);
        let red = fam.pick("10.30.0.0/16", "fd00:30::/32");
        fx.unicast(RED_TABLE, red, &[nexthop(r1.ifindex, Some(ip(fam.red_gw)))]);
        // Blue's table, tables next to red's id, and table 0.
        let others: &[(u32, &str)] = if fam.v6 {
            &[
                (0, "fd00:30:1::/48"),
                (BLUE_TABLE, "fd00:30:1::/48"),
                (RED_TABLE - 1, "fd00:30:1::/48"),
                (RED_TABLE + 1, "fd00:30:1::/48"),
            ]
        } else {
            &[
                (BLUE_TABLE, "10.30.1.0/24"),
                (0, "10.30.1.0/25"),
                (RED_TABLE - 1, "10.30.1.0/25"),
                (RED_TABLE + 1, "10.30.1.0/25"),
                (RED_TABLE | 0x8000_0000, "10.30.1.0/25"),
            ]
        };
        for &(table, prefix) in others {
            fx.unicast(table, prefix, &[nexthop(b1.ifindex, Some(ip(fam.blue_gw)))]);
        }
        let dst = fam.pick("10.30.1.5", "fd00:30:1::5");
        let frame = fam.udp(&fx, fx.r0, fam.red_src, dst);
        let mac = fam.mac(r1, 1);
        fx.expect_forward(fx.r0, &frame, r1, fam.red_gw, mac, RED);
    });
}
