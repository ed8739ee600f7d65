//! VLAN members and bonds, packet by packet through BPF_PROG_TEST_RUN on the data-plane fixture
//! (`tests::dataplane`). The host kernel has no 8021q or bonding, so the members here exist only
//! in the maps, as vrfd writes them for a kernel's `r3.100`: trunk `r3` (no member itself) carries
//! `red100` (VLAN 100, red), `blue200` (VLAN 200, blue) and `red300` (VLAN 300, red); red100 and
//! blue200 use the same subnet 10.50.0.0/24 with the same neighbour addresses, so a frame decided
//! in the wrong VRF would show. The real devices are in the VM lane (vm/tests/40-vlan-bond.sh).

use tests::dataplane::*;
use vrf_common::{
    Counters, Direction, Link, Reason, LINK_FWD4, LINK_FWD6, LINK_MEMBER, LINK_TAGS_HIDDEN,
    LINK_TRUNK, LINK_UP, LINK_VLAN,
};
use vrf_user::dataplane::{Explanation, XdpAction, XDP_PASS, XDP_REDIRECT};

const VLAN_FLAGS: u16 = LINK_UP | LINK_MEMBER | LINK_FWD4 | LINK_FWD6 | LINK_VLAN;
/// The shared subnet of red100 and blue200, its sender and a host on it.
const SHARED_SRC4: &str = "10.50.0.2";
const SHARED_HOST4: &str = "10.50.0.9";
const SHARED_SRC6: &str = "fd00:50::2";

/// A VLAN member that exists only in the maps.
fn member(name: &'static str, ifindex: u32, vrf: u32, stats_slot: u32, id: u8) -> Iface {
    Iface {
        name,
        ifindex,
        mac: [0x02, 0, 0, 0x0a, id, 1],
        stats_slot,
        vrf,
        id,
    }
}

struct Vlans {
    fx: Fixture,
    trunk: Iface,
    red100: Iface,
    blue200: Iface,
    red300: Iface,
}

impl Vlans {
    fn new() -> Vlans {
        let mut fx = Fixture::new();
        let trunk = fx.r3;
        let red100 = member("red100", 9100, RED, 40, 0x64);
        let blue200 = member("blue200", 9200, BLUE, 41, 0xc8);
        let red300 = member("red300", 9300, RED, 42, 0x2c);
        // The trunk serves VLAN members and is itself in no VRF.
        fx.update_link(trunk, |l| l.flags = LINK_UP | LINK_TRUNK);
        for (m, vid, table, subnet) in [
            (red100, 100, RED_TABLE, "10.50.0.0/24"),
            (blue200, 200, BLUE_TABLE, "10.50.0.0/24"),
            (red300, 300, RED_TABLE, "10.53.0.0/24"),
        ] {
            let link = Link {
                vrf: m.vrf,
                stats_slot: m.stats_slot,
                mtu: MTU,
                mac: m.mac,
                flags: VLAN_FLAGS,
                mtu6: MTU,
            };
            fx.dp.maps.set_link(m.ifindex, &link).unwrap();
            fx.dp.maps.set_port(trunk.ifindex, vid, m.ifindex).unwrap();
            fx.dp
                .maps
                .set_vlan_port(m.ifindex, trunk.ifindex, vid)
                .unwrap();
            fx.unicast(table, subnet, &[nexthop(m.ifindex, None)]);
        }
        fx.unicast(RED_TABLE, "fd00:50::/64", &[nexthop(red100.ifindex, None)]);
        // Same addresses, different neighbours: the MAC tells which VRF sent the frame.
        fx.neighbour(red100, SHARED_SRC4, neigh_mac(red100.id, 2, false));
        fx.neighbour(red100, SHARED_HOST4, neigh_mac(red100.id, 9, false));
        fx.neighbour(blue200, SHARED_SRC4, neigh_mac(blue200.id, 2, false));
        fx.neighbour(blue200, SHARED_HOST4, neigh_mac(blue200.id, 9, false));
        fx.neighbour(red300, "10.53.0.9", neigh_mac(red300.id, 9, false));
        {
            let Fixture { ns, dp, .. } = &mut fx;
            ns.run_in(|| dp.maps.add_tx_port(trunk.ifindex)).unwrap();
        }
        Vlans {
            fx,
            trunk,
            red100,
            blue200,
            red300,
        }
    }

    /// An untagged UDP frame from `src` to `dst`, sent to `to`'s MAC.
    fn frame(&self, to: Iface, src: &str, dst: &str) -> Vec<u8> {
        let mut s = self.fx.spec(to, src, dst);
        s.dst_mac = to.mac;
        s.udp().unwrap()
    }

    fn counters(&self, m: Iface) -> Counters {
        self.fx
            .dp
            .maps
            .link_counters(m.stats_slot, Direction::Ingress)
            .unwrap()
    }

    fn vrf_counters(&self, slot: u32) -> Counters {
        self.fx
            .dp
            .maps
            .vrf_counters(slot, Direction::Ingress)
            .unwrap()
    }

    /// Run both programs on `frame` arriving on the trunk: (action, explanation). Both must
    /// agree on the action and leave the same frame.
    fn run_on(&mut self, port: Iface, frame: &[u8]) -> (XdpAction, Explanation) {
        let run = self.fx.run(port.ifindex, frame);
        let e = self.fx.explain(port.ifindex, frame).unwrap();
        assert_eq!(
            action_name(run.action),
            action_name(e.action),
            "both programs decide alike"
        );
        assert_eq!(hex(&run.frame), hex(&e.frame), "both leave the same frame");
        (run.action, e)
    }

    /// `frame` on `port` passes untouched for `reason`, counted once on `counted` (a link).
    fn expect_pass(&mut self, port: Iface, frame: &[u8], reason: Reason, counted: Iface) {
        let before = self.counters(counted);
        let (action, e) = self.run_on(port, frame);
        assert_eq!(
            (action_name(action), e.reason),
            ("XDP_PASS", reason),
            "frame {}",
            hex(frame)
        );
        assert_eq!(hex(&e.frame), hex(frame), "a passed frame is untouched");
        let after = self.counters(counted);
        for r in [Reason::Rx, reason] {
            assert_eq!(
                after.by_reason[r as usize].packets,
                before.by_reason[r as usize].packets + 1,
                "{} counted under {r:?} on {}",
                hex(frame),
                counted.name
            );
        }
    }
}

/// `frame` with an 802.1Q tag of `tpid` and `tci` inserted after the MACs.
fn tagged(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    let t = tpid.to_be_bytes();
    let c = tci.to_be_bytes();
    f.splice(12..12, [t[0], t[1], c[0], c[1]]);
    f
}

/// The frame without its (first) tag, and the tag's (TPID, TCI).
fn untag(frame: &[u8]) -> (Vec<u8>, u16, u16) {
    let tpid = u16::from_be_bytes([frame[12], frame[13]]);
    let tci = u16::from_be_bytes([frame[14], frame[15]]);
    let mut f = frame.to_vec();
    f.drain(12..16);
    (f, tpid, tci)
}

#[test]
fn a_tagged_frame_is_popped_and_forwarded_in_its_members_vrf() {
    let mut v = Vlans::new();
    let plain = v.frame(v.red100, SHARED_SRC4, RED_REMOTE4);
    let frame = tagged(&plain, 0x8100, 100);
    let (red_before, m_before, trunk_before) = (
        v.vrf_counters(RED),
        v.counters(v.red100),
        v.counters(v.trunk),
    );
    let (action, e) = v.run_on(v.trunk, &frame);
    assert_eq!((action, e.reason), (XDP_REDIRECT, Reason::Forwarded));
    assert_eq!(
        (e.oif, e.neighbour, e.vrf),
        (Some(v.fx.r1.ifindex), Some(ip(RED_GW4)), RED)
    );
    // Untagged out of r1, rewritten exactly as an untagged frame would be.
    assert_eq!(e.frame.len(), plain.len(), "the tag is gone");
    assert_forwarded(
        &plain,
        &e.frame,
        v.fx.r1.mac,
        neigh_mac(v.fx.r1.id, 1, false),
    );
    // Counted on the VLAN member and its VRF, not on the trunk.
    let f = Reason::Forwarded as usize;
    assert_eq!(
        v.counters(v.red100).by_reason[f].packets,
        m_before.by_reason[f].packets + 1
    );
    assert_eq!(
        v.counters(v.red100).by_reason[f].bytes,
        m_before.by_reason[f].bytes + frame.len() as u64
    );
    assert_eq!(
        v.vrf_counters(RED).by_reason[f].packets,
        red_before.by_reason[f].packets + 1
    );
    assert_eq!(
        v.counters(v.trunk),
        trunk_before,
        "the trunk counts nothing"
    );
}

#[test]
fn tagged_ipv6_is_popped_and_forwarded_too() {
    let mut v = Vlans::new();
    let plain = v.frame(v.red100, SHARED_SRC6, RED_REMOTE6);
    let (action, e) = v.run_on(v.trunk, &tagged(&plain, 0x8100, 100));
    assert_eq!((action, e.reason), (XDP_REDIRECT, Reason::Forwarded));
    assert_eq!((e.oif, e.vrf), (Some(v.fx.r1.ifindex), RED));
    assert_eq!(e.frame.len(), plain.len());
    assert_eq!(&e.frame[12..14], &[0x86, 0xdd]);
    assert_eq!(e.frame[14 + 7], plain[14 + 7] - 1, "hop limit stepped");
}

#[test]
fn two_vrfs_on_one_trunk_with_identical_addressing_never_mix() {
    let mut v = Vlans::new();
    // Red has 10.100.0.0/16, blue has not: the same frame on VLAN 200 is blue's, and blue has
    // no route for it, whatever red (or the trunk) would do.
    let to_red_remote = v.frame(v.blue200, SHARED_SRC4, RED_REMOTE4);
    let blue = v.blue200;
    v.expect_pass(
        v.trunk,
        &tagged(&to_red_remote, 0x8100, 200),
        Reason::PassNoRoute,
        blue,
    );
    let (_, e) = v.run_on(v.trunk, &tagged(&to_red_remote, 0x8100, 200));
    assert_eq!(e.vrf, BLUE, "decided in blue");
    // Blue's own remote: out of b1.
    let plain = v.frame(v.blue200, SHARED_SRC4, BLUE_REMOTE4);
    let (action, e) = v.run_on(v.trunk, &tagged(&plain, 0x8100, 200));
    assert_eq!(
        (action, e.oif, e.vrf),
        (XDP_REDIRECT, Some(v.fx.b1.ifindex), BLUE)
    );
    // And the reverse: red on VLAN 100 has no route to blue's remote.
    let to_blue_remote = v.frame(v.red100, SHARED_SRC4, BLUE_REMOTE4);
    let red = v.red100;
    v.expect_pass(
        v.trunk,
        &tagged(&to_blue_remote, 0x8100, 100),
        Reason::PassNoRoute,
        red,
    );
    // The host both subnets have: each VLAN reaches its own VRF's neighbour (r0 is red, b0 blue).
    for (ingress, vid, m) in [(v.fx.r0, 100, v.red100), (v.fx.b0, 200, v.blue200)] {
        let src = if ingress.vrf == RED {
            RED_SRC4
        } else {
            BLUE_SRC4
        };
        let plain = v.frame(ingress, src, SHARED_HOST4);
        let (action, e) = v.run_on(ingress, &plain);
        assert_eq!((action, e.reason), (XDP_REDIRECT, Reason::Forwarded));
        assert_eq!((e.oif, e.vrf), (Some(m.ifindex), m.vrf));
        let (inner, tpid, tci) = untag(&e.frame);
        assert_eq!((tpid, tci), (0x8100, vid), "tagged with {}'s VLAN", m.name);
        assert_forwarded(&plain, &inner, m.mac, neigh_mac(m.id, 9, false));
    }
}

#[test]
fn forwarding_out_of_a_vlan_member_pushes_its_tag() {
    let mut v = Vlans::new();
    let plain = v.frame(v.fx.r0, RED_SRC4, SHARED_HOST4);
    let (action, e) = v.run_on(v.fx.r0, &plain);
    assert_eq!((action, e.reason), (XDP_REDIRECT, Reason::Forwarded));
    assert_eq!(e.oif, Some(v.red100.ifindex));
    assert_eq!(e.frame.len(), plain.len() + 4);
    let (inner, tpid, tci) = untag(&e.frame);
    // PCP 0, as the kernel's default egress priority map gives.
    assert_eq!((tpid, tci), (0x8100, 100));
    assert_eq!(&inner[12..14], &[0x08, 0x00], "IPv4 behind the tag");
    assert_forwarded(
        &plain,
        &inner,
        v.red100.mac,
        neigh_mac(v.red100.id, 9, false),
    );
}

#[test]
fn vlan_to_vlan_rewrites_the_tag_in_place() {
    let mut v = Vlans::new();
    let plain = v.frame(v.red100, SHARED_SRC4, "10.53.0.9");
    // PCP 5 on the way in; the kernel would send PCP 0.
    let frame = tagged(&plain, 0x8100, (5 << 13) | 100);
    let (action, e) = v.run_on(v.trunk, &frame);
    assert_eq!((action, e.oif), (XDP_REDIRECT, Some(v.red300.ifindex)));
    assert_eq!(e.frame.len(), frame.len());
    let (inner, tpid, tci) = untag(&e.frame);
    assert_eq!((tpid, tci), (0x8100, 300));
    assert_forwarded(
        &plain,
        &inner,
        v.red300.mac,
        neigh_mac(v.red300.id, 9, false),
    );
}

#[test]
fn qinq_priority_tags_stacked_tags_and_unknown_ids_pass_counted_on_the_trunk() {
    let mut v = Vlans::new();
    let trunk = v.trunk;
    let plain = v.frame(v.red100, SHARED_SRC4, RED_REMOTE4);
    let cases = [
        (tagged(&plain, 0x88a8, 100), Reason::PassVlanQinQ),
        (tagged(&plain, 0x8100, 0), Reason::PassVlanPriority),
        (tagged(&plain, 0x8100, 6 << 13), Reason::PassVlanPriority),
        (
            tagged(&tagged(&plain, 0x8100, 100), 0x8100, 100),
            Reason::PassVlanStacked,
        ),
        (
            tagged(&tagged(&plain, 0x8100, 100), 0x88a8, 100),
            Reason::PassVlanQinQ,
        ),
        (tagged(&plain, 0x8100, 400), Reason::PassVlanUnknown),
        (tagged(&plain, 0x8100, 4095), Reason::PassVlanUnknown),
        // Untagged on a trunk that is no member.
        (
            v.frame(trunk, SHARED_SRC4, RED_REMOTE4),
            Reason::PassNotMember,
        ),
    ];
    let members_before = [v.counters(v.red100), v.counters(v.blue200)];
    let red_before = v.vrf_counters(RED);
    for (frame, reason) in cases {
        v.expect_pass(trunk, &frame, reason, trunk);
    }
    assert_eq!(
        [v.counters(v.red100), v.counters(v.blue200)],
        members_before,
        "no member counts what is not its own"
    );
    assert_eq!(v.vrf_counters(RED), red_before, "nor does a VRF");
}

#[test]
fn a_trunk_whose_driver_may_strip_tags_passes_everything() {
    let mut v = Vlans::new();
    let trunk = v.trunk;
    v.fx.update_link(trunk, |l| l.flags |= LINK_TAGS_HIDDEN);
    let plain = v.frame(v.red100, SHARED_SRC4, RED_REMOTE4);
    v.expect_pass(
        trunk,
        &tagged(&plain, 0x8100, 100),
        Reason::PassVlanHidden,
        trunk,
    );
    v.expect_pass(trunk, &plain, Reason::PassVlanHidden, trunk);
}

#[test]
fn a_trunk_that_is_a_member_keeps_tagged_frames_out_of_its_own_vrf() {
    let mut v = Vlans::new();
    let r0 = v.fx.r0;
    v.fx.update_link(r0, |l| l.flags |= LINK_TRUNK);
    v.fx.dp
        .maps
        .set_port(r0.ifindex, 200, v.blue200.ifindex)
        .unwrap();
    // Untagged: red's, forwarded as ever.
    let plain = v.fx.udp(r0, RED_SRC4, RED_REMOTE4);
    let (action, e) = v.run_on(r0, &plain);
    assert_eq!((action, e.vrf), (XDP_REDIRECT, RED));
    // Tagged 200: blue's, where 10.100.0.0/16 is unknown (red, r0's VRF, would forward it).
    let frame = tagged(&v.frame(v.blue200, SHARED_SRC4, RED_REMOTE4), 0x8100, 200);
    let blue = v.blue200;
    v.expect_pass(r0, &frame, Reason::PassNoRoute, blue);
    // An id r0 has no member for passes, counted on r0 (and its VRF: r0 is a member).
    let red_before = v.vrf_counters(RED);
    v.expect_pass(
        r0,
        &tagged(&plain, 0x8100, 100),
        Reason::PassVlanUnknown,
        r0,
    );
    let u = Reason::PassVlanUnknown as usize;
    assert_eq!(
        v.vrf_counters(RED).by_reason[u].packets,
        red_before.by_reason[u].packets + 1
    );
}

#[test]
fn a_tag_on_a_link_without_vlan_members_is_not_ip() {
    let mut v = Vlans::new();
    let r1 = v.fx.r1;
    let plain = v.fx.udp(r1, "10.1.1.2", RED_REMOTE4);
    // r1 has no VLAN members: a tag there is not ours, whatever PORTS holds for it.
    v.fx.dp
        .maps
        .set_port(r1.ifindex, 100, v.red100.ifindex)
        .unwrap();
    v.expect_pass(r1, &tagged(&plain, 0x8100, 100), Reason::PassNotIp, r1);
}

#[test]
fn a_vlan_member_without_its_parent_entry_passes_as_egress() {
    let mut v = Vlans::new();
    v.fx.dp.maps.remove_vlan_port(v.red100.ifindex).unwrap();
    let r0 = v.fx.r0;
    let plain = v.frame(r0, RED_SRC4, SHARED_HOST4);
    v.expect_pass(r0, &plain, Reason::PassEgress, r0);
}

#[test]
fn frames_on_a_bond_slave_are_the_bonds() {
    let mut v = Vlans::new();
    // r0p stands for a slave of "bond" r2: XDP runs on the slave, the frame is r2's.
    let (slave, bond) = (v.fx.outsider, v.fx.r2);
    v.fx.dp
        .maps
        .set_port(slave.ifindex, 0, bond.ifindex)
        .unwrap();
    let plain = v.fx.udp(bond, "10.1.2.2", RED_REMOTE4);
    let before = v.counters(bond);
    let (action, e) = v.run_on(slave, &plain);
    assert_eq!((action, e.reason), (XDP_REDIRECT, Reason::Forwarded));
    assert_eq!((e.oif, e.vrf), (Some(v.fx.r1.ifindex), RED));
    let f = Reason::Forwarded as usize;
    assert_eq!(
        v.counters(bond).by_reason[f].packets,
        before.by_reason[f].packets + 1
    );
    // Routed back out of the bond itself: the ingress link, the kernel's (ICMP redirect).
    let back = v.fx.udp(bond, "10.1.2.2", "10.1.2.1");
    let (action, e) = v.run_on(slave, &back);
    assert_eq!((action, e.reason), (XDP_PASS, Reason::PassEgress));
}
