//! `ip rule iif <member> lookup <table>` for declared VRFs: added when missing, and only the ones
//! vrfd added are removed on exit.
use tracing::{error, info};

use crate::{config::Config, model::IpFamily, netlink::Netlink};

#[derive(Default)]
pub struct OwnedRules {
    added: Vec<(IpFamily, String, u32, u32)>,
}

impl OwnedRules {
    /// With `adopt`, rules already present are taken as ours (a previous vrfd added them).
    pub async fn ensure(
        &mut self,
        netlink: &Netlink,
        config: &Config,
        adopt: bool,
    ) -> anyhow::Result<()> {
        let existing = netlink.rules().await?;
        // The default VRF's rule is the kernel's own `lookup main`.
        for vrf in config.vrf.iter().filter(|v| !v.is_main()) {
            for iif in &vrf.interfaces {
                for family in IpFamily::ALL {
                    let present = existing.iter().any(|r| {
                        r.family == family
                            && r.priority == vrf.rule_priority
                            && r.sends_iif_to(iif, vrf.table)
                    });
                    if present {
                        if adopt {
                            self.added
                                .push((family, iif.clone(), vrf.table, vrf.rule_priority));
                        }
                        continue;
                    }
                    netlink
                        .add_rule(family, iif, vrf.table, vrf.rule_priority)
                        .await?;
                    info!(vrf = %vrf.name, iif = %iif, table = vrf.table, priority = vrf.rule_priority, ?family, "added ip rule");
                    self.added
                        .push((family, iif.clone(), vrf.table, vrf.rule_priority));
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

    pub async fn remove_all(&mut self, netlink: &Netlink) {
        for (family, iif, table, priority) in self.added.drain(..) {
            if let Err(e) = netlink.del_rule(family, &iif, table, priority).await {
                error!(iif = %iif, table, priority, error = %format!("{e:#}"), "removing ip rule");
            }
        }
    }
}
