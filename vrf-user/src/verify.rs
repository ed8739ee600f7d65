//! `vrfctl verify`: the differential, live. For a destination inside every route of each VRF's
//! table (the kernel's routes and the maps' entries both, so a route vrfd forgot and an entry
//! the kernel no longer has are both asked about), the kernel is asked (RTM_GETROUTE with a
//! member as iif, [`RouteOracle`]) and so is the loaded program (the explain entry point through
//! BPF_PROG_TEST_RUN, which counts nothing). Every disagreement is reported; a pass to the kernel
//! is never one (the kernel then decides itself).
//!
//! vrfd can call [`verify`] on its own [`DataPlane`] periodically; vrfctl calls it on the
//! pinned explain program ([`PinnedExplain`]). Call it on a thread in the VRFs' network namespace.
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
};

use anyhow::{Context as _, Result};
use ipnet::IpNet;
use netlink_packet_route::route::RouteType;
use serde::Serialize;

use crate::{
    dataplane::{DataPlane, Explanation, PinnedExplain, XDP_DROP, XDP_PASS, XDP_REDIRECT},
    inspect::{self, ifname},
    maps::Maps,
    oracle::{KernelAnswer, RouteOracle},
    packet::FrameSpec,
};

/// A loaded program that can explain a packet: vrfd's own, or the one vrfd pinned.
pub trait Explainer {
    fn maps(&self) -> &Maps;
    fn explain(&mut self, ifindex: u32, frame: &[u8]) -> Result<Explanation>;
}

impl Explainer for DataPlane {
    fn maps(&self) -> &Maps {
        &self.maps
    }
    fn explain(&mut self, ifindex: u32, frame: &[u8]) -> Result<Explanation> {
        DataPlane::explain(self, ifindex, frame)
    }
}

impl Explainer for PinnedExplain {
    fn maps(&self) -> &Maps {
        &self.maps
    }
    fn explain(&mut self, ifindex: u32, frame: &[u8]) -> Result<Explanation> {
        PinnedExplain::explain(self, ifindex, frame)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only this VRF.
    pub vrf: Option<String>,
    /// At most this many routes per VRF, drawn at random.
    pub sample: Option<usize>,
}

/// One destination on which the program and the kernel disagree.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    pub vrf: String,
    pub table: u32,
    /// The route the destination was drawn from.
    pub prefix: String,
    pub destination: IpAddr,
    pub source: IpAddr,
    pub iif: String,
    /// The kernel's answer: `unicast via GW dev IF`, `blackhole`, `EHOSTUNREACH`, …
    pub kernel: String,
    /// The program's: `forward via GW dev IF`, `drop (reason)`.
    pub data_plane: String,
    pub problem: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub vrfs: usize,
    /// Destinations asked about (each once of the kernel and once of the program).
    pub checked: usize,
    /// Of them, the program forwarded / passed / dropped.
    pub forwarded: usize,
    pub passed: usize,
    pub dropped: usize,
    /// Routes whose every address a more specific route of the same table covers.
    pub shadowed: usize,
    pub mismatches: Vec<Mismatch>,
    /// What the program leaves to the kernel, and why (not a disagreement: what is not
    /// accelerated).
    pub passed_to_kernel: Vec<Passed>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Passed {
    pub vrf: String,
    pub prefix: String,
    pub destination: IpAddr,
    pub iif: String,
    pub reason: &'static str,
    pub kernel: String,
}

/// Compare the kernel and the program on every VRF `program` serves (or `opts.vrf`).
pub fn verify(
    program: &mut dyn Explainer,
    oracle: &mut RouteOracle,
    opts: &Options,
) -> Result<Report> {
    let vrfs = inspect::vrfs(program.maps())?;
    if let Some(name) = &opts.vrf {
        if !vrfs.iter().any(|v| &v.name == name) {
            anyhow::bail!("no VRF named {name:?} (vrfctl show lists them)");
        }
    }
    let locals = local_addresses()?;
    let map_routes = program.maps().routes()?;
    let mut report = Report::default();
    let mut rng = Rng::seeded();
    for vrf in vrfs
        .iter()
        .filter(|v| opts.vrf.as_ref().is_none_or(|n| *n == v.name))
    {
        report.vrfs += 1;
        let members: Vec<u32> = vrf
            .members
            .iter()
            .filter(|m| m.up)
            .map(|m| m.ifindex)
            .collect();
        if members.is_empty() {
            continue;
        }
        // The table's prefixes: the kernel's, and whatever the maps hold for it.
        let mut prefixes: BTreeSet<IpNet> = oracle
            .table_routes(vrf.table)
            .with_context(|| format!("dumping table {}", vrf.table))?
            .into_iter()
            .map(|r| r.prefix)
            .collect();
        prefixes.extend(
            map_routes
                .iter()
                .filter(|(t, _, _)| *t == vrf.table)
                .map(|(_, p, _)| *p),
        );
        let all: Vec<IpNet> = prefixes.iter().copied().collect();
        // Neighbours on the VRF's members: inside a connected route, one of them is the
        // destination that exercises a forward.
        let neighbours: Vec<IpAddr> = program
            .maps()
            .neigh
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| vrf.members.iter().any(|m| m.ifindex == k.ifindex))
            .filter_map(|k| crate::maps::addr_from16(k.family, k.addr))
            .collect();
        let mut chosen = all.clone();
        if let Some(n) = opts.sample {
            rng.shuffle(&mut chosen);
            chosen.truncate(n);
        }
        // A source valid on each member: an address of one of its connected routes.
        let mut sources: BTreeMap<(u32, bool), IpAddr> = BTreeMap::new();
        for prefix in chosen {
            let Some(dst) = destination_in(prefix, &all, &neighbours, &locals) else {
                report.shadowed += 1;
                continue;
            };
            let v6 = dst.is_ipv6();
            // Arrive on a member the kernel does not send the answer back out of, if any.
            let kernel_oifs = match oracle.route_get(members[0], fallback_source(v6), dst)? {
                KernelAnswer::Route { paths, .. } => paths.iter().map(|p| p.oif).collect(),
                KernelAnswer::Error(_) => Vec::new(),
            };
            let iif = members
                .iter()
                .copied()
                .find(|m| !kernel_oifs.contains(m))
                .unwrap_or(members[0]);
            let src = match sources.get(&(iif, v6)) {
                Some(s) => *s,
                None => {
                    let s = member_source(oracle, iif, v6, &all, &neighbours, &locals)?
                        .unwrap_or_else(|| fallback_source(v6));
                    sources.insert((iif, v6), s);
                    s
                }
            };
            report.checked += 1;
            let kernel = oracle.route_get(iif, src, dst)?;
            let mut spec = FrameSpec::new(src, dst);
            if let Some(link) = program.maps().link(iif)? {
                spec.dst_mac = link.mac;
            }
            let frame = spec.udp()?;
            let e = program
                .explain(iif, &frame)
                .with_context(|| format!("running the program on {src} → {dst}"))?;
            let problem = match e.action {
                XDP_PASS => {
                    report.passed += 1;
                    report.passed_to_kernel.push(Passed {
                        vrf: vrf.name.clone(),
                        prefix: prefix.to_string(),
                        destination: dst,
                        iif: name(iif),
                        reason: e.reason.name(),
                        kernel: describe_kernel(&kernel),
                    });
                    None
                }
                XDP_REDIRECT => {
                    report.forwarded += 1;
                    forward_problem(&kernel, &e, dst)
                }
                XDP_DROP => {
                    report.dropped += 1;
                    (kernel != KernelAnswer::Error(libc::EINVAL))
                        .then(|| "the program drops what the kernel does not".to_string())
                }
                other => Some(format!("the program returned XDP action {other}")),
            };
            if let Some(problem) = problem {
                report.mismatches.push(Mismatch {
                    vrf: vrf.name.clone(),
                    table: vrf.table,
                    prefix: prefix.to_string(),
                    destination: dst,
                    source: src,
                    iif: name(iif),
                    kernel: describe_kernel(&kernel),
                    data_plane: describe_program(&e, dst),
                    problem,
                });
            }
        }
    }
    Ok(report)
}

/// What is wrong with forwarding `e`, given the kernel's answer; None when the kernel takes
/// one of the same paths.
fn forward_problem(kernel: &KernelAnswer, e: &Explanation, dst: IpAddr) -> Option<String> {
    let (Some(oif), Some(neigh)) = (e.oif, e.neighbour) else {
        return Some("forwarded without an egress or a neighbour".into());
    };
    match kernel {
        KernelAnswer::Route {
            kind: RouteType::Unicast,
            paths,
            ..
        } => {
            let on_path = paths.iter().any(|p| {
                p.oif == oif
                    && match p.gateway {
                        Some(g) => g == neigh,
                        None => neigh == dst,
                    }
            });
            (!on_path).then(|| "forwarded by another path than the kernel's".to_string())
        }
        KernelAnswer::Route { kind, .. } => Some(format!(
            "forwarded where the kernel's route is {}",
            format!("{kind:?}").to_lowercase()
        )),
        KernelAnswer::Error(_) => Some("forwarded where the kernel refuses".into()),
    }
}

fn name(ifindex: u32) -> String {
    ifname(ifindex).unwrap_or_else(|| format!("if{ifindex}"))
}

fn describe_kernel(k: &KernelAnswer) -> String {
    match k {
        KernelAnswer::Route {
            kind,
            table,
            prefix,
            paths,
        } => {
            let mut s = format!(
                "{} {prefix} table {table}",
                format!("{kind:?}").to_lowercase()
            );
            for p in paths {
                match p.gateway {
                    Some(g) => s += &format!(" via {g} dev {}", name(p.oif)),
                    None => s += &format!(" dev {}", name(p.oif)),
                }
            }
            s
        }
        KernelAnswer::Error(_) => k.label(),
    }
}

fn describe_program(e: &Explanation, dst: IpAddr) -> String {
    match e.action {
        XDP_REDIRECT => {
            let mut s = "forward".to_string();
            if let Some(n) = e.neighbour.filter(|n| *n != dst) {
                s += &format!(" via {n}");
            }
            if let Some(oif) = e.oif {
                s += &format!(" dev {}", name(oif));
            }
            s
        }
        XDP_DROP => format!("drop ({})", e.reason.name()),
        XDP_PASS => format!("pass ({})", e.reason.name()),
        other => format!("action {other}"),
    }
}

/// The documentation addresses `vrfctl lookup` uses by default.
fn fallback_source(v6: bool) -> IpAddr {
    if v6 {
        "2001:db8::1".parse().expect("address")
    } else {
        "198.51.100.1".parse().expect("address")
    }
}

/// An address inside `prefix` that no more specific prefix of `table` covers: one of the
/// `preferred` (known neighbours, so that a forward is exercised) if any is, else a host of the
/// largest uncovered part, one of the router's own only when nothing else is left; None when
/// more specific routes cover all of it.
pub fn destination_in(
    prefix: IpNet,
    table: &[IpNet],
    preferred: &[IpAddr],
    locals: &HashSet<IpAddr>,
) -> Option<IpAddr> {
    let inner: Vec<IpNet> = table
        .iter()
        .filter(|q| q.prefix_len() > prefix.prefix_len() && prefix.contains(*q))
        .copied()
        .collect();
    let uncovered = |a: &IpAddr| prefix.contains(a) && !inner.iter().any(|q| q.contains(a));
    // A link-local neighbour only for a link-local route (not for a default route, say).
    let scope_fits = |a: &IpAddr| !link_local(*a) || link_local(prefix.network());
    if let Some(a) = preferred
        .iter()
        .find(|a| uncovered(a) && scope_fits(a) && !locals.contains(a))
    {
        return Some(*a);
    }
    free_address(prefix, &inner, locals)
}

/// fe80::/10 and 169.254.0.0/16.
fn link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => v.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// Breadth first over halves of `range`: a host of the largest part no prefix of `inner` touches.
/// Only parts holding an inner prefix are split, so the work is bounded by their number.
fn free_address(range: IpNet, inner: &[IpNet], locals: &HashSet<IpAddr>) -> Option<IpAddr> {
    let mut level = vec![range];
    while !level.is_empty() {
        let mut next = Vec::new();
        for r in level {
            if inner.iter().any(|q| q.contains(&r)) {
                continue;
            }
            if !inner.iter().any(|q| r.contains(q)) {
                return pick(r, locals);
            }
            if let Ok(halves) = r.subnets(r.prefix_len() + 1) {
                next.extend(halves);
            }
        }
        level = next;
    }
    None
}

/// A host address of `range`: the network address + 1, + 2, … (not the router's own), the
/// network address itself for /31, /32, /127, /128.
fn pick(range: IpNet, locals: &HashSet<IpAddr>) -> Option<IpAddr> {
    let hosts = range.max_prefix_len() - range.prefix_len();
    if hosts <= 1 {
        return Some(range.network());
    }
    // Nothing but the router's own: ask about that (the program must not forward it).
    (1..=8u32.min((1u32 << hosts.min(31)) - 2))
        .map(|k| offset(range.network(), k))
        .find(|a| !locals.contains(a))
        .or(Some(offset(range.network(), 1)))
}

fn offset(a: IpAddr, k: u32) -> IpAddr {
    match a {
        IpAddr::V4(v) => IpAddr::V4((u32::from(v).wrapping_add(k)).into()),
        IpAddr::V6(v) => IpAddr::V6((u128::from(v).wrapping_add(u128::from(k))).into()),
    }
}

/// A source the kernel accepts on `iif`: a host of one of the table's prefixes the kernel
/// routes straight out of `iif` (a connected route), not an address of the router.
fn member_source(
    oracle: &mut RouteOracle,
    iif: u32,
    v6: bool,
    table: &[IpNet],
    neighbours: &[IpAddr],
    locals: &HashSet<IpAddr>,
) -> Result<Option<IpAddr>> {
    for prefix in table.iter().filter(|p| p.addr().is_ipv6() == v6) {
        let Some(candidate) = destination_in(*prefix, table, neighbours, locals) else {
            continue;
        };
        // A link-local source is never forwarded (by the kernel or the program).
        if link_local(candidate) {
            continue;
        }
        // Connected through iif: the kernel sends the candidate out of iif without a gateway.
        if let KernelAnswer::Route {
            kind: RouteType::Unicast,
            paths,
            ..
        } = oracle.route_get(iif, fallback_source(v6), candidate)?
        {
            if paths.len() == 1 && paths[0].oif == iif && paths[0].gateway.is_none() {
                return Ok(Some(candidate));
            }
        }
    }
    Ok(None)
}

/// The addresses of every interface in the calling thread's network namespace.
pub fn local_addresses() -> Result<HashSet<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills head with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getifaddrs");
    }
    let mut out = HashSet::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of the family it names.
            match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
                libc::AF_INET => {
                    let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    out.insert(IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes()));
                }
                libc::AF_INET6 => {
                    let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                    out.insert(IpAddr::from(sa.sin6_addr.s6_addr));
                }
                _ => {}
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// A small xorshift for `--sample` (no cryptography, no reproducibility needed).
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng(t | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// The report as vrfctl prints it for a person.
pub fn text(report: &Report) -> String {
    let mut s = String::new();
    for m in &report.mismatches {
        s += &format!(
            "MISMATCH VRF {} table {} route {}: {} → {} from {}\n    kernel:     {}\n    data plane: {}\n    problem:    {}\n",
            m.vrf, m.table, m.prefix, m.source, m.destination, m.iif, m.kernel, m.data_plane, m.problem
        );
    }
    s += &format!(
        "{} VRFs, {} destinations checked ({} forwarded, {} passed to the kernel, {} dropped), {} mismatches\n",
        report.vrfs,
        report.checked,
        report.forwarded,
        report.passed,
        report.dropped,
        report.mismatches.len()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|p| p.parse().unwrap()).collect()
    }

    #[test]
    fn a_destination_avoids_more_specific_routes_and_own_addresses() {
        let table = nets(&["10.0.0.0/8", "10.0.0.0/9", "10.128.0.0/10", "10.0.1.0/24"]);
        let none = HashSet::new();
        let at = |p: usize, t: &[IpNet], pref: &[&str], locals: &HashSet<IpAddr>| {
            let pref: Vec<IpAddr> = pref.iter().map(|a| a.parse().unwrap()).collect();
            destination_in(t[p], t, &pref, locals).map(|a| a.to_string())
        };
        // /8 minus 10.0/9 and 10.128/10: 10.192.0.0/10 is free.
        assert_eq!(at(0, &table, &[], &none).as_deref(), Some("10.192.0.1"));
        // A known neighbour inside, outside the more specifics, wins.
        assert_eq!(
            at(0, &table, &["10.0.1.9", "10.200.0.7"], &none).as_deref(),
            Some("10.200.0.7")
        );
        assert_eq!(at(1, &table, &[], &none).as_deref(), Some("10.64.0.1"));
        // The router's own /32 and broadcast inside a connected /24: the largest free part.
        let connected = nets(&["10.0.1.0/24", "10.0.1.1/32", "10.0.1.255/32"]);
        assert_eq!(at(0, &connected, &[], &none).as_deref(), Some("10.0.1.65"));
        assert_eq!(
            at(0, &connected, &["10.0.1.1", "10.0.1.2"], &none).as_deref(),
            Some("10.0.1.2")
        );
        let locals: HashSet<IpAddr> = ["10.0.1.1".parse().unwrap()].into();
        assert_eq!(at(1, &connected, &[], &locals).as_deref(), Some("10.0.1.1"));
        assert_eq!(at(3, &table, &[], &locals).as_deref(), Some("10.0.1.2"));
        // Fully covered by its two halves.
        let covered = nets(&["10.0.0.0/16", "10.0.0.0/17", "10.0.128.0/17"]);
        assert_eq!(at(0, &covered, &[], &none), None);
        let host = nets(&["192.0.2.7/32", "fd00::/64"]);
        assert_eq!(at(0, &host, &[], &none).as_deref(), Some("192.0.2.7"));
        assert_eq!(at(1, &host, &[], &none).as_deref(), Some("fd00::1"));
        // A link-local neighbour is no destination for a default route.
        let default = nets(&["::/0", "fd00::/64"]);
        assert_eq!(
            at(0, &default, &["fe80::1", "2001:db8::5"], &none).as_deref(),
            Some("2001:db8::5")
        );
    }
}
