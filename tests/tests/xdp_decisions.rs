//! Every decision of the XDP program for IPv4 (and those that do not depend on the IP version),
//! packet by packet through BPF_PROG_TEST_RUN: `xdp_vrf` (the fast path) and `xdp_vrf_explain`
//! run on the same frame, and each test checks the action, the reason, the egress and neighbour,
//! the frame that comes back (rewritten exactly when forwarded, untouched otherwise) and the
//! counters. The fixture (two VRFs in a private namespace) is described in
//! `tests::dataplane`; IPv6 is in `xdp_decisions_v6.rs`, the cases that are the same for both
//! versions (run for each) in `xdp_decisions_both.rs`.

use std::collections::{BTreeMap, BTreeSet};

use tests::dataplane::nexthop;
use tests::dataplane::*;
use vrf_common::{
    Link, NexthopGroup, Reason, Route, RouteKind, LINK_FWD4, LINK_FWD6, LINK_RPF_LOOSE,
    LINK_RPF_STRICT, LINK_UP, LINK_VRF_DEVICE, MAX_PATHS, VRF_ACTIVE, VRF_DEGRADED,
};
use vrf_user::dataplane::{XDP_PASS, XDP_REDIRECT};
use vrf_user::packet::FrameSpec;

// Frame surgery.

/// Change the IPv4 header of an Ethernet frame with `f`, then fix its checksum.
fn mutate4(frame: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = frame.to_vec();
    f(&mut out);
    fix_ipv4_checksum(&mut out);
    out
}

fn set_tot_len(frame: &mut [u8], len: u16) {
    frame[16..18].copy_from_slice(&len.to_be_bytes());
}

/// A UDP frame whose IPv4 packet is exactly `ip_len` bytes long.
fn udp_of_ip_len(fx: &Fixture, ingress: Iface, dst: &str, ip_len: usize) -> Vec<u8> {
    let mut s = fx.spec(ingress, RED_SRC4, dst);
    s.payload_len = ip_len - 28;
    let f = s.udp().unwrap();
    assert_eq!(f.len(), 14 + ip_len);
    f
}

/// A route in red for `prefix` via r1's gateway (which has a neighbour): a destination in it
/// would be forwarded, unless something else decides first.
fn via_r1_gateway(fx: &mut Fixture, prefix: &str) {
    let r1 = fx.r1.ifindex;
    fx.unicast(RED_TABLE, prefix, &[nexthop(r1, Some(ip(RED_GW4)))]);
}

fn r1_gw_mac(fx: &Fixture) -> [u8; 6] {
    neigh_mac(fx.r1.id, 1, false)
}

/// An ARP request for `target` from `sender`, broadcast, padded to 60 bytes.
fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

/// What one frame on r0 must come to, in a [`FrameCase`] table.
#[derive(Clone, Copy)]
enum Outcome {
    Pass(Reason),
    Drop(Reason),
    /// Forwarded out of r1 to red's gateway (the fixture's default route in red).
    ViaR1,
}

/// A named case: `setup` prepares a fresh fixture and returns the frame to send on r0.
type FrameCase = (&'static str, fn(&mut Fixture) -> Vec<u8>, Outcome);

/// Each case on a fixture of its own, with the checks of `expect_pass`, `expect_drop` or
/// `expect_forward`; returns the frames as the program left them, in order.
fn expect_each(cases: &[FrameCase]) -> Vec<Vec<u8>> {
    cases
        .iter()
        .map(|&(name, setup, outcome)| {
            eprintln!("case: {name}");
            let mut fx = Fixture::new();
            let frame = setup(&mut fx);
            let r0 = fx.r0;
            match outcome {
                Outcome::Pass(reason) => fx.expect_pass(r0, &frame, reason).frame,
                Outcome::Drop(reason) => fx.expect_drop(r0, &frame, reason).frame,
                Outcome::ViaR1 => {
                    let (r1, mac) = (fx.r1, r1_gw_mac(&fx));
                    fx.expect_forward(r0, &frame, r1, RED_GW4, mac, RED)
                }
            }
        })
        .collect()
}

/// The outsider in LINKS as a link of red with `flags` and MTU `mtu` (both families), stats
/// slot 0; returns it.
fn outsider_in_red(fx: &mut Fixture, flags: u16, mtu: u32) -> Iface {
    let o = fx.outsider;
    let link = Link {
        vrf: RED,
        stats_slot: 0,
        mtu,
        mac: o.mac,
        flags,
        mtu6: mtu,
    };
    fx.dp.maps.set_link(o.ifindex, &link).unwrap();
    o
}

/// A red UDP frame on r0 to red's remote.
fn red_frame(fx: &mut Fixture) -> Vec<u8> {
    fx.udp(fx.r0, RED_SRC4, RED_REMOTE4)
}

/// A red UDP frame on r0 to red's remote, its spec changed by `f` first.
fn red_udp(fx: &Fixture, f: impl FnOnce(&mut FrameSpec)) -> Vec<u8> {
    let mut s = fx.spec(fx.r0, RED_SRC4, RED_REMOTE4);
    f(&mut s);
    s.udp().unwrap()
}

// Forwarding.

#[test]
fn forwards_ipv4_via_ipv6_gateway() {
    // RFC 5549 (`via inet6 fe80::1`): the neighbour is looked up as IPv6.
    let mut fx = Fixture::new();
    let mac = fx.red_via_fe80_on_r2("10.70.0.0/24", true);
    let frame = fx.udp(fx.r0, RED_SRC4, "10.70.0.5");
    let r2 = fx.r2;
    fx.expect_forward(fx.r0, &frame, r2, "fe80::1", mac, RED);
}

#[test]
fn ipv4_ttl_decrement_keeps_the_header_checksum_exact_for_every_checksum_value() {
    // Every identification value, so the incoming checksum takes every value and the incremental
    // update (RFC 1624) meets every carry case.
    let mut fx = Fixture::new();
    let base = fx.udp(fx.r0, RED_SRC4, RED_REMOTE4);
    let frames: Vec<Vec<u8>> = (0..=u16::MAX)
        .map(|id| mutate4(&base, |f| f[18..20].copy_from_slice(&id.to_be_bytes())))
        .collect();
    let checksums: BTreeSet<u16> = frames
        .iter()
        .map(|f| u16::from_be_bytes([f[24], f[25]]))
        .collect();
    assert!(checksums.len() >= 65535, "{} checksums", checksums.len());
    let before = fx.snapshot();
    let results = fx.run_many(fx.r0.ifindex, &frames);
    let (r1mac, gwmac) = (fx.r1.mac, r1_gw_mac(&fx));
    for (f, r) in frames.iter().zip(&results) {
        assert_eq!(r.action, XDP_REDIRECT, "{}", hex(f));
        assert_forwarded(f, &r.frame, r1mac, gwmac);
    }
    let n = frames.len() as u64;
    fx.assert_counted(
        &before,
        fx.r0,
        RED,
        Reason::Forwarded,
        n,
        n * base.len() as u64,
    );
}

// Loading.

extern "C" fn ignore_signal(_: libc::c_int) {}

#[test]
fn data_plane_loads_while_signals_interrupt_the_verifier() {
    // What any daemon that handles signals (SIGHUP, SIGCHLD, timers) meets: a signal (no-op
    // SIGUSR1 handler, SA_RESTART) every 200 ms at the loading thread, during 20 loads. One
    // verification takes ~30 ms (more with aya's logging retry), so a loader that retries EAGAIN
    // a few times (or blocks signals while loading) gets through; aya's single retry fails about
    // one load in four or five.
    tests::require_root();
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    use std::sync::atomic::{AtomicBool, Ordering};
    let me = unsafe { libc::pthread_self() } as usize;
    let done = AtomicBool::new(false);
    let failures = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(200));
                unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR1) };
            }
        });
        let mut failures = 0;
        for _ in 0..20 {
            if let Err(e) = vrf_user::dataplane::DataPlane::load() {
                assert!(is_eagain(&e), "unexpected load error: {e:#}");
                failures += 1;
            }
        }
        done.store(true, Ordering::Relaxed);
        failures
    });
    assert_eq!(failures, 0, "{failures} of 20 loads failed with EAGAIN");
}

// Frames that are not the data plane's business.

#[test]
fn frame_on_interface_unknown_to_the_data_plane_passes_untouched_and_uncounted() {
    let mut fx = Fixture::new();
    let o = fx.outsider;
    let frame = fx.udp(o, RED_SRC4, RED_REMOTE4);
    let before = fx.snapshot();
    let run = fx.run(o.ifindex, &frame);
    assert_eq!(action_name(run.action), "XDP_PASS");
    assert_eq!(hex(&run.frame), hex(&frame));
    let err = fx
        .explain(o.ifindex, &frame)
        .expect_err("explain must find no decision for a non-member");
    assert!(format!("{err:#}").contains("not a VRF member"), "{err:#}");
    fx.assert_not_counted(&before);
}

#[test]
fn frame_on_known_link_without_member_flag_passes_untouched_and_uncounted() {
    let mut fx = Fixture::new();
    // Everything a member has except LINK_MEMBER (an egress-only link), counted in slot 0.
    let o = outsider_in_red(&mut fx, LINK_UP | LINK_FWD4 | LINK_FWD6, MTU);
    let frame = fx.udp(o, RED_SRC4, RED_REMOTE4);
    let before = fx.snapshot();
    let run = fx.run(o.ifindex, &frame);
    assert_eq!(action_name(run.action), "XDP_PASS");
    assert_eq!(hex(&run.frame), hex(&frame));
    assert!(fx.explain(o.ifindex, &frame).is_err());
    fx.assert_not_counted(&before);
}

#[test]
fn frames_that_are_not_unicast_ipv4_to_the_member_pass_with_their_reason() {
    use Outcome::Pass;
    expect_each(&[
        (
            "arp",
            |_| arp_request([10, 1, 0, 2], [10, 1, 0, 1]),
            Pass(Reason::PassNotIp),
        ),
        (
            "arp to the member's MAC",
            |fx| {
                let mut frame = arp_request([10, 1, 0, 2], [10, 1, 0, 1]);
                frame[..6].copy_from_slice(&fx.r0.mac);
                frame
            },
            Pass(Reason::PassNotIp),
        ),
        (
            "802.1Q tag, VID 100, in front of the IPv4 ethertype",
            |fx| {
                let mut frame = fx.udp(fx.r0, RED_SRC4, RED_REMOTE4);
                frame.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
                assert_eq!(&frame[16..18], &[0x08, 0x00]);
                frame
            },
            Pass(Reason::PassNotIp),
        ),
        (
            "IPv4 to another MAC",
            |fx| red_udp(fx, |s| s.dst_mac = [0x02, 0, 0, 0, 0x99, 0x01]),
            Pass(Reason::PassOtherHost),
        ),
        // Group-addressed frames are never forwarded as unicast, whatever their IP destination.
        (
            "IPv4 to the broadcast MAC",
            |fx| red_udp(fx, |s| s.dst_mac = [0xff; 6]),
            Pass(Reason::PassMulticast),
        ),
        (
            "IPv4 to a multicast MAC",
            |fx| red_udp(fx, |s| s.dst_mac = [0x01, 0x00, 0x5e, 0x64, 0x00, 0x09]),
            Pass(Reason::PassMulticast),
        ),
        (
            // The group bit alone decides, even on an address that otherwise equals the member's.
            "IPv4 to the member's MAC with only the group bit set",
            |fx| {
                let mac = fx.r0.mac;
                red_udp(fx, |s| {
                    s.dst_mac = mac;
                    s.dst_mac[0] |= 1;
                })
            },
            Pass(Reason::PassMulticast),
        ),
        (
            // r1's MAC is the data plane's too, but the frame arrived on r0.
            "IPv4 to another member's MAC",
            |fx| {
                let mac = fx.r1.mac;
                red_udp(fx, |s| s.dst_mac = mac)
            },
            Pass(Reason::PassOtherHost),
        ),
    ]);
}

// Malformed headers: dropped, as the kernel's ip_rcv_core drops them.

#[test]
fn malformed_ipv4_headers_are_dropped_and_options_passed() {
    use Outcome::{Drop, Pass};
    expect_each(&[
        (
            "Ethernet header alone with the IPv4 ethertype",
            |fx| red_frame(fx)[..14].to_vec(),
            Drop(Reason::DropMalformed),
        ),
        (
            "truncated IPv4 header",
            |fx| red_frame(fx)[..14 + 19].to_vec(),
            Drop(Reason::DropMalformed),
        ),
        (
            "version not 4",
            |fx| mutate4(&red_frame(fx), |f| f[14] = 0x65),
            Drop(Reason::DropMalformed),
        ),
        (
            "IHL below 5",
            |fx| mutate4(&red_frame(fx), |f| f[14] = 0x44),
            Drop(Reason::DropMalformed),
        ),
        (
            "total length beyond the frame",
            |fx| {
                let good = red_frame(fx);
                mutate4(&good, |f| set_tot_len(f, (good.len() - 14 + 1) as u16))
            },
            Drop(Reason::DropMalformed),
        ),
        (
            "total length below the header length",
            |fx| mutate4(&red_frame(fx), |f| set_tot_len(f, 19)),
            Drop(Reason::DropMalformed),
        ),
        (
            "bad header checksum",
            |fx| {
                let mut frame = red_frame(fx);
                frame[25] ^= 0x01;
                assert_ne!(ones_sum(&frame[14..34]), 0xffff);
                frame
            },
            Drop(Reason::DropChecksum),
        ),
        (
            "IHL 6: NOP, NOP, NOP, EOL after the fixed header",
            |fx| {
                let good = red_frame(fx);
                let frame = mutate4(&good, |f| {
                    f.splice(34..34, [1, 1, 1, 0]);
                    f[14] = 0x46;
                    set_tot_len(f, (good.len() - 14 + 4) as u16);
                });
                assert_eq!(ones_sum(&frame[14..38]), 0xffff);
                frame
            },
            Pass(Reason::PassIpOptions),
        ),
    ]);
}

// Addresses the kernel treats specially.

#[test]
fn multicast_and_limited_broadcast_destinations_pass_as_multicast() {
    // Each has a route via r1's gateway: the address decides first.
    expect_each(&[
        (
            "239.1.2.3",
            |fx| {
                via_r1_gateway(fx, "239.0.0.0/8");
                fx.udp(fx.r0, RED_SRC4, "239.1.2.3")
            },
            Outcome::Pass(Reason::PassMulticast),
        ),
        (
            "255.255.255.255",
            |fx| {
                via_r1_gateway(fx, "255.255.255.255/32");
                fx.udp(fx.r0, RED_SRC4, "255.255.255.255")
            },
            Outcome::Pass(Reason::PassMulticast),
        ),
    ]);
}

// TTL.

#[test]
fn ttl_below_2_passes_as_ttl_and_2_is_forwarded_with_ttl_1() {
    let out = expect_each(&[
        (
            "TTL 1",
            |fx| red_udp(fx, |s| s.ttl = 1),
            Outcome::Pass(Reason::PassTtl),
        ),
        (
            "TTL 0",
            |fx| red_udp(fx, |s| s.ttl = 0),
            Outcome::Pass(Reason::PassTtl),
        ),
        ("TTL 2", |fx| red_udp(fx, |s| s.ttl = 2), Outcome::ViaR1),
    ]);
    assert_eq!(out[2][14 + 8], 1);
}

// Routes.

#[test]
fn broadcast_route_passes_as_local() {
    typed_route_case(V4, RouteKind::Broadcast, XDP_PASS, Reason::PassLocal);
}

#[test]
fn nat_route_passes_as_unsupported() {
    typed_route_case(V4, RouteKind::Nat, XDP_PASS, Reason::PassUnsupported);
}

#[test]
fn route_of_unknown_kind_passes_as_unsupported() {
    for kind in [0u16, 11, 0xffff] {
        let mut fx = Fixture::new();
        let r1 = fx.r1.ifindex;
        let group = fx.unicast(RED_TABLE, "10.40.1.0/24", &[nexthop(r1, Some(ip(RED_GW4)))]);
        expect_raw_route_unsupported(&mut fx, kind, group);
    }
}

/// Red's 10.40.0.0/24 as a raw FIB entry of `kind` naming group `nexthop`, which the program
/// must not trust: a frame to 10.40.0.5 passes as unsupported.
fn expect_raw_route_unsupported(fx: &mut Fixture, kind: u16, nexthop: u32) {
    let route = Route {
        kind,
        mtu: 0,
        nexthop,
    };
    fx.route_raw(RED_TABLE, "10.40.0.0/24", route);
    let frame = fx.udp(fx.r0, RED_SRC4, "10.40.0.5");
    fx.expect_pass(fx.r0, &frame, Reason::PassUnsupported);
}

#[test]
fn unicast_route_with_empty_nexthop_group_passes_as_unsupported() {
    let mut fx = Fixture::new();
    let mut g = NexthopGroup::default();
    g.paths[0] = nexthop(fx.r1.ifindex, Some(ip(RED_GW4)));
    let id = fx.raw_group(&g);
    expect_raw_route_unsupported(&mut fx, RouteKind::Unicast as u16, id);
}

#[test]
fn unicast_route_with_group_count_beyond_max_paths_passes_as_unsupported() {
    let mut fx = Fixture::new();
    let mut g = NexthopGroup {
        count: MAX_PATHS as u32 + 1,
        ..Default::default()
    };
    for p in g.paths.iter_mut() {
        *p = nexthop(fx.r1.ifindex, Some(ip(RED_GW4)));
    }
    let id = fx.raw_group(&g);
    expect_raw_route_unsupported(&mut fx, RouteKind::Unicast as u16, id);
}

#[test]
fn default_route_in_the_vrfs_table_matches_everything_else() {
    let mut fx = Fixture::new();
    via_r1_gateway(&mut fx, "0.0.0.0/0");
    let mac = r1_gw_mac(&fx);
    for dst in ["10.99.0.1", "192.0.2.1", "223.255.255.254", "1.1.1.1"] {
        let frame = fx.udp(fx.r0, RED_SRC4, dst);
        fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW4, mac, RED);
    }
}

// Neighbours.

#[test]
fn neighbour_known_only_on_another_link_passes_as_no_neighbour() {
    // 10.1.3.1 is r3's neighbour; the route says it is on r2.
    let mut fx = Fixture::new();
    let r2 = fx.r2.ifindex;
    fx.unicast(
        RED_TABLE,
        "10.41.0.0/24",
        &[nexthop(r2, Some(ip("10.1.3.1")))],
    );
    let frame = fx.udp(fx.r0, RED_SRC4, "10.41.0.5");
    fx.expect_pass(fx.r0, &frame, Reason::PassNoNeighbour);
}

#[test]
fn ipv4_neighbour_key_does_not_match_an_ipv6_gateway() {
    // A v4 entry whose 16 key bytes equal fe80::1's first four would be a family mix-up.
    let mut fx = Fixture::new();
    fx.red_via_fe80_on_r2("10.70.0.0/24", false);
    let r2 = fx.r2;
    fx.neighbour(r2, "254.128.0.0", neigh_mac(r2.id, 0xfe, false));
    let frame = fx.udp(fx.r0, RED_SRC4, "10.70.0.5");
    fx.expect_pass(fx.r0, &frame, Reason::PassNoNeighbour);
}

// MTU.

#[test]
fn ipv4_mtu_is_the_egress_links_not_the_ingress_links() {
    let mut fx = Fixture::new();
    fx.update_link(fx.r0, |l| l.mtu = 576);
    let frame = udp_of_ip_len(&fx, fx.r0, RED_REMOTE4, 1500);
    let mac = r1_gw_mac(&fx);
    fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW4, mac, RED);
}

// Ingress link and VRF state.

#[test]
fn ipv4_forwarding_off_on_the_egress_link_does_not_matter() {
    // The kernel checks forwarding on the ingress device only.
    let mut fx = Fixture::new();
    fx.update_link(fx.r1, |l| l.flags &= !(LINK_FWD4 | LINK_FWD6));
    let frame = fx.udp(fx.r0, RED_SRC4, RED_REMOTE4);
    let mac = r1_gw_mac(&fx);
    fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW4, mac, RED);
}

#[test]
fn inactive_vrf_passes_as_degraded() {
    let mut fx = Fixture::new();
    fx.update_vrf(RED, |v| v.flags &= !VRF_ACTIVE);
    let frame = fx.udp(fx.r0, RED_SRC4, RED_REMOTE4);
    fx.expect_pass(fx.r0, &frame, Reason::PassDegraded);
}

#[test]
fn member_with_a_vrf_slot_beyond_the_vrf_array_passes_as_degraded() {
    // Counted on the link only: there is no such VRF counter slot.
    let mut fx = Fixture::new();
    fx.update_link(fx.r0, |l| l.vrf = 5000);
    let r0 = Iface { vrf: 5000, ..fx.r0 };
    let frame = fx.udp(r0, RED_SRC4, RED_REMOTE4);
    fx.expect_pass(r0, &frame, Reason::PassDegraded);
}

// Egress.

#[test]
fn egress_unknown_to_the_data_plane_passes_as_egress() {
    let mut fx = Fixture::new();
    let o = fx.outsider;
    fx.unicast(RED_TABLE, "10.45.0.0/24", &[nexthop(o.ifindex, None)]);
    fx.neighbour(o, "10.45.0.5", neigh_mac(0x99, 5, false));
    let frame = fx.udp(fx.r0, RED_SRC4, "10.45.0.5");
    fx.expect_pass(fx.r0, &frame, Reason::PassEgress);
}

/// Make `outsider` an egress-only link of red (in LINKS without LINK_MEMBER, a redirect
/// target) with a connected route 10.45.0.0/24 and neighbour 10.45.0.5; returns its MAC.
fn egress_only_link(fx: &mut Fixture) -> [u8; 6] {
    let o = outsider_in_red(fx, LINK_UP, MTU);
    {
        let Fixture { ns, dp, .. } = fx;
        ns.run_in(|| dp.maps.add_tx_port(o.ifindex)).unwrap();
    }
    fx.unicast(RED_TABLE, "10.45.0.0/24", &[nexthop(o.ifindex, None)]);
    let mac = neigh_mac(0x99, 5, false);
    fx.neighbour(o, "10.45.0.5", mac);
    mac
}

/// A VRF device ifindex for red: red becomes a kernel VRF (l3mdev), whose source check uses
/// the ingress VRF's table.
const RED_VRF_DEVICE: u32 = 4000;

#[test]
fn egress_only_link_without_member_flag_is_forwarded_to_in_a_kernel_vrf() {
    let mut fx = Fixture::new();
    fx.update_vrf(RED, |v| v.ifindex = RED_VRF_DEVICE);
    let mac = egress_only_link(&mut fx);
    let frame = fx.udp(fx.r0, RED_SRC4, "10.45.0.5");
    fx.expect_forward(fx.r0, &frame, fx.outsider, "10.45.0.5", mac, RED);
}

#[test]
fn egress_only_link_in_a_policy_routing_vrf_passes_as_martian() {
    // The kernel validates the source in the table its rules give for iif = <egress link>; for
    // an egress-only link of a policy-routing VRF that table is not known: the kernel decides.
    let mut fx = Fixture::new();
    egress_only_link(&mut fx);
    let frame = fx.udp(fx.r0, RED_SRC4, "10.45.0.5");
    fx.expect_pass(fx.r0, &frame, Reason::PassMartian);
}

// Multipath.

/// Red route 10.43.0.0/24 over `paths` (egress, gateway, neighbour host byte), neighbours
/// added where missing. Returns egress MAC → (egress, expected destination MAC).
fn multipath_route(
    fx: &mut Fixture,
    paths: &[(Iface, &str, u8)],
) -> BTreeMap<[u8; 6], Vec<(Iface, [u8; 6])>> {
    let hops: Vec<_> = paths
        .iter()
        .map(|(l, gw, _)| nexthop(l.ifindex, Some(ip(gw))))
        .collect();
    fx.unicast(RED_TABLE, "10.43.0.0/24", &hops);
    let mut by_mac: BTreeMap<[u8; 6], Vec<(Iface, [u8; 6])>> = BTreeMap::new();
    for (l, gw, host) in paths {
        let mac = neigh_mac(l.id, *host, false);
        fx.neighbour(*l, gw, mac);
        by_mac.entry(l.mac).or_default().push((*l, mac));
    }
    by_mac
}

/// Which path (egress MAC, neighbour MAC) a forwarded frame took.
fn path_of(out: &[u8]) -> ([u8; 6], [u8; 6]) {
    (
        out[6..12].try_into().unwrap(),
        out[0..6].try_into().unwrap(),
    )
}

/// Path → flows of `frames` (on r0) that took it; each frame must be redirected and rewritten
/// exactly for one of the gateways of its egress in `by_mac` (from [`multipath_route`]).
fn tally_paths(
    fx: &mut Fixture,
    frames: &[Vec<u8>],
    by_mac: &BTreeMap<[u8; 6], Vec<(Iface, [u8; 6])>>,
) -> BTreeMap<([u8; 6], [u8; 6]), usize> {
    let results = fx.run_many(fx.r0.ifindex, frames);
    let mut tally = BTreeMap::new();
    for (f, r) in frames.iter().zip(&results) {
        assert_eq!(action_name(r.action), "XDP_REDIRECT");
        let (src, dst) = path_of(&r.frame);
        assert!(
            by_mac[&src].iter().any(|(_, m)| *m == dst),
            "neighbour MAC {dst:02x?} is not one of egress {src:02x?}'s gateways"
        );
        assert_forwarded(f, &r.frame, src, dst);
        *tally.entry((src, dst)).or_default() += 1;
    }
    tally
}

fn flows(fx: &Fixture, n: u16, tcp: bool) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut s = fx.spec(fx.r0, RED_SRC4, "10.43.0.5");
            s.src_port = 10000 + i;
            s.dst_port = 443 + i % 7;
            if tcp {
                s.tcp().unwrap()
            } else {
                s.udp().unwrap()
            }
        })
        .collect()
}

#[test]
fn multipath_spreads_flows_over_every_path() {
    let mut fx = Fixture::new();
    let (r1, r2, r3) = (fx.r1, fx.r2, fx.r3);
    let paths = multipath_route(
        &mut fx,
        &[(r1, RED_GW4, 1), (r2, "10.1.2.1", 1), (r3, "10.1.3.1", 1)],
    );
    let frames = flows(&fx, 300, false);
    let before = fx.snapshot();
    // One gateway per egress: each frame goes to its egress's.
    let tally = tally_paths(&mut fx, &frames, &paths);
    assert_eq!(tally.len(), 3, "every path used: {tally:?}");
    for (path, n) in &tally {
        assert!(*n >= 50, "path {path:02x?} got {n} of 300 flows: {tally:?}");
    }
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    fx.assert_counted(&before, fx.r0, RED, Reason::Forwarded, 300, bytes);
}

#[test]
fn multipath_spreads_tcp_flows_over_every_path() {
    let mut fx = Fixture::new();
    let (r1, r2) = (fx.r1, fx.r2);
    let paths = multipath_route(&mut fx, &[(r1, RED_GW4, 1), (r2, "10.1.2.1", 1)]);
    let frames = flows(&fx, 200, true);
    // One gateway per egress: a path is its egress.
    let tally = tally_paths(&mut fx, &frames, &paths);
    assert_eq!(tally.len(), 2, "{tally:?}");
    assert!(tally.values().all(|&n| n >= 50), "{tally:?}");
}

#[test]
fn multipath_keeps_each_flow_on_one_path() {
    let mut fx = Fixture::new();
    let (r1, r2, r3) = (fx.r1, fx.r2, fx.r3);
    multipath_route(
        &mut fx,
        &[(r1, RED_GW4, 1), (r2, "10.1.2.1", 1), (r3, "10.1.3.1", 1)],
    );
    let by_mac: BTreeMap<[u8; 6], Iface> = [r1, r2, r3].iter().map(|l| (l.mac, *l)).collect();
    let mut used = BTreeSet::new();
    for flow in 0..40u16 {
        // The same 5-tuple with different identification, TTL and payload each time.
        let frames: Vec<Vec<u8>> = (0..6u16)
            .map(|k| {
                let mut s = fx.spec(fx.r0, RED_SRC4, "10.43.0.5");
                s.src_port = 20000 + flow * 13;
                s.ttl = 64 - k as u8;
                s.payload_len = 18 + k as usize * 10;
                mutate4(&s.udp().unwrap(), |f| {
                    f[18..20].copy_from_slice(&(k * 1000).to_be_bytes())
                })
            })
            .collect();
        let results = fx.run_many(fx.r0.ifindex, &frames);
        let paths: BTreeSet<_> = results.iter().map(|r| path_of(&r.frame)).collect();
        assert_eq!(paths.len(), 1, "flow {flow} took {paths:02x?}");
        let (src, _) = *paths.iter().next().unwrap();
        // The explain program agrees on the egress.
        let e = fx.explain(fx.r0.ifindex, &frames[0]).unwrap();
        assert_eq!(e.oif, Some(by_mac[&src].ifindex), "flow {flow}");
        used.insert(src);
    }
    assert_eq!(used.len(), 3, "40 flows must use all 3 paths");
}

#[test]
fn multipath_uses_all_paths_of_a_full_group() {
    let mut fx = Fixture::new();
    let (r1, r2, r3) = (fx.r1, fx.r2, fx.r3);
    let paths: Vec<(Iface, &str, u8)> = vec![
        (r1, "10.1.1.1", 1),
        (r1, "10.1.1.11", 11),
        (r1, "10.1.1.12", 12),
        (r2, "10.1.2.1", 1),
        (r2, "10.1.2.11", 11),
        (r2, "10.1.2.12", 12),
        (r3, "10.1.3.1", 1),
        (r3, "10.1.3.11", 11),
    ];
    assert_eq!(paths.len(), 8);
    let by_mac = multipath_route(&mut fx, &paths);
    let frames = flows(&fx, 800, false);
    let tally = tally_paths(&mut fx, &frames, &by_mac);
    assert_eq!(tally.len(), paths.len(), "{tally:?}");
    assert!(tally.values().all(|&n| n >= 50), "{tally:?}");
}

#[test]
fn multipath_sends_every_fragment_of_a_flow_the_same_way() {
    // Only unfragmented packets carry usable ports: fragments hash on addresses and protocol, so
    // the first fragment (with the UDP header) and the later ones leave together.
    let mut fx = Fixture::new();
    let (r1, r2, r3) = (fx.r1, fx.r2, fx.r3);
    multipath_route(
        &mut fx,
        &[(r1, RED_GW4, 1), (r2, "10.1.2.1", 1), (r3, "10.1.3.1", 1)],
    );
    let whole = flows(&fx, 64, false);
    let whole_paths: BTreeSet<_> = fx
        .run_many(fx.r0.ifindex, &whole)
        .iter()
        .map(|r| path_of(&r.frame))
        .collect();
    assert!(whole_paths.len() > 1, "control: unfragmented flows spread");
    // First fragments: MF set, offset 0, same ports as above.
    let mut frags: Vec<Vec<u8>> = whole
        .iter()
        .map(|f| mutate4(f, |f| f[20..22].copy_from_slice(&0x2000u16.to_be_bytes())))
        .collect();
    // A last fragment: offset 185 × 8, MF clear, no UDP header.
    frags.push(mutate4(&whole[0], |f| {
        f[20..22].copy_from_slice(&185u16.to_be_bytes());
        f[34..42].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04]);
    }));
    let results = fx.run_many(fx.r0.ifindex, &frags);
    let mut seen = BTreeSet::new();
    for (f, r) in frags.iter().zip(&results) {
        assert_eq!(action_name(r.action), "XDP_REDIRECT");
        let (src, dst) = path_of(&r.frame);
        assert_forwarded(f, &r.frame, src, dst);
        seen.insert((src, dst));
    }
    assert_eq!(seen.len(), 1, "fragments took {seen:02x?}");
}

// Leaks between VRFs.

#[test]
fn vrf_device_hop_to_a_connected_blue_destination_uses_blues_neighbour() {
    let mut fx = Fixture::new();
    let (b1, vblue) = (fx.b1, fx.vblue);
    fx.unicast(RED_TABLE, "10.2.1.0/24", &[nexthop(vblue.ifindex, None)]);
    let frame = fx.udp(fx.r0, RED_SRC4, BLUE_DIRECT4);
    let mac = neigh_mac(b1.id, 7, false);
    fx.expect_forward(fx.r0, &frame, b1, BLUE_DIRECT4, mac, BLUE);
}

/// Red's 10.60.0.0/16 goes through blue's VRF device; `blue` then sets up blue's side. A frame
/// to 10.60.1.5 on r0 must give `action` and `reason`, counted in red, decided in blue's table
/// (explain's VRF: "the VRF slot the packet was looked up in, after a cross-VRF hop the last").
fn expect_decided_in_blue(
    blue: impl FnOnce(&mut Fixture),
    action: vrf_user::dataplane::XdpAction,
    reason: Reason,
) {
    let mut fx = Fixture::new();
    fx.red_into_blue();
    blue(&mut fx);
    let frame = fx.udp(fx.r0, RED_SRC4, "10.60.1.5");
    let r0 = fx.r0;
    let e = fx.expect_in_vrf(r0, &frame, action, reason, RED);
    assert_eq!(e.vrf, BLUE, "{reason:?}: decided in blue's table");
}

#[test]
fn vrf_device_hop_into_a_blackhole_drops_as_blackhole() {
    let blackhole =
        |fx: &mut Fixture| fx.typed_route(BLUE_TABLE, "10.60.1.0/24", RouteKind::Blackhole);
    expect_decided_in_blue(
        blackhole,
        vrf_user::dataplane::XDP_DROP,
        Reason::DropBlackhole,
    );
}

#[test]
fn vrf_device_hop_into_a_degraded_vrf_passes_as_degraded() {
    let degraded = |fx: &mut Fixture| {
        fx.blue_via_b1(BLUE_GW4);
        fx.update_vrf(BLUE, |v| v.flags |= VRF_DEGRADED);
    };
    expect_decided_in_blue(degraded, XDP_PASS, Reason::PassDegraded);
}

#[test]
fn vrf_device_hop_to_a_down_blue_member_passes_as_egress() {
    let down = |fx: &mut Fixture| {
        fx.blue_via_b1(BLUE_GW4);
        let b1 = fx.b1;
        fx.update_link(b1, |l| l.flags &= !LINK_UP);
    };
    expect_decided_in_blue(down, XDP_PASS, Reason::PassEgress);
}

#[test]
fn vrf_device_hop_without_neighbour_passes_as_no_neighbour_in_the_target_vrf() {
    let no_neighbour = |fx: &mut Fixture| fx.blue_via_b1("10.2.1.99");
    expect_decided_in_blue(no_neighbour, XDP_PASS, Reason::PassNoNeighbour);
}

#[test]
fn chained_vrf_device_hops_pass_as_unsupported() {
    // Red → vblue → blue, whose route points at another VRF device (back to red).
    let chained = |fx: &mut Fixture| {
        let o = outsider_in_red(fx, LINK_UP | LINK_VRF_DEVICE, 65535);
        fx.unicast(BLUE_TABLE, "10.60.1.0/24", &[nexthop(o.ifindex, None)]);
    };
    expect_decided_in_blue(chained, XDP_PASS, Reason::PassUnsupported);
}

#[test]
fn explain_names_the_target_vrf_when_the_lookup_after_a_vrf_device_hop_fails() {
    // Blue has no route: the failed lookup was in blue's table.
    expect_decided_in_blue(|_| {}, XDP_PASS, Reason::PassNoRoute);
}

// Source validation (__fib_validate_source, which the kernel runs on every forwarded IPv4 packet
// once custom rules exist, rp_filter or not).

/// Red routes `prefix` as `kind`; a frame from `src` in it to red's remote.
fn from_routed(fx: &mut Fixture, prefix: &str, kind: RouteKind, src: &str) -> Vec<u8> {
    fx.typed_route(RED_TABLE, prefix, kind);
    fx.udp(fx.r0, src, RED_REMOTE4)
}

#[test]
fn sources_that_are_local_broadcast_throw_or_unreachable() {
    use Outcome::{Pass, ViaR1};
    expect_each(&[
        (
            "a local address",
            |fx| from_routed(fx, "10.1.0.1/32", RouteKind::Local, "10.1.0.1"),
            Pass(Reason::PassMartian),
        ),
        (
            "a broadcast address",
            |fx| from_routed(fx, "10.1.0.255/32", RouteKind::Broadcast, "10.1.0.255"),
            Pass(Reason::PassMartian),
        ),
        (
            // Later rules would decide: the kernel's business.
            "a throw route",
            |fx| from_routed(fx, "10.97.0.0/16", RouteKind::Throw, "10.97.0.1"),
            Pass(Reason::PassMartian),
        ),
        (
            // fib_lookup fails: the "last resort" accepts the source unless rp_filter is on.
            "an unreachable route, no rp_filter",
            |fx| from_routed(fx, "10.96.0.0/16", RouteKind::Unreachable, "10.96.0.1"),
            ViaR1,
        ),
        (
            "an unreachable route, rp_filter loose",
            |fx| {
                fx.update_link(fx.r0, |l| l.flags |= LINK_RPF_LOOSE);
                from_routed(fx, "10.96.0.0/16", RouteKind::Unreachable, "10.96.0.1")
            },
            Pass(Reason::PassMartian),
        ),
    ]);
}

#[test]
fn leaked_route_validates_the_source_in_the_egress_members_vrf() {
    // Out of b1: the rules for iif=b1 give blue's table, where the source is a local address.
    let mut fx = Fixture::new();
    let b1 = fx.b1.ifindex;
    fx.unicast(
        RED_TABLE,
        "10.50.0.0/24",
        &[nexthop(b1, Some(ip(BLUE_GW4)))],
    );
    fx.typed_route(BLUE_TABLE, "10.1.0.2/32", RouteKind::Local);
    let frame = fx.udp(fx.r0, RED_SRC4, "10.50.0.5");
    fx.expect_pass(fx.r0, &frame, Reason::PassMartian);
    // The same source out of a red member is fine: red's table says unicast.
    let frame = fx.udp(fx.r0, RED_SRC4, RED_REMOTE4);
    let mac = r1_gw_mac(&fx);
    fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW4, mac, RED);
}

#[test]
fn kernel_vrf_validates_the_source_in_the_ingress_vrf() {
    // With an l3mdev the lookup is bound to the ingress VRF: blue's local route does not matter.
    let mut fx = Fixture::new();
    fx.update_vrf(RED, |v| v.ifindex = RED_VRF_DEVICE);
    let b1 = fx.b1;
    fx.unicast(
        RED_TABLE,
        "10.50.0.0/24",
        &[nexthop(b1.ifindex, Some(ip(BLUE_GW4)))],
    );
    fx.typed_route(BLUE_TABLE, "10.1.0.2/32", RouteKind::Local);
    let frame = fx.udp(fx.r0, RED_SRC4, "10.50.0.5");
    let mac = neigh_mac(b1.id, 1, false);
    fx.expect_forward(fx.r0, &frame, b1, BLUE_GW4, mac, RED);
    // A source local in red is refused.
    fx.typed_route(RED_TABLE, "10.1.0.1/32", RouteKind::Local);
    let frame = fx.udp(fx.r0, "10.1.0.1", "10.50.0.5");
    fx.expect_pass(fx.r0, &frame, Reason::PassMartian);
}

#[test]
fn rpf_strict_for_a_leaked_route_checks_the_egress_members_vrf() {
    // Red routes 10.1.0.2 back through r0, but the check runs in blue's table, which has no
    // route back: strict (as loose) refuses it.
    let mut fx = Fixture::new();
    let b1 = fx.b1.ifindex;
    fx.unicast(
        RED_TABLE,
        "10.50.0.0/24",
        &[nexthop(b1, Some(ip(BLUE_GW4)))],
    );
    fx.update_link(fx.r0, |l| l.flags |= LINK_RPF_STRICT);
    let frame = fx.udp(fx.r0, RED_SRC4, "10.50.0.5");
    fx.expect_pass(fx.r0, &frame, Reason::PassMartian);
}

// Reverse-path filter (IPv4 only, as in the kernel).

/// r0 with `rp_filter` strict or loose, a frame from `src` to red's remote.
fn rpf_frame(fx: &mut Fixture, flag: u16, src: &str) -> Vec<u8> {
    fx.update_link(fx.r0, |l| l.flags |= flag);
    fx.udp(fx.r0, src, RED_REMOTE4)
}

#[test]
fn rpf_strict_loose_and_off() {
    use Outcome::{Pass, ViaR1};
    expect_each(&[
        (
            "strict, the source routes back through another link",
            |fx| rpf_frame(fx, LINK_RPF_STRICT, "10.1.2.50"),
            Pass(Reason::PassMartian),
        ),
        (
            "strict, the source routes back through the ingress link",
            |fx| rpf_frame(fx, LINK_RPF_STRICT, RED_SRC4),
            ViaR1,
        ),
        (
            "strict, a multipath back route with a path through the ingress link",
            |fx| {
                let (r0, r2) = (fx.r0.ifindex, fx.r2.ifindex);
                fx.unicast(
                    RED_TABLE,
                    "10.44.0.0/24",
                    &[
                        nexthop(r2, Some(ip("10.1.2.1"))),
                        nexthop(r0, Some(ip("10.1.0.1"))),
                    ],
                );
                rpf_frame(fx, LINK_RPF_STRICT, "10.44.0.5")
            },
            ViaR1,
        ),
        (
            "loose, the source routes back through another link",
            |fx| rpf_frame(fx, LINK_RPF_LOOSE, "10.1.2.50"),
            ViaR1,
        ),
        (
            "loose, the source has no route",
            |fx| rpf_frame(fx, LINK_RPF_LOOSE, "10.99.0.1"),
            Pass(Reason::PassMartian),
        ),
        (
            "loose, the source routes to a blackhole",
            |fx| {
                fx.update_link(fx.r0, |l| l.flags |= LINK_RPF_LOOSE);
                from_routed(fx, "10.98.0.0/16", RouteKind::Blackhole, "10.98.0.1")
            },
            Pass(Reason::PassMartian),
        ),
        (
            // 10.200.0.0/16 routes in blue, not in red (ingress and egress VRF here).
            "loose, a route back that only another VRF has",
            |fx| rpf_frame(fx, LINK_RPF_LOOSE, BLUE_REMOTE4),
            Pass(Reason::PassMartian),
        ),
        (
            "off, a source without route",
            |fx| rpf_frame(fx, 0, "10.99.0.1"),
            ViaR1,
        ),
    ]);
}

// Ethernet padding.

/// A UDP packet with no payload (28 bytes of IP) in a 60-byte frame: 18 bytes of padding.
fn padded_frame(fx: &Fixture, dst: &str) -> Vec<u8> {
    let mut s = fx.spec(fx.r0, RED_SRC4, dst);
    s.payload_len = 0;
    let mut f = s.udp().unwrap();
    assert_eq!(f.len(), 42);
    f.resize(60, 0xee);
    f
}

#[test]
fn padded_minimum_frame_is_forwarded_with_the_padding_trimmed() {
    let mut fx = Fixture::new();
    let frame = padded_frame(&fx, RED_REMOTE4);
    let mac = r1_gw_mac(&fx);
    // expect_forward counts 60-byte frames and checks the output is 14 + 28 bytes.
    let out = fx.expect_forward(fx.r0, &frame, fx.r1, RED_GW4, mac, RED);
    assert_eq!(out.len(), 42);
}

#[test]
fn padded_frame_passed_to_the_kernel_keeps_its_padding() {
    let mut fx = Fixture::new();
    let frame = padded_frame(&fx, "10.99.0.1");
    fx.expect_pass(fx.r0, &frame, Reason::PassNoRoute);
}

// Counters over several decisions.

#[test]
fn counters_add_up_per_reason_per_vrf_and_per_link() {
    let mut fx = Fixture::new();
    let fwd = fx.udp(fx.r0, RED_SRC4, RED_REMOTE4);
    let no_route = fx.udp(fx.r0, RED_SRC4, "10.99.0.1");
    let mut bad = fx.udp(fx.r0, RED_SRC4, RED_REMOTE4);
    bad[24] ^= 0xff;
    let blue = fx.udp(fx.b0, BLUE_SRC4, BLUE_REMOTE4);
    let red_frames = vec![
        fwd.clone(),
        no_route.clone(),
        fwd.clone(),
        bad.clone(),
        fwd.clone(),
        no_route.clone(),
    ];
    fx.run_many(fx.r0.ifindex, &red_frames);
    fx.run_many(fx.b0.ifindex, std::slice::from_ref(&blue));
    let len = |f: &Vec<u8>| f.len() as u64;
    let red_bytes: u64 = red_frames.iter().map(len).sum();
    let want_red = [
        (Reason::Rx, 6, red_bytes),
        (Reason::Forwarded, 3, 3 * len(&fwd)),
        (Reason::PassNoRoute, 2, 2 * len(&no_route)),
        (Reason::DropChecksum, 1, len(&bad)),
    ];
    let want_blue = [
        (Reason::Rx, 1, len(&blue)),
        (Reason::Forwarded, 1, len(&blue)),
    ];
    let snap = fx.snapshot();
    let check = |what: &str, c: &vrf_common::Counters, want: &[(Reason, u64, u64)]| {
        for r in Reason::ALL {
            let (p, b) = want
                .iter()
                .find(|(w, _, _)| *w == r)
                .map_or((0, 0), |(_, p, b)| (*p, *b));
            let got = c.by_reason[r as usize];
            assert_eq!((got.packets, got.bytes), (p, b), "{what} {}", r.name());
        }
    };
    check("vrf red", &snap.vrfs[&RED], &want_red);
    check("link r0", &snap.links[&fx.r0.stats_slot], &want_red);
    check("vrf blue", &snap.vrfs[&BLUE], &want_blue);
    check("link b0", &snap.links[&fx.b0.stats_slot], &want_blue);
    for l in [fx.r1, fx.r2, fx.r3, fx.b1, fx.vblue] {
        check(l.name, &snap.links[&l.stats_slot], &[]);
    }
    check("vrf 0", &snap.vrfs[&0], &[]);
    check("vrf 3", &snap.vrfs[&INACTIVE_SLOT], &[]);
    // Other directions are not the XDP program's.
    for dir in [
        vrf_common::Direction::VrfEgress,
        vrf_common::Direction::MemberTx,
    ] {
        check(
            "red other direction",
            &fx.dp.maps.vrf_counters(RED, dir).unwrap(),
            &[],
        );
        check(
            "r0 other direction",
            &fx.dp.maps.link_counters(fx.r0.stats_slot, dir).unwrap(),
            &[],
        );
    }
}
