//! `ip rule iif <member> lookup <table>` for declared VRFs. They are the VRF: the kernel path
//! that keeps each VRF's traffic in its table whatever vrfd does, so they outlive vrfd (stop,
//! crash, restart). vrfd tags its own ([`crate::rule_tag`]) and removes one only when its VRF
//! (or member, table, priority) leaves the configuration, at a reload or at the next start;
//! `vrfd --detach --remove-rules` removes them all.
use tracing::{error, info};

use crate::{config::Config, model::IpFamily, netlink::Netlink};

#[derive(Default)]
pub struct OwnedRules {
    added: Vec<(IpFamily, String, u32, u32)>,
}

impl OwnedRules {
    /// Add the rules `config` asks for where missing; tagged rules already there are ours (a
    /// previous vrfd added them), untagged ones the operator's (left alone), unless `adopt`
    /// (the pins of a previous vrfd were adopted: a build before tags added them). Tagged rules
    /// `config` no longer asks for go: their VRF left it while no vrfd ran.
    pub async fn ensure(
        &mut self,
        netlink: &Netlink,
        config: &Config,
        adopt: bool,
    ) -> anyhow::Result<()> {
        let existing = netlink.rules().await?;
        let tagged = netlink.tagged_rules().await?;
        // The default VRF's rule is the kernel's own `lookup main`.
        for vrf in config.vrf.iter().filter(|v| !v.is_main()) {
            for iif in &vrf.interfaces {
                for family in IpFamily::ALL {
                    let matches = |r: &&crate::model::RuleInfo| {
                        r.family == family
                            && r.priority == vrf.rule_priority
                            && r.sends_iif_to(iif, vrf.table)
                    };
                    let entry = (family, iif.clone(), vrf.table, vrf.rule_priority);
                    if tagged.iter().any(|r| matches(&r)) {
                        if !self.added.contains(&entry) {
                            self.added.push(entry);
                        }
                        continue;
                    }
                    if existing.iter().any(|r| matches(&r)) {
                        if adopt && !self.added.contains(&entry) {
                            self.added.push(entry);
                        }
                        continue;
                    }
                    netlink
                        .add_rule(family, iif, vrf.table, vrf.rule_priority)
                        .await?;
                    info!(vrf = %vrf.name, iif = %iif, table = vrf.table, priority = vrf.rule_priority, ?family, "added ip rule");
                    self.added.push(entry);
                }
            }
        }
        for r in &tagged {
            let Some(iif) = &r.iif else { continue };
            let entry = (r.family, iif.clone(), r.table, r.priority);
            if self.added.contains(&entry) {
                continue;
            }
            match netlink.del_rule(r.family, iif, r.table, r.priority).await {
                Ok(()) => {
                    info!(iif = %iif, table = r.table, priority = r.priority, family = ?r.family, "removed ip rule a previous vrfd added (no longer configured)")
                }
                Err(e) => {
                    error!(iif = %iif, table = r.table, priority = r.priority, error = %format!("{e:#}"), "removing ip rule")
                }
            }
        }
        Ok(())
    }

    /// Remove the rules we added that `config` no longer asks for (a reload dropped or
    /// changed their VRF).
    pub async fn remove_unwanted(&mut self, netlink: &Netlink, config: &Config) {
        let wanted = |iif: &str, table: u32, priority: u32| {
            config.vrf.iter().filter(|v| !v.is_main()).any(|v| {
                v.table == table
                    && v.rule_priority == priority
                    && v.interfaces.iter().any(|i| i == iif)
            })
        };
        let mut kept = Vec::new();
        for (family, iif, table, priority) in self.added.drain(..) {
            if wanted(&iif, table, priority) {
                kept.push((family, iif, table, priority));
                continue;
            }
            match netlink.del_rule(family, &iif, table, priority).await {
                Ok(()) => info!(iif = %iif, table, priority, ?family, "removed ip rule"),
                Err(e) => {
                    error!(iif = %iif, table, priority, error = %format!("{e:#}"), "removing ip rule")
                }
            }
        }
        self.added = kept;
    }
}
