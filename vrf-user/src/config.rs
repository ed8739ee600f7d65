//! vrfd's TOML configuration: VRFs declared for kernels without vrf.ko. One schema, validated
//! up front; every problem is reported by name before anything is attached.
use std::{collections::HashMap, path::Path};

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

/// Default `ip rule` priority of the `iif <member> lookup <table>` rules vrfd adds (the same
/// place the kernel's l3mdev rule takes).
pub const DEFAULT_RULE_PRIORITY: u32 = 1000;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub vrf: Vec<DeclaredVrf>,
}

/// A VRF made of policy routing: members whose lookups an `ip rule` sends to `table`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeclaredVrf {
    /// Used by vrfctl and in metrics.
    pub name: String,
    /// Kernel routing table id.
    pub table: u32,
    /// Member interfaces.
    pub interfaces: Vec<String>,
    /// Priority of the `ip rule iif <member> lookup <table>` rules.
    #[serde(default = "default_priority")]
    pub rule_priority: u32,
}

fn default_priority() -> u32 {
    DEFAULT_RULE_PRIORITY
}

/// Tables the kernel reserves: local (255), main (254), default (253), unspec (0).
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parse and check everything that can be checked without the kernel.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
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
                bail!("VRF {:?}: table {} is reserved by the kernel (0, 253 default, 254 main, 255 local)", vrf.name, vrf.table);
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
            err("[[vrf]]\nname = \"a\"\ntable = 254\ninterfaces = [\"x\"]\n").contains("reserved")
        );
        assert!(
            err("[[vrf]]\nname = \"a b\"\ntable = 3\ninterfaces = [\"x\"]\n").contains("VRF name")
        );
    }

    #[test]
    fn an_empty_file_declares_no_vrfs() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }
}
