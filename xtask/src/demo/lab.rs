//! The lab's namespaces: a router with two tenant VRFs whose hosts use identical addresses, and a
//! shared-services host whose prefix is leaked into both tenants' tables.
//!
//! VRFs are built from policy routing (no vrf.ko needed): each VRF is a routing table whose
//! members' traffic an `ip rule iif <member> lookup <table>` sends there. vrfd adds those rules
//! itself from its configuration; the lab writes the tables:
//! - router addresses with `noprefixroute`, their connected routes in the VRF's table;
//! - `unreachable default` (the metric a kernel VRF uses) in every table, so nothing falls
//!   through to the main table;
//! - `192.0.2.0/24 dev svc0` in the tenant tables as well: the leak.
//!
//! Like the test topologies: GRO on every host's veth end (XDP_REDIRECT into a veth is dropped
//! otherwise), TX checksum offload off on the hosts (a redirected frame must carry a complete
//! TCP/UDP checksum), permanent neighbour entries both ways (no ARP/ND, so every packet is the
//! traffic's own), forwarding on and rp_filter off on the router.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::proc::{in_ns, run};

/// The metric the kernel's VRF driver gives the `unreachable default` of a VRF table.
const VRF_DEFAULT_METRIC: &str = "4278198272";

/// A VRF: its name (also the prefix of its members' names) and table.
#[derive(Clone, Copy, Debug)]
pub struct Vrf {
    pub name: &'static str,
    pub table: u32,
}

/// The two tenants, with identical addressing.
pub const TENANTS: [Vrf; 2] = [
    Vrf {
        name: "red",
        table: 110,
    },
    Vrf {
        name: "blue",
        table: 120,
    },
];

/// The shared services' VRF: its own table, reachable from the tenants through the leak.
pub const SERVICES: Vrf = Vrf {
    name: "svc",
    table: 200,
};

/// The leaked shared-services prefix and the service's address in it.
pub const SERVICE_PREFIX: &str = "192.0.2.0/24";
pub const SERVICE_ADDR: &str = "192.0.2.10";

/// One router interface (a VRF member) and the host namespace behind it.
#[derive(Clone, Debug)]
pub struct Member {
    pub vrf: Vrf,
    /// Router side, e.g. `red0`.
    pub ifname: String,
    /// The host's namespace; its end of the veth is `eth0`.
    pub host_ns: String,
    /// Short label of the host: `red-a`, `blue-b`, `svc`.
    pub label: String,
    pub router4: String,
    pub host4: String,
    pub prefix4: String,
    /// IPv6 (router, host, prefix); the service host has none.
    pub v6: Option<(String, String, String)>,
}

/// The built lab; dropping it deletes every namespace it created.
pub struct Lab {
    pub router: String,
    pub members: Vec<Member>,
    /// Namespaces created so far, router first.
    created: Vec<String>,
}

/// The members: `<tenant>0` to host A (10.0.1.2, fd00:1::2), `<tenant>1` to host B (10.0.2.2,
/// fd00:2::2) in both tenants, and `svc0` to the service host (192.0.2.10).
fn plan(prefix: &str) -> Vec<Member> {
    let mut members = Vec::new();
    for vrf in TENANTS {
        for (i, site) in ["a", "b"].into_iter().enumerate() {
            let n = i + 1;
            members.push(Member {
                vrf,
                ifname: format!("{}{i}", vrf.name),
                host_ns: format!("{prefix}-{}-{site}", vrf.name),
                label: format!("{}-{site}", vrf.name),
                router4: format!("10.0.{n}.1"),
                host4: format!("10.0.{n}.2"),
                prefix4: format!("10.0.{n}.0/24"),
                v6: Some((
                    format!("fd00:{n}::1"),
                    format!("fd00:{n}::2"),
                    format!("fd00:{n}::/64"),
                )),
            });
        }
    }
    members.push(Member {
        vrf: SERVICES,
        ifname: format!("{}0", SERVICES.name),
        host_ns: format!("{prefix}-{}", SERVICES.name),
        label: SERVICES.name.to_owned(),
        router4: "192.0.2.1".into(),
        host4: SERVICE_ADDR.into(),
        prefix4: SERVICE_PREFIX.into(),
        v6: None,
    });
    members
}

impl Lab {
    /// Creates the namespaces `<prefix>-router`, `<prefix>-red-a`, … and everything in them.
    /// On error, whatever was created is deleted again.
    pub fn build(prefix: &str) -> Result<Lab> {
        let mut lab = Lab {
            router: format!("{prefix}-router"),
            members: plan(prefix),
            created: Vec::new(),
        };
        lab.add_netns(&lab.router.clone())?;
        sysctls(
            &lab.router,
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv6.conf.default.forwarding=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        )?;
        for vrf in TENANTS.iter().chain([&SERVICES]) {
            let table = vrf.table.to_string();
            for family in ["-4", "-6"] {
                ip(
                    &lab.router,
                    &[
                        family,
                        "route",
                        "add",
                        "unreachable",
                        "default",
                        "metric",
                        VRF_DEFAULT_METRIC,
                        "table",
                        &table,
                    ],
                )?;
            }
        }
        for m in lab.members.clone() {
            super::proc::check_interrupt()?;
            lab.add_member(&m)
                .with_context(|| format!("lab: member {} ({})", m.ifname, m.label))?;
        }
        // The leak: the shared-services prefix, reachable from both tenants' tables.
        let svc_if = lab.service().ifname.clone();
        for vrf in TENANTS {
            ip(
                &lab.router,
                &[
                    "route",
                    "add",
                    SERVICE_PREFIX,
                    "dev",
                    &svc_if,
                    "table",
                    &vrf.table.to_string(),
                ],
            )?;
        }
        Ok(lab)
    }

    fn add_netns(&mut self, name: &str) -> Result<()> {
        run(crate::demo::proc::command("ip").args(["netns", "add", name]))?;
        self.created.push(name.to_owned());
        ip(name, &["link", "set", "lo", "up"])?;
        Ok(())
    }

    fn add_member(&mut self, m: &Member) -> Result<()> {
        self.add_netns(&m.host_ns)?;
        let (r, h) = (&self.router, &m.host_ns);
        sysctls(
            h,
            &[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                // No router solicitations: the hosts send only the demo's traffic.
                "net.ipv6.conf.all.router_solicitations=0",
                "net.ipv6.conf.default.router_solicitations=0",
            ],
        )?;
        ip(
            r,
            &[
                "link", "add", &m.ifname, "type", "veth", "peer", "name", "eth0", "netns", h,
            ],
        )?;
        run(in_ns(h, "ethtool").args(["-K", "eth0", "gro", "on", "tx", "off"]))?;
        ip(r, &["link", "set", &m.ifname, "up"])?;
        ip(h, &["link", "set", "eth0", "up"])?;
        let router_mac = mac(r, &m.ifname)?;
        let host_mac = mac(h, "eth0")?;
        let table = m.vrf.table.to_string();

        let mut families = vec![(
            "-4",
            m.router4.as_str(),
            m.host4.as_str(),
            m.prefix4.as_str(),
            "24",
        )];
        if let Some((r6, h6, p6)) = &m.v6 {
            families.push(("-6", r6, h6, p6, "64"));
        }
        for (fam, raddr, haddr, prefix, len) in families {
            let mut flags = vec!["noprefixroute"];
            if fam == "-6" {
                flags.push("nodad");
            }
            let cidr = format!("{raddr}/{len}");
            let mut add = vec![fam, "addr", "add", &cidr, "dev", &m.ifname];
            add.extend(&flags);
            ip(r, &add)?;
            ip(
                h,
                &[fam, "addr", "add", &format!("{haddr}/{len}"), "dev", "eth0"],
            )?;
            ip(
                r,
                &[
                    fam, "route", "add", prefix, "dev", &m.ifname, "table", &table, "proto",
                    "kernel", "scope", "link", "src", raddr,
                ],
            )?;
            ip(h, &[fam, "route", "add", "default", "via", raddr])?;
            neighbour(r, &m.ifname, haddr, &host_mac)?;
            neighbour(h, "eth0", raddr, &router_mac)?;
        }
        Ok(())
    }

    /// The tenant members of `vrf`: host A first, then host B.
    pub fn tenant(&self, vrf: &str) -> Vec<&Member> {
        self.members.iter().filter(|m| m.vrf.name == vrf).collect()
    }

    pub fn service(&self) -> &Member {
        self.members
            .iter()
            .find(|m| m.vrf.name == SERVICES.name)
            .expect("the plan has a service member")
    }

    /// vrfd's configuration for the lab, commented for a reader who has not seen one.
    pub fn config(&self) -> String {
        let mut s = String::from(
            "# vrfd configuration written by `cargo xtask run` for the demo lab.\n\
             # The lab's VRFs are made of policy routing (no vrf.ko needed), so they are\n\
             # declared here. For every member vrfd adds `ip rule iif <member> lookup <table>`\n\
             # (and removes it on exit), mirrors <table> into BPF maps and attaches XDP.\n",
        );
        for (i, vrf) in TENANTS.iter().chain([&SERVICES]).enumerate() {
            let members: Vec<String> = self
                .members
                .iter()
                .filter(|m| m.vrf.name == vrf.name)
                .map(|m| format!("{:?}", m.ifname))
                .collect();
            let interfaces = format!("[{}]", members.join(", "));
            if i == 0 {
                let _ = write!(
                    s,
                    "\n[[vrf]]\n{:<32}# how vrfctl and the metrics name it\n\
                     {:<32}# the kernel routing table the VRF's routes are in\n\
                     {:<32}# member interfaces: XDP on each\n",
                    format!("name = {:?}", vrf.name),
                    format!("table = {}", vrf.table),
                    format!("interfaces = {interfaces}"),
                );
            } else {
                let _ = write!(
                    s,
                    "\n[[vrf]]\nname = {:?}\ntable = {}\ninterfaces = {interfaces}\n",
                    vrf.name, vrf.table
                );
            }
        }
        s
    }

    /// Names of the namespaces created (router first).
    pub fn namespaces(&self) -> &[String] {
        &self.created
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let mut failed = Vec::new();
        // Hosts first, the router last.
        for ns in self.created.iter().rev() {
            let out = crate::demo::proc::output(
                crate::demo::proc::command("ip").args(["netns", "del", ns]),
            );
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => failed.push(format!(
                    "{ns}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => failed.push(format!("{ns}: {e:#}")),
            }
        }
        if failed.is_empty() {
            eprintln!(
                "teardown: deleted the lab's {} namespaces",
                self.created.len()
            );
        } else {
            eprintln!(
                "teardown: could not delete namespaces: {}",
                failed.join("; ")
            );
        }
    }
}

/// `ip -n NS ARGS...`, which must succeed.
pub fn ip(ns: &str, args: &[&str]) -> Result<String> {
    run(crate::demo::proc::command("ip")
        .arg("-n")
        .arg(ns)
        .args(args))
}

fn sysctls(ns: &str, settings: &[&str]) -> Result<()> {
    run(in_ns(ns, "sysctl").arg("-qw").args(settings))?;
    Ok(())
}

fn mac(ns: &str, ifname: &str) -> Result<String> {
    let out = ip(ns, &["-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("`ip -j link show dev {ifname}` printed {out}"))?;
    v[0]["address"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no MAC address for {ifname} in {out}"))
}

fn neighbour(ns: &str, ifname: &str, addr: &str, mac: &str) -> Result<()> {
    ip(
        ns,
        &[
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac,
            "dev",
            ifname,
            "nud",
            "permanent",
        ],
    )?;
    Ok(())
}
