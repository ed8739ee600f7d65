//! Reads whether netfilter could act on forwarded traffic, per family, and where.
//!
//! nftables is read through the nftables crate (the `nft -j list ruleset` JSON); the legacy
//! iptables tables, where the kernel has them (ip_tables_names, ip6_tables_names under
//! /proc/thread-self/net: /proc/net shows the main thread's namespace), through `iptables-legacy-save`/`ip6tables-legacy-save`. A base chain on prerouting, forward
//! or postrouting (families ip, ip6, inet) that can change a packet's fate — any rule, or a
//! policy other than accept — reaches every VRF of its family; a netdev (or inet) ingress/egress
//! chain bound to a device reaches that device. Rules are not analysed further (an `iifname`
//! match is still "everything"): conservative, never permissive. Anything unreadable is "all".
//! [`NetfilterWatcher`] follows changes from NFNLGRP_NFTABLES.
use std::{collections::BTreeSet, fmt, time::Duration};

use anyhow::Result;
use nftables::{
    schema::{NfListObject, NfObject},
    types::{NfChainPolicy, NfFamily, NfHook},
};

use crate::kernelwatch::Watcher;

/// What netfilter could act on, for one family.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Reach {
    /// Nothing: the fast path may forward.
    #[default]
    None,
    /// Every VRF's traffic of this family; the reason names the table, chain and hook.
    All(String),
    /// Traffic through these devices (by name) only.
    Devices(BTreeSet<String>, String),
}

impl Reach {
    /// The union of two reaches (`All` wins; reasons are joined).
    pub fn join(self, other: Reach) -> Reach {
        match (self, other) {
            (Reach::None, r) | (r, Reach::None) => r,
            (Reach::All(a), Reach::All(b)) => Reach::All(format!("{a}; {b}")),
            (Reach::All(a), _) | (_, Reach::All(a)) => Reach::All(a),
            (Reach::Devices(mut a, ra), Reach::Devices(b, rb)) => {
                a.extend(b);
                Reach::Devices(a, format!("{ra}; {rb}"))
            }
        }
    }

    /// Could netfilter act on traffic in or out of `device`?
    pub fn covers(&self, device: &str) -> bool {
        match self {
            Reach::None => false,
            Reach::All(_) => true,
            Reach::Devices(d, _) => d.contains(device),
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Reach::None => None,
            Reach::All(r) | Reach::Devices(_, r) => Some(r),
        }
    }
}

/// Netfilter's reach per family.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NetfilterState {
    pub v4: Reach,
    pub v6: Reach,
}

impl NetfilterState {
    /// What a state that cannot be read is taken to be.
    pub fn unreadable(why: impl fmt::Display) -> NetfilterState {
        let r = format!("netfilter state unreadable: {why}");
        NetfilterState {
            v4: Reach::All(r.clone()),
            v6: Reach::All(r),
        }
    }

    fn add(&mut self, v4: bool, v6: bool, r: Reach) {
        if v4 {
            self.v4 = std::mem::take(&mut self.v4).join(r.clone());
        }
        if v6 {
            self.v6 = std::mem::take(&mut self.v6).join(r);
        }
    }

    /// Read nftables and the legacy tables of the calling thread's network namespace.
    pub fn read() -> NetfilterState {
        let mut s = match ruleset() {
            Ok(rs) => from_ruleset(&rs.objects),
            Err(e) => return NetfilterState::unreadable(format!("nft: {e}")),
        };
        for (v6, names, save) in [
            (
                false,
                "/proc/thread-self/net/ip_tables_names",
                "iptables-legacy-save",
            ),
            (
                true,
                "/proc/thread-self/net/ip6_tables_names",
                "ip6tables-legacy-save",
            ),
        ] {
            let r = legacy(names, save);
            s.add(!v6, v6, r);
        }
        s
    }
}

/// `nft -j list ruleset`, asked up to [`NFT_ATTEMPTS`] times: Debian 12's nft exited non-zero once
/// in the VM lane while FRR restarted, and one failed read is no reason to hand VRFs to the kernel.
fn ruleset() -> Result<nftables::schema::Nftables<'static>, nftables::helper::NftablesError> {
    let mut attempt = 1;
    loop {
        match nftables::helper::get_current_ruleset() {
            Err(e) if attempt < NFT_ATTEMPTS => {
                tracing::debug!(attempt, error = %e, "nft failed: asking again");
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

const NFT_ATTEMPTS: u32 = 3;

fn family_name(f: NfFamily) -> &'static str {
    match f {
        NfFamily::IP => "ip",
        NfFamily::IP6 => "ip6",
        NfFamily::INet => "inet",
        NfFamily::ARP => "arp",
        NfFamily::Bridge => "bridge",
        NfFamily::NetDev => "netdev",
    }
}

/// The reach of an nftables ruleset (the objects of `nft -j list ruleset`).
pub fn from_ruleset(objects: &[NfObject]) -> NetfilterState {
    let mut s = NetfilterState::default();
    let has_rules = |family: NfFamily, table: &str, chain: &str| {
        objects.iter().any(|o| {
            matches!(o, NfObject::ListObject(NfListObject::Rule(r))
                if r.family == family && r.table == table && r.chain == chain)
        })
    };
    for o in objects {
        let NfObject::ListObject(NfListObject::Chain(c)) = o else {
            continue;
        };
        let Some(hook) = c.hook else {
            continue; // a regular chain only acts when a base chain jumps to it
        };
        let drops = matches!(c.policy, Some(NfChainPolicy::Drop));
        if !drops && !has_rules(c.family, &c.table, &c.name) {
            continue;
        }
        let what = if drops { "policy drop" } else { "rules" };
        let hook_name = format!("{hook:?}").to_lowercase();
        let reason = format!(
            "nftables {} table {} chain {} ({hook_name} hook, {what})",
            family_name(c.family),
            c.table,
            c.name
        );
        let (v4, v6) = match c.family {
            NfFamily::IP => (true, false),
            NfFamily::IP6 => (false, true),
            NfFamily::INet | NfFamily::NetDev => (true, true),
            // ARP never sees IP; bridge chains see only bridged frames.
            NfFamily::ARP | NfFamily::Bridge => continue,
        };
        let reach = match hook {
            NfHook::Prerouting | NfHook::Forward | NfHook::Postrouting => Reach::All(reason),
            NfHook::Ingress | NfHook::Egress => match &c.dev {
                Some(d) => Reach::Devices([d.to_string()].into(), reason),
                // A device we cannot name: every device.
                None => Reach::All(reason),
            },
            // Local delivery and the host's own output are not forwarding.
            NfHook::Input | NfHook::Output => continue,
        };
        s.add(v4, v6, reach);
    }
    s
}

/// A legacy x_tables family: no table registered is nothing; otherwise the rules and policies of
/// PREROUTING/FORWARD/POSTROUTING from `save`, and "all" if it cannot be run.
fn legacy(names_path: &str, save: &str) -> Reach {
    let names = match std::fs::read_to_string(names_path) {
        Ok(n) => n,
        // The file exists only once the kernel has a legacy table.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Reach::None,
        Err(e) => return Reach::All(format!("{names_path}: {e}")),
    };
    if names.trim().is_empty() {
        return Reach::None;
    }
    let out = match std::process::Command::new(save).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            return Reach::All(format!(
                "legacy tables {} but {save} failed: {}",
                names.trim().replace('\n', ","),
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => {
            return Reach::All(format!(
                "legacy tables {} but {save}: {e}",
                names.trim().replace('\n', ",")
            ))
        }
    };
    legacy_from_save(&out, save)
}

/// The reach of `iptables-save` output.
pub fn legacy_from_save(out: &str, what: &str) -> Reach {
    const HOOKS: [&str; 3] = ["PREROUTING", "FORWARD", "POSTROUTING"];
    let mut table = "";
    let mut reasons = Vec::new();
    for line in out.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim();
        } else if let Some(p) = line.strip_prefix(':') {
            // ":FORWARD DROP [0:0]"
            let mut f = p.split_whitespace();
            if let (Some(chain), Some(policy)) = (f.next(), f.next()) {
                if HOOKS.contains(&chain) && policy != "ACCEPT" && policy != "-" {
                    reasons.push(format!(
                        "{what} table {table} chain {chain} policy {policy}"
                    ));
                }
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or("");
            if HOOKS.contains(&chain) {
                reasons.push(format!("{what} table {table} chain {chain} has rules"));
            }
        }
    }
    reasons.dedup();
    if reasons.is_empty() {
        Reach::None
    } else {
        Reach::All(reasons.join("; "))
    }
}

const NFNLGRP_NFTABLES: u32 = 7;
/// A re-read also every poll period: legacy iptables does not announce its changes.
pub const NETFILTER_POLL: Duration = Duration::from_secs(1);

/// Follows [`NetfilterState`]: create it in vrfd's network namespace, then
/// `watcher.changed().await` yields each new state.
pub type NetfilterWatcher = Watcher<NetfilterState>;

impl NetfilterWatcher {
    /// Must be called inside a tokio runtime (the socket registers with its reactor).
    pub fn new() -> Result<NetfilterWatcher> {
        Watcher::subscribe(
            netlink_sys::protocols::NETLINK_NETFILTER,
            &[NFNLGRP_NFTABLES],
            NETFILTER_POLL,
            NetfilterState::read,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> NetfilterState {
        let rs: nftables::schema::Nftables = serde_json::from_str(json).unwrap();
        from_ruleset(&rs.objects)
    }

    #[test]
    fn a_postrouting_masquerade_reaches_every_vrf_of_its_family() {
        // As nft 1.0.6 prints it (`masquerade` with no options is null).
        let s = parse(
            r#"{"nftables":[{"table":{"family":"ip","name":"vx_nat","handle":1}},
            {"chain":{"family":"ip","table":"vx_nat","name":"post","handle":1,"type":"nat",
              "hook":"postrouting","prio":100,"policy":"accept"}},
            {"rule":{"family":"ip","table":"vx_nat","chain":"post","handle":2,"expr":[
              {"match":{"op":"==","left":{"meta":{"key":"oifname"}},"right":"red1"}},
              {"masquerade":null}]}}]}"#,
        );
        assert!(matches!(s.v4, Reach::All(_)), "{s:?}");
        assert_eq!(s.v6, Reach::None);
    }

    #[test]
    fn empty_forward_chain_with_accept_policy_reaches_nothing() {
        let s = parse(
            r#"{"nftables":[{"table":{"family":"inet","name":"f","handle":1}},
            {"chain":{"family":"inet","table":"f","name":"fw","handle":1,"type":"filter",
              "hook":"forward","prio":0,"policy":"accept"}}]}"#,
        );
        assert_eq!(s, NetfilterState::default());
    }

    #[test]
    fn drop_policy_on_ip_forward_reaches_all_ipv4_only() {
        let s = parse(
            r#"{"nftables":[{"chain":{"family":"ip","table":"f","name":"fw","handle":1,
              "type":"filter","hook":"forward","prio":0,"policy":"drop"}}]}"#,
        );
        assert!(
            matches!(&s.v4, Reach::All(r) if r.contains("table f chain fw")),
            "{s:?}"
        );
        assert_eq!(s.v6, Reach::None);
    }

    #[test]
    fn netdev_ingress_chain_reaches_its_device() {
        let s = parse(
            r#"{"nftables":[{"chain":{"family":"netdev","table":"n","name":"in","handle":1,
              "type":"filter","hook":"ingress","prio":0,"dev":"r1","policy":"accept"}},
              {"rule":{"family":"netdev","table":"n","chain":"in","handle":2,
              "expr":[{"counter":{"packets":0,"bytes":0}}]}}]}"#,
        );
        assert!(s.v4.covers("r1") && !s.v4.covers("r2"), "{s:?}");
        assert!(s.v6.covers("r1"));
    }

    #[test]
    fn legacy_save_with_forward_rules_reaches_all() {
        let out =
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j DROP\nCOMMIT\n";
        assert!(matches!(legacy_from_save(out, "iptables"), Reach::All(_)));
        let idle = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n-A INPUT -j DROP\nCOMMIT\n";
        assert_eq!(legacy_from_save(idle, "iptables"), Reach::None);
    }
}
