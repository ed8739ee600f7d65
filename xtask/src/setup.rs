//! `cargo xtask setup`: check, and install only what is missing, for building and testing on a
//! Debian 12 machine (as root). Each step prints one line `setup: <thing>: ok|installing…`.
//!
//! Steps, in order (later steps depend on earlier ones):
//! 1. the eBPF toolchain (see [`Toolchain`]) and its LLVM major;
//! 2. `rust-src` for that toolchain (needed by `-Z build-std=core`);
//! 3. `rustfmt` and `clippy` for the workspace's active toolchain (lint);
//! 4. Debian packages: `llvm-<major>-dev libpolly-<major>-dev libzstd-dev` (to build bpf-linker)
//!    and the tools the tests and demo use;
//! 5. bpf-linker, built against the eBPF toolchain's LLVM major;
//! 6. bpffs mounted on `/sys/fs/bpf` (never unmounted).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::cargo::{probe, probe_stdout, root, run};

/// Debian packages the tests and the demo lab use.
const TOOL_PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "iputils-ping",
    "socat",
    "iperf3",
    "tcpdump",
    "procps",
    "util-linux",
    // The VM lane (`cargo xtask vm-test`): mmdebstrap builds the Debian image (an ext4 file
    // system from e2fsprogs), QEMU boots it.
    "qemu-system-x86",
    "mmdebstrap",
    "e2fsprogs",
    // `cargo xtask deb`: dpkg-deb, dpkg-shlibdeps, strip; lintian checks the package.
    "dpkg-dev",
    "binutils",
    "lintian",
    // `cargo xtask bench` draws its plots with this font (plotters' ab_glyph: no font libraries).
    "fonts-dejavu-core",
    // vrfd reads the ruleset through `nft -j` (issue #11); the tests write nft, legacy iptables.
    "nftables",
    "iptables",
    // The real control planes the nexthop and weighted-ECMP tests run (tests/src/{frr,bird}.rs).
    "frr",
    "bird2",
];

const BPFFS: &str = "/sys/fs/bpf";

/// The toolchain that builds the eBPF crate (`bpfel-unknown-none`, `-Z build-std=core`).
///
/// Selection: `VRF_XDP_EBPF_TOOLCHAIN=nightly|stable` in xtask's environment forces a choice (to
/// exercise the fallback). Else `nightly` whenever `rustup toolchain list` has a toolchain whose
/// name starts with `nightly`. Otherwise the fallback is `stable` with `RUSTC_BOOTSTRAP=1`, which lets a stable
/// rustc/cargo accept the `-Z build-std` flag the eBPF build needs (aya-build honours it). Either
/// way `rust-src` is installed for that toolchain, and bpf-linker must be built against the same
/// LLVM major as that toolchain's rustc (`rustc -vV`, line `LLVM version:`).
///
/// [`crate::cargo::cargo`] passes the choice to vrf-user's build.rs as
/// `VRF_XDP_EBPF_TOOLCHAIN=<name>` (plus `RUSTC_BOOTSTRAP=1` for stable).
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// rustup toolchain name: `"nightly"` or `"stable"`.
    pub name: &'static str,
    /// Whether cargo must run with `RUSTC_BOOTSTRAP=1` (the stable fallback).
    pub bootstrap: bool,
    /// LLVM major version of the toolchain's rustc.
    pub llvm_major: u32,
    /// bpf-linker's directory when it is not on `PATH` (e.g. `~/.cargo/bin`): prepend it for cargo.
    pub linker_dir: Option<PathBuf>,
}

/// Makes sure everything is present, installing what is missing; returns the eBPF toolchain.
///
/// Fast when everything is there (a few probes, no network). With `quiet`, "ok" lines are replaced
/// by one summary line; "installing…" lines are always printed.
pub fn ensure(quiet: bool) -> Result<Toolchain> {
    let mut setup = Setup::new(Mode::Install, quiet);
    let tc = setup.run()?;
    if quiet && !setup.changed {
        eprintln!(
            "setup: ok (eBPF toolchain {}, LLVM {})",
            describe(&tc),
            tc.llvm_major
        );
    }
    Ok(tc)
}

/// Reports what is present and what is missing without changing anything; true when all is there.
pub fn check() -> Result<bool> {
    let mut setup = Setup::new(Mode::Check, false);
    setup.run()?;
    Ok(setup.missing.is_empty())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Install,
    Check,
}

struct Setup {
    mode: Mode,
    quiet: bool,
    is_root: bool,
    /// Something was installed (install mode).
    changed: bool,
    /// Things found missing (check mode).
    missing: Vec<String>,
}

impl Setup {
    fn new(mode: Mode, quiet: bool) -> Self {
        Self {
            mode,
            quiet,
            is_root: is_root(),
            changed: false,
            missing: Vec::new(),
        }
    }

    fn ok(&self, thing: &str, detail: &str) {
        if !self.quiet {
            if detail.is_empty() {
                eprintln!("setup: {thing}: ok");
            } else {
                eprintln!("setup: {thing}: ok ({detail})");
            }
        }
    }

    /// Reports `thing` as missing (`why` explains); returns whether the caller should install it.
    fn need(&mut self, thing: &str, why: &str, needs_root: bool) -> Result<bool> {
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        };
        match self.mode {
            Mode::Check => {
                eprintln!("setup: {thing}: missing{why}");
                self.missing.push(thing.to_owned());
                Ok(false)
            }
            Mode::Install => {
                if needs_root && !self.is_root {
                    bail!("{thing} is missing{why} and installing it needs root: run `cargo xtask setup` as root");
                }
                eprintln!("setup: {thing}: installing…{why}");
                self.changed = true;
                Ok(true)
            }
        }
    }

    fn run(&mut self) -> Result<Toolchain> {
        let mut tc = self.toolchain()?;
        self.rust_src(&tc)?;
        self.lint_components()?;
        self.packages(tc.llvm_major)?;
        tc.linker_dir = self.bpf_linker(tc.llvm_major)?;
        self.bpffs()?;
        Ok(tc)
    }

    fn toolchain(&mut self) -> Result<Toolchain> {
        let list = probe_stdout(Command::new("rustup").args(["toolchain", "list"]))
            .context("rustup is required to pick the eBPF toolchain (https://rustup.rs)")?;
        let has_nightly = list.lines().any(|l| l.trim_start().starts_with("nightly"));
        let forced = std::env::var("VRF_XDP_EBPF_TOOLCHAIN").ok();
        let nightly = match forced.as_deref() {
            None | Some("") => has_nightly,
            Some("nightly") if has_nightly => true,
            Some("nightly") => {
                bail!("VRF_XDP_EBPF_TOOLCHAIN=nightly but rustup has no nightly toolchain")
            }
            Some("stable") => false,
            Some(other) => bail!("VRF_XDP_EBPF_TOOLCHAIN={other}: expected `nightly` or `stable`"),
        };
        let (name, bootstrap) = if nightly {
            ("nightly", false)
        } else {
            ("stable", true)
        };
        let llvm_major = rustc_llvm_major(name)?;
        let tc = Toolchain {
            name,
            bootstrap,
            llvm_major,
            linker_dir: None,
        };
        self.ok(
            "eBPF toolchain",
            &format!("{}, LLVM {llvm_major}", describe(&tc)),
        );
        Ok(tc)
    }

    fn rust_src(&mut self, tc: &Toolchain) -> Result<()> {
        let thing = format!("rust-src ({})", tc.name);
        if has_components(Some(tc.name), &["rust-src"])?.is_empty() {
            self.ok(&thing, "");
        } else if self.need(&thing, "", false)? {
            run(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                tc.name,
            ]))?;
        }
        Ok(())
    }

    /// rustfmt and clippy for the toolchain that `cargo` resolves to in the workspace.
    fn lint_components(&mut self) -> Result<()> {
        let missing = has_components(None, &["rustfmt", "clippy"])?;
        if missing.is_empty() {
            self.ok("rustfmt, clippy", "");
        } else if self.need(&missing.join(", "), "", false)? {
            run(Command::new("rustup")
                .current_dir(root())
                .args(["component", "add"])
                .args(&missing))?;
        }
        Ok(())
    }

    fn packages(&mut self, llvm_major: u32) -> Result<()> {
        let mut wanted = vec![
            format!("llvm-{llvm_major}-dev"),
            format!("libpolly-{llvm_major}-dev"),
            "libzstd-dev".to_owned(),
        ];
        wanted.extend(TOOL_PACKAGES.iter().map(|p| (*p).to_owned()));

        let missing = missing_packages(&wanted)?;
        if missing.is_empty() {
            self.ok("Debian packages", &format!("{} packages", wanted.len()));
            return Ok(());
        }
        if !self.need(&format!("Debian packages {}", missing.join(" ")), "", true)? {
            return Ok(());
        }
        run(Command::new("apt-get").arg("update").stdin(Stdio::null()))?;
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .stdin(Stdio::null()))?;
        let still = missing_packages(&wanted)?;
        if !still.is_empty() {
            bail!(
                "apt-get install succeeded but these packages are still not installed: {still:?}"
            );
        }
        Ok(())
    }

    /// Returns the directory to put first on `PATH` when the matching bpf-linker is not the one
    /// `PATH` finds first.
    fn bpf_linker(&mut self, llvm_major: u32) -> Result<Option<PathBuf>> {
        let problem = match select_bpf_linker(llvm_major)? {
            Ok(linker) => {
                self.ok(
                    "bpf-linker",
                    &format!("{}, LLVM {llvm_major}", linker.path.display()),
                );
                return Ok(linker.prepend_dir);
            }
            Err(problem) => problem,
        };
        if !self.need("bpf-linker", &problem, false)? {
            return Ok(None);
        }
        install_bpf_linker(llvm_major)?;
        match select_bpf_linker(llvm_major)? {
            Ok(linker) => Ok(linker.prepend_dir),
            Err(problem) => bail!("after `cargo install bpf-linker`: {problem}"),
        }
    }

    fn bpffs(&mut self) -> Result<()> {
        if bpffs_mounted()? {
            self.ok("bpffs", BPFFS);
        } else if self.mode == Mode::Install && !self.is_root {
            eprintln!("setup: bpffs: not mounted on {BPFFS} (mounting it needs root; skipped)");
        } else if self.need("bpffs", &format!("not mounted on {BPFFS}"), true)? {
            run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
        }
        Ok(())
    }
}

fn describe(tc: &Toolchain) -> String {
    if tc.bootstrap {
        format!("{} with RUSTC_BOOTSTRAP=1", tc.name)
    } else {
        tc.name.to_owned()
    }
}

/// Effective uid 0, from `/proc/self/status` (no libc dependency).
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Fails with a clear message unless running as root.
pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} must run as root (it creates network namespaces and loads BPF programs); try `sudo -E cargo xtask ...`");
    }
    Ok(())
}

/// `rustc -vV` of `toolchain` (via `rustup run`, independent of PATH), line `LLVM version: 22.1.4`.
fn rustc_llvm_major(toolchain: &str) -> Result<u32> {
    let out = probe_stdout(Command::new("rustup").args(["run", toolchain, "rustc", "-vV"]))
        .with_context(|| format!("querying rustc of toolchain `{toolchain}`"))?;
    parse_rustc_llvm_major(&out)
        .with_context(|| format!("no `LLVM version: N.x` line in `rustc +{toolchain} -vV`:\n{out}"))
}

/// `LLVM version: 22.1.4` in `rustc -vV` output → 22.
fn parse_rustc_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
}

/// Of `components`, those not installed for `toolchain` (None: the active one in the workspace).
fn has_components(toolchain: Option<&str>, components: &[&str]) -> Result<Vec<String>> {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root())
        .args(["component", "list", "--installed"]);
    if let Some(tc) = toolchain {
        cmd.args(["--toolchain", tc]);
    }
    let installed = probe_stdout(&mut cmd)?;
    // Lines look like `rust-src` or `clippy-x86_64-unknown-linux-gnu`.
    Ok(components
        .iter()
        .filter(|c| {
            !installed.lines().any(|l| {
                let l = l.trim();
                l == **c || l.starts_with(&format!("{c}-"))
            })
        })
        .map(|c| (*c).to_owned())
        .collect())
}

/// Of `packages`, those whose dpkg status is not `install ok installed` (one dpkg-query call).
fn missing_packages(packages: &[String]) -> Result<Vec<String>> {
    // dpkg-query exits 1 when it knows nothing of some package; its output still lists the others.
    let out = probe(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package}\t${Status}\n"])
            .args(packages),
    )
    .context("dpkg-query is required: setup supports Debian-based systems only")?;
    let installed: BTreeSet<&str> = std::str::from_utf8(&out.stdout)
        .context("dpkg-query printed non-UTF-8 output")?
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, status)| *status == "install ok installed")
        .map(|(name, _)| name)
        .collect();
    Ok(packages
        .iter()
        .filter(|p| !installed.contains(p.as_str()))
        .cloned()
        .collect())
}

fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(Path::new(&home).join(".cargo"))
}

/// Records the LLVM major bpf-linker was installed for, for when `ldd` cannot tell (static link).
fn stamp_file() -> Result<PathBuf> {
    Ok(cargo_home()?.join("bpf-linker.llvm"))
}

struct Linker {
    path: PathBuf,
    /// Its directory, when `PATH` would find another bpf-linker first (or none).
    prepend_dir: Option<PathBuf>,
}

/// The first bpf-linker (on `PATH`, then in `$CARGO_HOME/bin`) that runs and uses `llvm_major`;
/// otherwise what is wrong with the first one found.
fn select_bpf_linker(llvm_major: u32) -> Result<Result<Linker, String>> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("bpf-linker"))
        .filter(|p| p.is_file())
        .collect();
    let first_on_path = candidates.first().cloned();
    let cargo_bin = cargo_home()?.join("bin").join("bpf-linker");
    if cargo_bin.is_file() && !candidates.contains(&cargo_bin) {
        candidates.push(cargo_bin);
    }

    let mut problem = None;
    for path in candidates {
        let runs = probe(Command::new(&path).arg("--version"))
            .map(|out| out.status.success())
            .unwrap_or(false);
        let found = match linker_llvm_major(&path)? {
            _ if !runs => format!("`{} --version` fails", path.display()),
            Some(m) if m == llvm_major => {
                let prepend_dir = if first_on_path.as_ref() == Some(&path) {
                    None
                } else {
                    path.parent().map(Path::to_path_buf)
                };
                return Ok(Ok(Linker { path, prepend_dir }));
            }
            Some(m) => format!(
                "{} uses LLVM {m}, the eBPF toolchain uses LLVM {llvm_major}",
                path.display()
            ),
            None => format!(
                "cannot tell which LLVM {} was built against",
                path.display()
            ),
        };
        problem.get_or_insert(found);
    }
    Ok(Err(problem.unwrap_or_else(|| "not found".to_owned())))
}

/// The LLVM major bpf-linker uses: from the `libLLVM.so.<major>` / `libLLVM-<major>.so` it is
/// dynamically linked against (`ldd`), else (for `$CARGO_HOME/bin/bpf-linker`) from the stamp
/// file written when we installed it.
/// (`bpf-linker --version` and `--help` do not state the LLVM version.)
fn linker_llvm_major(path: &Path) -> Result<Option<u32>> {
    let out = probe(Command::new("ldd").arg(path))?;
    let from_ldd = parse_ldd_llvm_major(&String::from_utf8_lossy(&out.stdout));
    if from_ldd.is_some() {
        return Ok(from_ldd);
    }
    // The stamp describes the bpf-linker that `cargo install` put in $CARGO_HOME/bin only.
    if path != cargo_home()?.join("bin").join("bpf-linker") {
        return Ok(None);
    }
    Ok(fs::read_to_string(stamp_file()?)
        .ok()
        .and_then(|s| s.trim().parse().ok()))
}

/// `libLLVM.so.22.1 => ...` or `libLLVM-22.so => ...` in `ldd` output → 22.
fn parse_ldd_llvm_major(ldd: &str) -> Option<u32> {
    ldd.lines().find_map(|l| {
        let rest = &l[l.find("libLLVM")? + "libLLVM".len()..];
        let digits: String = rest
            .trim_start_matches(['.', '-', 's', 'o'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

/// `cargo install bpf-linker` against Debian's `llvm-<major>-dev`, then writes the stamp file.
fn install_bpf_linker(llvm_major: u32) -> Result<()> {
    let prefix = format!("/usr/lib/llvm-{llvm_major}");
    if !Path::new(&prefix).join("bin/llvm-config").exists() {
        bail!("{prefix}/bin/llvm-config not found: bpf-linker needs package llvm-{llvm_major}-dev");
    }
    let feature = format!("llvm-{llvm_major}");
    let install = |locked: bool| {
        let mut cmd = Command::new("cargo");
        cmd.env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
            ])
            .arg(&feature)
            // Replace an installed bpf-linker built for another LLVM.
            .arg("--force")
            .stdin(Stdio::null());
        if locked {
            cmd.arg("--locked");
        }
        run(&mut cmd)
    };
    if let Err(e) = install(true) {
        eprintln!(
            "setup: bpf-linker: `--locked` install failed ({e:#}); retrying without --locked"
        );
        install(false).context("installing bpf-linker")?;
    }
    let stamp = stamp_file()?;
    fs::write(&stamp, format!("{llvm_major}\n"))
        .with_context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}

/// Whether a bpf filesystem is mounted on `/sys/fs/bpf` (from `/proc/self/mounts`, so the check
/// needs no util-linux and also verifies the filesystem type).
fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    Ok(mounts.lines().any(|l| {
        let mut fields = l.split_whitespace().skip(1);
        fields.next() == Some(BPFFS) && fields.next() == Some("bpf")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustc_llvm_major() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nhost: x86_64-unknown-linux-gnu\n\
                  release: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(parse_rustc_llvm_major(vv), Some(22));
        assert_eq!(parse_rustc_llvm_major("rustc 1.0\n"), None);
    }

    #[test]
    fn ldd_llvm_major() {
        let ldd = "\tlinux-vdso.so.1 (0x00007f9c97460000)\n\
                   \tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007f9c8e200000)\n";
        assert_eq!(parse_ldd_llvm_major(ldd), Some(22));
        let ldd = "\tlibLLVM-19.so => /usr/lib/x86_64-linux-gnu/libLLVM-19.so (0x1)\n";
        assert_eq!(parse_ldd_llvm_major(ldd), Some(19));
        assert_eq!(parse_ldd_llvm_major("\tstatically linked\n"), None);
    }
}
