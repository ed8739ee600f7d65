//! The standard test topology: one `router` namespace holding tenant "VRFs" emulated with
//! policy routing (this kernel has no vrf.ko), and one host namespace per VRF member.
//!
//! For every VRF `{name, table}` and member `i` with subnets `S4`, `S6`:
//! - host namespace connected by a veth pair: router side `<name><i>` (e.g. `red0`), host side `eth0`;
//! - router side gets `S4.1` (`noprefixroute`) and `S6::1` (`nodad noprefixroute`); the connected
//!   routes go into table `table` (`proto kernel scope link src ...`);
//! - `ip rule add iif <member> lookup <table> pref 1000` for IPv4 and IPv6;
//! - `unreachable default metric 4278198272` in the table (IPv4 and IPv6);
//! - host side gets `S4.2`, `S6::2` (`nodad`), default routes via the router addresses, GRO on;
//! - permanent neighbour entries both ways (router → host, host → router), v4 and v6.
//!
//! The router has `net.ipv4.ip_forward=1`, `net.ipv6.conf.all.forwarding=1`, rp_filter 0 and
//! DAD off. Dropping the [`Topology`] deletes the host namespaces first, then the router.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context, Result};

use crate::link;
use crate::netns::NetNs;

/// The metric the kernel's VRF driver uses for the per-table `unreachable default` route.
pub const VRF_DEFAULT_METRIC: u32 = 4278198272;
/// `ip rule` preference of the `iif <member> lookup <table>` rules.
pub const RULE_PREF: u32 = 1000;
/// Interface name of every host's end of its veth pair.
pub const HOST_IFNAME: &str = "eth0";

pub use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Host addresses inside a prefix of `ipnet`: the router is `.1`, the host `.2`.
pub trait Nth {
    type Addr: fmt::Display;
    /// The `n`-th address of the prefix (`10.0.1.0/24`.nth(2) = 10.0.1.2).
    fn nth(&self, n: u32) -> Self::Addr;
    /// `addr/len` of the `n`-th address, as `ip addr add` wants it.
    fn cidr_of(&self, n: u32) -> String;
}

impl Nth for Ipv4Net {
    type Addr = Ipv4Addr;
    fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()).wrapping_add(n))
    }
    fn cidr_of(&self, n: u32) -> String {
        format!("{}/{}", self.nth(n), self.prefix_len())
    }
}

impl Nth for IpNet {
    type Addr = IpAddr;
    fn nth(&self, n: u32) -> IpAddr {
        match self {
            IpNet::V4(net) => net.nth(n).into(),
            IpNet::V6(net) => net.nth(n).into(),
        }
    }
    fn cidr_of(&self, n: u32) -> String {
        format!("{}/{}", self.nth(n), self.prefix_len())
    }
}

impl Nth for Ipv6Net {
    type Addr = Ipv6Addr;
    fn nth(&self, n: u32) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.network()).wrapping_add(u128::from(n)))
    }
    fn cidr_of(&self, n: u32) -> String {
        format!("{}/{}", self.nth(n), self.prefix_len())
    }
}

/// A prefix as a test writes it, normalised to its network address (`10.0.1.77/24` is
/// `10.0.1.0/24`). Panics on a malformed one (this is test code).
fn v4_subnet(s: &str) -> Ipv4Net {
    let net: Ipv4Net = s
        .parse()
        .unwrap_or_else(|e| panic!("bad IPv4 subnet {s:?}: {e}"));
    net.trunc()
}

fn v6_subnet(s: &str) -> Ipv6Net {
    let net: Ipv6Net = s
        .parse()
        .unwrap_or_else(|e| panic!("bad IPv6 subnet {s:?}: {e}"));
    net.trunc()
}

/// One VRF member link. The router uses host number 1 of each subnet, the host number 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSpec {
    pub subnet4: Option<Ipv4Net>,
    pub subnet6: Option<Ipv6Net>,
}

impl MemberSpec {
    /// Dual-stack member, e.g. `MemberSpec::dual("10.0.1.0/24", "fd00:1::/64")`.
    /// Panics on malformed prefixes (this is test code).
    pub fn dual(subnet4: &str, subnet6: &str) -> Self {
        Self {
            subnet4: Some(v4_subnet(subnet4)),
            subnet6: Some(v6_subnet(subnet6)),
        }
    }

    pub fn v4(subnet4: &str) -> Self {
        Self {
            subnet4: Some(v4_subnet(subnet4)),
            subnet6: None,
        }
    }

    pub fn v6(subnet6: &str) -> Self {
        Self {
            subnet4: None,
            subnet6: Some(v6_subnet(subnet6)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrfSpec {
    /// Short name (≤ 12 chars, letters/digits): member interfaces are `<name><index>`.
    pub name: String,
    /// Routing table id of the tenant.
    pub table: u32,
    pub members: Vec<MemberSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologySpec {
    /// Namespace name prefix: every namespace is `vx-<prefix>-<pid>-<n>`. Use a distinct one per
    /// test so `list_own_netns(prefix)` finds only that test's namespaces.
    pub prefix: String,
    pub vrfs: Vec<VrfSpec>,
}

impl TopologySpec {
    /// The canonical topology: VRFs `red` (table 110) and `blue` (table 120) with identical,
    /// overlapping addressing. Member 0 ("host A"): 10.0.1.0/24 + fd00:1::/64, member 1
    /// ("host B"): 10.0.2.0/24 + fd00:2::/64. Router = .1 / ::1, host = .2 / ::2.
    pub fn two_vrfs_identical() -> Self {
        let members = vec![
            MemberSpec::dual("10.0.1.0/24", "fd00:1::/64"),
            MemberSpec::dual("10.0.2.0/24", "fd00:2::/64"),
        ];
        TopologySpec {
            prefix: "topo".into(),
            vrfs: vec![
                VrfSpec {
                    name: "red".into(),
                    table: 110,
                    members: members.clone(),
                },
                VrfSpec {
                    name: "blue".into(),
                    table: 120,
                    members,
                },
            ],
        }
    }

    /// [`two_vrfs_identical`](Self::two_vrfs_identical) with a third member in each VRF
    /// (10.0.3.0/24 + fd00:3::/64): room for multipath and nexthop groups.
    pub fn two_vrfs_three_members() -> Self {
        let mut spec = Self::two_vrfs_identical();
        for v in &mut spec.vrfs {
            v.members
                .push(MemberSpec::dual("10.0.3.0/24", "fd00:3::/64"));
        }
        spec
    }

    /// Builds it as root, or panics with the cause.
    pub fn built(&self) -> Topology {
        crate::require_root();
        self.build()
            .unwrap_or_else(|e| panic!("building the topology: {e:#}"))
    }

    /// [`built`](Self::built), the hosts ready for TCP/UDP that XDP redirects between veths
    /// (see [`crate::fastpath::complete_host_checksums`]).
    pub fn built_for_xdp(&self) -> Topology {
        let topo = self.built();
        crate::fastpath::complete_host_checksums(&topo)
            .unwrap_or_else(|e| panic!("host checksums: {e:#}"));
        topo
    }

    /// Replaces the namespace name prefix.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Builds it (same as [`Topology::build`]).
    pub fn build(&self) -> Result<Topology> {
        Topology::build(self)
    }
}

/// A built VRF member: the router-side interface and the host behind it.
#[derive(Debug)]
pub struct Member {
    /// The host's namespace (its interface is [`HOST_IFNAME`]).
    pub host: NetNs,
    pub vrf: String,
    pub table: u32,
    pub index: usize,
    /// Router-side interface name (`red0`) and its ifindex / MAC in the router namespace.
    pub ifname: String,
    pub ifindex: u32,
    pub router_mac: [u8; 6],
    /// Host-side interface (`eth0`) ifindex / MAC in the host namespace.
    pub host_ifindex: u32,
    pub host_mac: [u8; 6],
    pub subnet4: Option<Ipv4Net>,
    pub subnet6: Option<Ipv6Net>,
}

impl Member {
    /// Router address in this member's IPv4 subnet (`.1`). Panics if the member has no IPv4.
    pub fn router4(&self) -> Ipv4Addr {
        self.subnet4.expect("member has no IPv4 subnet").nth(1)
    }
    /// Host address in this member's IPv4 subnet (`.2`).
    pub fn host4(&self) -> Ipv4Addr {
        self.subnet4.expect("member has no IPv4 subnet").nth(2)
    }
    /// Router address in this member's IPv6 subnet (`::1`).
    pub fn router6(&self) -> Ipv6Addr {
        self.subnet6.expect("member has no IPv6 subnet").nth(1)
    }
    /// Host address in this member's IPv6 subnet (`::2`).
    pub fn host6(&self) -> Ipv6Addr {
        self.subnet6.expect("member has no IPv6 subnet").nth(2)
    }
}

#[derive(Debug)]
pub struct Vrf {
    pub name: String,
    pub table: u32,
    pub members: Vec<Member>,
}

/// All namespaces of a built topology. Field order matters: hosts (in `vrfs`) drop before the
/// router.
#[derive(Debug)]
pub struct Topology {
    vrfs: Vec<Vrf>,
    router: NetNs,
    spec: TopologySpec,
}

fn validate(spec: &TopologySpec) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    let mut tables = std::collections::HashSet::new();
    for v in &spec.vrfs {
        if v.name.is_empty()
            || v.name.len() > 12
            || !v.name.chars().all(|c| c.is_ascii_alphanumeric())
        {
            bail!("VRF name {:?} must be 1..=12 ASCII letters/digits", v.name);
        }
        if !names.insert(v.name.clone()) {
            bail!("duplicate VRF name {:?}", v.name);
        }
        if !tables.insert(v.table) || v.table == 0 || (253..=255).contains(&v.table) {
            bail!(
                "VRF {:?}: table {} is reserved or duplicate",
                v.name,
                v.table
            );
        }
        if v.members.len() > 999 {
            bail!("VRF {:?}: too many members", v.name);
        }
        for (i, m) in v.members.iter().enumerate() {
            if m.subnet4.is_none() && m.subnet6.is_none() {
                bail!("VRF {:?} member {i}: no subnet", v.name);
            }
            if m.subnet4.is_some_and(|s| s.prefix_len() > 30)
                || m.subnet6.is_some_and(|s| s.prefix_len() > 126)
            {
                bail!(
                    "VRF {:?} member {i}: subnet too small for router .1 and host .2",
                    v.name
                );
            }
        }
    }
    Ok(())
}

/// A new router namespace: forwarding on for both versions, rp_filter and DAD off (the kernel
/// routes between the members at once, and only by its tables).
pub fn router_ns(prefix: &str) -> Result<NetNs> {
    let router = NetNs::new(prefix)?;
    for (k, v) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv6.conf.default.forwarding", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
    ] {
        router.sysctl(k, v)?;
    }
    Ok(router)
}

impl Topology {
    /// Creates every namespace, link, address, route, rule and neighbour of `spec`. On error,
    /// whatever was already created is removed.
    pub fn build(spec: &TopologySpec) -> Result<Topology> {
        validate(spec)?;
        let router = router_ns(&spec.prefix).context("create router namespace")?;

        let mut vrfs = Vec::new();
        for vs in &spec.vrfs {
            let table = vs.table.to_string();
            let metric = VRF_DEFAULT_METRIC.to_string();
            for family in ["-4", "-6"] {
                router.ip(&[
                    family,
                    "route",
                    "add",
                    "unreachable",
                    "default",
                    "metric",
                    &metric,
                    "table",
                    &table,
                ])?;
            }

            let mut members = Vec::new();
            for (i, ms) in vs.members.iter().enumerate() {
                let m = build_member(&router, &spec.prefix, vs, i, ms)
                    .with_context(|| format!("VRF {} member {i}", vs.name))?;
                members.push(m);
            }
            vrfs.push(Vrf {
                name: vs.name.clone(),
                table: vs.table,
                members,
            });
        }
        Ok(Topology {
            vrfs,
            router,
            spec: spec.clone(),
        })
    }

    pub fn spec(&self) -> &TopologySpec {
        &self.spec
    }

    /// The router namespace (where the XDP data plane is attached).
    pub fn router(&self) -> &NetNs {
        &self.router
    }

    pub fn vrfs(&self) -> &[Vrf] {
        &self.vrfs
    }

    /// Panics if there is no VRF `name`.
    pub fn vrf(&self, name: &str) -> &Vrf {
        self.vrfs
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no VRF {name:?} in topology"))
    }

    /// Panics if there is no such member.
    pub fn member(&self, vrf: &str, index: usize) -> &Member {
        let v = self.vrf(vrf);
        v.members
            .get(index)
            .unwrap_or_else(|| panic!("VRF {vrf:?} has no member {index}"))
    }

    /// Re-creates what the topology set up for member `index` of `vrf` on the router side and the
    /// kernel removes when the link goes down: the IPv6 address, the connected routes in the VRF's
    /// table, and the permanent neighbours (idempotent).
    pub fn restore_member(&self, vrf: &str, index: usize) {
        let m = self.member(vrf, index);
        let r = self.router();
        let table = m.table.to_string();
        let mac = crate::mac_to_string(m.host_mac);
        let s4 = m.subnet4.unwrap();
        let s6 = m.subnet6.unwrap();
        let has_v6 = r
            .ip(&["-6", "addr", "show", "dev", &m.ifname])
            .unwrap()
            .contains(&m.router6().to_string());
        if !has_v6 {
            r.ip(&[
                "addr",
                "add",
                &s6.cidr_of(1),
                "dev",
                &m.ifname,
                "nodad",
                "noprefixroute",
            ])
            .unwrap();
        }
        for (net, src) in [
            (s4.to_string(), m.router4().to_string()),
            (s6.to_string(), m.router6().to_string()),
        ] {
            r.ip(&[
                "route", "replace", &net, "dev", &m.ifname, "table", &table, "proto", "kernel",
                "scope", "link", "src", &src,
            ])
            .unwrap();
        }
        for addr in [m.host4().to_string(), m.host6().to_string()] {
            r.ip(&[
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &mac,
                "dev",
                &m.ifname,
                "nud",
                "permanent",
            ])
            .unwrap();
        }
    }

    /// All members of all VRFs.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.vrfs.iter().flat_map(|v| v.members.iter())
    }

    /// The host namespace behind member `index` of `vrf`.
    pub fn host(&self, vrf: &str, index: usize) -> &NetNs {
        &self.member(vrf, index).host
    }

    /// Router-side interface name (`red0`).
    pub fn member_ifname(&self, vrf: &str, index: usize) -> &str {
        &self.member(vrf, index).ifname
    }

    /// Router-side ifindex (in the router namespace).
    pub fn member_ifindex(&self, vrf: &str, index: usize) -> u32 {
        self.member(vrf, index).ifindex
    }

    /// MAC of the router-side member interface.
    pub fn router_mac(&self, vrf: &str, index: usize) -> [u8; 6] {
        self.member(vrf, index).router_mac
    }

    /// MAC of the host's `eth0`.
    pub fn host_mac(&self, vrf: &str, index: usize) -> [u8; 6] {
        self.member(vrf, index).host_mac
    }

    pub fn host_addr4(&self, vrf: &str, index: usize) -> Ipv4Addr {
        self.member(vrf, index).host4()
    }

    pub fn router_addr4(&self, vrf: &str, index: usize) -> Ipv4Addr {
        self.member(vrf, index).router4()
    }

    pub fn host_addr6(&self, vrf: &str, index: usize) -> Ipv6Addr {
        self.member(vrf, index).host6()
    }

    pub fn router_addr6(&self, vrf: &str, index: usize) -> Ipv6Addr {
        self.member(vrf, index).router6()
    }

    /// Host address of the given family (`v6 = false` → IPv4).
    pub fn host_addr(&self, vrf: &str, index: usize, v6: bool) -> IpAddr {
        if v6 {
            self.host_addr6(vrf, index).into()
        } else {
            self.host_addr4(vrf, index).into()
        }
    }

    /// Deletes the `iif <member> lookup <table> pref 1000` rules the topology added (both
    /// families) for the members of `vrfs`, so that the rules vrfd adds are the only ones.
    /// Panics when one is not there (this is test code).
    pub fn remove_rules(&self, vrfs: &[&str]) {
        for m in self.members().filter(|m| vrfs.contains(&m.vrf.as_str())) {
            for fam in ["-4", "-6"] {
                let (iif, table, pref) = (&m.ifname, m.table.to_string(), RULE_PREF.to_string());
                self.router
                    .ip(&[
                        fam, "rule", "del", "iif", iif, "lookup", &table, "pref", &pref,
                    ])
                    .unwrap_or_else(|e| panic!("{e:#}"));
            }
        }
    }

    /// [`Topology::remove_rules`] for every VRF.
    pub fn remove_all_rules(&self) {
        let names: Vec<&str> = self.vrfs.iter().map(|v| v.name.as_str()).collect();
        self.remove_rules(&names);
    }

    /// Names of every namespace in the topology (router first).
    pub fn netns_names(&self) -> Vec<String> {
        std::iter::once(self.router.name().to_string())
            .chain(self.members().map(|m| m.host.name().to_string()))
            .collect()
    }

    /// Human-readable summary (namespaces, interfaces, addresses), handy in failure messages.
    pub fn describe(&self) -> String {
        let mut s = format!("router netns {}\n", self.router.name());
        for m in self.members() {
            s += &format!(
                "  {}[{}] table {} {} (ifindex {}, {}) <-> netns {} {} ({}) v4 {:?} v6 {:?}\n",
                m.vrf,
                m.index,
                m.table,
                m.ifname,
                m.ifindex,
                link::mac_to_string(m.router_mac),
                m.host.name(),
                HOST_IFNAME,
                link::mac_to_string(m.host_mac),
                m.subnet4.map(|s| s.to_string()),
                m.subnet6.map(|s| s.to_string()),
            );
        }
        s
    }
}

fn build_member(
    router: &NetNs,
    prefix: &str,
    vs: &VrfSpec,
    index: usize,
    ms: &MemberSpec,
) -> Result<Member> {
    let host = NetNs::new(prefix).context("create host namespace")?;
    for (k, v) in [
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
    ] {
        host.sysctl(k, v)?;
    }
    let ifname = format!("{}{}", vs.name, index);
    let table = vs.table.to_string();
    let pref = RULE_PREF.to_string();

    link::veth_pair(router, &ifname, &host, HOST_IFNAME)?;
    link::set_gro(&host, HOST_IFNAME, true)?;
    link::set_up(router, &ifname)?;
    link::set_up(&host, HOST_IFNAME)?;

    let router_mac = link::mac(router, &ifname)?;
    let host_mac = link::mac(&host, HOST_IFNAME)?;

    for fam in ["-4", "-6"] {
        router.ip(&[
            fam, "rule", "add", "iif", &ifname, "lookup", &table, "pref", &pref,
        ])?;
    }

    // Per family: `ip` flag, subnet, address options on the router and on the host.
    let families = ms
        .subnet4
        .map(|s| ("-4", IpNet::V4(s), &["noprefixroute"][..], &[][..]))
        .into_iter()
        .chain(ms.subnet6.map(|s| {
            let router_opts = &["nodad", "noprefixroute"][..];
            ("-6", IpNet::V6(s), router_opts, &["nodad"][..])
        }));
    for (fam, net, router_opts, host_opts) in families {
        let (r, h) = (net.nth(1).to_string(), net.nth(2).to_string());
        link::add_addr(router, &ifname, &net.cidr_of(1), router_opts)?;
        link::add_addr(&host, HOST_IFNAME, &net.cidr_of(2), host_opts)?;
        let subnet = net.to_string();
        router.ip(&[
            fam, "route", "add", &subnet, "dev", &ifname, "table", &table, "proto", "kernel",
            "scope", "link", "src", &r,
        ])?;
        host.ip(&[
            fam,
            "route",
            "add",
            "default",
            "via",
            &r,
            "dev",
            HOST_IFNAME,
        ])?;
        link::add_permanent_neigh(router, &ifname, &h, host_mac)?;
        link::add_permanent_neigh(&host, HOST_IFNAME, &r, router_mac)?;
    }

    Ok(Member {
        ifindex: link::ifindex(router, &ifname)?,
        host_ifindex: link::ifindex(&host, HOST_IFNAME)?,
        host,
        vrf: vs.name.clone(),
        table: vs.table,
        index,
        ifname,
        router_mac,
        host_mac,
        subnet4: ms.subnet4,
        subnet6: ms.subnet6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets() {
        let n = v4_subnet("10.0.1.77/24");
        assert_eq!(n.to_string(), "10.0.1.0/24");
        assert_eq!(n.cidr_of(2), "10.0.1.2/24");
        let n = v6_subnet("fd00:1::5/64");
        assert_eq!(n.to_string(), "fd00:1::/64");
        assert_eq!(n.nth(1).to_string(), "fd00:1::1");
        assert!(validate(&TopologySpec::two_vrfs_identical()).is_ok());
    }
}
