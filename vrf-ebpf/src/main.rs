//! vrf-xdp's programs. Entry points stay thin: the decision lives in `forward`.
#![no_std]
#![no_main]

mod counters;
mod egress;
mod fib;
mod forward;
mod maps;
mod neigh;
mod parse;
mod rewrite;
mod switch;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT},
    helpers::bpf_xdp_adjust_tail,
    macros::xdp,
    programs::XdpContext,
};
use vrf_common::{Action, Direction, Explain, Reason, LINK_MEMBER};

use crate::{
    forward::Verdict,
    maps::{EXPLAIN, LINKS, TX_PORTS},
    parse::Frame,
};

/// The fast path on every VRF member.
#[xdp]
pub fn xdp_vrf(ctx: XdpContext) -> u32 {
    run(&ctx, false)
}

/// The same decision, recorded in `EXPLAIN` instead of the counters: `vrfctl lookup` and the
/// tests run it through BPF_PROG_TEST_RUN to learn what the fast path does with a packet, from
/// the program itself.
#[xdp]
pub fn xdp_vrf_explain(ctx: XdpContext) -> u32 {
    run(&ctx, true)
}

#[inline(always)]
fn run(ctx: &XdpContext, explain: bool) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(member) = (unsafe { LINKS.get(ifindex) }).copied() else {
        return XDP_PASS;
    };
    if member.flags & LINK_MEMBER == 0 {
        return XDP_PASS;
    }
    let frame = Frame {
        data: ctx.data(),
        data_end: ctx.data_end(),
    };
    let bytes = frame.len() as u64;
    let mut verdict = if switch::vrfd_gone() {
        Verdict::only(Reason::PassVrfdGone, member.vrf)
    } else {
        forward::decide::<false>(frame, ifindex, &member)
    };
    let action = match verdict.reason.action() {
        Action::Forward => send(ctx, &mut verdict),
        Action::Drop => XDP_DROP,
        Action::Pass | Action::None => XDP_PASS,
    };
    // An explained packet is a question (vrfctl lookup), not traffic: it is not counted.
    if explain {
        record(&verdict);
    } else {
        counters::count(&member, Direction::Ingress, verdict.reason, bytes);
    }
    action
}

/// Redirect, trim Ethernet padding, rewrite — in that order, so that whatever fails first leaves
/// the frame as it arrived for the kernel (the redirect only records its target until we return).
#[inline(always)]
fn send(ctx: &XdpContext, verdict: &mut Verdict) -> u32 {
    if TX_PORTS.redirect(verdict.oif, XDP_PASS as u64).is_err()
        || (verdict.trim != 0
            && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(verdict.trim as i32)) } != 0)
    {
        verdict.reason = Reason::PassEgress;
        return XDP_PASS;
    }
    if !rewrite::apply(
        Frame {
            data: ctx.data(),
            data_end: ctx.data_end(),
        },
        verdict,
    ) {
        // Unreachable after a successful trim of padding only; never send a half-done frame.
        verdict.reason = Reason::DropMalformed;
        return XDP_DROP;
    }
    XDP_REDIRECT
}

#[inline(always)]
fn record(v: &Verdict) {
    if let Some(e) = EXPLAIN.get_ptr_mut(0) {
        unsafe {
            let seq = (*e).seq + 1;
            *e = Explain {
                reason: v.reason as u32,
                oif: v.oif,
                vrf: v.vrf,
                family: v.family,
                neighbour: v.neighbour,
                seq,
            };
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
