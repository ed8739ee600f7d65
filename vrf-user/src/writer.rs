//! The one map writer: it owns the maps and everything about them — VRF slots, stats slots,
//! nexthop-group ids and their reference counts, and a shadow of what it wrote — and turns a
//! [`Plan`] or a [`ChangeSet`] into the fewest map writes. Every change is a diff: a resync
//! converges the maps without emptying them; a nexthop group is written before a route points
//! at it and deleted after the last route stops pointing at it; a full map degrades the VRF.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use anyhow::{bail, Result};
use ipnet::IpNet;
use vrf_common::LINK_CAPTURE;
use vrf_common::{
    Link, Nexthop, NexthopGroup, NexthopInfo, Route, Vrf, LINK_FWD4, LINK_FWD6, LINK_MEMBER,
    LINK_RPF_LOOSE, LINK_RPF_STRICT, LINK_TAGS_HIDDEN, LINK_TRUNK, LINK_UP, LINK_V6_DISABLED,
    LINK_VLAN, LINK_VRF_DEVICE, MAX_LINKS, MAX_PATHS, MAX_VRFS, NEXTHOP_BUCKETS,
    NEXTHOP_STATS_ENTRIES, NEXTHOP_STATS_NONE, NH_GATEWAY, NH_GATEWAY6, VRF_ACTIVE, VRF_DEGRADED,
    VRF_IPSEC4, VRF_IPSEC6, VRF_LOCAL_MARKED4, VRF_LOCAL_MARKED6, VRF_LOCAL_RULE4, VRF_LOCAL_RULE6,
    VRF_NETFILTER4, VRF_NETFILTER6, VRF_NETFILTER_BYPASS, VRF_RULE4, VRF_RULE6,
};

use crate::{
    errno::is_full,
    flat4::Flat4,
    maps::{addr16, addr_from16, Maps},
    model::IpFamily,
    plan::{ChangeSet, LinkPlan, LinkRole, Path, Plan, RoutePlan},
    vrfs::VrfView,
};

/// A route's kind in the FIB when the data plane must pass it to the kernel.
pub const KIND_TO_KERNEL: u16 = 0;

pub struct MapWriter {
    maps: Maps,
    /// VRF name → slot, kept while the VRF exists.
    vrf_slots: BTreeMap<String, u32>,
    /// The VRFs of the last full plan (their counts are published after every change).
    planned_vrfs: Vec<VrfView>,
    vrfs: BTreeMap<u32, Vrf>,
    /// ifindex → stats slot, kept while vrfd runs so a member's counters survive it leaving.
    stats_slots: BTreeMap<u32, u32>,
    links: BTreeMap<u32, Link>,
    tx_ports: BTreeSet<u32>,
    /// Links that cannot take an XDP redirect (the kernel says so): kept out of TX_PORTS, so
    /// the fast path passes what it would send there to the kernel.
    no_redirect: BTreeSet<u32>,
    /// PORTS: (device, VLAN id or 0) → member or bond.
    ports: BTreeMap<(u32, u16), u32>,
    /// VLAN_PORTS: VLAN device → (parent, VLAN id).
    vlan_ports: BTreeMap<u32, (u32, u16)>,
    /// VLAN members left out of VLAN_PORTS for their egress-qos-map (logged once each).
    pcp_mapped: BTreeSet<u32>,
    routes: HashMap<(u32, IpNet), (RoutePlan, u32)>,
    /// Paths with their weights → (nexthop-group id, routes using it).
    groups: HashMap<Vec<Path>, (u32, u32)>,
    free_group_ids: Vec<u32>,
    next_group_id: u32,
    /// Kernel nexthop → its `NEXTHOP_STATS` slot, what `NEXTHOP_INFO` says of it, and the
    /// groups using it; a slot is freed with its last group and zeroed when reused.
    nexthop_slots: HashMap<NexthopIdentity, (u32, NexthopInfo, u32)>,
    free_nexthop_slots: Vec<u32>,
    next_nexthop_slot: u32,
    neighbours: HashMap<(u32, IpAddr), [u8; 6]>,
    /// Tables whose routes did not all fit: their VRFs are degraded until a full plan fits.
    overflowed: BTreeSet<u32>,
    /// The kernel's tables could not be read (a resync's dump failed): every VRF is degraded
    /// until one succeeds, since the maps may no longer hold the kernel's answer.
    kernel_unread: bool,
    /// An overflowed table lost a route: the next full plan may fit (see `wants_refit`).
    refit: bool,
    /// Table → (IPv4, IPv6) entries in the shadow.
    counts: HashMap<u32, (u32, u32)>,
    /// `LINK_CAPTURE` on every link: a capture holds its lease.
    capture: bool,
    /// What a previous vrfd left in the maps, until the first full plan converged them.
    adopted: Option<Adopted>,
    /// VRFs and links left to the kernel for want of a slot (reported once each).
    unserved_vrfs: BTreeSet<String>,
    unserved_links: BTreeSet<u32>,
    /// The flat IPv4 FIB's shadow, kept in step with every FIB4 write.
    flat4: Flat4,
    /// During a full plan: the flat FIB is written once at the end, and the nexthop groups its
    /// entries may still name are released only after that (their ids must not be reused first).
    flat4_batch: Option<Vec<Vec<Path>>>,
}

/// The live entries of adopted maps that no plan has claimed yet. The first full plan
/// overwrites what differs, keeps what is equal, and only then deletes what is left: no entry
/// the programs read is ever missing or pointing at another's slot in between.
#[derive(Default)]
struct Adopted {
    routes: HashMap<(u32, IpNet), Route>,
    /// Live nexthop groups by content → id: an equal group keeps its id (routes point at it).
    groups: HashMap<Vec<u8>, u32>,
    neighbours: Vec<(u32, IpAddr)>,
}

impl MapWriter {
    pub fn new(maps: Maps) -> Self {
        let flat4 = Flat4::new(maps.flat4.sizes());
        MapWriter {
            flat4,
            flat4_batch: None,
            maps,
            vrf_slots: BTreeMap::new(),
            planned_vrfs: Vec::new(),
            vrfs: BTreeMap::new(),
            stats_slots: BTreeMap::new(),
            links: BTreeMap::new(),
            tx_ports: BTreeSet::new(),
            no_redirect: BTreeSet::new(),
            ports: BTreeMap::new(),
            vlan_ports: BTreeMap::new(),
            pcp_mapped: BTreeSet::new(),
            routes: HashMap::new(),
            groups: HashMap::new(),
            free_group_ids: Vec::new(),
            next_group_id: 1,
            nexthop_slots: HashMap::new(),
            free_nexthop_slots: Vec::new(),
            // Slot 0 counts paths without a slot of their own.
            next_nexthop_slot: NEXTHOP_STATS_NONE + 1,
            neighbours: HashMap::new(),
            overflowed: BTreeSet::new(),
            kernel_unread: false,
            refit: false,
            counts: HashMap::new(),
            capture: false,
            adopted: None,
            unserved_vrfs: BTreeSet::new(),
            unserved_links: BTreeSet::new(),
        }
    }

    /// A writer for maps a previous vrfd filled (restart): VRF and stats slots are taken from
    /// the live entries, so counters keep counting and no link ever names another VRF's slot;
    /// routes, groups and neighbours are reconciled by the first [`apply_plan`](Self::apply_plan).
    pub fn adopt(maps: Maps) -> Result<Self> {
        let mut w = MapWriter::new(maps);
        // The previous vrfd's flat tables are unknown here: the trie (complete) serves every
        // table until the new shadow rebuilds them, out of ids quarantined from now.
        let (flat4, clear) = Flat4::adopt(w.maps.flat4.sizes(), std::time::Instant::now());
        w.flat4 = flat4;
        w.maps.flat4.apply(&clear)?;
        for slot in 0..MAX_VRFS {
            let v = w.maps.vrf(slot)?;
            if v.flags & VRF_ACTIVE != 0 {
                let len = v.name.iter().position(|b| *b == 0).unwrap_or(v.name.len());
                let name = String::from_utf8_lossy(&v.name[..len]).into_owned();
                w.vrf_slots.insert(name, slot);
                w.vrfs.insert(slot, v);
            }
        }
        for (ifindex, link) in w.maps.links()? {
            w.stats_slots.insert(ifindex, link.stats_slot);
            if link.flags & (LINK_VRF_DEVICE | LINK_VLAN) == 0 {
                w.tx_ports.insert(ifindex);
            }
            w.links.insert(ifindex, link);
        }
        let mut adopted = Adopted::default();
        for (table, prefix, route) in w.maps.routes()? {
            adopted.routes.insert((table, prefix), route);
        }
        for (id, group) in w.maps.nexthop_groups()? {
            adopted
                .groups
                .insert(bytemuck::bytes_of(&group).to_vec(), id);
            w.next_group_id = w.next_group_id.max(id + 1);
        }
        adopted.neighbours = w.maps.neighbour_keys()?;
        // Nexthop slots keep counting: adopted groups name them, and equal paths get them back.
        for (slot, info) in w.maps.nexthop_slots()? {
            w.nexthop_slots
                .insert(NexthopIdentity::of_info(&info), (slot, info, 0));
            w.next_nexthop_slot = w.next_nexthop_slot.max(slot + 1);
        }
        let used: BTreeSet<u32> = w.nexthop_slots.values().map(|(s, _, _)| *s).collect();
        w.free_nexthop_slots = (NEXTHOP_STATS_NONE + 1..w.next_nexthop_slot)
            .filter(|s| !used.contains(s))
            .collect();
        tracing::info!(
            vrfs = w.vrf_slots.len(),
            links = w.links.len(),
            routes = adopted.routes.len(),
            groups = adopted.groups.len(),
            neighbours = adopted.neighbours.len(),
            "adopted the live maps"
        );
        w.adopted = Some(adopted);
        Ok(w)
    }

    /// After the first full plan: delete what the previous vrfd wrote and the plan did not claim.
    fn finish_adoption(&mut self) -> Result<()> {
        let Some(adopted) = self.adopted.take() else {
            return Ok(());
        };
        for (table, prefix) in adopted.routes.keys() {
            self.maps.remove_route(*table, *prefix)?;
            self.set_flat4(*table, *prefix, None)?;
        }
        for id in adopted.groups.values() {
            self.maps.remove_nexthop_group(*id)?;
            self.free_group_ids.push(*id);
        }
        let unclaimed: Vec<NexthopIdentity> = self
            .nexthop_slots
            .iter()
            .filter(|(_, (_, _, refs))| *refs == 0)
            .map(|(k, _)| *k)
            .collect();
        for key in unclaimed {
            if let Some((slot, _, _)) = self.nexthop_slots.remove(&key) {
                self.maps.remove_nexthop_slot(slot)?;
                self.free_nexthop_slots.push(slot);
            }
        }
        for key in adopted.neighbours {
            if !self.neighbours.contains_key(&key) {
                self.maps.remove_neighbour(key.0, key.1)?;
            }
        }
        Ok(())
    }

    /// The maps, to read (counters, inspection); writes go through the writer only.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// Converge every map to `plan`: VRF slots first (links name them), then links (routes
    /// and neighbours need them), neighbours, routes, and the VRF entries with their counts.
    pub fn apply_plan(&mut self, plan: &Plan) -> Result<()> {
        self.assign_vrf_slots(&plan.vrfs)?;
        self.apply_links(&plan.links)?;
        self.sync_neighbours(&plan.neighbours)?;
        self.sync_routes(&plan.routes)?;
        self.finish_adoption()?;
        self.planned_vrfs = plan.vrfs.clone();
        self.publish_vrfs()
    }

    /// Apply the routes and neighbours that changed since the last full plan.
    pub fn apply_changes(&mut self, changes: &ChangeSet) -> Result<()> {
        for ((table, prefix), route) in &changes.routes {
            self.set_route(*table, *prefix, route.clone())?;
        }
        for ((ifindex, addr), mac) in &changes.neighbours {
            self.set_neighbour(*ifindex, *addr, *mac)?;
        }
        if !changes.is_empty() {
            self.publish_vrfs()?;
        }
        Ok(())
    }

    /// The links that cannot take an XDP redirect now (see [`crate::xdp_target`]); the next
    /// [`apply_links`](Self::apply_links) takes them out of TX_PORTS or puts them back.
    pub fn set_redirect_refused(&mut self, refused: BTreeSet<u32>) {
        self.no_redirect = refused;
    }

    pub fn redirect_refused(&self) -> &BTreeSet<u32> {
        &self.no_redirect
    }

    /// The links written to LINKS (the ones a redirect target can matter for).
    pub fn link_ifindexes(&self) -> Vec<u32> {
        self.links.keys().copied().collect()
    }

    /// Converge LINKS and TX_PORTS (also alone: sysctls change without events). Links whose VRF
    /// has no slot are left out.
    pub fn apply_links(&mut self, desired: &BTreeMap<u32, LinkPlan>) -> Result<()> {
        let mut written = BTreeSet::new();
        for (ifindex, plan) in desired {
            let Some(link) = self.link_entry(*ifindex, plan)? else {
                continue;
            };
            written.insert(*ifindex);
            // A VLAN device takes no redirect: its frames go tagged to its parent.
            if !self.tx_ports.contains(ifindex)
                && link.flags & (LINK_VRF_DEVICE | LINK_VLAN) == 0
                && !self.no_redirect.contains(ifindex)
            {
                self.maps.add_tx_port(*ifindex)?;
                self.tx_ports.insert(*ifindex);
            }
            if self.links.get(ifindex) != Some(&link) {
                let hidden = |l: &Link| l.flags & LINK_TAGS_HIDDEN != 0;
                if hidden(&link) && !self.links.get(ifindex).is_some_and(hidden) {
                    tracing::info!(ifindex, "this trunk may strip VLAN tags before XDP (rx-vlan-offload on, or a veth that is a member too): its frames go to the kernel (reading a stripped tag, bpf_xdp_metadata_rx_vlan_tag, needs a device-bound XDP program, which aya 0.14 cannot load); `ethtool -K DEV rxvlan off` gives the fast path back");
                }
                self.maps.set_link(*ifindex, &link)?;
                self.links.insert(*ifindex, link);
            }
        }
        for ifindex in stale(self.links.keys(), |i| written.contains(i)) {
            self.maps.remove_link(ifindex)?;
            self.links.remove(&ifindex);
        }
        let keep = |i: &u32| written.contains(i) && !self.no_redirect.contains(i);
        for ifindex in stale(self.tx_ports.iter(), keep) {
            self.maps.remove_tx_port(ifindex)?;
            self.tx_ports.remove(&ifindex);
        }
        self.apply_ports(desired, &written)
    }

    /// Converge PORTS and VLAN_PORTS to the written links: a VLAN member is found by (parent,
    /// id), a bond by each slave, and a VLAN device leaves through its parent. Entries are
    /// written before and removed after the links that name them change.
    fn apply_ports(
        &mut self,
        desired: &BTreeMap<u32, LinkPlan>,
        written: &BTreeSet<u32>,
    ) -> Result<()> {
        let mut ports = BTreeMap::new();
        let mut vlan_ports = BTreeMap::new();
        let mut pcp_mapped = BTreeSet::new();
        for (ifindex, plan) in desired.iter().filter(|(i, _)| written.contains(i)) {
            if let Some(v) = plan.vlan.filter(|v| written.contains(&v.parent)) {
                // Without VLAN_PORTS, forwards out of it pass to the kernel (`egress`), which
                // tags them with the PCP its egress-qos-map gives.
                if !v.pcp_mapped {
                    vlan_ports.insert(*ifindex, (v.parent, v.id));
                } else {
                    if !self.pcp_mapped.contains(ifindex) {
                        tracing::info!(ifindex, "this VLAN member's egress-qos-map sets a PCP: what leaves through it goes to the kernel (XDP pushes PCP 0)");
                    }
                    pcp_mapped.insert(*ifindex);
                }
                if matches!(plan.role, LinkRole::Member { .. }) {
                    ports.insert((v.parent, v.id), *ifindex);
                }
            }
            for slave in &plan.slaves {
                ports.insert((*slave, 0), *ifindex);
            }
        }
        self.pcp_mapped = pcp_mapped;
        converge(
            &mut self.maps,
            &mut self.ports,
            &ports,
            |m, (dev, vid), member| m.set_port(dev, vid, member),
            |m, (dev, vid)| m.remove_port(dev, vid),
        )?;
        converge(
            &mut self.maps,
            &mut self.vlan_ports,
            &vlan_ports,
            |m, ifindex, (parent, vid)| m.set_vlan_port(ifindex, parent, vid),
            Maps::remove_vlan_port,
        )
    }

    /// The LINKS entry for a planned link: its VRF's slot, its stats slot, its flags.
    fn link_entry(&mut self, ifindex: u32, plan: &LinkPlan) -> Result<Option<Link>> {
        let mut up = if plan.up { LINK_UP } else { 0 };
        if plan.vlan.is_some() {
            up |= LINK_VLAN;
        }
        if plan.trunk {
            up |= LINK_TRUNK;
        }
        if plan.tags_hidden {
            up |= LINK_TAGS_HIDDEN;
        }
        let (vrf, flags) = match &plan.role {
            LinkRole::Egress => (u32::MAX, up | v6_disabled(plan)),
            LinkRole::VrfDevice { vrf } => match self.vrf_slots.get(vrf) {
                Some(slot) => (*slot, LINK_VRF_DEVICE | up),
                None => return Ok(None),
            },
            LinkRole::Member { vrf } => match self.vrf_slots.get(vrf) {
                Some(slot) => (*slot, member_flags(plan) | up),
                None => return Ok(None),
            },
        };
        let capture = if self.capture { LINK_CAPTURE } else { 0 };
        let Some(stats_slot) = self.stats_slot_of(ifindex)? else {
            if self.unserved_links.insert(ifindex) {
                tracing::warn!(
                    ifindex,
                    "more than {MAX_LINKS} links: this one is left to the kernel"
                );
            }
            return Ok(None);
        };
        self.unserved_links.remove(&ifindex);
        Ok(Some(Link {
            vrf,
            stats_slot,
            mtu: plan.mtu,
            mac: plan.mac,
            flags: flags | capture,
            // The kernel keeps it within [1280, mtu]; 0 (not known) means the device's.
            mtu6: match plan.sysctl.mtu6 {
                0 => plan.mtu,
                m => m.min(plan.mtu),
            },
        }))
    }

    /// Turn `LINK_CAPTURE` on or off on every link (`vrfctl capture` started, or its lease
    /// ended): the one bit the fast path tests per packet before looking at `CAPTURE`.
    pub fn set_capture(&mut self, on: bool) -> Result<()> {
        if self.capture == on {
            return Ok(());
        }
        self.capture = on;
        for (ifindex, link) in self.links.iter_mut() {
            link.flags = if on {
                link.flags | LINK_CAPTURE
            } else {
                link.flags & !LINK_CAPTURE
            };
            self.maps.set_link(*ifindex, link)?;
        }
        Ok(())
    }

    /// The stats slot of `ifindex`; None when every slot is held by a link in LINKS (that link
    /// is then left to the kernel). Slots of links no longer in LINKS are kept (a member that
    /// comes back keeps its counters) until they are needed: then they are reclaimed, so links
    /// that come and go thousands of times never run out.
    fn stats_slot_of(&mut self, ifindex: u32) -> Result<Option<u32>> {
        if let Some(s) = self.stats_slots.get(&ifindex) {
            return Ok(Some(*s));
        }
        let used: BTreeSet<u32> = self.stats_slots.values().copied().collect();
        let s = match (0..MAX_LINKS).find(|s| !used.contains(s)) {
            Some(s) => s,
            None => {
                let stale: Vec<u32> = self
                    .stats_slots
                    .keys()
                    .filter(|i| !self.links.contains_key(i))
                    .copied()
                    .collect();
                for i in &stale {
                    self.stats_slots.remove(i);
                }
                let Some(s) = stale
                    .first()
                    .and((0..MAX_LINKS).find(|s| !self.stats_slots.values().any(|u| u == s)))
                else {
                    return Ok(None);
                };
                s
            }
        };
        self.maps.reset_link_counters(s)?;
        self.stats_slots.insert(ifindex, s);
        Ok(Some(s))
    }

    /// Give every VRF a slot (new slots start with zeroed counters) and free the slots of VRFs
    /// that are gone.
    fn assign_vrf_slots(&mut self, vrfs: &[VrfView]) -> Result<()> {
        let names: BTreeSet<&str> = vrfs.iter().map(|v| v.name.as_str()).collect();
        for name in stale(self.vrf_slots.keys(), |n| names.contains(n.as_str())) {
            if let Some(slot) = self.vrf_slots.remove(&name) {
                self.maps.set_vrf(slot, &Vrf::default())?;
                self.vrfs.remove(&slot);
            }
        }
        for v in vrfs {
            if self.vrf_slots.contains_key(&v.name) {
                continue;
            }
            let used: BTreeSet<u32> = self.vrf_slots.values().copied().collect();
            let Some(slot) = (0..MAX_VRFS).find(|s| !used.contains(s)) else {
                // Not served (its links get no entry): the kernel routes it; vrfd goes on.
                if self.unserved_vrfs.insert(v.name.clone()) {
                    tracing::warn!(vrf = %v.name, "more than {MAX_VRFS} VRFs: this one is not served, the kernel routes it");
                }
                continue;
            };
            self.unserved_vrfs.remove(&v.name);
            self.maps.reset_vrf_counters(slot)?;
            self.vrf_slots.insert(v.name.clone(), slot);
        }
        Ok(())
    }

    /// Only the VRFs' kernel reasons changed (netfilter, IPsec, rules): write their entries.
    /// Their names and members are those of the last full plan, so slots stay as they are.
    pub fn apply_vrfs(&mut self, vrfs: &[VrfView]) -> Result<()> {
        self.planned_vrfs = vrfs.to_vec();
        self.publish_vrfs()
    }

    /// Degrade every VRF now: the kernel's tables cannot be read.
    pub fn degrade_all_unread(&mut self) -> Result<()> {
        if self.kernel_unread {
            return Ok(());
        }
        self.kernel_unread = true;
        self.publish_vrfs()
    }

    /// The kernel was read again: the next full plan, written before the VRF entries, serves
    /// the VRFs again.
    pub fn lift_unread(&mut self) {
        self.kernel_unread = false;
    }

    /// Write each planned VRF's table, state and counts.
    fn publish_vrfs(&mut self) -> Result<()> {
        for v in &self.planned_vrfs {
            let Some(slot) = self.vrf_slots.get(&v.name).copied() else {
                continue;
            };
            let mut flags = VRF_ACTIVE | kernel_flags(v);
            if self.overflowed.contains(&v.table) || self.kernel_unread {
                flags |= VRF_DEGRADED;
            }
            let (routes4, routes6) = self.counts.get(&v.table).copied().unwrap_or_default();
            let neighbours = self
                .neighbours
                .keys()
                .filter(|(i, _)| v.members.contains(i))
                .count() as u32;
            let mut name = [0u8; 16];
            let n = v.name.len().min(15);
            name[..n].copy_from_slice(&v.name.as_bytes()[..n]);
            let entry = Vrf {
                table: v.table,
                flags,
                ifindex: v.device.unwrap_or(0),
                routes4,
                routes6,
                neighbours,
                name,
            };
            if self.vrfs.get(&slot) != Some(&entry) {
                self.maps.set_vrf(slot, &entry)?;
                self.vrfs.insert(slot, entry);
            }
        }
        Ok(())
    }

    /// Keep the per-table counts in step with the shadow (counting on demand would walk every
    /// route after each event batch).
    fn count(&mut self, table: u32, prefix: IpNet, delta: i32) {
        let c = self.counts.entry(table).or_default();
        let n = if prefix.addr().is_ipv4() {
            &mut c.0
        } else {
            &mut c.1
        };
        *n = n.saturating_add_signed(delta);
    }

    /// Converge the FIBs to `desired`: changed and new entries first, stale ones after.
    fn sync_routes(&mut self, desired: &HashMap<(u32, IpNet), RoutePlan>) -> Result<()> {
        let stale: Vec<(u32, IpNet)> = self
            .routes
            .keys()
            .filter(|k| !desired.contains_key(k))
            .copied()
            .collect();
        // A full map: the space the stale entries hold is what the new ones need.
        let full = !std::mem::take(&mut self.overflowed).is_empty();
        if full {
            for (table, prefix) in &stale {
                self.set_route(*table, *prefix, None)?;
            }
        }
        self.flat4_batch = Some(Vec::new());
        let written = self.write_routes(desired, if full { &[] } else { &stale });
        // Flushed whatever happened: later writes must not wait for a batch that ended.
        let flushed = self.flush_flat4_batch();
        self.refit = false;
        written.and(flushed)
    }

    fn write_routes(
        &mut self,
        desired: &HashMap<(u32, IpNet), RoutePlan>,
        stale: &[(u32, IpNet)],
    ) -> Result<()> {
        for ((table, prefix), entry) in desired {
            self.set_route(*table, *prefix, Some(entry.clone()))?;
        }
        for (table, prefix) in stale {
            self.set_route(*table, *prefix, None)?;
        }
        Ok(())
    }

    /// The end of a full plan's routes: the flat FIB's writes, then the groups they freed.
    fn flush_flat4_batch(&mut self) -> Result<()> {
        let Some(released) = self.flat4_batch.take() else {
            return Ok(());
        };
        self.maps.flat4.sync(&mut self.flat4)?;
        for paths in released {
            self.release_group(&paths)?;
        }
        Ok(())
    }

    /// Release a replaced or removed route's group once no flat entry can name it.
    fn release_after_flat4(&mut self, paths: Vec<Path>) -> Result<()> {
        match &mut self.flat4_batch {
            Some(later) => {
                later.push(paths);
                Ok(())
            }
            None => self.release_group(&paths),
        }
    }

    /// A degraded (overflowed) table lost routes since the last full plan: one may fit now.
    pub fn wants_refit(&self) -> bool {
        self.refit
    }

    /// Set or remove one FIB entry. A full map marks the table overflowed (its VRFs degrade)
    /// instead of failing: the kernel keeps forwarding that VRF correctly.
    fn set_route(&mut self, table: u32, prefix: IpNet, entry: Option<RoutePlan>) -> Result<()> {
        if entry.is_none() && self.overflowed.contains(&table) {
            self.refit = true;
        }
        match self.try_set_route(table, prefix, entry) {
            Err(e) if is_full(&e) => {
                if self.overflowed.insert(table) {
                    tracing::error!(table, %prefix, error = %e, "a map is full: the VRF is degraded, its traffic goes to the kernel");
                }
                Ok(())
            }
            other => other,
        }
    }

    fn try_set_route(&mut self, table: u32, prefix: IpNet, entry: Option<RoutePlan>) -> Result<()> {
        let key = (table, prefix);
        if self.routes.get(&key).map(|(e, _)| e) == entry.as_ref() {
            return Ok(());
        }
        let old_group = self.routes.get(&key).map(|(_, g)| *g).filter(|g| *g != 0);
        match entry {
            Some(entry) => {
                let group = if entry.paths.is_empty() {
                    0
                } else {
                    self.acquire_group(&entry.paths)?
                };
                let route = Route {
                    kind: entry.kind.map_or(KIND_TO_KERNEL, |k| k as u16),
                    mtu: entry.mtu,
                    nexthop: group,
                };
                let live = self.adopted.as_mut().and_then(|a| a.routes.remove(&key));
                let written = if live == Some(route) {
                    Ok(())
                } else {
                    self.maps.insert_route(table, prefix, &route)
                };
                if let Err(e) = written {
                    if group != 0 {
                        self.release_group(&entry.paths)?;
                    }
                    return Err(e);
                }
                // Before the old group can go: no flat entry may still name it.
                self.set_flat4(table, prefix, Some(route))?;
                let old = self.routes.insert(key, (entry, group));
                if old.is_none() {
                    self.count(table, prefix, 1);
                }
                if let (Some(_), Some((old_entry, _))) = (old_group, old) {
                    self.release_after_flat4(old_entry.paths)?;
                }
            }
            None => {
                self.maps.remove_route(table, prefix)?;
                self.set_flat4(table, prefix, None)?;
                if let Some((old_entry, _)) = self.routes.remove(&key) {
                    self.count(table, prefix, -1);
                    if old_group.is_some() {
                        self.release_after_flat4(old_entry.paths)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The flat IPv4 FIB follows each FIB4 write at once (its stores are plain memory writes;
    /// only a new route value or a table's directory way costs a syscall).
    fn set_flat4(&mut self, table: u32, prefix: IpNet, route: Option<Route>) -> Result<()> {
        if let IpNet::V4(net) = prefix {
            self.flat4.set(table, net, route);
            if self.flat4_batch.is_none() {
                self.maps.flat4.sync(&mut self.flat4)?;
            }
        }
        Ok(())
    }

    /// Tables served by the flat IPv4 FIB: (table, flat slot).
    pub fn flat4_tables(&self) -> Vec<(u32, u32)> {
        self.flat4.flat_tables()
    }

    fn acquire_group(&mut self, paths: &[Path]) -> Result<u32> {
        if let Some((id, refs)) = self.groups.get_mut(paths) {
            *refs += 1;
            return Ok(*id);
        }
        let id = self.free_group_ids.pop().unwrap_or_else(|| {
            self.next_group_id += 1;
            self.next_group_id - 1
        });
        let mut hops: Vec<(Nexthop, u32)> = Vec::with_capacity(paths.len());
        for p in paths {
            let mut nh = nexthop(p);
            nh.stats_slot = self.acquire_nexthop_slot(p)?;
            hops.push((nh, p.weight));
        }
        let group = nexthop_group(&hops);
        // The same group live in adopted maps keeps its id: no write, routes keep pointing at it.
        if let (Ok(g), Some(a)) = (&group, self.adopted.as_mut()) {
            if let Some(live) = a.groups.remove(bytemuck::bytes_of(g)) {
                self.free_group_ids.push(id);
                // (the path slots stay acquired: this group holds them)
                self.groups.insert(paths.to_vec(), (live, 1));
                return Ok(live);
            }
        }
        let written = group.and_then(|g| self.maps.set_nexthop_group(id, &g));
        if let Err(e) = written {
            self.free_group_ids.push(id);
            for p in paths {
                self.release_nexthop_slot(p)?;
            }
            return Err(e);
        }
        self.groups.insert(paths.to_vec(), (id, 1));
        Ok(id)
    }

    fn release_group(&mut self, paths: &[Path]) -> Result<()> {
        let Some((id, refs)) = self.groups.get_mut(paths) else {
            return Ok(());
        };
        *refs -= 1;
        if *refs == 0 {
            let id = *id;
            self.groups.remove(paths);
            self.maps.remove_nexthop_group(id)?;
            self.free_group_ids.push(id);
            for p in paths {
                self.release_nexthop_slot(p)?;
            }
        }
        Ok(())
    }

    /// The counter slot of the kernel nexthop `path` is, taken once more; `NEXTHOP_STATS_NONE`
    /// when every slot is in use (the path is then counted nowhere of its own).
    fn acquire_nexthop_slot(&mut self, path: &Path) -> Result<u32> {
        let key = NexthopIdentity::of_path(path);
        let info = nexthop_info(path);
        if let Some((slot, shown, refs)) = self.nexthop_slots.get_mut(&key) {
            *refs += 1;
            // A nexthop object replaced in place keeps its slot; its labels follow it.
            if *shown != info {
                self.maps.update_nexthop_info(*slot, &info)?;
                *shown = info;
            }
            return Ok(*slot);
        }
        let slot = match self.free_nexthop_slots.pop() {
            Some(s) => s,
            None if self.next_nexthop_slot < NEXTHOP_STATS_ENTRIES => {
                self.next_nexthop_slot += 1;
                self.next_nexthop_slot - 1
            }
            None => {
                tracing::warn!(?key, "every per-nexthop counter slot is in use: this nexthop is forwarded but not counted on its own");
                return Ok(NEXTHOP_STATS_NONE);
            }
        };
        self.maps.set_nexthop_slot(slot, &info)?;
        self.nexthop_slots.insert(key, (slot, info, 1));
        Ok(slot)
    }

    fn release_nexthop_slot(&mut self, path: &Path) -> Result<()> {
        let key = NexthopIdentity::of_path(path);
        let Some((slot, _, refs)) = self.nexthop_slots.get_mut(&key) else {
            return Ok(());
        };
        *refs = refs.saturating_sub(1);
        if *refs == 0 {
            let slot = *slot;
            self.nexthop_slots.remove(&key);
            self.maps.remove_nexthop_slot(slot)?;
            self.free_nexthop_slots.push(slot);
        }
        Ok(())
    }

    /// Neighbours are kept only on links the LINKS map holds (the data plane looks up no
    /// other).
    fn set_neighbour(&mut self, ifindex: u32, addr: IpAddr, mac: Option<[u8; 6]>) -> Result<()> {
        let mac = mac.filter(|_| self.links.contains_key(&ifindex));
        let key = (ifindex, addr);
        if self.neighbours.get(&key).copied() == mac {
            return Ok(());
        }
        match mac {
            Some(mac) => {
                if let Err(e) = self.maps.set_neighbour(ifindex, addr, mac) {
                    if is_full(&e) {
                        // Without the entry the data plane passes: correct, only slower.
                        tracing::warn!(ifindex, %addr, "neighbour map full: the kernel forwards to this neighbour");
                        return Ok(());
                    }
                    return Err(e);
                }
                self.neighbours.insert(key, mac);
            }
            None => {
                self.maps.remove_neighbour(ifindex, addr)?;
                self.neighbours.remove(&key);
            }
        }
        Ok(())
    }

    fn sync_neighbours(&mut self, desired: &HashMap<(u32, IpAddr), [u8; 6]>) -> Result<()> {
        for ((ifindex, addr), mac) in desired {
            if self.links.contains_key(ifindex) {
                self.set_neighbour(*ifindex, *addr, Some(*mac))?;
            }
        }
        let keep = |k: &(u32, IpAddr)| desired.contains_key(k) && self.links.contains_key(&k.0);
        for (ifindex, addr) in stale(self.neighbours.keys(), keep) {
            self.set_neighbour(ifindex, addr, None)?;
        }
        Ok(())
    }

    pub fn vrf_slot(&self, name: &str) -> Option<u32> {
        self.vrf_slots.get(name).copied()
    }

    pub fn stats_slot(&self, ifindex: u32) -> Option<u32> {
        self.stats_slots.get(&ifindex).copied()
    }

    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Per-nexthop counter slots in use.
    pub fn nexthop_slot_count(&self) -> usize {
        self.nexthop_slots.len()
    }

    pub fn neighbour_count(&self) -> usize {
        self.neighbours.len()
    }
}

/// The per-family VRF flags that send a family to the kernel, from the plan's reasons.
fn kernel_flags(v: &VrfView) -> u32 {
    let mut flags = 0;
    for (reasons, f4, f6) in [
        (&v.netfilter, VRF_NETFILTER4, VRF_NETFILTER6),
        (&v.ipsec, VRF_IPSEC4, VRF_IPSEC6),
        (&v.degraded, VRF_RULE4, VRF_RULE6),
        (&v.local_rules, VRF_LOCAL_RULE4, VRF_LOCAL_RULE6),
        (&v.local_marked, VRF_LOCAL_MARKED4, VRF_LOCAL_MARKED6),
    ] {
        if !reasons.of(IpFamily::V4).is_empty() {
            flags |= f4;
        }
        if !reasons.of(IpFamily::V6).is_empty() {
            flags |= f6;
        }
    }
    if v.netfilter_bypass {
        flags |= VRF_NETFILTER_BYPASS;
    }
    flags
}

/// `disable_ipv6` on a link: IPv6 neither arrives nor leaves there.
fn v6_disabled(plan: &LinkPlan) -> u16 {
    if plan.sysctl.disable_ipv6 {
        LINK_V6_DISABLED
    } else {
        0
    }
}

/// A member's flags from its sysctls (UP is added by the caller).
fn member_flags(plan: &LinkPlan) -> u16 {
    let s = plan.sysctl;
    let mut flags = LINK_MEMBER | v6_disabled(plan);
    if s.forwarding4 {
        flags |= LINK_FWD4;
    }
    if s.forwarding6 {
        flags |= LINK_FWD6;
    }
    flags
        | match s.rp_filter {
            0 => 0,
            1 => LINK_RPF_STRICT,
            _ => LINK_RPF_LOOSE,
        }
}

/// What one per-nexthop counter counts, in the kernel's identities: a nexthop object by its
/// id (it keeps its counters when replaced in place), a classic route's path by where it leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NexthopIdentity {
    Object(u32),
    Path {
        ifindex: u32,
        gateway: Option<IpAddr>,
    },
}

impl NexthopIdentity {
    pub fn of_path(path: &Path) -> Self {
        match path.nhid {
            Some(id) => NexthopIdentity::Object(id),
            None => NexthopIdentity::Path {
                ifindex: path.ifindex,
                gateway: path.gateway,
            },
        }
    }

    fn of_info(info: &NexthopInfo) -> Self {
        if info.nhid != 0 {
            return NexthopIdentity::Object(info.nhid);
        }
        let family = if info.flags & NH_GATEWAY6 != 0 { 6 } else { 4 };
        NexthopIdentity::Path {
            ifindex: info.ifindex,
            gateway: (info.flags & NH_GATEWAY != 0)
                .then(|| addr_from16(family, info.gateway))
                .flatten(),
        }
    }
}

/// The `NEXTHOP_INFO` entry of a path's slot.
fn nexthop_info(path: &Path) -> NexthopInfo {
    let nh = nexthop(path);
    NexthopInfo {
        nhid: path.nhid.unwrap_or(0),
        ifindex: nh.ifindex,
        flags: nh.flags,
        _pad: 0,
        gateway: nh.gateway,
    }
}

/// One path in the map's form.
pub fn nexthop(path: &Path) -> Nexthop {
    match path.gateway {
        None => Nexthop {
            ifindex: path.ifindex,
            flags: 0,
            gateway: [0; 16],
            stats_slot: NEXTHOP_STATS_NONE,
            _pad: 0,
        },
        Some(gw) => {
            let (family, gateway) = addr16(gw);
            let flags = NH_GATEWAY | if family == 6 { NH_GATEWAY6 } else { 0 };
            Nexthop {
                ifindex: path.ifindex,
                flags,
                gateway,
                stats_slot: NEXTHOP_STATS_NONE,
                _pad: 0,
            }
        }
    }
}

/// One path of a group and its weight (the kernel's: 1 to 65535, `rtnh_hops + 1` or a nexthop
/// group member's weight). A bare [`Nexthop`] weighs 1.
pub trait WeightedPath {
    fn path(&self) -> Nexthop;
    fn weight(&self) -> u32;
}

impl WeightedPath for Nexthop {
    fn path(&self) -> Nexthop {
        *self
    }
    fn weight(&self) -> u32 {
        1
    }
}

impl WeightedPath for (Nexthop, u32) {
    fn path(&self) -> Nexthop {
        self.0
    }
    fn weight(&self) -> u32 {
        self.1
    }
}

/// A route's set of paths, their buckets filled in proportion to the weights the way the
/// kernel's hash-threshold multipath splits the hash space: path i owns the contiguous bucket
/// range [round(W(i-1)·N/W), round(W(i)·N/W)) of the N buckets (W(i): weights up to i), so each
/// share is within one bucket (1/1024) of its weight's. Fails beyond `MAX_PATHS` or on a zero
/// weight (the caller leaves such routes to the kernel).
pub fn nexthop_group<P: WeightedPath>(paths: &[P]) -> Result<NexthopGroup> {
    if paths.is_empty() || paths.len() > MAX_PATHS {
        bail!("a route needs 1 to {MAX_PATHS} paths, not {}", paths.len());
    }
    if let Some(p) = paths.iter().find(|p| p.weight() == 0) {
        bail!("path {:?} has weight 0", p.path());
    }
    let mut group = NexthopGroup {
        count: paths.len() as u32,
        ..Default::default()
    };
    let total: u64 = paths.iter().map(|p| u64::from(p.weight())).sum();
    let n = NEXTHOP_BUCKETS as u64;
    let (mut cumulative, mut start) = (0u64, 0usize);
    for (i, p) in paths.iter().enumerate() {
        group.paths[i] = p.path();
        cumulative += u64::from(p.weight());
        let end = ((cumulative * n + total / 2) / total) as usize;
        group.buckets[start..end].fill(i as u8);
        start = end;
    }
    Ok(group)
}

/// The keys of a shadow that `keep` rejects, collected so the shadow can change while they go.
fn stale<'a, K: Clone + 'a>(
    keys: impl Iterator<Item = &'a K>,
    keep: impl Fn(&K) -> bool,
) -> Vec<K> {
    keys.filter(|k| !keep(k)).cloned().collect()
}

/// Converge one map to `want` through its shadow: `set` each entry that differs, then `remove`
/// each the shadow holds that `want` does not (a new entry is in place before an old one goes).
fn converge<K: Ord + Copy, V: PartialEq + Copy>(
    maps: &mut Maps,
    shadow: &mut BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    set: impl Fn(&mut Maps, K, V) -> Result<()>,
    remove: impl Fn(&mut Maps, K) -> Result<()>,
) -> Result<()> {
    for (&k, &v) in want {
        if shadow.get(&k) != Some(&v) {
            set(maps, k, v)?;
            shadow.insert(k, v);
        }
    }
    for k in stale(shadow.keys(), |k| want.contains_key(k)) {
        remove(maps, k)?;
        shadow.remove(&k);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::LinkSysctl;

    #[test]
    fn member_flags_follow_the_sysctls() {
        let plan = |rp_filter| LinkPlan {
            role: LinkRole::Member { vrf: "red".into() },
            up: true,
            mtu: 1500,
            mac: [2, 0, 0, 0, 0, 1],
            sysctl: LinkSysctl {
                forwarding4: true,
                forwarding6: false,
                rp_filter,
                ..Default::default()
            },
            vlan: None,
            trunk: false,
            tags_hidden: false,
            slaves: Vec::new(),
        };
        assert_eq!(member_flags(&plan(0)), LINK_MEMBER | LINK_FWD4);
        assert_eq!(member_flags(&plan(1)) & LINK_RPF_STRICT, LINK_RPF_STRICT);
        assert_eq!(member_flags(&plan(2)) & LINK_RPF_LOOSE, LINK_RPF_LOOSE);
    }

    #[test]
    fn a_gateway_path_becomes_a_gateway_nexthop() {
        let gw: IpAddr = "fe80::1".parse().unwrap();
        let nh = nexthop(&Path {
            ifindex: 3,
            gateway: Some(gw),
            weight: 1,
            nhid: None,
        });
        assert_eq!(nh.flags, NH_GATEWAY | NH_GATEWAY6);
        assert_eq!(nh.ifindex, 3);
        assert!(nexthop_group::<Nexthop>(&[]).is_err());
    }

    fn shares(g: &NexthopGroup) -> Vec<usize> {
        (0..g.count as usize)
            .map(|i| g.buckets.iter().filter(|&&b| b as usize == i).count())
            .collect()
    }

    #[test]
    fn buckets_follow_weights_within_one_bucket() {
        let nh = |i| {
            nexthop(&Path {
                ifindex: i,
                gateway: None,
                weight: 1,
                nhid: None,
            })
        };
        assert_eq!(shares(&nexthop_group(&[nh(1)]).unwrap()), [1024]);
        assert_eq!(
            shares(&nexthop_group(&[(nh(1), 1), (nh(2), 3)]).unwrap()),
            [256, 768]
        );
        let wide: Vec<Nexthop> = (0..MAX_PATHS as u32).map(nh).collect();
        assert!(shares(&nexthop_group(&wide).unwrap())
            .iter()
            .all(|&s| s == 16));
        let odd: Vec<(Nexthop, u32)> = (0..63).map(|i| (nh(i), 1 + i % 5)).collect();
        let g = nexthop_group(&odd).unwrap();
        let total: u32 = odd.iter().map(|p| p.1).sum();
        for (s, (_, w)) in shares(&g).iter().zip(&odd) {
            let exact = f64::from(*w) * 1024.0 / f64::from(total);
            assert!((*s as f64 - exact).abs() <= 1.0, "{s} vs {exact}");
        }
        assert!(nexthop_group(&[(nh(1), 0)]).is_err());
        assert!(nexthop_group(&vec![nh(1); MAX_PATHS + 1]).is_err());
    }

    #[test]
    fn kernel_reasons_become_per_family_vrf_flags() {
        let mut v = VrfView::new("red".into(), 110, None, BTreeSet::new(), Vec::new());
        v.netfilter_bypass = true;
        v.netfilter.add(IpFamily::V4, "forward chain".into());
        v.ipsec.add(IpFamily::V6, "fwd policy".into());
        v.degraded.add(IpFamily::V6, "rule 500".into());
        v.local_marked
            .add(IpFamily::V4, "rule 900 fwmark 0x42".into());
        assert_eq!(
            kernel_flags(&v),
            VRF_NETFILTER4 | VRF_IPSEC6 | VRF_RULE6 | VRF_NETFILTER_BYPASS | VRF_LOCAL_MARKED4
        );
    }
}
