//! BENCHMARKS.md, `summary.json` and the plots, from one run's measurements.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::forward::{Mode, FRAME_SIZES, GEN_CPU, ROUTER_CPU};
use super::{control, forward, lookup, plot, profile::Hot, Measured, Options, Progress};

/// The aims of issue #15 (reported, never asserted).
const AIM_VS_KERNEL: f64 = 5.0;
const AIM_PPS_VS_HELPER: f64 = 1.25;
const AIM_OF_CEILING: f64 = 0.8;
const AIM_1M_VS_HELPER: f64 = 0.7;
const AIM_1K_TO_1M: f64 = 1.2;
const AIM_VRFS_GROWTH: f64 = 1.2;
const AIM_V6_VS_HELPER: f64 = 1.0;
const AIM_SYNC_S: f64 = 2.0;
const AIM_CHANGE_P99_MS: f64 = 5.0;
const FULL: usize = 1_000_000;

pub fn write(opts: &Options, m: &Measured, progress: &Progress) -> Result<()> {
    plot::init()?;
    let mut plots: Vec<(&str, PathBuf)> = Vec::new();
    if let Some(f) = &m.forward {
        plots.push((
            "forward",
            plot::forward(f, &opts.out_dir.join("forward.png"))?,
        ));
    }
    if let Some(l) = &m.lookup {
        plots.push(("lookup", plot::lookup(l, &opts.out_dir.join("lookup.png"))?));
    }
    if let Some(v) = &m.vrfs {
        plots.push(("vrfs", plot::vrfs(v, &opts.out_dir.join("vrfs.png"))?));
    }
    if let Some(c) = &m.control {
        plots.push(("sync", plot::sync(c, &opts.out_dir.join("sync.png"))?));
        if !c.changes.is_empty() {
            plots.push((
                "route_change",
                plot::route_changes(c, &opts.out_dir.join("route_change.png"))?,
            ));
        }
    }
    let summary = summary(m);
    let path = opts.out_dir.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    progress.step(&format!("wrote {}", path.display()));

    std::fs::create_dir_all(&opts.docs_dir)
        .with_context(|| format!("mkdir {}", opts.docs_dir.display()))?;
    let mut links = BTreeMap::new();
    for (name, png) in &plots {
        let file = png.file_name().context("plot file name")?;
        let dest = opts.docs_dir.join(file);
        std::fs::copy(png, &dest)
            .with_context(|| format!("copying {} to {}", png.display(), dest.display()))?;
        links.insert(*name, relative(&dest, opts.report.parent()));
    }
    let md = markdown(m, &summary, &links);
    std::fs::write(&opts.report, md)
        .with_context(|| format!("writing {}", opts.report.display()))?;
    progress.step(&format!(
        "wrote {} and {} plots ({} and {})",
        opts.report.display(),
        plots.len(),
        opts.out_dir.display(),
        opts.docs_dir.display()
    ));
    Ok(())
}

/// `path` relative to `base` when it lies below it (for links in the report).
fn relative(path: &Path, base: Option<&Path>) -> String {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    match base.map(canon) {
        Some(b) => canon(path)
            .strip_prefix(&b)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| path.display().to_string()),
        None => path.display().to_string(),
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn get(t: &forward::Table, mode: Mode, size: &str) -> Option<f64> {
    t.get(mode.key()).and_then(|s| s.get(size)).copied()
}

fn lookup_size<'a>(l: &'a lookup::Results, key: &str) -> Option<&'a lookup::Size> {
    l.sizes.iter().find(|s| s.key == key)
}

/// The full-table sync time: vrfd's own start when it got ready, else the phases' sum when the
/// run finished, else the estimate. (seconds, how it was obtained, lower bound if stopped)
fn sync_full(c: &control::Results) -> (Option<f64>, &'static str, Option<f64>) {
    if let Some(s) = c
        .vrfd_starts
        .iter()
        .find(|s| s.routes == FULL && s.ready_s.is_some())
    {
        return (s.ready_s, "measured: vrfd from spawn to ready", None);
    }
    let run = c.sync.iter().find(|s| s.routes == FULL);
    match run {
        Some(r) if r.finished => (
            Some(r.route_sync_s),
            "measured: start-up path by phase",
            None,
        ),
        Some(r) => (
            c.extrapolated_full_s,
            "estimated: the run was stopped at the time limit (see details.control.extrapolation)",
            Some(r.route_sync_s),
        ),
        None => (None, "not measured", None),
    }
}

/// Bytes of kernel memory per IPv4 route in the FIB4 map: the measured growth while 1M routes
/// went in when it is plausible, else the map's `memlock`.
fn bytes_per_route(m: &Measured) -> (Option<f64>, String) {
    if let Some(l) = &m.lookup {
        let mem = &l.memory;
        if mem.routes_v4 > 0 {
            let memlock = mem.fib4_memlock_bytes as f64 / mem.routes_v4 as f64;
            let grown = mem.fib4_kernel_delta_bytes as f64 / mem.routes_v4 as f64;
            return if grown >= memlock {
                (
                    Some(grown.round()),
                    format!(
                        "kernel memory growth (slab + per-CPU + vmalloc) while {} routes went into FIB4; \
                         the map's memlock says {memlock:.0} B/route (it counts route nodes only, not the trie's glue nodes)",
                        mem.routes_v4
                    ),
                )
            } else {
                (
                    Some(memlock.round()),
                    format!(
                        "FIB4 memlock / {} routes (the measured growth was noise-bound)",
                        mem.routes_v4
                    ),
                )
            };
        }
    }
    if let Some(c) = &m.control {
        if let Some(r) = c.sync.iter().rev().find(|r| r.fib4_memlock_bytes.is_some()) {
            let b = r.fib4_memlock_bytes.unwrap_or(0) as f64 / r.routes as f64;
            return (
                Some(b.round()),
                format!("FIB4 memlock / {} routes", r.routes),
            );
        }
    }
    (None, "not measured".into())
}

fn route_change_headline(c: &control::Results) -> Option<&control::Changes> {
    c.changes.iter().max_by_key(|x| x.table_routes)
}

/// summary.json: the issue's keys first, then ratios, aims, notes and every measurement.
pub fn summary(m: &Measured) -> Value {
    let mut forward_pps = json!({});
    let mut per_core = json!({});
    let mut ratios = serde_json::Map::new();
    if let Some(f) = &m.forward {
        for mode in Mode::ROUTERS.into_iter().chain([Mode::GeneratorCeiling]) {
            let mut a = serde_json::Map::new();
            let mut b = serde_json::Map::new();
            for size in ["64", "1500"] {
                if let Some(v) = get(&f.median_pps, mode, size) {
                    a.insert(size.into(), json!(v.round()));
                }
                if let Some(v) = get(&f.median_per_core, mode, size) {
                    b.insert(size.into(), json!(v.round()));
                }
            }
            if mode == Mode::GeneratorCeiling {
                ratios.insert("generator_ceiling_pps".into(), Value::Object(a));
                continue;
            }
            forward_pps[mode.key()] = Value::Object(a);
            per_core[mode.key()] = Value::Object(b);
        }
        for (name, other) in [
            ("vrf_xdp_vs_kernel", Mode::Kernel),
            ("vrf_xdp_vs_fib_helper", Mode::FibHelper),
        ] {
            let mut raw = serde_json::Map::new();
            let mut core = serde_json::Map::new();
            for size in ["64", "1500"] {
                if let Some(r) = ratio(
                    get(&f.median_pps, Mode::VrfXdp, size),
                    get(&f.median_pps, other, size),
                ) {
                    raw.insert(size.into(), json!(round(r, 2)));
                }
                if let Some(r) = ratio(
                    get(&f.median_per_core, Mode::VrfXdp, size),
                    get(&f.median_per_core, other, size),
                ) {
                    core.insert(size.into(), json!(round(r, 2)));
                }
            }
            ratios.insert(format!("forward_{name}"), Value::Object(raw));
            ratios.insert(format!("forward_per_core_{name}"), Value::Object(core));
        }
    }
    let mut ns = json!({});
    if let Some(l) = &m.lookup {
        let mut a = serde_json::Map::new();
        let mut b = serde_json::Map::new();
        for s in &l.sizes {
            a.insert(s.key.clone(), json!(round(s.vrf_xdp.mean, 1)));
            b.insert(s.key.clone(), json!(round(s.fib_helper.mean, 1)));
            ratios.insert(
                format!("ns_vrf_xdp_vs_fib_helper_{}", s.key),
                json!(round(s.vrf_xdp.mean / s.fib_helper.mean, 2)),
            );
        }
        ns["vrf_xdp"] = Value::Object(a);
        ns["fib_helper"] = Value::Object(b);
        if let (Some(k), Some(mm)) = (lookup_size(l, "1k"), lookup_size(l, "1M")) {
            ratios.insert(
                "ns_vrf_xdp_1M_vs_1k".into(),
                json!(round(mm.vrf_xdp.mean / k.vrf_xdp.mean, 2)),
            );
            ratios.insert(
                "ns_fib_helper_1M_vs_1k".into(),
                json!(round(mm.fib_helper.mean / k.fib_helper.mean, 2)),
            );
        }
    }
    if let Some(v) = &m.vrfs {
        let mut a = serde_json::Map::new();
        for c in &v.counts {
            a.insert(format!("vrfs_{}", c.vrfs), json!(round(c.ns.mean, 1)));
        }
        ns["vrf_xdp_by_vrfs"] = Value::Object(a);
        if let Some(g) = v.growth() {
            ratios.insert("ns_vrf_xdp_most_vs_1_vrfs".into(), json!(round(g, 2)));
        }
    }
    let (sync_s, sync_how, sync_floor) = m
        .control
        .as_ref()
        .map_or((None, "not measured", None), sync_full);
    let change = m.control.as_ref().and_then(route_change_headline);
    let (bpr, bpr_how) = bytes_per_route(m);
    json!({
        "forward_pps": forward_pps,
        "ns_per_packet": ns,
        "sync_1m_routes_s": sync_s.map(|s| round(s, 2)),
        "kernel_dump_1m_routes_s": m
            .control
            .as_ref()
            .and_then(|c| c.kernel_dump_s.get(&FULL))
            .map(|s| round(*s, 2)),
        "route_change_ms": {
            "p50": change.map(|c| round(c.p50_ms, 3)),
            "p99": change.map(|c| round(c.p99_ms, 3)),
        },
        "bytes_per_route": bpr,
        "ratios": ratios,
        "forward_pps_per_router_core": per_core,
        "aims": aims(m),
        "notes": {
            "forward_pps": "median over rounds of the packets per second counted by the sink on the far side; \
                            64 = 64-byte frames, 1500 = 1500-byte IP packets",
            "ns_per_packet": "mean over destinations of BPF_PROG_TEST_RUN's average per repetition",
            "sync_1m_routes_s": sync_how,
            "sync_1m_routes_stopped_after_s": sync_floor.map(|s| round(s, 1)),
            "route_change_ms": change.map(|c| format!(
                "table of {} routes, {} background replacements/s; from the RTM_NEWROUTE request to the pinned FIB4 showing the new gateway",
                c.table_routes, c.churn_rate
            )),
            "bytes_per_route": bpr_how,
        },
        "quick": m.quick,
        "wall_seconds": m.wall_seconds.round(),
        "machine": m.machine,
        "details": {
            "forward": m.forward,
            "lookup": m.lookup,
            "vrfs": m.vrfs,
            "control": m.control,
            "capture": m.capture,
            "restart": m.restart,
        },
    })
}

struct Aim {
    what: String,
    value: String,
    target: String,
    met: Option<bool>,
}

fn aims_list(m: &Measured) -> Vec<Aim> {
    let mut out = Vec::new();
    if let Some(f) = &m.forward {
        for size in ["64", "1500"] {
            let raw = ratio(
                get(&f.median_pps, Mode::VrfXdp, size),
                get(&f.median_pps, Mode::Kernel, size),
            );
            let core = ratio(
                get(&f.median_per_core, Mode::VrfXdp, size),
                get(&f.median_per_core, Mode::Kernel, size),
            );
            out.push(Aim {
                what: format!("packets/s vs the kernel, {}", size_label(size)),
                value: format!(
                    "{} (per router core {})",
                    raw.map_or("–".into(), |r| format!("{r:.2}×")),
                    core.map_or("–".into(), |r| format!("{r:.2}×"))
                ),
                target: format!("≥ {AIM_VS_KERNEL}×"),
                met: raw.map(|r| r >= AIM_VS_KERNEL),
            });
        }
        for size in ["64", "1500"] {
            let raw = ratio(
                get(&f.median_pps, Mode::VrfXdp, size),
                get(&f.median_pps, Mode::FibHelper, size),
            );
            out.push(Aim {
                what: format!(
                    "packets/s vs the bpf_fib_lookup program, {}",
                    size_label(size)
                ),
                value: raw.map_or("–".into(), |r| format!("{r:.2}×")),
                target: format!("≥ {AIM_PPS_VS_HELPER}×"),
                met: raw.map(|r| r >= AIM_PPS_VS_HELPER),
            });
        }
        let share = ratio(
            get(&f.median_pps, Mode::VrfXdp, "64"),
            get(&f.median_pps, Mode::RedirectCeiling, "64"),
        );
        out.push(Aim {
            what: "packets/s vs the raw XDP redirect ceiling (no lookup), 64-byte frames".into(),
            value: share.map_or("–".into(), |r| format!("{:.0}%", r * 100.0)),
            target: format!("≥ {:.0}%", AIM_OF_CEILING * 100.0),
            met: share.map(|r| r >= AIM_OF_CEILING),
        });
    }
    if let Some(v) = &m.vrfs {
        let (first, last) = (v.counts.first(), v.counts.last());
        let growth = v.growth();
        out.push(Aim {
            what: format!(
                "ns/packet growth from 1 to {} VRFs of {} routes",
                last.map_or(0, |c| c.vrfs),
                si(v.routes_per_vrf as f64)
            ),
            value: match (first, last, growth) {
                (Some(a), Some(b), Some(g)) => {
                    format!("{:.0} → {:.0} ns ({g:.2}×)", a.ns.mean, b.ns.mean)
                }
                _ => "–".into(),
            },
            target: format!("≤ {AIM_VRFS_GROWTH}×"),
            met: growth.map(|g| g <= AIM_VRFS_GROWTH),
        });
    }
    if let Some(l) = &m.lookup {
        for (key, what, aim) in [
            (
                "1M",
                "ns/packet at 1M routes vs bpf_fib_lookup",
                AIM_1M_VS_HELPER,
            ),
            (
                "v6_100k",
                "ns/packet, IPv6 at 100k routes vs bpf_fib_lookup",
                AIM_V6_VS_HELPER,
            ),
        ] {
            if let Some(s) = lookup_size(l, key) {
                let r = s.vrf_xdp.mean / s.fib_helper.mean;
                out.push(Aim {
                    what: what.into(),
                    value: format!(
                        "{:.0} vs {:.0} ns ({r:.2}×)",
                        s.vrf_xdp.mean, s.fib_helper.mean
                    ),
                    target: format!("≤ {aim}×"),
                    met: Some(r <= aim),
                });
            }
        }
        if let (Some(k), Some(mm)) = (lookup_size(l, "1k"), lookup_size(l, "1M")) {
            let r = mm.vrf_xdp.mean / k.vrf_xdp.mean;
            out.push(Aim {
                what: "ns/packet growth from 1k to 1M routes".into(),
                value: format!(
                    "{:.0} → {:.0} ns ({r:.2}×)",
                    k.vrf_xdp.mean, mm.vrf_xdp.mean
                ),
                target: format!("≤ {AIM_1K_TO_1M}×"),
                met: Some(r <= AIM_1K_TO_1M),
            });
        }
    }
    if let Some(c) = &m.control {
        let (s, how, floor) = sync_full(c);
        out.push(Aim {
            what: "sync 1M routes at start".into(),
            value: match (s, floor) {
                (Some(s), Some(f)) => format!("≈ {s:.0} s (estimated; stopped after {f:.0} s)"),
                (Some(s), None) => format!("{s:.2} s"),
                _ => format!("– ({how})"),
            } + &c.kernel_dump_s.get(&FULL).map_or(String::new(), |d| {
                format!("; the kernel's own dump (`ip route show`) {d:.2} s")
            }),
            target: format!("< {AIM_SYNC_S} s"),
            met: s
                .map(|s| s < AIM_SYNC_S)
                .or(floor.map(|f| f < AIM_SYNC_S).filter(|ok| !ok)),
        });
        if let Some(ch) = route_change_headline(c) {
            out.push(Aim {
                what: format!(
                    "route change → map, p99 ({} routes, {}/s churn)",
                    si(ch.table_routes as f64),
                    ch.churn_rate
                ),
                value: format!("p50 {:.2} ms, p99 {:.2} ms", ch.p50_ms, ch.p99_ms),
                target: format!("p99 < {AIM_CHANGE_P99_MS} ms"),
                met: Some(ch.p99_ms < AIM_CHANGE_P99_MS && ch.lost == 0),
            });
        }
    }
    out
}

fn aims(m: &Measured) -> Value {
    Value::Array(
        aims_list(m)
            .into_iter()
            .map(|a| json!({"aim": a.what, "value": a.value, "target": a.target, "met": a.met}))
            .collect(),
    )
}

fn size_label(size: &str) -> &'static str {
    if size == "64" {
        "64-byte frames"
    } else {
        "1500-byte packets"
    }
}

pub(super) fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", round(v / 1e6, 2))
    } else if v >= 1e3 {
        format!("{}k", round(v / 1e3, 1))
    } else {
        format!("{v:.0}")
    }
}

fn pps(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1e6 => format!("{:.2} Mpps", v / 1e6),
        Some(v) => format!("{:.0} kpps", v / 1e3),
        None => "–".into(),
    }
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / (1u64 << 20) as f64)
}

/// Where a profiled symbol's time belongs.
fn category(symbol: &str) -> &'static str {
    let s = symbol;
    if s.starts_with("bpf_prog_") {
        "the XDP program's own instructions"
    } else if s.contains("htab") || s == "lookup_nulls_elem_raw" || s == "memcmp" || s == "jhash" {
        "BPF hash-map lookups (LINKS, NEXTHOPS, NEIGH)"
    } else if s.starts_with("trie_") {
        "BPF LPM-trie lookup (FIB4/FIB6)"
    } else if s.contains("fib")
        || s.starts_with("ip_mtu_from_fib")
        || s.contains("nh_")
        || s.starts_with("__fib")
    {
        "kernel FIB and policy-rule lookups"
    } else if s.starts_with("veth")
        || s.contains("xdp")
        || s.starts_with("dev_map")
        || s.starts_with("bq_")
        || s.contains("napi")
        || s.starts_with("__dev_flush")
        || s.starts_with("dev_hash_map")
        || s.contains("page_pool")
    {
        "veth, XDP redirect and NAPI"
    } else if s.starts_with("ip")
        || s.contains("skb")
        || s.contains("gro")
        || s.starts_with("netif")
        || s.starts_with("__netif")
        || s.starts_with("dev_")
        || s.starts_with("__dev")
        || s.contains("neigh")
        || s.starts_with("nf_")
        || s.starts_with("eth_")
        || s.starts_with("sch_")
        || s.starts_with("__qdisc")
        || s.starts_with("validate_xmit")
        || s.starts_with("l3mdev")
        || s.starts_with("kmem_cache")
        || s.starts_with("__kmem")
        || s.starts_with("kfree")
    {
        "kernel IP stack and skbs"
    } else {
        "other"
    }
}

/// Shares per category of a profile (of the samples it lists).
fn categorise(hot: &[Hot]) -> Vec<(&'static str, f64)> {
    let mut by: BTreeMap<&'static str, f64> = BTreeMap::new();
    for h in hot {
        *by.entry(category(&h.symbol)).or_default() += h.percent;
    }
    let mut v: Vec<(&'static str, f64)> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

fn profile_table(
    out: &mut String,
    profiles: &BTreeMap<String, Vec<Hot>>,
    order: &[(&str, &str)],
    rows: usize,
) {
    let cols: Vec<&(&str, &str)> = order
        .iter()
        .filter(|(k, _)| profiles.contains_key(*k))
        .collect();
    if cols.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "| # | {} |\n|---|{}",
        cols.iter().map(|(_, l)| *l).collect::<Vec<_>>().join(" | "),
        "---|".repeat(cols.len())
    );
    for i in 0..rows {
        let cells: Vec<String> = cols
            .iter()
            .map(|(k, _)| {
                profiles[*k].get(i).map_or(String::new(), |h| {
                    format!("{:.1}% `{}`", h.percent, h.symbol)
                })
            })
            .collect();
        if cells.iter().all(String::is_empty) {
            break;
        }
        let _ = writeln!(out, "| {} | {} |", i + 1, cells.join(" | "));
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "By kind (share of the samples):\n\n| kind | {} |\n|---|{}",
        cols.iter().map(|(_, l)| *l).collect::<Vec<_>>().join(" | "),
        "---|".repeat(cols.len())
    );
    let cats: Vec<BTreeMap<&str, f64>> = cols
        .iter()
        .map(|(k, _)| categorise(&profiles[*k]).into_iter().collect())
        .collect();
    let mut names: Vec<&str> = cats.iter().flat_map(|c| c.keys().copied()).collect();
    names.sort_unstable();
    names.dedup();
    names.sort_by(|a, b| {
        let sa: f64 = cats.iter().map(|c| c.get(a).copied().unwrap_or(0.0)).sum();
        let sb: f64 = cats.iter().map(|c| c.get(b).copied().unwrap_or(0.0)).sum();
        sb.total_cmp(&sa)
    });
    for n in names {
        let cells: Vec<String> = cats
            .iter()
            .map(|c| c.get(n).map_or("–".into(), |v| format!("{v:.0}%")))
            .collect();
        let _ = writeln!(out, "| {n} | {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn markdown(m: &Measured, summary: &Value, links: &BTreeMap<&str, String>) -> String {
    let mut o = String::new();
    let date = m.machine["date"].as_str().unwrap_or("date unknown");
    let _ = writeln!(
        o,
        "# Benchmarks\n\n\
         How fast vrf-xdp is against what a user would otherwise run, measured on one machine in one run \
         (`cargo xtask bench{}`, {date}, {:.0} s). Every comparison is side by side from the same run; the \
         machine was shared with other work while it ran (see [The machine](#the-machine)), so absolute numbers \
         move from run to run and the ratios are what to read. This file, `target/bench/summary.json` and the plots \
         in `docs/bench/` are written by the run; regenerate them with `cargo xtask bench` (as root; this run took \
         {:.0} minutes, `--quick` takes a third of a full run), or rewrite this file from the last run's summary \
         with `cargo xtask bench -- --report-only`.\n",
        if m.quick { " --quick" } else { "" },
        m.wall_seconds,
        m.wall_seconds / 60.0
    );

    // Summary against the aims.
    let _ = writeln!(
        o,
        "## Summary\n\n| aim | measured | target | |\n|---|---|---|---|"
    );
    for a in aims_list(m) {
        let mark = match a.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "–",
        };
        let _ = writeln!(o, "| {} | {} | {} | {mark} |", a.what, a.value, a.target);
    }
    o.push('\n');
    let _ = writeln!(
        o,
        "`summary.json` (`forward_pps`, `ns_per_packet`, `sync_1m_routes_s`, `route_change_ms`, `bytes_per_route`):\n\n```json\n{}\n```\n",
        serde_json::to_string_pretty(&json!({
            "forward_pps": summary["forward_pps"],
            "ns_per_packet": summary["ns_per_packet"],
            "sync_1m_routes_s": summary["sync_1m_routes_s"],
            "route_change_ms": summary["route_change_ms"],
            "bytes_per_route": summary["bytes_per_route"],
        }))
        .unwrap_or_default()
    );
    if summary["notes"]["sync_1m_routes_s"]
        .as_str()
        .is_some_and(|s| s.starts_with("estimated"))
    {
        let _ = writeln!(
            o,
            "`sync_1m_routes_s` is an estimate: the measured run was stopped at its time limit (section 3).\n"
        );
    }

    machine(&mut o, m);
    if let Some(f) = &m.forward {
        forward_section(&mut o, f, links.get("forward"));
    }
    if let Some(l) = &m.lookup {
        lookup_section(&mut o, l, links.get("lookup"));
    }
    if let Some(v) = &m.vrfs {
        super::vrfs::section(&mut o, v, links.get("vrfs"));
    }
    if let Some(c) = &m.control {
        control_section(&mut o, c, m, links.get("sync"), links.get("route_change"));
    }
    if let Some(c) = &m.capture {
        super::capture::section(&mut o, c);
    }
    if let Some(r) = &m.restart {
        super::restart::section(&mut o, r);
    }
    gaps(&mut o, m);
    o
}

fn machine(o: &mut String, m: &Measured) {
    let mm = &m.machine;
    let s = |k: &str| {
        mm[k]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| mm[k].to_string())
    };
    let _ = writeln!(
        o,
        "## The machine\n\n| | |\n|---|---|\n| CPU | {} ({} CPUs, {} MHz) |\n| memory | {} GiB |\n| kernel | {} |\n\
         | virtualization | {} |\n| load average when the run started | {} |\n| iproute2 | {} |\n",
        s("cpu"),
        s("cpus"),
        s("cpu_mhz"),
        s("memory_gib"),
        s("kernel"),
        s("virtualization"),
        s("loadavg_at_start"),
        s("iproute2")
    );
    let _ = writeln!(
        o,
        "Two CPUs, shared: other engineers' builds and tests ran next to the benchmark (load average {} when \
         it started). No priorities were raised, so the benchmark's threads got what the scheduler gave them; \
         the forwarding results therefore also give packets per CPU-second of the router thread, measured from \
         its own run time, which does not depend on how much of the CPU others took.\n",
        s("loadavg_at_start")
    );
}

fn forward_section(o: &mut String, f: &forward::Results, plot: Option<&String>) {
    let _ = writeln!(
        o,
        "## 1. Forwarding throughput\n\n\
         **Method.** One router namespace with one VRF (table {}, `ip rule iif <member> lookup {}` as vrfd \
         does without vrf.ko) and two members; host A behind member 0, host B behind member 1, all veth \
         pairs. Traffic is UDP from host A to host B: {} and {}-byte Ethernet frames without FCS (64-byte frames \
         and 1500-byte IP packets on the wire). The source is XDP live frames, as xdp-trafficgen makes them: \
         BPF_PROG_TEST_RUN of `xdp_bench_gen` with `BPF_F_TEST_XDP_LIVE_FRAMES` (batches of {}), which writes the \
         headers and returns XDP_TX, so each frame leaves host A's veth for the router's member 0 at the highest \
         rate the generator thread reaches. Host B's veth runs `xdp_bench_sink` (count, drop) in native XDP: \
         packets are counted on the far side, the same way for every mode. The router forwards with:\n\n\
         - **vrf-xdp**: `xdp_vrf` on both members, maps filled as vrfd would for this topology;\n\
         - **kernel**: no XDP program; the kernel forwards (GRO on the members, as on a NIC);\n\
         - **bpf_fib_lookup XDP**: `xdp_fib_helper` (`vrf-ebpf/src/fib_helper.rs`, the bench's comparison \
         program in the spirit of xdp-forward): `bpf_fib_lookup` with `BPF_FIB_LOOKUP_DIRECT | BPF_FIB_LOOKUP_TBID` \
         and table {}, MACs from the helper, TTL − 1, `bpf_redirect_map` through its own devmap;\n\
         - **raw XDP redirect (no lookup)**: `xdp_bench_redirect` (same file), the ceiling of any XDP forwarder on \
         this path: fixed MACs, TTL − 1, the same devmap redirect, no lookup at all.\n\n\
         **CPUs.** {}. Each trial runs {:.0} s; {} rounds, the modes in rotating order, medians reported. \
         The generator's own ceiling is measured the same way into a drop-everything sink on member 0 \
         (no router).\n",
        forward::TABLE,
        forward::TABLE,
        FRAME_SIZES[0],
        FRAME_SIZES[1],
        super::programs::LIVE_BATCH,
        forward::TABLE,
        f.pinning,
        f.seconds,
        f.rounds
    );
    let _ = writeln!(
        o,
        "| mode | 64-byte: received | 1500-byte: received | 64-byte: per router core | 1500-byte: per router core | router thread's CPU share |\n|---|---|---|---|---|---|"
    );
    for mode in Mode::ROUTERS.into_iter().chain([Mode::GeneratorCeiling]) {
        let shares: Vec<f64> = f
            .trials
            .iter()
            .filter(|t| t.mode == mode)
            .map(|t| t.router_cpu * 100.0)
            .collect();
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {:.0}% |",
            mode.label(),
            pps(get(&f.median_pps, mode, "64")),
            pps(get(&f.median_pps, mode, "1500")),
            pps(get(&f.median_per_core, mode, "64")),
            pps(get(&f.median_per_core, mode, "1500")),
            super::median(&shares)
        );
    }
    o.push('\n');
    for size in ["64", "1500"] {
        let v = get(&f.median_pps, Mode::VrfXdp, size);
        let vc = get(&f.median_per_core, Mode::VrfXdp, size);
        let _ = writeln!(
            o,
            "- {}: vrf-xdp forwards **{}** the kernel's packets per second ({} per router core) and {} the \
             bpf_fib_lookup program's ({} per core).",
            size_label(size),
            fmt_ratio(ratio(v, get(&f.median_pps, Mode::Kernel, size))),
            fmt_ratio(ratio(vc, get(&f.median_per_core, Mode::Kernel, size))),
            fmt_ratio(ratio(v, get(&f.median_pps, Mode::FibHelper, size))),
            fmt_ratio(ratio(vc, get(&f.median_per_core, Mode::FibHelper, size))),
        );
    }
    let gen_min = FRAME_SIZES
        .iter()
        .filter_map(|l| get(&f.median_pps, Mode::GeneratorCeiling, forward::size_key(*l)))
        .fold(f64::INFINITY, f64::min);
    let best = Mode::ROUTERS
        .iter()
        .flat_map(|m| ["64", "1500"].map(|s| get(&f.median_pps, *m, s)))
        .flatten()
        .fold(0.0, f64::max);
    let _ = writeln!(
        o,
        "- The generator is not the bottleneck: into a sink it delivers at least {} while the fastest router mode \
         received {} ({:.1}× headroom). Every router mode lost most of what was offered at the router, whose thread \
         ran at the CPU share shown.\n",
        pps(Some(gen_min)),
        pps(Some(best)),
        gen_min / best.max(1.0)
    );
    if let Some(p) = plot {
        let _ = writeln!(o, "![forwarding throughput]({p})\n");
    }
    let _ = writeln!(
        o,
        "<details><summary>Every trial</summary>\n\n| round | frame | mode | offered | received | router thread CPU | per router core | CPU {GEN_CPU} / CPU {ROUTER_CPU} busy |\n|---|---|---|---|---|---|---|---|"
    );
    for t in &f.trials {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {:.0}% | {} | {} |",
            t.round + 1,
            forward::size_key(t.frame_len),
            t.mode.label(),
            pps(Some(t.offered_pps)),
            pps(Some(t.received_pps)),
            t.router_cpu * 100.0,
            pps(Some(t.pps_per_router_core)),
            t.cpu_busy
                .iter()
                .map(|b| format!("{b:.0}%"))
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    let _ = writeln!(o, "\n</details>\n");
    if !f.profiles.is_empty() {
        let _ = writeln!(
            o,
            "**Where the router's time goes** (`perf record -t <router NAPI thread>` during a 64-byte trial, \
             hottest symbols, self time):\n"
        );
        profile_table(
            o,
            &f.profiles,
            &[
                ("vrf_xdp", "vrf-xdp"),
                ("kernel", "kernel"),
                ("fib_helper", "bpf_fib_lookup XDP"),
            ],
            12,
        );
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{r:.2}×"))
}

fn lookup_section(o: &mut String, l: &lookup::Results, plot: Option<&String>) {
    let _ = writeln!(
        o,
        "## 2. Per-packet cost against table size\n\n\
         **Method.** BPF_PROG_TEST_RUN with `repeat` over the whole XDP program: vrf-xdp's `xdp_vrf` and the \
         bpf_fib_lookup program, the same frames through both. The VRF's table (table {}) holds 1k, then 100k, \
         then 1M IPv4 routes with a prefix-length mix like the Internet's (60% /24, 22% /22–/23, 15% /16–/21, \
         the rest shorter; random public prefixes), then 100k IPv6 routes (mostly /48, /32, /44, /40); each \
         table is a subset of the next. The same routes are in both FIBs: vrf-xdp's maps (written through \
         `vrf_user::maps::Maps`) and the kernel's table (`ip -batch`), all via one gateway on member 1. For each \
         size, {} destinations are picked at random among the table's routes (a random address inside each); each \
         frame runs {} times through each program, alternating which goes first, on CPU {}. A test run does not \
         restore the frame between repetitions, so the gateway's MAC is the ingress member's own and the TTL \
         starts at 255: every repetition takes the full forwarding path, which each run's output proves \
         (XDP_REDIRECT, TTL 255 − {}). ns per packet is the kernel's average per repetition; a destination's frame \
         is cache-warm after its first repetition, so this is the cost of the lookup's work, not of cache misses.\n",
        lookup::TABLE,
        l.sizes.first().map_or(0, |s| s.destinations),
        lookup::REPEAT,
        l.cpu,
        lookup::REPEAT
    );
    let _ = writeln!(
        o,
        "| table | vrf-xdp mean | median | p90 | bpf_fib_lookup mean | median | p90 | vrf-xdp / helper | fill: map / kernel |\n|---|---|---|---|---|---|---|---|---|"
    );
    for s in &l.sizes {
        let _ = writeln!(
            o,
            "| {} {} routes | {:.0} ns | {:.0} | {:.0} | {:.0} ns | {:.0} | {:.0} | {:.2}× | {:.1} s / {:.1} s |",
            if s.family == 4 { "IPv4" } else { "IPv6" },
            si(s.routes as f64),
            s.vrf_xdp.mean,
            s.vrf_xdp.median,
            s.vrf_xdp.p90,
            s.fib_helper.mean,
            s.fib_helper.median,
            s.fib_helper.p90,
            s.vrf_xdp.mean / s.fib_helper.mean,
            s.fill_map_s,
            s.fill_kernel_s
        );
    }
    o.push('\n');
    if let (Some(k), Some(mm)) = (lookup_size(l, "1k"), lookup_size(l, "1M")) {
        let _ = writeln!(
            o,
            "From 1k to 1M routes vrf-xdp's cost grows {:.2}× and the helper's {:.2}×.\n",
            mm.vrf_xdp.mean / k.vrf_xdp.mean,
            mm.fib_helper.mean / k.fib_helper.mean
        );
    }
    if let Some(p) = plot {
        let _ = writeln!(o, "![ns per packet against table size]({p})\n");
    }
    if !l.profiles.is_empty() {
        let _ = writeln!(
            o,
            "**Where a packet's time goes** at {} routes (`perf record -g` of the test-run thread at 20 kHz, only \
             samples inside `bpf_test_run`, i.e. the program and what it calls; the test run's own set-up per call \
             is left out):\n",
            l.profiled_size
        );
        profile_table(
            o,
            &l.profiles,
            &[("vrf_xdp", "vrf-xdp"), ("fib_helper", "bpf_fib_lookup XDP")],
            12,
        );
    }
}

fn control_section(
    o: &mut String,
    c: &control::Results,
    m: &Measured,
    sync_plot: Option<&String>,
    change_plot: Option<&String>,
) {
    let _ = writeln!(
        o,
        "## 3. Control plane\n\n### Syncing a full table at start\n\n\
         **Method.** The kernel's table {} in a router namespace is filled with the same kind of IPv4 table \
         (`ip -batch`). A child process (`vrf-bench sync-child`, in that namespace) then runs vrfd's start-up \
         path step by step and reports each step: **dump** (`Netlink::snapshot`), **mirror** (`Engine::load`), \
         **load** (the eBPF object and its verifier; not route-dependent, left out of the sums), **plan** \
         (`Engine::plan`: VRFs, links, routes, neighbours), **write** (`MapWriter::apply_plan`: slots, links, \
         neighbours, one map update per route, the VRF entries). A run is stopped at {:.0} s. vrfd \
         itself is timed from spawn to its `ready` log line where its start-up path can finish.\n",
        control::TABLE,
        c.limit_s
    );
    let names = ["dump", "mirror", "plan", "write", "load"];
    let _ = writeln!(
        o,
        "| routes | {} | route sync (all but load) |\n|---|{}---|",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for r in &c.sync {
        let cells: Vec<String> = names
            .iter()
            .map(|n| match r.phases.iter().find(|p| p.name == *n) {
                Some(p) if p.finished => format!("{:.2} s", p.seconds),
                Some(p) => format!("> {:.0} s (stopped)", p.seconds),
                None => "–".into(),
            })
            .collect();
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            si(r.routes as f64),
            cells.join(" | "),
            if r.finished {
                format!("{:.2} s", r.route_sync_s)
            } else {
                format!("> {:.0} s", r.route_sync_s)
            }
        );
    }
    o.push('\n');
    if let Some(e) = c.extrapolated_full_s {
        let _ = writeln!(
            o,
            "Estimated full-table sync: **≈ {e:.0} s** — {}.\n",
            c.extrapolation
        );
    }
    let _ = writeln!(o, "vrfd from spawn to `ready` (two dumps, the load and one full sync):\n\n| routes | ready after |\n|---|---|");
    for s in &c.vrfd_starts {
        let _ = writeln!(
            o,
            "| {} | {} |",
            si(s.routes as f64),
            s.ready_s.map_or(
                format!(
                    "not started: the start-up path above did not finish within {:.0} s",
                    s.limit_s
                ),
                |t| format!("{t:.2} s")
            )
        );
    }
    o.push('\n');
    if let Some(p) = sync_plot {
        let _ = writeln!(o, "![start-up phases against routes]({p})\n");
    }
    if let Some(r) = c.sync.iter().rev().find(|r| !r.profile.is_empty()) {
        let _ = writeln!(
            o,
            "Profile of the sync child at {} routes (`perf record -p`, self time):\n\n| share | symbol |\n|---|---|",
            si(r.routes as f64)
        );
        for h in r.profile.iter().take(8) {
            let _ = writeln!(o, "| {:.1}% | `{}` |", h.percent, h.symbol);
        }
        o.push('\n');
    }

    let _ = writeln!(
        o,
        "### Route changes under churn\n\n\
         **Method.** vrfd serves the VRF (table of N routes) with its maps pinned. A background `ip -force -batch -` \
         replaces routes at a steady rate (each pass over its set flips every route to the other of two gateways). \
         Meanwhile the bench replaces other routes of the table ({} of them, each with at most one change in flight) \
         over its own rtnetlink socket on a fixed schedule, 5–15 ms apart whether or not earlier changes have shown \
         up yet (an open loop: a stall delays every change that arrives during it). A change's latency runs from \
         just before its RTM_NEWROUTE request is sent to the moment the pinned FIB4 (polled every 50 µs \
         through `Maps::from_pins`) points at a nexthop group with the new gateway.\n",
        control::MEASURED_PREFIXES
    );
    let _ = writeln!(
        o,
        "| table | churn (applied) | changes measured | p50 | p90 | p99 | max | not seen in 2 s | vrfd CPU | vrfd CPU per change | resyncs |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for ch in &c.changes {
        let _ = writeln!(
            o,
            "| {} routes | {}/s ({:.0}/s) | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} | {:.0}% | {:.0} µs | {} |",
            si(ch.table_routes as f64),
            ch.churn_rate,
            ch.churn_applied_per_s,
            ch.measured,
            ch.p50_ms,
            ch.p90_ms,
            ch.p99_ms,
            ch.max_ms,
            ch.lost,
            ch.vrfd_cpu_share * 100.0,
            ch.vrfd_cpu_per_change_us,
            ch.vrfd_resyncs
        );
    }
    o.push('\n');
    if let Some(p) = change_plot {
        let _ = writeln!(o, "![route change latency]({p})\n");
    }

    let _ = writeln!(o, "### Memory per route\n");
    if let Some(l) = &m.lookup {
        let mem = &l.memory;
        if mem.routes_v4 > 0 {
            let n = mem.routes_v4 as f64;
            let _ = writeln!(
                o,
                "With {} IPv4 routes (section 2):\n\n| | total | per route |\n|---|---|---|\n\
                 | FIB4 `memlock` (fdinfo: what the kernel charges the map) | {} | {:.0} B |\n\
                 | kernel memory growth while FIB4 was filled (slab + per-CPU + vmalloc) | {} | {:.0} B |\n\
                 | kernel memory growth while the kernel's own table was filled, for comparison | {} | {:.0} B |\n",
                si(n),
                mib(mem.fib4_memlock_bytes as f64),
                mem.fib4_memlock_bytes as f64 / n,
                mib(mem.fib4_kernel_delta_bytes as f64),
                mem.fib4_kernel_delta_bytes as f64 / n,
                mib(mem.kernel_fib_delta_bytes as f64),
                mem.kernel_fib_delta_bytes as f64 / n
            );
            let _ = writeln!(
                o,
                "The LPM trie's `memlock` counts one node per route (node, key and value); the trie also allocates \
                 an intermediate node wherever two prefixes diverge, and the allocator rounds each node up, which the \
                 measured growth includes (other users of the machine add noise to it).\n"
            );
        }
    }
    let finished: Vec<&control::SyncRun> = c
        .sync
        .iter()
        .filter(|r| r.finished && r.rss_bytes.is_some())
        .collect();
    if let [.., a, b] = finished[..] {
        let per = (b.rss_bytes.unwrap_or(0) as f64 - a.rss_bytes.unwrap_or(0) as f64)
            / (b.routes as f64 - a.routes as f64);
        let _ = writeln!(
            o,
            "vrfd's own memory: its start-up path's resident set grew by {per:.0} B per route between {} and {} \
             routes (the kernel dump, the mirror and the map writer's shadow).\n",
            si(a.routes as f64),
            si(b.routes as f64)
        );
    }
}

/// Where vrf-xdp falls short of an aim, what the measurements say about why, and what would
/// close the gap.
fn gaps(o: &mut String, m: &Measured) {
    let _ = writeln!(o, "## Where we fall short, and what would close the gap\n");
    let missed: Vec<Aim> = aims_list(m)
        .into_iter()
        .filter(|a| a.met == Some(false))
        .collect();
    if missed.is_empty() {
        let _ = writeln!(o, "Every aim measured in this run was met.\n");
        return;
    }
    let _ = writeln!(
        o,
        "Missed in this run: {}.\n",
        missed
            .iter()
            .map(|a| a.what.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    );
    let share = |hot: &[Hot], cat: &str| -> f64 {
        categorise(hot)
            .into_iter()
            .filter(|(c, _)| *c == cat)
            .map(|(_, v)| v)
            .sum::<f64>()
            // An empty sum is −0.0, which would print as "-0%".
            + 0.0
    };
    const HASH: &str = "BPF hash-map lookups (LINKS, NEXTHOPS, NEIGH)";
    const TRIE: &str = "BPF LPM-trie lookup (FIB4/FIB6)";
    const PROG: &str = "the XDP program's own instructions";
    const VETH: &str = "veth, XDP redirect and NAPI";

    if let Some(l) = &m.lookup {
        if let Some(p) = l.profiles.get("vrf_xdp") {
            let (hash, trie, prog) = (share(p, HASH), share(p, TRIE), share(p, PROG));
            let at = lookup_size(l, &l.profiled_size);
            let ns = at.map_or(0.0, |s| s.vrf_xdp.mean);
            let helper = at.map_or(0.0, |s| s.fib_helper.mean);
            let growth = match (lookup_size(l, "1k"), lookup_size(l, "1M")) {
                (Some(k), Some(mm)) => format!(
                    " Growth from 1k to 1M routes is {:.2}× (the flat IPv4 FIB: two or three array reads whatever \
                     the table's size; the trie is read only for tables without a flat slot).",
                    mm.vrf_xdp.mean / k.vrf_xdp.mean
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                o,
                "**Per-packet cost.** At {} routes a packet costs vrf-xdp {ns:.0} ns against {helper:.0} ns through \
                 `bpf_fib_lookup` (the aim, {AIM_1M_VS_HELPER}×, is {:.0} ns).{growth} Of vrf-xdp's time (perf of the \
                 test-run thread, section 2), {hash:.0}% (≈ {:.0} ns) goes to hash-map lookups, {trie:.0}% (≈ {:.0} ns) \
                 to the LPM trie and {prog:.0}% (≈ {:.0} ns) to the program's own instructions.{} What would close \
                 the gap:\n\n\
                 - *One adjacency read instead of two hash lookups.* A forwarded packet makes four hash lookups: \
                 `LINKS` for the ingress link and again for the egress, `NEXTHOPS` for the route's group and `NEIGH` for \
                 the MAC — each a jhash, a bucket walk and a key compare (`htab_map_hash`, `lookup_nulls_elem_raw`, \
                 `memcmp`). An adjacency array (egress link state and neighbour MAC resolved by vrfd, read by index from \
                 the nexthop) removes the egress `LINKS` and the `NEIGH` lookups. It is written (branch \
                 `s5_15a-adj-wip`: layout, writer, adoption, fallback on a stale index) but does not fit BPF's 512-byte \
                 stack: `xdp_vrf` already uses 448 B and every variant needed 520–616 B, because LLVM stops overlapping \
                 the capture record's slots with the decision's. Moving the capture record into a BPF subprogram \
                 with its own frame (or shrinking the `Verdict` the capture copies) frees the room.\n\
                 - *Arrays for the rest.* `NEXTHOPS` as an array costs 3 KiB per group preallocated (64 paths and \
                 1024 buckets: 200 MB for 65,536 groups); it pays once single-path routes name their adjacency \
                 directly (a tag bit in the route value) and only multipath routes keep a group. The ingress `LINKS` \
                 lookup is keyed by ifindex, which is sparse; a per-CPU one-entry cache of the last ingress link, or \
                 ifindex → dense slot in an array sized to the highest ifindex, makes it an array read.\n\
                 - *Fewer instructions.* Section 4 prices the parts of the program that the kernel's whole decision \
                 needs (netfilter, IPsec, rule and `disable_ipv6` checks), the capture gate and the per-nexthop \
                 counter; what remains is parsing, the source check (a second FIB lookup, as the kernel's \
                 `fib_validate_source`), the TTL/checksum rewrite and the counters. A build for routers without \
                 netfilter or IPsec could drop the checks at load time (`.rodata`), as the bench's second copy does.{}\n",
                l.profiled_size,
                helper * AIM_1M_VS_HELPER,
                ns * hash / 100.0,
                ns * trie / 100.0,
                ns * prog / 100.0,
                capture_costs(m),
                memset_note(m),
            );
            if let Some(v6) = lookup_size(l, "v6_100k") {
                let r = v6.vrf_xdp.mean / v6.fib_helper.mean;
                if r > AIM_V6_VS_HELPER {
                    let _ = writeln!(
                        o,
                        "**IPv6.** At 100k IPv6 routes vrf-xdp costs {:.0} ns against the helper's {:.0} ns ({r:.2}×): \
                         IPv6 is still looked up in the BPF LPM trie (`FIB6`), a binary trie whose walk follows one \
                         node per branching bit over 128-bit keys, on top of the hash lookups above. A flat IPv6 FIB \
                         on the IPv4 design (a first level on the top 16 or 24 bits, chunks of 8 bits below, prefixes \
                         longer than /64 left to the trie) would make it two to five array reads; Internet IPv6 tables \
                         are mostly /32–/48, so most lookups would end in the first two levels.\n",
                        v6.vrf_xdp.mean, v6.fib_helper.mean
                    );
                }
            }
        }
    }
    if let Some(v) = &m.vrfs {
        if v.growth().is_some_and(|g| g > AIM_VRFS_GROWTH) {
            let (first, last) = (&v.counts[0], &v.counts[v.counts.len() - 1]);
            let flat_at = v.counts.iter().rev().find(|c| c.flat_tables == c.vrfs);
            let _ = writeln!(
                o,
                "**VRF count.** From 1 to {} VRFs of {} routes the cost grows {:.0} → {:.0} ns ({:.2}×). {} of the \
                 {} tables have a flat IPv4 FIB: vrfd's defaults give it {} first-level slots (256 KiB each) and a \
                 pool of {} chunks, of which these tables use {}; the others are served by the LPM trie, whose walk is \
                 what the extra time is{}. What would close it: size the slots to the VRFs served (256 slots are \
                 64 MiB of first levels) and the chunk pool to the tables (a chunk per /16 that holds a longer \
                 prefix), both as vrfd options with a log line and a counter when a table falls back to the trie.\n",
                last.vrfs,
                si(v.routes_per_vrf as f64),
                first.ns.mean,
                last.ns.mean,
                last.ns.mean / first.ns.mean,
                last.flat_tables,
                last.vrfs,
                vrf_common::FLAT4_SLOTS,
                v.flat_chunks,
                v.flat_chunks_used,
                flat_at.map_or(String::new(), |c| format!(
                    " (up to {} VRFs, all flat, the cost was {:.0} ns)",
                    c.vrfs, c.ns.mean
                ))
            );
        }
    }
    if let Some(f) = &m.forward {
        let share = ratio(
            get(&f.median_pps, Mode::VrfXdp, "64"),
            get(&f.median_pps, Mode::RedirectCeiling, "64"),
        );
        let (v, c) = (
            get(&f.median_per_core, Mode::VrfXdp, "64"),
            get(&f.median_per_core, Mode::RedirectCeiling, "64"),
        );
        if let (Some(s), Some(v), Some(c)) = (share, v, c) {
            if s < AIM_OF_CEILING {
                let _ = writeln!(
                    o,
                    "**The ceiling.** The raw redirect (no lookup) forwards {} per router core, vrf-xdp {} ({:.0}% of \
                     the received rate): vrf-xdp's decision costs about {:.0} ns per packet more on the router's core \
                     than rewriting and redirecting alone — the per-packet cost above, paid with a cold cache between \
                     packets of different destinations. Reaching 80% means a decision of about {:.0} ns here.\n",
                    pps(Some(c)),
                    pps(Some(v)),
                    s * 100.0,
                    (1e9 / v - 1e9 / c).max(0.0),
                    0.25 * 1e9 / c
                );
            }
        }
    }
    if let Some(f) = &m.forward {
        if let (Some(v), Some(k)) = (f.profiles.get("vrf_xdp"), f.profiles.get("kernel")) {
            let _ = writeln!(
                o,
                "**Forwarding.** In the router's thread vrf-xdp spends {:.0}% in the program, {:.0}% in hash \
                 lookups, {:.0}% in the trie and {:.0}% in veth, redirect and NAPI work that every XDP mode pays \
                 here (a veth receive and a devmap transmit into another veth, both cheaper on a real NIC); the \
                 kernel spends {:.0}% in its FIB and policy-rule lookups alone. The per-packet savings above apply \
                 directly: at {} per router core, every 100 ns saved per packet is worth about {:.0}% more \
                 packets per second.\n",
                share(v, PROG),
                share(v, HASH),
                share(v, TRIE),
                share(v, VETH),
                share(k, "kernel FIB and policy-rule lookups"),
                pps(get(&f.median_per_core, Mode::VrfXdp, "64")),
                get(&f.median_per_core, Mode::VrfXdp, "64")
                    .map_or(0.0, |p| 100.0 * (1.0 / (1.0 / p - 100e-9) / p - 1.0))
            );
        }
    }
    if let Some(c) = &m.control {
        // µs per route of plain map updates (section 2's largest IPv4 fill).
        let raw_insert_us = m.lookup.as_ref().and_then(|l| {
            let mut prev = 0;
            l.sizes
                .iter()
                .filter(|s| s.family == 4)
                .map(|s| {
                    let added = s.routes - prev;
                    prev = s.routes;
                    (added, s.fill_map_s)
                })
                .max_by_key(|(added, _)| *added)
                .map(|(added, secs)| secs * 1e6 / added.max(1) as f64)
        });
        sync_gap(o, c, raw_insert_us);
        change_gap(o, c);
    }
}

/// Section 4's prices of parts of the program, in one sentence (empty without that part).
fn capture_costs(m: &Measured) -> String {
    let Some(c) = &m.capture else {
        return String::new();
    };
    let diff = |a: &str, b: &str| Some(c.mode(a)?.mean - c.mode(b)?.mean);
    let mut parts = Vec::new();
    for (what, d) in [
        (
            "the netfilter/IPsec/rule/`disable_ipv6` checks",
            diff("idle", "no_kernel_checks"),
        ),
        ("the capture gate", diff("idle", "nocapture")),
        ("the per-nexthop counter", diff("idle", "uncounted")),
    ] {
        match d {
            // A difference below a nanosecond (or negative) is the run's noise, not a price.
            Some(d) if d < 1.0 => parts.push(format!("{what} below the noise (< 1 ns)")),
            Some(d) => parts.push(format!("{what} ≈ {d:.0} ns")),
            None => {}
        }
    }
    if parts.is_empty() {
        return String::new();
    }
    format!(
        " Section 4 prices some of those instructions on a 1k-route table: {} ({} instructions after the verifier).",
        parts.join(", "),
        c.insns_capture
    )
}

/// A bullet when `xdp_vrf` calls a BPF `memset` (seen in the forwarding profile).
fn memset_note(m: &Measured) -> String {
    let Some(p) = m.forward.as_ref().and_then(|f| f.profiles.get("vrf_xdp")) else {
        return String::new();
    };
    let share: f64 = p
        .iter()
        .filter(|h| h.symbol.starts_with("bpf_prog_") && h.symbol.ends_with("_memset"))
        .map(|h| h.percent)
        .sum();
    if share < 0.5 {
        return String::new();
    }
    format!(
        "\n- *No `memset` calls.* `xdp_vrf` calls a BPF `memset` ({share:.1}% of the router thread in section 1): \
         LLVM turns the zeroing of a large value into a call; filling the fields in place (as \
         `xdp_fib_helper` does with its lookup parameters) keeps it inline."
    )
}

/// Why the full-table sync misses its aim, from the phases measured.
fn sync_gap(o: &mut String, c: &control::Results, raw_insert_us: Option<f64>) {
    let (secs, _, _) = sync_full(c);
    if secs.is_none_or(|s| s < AIM_SYNC_S) {
        return;
    }
    let Some(full) = c.sync.iter().max_by_key(|r| r.routes) else {
        return;
    };
    let n = full.routes as f64;
    let phase = |name: &str| full.phases.iter().find(|p| p.name == name);
    let t = |name: &str| {
        phase(name).map_or("–".to_string(), |p| {
            if p.finished {
                format!("{:.1} s ({:.1} µs/route)", p.seconds, p.seconds * 1e6 / n)
            } else {
                format!("> {:.0} s (stopped)", p.seconds)
            }
        })
    };
    let desired_share: f64 = full
        .profile
        .iter()
        .filter(|h| h.symbol.contains("Planner::route") || h.symbol.contains("local_cover"))
        .map(|h| h.percent)
        .sum();
    let quadratic = c.extrapolation.contains("plan") && c.extrapolation.contains("quadratic");
    let _ = writeln!(
        o,
        "**Sync at start.** At {} routes: dump {}, mirror {}, plan {}, write {}.\n",
        si(n),
        t("dump"),
        t("mirror"),
        t("plan"),
        t("write")
    );
    if desired_share > 30.0 || quadratic {
        let _ = writeln!(
            o,
            "`Planner::plan` grows quadratically: for every route it calls `Planner::route`, which \
             calls `local_cover`, which scans every mirrored route for a covering non-host prefix of the local \
             table — O(n) per route, O(n²) per table ({desired_share:.0}% of the profiled run). Keeping the \
             local table's non-host prefixes (a handful) in a list of their own makes it linear, and the \
             full-table sync becomes the sum of the linear phases.\n"
        );
    }
    let vrfd = c
        .vrfd_starts
        .iter()
        .find(|s| s.routes == full.routes)
        .and_then(|s| s.ready_s);
    let secs = |name: &str| {
        phase(name)
            .filter(|p| p.finished)
            .map_or(0.0, |p| p.seconds)
    };
    let mut text = String::new();
    if let Some(v) = vrfd {
        let _ = write!(
            text,
            "vrfd itself took {v:.1} s from spawn to ready: besides the phases above it dumps and mirrors a \
             second time (once to check the configuration, again after adding its `ip rule`s); reusing the first \
             dump when no rule was added saves about {:.1} s. ",
            secs("dump") + secs("mirror")
        );
    }
    let write_us = secs("write") * 1e6 / n;
    let _ = write!(
        text,
        "The largest phase is the write, {write_us:.1} µs per route{}: one `bpf()` update per route into an \
         LPM trie that takes its lock for every insert, plus the writer's shadow and nexthop-group bookkeeping. \
         The flat IPv4 FIB itself is written through `mmap` (plain stores, no syscall per route) once per \
         full plan; the trie is still written route by route because it is kept complete for every table \
         (the fallback for tables without a flat slot, and what vrfctl, verify and adoption read). Under two \
         seconds for 1M routes means under 2 µs per route from dump to map: it needs the trie writes dropped for \
         tables the flat FIB holds (readers taught to read the flat table; those tables' trie filled only when \
         they lose their slot), and a dump parsed straight into the plan instead of through `RouteMessage` → \
         `RouteInfo` → the mirror's `HashMap` of `Vec`s → `RoutePlan` (dump, mirror and plan together: {:.1} s \
         here) — the kernel's own dump, `ip route show` of the same table, took {} here, the floor for any sync.",
        raw_insert_us.map_or(String::new(), |us| format!(
            " (a bare `bpf()` update into the LPM trie took {us:.1} µs per route in section 2's fill of a table \
             of that size; `trie_update_elem` leads the profile above)"
        )),
        secs("dump") + secs("mirror") + secs("plan"),
        c.kernel_dump_s
            .get(&full.routes)
            .map_or("–".into(), |d| format!("{d:.2} s"))
    );
    let _ = writeln!(o, "{text}\n");
}

/// How route-change latency depends on the table, and why it misses its aim if it does.
fn change_gap(o: &mut String, c: &control::Results) {
    let Some(ch) = route_change_headline(c) else {
        return;
    };
    let growth = match &c.changes[..] {
        [.., a, b] if b.table_routes > a.table_routes && a.vrfd_cpu_per_change_us > 0.0 => {
            Some((a, b, b.vrfd_cpu_per_change_us / a.vrfd_cpu_per_change_us))
        }
        _ => None,
    };
    let grows = growth.is_some_and(|(_, _, g)| g > 2.0);
    let missed = ch.p99_ms >= AIM_CHANGE_P99_MS || ch.lost > 0;
    if !missed && !grows {
        return;
    }
    let mut text = format!(
        "**Route changes.** At {} routes and {}/s churn: p50 {:.2} ms, p99 {:.2} ms; vrfd used {:.0}% of a \
         CPU, {:.0} µs per change.",
        si(ch.table_routes as f64),
        ch.churn_rate,
        ch.p50_ms,
        ch.p99_ms,
        ch.vrfd_cpu_share * 100.0,
        ch.vrfd_cpu_per_change_us
    );
    let links_s = c
        .sync
        .iter()
        .filter(|r| r.routes <= ch.table_routes)
        .max_by_key(|r| r.routes)
        // The plan walks every route for its links, as the periodic link refresh does.
        .and_then(|r| r.phases.iter().find(|p| p.name == "plan" && p.finished))
        .map(|p| p.seconds);
    if let (true, Some((a, b, g))) = (grows, growth) {
        let _ = write!(
            text,
            " vrfd's CPU per change grows with the table ({:.0} µs at {}, {:.0} µs at {}: {g:.1}×): it is CPU \
             per change *including* whatever vrfd does meanwhile{}.",
            a.vrfd_cpu_per_change_us,
            si(a.table_routes as f64),
            b.vrfd_cpu_per_change_us,
            si(b.table_routes as f64),
            if links_s.is_some_and(|l| l > 0.05) {
                ", and what grows is work done per table rather than per event (the periodic link refresh below)"
            } else {
                ""
            }
        );
    }
    // Stalls: changes that waited far longer than the work takes.
    let mut stalls_explained = false;
    let slow = ch.samples_ms.iter().filter(|v| **v > 50.0).count();
    if slow > 0 {
        let _ = write!(
            text,
            " {slow} of {} changes ({:.1}%) waited more than 50 ms, up to {:.0} ms.",
            ch.samples_ms.len(),
            100.0 * slow as f64 / ch.samples_ms.len().max(1) as f64,
            ch.max_ms
        );
        if let Some(l) = links_s.filter(|l| *l > 0.05) {
            stalls_explained = true;
            let _ = write!(
                text,
                " Those are vrfd's own stalls: every 2 s it re-reads the links' sysctls (`refresh_links`), and \
                 `Engine::desired_links` walks every mirrored route to collect the egress-only links — the \
                 start-up path's \"links\" phase, which includes it, took {l:.2} s at this size — while \
                 events queue behind it. Keeping \
                 a count of routes per egress ifindex as routes come and go (or refreshing only the links' \
                 flags) makes that tick independent of the table; it alone costs about {:.0}% of a CPU here.",
                100.0 * l / 2.0
            );
        }
    }
    if missed && !stalls_explained {
        let _ = write!(
            text,
            " The p99 is time vrfd waits, not time it works: on two shared CPUs it competes with the churn's \
             `ip`, the bench's poller and other users' jobs, and an event that arrives while vrfd is applying a \
             batch waits for that batch (up to 4096 events before the maps are written)."
        );
    }
    let _ = writeln!(o, "{text}\n");
}

/// `--only restart`: replace the restart section of the existing report (or append it), and
/// write what was measured to `out_dir/restart.json`.
pub fn splice_restart(
    opts: &Options,
    r: &super::restart::Results,
    machine: &serde_json::Value,
    progress: &Progress,
) -> Result<()> {
    std::fs::create_dir_all(&opts.out_dir)?;
    let json = opts.out_dir.join("restart.json");
    let v = serde_json::json!({ "machine": machine, "quick": opts.quick, "restart": r });
    std::fs::write(&json, serde_json::to_string_pretty(&v)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let old = std::fs::read_to_string(&opts.report).unwrap_or_default();
    let mut section = String::new();
    super::restart::section(&mut section, r);
    let _ = std::fmt::Write::write_fmt(
        &mut section,
        format_args!(
            "(Measured alone with `cargo xtask bench --only restart`{} on {}, load {} at the start.)\n\n",
            if opts.quick { " --quick" } else { "" },
            machine["cpu"].as_str().unwrap_or("?"),
            machine["loadavg_at_start"].as_str().unwrap_or("?")
        ),
    );
    let headings = [
        "## 5. Restart, upgrade and the dead-man switch",
        "## Restart under load and the dead-man switch",
    ];
    let md = match headings.iter().find_map(|h| old.find(h)) {
        Some(start) => {
            let rest = &old[start + 3..];
            let end = rest.find("\n## ").map_or(old.len(), |i| start + 3 + i + 1);
            format!("{}{}{}", &old[..start], section, &old[end..])
        }
        None => format!("{old}\n{section}"),
    };
    std::fs::write(&opts.report, md)
        .with_context(|| format!("writing {}", opts.report.display()))?;
    progress.step(&format!(
        "wrote {} and {}",
        opts.report.display(),
        json.display()
    ));
    Ok(())
}
