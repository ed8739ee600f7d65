//! vrfd's TOML configuration: VRFs declared for kernels without vrf.ko. One schema, validated
//! up front; every problem is reported by name before anything is attached.
use std::{collections::HashMap, path::Path};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

/// Default `ip rule` priority of the `iif <member> lookup <table>` rules vrfd adds (the same
/// place the kernel's l3mdev rule takes).
pub const DEFAULT_RULE_PRIORITY: u32 = 1000;

/// Priority of the kernel's `from all lookup main` rule: a VRF rule at or after it comes too late,
/// the main table has already answered for the VRF's packets.
pub const MAIN_RULE_PRIORITY: u32 = 32766;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seconds between vrfd's own runs of `vrfctl verify`'s differential (a sample of each VRF's
    /// routes); absent: never. A top-level key, before the `[[vrf]]` tables.
    #[serde(default)]
    pub verify_interval: Option<u64>,
    #[serde(default)]
    pub vrf: Vec<DeclaredVrf>,
    /// Settings for kernel VRF devices (which need no declaration), by device name.
    #[serde(default)]
    pub kernel_vrf: Vec<KernelVrf>,
}

/// Whether netfilter's rules are honoured for a VRF's forwarded traffic.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Netfilter {
    /// A chain that could act on the VRF's traffic sends it to the kernel (the default).
    #[default]
    Honour,
    /// The operator says the firewall does not concern this VRF: the fast path skips it.
    Bypass,
}

/// Settings for a kernel VRF device.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KernelVrf {
    /// The VRF device's name (`ip link add <name> type vrf table N`).
    pub name: String,
    #[serde(default)]
    pub netfilter: Netfilter,
}

/// A VRF made of policy routing: members whose lookups an `ip rule` sends to `table`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeclaredVrf {
    /// Used by vrfctl and in metrics.
    pub name: String,
    /// Kernel routing table id; `"main"` (or 254) declares the default VRF: members in no VRF,
    /// routed by the main table through the kernel's own `lookup main` rule.
    #[serde(deserialize_with = "table_id")]
    pub table: u32,
    /// Member interfaces.
    pub interfaces: Vec<String>,
    /// Priority of the `ip rule iif <member> lookup <table>` rules.
    #[serde(default = "default_priority")]
    pub rule_priority: u32,
    #[serde(default)]
    pub netfilter: Netfilter,
}

fn default_priority() -> u32 {
    DEFAULT_RULE_PRIORITY
}

/// The main table (`ip route ... table main`).
pub const MAIN_TABLE: u32 = 254;

/// A table id, or the name `"main"`.
fn table_id<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Table {
        Id(u32),
        Name(String),
    }
    match Table::deserialize(d)? {
        Table::Id(t) => Ok(t),
        Table::Name(n) if n == "main" => Ok(MAIN_TABLE),
        Table::Name(n) => Err(serde::de::Error::custom(format!(
            "table {n:?}: give a table id or \"main\""
        ))),
    }
}

impl DeclaredVrf {
    /// The default VRF: the main table, reached by the kernel's own rule (vrfd adds none).
    pub fn is_main(&self) -> bool {
        self.table == MAIN_TABLE
    }
}

/// Tables the kernel reserves: local (255), default (253), unspec (0); main (254) only as the
/// default VRF.
const RESERVED_TABLES: [u32; 3] = [0, 253, 255];

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parse and check everything that can be checked without the kernel.
    pub fn parse(text: &str) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        for vrf in config.vrf.iter_mut().filter(|v| v.is_main()) {
            // Its rule is the kernel's `from all lookup main`.
            vrf.rule_priority = MAIN_RULE_PRIORITY;
        }
        Ok(config)
    }

    /// The periodic verify's period, if on.
    pub fn verify_period(&self) -> Option<std::time::Duration> {
        self.verify_interval.map(std::time::Duration::from_secs)
    }

    /// Names of the VRFs (declared or kernel devices) whose netfilter is bypassed.
    pub fn netfilter_bypass(&self) -> std::collections::BTreeSet<String> {
        let declared = self.vrf.iter().map(|v| (&v.name, v.netfilter));
        let kernel = self.kernel_vrf.iter().map(|v| (&v.name, v.netfilter));
        declared
            .chain(kernel)
            .filter(|(_, n)| *n == Netfilter::Bypass)
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn validate(&self) -> Result<()> {
        if self.verify_interval == Some(0) {
            bail!("verify_interval = 0: give seconds (at least 1), or leave it out for no periodic verify");
        }
        let mut kernel_names = HashMap::new();
        for k in &self.kernel_vrf {
            if k.name.is_empty() || k.name.len() > 15 || k.name.contains(['/', ' ']) {
                bail!(
                    "[[kernel_vrf]] name {:?} is not a valid interface name",
                    k.name
                );
            }
            if kernel_names.insert(k.name.as_str(), ()).is_some() {
                bail!("[[kernel_vrf]] {:?} is listed twice", k.name);
            }
            if self.vrf.iter().any(|v| v.name == k.name) {
                bail!(
                    "{:?} is both a declared [[vrf]] and a [[kernel_vrf]]: one name, one VRF",
                    k.name
                );
            }
        }
        let mut names = HashMap::new();
        let mut tables = HashMap::new();
        let mut members: HashMap<&str, &str> = HashMap::new();
        for vrf in &self.vrf {
            if vrf.name.is_empty() || vrf.name.len() > 15 || !vrf.name.chars().all(valid_name_char)
            {
                bail!(
                    "VRF name {:?}: use 1 to 15 letters, digits, '-', '_' or '.'",
                    vrf.name
                );
            }
            if names.insert(vrf.name.as_str(), ()).is_some() {
                bail!("VRF name {:?} is declared twice", vrf.name);
            }
            if RESERVED_TABLES.contains(&vrf.table) {
                bail!(
                    "VRF {:?}: table {} is reserved by the kernel (0, 253 default, 255 local)",
                    vrf.name,
                    vrf.table
                );
            }
            if vrf.is_main() && vrf.rule_priority != DEFAULT_RULE_PRIORITY {
                bail!(
                    "VRF {:?}: the main table is reached by the kernel's own rule \
                     ({MAIN_RULE_PRIORITY}); rule_priority does not apply",
                    vrf.name
                );
            }
            if let Some(other) = tables.insert(vrf.table, vrf.name.as_str()) {
                bail!(
                    "table {} is used by both VRF {:?} and VRF {:?}",
                    vrf.table,
                    other,
                    vrf.name
                );
            }
            if vrf.interfaces.is_empty() {
                bail!("VRF {:?} has no interfaces", vrf.name);
            }
            if vrf.rule_priority == 0 {
                bail!(
                    "VRF {:?}: rule_priority 0 would come before the local table",
                    vrf.name
                );
            }
            if vrf.rule_priority >= MAIN_RULE_PRIORITY && !vrf.is_main() {
                bail!(
                    "VRF {:?}: rule_priority {} is at or after the main table's rule ({MAIN_RULE_PRIORITY}): \
                     the main table would route the VRF's packets first",
                    vrf.name,
                    vrf.rule_priority
                );
            }
            for iface in &vrf.interfaces {
                if iface.is_empty() || iface.len() > 15 {
                    bail!(
                        "VRF {:?}: interface name {:?} is not a valid interface name",
                        vrf.name,
                        iface
                    );
                }
                if let Some(other) = members.insert(iface.as_str(), vrf.name.as_str()) {
                    if other == vrf.name {
                        bail!("VRF {:?} lists interface {:?} twice", vrf.name, iface);
                    }
                    bail!(
                        "interface {:?} is in two VRFs: {:?} and {:?}",
                        iface,
                        other,
                        vrf.name
                    );
                }
            }
        }
        Ok(())
    }
}

/// What the kernel says against a declared configuration, checked by vrfd at start (exit 2): a
/// declared VRF named like a kernel VRF device would be two VRFs under one name; a declared member
/// enslaved to a VRF device, a bridge or a bond is not routed by the declared table at all (its
/// packets belong to the master).
pub fn check_against_kernel(config: &Config, links: &[crate::model::LinkInfo]) -> Result<()> {
    let by_index: HashMap<u32, &crate::model::LinkInfo> =
        links.iter().map(|l| (l.ifindex, l)).collect();
    for k in &config.kernel_vrf {
        // Absent is fine (it may be created later); present as something else is a mistake.
        if let Some(l) = links.iter().find(|l| l.name == k.name) {
            if l.kind.as_deref() != Some("vrf") {
                bail!(
                    "[[kernel_vrf]] {:?}: that interface is a {} device, not a VRF",
                    k.name,
                    l.kind.as_deref().unwrap_or("plain")
                );
            }
        }
    }
    for vrf in &config.vrf {
        if let Some(dev) = links
            .iter()
            .find(|l| l.name == vrf.name && l.kind.as_deref() == Some("vrf"))
        {
            bail!(
                "VRF {:?}: a kernel VRF device of that name exists (ifindex {}, table {}); \
                 rename the declared VRF",
                vrf.name,
                dev.ifindex,
                dev.vrf_table.map_or("?".to_string(), |t| t.to_string())
            );
        }
        for iface in &vrf.interfaces {
            let Some(link) = links.iter().find(|l| &l.name == iface) else {
                continue; // Not there yet: vrfd serves it when it appears.
            };
            let Some(master) = link.master.and_then(|m| by_index.get(&m)) else {
                continue;
            };
            let what = match master.kind.as_deref() {
                Some("vrf") => "VRF device",
                Some("bridge") => "bridge",
                Some("bond") => "bond",
                Some("team") => "team",
                _ => continue,
            };
            bail!(
                "VRF {:?}: member {:?} is enslaved to {what} {:?}; its packets are routed by the \
                 master, not by table {} (release it with `ip link set {iface} nomaster`, or \
                 declare the master)",
                vrf.name,
                iface,
                master.name,
                vrf.table
            );
        }
    }
    Ok(())
}

fn valid_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    #[test]
    fn parses_the_documented_example() {
        let c = Config::parse(
            "[[vrf]]\nname = \"red\"\ntable = 110\ninterfaces = [\"r1\", \"r2\"]\n\n[[vrf]]\nname = \"blue\"\ntable = 120\ninterfaces = [\"b1\"]\nrule_priority = 900\n",
        )
        .unwrap();
        assert_eq!(c.vrf.len(), 2);
        assert_eq!(c.vrf[0].rule_priority, DEFAULT_RULE_PRIORITY);
        assert_eq!(c.vrf[1].rule_priority, 900);
    }

    #[test]
    fn rejects_each_bad_config_by_name() {
        assert!(
            err("[[vrf]]\nname = \"a\"\ntable = 1\ninterfaces = [\"x\"]\ncolour = 1\n")
                .contains("colour")
        );
        assert!(err("[[vrff]]\n").contains("vrff"));
        assert!(err("[[vrf]]\nname = \"a\"\ntable = 1\n").contains("interfaces"));
        assert!(
            err("[[vrf]\n").contains("TOML parse error") || err("[[vrf]\n").contains("expected")
        );
        let dup_name = "[[vrf]]\nname = \"a\"\ntable = 1\ninterfaces = [\"x\"]\n[[vrf]]\nname = \"a\"\ntable = 2\ninterfaces = [\"y\"]\n";
        assert!(err(dup_name).contains("\"a\" is declared twice"));
        let dup_table = "[[vrf]]\nname = \"a\"\ntable = 7\ninterfaces = [\"x\"]\n[[vrf]]\nname = \"b\"\ntable = 7\ninterfaces = [\"y\"]\n";
        assert!(err(dup_table).contains("table 7 is used by both"));
        let shared = "[[vrf]]\nname = \"a\"\ntable = 1\ninterfaces = [\"x\"]\n[[vrf]]\nname = \"b\"\ntable = 2\ninterfaces = [\"x\"]\n";
        assert!(err(shared).contains("interface \"x\" is in two VRFs"));
        assert!(
            err("[[vrf]]\nname = \"a\"\ntable = 253\ninterfaces = [\"x\"]\n").contains("reserved")
        );
        assert!(
            err("[[vrf]]\nname = \"a b\"\ntable = 3\ninterfaces = [\"x\"]\n").contains("VRF name")
        );
    }

    #[test]
    fn declares_the_default_vrf_by_the_main_table() {
        for table in ["\"main\"", "254"] {
            let c = Config::parse(&format!(
                "[[vrf]]\nname = \"default\"\ntable = {table}\ninterfaces = [\"x\"]\n"
            ))
            .unwrap();
            assert!(c.vrf[0].is_main());
            assert_eq!(c.vrf[0].rule_priority, MAIN_RULE_PRIORITY);
        }
        let named = "[[vrf]]\nname = \"a\"\ntable = \"red\"\ninterfaces = [\"x\"]\n";
        assert!(err(named).contains("give a table id or \"main\""));
        let moved =
            "[[vrf]]\nname = \"a\"\ntable = \"main\"\ninterfaces = [\"x\"]\nrule_priority = 5\n";
        assert!(err(moved).contains("rule_priority does not apply"));
    }

    #[test]
    fn refuses_a_rule_priority_at_or_after_main() {
        let at = "[[vrf]]\nname = \"a\"\ntable = 5\ninterfaces = [\"x\"]\nrule_priority = 32766\n";
        assert!(err(at).contains("rule_priority 32766 is at or after the main table"));
        let after = at.replace("32766", "40000");
        assert!(err(&after).contains("rule_priority 40000"));
        let before = at.replace("32766", "32765");
        assert!(Config::parse(&before).is_ok());
    }

    fn link(ifindex: u32, name: &str, kind: &str, master: Option<u32>) -> crate::model::LinkInfo {
        crate::model::LinkInfo {
            ifindex,
            name: name.into(),
            mac: None,
            mtu: 1500,
            up: true,
            admin_up: true,
            master,
            kind: Some(kind.into()),
            vrf_table: (kind == "vrf").then_some(10),
            parent: None,
            vlan: None,
            bond_backup: false,
            bond_xdp: false,
        }
    }

    #[test]
    fn refuses_what_the_kernel_contradicts() {
        let c =
            Config::parse("[[vrf]]\nname = \"red\"\ntable = 110\ninterfaces = [\"r1\", \"r2\"]\n")
                .unwrap();
        let check = |links: &[crate::model::LinkInfo]| {
            check_against_kernel(&c, links)
                .err()
                .map(|e| format!("{e:#}"))
        };
        // Plain veths, one missing: fine.
        assert_eq!(check(&[link(2, "r1", "veth", None)]), None);
        // A kernel VRF device named like the declared VRF.
        let e = check(&[link(9, "red", "vrf", None)]).unwrap();
        assert!(e.contains("kernel VRF device of that name"), "{e}");
        // A VRF device of another name is no conflict by itself.
        assert_eq!(check(&[link(9, "blue", "vrf", None)]), None);
        for (kind, word) in [
            ("vrf", "VRF device"),
            ("bridge", "bridge"),
            ("bond", "bond"),
        ] {
            let e = check(&[link(7, "up0", kind, None), link(3, "r2", "veth", Some(7))]).unwrap();
            assert!(
                e.contains(&format!("\"r2\" is enslaved to {word} \"up0\"")),
                "{e}"
            );
        }
        // Enslaved to something that routes nothing on its own (say an openvswitch port): fine.
        assert_eq!(
            check(&[
                link(7, "ovs", "openvswitch", None),
                link(3, "r2", "veth", Some(7))
            ]),
            None
        );
    }

    #[test]
    fn an_empty_file_declares_no_vrfs() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn verify_interval_is_seconds_and_off_by_default() {
        let off =
            Config::parse("[[vrf]]\nname = \"red\"\ntable = 110\ninterfaces = [\"r1\"]\n").unwrap();
        assert_eq!(off.verify_period(), None);
        let on = Config::parse(
            "verify_interval = 30\n[[vrf]]\nname = \"red\"\ntable = 110\ninterfaces = [\"r1\"]\n",
        )
        .unwrap();
        assert_eq!(on.verify_period(), Some(std::time::Duration::from_secs(30)));
        assert!(err("verify_interval = 0\n").contains("verify_interval = 0"));
    }

    #[test]
    fn netfilter_bypass_for_declared_and_kernel_vrfs() {
        let c = Config::parse(
            "[[vrf]]\nname = \"red\"\ntable = 110\ninterfaces = [\"r1\"]\nnetfilter = \"bypass\"\n\n[[kernel_vrf]]\nname = \"vrf-blue\"\nnetfilter = \"bypass\"\n\n[[kernel_vrf]]\nname = \"vrf-green\"\n",
        )
        .unwrap();
        assert_eq!(
            c.netfilter_bypass(),
            ["red".to_string(), "vrf-blue".to_string()].into()
        );
        assert!(
            err("[[kernel_vrf]]\nname = \"v\"\nnetfilter = \"off\"\n").contains("unknown variant")
        );
        assert!(
            err("[[kernel_vrf]]\nname = \"v\"\n\n[[kernel_vrf]]\nname = \"v\"\n")
                .contains("listed twice")
        );
    }
}
