//! The plan: what the data plane should hold, derived from the mirror and the resolved VRFs, in
//! the kernel's identities (VRF names, tables, ifindexes, prefixes) and never in map slots.
//! A [`Planner`] (lent by [`crate::engine::Engine`]) derives a full [`Plan`] or, after events,
//! a [`ChangeSet`]; [`crate::writer::MapWriter`] turns either into map writes.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;
use vrf_common::MAX_PATHS;

use crate::{
    mirror::{Dirty, LinkSysctl, Mirror, SysctlReader, LOCAL_TABLE},
    model::{LinkInfo, NexthopKind, PathInfo, RouteInfo, RouteKind, VlanProtocol},
    sysctl::SysctlState,
    vrfs::{is_vrf_device, VrfView},
};

/// Everything the maps should hold.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub vrfs: Vec<VrfView>,
    pub links: BTreeMap<u32, LinkPlan>,
    pub routes: HashMap<(u32, IpNet), RoutePlan>,
    /// Usable neighbours by (ifindex, address); the writer keeps those on links it holds.
    pub neighbours: HashMap<(u32, IpAddr), [u8; 6]>,
}

/// What changed since the last plan, key by key: `None` removes.
#[derive(Clone, Debug, Default)]
pub struct ChangeSet {
    pub routes: BTreeMap<(u32, IpNet), Option<RoutePlan>>,
    pub neighbours: BTreeMap<(u32, IpAddr), Option<[u8; 6]>>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.neighbours.is_empty()
    }
}

/// A link the data plane must know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkPlan {
    pub role: LinkRole,
    /// Up with carrier: the kernel can transmit.
    pub up: bool,
    pub mtu: u32,
    pub mac: [u8; 6],
    pub sysctl: LinkSysctl,
    /// An 802.1Q VLAN device whose parent is known: its frames leave tagged through the parent.
    pub vlan: Option<VlanPlan>,
    /// The parent of VLAN members: XDP runs here for them.
    pub trunk: bool,
    /// A trunk whose driver may strip tags before XDP: every frame on it goes to the kernel.
    pub tags_hidden: bool,
    /// A bond XDP serves: frames arrive on these slaves (native XDP on a bond runs on them);
    /// only the ones the bond delivers from (not a backup).
    pub slaves: Vec<u32>,
}

/// Where a VLAN device's frames leave: its parent, tagged with its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanPlan {
    pub parent: u32,
    pub id: u16,
    /// Its egress-qos-map sets a PCP: the kernel transmits through it (XDP would push PCP 0).
    pub pcp_mapped: bool,
}

impl Plan {
    /// The devices XDP must be attached to: every member that receives its own frames, and
    /// the trunks of VLAN members (once each, however many VRFs their VLANs are in).
    pub fn xdp_ports(&self) -> BTreeSet<u32> {
        self.links
            .iter()
            .filter(|(_, p)| {
                p.trunk || (p.vlan.is_none() && matches!(p.role, LinkRole::Member { .. }))
            })
            .map(|(i, _)| *i)
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkRole {
    /// A member of the named VRF: XDP decides for packets arriving here.
    Member { vrf: String },
    /// A VRF device: a path through it means "look up in that VRF".
    VrfDevice { vrf: String },
    /// A link served routes leave through, in no VRF of ours.
    Egress,
}

/// The data plane's answer for one (table, prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePlan {
    /// The kernel's route type; `None`: the data plane passes this prefix to the kernel.
    pub kind: Option<RouteKind>,
    /// RTAX_MTU clamped to 16 bits, 0 when unset.
    pub mtu: u16,
    /// Live paths (unicast only), each out of a link with an optional gateway.
    pub paths: Vec<Path>,
}

impl RoutePlan {
    pub const TO_KERNEL: RoutePlan = RoutePlan {
        kind: None,
        mtu: 0,
        paths: Vec::new(),
    };
}

/// One path: out of `ifindex`, via `gateway` or directly connected, with the kernel's weight
/// (`rtnh_hops + 1` or a nexthop group member's weight; 1 for a single path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path {
    pub ifindex: u32,
    pub gateway: Option<IpAddr>,
    pub weight: u32,
    /// The nexthop object this path is (a singleton, or a group's member), if any: its
    /// identity for the per-nexthop counters.
    pub nhid: Option<u32>,
}

/// What planning reads: the engine's mirror and resolved VRFs, lent for one plan or change set.
pub struct Planner<'a> {
    pub mirror: &'a Mirror,
    pub vrfs: &'a [VrfView],
    /// Member ifindex → its VRF's table.
    pub member_tables: &'a HashMap<u32, u32>,
    /// Reads a link's sysctls now (they send no events).
    pub sysctl: &'a SysctlReader,
    /// The followed sysctls by ifindex; when set, they replace `sysctl` (a link missing from
    /// them, e.g. created since the last reading, gets the values that pass to the kernel).
    pub sysctls: Option<&'a SysctlState>,
}

impl Planner<'_> {
    /// The whole plan.
    pub fn plan(&self) -> Plan {
        Plan {
            vrfs: self.vrfs.to_vec(),
            links: self.links(),
            routes: self.routes(),
            neighbours: self
                .mirror
                .neighbours()
                .filter(|n| n.usable())
                .filter_map(|n| Some(((n.ifindex, n.addr), n.mac?)))
                .collect(),
        }
    }

    /// The plan for what `dirty` names (routes and neighbours; links and VRFs need [`plan`]).
    ///
    /// [`plan`]: Planner::plan
    pub fn changes(&self, dirty: &Dirty) -> ChangeSet {
        ChangeSet {
            routes: dirty
                .routes
                .iter()
                .map(|(t, p)| ((*t, *p), self.route(*t, *p)))
                .collect(),
            neighbours: dirty
                .neighbours
                .iter()
                .map(|(i, a)| ((*i, *a), self.neighbour(*i, *a)))
                .collect(),
        }
    }

    /// The links the data plane must know: members, the egress links their routes use, and VRF
    /// devices. Sysctls are read now (they send no events: the daemon plans links again often).
    pub fn links(&self) -> BTreeMap<u32, LinkPlan> {
        let mut out = BTreeMap::new();
        let mut vrf_of_member = BTreeMap::new();
        for v in self.vrfs {
            for m in &v.members {
                vrf_of_member.insert(*m, &v.name);
            }
            if let Some(l) = v.device.and_then(|d| self.mirror.link(d)) {
                let role = LinkRole::VrfDevice {
                    vrf: v.name.clone(),
                };
                out.insert(l.ifindex, self.link_plan(l, role));
            }
        }
        // Nexthop objects' links too: with nexthop_compat_mode 0 their routes list no paths.
        let nexthop_oifs = self.mirror.nexthops().filter_map(|n| match n.kind {
            NexthopKind::Single { oif, .. } => Some(oif),
            _ => None,
        });
        for ifindex in self.mirror.route_oifs().into_iter().chain(nexthop_oifs) {
            if out.contains_key(&ifindex) || vrf_of_member.contains_key(&ifindex) {
                continue;
            }
            if let Some(l) = self.mirror.link(ifindex).filter(|l| l.mac.is_some()) {
                out.insert(ifindex, self.link_plan(l, LinkRole::Egress));
            }
        }
        for (ifindex, vrf) in vrf_of_member {
            if let Some(l) = self.mirror.link(ifindex).filter(|l| l.mac.is_some()) {
                let role = LinkRole::Member { vrf: vrf.clone() };
                out.insert(ifindex, self.link_plan(l, role));
            }
        }
        self.plan_ports(&mut out);
        out
    }

    /// VLAN devices leave through their parent (so it must be a redirect target too); the
    /// parent of a VLAN member is a trunk; a bond XDP serves names its slaves.
    fn plan_ports(&self, out: &mut BTreeMap<u32, LinkPlan>) {
        let vlans: Vec<(u32, VlanPlan)> = out
            .keys()
            .filter_map(|i| Some((*i, self.vlan_of(*i)?)))
            .collect();
        for (ifindex, vlan) in vlans {
            let Some(plan) = out.get_mut(&ifindex) else {
                continue;
            };
            plan.vlan = Some(vlan);
            let member = matches!(plan.role, LinkRole::Member { .. });
            let Some(parent) = self.mirror.link(vlan.parent) else {
                continue;
            };
            let p = out
                .entry(vlan.parent)
                .or_insert_with(|| self.link_plan(parent, LinkRole::Egress));
            p.trunk |= member;
        }
        for (ifindex, p) in out.iter_mut() {
            let Some(l) = self.mirror.link(*ifindex) else {
                continue;
            };
            let member = matches!(p.role, LinkRole::Member { .. });
            // A veth's tags stay out of the frame when its peer has tx-vlan-offload on, whatever
            // this end's rx setting: a veth trunk that is itself a member cannot tell them apart.
            p.tags_hidden = p.trunk
                && (p.sysctl.rx_vlan_offload || (member && l.kind.as_deref() == Some("veth")));
            if l.kind.as_deref() == Some("bond") && (p.trunk || (member && p.vlan.is_none())) {
                // A backup slave's frames are the kernel's: its bond drops them.
                p.slaves = self
                    .mirror
                    .links()
                    .filter(|s| s.master == Some(*ifindex) && !s.bond_backup)
                    .map(|s| s.ifindex)
                    .collect();
                p.slaves.sort_unstable();
            }
        }
    }

    /// An 802.1Q VLAN device on a parent XDP can run on (not itself a VLAN: stacked tags are
    /// the kernel's). 802.1ad devices are not: their frames are QinQ to XDP.
    fn vlan_of(&self, ifindex: u32) -> Option<VlanPlan> {
        let l = self.mirror.link(ifindex)?;
        let vlan = l.vlan.filter(|v| v.protocol == VlanProtocol::Dot1Q)?;
        if l.kind.as_deref() != Some("vlan") || vlan.id == 0 || vlan.id > vrf_common::VLAN_ID_MAX {
            return None;
        }
        let parent = self
            .mirror
            .link(l.parent?)
            .filter(|p| p.mac.is_some() && p.kind.as_deref() != Some("vlan"))?;
        Some(VlanPlan {
            parent: parent.ifindex,
            id: vlan.id,
            pcp_mapped: vlan.egress_pcp,
        })
    }

    fn link_plan(&self, l: &LinkInfo, role: LinkRole) -> LinkPlan {
        LinkPlan {
            role,
            up: l.up,
            mtu: l.mtu,
            mac: l.mac.unwrap_or_default(),
            sysctl: match self.sysctls {
                Some(state) => state.get(&l.ifindex).map_or(
                    // Not read yet: forwarding off and IPv6 disabled both pass to the kernel.
                    LinkSysctl {
                        disable_ipv6: true,
                        rx_vlan_offload: true,
                        ..LinkSysctl::default()
                    },
                    LinkSysctl::from,
                ),
                None => (self.sysctl)(&l.name),
            },
            vlan: None,
            trunk: false,
            tags_hidden: false,
            slaves: Vec::new(),
        }
    }

    /// Every FIB entry the served tables need.
    pub fn routes(&self) -> HashMap<(u32, IpNet), RoutePlan> {
        let tables = self.mirror.tables();
        let mut keys: BTreeSet<(u32, IpNet)> = BTreeSet::new();
        for (t, p) in self.mirror.route_keys() {
            if *t == LOCAL_TABLE {
                keys.extend(tables.iter().map(|table| (*table, *p)));
            } else {
                keys.insert((*t, *p));
            }
        }
        keys.into_iter()
            .filter_map(|(t, p)| self.route(t, p).map(|e| ((t, p), e)))
            .collect()
    }

    /// What the FIB of `table` should say for exactly `prefix`: the local table first (rule 0),
    /// including a local prefix covering this one, then the table's own best route.
    pub fn route(&self, table: u32, prefix: IpNet) -> Option<RoutePlan> {
        if !self.mirror.tables().contains(&table) {
            return None;
        }
        if let Some(local) = self.mirror.routes_at(LOCAL_TABLE, prefix) {
            if let Some(e) = self.entry_of(local) {
                return Some(e);
            }
        }
        let own = self.mirror.routes_at(table, prefix);
        if own.is_some() {
            if let Some(cover) = self.mirror.local_cover(prefix) {
                if let Some(e) = self.entry_of(cover) {
                    return Some(e);
                }
            }
        }
        self.entry_of(own?)
    }

    /// The neighbour entry for (ifindex, addr), if the kernel would use it as it stands.
    pub fn neighbour(&self, ifindex: u32, addr: IpAddr) -> Option<[u8; 6]> {
        self.mirror
            .neighbour(ifindex, addr)
            .filter(|n| n.usable())
            .and_then(|n| n.mac)
    }

    /// The data plane's entry for the routes of one (table, prefix), as the kernel would choose
    /// among them; None when the kernel would look further (every path dead).
    fn entry_of(&self, routes: &[RouteInfo]) -> Option<RoutePlan> {
        // TOS-specific routes make the answer depend on a field the data plane does not match.
        if routes.iter().any(|r| r.tos != 0) {
            return Some(RoutePlan::TO_KERNEL);
        }
        let best = routes.iter().min_by_key(|r| r.metric)?;
        // IPv6 chooses among separate routes of one metric by neighbour reachability and
        // round robin (rt6_select): its choice, not ours.
        if best.prefix.addr().is_ipv6()
            && routes.iter().filter(|r| r.metric == best.metric).count() > 1
        {
            return Some(RoutePlan::TO_KERNEL);
        }
        if best.unsupported.is_some() {
            return Some(RoutePlan::TO_KERNEL);
        }
        let mtu = best.mtu.map_or(0, |m| m.min(u16::MAX as u32) as u16);
        let mut kind = best.kind;
        let paths: Vec<(PathInfo, Option<u32>)> = match best.nexthop_id {
            // The route's own paths (compat mode 1) may lag the object: the object decides.
            Some(id) => match (self.nexthop_paths(id), kind) {
                // The kernel drops what a blackhole nexthop carries (EINVAL) and reports such a
                // route as `blackhole` whatever its own type (IPv4 unreachable/prohibit/throw
                // routes naming one look the same: README, Limits).
                (Some(NexthopPaths::Blackhole), RouteKind::Unicast | RouteKind::Blackhole) => {
                    kind = RouteKind::Blackhole;
                    Vec::new()
                }
                // Reported `blackhole` but the nexthop is none (any more): a stale report (the
                // nexthop was replaced, compat mode 0 sends no route message) or a blackhole
                // route naming a gateway; only the kernel knows which.
                (Some(NexthopPaths::Paths(_)), RouteKind::Blackhole) => {
                    return Some(RoutePlan::TO_KERNEL)
                }
                (Some(NexthopPaths::Paths(p)), _) => {
                    p.into_iter().map(|(p, id)| (p, Some(id))).collect()
                }
                _ => return Some(RoutePlan::TO_KERNEL),
            },
            None => best.paths.iter().map(|p| (p.clone(), None)).collect(),
        };
        if kind != RouteKind::Unicast {
            return Some(RoutePlan {
                kind: Some(kind),
                mtu,
                paths: Vec::new(),
            });
        }
        // A path whose link lost only its carrier (RTNH_F_LINKDOWN) keeps its share of the
        // kernel's multipath hash unless `ignore_routes_with_linkdown` is set: rehashing over
        // the rest would not be the kernel's choice, with the sysctl or without.
        if paths.len() > 1
            && paths.iter().any(|(p, _)| {
                self.mirror
                    .link(p.ifindex)
                    .is_some_and(|l| l.admin_up && !l.up && !is_vrf_device(l))
            })
        {
            return Some(RoutePlan::TO_KERNEL);
        }
        let live: Vec<Path> = paths
            .iter()
            .filter(|(p, _)| {
                !p.dead
                    && self
                        .mirror
                        .link(p.ifindex)
                        .is_some_and(|l| l.up || is_vrf_device(l))
            })
            .map(|(p, nhid)| Path {
                ifindex: p.ifindex,
                gateway: p.gateway,
                weight: p.weight,
                nhid: *nhid,
            })
            .collect();
        if live.is_empty() {
            // Dead paths: the kernel would skip this route; what it falls back to is for it to
            // say, so the prefix stays with it.
            return Some(RoutePlan::TO_KERNEL);
        }
        // The kernel validates the source in the table of the path *it* picks: when paths lead
        // into different VRFs, our pick could be checked against the wrong table.
        let path_tables: BTreeSet<Option<u32>> = live
            .iter()
            .map(|p| self.member_tables.get(&p.ifindex).copied())
            .collect();
        if path_tables.len() > 1 {
            return Some(RoutePlan::TO_KERNEL);
        }
        if live.len() > MAX_PATHS || live.iter().any(|p| p.weight == 0) {
            return Some(RoutePlan::TO_KERNEL);
        }
        Some(RoutePlan {
            kind: Some(RouteKind::Unicast),
            mtu,
            paths: live,
        })
    }
}

/// What a nexthop object stands for as a route's paths.
enum NexthopPaths {
    Blackhole,
    /// Each path with the singleton nexthop it is.
    Paths(Vec<(PathInfo, u32)>),
}

impl Planner<'_> {
    /// The paths nexthop `id` gives a route; `None` (the kernel decides) for a nexthop not known
    /// yet, one vrfd does not model, or a resilient group (its bucket table is the kernel's).
    fn nexthop_paths(&self, id: u32) -> Option<NexthopPaths> {
        let single = |kind: &NexthopKind, weight: u32| match *kind {
            NexthopKind::Single {
                oif, gateway, dead, ..
            } => Some(PathInfo {
                ifindex: oif,
                gateway,
                weight,
                dead,
            }),
            _ => None,
        };
        match &self.mirror.nexthop(id)?.kind {
            NexthopKind::Blackhole => Some(NexthopPaths::Blackhole),
            k @ NexthopKind::Single { .. } => Some(NexthopPaths::Paths(vec![(single(k, 1)?, id)])),
            NexthopKind::Group {
                members,
                resilient: None,
            } => {
                if let [(only, _)] = members[..] {
                    // The kernel allows a blackhole in a group only alone.
                    if let NexthopKind::Blackhole = self.mirror.nexthop(only)?.kind {
                        return Some(NexthopPaths::Blackhole);
                    }
                }
                members
                    .iter()
                    .map(|(m, w)| Some((single(&self.mirror.nexthop(*m)?.kind, *w)?, *m)))
                    .collect::<Option<Vec<_>>>()
                    .map(NexthopPaths::Paths)
            }
            NexthopKind::Group { .. } | NexthopKind::Unsupported(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::DeclaredVrf,
        engine::Engine,
        model::{AddrInfo, FwMark, IpFamily, KernelEvent, KernelSnapshot, RuleAction, RuleInfo},
    };

    fn link(ifindex: u32, name: &str) -> LinkInfo {
        LinkInfo {
            ifindex,
            name: name.into(),
            mac: Some([2, 0, 0, 0, 0, ifindex as u8]),
            mtu: 1500,
            up: true,
            admin_up: true,
            master: None,
            kind: Some("veth".into()),
            vrf_table: None,
            parent: None,
            vlan: None,
            bond_backup: false,
            bond_xdp: false,
        }
    }

    /// `ifindex` loses its carrier (`admin`: it is set down, too).
    fn link_down(e: &mut Engine, ifindex: u32, name: &str, admin: bool) -> Dirty {
        let mut l = link(ifindex, name);
        l.up = false;
        l.admin_up = !admin;
        e.apply(KernelEvent::NewLink(l))
    }

    fn route(
        table: u32,
        prefix: &str,
        kind: RouteKind,
        paths: &[(u32, Option<&str>)],
    ) -> RouteInfo {
        RouteInfo::of(table, prefix, kind, paths)
    }

    /// A unicast route of red's table, 110.
    fn unicast(prefix: &str, paths: &[(u32, Option<&str>)]) -> RouteInfo {
        route(110, prefix, RouteKind::Unicast, paths)
    }

    /// The `ip rule iif <member> lookup 110` rules vrfd adds for red, both families.
    fn red_rules() -> Vec<RuleInfo> {
        let mut out = Vec::new();
        for iif in ["r1", "r2"] {
            for family in IpFamily::ALL {
                out.push(RuleInfo {
                    family,
                    priority: 1000,
                    table: 110,
                    action: RuleAction::ToTable,
                    iif: Some(iif.into()),
                    oif: None,
                    l3mdev: false,
                    has_other_selectors: false,
                    fwmark: Default::default(),
                });
            }
        }
        out
    }

    /// red, table 110, of these members.
    fn red(interfaces: &[&str]) -> DeclaredVrf {
        DeclaredVrf {
            name: "red".into(),
            table: 110,
            interfaces: interfaces.iter().map(|i| i.to_string()).collect(),
            rule_priority: 1000,
            netfilter: Default::default(),
        }
    }

    fn engine() -> Engine {
        let mut e = Engine::new(
            vec![red(&["r1", "r2"])],
            Box::new(|_| LinkSysctl {
                forwarding4: true,
                forwarding6: true,
                rp_filter: 0,
                ..Default::default()
            }),
        );
        e.load(KernelSnapshot {
            links: vec![link(2, "r1"), link(3, "r2"), link(4, "other")],
            routes: vec![
                unicast("10.0.1.0/24", &[(2, None)]),
                unicast("0.0.0.0/0", &[(2, Some("10.0.1.9")), (3, Some("10.0.2.9"))]),
                route(LOCAL_TABLE, "10.0.1.1/32", RouteKind::Local, &[(2, None)]),
                route(254, "10.0.1.0/24", RouteKind::Unicast, &[(4, None)]),
            ],
            rules: red_rules(),
            ..Default::default()
        });
        e
    }

    #[test]
    fn declared_vrf_resolves_its_members_and_serves_its_table() {
        let e = engine();
        let vrfs = e.vrfs();
        assert_eq!(vrfs.len(), 1);
        assert_eq!(vrfs[0].members, BTreeSet::from([2, 3]));
        assert_eq!(e.mirror().tables(), &BTreeSet::from([110]));
        // The main table's route is not mirrored.
        assert!(e
            .planner()
            .route(254, "10.0.1.0/24".parse().unwrap())
            .is_none());
    }

    #[test]
    fn local_table_routes_are_overlaid_into_every_vrf() {
        let e = engine();
        let all = e.planner().routes();
        let local = &all[&(110, "10.0.1.1/32".parse().unwrap())];
        assert_eq!(local.kind, Some(RouteKind::Local));
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn a_covering_local_prefix_wins_over_the_vrf_route_inside_it() {
        let mut e = engine();
        e.apply(KernelEvent::NewRoute(route(
            LOCAL_TABLE,
            "10.0.0.0/8",
            RouteKind::Local,
            &[(2, None)],
        )));
        let r = e
            .planner()
            .route(110, "10.0.1.0/24".parse().unwrap())
            .unwrap();
        assert_eq!(r.kind, Some(RouteKind::Local));
    }

    #[test]
    fn lowest_metric_wins_and_tos_routes_are_left_to_the_kernel() {
        let mut e = engine();
        let mut worse = unicast("10.9.0.0/16", &[(3, None)]);
        worse.metric = 200;
        let better = route(110, "10.9.0.0/16", RouteKind::Blackhole, &[]);
        e.apply(KernelEvent::NewRoute(worse));
        e.apply(KernelEvent::NewRoute(better));
        assert_eq!(
            e.planner()
                .route(110, "10.9.0.0/16".parse().unwrap())
                .unwrap()
                .kind,
            Some(RouteKind::Blackhole)
        );
        let mut tos = unicast("10.9.0.0/16", &[(3, None)]);
        tos.tos = 0x10;
        e.apply(KernelEvent::NewRoute(tos));
        assert_eq!(
            e.planner()
                .route(110, "10.9.0.0/16".parse().unwrap())
                .unwrap(),
            RoutePlan::TO_KERNEL
        );
    }

    #[test]
    fn link_down_evicts_single_path_ipv4_routes_and_drops_dead_paths() {
        let mut e = engine();
        let dirty = link_down(&mut e, 3, "r2", true);
        assert!(dirty.links);
        let default = e
            .planner()
            .route(110, "0.0.0.0/0".parse().unwrap())
            .unwrap();
        assert_eq!(
            default.paths.len(),
            1,
            "the path via the down link is dropped"
        );
        assert_eq!(default.paths[0].ifindex, 2);
    }

    #[test]
    fn a_multipath_route_with_a_path_that_lost_its_carrier_is_the_kernels() {
        // RTNH_F_LINKDOWN keeps the path in the kernel's hash (unless
        // ignore_routes_with_linkdown): its flows are the kernel's to drop, not ours to move.
        let mut e = engine();
        link_down(&mut e, 3, "r2", false);
        let default = e
            .planner()
            .route(110, "0.0.0.0/0".parse().unwrap())
            .unwrap();
        assert_eq!(default, RoutePlan::TO_KERNEL);
    }

    #[test]
    fn multipath_paths_become_nexthops_and_deletion_removes_the_prefix() {
        let mut e = engine();
        let p: IpNet = "0.0.0.0/0".parse().unwrap();
        assert_eq!(e.planner().route(110, p).unwrap().paths.len(), 2);
        let dirty = e.apply(KernelEvent::DelRoute(unicast("0.0.0.0/0", &[])));
        assert!(dirty.routes.contains(&(110, p)));
        assert!(e.planner().route(110, p).is_none());
    }

    #[test]
    fn an_ipv6_delete_of_one_path_keeps_the_others() {
        let mut e = engine();
        let two = unicast("fd00:9::/64", &[(2, Some("fe80::1")), (3, Some("fe80::2"))]);
        e.apply(KernelEvent::NewRoute(two));
        let one = unicast("fd00:9::/64", &[(3, Some("fe80::2"))]);
        e.apply(KernelEvent::DelRoute(one.clone()));
        let left = e.planner().route(110, one.prefix).unwrap();
        assert_eq!(left.paths.len(), 1);
        assert_eq!(left.paths[0].ifindex, 2);
        e.apply(KernelEvent::DelRoute(unicast(
            "fd00:9::/64",
            &[(2, Some("fe80::1"))],
        )));
        assert!(e.planner().route(110, one.prefix).is_none());
    }

    #[test]
    fn losing_an_ipv4_address_asks_for_a_resync() {
        let mut e = engine();
        let a = AddrInfo {
            ifindex: 2,
            addr: "10.0.1.1".parse().unwrap(),
            prefix_len: 24,
        };
        assert!(e.apply(KernelEvent::DelAddr(a)).resync);
    }

    #[test]
    fn a_rule_ahead_of_the_vrf_rule_degrades_the_vrf() {
        let mut e = engine();
        e.load_rules(
            red_rules()
                .into_iter()
                .chain([RuleInfo {
                    family: IpFamily::V4,
                    priority: 500,
                    table: 300,
                    action: RuleAction::ToTable,
                    iif: None,
                    oif: None,
                    l3mdev: false,
                    has_other_selectors: true,
                    fwmark: Default::default(),
                }])
                .collect(),
        );
        assert!(e.vrfs()[0]
            .degraded
            .reason()
            .unwrap()
            .contains("priority 500"));
        assert!(e.vrfs()[0].degraded.of(IpFamily::V6).is_empty());
    }

    #[test]
    fn rules_ahead_of_l3mdev_that_can_catch_host_traffic_are_flagged_per_family() {
        let mut e = Engine::new(Vec::new(), Box::new(|_| LinkSysctl::default()));
        let mut dev = link(9, "vrf-red");
        dev.kind = Some("vrf".into());
        dev.vrf_table = Some(110);
        let mut m = link(2, "r1");
        m.master = Some(9);
        e.apply(KernelEvent::NewLink(dev));
        e.apply(KernelEvent::NewLink(m));
        let l3mdev = |family| RuleInfo {
            family,
            priority: 1000,
            table: 0,
            action: RuleAction::ToTable,
            iif: None,
            oif: None,
            l3mdev: true,
            has_other_selectors: false,
            fwmark: Default::default(),
        };
        let ahead = |oif: Option<&str>, iif: Option<&str>, mark: u32| RuleInfo {
            family: IpFamily::V4,
            priority: 900,
            table: 300,
            action: RuleAction::ToTable,
            iif: iif.map(Into::into),
            oif: oif.map(Into::into),
            l3mdev: false,
            has_other_selectors: mark != 0,
            fwmark: FwMark {
                mark,
                mask: if mark != 0 { u32::MAX } else { 0 },
            },
        };
        let judge = |e: &mut Engine, r: RuleInfo| {
            e.load_rules(vec![r, l3mdev(IpFamily::V4), l3mdev(IpFamily::V6)]);
            let v = &e.vrfs()[0];
            (
                !v.local_rules.of(IpFamily::V4).is_empty(),
                !v.local_marked.of(IpFamily::V4).is_empty(),
                v.local_rules.of(IpFamily::V6).is_empty()
                    && v.local_marked.of(IpFamily::V6).is_empty(),
            )
        };
        for (rule, want) in [
            // `oif vrf-red`, `iif lo`: the output lookup carries both.
            (ahead(Some("vrf-red"), None, 0), (true, false, true)),
            (ahead(None, Some("lo"), 0), (true, false, true)),
            // Another VRF's device, a member as iif: not the host's traffic in red.
            (ahead(Some("vrf-blue"), None, 0), (false, false, true)),
            (ahead(None, Some("r1"), 0), (false, false, true)),
            // A mark: only what a socket marks.
            (ahead(None, None, 0x42), (false, true, true)),
        ] {
            assert_eq!(judge(&mut e, rule.clone()), want, "{rule:?}");
        }
        // After the l3mdev rule: never reached.
        let mut late = ahead(None, None, 0);
        late.priority = 2000;
        e.load_rules(vec![l3mdev(IpFamily::V4), late]);
        assert!(e.vrfs()[0].local_rules.of(IpFamily::V4).is_empty());
    }

    /// A rule matching every packet from r1 (table 300), with the given priority and mark.
    fn from_rule(priority: u32, fwmark: FwMark, action: RuleAction) -> RuleInfo {
        RuleInfo {
            family: IpFamily::V4,
            priority,
            table: 300,
            action,
            iif: None,
            oif: None,
            l3mdev: false,
            has_other_selectors: true,
            fwmark,
        }
    }

    #[test]
    fn rules_are_judged_in_the_kernels_order() {
        let any = FwMark::default();
        let degraded = |rules: Vec<RuleInfo>| {
            let mut e = engine();
            e.load_rules(rules);
            !e.vrfs()[0].degraded.of(IpFamily::V4).is_empty()
        };
        let with = |before: Vec<RuleInfo>, after: Vec<RuleInfo>| {
            before
                .into_iter()
                .chain(red_rules())
                .chain(after)
                .collect::<Vec<_>>()
        };
        let mark = |mark, mask| FwMark { mark, mask };
        let ahead =
            |priority, fwmark, action| with(vec![from_rule(priority, fwmark, action)], vec![]);
        for (rules, want, case) in [
            // Equal priority: the kernel's list order decides (earlier is evaluated first).
            (
                ahead(1000, any, RuleAction::ToTable),
                true,
                "equal priority, listed first",
            ),
            (
                with(vec![], vec![from_rule(1000, any, RuleAction::ToTable)]),
                false,
                "equal priority, listed after",
            ),
            // Lower priority, wherever the dump would list it.
            (ahead(999, any, RuleAction::ToTable), true, "lower priority"),
            // Forwarded packets carry mark 0: a mark that excludes it cannot match...
            (
                ahead(999, mark(1, u32::MAX), RuleAction::ToTable),
                false,
                "mark 1",
            ),
            (
                ahead(999, mark(0x100, 0xff00), RuleAction::ToTable),
                false,
                "mark 0x100/0xff00",
            ),
            // ...a mask that lets mark 0 through can.
            (
                ahead(999, mark(0, 0xff), RuleAction::ToTable),
                true,
                "mark 0/0xff",
            ),
            // nop decides nothing; goto and verdicts do.
            (ahead(999, any, RuleAction::Nop), false, "nop"),
            (ahead(999, any, RuleAction::Goto), true, "goto"),
            (ahead(999, any, RuleAction::Verdict), true, "verdict"),
        ] {
            assert_eq!(degraded(rules), want, "{case}");
        }
    }

    #[test]
    fn a_vrf_whose_member_rule_is_missing_is_degraded() {
        let mut e = engine();
        assert!(!e.vrfs()[0].degraded.is_degraded());
        let mut rules = red_rules();
        rules.retain(|r| !(r.iif.as_deref() == Some("r2") && r.family == IpFamily::V6));
        e.load_rules(rules);
        let why = e.vrfs()[0].degraded.reason().unwrap().to_string();
        assert!(why.contains("ip -6 rule iif r2 lookup 110"), "{why}");
    }

    #[test]
    fn ipv4_multipath_routes_go_when_their_last_path_goes_admin_down() {
        let mut e = engine();
        let p: IpNet = "0.0.0.0/0".parse().unwrap();
        link_down(&mut e, 2, "r1", true);
        assert!(
            e.planner().route(110, p).is_some(),
            "one path left: the kernel keeps the route"
        );
        link_down(&mut e, 3, "r2", true);
        assert!(
            e.planner().route(110, p).is_none(),
            "every path dead: the kernel deleted it"
        );
        e.apply(KernelEvent::NewLink(link(2, "r1")));
        assert!(
            e.planner().route(110, p).is_none(),
            "and it does not come back with the link"
        );
    }

    #[test]
    fn losing_only_the_carrier_keeps_ipv4_routes() {
        let mut e = engine();
        link_down(&mut e, 2, "r1", false);
        e.apply(KernelEvent::NewLink(link(2, "r1")));
        let r = e
            .planner()
            .route(110, "10.0.1.0/24".parse().unwrap())
            .unwrap();
        assert_eq!(r.paths[0].ifindex, 2);
    }

    #[test]
    fn an_appended_ipv4_route_does_not_displace_the_one_the_kernel_uses() {
        let mut e = engine();
        let p: IpNet = "10.0.1.0/24".parse().unwrap();
        e.apply(KernelEvent::AppendRoute(unicast(
            "10.0.1.0/24",
            &[(3, None)],
        )));
        assert_eq!(
            e.planner().route(110, p).unwrap().paths[0].ifindex,
            2,
            "the first stays in use"
        );
        e.apply(KernelEvent::NewRoute(unicast("10.0.1.0/24", &[(3, None)])));
        assert_eq!(
            e.planner().route(110, p).unwrap().paths[0].ifindex,
            3,
            "a replace takes over"
        );
    }

    #[test]
    fn deleting_an_appended_alias_keeps_the_unreachable_route_ahead_of_it() {
        // The case: add unreachable, append via G, delete via G.
        let mut e = engine();
        let p: IpNet = "10.9.0.0/16".parse().unwrap();
        let unreachable = route(110, "10.9.0.0/16", RouteKind::Unreachable, &[]);
        let via = unicast("10.9.0.0/16", &[(3, Some("10.0.2.2"))]);
        e.apply(KernelEvent::NewRoute(unreachable));
        e.apply(KernelEvent::AppendRoute(via.clone()));
        assert_eq!(
            e.planner().route(110, p).unwrap().kind,
            Some(RouteKind::Unreachable)
        );
        let d = e.apply(KernelEvent::DelRoute(via));
        assert!(!d.resync, "the notification names the alias");
        assert_eq!(
            e.planner().route(110, p).unwrap().kind,
            Some(RouteKind::Unreachable)
        );
    }

    #[test]
    fn ipv6_routes_of_one_metric_are_left_to_the_kernel() {
        let mut e = engine();
        let p: IpNet = "2001:db8:9::/48".parse().unwrap();
        let gw = unicast("2001:db8:9::/48", &[(2, Some("fe80::2"))]);
        e.apply(KernelEvent::NewRoute(gw.clone()));
        assert_eq!(e.planner().route(110, p).unwrap().paths[0].ifindex, 2);
        e.apply(KernelEvent::AppendRoute(unicast(
            "2001:db8:9::/48",
            &[(3, None)],
        )));
        assert_eq!(e.planner().route(110, p).unwrap(), RoutePlan::TO_KERNEL);
        e.apply(KernelEvent::DelRoute(unicast(
            "2001:db8:9::/48",
            &[(3, None)],
        )));
        assert_eq!(e.planner().route(110, p).unwrap().paths[0].ifindex, 2);
    }

    /// r0.100 (ifindex 10) in red on trunk r0 (4, "other"), and bond0 (20) in red over 21, 22.
    fn vlan_and_bond_engine(kind_of_trunk: &str, member_trunk: bool) -> Engine {
        let mut e = engine();
        let mut trunk = link(4, "other");
        trunk.kind = (!kind_of_trunk.is_empty()).then(|| kind_of_trunk.into());
        e.apply(KernelEvent::NewLink(trunk));
        let mut vlan = link(10, "r0.100");
        vlan.kind = Some("vlan".into());
        vlan.parent = Some(4);
        vlan.vlan = Some(crate::model::Vlan {
            id: 100,
            protocol: VlanProtocol::Dot1Q,
            egress_pcp: false,
        });
        e.apply(KernelEvent::NewLink(vlan));
        let mut bond = link(20, "bond0");
        bond.kind = Some("bond".into());
        e.apply(KernelEvent::NewLink(bond));
        for s in [21, 22, 23] {
            let mut slave = link(s, &format!("s{s}"));
            slave.master = Some(20);
            // An active-backup bond's backup: what arrives on it is dropped by the bond.
            slave.bond_backup = s == 23;
            e.apply(KernelEvent::NewLink(slave));
        }
        let mut members = vec!["r1", "r2", "r0.100", "bond0"];
        if member_trunk {
            members.push("other");
        }
        e.redeclare(vec![red(&members)]);
        e
    }

    #[test]
    fn a_vlan_member_is_served_on_its_trunk_and_a_bond_names_its_slaves() {
        let e = vlan_and_bond_engine("veth", false);
        let plan = e.plan();
        let vlan = &plan.links[&10];
        assert_eq!(vlan.role, LinkRole::Member { vrf: "red".into() });
        assert_eq!(
            vlan.vlan,
            Some(VlanPlan {
                parent: 4,
                id: 100,
                pcp_mapped: false
            })
        );
        let trunk = &plan.links[&4];
        assert_eq!(trunk.role, LinkRole::Egress, "the trunk is in no VRF");
        assert!(trunk.trunk && !trunk.tags_hidden);
        assert_eq!(plan.links[&20].slaves, vec![21, 22]);
        // XDP on the trunk and the bond, never on the VLAN device.
        assert_eq!(plan.xdp_ports(), BTreeSet::from([2, 3, 4, 20]));
    }

    #[test]
    fn bond_slaves_joining_leaving_and_failing_over_are_followed() {
        let mut e = vlan_and_bond_engine("veth", false);
        let slave = |e: &Engine, i: u32| e.mirror().link(i).unwrap().clone();
        // 22 leaves (nomaster), the backup 23 becomes active, a new 24 joins as backup.
        let mut gone = slave(&e, 22);
        gone.master = None;
        assert!(e.apply(KernelEvent::NewLink(gone)).links);
        let mut active = slave(&e, 23);
        active.bond_backup = false;
        assert!(e.apply(KernelEvent::NewLink(active)).links);
        let mut new = link(24, "s24");
        new.master = Some(20);
        new.bond_backup = true;
        e.apply(KernelEvent::NewLink(new));
        assert_eq!(e.plan().links[&20].slaves, vec![21, 23]);
        // The bond itself is still where XDP goes (the kernel installs it on the slaves).
        assert!(e.plan().xdp_ports().contains(&20));
        assert!(!e.plan().xdp_ports().contains(&24));
    }

    #[test]
    fn a_trunk_that_may_strip_tags_is_marked() {
        // A veth trunk that is a member itself: its peer may keep tags out of the frame.
        let e = vlan_and_bond_engine("veth", true);
        let trunk = &e.plan().links[&4];
        assert!(trunk.trunk && trunk.tags_hidden);
        // rx-vlan-offload on a NIC (no kind) that is no member.
        let mut e = vlan_and_bond_engine("", false);
        e.set_sysctl_reader(Box::new(|_| LinkSysctl {
            rx_vlan_offload: true,
            ..Default::default()
        }));
        assert!(e.plan().links[&4].tags_hidden);
    }

    #[test]
    fn a_vlan_member_whose_egress_qos_map_sets_a_pcp_still_receives_on_its_trunk() {
        let mut e = vlan_and_bond_engine("veth", false);
        let mut qos = e.mirror().link(10).unwrap().clone();
        qos.vlan = qos.vlan.map(|v| crate::model::Vlan {
            egress_pcp: true,
            ..v
        });
        e.apply(KernelEvent::NewLink(qos));
        let plan = e.plan();
        assert!(plan.links[&10].vlan.is_some_and(|v| v.pcp_mapped));
        // Still served on the trunk (ingress), never by XDP on the VLAN device.
        assert!(plan.links[&4].trunk);
        assert!(!plan.xdp_ports().contains(&10));
    }

    #[test]
    fn qinq_and_stacked_vlans_are_not_served_on_a_trunk() {
        let mut e = vlan_and_bond_engine("veth", false);
        let mut ad = e.mirror().link(10).unwrap().clone();
        ad.vlan = Some(crate::model::Vlan {
            id: 100,
            protocol: VlanProtocol::Dot1Ad,
            egress_pcp: false,
        });
        e.apply(KernelEvent::NewLink(ad));
        let plan = e.plan();
        assert_eq!(plan.links[&10].vlan, None);
        assert!(!plan.links.get(&4).is_some_and(|t| t.trunk));
        // Not on a trunk: XDP on the device itself (generic), as for any member.
        assert!(plan.xdp_ports().contains(&10));
    }

    #[test]
    fn members_and_egress_links_get_their_flags() {
        let e = engine();
        let links = e.planner().links();
        assert_eq!(links[&2].role, LinkRole::Member { vrf: "red".into() });
        assert!(links[&2].up && links[&2].sysctl.forwarding4 && links[&2].sysctl.forwarding6);
        assert!(
            !links.contains_key(&4),
            "a link no served route uses is not needed"
        );
    }

    #[test]
    fn egress_links_follow_route_events_without_walking_the_routes() {
        let mut e = engine();
        assert!(!e.planner().links().contains_key(&4));
        let via4 = unicast("10.9.0.0/16", &[(4, Some("10.0.1.7"))]);
        e.apply(KernelEvent::NewRoute(via4.clone()));
        assert_eq!(e.planner().links()[&4].role, LinkRole::Egress);
        // A second route through it, then both gone: the link goes with the last.
        let also = unicast("10.8.0.0/16", &[(4, None)]);
        e.apply(KernelEvent::NewRoute(also.clone()));
        e.apply(KernelEvent::DelRoute(via4));
        assert!(e.planner().links().contains_key(&4));
        e.apply(KernelEvent::DelRoute(also));
        assert!(!e.planner().links().contains_key(&4));
        // A replace moves the path: the count follows the route at its key.
        e.apply(KernelEvent::NewRoute(unicast("10.0.1.0/24", &[(4, None)])));
        assert!(e.planner().links().contains_key(&4));
        assert_eq!(
            e.mirror().kept_route_oifs(),
            Some(e.mirror().count_route_oifs()),
            "the kept count is the one a walk gives"
        );
    }

    fn single(id: u32, oif: u32, gw: &str) -> KernelEvent {
        KernelEvent::NewNexthop(crate::model::NexthopInfo {
            id,
            protocol: 4,
            kind: NexthopKind::Single {
                oif,
                gateway: Some(gw.parse().unwrap()),
                onlink: false,
                dead: false,
            },
        })
    }

    fn group(id: u32, members: &[(u32, u32)]) -> KernelEvent {
        KernelEvent::NewNexthop(crate::model::NexthopInfo {
            id,
            protocol: 4,
            kind: NexthopKind::Group {
                members: members.to_vec(),
                resilient: None,
            },
        })
    }

    /// `ip route add P nhid N table 110` under nexthop_compat_mode 0: no paths in the message.
    fn nh_route(prefix: &str, id: u32) -> KernelEvent {
        let mut r = route(110, prefix, RouteKind::Unicast, &[]);
        r.nexthop_id = Some(id);
        KernelEvent::NewRoute(r)
    }

    #[test]
    fn a_route_naming_an_unknown_nexthop_waits_for_it() {
        let mut e = engine();
        let p: IpNet = "10.7.0.0/16".parse().unwrap();
        e.apply(nh_route("10.7.0.0/16", 11));
        assert_eq!(e.planner().route(110, p).unwrap(), RoutePlan::TO_KERNEL);
        let dirty = e.apply(single(11, 3, "10.0.2.9"));
        assert!(dirty.routes.contains(&(110, p)), "the waiting route moves");
        let r = e.planner().route(110, p).unwrap();
        assert_eq!(r.kind, Some(RouteKind::Unicast));
        assert_eq!(r.paths[0].ifindex, 3);
        assert!(e.planner().links().contains_key(&3));
    }

    #[test]
    fn a_weighted_group_gives_weighted_paths_and_follows_replace_and_delete() {
        let mut e = engine();
        let p: IpNet = "10.7.0.0/16".parse().unwrap();
        e.apply(single(11, 2, "10.0.1.9"));
        e.apply(single(12, 3, "10.0.2.9"));
        e.apply(group(21, &[(11, 1), (12, 3)]));
        e.apply(nh_route("10.7.0.0/16", 21));
        let weights = |e: &Engine| -> Vec<(u32, u32)> {
            e.planner()
                .route(110, p)
                .unwrap()
                .paths
                .iter()
                .map(|x| (x.ifindex, x.weight))
                .collect()
        };
        assert_eq!(weights(&e), [(2, 1), (3, 3)]);
        // A member replaced in place moves the group's routes (no route message in mode 0).
        let dirty = e.apply(single(12, 2, "10.0.1.8"));
        assert!(dirty.routes.contains(&(110, p)));
        assert_eq!(
            e.planner().route(110, p).unwrap().paths[1].gateway,
            Some("10.0.1.8".parse().unwrap())
        );
        // Group membership changed.
        e.apply(group(21, &[(11, 5)]));
        assert_eq!(weights(&e), [(2, 5)]);
        // Deleting the last member takes the group and its routes, with no DelRoute.
        let dirty = e.apply(KernelEvent::DelNexthop(11));
        assert!(dirty.routes.contains(&(110, p)));
        assert!(e.planner().route(110, p).is_none());
        assert!(e.mirror().nexthop(21).is_none());
    }

    #[test]
    fn blackhole_and_resilient_nexthops() {
        let mut e = engine();
        let p: IpNet = "10.7.0.0/16".parse().unwrap();
        e.apply(KernelEvent::NewNexthop(crate::model::NexthopInfo {
            id: 14,
            protocol: 4,
            kind: NexthopKind::Blackhole,
        }));
        e.apply(nh_route("10.7.0.0/16", 14));
        assert_eq!(
            e.planner().route(110, p).unwrap().kind,
            Some(RouteKind::Blackhole)
        );
        // As the kernel reports it: type blackhole, nhid 14.
        let mut reported = route(110, "10.7.0.0/16", RouteKind::Blackhole, &[]);
        reported.nexthop_id = Some(14);
        e.apply(KernelEvent::NewRoute(reported));
        assert_eq!(
            e.planner().route(110, p).unwrap().kind,
            Some(RouteKind::Blackhole)
        );
        // The blackhole replaced by a gateway (compat mode 0: no route message): the report is
        // stale or the route a blackhole of its own; the kernel decides.
        e.apply(single(14, 2, "10.0.1.9"));
        assert_eq!(e.planner().route(110, p).unwrap(), RoutePlan::TO_KERNEL);
        e.apply(single(11, 2, "10.0.1.9"));
        e.apply(KernelEvent::NewNexthop(crate::model::NexthopInfo {
            id: 22,
            protocol: 4,
            kind: NexthopKind::Group {
                members: vec![(11, 1)],
                resilient: Some(Default::default()),
            },
        }));
        e.apply(nh_route("10.7.0.0/16", 22));
        assert_eq!(
            e.planner().route(110, p).unwrap(),
            RoutePlan::TO_KERNEL,
            "the kernel's buckets"
        );
    }

    #[test]
    fn a_link_going_down_takes_its_nexthops_and_their_routes() {
        let mut e = engine();
        let p: IpNet = "10.7.0.0/16".parse().unwrap();
        e.apply(single(12, 3, "10.0.2.9"));
        e.apply(nh_route("10.7.0.0/16", 12));
        link_down(&mut e, 3, "r2", true);
        assert!(e.mirror().nexthop(12).is_none());
        assert!(e.planner().route(110, p).is_none());
    }

    #[test]
    fn unequal_multipath_weights_reach_the_plan() {
        let mut e = engine();
        let mut r = unicast(
            "10.8.0.0/16",
            &[(2, Some("10.0.1.9")), (3, Some("10.0.2.9"))],
        );
        r.paths[1].weight = 3;
        e.apply(KernelEvent::NewRoute(r));
        let plan = e
            .planner()
            .route(110, "10.8.0.0/16".parse().unwrap())
            .unwrap();
        assert_eq!(
            plan.paths.iter().map(|p| p.weight).collect::<Vec<_>>(),
            [1, 3]
        );
    }

    #[test]
    fn netfilter_and_ipsec_send_one_family_to_the_kernel_unless_bypassed() {
        use crate::netfilter::{NetfilterState, Reach};
        let mut e = engine();
        e.set_netfilter(NetfilterState {
            v4: Reach::All("inet filter forward".into()),
            v6: Reach::None,
        });
        let red = &e.vrfs()[0];
        assert_eq!(red.netfilter.of(IpFamily::V4), ["inet filter forward"]);
        assert!(red.netfilter.of(IpFamily::V6).is_empty());
        e.set_netfilter_bypass(BTreeSet::from(["red".to_string()]));
        assert!(e.vrfs()[0].netfilter.of(IpFamily::V4).is_empty());
        assert!(e.vrfs()[0].netfilter_bypass);
        e.set_netfilter_bypass(BTreeSet::new());
        // A netdev chain on a link of no VRF may be any VRF's egress; one on another VRF's
        // member is not ours.
        e.set_netfilter(NetfilterState {
            v4: Reach::Devices(BTreeSet::from(["other".into()]), "netdev t egress".into()),
            v6: Reach::None,
        });
        assert!(!e.vrfs()[0].netfilter.of(IpFamily::V4).is_empty());
        e.set_netfilter(NetfilterState::default());
        e.set_xfrm(crate::xfrm::XfrmState {
            v4: None,
            v6: Some("fwd policy".into()),
            interfaces: BTreeSet::new(),
        });
        assert!(e.vrfs()[0].ipsec.of(IpFamily::V4).is_empty());
        assert_eq!(e.vrfs()[0].ipsec.of(IpFamily::V6), ["fwd policy"]);
    }

    #[test]
    fn followed_sysctls_replace_the_reader_and_unknown_links_pass() {
        let mut e = engine();
        let mut s = crate::sysctl::LinkSysctls::read("no-such-link");
        s.forwarding4 = true;
        s.disable_ipv6 = true;
        e.set_sysctls(crate::sysctl::SysctlState::from([(2, s)]));
        let links = e.planner().links();
        assert!(links[&2].sysctl.forwarding4 && links[&2].sysctl.disable_ipv6);
        assert!(!links[&3].sysctl.forwarding4 && links[&3].sysctl.disable_ipv6);
    }
}
