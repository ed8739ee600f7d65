//! Writes the engine's desired state into the maps and remembers what it wrote (a shadow), so
//! that every change is a diff: a resync converges the maps to the kernel without emptying them,
//! and nexthop groups are shared between routes, created before a route points at them and
//! deleted after the last route stops pointing at them.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use anyhow::Result;
use aya::maps::MapError;
use ipnet::IpNet;
use vrf_common::{Link, Nexthop, Route, Vrf, MAX_LINKS, MAX_VRFS, VRF_ACTIVE, VRF_DEGRADED};

use crate::{
    maps::{nexthop_group, Maps},
    sync::{RouteEntry, VrfView},
};

#[derive(Default)]
pub struct MapSync {
    /// VRF name → slot, kept while the VRF exists.
    vrf_slots: BTreeMap<String, u32>,
    vrfs: BTreeMap<u32, Vrf>,
    /// ifindex → stats slot, kept while vrfd runs so a member's counters survive it leaving.
    stats_slots: BTreeMap<u32, u32>,
    links: BTreeMap<u32, Link>,
    tx_ports: BTreeSet<u32>,
    routes: HashMap<(u32, IpNet), (RouteEntry, u32)>,
    groups: HashMap<Vec<Nexthop>, (u32, u32)>,
    free_group_ids: Vec<u32>,
    next_group_id: u32,
    neighbours: HashMap<(u32, IpAddr), [u8; 6]>,
    /// Tables whose routes did not all fit: their VRFs are degraded until a resync fits.
    overflowed: BTreeSet<u32>,
    /// Table → (IPv4, IPv6) entries in the shadow.
    counts: HashMap<u32, (u32, u32)>,
}

/// A write that failed because a map is full (the VRF degrades) rather than for a bug.
fn is_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<MapError>().is_some_and(|m| match m {
            MapError::SyscallError(s) => {
                matches!(
                    s.io_error.raw_os_error(),
                    Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM)
                )
            }
            _ => false,
        })
    })
}

impl MapSync {
    pub fn new() -> Self {
        MapSync {
            next_group_id: 1,
            ..Default::default()
        }
    }

    pub fn vrf_slot(&self, name: &str) -> Option<u32> {
        self.vrf_slots.get(name).copied()
    }

    pub fn stats_slot(&self, ifindex: u32) -> Option<u32> {
        self.stats_slots.get(&ifindex).copied()
    }

    /// Give every VRF a slot (new slots start with zeroed counters) and free the slots of VRFs
    /// that are gone. Call before `sync_links`, and `publish_vrfs` after the routes.
    pub fn assign_vrf_slots(&mut self, maps: &mut Maps, vrfs: &[VrfView]) -> Result<()> {
        let names: BTreeSet<&str> = vrfs.iter().map(|v| v.name.as_str()).collect();
        let gone: Vec<String> = self
            .vrf_slots
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(slot) = self.vrf_slots.remove(&name) {
                maps.set_vrf(slot, &Vrf::default())?;
                self.vrfs.remove(&slot);
            }
        }
        for v in vrfs {
            if self.vrf_slots.contains_key(&v.name) {
                continue;
            }
            let used: BTreeSet<u32> = self.vrf_slots.values().copied().collect();
            let Some(slot) = (0..MAX_VRFS).find(|s| !used.contains(s)) else {
                anyhow::bail!(
                    "more than {MAX_VRFS} VRFs: VRF {} is left to the kernel",
                    v.name
                );
            };
            maps.reset_vrf_counters(slot)?;
            self.vrf_slots.insert(v.name.clone(), slot);
        }
        Ok(())
    }

    /// Write each VRF's table, state and counts.
    pub fn publish_vrfs(&mut self, maps: &mut Maps, vrfs: &[VrfView]) -> Result<()> {
        for v in vrfs {
            let Some(slot) = self.vrf_slot(&v.name) else {
                continue;
            };
            let mut flags = VRF_ACTIVE;
            if v.degraded.is_some() || self.overflowed.contains(&v.table) {
                flags |= VRF_DEGRADED;
            }
            let (routes4, routes6) = self.route_counts(v.table);
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
                maps.set_vrf(slot, &entry)?;
                self.vrfs.insert(slot, entry);
            }
        }
        Ok(())
    }

    fn route_counts(&self, table: u32) -> (u32, u32) {
        self.counts.get(&table).copied().unwrap_or_default()
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

    /// Converge LINKS and TX_PORTS. Links that appear are written before they are needed, and
    /// links that go are removed last by the caller's ordering (routes are synced in between).
    pub fn sync_links(&mut self, maps: &mut Maps, desired: &BTreeMap<u32, Link>) -> Result<()> {
        for (ifindex, link) in desired {
            let slot = match self.stats_slots.get(ifindex) {
                Some(s) => *s,
                None => {
                    let used: BTreeSet<u32> = self.stats_slots.values().copied().collect();
                    let Some(s) = (0..MAX_LINKS).find(|s| !used.contains(s)) else {
                        anyhow::bail!("more than {MAX_LINKS} links");
                    };
                    maps.reset_link_counters(s)?;
                    self.stats_slots.insert(*ifindex, s);
                    s
                }
            };
            let link = Link {
                stats_slot: slot,
                ..*link
            };
            if !self.tx_ports.contains(ifindex) && link.flags & vrf_common::LINK_VRF_DEVICE == 0 {
                maps.add_tx_port(*ifindex)?;
                self.tx_ports.insert(*ifindex);
            }
            if self.links.get(ifindex) != Some(&link) {
                maps.set_link(*ifindex, &link)?;
                self.links.insert(*ifindex, link);
            }
        }
        let gone: Vec<u32> = self
            .links
            .keys()
            .filter(|i| !desired.contains_key(i))
            .copied()
            .collect();
        for ifindex in gone {
            maps.remove_link(ifindex)?;
            self.links.remove(&ifindex);
        }
        let gone: Vec<u32> = self
            .tx_ports
            .iter()
            .filter(|i| !desired.contains_key(i))
            .copied()
            .collect();
        for ifindex in gone {
            maps.remove_tx_port(ifindex)?;
            self.tx_ports.remove(&ifindex);
        }
        Ok(())
    }

    /// Set or remove one FIB entry. A full map marks the table overflowed (its VRFs degrade)
    /// instead of failing: the kernel keeps forwarding that VRF correctly.
    pub fn set_route(
        &mut self,
        maps: &mut Maps,
        table: u32,
        prefix: IpNet,
        entry: Option<RouteEntry>,
    ) -> Result<()> {
        match self.try_set_route(maps, table, prefix, entry) {
            Err(e) if is_full(&e) => {
                if self.overflowed.insert(table) {
                    tracing::error!(table, %prefix, error = %e, "a map is full: the VRF is degraded, its traffic goes to the kernel");
                }
                Ok(())
            }
            other => other,
        }
    }

    fn try_set_route(
        &mut self,
        maps: &mut Maps,
        table: u32,
        prefix: IpNet,
        entry: Option<RouteEntry>,
    ) -> Result<()> {
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
                    self.acquire_group(maps, &entry.paths)?
                };
                let route = Route {
                    kind: entry.kind,
                    mtu: entry.mtu,
                    nexthop: group,
                };
                if let Err(e) = maps.insert_route(table, prefix, &route) {
                    if group != 0 {
                        self.release_group(maps, &entry.paths)?;
                    }
                    return Err(e);
                }
                let old = self.routes.insert(key, (entry, group));
                if old.is_none() {
                    self.count(table, prefix, 1);
                }
                if let (Some(_), Some((old_entry, _))) = (old_group, old) {
                    self.release_group(maps, &old_entry.paths)?;
                }
            }
            None => {
                maps.remove_route(table, prefix)?;
                if let Some((old_entry, _)) = self.routes.remove(&key) {
                    self.count(table, prefix, -1);
                    if old_group.is_some() {
                        self.release_group(maps, &old_entry.paths)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn acquire_group(&mut self, maps: &mut Maps, paths: &[Nexthop]) -> Result<u32> {
        if let Some((id, refs)) = self.groups.get_mut(paths) {
            *refs += 1;
            return Ok(*id);
        }
        let id = self.free_group_ids.pop().unwrap_or_else(|| {
            self.next_group_id += 1;
            self.next_group_id - 1
        });
        if let Err(e) = maps.set_nexthop_group(id, &nexthop_group(paths)?) {
            self.free_group_ids.push(id);
            return Err(e);
        }
        self.groups.insert(paths.to_vec(), (id, 1));
        Ok(id)
    }

    fn release_group(&mut self, maps: &mut Maps, paths: &[Nexthop]) -> Result<()> {
        let Some((id, refs)) = self.groups.get_mut(paths) else {
            return Ok(());
        };
        *refs -= 1;
        if *refs == 0 {
            let id = *id;
            self.groups.remove(paths);
            maps.remove_nexthop_group(id)?;
            self.free_group_ids.push(id);
        }
        Ok(())
    }

    /// Converge the FIBs to `desired`: changed and new entries first, stale ones after.
    pub fn sync_routes(
        &mut self,
        maps: &mut Maps,
        desired: &HashMap<(u32, IpNet), RouteEntry>,
    ) -> Result<()> {
        self.overflowed.clear();
        for ((table, prefix), entry) in desired {
            self.set_route(maps, *table, *prefix, Some(entry.clone()))?;
        }
        let stale: Vec<(u32, IpNet)> = self
            .routes
            .keys()
            .filter(|k| !desired.contains_key(k))
            .copied()
            .collect();
        for (table, prefix) in stale {
            self.set_route(maps, table, prefix, None)?;
        }
        Ok(())
    }

    pub fn set_neighbour(
        &mut self,
        maps: &mut Maps,
        ifindex: u32,
        addr: IpAddr,
        mac: Option<[u8; 6]>,
    ) -> Result<()> {
        let key = (ifindex, addr);
        if self.neighbours.get(&key).copied() == mac {
            return Ok(());
        }
        match mac {
            Some(mac) => {
                if let Err(e) = maps.set_neighbour(ifindex, addr, mac) {
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
                maps.remove_neighbour(ifindex, addr)?;
                self.neighbours.remove(&key);
            }
        }
        Ok(())
    }

    pub fn sync_neighbours(
        &mut self,
        maps: &mut Maps,
        desired: &HashMap<(u32, IpAddr), [u8; 6]>,
    ) -> Result<()> {
        for ((ifindex, addr), mac) in desired {
            self.set_neighbour(maps, *ifindex, *addr, Some(*mac))?;
        }
        let stale: Vec<(u32, IpAddr)> = self
            .neighbours
            .keys()
            .filter(|k| !desired.contains_key(k))
            .copied()
            .collect();
        for (ifindex, addr) in stale {
            self.set_neighbour(maps, ifindex, addr, None)?;
        }
        Ok(())
    }

    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn neighbour_count(&self) -> usize {
        self.neighbours.len()
    }
}
