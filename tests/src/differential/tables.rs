//! Random routing tables for the VRFs of a [`Lab`], and the `ip -batch` lines that install them.
//!
//! Per VRF, `routes_per_vrf` routes of both families (≈ 55 % IPv4), every prefix length, drawn
//! mostly from a few pools so that prefixes nest and overlap (172.16.0.0/12, 100.64.0.0/10,
//! 198.18.0.0/15, 10.0.0.0/8; 2001:db8::/32, fd10::/16, 2001:db8:ab::/48, 2001:db8:ff::/48) and
//! partly from anywhere. Kinds: unicast via a gateway on a member, connected-style `dev` routes,
//! multipath (2–4 paths), leaks (a path out of another VRF's member, `onlink`), blackhole,
//! unreachable, prohibit, throw, local, unequal-weight multipath, routes through nexthop objects
//! (`nhid`: singletons `onlink`, some shared by several routes, weighted groups of 2–4, IPv4
//! blackholes), TOS routes (left to the kernel by the data plane), alternates of an existing
//! prefix with another metric, and a few
//! overrides inside the members' connected subnets (added last, so gateways still resolve when
//! the routes through them are added). The local table gets a few non-host `local` prefixes of
//! its own (the data plane overlays the local table on every VRF).
//!
//! Neighbours: every member subnet has gateways `.10`–`.29` and hosts `.100`–`.139`; most get a
//! permanent neighbour entry, some do not (so "no neighbour" happens too). Hosts inside `dev`
//! routes get entries likewise.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::{rngs::StdRng, seq::IndexedRandom, Rng};

use super::{nth4, nth6, Lab};

/// Gateways per member subnet (`.10` …).
pub const GATEWAYS: u32 = 20;
pub const GATEWAY_BASE: u32 = 10;
/// Hosts per member subnet (`.100` …).
pub const HOSTS: u32 = 40;
pub const HOST_BASE: u32 = 100;

/// One path of a generated route.
#[derive(Clone, Debug)]
pub struct Hop {
    /// Index into [`Lab::members`].
    pub member: usize,
    pub gateway: Option<IpAddr>,
    pub onlink: bool,
    pub weight: u32,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Unicast(Vec<Hop>),
    Blackhole,
    Unreachable,
    Prohibit,
    Throw,
    Local {
        member: usize,
    },
    /// Through nexthop object `id` (`route add P nhid ID`, as FRR installs routes).
    Nexthop(u32),
}

/// A nexthop object (`ip nexthop add id …`), added before the routes that name it.
#[derive(Clone, Debug)]
pub enum GenNexthop {
    /// `via G dev M onlink` (the gateway's connected route is only in the VRF's table, where
    /// the kernel's nexthop check does not look).
    Single { id: u32, hop: Hop },
    /// `group A,w/B,w…` of singletons of one family.
    Group { id: u32, members: Vec<(u32, u32)> },
    /// `blackhole` (IPv4).
    Blackhole { id: u32 },
}

impl GenNexthop {
    pub fn line(&self, lab: &Lab) -> String {
        match self {
            GenNexthop::Single { id, hop } => format!(
                "nexthop add id {id} via {} dev {} onlink",
                hop.gateway.expect("a gateway"),
                lab.members[hop.member].name
            ),
            GenNexthop::Group { id, members } => {
                let m: Vec<String> = members.iter().map(|(i, w)| format!("{i},{w}")).collect();
                format!("nexthop add id {id} group {}", m.join("/"))
            }
            GenNexthop::Blackhole { id } => format!("nexthop add id {id} blackhole"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GenRoute {
    pub vrf: usize,
    pub table: u32,
    pub prefix: IpNet,
    pub kind: Kind,
    pub metric: Option<u32>,
    pub tos: u8,
}

impl GenRoute {
    /// The `ip route add …` line.
    pub fn line(&self, lab: &Lab) -> String {
        let t = self.table;
        let p = self.prefix;
        let mut extra = String::new();
        if let Some(m) = self.metric {
            extra.push_str(&format!(" metric {m}"));
        }
        if self.tos != 0 {
            extra.push_str(&format!(" tos 0x{:02x}", self.tos));
        }
        let hop = |h: &Hop, nexthop: bool| {
            let mut s = String::new();
            if nexthop {
                s.push_str(" nexthop");
            }
            if let Some(g) = h.gateway {
                s.push_str(&format!(" via {g}"));
            }
            s.push_str(&format!(" dev {}", lab.members[h.member].name));
            if h.onlink {
                s.push_str(" onlink");
            }
            if nexthop && h.weight != 1 {
                s.push_str(&format!(" weight {}", h.weight));
            }
            s
        };
        match &self.kind {
            Kind::Unicast(hops) if hops.len() == 1 => {
                format!("route add {p}{extra}{} table {t}", hop(&hops[0], false))
            }
            Kind::Unicast(hops) => {
                let hs: String = hops.iter().map(|h| hop(h, true)).collect();
                format!("route add {p}{extra} table {t}{hs}")
            }
            Kind::Blackhole => format!("route add blackhole {p}{extra} table {t}"),
            Kind::Unreachable => format!("route add unreachable {p}{extra} table {t}"),
            Kind::Prohibit => format!("route add prohibit {p}{extra} table {t}"),
            Kind::Throw => format!("route add throw {p}{extra} table {t}"),
            Kind::Local { member } => format!(
                "route add local {p}{extra} dev {} table {t}",
                lab.members[*member].name
            ),
            Kind::Nexthop(id) => format!("route add {p}{extra} nhid {id} table {t}"),
        }
    }
}

/// Everything generated for one lab.
#[derive(Debug, Default)]
pub struct Plan {
    pub routes: Vec<GenRoute>,
    /// Nexthop objects, in the order they are added (members before their groups).
    pub nexthops: Vec<GenNexthop>,
    /// (member index, address, MAC): permanent neighbour entries.
    pub neighbours: Vec<(usize, IpAddr, [u8; 6])>,
    /// Non-host `local` prefixes added to the local table (dev lo).
    pub local_table: Vec<IpNet>,
    /// Per VRF: addresses inside its `dev` routes (some with a neighbour entry).
    pub hosts: Vec<Vec<IpAddr>>,
    /// (table, prefix) the data plane is expected to leave to the kernel: TOS routes.
    pub unsupported: HashSet<(u32, IpNet)>,
    /// Every `local` prefix of every VRF table and of the local table (sources inside them are
    /// martian to the kernel's IPv4 source validation).
    pub local_prefixes: Vec<IpNet>,
}

impl Plan {
    /// The batch lines: local-table prefixes, neighbours, nexthop objects, routes (overrides
    /// last, in order).
    pub fn lines(&self, lab: &Lab) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.local_table {
            out.push(format!("route add local {p} dev lo table local"));
        }
        for (m, addr, mac) in &self.neighbours {
            out.push(format!(
                "neigh replace {addr} lladdr {} dev {} nud permanent",
                crate::mac_to_string(*mac),
                lab.members[*m].name
            ));
        }
        for n in &self.nexthops {
            out.push(n.line(lab));
        }
        for r in &self.routes {
            out.push(r.line(lab));
        }
        out
    }

    /// Routes of VRF `vrf`.
    pub fn routes_of(&self, vrf: usize) -> impl Iterator<Item = &GenRoute> {
        self.routes.iter().filter(move |r| r.vrf == vrf)
    }
}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

/// A random address inside `net`.
pub fn addr_in(rng: &mut StdRng, net: IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let m = mask4(n.prefix_len());
            Ipv4Addr::from((u32::from(n.network()) & m) | (rng.random::<u32>() & !m)).into()
        }
        IpNet::V6(n) => {
            let m = mask6(n.prefix_len());
            Ipv6Addr::from((u128::from(n.network()) & m) | (rng.random::<u128>() & !m)).into()
        }
    }
}

/// The members' address area: nothing more specific than it is generated inside it (except the
/// overrides), so gateways always resolve through the connected routes.
fn member_area4() -> Ipv4Net {
    "10.0.0.0/16".parse().unwrap()
}
fn member_area6() -> Ipv6Net {
    "fd00::/48".parse().unwrap()
}

fn rand_prefix4(rng: &mut StdRng) -> Ipv4Net {
    loop {
        let (base, base_len): (u32, u8) = match rng.random_range(0..100) {
            0..45 => (0xac10_0000, 12),  // 172.16.0.0/12
            45..70 => (0x6440_0000, 10), // 100.64.0.0/10
            70..75 => (0xc612_0000, 15), // 198.18.0.0/15
            75..85 => (0x0a00_0000, 8),  // 10.0.0.0/8
            _ => (0, 0),
        };
        let len = rng.random_range(base_len..=32);
        let m = mask4(base_len);
        let addr = (base & m) | (rng.random::<u32>() & !m);
        let net = Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc();
        let area = member_area4();
        if len > area.prefix_len() && area.contains(&net.network()) {
            continue;
        }
        return net;
    }
}

fn rand_prefix6(rng: &mut StdRng) -> Ipv6Net {
    loop {
        let (base, base_len, max): (u128, u8, u8) = match rng.random_range(0..100) {
            0..40 => (0x2001_0db8 << 96, 32, 128),
            40..65 => (0xfd10 << 112, 16, 128),
            65..75 => ((0x2001_0db8 << 96) | (0xab << 80), 48, 72),
            75..80 => ((0x2001_0db8 << 96) | (0xff << 80), 48, 128),
            _ => (0, 0, 128),
        };
        let len = rng.random_range(base_len..=max);
        let m = mask6(base_len);
        let addr = (base & m) | (rng.random::<u128>() & !m);
        let net = Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc();
        let area = member_area6();
        if len > area.prefix_len() && area.contains(&net.network()) {
            continue;
        }
        return net;
    }
}

/// Gateway `g` (0-based) of `member`'s subnet.
pub fn gateway(lab: &Lab, member: usize, g: u32, v6: bool) -> IpAddr {
    let m = &lab.members[member];
    if v6 {
        nth6(m.subnet6, u128::from(GATEWAY_BASE + g)).into()
    } else {
        nth4(m.subnet4, GATEWAY_BASE + g).into()
    }
}

/// Host `h` (0-based) of `member`'s subnet.
pub fn host(lab: &Lab, member: usize, h: u32, v6: bool) -> IpAddr {
    let m = &lab.members[member];
    if v6 {
        nth6(m.subnet6, u128::from(HOST_BASE + h)).into()
    } else {
        nth4(m.subnet4, HOST_BASE + h).into()
    }
}

struct Gen<'a> {
    lab: &'a Lab,
    rng: &'a mut StdRng,
    plan: Plan,
    /// (table, prefix, metric, tos) already used.
    used: HashSet<(u32, IpNet, u32, u8)>,
    /// (table, prefix) already used.
    prefixes: HashSet<(u32, IpNet)>,
    next_mac: u32,
    /// Paths out of another VRF's member are generated.
    leaks: bool,
}

impl Gen<'_> {
    fn mac(&mut self) -> [u8; 6] {
        self.next_mac += 1;
        let b = self.next_mac.to_be_bytes();
        [0x02, 0x5e, b[0], b[1], b[2], b[3]]
    }

    fn neighbour(&mut self, member: usize, addr: IpAddr) {
        let mac = self.mac();
        self.plan.neighbours.push((member, addr, mac));
    }

    fn hop(&mut self, member: usize, v6: bool) -> Hop {
        let g = self.rng.random_range(0..GATEWAYS);
        Hop {
            member,
            gateway: Some(gateway(self.lab, member, g, v6)),
            onlink: false,
            weight: 1,
        }
    }

    fn leak_hop(&mut self, vrf: usize, v6: bool) -> Option<Hop> {
        if !self.leaks {
            return None;
        }
        let others: Vec<usize> = (0..self.lab.members.len())
            .filter(|m| self.lab.members[*m].vrf != vrf)
            .collect();
        let member = *others.choose(self.rng)?;
        let mut h = self.hop(member, v6);
        h.onlink = true;
        Some(h)
    }

    /// A fresh singleton via a gateway of one of the VRF's members; returns its id.
    fn single_nexthop(&mut self, vrf: usize, v6: bool) -> u32 {
        let m = self.own_member(vrf);
        let hop = self.hop(m, v6);
        let id = self.plan.nexthops.len() as u32 + 1;
        self.plan.nexthops.push(GenNexthop::Single { id, hop });
        id
    }

    /// A nexthop object for a route of `vrf`: a fresh singleton, an existing singleton of the
    /// VRF (shared, as FRR shares them), a group of 2–4 singletons with weights 1–4, or (IPv4)
    /// a blackhole.
    fn nexthop(&mut self, vrf: usize, v6: bool) -> u32 {
        match self.rng.random_range(0..100) {
            0..35 => self.single_nexthop(vrf, v6),
            35..55 => {
                let shared: Vec<u32> = self
                    .plan
                    .nexthops
                    .iter()
                    .filter_map(|n| match n {
                        GenNexthop::Single { id, hop }
                            if self.lab.members[hop.member].vrf == vrf
                                && hop.gateway.is_some_and(|g| g.is_ipv6() == v6) =>
                        {
                            Some(*id)
                        }
                        _ => None,
                    })
                    .collect();
                match shared.choose(self.rng) {
                    Some(id) => *id,
                    None => self.single_nexthop(vrf, v6),
                }
            }
            55..88 => {
                let n = self.rng.random_range(2..=4);
                let members = (0..n)
                    .map(|_| {
                        let w = self.rng.random_range(1..=4);
                        (self.single_nexthop(vrf, v6), w)
                    })
                    .collect();
                let id = self.plan.nexthops.len() as u32 + 1;
                self.plan.nexthops.push(GenNexthop::Group { id, members });
                id
            }
            _ if !v6 => {
                let id = self.plan.nexthops.len() as u32 + 1;
                self.plan.nexthops.push(GenNexthop::Blackhole { id });
                id
            }
            _ => self.single_nexthop(vrf, v6),
        }
    }

    fn own_member(&mut self, vrf: usize) -> usize {
        *self.lab.vrfs[vrf].members.choose(self.rng).unwrap()
    }

    fn multipath(&mut self, vrf: usize, v6: bool, leak: bool, weighted: bool) -> Vec<Hop> {
        let n = self.rng.random_range(2..=4);
        let mut hops: Vec<Hop> = Vec::new();
        while hops.len() < n {
            let h = if leak && hops.len() == n - 1 {
                match self.leak_hop(vrf, v6) {
                    Some(h) => h,
                    None => break,
                }
            } else {
                let m = self.own_member(vrf);
                self.hop(m, v6)
            };
            if !hops
                .iter()
                .any(|x| x.member == h.member && x.gateway == h.gateway)
            {
                hops.push(h);
            }
        }
        if weighted {
            hops[0].weight = 3;
        }
        hops
    }

    fn fresh_prefix(&mut self, table: u32, v6: bool, metric: Option<u32>, tos: u8) -> IpNet {
        loop {
            let p = if v6 {
                IpNet::V6(rand_prefix6(self.rng))
            } else {
                IpNet::V4(rand_prefix4(self.rng))
            };
            // A prefix is used once per table (alternates are made on purpose, below).
            if !self.prefixes.insert((table, p)) {
                continue;
            }
            self.used
                .insert((table, p, metric.unwrap_or(u32::MAX), tos));
            return p;
        }
    }

    fn route(&mut self, vrf: usize, v6: bool) {
        let table = self.lab.vrfs[vrf].table;
        let roll = self.rng.random_range(0..100);
        let mut tos = 0;
        let mut metric = None;
        if roll >= 97 {
            // An alternate of an existing prefix of this VRF, with another metric.
            let n = self.plan.routes.len();
            let pick = (0..8)
                .map(|_| self.rng.random_range(0..n.max(1)))
                .find(|i| {
                    self.plan.routes.get(*i).is_some_and(|r| {
                        r.vrf == vrf && r.prefix.addr().is_ipv6() == v6 && r.tos == 0
                    })
                });
            if let Some(i) = pick {
                if self.plan.routes[i].metric.is_none() {
                    self.plan.routes[i].metric = Some(100);
                }
                let prefix = self.plan.routes[i].prefix;
                let m = if self.rng.random_bool(0.5) { 50 } else { 150 };
                if !self.used.contains(&(table, prefix, m, 0)) {
                    self.used.insert((table, prefix, m, 0));
                    let roll = self.rng.random_range(0..93);
                    let kind = self.kind(vrf, v6, roll, prefix);
                    self.plan.routes.push(GenRoute {
                        vrf,
                        table,
                        prefix,
                        kind,
                        metric: Some(m),
                        tos: 0,
                    });
                }
                return;
            }
        }
        if (95..97).contains(&roll) && !v6 {
            tos = 0x10;
            metric = Some(0);
        }
        let prefix = self.fresh_prefix(table, v6, metric, tos);
        let kind = if tos != 0 {
            let m = self.own_member(vrf);
            Kind::Unicast(vec![self.hop(m, v6)])
        } else {
            self.kind(vrf, v6, roll.min(96), prefix)
        };
        if tos != 0 {
            self.plan.unsupported.insert((table, prefix));
        }
        self.plan.routes.push(GenRoute {
            vrf,
            table,
            prefix,
            kind,
            metric: if tos != 0 { None } else { metric },
            tos,
        });
    }

    fn kind(&mut self, vrf: usize, v6: bool, roll: u32, prefix: IpNet) -> Kind {
        match roll {
            0..28 => {
                let m = self.own_member(vrf);
                Kind::Unicast(vec![self.hop(m, v6)])
            }
            28..38 => Kind::Nexthop(self.nexthop(vrf, v6)),
            38..46 => {
                let m = self.own_member(vrf);
                for _ in 0..2 {
                    let a = addr_in(self.rng, prefix);
                    self.plan.hosts[vrf].push(a);
                    if self.rng.random_bool(0.75) {
                        self.neighbour(m, a);
                    }
                }
                Kind::Unicast(vec![Hop {
                    member: m,
                    gateway: None,
                    onlink: false,
                    weight: 1,
                }])
            }
            46..60 => {
                let leak = self.rng.random_bool(0.15);
                Kind::Unicast(self.multipath(vrf, v6, leak, false))
            }
            60..65 => match self.leak_hop(vrf, v6) {
                Some(h) => Kind::Unicast(vec![h]),
                None => Kind::Blackhole,
            },
            65..71 => Kind::Blackhole,
            71..77 => Kind::Unreachable,
            77..83 => Kind::Prohibit,
            83..89 => Kind::Throw,
            89..93 => {
                self.plan.local_prefixes.push(prefix);
                Kind::Local {
                    member: self.own_member(vrf),
                }
            }
            _ => Kind::Unicast(self.multipath(vrf, v6, false, true)),
        }
    }

    /// A route inside a member's connected subnet (added after everything else).
    fn override_route(&mut self, vrf: usize, v6: bool) {
        let table = self.lab.vrfs[vrf].table;
        let m = self.own_member(vrf);
        let member = &self.lab.members[m];
        let prefix = if v6 {
            let len = self.rng.random_range(65..=128);
            let a = addr_in(self.rng, IpNet::V6(member.subnet6));
            IpNet::new(a, len).unwrap().trunc()
        } else {
            let len = self.rng.random_range(25..=32);
            let a = addr_in(self.rng, IpNet::V4(member.subnet4));
            IpNet::new(a, len).unwrap().trunc()
        };
        if !self.prefixes.insert((table, prefix)) {
            return;
        }
        self.used.insert((table, prefix, u32::MAX, 0));
        let kind = match self.rng.random_range(0..4) {
            0 => Kind::Blackhole,
            1 => Kind::Unreachable,
            2 => {
                // Via a gateway of another member of the VRF.
                let other = self.own_member(vrf);
                Kind::Unicast(vec![self.hop(other, v6)])
            }
            _ => {
                let other = self.own_member(vrf);
                let a = addr_in(self.rng, prefix);
                self.plan.hosts[vrf].push(a);
                self.neighbour(other, a);
                Kind::Unicast(vec![Hop {
                    member: other,
                    gateway: None,
                    onlink: false,
                    weight: 1,
                }])
            }
        };
        self.plan.routes.push(GenRoute {
            vrf,
            table,
            prefix,
            kind,
            metric: None,
            tos: 0,
        });
    }
}

/// Generates the tables, neighbours and local-table prefixes for `lab` (with routes leaking out
/// of another VRF's member when `leaks`).
pub fn generate(lab: &Lab, rng: &mut StdRng, routes_per_vrf: usize, leaks: bool) -> Plan {
    let mut g = Gen {
        lab,
        rng,
        plan: Plan {
            hosts: vec![Vec::new(); lab.vrfs.len()],
            ..Default::default()
        },
        used: HashSet::new(),
        prefixes: HashSet::new(),
        next_mac: 0,
        leaks,
    };
    // Neighbours of the member subnets: most gateways and hosts, not all.
    for m in 0..lab.members.len() {
        for v6 in [false, true] {
            for i in 0..GATEWAYS {
                if g.rng.random_bool(0.85) {
                    g.neighbour(m, gateway(lab, m, i, v6));
                }
            }
            for i in 0..HOSTS {
                if g.rng.random_bool(0.7) {
                    g.neighbour(m, host(lab, m, i, v6));
                }
            }
        }
    }
    // A few non-host local prefixes in the local table, where VRF routes nest too.
    for _ in 0..2 {
        let len = g.rng.random_range(16..=28);
        let a = addr_in(g.rng, "198.18.0.0/15".parse().unwrap());
        let p = IpNet::new(a, len).unwrap().trunc();
        if !g.plan.local_table.contains(&p) {
            g.plan.local_table.push(p);
        }
        let len = g.rng.random_range(48..=64);
        let a = addr_in(g.rng, "2001:db8:ff::/48".parse().unwrap());
        let p = IpNet::new(a, len).unwrap().trunc();
        if !g.plan.local_table.contains(&p) {
            g.plan.local_table.push(p);
        }
    }
    let locals = g.plan.local_table.clone();
    g.plan.local_prefixes.extend(locals);
    for v in 0..lab.vrfs.len() {
        for _ in 0..routes_per_vrf {
            let v6 = g.rng.random_bool(0.45);
            g.route(v, v6);
        }
    }
    for v in 0..lab.vrfs.len() {
        for _ in 0..(routes_per_vrf / 100).max(4) {
            let v6 = g.rng.random_bool(0.45);
            g.override_route(v, v6);
        }
    }
    g.plan
}
