//! `cargo xtask`: set up, build, lint, test and run vrf-xdp.
//!
//! Everything a fresh Debian 12 machine (as root) needs is installed by `cargo xtask setup`, which
//! `build`, `lint`, `test` and `run` call first (a fast, quiet no-op when everything is present).

mod bench;
mod cargo;
mod deb;
mod demo;
mod dist;
mod run;
mod setup;
mod test;
mod vm;

use std::{ffi::OsString, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Developer tasks for vrf-xdp (eBPF/XDP data plane for Linux VRFs).
///
/// Every command prints each command line it runs (`$ cargo ...`) to stderr.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    /// Also print the read-only probe commands (dpkg-query, rustup, ldd, ...) that setup runs.
    #[arg(short, long, global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks to build and test (idempotent; needs root to install).
    ///
    /// Checks, and installs only if missing: Debian packages (LLVM dev files for bpf-linker, network
    /// tools for the tests and demo), the eBPF toolchain (nightly, else stable with
    /// RUSTC_BOOTSTRAP=1) with rust-src, rustfmt and clippy, bpf-linker built against the same LLVM
    /// major as the eBPF toolchain, and the bpffs mount on /sys/fs/bpf.
    Setup {
        /// Only report what is missing; exit with status 1 if anything is.
        #[arg(long)]
        check: bool,
    },

    /// Build vrfd and vrfctl (vrf-user's build.rs compiles and embeds the eBPF object).
    Build {
        /// Build the debug profile (target/debug) instead of release (target/release).
        #[arg(long)]
        debug: bool,
    },

    /// Run `cargo fmt --check` and `cargo clippy -D warnings` over the workspace.
    Lint,

    /// Lint, build and run the whole test suite (must run as root: tests create netns and load BPF).
    Test(test::TestArgs),

    /// Benchmark vrf-xdp against the kernel and a bpf_fib_lookup XDP program on this machine
    /// (as root): writes BENCHMARKS.md, target/bench/summary.json and plots (docs/bench/).
    Bench(bench::BenchArgs),

    /// Run only the VM lane: vrf-xdp's .deb on a Debian 12 router (systemd, ifupdown2, OpenVPN,
    /// FRR, BIRD) with real kernel VRF devices, Debian's 6.1 kernel under QEMU (TCG).
    ///
    /// Builds the image once with mmdebstrap into /var/cache/vrf-xdp/vm/ ($VRF_XDP_VM_CACHE),
    /// builds the release binaries and the .deb (lintian: no errors), boots the image with the
    /// package and vm/tests/*.sh, and reports each script's result.
    VmTest(vm::VmArgs),

    /// Build, then run vrfd with ARGS; without ARGS, start the demo lab.
    Run {
        /// Arguments for vrfd, after `--` (e.g. `cargo xtask run -- --help`).
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<OsString>,
    },

    /// Build, then write target/dist/: vrfd and vrfctl, the systemd unit, the example config,
    /// man pages and bash/zsh/fish completions (generated from the clap definitions).
    Dist,

    /// Build, then write target/deb/vrf-xdp_<version>_amd64.deb (dpkg-deb): the binaries, the
    /// systemd unit (not enabled on install), /etc/vrf-xdp.toml as a conffile, man pages and
    /// completions; checked with lintian (fails on errors).
    Deb,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cargo::set_verbose(cli.verbose);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Setup { check: true } => Ok(if setup::check()? {
            ExitCode::SUCCESS
        } else {
            eprintln!("setup: something is missing; run `cargo xtask setup` as root");
            ExitCode::FAILURE
        }),
        Command::Setup { check: false } => {
            setup::ensure(false)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { debug } => {
            let tc = setup::ensure(true)?;
            let bin_dir = cargo::build_binaries(&tc, !debug)?;
            for bin in cargo::BINARIES {
                println!("{}", bin_dir.join(bin).display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Lint => {
            let tc = setup::ensure(true)?;
            test::lint(&tc)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Test(args) => {
            test::test(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            bench::bench(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::VmTest(args) => {
            vm::vm_test(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { args } => run::run(args),
        Command::Dist => {
            dist::dist()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Deb => {
            let deb = deb::deb()?;
            deb::lintian(&deb)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
