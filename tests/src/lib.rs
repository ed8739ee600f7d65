//! Test harness for vrf-xdp: network namespaces, veth links, the standard multi-VRF topology,
//! kernel counters, traffic generators and bpffs helpers. Everything is an RAII guard, so a
//! panicking test still cleans up. Names are unique per process (pid) and per call (counter),
//! so tests can run in parallel threads and in several processes at once.
//!
//! Requires root (see [`require_root`]) and iproute2, nsenter, ethtool, iputils ping.

pub mod bird;
pub mod bpffs;
pub mod cmd;
pub mod daemon;
pub mod dataplane;
pub mod differential;
pub mod fastpath;
pub mod flow;
pub mod frr;
pub mod fuzzing;
pub mod invariants;
pub mod link;
pub mod livegen;
pub mod netns;
pub mod nstat;
pub mod topology;
pub mod traffic;

use std::path::PathBuf;

pub use bpffs::{ensure_bpffs, PinDir, BPFFS};
pub use cmd::{display_command, ip, run, run_ok, unique_ifname};
pub use link::{
    add_addr, add_permanent_neigh, ifindex, mac, mac_to_string, parse_mac, set_down, set_gro,
    set_mac, set_mtu, set_up, veth_pair,
};
pub use netns::{list_own_netns, netns_name_prefix, BgProcess, NetNs};
pub use nstat::{counter, counters, forwarded_datagrams};
pub use topology::{
    Ipv4Net, Ipv6Net, Member, MemberSpec, Nth, Topology, TopologySpec, Vrf, VrfSpec, HOST_IFNAME,
};
pub use traffic::{
    ping, tcp_transfer, tcp_transfer_with, udp_transfer, PingResult, TcpTransfer, UdpTransfer,
};

/// "IPv4" or "IPv6", for messages of cases run for both.
pub fn family(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// Panics with a clear message unless running as root (euid 0).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!(
            "vrf-xdp integration tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF) to create \
             network namespaces and load XDP programs; euid is {euid}. Run them with sudo, e.g. \
             `sudo -E cargo test -p tests --release`."
        );
    }
}

/// Path of a workspace binary: `$VRF_XDP_BIN_DIR/<name>` if that variable is set, else
/// `$CARGO_TARGET_DIR/release/<name>` if that is set, else `<workspace>/target/release/<name>`.
/// Panics with instructions if the file does not exist.
pub fn bin_path(name: &str) -> PathBuf {
    let (dir, how) = if let Some(d) = std::env::var_os("VRF_XDP_BIN_DIR") {
        (PathBuf::from(d), "$VRF_XDP_BIN_DIR")
    } else if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        (
            PathBuf::from(d).join("release"),
            "$CARGO_TARGET_DIR/release",
        )
    } else {
        (
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("release"),
            "<workspace>/target/release",
        )
    };
    let p = dir.join(name);
    if !p.is_file() {
        panic!(
            "binary {name:?} not found at {} ({how}). Build it first (`cargo build --release`) \
             or set VRF_XDP_BIN_DIR to the directory holding it.",
            p.display()
        );
    }
    p
}
