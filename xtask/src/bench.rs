//! `cargo xtask bench [--quick]`: vrf-xdp side by side with the kernel on this machine.
//!
//! Builds vrfd and vrfctl (the control-plane part runs vrfd) and the runner
//! (`bench/src/main.rs`, the `bench` crate) in release, checks that vrfd and vrfctl do not carry the
//! bench's own eBPF object, then runs the runner as root. It writes `BENCHMARKS.md` at the root,
//! `target/bench/summary.json` and `target/bench/*.png`, and copies the plots BENCHMARKS.md
//! shows into `docs/bench/`.

use std::{ffi::OsString, process::Command};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{
    cargo::{build_binaries, cargo, root, run, target_dir, BINARIES},
    setup,
};

/// Options of `cargo xtask bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Shorter trials, fewer samples and time limits: under five minutes.
    #[arg(long)]
    quick: bool,

    /// Extra arguments for the runner, after `--` (e.g. `-- --only forward --no-profile`;
    /// `-- --help` lists them).
    #[arg(last = true, value_name = "VRF_BENCH_ARGS")]
    args: Vec<OsString>,
}

/// A program name only the bench's object contains.
const BENCH_ONLY_SYMBOL: &[u8] = b"xdp_bench_gen";

pub fn bench(args: &BenchArgs) -> Result<()> {
    setup::require_root("`cargo xtask bench`")?;
    let tc = setup::ensure(true)?;
    let bin_dir = build_binaries(&tc, true)?;
    for bin in BINARIES {
        let path = bin_dir.join(bin);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if bytes
            .windows(BENCH_ONLY_SYMBOL.len())
            .any(|w| w == BENCH_ONLY_SYMBOL)
        {
            bail!(
                "{} carries the bench's eBPF object (vrf_user::bench::FIB_HELPER_OBJECT is referenced outside the bench)",
                path.display()
            );
        }
    }
    run(&mut cargo(
        &tc,
        ["build", "--release", "-p", "bench", "--bin", "vrf-bench"],
    ))
    .context("building the bench runner")?;

    // The runner's defaults are the same paths; passing them keeps `-- --out-dir …` overridable.
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("mkdir {}", out_dir.display()))?;
    // Run a copy: a workspace build during the run (cargo test builds every binary) would
    // replace target/release/vrf-bench under the run's child processes and perf's symbols.
    let runner = out_dir.join("vrf-bench");
    std::fs::copy(target_dir().join("release").join("vrf-bench"), &runner)
        .with_context(|| format!("copying the runner to {}", runner.display()))?;
    let mut cmd = Command::new(&runner);
    cmd.current_dir(root())
        .env("VRF_XDP_BIN_DIR", &bin_dir)
        .arg("--out-dir")
        .arg(&out_dir)
        .arg("--report")
        .arg(root().join("BENCHMARKS.md"))
        .arg("--docs-dir")
        .arg(root().join("docs").join("bench"));
    if args.quick {
        cmd.arg("--quick");
    }
    cmd.args(&args.args);
    run(&mut cmd).context("the benchmark failed")?;
    eprintln!("bench: done");
    Ok(())
}
