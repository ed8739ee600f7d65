//! The tc programs through BPF_PROG_TEST_RUN: `tc_vrf_egress` on a VRF device (what the host
//! sends inside a VRF) and `tc_member_tx` on members (what the kernel transmits). The fixture's
//! `vblue` stands for blue's VRF device (LINK_VRF_DEVICE, VRF slot blue).
use tests::dataplane::*;
use vrf_common::{Direction, Reason, RouteKind};
use vrf_user::dataplane::{RunResult, TcAction, TcProgram, TC_ACT_OK, TC_ACT_REDIRECT};

fn run_tc(fx: &mut Fixture, program: TcProgram, ifindex: u32, frame: &[u8]) -> RunResult<TcAction> {
    let Fixture { ns, dp, .. } = fx;
    ns.run_in(|| dp.run_tc(program, ifindex, frame))
        .unwrap_or_else(|e| panic!("running {program:?} on ifindex {ifindex}: {e:#}"))
}

/// Packets and bytes counted under `reason` for VRF slot `vrf` in direction `dir`.
fn counted(fx: &Fixture, vrf: u32, dir: Direction, reason: Reason) -> (u64, u64) {
    let c = fx.dp.maps.vrf_counters(vrf, dir).expect("vrf counters");
    let r = c.by_reason[reason as usize];
    (r.packets, r.bytes)
}

/// `tc_vrf_egress` on blue's VRF device (the host sending inside blue).
fn egress(fx: &mut Fixture, frame: &[u8]) -> RunResult<TcAction> {
    let ifindex = fx.vblue.ifindex;
    run_tc(fx, TcProgram::VrfEgress, ifindex, frame)
}

/// What the host sends in blue continues to the kernel untouched, counted once under `reason`.
fn expect_to_kernel(fx: &mut Fixture, frame: &[u8], reason: Reason) {
    let out = egress(fx, frame);
    assert_eq!(out.action, TC_ACT_OK, "{reason:?}: the kernel decides");
    assert_eq!(out.frame, frame, "{reason:?}: the frame is untouched");
    assert_eq!(counted(fx, BLUE, Direction::VrfEgress, reason).0, 1);
}

/// A frame as the VRF device's transmit path carries it: Ethernet header from the device.
fn host_frame(fx: &Fixture, src: &str, dst: &str, ttl: u8) -> Vec<u8> {
    let mut spec = fx.spec(fx.vblue, src, dst);
    spec.src_mac = fx.vblue.mac;
    spec.ttl = ttl;
    spec.udp().expect("frame")
}

#[test]
fn host_traffic_in_a_vrf_leaves_through_the_member_with_its_ttl_intact() {
    let mut fx = Fixture::new();
    let frame = host_frame(&fx, "10.2.0.1", "10.200.3.4", 64);
    let out = egress(&mut fx, &frame);
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let gw_mac = neigh_mac(fx.b1.id, 1, false);
    assert_eq!(
        &out.frame[..6],
        &gw_mac,
        "destination MAC: blue's gateway on b1"
    );
    assert_eq!(&out.frame[6..12], &fx.b1.mac, "source MAC: b1");
    assert_eq!(
        &out.frame[12..],
        &frame[12..],
        "the host's packet leaves as sent: TTL and checksum untouched"
    );
    assert_eq!(
        counted(&fx, BLUE, Direction::VrfEgress, Reason::Forwarded),
        (1, frame.len() as u64)
    );
    assert_eq!(
        counted(&fx, BLUE, Direction::VrfEgress, Reason::Rx),
        (1, frame.len() as u64)
    );
    assert_eq!(
        counted(&fx, BLUE, Direction::Ingress, Reason::Rx),
        (0, 0),
        "not counted as ingress"
    );
}

#[test]
fn host_ipv6_traffic_is_redirected_with_the_hop_limit_intact() {
    let mut fx = Fixture::new();
    let frame = host_frame(&fx, "fd00:2::1", "fd00:200::5", 1);
    let out = egress(&mut fx, &frame);
    assert_eq!(
        out.action, TC_ACT_REDIRECT,
        "the kernel sends hop limit 1 from the host too"
    );
    assert_eq!(&out.frame[..6], &neigh_mac(fx.b1.id, 1, true));
    assert_eq!(&out.frame[12..], &frame[12..]);
}

#[test]
fn a_ttl_of_one_is_sent_as_the_kernel_sends_it() {
    let mut fx = Fixture::new();
    let frame = host_frame(&fx, "10.2.0.1", "10.2.1.7", 1);
    let out = egress(&mut fx, &frame);
    assert_eq!(out.action, TC_ACT_REDIRECT);
    assert_eq!(
        &out.frame[..6],
        &neigh_mac(fx.b1.id, 7, false),
        "connected: the destination's MAC"
    );
    assert_eq!(out.frame[14 + 8], 1, "TTL unchanged");
}

#[test]
fn no_route_continues_to_the_kernel_unchanged() {
    let mut fx = Fixture::new();
    let frame = host_frame(&fx, "10.2.0.1", "10.99.0.1", 64);
    expect_to_kernel(&mut fx, &frame, Reason::PassNoRoute);
}

#[test]
fn a_blackhole_is_never_dropped_on_the_host_path() {
    let mut fx = Fixture::new();
    fx.typed_route(BLUE_TABLE, "10.66.0.0/16", RouteKind::Blackhole);
    let frame = host_frame(&fx, "10.2.0.1", "10.66.0.1", 64);
    // The kernel decides what the host sends: counted as a blackhole, not dropped.
    expect_to_kernel(&mut fx, &frame, Reason::DropBlackhole);
}

#[test]
fn a_missing_neighbour_is_left_to_the_kernel() {
    let mut fx = Fixture::new();
    let frame = host_frame(&fx, "10.2.0.1", "10.2.1.99", 64);
    expect_to_kernel(&mut fx, &frame, Reason::PassNoNeighbour);
}

#[test]
fn a_packet_larger_than_the_member_mtu_is_left_to_the_kernel() {
    let mut fx = Fixture::new();
    let mut spec = fx.spec(fx.vblue, "10.2.0.1", "10.200.3.4");
    spec.src_mac = fx.vblue.mac;
    spec.payload_len = 1600;
    let frame = spec.udp().expect("frame");
    expect_to_kernel(&mut fx, &frame, Reason::PassMtu);
}

#[test]
fn only_vrf_devices_take_the_host_fast_path() {
    let mut fx = Fixture::new();
    let frame = host_frame(&fx, "10.2.0.1", "10.200.3.4", 64);
    let out = {
        let ifindex = fx.b0.ifindex;
        run_tc(&mut fx, TcProgram::VrfEgress, ifindex, &frame)
    };
    assert_eq!(out.action, TC_ACT_OK, "a member is not a VRF device");
    assert_eq!(out.frame, frame);
    assert_eq!(counted(&fx, BLUE, Direction::VrfEgress, Reason::Rx), (0, 0));
}

#[test]
fn red_host_traffic_cannot_use_blue_routes() {
    let mut fx = Fixture::new();
    // 10.100.0.0/16 exists only in red: blue's VRF device must not find it.
    let frame = host_frame(&fx, "10.2.0.1", "10.100.0.9", 64);
    expect_to_kernel(&mut fx, &frame, Reason::PassNoRoute);
    assert_eq!(counted(&fx, RED, Direction::VrfEgress, Reason::Rx), (0, 0));
}

#[test]
fn member_tx_counts_what_the_kernel_sends_per_vrf() {
    let mut fx = Fixture::new();
    let frame = fx.udp(fx.r1, "10.1.1.1", "10.1.0.2");
    for _ in 0..3 {
        let out = {
            let ifindex = fx.r1.ifindex;
            run_tc(&mut fx, TcProgram::MemberTx, ifindex, &frame)
        };
        assert_eq!(out.action, TC_ACT_OK);
        assert_eq!(out.frame, frame, "counting never changes a packet");
    }
    assert_eq!(
        counted(&fx, RED, Direction::MemberTx, Reason::Rx),
        (3, 3 * frame.len() as u64)
    );
    let link = fx
        .dp
        .maps
        .link_counters(fx.r1.stats_slot, Direction::MemberTx)
        .unwrap();
    assert_eq!(link.by_reason[Reason::Rx as usize].packets, 3);
    let others: u64 = link.by_reason.iter().skip(1).map(|c| c.packets).sum();
    assert_eq!(others, 0, "transmit is counted once, under rx");
    assert_eq!(counted(&fx, BLUE, Direction::MemberTx, Reason::Rx), (0, 0));
}

#[test]
fn member_tx_ignores_links_that_are_not_members() {
    let mut fx = Fixture::new();
    let frame = fx.udp(fx.r1, "10.1.1.1", "10.1.0.2");
    let out = {
        let ifindex = fx.outsider.ifindex;
        run_tc(&mut fx, TcProgram::MemberTx, ifindex, &frame)
    };
    assert_eq!(out.action, TC_ACT_OK);
    for slot in [RED, BLUE] {
        assert_eq!(counted(&fx, slot, Direction::MemberTx, Reason::Rx), (0, 0));
    }
}

/// The host's own traffic when a rule ahead of blue's `l3mdev` rule could catch it (vrfd sets
/// these flags from the kernel's rules: an `oif`/`iif lo` rule, a uid range, a mark).
#[test]
fn a_rule_ahead_that_can_catch_host_traffic_sends_it_to_the_kernel() {
    let mut fx = Fixture::new();
    let frame = host_frame(&fx, "10.2.0.1", "10.200.3.4", 64);
    fx.update_vrf(BLUE, |v| v.flags |= vrf_common::VRF_LOCAL_RULE4);
    // The kernel's output lookup decides.
    expect_to_kernel(&mut fx, &frame, Reason::PassPolicyRule);
    // The IPv6 flag is IPv6's alone.
    fx.update_vrf(BLUE, |v| {
        v.flags = (v.flags & !vrf_common::VRF_LOCAL_RULE4) | vrf_common::VRF_LOCAL_RULE6
    });
    let out = egress(&mut fx, &frame);
    assert_eq!(
        out.action, TC_ACT_REDIRECT,
        "an IPv6 rule does not concern IPv4"
    );
}

#[test]
fn a_rule_ahead_that_matches_only_marks_passes_marked_host_traffic_only() {
    let mut fx = Fixture::new();
    let frame = host_frame(&fx, "10.2.0.1", "10.200.3.4", 64);
    let vblue = fx.vblue.ifindex;
    fx.update_vrf(BLUE, |v| v.flags |= vrf_common::VRF_LOCAL_MARKED4);
    let run = |fx: &mut Fixture, mark: u32| {
        let Fixture { ns, dp, .. } = fx;
        ns.run_in(|| dp.run_tc_marked(TcProgram::VrfEgress, vblue, mark, &frame))
            .expect("tc run")
    };
    assert_eq!(
        run(&mut fx, 0).action,
        TC_ACT_REDIRECT,
        "unmarked: fast path"
    );
    let marked = run(&mut fx, 0x42);
    assert_eq!(marked.action, TC_ACT_OK, "SO_MARK 0x42: the kernel's rules");
    assert_eq!(marked.frame, frame);
    assert_eq!(
        counted(&fx, BLUE, Direction::VrfEgress, Reason::PassPolicyRule).0,
        1
    );
}

#[test]
fn host_ipv6_larger_than_the_members_ipv6_mtu_is_left_to_the_kernel() {
    // bpf_check_mtu knows the device MTU only; `net.ipv6.conf.<member>.mtu` is tighter.
    let mut fx = Fixture::new();
    let frame = host_frame(&fx, "fd00:2::1", "fd00:200::5", 64);
    let b1 = fx.b1;
    fx.update_link(b1, |l| l.mtu6 = 1280);
    expect_to_kernel(&mut fx, &frame, Reason::PassMtu);
}
