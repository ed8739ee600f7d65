//! The sync engine: a mirror of the kernel objects that matter to the VRFs, and from it the
//! exact content the data plane's maps should have. Pure: no sockets, no maps — the daemon feeds
//! it kernel events and hands what it computes to [`crate::mapsync::MapSync`].
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;
use vrf_common::{
    Link, Nexthop, RouteKind, LINK_FWD4, LINK_FWD6, LINK_MEMBER, LINK_RPF_LOOSE, LINK_RPF_STRICT,
    LINK_UP, LINK_VRF_DEVICE, MAX_PATHS,
};

use crate::{
    config::DeclaredVrf,
    maps::nexthop,
    model::{KernelEvent, KernelSnapshot, LinkInfo, NeighInfo, RouteInfo, RuleInfo},
};

/// The kernel's local table: rule 0 consults it before any VRF rule.
pub const LOCAL_TABLE: u32 = 255;
/// A route kind the data plane does not model: it passes such prefixes to the kernel.
pub const KIND_UNSUPPORTED: u16 = 0;

/// A VRF as vrfd serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrfView {
    pub name: String,
    pub table: u32,
    /// The VRF device's ifindex (kernel VRF), None for a declared VRF.
    pub device: Option<u32>,
    /// Member ifindexes present now.
    pub members: BTreeSet<u32>,
    /// Declared members whose interface does not exist (yet).
    pub missing: Vec<String>,
    /// Why every packet of this VRF must go to the kernel, if it must.
    pub degraded: Option<String>,
}

/// The data plane's view of one FIB entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RouteEntry {
    pub kind: u16,
    pub mtu: u16,
    pub paths: Vec<Nexthop>,
}

/// Per-link sysctls that change the kernel's forwarding decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkSysctl {
    pub forwarding4: bool,
    pub forwarding6: bool,
    /// max(all, link) of net.ipv4.conf.*.rp_filter: 0 off, 1 strict, 2 loose.
    pub rp_filter: u8,
}

/// Reads a link's sysctls; replaced by a fixed table in unit tests.
pub type SysctlReader = Box<dyn Fn(&str) -> LinkSysctl + Send>;

/// What changed in the map content after an event.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Links, VRFs or memberships changed: links, tx ports and VRF slots are recomputed, and
    /// every route (paths depend on link state).
    pub links: bool,
    /// The set of VRFs or their tables changed: the mirror may lack a table: dump again.
    pub resync: bool,
    pub routes: BTreeSet<(u32, IpNet)>,
    pub neighbours: BTreeSet<(u32, IpAddr)>,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        !self.links && !self.resync && self.routes.is_empty() && self.neighbours.is_empty()
    }
}

pub struct Engine {
    declared: Vec<DeclaredVrf>,
    links: HashMap<u32, LinkInfo>,
    /// Routes of served tables and of the local table, by (table, prefix).
    routes: HashMap<(u32, IpNet), Vec<RouteInfo>>,
    neighbours: HashMap<(u32, IpAddr), NeighInfo>,
    rules: Vec<RuleInfo>,
    sysctl: SysctlReader,
    /// Tables served when the mirror was last filled (routes of others were not kept).
    tables: BTreeSet<u32>,
    /// Member ifindex → its VRF's table, as of the last link change.
    member_tables: HashMap<u32, u32>,
    /// Non-host prefixes of the local table, kept for `local_cover`.
    local_nets: BTreeSet<IpNet>,
}

impl Engine {
    pub fn new(declared: Vec<DeclaredVrf>, sysctl: SysctlReader) -> Self {
        Engine {
            declared,
            links: HashMap::new(),
            routes: HashMap::new(),
            neighbours: HashMap::new(),
            rules: Vec::new(),
            sysctl,
            tables: BTreeSet::new(),
            member_tables: HashMap::new(),
            local_nets: BTreeSet::new(),
        }
    }

    /// Replace the mirror with a fresh dump.
    pub fn load(&mut self, snap: KernelSnapshot) {
        self.links = snap.links.into_iter().map(|l| (l.ifindex, l)).collect();
        self.rules = snap.rules;
        self.tables = self.vrf_tables();
        self.member_tables = self.compute_member_tables();
        self.routes.clear();
        for r in snap.routes {
            if self.keeps_table(r.table) {
                self.routes.entry((r.table, r.prefix)).or_default().push(r);
            }
        }
        self.local_nets = self.compute_local_nets();
        self.neighbours = snap
            .neighbours
            .into_iter()
            .map(|n| ((n.ifindex, n.addr), n))
            .collect();
    }

    fn keeps_table(&self, table: u32) -> bool {
        table == LOCAL_TABLE || self.tables.contains(&table)
    }

    /// Apply one kernel event to the mirror and say what must be recomputed.
    pub fn apply(&mut self, event: KernelEvent) -> Dirty {
        let mut dirty = Dirty::default();
        match event {
            KernelEvent::NewLink(link) => {
                let old = self.links.insert(link.ifindex, link.clone());
                let was_up = old.as_ref().is_some_and(|o| o.admin_up);
                if was_up && !link.admin_up {
                    self.evict_routes_via(link.ifindex);
                }
                if old.as_ref() != Some(&link) {
                    dirty.links = true;
                }
            }
            KernelEvent::DelLink(ifindex) => {
                if self.links.remove(&ifindex).is_some() {
                    self.evict_routes_via(ifindex);
                    self.neighbours.retain(|(i, _), _| *i != ifindex);
                    dirty.links = true;
                }
            }
            KernelEvent::NewRoute(route) => {
                if self.keeps_table(route.table) {
                    self.mark_route(&mut dirty, route.table, route.prefix);
                    let entry = self.routes.entry((route.table, route.prefix)).or_default();
                    entry.retain(|r| r.id() != route.id());
                    entry.push(route);
                }
            }
            KernelEvent::AppendRoute(route) => {
                if self.keeps_table(route.table) {
                    self.mark_route(&mut dirty, route.table, route.prefix);
                    let entry = self.routes.entry((route.table, route.prefix)).or_default();
                    if route.prefix.addr().is_ipv6() {
                        // IPv6 appends a path: the notification lists the route's paths.
                        entry.retain(|r| r.id() != route.id());
                    }
                    // IPv4 keeps an identical route ahead of the appended one: the first of
                    // equal metrics wins in entry_of, as in the kernel.
                    entry.push(route);
                }
            }
            KernelEvent::DelRoute(route) => {
                if let Some(entry) = self.routes.get_mut(&(route.table, route.prefix)) {
                    if route.prefix.addr().is_ipv6() && !route.paths.is_empty() {
                        // `ip -6 route del P via G` reports only the deleted paths of a
                        // multipath route; a full delete lists them all.
                        for r in entry.iter_mut().filter(|r| r.id() == route.id()) {
                            r.paths.retain(|p| {
                                !route
                                    .paths
                                    .iter()
                                    .any(|d| d.ifindex == p.ifindex && d.gateway == p.gateway)
                            });
                        }
                        entry.retain(|r| !(r.id() == route.id() && r.paths.is_empty()));
                    } else {
                        entry.retain(|r| r.id() != route.id());
                    }
                    if entry.is_empty() {
                        self.routes.remove(&(route.table, route.prefix));
                    }
                    self.mark_route(&mut dirty, route.table, route.prefix);
                }
            }
            KernelEvent::NewNeigh(n) => {
                dirty.neighbours.insert((n.ifindex, n.addr));
                self.neighbours.insert((n.ifindex, n.addr), n);
            }
            KernelEvent::DelNeigh(n) => {
                if self.neighbours.remove(&(n.ifindex, n.addr)).is_some() {
                    dirty.neighbours.insert((n.ifindex, n.addr));
                }
            }
            KernelEvent::DelAddr(a) if a.addr.is_ipv4() => {
                // Losing an IPv4 address silently deletes the IPv4 routes that depended on it
                // (seen on 6.18): only a dump tells which.
                dirty.resync = true;
            }
            KernelEvent::NewAddr(_) | KernelEvent::DelAddr(_) => {
                // Local delivery follows the local routes the kernel adds with an address;
                // those arrive as route events.
            }
            KernelEvent::RulesChanged | KernelEvent::Overrun(_) => dirty.resync = true,
        }
        if dirty.links {
            // A non-host local-table route changed (mark_route), or links did.
            self.local_nets = self.compute_local_nets();
            self.member_tables = self.compute_member_tables();
            if self.vrf_tables() != self.tables {
                dirty.resync = true;
            }
        }
        dirty
    }

    /// Rules are re-read on change (they are few); a caller that has them sets them here.
    pub fn set_rules(&mut self, rules: Vec<RuleInfo>) {
        self.rules = rules;
    }

    /// A route of the local table applies to every VRF (rule 0 comes first).
    fn mark_route(&self, dirty: &mut Dirty, table: u32, prefix: IpNet) {
        if table == LOCAL_TABLE {
            if is_host(prefix) {
                for t in &self.tables {
                    dirty.routes.insert((*t, prefix));
                }
            } else {
                // A covering local prefix changes every route inside it: recompute all.
                dirty.links = true;
            }
        } else {
            dirty.routes.insert((table, prefix));
        }
    }

    /// IPv4 deletes routes through a link that goes admin-down without telling anyone: do it
    /// here. A multipath route keeps its other paths (the kernel marks the path dead and revives
    /// it when the link returns) unless every path is now dead, when the kernel deletes it too.
    fn evict_routes_via(&mut self, ifindex: u32) {
        let links = &self.links;
        let dead = |i: u32| i == ifindex || links.get(&i).is_none_or(|l| !l.admin_up);
        self.routes.retain(|(_, prefix), routes| {
            if prefix.addr().is_ipv4() {
                routes.retain(|r| {
                    let through = r.paths.iter().any(|p| p.ifindex == ifindex);
                    !(through && r.paths.iter().all(|p| dead(p.ifindex)))
                });
            }
            !routes.is_empty()
        });
    }

    fn compute_member_tables(&self) -> HashMap<u32, u32> {
        self.vrfs()
            .into_iter()
            .flat_map(|v| v.members.into_iter().map(move |m| (m, v.table)))
            .collect()
    }

    fn vrf_tables(&self) -> BTreeSet<u32> {
        self.vrfs().into_iter().map(|v| v.table).collect()
    }

    /// Every VRF: kernel VRF devices with their enslaved members, then the declared ones.
    pub fn vrfs(&self) -> Vec<VrfView> {
        let mut out = Vec::new();
        let mut devices: Vec<&LinkInfo> = self
            .links
            .values()
            .filter(|l| l.kind.as_deref() == Some("vrf") && l.vrf_table.is_some())
            .collect();
        devices.sort_by(|a, b| a.name.cmp(&b.name));
        for dev in devices {
            let members = self
                .links
                .values()
                .filter(|l| l.master == Some(dev.ifindex))
                .map(|l| l.ifindex)
                .collect();
            out.push(VrfView {
                name: dev.name.clone(),
                table: dev.vrf_table.unwrap_or_default(),
                device: Some(dev.ifindex),
                members,
                missing: Vec::new(),
                degraded: None,
            });
        }
        for d in &self.declared {
            let mut members = BTreeSet::new();
            let mut missing = Vec::new();
            for name in &d.interfaces {
                match self.links.values().find(|l| &l.name == name) {
                    Some(l) => {
                        members.insert(l.ifindex);
                    }
                    None => missing.push(name.clone()),
                }
            }
            out.push(VrfView {
                name: d.name.clone(),
                table: d.table,
                device: None,
                members,
                missing,
                degraded: None,
            });
        }
        for v in &mut out {
            v.degraded = self.rule_conflict(v);
        }
        out
    }

    /// A rule ahead of the VRF's own that could send member traffic elsewhere makes the fast
    /// path's answer unreliable: such a VRF is left to the kernel.
    fn rule_conflict(&self, vrf: &VrfView) -> Option<String> {
        if let Some(missing) = self.missing_rule(vrf) {
            return Some(missing);
        }
        let own_priority = match vrf.device {
            Some(_) => self
                .rules
                .iter()
                .filter(|r| r.l3mdev)
                .map(|r| r.priority)
                .min(),
            None => self
                .declared
                .iter()
                .find(|d| d.name == vrf.name)
                .map(|d| d.rule_priority),
        }?;
        let member_names: BTreeSet<&str> = vrf
            .members
            .iter()
            .filter_map(|i| self.links.get(i))
            .map(|l| l.name.as_str())
            .collect();
        self.rules
            .iter()
            .filter(|r| r.priority < own_priority && !r.l3mdev)
            // Rule 0 "lookup local" is mirrored into every VRF's FIB.
            .filter(|r| {
                !(r.table == LOCAL_TABLE
                    && r.action == 1
                    && !r.has_other_selectors
                    && r.iif.is_none())
            })
            // oif rules match only locally generated traffic.
            .filter(|r| r.oif.is_none())
            .filter(|r| r.iif.as_deref().is_none_or(|i| member_names.contains(i)))
            .map(|r| {
                format!(
                    "ip rule priority {} (table {}) comes before the VRF's rule",
                    r.priority, r.table
                )
            })
            .next()
    }

    /// The rules that send a VRF's traffic to its table must be there: without them the kernel
    /// looks members' packets up elsewhere (seen: `ip rule del` behind vrfd's back).
    fn missing_rule(&self, vrf: &VrfView) -> Option<String> {
        const FAMILIES: [(u8, &str); 2] = [(2, "-4"), (10, "-6")];
        match vrf.device {
            Some(_) => FAMILIES
                .iter()
                .find(|(af, _)| !self.rules.iter().any(|r| r.family == *af && r.l3mdev))
                .map(|(_, f)| format!("no `ip {f} rule ... lookup l3mdev` rule")),
            None => {
                let d = self.declared.iter().find(|d| d.name == vrf.name)?;
                vrf.members
                    .iter()
                    .filter_map(|i| self.links.get(i))
                    .find_map(|l| {
                        FAMILIES.iter().find_map(|(af, f)| {
                            let present = self.rules.iter().any(|r| {
                                r.family == *af
                                    && r.iif.as_deref() == Some(l.name.as_str())
                                    && r.table == d.table
                                    && r.action == 1
                                    && !r.has_other_selectors
                            });
                            (!present).then(|| {
                                format!(
                                    "`ip {f} rule iif {} lookup {}` is missing",
                                    l.name, d.table
                                )
                            })
                        })
                    })
            }
        }
    }

    /// The links the data plane must know: members, the egress links their routes use, and VRF
    /// devices (a path through one means "look up in that VRF"). `slot_of` gives VRF slots.
    pub fn desired_links(
        &self,
        vrfs: &[VrfView],
        slot_of: &dyn Fn(&str) -> Option<u32>,
    ) -> BTreeMap<u32, Link> {
        let mut out = BTreeMap::new();
        let mut vrf_of_member = HashMap::new();
        for v in vrfs {
            let Some(slot) = slot_of(&v.name) else {
                continue;
            };
            for m in &v.members {
                vrf_of_member.insert(*m, slot);
            }
            if let Some(dev) = v.device {
                if let Some(l) = self.links.get(&dev) {
                    let mut link = self.link_entry(l, slot);
                    link.flags = LINK_VRF_DEVICE | (link.flags & LINK_UP);
                    out.insert(dev, link);
                }
            }
        }
        // Egress-only links: any interface a served route leaves through.
        for routes in self.routes.values() {
            for r in routes {
                for p in &r.paths {
                    if out.contains_key(&p.ifindex) || vrf_of_member.contains_key(&p.ifindex) {
                        continue;
                    }
                    if let Some(l) = self.links.get(&p.ifindex) {
                        if l.mac.is_some() {
                            let mut link = self.link_entry(l, u32::MAX);
                            link.flags &= LINK_UP;
                            out.insert(p.ifindex, link);
                        }
                    }
                }
            }
        }
        for (ifindex, slot) in vrf_of_member {
            if let Some(l) = self.links.get(&ifindex) {
                if l.mac.is_some() {
                    out.insert(ifindex, self.link_entry(l, slot));
                }
            }
        }
        out
    }

    fn link_entry(&self, l: &LinkInfo, vrf: u32) -> Link {
        let s = (self.sysctl)(&l.name);
        let mut flags = LINK_MEMBER;
        if l.up {
            flags |= LINK_UP;
        }
        if s.forwarding4 {
            flags |= LINK_FWD4;
        }
        if s.forwarding6 {
            flags |= LINK_FWD6;
        }
        flags |= match s.rp_filter {
            0 => 0,
            1 => LINK_RPF_STRICT,
            _ => LINK_RPF_LOOSE,
        };
        Link {
            vrf,
            stats_slot: 0,
            mtu: l.mtu,
            mac: l.mac.unwrap_or_default(),
            flags,
        }
    }

    /// Every FIB entry the served tables need.
    pub fn desired_routes(&self) -> HashMap<(u32, IpNet), RouteEntry> {
        let mut keys: BTreeSet<(u32, IpNet)> = BTreeSet::new();
        let local: Vec<IpNet> = self
            .routes
            .keys()
            .filter(|(t, _)| *t == LOCAL_TABLE)
            .map(|(_, p)| *p)
            .collect();
        for table in &self.tables {
            for p in &local {
                keys.insert((*table, *p));
            }
        }
        for (t, p) in self.routes.keys() {
            if *t != LOCAL_TABLE {
                keys.insert((*t, *p));
            }
        }
        keys.into_iter()
            .filter_map(|(t, p)| self.desired_route(t, p).map(|e| ((t, p), e)))
            .collect()
    }

    /// What the FIB of `table` should say for exactly `prefix`: the local table first (rule 0),
    /// including a local prefix covering this one, then the table's own best route.
    pub fn desired_route(&self, table: u32, prefix: IpNet) -> Option<RouteEntry> {
        if !self.tables.contains(&table) {
            return None;
        }
        if let Some(local) = self.routes.get(&(LOCAL_TABLE, prefix)) {
            if let Some(e) = self.entry_of(local) {
                return Some(e);
            }
        }
        if let Some(cover) = self.local_cover(prefix) {
            if self.routes.contains_key(&(table, prefix)) {
                return Some(cover);
            }
        }
        self.entry_of(self.routes.get(&(table, prefix))?)
    }

    /// A non-host local-table route strictly containing `prefix`.
    fn local_cover(&self, prefix: IpNet) -> Option<RouteEntry> {
        // Only the few non-host local-table prefixes are scanned: scanning the whole mirror here
        // made a full sync quadratic (a 1M-route table took tens of minutes).
        self.local_nets
            .iter()
            .filter(|p| **p != prefix && p.contains(&prefix))
            .max_by_key(|p| p.prefix_len())
            .and_then(|p| self.routes.get(&(LOCAL_TABLE, *p)))
            .and_then(|rs| self.entry_of(rs))
    }

    /// Non-host prefixes of the local table (127.0.0.0/8, AnyIP ranges): few.
    fn compute_local_nets(&self) -> BTreeSet<IpNet> {
        self.routes
            .keys()
            .filter(|(t, p)| *t == LOCAL_TABLE && !is_host(*p))
            .map(|(_, p)| *p)
            .collect()
    }

    /// The data plane's entry for the routes of one (table, prefix), as the kernel would choose
    /// among them; None when the kernel would look further (every path dead).
    fn entry_of(&self, routes: &[RouteInfo]) -> Option<RouteEntry> {
        let unsupported = RouteEntry {
            kind: KIND_UNSUPPORTED,
            mtu: 0,
            paths: Vec::new(),
        };
        // TOS-specific routes make the answer depend on a field the data plane does not match.
        if routes.iter().any(|r| r.tos != 0) {
            return Some(unsupported);
        }
        let best = routes.iter().min_by_key(|r| r.metric)?;
        if best.unsupported.is_some() || best.nexthop_id.is_some() {
            return Some(unsupported);
        }
        let mtu = best.mtu.map_or(0, |m| m.min(u16::MAX as u32) as u16);
        if best.kind != RouteKind::Unicast as u16 {
            return Some(RouteEntry {
                kind: best.kind,
                mtu,
                paths: Vec::new(),
            });
        }
        let live: Vec<Nexthop> = best
            .paths
            .iter()
            .filter(|p| {
                !p.dead
                    && self
                        .links
                        .get(&p.ifindex)
                        .is_some_and(|l| l.up || is_vrf(l))
            })
            .map(|p| nexthop(p.ifindex, p.gateway))
            .collect();
        if live.is_empty() {
            // Dead paths: the kernel would skip this route; what it falls back to is for it to
            // say, so the prefix stays with it.
            return Some(unsupported);
        }
        // The kernel validates the source in the table of the path *it* picks: when paths lead
        // into different VRFs, our pick could be checked against the wrong table.
        let path_tables: BTreeSet<Option<u32>> = live
            .iter()
            .map(|p| self.member_tables.get(&p.ifindex).copied())
            .collect();
        if path_tables.len() > 1 {
            return Some(unsupported);
        }
        if live.len() > MAX_PATHS || best.paths.iter().any(|p| p.weight != best.paths[0].weight) {
            // Unequal weights would need the kernel's hash-threshold split.
            return Some(unsupported);
        }
        Some(RouteEntry {
            kind: best.kind,
            mtu,
            paths: live,
        })
    }

    /// Usable neighbours on the given links, by (ifindex, address).
    pub fn desired_neighbours(
        &self,
        links: &BTreeMap<u32, Link>,
    ) -> HashMap<(u32, IpAddr), [u8; 6]> {
        self.neighbours
            .iter()
            .filter(|((i, _), n)| links.contains_key(i) && n.usable())
            .filter_map(|(k, n)| n.mac.map(|m| (*k, m)))
            .collect()
    }

    pub fn desired_neighbour(&self, ifindex: u32, addr: IpAddr) -> Option<[u8; 6]> {
        self.neighbours
            .get(&(ifindex, addr))
            .filter(|n| n.usable())
            .and_then(|n| n.mac)
    }

    pub fn link(&self, ifindex: u32) -> Option<&LinkInfo> {
        self.links.get(&ifindex)
    }

    pub fn link_by_name(&self, name: &str) -> Option<&LinkInfo> {
        self.links.values().find(|l| l.name == name)
    }

    pub fn served_tables(&self) -> &BTreeSet<u32> {
        &self.tables
    }
}

fn is_vrf(l: &LinkInfo) -> bool {
    l.kind.as_deref() == Some("vrf")
}

fn is_host(p: IpNet) -> bool {
    p.prefix_len() == p.max_prefix_len()
}

/// The real sysctls of a link, from /proc/sys of the calling thread's network namespace.
pub fn read_sysctls(name: &str) -> LinkSysctl {
    let read =
        |path: String| -> Option<u8> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let rp = read(format!("/proc/sys/net/ipv4/conf/{name}/rp_filter")).unwrap_or(0);
    let rp_all = read("/proc/sys/net/ipv4/conf/all/rp_filter".to_string()).unwrap_or(0);
    LinkSysctl {
        forwarding4: read(format!("/proc/sys/net/ipv4/conf/{name}/forwarding")) == Some(1),
        // ip6_forward checks all.forwarding (or the ingress link's force_forwarding, 6.17+),
        // never the link's own forwarding flag.
        forwarding6: read("/proc/sys/net/ipv6/conf/all/forwarding".to_string()) == Some(1)
            || read(format!("/proc/sys/net/ipv6/conf/{name}/force_forwarding")) == Some(1),
        rp_filter: rp.max(rp_all),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PathInfo;

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
            kind: kind as u16,
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
            for family in [2, 10] {
                out.push(RuleInfo {
                    family,
                    priority: 1000,
                    table: 110,
                    action: 1,
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
        };
        let mut e = Engine::new(
            vec![red],
            Box::new(|_| LinkSysctl {
                forwarding4: true,
                forwarding6: true,
                rp_filter: 0,
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
        assert_eq!(e.served_tables(), &BTreeSet::from([110]));
        // The main table's route is not mirrored.
        assert!(e
            .desired_route(254, "10.0.1.0/24".parse().unwrap())
            .is_none());
    }

    #[test]
    fn local_table_routes_are_overlaid_into_every_vrf() {
        let e = engine();
        let all = e.desired_routes();
        let local = &all[&(110, "10.0.1.1/32".parse().unwrap())];
        assert_eq!(local.kind, RouteKind::Local as u16);
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
            .desired_route(110, "10.0.1.0/24".parse().unwrap())
            .unwrap();
        assert_eq!(r.kind, RouteKind::Local as u16);
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
            e.desired_route(110, "10.9.0.0/16".parse().unwrap())
                .unwrap()
                .kind,
            RouteKind::Blackhole as u16
        );
        let mut tos = route(110, "10.9.0.0/16", RouteKind::Unicast, &[(3, None)]);
        tos.tos = 0x10;
        e.apply(KernelEvent::NewRoute(tos));
        assert_eq!(
            e.desired_route(110, "10.9.0.0/16".parse().unwrap())
                .unwrap()
                .kind,
            KIND_UNSUPPORTED
        );
    }

    #[test]
    fn link_down_evicts_single_path_ipv4_routes_and_drops_dead_paths() {
        let mut e = engine();
        let mut down = link(3, "r2");
        down.up = false;
        let dirty = e.apply(KernelEvent::NewLink(down));
        assert!(dirty.links);
        let default = e.desired_route(110, "0.0.0.0/0".parse().unwrap()).unwrap();
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
        assert_eq!(e.desired_route(110, p).unwrap().paths.len(), 2);
        let dirty = e.apply(KernelEvent::DelRoute(route(
            110,
            "0.0.0.0/0",
            RouteKind::Unicast,
            &[],
        )));
        assert!(dirty.routes.contains(&(110, p)));
        assert!(e.desired_route(110, p).is_none());
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
        let left = e.desired_route(110, one.prefix).unwrap();
        assert_eq!(left.paths.len(), 1);
        assert_eq!(left.paths[0].ifindex, 2);
        e.apply(KernelEvent::DelRoute(route(
            110,
            "fd00:9::/64",
            RouteKind::Unicast,
            &[(2, Some("fe80::1"))],
        )));
        assert!(e.desired_route(110, one.prefix).is_none());
    }

    #[test]
    fn losing_an_ipv4_address_asks_for_a_resync() {
        let mut e = engine();
        let a = crate::model::AddrInfo {
            ifindex: 2,
            addr: "10.0.1.1".parse().unwrap(),
            prefix_len: 24,
        };
        assert!(e.apply(KernelEvent::DelAddr(a)).resync);
    }

    #[test]
    fn a_rule_ahead_of_the_vrf_rule_degrades_the_vrf() {
        let mut e = engine();
        e.set_rules(
            red_rules()
                .into_iter()
                .chain([RuleInfo {
                    family: 2,
                    priority: 500,
                    table: 300,
                    action: 1,
                    iif: None,
                    oif: None,
                    l3mdev: false,
                    has_other_selectors: true,
                }])
                .collect(),
        );
        assert!(e.vrfs()[0]
            .degraded
            .as_deref()
            .unwrap()
            .contains("priority 500"));
    }

    #[test]
    fn a_vrf_whose_member_rule_is_missing_is_degraded() {
        let mut e = engine();
        assert_eq!(e.vrfs()[0].degraded, None);
        let mut rules = red_rules();
        rules.retain(|r| !(r.iif.as_deref() == Some("r2") && r.family == 10));
        e.set_rules(rules);
        let why = e.vrfs()[0].degraded.clone().unwrap();
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
            e.desired_route(110, p).is_some(),
            "one path left: the kernel keeps the route"
        );
        let mut down3 = link(3, "r2");
        down3.admin_up = false;
        down3.up = false;
        e.apply(KernelEvent::NewLink(down3));
        assert!(
            e.desired_route(110, p).is_none(),
            "every path dead: the kernel deleted it"
        );
        e.apply(KernelEvent::NewLink(link(2, "r1")));
        assert!(
            e.desired_route(110, p).is_none(),
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
        let r = e
            .desired_route(110, "10.0.1.0/24".parse().unwrap())
            .unwrap();
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
            e.desired_route(110, p).unwrap().paths[0].ifindex,
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
            e.desired_route(110, p).unwrap().paths[0].ifindex,
            3,
            "a replace takes over"
        );
    }

    #[test]
    fn members_and_egress_links_get_their_flags() {
        let e = engine();
        let vrfs = e.vrfs();
        let links = e.desired_links(&vrfs, &|n| (n == "red").then_some(0));
        assert_eq!(links[&2].flags & LINK_MEMBER, LINK_MEMBER);
        assert_eq!(
            links[&2].flags & (LINK_UP | LINK_FWD4 | LINK_FWD6),
            LINK_UP | LINK_FWD4 | LINK_FWD6
        );
        assert!(
            !links.contains_key(&4),
            "a link no served route uses is not needed"
        );
    }
}
