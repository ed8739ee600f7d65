//! Random cases, and one case through the kernel and the data plane, compared.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use ipnet::IpNet;
use netlink_packet_route::route::RouteType;
use rand::{rngs::StdRng, seq::IndexedRandom, Rng};
use vrf_common::Reason;
use vrf_user::{
    dataplane::{DataPlane, XdpAction, XDP_DROP, XDP_PASS, XDP_REDIRECT},
    packet::FrameSpec,
};

use super::oracle::{KernelAnswer, KernelPath, RouteOracle};
use super::tables::{addr_in, gateway, host, Kind, Plan, GATEWAYS, HOSTS};
use super::{nth4, nth6, Lab};
use crate::invariants::{check_forwarded, hex};

/// One packet: arriving on `ingress` (a member of VRF `vrf`) from `src` to `dst`.
#[derive(Clone, Debug)]
pub struct Case {
    pub vrf: usize,
    /// Index into [`Lab::members`].
    pub ingress: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub tcp: bool,
    /// Where the destination was drawn from.
    pub what: &'static str,
}

/// Draws cases for a lab and its plan. `martian_sources` is the share of cases whose IPv4/IPv6
/// source is one the kernel's source validation may reject: an address of the router itself, a
/// subnet broadcast address, an address inside a `local` route.
pub struct CaseGen<'a> {
    lab: &'a Lab,
    plan: &'a Plan,
    by_vrf: Vec<Vec<usize>>,
    martian_sources: f64,
}

impl<'a> CaseGen<'a> {
    pub fn new(lab: &'a Lab, plan: &'a Plan, martian_sources: f64) -> Self {
        let mut by_vrf = vec![Vec::new(); lab.vrfs.len()];
        for (i, r) in plan.routes.iter().enumerate() {
            by_vrf[r.vrf].push(i);
        }
        CaseGen {
            lab,
            plan,
            by_vrf,
            martian_sources,
        }
    }

    fn member_of(&self, rng: &mut StdRng, vrf: usize) -> usize {
        *self.lab.vrfs[vrf].members.choose(rng).unwrap()
    }

    fn random_route_addr(&self, rng: &mut StdRng, vrf: usize) -> IpAddr {
        let i = *self.by_vrf[vrf].choose(rng).unwrap();
        addr_in(rng, self.plan.routes[i].prefix)
    }

    fn special(rng: &mut StdRng, v6: bool) -> IpAddr {
        let v4s = [
            "0.1.2.3",
            "127.0.0.1",
            "169.254.1.1",
            "224.0.0.5",
            "239.1.2.3",
            "255.255.255.255",
            "240.0.0.1",
            "100.64.0.0",
            "172.31.255.255",
        ];
        let v6s = [
            "ff02::1",
            "ff05::2",
            "fe80::1",
            "::1",
            "::",
            "::ffff:10.0.1.9",
            "2001:db8:ff::1",
            "fd10::",
        ];
        let s = if v6 { v6s.choose(rng) } else { v4s.choose(rng) };
        s.unwrap().parse().unwrap()
    }

    fn destination(&self, rng: &mut StdRng, vrf: usize) -> (IpAddr, &'static str) {
        match rng.random_range(0..100) {
            0..55 => (self.random_route_addr(rng, vrf), "route"),
            55..65 => match self.plan.hosts[vrf].choose(rng) {
                Some(a) => (*a, "dev-route host"),
                None => (self.random_route_addr(rng, vrf), "route"),
            },
            65..75 => {
                let m = self.member_of(rng, vrf);
                let v6 = rng.random_bool(0.5);
                let member = &self.lab.members[m];
                let a = match rng.random_range(0..6) {
                    0 => {
                        if v6 {
                            member.router6().into()
                        } else {
                            member.router4().into()
                        }
                    }
                    1 => {
                        if v6 {
                            nth6(member.subnet6, 0).into()
                        } else {
                            nth4(member.subnet4, 255).into()
                        }
                    }
                    2 | 3 => gateway(self.lab, m, rng.random_range(0..GATEWAYS), v6),
                    _ => host(self.lab, m, rng.random_range(0..HOSTS), v6),
                };
                (a, "member subnet")
            }
            75..83 => {
                let other = rng.random_range(0..self.lab.vrfs.len());
                (self.random_route_addr(rng, other), "another VRF's route")
            }
            83..93 => {
                let a: IpAddr = if rng.random_bool(0.5) {
                    Ipv6Addr::from(rng.random::<u128>()).into()
                } else {
                    Ipv4Addr::from(rng.random::<u32>()).into()
                };
                (a, "anywhere")
            }
            _ => match self.plan.local_table.choose(rng) {
                Some(p) if rng.random_bool(0.5) => (addr_in(rng, *p), "local-table prefix"),
                _ => {
                    let v6 = rng.random_bool(0.5);
                    (Self::special(rng, v6), "special")
                }
            },
        }
    }

    fn in_local(&self, a: IpAddr) -> bool {
        self.plan.local_prefixes.iter().any(|p| p.contains(&a))
    }

    fn source(&self, rng: &mut StdRng, vrf: usize, ingress: usize, v6: bool) -> IpAddr {
        if rng.random_bool(self.martian_sources) {
            let m = rng.random_range(0..self.lab.members.len());
            let member = &self.lab.members[m];
            let locals: Vec<IpNet> = self
                .plan
                .local_prefixes
                .iter()
                .filter(|p| p.addr().is_ipv6() == v6)
                .copied()
                .collect();
            return match rng.random_range(0..3) {
                0 => {
                    if v6 {
                        member.router6().into()
                    } else {
                        member.router4().into()
                    }
                }
                1 if !v6 => nth4(member.subnet4, 255).into(),
                _ => match locals.choose(rng) {
                    Some(p) => addr_in(rng, *p),
                    None if v6 => member.router6().into(),
                    None => member.router4().into(),
                },
            };
        }
        match rng.random_range(0..100) {
            0..75 => self.lab.members[ingress].host(v6),
            75..90 => {
                let m = self.member_of(rng, vrf);
                host(self.lab, m, rng.random_range(0..HOSTS), v6)
            }
            _ => {
                // A random address of the pools, outside every `local` prefix (a short local
                // route may cover a whole pool: give up after a few tries).
                for _ in 0..16 {
                    let pool: IpNet = match (v6, rng.random_bool(0.5)) {
                        (false, true) => "172.16.0.0/12".parse().unwrap(),
                        (false, false) => "100.64.0.0/10".parse().unwrap(),
                        (true, true) => "2001:db8::/32".parse().unwrap(),
                        (true, false) => "fd10::/16".parse().unwrap(),
                    };
                    let a = addr_in(rng, pool);
                    if !self.in_local(a) {
                        return a;
                    }
                }
                self.lab.members[ingress].host(v6)
            }
        }
    }

    pub fn case(&self, rng: &mut StdRng) -> Case {
        let vrf = rng.random_range(0..self.lab.vrfs.len());
        let ingress = self.member_of(rng, vrf);
        let (dst, what) = self.destination(rng, vrf);
        let src = self.source(rng, vrf, ingress, dst.is_ipv6());
        Case {
            vrf,
            ingress,
            src,
            dst,
            sport: rng.random_range(1024..65535),
            dport: rng.random_range(1..65535),
            tcp: rng.random_bool(0.3),
            what,
        }
    }
}

/// Addresses the data plane always leaves to the kernel (README, "Limits"): IPv4 0/8, 127/8,
/// 169.254/16, 224/4 and above; IPv6 `::`, `::1`, v4-mapped, link-local, multicast.
pub fn documented_pass(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            let o = a.octets();
            o[0] == 0 || o[0] == 127 || o[0] >= 224 || (o[0] == 169 && o[1] == 254)
        }
        IpAddr::V6(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.to_ipv4_mapped().is_some()
                || a.segments()[0] & 0xffc0 == 0xfe80
        }
    }
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Stats {
    pub cases: usize,
    /// (kernel's answer, data plane's reason) → count.
    pub pairs: BTreeMap<(String, &'static str), usize>,
    /// Cases the kernel forwards with every path usable by the data plane (a neighbour entry on
    /// each, none out of the ingress link, no TOS route around the destination).
    pub resolved: usize,
    pub resolved_forwarded: usize,
    /// Data plane reason → count, for resolved cases it did not forward.
    pub resolved_missed: BTreeMap<&'static str, usize>,
    pub missed_examples: Vec<String>,
    pub forwarded: usize,
    pub forwarded_v6: usize,
    pub forwarded_multipath: usize,
    pub forwarded_leak: usize,
    /// Forwards over paths of unequal weights.
    pub forwarded_weighted: usize,
    /// Forwards by a route through a nexthop object (`nhid`).
    pub forwarded_nexthop_object: usize,
    pub dropped: usize,
    /// IPv6 forwards where fibmatch named another route of a shared nexthop than the table's
    /// match (the kernel's per-nexthop dst cache), judged by the forwarding outcome instead.
    pub fibmatch_misnamed: usize,
    pub discrepancies: Vec<String>,
}

impl Stats {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} cases: {} forwarded ({} IPv6, {} multipath, {} out of another VRF's member, \
             {} weighted, {} through a nexthop object, {} misnamed by IPv6 fibmatch), {} dropped\n\
             fully resolved kernel forwards: {}, forwarded by the data plane: {}, passed: {:?}\n\
             (kernel answer, data plane reason) counts:\n",
            self.cases,
            self.forwarded,
            self.forwarded_v6,
            self.forwarded_multipath,
            self.forwarded_leak,
            self.forwarded_weighted,
            self.forwarded_nexthop_object,
            self.fibmatch_misnamed,
            self.dropped,
            self.resolved,
            self.resolved_forwarded,
            self.resolved_missed
        );
        for ((k, r), n) in &self.pairs {
            s.push_str(&format!("  {k:>12} {r:<14} {n}\n"));
        }
        s
    }
}

/// Compares cases, accumulating [`Stats`].
pub struct Checker<'a> {
    pub lab: &'a Lab,
    pub plan: &'a Plan,
    /// The kernel's usable neighbours, (ifindex, address) → MAC.
    pub neighbours: HashMap<(u32, IpAddr), [u8; 6]>,
    pub stats: Stats,
    /// (table, prefix) of the routes through nexthop objects.
    nexthop_routes: HashSet<(u32, IpNet)>,
}

fn action_name(a: XdpAction) -> String {
    match a {
        XDP_DROP => "drop".into(),
        XDP_PASS => "pass".into(),
        XDP_REDIRECT => "forward".into(),
        XdpAction::Other(n) => format!("action {n}"),
        other => other.to_string(),
    }
}

impl<'a> Checker<'a> {
    pub fn new(lab: &'a Lab, plan: &'a Plan, neighbours: HashMap<(u32, IpAddr), [u8; 6]>) -> Self {
        let nexthop_routes = plan
            .routes
            .iter()
            .filter(|r| matches!(r.kind, Kind::Nexthop(_)))
            .map(|r| (r.table, r.prefix))
            .collect();
        Checker {
            lab,
            plan,
            neighbours,
            stats: Stats::default(),
            nexthop_routes,
        }
    }

    fn name(&self, ifindex: u32) -> String {
        self.lab
            .member_by_ifindex(ifindex)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| format!("if{ifindex}"))
    }

    /// Runs `c` through the kernel (`oracle`) and the data plane (both programs) and compares.
    /// Call on a thread inside the lab's router namespace.
    pub fn check(
        &mut self,
        oracle: &mut RouteOracle,
        dp: &mut DataPlane,
        n: usize,
        c: &Case,
    ) -> Result<()> {
        let lab = self.lab;
        let ingress = &lab.members[c.ingress];
        let v6 = c.dst.is_ipv6();
        let mut spec = FrameSpec::new(c.src, c.dst);
        spec.src_mac = [0x02, 0xaa, 0, 0, 0, 0x02];
        spec.dst_mac = ingress.mac;
        spec.src_port = c.sport;
        spec.dst_port = c.dport;
        spec.ttl = 64;
        let frame = if c.tcp { spec.tcp()? } else { spec.udp()? };
        let kernel = oracle
            .route_get(ingress.ifindex, c.src, c.dst)
            .with_context(|| format!("kernel route get for case {n}: {c:?}"))?;
        let e = dp
            .explain(ingress.ifindex, &frame)
            .with_context(|| format!("explain for case {n}: {c:?}"))?;
        let run = dp.run(ingress.ifindex, &frame)?;
        self.stats.cases += 1;
        *self
            .stats
            .pairs
            .entry((kernel.label(), e.reason.name()))
            .or_default() += 1;

        let mut problems: Vec<String> = Vec::new();
        if run.action != e.action || run.frame != e.frame {
            problems.push(format!(
                "xdp_vrf ({}) and xdp_vrf_explain ({}) disagree",
                action_name(run.action),
                action_name(e.action)
            ));
        }
        match e.action {
            XDP_REDIRECT => {
                self.stats.forwarded += 1;
                self.stats.forwarded_v6 += usize::from(v6);
                let (Some(oif), Some(neigh)) = (e.oif, e.neighbour) else {
                    problems.push("forwarded without an egress or a neighbour".into());
                    return self.finish(n, c, &kernel, &e, problems);
                };
                match &kernel {
                    KernelAnswer::Route {
                        kind: RouteType::Unicast,
                        paths,
                        table,
                        prefix,
                    } => {
                        if paths.iter().any(|p| p.weight != paths[0].weight) {
                            self.stats.forwarded_weighted += 1;
                        }
                        if self.nexthop_routes.contains(&(*table, *prefix)) {
                            self.stats.forwarded_nexthop_object += 1;
                        }
                        let is_ours = |p: &KernelPath| {
                            p.oif == oif
                                && match p.gateway {
                                    Some(g) => g == neigh,
                                    None => neigh == c.dst,
                                }
                        };
                        let mut on_path = paths.iter().any(is_ours);
                        if !on_path && v6 {
                            // IPv6 caches one dst per nexthop object and fibmatch names the route
                            // that created it: with a nexthop shared by several routes (a
                            // singleton also in a group), the named route may not be the one that
                            // matched. Judge by the forwarding outcome instead: the table's own
                            // match (from a dump, no cache) must hold our path, and the kernel's
                            // real egress must be one of that route's paths too.
                            if let Some(KernelAnswer::Route {
                                prefix: truth_prefix,
                                paths: truth,
                                ..
                            }) = oracle.table_match(*table, c.dst)?
                            {
                                if truth_prefix != *prefix {
                                    self.stats.fibmatch_misnamed += 1;
                                    on_path = truth.iter().any(is_ours);
                                    let real =
                                        oracle.route_get_egress(ingress.ifindex, c.src, c.dst)?;
                                    let kernel_on_truth = matches!(&real, KernelAnswer::Route { paths: p, .. }
                                        if p.len() == 1 && truth.iter().any(|t| t.oif == p[0].oif && t.gateway == p[0].gateway));
                                    if !kernel_on_truth {
                                        problems.push(format!(
                                            "fibmatch named {prefix}, the table matches {truth_prefix}, and the kernel's own egress {real:?} is on neither"
                                        ));
                                    }
                                }
                            }
                        }
                        if !on_path {
                            problems.push(format!(
                                "out of {} to {neigh} is none of the kernel's paths",
                                self.name(oif)
                            ));
                        }
                        if paths.len() > 1 {
                            self.stats.forwarded_multipath += 1;
                        }
                    }
                    _ => problems.push("forwarded what the kernel does not forward".into()),
                }
                if oif == ingress.ifindex {
                    problems.push("forwarded out of the ingress link".into());
                }
                match lab.member_by_ifindex(oif) {
                    Some(egress) => {
                        if egress.vrf != c.vrf {
                            self.stats.forwarded_leak += 1;
                        }
                        match self.neighbours.get(&(oif, neigh)) {
                            Some(mac) => {
                                if let Err(why) =
                                    check_forwarded(&frame, &e.frame, egress.mac, *mac)
                                {
                                    problems.push(format!("rewrite: {why}"));
                                }
                            }
                            None => problems.push(format!(
                                "the kernel has no usable neighbour {neigh} on {}",
                                egress.name
                            )),
                        }
                    }
                    None => problems.push(format!("egress ifindex {oif} is no member")),
                }
            }
            XDP_DROP => {
                self.stats.dropped += 1;
                if e.reason != Reason::DropBlackhole {
                    problems.push(
                        "a well-formed packet dropped for another reason than a blackhole route"
                            .into(),
                    );
                }
                if kernel != KernelAnswer::Error(libc::EINVAL) {
                    problems.push("dropped what the kernel does not drop".into());
                } else {
                    let plain = ingress.host(v6);
                    if plain != c.src {
                        // EINVAL is also the kernel's answer for a martian source: ask again with
                        // an ordinary one, which only a blackhole route still refuses.
                        let again = oracle.route_get(ingress.ifindex, plain, c.dst)?;
                        if again != KernelAnswer::Error(libc::EINVAL) {
                            problems.push(format!(
                                "dropped, but from {plain} the kernel answers {again:?}: not a blackhole"
                            ));
                        }
                    }
                }
            }
            XDP_PASS => {
                if e.frame != frame {
                    problems.push("a passed frame was modified".into());
                }
            }
            other => problems.push(format!("returned {}", action_name(other))),
        }

        if let KernelAnswer::Route {
            kind: RouteType::Unicast,
            table,
            paths,
            ..
        } = &kernel
        {
            let vrf_table = lab.vrfs[c.vrf].table;
            let resolved = !paths.is_empty()
                && !documented_pass(c.src)
                && !documented_pass(c.dst)
                && *table == vrf_table
                && paths.iter().all(|p| {
                    p.oif != ingress.ifindex
                        && lab.member_by_ifindex(p.oif).is_some()
                        && self
                            .neighbours
                            .contains_key(&(p.oif, p.gateway.unwrap_or(c.dst)))
                })
                && !self
                    .plan
                    .unsupported
                    .iter()
                    .any(|(t, p)| *t == vrf_table && p.contains(&c.dst));
            if resolved {
                self.stats.resolved += 1;
                if e.action == XDP_REDIRECT {
                    self.stats.resolved_forwarded += 1;
                } else {
                    *self
                        .stats
                        .resolved_missed
                        .entry(e.reason.name())
                        .or_default() += 1;
                    if self.stats.missed_examples.len() < 10 {
                        self.stats.missed_examples.push(format!(
                            "case {n}: {} iif {} {} → {} ({}): kernel {kernel:?}, data plane {}",
                            lab.vrfs[c.vrf].name,
                            ingress.name,
                            c.src,
                            c.dst,
                            c.what,
                            e.reason.name()
                        ));
                    }
                }
            }
        }
        if !problems.is_empty() && !v6 {
            // What the kernel's source validation sees: the source looked up as a destination
            // from the egress interface (fib_validate_source: flowi4_iif = oif).
            if let Some(oif) = e.oif {
                if let Ok(back) = oracle.route_get(oif, c.dst, c.src) {
                    problems.push(format!(
                        "(hint: `ip route get fibmatch {} from {} iif {}`, the source seen from the data plane's egress as fib_validate_source looks it up: {back:?})",
                        c.src,
                        c.dst,
                        self.name(oif)
                    ));
                }
            }
        }
        self.finish(n, c, &kernel, &e, problems)
    }

    fn finish(
        &mut self,
        n: usize,
        c: &Case,
        kernel: &KernelAnswer,
        e: &vrf_user::dataplane::Explanation,
        problems: Vec<String>,
    ) -> Result<()> {
        if problems.is_empty() {
            return Ok(());
        }
        let ingress = &self.lab.members[c.ingress];
        self.stats.discrepancies.push(format!(
            "case {n}: VRF {} (table {}) iif {} {} {} → {} ({}, {} {}→{}):\n    \
             kernel: {kernel:?}\n    data plane: {} {} oif {} neighbour {:?} (VRF slot {})\n    \
             problems: {}\n    replay in the kernel: ip route get fibmatch {} from {} iif {}\n    \
             output frame: {}",
            self.lab.vrfs[c.vrf].name,
            self.lab.vrfs[c.vrf].table,
            ingress.name,
            if c.tcp { "TCP" } else { "UDP" },
            c.src,
            c.dst,
            c.what,
            if c.dst.is_ipv6() { "v6" } else { "v4" },
            c.sport,
            c.dport,
            action_name(e.action),
            e.reason.name(),
            e.oif.map(|i| self.name(i)).unwrap_or_default(),
            e.neighbour,
            e.vrf,
            problems.join("; "),
            c.dst,
            c.src,
            ingress.name,
            hex(&e.frame),
        ));
        Ok(())
    }
}
