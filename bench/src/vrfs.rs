//! (2b) Per-packet cost against the number of VRFs: 1 → 256 VRFs of 10k IPv4 routes each, the
//! whole `xdp_vrf` program under BPF_PROG_TEST_RUN with repeat (as [`super::lookup`]), packets
//! spread over the first N VRFs.
//!
//! Each VRF is what vrfd would write for a policy-routing VRF of two members: its slot and
//! table, an ingress and an egress link (the two ends of one veth pair in the router
//! namespace: test runs need real ingress devices), a connected route for the sources, and its
//! own routes via a gateway behind the egress link, whose MAC is the ingress link's own (so a
//! rewritten frame is again addressed to the router and every repetition forwards). Every VRF
//! has its own random table. The flat IPv4 FIB gets tables in the order they are filled, as
//! many as its slots and chunk pool hold (vrfd's defaults); the others are served by the trie.
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use anyhow::{anyhow, ensure, Context, Result};
use aya::{programs::Xdp, EbpfLoader};
use ipnet::{IpNet, Ipv4Net};
use rand::{rngs::StdRng, seq::IndexedRandom, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use vrf_common::{
    map_names, prog_names, Link, Route, RouteKind, Vrf, LINK_FWD4, LINK_MEMBER, LINK_UP, VRF_ACTIVE,
};
use vrf_user::flat4::Flat4;
use vrf_user::maps::Maps;
use vrf_user::packet::FrameSpec;

use super::lookup::{check, Stats, REPEAT};
use super::programs::run_repeated;
use super::{routes, system, Progress};
use tests::netns::NetNs;

/// The most VRFs a data plane serves (`MAX_VRFS` slots).
const VRFS: usize = vrf_common::MAX_VRFS as usize;
const FIRST_TABLE: u32 = 1000;
const SOURCE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
const SEED: u64 = 0x5eed_0256;

pub struct Config {
    pub routes_per_vrf: usize,
    /// The VRF counts measured, ascending; the last one is filled.
    pub counts: Vec<usize>,
    pub destinations: usize,
}

impl Config {
    pub fn new(quick: bool) -> Self {
        Config {
            routes_per_vrf: if quick { 1_000 } else { 10_000 },
            counts: if quick {
                vec![1, 16, VRFS]
            } else {
                vec![1, 4, 16, 64, VRFS]
            },
            destinations: if quick { 128 } else { 1024 },
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Count {
    pub vrfs: usize,
    /// Of those, tables the flat IPv4 FIB holds (the rest: the LPM trie).
    pub flat_tables: usize,
    /// ns per packet, per destination (each the kernel's average over `repeat` runs).
    pub ns: Stats,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub routes_per_vrf: usize,
    pub destinations: usize,
    pub repeat: u32,
    pub counts: Vec<Count>,
    /// Chunks of the flat FIB's pool in use with every VRF filled, and the pool's size.
    pub flat_chunks_used: usize,
    pub flat_chunks: u32,
    pub fill_s: f64,
}

impl Results {
    /// Mean ns/packet at the most VRFs over the mean at one.
    pub fn growth(&self) -> Option<f64> {
        let first = self.counts.first()?;
        let last = self.counts.last()?;
        (first.vrfs == 1 && last.vrfs > 1).then(|| last.ns.mean / first.ns.mean)
    }
}

/// One VRF's devices and what its frames need.
struct VrfRig {
    table: u32,
    ingress: u32,
    ingress_mac: [u8; 6],
    routes: Vec<Ipv4Net>,
}

pub fn run(cfg: &Config, progress: &Progress) -> Result<Results> {
    let n = *cfg.counts.last().context("no VRF counts")?;
    ensure!(n <= VRFS, "{n} VRFs: the data plane has {VRFS} slots");
    progress.step(&format!(
        "per-packet cost against VRFs: {n} VRFs of {} routes",
        cfg.routes_per_vrf
    ));
    let ns = NetNs::new("bvrfs")?;
    routes::ip_batch(
        &ns,
        (0..n).flat_map(|v| {
            [
                format!(
                    "link add vi{v} address {} type veth peer name ve{v} address {}",
                    mac_str(mac(0, v)),
                    mac_str(mac(1, v))
                ),
                format!("link set vi{v} up"),
                format!("link set ve{v} up"),
            ]
        }),
    )
    .context("creating the VRFs' veth pairs")?;
    let index = ifindexes(&ns)?;
    let idx = |name: String| {
        index
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, i)| *i)
            .ok_or_else(|| anyhow!("no {name} in the bench namespace"))
    };

    let fib4_entries = (n * (cfg.routes_per_vrf + 2)).max(vrf_common::FIB4_ENTRIES as usize) as u32;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(map_names::FIB4, fib4_entries)
        .load(vrf_user::EBPF_OBJECT)
        .context("loading vrf-xdp's object")?;
    let prog: &mut Xdp = ebpf
        .program_mut(prog_names::XDP_VRF)
        .ok_or_else(|| anyhow!("no {}", prog_names::XDP_VRF))?
        .try_into()?;
    prog.load()?;
    let mut maps = Maps::take(&mut ebpf, None)?;
    let sizes = maps.flat4.sizes();
    let mut flat = Flat4::new(sizes);

    let t = Instant::now();
    let mut rigs = Vec::with_capacity(n);
    for v in 0..n {
        let (ingress, egress) = (idx(format!("vi{v}"))?, idx(format!("ve{v}"))?);
        let rig = VrfRig {
            table: FIRST_TABLE + v as u32,
            ingress,
            ingress_mac: mac(0, v),
            routes: routes::v4_table(cfg.routes_per_vrf, SEED + v as u64),
        };
        ns.run_in(|| fill(&mut maps, &mut flat, v as u32, &rig, egress))
            .with_context(|| format!("filling VRF {v}"))?;
        rigs.push(rig);
        if (v + 1) % 64 == 0 {
            progress.detail(&format!("{} VRFs filled", v + 1));
        }
    }
    let fill_s = t.elapsed().as_secs_f64();
    let flat_tables: Vec<u32> = flat.flat_tables().into_iter().map(|(t, _)| t).collect();
    progress.detail(&format!(
        "filled in {fill_s:.1} s; {} of {n} tables flat, {} of {} chunks",
        flat_tables.len(),
        flat.chunks_used(),
        sizes.chunks
    ));

    let mut rng = StdRng::seed_from_u64(SEED - 1);
    let mut counts = Vec::new();
    for &k in &cfg.counts {
        let picks: Vec<(usize, Ipv4Net)> = (0..cfg.destinations)
            .map(|_| {
                let v = rng.random_range(0..k);
                (v, *rigs[v].routes.choose(&mut rng).expect("routes"))
            })
            .collect();
        let mut addr_rng = StdRng::seed_from_u64(SEED + 7);
        let samples = ns.run_in(|| -> Result<Vec<f64>> {
            system::pin(0, super::forward::ROUTER_CPU)?;
            let prog: &mut Xdp = ebpf
                .program_mut(prog_names::XDP_VRF)
                .ok_or_else(|| anyhow!("no {}", prog_names::XDP_VRF))?
                .try_into()?;
            let mut out = Vec::with_capacity(picks.len());
            for (v, p) in &picks {
                let r = &rigs[*v];
                let dst = routes::address_in(IpNet::V4(*p), &mut addr_rng);
                let frame = frame(r.ingress_mac, dst)?;
                let run = run_repeated(prog, r.ingress, &frame, REPEAT)?;
                check(&run, "vrf-xdp", IpNet::V4(*p))?;
                out.push(run.per_run.as_nanos() as f64);
            }
            Ok(out)
        })?;
        let c = Count {
            vrfs: k,
            flat_tables: rigs[..k]
                .iter()
                .filter(|r| flat_tables.contains(&r.table))
                .count(),
            ns: Stats::of(&samples),
        };
        progress.detail(&format!(
            "{k} VRFs ({} flat): {:.1} ns/packet (mean)",
            c.flat_tables, c.ns.mean
        ));
        counts.push(c);
    }
    Ok(Results {
        routes_per_vrf: cfg.routes_per_vrf,
        destinations: cfg.destinations,
        repeat: REPEAT,
        counts,
        flat_chunks_used: flat.chunks_used(),
        flat_chunks: sizes.chunks,
        fill_s,
    })
}

/// VRF `slot`: its entry, both links, nexthop groups, the gateway's neighbour and its routes,
/// into the trie and the flat FIB (synced once per VRF).
fn fill(maps: &mut Maps, flat: &mut Flat4, slot: u32, rig: &VrfRig, egress: u32) -> Result<()> {
    let mut name = [0u8; 16];
    let label = format!("b{slot}");
    name[..label.len()].copy_from_slice(label.as_bytes());
    maps.set_vrf(
        slot,
        &Vrf {
            table: rig.table,
            flags: VRF_ACTIVE,
            name,
            ..Default::default()
        },
    )?;
    let links = [
        (rig.ingress, rig.ingress_mac),
        (egress, mac(1, slot as usize)),
    ];
    for (i, (ifindex, mac)) in links.into_iter().enumerate() {
        maps.set_link(
            ifindex,
            &Link {
                vrf: slot,
                stats_slot: 1 + 2 * slot + i as u32,
                mtu: 1500,
                mac,
                flags: LINK_UP | LINK_MEMBER | LINK_FWD4,
                mtu6: 1500,
            },
        )?;
        maps.add_tx_port(ifindex)?;
    }
    // Group ids: 1 + 2 × slot for the sources' connected route, 2 + 2 × slot via the gateway.
    let (connected, via) = (1 + 2 * slot, 2 + 2 * slot);
    maps.set_nexthop_group(
        connected,
        &vrf_user::writer::nexthop_group(&[tests::dataplane::nexthop(rig.ingress, None)])?,
    )?;
    maps.set_nexthop_group(
        via,
        &vrf_user::writer::nexthop_group(&[tests::dataplane::nexthop(
            egress,
            Some(IpAddr::V4(GATEWAY)),
        )])?,
    )?;
    maps.set_neighbour(egress, IpAddr::V4(GATEWAY), rig.ingress_mac)?;
    let unicast = |nexthop| Route {
        kind: RouteKind::Unicast as u16,
        mtu: 0,
        nexthop,
    };
    let sources = Ipv4Net::new(SOURCE, 24)?.trunc();
    for (p, r) in std::iter::once((sources, unicast(connected)))
        .chain(rig.routes.iter().map(|p| (*p, unicast(via))))
    {
        maps.insert_route(rig.table, IpNet::V4(p), &r)?;
        flat.set(rig.table, p, Some(r));
    }
    maps.flat4.sync(flat)
}

/// A 64-byte UDP frame from [`SOURCE`] to `dst`, TTL 255, addressed to the ingress link.
fn frame(router_mac: [u8; 6], dst: IpAddr) -> Result<Vec<u8>> {
    let mut spec = FrameSpec::new(IpAddr::V4(SOURCE), dst);
    spec.src_mac = [0x02, 0xbb, 0xff, 0, 0, 1];
    spec.dst_mac = router_mac;
    spec.ttl = 255;
    spec.payload_len = 18;
    spec.udp()
}

/// The MAC of VRF `v`'s ingress (`end` 0) or egress (`end` 1) link.
fn mac(end: u8, v: usize) -> [u8; 6] {
    [0x02, 0xbb, end, 0, (v >> 8) as u8, v as u8]
}

fn mac_str(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// (name, ifindex) of every link in `ns`, from one `ip -j link show`.
fn ifindexes(ns: &NetNs) -> Result<Vec<(String, u32)>> {
    let out = ns.ip(&["-j", "link", "show"])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing ip -j link show")?;
    Ok(v.as_array()
        .context("ip -j link show: not a list")?
        .iter()
        .filter_map(|l| {
            Some((
                l["ifname"].as_str()?.to_string(),
                l["ifindex"].as_u64()? as u32,
            ))
        })
        .collect())
}

/// Its section of BENCHMARKS.md.
pub fn section(o: &mut String, r: &Results, plot: Option<&String>) {
    use std::fmt::Write as _;
    let si = super::report::si;
    let _ = writeln!(
        o,
        "## 2b. Per-packet cost against the number of VRFs\n\n\
         **Method.** {} VRFs in one router namespace, each what vrfd writes for a policy-routing VRF of two \
         members: its own table of {} random IPv4 routes (the mix of section 2, a different seed per VRF) via a \
         gateway behind its egress link, an ingress and an egress link (the two ends of one veth pair: a test \
         run needs a real ingress device), a connected route for the sources. {} destinations are drawn at \
         random over the first N VRFs (a random VRF, then a random route of its table); each frame runs {} times \
         through `xdp_vrf` (BPF_PROG_TEST_RUN, as in section 2, output checked). The flat IPv4 FIB takes tables \
         in the order they were filled, as far as vrfd's default pools reach ({} of {} chunks in use with every \
         VRF filled); the other tables are served by the LPM trie. Filling took {:.1} s.\n",
        r.counts.last().map_or(0, |c| c.vrfs),
        si(r.routes_per_vrf as f64),
        r.destinations,
        r.repeat,
        r.flat_chunks_used,
        r.flat_chunks,
        r.fill_s
    );
    let _ = writeln!(
        o,
        "| VRFs | of them in the flat FIB | mean | median | p10 | p90 | vs 1 VRF |\n|---|---|---|---|---|---|---|"
    );
    let base = r.counts.first().map(|c| c.ns.mean);
    for c in &r.counts {
        let _ = writeln!(
            o,
            "| {} | {} | {:.0} ns | {:.0} | {:.0} | {:.0} | {} |",
            c.vrfs,
            c.flat_tables,
            c.ns.mean,
            c.ns.median,
            c.ns.p10,
            c.ns.p90,
            base.map_or("–".into(), |b| format!("{:.2}×", c.ns.mean / b))
        );
    }
    o.push('\n');
    if let Some(p) = plot {
        let _ = writeln!(o, "![ns per packet against the number of VRFs]({p})\n");
    }
}
