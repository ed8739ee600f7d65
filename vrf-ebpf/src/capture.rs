//! Capture (`vrfctl capture`): a copy of the frame as the fast path saw it, with its decision,
//! into a ring buffer. Idle, it costs one bit test of the link entry the program already read
//! (`LINK_CAPTURE`, which vrfd sets on every link while a capture holds its lease); records are
//! limited by a rate and by the ring's room, and a record that does not fit is counted and
//! dropped, never the packet.
//!
//! The record is built in a per-CPU scratch buffer and copied out with `bpf_ringbuf_output`: a
//! reservation held across the send (reserve, then submit or discard) is a reference the 6.1
//! verifier refuses to see released on every path ("Unreleased reference").
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes, bpf_xdp_load_bytes},
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use vrf_common::{
    CaptureConfig, CaptureHeader, CaptureRecord, CaptureStats, Direction, Link, CAPTURE_ANY_VRF,
    CAPTURE_RING_BYTES, CAPTURE_SNAP_MAX, LINK_CAPTURE,
};

use crate::forward::Verdict;

#[map]
pub static CAPTURE: Array<CaptureConfig> = Array::with_max_entries(1, 0);

#[map]
pub static CAPTURE_STATE: Array<u64> = Array::with_max_entries(1, 0);

#[map]
pub static CAPTURE_STATS: PerCpuArray<CaptureStats> = PerCpuArray::with_max_entries(1, 0);

/// One record being built per CPU and direction (XDP ingress and tc egress never share one).
#[map]
pub static CAPTURE_SCRATCH: PerCpuArray<CaptureRecord> = PerCpuArray::with_max_entries(2, 0);

#[map]
pub static CAPTURE_RING: RingBuf = RingBuf::with_byte_size(CAPTURE_RING_BYTES, 0);

const HEADER_LEN: usize = core::mem::size_of::<CaptureHeader>();

/// Where the frame's bytes come from: the XDP buffer or the skb (whose data may be paged).
pub trait Source {
    fn frame_len(&self) -> u32;
    /// Copy the first `len` (1..=CAPTURE_SNAP_MAX) bytes to `dst`.
    fn copy(&self, dst: *mut u8, len: u32) -> bool;
}

impl Source for XdpContext {
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        (self.data_end() - self.data()) as u32
    }

    #[inline(always)]
    fn copy(&self, dst: *mut u8, len: u32) -> bool {
        unsafe { bpf_xdp_load_bytes(self.ctx, 0, dst.cast(), len) == 0 }
    }
}

impl Source for TcContext {
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        self.len()
    }

    #[inline(always)]
    fn copy(&self, dst: *mut u8, len: u32) -> bool {
        unsafe { bpf_skb_load_bytes(self.skb.skb.cast(), 0, dst.cast(), len) == 0 }
    }
}

/// A record holding the frame as it arrived, in this CPU's scratch buffer; the decision is
/// written once the packet was sent (a failed redirect changes it).
pub struct Pending {
    rec: *mut CaptureRecord,
    reasons: u64,
}

/// Copy the frame if a capture runs and wants it. Called after the decision, before the
/// frame is rewritten.
#[inline(always)]
pub fn begin(
    src: &impl Source,
    link: &Link,
    ifindex: u32,
    dir: Direction,
    v: &Verdict,
) -> Option<Pending> {
    // The whole idle cost: this bit test of an entry already read.
    if link.flags & LINK_CAPTURE == 0 {
        return None;
    }
    let c = unsafe { *CAPTURE.get_ptr(0)? };
    let now = unsafe { bpf_ktime_get_ns() };
    // The reader stopped renewing (killed): nothing more is recorded; vrfd clears the bit.
    if c.enabled == 0 || now > c.lease_until_ns {
        return None;
    }
    if c.vrf != CAPTURE_ANY_VRF && c.vrf != link.vrf && c.vrf != v.vrf {
        return None;
    }
    if c.ifindex != 0 && c.ifindex != ifindex && c.ifindex != v.oif {
        return None;
    }
    if c.early_reasons & (1u64 << (v.reason as u32 & 63)) == 0 {
        return None;
    }
    let stats = CAPTURE_STATS.get_ptr_mut(0)?;
    if c.interval_ns != 0 && !admit(now, c.interval_ns, c.burst_ns) {
        unsafe { (*stats).rate_limited += 1 };
        return None;
    }
    let rec = CAPTURE_SCRATCH.get_ptr_mut(dir as u32 & 1)?;
    let orig_len = src.frame_len();
    let mut len = if orig_len < c.snaplen {
        orig_len
    } else {
        c.snaplen
    };
    if len > CAPTURE_SNAP_MAX as u32 {
        len = CAPTURE_SNAP_MAX as u32;
    }
    // The verifier wants the length provably in 1..=CAPTURE_SNAP_MAX at the helper call; LLVM
    // would fold a plain mask away (it knows the range), so the value passes `black_box` first.
    let n = (core::hint::black_box(len).wrapping_sub(1) & (CAPTURE_SNAP_MAX as u32 - 1)) + 1;
    if len == 0 || !src.copy(unsafe { (*rec).data.as_mut_ptr() }, n) {
        len = 0;
    }
    unsafe {
        let h = &mut (*rec).header;
        h.ts_ns = now;
        h.orig_len = orig_len;
        h.cap_len = len;
        h.ifindex = ifindex;
        h.direction = dir as u32;
        h.vrf = link.vrf;
    }
    Some(Pending {
        rec,
        reasons: c.reasons,
    })
}

impl Pending {
    /// Write the final decision and copy the record (header and captured bytes only) into the
    /// ring, unless the final reason is not one the capture asked for.
    #[inline(always)]
    pub fn finish(self, v: &Verdict, action: u32) {
        if self.reasons & (1u64 << (v.reason as u32 & 63)) == 0 {
            return;
        }
        let cap_len = unsafe {
            let h = &mut (*self.rec).header;
            h.decided_vrf = v.vrf;
            h.reason = v.reason as u32;
            h.action = action;
            h.oif = v.oif;
            h.family = v.family;
            h.neighbour = v.neighbour;
            h.cap_len
        };
        // Bounded again for the verifier: the size must provably fit the scratch entry.
        let size = HEADER_LEN
            + (core::hint::black_box(cap_len) as usize & (2 * CAPTURE_SNAP_MAX - 1))
                .min(CAPTURE_SNAP_MAX);
        let bytes = unsafe { core::slice::from_raw_parts(self.rec as *const u8, size) };
        let Some(stats) = CAPTURE_STATS.get_ptr_mut(0) else {
            return;
        };
        match CAPTURE_RING.output::<[u8]>(bytes, 0) {
            Ok(()) => unsafe { (*stats).records += 1 },
            Err(_) => unsafe { (*stats).ring_full += 1 },
        }
    }
}

/// GCRA over one shared theoretical arrival time: CPUs racing here may let a record or two
/// more through, never fewer; exact enough to protect forwarding and the reader.
#[inline(always)]
fn admit(now: u64, interval: u64, burst: u64) -> bool {
    let Some(tat) = CAPTURE_STATE.get_ptr_mut(0) else {
        return false;
    };
    let t = unsafe { *tat };
    let t = if t > now { t } else { now };
    if t - now > burst {
        return false;
    }
    unsafe { *tat = t + interval };
    true
}
