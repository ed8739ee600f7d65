//! The mirror: vrfd's copy of the kernel objects that matter to the VRFs (links, rules,
//! neighbours, the routes of served tables and of the local table), kept as the kernel keeps
//! its own. Kernel events go in; what they touched comes out as [`Dirty`].
use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;

use crate::model::{KernelEvent, KernelSnapshot, LinkInfo, NeighInfo, RouteInfo, RuleInfo};

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
                    // equal metrics wins when planning, as in the kernel.
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
            KernelEvent::RulesChanged => dirty.rules = true,
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
