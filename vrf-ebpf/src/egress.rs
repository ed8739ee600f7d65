//! tc programs on the egress side.
//!
//! - `tc_vrf_egress`, on a VRF device: what the host itself sends inside a VRF (sockets bound to
//!   the VRF device, `ip vrf exec`, OpenVPN's `--bind-dev`). The kernel passes such a packet
//!   through the VRF device's transmit path only when that device has a real root qdisc
//!   (`vrf_ip_out` → `vrf_ip_out_redirect` when `!qdisc_tx_is_default`); vrfd gives it one. Here
//!   it gets the same per-VRF FIB and neighbour lookup as XDP ingress and leaves straight out of
//!   the member with its L2 header built; anything else continues to `vrf_xmit` unchanged.
//! - `tc_member_tx`, on each member: counts, per VRF, what the kernel transmits out of it.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT},
    helpers::{bpf_check_mtu, bpf_redirect},
    macros::classifier,
    programs::TcContext,
};
use vrf_common::{
    Action, Direction, Reason, LINK_MEMBER, LINK_VRF_DEVICE, VRF_LOCAL_MARKED4, VRF_LOCAL_MARKED6,
    VRF_LOCAL_RULE4, VRF_LOCAL_RULE6,
};

use crate::{
    capture, counters, forward,
    maps::{LINKS, VRFS},
    parse::{self, EthHdr, Frame, ETH_LEN, IPV6_LEN},
    rewrite, switch,
};

/// Headers the decision reads: Ethernet, IPv6 (the larger), and the L4 ports.
const PULL_LEN: u32 = (ETH_LEN + IPV6_LEN + 4) as u32;

#[classifier]
pub fn tc_vrf_egress(ctx: TcContext) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(dev) = (unsafe { LINKS.get(ifindex) }).copied() else {
        return TC_ACT_OK;
    };
    if dev.flags & LINK_VRF_DEVICE == 0 {
        return TC_ACT_OK;
    }
    let bytes = ctx.len() as u64;
    // Headers may sit in paged data; a failed pull (a shorter packet) leaves what is linear.
    let _ = ctx.pull_data(PULL_LEN);
    let frame = Frame {
        data: ctx.data(),
        data_end: ctx.data_end(),
    };
    let mark = unsafe { (*ctx.skb.skb).mark };
    let mut verdict = if switch::vrfd_gone() {
        forward::Verdict::only(Reason::PassVrfdGone, dev.vrf)
    } else if local_rule_ahead(frame, dev.vrf, mark) {
        forward::Verdict::only(Reason::PassPolicyRule, dev.vrf)
    } else {
        forward::decide::<true>(frame, ifindex, &dev)
    };
    // Copied before `send` rewrites it: the packet as the host sent it.
    let captured = capture::begin(&ctx, &dev, ifindex, Direction::VrfEgress, &verdict);
    let action = match verdict.reason.action() {
        Action::Forward => send(&ctx, &mut verdict),
        // Never drop what the host sends: the kernel decides (a blackhole in the VRF already
        // failed the socket's own route lookup).
        _ => TC_ACT_OK,
    };
    if let Some(c) = captured {
        c.finish(&verdict, action as u32);
    }
    counters::count(&dev, Direction::VrfEgress, verdict.reason, bytes);
    action
}

/// Could a rule ahead of the VRF's `l3mdev` rule catch this host-sent packet (its family, its
/// `SO_MARK`)? Then the kernel's output route lookup decides, not the VRF's table.
#[inline(always)]
fn local_rule_ahead(frame: Frame, vrf: u32, mark: u32) -> bool {
    let Some(v) = VRFS.get(vrf) else {
        return false;
    };
    let Some(eth) = frame.ptr_at::<EthHdr>(0) else {
        return false;
    };
    let (any, marked) = if unsafe { (*eth).proto } == parse::ETH_P_IPV6 {
        (VRF_LOCAL_RULE6, VRF_LOCAL_MARKED6)
    } else {
        (VRF_LOCAL_RULE4, VRF_LOCAL_MARKED4)
    };
    v.flags & any != 0 || (mark != 0 && v.flags & marked != 0)
}

/// MTU (GSO-aware), redirect, rewrite — the redirect only records its target until we return,
/// so the packet stays untouched for the kernel until every step succeeded.
#[inline(always)]
fn send(ctx: &TcContext, verdict: &mut forward::Verdict) -> i32 {
    let mut mtu_len: u32 = 0;
    if unsafe { bpf_check_mtu(ctx.skb.skb.cast(), verdict.oif, &mut mtu_len, 0, 0) } != 0 {
        verdict.reason = Reason::PassMtu;
        return TC_ACT_OK;
    }
    if unsafe { bpf_redirect(verdict.oif, 0) } != TC_ACT_REDIRECT as i64 {
        verdict.reason = Reason::PassEgress;
        return TC_ACT_OK;
    }
    if !rewrite::apply(
        Frame {
            data: ctx.data(),
            data_end: ctx.data_end(),
        },
        verdict,
    ) {
        verdict.reason = Reason::PassEgress;
        return TC_ACT_OK;
    }
    TC_ACT_REDIRECT
}

#[classifier]
pub fn tc_member_tx(ctx: TcContext) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if let Some(link) = unsafe { LINKS.get(ifindex) } {
        if link.flags & LINK_MEMBER != 0 {
            counters::count(link, Direction::MemberTx, Reason::Rx, ctx.len() as u64);
        }
    }
    TC_ACT_OK
}
