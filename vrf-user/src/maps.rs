//! Typed access to every map of the data plane, in the kernel's terms (table, prefix, nexthop,
//! neighbour, link). Owned `MapData` so the same code serves a freshly loaded object and the pins
//! a running vrfd left for vrfctl.
use std::{net::IpAddr, path::Path};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{
    lpm_trie::Key, Array, DevMapHash, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray,
    PerCpuValues,
};
use ipnet::IpNet;
use vrf_common::{
    map_names as names, stats_index, table_key, Counters, Direction, Explain, Fib4Key, Fib6Key,
    Link, Neigh, NeighKey, Nexthop, NexthopGroup, Route, Vrf, FIB_TABLE_BITS, MAX_PATHS,
    NEXTHOP_BUCKETS, NH_GATEWAY, NH_GATEWAY6,
};

pub struct Maps {
    pub links: HashMap<MapData, u32, Link>,
    pub vrfs: Array<MapData, Vrf>,
    pub fib4: LpmTrie<MapData, Fib4Key, Route>,
    pub fib6: LpmTrie<MapData, Fib6Key, Route>,
    pub nexthops: HashMap<MapData, u32, NexthopGroup>,
    pub neigh: HashMap<MapData, NeighKey, Neigh>,
    pub tx_ports: DevMapHash<MapData>,
    pub vrf_stats: PerCpuArray<MapData, Counters>,
    pub link_stats: PerCpuArray<MapData, Counters>,
    pub explain: PerCpuArray<MapData, Explain>,
}

/// A map missing from a hash map is not an error for readers: `Ok(None)`.
fn optional<T>(r: Result<T, MapError>) -> Result<Option<T>, MapError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deleting what is not there is done.
fn gone(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(ref e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        other => other,
    }
}

impl Maps {
    /// Take the maps out of a loaded object, pinning each under `pin_dir` when given (the
    /// directory must exist on a bpffs).
    pub fn take(ebpf: &mut aya::Ebpf, pin_dir: Option<&Path>) -> Result<Self> {
        let mut take = |name: &str| -> Result<Map> {
            let map = ebpf
                .take_map(name)
                .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
            if let Some(dir) = pin_dir {
                let path = dir.join(name);
                map.pin(&path)
                    .with_context(|| format!("pinning map {}", path.display()))?;
            }
            Ok(map)
        };
        Self::from_maps(&mut take)
    }

    /// Open the maps a running vrfd pinned under `dir`.
    pub fn from_pins(dir: &Path) -> Result<Self> {
        let mut open = |name: &str| -> Result<Map> {
            let path = dir.join(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening pinned map {}", path.display()))?;
            Map::from_map_data(data).with_context(|| format!("map {}", path.display()))
        };
        Self::from_maps(&mut open)
    }

    fn from_maps(get: &mut dyn FnMut(&str) -> Result<Map>) -> Result<Self> {
        macro_rules! typed {
            ($name:expr) => {{
                let name = $name;
                get(name)?
                    .try_into()
                    .with_context(|| format!("map {name} has an unexpected type"))?
            }};
        }
        Ok(Maps {
            links: typed!(names::LINKS),
            vrfs: typed!(names::VRFS),
            fib4: typed!(names::FIB4),
            fib6: typed!(names::FIB6),
            nexthops: typed!(names::NEXTHOPS),
            neigh: typed!(names::NEIGH),
            tx_ports: typed!(names::TX_PORTS),
            vrf_stats: typed!(names::VRF_STATS),
            link_stats: typed!(names::LINK_STATS),
            explain: typed!(names::EXPLAIN),
        })
    }

    // Links.

    pub fn set_link(&mut self, ifindex: u32, link: &Link) -> Result<()> {
        self.links
            .insert(ifindex, *link, 0)
            .with_context(|| format!("setting link {ifindex}"))
    }

    pub fn link(&self, ifindex: u32) -> Result<Option<Link>> {
        Ok(optional(self.links.get(&ifindex, 0))?)
    }

    pub fn links(&self) -> Result<Vec<(u32, Link)>> {
        Ok(self.links.iter().collect::<Result<_, _>>()?)
    }

    pub fn remove_link(&mut self, ifindex: u32) -> Result<()> {
        gone(self.links.remove(&ifindex)).with_context(|| format!("removing link {ifindex}"))
    }

    /// Make `ifindex` a redirect target.
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<()> {
        self.tx_ports
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding ifindex {ifindex} to the redirect map"))
    }

    pub fn remove_tx_port(&mut self, ifindex: u32) -> Result<()> {
        gone(self.tx_ports.remove(ifindex)).with_context(|| format!("removing tx port {ifindex}"))
    }

    // VRFs.

    pub fn set_vrf(&mut self, slot: u32, vrf: &Vrf) -> Result<()> {
        self.vrfs
            .set(slot, *vrf, 0)
            .with_context(|| format!("setting VRF slot {slot}"))
    }

    pub fn vrf(&self, slot: u32) -> Result<Vrf> {
        Ok(self.vrfs.get(&slot, 0)?)
    }

    // Routes.

    /// Insert or replace the route for `prefix` in `table`.
    pub fn insert_route(&mut self, table: u32, prefix: IpNet, route: &Route) -> Result<()> {
        let r = match prefix {
            IpNet::V4(p) => self.fib4.insert(&fib4_key(table, p), *route, 0),
            IpNet::V6(p) => self.fib6.insert(&fib6_key(table, p), *route, 0),
        };
        r.with_context(|| format!("inserting route {prefix} table {table}"))
    }

    pub fn remove_route(&mut self, table: u32, prefix: IpNet) -> Result<()> {
        let r = match prefix {
            IpNet::V4(p) => self.fib4.remove(&fib4_key(table, p)),
            IpNet::V6(p) => self.fib6.remove(&fib6_key(table, p)),
        };
        gone(r).with_context(|| format!("removing route {prefix} table {table}"))
    }

    /// Every (table, prefix, route) in both FIBs.
    pub fn routes(&self) -> Result<Vec<(u32, IpNet, Route)>> {
        let mut out = Vec::new();
        for entry in self.fib4.iter() {
            let (k, v) = entry?;
            let data = k.data();
            let len = (k.prefix_len() - FIB_TABLE_BITS) as u8;
            let net = ipnet::Ipv4Net::new(data.addr.into(), len)?;
            out.push((u32::from_be_bytes(data.table), IpNet::V4(net), v));
        }
        for entry in self.fib6.iter() {
            let (k, v) = entry?;
            let data = k.data();
            let len = (k.prefix_len() - FIB_TABLE_BITS) as u8;
            let net = ipnet::Ipv6Net::new(data.addr.into(), len)?;
            out.push((u32::from_be_bytes(data.table), IpNet::V6(net), v));
        }
        Ok(out)
    }

    // Nexthops.

    pub fn set_nexthop_group(&mut self, id: u32, group: &NexthopGroup) -> Result<()> {
        if id == 0 {
            bail!("nexthop group id 0 is reserved for routes without nexthops");
        }
        self.nexthops
            .insert(id, *group, 0)
            .with_context(|| format!("setting nexthop group {id}"))
    }

    pub fn remove_nexthop_group(&mut self, id: u32) -> Result<()> {
        gone(self.nexthops.remove(&id)).with_context(|| format!("removing nexthop group {id}"))
    }

    // Neighbours.

    pub fn set_neighbour(&mut self, ifindex: u32, addr: IpAddr, mac: [u8; 6]) -> Result<()> {
        self.neigh
            .insert(neigh_key(ifindex, addr), Neigh { mac, _pad: [0; 2] }, 0)
            .with_context(|| format!("setting neighbour {addr} dev {ifindex}"))
    }

    pub fn remove_neighbour(&mut self, ifindex: u32, addr: IpAddr) -> Result<()> {
        gone(self.neigh.remove(&neigh_key(ifindex, addr)))
            .with_context(|| format!("removing neighbour {addr} dev {ifindex}"))
    }

    pub fn neighbour(&self, ifindex: u32, addr: IpAddr) -> Result<Option<[u8; 6]>> {
        Ok(optional(self.neigh.get(&neigh_key(ifindex, addr), 0))?.map(|n| n.mac))
    }

    // Counters.

    /// One VRF slot's counters in one direction, summed over CPUs.
    pub fn vrf_counters(&self, slot: u32, dir: Direction) -> Result<Counters> {
        Ok(sum(&self.vrf_stats.get(&stats_index(slot, dir), 0)?))
    }

    /// One link's counters (by its stats slot) in one direction, summed over CPUs.
    pub fn link_counters(&self, stats_slot: u32, dir: Direction) -> Result<Counters> {
        Ok(sum(&self
            .link_stats
            .get(&stats_index(stats_slot, dir), 0)?))
    }

    /// Zero a VRF slot's counters (before the slot serves a new VRF).
    pub fn reset_vrf_counters(&mut self, slot: u32) -> Result<()> {
        for dir in Direction::ALL {
            self.vrf_stats
                .set(stats_index(slot, dir), zeroed_per_cpu()?, 0)?;
        }
        Ok(())
    }

    /// Zero a link stats slot.
    pub fn reset_link_counters(&mut self, stats_slot: u32) -> Result<()> {
        for dir in Direction::ALL {
            self.link_stats
                .set(stats_index(stats_slot, dir), zeroed_per_cpu()?, 0)?;
        }
        Ok(())
    }
}

/// One zeroed value per possible CPU.
pub fn zeroed_per_cpu<T: aya::Pod + bytemuck::Zeroable>() -> Result<PerCpuValues<T>> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
    Ok(PerCpuValues::try_from(vec![T::zeroed(); cpus])?)
}

fn sum(per_cpu: &PerCpuValues<Counters>) -> Counters {
    let mut total = Counters::default();
    for c in per_cpu.iter() {
        for (t, v) in total.by_reason.iter_mut().zip(c.by_reason.iter()) {
            t.packets += v.packets;
            t.bytes += v.bytes;
        }
    }
    total
}

/// The FIB key of `prefix` in `table` (host bits cleared: the kernel stores networks).
pub fn fib4_key(table: u32, prefix: ipnet::Ipv4Net) -> Key<Fib4Key> {
    let p = prefix.trunc();
    Key::new(
        FIB_TABLE_BITS + p.prefix_len() as u32,
        Fib4Key {
            table: table_key(table),
            addr: p.network().octets(),
        },
    )
}

pub fn fib6_key(table: u32, prefix: ipnet::Ipv6Net) -> Key<Fib6Key> {
    let p = prefix.trunc();
    Key::new(
        FIB_TABLE_BITS + p.prefix_len() as u32,
        Fib6Key {
            table: table_key(table),
            addr: p.network().octets(),
        },
    )
}

pub fn neigh_key(ifindex: u32, addr: IpAddr) -> NeighKey {
    let (family, addr) = addr16(addr);
    NeighKey {
        ifindex,
        family,
        addr,
    }
}

/// (family, address in the 16-byte map form).
pub fn addr16(addr: IpAddr) -> (u32, [u8; 16]) {
    match addr {
        IpAddr::V4(a) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&a.octets());
            (4, b)
        }
        IpAddr::V6(a) => (6, a.octets()),
    }
}

/// The address a (family, 16-byte) pair stands for.
pub fn addr_from16(family: u32, b: [u8; 16]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::from([b[0], b[1], b[2], b[3]])),
        6 => Some(IpAddr::from(b)),
        _ => None,
    }
}

/// One path: out of `ifindex`, via `gateway` or directly connected.
pub fn nexthop(ifindex: u32, gateway: Option<IpAddr>) -> Nexthop {
    match gateway {
        None => Nexthop {
            ifindex,
            flags: 0,
            gateway: [0; 16],
        },
        Some(gw) => {
            let (family, gateway) = addr16(gw);
            let flags = NH_GATEWAY | if family == 6 { NH_GATEWAY6 } else { 0 };
            Nexthop {
                ifindex,
                flags,
                gateway,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(g: &NexthopGroup) -> Vec<usize> {
        (0..g.count as usize)
            .map(|i| g.buckets.iter().filter(|&&b| b as usize == i).count())
            .collect()
    }

    #[test]
    fn buckets_follow_weights_within_one_bucket() {
        let nh = |i| nexthop(i, None);
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
}
