//! vrf-xdp userspace: the loader library shared by vrfd, vrfctl and the tests.
//!
//! - [`dataplane`]: load the embedded object, attach / detach XDP, pin, run the programs through
//!   BPF_PROG_TEST_RUN;
//! - [`maps`]: typed reads and writes of every map (nobody writes raw map bytes);
//! - [`packet`]: frames for lookups and tests;
//! - [`stats`]: the counters per VRF and member, for `vrfctl stats` and vrfd's metrics;
//! - [`capture`]: `vrfctl capture`, the fast path's frames and decisions as pcapng;
//! - [`bench`]: the benchmark's comparison object (used only by `cargo xtask bench`).
//!
//! vrfd's pipeline: [`model`] (the kernel's objects) → [`sync`] (mirror and desired map state)
//! → [`mapsync`] (diff into the maps); [`config`] declares VRFs for kernels without vrf.ko.
pub mod bench;
pub mod capture;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod generate;
pub mod inspect;
pub mod maps;
pub mod mapsync;
pub mod model;
pub mod netlink;
pub mod packet;
pub mod stats;
pub mod sync;

/// The eBPF object built from vrf-ebpf, embedded at build time.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vrf-ebpf"));
