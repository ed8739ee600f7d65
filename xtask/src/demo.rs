//! The demo lab started by `cargo xtask run` without arguments: vrf-xdp on a namespace
//! topology, with traffic, live counters and a verdict. Nothing on the host's own network is
//! touched, and everything is torn down on every exit path, Ctrl-C included.
//!
//! 1. [`lab`]: a router namespace with tenants red (table 110) and blue (table 120), whose hosts
//!    use identical addresses, and a shared service (table 200) leaked into both.
//! 2. vrfd from `bin_dir`, started in the router with a configuration the demo writes and prints.
//! 3. [`traffic`]: ping, TCP, UDP in both tenants, one-way UDP to the service, while
//!    `vrfctl stats --json` is shown live ([`counters`]).
//! 4. The summary: per VRF, what the hosts sent, what XDP forwarded and what it handed to the
//!    kernel, the router kernel's own forwarding counter as the witness, and `vrfctl lookup`.
//!
//! Success (exit 0) means: all traffic arrived, XDP forwarded at least every packet the tenants'
//! hosts sent, and the router's kernel forwarded (about) none.

mod counters;
mod lab;
mod proc;
mod traffic;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitStatus,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

use counters::Xdp;
use lab::{Lab, SERVICES, SERVICE_ADDR, TENANTS};
use proc::{check_interrupt, in_ns, output, run, Background, Interrupted};
use traffic::Phase;

/// Where the lab's names start: namespaces `vxdemo-<pid>-…`, pins `/sys/fs/bpf/vxdemo-<pid>`.
const PREFIX: &str = "vxdemo";
const BPFFS: &str = "/sys/fs/bpf";
/// Live view refresh.
const TICK: Duration = Duration::from_secs(1);
/// How long vrfd may take to log `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Tools the lab runs (from Debian packages `cargo xtask setup` installs).
const TOOLS: [&str; 8] = [
    "ip", "nsenter", "sysctl", "ethtool", "ping", "iperf3", "socat", "ss",
];

/// Sets up and runs the demo lab using vrfd/vrfctl from `bin_dir` (absolute `target/release`).
pub fn run_demo(bin_dir: &Path) -> Result<()> {
    crate::setup::require_root("the demo lab")?;
    for tool in TOOLS.iter().chain(&["bash"]) {
        if !on_path(tool) {
            bail!("the demo needs `{tool}`: run `cargo xtask setup`");
        }
    }
    if !is_bpffs(BPFFS)? {
        bail!("no bpffs on {BPFFS}: run `cargo xtask setup` (it mounts it)");
    }
    proc::install_interrupt_handler()?;
    remove_stale_labs();

    let name = format!("{PREFIX}-{}", std::process::id());
    let started = Instant::now();
    let result = demo(bin_dir, &name);
    // Every guard has run by now: check that nothing is left.
    let leftovers = leftovers(&name);
    if leftovers.is_empty() {
        eprintln!("teardown: nothing of {name} is left");
    } else {
        eprintln!("teardown: left behind: {}", leftovers.join(", "));
    }
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => {
            println!("\ndemo passed in {secs:.1} s");
            Ok(())
        }
        Err(e) if e.is::<Interrupted>() => Err(anyhow!(
            "interrupted after {secs:.1} s; the lab was torn down"
        )),
        Err(e) => Err(e.context(format!("the demo failed after {secs:.1} s"))),
    }
}

fn demo(bin_dir: &Path, name: &str) -> Result<()> {
    let dir = TempDir::create(&std::env::temp_dir().join(name))?;
    heading("the lab");
    print!("{}", describe_lab(name));
    let t = Instant::now();
    let lab = Lab::build(name)?;
    println!(
        "built {} namespaces in {:.1} s",
        lab.namespaces().len(),
        t.elapsed().as_secs_f64()
    );

    heading("vrfd's configuration");
    let config = dir.path().join("vrf-xdp.toml");
    let text = lab.config();
    std::fs::write(&config, &text).with_context(|| format!("writing {}", config.display()))?;
    println!("{}:\n", config.display());
    for line in text.lines() {
        println!("    {line}");
    }

    heading("starting vrfd in the router");
    let pin_path = Path::new(BPFFS).join(name);
    let mut vrfd = Vrfd::start(bin_dir, &lab.router, &config, &pin_path, dir.path())?;
    println!("\n$ vrfctl show");
    print!("{}", run(&mut vrfd.vrfctl(&["show"]))?);

    heading("traffic");
    let stats = vrfd.has_stats();
    if !stats {
        println!(
            "(this vrfctl has no `stats` command: the live view shows only the router kernel's \
             counter)"
        );
    }
    let base = Snapshot::take(&lab, &vrfd, stats)?;
    let mut live = Live::new(&lab, &vrfd, stats, &base);
    let mut outcomes = Vec::new();
    type Start = fn(&Lab, &Path) -> Result<Phase>;
    let phases: [Start; 4] = [
        traffic::ping,
        traffic::tcp,
        traffic::udp,
        traffic::to_service,
    ];
    for start in phases {
        let mut phase = start(&lab, dir.path())?;
        live.watch(&mut phase)?;
        outcomes.extend(phase.finish()?);
    }
    // Let the last packets (TCP teardown) cross before the final count.
    proc::sleep(Duration::from_millis(300))?;
    let end = Snapshot::take(&lab, &vrfd, stats)?;

    heading("what arrived");
    for o in &outcomes {
        println!(
            "  {:<5} {:<28} {:<4} {}",
            o.vrf,
            o.what,
            if o.ok { "ok" } else { "FAIL" },
            o.detail
        );
    }
    println!("\n{}", leak_narrative());

    heading("summary: the fast path and the kernel");
    let mut failures: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| format!("{} {}: {}", o.vrf, o.what, o.detail))
        .collect();
    failures.extend(summary(&base, &end, stats));
    if stats {
        println!("\n$ vrfctl stats");
        print!("{}", run(&mut vrfd.vrfctl(&["stats"]))?);
    }

    heading("vrfctl lookup");
    failures.extend(lookups(&vrfd)?);

    heading("teardown");
    vrfd.stop_and_check()?;
    // `lab` and `dir` are dropped next: namespaces deleted, temporary directory removed.
    drop(lab);
    drop(dir);

    if failures.is_empty() {
        Ok(())
    } else {
        println!();
        for f in &failures {
            println!("FAIL: {f}");
        }
        Err(anyhow!(
            "{} check{} failed (FAIL above)",
            failures.len(),
            if failures.len() == 1 { "" } else { "s" }
        ))
    }
}

fn heading(title: &str) {
    println!(
        "\n== {title} {}",
        "=".repeat(76usize.saturating_sub(title.len()))
    );
}

fn describe_lab(name: &str) -> String {
    let mut s = format!(
        "Network namespaces {name}-*: a router with two tenant VRFs whose hosts use the same\n\
         addresses, and a shared service both tenants reach. VRFs are routing tables chosen by\n\
         `ip rule iif <member> lookup <table>` (vrfd adds the rules); XDP runs on every member.\n\n"
    );
    let rows = [
        ("red   table 110", "red-a  10.0.1.2  fd00:1::2", "red0", "┐"),
        ("", "red-b  10.0.2.2  fd00:2::2", "red1", "┤"),
        (
            "blue  table 120",
            "blue-a 10.0.1.2  fd00:1::2",
            "blue0",
            "┤  router",
        ),
        ("", "blue-b 10.0.2.2  fd00:2::2", "blue1", "┤"),
        ("svc   table 200", "svc    192.0.2.10", "svc0", "┘"),
    ];
    for (vrf, host, member, edge) in rows {
        let _ = writeln!(s, "  {vrf:<16} {host:<27} ── {member:<5} {edge}");
    }
    s.push_str(
        "\n  192.0.2.0/24 (svc) is leaked into tables 110 and 120: `ip route add 192.0.2.0/24 \
         dev svc0 table 110`.\n\n",
    );
    s
}

fn leak_narrative() -> String {
    format!(
        "The leak: {SERVICE_ADDR} is reached from both tenants through their own tables (110, 120),\n\
         and XDP forwards both flows to svc0. At the service both come from 10.0.1.2: only the\n\
         payload tells red from blue. That is why this traffic is one way. A reply to 10.0.1.2\n\
         is looked up in the service's table (200), which cannot know whether red's or blue's\n\
         10.0.1.2 is meant: a shared service for overlapping tenants needs distinct addresses\n\
         or NAT, which the fast path does not do (see `vrfctl lookup --vrf svc 10.0.1.2` below)."
    )
}

/// The counters at one moment: hosts first (what was sent), then XDP, then the kernel.
struct Snapshot {
    /// Unicast packets the hosts of each VRF have sent.
    sent: BTreeMap<&'static str, u64>,
    xdp: BTreeMap<String, Xdp>,
    kernel: u64,
}

impl Snapshot {
    fn take(lab: &Lab, vrfd: &Vrfd, stats: bool) -> Result<Snapshot> {
        let mut sent = BTreeMap::new();
        for m in &lab.members {
            *sent.entry(m.vrf.name).or_insert(0) += counters::host_unicast_sent(&m.host_ns)?;
        }
        let xdp = if stats {
            vrfd.stats()?
        } else {
            BTreeMap::new()
        };
        Ok(Snapshot {
            sent,
            xdp,
            kernel: counters::kernel_forwarded(&lab.router)?,
        })
    }
}

/// Prints the per-VRF summary; returns what failed.
fn summary(base: &Snapshot, end: &Snapshot, stats: bool) -> Vec<String> {
    let mut failures = Vec::new();
    let kernel = end.kernel.saturating_sub(base.kernel);
    let total_sent: u64 = TENANTS
        .iter()
        .map(|v| end.sent[v.name].saturating_sub(base.sent[v.name]))
        .sum();
    println!(
        "  {:<6} {:>15} {:>18} {:>22} {:>9}",
        "VRF", "sent by hosts", "forwarded by XDP", "handed to the kernel", "dropped"
    );
    let mut reasons = Vec::new();
    for vrf in TENANTS.iter().chain([&SERVICES]) {
        let sent = end.sent[vrf.name].saturating_sub(base.sent[vrf.name]);
        let (fwd, pass, drop) = if stats {
            let d = end
                .xdp
                .get(vrf.name)
                .map(|e| e.since(base.xdp.get(vrf.name).unwrap_or(&Xdp::default())))
                .unwrap_or_default();
            for (reason, n) in d.not_forwarded() {
                reasons.push((vrf.name, reason, n));
            }
            if TENANTS.iter().any(|t| t.name == vrf.name) && d.forwarded < sent {
                failures.push(format!(
                    "{}: XDP forwarded {} of the {sent} packets its hosts sent",
                    vrf.name, d.forwarded
                ));
            }
            (group(d.forwarded), group(d.passed), group(d.dropped))
        } else {
            ("-".into(), "-".into(), "-".into())
        };
        println!(
            "  {:<6} {:>15} {:>18} {:>22} {:>9}",
            vrf.name,
            group(sent),
            fwd,
            pass,
            drop
        );
    }
    if !reasons.is_empty() {
        let all_multicast = reasons.iter().all(|(_, r, _)| r == "multicast");
        let list: Vec<String> = reasons
            .iter()
            .map(|(vrf, r, n)| format!("{vrf} {r} {n}"))
            .collect();
        println!(
            "  handed to the kernel, by reason: {}{}",
            list.join(", "),
            if all_multicast {
                " (IPv6 MLD reports of the hosts)"
            } else {
                ""
            }
        );
    }
    println!(
        "\n  the router's kernel forwarded {} packets meanwhile (IpForwDatagrams + \
         Ip6OutForwDatagrams)",
        group(kernel)
    );
    if total_sent == 0 {
        failures.push("the hosts sent nothing".into());
    }
    // "About none": allow one in a thousand.
    if kernel * 1000 > total_sent {
        failures.push(format!(
            "the router's kernel forwarded {kernel} of {total_sent} packets: not the fast path"
        ));
    } else if stats && failures.is_empty() {
        println!(
            "  → every packet the tenants sent was forwarded by XDP; the kernel only watched."
        );
    } else if !stats {
        println!("  → the traffic crossed the router without the kernel forwarding it.");
    }
    failures
}

/// `1234567` → `1,234,567`.
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Lookups: (VRF, destination, expected action, expected egress, why it is interesting).
const LOOKUPS: [(&str, &str, &str, Option<&str>, &str); 7] = [
    ("red", "10.0.2.2", "forward", Some("red1"), "red's host B"),
    (
        "blue",
        "10.0.2.2",
        "forward",
        Some("blue1"),
        "the same address in blue: blue's host B",
    ),
    ("red", "fd00:2::2", "forward", Some("red1"), "IPv6"),
    (
        "red",
        SERVICE_ADDR,
        "forward",
        Some("svc0"),
        "the shared service, leaked into red",
    ),
    (
        "blue",
        SERVICE_ADDR,
        "forward",
        Some("svc0"),
        "… and into blue",
    ),
    (
        "red",
        "203.0.113.1",
        "pass",
        None,
        "unreachable: the kernel sends the ICMP error",
    ),
    (
        "svc",
        "10.0.1.2",
        "pass",
        None,
        "the service's reply: no route back (see above)",
    ),
];

/// Prints each lookup and checks it against the expectation; returns what differed.
fn lookups(vrfd: &Vrfd) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    for (vrf, addr, action, oif, why) in LOOKUPS {
        let args = ["lookup", "--vrf", vrf, addr];
        let cmd = format!("$ vrfctl {}", args.join(" "));
        println!("  {cmd:<40} # {why}");
        let text = run(&mut vrfd.vrfctl(&args))?;
        println!("  {}", text.trim());
        let json = run(&mut vrfd.vrfctl(&[&args[..], &["--json"]].concat()))?;
        let v: serde_json::Value = serde_json::from_str(&json)
            .with_context(|| format!("`vrfctl lookup --json` printed {json}"))?;
        let got = (v["action"].as_str(), v["oif"].as_str());
        if got != (Some(action), oif) {
            failures.push(format!(
                "vrfctl lookup --vrf {vrf} {addr}: {} via {}, expected {action} via {}",
                got.0.unwrap_or("?"),
                got.1.unwrap_or("-"),
                oif.unwrap_or("-")
            ));
        }
    }
    Ok(failures)
}

/// The live view: one line per second per phase, from `vrfctl stats --json` and the router
/// kernel's forwarding counter.
struct Live<'a> {
    lab: &'a Lab,
    vrfd: &'a Vrfd,
    stats: bool,
    start: Instant,
    last: Instant,
    last_xdp: BTreeMap<String, Xdp>,
    last_kernel: u64,
}

impl<'a> Live<'a> {
    fn new(lab: &'a Lab, vrfd: &'a Vrfd, stats: bool, base: &Snapshot) -> Self {
        let now = Instant::now();
        println!(
            "Packets per interval: forwarded and passed to the kernel by XDP (`vrfctl stats \
             --json`),\nand forwarded by the router's kernel (/proc/net/snmp), the witness.\n"
        );
        let mut head = format!("  {:>5}  {:<15}", "time", "traffic");
        for vrf in TENANTS {
            let _ = write!(
                head,
                " {:>10} {:>7} {:>6}",
                format!("{} fwd", vrf.name),
                "Mbit/s",
                "passed"
            );
        }
        let _ = write!(head, " {:>11}", "kernel fwd");
        println!("{head}");
        Live {
            lab,
            vrfd,
            stats,
            start: now,
            last: now,
            last_xdp: base.xdp.clone(),
            last_kernel: base.kernel,
        }
    }

    /// Shows the counters every [`TICK`] until every job of `phase` has finished.
    fn watch(&mut self, phase: &mut Phase) -> Result<()> {
        let mut next = Instant::now() + TICK;
        loop {
            check_interrupt()?;
            let done = phase.done()?;
            if done || Instant::now() >= next {
                self.row(phase.title)?;
                next = Instant::now() + TICK;
            }
            if done {
                return Ok(());
            }
            proc::sleep(Duration::from_millis(50))?;
        }
    }

    fn row(&mut self, title: &str) -> Result<()> {
        let xdp = if self.stats {
            self.vrfd.stats()?
        } else {
            BTreeMap::new()
        };
        let kernel = counters::kernel_forwarded(&self.lab.router)?;
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64().max(1e-3);
        let mut line = format!(
            "  {:>4.1}s  {:<15}",
            now.duration_since(self.start).as_secs_f64(),
            title
        );
        for vrf in TENANTS {
            match (xdp.get(vrf.name), self.last_xdp.get(vrf.name)) {
                (Some(now), before) => {
                    let d = now.since(before.unwrap_or(&Xdp::default()));
                    let _ = write!(
                        line,
                        " {:>10} {:>7.0} {:>6}",
                        group(d.forwarded),
                        d.forwarded_bytes as f64 * 8.0 / secs / 1e6,
                        group(d.passed)
                    );
                }
                (None, _) => {
                    let _ = write!(line, " {:>10} {:>7} {:>6}", "-", "-", "-");
                }
            }
        }
        let _ = write!(
            line,
            " {:>11}",
            group(kernel.saturating_sub(self.last_kernel))
        );
        println!("{line}");
        self.last = now;
        self.last_xdp = xdp;
        self.last_kernel = kernel;
        Ok(())
    }
}

/// vrfd running in the router namespace; dropping it stops it (SIGTERM) and removes whatever it
/// left under its pin path.
struct Vrfd {
    proc: Option<Background>,
    router: String,
    vrfctl: PathBuf,
    pin_path: PathBuf,
    log: PathBuf,
}

impl Vrfd {
    fn start(
        bin_dir: &Path,
        router: &str,
        config: &Path,
        pin_path: &Path,
        dir: &Path,
    ) -> Result<Vrfd> {
        let vrfd_bin = bin_dir.join("vrfd");
        let mut cmd = in_ns(router, &vrfd_bin);
        cmd.arg("--config")
            .arg(config)
            .arg("--pin-path")
            .arg(pin_path)
            // The demo's stop removes everything vrfd added (a plain stop would leave it).
            .arg("--no-persist")
            .args(["--log-format", "plain"])
            // The log goes to a file, which the demo prints trimmed.
            .env("NO_COLOR", "1");
        println!("$ {}", crate::cargo::display(&cmd));
        let log = dir.join("vrfd.log");
        let proc = Background::spawn("vrfd", &mut cmd, &dir.join("vrfd.out"), &log)?;
        let mut vrfd = Vrfd {
            proc: Some(proc),
            router: router.to_owned(),
            vrfctl: bin_dir.join("vrfctl"),
            pin_path: pin_path.to_owned(),
            log,
        };
        vrfd.wait_ready()?;
        Ok(vrfd)
    }

    /// Waits for the `ready` log line, printing the log (trimmed) up to it.
    fn wait_ready(&mut self) -> Result<()> {
        let end = Instant::now() + READY_TIMEOUT;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<String> = log.lines().map(trim_log_line).collect();
            if let Some(i) = lines.iter().position(|l| l.starts_with("ready")) {
                for l in &lines[..=i] {
                    println!("  vrfd: {l}");
                }
                return Ok(());
            }
            let proc = self.proc.as_mut().expect("running");
            if let Some(st) = proc.try_wait()? {
                bail!("vrfd exited ({st}) before it was ready; its log:\n{log}");
            }
            if Instant::now() > end {
                bail!("vrfd was not ready after {READY_TIMEOUT:?}; its log:\n{log}");
            }
            proc::sleep(Duration::from_millis(20))?;
        }
    }

    /// `vrfctl --pin-path P ARGS` in the router namespace (vrfctl names interfaces by the
    /// namespace's ifindexes).
    fn vrfctl(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = in_ns(&self.router, &self.vrfctl);
        cmd.arg("--pin-path").arg(&self.pin_path).args(args);
        cmd
    }

    /// Whether this vrfctl has `stats` (asked at run time).
    fn has_stats(&self) -> bool {
        output(&mut self.vrfctl(&["stats", "--help"])).is_ok_and(|o| o.status.success())
    }

    fn stats(&self) -> Result<BTreeMap<String, Xdp>> {
        counters::parse_vrfctl_stats(&run(&mut self.vrfctl(&["stats", "--json"]))?)
    }

    /// The orderly end: SIGTERM, exit status 0, its ip rules and pins gone.
    fn stop_and_check(&mut self) -> Result<()> {
        let status = self.stop()?;
        let rules = lab::ip(&self.router, &["rule", "show"])?
            + &lab::ip(&self.router, &["-6", "rule", "show"])?;
        let left = rules.lines().filter(|l| l.contains(" iif ")).count();
        if status.code() != Some(0) {
            bail!("vrfd exited with {status} after SIGTERM; its log is above");
        }
        if left != 0 || self.pin_path.exists() {
            bail!(
                "vrfd exited but left {left} ip rules{}",
                if self.pin_path.exists() {
                    " and its pins"
                } else {
                    ""
                }
            );
        }
        println!("vrfd stopped (SIGTERM, exit 0): XDP detached, its ip rules and pins removed");
        Ok(())
    }

    fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut proc) = self.proc.take() else {
            bail!("vrfd was already stopped");
        };
        let status = proc.stop(Duration::from_secs(10))?;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        for l in log.lines().map(trim_log_line) {
            if l.starts_with("WARN") || l.starts_with("ERROR") {
                println!("  vrfd: {l}");
            }
        }
        Ok(status)
    }
}

impl Drop for Vrfd {
    fn drop(&mut self) {
        if self.proc.is_some() {
            match self.stop() {
                Ok(st) => eprintln!("teardown: vrfd stopped ({st})"),
                Err(e) => eprintln!("teardown: stopping vrfd: {e:#}"),
            }
        }
        if self.pin_path.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.pin_path) {
                eprintln!("teardown: removing {}: {e}", self.pin_path.display());
            }
        }
    }
}

/// `2026-11-21T20:19:03.938Z  INFO vrf_user::daemon: ready vrfs=3` → `ready vrfs=3`
/// (`WARN …` and `ERROR …` keep their level).
fn trim_log_line(line: &str) -> String {
    let mut rest = line.trim();
    if rest
        .split_whitespace()
        .next()
        .is_some_and(|t| t.contains('T') && t.ends_with('Z'))
    {
        rest = rest
            .split_once(char::is_whitespace)
            .map_or("", |x| x.1)
            .trim_start();
    }
    let (level, rest) = rest.split_once(char::is_whitespace).unwrap_or(("", rest));
    let rest = rest.trim_start();
    let rest = match rest.split_once(": ") {
        Some((target, msg))
            if target.contains("::") || target.chars().all(|c| c.is_alphanumeric() || c == '_') =>
        {
            msg
        }
        _ => rest,
    };
    match level {
        "INFO" | "DEBUG" | "TRACE" => rest.to_owned(),
        "" => line.to_owned(),
        _ => format!("{level} {rest}"),
    }
}

/// A directory removed (with its contents) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn create(path: &Path) -> Result<TempDir> {
        if path.exists() {
            std::fs::remove_dir_all(path)
                .with_context(|| format!("removing the stale {}", path.display()))?;
        }
        std::fs::create_dir(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path.to_owned()))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("teardown: removing {}: {e}", self.0.display());
        }
    }
}

/// Removes namespaces, pins and temporary directories of earlier demos whose xtask is gone
/// (killed with SIGKILL, say): their names carry the pid.
fn remove_stale_labs() {
    let dead = |name: &str| -> bool {
        name.strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    let netns = output(proc::command("ip").args(["netns", "list"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for ns in netns.lines().filter_map(|l| l.split_whitespace().next()) {
        if dead(ns) {
            eprintln!("removing namespace {ns} of an earlier demo");
            let _ = output(proc::command("ip").args(["netns", "del", ns]));
        }
    }
    for parent in [Path::new(BPFFS).to_owned(), std::env::temp_dir()] {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(&name) {
                eprintln!("removing {} of an earlier demo", e.path().display());
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// What of the lab `name` still exists.
fn leftovers(name: &str) -> Vec<String> {
    let mut left = Vec::new();
    let netns = output(proc::command("ip").args(["netns", "list"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let prefix = format!("{name}-");
    left.extend(
        netns
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|ns| ns.starts_with(&prefix))
            .map(|ns| format!("namespace {ns}")),
    );
    for p in [Path::new(BPFFS).join(name), std::env::temp_dir().join(name)] {
        if p.exists() {
            left.push(p.display().to_string());
        }
    }
    left
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn is_bpffs(path: &str) -> Result<bool> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    Ok(mounts.lines().any(|l| {
        let mut f = l.split_whitespace().skip(1);
        f.next() == Some(path) && f.next() == Some("bpf")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_trimmed() {
        assert_eq!(
            trim_log_line(
                "2026-11-21T20:19:03.945444Z  INFO vrf_user::daemon: ready vrfs=3 members=5"
            ),
            "ready vrfs=3 members=5"
        );
        assert_eq!(
            trim_log_line("2026-11-21T20:19:03.9Z  WARN vrf_user::daemon: VRF degraded vrf=red"),
            "WARN VRF degraded vrf=red"
        );
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }
}
