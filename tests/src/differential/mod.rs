//! Differential testing of the data plane against the kernel: the same random tables in the
//! kernel and (through vrfd's own sync path) in the data plane's maps, then many packets asked of
//! both. See `tests/tests/differential.rs` for what is asserted.
//!
//! - [`Lab`]: a router namespace with VRFs built the policy-routing way (members, `ip rule iif
//!   <member> lookup <table>`, connected routes in the VRF's table, `unreachable default`), every
//!   member a veth whose peer waits, up, in a sink namespace. Member `i` of every VRF has the
//!   same addressing (10.0.i.0/24, fd00:0:0:i::/64, router `.1`), so a lookup in the wrong
//!   table gives a different answer, not the same one by luck.
//! - [`tables`]: random routes of every kind, installed with one `ip -batch` process.
//! - [`oracle`]: the kernel's answer for one packet (RTM_GETROUTE with RTA_IIF, fibmatch).
//! - [`check`]: one case through the kernel and the data plane, compared.
//! - [`sync_data_plane`]: vrfd's path (`Netlink::snapshot` → `engine::Engine` → `plan` →
//!   `MapWriter`) into a freshly loaded [`DataPlane`].

pub mod check;
pub mod oracle;
pub mod tables;

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use ipnet::{Ipv4Net, Ipv6Net};
use vrf_user::{
    config::DeclaredVrf,
    dataplane::DataPlane,
    engine::Engine,
    mirror::read_sysctls,
    netlink::{nexthop::NexthopSocket, Netlink},
    writer::MapWriter,
};

use crate::netns::NetNs;
use crate::topology::{router_ns, Nth};

/// Priority of the VRF rules (as vrfd adds them).
pub const RULE_PREF: u32 = 1000;
/// Metric of the per-table `unreachable default` (the kernel VRF driver's).
pub const VRF_DEFAULT_METRIC: u32 = 4278198272;

/// `VRF_XDP_LONG=1` (set by `cargo xtask test --long`).
pub fn long() -> bool {
    std::env::var("VRF_XDP_LONG").is_ok_and(|v| v == "1")
}

/// The seed of a randomized test: `VRF_XDP_SEED` if set, else a fresh one. Always printed (to
/// stdout and stderr, so it shows with or without `--nocapture` when the test fails) with the
/// line that replays it.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("VRF_XDP_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("VRF_XDP_SEED={s:?} is not a u64: {e}")),
        Err(_) => rand::random(),
    };
    let line = format!(
        "{test}: seed {seed} (replay: VRF_XDP_SEED={seed}{} cargo test --release -p tests --test {test})",
        if long() { " VRF_XDP_LONG=1" } else { "" }
    );
    println!("{line}");
    eprintln!("{line}");
    seed
}

/// How big a differential run is.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub vrfs: usize,
    pub members: usize,
    /// Generated routes per VRF (both families together; alternates and leaks included).
    pub routes_per_vrf: usize,
    pub cases: usize,
}

impl Scale {
    /// CI size, or the long run under `VRF_XDP_LONG=1`.
    pub fn from_env() -> Scale {
        if long() {
            Scale {
                vrfs: 4,
                members: 4,
                routes_per_vrf: 12_000,
                cases: 120_000,
            }
        } else {
            Scale {
                vrfs: 3,
                members: 4,
                routes_per_vrf: 2_000,
                cases: 6_000,
            }
        }
    }
}

/// One VRF member: the router-side veth.
#[derive(Clone, Debug)]
pub struct LabMember {
    /// Index of its VRF in [`Lab::vrfs`].
    pub vrf: usize,
    /// Index within the VRF (its addressing).
    pub index: usize,
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub subnet4: Ipv4Net,
    pub subnet6: Ipv6Net,
}

impl LabMember {
    /// The router's own addresses (`.1`).
    pub fn router4(&self) -> Ipv4Addr {
        nth4(self.subnet4, 1)
    }
    pub fn router6(&self) -> Ipv6Addr {
        nth6(self.subnet6, 1)
    }
    /// The host behind the member that sends the test packets (`.2`).
    pub fn host4(&self) -> Ipv4Addr {
        nth4(self.subnet4, 2)
    }
    pub fn host6(&self) -> Ipv6Addr {
        nth6(self.subnet6, 2)
    }
    pub fn host(&self, v6: bool) -> IpAddr {
        if v6 {
            self.host6().into()
        } else {
            self.host4().into()
        }
    }
}

pub fn nth4(net: Ipv4Net, n: u32) -> Ipv4Addr {
    net.nth(n)
}

pub fn nth6(net: Ipv6Net, n: u128) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()).wrapping_add(n))
}

#[derive(Clone, Debug)]
pub struct LabVrf {
    pub name: String,
    pub table: u32,
    /// Indexes into [`Lab::members`].
    pub members: Vec<usize>,
}

/// The router namespace and its VRFs (see the module documentation).
pub struct Lab {
    pub vrfs: Vec<LabVrf>,
    pub members: Vec<LabMember>,
    pub router: NetNs,
    /// Holds every member's peer, up, so that members have carrier.
    pub sink: NetNs,
}

/// Output of one `ip -force -batch -` run.
#[derive(Debug, Default)]
pub struct BatchReport {
    pub lines: usize,
    /// `(line number, the line, ip's complaint)` for each command that failed.
    pub failures: Vec<(usize, String, String)>,
}

/// Runs `lines` through `ip -n NS -force -batch -`: one process for the untagged lines, and one
/// `ip -4` / `ip -6` process for lines starting with `-4 ` / `-6 ` (batch lines take no global
/// options; `rule` needs the family). A failing line does not stop the others; the failures are
/// returned (not an error).
pub fn ip_batch(ns: &NetNs, lines: &[String]) -> Result<BatchReport> {
    let mut report = BatchReport {
        lines: lines.len(),
        failures: Vec::new(),
    };
    for flag in ["", "-4 ", "-6 "] {
        let group: Vec<(usize, &str)> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| match flag {
                "" => !l.starts_with("-4 ") && !l.starts_with("-6 "),
                f => l.starts_with(f),
            })
            .map(|(i, l)| (i, &l[flag.len()..]))
            .collect();
        if group.is_empty() {
            continue;
        }
        let text: Vec<&str> = group.iter().map(|(_, l)| *l).collect();
        for (n, why) in ip_batch_once(ns, flag.trim(), &text)? {
            let (orig, line) = group
                .get(n.wrapping_sub(1))
                .map(|(i, l)| (i + 1, l.to_string()))
                .unwrap_or_default();
            report.failures.push((orig, line, why));
        }
    }
    report.failures.sort_by_key(|f| f.0);
    Ok(report)
}

/// One `ip [-4|-6] -force -batch -`; returns (batch line number, complaint) per failed line.
fn ip_batch_once(ns: &NetNs, family: &str, lines: &[&str]) -> Result<Vec<(usize, String)>> {
    let mut cmd = Command::new("ip");
    cmd.args(["-n", ns.name()]);
    if !family.is_empty() {
        cmd.arg(family);
    }
    let mut child = cmd
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ip -batch")?;
    let text = lines.join("\n") + "\n";
    let mut stdin = child.stdin.take().context("ip -batch stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().context("waiting for ip -batch")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("ip -batch writer panicked"))?
        .context("writing to ip -batch")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut failures = Vec::new();
    let mut pending = String::new();
    for l in stderr.lines() {
        // "Command failed -:LINE" follows the message(s) of a failed line.
        if let Some(n) = l.strip_prefix("Command failed -:") {
            let n: usize = n.trim().parse().unwrap_or(0);
            failures.push((n, std::mem::take(&mut pending).trim().to_string()));
        } else {
            pending.push_str(l);
            pending.push(' ');
        }
    }
    if !out.status.success() && failures.is_empty() {
        bail!(
            "ip -batch failed ({}) without naming a line: {stderr}",
            out.status
        );
    }
    Ok(failures)
}

/// A batch that must apply completely.
pub fn ip_batch_ok(ns: &NetNs, lines: &[String]) -> Result<()> {
    let r = ip_batch(ns, lines)?;
    if let Some((n, line, why)) = r.failures.first() {
        bail!(
            "{} of {} commands failed in netns {}; first: line {n} `{line}`: {why}",
            r.failures.len(),
            r.lines,
            ns.name()
        );
    }
    Ok(())
}

pub const VRF_NAMES: [&str; 8] = [
    "red", "blue", "green", "amber", "cyan", "pink", "teal", "gold",
];

impl Lab {
    /// Builds `vrfs` VRFs (tables 110, 120, …) of `members` members each.
    pub fn build(prefix: &str, vrfs: usize, members: usize) -> Result<Lab> {
        ensure!(vrfs <= VRF_NAMES.len(), "at most {} VRFs", VRF_NAMES.len());
        ensure!(members <= 200, "at most 200 members per VRF");
        let router = router_ns(prefix)?;
        let sink = NetNs::new(prefix)?;
        // The peers only provide carrier: no IPv6 chatter from them.
        sink.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;

        let mut lab_vrfs = Vec::new();
        let mut lab_members = Vec::new();
        let mut lines = Vec::new();
        let mut sink_lines = Vec::new();
        for (v, name) in VRF_NAMES.iter().take(vrfs).enumerate() {
            let table = 110 + 10 * v as u32;
            let mut idx = Vec::new();
            for i in 0..members {
                let ifname = format!("{name}{i}");
                let subnet4 = Ipv4Net::new(Ipv4Addr::new(10, 0, i as u8, 0), 24)?;
                let subnet6 = Ipv6Net::new(Ipv6Addr::new(0xfd00, 0, 0, i as u16, 0, 0, 0, 0), 64)?;
                lines.push(format!(
                    "link add {ifname} type veth peer name {ifname}p netns {}",
                    sink.name()
                ));
                sink_lines.push(format!("link set {ifname}p up"));
                lines.push(format!("link set {ifname} up"));
                lines.push(format!(
                    "addr add {}/24 dev {ifname} noprefixroute",
                    nth4(subnet4, 1)
                ));
                lines.push(format!(
                    "addr add {}/64 dev {ifname} nodad noprefixroute",
                    nth6(subnet6, 1)
                ));
                lines.push(format!(
                    "-4 rule add iif {ifname} lookup {table} pref {RULE_PREF}"
                ));
                lines.push(format!(
                    "-6 rule add iif {ifname} lookup {table} pref {RULE_PREF}"
                ));
                lines.push(format!(
                    "route add {subnet4} dev {ifname} table {table} proto kernel scope link src {}",
                    nth4(subnet4, 1)
                ));
                lines.push(format!(
                    "route add {subnet6} dev {ifname} table {table} proto kernel"
                ));
                idx.push(lab_members.len());
                lab_members.push(LabMember {
                    vrf: v,
                    index: i,
                    name: ifname,
                    ifindex: 0,
                    mac: [0; 6],
                    subnet4,
                    subnet6,
                });
            }
            lines.push(format!(
                "route add unreachable 0.0.0.0/0 metric {VRF_DEFAULT_METRIC} table {table}"
            ));
            lines.push(format!(
                "route add unreachable ::/0 metric {VRF_DEFAULT_METRIC} table {table}"
            ));
            lab_vrfs.push(LabVrf {
                name: name.to_string(),
                table,
                members: idx,
            });
        }
        // Links first (the peers must exist before they are set up), then the rest.
        let (links, rest): (Vec<String>, Vec<String>) =
            lines.into_iter().partition(|l| l.starts_with("link add"));
        ip_batch_ok(&router, &links)?;
        ip_batch_ok(&sink, &sink_lines)?;
        ip_batch_ok(&router, &rest)?;

        let json: serde_json::Value = serde_json::from_str(&router.ip(&["-j", "link", "show"])?)?;
        for m in &mut lab_members {
            let l = json
                .as_array()
                .and_then(|a| a.iter().find(|l| l["ifname"] == m.name.as_str()))
                .with_context(|| format!("no link {} in {json}", m.name))?;
            m.ifindex = l["ifindex"].as_u64().context("ifindex")? as u32;
            m.mac = crate::parse_mac(l["address"].as_str().context("address")?)?;
        }
        Ok(Lab {
            vrfs: lab_vrfs,
            members: lab_members,
            router,
            sink,
        })
    }

    /// Gives every member a random `rp_filter` (0 off, 1 strict, 2 loose: half off) and turns
    /// IPv4 forwarding off on one member with probability ½. Returns `(member, rp_filter,
    /// forwarding4)` for every member that is not (0, on).
    pub fn randomize_sysctls(
        &self,
        rng: &mut rand::rngs::StdRng,
    ) -> Result<Vec<(String, u8, bool)>> {
        use rand::Rng;
        let mut changed = Vec::new();
        let no_forwarding = rng
            .random_bool(0.5)
            .then(|| rng.random_range(0..self.members.len()));
        for (i, m) in self.members.iter().enumerate() {
            let rp: u8 = match rng.random_range(0..4) {
                0 | 1 => 0,
                2 => 1,
                _ => 2,
            };
            let fwd = no_forwarding != Some(i);
            self.router.sysctl(
                &format!("net/ipv4/conf/{}/rp_filter", m.name),
                &rp.to_string(),
            )?;
            if !fwd {
                self.router
                    .sysctl(&format!("net/ipv4/conf/{}/forwarding", m.name), "0")?;
            }
            if rp != 0 || !fwd {
                changed.push((m.name.clone(), rp, fwd));
            }
        }
        Ok(changed)
    }

    /// The VRFs as vrfd's configuration would declare them.
    pub fn declared(&self) -> Vec<DeclaredVrf> {
        self.vrfs
            .iter()
            .map(|v| DeclaredVrf {
                name: v.name.clone(),
                table: v.table,
                interfaces: v
                    .members
                    .iter()
                    .map(|m| self.members[*m].name.clone())
                    .collect(),
                rule_priority: RULE_PREF,
                netfilter: Default::default(),
            })
            .collect()
    }

    pub fn member_by_ifindex(&self, ifindex: u32) -> Option<&LabMember> {
        self.members.iter().find(|m| m.ifindex == ifindex)
    }

    /// Member `index` of VRF `vrf`.
    pub fn member(&self, vrf: usize, index: usize) -> &LabMember {
        &self.members[self.vrfs[vrf].members[index]]
    }

    /// The kernel's usable neighbour entries: (ifindex, address) → MAC.
    pub fn kernel_neighbours(&self) -> Result<HashMap<(u32, IpAddr), [u8; 6]>> {
        let json: serde_json::Value =
            serde_json::from_str(&self.router.ip(&["-j", "neigh", "show"])?)?;
        let by_name: HashMap<&str, u32> = self
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.ifindex))
            .collect();
        let mut out = HashMap::new();
        for n in json.as_array().into_iter().flatten() {
            let (Some(dst), Some(dev), Some(lladdr)) =
                (n["dst"].as_str(), n["dev"].as_str(), n["lladdr"].as_str())
            else {
                continue;
            };
            let usable = n["state"].as_array().is_some_and(|s| {
                s.iter().any(|x| {
                    matches!(
                        x.as_str(),
                        Some("PERMANENT" | "REACHABLE" | "STALE" | "DELAY" | "PROBE" | "NOARP")
                    )
                })
            });
            let Some(ifindex) = by_name.get(dev) else {
                continue;
            };
            if usable {
                out.insert((*ifindex, dst.parse()?), crate::parse_mac(lladdr)?);
            }
        }
        Ok(out)
    }
}

/// What [`sync_data_plane`] wrote.
#[derive(Debug)]
pub struct SyncReport {
    pub routes: usize,
    pub groups: usize,
    pub neighbours: usize,
    /// VRF name → why vrfd would leave it to the kernel (must be empty for a meaningful run).
    pub degraded: Vec<(String, String)>,
}

/// Loads a data plane and fills its maps the way vrfd does: an rtnetlink snapshot of the router
/// namespace into `engine::Engine` (declared VRFs, the real sysctls), its plan through `MapWriter`
/// (slots, links and tx ports, neighbours, routes, VRFs). Must be called from a thread inside the router
/// namespace (netlink, sysctls and the redirect map resolve names and ifindexes there).
pub fn sync_data_plane(declared: Vec<DeclaredVrf>) -> Result<(DataPlane, SyncReport)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let snapshot = rt.block_on(async {
        let (netlink, _events) = Netlink::connect().await?;
        let mut snapshot = netlink.snapshot().await?;
        // The nexthop objects come from their own socket, as in vrfd.
        let (mut nexthops, _nexthop_events) = NexthopSocket::connect().await?;
        snapshot.nexthops = nexthops.dump().await?;
        anyhow::Ok(snapshot)
    })?;
    drop(rt);
    let mut engine = Engine::new(declared, Box::new(read_sysctls));
    engine.load(snapshot);
    let plan = engine.plan();
    let dp = DataPlane::load()?;
    let mut writer = MapWriter::new(dp.maps.try_clone()?);
    writer.apply_plan(&plan)?;
    let mut degraded: Vec<(String, String)> = plan
        .vrfs
        .iter()
        .filter_map(|v| v.degraded.reason().map(|d| (v.name.clone(), d.to_string())))
        .collect();
    for v in &plan.vrfs {
        if let Some(slot) = writer.vrf_slot(&v.name) {
            let entry = writer.maps().vrf(slot)?;
            if entry.flags & vrf_common::VRF_DEGRADED != 0 && !v.degraded.is_degraded() {
                degraded.push((v.name.clone(), "a map overflowed".into()));
            }
        }
    }
    Ok((
        dp,
        SyncReport {
            routes: writer.route_count(),
            groups: writer.group_count(),
            neighbours: writer.neighbour_count(),
            degraded,
        },
    ))
}
