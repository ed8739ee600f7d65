//! `cargo xtask dist`: everything a real install needs, in `target/dist/`: the binaries, the
//! systemd unit, the example configuration, man pages and shell completions (the last two
//! generated from the clap definitions by the hidden `vrfctl generate`).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{
    cargo::{build_binaries, probe, root, target_dir, BINARIES},
    setup,
};

/// Files copied from `dist/` in the repository.
const STATIC_FILES: [&str; 2] = ["vrfd.service", "vrf-xdp.toml"];

/// The file name a shell expects for a program's completions.
type FileName = fn(&str) -> String;

/// Shells with completions (written to `completions/<shell>/`).
const SHELLS: [(&str, FileName); 3] = [
    ("bash", |bin| bin.to_owned()),
    ("zsh", |bin| format!("_{bin}")),
    ("fish", |bin| format!("{bin}.fish")),
];

/// Builds (release) and writes `target/dist/`; returns its path.
pub fn dist() -> Result<PathBuf> {
    let tc = setup::ensure(true)?;
    let bin_dir = build_binaries(&tc, true)?;
    let out = stage(&bin_dir)?;
    print_install(&out)?;
    Ok(out)
}

/// Writes `target/dist/` from the binaries in `bin_dir` (what `cargo xtask deb` packs too).
pub fn stage(bin_dir: &Path) -> Result<PathBuf> {
    let out = target_dir().join("dist");
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    let vrfctl = bin_dir.join("vrfctl");

    for bin in BINARIES {
        copy(&bin_dir.join(bin), &out.join("sbin").join(bin), 0o755)?;
    }
    for file in STATIC_FILES {
        copy(&root().join("dist").join(file), &out.join(file), 0o644)?;
    }
    let man_dir = out.join("man/man8");
    for bin in BINARIES {
        // `<bin>.8`, and `vrfctl-show.8`, ... for vrfctl's subcommands.
        let dir = man_dir.to_str().context("non-UTF-8 target directory")?;
        generate(&vrfctl, &["man", bin, "--out-dir", dir])?;
        for (shell, file) in SHELLS {
            let script = generate(&vrfctl, &["completions", shell, bin])?;
            write(
                &out.join("completions").join(shell).join(file(bin)),
                &script,
            )?;
        }
    }

    Ok(out)
}

fn print_install(out: &Path) -> Result<()> {
    let man_dir = out.join("man/man8");
    let rel = out
        .strip_prefix(root())
        .unwrap_or(out)
        .display()
        .to_string();
    println!("{}", out.display());
    let mut pages: Vec<String> = fs::read_dir(&man_dir)
        .with_context(|| format!("listing {}", man_dir.display()))?
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    pages.sort();
    eprintln!(
        "dist: wrote {rel}/: sbin/{{vrfd,vrfctl}}, vrfd.service, vrf-xdp.toml, man/man8/ ({}), \
         completions/{{bash,zsh,fish}}/\n\
         dist: install it (as root) with:\n\
         \x20 install -m 0755 {rel}/sbin/vrfd {rel}/sbin/vrfctl /usr/sbin/\n\
         \x20 install -m 0644 {rel}/vrfd.service /etc/systemd/system/\n\
         \x20 [ -e /etc/vrf-xdp.toml ] || install -m 0644 {rel}/vrf-xdp.toml /etc/\n\
         \x20 install -D -m 0644 -t /usr/local/share/man/man8 {rel}/man/man8/*\n\
         \x20 install -D -m 0644 -t /usr/local/share/bash-completion/completions {rel}/completions/bash/*\n\
         \x20 install -D -m 0644 -t /usr/local/share/zsh/site-functions {rel}/completions/zsh/*\n\
         \x20 install -D -m 0644 -t /usr/local/share/fish/vendor_completions.d {rel}/completions/fish/*\n\
         \x20 systemctl daemon-reload && systemctl enable --now vrfd\n\
         dist: or build the Debian package with `cargo xtask deb` and `dpkg -i` it",
        pages.join(" ")
    );
    Ok(())
}

/// `vrfctl generate ARGS`: its stdout, which must not be empty.
fn generate(vrfctl: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let mut cmd = Command::new(vrfctl);
    cmd.arg("generate").args(args);
    let out = probe(&mut cmd)?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "`vrfctl generate {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", path.display()))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}
