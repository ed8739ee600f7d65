//! VRF resolution: which VRFs exist (kernel VRF devices with their enslaved members, then the
//! declared ones with their interfaces), and whether the kernel's rules send each VRF's traffic
//! to its table — per address family, since rules are.
use std::collections::{BTreeMap, BTreeSet};

use crate::{
    config::DeclaredVrf,
    mirror::{Mirror, LOCAL_TABLE},
    model::{IpFamily, LinkInfo, RuleInfo},
    netfilter::{NetfilterState, Reach},
    xfrm::XfrmState,
};

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
    /// Why the kernel's policy rules make this VRF's packets go to the kernel, per family.
    pub degraded: Degraded,
    /// Netfilter chains that could act on this VRF's traffic, per family.
    pub netfilter: Degraded,
    /// xfrm (IPsec) policies that could match this VRF's forwarded traffic, per family.
    pub ipsec: Degraded,
    /// The operator bypassed netfilter for this VRF (`netfilter = "bypass"`).
    pub netfilter_bypass: bool,
    /// Rules ahead of a kernel VRF's `l3mdev` rule that could catch any packet the host sends
    /// in it (the tc egress path leaves those to the kernel), per family.
    pub local_rules: Degraded,
    /// Rules ahead of it that only marked (`SO_MARK`) packets could match.
    pub local_marked: Degraded,
}

/// Why a VRF's packets of one family must go to the kernel: every reason found, in order.
/// The data plane degrades the whole VRF while any family has a reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Degraded(BTreeMap<IpFamily, Vec<String>>);

impl Degraded {
    pub fn add(&mut self, family: IpFamily, reason: String) {
        self.0.entry(family).or_default().push(reason);
    }

    pub fn is_degraded(&self) -> bool {
        self.0.values().any(|r| !r.is_empty())
    }

    /// The reasons of one family.
    pub fn of(&self, family: IpFamily) -> &[String] {
        self.0.get(&family).map_or(&[], Vec::as_slice)
    }

    /// The first reason (IPv4's before IPv6's), for logs.
    pub fn reason(&self) -> Option<&str> {
        self.0.values().flatten().next().map(String::as_str)
    }
}

/// Every VRF: kernel VRF devices (by name), then the declared ones (in config order).
pub fn resolve(declared: &[DeclaredVrf], mirror: &Mirror) -> Vec<VrfView> {
    let mut out = Vec::new();
    let mut devices: Vec<&LinkInfo> = mirror
        .links()
        .filter(|l| is_vrf_device(l) && l.vrf_table.is_some())
        .collect();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    for dev in devices {
        let members = mirror
            .links()
            .filter(|l| l.master == Some(dev.ifindex))
            .map(|l| l.ifindex)
            .collect();
        out.push(VrfView {
            name: dev.name.clone(),
            table: dev.vrf_table.unwrap_or_default(),
            device: Some(dev.ifindex),
            members,
            missing: Vec::new(),
            degraded: Degraded::default(),
            netfilter: Degraded::default(),
            ipsec: Degraded::default(),
            netfilter_bypass: false,
            local_rules: Degraded::default(),
            local_marked: Degraded::default(),
        });
    }
    for d in declared {
        let mut members = BTreeSet::new();
        let mut missing = Vec::new();
        for name in &d.interfaces {
            match mirror.link_by_name(name) {
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
            degraded: Degraded::default(),
            netfilter: Degraded::default(),
            ipsec: Degraded::default(),
            netfilter_bypass: false,
            local_rules: Degraded::default(),
            local_marked: Degraded::default(),
        });
    }
    for v in &mut out {
        let declared = declared
            .iter()
            .find(|d| d.name == v.name && v.device.is_none());
        v.degraded = rule_checks(v, declared, mirror);
        if let Some(dev) = v.device.and_then(|i| mirror.link(i)) {
            (v.local_rules, v.local_marked) = local_rule_checks(&dev.name, mirror);
        }
    }
    out
}

/// The host's own traffic in a kernel VRF: per family, the rules the kernel evaluates before
/// the first `l3mdev` rule that could catch it — any packet, or marked ones only.
fn local_rule_checks(vrf_device: &str, mirror: &Mirror) -> (Degraded, Degraded) {
    let (mut any, mut marked) = (Degraded::default(), Degraded::default());
    for family in IpFamily::ALL {
        let rules = mirror.rules().iter().filter(|r| r.family == family);
        for r in rules.take_while(|r| !r.l3mdev) {
            if r.is_local_lookup(LOCAL_TABLE) {
                continue;
            }
            let why = || {
                format!(
                    "ip rule priority {} (table {}) can catch the host's own traffic",
                    r.priority, r.table
                )
            };
            match r.could_match_local_out(vrf_device) {
                Some(true) => any.add(family, why()),
                Some(false) => marked.add(family, why()),
                None => {}
            }
        }
    }
    (any, marked)
}

/// What the kernel applies around the route lookup, as vrfd last read it.
#[derive(Clone, Debug, Default)]
pub struct KernelFacts {
    pub netfilter: NetfilterState,
    pub xfrm: XfrmState,
    /// VRF names whose netfilter the operator bypassed.
    pub netfilter_bypass: BTreeSet<String>,
}

/// Netfilter and IPsec per family for every VRF: a chain reaching all traffic of a family, or a
/// device the VRF's traffic can cross (a member, the VRF device, or any link outside every VRF,
/// which may be an egress of any of them), sends that family to the kernel.
pub fn kernel_checks(vrfs: &mut [VrfView], facts: &KernelFacts, mirror: &Mirror) {
    let members: BTreeSet<u32> = vrfs
        .iter()
        .flat_map(|v| v.members.iter().copied())
        .collect();
    let devices: BTreeSet<u32> = vrfs.iter().filter_map(|v| v.device).collect();
    for v in vrfs.iter_mut() {
        v.netfilter = Degraded::default();
        v.ipsec = Degraded::default();
        v.netfilter_bypass = facts.netfilter_bypass.contains(&v.name);
        for family in IpFamily::ALL {
            let (reach, ipsec) = match family {
                IpFamily::V4 => (&facts.netfilter.v4, &facts.xfrm.v4),
                IpFamily::V6 => (&facts.netfilter.v6, &facts.xfrm.v6),
            };
            if let Some(why) = ipsec {
                v.ipsec.add(family, why.clone());
            }
            let Some(why) = reach.reason() else { continue };
            if v.netfilter_bypass {
                continue;
            }
            let crosses = |l: &LinkInfo| {
                v.members.contains(&l.ifindex)
                    || v.device == Some(l.ifindex)
                    || !(members.contains(&l.ifindex) || devices.contains(&l.ifindex))
            };
            if matches!(reach, Reach::All(_))
                || mirror.links().any(|l| reach.covers(&l.name) && crosses(l))
            {
                v.netfilter.add(family, why.to_string());
            }
        }
    }
}

pub fn is_vrf_device(l: &LinkInfo) -> bool {
    l.kind.as_deref() == Some("vrf")
}

/// Per family: the VRF's own rule must be there, and no rule the kernel evaluates before it
/// (in the kernel's order: lower priority, or equal priority and earlier in the list) may send
/// member traffic elsewhere; otherwise the fast path's answer is unreliable and the kernel decides.
fn rule_checks(vrf: &VrfView, declared: Option<&DeclaredVrf>, mirror: &Mirror) -> Degraded {
    let mut degraded = Degraded::default();
    let members: Vec<&LinkInfo> = vrf.members.iter().filter_map(|i| mirror.link(*i)).collect();
    for family in IpFamily::ALL {
        let f = family.ip_flag();
        // A rules dump lists each family's rules in the kernel's evaluation order.
        let rules: Vec<&RuleInfo> = mirror
            .rules()
            .iter()
            .filter(|r| r.family == family)
            .collect();
        match declared {
            None => {
                // Without it the kernel looks members' packets up elsewhere (seen: `ip rule
                // del` behind vrfd's back).
                if !rules.iter().any(|r| r.l3mdev) {
                    degraded.add(family, format!("no `ip {f} rule ... lookup l3mdev` rule"));
                }
            }
            Some(d) if d.is_main() => {
                if !rules.iter().any(|r| r.is_local_lookup(d.table)) {
                    degraded.add(family, format!("no `ip {f} rule ... lookup main` rule"));
                }
            }
            Some(d) => {
                for l in &members {
                    if !rules.iter().any(|r| r.sends_iif_to(&l.name, d.table)) {
                        degraded.add(
                            family,
                            format!("`ip {f} rule iif {} lookup {}` is missing", l.name, d.table),
                        );
                    }
                }
            }
        }
        let ahead = members.iter().find_map(|l| {
            let at = own_rule(&rules, declared, &l.name)?;
            let own = rules[at];
            rules.iter().enumerate().find_map(|(i, r)| {
                let before = r.priority < own.priority || (r.priority == own.priority && i < at);
                (before && diverts(r, &l.name)).then_some(*r)
            })
        });
        if let Some(r) = ahead {
            degraded.add(
                family,
                format!(
                    "ip rule priority {} (table {}) comes before the VRF's rule",
                    r.priority, r.table
                ),
            );
        }
    }
    degraded
}

/// Where, in the kernel's order, the VRF's own rule for packets from `iif` stands.
fn own_rule(rules: &[&RuleInfo], declared: Option<&DeclaredVrf>, iif: &str) -> Option<usize> {
    match declared {
        None => rules.iter().position(|r| r.l3mdev),
        // The default VRF: the first `lookup main` rule for every packet is its rule.
        Some(d) if d.is_main() => rules.iter().position(|r| r.is_local_lookup(d.table)),
        Some(d) => rules.iter().position(|r| r.sends_iif_to(iif, d.table)),
    }
}

/// A rule ahead of the VRF's own that can match the forwarded packets of member `iif`.
fn diverts(r: &RuleInfo, iif: &str) -> bool {
    !r.l3mdev
        // Rule 0 "lookup local" is mirrored into every VRF's FIB.
        && !r.is_local_lookup(LOCAL_TABLE)
        && r.could_match_forwarded(iif)
}
