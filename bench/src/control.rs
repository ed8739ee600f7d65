//! (3) The control plane: syncing a full table from the kernel into the maps at start, route
//! changes under sustained churn, and map memory per route.
//!
//! - Sync, by phase: a child process (`vrf-bench sync-child`, in the router namespace, killed at
//!   a time limit) runs vrfd's start-up path step by step — rtnetlink dump, mirror
//!   (`Engine::load`), program load, the plan (`Engine::plan`), the map writes
//!   (`MapWriter::apply_plan`) — and reports each step's time, at growing sizes.
//! - Sync, end to end: vrfd itself, from spawn to its `ready` log line, at 1M routes.
//! - Route changes: vrfd serving the table while a background `ip -batch` replaces routes at a
//!   steady rate; for each measured change, the time from `ip route replace` returning to the
//!   pinned FIB4 showing the new gateway (polled every 50 µs).
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::net::Ipv4Addr;

use anyhow::{bail, ensure, Context, Result};
use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
    AddressFamily, RouteNetlinkMessage,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use vrf_user::config::DeclaredVrf;
use vrf_user::dataplane::DataPlane;
use vrf_user::engine::Engine;
use vrf_user::maps::{fib4_key, Maps};
use vrf_user::mirror::read_sysctls;
use vrf_user::netlink::blocking::{Reply, Requester};
use vrf_user::netlink::Netlink;
use vrf_user::writer::MapWriter;

use super::{profile, routes, system, Progress};
use tests::daemon::{log_has_message, vrf_toml, Vrfd};
use tests::netns::NetNs;
use tests::topology::{MemberSpec, TopologySpec, VrfSpec};

pub const CHILD_COMMAND: &str = "sync-child";
/// Routes whose changes are measured (each has at most one change in flight).
pub const MEASURED_PREFIXES: usize = 256;
pub const TABLE: u32 = 300;
const VRF: &str = "bctl";
const GATEWAYS: [&str; 2] = ["10.0.2.3", "10.0.2.4"];
const SEED: u64 = 0x5eed_0003;

pub struct Config {
    /// Route counts the phases are timed at (ascending; the last is the full table).
    pub sync_sizes: Vec<usize>,
    /// Longest a phase run (or vrfd's start) may take before it is stopped.
    pub sync_timeout: Duration,
    /// Measured route changes.
    pub changes: usize,
    /// Background churn, changes per second, over `churn_prefixes` routes.
    pub churn_rate: u32,
    pub churn_prefixes: usize,
    /// Table sizes route changes are measured at (the full table too when vrfd serves it in
    /// time).
    pub change_sizes: Vec<usize>,
    pub profile: bool,
}

impl Config {
    pub fn new(quick: bool, profile: bool) -> Self {
        Config {
            sync_sizes: if quick {
                vec![10_000, 30_000, 1_000_000]
            } else {
                vec![10_000, 30_000, 100_000, 1_000_000]
            },
            sync_timeout: Duration::from_secs(if quick { 40 } else { 180 }),
            changes: if quick { 200 } else { 1000 },
            churn_rate: 1000,
            churn_prefixes: 5000,
            change_sizes: if quick {
                vec![10_000]
            } else {
                vec![10_000, 100_000]
            },
            profile,
        }
    }
}

/// One step of vrfd's start-up path.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    pub finished: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncRun {
    pub routes: usize,
    pub phases: Vec<Phase>,
    /// Whole run finished within the time limit.
    pub finished: bool,
    /// Sum of the route-dependent phases (everything but the program load).
    pub route_sync_s: f64,
    pub fib4_memlock_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub profile: Vec<profile::Hot>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VrfdStart {
    pub routes: usize,
    /// Spawn to `ready`; None when it was not ready within the limit.
    pub ready_s: Option<f64>,
    pub limit_s: f64,
    pub fib4_memlock_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Changes {
    pub table_routes: usize,
    pub churn_rate: u32,
    pub churn_applied_per_s: f64,
    pub measured: usize,
    /// Changes not seen in the map within 2 s (or not sent: every measured route had one in
    /// flight).
    pub lost: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples_ms: Vec<f64>,
    pub vrfd_resyncs: u64,
    /// vrfd's CPU seconds per second while the churn ran, and per route change.
    pub vrfd_cpu_share: f64,
    pub vrfd_cpu_per_change_us: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub sync: Vec<SyncRun>,
    /// vrfd from spawn to `ready`, by table size.
    pub vrfd_starts: Vec<VrfdStart>,
    /// Full-table sync time estimated from the phases when the measurement did not finish
    /// (phases measured at the full size as they are; the others scaled from smaller sizes).
    pub extrapolated_full_s: Option<f64>,
    pub extrapolation: String,
    /// Route changes under churn, by table size.
    pub changes: Vec<Changes>,
    /// `ip -batch` time to add routes to the kernel's table, by range.
    pub kernel_fill_s: BTreeMap<String, f64>,
    /// The floor for any sync: `ip route show table T` of the whole table (the kernel's own
    /// dump, formatted, into /dev/null), by table size.
    #[serde(default)]
    pub kernel_dump_s: BTreeMap<usize, f64>,
    /// The time limit of a sync run and of vrfd's start.
    pub limit_s: f64,
}

pub fn run(cfg: &Config, progress: &Progress) -> Result<Results> {
    progress.step("control plane: building the namespace topology");
    let spec = TopologySpec {
        prefix: "bench".into(),
        vrfs: vec![VrfSpec {
            name: VRF.into(),
            table: TABLE,
            members: vec![
                MemberSpec::dual("10.0.1.0/24", "fd00:1::/64"),
                MemberSpec::dual("10.0.2.0/24", "fd00:2::/64"),
            ],
        }],
    };
    let topo = spec
        .build()
        .context("building the control-plane topology")?;
    let router = topo.router();
    let m1 = topo.member(VRF, 1);
    let max = *cfg.sync_sizes.last().context("no sync sizes")?;
    let table: Vec<Ipv4Net> = routes::v4_table(max, SEED);

    let mut results = Results {
        sync: Vec::new(),
        vrfd_starts: Vec::new(),
        extrapolated_full_s: None,
        extrapolation: String::new(),
        changes: Vec::new(),
        kernel_fill_s: BTreeMap::new(),
        kernel_dump_s: BTreeMap::new(),
        limit_s: cfg.sync_timeout.as_secs_f64(),
    };
    let mut in_kernel = 0;
    let members = [topo.member(VRF, 0).ifname.clone(), m1.ifname.clone()];
    for &n in &cfg.sync_sizes {
        progress.step(&format!("sync by phase at {n} routes"));
        fill(router, &table, &m1.ifname, &mut in_kernel, n, &mut results)?;
        let dump = kernel_dump(router)?;
        progress.detail(&format!("{n} routes: `ip route show` took {dump:.2} s"));
        results.kernel_dump_s.insert(n, dump);
        let largest = n == max;
        let run = sync_phases(router, &members, n, cfg, largest && cfg.profile, progress)?;
        progress.detail(&format!(
            "{n} routes: {}",
            run.phases
                .iter()
                .map(|p| format!(
                    "{} {:.2} s{}",
                    p.name,
                    p.seconds,
                    if p.finished { "" } else { " (stopped)" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        results.sync.push(run);
    }
    let (estimate, how) = extrapolate(&results.sync, max);
    results.extrapolated_full_s = estimate;
    results.extrapolation = how;
    if let Some(e) = estimate {
        progress.detail(&format!(
            "full-table sync estimated at {e:.0} s: {}",
            results.extrapolation
        ));
    }

    let config = vrf_toml(VRF, TABLE, &[&members[0], &members[1]]);
    // vrfd end to end at the full table (and route changes there), unless its start-up path
    // already failed to finish in time above; then route changes at the smaller sizes.
    let mut sizes: Vec<usize> = cfg.change_sizes.clone();
    if results.sync.last().is_some_and(|s| s.finished) {
        sizes.push(max);
    } else {
        results.vrfd_starts.push(VrfdStart {
            routes: max,
            ready_s: None,
            limit_s: cfg.sync_timeout.as_secs_f64(),
            fib4_memlock_bytes: None,
            rss_bytes: None,
        });
        progress.detail(&format!(
            "vrfd at {max} routes skipped: its start-up path did not finish within {:?} above",
            cfg.sync_timeout
        ));
    }
    sizes.sort_unstable();
    sizes.dedup();
    for n in sizes {
        progress.step(&format!(
            "vrfd at {n} routes: start, then route changes under churn"
        ));
        if n < in_kernel {
            reset_table(&topo)?;
            in_kernel = 0;
        }
        fill(router, &table, &m1.ifname, &mut in_kernel, n, &mut results)?;
        let (start, vrfd) = start_vrfd(router, &config, n, cfg.sync_timeout)?;
        progress.detail(&format!(
            "ready after {}",
            start
                .ready_s
                .map_or("(not within the limit)".to_string(), |s| format!(
                    "{s:.2} s"
                ))
        ));
        results.vrfd_starts.push(start);
        let Some(vrfd) = vrfd else { continue };
        let c = route_changes(
            router,
            &vrfd,
            &table,
            n,
            (&m1.ifname, m1.ifindex),
            cfg,
            progress,
        )?;
        progress.detail(&format!(
            "route change → map: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} lost); vrfd used {:.0}% of a CPU, {:.0} µs per change",
            c.p50_ms, c.p99_ms, c.max_ms, c.lost, c.vrfd_cpu_share * 100.0, c.vrfd_cpu_per_change_us
        ));
        results.changes.push(c);
        drop(vrfd);
    }
    Ok(results)
}

/// Seconds `ip route show table TABLE` takes in `ns`, its output thrown away (best of two:
/// the first also faults in iproute2 and the route cache lines).
fn kernel_dump(ns: &tests::netns::NetNs) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        let t = Instant::now();
        let status = Command::new("ip")
            .args([
                "-n",
                ns.name(),
                "route",
                "show",
                "table",
                &TABLE.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .context("ip route show")?;
        ensure!(status.success(), "ip route show table {TABLE}: {status}");
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Back to the table the topology made: the members' connected routes and the VRF's
/// `unreachable default`.
fn reset_table(topo: &tests::topology::Topology) -> Result<()> {
    let router = topo.router();
    let t = TABLE.to_string();
    router.ip(&["route", "flush", "table", &t])?;
    for m in &topo.vrf(VRF).members {
        let s4 = m.subnet4.context("v4 subnet")?;
        router.ip(&[
            "route",
            "add",
            &s4.to_string(),
            "dev",
            &m.ifname,
            "table",
            &t,
            "proto",
            "kernel",
            "scope",
            "link",
            "src",
            &m.router4().to_string(),
        ])?;
    }
    router.ip(&[
        "route",
        "add",
        "unreachable",
        "default",
        "metric",
        "4278198272",
        "table",
        &t,
    ])?;
    Ok(())
}

/// Add `table[*in_kernel..n]` to the kernel's table (via alternating gateways).
fn fill(
    router: &NetNs,
    table: &[Ipv4Net],
    dev: &str,
    in_kernel: &mut usize,
    n: usize,
    results: &mut Results,
) -> Result<()> {
    let from = *in_kernel;
    if n <= from {
        return Ok(());
    }
    let t = Instant::now();
    let lines = table[from..n].iter().enumerate().map(|(i, p)| {
        format!(
            "route add {p} via {} dev {dev} table {TABLE}",
            GATEWAYS[(from + i) % 2]
        )
    });
    routes::ip_batch(router, lines)?;
    results
        .kernel_fill_s
        .insert(format!("{from}..{n}"), t.elapsed().as_secs_f64());
    *in_kernel = n;
    Ok(())
}

/// The full-table sync time when its run was stopped: phases that finished at the full size
/// count as measured; each other phase is scaled from the two largest finished sizes by its
/// growth there, taken as linear or quadratic (whichever the fitted exponent is nearer), and
/// never below what the stopped run already spent in it.
fn extrapolate(runs: &[SyncRun], target: usize) -> (Option<f64>, String) {
    let Some(full) = runs.iter().find(|r| r.routes == target) else {
        return (None, "the full size was not run".into());
    };
    if full.finished {
        return (None, "measured".into());
    }
    let finished: Vec<&SyncRun> = runs.iter().filter(|r| r.finished).collect();
    let [.., a, b] = finished[..] else {
        return (None, "fewer than two finished sizes: no estimate".into());
    };
    let mut total = 0.0;
    let mut parts = Vec::new();
    for pb in b.phases.iter().filter(|p| p.name != "load") {
        let at_full = full.phases.iter().find(|p| p.name == pb.name);
        if let Some(p) = at_full.filter(|p| p.finished) {
            total += p.seconds;
            parts.push(format!("{} {:.1} s (measured)", p.name, p.seconds));
            continue;
        }
        let Some(pa) = a.phases.iter().find(|p| p.name == pb.name) else {
            continue;
        };
        let k = if pa.seconds > 0.0 && pb.seconds > 0.0 {
            (pb.seconds / pa.seconds).ln() / (b.routes as f64 / a.routes as f64).ln()
        } else {
            1.0
        };
        // Phases too short to time well at the smaller sizes are taken as linear.
        let model = if k > 1.5 && pb.seconds >= 0.05 {
            2.0
        } else {
            1.0
        };
        let mut est = pb.seconds * (target as f64 / b.routes as f64).powf(model);
        if let Some(p) = at_full {
            est = est.max(p.seconds);
        }
        total += est;
        parts.push(format!(
            "{} ≈ {est:.0} s (n^{k:.2} from {}→{} routes, taken as {})",
            pb.name,
            a.routes,
            b.routes,
            if model == 2.0 { "quadratic" } else { "linear" }
        ));
    }
    (Some(total), parts.join("; "))
}

fn sync_phases(
    router: &NetNs,
    members: &[String; 2],
    routes: usize,
    cfg: &Config,
    profile_it: bool,
    progress: &Progress,
) -> Result<SyncRun> {
    // Through /proc: a rebuild of the workspace may replace the binary while the bench runs.
    let exe = format!("/proc/{}/exe", std::process::id());
    let mut cmd = router.command(exe);
    cmd.args([
        CHILD_COMMAND,
        "--table",
        &TABLE.to_string(),
        "--vrf",
        VRF,
        "--members",
        &members.join(","),
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard(cmd.spawn().context("starting the sync child")?);
    let stdout = child.0.stdout.take().context("child stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let recording = if profile_it && profile::available() {
        Some(profile::start(
            &std::env::temp_dir(),
            &format!("vrf-bench-sync-{}", std::process::id()),
            &["-p", &child.0.id().to_string()],
            cfg.sync_timeout.as_secs_f64().min(60.0),
            499,
        )?)
    } else {
        None
    };
    let start = Instant::now();
    let deadline = start + cfg.sync_timeout;
    let mut phases = Vec::new();
    let mut last_done = start;
    let mut memlock = None;
    let mut rss = None;
    let mut finished = false;
    let mut current = "dump".to_string();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line)
                    .with_context(|| format!("sync child printed {line:?}"))?;
                let name = v["phase"].as_str().unwrap_or("?").to_string();
                match name.as_str() {
                    "memory" => {
                        memlock = v["fib4_memlock"].as_u64();
                        rss = v["rss"].as_u64();
                    }
                    "done" => {
                        finished = true;
                        break;
                    }
                    "next" => current = v["next"].as_str().unwrap_or("?").to_string(),
                    _ => {
                        phases.push(Phase {
                            name,
                            seconds: v["seconds"].as_f64().unwrap_or(f64::NAN),
                            finished: true,
                        });
                        last_done = Instant::now();
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                phases.push(Phase {
                    name: current.clone(),
                    seconds: last_done.elapsed().as_secs_f64(),
                    finished: false,
                });
                progress.detail(&format!(
                    "stopped the sync child after {:.0} s, in phase {current}",
                    start.elapsed().as_secs_f64()
                ));
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let mut err = String::new();
                if let Some(mut e) = child.0.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                bail!("the sync child exited early: {}", err.trim());
            }
        }
    }
    drop(child);
    let profile = match recording {
        Some(r) => r.finish(15).unwrap_or_default(),
        None => Vec::new(),
    };
    let route_sync_s = phases
        .iter()
        .filter(|p| p.name != "load")
        .map(|p| p.seconds)
        .sum();
    Ok(SyncRun {
        routes,
        phases,
        finished,
        route_sync_s,
        fib4_memlock_bytes: memlock,
        rss_bytes: rss,
        profile,
    })
}

/// Kills and reaps the child when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vrf-bench sync-child --table T --vrf NAME --members A,B`: vrfd's start-up path, one JSON
/// line per finished phase on stdout (run in the router namespace).
pub fn child(args: &[String]) -> Result<()> {
    let mut table = None;
    let mut vrf = None;
    let mut members = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--table" => table = Some(v.parse::<u32>()?),
            "--vrf" => vrf = Some(v.clone()),
            "--members" => members = v.split(',').map(str::to_string).collect(),
            other => bail!("unknown argument {other:?}"),
        }
    }
    let declared = DeclaredVrf {
        name: vrf.context("--vrf")?,
        table: table.context("--table")?,
        interfaces: members,
        rule_priority: 1000,
        netfilter: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let emit = |phase: &str, t: Instant, extra: Value| {
            let mut v = json!({"phase": phase, "seconds": t.elapsed().as_secs_f64()});
            if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            println!("{v}");
            let _ = std::io::stdout().flush();
        };
        let next = |name: &str| {
            println!("{}", json!({"phase": "next", "next": name}));
            let _ = std::io::stdout().flush();
        };
        let t = Instant::now();
        let (netlink, _events) = Netlink::connect().await?;
        let snap = netlink.snapshot().await?;
        emit("dump", t, json!({"routes": snap.routes.len()}));
        next("mirror");
        let t = Instant::now();
        let mut engine = Engine::new(vec![declared], Box::new(read_sysctls));
        engine.load(snap);
        emit("mirror", t, json!({}));
        next("load");
        let t = Instant::now();
        let dp = DataPlane::load()?;
        emit("load", t, json!({}));
        next("plan");
        let t = Instant::now();
        let plan = engine.plan();
        emit("plan", t, json!({"entries": plan.routes.len()}));
        next("write");
        let t = Instant::now();
        let mut writer = MapWriter::new(dp.maps.try_clone()?);
        writer.apply_plan(&plan)?;
        emit("write", t, json!({"routes": writer.route_count()}));
        let pid = std::process::id();
        let memlock = system::map_memlock(pid, 11, 12).ok();
        println!(
            "{}",
            json!({"phase": "memory", "fib4_memlock": memlock, "rss": rss(pid)})
        );
        println!("{}", json!({"phase": "done"}));
        let _ = std::io::stdout().flush();
        drop(dp);
        anyhow::Ok(())
    })
}

fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Start vrfd and wait for `ready` (at most `limit`). Returns the vrfd when it got there.
fn start_vrfd<'a>(
    router: &'a NetNs,
    config: &str,
    routes: usize,
    limit: Duration,
) -> Result<(VrfdStart, Option<Vrfd<'a>>)> {
    let start = Instant::now();
    let mut vrfd = Vrfd::spawn(router, config, "json", &[])?;
    let mut ready_s = None;
    while start.elapsed() < limit {
        if log_has_message(&vrfd.log(), "ready") {
            ready_s = Some(start.elapsed().as_secs_f64());
            break;
        }
        vrfd.check_running()?;
        std::thread::sleep(Duration::from_millis(5));
    }
    let (memlock, rss_bytes) = match vrfd.pid() {
        Some(pid) if ready_s.is_some() => (system::map_memlock(pid, 11, 12).ok(), rss(pid)),
        _ => (None, None),
    };
    let r = VrfdStart {
        routes,
        ready_s,
        limit_s: limit.as_secs_f64(),
        fib4_memlock_bytes: memlock,
        rss_bytes,
    };
    Ok((r, ready_s.map(|_| vrfd)))
}

/// `ip route replace PREFIX via GW dev OIF table T` over a NETLINK_ROUTE socket of our own, so
/// that the clock starts when the request leaves (spawning `ip` would hide vrfd's work behind
/// ip's own exit).
struct RouteWriter {
    netlink: Requester,
}

impl RouteWriter {
    /// A socket in the calling thread's network namespace.
    fn new() -> Result<RouteWriter> {
        Ok(RouteWriter {
            netlink: Requester::route()?,
        })
    }

    /// Sends the replace and returns when the kernel has acknowledged it; the `Instant` is
    /// taken just before the request is sent.
    fn replace(&mut self, prefix: Ipv4Net, gw: Ipv4Addr, oif: u32, table: u32) -> Result<Instant> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = prefix.prefix_len();
        msg.header.table = u8::try_from(table).unwrap_or(0);
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                prefix.network(),
            )));
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        msg.attributes.push(RouteAttribute::Oif(oif));
        msg.attributes.push(RouteAttribute::Table(table));
        let t0 = Instant::now();
        self.netlink.send(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )?;
        match self.netlink.answer::<RouteNetlinkMessage>()? {
            Reply::Ack => Ok(t0),
            Reply::Refused(errno) => Err(std::io::Error::from_raw_os_error(errno))
                .with_context(|| format!("ip route replace {prefix} via {gw}")),
            Reply::Message(other) => bail!("unexpected answer to RTM_NEWROUTE: {other:?}"),
        }
    }
}

/// Background `ip -batch` replacing routes at `rate` per second until stopped.
struct Churn {
    stop: std::sync::Arc<AtomicBool>,
    applied: std::sync::Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Churn {
    fn start(ns: &NetNs, prefixes: Vec<Ipv4Net>, dev: &str, rate: u32) -> Result<Churn> {
        let mut child = Command::new("ip")
            .args(["-n", ns.name(), "-force", "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the churn ip -batch")?;
        let mut stdin = child.stdin.take().context("churn stdin")?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let applied = std::sync::Arc::new(AtomicU64::new(0));
        let (s, a, dev) = (stop.clone(), applied.clone(), dev.to_string());
        let thread = std::thread::spawn(move || -> Result<()> {
            let start = Instant::now();
            let mut n: u64 = 0;
            while !s.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
                let mut buf = String::new();
                while n < due {
                    let p = prefixes[(n as usize) % prefixes.len()];
                    // Each pass over the set flips every prefix to the other gateway.
                    let gw = GATEWAYS[((n as usize / prefixes.len()) + 1) % 2];
                    buf.push_str(&format!(
                        "route replace {p} via {gw} dev {dev} table {TABLE}\n"
                    ));
                    n += 1;
                }
                if !buf.is_empty() {
                    stdin.write_all(buf.as_bytes())?;
                    stdin.flush()?;
                    a.store(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            drop(stdin);
            child.wait()?;
            Ok(())
        });
        Ok(Churn {
            stop,
            applied,
            thread: Some(thread),
        })
    }

    fn stop(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| anyhow::anyhow!("churn thread panicked"))??;
        }
        Ok(self.applied.load(Ordering::Relaxed))
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn route_changes(
    router: &NetNs,
    vrfd: &Vrfd<'_>,
    table: &[Ipv4Net],
    routes: usize,
    member: (&str, u32),
    cfg: &Config,
    progress: &Progress,
) -> Result<Changes> {
    let (dev, oif) = member;
    let maps = vrfd.maps()?;
    let churn_set: Vec<Ipv4Net> = table[..cfg.churn_prefixes.min(routes / 2)].to_vec();
    // Measured prefixes: outside the churn set; each starts on GATEWAYS[index % 2].
    let first = churn_set.len();
    let step = ((routes - first) / MEASURED_PREFIXES).max(1);
    let measured: Vec<(usize, Ipv4Net)> = (first..routes)
        .step_by(step)
        .take(MEASURED_PREFIXES)
        .map(|i| (i, table[i]))
        .collect();
    let mut gw_now: Vec<usize> = measured.iter().map(|(i, _)| i % 2).collect();
    let mut busy = vec![false; measured.len()];
    progress.detail(&format!(
        "churn: {} route replacements/s over {} routes; {} measured changes, 5–15 ms apart",
        cfg.churn_rate,
        churn_set.len(),
        cfg.changes
    ));
    let mut writer = router.run_in(RouteWriter::new)?;
    let churn = Churn::start(router, churn_set, dev, cfg.churn_rate)?;
    std::thread::sleep(Duration::from_millis(500));
    let vrfd_pid = vrfd.pid().context("vrfd is not running")?.to_string();
    let vrfd_cpu0 = process_cpu_ns(&vrfd_pid)?;
    let churn_t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(SEED + 1);
    let mut samples = Vec::new();
    let mut lost = 0;
    // Open loop: changes go out on their own schedule whether or not earlier ones have shown up
    // yet, so a stall delays every change that arrives during it, as it would in production.
    let mut outstanding: Vec<(usize, Ipv4Addr, Instant)> = Vec::new();
    let mut next_send = Instant::now();
    let mut sent = 0;
    let mut cursor = 0;
    while sent < cfg.changes || !outstanding.is_empty() {
        let now = Instant::now();
        if sent < cfg.changes && now >= next_send {
            let len = measured.len();
            if let Some(j) = (0..len).map(|k| (cursor + k) % len).find(|j| !busy[*j]) {
                cursor = j + 1;
                let want = 1 - gw_now[j];
                let gw: Ipv4Addr = GATEWAYS[want].parse()?;
                let t0 = writer.replace(measured[j].1, gw, oif, TABLE)?;
                gw_now[j] = want;
                busy[j] = true;
                outstanding.push((j, gw, t0));
            } else {
                lost += 1;
            }
            sent += 1;
            next_send += Duration::from_millis(rng.random_range(5..15));
        }
        outstanding.retain(|&(j, gw, t0)| {
            let key = fib4_key(TABLE, measured[j].1);
            let seen = maps
                .fib4
                .get(&key, 0)
                .ok()
                .is_some_and(|route| gateway_of(&maps, route.nexthop) == Some(IpAddr::V4(gw)));
            if seen {
                samples.push(t0.elapsed().as_secs_f64() * 1e3);
            } else if t0.elapsed() > Duration::from_secs(2) {
                lost += 1;
            } else {
                return true;
            }
            busy[j] = false;
            false
        });
        std::thread::sleep(Duration::from_micros(50));
    }
    let churn_s = churn_t0.elapsed().as_secs_f64();
    let vrfd_cpu = process_cpu_ns(&vrfd_pid)? - vrfd_cpu0;
    let applied = churn.stop()?;
    let resyncs = vrfd.log().matches("\"resync\"").count() as u64;
    let changes_per_s = applied as f64 / (churn_s + 0.5) + cfg.changes as f64 / churn_s;
    Ok(Changes {
        table_routes: routes,
        churn_rate: cfg.churn_rate,
        churn_applied_per_s: applied as f64 / (churn_s + 0.5),
        measured: samples.len(),
        lost,
        p50_ms: super::percentile(&samples, 50.0),
        p90_ms: super::percentile(&samples, 90.0),
        p99_ms: super::percentile(&samples, 99.0),
        max_ms: samples.iter().copied().fold(0.0, f64::max),
        samples_ms: samples,
        vrfd_resyncs: resyncs,
        vrfd_cpu_share: vrfd_cpu as f64 / 1e9 / churn_s,
        vrfd_cpu_per_change_us: vrfd_cpu as f64 / 1e3 / (changes_per_s * churn_s),
    })
}

/// CPU time of every thread of process `pid`, in ns.
fn process_cpu_ns(pid: &str) -> Result<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        total +=
            system::cpu_ns(&format!("{pid}/task/{}", t.file_name().to_string_lossy())).unwrap_or(0);
    }
    Ok(total)
}

/// The gateway of nexthop group `id`'s first path (IPv4).
fn gateway_of(maps: &Maps, id: u32) -> Option<IpAddr> {
    let p = maps.nexthops.get(&id, 0).ok()?.paths[0];
    Some(IpAddr::from([
        p.gateway[0],
        p.gateway[1],
        p.gateway[2],
        p.gateway[3],
    ]))
}
