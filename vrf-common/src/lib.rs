//! Types shared by the XDP/tc programs and userspace.
//!
//! Layout rules, checked at compile time:
//! - every type is `#[repr(C)]` and derives bytemuck `Pod`, so implicit padding is a compile error
//!   (a padded LPM or hash key silently misses: the kernel compares every byte);
//! - sizes that the maps fix are asserted below.
//!
//! Byte order: addresses are kept as the bytes on the wire (network order) in `[u8; N]` arrays.
//! The FIB key's table id is big-endian too, so the LPM trie compares `table ‖ address` as one
//! bit string and a prefix never matches across tables. Everything else (ifindex, MTU, flags,
//! counters) is host order.
#![no_std]

use bytemuck::{Pod, Zeroable};

/// Most VRFs one data plane serves (size of the VRF and per-VRF counter arrays).
pub const MAX_VRFS: u32 = 256;
/// Most links (members, egress interfaces, VRF devices) the data plane knows.
pub const MAX_LINKS: u32 = 4096;
/// Most paths of one multipath route (FRR's usual `maximum-paths`).
pub const MAX_PATHS: usize = 64;
/// Hash buckets of one nexthop group, each naming a path: weights are held as bucket shares
/// (1/1024 of the flows per bucket). A power of two, so a bucket is the hash's top bits.
pub const NEXTHOP_BUCKETS: usize = 1024;
/// log2(NEXTHOP_BUCKETS).
pub const NEXTHOP_BUCKET_BITS: u32 = 10;
/// Default capacity of the IPv4 FIB shared by every VRF (grown by userspace at load time if asked).
pub const FIB4_ENTRIES: u32 = 2 * 1024 * 1024;
/// Default capacity of the IPv6 FIB shared by every VRF.
pub const FIB6_ENTRIES: u32 = 512 * 1024;
/// Default number of distinct nexthop groups.
pub const NEXTHOP_ENTRIES: u32 = 65536;
/// Default number of neighbour entries.
pub const NEIGH_ENTRIES: u32 = 65536;
/// Per-nexthop counter slots (`NEXTHOP_STATS`), slot 0 included: 16 bytes each per CPU.
pub const NEXTHOP_STATS_ENTRIES: u32 = 16384;
/// `Nexthop::stats_slot` of a path counted nowhere of its own (never exported).
pub const NEXTHOP_STATS_NONE: u32 = 0;

/// Map names, as they appear in the object file and under the pin directory.
pub mod map_names {
    pub const LINKS: &str = "LINKS";
    pub const VRFS: &str = "VRFS";
    pub const FIB4: &str = "FIB4";
    pub const FIB6: &str = "FIB6";
    pub const NEXTHOPS: &str = "NEXTHOPS";
    pub const NEIGH: &str = "NEIGH";
    pub const TX_PORTS: &str = "TX_PORTS";
    pub const VRF_STATS: &str = "VRF_STATS";
    pub const LINK_STATS: &str = "LINK_STATS";
    pub const EXPLAIN: &str = "EXPLAIN";
    pub const PORTS: &str = "PORTS";
    pub const VLAN_PORTS: &str = "VLAN_PORTS";
    pub const HEARTBEAT: &str = "HEARTBEAT";
    /// BTF `Array<Switch>`, one entry: the dead-man switch's state and the BPF timer that
    /// expires it.
    pub const SWITCH: &str = "SWITCH";
    /// `PerCpuArray<Counter>`: what XDP and tc forwarded per kernel nexthop (`Nexthop::stats_slot`).
    pub const NEXTHOP_STATS: &str = "NEXTHOP_STATS";
    /// `HashMap<u32, NexthopInfo>`: which kernel nexthop each live `NEXTHOP_STATS` slot counts,
    /// written by vrfd for vrfctl and the metrics (the programs never read it).
    pub const NEXTHOP_INFO: &str = "NEXTHOP_INFO";
    pub const ALL: [&str; 16] = [
        LINKS,
        VRFS,
        FIB4,
        FIB6,
        NEXTHOPS,
        NEIGH,
        TX_PORTS,
        VRF_STATS,
        LINK_STATS,
        EXPLAIN,
        PORTS,
        VLAN_PORTS,
        HEARTBEAT,
        SWITCH,
        NEXTHOP_STATS,
        NEXTHOP_INFO,
    ];
    /// `Array<CaptureConfig>`, one entry: whether a capture runs, and what it wants.
    pub const CAPTURE: &str = "CAPTURE";
    /// `Array<u64>`, one entry: the rate limit's theoretical arrival time (GCRA), in ns.
    pub const CAPTURE_STATE: &str = "CAPTURE_STATE";
    /// `PerCpuArray<CaptureStats>`, one entry: records written and records dropped.
    pub const CAPTURE_STATS: &str = "CAPTURE_STATS";
    /// Ring buffer of `CaptureRecord`s.
    pub const CAPTURE_RING: &str = "CAPTURE_RING";
    /// The capture maps (not in `ALL`: `vrf_user::capture` opens them, not `Maps`).
    pub const CAPTURE_ALL: [&str; 4] = [CAPTURE, CAPTURE_STATE, CAPTURE_STATS, CAPTURE_RING];
}

/// Program names in the object file.
/// The eBPF global that turns the checks around the route lookup off, in the benchmark's copy
/// only (`set_global`); every program vrfd loads keeps its default, 1.
pub const KERNEL_CHECKS_GLOBAL: &str = "KERNEL_CHECKS";
/// The eBPF global that turns the dead-man switch off, in the benchmark's copy only (what the
/// switch costs per packet); every program vrfd loads keeps its default, 1.
pub const DEADMAN_GLOBAL: &str = "DEADMAN";

pub mod prog_names {
    /// The XDP fast path attached to every member.
    pub const XDP_VRF: &str = "xdp_vrf";
    /// The same decision, recording it in `EXPLAIN`: run only through BPF_PROG_TEST_RUN.
    pub const XDP_VRF_EXPLAIN: &str = "xdp_vrf_explain";
    /// tc egress on a VRF device: the fast path for what the host sends inside a VRF.
    pub const TC_VRF_EGRESS: &str = "tc_vrf_egress";
    /// tc egress on a member: counts what the kernel transmits out of it.
    pub const TC_MEMBER_TX: &str = "tc_member_tx";
    /// `xdp_vrf` with capture compiled out: the bench's baseline for capture's idle cost.
    pub const XDP_VRF_NOCAPTURE: &str = "xdp_vrf_nocapture";
    /// The dead-man switch's beat: arms `SWITCH`'s timer for what is left of `HEARTBEAT`'s
    /// lease. Never attached: vrfd runs it through BPF_PROG_TEST_RUN with each beat.
    pub const XDP_VRF_BEAT: &str = "xdp_vrf_beat";
}

/// Ifindex → what the data plane knows of a link. Members have `LINK_MEMBER`; egress-only
/// interfaces (a route leaked to another VRF's member, say) are present without it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Link {
    /// VRF slot (index into `VRFS`) the link belongs to, or the VRF a VRF device stands for.
    pub vrf: u32,
    /// Index into `LINK_STATS` (one per link, stable while the daemon runs).
    pub stats_slot: u32,
    /// L3 MTU: the largest IP packet that may leave through this link.
    pub mtu: u32,
    /// MAC written as the source of frames that leave through this link.
    pub mac: [u8; 6],
    /// `LINK_*` bits.
    pub flags: u16,
    /// The MTU IPv6 forwarding uses out of this link: `net.ipv6.conf.<link>.mtu` (set by router
    /// advertisements too, never above `mtu`), which `ip6_forward` checks instead of the device's.
    pub mtu6: u32,
}

pub const LINK_UP: u16 = 1 << 0;
/// Packets arriving here are looked up in the link's VRF.
pub const LINK_MEMBER: u16 = 1 << 1;
/// `net.ipv4.conf.<link>.forwarding` is on: the kernel forwards IPv4 arriving here.
pub const LINK_FWD4: u16 = 1 << 2;
/// `net.ipv6.conf.<link>.forwarding` is on.
pub const LINK_FWD6: u16 = 1 << 3;
/// The link is a VRF device (l3mdev): a nexthop through it means "look up again in its table".
pub const LINK_VRF_DEVICE: u16 = 1 << 4;
/// Strict reverse-path filter (`rp_filter=1`): the source must route back out of this link.
pub const LINK_RPF_STRICT: u16 = 1 << 5;
/// Loose reverse-path filter (`rp_filter=2`): the source must be routable at all.
pub const LINK_RPF_LOOSE: u16 = 1 << 6;
/// `net.ipv6.conf.<link>.disable_ipv6` is on: the kernel drops IPv6 arriving here (ip6_rcv) and
/// sends none out of it (ip6_output).
pub const LINK_V6_DISABLED: u16 = 1 << 7;
/// A capture runs (`vrfctl capture`): vrfd sets it on every link while `CAPTURE[0]` holds a
/// live lease. The top bit, clear of the link's kernel flags; all an idle capture costs.
pub const LINK_CAPTURE: u16 = 1 << 15;
/// A VLAN device (802.1Q): frames leave tagged through its parent (`VLAN_PORTS`).
pub const LINK_VLAN: u16 = 1 << 8;
/// A trunk: the parent of VLAN members, where XDP runs for them; its tagged frames are looked
/// up in `PORTS` by (ifindex, VLAN id), never in the trunk's own VRF.
pub const LINK_TRUNK: u16 = 1 << 9;
/// The trunk's driver may strip tags before XDP (rx-vlan-offload on): every frame on it goes
/// to the kernel, since a frame for a VLAN member would look like one for the trunk.
pub const LINK_TAGS_HIDDEN: u16 = 1 << 10;

/// VRF slot → its table and state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Vrf {
    /// Kernel routing table id (32-bit, as RTA_TABLE carries it).
    pub table: u32,
    /// `VRF_*` bits.
    pub flags: u32,
    /// VRF device ifindex for kernel VRFs, 0 for VRFs declared in the config.
    pub ifindex: u32,
    /// Route and neighbour counts, kept by the daemon for `vrfctl show`.
    pub routes4: u32,
    pub routes6: u32,
    pub neighbours: u32,
    /// Name, NUL-padded (IFNAMSIZ).
    pub name: [u8; 16],
}

/// The slot is in use.
pub const VRF_ACTIVE: u32 = 1 << 0;
/// A map of this VRF overflowed or its sync is in doubt: every packet goes to the kernel.
pub const VRF_DEGRADED: u32 = 1 << 1;
/// Netfilter could act on this VRF's IPv4 traffic: IPv4 goes to the kernel.
pub const VRF_NETFILTER4: u32 = 1 << 2;
/// An xfrm (IPsec) policy could match this VRF's IPv4 traffic.
pub const VRF_IPSEC4: u32 = 1 << 3;
/// A policy rule evaluated before the VRF's own could match its IPv4 traffic.
pub const VRF_RULE4: u32 = 1 << 4;
/// The IPv6 twins of the three above.
pub const VRF_NETFILTER6: u32 = 1 << 5;
pub const VRF_IPSEC6: u32 = 1 << 6;
pub const VRF_RULE6: u32 = 1 << 7;
/// Any reason the kernel must decide this VRF's IPv4 (IPv6) traffic itself.
pub const VRF_KERNEL4: u32 = VRF_NETFILTER4 | VRF_IPSEC4 | VRF_RULE4;
pub const VRF_KERNEL6: u32 = VRF_NETFILTER6 | VRF_IPSEC6 | VRF_RULE6;
/// The operator bypassed netfilter for this VRF (`netfilter = "bypass"`): for `vrfctl show`
/// only, the data plane does not read it.
pub const VRF_NETFILTER_BYPASS: u32 = 1 << 8;
/// A rule ahead of the VRF's `l3mdev` rule could catch what the host itself sends in the VRF
/// (an `oif`/`iif lo` rule, a uid range, a mark 0 would match…): the tc egress path passes it.
pub const VRF_LOCAL_RULE4: u32 = 1 << 9;
pub const VRF_LOCAL_RULE6: u32 = 1 << 10;
/// Such a rule matches only marked packets (`SO_MARK`): the tc path passes those with a mark.
pub const VRF_LOCAL_MARKED4: u32 = 1 << 11;
pub const VRF_LOCAL_MARKED6: u32 = 1 << 12;

/// Why a VRF's traffic of one family (4 or 6) goes to the kernel, if it does: netfilter first,
/// then IPsec, then rules (the order the kernel meets them does not matter, only that one is
/// counted).
#[inline(always)]
pub const fn vrf_kernel_reason(flags: u32, v6: bool) -> Option<Reason> {
    let (nf, ipsec, rule) = if v6 {
        (VRF_NETFILTER6, VRF_IPSEC6, VRF_RULE6)
    } else {
        (VRF_NETFILTER4, VRF_IPSEC4, VRF_RULE4)
    };
    if flags & nf != 0 {
        Some(Reason::PassNetfilter)
    } else if flags & ipsec != 0 {
        Some(Reason::PassIpsec)
    } else if flags & rule != 0 {
        Some(Reason::PassPolicyRule)
    } else {
        None
    }
}

/// IPv4 FIB key; the LPM prefix length is `32 + route prefix length`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Fib4Key {
    /// Table id, big-endian.
    pub table: [u8; 4],
    pub addr: [u8; 4],
}

/// IPv6 FIB key; the LPM prefix length is `32 + route prefix length`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Fib6Key {
    pub table: [u8; 4],
    pub addr: [u8; 16],
}

/// Bits of the LPM prefix taken by the table id.
pub const FIB_TABLE_BITS: u32 = 32;

/// A FIB entry: the kernel's route type and, for unicast, its nexthop group.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Route {
    /// `RouteKind` (the kernel's `rtm_type` numbering).
    pub kind: u16,
    /// The route's MTU metric (RTAX_MTU), 0 when the egress link's MTU applies.
    pub mtu: u16,
    /// Key into `NEXTHOPS`; 0 for routes without nexthops.
    pub nexthop: u32,
}

/// The kernel's route types (`RTN_*`), numbered as in `rtm_type`.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    Unicast = 1,
    Local = 2,
    Broadcast = 3,
    Anycast = 4,
    Multicast = 5,
    Blackhole = 6,
    Unreachable = 7,
    Prohibit = 8,
    Throw = 9,
    Nat = 10,
}

impl RouteKind {
    pub const fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Unicast,
            2 => Self::Local,
            3 => Self::Broadcast,
            4 => Self::Anycast,
            5 => Self::Multicast,
            6 => Self::Blackhole,
            7 => Self::Unreachable,
            8 => Self::Prohibit,
            9 => Self::Throw,
            10 => Self::Nat,
            _ => return None,
        })
    }
}

/// One path of a route.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct Nexthop {
    /// Egress ifindex (a member, an egress-only link, or a VRF device for a cross-VRF lookup).
    pub ifindex: u32,
    /// `NH_*` bits.
    pub flags: u32,
    /// Gateway, network order: IPv4 in the first 4 bytes (rest zero) unless `NH_GATEWAY6`.
    pub gateway: [u8; 16],
    /// Index into `NEXTHOP_STATS`, assigned by the writer per kernel nexthop (a nexthop
    /// object's id, or a classic route's (dev, gateway)); 0 counts paths without one.
    pub stats_slot: u32,
    pub _pad: u32,
}

/// What one `NEXTHOP_STATS` slot counts (`NEXTHOP_INFO[slot]`): the kernel nexthop's identity
/// and its labels, as the writer assigned the slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NexthopInfo {
    /// The nexthop object's id (`ip nexthop`), 0 for a path of a route without one.
    pub nhid: u32,
    /// Egress ifindex (its VRF is the nexthop's).
    pub ifindex: u32,
    /// `NH_*` bits, as in `Nexthop`.
    pub flags: u32,
    pub _pad: u32,
    /// Gateway, network order, as in `Nexthop`.
    pub gateway: [u8; 16],
}

/// The path has a gateway; without it the destination itself is the neighbour (connected).
pub const NH_GATEWAY: u32 = 1 << 0;
/// The gateway is IPv6 (an IPv4 route via an IPv6 nexthop, RTA_VIA).
pub const NH_GATEWAY6: u32 = 1 << 1;

/// A route's set of paths; single-path routes have `count == 1`.
///
/// A flow takes `paths[buckets[hash >> (32 - NEXTHOP_BUCKET_BITS)]]`: userspace fills the
/// buckets in proportion to the paths' weights, so the spread follows the weights and a flow
/// keeps its path. A bucket naming a path at or beyond `count` sends the packet to the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct NexthopGroup {
    pub count: u32,
    pub _pad: u32,
    pub paths: [Nexthop; MAX_PATHS],
    /// Path index per hash bucket.
    pub buckets: [u8; NEXTHOP_BUCKETS],
}

impl Default for NexthopGroup {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// Neighbour key: the egress link and the neighbour's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NeighKey {
    pub ifindex: u32,
    /// 4 or 6.
    pub family: u32,
    /// Network order; IPv4 in the first 4 bytes, rest zero.
    pub addr: [u8; 16],
}

/// A usable (reachable, stale, delay, probe, permanent, noarp) neighbour's MAC.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Neigh {
    pub mac: [u8; 6],
    /// `NEIGH_USED` once the data plane sent a frame to this neighbour; vrfd clears it when it
    /// tells the kernel (NTF_USE), as switchdev drivers report neighbour activity.
    pub used: u8,
    pub _pad: u8,
}

/// `Neigh::used`: the data plane used the entry since vrfd last looked.
pub const NEIGH_USED: u8 = 1;

/// Packets and bytes for one reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Every counter of one VRF (or one link) in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Counters {
    pub by_reason: [Counter; Reason::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// Where a counter was taken. Counter arrays are indexed `slot * DIRECTIONS + direction`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// XDP on member ingress.
    Ingress = 0,
    /// tc on the VRF device's egress: traffic the host sends inside a VRF.
    VrfEgress = 1,
    /// tc on member egress: what the kernel itself transmits out of a member.
    MemberTx = 2,
}

pub const DIRECTIONS: u32 = 3;

impl Direction {
    pub const ALL: [Direction; DIRECTIONS as usize] = [
        Direction::Ingress,
        Direction::VrfEgress,
        Direction::MemberTx,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::VrfEgress => "vrf_egress",
            Direction::MemberTx => "member_tx",
        }
    }
}

/// Index into a counter array.
#[inline(always)]
pub const fn stats_index(slot: u32, dir: Direction) -> u32 {
    slot * DIRECTIONS + dir as u32
}

/// Every decision the data plane makes. `Rx` counts every packet seen on a member; every packet
/// also lands in exactly one outcome (forwarded, a `Pass*` or a `Drop*`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Rx = 0,
    Forwarded,
    /// Not IPv4/IPv6 (ARP, VLAN-tagged, LLDP…).
    PassNotIp,
    /// Destination MAC is not the ingress link's: the kernel routes only frames sent to it.
    PassOtherHost,
    /// IPv4 options: the kernel processes them.
    PassIpOptions,
    /// IPv6 hop-by-hop header.
    PassHopByHop,
    /// Multicast or broadcast destination.
    PassMulticast,
    /// Link-local destination or source.
    PassLinkLocal,
    /// The route is local or broadcast: local delivery (sockets bound to the VRF).
    PassLocal,
    /// TTL or hop limit ≤ 1: the kernel sends time-exceeded.
    PassTtl,
    /// No route in the VRF's table.
    PassNoRoute,
    /// Unreachable route: the kernel sends and rate-limits the ICMP error.
    PassUnreachable,
    /// Prohibit route.
    PassProhibit,
    /// Throw route: the kernel goes on with the next rule.
    PassThrow,
    /// No usable neighbour entry: the kernel resolves it.
    PassNoNeighbour,
    /// Larger than the egress MTU: the kernel fragments or signals.
    PassMtu,
    /// Forwarding is off on the ingress link.
    PassForwardingOff,
    /// The VRF is degraded (map full, sync in doubt).
    PassDegraded,
    /// Martian source or destination (zero, loopback, v4-mapped…), or the reverse-path filter.
    PassMartian,
    /// Egress link unknown, down, not a redirect target, or the ingress link itself (the
    /// kernel sends an ICMP redirect there).
    PassEgress,
    /// A route type or nexthop shape the data plane does not model.
    PassUnsupported,
    /// Truncated or inconsistent header: the kernel drops it too.
    DropMalformed,
    /// Bad IPv4 header checksum: the kernel drops it too.
    DropChecksum,
    /// Blackhole route.
    DropBlackhole,
    /// Netfilter (nftables or iptables) could act on the packet's VRF and family.
    PassNetfilter,
    /// An xfrm (IPsec) policy could match the packet's VRF and family.
    PassIpsec,
    /// A policy rule the kernel evaluates before the VRF's own could match.
    PassPolicyRule,
    /// `disable_ipv6` on the ingress or the egress link.
    PassIpv6Disabled,
    /// 802.1Q-tagged on a trunk, with a VLAN id no member of ours has.
    PassVlanUnknown,
    /// 802.1ad (QinQ) outer tag: the kernel's.
    PassVlanQinQ,
    /// Priority-tagged (VLAN id 0): the kernel treats it as untagged on the parent.
    PassVlanPriority,
    /// A second tag behind the first (stacked VLANs): the kernel's.
    PassVlanStacked,
    /// The trunk's driver may strip tags before XDP (rx-vlan-offload): no frame on it can be
    /// told apart, all go to the kernel.
    PassVlanHidden,
    /// Untagged on a trunk that is itself no member.
    PassNotMember,
    /// vrfd stopped refreshing its heartbeat (crashed, hung, stopped): the maps may no longer
    /// follow the kernel, so the kernel decides everything.
    PassVrfdGone,
}

impl Reason {
    pub const COUNT: usize = 35;

    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::Rx,
        Reason::Forwarded,
        Reason::PassNotIp,
        Reason::PassOtherHost,
        Reason::PassIpOptions,
        Reason::PassHopByHop,
        Reason::PassMulticast,
        Reason::PassLinkLocal,
        Reason::PassLocal,
        Reason::PassTtl,
        Reason::PassNoRoute,
        Reason::PassUnreachable,
        Reason::PassProhibit,
        Reason::PassThrow,
        Reason::PassNoNeighbour,
        Reason::PassMtu,
        Reason::PassForwardingOff,
        Reason::PassDegraded,
        Reason::PassMartian,
        Reason::PassEgress,
        Reason::PassUnsupported,
        Reason::DropMalformed,
        Reason::DropChecksum,
        Reason::DropBlackhole,
        Reason::PassNetfilter,
        Reason::PassIpsec,
        Reason::PassPolicyRule,
        Reason::PassIpv6Disabled,
        Reason::PassVlanUnknown,
        Reason::PassVlanQinQ,
        Reason::PassVlanPriority,
        Reason::PassVlanStacked,
        Reason::PassVlanHidden,
        Reason::PassNotMember,
        Reason::PassVrfdGone,
    ];

    /// Stable snake_case name used in JSON and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Rx => "rx",
            Reason::Forwarded => "forwarded",
            Reason::PassNotIp => "not_ip",
            Reason::PassOtherHost => "other_host",
            Reason::PassIpOptions => "ip_options",
            Reason::PassHopByHop => "hop_by_hop",
            Reason::PassMulticast => "multicast",
            Reason::PassLinkLocal => "link_local",
            Reason::PassLocal => "local",
            Reason::PassTtl => "ttl",
            Reason::PassNoRoute => "no_route",
            Reason::PassUnreachable => "unreachable",
            Reason::PassProhibit => "prohibit",
            Reason::PassThrow => "throw",
            Reason::PassNoNeighbour => "no_neighbour",
            Reason::PassMtu => "mtu",
            Reason::PassForwardingOff => "forwarding_off",
            Reason::PassDegraded => "degraded",
            Reason::PassMartian => "martian",
            Reason::PassEgress => "egress",
            Reason::PassUnsupported => "unsupported",
            Reason::DropMalformed => "malformed",
            Reason::DropChecksum => "bad_checksum",
            Reason::DropBlackhole => "blackhole",
            Reason::PassNetfilter => "netfilter",
            Reason::PassIpsec => "ipsec",
            Reason::PassPolicyRule => "policy_rule",
            Reason::PassIpv6Disabled => "ipv6_disabled",
            Reason::PassVlanUnknown => "vlan_unknown",
            Reason::PassVlanQinQ => "vlan_qinq",
            Reason::PassVlanPriority => "vlan_priority",
            Reason::PassVlanStacked => "vlan_stacked",
            Reason::PassVlanHidden => "vlan_hidden",
            Reason::PassNotMember => "not_member",
            Reason::PassVrfdGone => "vrfd_gone",
        }
    }

    /// What the data plane does with a packet counted under this reason.
    pub const fn action(self) -> Action {
        match self {
            Reason::Rx => Action::None,
            Reason::Forwarded => Action::Forward,
            Reason::DropMalformed | Reason::DropChecksum | Reason::DropBlackhole => Action::Drop,
            _ => Action::Pass,
        }
    }

    pub const fn from_u32(v: u32) -> Option<Reason> {
        if (v as usize) < Reason::COUNT {
            Some(Reason::ALL[v as usize])
        } else {
            None
        }
    }
}

/// The outcome class of a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Forward,
    Pass,
    Drop,
}

impl Action {
    pub const fn name(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Forward => "forward",
            Action::Pass => "pass",
            Action::Drop => "drop",
        }
    }
}

/// What `xdp_vrf_explain` records for the last packet it ran on (`EXPLAIN[0]`, per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Explain {
    /// `Reason` as u32.
    pub reason: u32,
    /// Egress ifindex when forwarded.
    pub oif: u32,
    /// VRF slot the packet was looked up in (after a cross-VRF hop, the last one).
    pub vrf: u32,
    /// 4 or 6 for the neighbour address family, 0 when not forwarded.
    pub family: u32,
    /// The neighbour the packet was sent to (the gateway, or the destination when connected).
    pub neighbour: [u8; 16],
    /// Set by the program so a reader knows the record is fresh.
    pub seq: u64,
}

/// The dead-man switch's lease (`HEARTBEAT[0]`): vrfd moves the deadline forward while it runs,
/// and the beat (`xdp_vrf_beat`) arms [`Switch`]'s timer for what is left of it; when it runs
/// out, every program passes every packet to the kernel (`PassVrfdGone`). Builds before the
/// timer compared it with the clock per packet (an upgrade from one keeps it fresh).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Heartbeat {
    /// CLOCK_MONOTONIC, ns; 0 = no switch armed (a data plane loaded without vrfd: tests,
    /// benchmarks).
    pub deadline_ns: u64,
    /// The stamp of the object whose vrfd writes the maps (a hash of it): a starting vrfd
    /// adopts pinned maps only when it is its own. Not read by the programs.
    pub stamp: u64,
}

/// What the programs read of the dead-man switch (`SWITCH[0]`), instead of a clock: a BPF
/// timer, armed by each beat (`xdp_vrf_beat`) for the rest of the lease, sets it to
/// [`SwitchState::Expired`] when the lease runs out. Userspace sees the timer as 16 opaque
/// bytes (a write from userspace cancels it: that is how vrfd hands over at once).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Switch {
    pub timer: [u64; 2],
    /// A [`SwitchState`].
    pub state: u64,
}

/// The states of [`Switch::state`].
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchState {
    /// Never beaten: a data plane loaded without vrfd (tests, benchmarks) decides.
    Unarmed = 0,
    /// A lease runs: the programs decide.
    Alive = 1,
    /// The lease ran out (the timer fired) or vrfd handed over: the kernel decides.
    Expired = 2,
}

impl Switch {
    /// The value userspace writes: `state`, no timer (the write cancels a running one).
    pub const fn with(state: SwitchState) -> Self {
        Switch {
            timer: [0; 2],
            state: state as u64,
        }
    }
}

impl SwitchState {
    pub const fn of(state: u64) -> Option<Self> {
        match state {
            0 => Some(Self::Unarmed),
            1 => Some(Self::Alive),
            2 => Some(Self::Expired),
            _ => None,
        }
    }
}

/// Big-endian table id, as stored in FIB keys.
#[inline(always)]
pub const fn table_key(table: u32) -> [u8; 4] {
    table.to_be_bytes()
}

// Sizes fixed by the maps and by the program's bounds.
const _: () = assert!(core::mem::size_of::<Link>() == 24);
const _: () = assert!(core::mem::size_of::<Vrf>() == 40);
const _: () = assert!(core::mem::size_of::<Fib4Key>() == 8);
const _: () = assert!(core::mem::size_of::<Fib6Key>() == 20);
const _: () = assert!(core::mem::size_of::<Route>() == 8);
const _: () = assert!(core::mem::size_of::<Nexthop>() == 32);
const _: () = assert!(core::mem::size_of::<NexthopInfo>() == 32);
const _: () = assert!(core::mem::size_of::<NexthopGroup>() == 8 + 32 * MAX_PATHS + NEXTHOP_BUCKETS);
// Bucket entries are u8 path indices.
const _: () = assert!(MAX_PATHS <= 256);
const _: () = assert!(NEXTHOP_BUCKETS == 1 << NEXTHOP_BUCKET_BITS);
const _: () = assert!(core::mem::size_of::<NeighKey>() == 24);
const _: () = assert!(core::mem::size_of::<Neigh>() == 8);
const _: () = assert!(core::mem::size_of::<Counters>() == 16 * Reason::COUNT);
const _: () = assert!(core::mem::size_of::<Explain>() == 40);
const _: () = assert!(core::mem::size_of::<Heartbeat>() == 16);
const _: () = assert!(Reason::ALL[Reason::COUNT - 1] as usize == Reason::COUNT - 1);
const _: () = assert!(core::mem::size_of::<CaptureConfig>() == 56);
const _: () = assert!(core::mem::size_of::<CaptureHeader>() == 64);
const _: () = assert!(core::mem::size_of::<CaptureRecord>() == 64 + CAPTURE_SNAP_MAX);
const _: () = assert!(core::mem::size_of::<CaptureStats>() == 24);
const _: () = assert!(Reason::COUNT <= 64, "capture's reason masks are u64");

/// Capture (`vrfctl capture`): the most bytes of a frame one record carries.
pub const CAPTURE_SNAP_MAX: usize = 2048;
/// Size of the capture ring buffer (a power-of-2 multiple of the page size): ~1900 records of
/// full 2 KiB snaps, ~30000 of 64-byte frames.
pub const CAPTURE_RING_BYTES: u32 = 4 << 20;
/// `CaptureConfig::vrf` matching every VRF.
pub const CAPTURE_ANY_VRF: u32 = u32::MAX;

/// What a running capture asks of the fast path (`CAPTURE[0]`, written by vrfctl), read only
/// on links with `LINK_CAPTURE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CaptureConfig {
    /// Nonzero while a capture runs (and `lease_until_ns` is ahead).
    pub enabled: u32,
    /// Only packets of this VRF slot (the link's, or the table's that decided), or
    /// `CAPTURE_ANY_VRF`.
    pub vrf: u32,
    /// Only packets arriving on, or sent out of, this ifindex; 0 for every interface.
    pub ifindex: u32,
    /// Bytes of each frame copied, 1..=CAPTURE_SNAP_MAX.
    pub snaplen: u32,
    /// Reasons recorded, as bits `1 << reason`, tested on the packet's final reason.
    pub reasons: u64,
    /// Reasons worth copying before the packet is sent (`reasons`, plus `Forwarded` when a
    /// failed redirect's reasons are wanted): the frame must be copied before the rewrite.
    pub early_reasons: u64,
    /// Rate limit (GCRA): ns between records at the allowed rate; 0 for no limit.
    pub interval_ns: u64,
    /// Burst tolerance, ns: how far ahead of the rate records may run.
    pub burst_ns: u64,
    /// CLOCK_MONOTONIC ns until which the capture holds; vrfctl renews it while it runs, so a
    /// capture that dies stops recording by itself, and vrfd then clears `LINK_CAPTURE`.
    pub lease_until_ns: u64,
}

/// The decision and shape of one captured frame, followed by its first `cap_len` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CaptureHeader {
    /// CLOCK_MONOTONIC ns (bpf_ktime_get_ns) when the frame was seen.
    pub ts_ns: u64,
    /// Length of the frame, and of what was copied.
    pub orig_len: u32,
    pub cap_len: u32,
    /// Member it arrived on (`Ingress`) or VRF device it was sent through (`VrfEgress`).
    pub ifindex: u32,
    /// `Direction` as u32.
    pub direction: u32,
    /// VRF slot of that link, and of the table that decided (differs after a cross-VRF hop).
    pub vrf: u32,
    pub decided_vrf: u32,
    /// Final `Reason` as u32, and the program's return code (XDP action or tc action).
    pub reason: u32,
    pub action: u32,
    /// Egress ifindex when forwarded, else 0.
    pub oif: u32,
    /// 4 or 6 for the neighbour's family, 0 when not forwarded.
    pub family: u32,
    /// The neighbour the frame was sent to: the gateway, or the destination when connected.
    pub neighbour: [u8; 16],
}

/// One record as the program builds it (a per-CPU scratch entry); the ring gets the header and
/// the first `cap_len` bytes of `data`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct CaptureRecord {
    pub header: CaptureHeader,
    pub data: [u8; CAPTURE_SNAP_MAX],
}

/// Per-CPU capture accounting: what was recorded and which records were dropped (never the
/// packets: they are forwarded, passed or dropped as without capture).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CaptureStats {
    pub records: u64,
    /// Records not taken because of the rate limit.
    pub rate_limited: u64,
    /// Records not taken because the ring buffer was full (the reader is behind).
    pub ring_full: u64,
}

/// `PORTS` key: the device a frame arrived on and its 802.1Q VLAN id, or `vid` 0 for an
/// untagged frame on a bond slave (the value is then the bond).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct PortKey {
    pub ifindex: u32,
    /// Host order, 1..=4094; 0 for an untagged port.
    pub vid: u16,
    pub _pad: u16,
}

/// `VLAN_PORTS` value (keyed by the VLAN member's ifindex): where and how its frames leave.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VlanPort {
    /// The parent device the tagged frame is redirected to.
    pub parent: u32,
    /// Host order VLAN id; the kernel's default egress priority map sends PCP 0.
    pub vid: u16,
    pub _pad: u16,
}

/// 802.1Q and 802.1ad tag protocol ids (network order), and a tag's length.
pub const ETH_P_8021Q: [u8; 2] = [0x81, 0x00];
pub const ETH_P_8021AD: [u8; 2] = [0x88, 0xa8];
pub const VLAN_HLEN: usize = 4;
/// Largest valid VLAN id (4095 is reserved).
pub const VLAN_ID_MAX: u16 = 4094;

const _: () = assert!(core::mem::size_of::<PortKey>() == 8);
const _: () = assert!(core::mem::size_of::<VlanPort>() == 8);

/// The bench's raw-redirect ceiling (`xdp_bench_redirect`): no lookup, only what any forwarder
/// must do — these MACs written, TTL − 1, redirect to `oif` through the devmap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BenchRedirect {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub oif: u32,
}

const _: () = assert!(core::mem::size_of::<BenchRedirect>() == 16);

#[cfg(feature = "user")]
mod user {
    //! aya's `Pod` marker for map keys and values (bytemuck's `Pod` already proves the layout).
    use super::*;
    macro_rules! aya_pod {
        ($($t:ty),*) => { $(unsafe impl aya::Pod for $t {})* };
    }
    aya_pod!(
        Switch,
        Link,
        Vrf,
        Fib4Key,
        Fib6Key,
        Route,
        NexthopGroup,
        Counter,
        NexthopInfo,
        NeighKey,
        Neigh,
        Counters,
        Explain,
        CaptureConfig,
        CaptureStats,
        PortKey,
        VlanPort,
        Heartbeat,
        BenchRedirect
    );
}

// The flat IPv4 FIB (DIR-16-8-8, VPP-mtrie style): per flat table a 2^16-entry first level
// indexed by the address's top 16 bits; an entry is 0 (no route), a route value id, or
// `FLAT4_CHUNK | chunk`: a 256-entry chunk of the pool indexed by the next 8 bits (a chunk's
// entries are the same three kinds, so /25–/32 take a third read). Tables without a flat slot
// (and IPv6) stay in the LPM tries, which userspace keeps complete for every table.

/// Tables that get a flat first level (256 KiB each): the rest use the LPM trie.
pub const FLAT4_SLOTS: u32 = 64;
/// Default chunk pool (1 KiB each, 64 MiB): a full Internet table needs ~55 000 (one per /16
/// holding a longer prefix); the loader may change it.
pub const FLAT4_CHUNKS: u32 = 65536;
/// Distinct route values (`Route`) the flat tables can name at once (value id 0 is "none").
pub const FLAT4_VALUES: u32 = 65536;
/// Buckets of the table directory (`FLAT4_DIR`), indexed by [`flat4_bucket`].
pub const FLAT4_DIR_BUCKETS: u32 = 1024;
/// Tables one directory bucket holds: a sixth table hashing there stays in the trie.
pub const FLAT4_BUCKET_WAYS: usize = 4;
/// Entries of a first level.
pub const FLAT4_L1_ENTRIES: u32 = 1 << 16;
/// Entries of a chunk.
pub const FLAT4_CHUNK_ENTRIES: u32 = 256;
/// Set in an entry that names a chunk; clear in one that names a route value.
pub const FLAT4_CHUNK: u32 = 1 << 31;

/// One table → flat slot pair of the directory: `slot` is the slot + 1, 0 when the way is free.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Flat4Way {
    pub table: u32,
    pub slot: u32,
}

/// A directory bucket: up to `FLAT4_BUCKET_WAYS` tables hashing to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Flat4Bucket {
    pub ways: [Flat4Way; FLAT4_BUCKET_WAYS],
}

/// The directory bucket of `table` (a multiplicative hash: VRF tables are often consecutive).
#[inline(always)]
pub const fn flat4_bucket(table: u32) -> u32 {
    table.wrapping_mul(0x9e37_79b1) >> (32 - FLAT4_DIR_BUCKET_BITS)
}
/// log2(FLAT4_DIR_BUCKETS).
pub const FLAT4_DIR_BUCKET_BITS: u32 = 10;

/// The flat FIB's map names (pinned with the others; not in `map_names::ALL`).
pub mod flat4_names {
    /// `Array<Flat4Bucket>`: table → flat slot.
    pub const DIR: &str = "FLAT4_DIR";
    /// `Array<[u32; 256]>`, mmapable: `FLAT4_SLOTS` first levels of 256 rows.
    pub const L1: &str = "FLAT4_L1";
    /// `Array<[u32; 256]>`, mmapable: the chunk pool, one chunk per element.
    pub const CHUNKS: &str = "FLAT4_CHUNKS";
    /// `Array<Route>`: route values by id.
    pub const ROUTES: &str = "FLAT4_ROUTES";
    pub const ALL: [&str; 4] = [DIR, L1, CHUNKS, ROUTES];
}

const _: () = assert!(core::mem::size_of::<Flat4Bucket>() == 8 * FLAT4_BUCKET_WAYS);
const _: () = assert!(FLAT4_DIR_BUCKETS == 1 << FLAT4_DIR_BUCKET_BITS);
const _: () = assert!(FLAT4_VALUES < FLAT4_CHUNK);
#[cfg(feature = "user")]
// SAFETY: bytemuck's Pod above proves the layout.
unsafe impl aya::Pod for Flat4Bucket {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_numbered_in_order_and_named_uniquely() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
            assert_eq!(Reason::from_u32(i as u32), Some(*r));
            for other in &Reason::ALL[i + 1..] {
                assert_ne!(r.name(), other.name());
            }
        }
        assert_eq!(Reason::from_u32(Reason::COUNT as u32), None);
    }

    #[test]
    fn kernel_flags_name_their_family_and_reason() {
        assert_eq!(vrf_kernel_reason(VRF_ACTIVE, false), None);
        assert_eq!(vrf_kernel_reason(VRF_ACTIVE | VRF_KERNEL6, false), None);
        assert_eq!(vrf_kernel_reason(VRF_KERNEL4, true), None);
        assert_eq!(
            vrf_kernel_reason(VRF_IPSEC4 | VRF_RULE4, false),
            Some(Reason::PassIpsec)
        );
        assert_eq!(
            vrf_kernel_reason(VRF_NETFILTER6, true),
            Some(Reason::PassNetfilter)
        );
        assert_eq!(
            vrf_kernel_reason(VRF_RULE6, true),
            Some(Reason::PassPolicyRule)
        );
        assert_eq!(VRF_KERNEL4 & VRF_KERNEL6, 0);
        assert_eq!((VRF_KERNEL4 | VRF_KERNEL6) & (VRF_ACTIVE | VRF_DEGRADED), 0);
    }

    #[test]
    fn fib_key_puts_table_big_endian_before_the_address() {
        let key = Fib4Key {
            table: table_key(0x0102_0304),
            addr: [10, 0, 1, 2],
        };
        assert_eq!(bytemuck::bytes_of(&key), &[1, 2, 3, 4, 10, 0, 1, 2]);
        let key6 = Fib6Key {
            table: table_key(110),
            addr: [0xfd; 16],
        };
        assert_eq!(&bytemuck::bytes_of(&key6)[..4], &[0, 0, 0, 110]);
        assert_eq!(bytemuck::bytes_of(&key6)[4], 0xfd);
    }

    #[test]
    fn nexthop_gateway_is_stored_in_network_order() {
        let nh = Nexthop {
            ifindex: 7,
            flags: NH_GATEWAY,
            gateway: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            stats_slot: 9,
            _pad: 0,
        };
        let b = bytemuck::bytes_of(&nh);
        assert_eq!(&b[0..4], &7u32.to_ne_bytes());
        assert_eq!(&b[8..12], &[10, 0, 0, 1]);
        assert_eq!(&b[24..28], &9u32.to_ne_bytes());
    }

    #[test]
    fn route_kinds_use_the_kernel_numbering() {
        // linux/rtnetlink.h: RTN_UNICAST = 1 … RTN_NAT = 10.
        for v in 1..=10 {
            assert_eq!(RouteKind::from_u16(v).map(|k| k as u16), Some(v));
        }
        assert_eq!(RouteKind::from_u16(0), None);
        assert_eq!(RouteKind::from_u16(11), None);
    }

    #[test]
    fn switch_states_round_trip_and_zero_is_unarmed() {
        for s in [
            SwitchState::Unarmed,
            SwitchState::Alive,
            SwitchState::Expired,
        ] {
            assert_eq!(SwitchState::of(s as u64), Some(s));
        }
        assert_eq!(
            SwitchState::of(Switch::default().state),
            Some(SwitchState::Unarmed)
        );
        assert_eq!(SwitchState::of(3), None);
    }

    #[test]
    fn stats_index_interleaves_directions() {
        assert_eq!(stats_index(0, Direction::Ingress), 0);
        assert_eq!(stats_index(1, Direction::Ingress), DIRECTIONS);
        assert_eq!(stats_index(2, Direction::MemberTx), 2 * DIRECTIONS + 2);
    }
}
