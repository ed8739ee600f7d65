//! (4) What `vrfctl capture` costs per packet: BPF_PROG_TEST_RUN with repeat of the same
//! forwarded frame (the lookup part's topology, a 1k-route table) through
//! - `xdp_vrf_nocapture`: the fast path with capture compiled out;
//! - `xdp_vrf` with capture idle (the flag off): the cost every packet pays;
//! - `xdp_vrf` while a capture of another VRF runs (the packet filtered out);
//! - `xdp_vrf` while a capture's rate limit refuses every record;
//! - `xdp_vrf` recording every packet (no rate limit; the ring drained between runs),
//! - `xdp_vrf` of a second copy of the object loaded with the checks around the route lookup
//!   (netfilter, IPsec, rules, `disable_ipv6` flags) off: what those checks cost,
//!
//! interleaved round by round in the same run, on the lookup part's CPU.
use anyhow::{anyhow, Context, Result};
use aya::{programs::Xdp, EbpfLoader};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use vrf_common::{prog_names, KERNEL_CHECKS_GLOBAL, LINK_CAPTURE, NEXTHOP_STATS_ENTRIES};
use vrf_user::capture::{CaptureMaps, Settings};
use vrf_user::maps::Maps;

use super::lookup::{self, Stats};
use super::programs::run_repeated;
use super::{system, Progress};

/// The modes, in the order they are measured and reported.
pub const MODES: [(&str, &str); 7] = [
    ("nocapture", "built without capture (`xdp_vrf_nocapture`)"),
    ("idle", "capture idle (flag off)"),
    ("filtered", "capture of another VRF running"),
    ("rate_limited", "capture running, rate limit exhausted"),
    ("recording", "recording every packet"),
    (
        "no_kernel_checks",
        "capture idle, netfilter/IPsec/rule/`disable_ipv6` checks off (second copy)",
    ),
    (
        "uncounted",
        "capture idle, per-nexthop counter skipped (slot out of range)",
    ),
];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub rounds: usize,
    pub repeat: u32,
    pub frame_len: usize,
    /// ns per packet by mode key (see [`MODES`]).
    pub modes: Vec<(String, Stats)>,
    /// Instructions after the verifier (xlated), with and without capture.
    pub insns_capture: u32,
    pub insns_nocapture: u32,
    /// Instructions after the verifier of `xdp_vrf` with the kernel checks off.
    #[serde(default)]
    pub insns_no_kernel_checks: u32,
    /// Records the recording mode wrote (every packet of every run, checked).
    pub records: u64,
    pub cpu: usize,
}

impl Results {
    pub fn mode(&self, key: &str) -> Option<&Stats> {
        self.modes.iter().find(|(k, _)| k == key).map(|(_, s)| s)
    }
}

pub fn run(quick: bool, progress: &Progress) -> Result<Results> {
    progress.step("capture cost: building the namespace topology");
    let topo = lookup::cost_topology("bcap")?;
    let router = topo.router();
    let m0 = topo.member("blook", 0);

    let mut ebpf = EbpfLoader::new()
        .load(vrf_user::EBPF_OBJECT)
        .context("loading vrf-xdp's object")?;
    for name in [prog_names::XDP_VRF, prog_names::XDP_VRF_NOCAPTURE] {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("no {name}"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("verifier rejected {name}"))?;
    }
    let mut maps = Maps::take(&mut ebpf, None)?;
    let mut cap = CaptureMaps::take(&mut ebpf, None)?;
    let routes = super::routes::v4_table(1_000, lookup::SEED);
    let fill = |maps: &mut Maps| lookup::fill_cost_table(maps, &topo, &routes);
    fill(&mut maps)?;
    // The same object with the checks around the route lookup off, its own maps filled alike.
    let mut bare = EbpfLoader::new()
        .override_global(KERNEL_CHECKS_GLOBAL, &0u8, true)
        .load(vrf_user::EBPF_OBJECT)
        .context("loading vrf-xdp's object without the kernel checks")?;
    let prog: &mut Xdp = bare
        .program_mut(prog_names::XDP_VRF)
        .ok_or_else(|| anyhow!("no {}", prog_names::XDP_VRF))?
        .try_into()?;
    prog.load()
        .context("verifier rejected xdp_vrf without the kernel checks")?;
    let insns_no_kernel_checks = prog.info()?.size_translated().unwrap_or(0) / 8;
    let mut bare_maps = Maps::take(&mut bare, None)?;
    fill(&mut bare_maps)?;
    let dst = IpNet::V4(routes[routes.len() / 2]);
    let frame = lookup::frame(m0, dst.addr())?;
    let insns = |name: &str| -> Result<u32> {
        let prog: &Xdp = ebpf
            .program(name)
            .ok_or_else(|| anyhow!("no {name}"))?
            .try_into()?;
        Ok(prog.info()?.size_translated().unwrap_or(0) / 8)
    };
    let insns_capture = insns(prog_names::XDP_VRF)?;
    let insns_nocapture = insns(prog_names::XDP_VRF_NOCAPTURE)?;

    let rounds = if quick { 200 } else { 1000 };
    progress.detail(&format!(
        "{rounds} rounds × {} modes × {} repetitions of a {}-byte frame to {dst}",
        MODES.len(),
        lookup::REPEAT,
        frame.len()
    ));
    let recording = Settings {
        rate: 0,
        ..Settings::default()
    };
    let filtered = Settings {
        vrf: Some(200),
        ..recording.clone()
    };
    let rate_limited = Settings {
        rate: 1,
        ..Settings::default()
    };
    // What vrfd does while a capture holds its lease: LINK_CAPTURE on every link.
    let link_bit = |maps: &mut Maps, on: bool| -> Result<()> {
        for (ifindex, mut link) in maps.links()? {
            link.flags = if on {
                link.flags | LINK_CAPTURE
            } else {
                link.flags & !LINK_CAPTURE
            };
            maps.set_link(ifindex, &link)?;
        }
        Ok(())
    };
    // The route's path counts in slot 1, as vrfd would give it; out of range the program skips
    // the per-nexthop counter (all but its bound check).
    let (_, mut group) = maps
        .nexthop_groups()?
        .into_iter()
        .find(|(id, _)| *id == lookup::GROUP_V4)
        .ok_or_else(|| anyhow!("no nexthop group {}", lookup::GROUP_V4))?;
    let mut path_slot = |maps: &mut Maps, slot: u32| -> Result<()> {
        group.paths[0].stats_slot = slot;
        maps.set_nexthop_group(lookup::GROUP_V4, &group)
    };
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut records = 0u64;
    router.run_in(|| -> Result<()> {
        system::pin(0, super::forward::ROUTER_CPU)?;
        let run_of = |ebpf: &aya::Ebpf, name: &str| -> Result<f64> {
            let prog: &Xdp = ebpf
                .program(name)
                .ok_or_else(|| anyhow!("no {name}"))?
                .try_into()?;
            let r = run_repeated(prog, m0.ifindex, &frame, lookup::REPEAT)?;
            lookup::check(&r, name, dst)?;
            Ok(r.per_run.as_nanos() as f64)
        };
        let run = |name: &str| run_of(&ebpf, name);
        for round in 0..rounds {
            // Rotate the order, so that no mode always runs first.
            for k in 0..MODES.len() {
                let m = (k + round) % MODES.len();
                link_bit(
                    &mut maps,
                    !matches!(
                        MODES[m].0,
                        "nocapture" | "idle" | "uncounted" | "no_kernel_checks"
                    ),
                )?;
                let uncounted = MODES[m].0 == "uncounted";
                path_slot(&mut maps, if uncounted { NEXTHOP_STATS_ENTRIES } else { 1 })?;
                let ns = match MODES[m].0 {
                    "nocapture" => run(prog_names::XDP_VRF_NOCAPTURE)?,
                    "no_kernel_checks" => run_of(&bare, prog_names::XDP_VRF)?,
                    "idle" | "uncounted" => {
                        cap.stop()?;
                        run(prog_names::XDP_VRF)?
                    }
                    "filtered" => {
                        cap.start(&filtered)?;
                        run(prog_names::XDP_VRF)?
                    }
                    "rate_limited" => {
                        cap.start(&rate_limited)?;
                        // The burst allows one record; the repetitions after it are refused.
                        run(prog_names::XDP_VRF)?
                    }
                    _ => {
                        cap.start(&recording)?;
                        let ns = run(prog_names::XDP_VRF)?;
                        let mut n = 0u64;
                        while let Some(r) = cap.next_record() {
                            r?;
                            n += 1;
                        }
                        anyhow::ensure!(
                            n == u64::from(lookup::REPEAT),
                            "recording mode wrote {n} records for {} packets",
                            lookup::REPEAT
                        );
                        records += n;
                        ns
                    }
                };
                cap.stop()?;
                while cap.next_record().is_some() {}
                samples[m].push(ns);
            }
        }
        Ok(())
    })?;
    let modes: Vec<(String, Stats)> = MODES
        .iter()
        .zip(&samples)
        .map(|((k, _), v)| (k.to_string(), Stats::of(v)))
        .collect();
    let r = Results {
        rounds,
        repeat: lookup::REPEAT,
        frame_len: frame.len(),
        modes,
        insns_capture,
        insns_nocapture,
        insns_no_kernel_checks,
        records,
        cpu: super::forward::ROUTER_CPU,
    };
    for (k, s) in &r.modes {
        progress.detail(&format!(
            "{k}: {:.1} ns/packet (median {:.1})",
            s.mean, s.median
        ));
    }
    Ok(r)
}

/// BENCHMARKS.md's section on capture.
pub fn section(o: &mut String, c: &Results) {
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "## 4. What capture costs\n\n\
         **Method.** BPF_PROG_TEST_RUN with `repeat` ({} repetitions) of one {}-byte UDP frame forwarded by a \
         1k-route table (the per-packet part's topology and frame), on CPU {}, {} rounds; each round runs \
         every mode once, in rotating order. `xdp_vrf_nocapture` is `xdp_vrf` with the capture hook compiled \
         out (same object, same maps); the other modes run `xdp_vrf` itself. Idle, capture costs one test of \
         `LINK_CAPTURE` in the ingress link's flags (an entry the program has already read) and a branch; \
         vrfd sets the bit on every link while a capture holds its lease, and the modes other than idle run \
         with it set. Instructions after the \
         verifier: {} with capture, {} without.\n",
        c.repeat, c.frame_len, c.cpu, c.rounds, c.insns_capture, c.insns_nocapture
    );
    let _ = writeln!(
        o,
        "| mode | mean | median | p10 | p90 | vs built without |\n|---|---|---|---|---|---|"
    );
    let base = c.mode("nocapture").map(|s| s.median);
    for ((key, label), (_, s)) in MODES.iter().zip(&c.modes) {
        let delta = match base {
            Some(b) if *key != "nocapture" => format!("{:+.1} ns", s.median - b),
            _ => "—".to_string(),
        };
        let _ = writeln!(
            o,
            "| {label} | {:.1} ns | {:.1} | {:.1} | {:.1} | {delta} |",
            s.mean, s.median, s.p10, s.p90
        );
    }
    if let (Some(idle), Some(bare)) = (c.mode("idle"), c.mode("no_kernel_checks")) {
        let _ = writeln!(
            o,
            "\n**The checks around the route lookup** (netfilter, IPsec, policy rules per family, \
             host rules, `disable_ipv6`: issue #11) cost {:+.1} ns per packet: the median of capture idle \
             minus that of the same object loaded with `KERNEL_CHECKS` = 0, whose branches the verifier \
             removes ({} instructions after the verifier with the checks, {} without). Idle's own p10–p90 \
             spread is {:.0} ns: a difference below it is not a measurement. vrfd precomputes the checks \
             into the VRF and link flags the program reads anyway; what remains is a few bit tests on \
             words in cache.",
            idle.median - bare.median,
            c.insns_capture,
            c.insns_no_kernel_checks,
            idle.p90 - idle.p10
        );
    }
    let _ = writeln!(
        o,
        "\nThe recording mode wrote {} records (one per packet, checked). Its cost is the copy of the frame \
         into a per-CPU scratch record (`bpf_xdp_load_bytes`), its copy into the ring (`bpf_ringbuf_output`) \
         and the clock read; a capture's rate limit \
         (default 10000 records/s) bounds how many packets pay it.\n",
        c.records
    );
    if let (Some(idle), Some(uncounted)) = (c.mode("idle"), c.mode("uncounted")) {
        let _ = writeln!(
            o,
            "**Per-nexthop counters.** Every forwarded packet adds to its path's `NEXTHOP_STATS` slot (one \
             per-CPU array update, no lookup). Idle against `uncounted` (the same program, the path's slot \
             out of range so the update is skipped after its bound check): {:+.1} ns/packet (median {:.1} vs \
             {:.1} ns).\n",
            idle.median - uncounted.median,
            idle.median,
            uncounted.median
        );
    }
}
