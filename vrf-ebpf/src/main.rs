//! vrf-xdp's programs. Entry points stay thin: the decision lives in `forward`.
#![no_std]
#![no_main]

mod capture;
mod counters;
mod egress;
mod fib;
mod forward;
mod maps;
mod neigh;
mod parse;
mod rewrite;
mod switch;
mod vlan;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT},
    helpers::bpf_xdp_adjust_tail,
    macros::xdp,
    programs::XdpContext,
};
use vrf_common::{Action, Direction, Explain, Reason};

use crate::{
    forward::Verdict,
    maps::{EXPLAIN, TX_PORTS},
    parse::Frame,
};

/// The fast path on every VRF member.
#[xdp]
pub fn xdp_vrf(ctx: XdpContext) -> u32 {
    run(&ctx, false, true)
}

/// The same decision, recorded in `EXPLAIN` instead of the counters: `vrfctl lookup` and the
/// tests run it through BPF_PROG_TEST_RUN to learn what the fast path does with a packet, from
/// the program itself.
#[xdp]
pub fn xdp_vrf_explain(ctx: XdpContext) -> u32 {
    run(&ctx, true, false)
}

/// The dead-man switch's beat: never attached; vrfd runs it after each refresh of
/// `HEARTBEAT`, and it arms the switch's timer for the rest of the lease.
#[xdp]
pub fn xdp_vrf_beat(_ctx: XdpContext) -> u32 {
    switch::beat()
}

/// `xdp_vrf` with capture compiled out: never attached; `cargo xtask bench` measures what
/// capture costs while idle against it.
#[xdp]
pub fn xdp_vrf_nocapture(ctx: XdpContext) -> u32 {
    run(&ctx, false, false)
}

#[inline(always)]
fn run(ctx: &XdpContext, explain: bool, capture: bool) -> u32 {
    // The device served here: a member, a trunk of VLAN members, or the bond of a slave.
    let Some((port_ifindex, port)) = vlan::port(ctx.ingress_ifindex() as u32) else {
        return XDP_PASS;
    };
    let frame = Frame {
        data: ctx.data(),
        data_end: ctx.data_end(),
    };
    let bytes = frame.len() as u64;
    let at = match vlan::ingress(frame, port_ifindex, &port) {
        Ok(at) => at,
        Err(reason) => {
            if explain {
                record(&Verdict::only(reason, port.vrf));
            } else {
                counters::count_port(&port, reason, bytes);
            }
            return XDP_PASS;
        }
    };
    let mut verdict = if switch::vrfd_gone() {
        Verdict::only(Reason::PassVrfdGone, at.link.vrf)
    } else {
        forward::decide_l3::<false>(at.l3, at.dst_mac, at.proto, at.ifindex, &at.link)
    };
    // Copied before `send` rewrites it: the frame as it arrived.
    let captured = if capture {
        capture::begin(ctx, &at.link, at.ifindex, Direction::Ingress, &verdict)
    } else {
        None
    };
    let action = match verdict.reason.action() {
        Action::Forward => send(ctx, &mut verdict, at.tagged),
        Action::Drop => XDP_DROP,
        Action::Pass | Action::None => XDP_PASS,
    };
    if let Some(c) = captured {
        c.finish(&verdict, action);
    }
    // An explained packet is a question (vrfctl lookup), not traffic: it is not counted.
    if explain {
        record(&verdict);
    } else {
        counters::count(&at.link, Direction::Ingress, verdict.reason, bytes);
        counters::count_path(&verdict, bytes);
    }
    action
}

/// Redirect, trim Ethernet padding, pop or push the tag, rewrite — in that order, so that
/// whatever fails first leaves the frame as it arrived for the kernel (the redirect only
/// records its target until we return; a trimmed frame loses only padding).
#[inline(always)]
fn send(ctx: &XdpContext, verdict: &mut Verdict, tagged_in: bool) -> u32 {
    let Some(out) = vlan::out(verdict) else {
        verdict.reason = Reason::PassEgress;
        return XDP_PASS;
    };
    if TX_PORTS.redirect(out.tx, XDP_PASS as u64).is_err()
        || (verdict.trim != 0
            && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(verdict.trim as i32)) } != 0)
        || !vlan::retag(ctx, tagged_in, out.vid != 0)
    {
        verdict.reason = Reason::PassEgress;
        return XDP_PASS;
    }
    if !vlan::rewrite(
        Frame {
            data: ctx.data(),
            data_end: ctx.data_end(),
        },
        verdict,
        out.vid,
    ) {
        // Unreachable after a successful trim and retag; never send a half-done frame.
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
