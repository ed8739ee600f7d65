//! `cargo xtask test` and `cargo xtask lint`.

use std::ffi::OsString;

use anyhow::{Context, Result};
use clap::Args;

use crate::{
    cargo::{build_binaries, cargo, ebpf_cargo, run, EBPF_TARGET_ARGS, HOST_PACKAGES},
    setup::{self, Toolchain},
    vm,
};

/// Options of `cargo xtask test`.
#[derive(Args)]
pub struct TestArgs {
    /// Also run the long tests (sets VRF_XDP_LONG=1 for the test binaries).
    #[arg(long)]
    long: bool,

    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    no_lint: bool,

    /// Run the VM lane (real kernel VRF devices on Debian's 6.1 kernel under QEMU) after the
    /// host tests: the default; see `cargo xtask vm-test`.
    #[arg(long, conflicts_with = "no_vm")]
    vm: bool,

    /// Skip the VM lane.
    #[arg(long)]
    no_vm: bool,

    /// Extra arguments for `cargo test`, after `--` (e.g. `-- -p tests NAME -- --nocapture`);
    /// with `-p`, only the named packages are tested instead of the whole workspace.
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    cargo_args: Vec<OsString>,
}

/// Lint (unless `--no-lint`), build vrfd/vrfctl, then `cargo test --release --workspace` (minus
/// vrf-ebpf, see [`HOST_PACKAGES`]) with `VRF_XDP_BIN_DIR=<abs target/release>` (and
/// `VRF_XDP_LONG=1` with `--long`), then the VM lane unless `--no-vm`.
pub fn test(args: TestArgs) -> Result<()> {
    setup::require_root("`cargo xtask test`")?;
    // Also mounts bpffs on /sys/fs/bpf (we are root).
    let tc = setup::ensure(true)?;
    if !args.no_lint {
        lint(&tc)?;
    }
    let bin_dir = build_binaries(&tc, true)?;

    let mut cmd = cargo(&tc, ["test", "--release"]);
    // cargo ignores `-p` next to `--workspace`: let an explicit `-p` in the extra args narrow it.
    if !selects_packages(&args.cargo_args) {
        cmd.args(HOST_PACKAGES);
    }
    cmd.env("VRF_XDP_BIN_DIR", &bin_dir);
    if args.long {
        cmd.env("VRF_XDP_LONG", "1");
    }
    cmd.args(&args.cargo_args);
    run(&mut cmd).context("tests failed")?;
    // The lane runs by default; `--vm` only says so explicitly.
    if args.vm || !args.no_vm {
        vm::run_lane(&bin_dir, &vm::VmArgs::default()).context("VM lane failed")?;
    }
    eprintln!("test: all passed");
    Ok(())
}

/// Whether cargo arguments (before a `--`) select packages with `-p`/`--package`.
fn selects_packages(args: &[OsString]) -> bool {
    args.iter()
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--")
        .any(|a| a.starts_with("-p") || a.starts_with("--package"))
}

/// `cargo fmt --all --check` (covers vrf-ebpf too), clippy with `-D warnings` on the host crates
/// (same environment as the build, so clippy's run of vrf-user's build.rs finds the eBPF
/// toolchain), and clippy on vrf-ebpf for its real target, `bpfel-unknown-none`.
pub fn lint(tc: &Toolchain) -> Result<()> {
    run(&mut cargo(tc, ["fmt", "--all", "--check"]))
        .context("formatting differs: run `cargo fmt --all`")?;
    let mut host = cargo(tc, ["clippy", "--release", "--all-targets"]);
    host.args(HOST_PACKAGES).args(["--", "-D", "warnings"]);
    run(&mut host).context("clippy found problems in the host crates")?;
    let mut ebpf = ebpf_cargo(tc, ["clippy", "--release"]);
    ebpf.args(EBPF_TARGET_ARGS).args(["--", "-D", "warnings"]);
    run(&mut ebpf).context("clippy found problems in vrf-ebpf")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_selection() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(selects_packages(&args(&["-p", "tests", "name"])));
        assert!(selects_packages(&args(&["--package=tests"])));
        assert!(selects_packages(&args(&["-ptests"])));
        assert!(!selects_packages(&args(&["name", "--", "-p"])));
        assert!(!selects_packages(&args(&[])));
    }
}
