//! `cargo xtask deb`: the Debian package `vrf-xdp_<version>_amd64.deb`, built with `dpkg-deb`
//! from what `cargo xtask dist` stages (no cargo-deb: nothing to build or install for it).
//!
//! Contents: `/usr/sbin/{vrfd,vrfctl}` (stripped), the systemd unit in `/lib/systemd/system`
//! (installed, not enabled: vrfd serves what the operator declares, so the operator starts it),
//! `/etc/vrf-xdp.toml` as a conffile, man pages, bash/zsh/fish completions, the copyright file
//! and changelog. `Depends:` comes from `dpkg-shlibdeps`. The maintainer scripts are those
//! `dh_installsystemd` writes for a unit that is not enabled or started on install.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{
    cargo::{build_binaries, probe, probe_stdout, root, run, target_dir, BINARIES},
    dist, setup,
};

const PACKAGE: &str = "vrf-xdp";
const MAINTAINER: &str = "vrf-xdp developers <vrf-xdp@example.org>";
const CONFFILE: &str = "/etc/vrf-xdp.toml";
const UNIT: &str = "vrfd.service";

const DESCRIPTION: &str = "\
Description: XDP fast path for Linux VRFs
 vrf-xdp forwards the packets of Linux VRFs (kernel VRF devices, or VRFs
 built from policy routing) in XDP, with the kernel's own routing tables,
 neighbours and rules as the control plane: vrfd mirrors them into BPF maps
 over rtnetlink and passes to the kernel whatever it cannot decide exactly
 as the kernel would.
 .
 This package ships vrfd (the daemon, with its systemd unit), vrfctl (to
 inspect its maps and counters), man pages and shell completions.
";

const POSTINST: &str = "#!/bin/sh
set -e
# As dh_installsystemd for a unit that is neither enabled nor started on install: vrfd serves
# the VRFs the operator configured, so `systemctl enable --now vrfd` is the operator's step.
if [ \"$1\" = configure ] || [ \"$1\" = abort-upgrade ] || [ \"$1\" = abort-deconfigure ] || [ \"$1\" = abort-remove ]; then
\tif [ -d /run/systemd/system ]; then
\t\tsystemctl --system daemon-reload >/dev/null || true
\t\t# An upgrade restarts a running vrfd with the new binary.
\t\tif [ -n \"$2\" ]; then
\t\t\tdeb-systemd-invoke try-restart vrfd.service >/dev/null || true
\t\tfi
\tfi
fi
";

const PRERM: &str = "#!/bin/sh
set -e
# Removing the package stops vrfd, which detaches from every member and removes its pins.
if [ -d /run/systemd/system ] && [ \"$1\" = remove ]; then
\tdeb-systemd-invoke stop vrfd.service >/dev/null || true
fi
";

const POSTRM: &str = "#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
\tsystemctl --system daemon-reload >/dev/null || true
fi
if [ \"$1\" = purge ] && [ -x \"$(command -v deb-systemd-helper)\" ]; then
\tdeb-systemd-helper purge vrfd.service >/dev/null || true
fi
";

/// `cargo xtask deb`: builds (release) and writes the package; returns its path.
pub fn deb() -> Result<PathBuf> {
    let tc = setup::ensure(true)?;
    let bin_dir = build_binaries(&tc, true)?;
    let deb = build(&bin_dir)?;
    println!("{}", deb.display());
    eprintln!(
        "deb: install it with `dpkg -i {}`, then `systemctl enable --now vrfd`",
        deb.display()
    );
    Ok(deb)
}

/// Packs `target/deb/vrf-xdp_<version>_amd64.deb` from the binaries in `bin_dir`.
pub fn build(bin_dir: &Path) -> Result<PathBuf> {
    let staged = dist::stage(bin_dir)?;
    let version = version()?;
    let out_dir = target_dir().join("deb");
    let tree = out_dir.join("root");
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }

    for bin in BINARIES {
        let to = tree.join("usr/sbin").join(bin);
        install(&staged.join("sbin").join(bin), &to, 0o755)?;
        // Debian ships stripped binaries (the embedded eBPF object is data: untouched).
        run(Command::new("strip")
            .args(["--strip-unneeded", "--remove-section=.comment"])
            .arg(&to))?;
    }
    let unit = fs::read_to_string(staged.join(UNIT))?;
    if !unit.contains("ExecStart=/usr/sbin/vrfd ") {
        bail!("dist/{UNIT}: ExecStart must run /usr/sbin/vrfd, where the package puts it");
    }
    install(
        &staged.join(UNIT),
        &tree.join("lib/systemd/system").join(UNIT),
        0o644,
    )?;
    install(
        &staged.join("vrf-xdp.toml"),
        &tree.join(CONFFILE.trim_start_matches('/')),
        0o644,
    )?;
    let man_out = tree.join("usr/share/man/man8");
    for page in sorted_files(&staged.join("man/man8"))? {
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        gzip(&page, &man_out.join(format!("{name}.gz")))?;
    }
    for (shell, dir) in [
        ("bash", "usr/share/bash-completion/completions"),
        ("zsh", "usr/share/zsh/vendor-completions"),
        ("fish", "usr/share/fish/vendor_completions.d"),
    ] {
        for file in sorted_files(&staged.join("completions").join(shell))? {
            install(
                &file,
                &tree.join(dir).join(file.file_name().unwrap()),
                0o644,
            )?;
        }
    }
    let doc = tree.join("usr/share/doc").join(PACKAGE);
    write(&doc.join("copyright"), copyright()?.as_bytes(), 0o644)?;
    let changelog = out_dir.join("changelog");
    write(&changelog, self::changelog(&version)?.as_bytes(), 0o644)?;
    gzip(&changelog, &doc.join("changelog.gz"))?;

    let control_dir = tree.join("DEBIAN");
    write(
        &control_dir.join("conffiles"),
        format!("{CONFFILE}\n").as_bytes(),
        0o644,
    )?;
    write(&control_dir.join("postinst"), POSTINST.as_bytes(), 0o755)?;
    write(&control_dir.join("prerm"), PRERM.as_bytes(), 0o755)?;
    write(&control_dir.join("postrm"), POSTRM.as_bytes(), 0o755)?;
    write(
        &control_dir.join("md5sums"),
        md5sums(&tree)?.as_bytes(),
        0o644,
    )?;
    let binaries: Vec<PathBuf> = BINARIES
        .iter()
        .map(|b| tree.join("usr/sbin").join(b))
        .collect();
    // vrfd reads the nftables ruleset through `nft -j`: without nft it must leave every VRF to
    // the kernel, so nftables is a dependency, not a recommendation.
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: amd64\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {}\n\
         Depends: {}, nftables\n\
         Recommends: iproute2\n\
         Section: net\n\
         Priority: optional\n\
         {DESCRIPTION}",
        installed_size_kib(&tree)?,
        shlib_depends(&out_dir, &binaries)?,
    );
    write(&control_dir.join("control"), control.as_bytes(), 0o644)?;

    let deb = out_dir.join(format!("{PACKAGE}_{version}_amd64.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(&deb))
    .context("dpkg-deb --build (package dpkg)")?;
    Ok(deb)
}

/// `lintian` on the package: fails on any error (warnings are printed, not fatal).
pub fn lintian(deb: &Path) -> Result<()> {
    let mut cmd = Command::new("lintian");
    cmd.args(["--no-tag-display-limit", "--fail-on", "error"])
        .arg(deb);
    let line = crate::cargo::display(&cmd);
    eprintln!("$ {line}");
    let out = probe(&mut cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text.lines() {
        eprintln!("lintian| {l}");
    }
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}{}",
            out.status,
            text.lines()
                .filter(|l| l.starts_with("E: "))
                .collect::<Vec<_>>()
                .join("; "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let warnings = text.lines().filter(|l| l.starts_with("W: ")).count();
    eprintln!("lintian: no errors ({warnings} warnings)");
    Ok(())
}

/// The workspace version (`version` under `[workspace.package]` in Cargo.toml).
fn version() -> Result<String> {
    let toml = fs::read_to_string(root().join("Cargo.toml"))?;
    let mut in_section = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
        } else if in_section {
            if let Some(v) = line.strip_prefix("version") {
                let v = v
                    .trim_start()
                    .trim_start_matches('=')
                    .trim()
                    .trim_matches('"');
                if !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".+~".contains(c))
                {
                    return Ok(v.replace('-', "~"));
                }
                bail!("Cargo.toml: workspace version {v:?} is not a Debian version");
            }
        }
    }
    bail!("Cargo.toml has no version under [workspace.package]")
}

/// The copyright file in Debian's machine-readable format; the licenses are the workspace's
/// (`MIT OR Apache-2.0`; DEP-5 calls MIT "Expat").
fn copyright() -> Result<String> {
    let toml = fs::read_to_string(root().join("Cargo.toml"))?;
    if !toml.contains("license = \"MIT OR Apache-2.0\"") {
        bail!("Cargo.toml's license changed: update the copyright file in xtask/src/deb.rs");
    }
    Ok(COPYRIGHT.to_owned())
}

const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vrf-xdp

Files: *
Copyright: 2026 the vrf-xdp developers
License: Expat or Apache-2.0

License: Expat
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the \"Software\"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
 SOFTWARE.

License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
";

/// A one-entry Debian changelog dated by the last commit (the same commit, the same package).
fn changelog(version: &str) -> Result<String> {
    let date =
        probe_stdout(
            Command::new("git")
                .current_dir(root())
                .args(["log", "-1", "--format=%cD"]),
        )
        .map(|d| d.trim().to_owned())
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned());
    Ok(format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\
         \n\
         \x20 * Built from the vrf-xdp repository by `cargo xtask deb`.\n\
         \n\
         \x20-- {MAINTAINER}  {date}\n"
    ))
}

/// `Depends:` from `dpkg-shlibdeps` (it wants a `debian/control` in its working directory).
fn shlib_depends(work: &Path, binaries: &[PathBuf]) -> Result<String> {
    let dir = work.join("shlibdeps");
    write(
        &dir.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n").as_bytes(),
        0o644,
    )?;
    let mut cmd = Command::new("dpkg-shlibdeps");
    cmd.current_dir(&dir).arg("-O");
    for b in binaries {
        cmd.arg(format!("-e{}", b.display()));
    }
    let out = probe_stdout(&mut cmd).context("dpkg-shlibdeps (package dpkg-dev)")?;
    let deps = out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {out:?}"))?;
    Ok(deps.to_owned())
}

/// `md5sum` lines of every file under `tree` except `DEBIAN/`, as dpkg expects them.
fn md5sums(tree: &Path) -> Result<String> {
    let mut files = Vec::new();
    walk(tree, &mut files)?;
    files.retain(|f| !f.starts_with(tree.join("DEBIAN")));
    files.sort();
    let mut cmd = Command::new("md5sum");
    cmd.current_dir(tree);
    for f in &files {
        cmd.arg(f.strip_prefix(tree).expect("under tree"));
    }
    probe_stdout(&mut cmd)
}

/// Installed-Size: the files' sizes in KiB, as dpkg-gencontrol counts them (rounded up each).
fn installed_size_kib(tree: &Path) -> Result<u64> {
    let mut files = Vec::new();
    walk(tree, &mut files)?;
    let mut kib = 0;
    for f in files.iter().filter(|f| !f.starts_with(tree.join("DEBIAN"))) {
        kib += fs::metadata(f)?.len().div_ceil(1024);
    }
    Ok(kib.max(1))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}

fn sorted_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// `gzip -9n` (no name, no timestamp: what Debian policy asks of man pages and changelogs).
fn gzip(from: &Path, to: &Path) -> Result<()> {
    let out = probe(Command::new("gzip").args(["-9n", "-c"]).arg(from))?;
    if !out.status.success() {
        bail!("gzip {} failed", from.display());
    }
    write(to, &out.stdout, 0o644)
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let data = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &data, mode)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // dpkg-deb refuses group/other-writable directories; the umask may have made them so.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}
