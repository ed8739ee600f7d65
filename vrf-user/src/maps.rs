//! Typed access to every map of the data plane, in the kernel's terms (table, prefix, nexthop,
//! neighbour, link). Owned `MapData` so the same code serves a freshly loaded object and the pins
//! a running vrfd left for vrfctl.
use std::{
    net::IpAddr,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    sync::atomic::{fence, AtomicU32, Ordering},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{
    lpm_trie::Key, Array, DevMapHash, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray,
    PerCpuValues,
};
use ipnet::IpNet;
use vrf_common::{
    flat4_bucket, flat4_names, Counter, Flat4Bucket, NexthopInfo, FLAT4_CHUNK, FLAT4_CHUNK_ENTRIES,
    FLAT4_L1_ENTRIES,
};
use vrf_common::{
    map_names as names, stats_index, table_key, Counters, Direction, Explain, Fib4Key, Fib6Key,
    Heartbeat, Link, Neigh, NeighKey, NexthopGroup, PortKey, Route, VlanPort, Vrf, FIB_TABLE_BITS,
};

use crate::flat4::{Flat4Sizes, Flat4Writes};

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
    pub ports: HashMap<MapData, PortKey, u32>,
    pub vlan_ports: HashMap<MapData, u32, VlanPort>,
    pub heartbeat: Array<MapData, Heartbeat>,
    pub switch: Array<MapData, vrf_common::Switch>,
    pub nexthop_stats: PerCpuArray<MapData, Counter>,
    pub nexthop_info: HashMap<MapData, u32, NexthopInfo>,
    pub flat4: Flat4Maps,
}

/// The flat IPv4 FIB's maps: the two u32 levels mapped into vrfd's memory (each entry one
/// atomic store), the directory and the route values written through the syscall.
pub struct Flat4Maps {
    pub dir: Array<MapData, Flat4Bucket>,
    pub routes: Array<MapData, Route>,
    /// Rows of 256 entries: the dense u32 layout the global indices name.
    pub l1: Array<MapData, [u32; 256]>,
    pub chunks: Array<MapData, [u32; 256]>,
    l1_mem: Mmap,
    chunks_mem: Mmap,
}

/// A shared, writable mapping of an mmapable BPF array of `[u32; 256]`, as u32 entries.
struct Mmap {
    ptr: *mut AtomicU32,
    len: usize,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics.
unsafe impl Send for Mmap {}
unsafe impl Sync for Mmap {}

impl Mmap {
    fn of(map: &Array<MapData, [u32; 256]>, name: &str) -> Result<Self> {
        let len = map.len() as usize * 256;
        let bytes = len * 4;
        // SAFETY: a new shared mapping of the map's fd; the kernel checks size and flags.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                aya::maps::IterableMap::<u32, [u32; 256]>::map(map)
                    .fd()
                    .as_fd()
                    .as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("mapping {name} (needs BPF_F_MMAPABLE)"));
        }
        Ok(Mmap {
            ptr: ptr.cast(),
            len,
        })
    }

    fn slots(&self) -> &[AtomicU32] {
        // SAFETY: `len` u32s mapped at `ptr` for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `of`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len * 4) };
    }
}

impl Flat4Maps {
    fn from_maps(get: &mut dyn FnMut(&str) -> Result<Map>) -> Result<Self> {
        let l1: Array<MapData, [u32; 256]> = typed(get, flat4_names::L1)?;
        let chunks: Array<MapData, [u32; 256]> = typed(get, flat4_names::CHUNKS)?;
        Ok(Flat4Maps {
            dir: typed(get, flat4_names::DIR)?,
            routes: typed(get, flat4_names::ROUTES)?,
            l1_mem: Mmap::of(&l1, flat4_names::L1)?,
            chunks_mem: Mmap::of(&chunks, flat4_names::CHUNKS)?,
            l1,
            chunks,
        })
    }

    /// The pools' sizes as loaded.
    pub fn sizes(&self) -> Flat4Sizes {
        Flat4Sizes {
            slots: self.l1.len() * FLAT4_CHUNK_ENTRIES / FLAT4_L1_ENTRIES,
            chunks: self.chunks.len(),
            values: self.routes.len(),
        }
    }

    /// Apply one step's writes in their phases; a release fence between phases makes every
    /// store of one visible before any of the next (x86 orders them anyway; arm64 does not).
    pub fn apply(&mut self, w: &Flat4Writes) -> Result<()> {
        for (b, bucket) in &w.dir_clear {
            self.dir
                .set(*b, *bucket, 0)
                .context("clearing a FLAT4_DIR way")?;
        }
        for (id, route) in &w.routes {
            self.routes
                .set(*id, *route, 0)
                .context("writing a FLAT4_ROUTES value")?;
        }
        let store = |mem: &Mmap, writes: &[(u32, u32)], name: &str| -> Result<()> {
            let slots = mem.slots();
            for (i, v) in writes {
                slots
                    .get(*i as usize)
                    .ok_or_else(|| anyhow!("{name} index {i} out of range"))?
                    .store(*v, Ordering::Relaxed);
            }
            fence(Ordering::Release);
            Ok(())
        };
        fence(Ordering::Release);
        store(&self.chunks_mem, &w.new_chunks, flat4_names::CHUNKS)?;
        store(&self.chunks_mem, &w.live_chunks, flat4_names::CHUNKS)?;
        store(&self.l1_mem, &w.l1, flat4_names::L1)?;
        for (b, bucket) in &w.dir_set {
            self.dir
                .set(*b, *bucket, 0)
                .context("setting a FLAT4_DIR way")?;
        }
        Ok(())
    }

    /// Flush `flat`'s pending writes into the maps.
    pub fn sync(&mut self, flat: &mut crate::flat4::Flat4) -> Result<()> {
        let w = flat.flush(std::time::Instant::now());
        if w.is_empty() {
            return Ok(());
        }
        self.apply(&w)
    }

    /// The flat answer for `addr` in `table`, read from the maps as the program reads them
    /// (the kernel's copy, through the syscall):
    /// `None` when the table has no flat slot, `Some(None)` when it has no route there.
    pub fn lookup(&self, table: u32, addr: std::net::Ipv4Addr) -> Result<Option<Option<Route>>> {
        let bucket = self.dir.get(&flat4_bucket(table), 0)?;
        let Some(way) = bucket
            .ways
            .iter()
            .find(|w| w.table == table && w.slot != 0 && table != 0)
        else {
            return Ok(None);
        };
        // Through the syscall, not the mapping: the kernel's view of the entries.
        let a = u32::from(addr);
        let entry = |m: &Array<MapData, [u32; 256]>, row: u32, col: u32| -> Result<u32> {
            Ok(m.get(&row, 0).with_context(|| format!("flat row {row}"))?[col as usize & 0xff])
        };
        let mut e = entry(&self.l1, (way.slot - 1) * 256 + (a >> 24), (a >> 16) & 0xff)?;
        if e & FLAT4_CHUNK != 0 {
            e = entry(&self.chunks, e & !FLAT4_CHUNK, (a >> 8) & 0xff)?;
            if e & FLAT4_CHUNK != 0 {
                e = entry(&self.chunks, e & !FLAT4_CHUNK, a & 0xff)?;
                if e & FLAT4_CHUNK != 0 {
                    bail!("a fourth flat level in table {table}");
                }
            }
        }
        if e == 0 {
            return Ok(Some(None));
        }
        Ok(Some(Some(self.routes.get(&e, 0)?)))
    }
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

/// Take map `name` out of a loaded object, pinning it under `pin_dir` when given (the
/// directory must exist on a bpffs).
pub(crate) fn take_map(ebpf: &mut aya::Ebpf, pin_dir: Option<&Path>, name: &str) -> Result<Map> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    if let Some(dir) = pin_dir {
        let path = dir.join(name);
        map.pin(&path)
            .with_context(|| format!("pinning map {}", path.display()))?;
    }
    Ok(map)
}

/// Map `name` from `get`, as the typed map the caller holds.
pub(crate) fn typed<T>(get: &mut dyn FnMut(&str) -> Result<Map>, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    get(name)?
        .try_into()
        .with_context(|| format!("map {name} has an unexpected type"))
}

impl Maps {
    /// Take the maps out of a loaded object, pinning each under `pin_dir` when given (the
    /// directory must exist on a bpffs).
    pub fn take(ebpf: &mut aya::Ebpf, pin_dir: Option<&Path>) -> Result<Self> {
        Self::from_maps(&mut |name| take_map(ebpf, pin_dir, name))
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

    /// A second handle on the same kernel maps (their file descriptors duplicated): the map
    /// writer owns one while the loader keeps its own for test runs.
    pub fn try_clone(&self) -> Result<Self> {
        use aya::maps::IterableMap;
        let data = |name: &str| -> Option<&MapData> {
            Some(match name {
                names::LINKS => IterableMap::<u32, Link>::map(&self.links),
                names::VRFS => self.vrfs.map(),
                names::FIB4 => self.fib4.map(),
                names::FIB6 => self.fib6.map(),
                names::NEXTHOPS => self.nexthops.map(),
                names::NEIGH => self.neigh.map(),
                names::TX_PORTS => self.tx_ports.map(),
                names::VRF_STATS => self.vrf_stats.map(),
                names::LINK_STATS => self.link_stats.map(),
                names::EXPLAIN => self.explain.map(),
                names::PORTS => IterableMap::<PortKey, u32>::map(&self.ports),
                names::VLAN_PORTS => IterableMap::<u32, VlanPort>::map(&self.vlan_ports),
                names::HEARTBEAT => self.heartbeat.map(),
                names::SWITCH => self.switch.map(),
                names::NEXTHOP_STATS => self.nexthop_stats.map(),
                names::NEXTHOP_INFO => IterableMap::<u32, NexthopInfo>::map(&self.nexthop_info),
                flat4_names::DIR => self.flat4.dir.map(),
                flat4_names::ROUTES => self.flat4.routes.map(),
                flat4_names::L1 => self.flat4.l1.map(),
                flat4_names::CHUNKS => self.flat4.chunks.map(),
                _ => return None,
            })
        };
        let mut dup = |name: &str| -> Result<Map> {
            let map = data(name).ok_or_else(|| anyhow!("no map {name}"))?;
            let fd = map
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .with_context(|| format!("duplicating map {name}"))?;
            Ok(Map::from_map_data(MapData::from_fd(fd)?)?)
        };
        Self::from_maps(&mut dup)
    }

    fn from_maps(get: &mut dyn FnMut(&str) -> Result<Map>) -> Result<Self> {
        Ok(Maps {
            links: typed(get, names::LINKS)?,
            vrfs: typed(get, names::VRFS)?,
            fib4: typed(get, names::FIB4)?,
            fib6: typed(get, names::FIB6)?,
            nexthops: typed(get, names::NEXTHOPS)?,
            neigh: typed(get, names::NEIGH)?,
            tx_ports: typed(get, names::TX_PORTS)?,
            vrf_stats: typed(get, names::VRF_STATS)?,
            link_stats: typed(get, names::LINK_STATS)?,
            explain: typed(get, names::EXPLAIN)?,
            ports: typed(get, names::PORTS)?,
            vlan_ports: typed(get, names::VLAN_PORTS)?,
            heartbeat: typed(get, names::HEARTBEAT)?,
            switch: typed(get, names::SWITCH)?,
            nexthop_stats: typed(get, names::NEXTHOP_STATS)?,
            nexthop_info: typed(get, names::NEXTHOP_INFO)?,
            flat4: Flat4Maps::from_maps(get)?,
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

    // Ports: where frames really arrive (VLAN members on a trunk, bonds on their slaves).

    /// Frames arriving on `ifindex` with VLAN id `vid` (0: untagged, a bond slave) belong to
    /// `member`.
    pub fn set_port(&mut self, ifindex: u32, vid: u16, member: u32) -> Result<()> {
        self.ports
            .insert(port_key(ifindex, vid), member, 0)
            .with_context(|| format!("setting port {ifindex} VLAN {vid}"))
    }

    pub fn remove_port(&mut self, ifindex: u32, vid: u16) -> Result<()> {
        gone(self.ports.remove(&port_key(ifindex, vid)))
            .with_context(|| format!("removing port {ifindex} VLAN {vid}"))
    }

    pub fn ports(&self) -> Result<Vec<(PortKey, u32)>> {
        Ok(self.ports.iter().collect::<Result<_, _>>()?)
    }

    /// VLAN member `ifindex` sends through `parent` with tag `vid`.
    pub fn set_vlan_port(&mut self, ifindex: u32, parent: u32, vid: u16) -> Result<()> {
        let port = VlanPort {
            parent,
            vid,
            _pad: 0,
        };
        self.vlan_ports
            .insert(ifindex, port, 0)
            .with_context(|| format!("setting VLAN port {ifindex}"))
    }

    pub fn remove_vlan_port(&mut self, ifindex: u32) -> Result<()> {
        gone(self.vlan_ports.remove(&ifindex))
            .with_context(|| format!("removing VLAN port {ifindex}"))
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

    /// Every nexthop group, by id.
    pub fn nexthop_groups(&self) -> Result<Vec<(u32, NexthopGroup)>> {
        Ok(self.nexthops.iter().collect::<Result<_, _>>()?)
    }

    pub fn remove_nexthop_group(&mut self, id: u32) -> Result<()> {
        gone(self.nexthops.remove(&id)).with_context(|| format!("removing nexthop group {id}"))
    }

    // Neighbours.

    pub fn set_neighbour(&mut self, ifindex: u32, addr: IpAddr, mac: [u8; 6]) -> Result<()> {
        self.neigh
            .insert(
                neigh_key(ifindex, addr),
                Neigh {
                    mac,
                    used: 0,
                    _pad: 0,
                },
                0,
            )
            .with_context(|| format!("setting neighbour {addr} dev {ifindex}"))
    }

    pub fn remove_neighbour(&mut self, ifindex: u32, addr: IpAddr) -> Result<()> {
        gone(self.neigh.remove(&neigh_key(ifindex, addr)))
            .with_context(|| format!("removing neighbour {addr} dev {ifindex}"))
    }

    pub fn neighbour(&self, ifindex: u32, addr: IpAddr) -> Result<Option<[u8; 6]>> {
        Ok(optional(self.neigh.get(&neigh_key(ifindex, addr), 0))?.map(|n| n.mac))
    }

    /// Every neighbour entry, as (ifindex, address).
    pub fn neighbour_keys(&self) -> Result<Vec<(u32, IpAddr)>> {
        let mut out = Vec::new();
        for k in self.neigh.keys() {
            let k = k?;
            if let Some(addr) = addr_from16(k.family, k.addr) {
                out.push((k.ifindex, addr));
            }
        }
        Ok(out)
    }

    /// Neighbours the data plane marked used since their mark was last cleared.
    pub fn used_neighbours(&self) -> Result<Vec<(NeighKey, Neigh)>> {
        let mut out = Vec::new();
        for entry in self.neigh.iter() {
            let (k, v) = entry?;
            if v.used != 0 {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// Clear the used mark of `key` (still holding `seen`); an entry removed meanwhile stays
    /// removed (BPF_EXIST).
    pub fn clear_neighbour_used(&mut self, key: &NeighKey, seen: &Neigh) -> Result<()> {
        const BPF_EXIST: u64 = 2;
        let cleared = Neigh { used: 0, ..*seen };
        gone(self.neigh.insert(key, cleared, BPF_EXIST)).context("clearing a neighbour's used mark")
    }

    // The dead-man switch.

    /// The lease vrfd last wrote (its deadline, its stamp).
    pub fn heartbeat(&self) -> Result<Heartbeat> {
        Ok(self.heartbeat.get(&0, 0)?)
    }

    /// Set the switch's state from userspace (which also cancels its timer: an Alive set this
    /// way never expires; the daemon arms it through the beat program instead).
    pub fn set_switch(&mut self, state: vrf_common::SwitchState) -> Result<()> {
        self.switch
            .set(0, vrf_common::Switch::with(state), 0)
            .context("setting the dead-man switch")
    }

    /// The switch's state as the programs read it (None: a value no build writes).
    pub fn switch_state(&self) -> Result<Option<vrf_common::SwitchState>> {
        Ok(vrf_common::SwitchState::of(self.switch.get(&0, 0)?.state))
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

impl Maps {
    // Per-nexthop counters.

    /// Claim `slot` for the nexthop `info` names: its counters start from zero.
    pub fn set_nexthop_slot(&mut self, slot: u32, info: &NexthopInfo) -> Result<()> {
        self.nexthop_stats.set(slot, zeroed_per_cpu()?, 0)?;
        self.update_nexthop_info(slot, info)
    }

    /// New labels for a slot that keeps counting (a nexthop object replaced in place).
    pub fn update_nexthop_info(&mut self, slot: u32, info: &NexthopInfo) -> Result<()> {
        self.nexthop_info
            .insert(slot, *info, 0)
            .with_context(|| format!("writing nexthop counter slot {slot}"))
    }

    pub fn remove_nexthop_slot(&mut self, slot: u32) -> Result<()> {
        Ok(gone(self.nexthop_info.remove(&slot))?)
    }

    /// Every live slot with what it counts.
    pub fn nexthop_slots(&self) -> Result<Vec<(u32, NexthopInfo)>> {
        let mut v = self
            .nexthop_info
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .context("reading NEXTHOP_INFO")?;
        v.sort_by_key(|(slot, _)| *slot);
        Ok(v)
    }

    /// One slot's forwarded packets and bytes, summed over CPUs.
    pub fn nexthop_counter(&self, slot: u32) -> Result<Counter> {
        let per_cpu = self.nexthop_stats.get(&slot, 0)?;
        Ok(per_cpu.iter().fold(Counter::default(), |t, c| Counter {
            packets: t.packets + c.packets,
            bytes: t.bytes + c.bytes,
        }))
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

fn port_key(ifindex: u32, vid: u16) -> PortKey {
    PortKey {
        ifindex,
        vid,
        _pad: 0,
    }
}
