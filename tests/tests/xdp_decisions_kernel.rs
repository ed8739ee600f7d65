//! What the kernel applies around the route lookup (issue #11), packet by packet through
//! BPF_PROG_TEST_RUN: a VRF whose traffic of one family netfilter, an xfrm policy or an earlier
//! rule could act on goes to the kernel for that family only, and `disable_ipv6` on the ingress
//! or egress link sends IPv6 to the kernel (which drops it). The fixture is `tests::dataplane`.

use tests::dataplane::*;
use vrf_common::{
    Reason, LINK_V6_DISABLED, VRF_IPSEC4, VRF_IPSEC6, VRF_KERNEL4, VRF_KERNEL6, VRF_NETFILTER4,
    VRF_NETFILTER6, VRF_RULE4, VRF_RULE6,
};
use vrf_user::dataplane::XDP_PASS;

fn red4(fx: &Fixture) -> Vec<u8> {
    fx.udp(fx.r0, RED_SRC4, RED_REMOTE4)
}

fn red6(fx: &Fixture) -> Vec<u8> {
    fx.udp(fx.r0, RED_SRC6, RED_REMOTE6)
}

/// Red's IPv4 and IPv6 through r1's gateway, forwarded.
fn expect_red_forwarded(fx: &mut Fixture, v4: bool, v6: bool) {
    let r1 = fx.r1;
    if v4 {
        let f = red4(fx);
        fx.expect_forward(fx.r0, &f, r1, RED_GW4, neigh_mac(r1.id, 1, false), RED);
    }
    if v6 {
        let f = red6(fx);
        fx.expect_forward(fx.r0, &f, r1, RED_GW6, neigh_mac(r1.id, 1, true), RED);
    }
}

fn expect_blue_forwarded(fx: &mut Fixture) {
    let b1 = fx.b1;
    let f = fx.udp(fx.b0, BLUE_SRC4, BLUE_REMOTE4);
    fx.expect_forward(fx.b0, &f, b1, BLUE_GW4, neigh_mac(b1.id, 1, false), BLUE);
    let f = fx.udp(fx.b0, BLUE_SRC6, BLUE_REMOTE6);
    fx.expect_forward(fx.b0, &f, b1, BLUE_GW6, neigh_mac(b1.id, 1, true), BLUE);
}

// Per-VRF, per-family kernel flags.

#[test]
fn netfilter_on_ipv4_passes_red_ipv4_only() {
    let mut fx = Fixture::new();
    fx.update_vrf(RED, |v| v.flags |= VRF_NETFILTER4);
    let f = red4(&fx);
    fx.expect_pass(fx.r0, &f, Reason::PassNetfilter);
    // IPv6 of the same VRF and the other VRF keep the fast path.
    expect_red_forwarded(&mut fx, false, true);
    expect_blue_forwarded(&mut fx);
}

#[test]
fn netfilter_on_ipv6_passes_red_ipv6_only() {
    let mut fx = Fixture::new();
    fx.update_vrf(RED, |v| v.flags |= VRF_NETFILTER6);
    let f = red6(&fx);
    fx.expect_pass(fx.r0, &f, Reason::PassNetfilter);
    expect_red_forwarded(&mut fx, true, false);
    expect_blue_forwarded(&mut fx);
}

#[test]
fn ipsec_policy_passes_the_family_as_ipsec() {
    let mut fx = Fixture::new();
    fx.update_vrf(RED, |v| v.flags |= VRF_IPSEC4 | VRF_IPSEC6);
    let f = red4(&fx);
    fx.expect_pass(fx.r0, &f, Reason::PassIpsec);
    let f = red6(&fx);
    fx.expect_pass(fx.r0, &f, Reason::PassIpsec);
    expect_blue_forwarded(&mut fx);
}

#[test]
fn earlier_policy_rule_passes_the_family_as_policy_rule() {
    let mut fx = Fixture::new();
    fx.update_vrf(RED, |v| v.flags |= VRF_RULE6);
    let f = red6(&fx);
    fx.expect_pass(fx.r0, &f, Reason::PassPolicyRule);
    expect_red_forwarded(&mut fx, true, false);
    fx.update_vrf(RED, |v| v.flags = (v.flags & !VRF_RULE6) | VRF_RULE4);
    let f = red4(&fx);
    fx.expect_pass(fx.r0, &f, Reason::PassPolicyRule);
    expect_red_forwarded(&mut fx, false, true);
}

#[test]
fn netfilter_is_counted_before_ipsec_and_rules() {
    let mut fx = Fixture::new();
    fx.update_vrf(RED, |v| v.flags |= VRF_KERNEL4 | VRF_KERNEL6);
    let f = red4(&fx);
    fx.expect_pass(fx.r0, &f, Reason::PassNetfilter);
    let f = red6(&fx);
    fx.expect_pass(fx.r0, &f, Reason::PassNetfilter);
}

#[test]
fn clearing_the_kernel_flags_brings_the_fast_path_back() {
    let mut fx = Fixture::new();
    fx.update_vrf(RED, |v| v.flags |= VRF_KERNEL4 | VRF_KERNEL6);
    let f = red4(&fx);
    fx.expect_pass(fx.r0, &f, Reason::PassNetfilter);
    fx.update_vrf(RED, |v| v.flags &= !(VRF_KERNEL4 | VRF_KERNEL6));
    expect_red_forwarded(&mut fx, true, true);
}

#[test]
fn vrf_device_hop_into_a_vrf_under_netfilter_passes_as_netfilter() {
    let mut fx = Fixture::new();
    fx.red_into_blue();
    fx.blue_via_b1(BLUE_GW4);
    // Blue's IPv6 flag does not concern an IPv4 packet leaked into blue.
    fx.update_vrf(BLUE, |v| v.flags |= VRF_NETFILTER6);
    let frame = fx.udp(fx.r0, RED_SRC4, "10.60.1.5");
    let r0 = fx.r0;
    let mac = neigh_mac(fx.b1.id, 1, false);
    let b1i = fx.b1;
    fx.expect_forward(r0, &frame, b1i, BLUE_GW4, mac, BLUE);
    fx.update_vrf(BLUE, |v| v.flags |= VRF_NETFILTER4);
    let e = fx.expect_in_vrf(r0, &frame, XDP_PASS, Reason::PassNetfilter, RED);
    assert_eq!(e.vrf, BLUE, "decided by blue's state");
}

// disable_ipv6.

#[test]
fn ipv6_on_an_ingress_link_with_ipv6_disabled_passes_as_ipv6_disabled() {
    let mut fx = Fixture::new();
    fx.update_link(fx.r0, |l| l.flags |= LINK_V6_DISABLED);
    let f = red6(&fx);
    fx.expect_pass(fx.r0, &f, Reason::PassIpv6Disabled);
    // IPv4 on the same link is not concerned.
    expect_red_forwarded(&mut fx, true, false);
    fx.update_link(fx.r0, |l| l.flags &= !LINK_V6_DISABLED);
    expect_red_forwarded(&mut fx, true, true);
}

#[test]
fn ipv6_to_an_egress_link_with_ipv6_disabled_passes_as_ipv6_disabled() {
    let mut fx = Fixture::new();
    fx.update_link(fx.r1, |l| l.flags |= LINK_V6_DISABLED);
    let f = red6(&fx);
    fx.expect_pass(fx.r0, &f, Reason::PassIpv6Disabled);
    expect_red_forwarded(&mut fx, true, false);
    fx.update_link(fx.r1, |l| l.flags &= !LINK_V6_DISABLED);
    expect_red_forwarded(&mut fx, true, true);
}

#[test]
fn ipv4_via_an_ipv6_gateway_on_a_link_with_ipv6_disabled_passes_as_ipv6_disabled() {
    let mut fx = Fixture::new();
    fx.red_via_fe80_on_r2("10.70.0.0/24", true);
    let r2 = fx.r2;
    fx.update_link(r2, |l| l.flags |= LINK_V6_DISABLED);
    let frame = fx.udp(fx.r0, RED_SRC4, "10.70.0.5");
    fx.expect_pass(fx.r0, &frame, Reason::PassIpv6Disabled);
    // An IPv4 gateway on the same link is not concerned.
    fx.unicast(
        RED_TABLE,
        "10.70.0.0/24",
        &[nexthop(r2.ifindex, Some(ip("10.1.2.1")))],
    );
    let mac4 = neigh_mac(r2.id, 1, false);
    fx.neighbour(r2, "10.1.2.1", mac4);
    fx.expect_forward(fx.r0, &frame, r2, "10.1.2.1", mac4, RED);
}
