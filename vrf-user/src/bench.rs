//! The benchmark's own eBPF object (`vrf-ebpf/src/fib_helper.rs`): the `bpf_fib_lookup`
//! forwarder vrf-xdp is compared with, and the live-frame traffic source and sink.
//!
//! Only the bench runner (`bench/`, the `vrf-bench` binary) refers to it. No cargo feature guards
//! it: an unreferenced static is dropped by the linker (`--gc-sections`), so vrfd and vrfctl do
//! not carry the object (checked by `cargo xtask bench`), and one feature set for vrf-user
//! keeps `cargo build -p vrf-user` and `cargo test --workspace` from building it twice.
pub static FIB_HELPER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fib-helper"));

/// Program names in [`FIB_HELPER_OBJECT`].
pub mod prog_names {
    pub const FIB_HELPER: &str = "xdp_fib_helper";
    pub const GEN: &str = "xdp_bench_gen";
    pub const SINK: &str = "xdp_bench_sink";
    pub const REDIRECT: &str = "xdp_bench_redirect";
}

/// Map names in [`FIB_HELPER_OBJECT`].
pub mod map_names {
    /// `Array<u32>`, one entry: the table `xdp_fib_helper` looks up (BPF_FIB_LOOKUP_TBID).
    pub const TABLE: &str = "FIB_HELPER_TABLE";
    /// `DevMapHash`: the helper's redirect targets.
    pub const TX_PORTS: &str = "FIB_HELPER_TX_PORTS";
    /// `Array<[u8; 42]>`, one entry: Ethernet, IPv4 and UDP headers the generator writes.
    pub const TEMPLATE: &str = "BENCH_TEMPLATE";
    /// `Array<u32>`, one entry: the share of frames the generator sends, in 1/65536.
    pub const GEN_KEEP: &str = "BENCH_GEN_KEEP";
    /// `PerCpuArray<u64>`, three entries: the generator's credit, frames it sent, frames its
    /// window held back.
    pub const GEN_STATE: &str = "BENCH_GEN_STATE";
    /// `Array<u64>`, two entries: the most frames in flight (0: no window), the origin of the
    /// count (sent − received on the generator's CPU when none were in flight, wrapping).
    pub const GEN_WINDOW: &str = "BENCH_GEN_WINDOW";
    /// `PerCpuArray<u64>`, one entry: frames the sink dropped.
    pub const SINK_COUNT: &str = "BENCH_SINK_COUNT";
    /// `Array<BenchRedirect>`, one entry: the MACs and egress of the raw-redirect ceiling.
    pub const REDIRECT: &str = "BENCH_REDIRECT";
}

/// Length of the generator's header template.
pub const TEMPLATE_LEN: usize = 42;
