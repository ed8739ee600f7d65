//! The mirror: vrfd's copy of the kernel objects that matter to the VRFs (links, rules,
//! neighbours, the routes of served tables and of the local table), kept as the kernel keeps
//! its own. Kernel events go in; what they touched comes out as [`Dirty`].
use std::{
    cell::RefCell,
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;

use crate::model::{
    KernelEvent, KernelSnapshot, LinkInfo, NeighInfo, NexthopInfo, NexthopKind, RouteInfo, RuleInfo,
};

/// The kernel's local table: rule 0 consults it before any VRF rule.
pub const LOCAL_TABLE: u32 = 255;

/// What an event changed, so that only that is planned again.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Links, VRFs or memberships changed (or a covering local prefix): the whole plan.
    pub links: bool,
    /// The mirror may lack a table, or missed changes: dump everything again.
    pub resync: bool,
    /// Rules changed: re-read them (a rules dump), then plan again.
    pub rules: bool,
    pub routes: BTreeSet<(u32, IpNet)>,
    pub neighbours: BTreeSet<(u32, IpAddr)>,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        !self.links
            && !self.resync
            && !self.rules
            && self.routes.is_empty()
            && self.neighbours.is_empty()
    }

    pub fn merge(&mut self, more: Dirty) {
        self.links |= more.links;
        self.resync |= more.resync;
        self.rules |= more.rules;
        self.routes.extend(more.routes);
        self.neighbours.extend(more.neighbours);
    }
}

#[derive(Default)]
pub struct Mirror {
    links: HashMap<u32, LinkInfo>,
    /// Routes of served tables and of the local table, by (table, prefix), in kernel order.
    routes: HashMap<(u32, IpNet), Vec<RouteInfo>>,
    neighbours: HashMap<(u32, IpAddr), NeighInfo>,
    rules: Vec<RuleInfo>,
    /// Tables served when the mirror was filled (routes of others are not kept).
    tables: BTreeSet<u32>,
    /// Non-host prefixes of the local table (127.0.0.0/8, AnyIP ranges): few.
    local_nets: BTreeSet<IpNet>,
    /// Nexthop objects by id (every one: a route may name any).
    nexthops: HashMap<u32, NexthopInfo>,
    /// Nexthop id → the (table, prefix) keys holding a route that names it (RTA_NH_ID), so a
    /// nexthop change moves exactly its routes.
    nh_routes: HashMap<u32, BTreeSet<(u32, IpNet)>>,
    /// Paths of mirrored routes per egress ifindex, kept as route events come and go so that
    /// planning the links (every sysctl poll) is proportional to the links, not the routes;
    /// `None` after an event that changes routes wholesale (a link or nexthop going away):
    /// the next [`route_oifs`](Mirror::route_oifs) counts them again, once.
    route_oifs: RefCell<Option<HashMap<u32, u32>>>,
}

impl Mirror {
    /// A mirror of a dump's links, rules and neighbours; its routes follow in
    /// [`Mirror::load_routes`] once the served tables are known (they depend on the links).
    pub fn new(snap: &mut KernelSnapshot) -> Self {
        Mirror {
            links: snap.links.drain(..).map(|l| (l.ifindex, l)).collect(),
            neighbours: snap
                .neighbours
                .drain(..)
                .map(|n| ((n.ifindex, n.addr), n))
                .collect(),
            rules: std::mem::take(&mut snap.rules),
            nexthops: snap.nexthops.drain(..).map(|n| (n.id, n)).collect(),
            ..Default::default()
        }
    }

    /// Keep the routes of `tables` (and of the local table) from a dump.
    pub fn load_routes(&mut self, tables: BTreeSet<u32>, routes: Vec<RouteInfo>) {
        self.tables = tables;
        self.routes.clear();
        for r in routes {
            if self.keeps_table(r.table) {
                self.routes.entry((r.table, r.prefix)).or_default().push(r);
            }
        }
        self.local_nets = self.compute_local_nets();
        self.reindex_nexthop_routes();
        *self.route_oifs.get_mut() = None;
    }

    /// Replace the rules with a fresh rules dump.
    pub fn load_rules(&mut self, rules: Vec<RuleInfo>) {
        self.rules = rules;
    }

    fn keeps_table(&self, table: u32) -> bool {
        table == LOCAL_TABLE || self.tables.contains(&table)
    }

    /// Apply one kernel event as the kernel applied it, and say what it touched.
    pub fn apply(&mut self, event: KernelEvent) -> Dirty {
        // A route event changes the routes at its own key only: count their paths before and
        // after. Events that may drop routes elsewhere (a link down or gone, a nexthop gone)
        // leave the count to be taken again.
        let key = match &event {
            KernelEvent::NewRoute(r)
            | KernelEvent::AppendRoute(r)
            | KernelEvent::PrependRoute(r)
            | KernelEvent::DelRoute(r) => Some((r.table, r.prefix)),
            _ => None,
        };
        let wholesale = match &event {
            // Evicts routes and flushes nexthops of a link that goes (admin) down.
            KernelEvent::NewLink(l) => self
                .link(l.ifindex)
                .is_some_and(|o| o.admin_up && (!l.admin_up || (o.up && !l.up))),
            KernelEvent::DelLink(_) | KernelEvent::DelNexthop(_) => true,
            _ => false,
        };
        let before = key.map(|(t, p)| self.oifs_at(t, p)).unwrap_or_default();
        let dirty = self.change(event);
        if wholesale {
            *self.route_oifs.get_mut() = None;
        } else if let Some((t, p)) = key.filter(|_| self.route_oifs.get_mut().is_some()) {
            let after = self.oifs_at(t, p);
            if let Some(counts) = self.route_oifs.get_mut() {
                for i in before {
                    if let Some(n) = counts.get_mut(&i) {
                        *n -= 1;
                        if *n == 0 {
                            counts.remove(&i);
                        }
                    }
                }
                for i in after {
                    *counts.entry(i).or_default() += 1;
                }
            }
        }
        dirty
    }

    /// The event itself, as [`apply`](Mirror::apply) describes it.
    fn change(&mut self, event: KernelEvent) -> Dirty {
        let mut dirty = Dirty::default();
        match event {
            KernelEvent::NewLink(link) => {
                let old = self.links.insert(link.ifindex, link.clone());
                let was_up = old.as_ref().is_some_and(|o| o.admin_up);
                if was_up && !link.admin_up {
                    self.evict_routes_via(link.ifindex);
                }
                // The kernel flushes a link's nexthops (and so their routes) when it goes down
                // or loses its carrier, without a notification (nh_netdev_event).
                let had_carrier = old.as_ref().is_some_and(|o| o.admin_up && o.up);
                if had_carrier && !(link.admin_up && link.up) {
                    self.flush_nexthops_via(&mut dirty, link.ifindex);
                }
                if old.as_ref() != Some(&link) {
                    dirty.links = true;
                }
            }
            KernelEvent::DelLink(ifindex) => {
                if self.links.remove(&ifindex).is_some() {
                    self.evict_routes_via(ifindex);
                    self.flush_nexthops_via(&mut dirty, ifindex);
                    self.neighbours.retain(|(i, _), _| *i != ifindex);
                    dirty.links = true;
                }
            }
            KernelEvent::NewRoute(route) => {
                if self.keeps_table(route.table) {
                    let key = (route.table, route.prefix);
                    let before = self.nexthop_ids_at(key);
                    self.mark_route(&mut dirty, route.table, route.prefix);
                    let entry = self.routes.entry(key).or_default();
                    // An add (nothing of this id exists) or a replace: the kernel replaces the
                    // first route of this id (IPv4 alias, IPv6 route with its siblings) only.
                    match entry.iter().position(|r| r.id() == route.id()) {
                        Some(i) => entry[i] = route,
                        None => entry.push(route),
                    }
                    self.index_nexthops_at(key, before);
                }
            }
            KernelEvent::PrependRoute(route) if route.prefix.addr().is_ipv4() => {
                if self.keeps_table(route.table) {
                    let key = (route.table, route.prefix);
                    let before = self.nexthop_ids_at(key);
                    self.mark_route(&mut dirty, route.table, route.prefix);
                    let entry = self.routes.entry(key).or_default();
                    // Ahead of its aliases: the new route is the one in use.
                    let at = entry
                        .iter()
                        .position(|r| r.id() == route.id())
                        .unwrap_or(entry.len());
                    entry.insert(at, route);
                    self.index_nexthops_at(key, before);
                }
            }
            KernelEvent::AppendRoute(route) | KernelEvent::PrependRoute(route) => {
                if self.keeps_table(route.table) {
                    let key = (route.table, route.prefix);
                    let before = self.nexthop_ids_at(key);
                    self.mark_route(&mut dirty, route.table, route.prefix);
                    let entry = self.routes.entry((route.table, route.prefix)).or_default();
                    if route.prefix.addr().is_ipv6() {
                        // An ECMP sibling is announced as the whole route (every path, the old
                        // ones included); anything else (a dev-only route, another type) is a
                        // route of its own at the same metric, after the others.
                        let sibling_of = entry.iter().position(|r| {
                            r.id() == route.id()
                                && r.kind == route.kind
                                && r.paths.iter().all(|p| {
                                    route
                                        .paths
                                        .iter()
                                        .any(|n| n.ifindex == p.ifindex && n.gateway == p.gateway)
                                })
                        });
                        match sibling_of {
                            Some(i) => entry[i] = route,
                            None => entry.push(route),
                        }
                    } else {
                        // IPv4 keeps its aliases ahead of the appended one: the first of equal
                        // metrics wins when planning, as in the kernel.
                        entry.push(route);
                    }
                    self.index_nexthops_at(key, before);
                }
            }
            KernelEvent::DelRoute(route) => {
                let key = (route.table, route.prefix);
                let before = self.nexthop_ids_at(key);
                if let Some(entry) = self.routes.get_mut(&key) {
                    if route.prefix.addr().is_ipv6() && !route.paths.is_empty() {
                        // `ip -6 route del P via G` reports only the deleted paths of a
                        // multipath route; a full delete lists them all. Only routes of the
                        // deleted type lose them.
                        let gone = |p: &crate::model::PathInfo| {
                            route
                                .paths
                                .iter()
                                .any(|d| d.ifindex == p.ifindex && d.gateway == p.gateway)
                        };
                        let hit = entry.iter().position(|r| {
                            r.id() == route.id() && r.kind == route.kind && r.paths.iter().any(gone)
                        });
                        match hit {
                            Some(i) => {
                                entry[i].paths.retain(|p| !gone(p));
                                if entry[i].paths.is_empty() {
                                    entry.remove(i);
                                }
                            }
                            None if !entry.iter().any(|r| r.id() == route.id()) => {}
                            None => dirty.resync = true,
                        }
                    } else {
                        // The notification describes the one route (IPv4 alias) the kernel
                        // deleted: its siblings stay.
                        let exact = entry.iter().position(|r| r.same_route(&route));
                        // Without paths (a delete that names none): the first alias of its type,
                        // the one the kernel's fib_table_delete picks.
                        let first = || {
                            route.paths.is_empty().then(|| {
                                entry
                                    .iter()
                                    .position(|r| r.id() == route.id() && r.kind == route.kind)
                            })?
                        };
                        match exact.or_else(first) {
                            Some(i) => {
                                entry.remove(i);
                            }
                            // Already gone here (a link that went down): nothing to do.
                            None if !entry.iter().any(|r| r.id() == route.id()) => {}
                            // Not a route we hold: only a dump says which alias the kernel kept.
                            None => dirty.resync = true,
                        }
                    }
                    if entry.is_empty() {
                        self.routes.remove(&(route.table, route.prefix));
                    }
                    self.mark_route(&mut dirty, route.table, route.prefix);
                }
                self.index_nexthops_at(key, before);
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
            KernelEvent::RulesChanged => dirty.rules = true,
            KernelEvent::NewNexthop(nh) => {
                let id = nh.id;
                self.nexthops.insert(id, nh);
                // Replaced in place: every route naming it, or a group holding it, moves now
                // (with nexthop_compat_mode 0 the kernel sends no route messages for this).
                self.mark_nexthop_routes(&mut dirty, id);
            }
            KernelEvent::DelNexthop(id) => self.remove_nexthop(&mut dirty, id),
            KernelEvent::Overrun(_) => dirty.resync = true,
        }
        if dirty.links {
            // A non-host local-table route changed (mark_route), or links did.
            self.local_nets = self.compute_local_nets();
        }
        dirty
    }

    /// A route of the local table applies to every VRF (rule 0 comes first).
    fn mark_route(&self, dirty: &mut Dirty, table: u32, prefix: IpNet) {
        if table == LOCAL_TABLE {
            if is_host(prefix) {
                for t in &self.tables {
                    dirty.routes.insert((*t, prefix));
                }
            } else {
                // A covering local prefix changes every route inside it: plan everything.
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
        self.reindex_nexthop_routes();
    }

    /// The nexthop ids routes at `key` name.
    fn nexthop_ids_at(&self, key: (u32, IpNet)) -> BTreeSet<u32> {
        self.routes
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|r| r.nexthop_id)
            .collect()
    }

    /// Bring the nexthop index up to date for `key`, whose routes named `before`.
    fn index_nexthops_at(&mut self, key: (u32, IpNet), before: BTreeSet<u32>) {
        let after = self.nexthop_ids_at(key);
        for id in before.difference(&after) {
            if let Some(keys) = self.nh_routes.get_mut(id) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.nh_routes.remove(id);
                }
            }
        }
        for id in after.difference(&before) {
            self.nh_routes.entry(*id).or_default().insert(key);
        }
    }

    fn reindex_nexthop_routes(&mut self) {
        self.nh_routes.clear();
        for (key, routes) in &self.routes {
            for id in routes.iter().filter_map(|r| r.nexthop_id) {
                self.nh_routes.entry(id).or_default().insert(*key);
            }
        }
    }

    /// The groups that hold nexthop `id` as a member.
    fn groups_with(&self, id: u32) -> Vec<u32> {
        self.nexthops
            .values()
            .filter(|n| matches!(&n.kind, NexthopKind::Group { members, .. } if members.iter().any(|(m, _)| *m == id)))
            .map(|n| n.id)
            .collect()
    }

    /// Mark every route naming `id`, directly or through a group holding it.
    fn mark_nexthop_routes(&self, dirty: &mut Dirty, id: u32) {
        for nh in std::iter::once(id).chain(self.groups_with(id)) {
            for (table, prefix) in self.nh_routes.get(&nh).into_iter().flatten() {
                self.mark_route(dirty, *table, *prefix);
            }
        }
    }

    /// Nexthop `id` is gone: as in the kernel, its routes go with it, groups lose it as a
    /// member, and a group left empty goes too (with its routes), all without notifications.
    fn remove_nexthop(&mut self, dirty: &mut Dirty, id: u32) {
        if self.nexthops.remove(&id).is_none() {
            return;
        }
        for key in self.nh_routes.remove(&id).unwrap_or_default() {
            if let Some(routes) = self.routes.get_mut(&key) {
                routes.retain(|r| r.nexthop_id != Some(id));
                if routes.is_empty() {
                    self.routes.remove(&key);
                }
            }
            self.mark_route(dirty, key.0, key.1);
        }
        let mut emptied = Vec::new();
        for nh in self.nexthops.values_mut() {
            if let NexthopKind::Group { members, .. } = &mut nh.kind {
                let before = members.len();
                members.retain(|(m, _)| *m != id);
                if members.len() != before {
                    if members.is_empty() {
                        emptied.push(nh.id);
                    } else {
                        for (table, prefix) in self.nh_routes.get(&nh.id).into_iter().flatten() {
                            dirty.routes.insert((*table, *prefix));
                        }
                    }
                }
            }
        }
        for group in emptied {
            self.remove_nexthop(dirty, group);
        }
    }

    /// The kernel removes the nexthops out of a link that goes down or away.
    fn flush_nexthops_via(&mut self, dirty: &mut Dirty, ifindex: u32) {
        let via: Vec<u32> = self
            .nexthops
            .values()
            .filter(|n| matches!(n.kind, NexthopKind::Single { oif, .. } if oif == ifindex))
            .map(|n| n.id)
            .collect();
        for id in via {
            self.remove_nexthop(dirty, id);
        }
    }

    /// The egress ifindex of every path of the routes mirrored at (table, prefix).
    fn oifs_at(&self, table: u32, prefix: IpNet) -> Vec<u32> {
        self.routes_at(table, prefix)
            .into_iter()
            .flatten()
            .flat_map(|r| r.paths.iter().map(|p| p.ifindex))
            .collect()
    }

    /// Paths per egress ifindex over every mirrored route (after a load or a wholesale change).
    pub(crate) fn count_route_oifs(&self) -> HashMap<u32, u32> {
        let mut counts = HashMap::new();
        for p in self.routes().flat_map(|r| r.paths.iter()) {
            *counts.entry(p.ifindex).or_default() += 1;
        }
        counts
    }

    fn compute_local_nets(&self) -> BTreeSet<IpNet> {
        self.routes
            .keys()
            .filter(|(t, p)| *t == LOCAL_TABLE && !is_host(*p))
            .map(|(_, p)| *p)
            .collect()
    }

    // Reads.

    pub fn link(&self, ifindex: u32) -> Option<&LinkInfo> {
        self.links.get(&ifindex)
    }

    pub fn link_by_name(&self, name: &str) -> Option<&LinkInfo> {
        self.links.values().find(|l| l.name == name)
    }

    pub fn links(&self) -> impl Iterator<Item = &LinkInfo> {
        self.links.values()
    }

    pub fn rules(&self) -> &[RuleInfo] {
        &self.rules
    }

    /// The tables whose routes the mirror holds (besides the local table).
    pub fn tables(&self) -> &BTreeSet<u32> {
        &self.tables
    }

    /// The routes of exactly (table, prefix), in the kernel's order.
    pub fn routes_at(&self, table: u32, prefix: IpNet) -> Option<&[RouteInfo]> {
        self.routes.get(&(table, prefix)).map(Vec::as_slice)
    }

    /// Every (table, prefix) the mirror holds routes for.
    pub fn route_keys(&self) -> impl Iterator<Item = &(u32, IpNet)> {
        self.routes.keys()
    }

    pub fn routes(&self) -> impl Iterator<Item = &RouteInfo> {
        self.routes.values().flatten()
    }

    /// The non-host local-table prefix most specifically containing `prefix` (not itself).
    pub fn local_cover(&self, prefix: IpNet) -> Option<&[RouteInfo]> {
        // Only the few non-host local-table prefixes are scanned: scanning the whole mirror here
        // made a full sync quadratic (a 1M-route table took tens of minutes).
        self.local_nets
            .iter()
            .filter(|p| **p != prefix && p.contains(&prefix))
            .max_by_key(|p| p.prefix_len())
            .and_then(|p| self.routes_at(LOCAL_TABLE, *p))
    }

    /// The egress ifindexes the mirrored routes' paths leave through.
    pub fn route_oifs(&self) -> Vec<u32> {
        self.route_oifs
            .borrow_mut()
            .get_or_insert_with(|| self.count_route_oifs())
            .keys()
            .copied()
            .collect()
    }

    /// The count of paths per egress ifindex as kept between events (`None`: to be taken).
    #[cfg(test)]
    pub(crate) fn kept_route_oifs(&self) -> Option<HashMap<u32, u32>> {
        self.route_oifs.borrow().clone()
    }

    pub fn nexthop(&self, id: u32) -> Option<&NexthopInfo> {
        self.nexthops.get(&id)
    }

    pub fn nexthops(&self) -> impl Iterator<Item = &NexthopInfo> {
        self.nexthops.values()
    }

    pub fn neighbour(&self, ifindex: u32, addr: IpAddr) -> Option<&NeighInfo> {
        self.neighbours.get(&(ifindex, addr))
    }

    pub fn neighbours(&self) -> impl Iterator<Item = &NeighInfo> {
        self.neighbours.values()
    }
}

pub fn is_host(p: IpNet) -> bool {
    p.prefix_len() == p.max_prefix_len()
}

/// Per-link sysctls that change the kernel's forwarding decision, as the plan uses them (from
/// [`crate::sysctl`], which reads and follows them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkSysctl {
    pub forwarding4: bool,
    pub forwarding6: bool,
    /// max(all, link) of net.ipv4.conf.*.rp_filter: 0 off, 1 strict, 2 loose.
    pub rp_filter: u8,
    /// rx-vlan-offload (ethtool): the driver may strip VLAN tags before XDP sees the frame.
    /// Not a sysctl, but like them it sends no event and is read with them.
    pub rx_vlan_offload: bool,
    /// `disable_ipv6` (link or all): IPv6 neither in nor out of this link.
    pub disable_ipv6: bool,
    /// `net.ipv6.conf.<if>.mtu`; 0 when unknown (the link MTU then applies).
    pub mtu6: u32,
}

impl From<&crate::sysctl::LinkSysctls> for LinkSysctl {
    fn from(s: &crate::sysctl::LinkSysctls) -> Self {
        LinkSysctl {
            forwarding4: s.forwarding4,
            forwarding6: s.forwarding6,
            rp_filter: s.rp_filter,
            disable_ipv6: s.disable_ipv6,
            mtu6: s.mtu6,
            rx_vlan_offload: s.rx_vlan_offload,
        }
    }
}

/// Reads a link's sysctls by name, for engines without a [`crate::sysctl::SysctlWatcher`]
/// (tools, benches, unit tests).
pub type SysctlReader = Box<dyn Fn(&str) -> LinkSysctl + Send>;

/// The real sysctls of a link, from /proc/sys of the calling thread's network namespace.
pub fn read_sysctls(name: &str) -> LinkSysctl {
    LinkSysctl::from(&crate::sysctl::LinkSysctls::read(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vrf_common::RouteKind;

    const T: u32 = 110;

    fn r(prefix: &str, kind: RouteKind, paths: &[(u32, Option<&str>)]) -> RouteInfo {
        RouteInfo::of(T, prefix, kind, paths)
    }

    fn mirror() -> Mirror {
        let mut m = Mirror::default();
        m.load_routes(BTreeSet::from([T]), Vec::new());
        m
    }

    fn at(m: &Mirror, prefix: &str) -> Vec<RouteInfo> {
        m.routes_at(T, prefix.parse().unwrap())
            .map(<[RouteInfo]>::to_vec)
            .unwrap_or_default()
    }

    const P: &str = "10.9.0.0/16";

    fn unreachable() -> RouteInfo {
        r(P, RouteKind::Unreachable, &[])
    }

    fn via(gw: &str) -> RouteInfo {
        r(P, RouteKind::Unicast, &[(3, Some(gw))])
    }

    #[test]
    fn an_ipv4_delete_removes_the_alias_the_kernel_deleted_only() {
        let mut m = mirror();
        m.apply(KernelEvent::NewRoute(unreachable()));
        m.apply(KernelEvent::AppendRoute(via("10.0.2.2")));
        assert_eq!(at(&m, P), vec![unreachable(), via("10.0.2.2")]);
        let d = m.apply(KernelEvent::DelRoute(via("10.0.2.2")));
        assert!(!d.resync && d.routes.contains(&(T, P.parse().unwrap())));
        assert_eq!(at(&m, P), vec![unreachable()]);
        // And the other way round: the unreachable one goes, the gateway route stays.
        m.apply(KernelEvent::AppendRoute(via("10.0.2.2")));
        m.apply(KernelEvent::DelRoute(unreachable()));
        assert_eq!(at(&m, P), vec![via("10.0.2.2")]);
    }

    #[test]
    fn ipv4_aliases_keep_the_kernels_order_under_prepend_append_replace() {
        let mut m = mirror();
        m.apply(KernelEvent::NewRoute(unreachable()));
        m.apply(KernelEvent::AppendRoute(via("10.0.2.2")));
        m.apply(KernelEvent::PrependRoute(via("10.0.2.3")));
        assert_eq!(
            at(&m, P),
            vec![via("10.0.2.3"), unreachable(), via("10.0.2.2")],
            "prepend goes first"
        );
        // A replace replaces the first alias only (as `ip route replace` does).
        m.apply(KernelEvent::NewRoute(via("10.0.2.4")));
        assert_eq!(
            at(&m, P),
            vec![via("10.0.2.4"), unreachable(), via("10.0.2.2")]
        );
        m.apply(KernelEvent::DelRoute(via("10.0.2.2")));
        assert_eq!(at(&m, P), vec![via("10.0.2.4"), unreachable()]);
    }

    #[test]
    fn a_delete_the_mirror_cannot_place_asks_for_a_dump() {
        let mut m = mirror();
        m.apply(KernelEvent::NewRoute(unreachable()));
        assert!(m.apply(KernelEvent::DelRoute(via("10.0.2.9"))).resync);
        // A delete of a route already gone (evicted with its link) needs nothing.
        let mut m = mirror();
        m.apply(KernelEvent::NewRoute(r(
            "10.8.0.0/16",
            RouteKind::Unicast,
            &[(3, None)],
        )));
        assert!(!m.apply(KernelEvent::DelRoute(via("10.0.2.9"))).resync);
    }

    #[test]
    fn a_partial_multipath_delete_keeps_the_other_paths() {
        let six = "2001:db8:9::/48";
        let mut m = mirror();
        let both = r(
            six,
            RouteKind::Unicast,
            &[(3, Some("fe80::2")), (4, Some("fe80::3"))],
        );
        m.apply(KernelEvent::NewRoute(both));
        m.apply(KernelEvent::AppendRoute(r(
            six,
            RouteKind::Unicast,
            &[(3, None)],
        )));
        assert_eq!(
            at(&m, six).len(),
            2,
            "a dev-only route is a route of its own"
        );
        m.apply(KernelEvent::DelRoute(r(
            six,
            RouteKind::Unicast,
            &[(4, Some("fe80::3"))],
        )));
        assert_eq!(
            at(&m, six),
            vec![
                r(six, RouteKind::Unicast, &[(3, Some("fe80::2"))]),
                r(six, RouteKind::Unicast, &[(3, None)])
            ]
        );
        // An appended ECMP sibling is announced as the whole route: it replaces, not adds.
        let again = r(
            six,
            RouteKind::Unicast,
            &[(3, Some("fe80::2")), (4, Some("fe80::4"))],
        );
        m.apply(KernelEvent::AppendRoute(again.clone()));
        assert_eq!(at(&m, six)[0], again);
        assert_eq!(at(&m, six).len(), 2);
    }

    #[test]
    fn per_device_ipv6_routes_of_one_prefix_and_metric_are_each_kept() {
        // The kernel adds `multicast ff00::/8 dev X` for every link, with one id.
        let mut m = mirror();
        for dev in [3, 4, 5] {
            m.apply(KernelEvent::AppendRoute(r(
                "ff00::/8",
                RouteKind::Multicast,
                &[(dev, None)],
            )));
        }
        assert_eq!(at(&m, "ff00::/8").len(), 3);
        // The link that goes takes its route, and only it: no dump needed.
        let d = m.apply(KernelEvent::DelRoute(r(
            "ff00::/8",
            RouteKind::Multicast,
            &[(4, None)],
        )));
        assert!(!d.resync);
        let left: Vec<u32> = at(&m, "ff00::/8")
            .iter()
            .map(|r| r.paths[0].ifindex)
            .collect();
        assert_eq!(left, [3, 5]);
    }

    #[test]
    fn an_ipv6_prepend_is_an_append() {
        let six = "2001:db8:9::/48";
        let mut m = mirror();
        m.apply(KernelEvent::NewRoute(r(
            six,
            RouteKind::Unicast,
            &[(3, None)],
        )));
        m.apply(KernelEvent::PrependRoute(r(
            six,
            RouteKind::Unreachable,
            &[(1, None)],
        )));
        assert_eq!(at(&m, six)[0].kind, RouteKind::Unicast);
    }
}
