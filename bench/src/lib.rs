//! `vrf-bench`: how fast vrf-xdp is against what a user would otherwise run, measured on this
//! machine in one run (`cargo xtask bench [--quick]`, as root).
//!
//! - [`forward`]: packets per second through one VRF: vrf-xdp, the kernel, an XDP program on
//!   the kernel's `bpf_fib_lookup` helper;
//! - [`lookup`]: ns per packet against table size (BPF_PROG_TEST_RUN with repeat);
//! - [`vrfs`]: ns per packet against the number of VRFs (1 → 256 of 10k routes each);
//! - [`control`]: syncing 1M routes, route-change latency under churn, map memory per route;
//! - [`report`] and [`plot`]: BENCHMARKS.md, `summary.json` and the PNG plots.
pub mod capture;
pub mod control;
pub mod forward;
pub mod lookup;
pub mod plot;
pub mod profile;
pub mod programs;
pub mod report;
pub mod restart;
pub mod routes;
pub mod system;
pub mod vrfs;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Which parts to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Forward,
    Lookup,
    Vrfs,
    Control,
    Capture,
    Restart,
}

pub struct Options {
    pub quick: bool,
    pub out_dir: PathBuf,
    pub report: PathBuf,
    pub docs_dir: PathBuf,
    pub parts: Vec<Part>,
    pub profile: bool,
    /// Write the report and plots again from `out_dir/summary.json`, measuring nothing.
    pub report_only: bool,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        let mut o = Options {
            quick: false,
            out_dir: root.join("target/bench"),
            report: root.join("BENCHMARKS.md"),
            docs_dir: root.join("docs/bench"),
            parts: vec![
                Part::Forward,
                Part::Lookup,
                Part::Vrfs,
                Part::Control,
                Part::Capture,
                Part::Restart,
            ],
            profile: true,
            report_only: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |what: &str| {
                it.next()
                    .cloned()
                    .with_context(|| format!("{a} needs {what}"))
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--no-profile" => o.profile = false,
                "--report-only" => o.report_only = true,
                "--out-dir" => o.out_dir = value("a directory")?.into(),
                "--report" => o.report = value("a file")?.into(),
                "--docs-dir" => o.docs_dir = value("a directory")?.into(),
                "--only" => {
                    o.parts = value("forward,lookup,vrfs,control,capture,restart")?
                        .split(',')
                        .map(|p| match p {
                            "forward" => Ok(Part::Forward),
                            "lookup" => Ok(Part::Lookup),
                            "vrfs" => Ok(Part::Vrfs),
                            "control" => Ok(Part::Control),
                            "capture" => Ok(Part::Capture),
                            "restart" => Ok(Part::Restart),
                            other => bail!("unknown part {other:?}"),
                        })
                        .collect::<Result<_>>()?
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        Ok(o)
    }
}

pub const USAGE: &str =
    "usage: vrf-bench [--quick] [--only forward,lookup,vrfs,control,capture,restart] [--no-profile] \
[--out-dir DIR] [--report FILE] [--docs-dir DIR] [--report-only]\n\
Runs as root; writes DIR/summary.json, DIR/*.png, FILE (BENCHMARKS.md) and copies the plots \
FILE refers to into --docs-dir. --report-only rewrites them from DIR/summary.json. \
--only restart measures that part alone and replaces its section of FILE in place.";

/// Progress lines on stderr, with the time since the start.
pub struct Progress {
    start: Instant,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            start: Instant::now(),
        }
    }

    pub fn step(&self, what: &str) {
        eprintln!("[{:6.1}s] {what}", self.start.elapsed().as_secs_f64());
    }

    pub fn detail(&self, what: &str) {
        eprintln!("[{:6.1}s]   {what}", self.start.elapsed().as_secs_f64());
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// Nearest-rank percentile (`p` in 0..=100) of `v`; NaN when empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Everything one run measured.
pub struct Measured {
    pub machine: serde_json::Value,
    pub quick: bool,
    pub forward: Option<forward::Results>,
    pub lookup: Option<lookup::Results>,
    pub vrfs: Option<vrfs::Results>,
    pub control: Option<control::Results>,
    pub capture: Option<capture::Results>,
    pub restart: Option<restart::Results>,
    pub wall_seconds: f64,
}

impl Measured {
    /// What a previous run wrote to summary.json.
    fn load(path: &std::path::Path) -> Result<Measured> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let part = |k: &str| v["details"][k].clone();
        Ok(Measured {
            machine: v["machine"].clone(),
            quick: v["quick"].as_bool().unwrap_or(false),
            forward: serde_json::from_value(part("forward"))?,
            lookup: serde_json::from_value(part("lookup"))?,
            vrfs: serde_json::from_value(part("vrfs")).unwrap_or(None),
            control: serde_json::from_value(part("control"))?,
            capture: serde_json::from_value(part("capture"))?,
            restart: serde_json::from_value(part("restart")).unwrap_or(None),
            wall_seconds: v["wall_seconds"].as_f64().unwrap_or(0.0),
        })
    }
}

pub fn main(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some(control::CHILD_COMMAND) {
        return control::child(&args[1..]);
    }
    let opts = Options::parse(args)?;
    let progress = Progress::new();
    if opts.report_only {
        let measured = Measured::load(&opts.out_dir.join("summary.json"))?;
        return report::write(&opts, &measured, &progress);
    }
    tests::require_root();
    let machine = system::describe();
    progress.step(&format!(
        "vrf-bench{} on {} ({} CPUs, kernel {}, load {})",
        if opts.quick { " --quick" } else { "" },
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cpus"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["loadavg_at_start"].as_str().unwrap_or("?"),
    ));
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("mkdir {}", opts.out_dir.display()))?;
    let forward = if opts.parts.contains(&Part::Forward) {
        let cfg = forward::Config {
            seconds: if opts.quick { 1.0 } else { 3.0 },
            rounds: if opts.quick { 2 } else { 5 },
            profile: opts.profile,
        };
        Some(forward::run(&cfg, &progress).context("forwarding throughput")?)
    } else {
        None
    };
    let lookup = if opts.parts.contains(&Part::Lookup) {
        let cfg = lookup::Config::new(opts.quick, opts.profile);
        Some(lookup::run(&cfg, &progress).context("per-packet cost")?)
    } else {
        None
    };
    let vrfs = if opts.parts.contains(&Part::Vrfs) {
        let cfg = vrfs::Config::new(opts.quick);
        Some(vrfs::run(&cfg, &progress).context("per-packet cost against VRFs")?)
    } else {
        None
    };
    let control = if opts.parts.contains(&Part::Control) {
        let cfg = control::Config::new(opts.quick, opts.profile);
        Some(control::run(&cfg, &progress).context("control plane")?)
    } else {
        None
    };
    let capture = if opts.parts.contains(&Part::Capture) {
        Some(capture::run(opts.quick, &progress).context("capture cost")?)
    } else {
        None
    };
    let restart = if opts.parts.contains(&Part::Restart) {
        Some(restart::run(opts.quick, &progress).context("restart and upgrade")?)
    } else {
        None
    };
    if let (Some(r), [Part::Restart]) = (&restart, opts.parts.as_slice()) {
        // This part alone: its section of the report is replaced, the rest stays as measured.
        report::splice_restart(&opts, r, &machine, &progress)?;
        progress.step(&format!("done in {:.0} s", progress.elapsed()));
        return Ok(());
    }
    let measured = Measured {
        machine,
        quick: opts.quick,
        forward,
        lookup,
        vrfs,
        control,
        capture,
        restart,
        wall_seconds: progress.elapsed(),
    };
    report::write(&opts, &measured, &progress)?;
    progress.step(&format!("done in {:.0} s", progress.elapsed()));
    Ok(())
}
