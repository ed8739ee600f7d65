//! The state vrfd keeps between kernel events: the mirror, the VRFs resolved from it, and the
//! facts and sysctls their checks and links read. Events enter here; [`Engine::planner`] lends
//! it all to [`crate::plan`], which derives what the maps should hold.
use std::collections::{BTreeSet, HashMap};

use crate::{
    config::DeclaredVrf,
    mirror::{Dirty, Mirror, SysctlReader},
    model::{KernelEvent, KernelSnapshot, RuleInfo},
    netfilter::NetfilterState,
    plan::{Plan, Planner},
    sysctl::SysctlState,
    vrfs::{self, KernelFacts, VrfView},
    xfrm::XfrmState,
};

/// The mirror and everything resolved from it between events.
pub struct Engine {
    declared: Vec<DeclaredVrf>,
    mirror: Mirror,
    sysctl: SysctlReader,
    /// The followed sysctls by ifindex; when set, they replace `sysctl` (see [`Planner`]).
    sysctls: Option<SysctlState>,
    /// Netfilter, IPsec and the operator's bypasses: kernel facts like links and routes.
    facts: KernelFacts,
    vrfs: Vec<VrfView>,
    /// Member ifindex → its VRF's table.
    member_tables: HashMap<u32, u32>,
}

impl Engine {
    pub fn new(declared: Vec<DeclaredVrf>, sysctl: SysctlReader) -> Self {
        Engine {
            declared,
            mirror: Mirror::default(),
            sysctl,
            sysctls: None,
            facts: KernelFacts::default(),
            vrfs: Vec::new(),
            member_tables: HashMap::new(),
        }
    }

    /// Replace the mirror with a fresh dump.
    pub fn load(&mut self, mut snap: KernelSnapshot) {
        self.mirror = Mirror::new(&mut snap);
        self.resolve();
        let tables = self.vrfs.iter().map(|v| v.table).collect();
        self.mirror.load_routes(tables, snap.routes);
    }

    /// Apply one kernel event to the mirror and say what must be planned again.
    pub fn apply(&mut self, event: KernelEvent) -> Dirty {
        let mut dirty = self.mirror.apply(event);
        if dirty.links {
            self.resolve();
            if self.tables() != *self.mirror.tables() {
                dirty.resync = true;
            }
        }
        dirty
    }

    /// A reloaded configuration's declared VRFs (the next [`load`](Self::load) resolves them).
    pub fn set_declared(&mut self, declared: Vec<DeclaredVrf>) {
        self.declared = declared;
    }

    /// Take a fresh rules dump (after [`Dirty::rules`]); the VRFs' rule checks follow.
    pub fn load_rules(&mut self, rules: Vec<RuleInfo>) {
        self.mirror.load_rules(rules);
        self.resolve();
    }

    /// Follow the sysctls from here on (the watcher's state); the links' plans change.
    pub fn set_sysctls(&mut self, state: SysctlState) {
        self.sysctls = Some(state);
    }

    /// A new netfilter reading: the VRFs' netfilter reasons follow.
    pub fn set_netfilter(&mut self, state: NetfilterState) {
        self.facts.netfilter = state;
        vrfs::kernel_checks(&mut self.vrfs, &self.facts, &self.mirror);
    }

    /// A new xfrm reading: the VRFs' IPsec reasons follow.
    pub fn set_xfrm(&mut self, state: XfrmState) {
        self.facts.xfrm = state;
        vrfs::kernel_checks(&mut self.vrfs, &self.facts, &self.mirror);
    }

    /// VRFs (by name) whose netfilter the operator bypassed.
    pub fn set_netfilter_bypass(&mut self, names: BTreeSet<String>) {
        self.facts.netfilter_bypass = names;
        vrfs::kernel_checks(&mut self.vrfs, &self.facts, &self.mirror);
    }

    fn resolve(&mut self) {
        self.vrfs = vrfs::resolve(&self.declared, &self.mirror);
        vrfs::kernel_checks(&mut self.vrfs, &self.facts, &self.mirror);
        self.member_tables = self
            .vrfs
            .iter()
            .flat_map(|v| v.members.iter().map(move |m| (*m, v.table)))
            .collect();
    }

    fn tables(&self) -> BTreeSet<u32> {
        self.vrfs.iter().map(|v| v.table).collect()
    }

    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    pub fn vrfs(&self) -> &[VrfView] {
        &self.vrfs
    }

    /// What the plan reads, as it stands now.
    pub fn planner(&self) -> Planner<'_> {
        Planner {
            mirror: &self.mirror,
            vrfs: &self.vrfs,
            member_tables: &self.member_tables,
            sysctl: &self.sysctl,
            sysctls: self.sysctls.as_ref(),
        }
    }

    /// The whole plan (after a dump, a reload, a link change).
    pub fn plan(&self) -> Plan {
        self.planner().plan()
    }
}

/// Shortcuts the plan's tests take past a reload and a dump.
#[cfg(test)]
impl Engine {
    pub(crate) fn redeclare(&mut self, declared: Vec<DeclaredVrf>) {
        self.declared = declared;
        self.resolve();
    }

    pub(crate) fn set_sysctl_reader(&mut self, sysctl: SysctlReader) {
        self.sysctl = sysctl;
    }
}
