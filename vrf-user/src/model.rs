//! The kernel's objects as vrfd mirrors them: what rtnetlink reports, in plain Rust types. The
//! netlink layer produces these; the mirror stores them. Nothing here touches a socket.
use std::net::IpAddr;

use ipnet::IpNet;
pub use vrf_common::RouteKind;

pub use crate::netlink::nexthop::{NexthopInfo, NexthopKind};

/// An address family vrfd mirrors (AF_INET / AF_INET6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// iproute2's family switch (`ip -4`, `ip -6`).
    pub fn ip_flag(self) -> &'static str {
        match self {
            IpFamily::V4 => "-4",
            IpFamily::V6 => "-6",
        }
    }
}

/// What a policy routing rule does with the packets it matches (FR_ACT_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// FR_ACT_TO_TBL: look up in the rule's table.
    ToTable,
    /// FR_ACT_GOTO: continue at another priority.
    Goto,
    /// FR_ACT_NOP.
    Nop,
    /// FR_ACT_BLACKHOLE, FR_ACT_UNREACHABLE, FR_ACT_PROHIBIT: a verdict, no lookup.
    Verdict,
    /// Anything else the kernel may add.
    Other(u8),
}

/// A network interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub name: String,
    /// Hardware address; None for links without one (tun, VRF devices may have one).
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Administratively up (IFF_UP) and with carrier (IFF_LOWER_UP): the kernel can transmit.
    pub up: bool,
    /// Administratively up (IFF_UP). Going admin-down makes IPv4 delete the routes through the
    /// link without a notification; losing only the carrier does not.
    pub admin_up: bool,
    /// The master device's ifindex (a VRF device for a member of a kernel VRF, or a bridge).
    pub master: Option<u32>,
    /// Link kind from IFLA_INFO_KIND ("vrf", "veth", "bridge", …).
    pub kind: Option<String>,
    /// IFLA_VRF_TABLE for VRF devices.
    pub vrf_table: Option<u32>,
    /// IFLA_LINK when the lower device is in this namespace (a VLAN's parent).
    pub parent: Option<u32>,
    /// IFLA_VLAN_ID and IFLA_VLAN_PROTOCOL of a VLAN device.
    pub vlan: Option<Vlan>,
    /// A bond slave in state backup (IFLA_BOND_SLAVE_STATE): the bond drops what arrives on it
    /// (unless all_slaves_active), so XDP must not forward it.
    pub bond_backup: bool,
    /// A bond whose mode can transmit redirected XDP frames (the kernel's `bond_xdp_check`:
    /// balance-rr, active-backup, balance-xor and 802.3ad without an encap hash policy). In the
    /// other modes the bond drops them ("Unknown bonding mode N for xdp xmit").
    pub bond_xdp: bool,
}

/// A VLAN device's tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vlan {
    pub id: u16,
    pub protocol: VlanProtocol,
    /// IFLA_VLAN_EGRESS_QOS maps some skb priority to a non-zero PCP: what the kernel sends
    /// through the device may carry a PCP XDP's push (PCP 0) would not.
    pub egress_pcp: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VlanProtocol {
    /// 802.1Q (0x8100): the tag XDP pops and pushes.
    Dot1Q,
    /// 802.1ad (0x88a8, QinQ service tag): left to the kernel.
    Dot1Ad,
}

/// One path of a route.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathInfo {
    pub ifindex: u32,
    pub gateway: Option<IpAddr>,
    /// rtnh_hops + 1 (the kernel's weight); 1 for single-path routes.
    pub weight: u32,
    /// RTNH_F_DEAD / RTNH_F_LINKDOWN were set on this path.
    pub dead: bool,
}

/// A route in one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// Full 32-bit table id (RTA_TABLE, not the 8-bit rtm_table).
    pub table: u32,
    pub prefix: IpNet,
    /// rtm_type; a type outside [`RouteKind`] arrives as `unsupported`.
    pub kind: RouteKind,
    /// RTA_PRIORITY (metric); 0 when absent.
    pub metric: u32,
    /// rtm_tos (IPv4 only); a non-zero TOS makes the route TOS-specific.
    pub tos: u8,
    pub paths: Vec<PathInfo>,
    /// RTAX_MTU metric, if set.
    pub mtu: Option<u32>,
    /// The route refers to a nexthop object (RTA_NH_ID) whose paths the data plane does not
    /// model: such routes are left to the kernel.
    pub nexthop_id: Option<u32>,
    /// Anything else that changes the kernel's decision in ways not modelled here (source-
    /// specific IPv6 routes via RTA_SRC, expiring routes, …): left to the kernel.
    pub unsupported: Option<&'static str>,
}

impl RouteInfo {
    /// Is `other` the same route as this one (the kernel's alias match on delete: type and
    /// paths), regardless of whether a path is currently dead?
    pub fn same_route(&self, other: &RouteInfo) -> bool {
        let key = |r: &RouteInfo| -> Vec<(u32, Option<IpAddr>, u32)> {
            let mut k: Vec<_> = r
                .paths
                .iter()
                .map(|p| (p.ifindex, p.gateway, p.weight))
                .collect();
            k.sort();
            k
        };
        self.id() == other.id()
            && self.kind == other.kind
            && self.nexthop_id == other.nexthop_id
            && key(self) == key(other)
    }

    /// The kernel's identity of a route within a table: prefix, TOS, metric.
    pub fn id(&self) -> RouteId {
        RouteId {
            table: self.table,
            prefix: self.prefix,
            tos: self.tos,
            metric: self.metric,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId {
    pub table: u32,
    pub prefix: IpNet,
    pub tos: u8,
    pub metric: u32,
}

/// A neighbour (ARP / NDP) entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighInfo {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub mac: Option<[u8; 6]>,
    /// ndm_state (NUD_* bits).
    pub state: u16,
}

pub const NUD_INCOMPLETE: u16 = 0x01;
pub const NUD_REACHABLE: u16 = 0x02;
pub const NUD_STALE: u16 = 0x04;
pub const NUD_DELAY: u16 = 0x08;
pub const NUD_PROBE: u16 = 0x10;
pub const NUD_FAILED: u16 = 0x20;
pub const NUD_NOARP: u16 = 0x40;
pub const NUD_PERMANENT: u16 = 0x80;

impl NeighInfo {
    /// States in which the kernel itself would send to this MAC without resolving first.
    pub fn usable(&self) -> bool {
        self.mac.is_some()
            && self.state
                & (NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_PERMANENT | NUD_NOARP)
                != 0
    }
}

/// An address on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrInfo {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// A policy routing rule (only what vrfd needs to judge whether a rule can divert member traffic
/// before the VRF's own rule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub family: IpFamily,
    pub priority: u32,
    /// FRA_TABLE (or rtm_table), 0 when the rule has no table (goto, nop…).
    pub table: u32,
    pub action: RuleAction,
    pub iif: Option<String>,
    pub oif: Option<String>,
    /// FRA_L3MDEV set: "lookup [l3mdev-table]".
    pub l3mdev: bool,
    /// Any selector beyond iif/oif (from, to, fwmark, tos, ipproto, ports, uid range…).
    pub has_other_selectors: bool,
    /// FRA_FWMARK / FRA_FWMASK, as the kernel matches them.
    pub fwmark: FwMark,
}

/// A rule's `fwmark MARK/MASK` selector: the kernel matches `(MARK ^ skb->mark) & MASK == 0`;
/// the default (0/0) matches every packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwMark {
    pub mark: u32,
    pub mask: u32,
}

impl FwMark {
    pub fn matches(&self, mark: u32) -> bool {
        (self.mark ^ mark) & self.mask == 0
    }
}

impl RuleInfo {
    /// Does this rule send every packet arriving on `iif` to `table` (and nothing more
    /// specific)? The one check behind "the VRF's rule is there".
    pub fn sends_iif_to(&self, iif: &str, table: u32) -> bool {
        self.iif.as_deref() == Some(iif)
            && self.table == table
            && self.action == RuleAction::ToTable
            && !self.has_other_selectors
    }

    /// Could this rule match a packet the fast path forwards from `iif`? Such packets carry
    /// mark 0 and no oif; every selector vrfd does not evaluate (from, to, tos, ports…) counts
    /// as a possible match, and `nop` matches but decides nothing.
    pub fn could_match_forwarded(&self, iif: &str) -> bool {
        self.oif.is_none()
            && self.fwmark.matches(0)
            && self.action != RuleAction::Nop
            && self.iif.as_deref().is_none_or(|i| i == iif)
    }

    /// Could this rule catch what the host sends inside the kernel VRF `vrf_device`? The
    /// kernel's output lookup carries `iif lo`, the VRF device as oif, the socket's mark and
    /// uid: `Some(true)` when an unmarked packet could match (uid ranges, addresses, ports…
    /// count as a possible match), `Some(false)` when only a marked one could, None when
    /// none could.
    pub fn could_match_local_out(&self, vrf_device: &str) -> Option<bool> {
        let catches = self.action != RuleAction::Nop
            && !self.l3mdev
            && self.iif.as_deref().is_none_or(|i| i == "lo")
            && self.oif.as_deref().is_none_or(|o| o == vrf_device);
        catches.then(|| self.fwmark.matches(0))
    }

    /// `lookup local` for every packet: rule 0, mirrored into every VRF's FIB.
    pub fn is_local_lookup(&self, local_table: u32) -> bool {
        self.table == local_table
            && self.action == RuleAction::ToTable
            && !self.has_other_selectors
            && self.iif.is_none()
    }
}

#[cfg(test)]
impl RouteInfo {
    /// A unicast-or-other route of `table` for unit tests: paths as (ifindex, gateway), weight 1.
    pub fn of(table: u32, prefix: &str, kind: RouteKind, paths: &[(u32, Option<&str>)]) -> Self {
        RouteInfo {
            table,
            prefix: prefix.parse().unwrap(),
            kind,
            metric: 0,
            tos: 0,
            paths: paths
                .iter()
                .map(|(i, gw)| PathInfo {
                    ifindex: *i,
                    gateway: gw.map(|g| g.parse().unwrap()),
                    weight: 1,
                    dead: false,
                })
                .collect(),
            mtu: None,
            nexthop_id: None,
            unsupported: None,
        }
    }
}

/// A change the kernel reported.
#[derive(Clone, Debug)]
pub enum KernelEvent {
    NewLink(LinkInfo),
    DelLink(u32),
    NewAddr(AddrInfo),
    DelAddr(AddrInfo),
    NewRoute(RouteInfo),
    /// `ip route append`: the kernel keeps any identical route ahead of this one (its
    /// notification carries NLM_F_APPEND; without it a NewRoute replaces).
    AppendRoute(RouteInfo),
    /// `ip route prepend` (NLM_F_CREATE alone): IPv4 puts the route ahead of its aliases, and
    /// the new one is used; IPv6 has no prepend (it appends a sibling).
    PrependRoute(RouteInfo),
    DelRoute(RouteInfo),
    NewNeigh(NeighInfo),
    DelNeigh(NeighInfo),
    /// Rules changed: re-read them (they are few).
    RulesChanged,
    /// A nexthop object added or replaced in place (RTM_NEWNEXTHOP).
    NewNexthop(NexthopInfo),
    /// A nexthop object deleted (RTM_DELNEXTHOP): the kernel deletes its routes without telling.
    DelNexthop(u32),
    /// The kernel dropped notifications (ENOBUFS) or a message could not be understood:
    /// only a full resync restores certainty.
    Overrun(String),
}

/// Everything a dump returns: the kernel's state at one moment.
#[derive(Clone, Debug, Default)]
pub struct KernelSnapshot {
    pub links: Vec<LinkInfo>,
    pub addrs: Vec<AddrInfo>,
    pub routes: Vec<RouteInfo>,
    pub neighbours: Vec<NeighInfo>,
    pub rules: Vec<RuleInfo>,
    /// Nexthop objects, from their own socket's dump (`netlink::nexthop`).
    pub nexthops: Vec<NexthopInfo>,
}
