//! The plan: what the data plane should hold, derived from the mirror and the resolved VRFs, in
//! the kernel's identities (VRF names, tables, ifindexes, prefixes) and never in map slots.
//! [`Engine`] keeps the mirror and derives a full [`Plan`] or, after events, a [`ChangeSet`];
//! [`crate::writer::MapWriter`] turns either into map writes.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;
use vrf_common::MAX_PATHS;

use crate::{
    config::DeclaredVrf,
    mirror::{Dirty, LinkSysctl, Mirror, SysctlReader, LOCAL_TABLE},
    model::{KernelEvent, KernelSnapshot, LinkInfo, RouteInfo, RouteKind, RuleInfo},
    netfilter::NetfilterState,
    sysctl::SysctlState,
    vrfs::{self, is_vrf_device, KernelFacts, VrfView},
    xfrm::XfrmState,
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

/// One path: out of `ifindex`, via `gateway` or directly connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path {
    pub ifindex: u32,
    pub gateway: Option<IpAddr>,
}

/// The mirror and everything derived from it between events.
pub struct Engine {
    declared: Vec<DeclaredVrf>,
    mirror: Mirror,
    sysctl: SysctlReader,
    /// The followed sysctls by ifindex; when set, they replace `sysctl` (a link missing from
    /// them, e.g. created since the last reading, gets the values that pass to the kernel).
    sysctls: Option<SysctlState>,
    /// Netfilter, IPsec and the operator's bypasses: kernel facts like links and routes.
    facts: KernelFacts,
    vrfs: Vec<VrfView>,
    /// Member ifindex → its VRF's table.
    member_tables: HashMap<u32, u32>,
}

impl Engine {
    pub fn new(declared: Vec<DeclaredVrf>, sysctl: SysctlReader) -> Self {
        Engine {
            declared,
            mirror: Mirror::default(),
            sysctl,
            sysctls: None,
            facts: KernelFacts::default(),
            vrfs: Vec::new(),
            member_tables: HashMap::new(),
        }
    }

    /// Replace the mirror with a fresh dump.
    pub fn load(&mut self, mut snap: KernelSnapshot) {
        self.mirror = Mirror::new(&mut snap);
        self.resolve();
        let tables = self.vrfs.iter().map(|v| v.table).collect();
        self.mirror.load_routes(tables, snap.routes);
    }

    /// Apply one kernel event to the mirror and say what must be planned again.
    pub fn apply(&mut self, event: KernelEvent) -> Dirty {
        let mut dirty = self.mirror.apply(event);
        if dirty.links {
            self.resolve();
            if self.tables() != *self.mirror.tables() {
                dirty.resync = true;
            }
        }
        dirty
    }

    /// Take a fresh rules dump (after [`Dirty::rules`]); the VRFs' rule checks follow.
    pub fn load_rules(&mut self, rules: Vec<RuleInfo>) {
        self.mirror.load_rules(rules);
        self.resolve();
    }

    /// Follow the sysctls from here on (the watcher's state); the links' plans change.
    pub fn set_sysctls(&mut self, state: SysctlState) {
        self.sysctls = Some(state);
    }

    /// A new netfilter reading: the VRFs' netfilter reasons follow.
    pub fn set_netfilter(&mut self, state: NetfilterState) {
        self.facts.netfilter = state;
        vrfs::kernel_checks(&mut self.vrfs, &self.facts, &self.mirror);
    }

    /// A new xfrm reading: the VRFs' IPsec reasons follow.
    pub fn set_xfrm(&mut self, state: XfrmState) {
        self.facts.xfrm = state;
        vrfs::kernel_checks(&mut self.vrfs, &self.facts, &self.mirror);
    }

    /// VRFs (by name) whose netfilter the operator bypassed.
    pub fn set_netfilter_bypass(&mut self, names: BTreeSet<String>) {
        self.facts.netfilter_bypass = names;
        vrfs::kernel_checks(&mut self.vrfs, &self.facts, &self.mirror);
    }

    fn resolve(&mut self) {
        self.vrfs = vrfs::resolve(&self.declared, &self.mirror);
        vrfs::kernel_checks(&mut self.vrfs, &self.facts, &self.mirror);
        self.member_tables = self
            .vrfs
            .iter()
            .flat_map(|v| v.members.iter().map(move |m| (*m, v.table)))
            .collect();
    }

    fn tables(&self) -> BTreeSet<u32> {
        self.vrfs.iter().map(|v| v.table).collect()
    }

    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    pub fn vrfs(&self) -> &[VrfView] {
        &self.vrfs
    }

    /// The whole plan.
    pub fn plan(&self) -> Plan {
        Plan {
            vrfs: self.vrfs.clone(),
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
    /// [`plan`]: Engine::plan
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
        for v in &self.vrfs {
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
        for r in self.mirror.routes() {
            for p in &r.paths {
                if out.contains_key(&p.ifindex) || vrf_of_member.contains_key(&p.ifindex) {
                    continue;
                }
                if let Some(l) = self.mirror.link(p.ifindex).filter(|l| l.mac.is_some()) {
                    out.insert(p.ifindex, self.link_plan(l, LinkRole::Egress));
                }
            }
        }
        for (ifindex, vrf) in vrf_of_member {
            if let Some(l) = self.mirror.link(ifindex).filter(|l| l.mac.is_some()) {
                let role = LinkRole::Member { vrf: vrf.clone() };
                out.insert(ifindex, self.link_plan(l, role));
            }
        }
        out
    }

    fn link_plan(&self, l: &LinkInfo, role: LinkRole) -> LinkPlan {
        LinkPlan {
            role,
            up: l.up,
            mtu: l.mtu,
            mac: l.mac.unwrap_or_default(),
            sysctl: match &self.sysctls {
                Some(state) => state.get(&l.ifindex).map_or(
                    // Not read yet: forwarding off and IPv6 disabled both pass to the kernel.
                    LinkSysctl {
                        disable_ipv6: true,
                        ..LinkSysctl::default()
                    },
                    LinkSysctl::from,
                ),
                None => (self.sysctl)(&l.name),
            },
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
        if best.unsupported.is_some() || best.nexthop_id.is_some() {
            return Some(RoutePlan::TO_KERNEL);
        }
        let mtu = best.mtu.map_or(0, |m| m.min(u16::MAX as u32) as u16);
        if best.kind != RouteKind::Unicast {
            return Some(RoutePlan {
                kind: Some(best.kind),
                mtu,
                paths: Vec::new(),
            });
        }
        let live: Vec<Path> = best
            .paths
            .iter()
            .filter(|p| {
                !p.dead
                    && self
                        .mirror
                        .link(p.ifindex)
                        .is_some_and(|l| l.up || is_vrf_device(l))
            })
            .map(|p| Path {
                ifindex: p.ifindex,
                gateway: p.gateway,
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
        if live.len() > MAX_PATHS || best.paths.iter().any(|p| p.weight != best.paths[0].weight) {
            // Unequal weights would need the kernel's hash-threshold split.
            return Some(RoutePlan::TO_KERNEL);
        }
        Some(RoutePlan {
            kind: Some(RouteKind::Unicast),
            mtu,
            paths: live,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AddrInfo, IpFamily, PathInfo, RuleAction};

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
        }
    }

    fn route(
        table: u32,
        prefix: &str,
        kind: RouteKind,
        paths: &[(u32, Option<&str>)],
    ) -> RouteInfo {
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
                });
            }
        }
        out
    }

    fn engine() -> Engine {
        let red = DeclaredVrf {
            name: "red".into(),
            table: 110,
            interfaces: vec!["r1".into(), "r2".into()],
            rule_priority: 1000,
            netfilter: Default::default(),
        };
        let mut e = Engine::new(
            vec![red],
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
                route(110, "10.0.1.0/24", RouteKind::Unicast, &[(2, None)]),
                route(
                    110,
                    "0.0.0.0/0",
                    RouteKind::Unicast,
                    &[(2, Some("10.0.1.9")), (3, Some("10.0.2.9"))],
                ),
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
        assert!(e.route(254, "10.0.1.0/24".parse().unwrap()).is_none());
    }

    #[test]
    fn local_table_routes_are_overlaid_into_every_vrf() {
        let e = engine();
        let all = e.routes();
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
        let r = e.route(110, "10.0.1.0/24".parse().unwrap()).unwrap();
        assert_eq!(r.kind, Some(RouteKind::Local));
    }

    #[test]
    fn lowest_metric_wins_and_tos_routes_are_left_to_the_kernel() {
        let mut e = engine();
        let mut worse = route(110, "10.9.0.0/16", RouteKind::Unicast, &[(3, None)]);
        worse.metric = 200;
        let better = route(110, "10.9.0.0/16", RouteKind::Blackhole, &[]);
        e.apply(KernelEvent::NewRoute(worse));
        e.apply(KernelEvent::NewRoute(better));
        assert_eq!(
            e.route(110, "10.9.0.0/16".parse().unwrap()).unwrap().kind,
            Some(RouteKind::Blackhole)
        );
        let mut tos = route(110, "10.9.0.0/16", RouteKind::Unicast, &[(3, None)]);
        tos.tos = 0x10;
        e.apply(KernelEvent::NewRoute(tos));
        assert_eq!(
            e.route(110, "10.9.0.0/16".parse().unwrap()).unwrap(),
            RoutePlan::TO_KERNEL
        );
    }

    #[test]
    fn link_down_evicts_single_path_ipv4_routes_and_drops_dead_paths() {
        let mut e = engine();
        let mut down = link(3, "r2");
        down.up = false;
        let dirty = e.apply(KernelEvent::NewLink(down));
        assert!(dirty.links);
        let default = e.route(110, "0.0.0.0/0".parse().unwrap()).unwrap();
        assert_eq!(
            default.paths.len(),
            1,
            "the path via the down link is dropped"
        );
        assert_eq!(default.paths[0].ifindex, 2);
    }

    #[test]
    fn multipath_paths_become_nexthops_and_deletion_removes_the_prefix() {
        let mut e = engine();
        let p: IpNet = "0.0.0.0/0".parse().unwrap();
        assert_eq!(e.route(110, p).unwrap().paths.len(), 2);
        let dirty = e.apply(KernelEvent::DelRoute(route(
            110,
            "0.0.0.0/0",
            RouteKind::Unicast,
            &[],
        )));
        assert!(dirty.routes.contains(&(110, p)));
        assert!(e.route(110, p).is_none());
    }

    #[test]
    fn an_ipv6_delete_of_one_path_keeps_the_others() {
        let mut e = engine();
        let two = route(
            110,
            "fd00:9::/64",
            RouteKind::Unicast,
            &[(2, Some("fe80::1")), (3, Some("fe80::2"))],
        );
        e.apply(KernelEvent::NewRoute(two));
        let one = route(
            110,
            "fd00:9::/64",
            RouteKind::Unicast,
            &[(3, Some("fe80::2"))],
        );
        e.apply(KernelEvent::DelRoute(one.clone()));
        let left = e.route(110, one.prefix).unwrap();
        assert_eq!(left.paths.len(), 1);
        assert_eq!(left.paths[0].ifindex, 2);
        e.apply(KernelEvent::DelRoute(route(
            110,
            "fd00:9::/64",
            RouteKind::Unicast,
            &[(2, Some("fe80::1"))],
        )));
        assert!(e.route(110, one.prefix).is_none());
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
        let mut down2 = link(2, "r1");
        down2.admin_up = false;
        down2.up = false;
        e.apply(KernelEvent::NewLink(down2));
        assert!(
            e.route(110, p).is_some(),
            "one path left: the kernel keeps the route"
        );
        let mut down3 = link(3, "r2");
        down3.admin_up = false;
        down3.up = false;
        e.apply(KernelEvent::NewLink(down3));
        assert!(
            e.route(110, p).is_none(),
            "every path dead: the kernel deleted it"
        );
        e.apply(KernelEvent::NewLink(link(2, "r1")));
        assert!(
            e.route(110, p).is_none(),
            "and it does not come back with the link"
        );
    }

    #[test]
    fn losing_only_the_carrier_keeps_ipv4_routes() {
        let mut e = engine();
        let mut no_carrier = link(2, "r1");
        no_carrier.up = false;
        e.apply(KernelEvent::NewLink(no_carrier));
        e.apply(KernelEvent::NewLink(link(2, "r1")));
        let r = e.route(110, "10.0.1.0/24".parse().unwrap()).unwrap();
        assert_eq!(r.paths[0].ifindex, 2);
    }

    #[test]
    fn an_appended_ipv4_route_does_not_displace_the_one_the_kernel_uses() {
        let mut e = engine();
        let p: IpNet = "10.0.1.0/24".parse().unwrap();
        e.apply(KernelEvent::AppendRoute(route(
            110,
            "10.0.1.0/24",
            RouteKind::Unicast,
            &[(3, None)],
        )));
        assert_eq!(
            e.route(110, p).unwrap().paths[0].ifindex,
            2,
            "the first stays in use"
        );
        e.apply(KernelEvent::NewRoute(route(
            110,
            "10.0.1.0/24",
            RouteKind::Unicast,
            &[(3, None)],
        )));
        assert_eq!(
            e.route(110, p).unwrap().paths[0].ifindex,
            3,
            "a replace takes over"
        );
    }

    #[test]
    fn members_and_egress_links_get_their_flags() {
        let e = engine();
        let links = e.links();
        assert_eq!(links[&2].role, LinkRole::Member { vrf: "red".into() });
        assert!(links[&2].up && links[&2].sysctl.forwarding4 && links[&2].sysctl.forwarding6);
        assert!(
            !links.contains_key(&4),
            "a link no served route uses is not needed"
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
        let links = e.links();
        assert!(links[&2].sysctl.forwarding4 && links[&2].sysctl.disable_ipv6);
        assert!(!links[&3].sysctl.forwarding4 && links[&3].sysctl.disable_ipv6);
    }
}
