//! The command lines of vrfd and vrfctl, in one place so that the binaries, the man pages and
//! the shell completions all come from the same clap definitions.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{daemon::export, inspect::DEFAULT_PIN_PATH};

/// Accelerate Linux VRFs with XDP: vrfd mirrors each VRF's routing table, neighbours and links
/// from the kernel into BPF maps and attaches the fast path to every VRF member interface.
/// The kernel stays the control plane (iproute2, FRR, BIRD keep writing its tables) and the slow
/// path: whatever the fast path does not model goes to it unchanged.
///
/// Kernel VRF devices (`ip link add vrf-red type vrf table 110`) are found by themselves.
/// On kernels without vrf.ko, declare VRFs in a TOML file (see --config).
///
/// vrfd runs in the foreground, pins its maps for vrfctl and signals readiness (a log line,
/// and READY=1 to systemd when NOTIFY_SOCKET is set).
///
/// Stop and restart: SIGINT/SIGTERM leave programs, links (pinned under PIN_PATH/links), maps,
/// ip rules and qdiscs in place, with 2 s of lease. The next vrfd of the same build adopts
/// them: it opens the programs pinned next to the maps (no second verifier run, about a
/// second of CPU saved on the router), rebuilds its view from the kernel, writes only the
/// differences, detaches nothing (no gap, counters go on). If none comes, the dead-man switch hands every packet to the
/// kernel 2 s after the stop. vrfd --detach removes what a stopped vrfd left; --no-persist
/// makes SIGTERM remove it itself (programs, its qdiscs, the pins).
///
/// The heartbeat means: a live vrfd follows the kernel; whatever changed since the maps were
/// written is in the events it holds and will be written. A starting vrfd that finds pins
/// (its own build's, or an older build's to upgrade) takes the heartbeat over as soon as it
/// has opened them and subscribed to the kernel's events, before its dump and program load
/// (logged: "heartbeat resumed on the pinned data plane"). One that then fails to start
/// (refused configuration, error; exit status not 0) expires the lease as it exits: the
/// kernel decides from the next packet, the pins stay for the next vrfd.
///
/// Rules: the ip rules vrfd adds for declared VRFs (tagged `proto 246`) stay whatever the
/// stop: they are the VRFs' kernel path (without them, the main table would route a VRF's
/// traffic). vrfd removes one when its VRF leaves the configuration, and
/// `vrfd --detach --remove-rules` all of them.
///
/// Upgrade: a vrfd whose stamp (of its eBPF object and of the map capacities it asks for,
/// --fib4-entries and --fib6-entries; kept in the pinned HEARTBEAT map) differs from the
/// pinned one loads fresh maps under PIN_PATH-upgrade, fills them from the kernel (the full
/// plan), moves each pinned link to its own programs in one step (bpf_link_update: the link
/// id stays, the program id changes), then moves its pins into PIN_PATH and removes the old
/// ones. Until a link has moved, the older build's programs keep deciding on their maps (the
/// new vrfd keeps their lease); no program ever decides on empty maps. Counters start again
/// from zero (they live in the old maps). On kernels without TCX (before 6.6) the tc filters
/// are replaced by name: host traffic in a VRF takes the kernel path for that moment.
/// VRFD_TEST_STAMP_SALT=N (tests only) perturbs the stamp, as if the layout had changed.
///
/// Dead-man switch: the programs decide only while vrfd's main loop refreshes a heartbeat
/// (every 250 ms; WATCHDOG=1 to systemd with it when WatchdogSec= is set): each beat arms a
/// BPF timer in the pinned SWITCH map for the lease. 1.5 s after the last one (vrfd crashed,
/// hung, SIGSTOP, kill -9) the timer fires and every packet goes to the kernel, counted as
/// vrfd_gone, until a vrfd beats again. A resync (a dump of the kernel and the full plan,
/// seconds at a million routes) beats from its own thread, for 30 s at most.
///
/// Ordinary events are not fatal: a netlink overrun is made good by a resync; a dump the
/// kernel interrupts ten times in a row sends every VRF to the kernel until a retry (0.5 s,
/// doubling to 15 s) succeeds. VRFD_TEST_FAIL_DUMPS=FILE (tests only) fails every dump while
/// FILE exists.
///
/// Exit status: 0 after a clean shutdown, 1 on a runtime error, 2 on a bad configuration.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
pub struct VrfdArgs {
    /// VRFs declared for kernels without vrf.ko. Example:
    ///
    ///   [[vrf]]
    ///   name = "red"               # used by vrfctl and in metrics
    ///   table = 110                # kernel routing table id
    ///   interfaces = ["r1", "r2"]  # member interfaces
    ///   rule_priority = 1000       # optional: priority of `ip rule iif <member> lookup 110`
    ///   netfilter = "bypass"       # optional: skip the firewall for this VRF (default "honour")
    ///
    ///   [[kernel_vrf]]             # settings for a kernel VRF device, by its name
    ///   name = "vrf-blue"
    ///   netfilter = "bypass"
    ///
    /// By default a netfilter chain or IPsec policy that could act on a VRF's forwarded traffic,
    /// or a policy rule ahead of the VRF's own, sends that family's packets to the kernel.
    #[arg(long, value_name = "FILE", verbatim_doc_comment)]
    pub config: Option<PathBuf>,

    /// How XDP is attached: auto tries native (driver) mode and falls back to generic with a
    /// warning; native fails where the driver lacks XDP; generic always works, slower.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub xdp_mode: Mode,

    /// Directory on a bpffs where the maps and links are pinned (created 0700; left on exit
    /// for the next vrfd, see --detach).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. info, debug, vrf_user=debug. RUST_LOG wins.
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR/metrics: per-VRF and
    /// per-member counters by reason, routes, neighbours, sync events. ADDR is IP:PORT, or a
    /// port alone for 127.0.0.1 (port 0: any free port, logged at startup).
    #[arg(long, value_name = "ADDR", value_parser = export::parse_addr)]
    pub metrics: Option<SocketAddr>,

    /// Receive buffer of vrfd's rtnetlink socket (SO_RCVBUFFORCE), in bytes. A burst of
    /// changes larger than it (a full BGP table arriving at once) overruns it; vrfd then reads
    /// the kernel's tables again (a resync), so a larger buffer only saves that work.
    #[arg(long, value_name = "BYTES", default_value_t = crate::netlink::RECEIVE_BUFFER as u32,
          value_parser = clap::value_parser!(u32).range(4096..))]
    pub netlink_receive_buffer: u32,

    /// Capacity of the IPv4 FIB map: routes of every VRF together (an LPM trie, allocated as
    /// used). The routes of a table that do not fit degrade its VRFs: the kernel forwards them.
    #[arg(long, value_name = "ROUTES", default_value_t = vrf_common::FIB4_ENTRIES,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub fib4_entries: u32,

    /// Capacity of the IPv6 FIB map, as --fib4-entries.
    #[arg(long, value_name = "ROUTES", default_value_t = vrf_common::FIB6_ENTRIES,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub fib6_entries: u32,

    /// On SIGTERM remove what vrfd attached (XDP and tc attachments, its qdiscs, the pins;
    /// the declared VRFs' ip rules stay) instead of leaving it for the next vrfd, and start afresh rather than
    /// adopt: for a one-off run. The next start of a vrfd then has a gap (the kernel forwards).
    #[arg(long)]
    pub no_persist: bool,

    /// Accepted for older units: persisting is the default now.
    #[arg(long, hide = true, conflicts_with = "no_persist")]
    pub persist: bool,

    /// Remove what a stopped vrfd left under PIN_PATH (programs, links, tc filters of
    /// vrf-xdp in this network namespace, pins, a half-done upgrade's PIN_PATH-upgrade) and
    /// exit; the ip rules stay (they are the declared VRFs' kernel path).
    #[arg(long, conflicts_with_all = ["persist", "no_persist"])]
    pub detach: bool,

    /// With --detach: remove the ip rules vrfd added too (tagged `proto 246`), for a full
    /// removal. Without them the declared VRFs' traffic is routed by the main table.
    #[arg(long, requires = "detach")]
    pub remove_rules: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Inspect vrf-xdp: reads the maps a running vrfd pinned (no vrfd, no answer).
#[derive(Parser, Debug)]
#[command(version)]
pub struct VrfctlArgs {
    /// Where vrfd pinned its maps (vrfd --pin-path).
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// VRFs with their table, members, route and neighbour counts, and degraded state.
    Show {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What the data plane does with a packet to ADDR arriving on a member of a VRF. The loaded
    /// XDP program itself runs on a synthesized UDP packet (BPF_PROG_TEST_RUN): the answer is
    /// the program's, not a model's.
    Lookup {
        /// The VRF to look up in.
        #[arg(long)]
        vrf: String,
        /// The member the packet arrives on (default: the VRF's first member).
        #[arg(long, value_name = "IFACE")]
        iif: Option<String>,
        /// Source address of the packet (default 198.51.100.1 or 2001:db8::1); it matters when a
        /// reverse-path filter is on.
        #[arg(long, value_name = "ADDR")]
        from: Option<IpAddr>,
        /// Destination address.
        addr: IpAddr,
        /// Print JSON: {"action", "reason", "oif", "gateway", "neighbour", "vrf", "iif"}.
        #[arg(long)]
        json: bool,
    },
    /// Packets and bytes each VRF's members received, and what the data plane did with them
    /// (forwarded, passed to the kernel, dropped) and why, summed over CPUs since the VRF
    /// appeared. Counts survive a member going down or leaving and coming back.
    Stats {
        /// Only this VRF.
        #[arg(long)]
        vrf: Option<String>,
        /// Break each VRF down per member interface.
        #[arg(long)]
        interfaces: bool,
        /// Print exact numbers as JSON: {"vrfs": [{"name", "table", "rx_packets", "rx_bytes",
        /// "forwarded_packets", …, "dropped_bytes", "reasons": {REASON: packets}}]}.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Redraw packet and bit rates every SECS seconds (default 2) until Ctrl-C.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2",
              value_parser = parse_interval)]
        watch: Option<Duration>,
    },
    /// Compare the data plane with the kernel, live: for a destination inside every route of
    /// each VRF's table, ask the kernel (RTM_GETROUTE with a member as iif) and the loaded
    /// program (BPF_PROG_TEST_RUN, counting nothing), and print every disagreement. A pass to
    /// the kernel is never one. Exit status 1 when any, 0 when none. Run it in vrfd's network
    /// namespace.
    Verify {
        /// Only this VRF.
        #[arg(long)]
        vrf: Option<String>,
        /// At most N routes per VRF, drawn at random.
        #[arg(long, value_name = "N")]
        sample: Option<usize>,
        /// Print JSON: {"vrfs", "checked", "forwarded", "passed", "dropped", "shadowed",
        /// "mismatches": [{"vrf", "table", "prefix", "destination", "source", "iif", "kernel",
        /// "data_plane", "problem"}]}.
        #[arg(long)]
        json: bool,
    },
    /// The packets the fast path sees, with its decision: the frame as it arrived on a member
    /// (XDP) or as the host sent it into a VRF (tc on the VRF device), and the VRF, reason,
    /// egress interface and gateway. Written as pcapng with -w (one interface per member, the
    /// decision as each packet's comment: `tcpdump -r`, Wireshark), else one line per packet.
    /// Stops on Ctrl-C, after --count packets, or when vrfd stops. Root only; one capture per
    /// vrfd at a time. Records beyond --rate or a full ring buffer are dropped and counted
    /// (never the packets); the counts are printed at the end.
    Capture(crate::capture::Options),
    /// Man pages and shell completions from these definitions (for packaging).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: crate::generate::Generate,
    },
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.1..=86400.0).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("{s:?}: expected seconds between 0.1 and 86400")),
    }
}
