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
//! [`engine`] holds the mirror and the resolved VRFs between events; [`config`] declares VRFs
//! for kernels without vrf.ko.
//!
//! One route event, `ip route add 10.9.0.0/16 via G table 110`, as it travels:
//! 1. [`netlink`]: the socket's task reads RTM_NEWROUTE, [`netlink::convert`] makes it a
//!    [`model::KernelEvent::NewRoute`], its flags make it an append, prepend or replace; it goes
//!    on the daemon's channel.
//! 2. [`daemon`] (`Daemon::take`): counted for the metrics, handed to
//!    [`engine::Engine::apply`], which passes it on to the mirror (a link event also re-resolves
//!    the VRFs in [`vrfs`]).
//! 3. [`mirror`] ([`mirror::Mirror::apply`]): the kernel's routes at (110, 10.9.0.0/16) change;
//!    the key is marked in [`mirror::Dirty`]; the count of paths per egress link follows.
//! 4. [`plan`] ([`plan::Planner::changes`]; the daemon takes the planner, a borrow of the
//!    engine's mirror and VRFs, once per batch of events): the route's [`plan::RoutePlan`] at
//!    each dirty key, as a [`plan::ChangeSet`].
//! 5. [`writer`] ([`writer::MapWriter::apply_changes`]): nexthop group and slots acquired and
//!    released, the FIB entry and the flat IPv4 table ([`flat4`]) written through [`maps`].
//!
//! Each module is entered once, in this order (`Engine::planner` in step 4 only lends fields).
pub mod bench;
pub mod capture;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod engine;
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
