//! Running child processes (echoed, status-checked) and cargo with the eBPF build environment.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context, Result};

use crate::setup::Toolchain;

/// Binaries built from vrf-user.
pub const BINARIES: [&str; 2] = ["vrfd", "vrfctl"];

/// Package selection for workspace-wide host commands (clippy, test): every member except
/// vrf-ebpf, which only compiles for `bpfel-unknown-none` (its panic handler clashes with std).
/// If vrf-ebpf is not a member, cargo merely warns about the `--exclude`.
pub const HOST_PACKAGES: [&str; 3] = ["--workspace", "--exclude", "vrf-ebpf"];

/// Arguments that point a cargo command at vrf-ebpf for its real target (what aya-build does).
pub const EBPF_TARGET_ARGS: [&str; 6] = [
    "--manifest-path",
    "vrf-ebpf/Cargo.toml",
    "--target",
    "bpfel-unknown-none",
    "-Z",
    "build-std=core",
];

static VERBOSE: AtomicBool = AtomicBool::new(false);

/// With `verbose`, [`probe`] echoes its (read-only) commands too.
pub fn set_verbose(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
}

/// The workspace root (xtask lives in `<root>/xtask`).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the root) or `<root>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}

/// `cmd` as a shell-like line: explicitly set env vars, program, args (quoted when needed).
pub fn display(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            parts.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
    }
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.into_owned()
    } else if s.chars().any(char::is_control) {
        // Bash ANSI-C quoting keeps the line on one line: $'a\tb\n'.
        let escaped: String = s.chars().flat_map(char::escape_default).collect();
        format!("$'{escaped}'")
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Echoes `$ <cmd>` to stderr, runs it with inherited stdio, and fails naming it unless it succeeds.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    eprintln!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs a read-only query, capturing stdout and stderr (echoed only with `--verbose`).
/// Fails only if the program cannot be started; the caller judges the exit status.
pub fn probe(cmd: &mut Command) -> Result<Output> {
    let line = display(cmd);
    if VERBOSE.load(Ordering::Relaxed) {
        eprintln!("$ {line}");
    }
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{line}`"))
}

/// Like [`probe`], but requires success and returns stdout as text.
pub fn probe_stdout(cmd: &mut Command) -> Result<String> {
    let line = display(cmd);
    let out = probe(cmd)?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cargo <args>` in the workspace root with the eBPF build environment of `tc`:
/// `VRF_XDP_EBPF_TOOLCHAIN` (read by vrf-user's build.rs), `RUSTC_BOOTSTRAP=1` for the stable
/// fallback, and bpf-linker's directory on `PATH` when it is not there already.
///
/// Every workspace cargo call gets the same environment so that cargo's fingerprints match and
/// `build`, `clippy` and `test` do not rebuild each other's artifacts.
pub fn cargo<I, S>(tc: &Toolchain, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root())
        .args(args)
        .env("VRF_XDP_EBPF_TOOLCHAIN", tc.name);
    if tc.bootstrap {
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    if let Some(dir) = &tc.linker_dir {
        let mut paths = vec![dir.clone()];
        if let Some(path) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&path));
        }
        if let Ok(path) = std::env::join_paths(paths) {
            cmd.env("PATH", path);
        }
    }
    cmd
}

/// `cargo +<toolchain> <args>` for commands on vrf-ebpf itself (with [`EBPF_TARGET_ARGS`]), in
/// the same environment as [`cargo`] (`RUSTC_BOOTSTRAP=1` lets stable accept `-Z build-std`).
pub fn ebpf_cargo<I, S>(tc: &Toolchain, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = cargo(tc, [format!("+{}", tc.name)]);
    cmd.args(args);
    cmd
}

/// `cargo build [--release] -p vrf-user`; returns the directory holding vrfd and vrfctl.
pub fn build_binaries(tc: &Toolchain, release: bool) -> Result<PathBuf> {
    let mut args = vec!["build"];
    if release {
        args.push("--release");
    }
    args.extend(["-p", "vrf-user"]);
    run(&mut cargo(tc, args)).context("building vrf-user (vrfd, vrfctl and the eBPF object)")?;

    let bin_dir = target_dir().join(if release { "release" } else { "debug" });
    for bin in BINARIES {
        let path = bin_dir.join(bin);
        if !path.is_file() {
            bail!(
                "cargo built vrf-user but {} does not exist (does vrf-user define the `{bin}` binary?)",
                path.display()
            );
        }
    }
    Ok(bin_dir)
}
