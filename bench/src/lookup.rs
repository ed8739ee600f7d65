//! (2) Per-packet cost against table size: BPF_PROG_TEST_RUN with repeat over the whole XDP
//! program, vrf-xdp's `xdp_vrf` and the `bpf_fib_lookup` helper program, the same packets
//! through both, at 1k, 100k and 1M IPv4 routes in the VRF's table and 100k IPv6 routes.
//!
//! Both FIBs hold the same routes, all via one gateway on member 1: vrf-xdp's maps (through
//! `vrf_user::maps::Maps`) and the kernel's table (`ip -batch`). A test run does not restore the
//! frame between repetitions, so the gateway's MAC is member 0's own (the rewritten frame is
//! again addressed to the router) and the TTL starts at 255: each of the `repeat` runs takes
//! the whole forwarding path, which the output proves (XDP_REDIRECT, TTL 255 − repeat).
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::{anyhow, ensure, Context, Result};
use aya::{programs::Xdp, EbpfLoader};
use ipnet::IpNet;
use rand::{rngs::StdRng, seq::IndexedRandom, SeedableRng};
use serde::{Deserialize, Serialize};
use vrf_common::{
    prog_names, Link, Route, RouteKind, Vrf, LINK_FWD4, LINK_FWD6, LINK_MEMBER, LINK_UP, VRF_ACTIVE,
};
use vrf_user::dataplane::XDP_REDIRECT;
use vrf_user::flat4::Flat4;
use vrf_user::maps::Maps;
use vrf_user::packet::FrameSpec;

use super::programs::{run_repeated, BenchPrograms};
use super::{routes, system, Progress};
use tests::topology::{Member, MemberSpec, Topology, TopologySpec, VrfSpec};

pub const TABLE: u32 = 200;
const SLOT: u32 = 1;
pub(super) const GROUP_V4: u32 = 10;
const GROUP_V6: u32 = 11;
pub(super) const GATEWAY_V4: &str = "10.0.2.3";
const GATEWAY_V6: &str = "fd00:2::3";
/// Repetitions per test run: the TTL (255) must stay above 1 through all of them.
pub const REPEAT: u32 = 250;
pub const SEED: u64 = 0x5eed_0001;

pub struct Config {
    /// perf of the test-run thread at the largest IPv4 size, for each program.
    pub profile: bool,
    pub destinations: usize,
    /// (key, family 4|6, routes).
    pub sizes: Vec<(&'static str, u8, usize)>,
}

impl Config {
    pub fn new(quick: bool, profile: bool) -> Self {
        Config {
            profile,
            destinations: if quick { 128 } else { 1024 },
            sizes: vec![
                ("1k", 4, 1_000),
                ("100k", 4, 100_000),
                ("1M", 4, 1_000_000),
                ("v6_100k", 6, 100_000),
            ],
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Size {
    pub key: String,
    pub family: u8,
    pub routes: usize,
    pub destinations: usize,
    pub repeat: u32,
    /// ns per packet, per destination (each the kernel's average over `repeat` runs).
    pub vrf_xdp: Stats,
    pub fib_helper: Stats,
    /// Seconds to add this stage's routes: vrf-xdp's map (one update per route) and the
    /// kernel (`ip -batch`).
    pub fill_map_s: f64,
    pub fill_kernel_s: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    pub mean: f64,
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
}

impl Stats {
    pub(super) fn of(v: &[f64]) -> Stats {
        Stats {
            mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
            median: super::median(v),
            p10: super::percentile(v, 10.0),
            p90: super::percentile(v, 90.0),
        }
    }
}

/// Kernel memory per route, measured while the tables were filled.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Memory {
    pub routes_v4: usize,
    /// `memlock:` of the FIB4 map (fdinfo): what the kernel charges for it.
    pub fib4_memlock_bytes: u64,
    /// Growth of unreclaimable slab + per-CPU + vmalloc memory while the map was filled (the
    /// trie's glue nodes included; other users of the machine add noise).
    pub fib4_kernel_delta_bytes: i64,
    /// The same growth while the kernel's own table was filled.
    pub kernel_fib_delta_bytes: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub sizes: Vec<Size>,
    pub memory: Memory,
    pub cpu: usize,
    /// perf of the test-run thread at `profiled_size`, by program.
    pub profiles: BTreeMap<String, Vec<super::profile::Hot>>,
    pub profiled_size: String,
}

pub fn run(cfg: &Config, progress: &Progress) -> Result<Results> {
    progress.step("per-packet cost: building the namespace topology");
    let spec = TopologySpec {
        prefix: "bench".into(),
        vrfs: vec![VrfSpec {
            name: "blook".into(),
            table: TABLE,
            members: vec![
                MemberSpec::dual("10.0.1.0/24", "fd00:1::/64"),
                MemberSpec::dual("10.0.2.0/24", "fd00:2::/64"),
            ],
        }],
    };
    let topo = spec.build().context("building the lookup topology")?;
    let router = topo.router();
    let (m0, m1) = (topo.member("blook", 0), topo.member("blook", 1));
    // The gateway answers with member 0's MAC (see the module documentation).
    for gw in [GATEWAY_V4, GATEWAY_V6] {
        tests::add_permanent_neigh(router, &m1.ifname, gw, m0.router_mac)?;
    }

    let mut ebpf = EbpfLoader::new()
        .load(vrf_user::EBPF_OBJECT)
        .context("loading vrf-xdp's object")?;
    let prog: &mut Xdp = ebpf
        .program_mut(prog_names::XDP_VRF)
        .ok_or_else(|| anyhow!("no {}", prog_names::XDP_VRF))?
        .try_into()?;
    prog.load()?;
    let mut maps = Maps::take(&mut ebpf, None)?;
    // The flat IPv4 FIB filled as the map writer fills it: each FIB4 write followed by its own.
    let mut flat = Flat4::new(maps.flat4.sizes());
    let mut bp = BenchPrograms::load()?;
    bp.set_table(TABLE)?;
    router.run_in(|| -> Result<()> {
        program(&mut maps, &mut flat, &topo)?;
        bp.add_tx_port(m1.ifindex)
    })?;

    let max4 = cfg
        .sizes
        .iter()
        .filter(|s| s.1 == 4)
        .map(|s| s.2)
        .max()
        .unwrap_or(0);
    let max6 = cfg
        .sizes
        .iter()
        .filter(|s| s.1 == 6)
        .map(|s| s.2)
        .max()
        .unwrap_or(0);
    progress.detail(&format!("generating {max4} IPv4 and {max6} IPv6 prefixes"));
    let table4: Vec<IpNet> = routes::v4_table(max4, SEED)
        .into_iter()
        .map(IpNet::V4)
        .collect();
    let table6: Vec<IpNet> = routes::v6_table(max6, SEED + 1)
        .into_iter()
        .map(IpNet::V6)
        .collect();

    let mut rng = StdRng::seed_from_u64(SEED + 2);
    let mut memory = Memory::default();
    let mut filled = [0usize; 2];
    let mut sizes = Vec::new();
    let mut profiles = BTreeMap::new();
    let profiled_size = cfg
        .sizes
        .iter()
        .filter(|s| s.1 == 4)
        .max_by_key(|s| s.2)
        .map_or("", |s| s.0);
    let profile_it = cfg.profile && super::profile::available();
    for &(key, family, n) in &cfg.sizes {
        let (table, gw, group, done) = if family == 4 {
            (&table4, GATEWAY_V4, GROUP_V4, &mut filled[0])
        } else {
            (&table6, GATEWAY_V6, GROUP_V6, &mut filled[1])
        };
        let new = &table[*done..n];
        progress.step(&format!(
            "per-packet cost at {key}: adding {} routes to both FIBs",
            new.len()
        ));
        let kmem0 = system::kernel_memory()?;
        let t = Instant::now();
        let route = Route {
            kind: RouteKind::Unicast as u16,
            mtu: 0,
            nexthop: group,
        };
        for p in new {
            insert_route(&mut maps, &mut flat, *p, &route)?;
        }
        let fill_map_s = t.elapsed().as_secs_f64();
        let kmem1 = system::kernel_memory()?;
        let t = Instant::now();
        routes::ip_batch(
            router,
            routes::add_lines(new.iter().copied(), gw.parse()?, &m1.ifname, TABLE),
        )?;
        let fill_kernel_s = t.elapsed().as_secs_f64();
        let kmem2 = system::kernel_memory()?;
        *done = n;
        if family == 4 {
            memory.routes_v4 = n;
            memory.fib4_kernel_delta_bytes += kmem1 as i64 - kmem0 as i64;
            memory.kernel_fib_delta_bytes += kmem2 as i64 - kmem1 as i64;
            memory.fib4_memlock_bytes = system::map_memlock(std::process::id(), 11, 12)?;
        }
        progress.detail(&format!(
            "filled in {fill_map_s:.1} s (map) and {fill_kernel_s:.1} s (kernel); measuring {} destinations × {REPEAT} runs",
            cfg.destinations
        ));
        let picks: Vec<IpNet> = (0..cfg.destinations)
            .map(|_| *table[..n].choose(&mut rng).expect("non-empty table"))
            .collect();
        let (vrf_ns, helper_ns) = router.run_in(|| -> Result<(Vec<f64>, Vec<f64>)> {
            system::pin(0, super::forward::ROUTER_CPU)?;
            let prog: &mut Xdp = ebpf
                .program_mut(prog_names::XDP_VRF)
                .ok_or_else(|| anyhow!("no {}", prog_names::XDP_VRF))?
                .try_into()?;
            let mut rng = StdRng::seed_from_u64(SEED + 3);
            let mut a = Vec::new();
            let mut b = Vec::new();
            for (i, p) in picks.iter().enumerate() {
                let frame = frame(m0, routes::address_in(*p, &mut rng))?;
                // Alternate which program goes first, so neither always finds the cache warm.
                for turn in 0..2 {
                    if (turn + i) % 2 == 0 {
                        let r = run_repeated(prog, m0.ifindex, &frame, REPEAT)?;
                        check(&r, "vrf-xdp", *p)?;
                        a.push(r.per_run.as_nanos() as f64);
                    } else {
                        let r = bp.run_helper(m0.ifindex, &frame, REPEAT)?;
                        check(&r, "bpf_fib_lookup", *p)?;
                        b.push(r.per_run.as_nanos() as f64);
                    }
                }
            }
            if profile_it && key == profiled_size {
                let frames: Vec<Vec<u8>> = picks
                    .iter()
                    .map(|p| frame(m0, routes::address_in(*p, &mut rng)))
                    .collect::<Result<_>>()?;
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() }.to_string();
                for which in ["vrf_xdp", "fib_helper"] {
                    let rec = super::profile::start(
                        &std::env::temp_dir(),
                        &format!("vrf-bench-lookup-{}", std::process::id()),
                        &["-t", &tid],
                        4.0,
                        20_000,
                    )?;
                    let until = Instant::now() + std::time::Duration::from_secs(4);
                    let mut i = 0;
                    while Instant::now() < until {
                        let f = &frames[i % frames.len()];
                        if which == "vrf_xdp" {
                            run_repeated(prog, m0.ifindex, f, REPEAT)?;
                        } else {
                            bp.run_helper(m0.ifindex, f, REPEAT)?;
                        }
                        i += 1;
                    }
                    profiles.insert(which.to_string(), rec.finish_within(40, "bpf_test_run")?);
                }
            }
            Ok((a, b))
        })?;
        let s = Size {
            key: key.to_string(),
            family,
            routes: n,
            destinations: cfg.destinations,
            repeat: REPEAT,
            vrf_xdp: Stats::of(&vrf_ns),
            fib_helper: Stats::of(&helper_ns),
            fill_map_s,
            fill_kernel_s,
        };
        progress.detail(&format!(
            "{key}: vrf-xdp {:.1} ns/packet, bpf_fib_lookup {:.1} ns/packet (means)",
            s.vrf_xdp.mean, s.fib_helper.mean
        ));
        sizes.push(s);
    }
    Ok(Results {
        sizes,
        memory,
        cpu: super::forward::ROUTER_CPU,
        profiles,
        profiled_size: profiled_size.to_string(),
    })
}

/// A 64-byte UDP frame from host A to `dst`, TTL 255, addressed to member 0.
pub(super) fn frame(m0: &Member, dst: IpAddr) -> Result<Vec<u8>> {
    let src = match dst {
        IpAddr::V4(_) => IpAddr::V4(m0.host4()),
        IpAddr::V6(_) => IpAddr::V6(m0.host6()),
    };
    let mut spec = FrameSpec::new(src, dst);
    spec.src_mac = m0.host_mac;
    spec.dst_mac = m0.router_mac;
    spec.ttl = 255;
    spec.payload_len = if dst.is_ipv4() { 18 } else { 8 };
    spec.udp()
}

/// Every repetition forwarded: the program redirected and the TTL went down `REPEAT` times.
pub(super) fn check(r: &super::programs::Run, who: &str, p: IpNet) -> Result<()> {
    let ttl_at = if p.addr().is_ipv4() { 14 + 8 } else { 14 + 7 };
    let ttl = r.frame.get(ttl_at).copied().unwrap_or(0);
    ensure!(
        r.action == XDP_REDIRECT && u32::from(ttl) == 255 - REPEAT,
        "{who} did not forward a packet to {p} in every run (action {}, TTL left {ttl}, want {})",
        r.action,
        255 - REPEAT
    );
    Ok(())
}

/// vrf-xdp's maps for the lookup topology: the VRF, both members, their connected routes and
/// the gateway routes' nexthop groups and neighbours (in the router namespace: TX_PORTS).
/// Insert a route into FIB4/FIB6 and, for IPv4, the flat FIB, as the map writer does.
fn insert_route(maps: &mut Maps, flat: &mut Flat4, net: IpNet, route: &Route) -> Result<()> {
    maps.insert_route(TABLE, net, route)?;
    if let IpNet::V4(p) = net {
        flat.set(TABLE, p, Some(*route));
        maps.flat4.sync(flat)?;
    }
    Ok(())
}

pub(super) fn program(maps: &mut Maps, flat: &mut Flat4, topo: &Topology) -> Result<()> {
    let (m0, m1) = (topo.member("blook", 0), topo.member("blook", 1));
    let mut name = [0u8; 16];
    name[..5].copy_from_slice(b"blook");
    maps.set_vrf(
        SLOT,
        &Vrf {
            table: TABLE,
            flags: VRF_ACTIVE,
            name,
            ..Default::default()
        },
    )?;
    for (i, m) in [m0, m1].into_iter().enumerate() {
        maps.set_link(
            m.ifindex,
            &Link {
                vrf: SLOT,
                stats_slot: i as u32 + 1,
                mtu: 1500,
                mac: m.router_mac,
                flags: LINK_UP | LINK_MEMBER | LINK_FWD4 | LINK_FWD6,
                mtu6: 1500,
            },
        )?;
        maps.add_tx_port(m.ifindex)?;
        let group = i as u32 + 1;
        maps.set_nexthop_group(
            group,
            &vrf_user::writer::nexthop_group(&[tests::dataplane::nexthop(m.ifindex, None)])?,
        )?;
        let connected = Route {
            kind: RouteKind::Unicast as u16,
            mtu: 0,
            nexthop: group,
        };
        for net in [
            IpNet::new(m.subnet4.expect("v4").network().into(), 24)?,
            IpNet::new(m.subnet6.expect("v6").network().into(), 64)?,
        ] {
            insert_route(maps, flat, net, &connected)?;
        }
    }
    for (group, gw) in [(GROUP_V4, GATEWAY_V4), (GROUP_V6, GATEWAY_V6)] {
        let gw: IpAddr = gw.parse()?;
        maps.set_nexthop_group(
            group,
            &vrf_user::writer::nexthop_group(&[tests::dataplane::nexthop(m1.ifindex, Some(gw))])?,
        )?;
        maps.set_neighbour(m1.ifindex, gw, m0.router_mac)?;
    }
    Ok(())
}

/// The per-packet cost parts' topology (capture, the dead-man switch): one VRF of two members,
/// the gateway behind member 1 answering with member 0's MAC (as in the per-packet part).
pub(super) fn cost_topology(prefix: &str) -> Result<Topology> {
    let spec = TopologySpec {
        prefix: prefix.into(),
        vrfs: vec![VrfSpec {
            name: "blook".into(),
            table: TABLE,
            members: vec![
                MemberSpec::dual("10.0.1.0/24", "fd00:1::/64"),
                MemberSpec::dual("10.0.2.0/24", "fd00:2::/64"),
            ],
        }],
    };
    let topo = spec
        .build()
        .context("building the per-packet cost topology")?;
    let (m0, m1) = (topo.member("blook", 0), topo.member("blook", 1));
    tests::add_permanent_neigh(topo.router(), &m1.ifname, GATEWAY_V4, m0.router_mac)?;
    Ok(topo)
}

/// The cost parts' table in `maps`: the program's links and nexthops, and `routes` via the
/// gateway.
pub(super) fn fill_cost_table(
    maps: &mut Maps,
    topo: &Topology,
    routes: &[ipnet::Ipv4Net],
) -> Result<()> {
    let mut flat = Flat4::new(maps.flat4.sizes());
    topo.router().run_in(|| program(maps, &mut flat, topo))?;
    let route = Route {
        kind: RouteKind::Unicast as u16,
        mtu: 0,
        nexthop: GROUP_V4,
    };
    for p in routes {
        insert_route(maps, &mut flat, IpNet::V4(*p), &route)?;
    }
    Ok(())
}
