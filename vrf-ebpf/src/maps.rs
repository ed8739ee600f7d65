//! Every map the programs share with userspace. Sizes are defaults; the loader may resize them.
use aya_ebpf::{
    macros::map,
    maps::{DevMapHash, HashMap, LpmTrie, PerCpuArray},
};
use vrf_common::{
    Counter, Counters, Explain, Fib4Key, Fib6Key, Heartbeat, Link, Neigh, NeighKey, NexthopGroup,
    NexthopInfo, PortKey, Route, VlanPort, Vrf, DIRECTIONS, FIB4_ENTRIES, FIB6_ENTRIES, MAX_LINKS,
    MAX_VRFS, NEIGH_ENTRIES, NEXTHOP_ENTRIES, NEXTHOP_STATS_ENTRIES,
};

#[map]
pub static LINKS: HashMap<u32, Link> = HashMap::with_max_entries(MAX_LINKS, 0);

#[map]
pub static VRFS: aya_ebpf::maps::Array<Vrf> = aya_ebpf::maps::Array::with_max_entries(MAX_VRFS, 0);

#[map]
pub static FIB4: LpmTrie<Fib4Key, Route> = LpmTrie::with_max_entries(FIB4_ENTRIES, 0);

#[map]
pub static FIB6: LpmTrie<Fib6Key, Route> = LpmTrie::with_max_entries(FIB6_ENTRIES, 0);

/// Not preallocated: a group is ~2.6 KB (64 paths and their buckets), and most tables use few.
#[map]
pub static NEXTHOPS: HashMap<u32, NexthopGroup> =
    HashMap::with_max_entries(NEXTHOP_ENTRIES, BPF_F_NO_PREALLOC);

/// linux/bpf.h: allocate hash map elements on update instead of at creation.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map]
pub static NEIGH: HashMap<NeighKey, Neigh> = HashMap::with_max_entries(NEIGH_ENTRIES, 0);

/// Redirect targets: ifindex → ifindex.
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_LINKS, 0);

#[map]
pub static VRF_STATS: PerCpuArray<Counters> =
    PerCpuArray::with_max_entries(MAX_VRFS * DIRECTIONS, 0);

#[map]
pub static LINK_STATS: PerCpuArray<Counters> =
    PerCpuArray::with_max_entries(MAX_LINKS * DIRECTIONS, 0);

#[map]
pub static EXPLAIN: PerCpuArray<Explain> = PerCpuArray::with_max_entries(1, 0);

/// (trunk, VLAN id) → VLAN member; (bond slave, 0) → bond: where a frame really arrived.
#[map]
pub static PORTS: HashMap<PortKey, u32> = HashMap::with_max_entries(MAX_LINKS, 0);

/// VLAN member → its parent and tag, for frames leaving through it.
#[map]
pub static VLAN_PORTS: HashMap<u32, VlanPort> = HashMap::with_max_entries(MAX_LINKS, 0);

/// The dead-man switch's deadline (one entry), refreshed by vrfd.
#[map]
pub static HEARTBEAT: aya_ebpf::maps::Array<Heartbeat> =
    aya_ebpf::maps::Array::with_max_entries(1, 0);

/// `vrf_common::Switch` as the kernel must see it: the timer's type named `bpf_timer` in the
/// map's BTF (a BTF map, unlike the others, for that reason).
#[repr(C)]
pub struct SwitchSlot {
    pub timer: aya_ebpf::bindings::bpf_timer,
    pub state: u64,
}

const _: () =
    assert!(core::mem::size_of::<SwitchSlot>() == core::mem::size_of::<vrf_common::Switch>());

/// The dead-man switch's state and its timer (one entry).
#[aya_ebpf::macros::btf_map]
pub static SWITCH: aya_ebpf::btf_maps::Array<SwitchSlot, 1> = aya_ebpf::btf_maps::Array::new();

/// Packets and bytes forwarded per kernel nexthop, indexed by `Nexthop::stats_slot`: the
/// kernel's own nexthop statistics never see what XDP forwards.
#[map]
pub static NEXTHOP_STATS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(NEXTHOP_STATS_ENTRIES, 0);

/// Slot → the kernel nexthop it counts, for readers only (vrfctl, metrics): never read here.
#[map]
pub static NEXTHOP_INFO: HashMap<u32, NexthopInfo> =
    HashMap::with_max_entries(NEXTHOP_STATS_ENTRIES, 0);

/// The flat IPv4 FIB (see vrf-common): table → flat slot, first levels, chunk pool, route
/// values. Tables the directory does not name are looked up in `FIB4`.
#[map]
pub static FLAT4_DIR: aya_ebpf::maps::Array<vrf_common::Flat4Bucket> =
    aya_ebpf::maps::Array::with_max_entries(vrf_common::FLAT4_DIR_BUCKETS, 0);

/// Rows of 256 entries (the array's element: BPF arrays round each element up to 8 bytes, a
/// u32 element would waste half and break the dense mmap layout).
#[map]
pub static FLAT4_L1: aya_ebpf::maps::Array<[u32; 256]> = aya_ebpf::maps::Array::with_max_entries(
    vrf_common::FLAT4_SLOTS * vrf_common::FLAT4_L1_ENTRIES / vrf_common::FLAT4_CHUNK_ENTRIES,
    BPF_F_MMAPABLE,
);

/// One chunk per element.
#[map]
pub static FLAT4_CHUNKS: aya_ebpf::maps::Array<[u32; 256]> =
    aya_ebpf::maps::Array::with_max_entries(vrf_common::FLAT4_CHUNKS, BPF_F_MMAPABLE);

/// linux/bpf.h: the array can be mmap()ed, so vrfd stores entries as plain atomic u32 writes.
const BPF_F_MMAPABLE: u32 = 1 << 10;

#[map]
pub static FLAT4_ROUTES: aya_ebpf::maps::Array<Route> =
    aya_ebpf::maps::Array::with_max_entries(vrf_common::FLAT4_VALUES, 0);
