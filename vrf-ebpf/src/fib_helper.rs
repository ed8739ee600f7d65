//! The benchmark's XDP programs (`cargo xtask bench`), built as their own object so that vrfd
//! and vrfctl never carry them:
//! - `xdp_fib_helper`: what a user would otherwise run — an XDP forwarder built on the kernel's
//!   `bpf_fib_lookup` helper (as xdp-tools' xdp-forward), the table chosen with
//!   `BPF_FIB_LOOKUP_TBID` from `FIB_HELPER_TABLE[0]`; on success MACs from the helper, TTL − 1,
//!   redirect through `FIB_HELPER_TX_PORTS`; anything else is passed to the kernel;
//! - `xdp_bench_gen`: the traffic source for XDP live frames (BPF_PROG_TEST_RUN): writes the
//!   template headers of `BENCH_TEMPLATE[0]` over the frame (a recycled frame comes back as the
//!   router left it) and transmits it (XDP_TX) out of the test run's ingress device;
//!   Paced (`BENCH_GEN_KEEP[0]` between 1 and 65535): only that share of the frames, in
//!   1/65536, goes out, spread evenly over the run; the rest are dropped before they leave.
//!   `BENCH_GEN_STATE[1]` (per CPU) counts what went out. Windowed (`BENCH_GEN_WINDOW[0]` not
//!   0): a frame goes out only while fewer than that many are in flight (sent on this CPU, less
//!   the sink's count on this CPU, less `BENCH_GEN_WINDOW[1]`), as a transport's window: below
//!   a veth's ring (256), no ring on the path can overflow. `BENCH_GEN_STATE[2]` counts the
//!   frames the window held back;
//! - `xdp_bench_sink`: counts into `BENCH_SINK_COUNT` (per CPU) and drops;
//! - `xdp_bench_redirect`: the ceiling of any XDP forwarder on this path — no lookup, the MACs
//!   of `BENCH_REDIRECT[0]` written, TTL − 1, redirect through `FIB_HELPER_TX_PORTS`.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams,
        xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_DIRECT, BPF_FIB_LOOKUP_TBID,
    },
    helpers::bpf_fib_lookup,
    macros::{map, xdp},
    maps::{Array, DevMapHash, PerCpuArray},
    programs::XdpContext,
};
use vrf_common::BenchRedirect;

/// Bytes of `BENCH_TEMPLATE` written over each generated frame: Ethernet, IPv4, UDP headers.
const TEMPLATE_LEN: usize = 42;
const ETH_LEN: usize = 14;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The routing table the helper looks up (one entry, set by the bench).
#[map]
static FIB_HELPER_TABLE: Array<u32> = Array::with_max_entries(1, 0);

/// Redirect targets of the helper: ifindex → ifindex.
#[map]
static FIB_HELPER_TX_PORTS: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// The generator's frame headers.
#[map]
static BENCH_TEMPLATE: Array<[u8; TEMPLATE_LEN]> = Array::with_max_entries(1, 0);

/// The generator's share of frames sent, in 1/65536 (0 or more than 65535: every one).
#[map]
static BENCH_GEN_KEEP: Array<u32> = Array::with_max_entries(1, 0);

/// Per CPU: [0] the generator's credit (1/65536 frames), [1] frames it sent, [2] frames its
/// window held back.
#[map]
static BENCH_GEN_STATE: PerCpuArray<u64> = PerCpuArray::with_max_entries(3, 0);

/// [0] the most frames in flight (0: no window), [1] the origin: sent − received (this CPU's
/// counts) when nothing was in flight, wrapping (the sink may have counted more on this CPU).
#[map]
static BENCH_GEN_WINDOW: Array<u64> = Array::with_max_entries(2, 0);

/// One frame's worth of credit.
const GEN_UNIT: u64 = 65536;

/// What `xdp_bench_redirect` writes and where it sends every IPv4 frame.
#[map]
static BENCH_REDIRECT: Array<BenchRedirect> = Array::with_max_entries(1, 0);

/// Frames the sink received, per CPU.
#[map]
static BENCH_SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    ttl: u8,
    protocol: u8,
    check: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    nexthdr: u8,
    hop_limit: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data() + offset;
    if start + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(start as *mut T)
}

#[xdp]
pub fn xdp_bench_redirect(ctx: XdpContext) -> u32 {
    redirect(&ctx).unwrap_or(XDP_PASS)
}

#[inline(always)]
fn redirect(ctx: &XdpContext) -> Option<u32> {
    let eth = ptr_at::<[u8; ETH_LEN]>(ctx, 0)?;
    if unsafe { [(*eth)[12], (*eth)[13]] } != [0x08, 0x00] {
        return None;
    }
    let to = BENCH_REDIRECT.get(0)?;
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
    if unsafe { (*ip).ttl } <= 1 {
        return None;
    }
    let action = FIB_HELPER_TX_PORTS.redirect(to.oif, XDP_PASS as u64).ok()?;
    unsafe {
        decrease_ttl(ip);
        rewrite_macs(eth, &to.dst_mac, &to.src_mac);
    }
    Some(action)
}

/// TTL − 1 and the RFC 1624 incremental checksum (as the kernel's ip_decrease_ttl).
///
/// # Safety
/// `ip` points at a whole IPv4 header inside the frame.
#[inline(always)]
unsafe fn decrease_ttl(ip: *mut Ipv4Hdr) {
    let mut check = u16::from_ne_bytes((*ip).check) as u32;
    check += u16::to_be(0x0100) as u32;
    (*ip).check = ((check + (check >= 0xffff) as u32) as u16).to_ne_bytes();
    (*ip).ttl -= 1;
}

/// The next hop's Ethernet addresses into the frame's header.
///
/// # Safety
/// `eth` points at a whole Ethernet header inside the frame.
#[inline(always)]
unsafe fn rewrite_macs(eth: *mut [u8; ETH_LEN], dst: &[u8; 6], src: &[u8; 6]) {
    let eth = eth as *mut u8;
    core::ptr::copy_nonoverlapping(dst.as_ptr(), eth, 6);
    core::ptr::copy_nonoverlapping(src.as_ptr(), eth.add(6), 6);
}

#[xdp]
pub fn xdp_fib_helper(ctx: XdpContext) -> u32 {
    forward(&ctx).unwrap_or(XDP_PASS)
}

#[inline(always)]
fn forward(ctx: &XdpContext) -> Option<u32> {
    let eth = ptr_at::<[u8; ETH_LEN]>(ctx, 0)?;
    let proto = unsafe { [(*eth)[12], (*eth)[13]] };
    let table = *FIB_HELPER_TABLE.get(0)?;
    let mut params = core::mem::MaybeUninit::<FibParams>::uninit();
    let p = zeroed(&mut params);
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.__bindgen_anon_5.tbid = table;
    let v4 = match proto {
        [0x08, 0x00] => {
            let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
            let ip = unsafe { &*ip };
            if ip.ttl <= 1 {
                return None;
            }
            p.family = AF_INET;
            p.__bindgen_anon_2.tos = ip.tos;
            p.l4_protocol = ip.protocol;
            p.__bindgen_anon_1.tot_len = u16::from_be_bytes(ip.tot_len);
            p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(ip.saddr);
            p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(ip.daddr);
            true
        }
        [0x86, 0xdd] => {
            let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN)?;
            let ip = unsafe { &*ip };
            if ip.hop_limit <= 1 {
                return None;
            }
            let vcf = ip.version_class_flow;
            p.family = AF_INET6;
            p.__bindgen_anon_2.flowinfo =
                u32::from_ne_bytes([vcf[0] & 0x0f, vcf[1], vcf[2], vcf[3]]);
            p.l4_protocol = ip.nexthdr;
            p.__bindgen_anon_1.tot_len =
                (size_of::<Ipv6Hdr>() as u16).wrapping_add(u16::from_be_bytes(ip.payload_len));
            p.__bindgen_anon_3.ipv6_src = words(&ip.saddr);
            p.__bindgen_anon_4.ipv6_dst = words(&ip.daddr);
            false
        }
        _ => return None,
    };
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            p as *mut FibParams,
            size_of::<FibParams>() as i32,
            BPF_FIB_LOOKUP_DIRECT | BPF_FIB_LOOKUP_TBID,
        )
    };
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        return None;
    }
    // Redirect first: an egress outside the devmap leaves the frame untouched for the kernel.
    let action = FIB_HELPER_TX_PORTS
        .redirect(p.ifindex, XDP_PASS as u64)
        .ok()?;
    if v4 {
        let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_LEN)?;
        unsafe { decrease_ttl(ip) };
    } else {
        let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_LEN)?;
        unsafe { (*ip).hop_limit -= 1 };
    }
    unsafe { rewrite_macs(eth, &p.dmac, &p.smac) };
    Some(action)
}

/// The lookup parameters zeroed in place, word by word: zeroing a value (`mem::zeroed`, or
/// moving one out of `MaybeUninit`) becomes a call to a BPF `memset` that costs more.
#[inline(always)]
fn zeroed(p: &mut core::mem::MaybeUninit<FibParams>) -> &mut FibParams {
    let w = p.as_mut_ptr() as *mut u32;
    let mut i = 0;
    while i < size_of::<FibParams>() / 4 {
        // SAFETY: within the struct, which is 4-byte aligned and a multiple of 4 bytes long.
        unsafe { w.add(i).write_volatile(0) };
        i += 1;
    }
    // SAFETY: every byte was written; all-zero is a valid value of this plain-data struct.
    unsafe { p.assume_init_mut() }
}

const _: () = assert!(size_of::<FibParams>() == 64);

#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    [w(0), w(4), w(8), w(12)]
}

#[xdp]
pub fn xdp_bench_gen(ctx: XdpContext) -> u32 {
    let Some(template) = BENCH_TEMPLATE.get(0) else {
        return XDP_DROP;
    };
    let Some(head) = ptr_at::<[u8; TEMPLATE_LEN]>(&ctx, 0) else {
        return XDP_DROP;
    };
    if window_full() {
        if let Some(n) = BENCH_GEN_STATE.get_ptr_mut(2) {
            unsafe { *n += 1 };
        }
        return XDP_DROP;
    }
    let keep = BENCH_GEN_KEEP.get(0).map_or(0, |k| u64::from(*k));
    if keep != 0 && keep < GEN_UNIT {
        if let Some(credit) = BENCH_GEN_STATE.get_ptr_mut(0) {
            let c = unsafe { *credit } + keep;
            if c < GEN_UNIT {
                unsafe { *credit = c };
                return XDP_DROP;
            }
            unsafe { *credit = c - GEN_UNIT };
        }
    }
    if let Some(n) = BENCH_GEN_STATE.get_ptr_mut(1) {
        unsafe { *n += 1 };
    }
    unsafe { *head = *template };
    XDP_TX
}

/// Whether the generator's window (if any) is full: the sink runs on the generator's CPU (the
/// caller pins both), so this CPU's two counts say what is in flight.
#[inline(always)]
fn window_full() -> bool {
    let limit = BENCH_GEN_WINDOW.get(0).map_or(0, |l| *l);
    if limit == 0 {
        return false;
    }
    let origin = BENCH_GEN_WINDOW.get(1).map_or(0, |o| *o);
    let sent = BENCH_GEN_STATE.get(1).map_or(0, |n| *n);
    let received = BENCH_SINK_COUNT.get(0).map_or(0, |n| *n);
    let in_flight = sent.wrapping_sub(received).wrapping_sub(origin) as i64;
    in_flight >= limit as i64
}

#[xdp]
pub fn xdp_bench_sink(_ctx: XdpContext) -> u32 {
    if let Some(n) = BENCH_SINK_COUNT.get_ptr_mut(0) {
        unsafe { *n += 1 };
    }
    XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
