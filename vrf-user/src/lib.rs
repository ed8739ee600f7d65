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
//! vrfd's pipeline, one way: [`netlink`] (kernel events as [`model`] objects) → [`mirror`] (the
//! kernel's objects) → [`vrfs`] (which VRFs, are their rules intact) → [`plan`] (what the maps
//! should hold, in kernel identities) → [`writer`] (the one map writer: slots, ids, shadow);
//! [`config`] declares VRFs for kernels without vrf.ko.
pub mod bench;
pub mod capture;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod errno;
pub mod ethtool;
pub mod flat4;
pub mod generate;
pub mod inspect;
pub mod kernelwatch;
pub mod maps;
pub mod mirror;
pub mod model;
pub mod neigh_activity;
pub mod netfilter;
pub mod netlink;
pub mod oracle;
pub mod packet;
pub mod plan;
pub mod rule_tag;
pub mod stats;
pub mod sysctl;
pub mod verify;
pub mod vrfs;
pub mod writer;
pub mod xdp_target;
pub mod xfrm;

/// The eBPF object built from vrf-ebpf, embedded at build time.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vrf-ebpf"));
