//! The guest kernel: Debian's `linux-image-6.1.0-<abi>-cloud-amd64-unsigned` package, fetched
//! with `apt-get download` and unpacked with `dpkg -x` into `target/vm/`, where later runs find it
//! without touching the network.
//!
//! Which ABI: `VRF_XDP_VM_KERNEL=6.1.0-<abi>` forces one; otherwise an already unpacked kernel is
//! reused (the newest, when several are); otherwise the newest 6.1 cloud-amd64-unsigned package
//! `apt-cache search` knows (after an `apt-get update` if it knows none).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::cargo::{probe_stdout, run};

/// The kernel series the lane boots: the oldest one vrf-xdp supports (Debian 12's).
const SERIES: &str = "6.1.0";
/// Marks a completely unpacked kernel directory.
const COMPLETE: &str = ".complete";

/// An unpacked kernel package.
pub struct Kernel {
    /// `6.1.0-56-cloud-amd64`: `uname -r` in the guest, the name under `lib/modules`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the unpacked package.
    pub modules: PathBuf,
    /// Whether it was downloaded by this run (else it came from the cache).
    pub downloaded: bool,
}

/// The kernel in `cache` (a directory under `target/vm`), downloading and unpacking it first when
/// it is not there.
pub fn ensure(cache: &Path) -> Result<Kernel> {
    let forced = std::env::var("VRF_XDP_VM_KERNEL")
        .ok()
        .filter(|v| !v.is_empty());
    let abi = match forced {
        Some(v) => Some(parse_abi(&v).with_context(|| {
            format!("VRF_XDP_VM_KERNEL={v}: expected {SERIES}-<abi>, e.g. {SERIES}-56")
        })?),
        None => newest_cached(cache)?,
    };
    if let Some(abi) = abi {
        let dir = unpacked_dir(cache, abi);
        if dir.join(COMPLETE).is_file() {
            return kernel_in(&dir, abi, false);
        }
        return download(cache, abi);
    }
    download(cache, newest_available()?)
}

/// `6.1.0-56` or `6.1.0-56-cloud-amd64` → 56.
fn parse_abi(version: &str) -> Option<u32> {
    let rest = version.strip_prefix(SERIES)?.strip_prefix('-')?;
    let rest = rest.strip_suffix("-cloud-amd64").unwrap_or(rest);
    rest.parse().ok()
}

fn release(abi: u32) -> String {
    format!("{SERIES}-{abi}-cloud-amd64")
}

fn package(abi: u32) -> String {
    format!("linux-image-{}-unsigned", release(abi))
}

fn unpacked_dir(cache: &Path, abi: u32) -> PathBuf {
    cache.join(format!("linux-{}", release(abi)))
}

/// The newest completely unpacked kernel in `cache`.
fn newest_cached(cache: &Path) -> Result<Option<u32>> {
    let Ok(entries) = fs::read_dir(cache) else {
        return Ok(None);
    };
    let mut best = None;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(abi) = name
            .to_str()
            .and_then(|n| n.strip_prefix("linux-"))
            .and_then(parse_abi)
        else {
            continue;
        };
        if entry.path().join(COMPLETE).is_file() && best.is_none_or(|b| abi > b) {
            best = Some(abi);
        }
    }
    Ok(best)
}

/// The newest `linux-image-6.1.0-<abi>-cloud-amd64-unsigned` apt knows of.
fn newest_available() -> Result<u32> {
    if let Some(abi) = search()? {
        return Ok(abi);
    }
    eprintln!("vm-test: apt knows no {SERIES} cloud kernel; updating the package lists");
    run(Command::new("apt-get").arg("update").stdin(Stdio::null()))?;
    search()?.with_context(|| {
        format!("no linux-image-{SERIES}-<abi>-cloud-amd64-unsigned package in apt's lists")
    })
}

fn search() -> Result<Option<u32>> {
    let pattern = format!(
        "^linux-image-{}-[0-9]+-cloud-amd64-unsigned$",
        SERIES.replace('.', "\\.")
    );
    let out = probe_stdout(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    Ok(newest_in_search(&out))
}

/// The highest ABI among `apt-cache search` lines `linux-image-6.1.0-<abi>-cloud-amd64-unsigned - …`.
fn newest_in_search(out: &str) -> Option<u32> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            name.strip_prefix("linux-image-")?
                .strip_suffix("-unsigned")
                .and_then(parse_abi)
        })
        .max()
}

/// `apt-get download` the package (kept in `cache/debs`), `dpkg -x` it next to its final place,
/// then move it there.
fn download(cache: &Path, abi: u32) -> Result<Kernel> {
    let pkg = package(abi);
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let deb = match find_deb(&debs, &pkg)? {
        Some(deb) => deb,
        None => {
            eprintln!("vm-test: downloading {pkg}");
            // As root, apt's download sandbox user cannot write here: download as root.
            run(Command::new("apt-get")
                .current_dir(&debs)
                .args(["-o", "APT::Sandbox::User=root", "download", &pkg])
                .stdin(Stdio::null()))
            .with_context(|| format!("downloading {pkg}"))?;
            find_deb(&debs, &pkg)?.with_context(|| {
                format!("apt-get download left no {pkg}_*.deb in {}", debs.display())
            })?
        }
    };
    let dir = unpacked_dir(cache, abi);
    // Unpacked beside its final place under a name of our own, then moved there in one step.
    let tmp = cache.join(format!(
        ".linux-{}.{}.tmp",
        release(abi),
        std::process::id()
    ));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))
        .with_context(|| format!("unpacking {}", deb.display()))?;
    fs::write(tmp.join(COMPLETE), format!("{pkg}\n"))?;
    if dir.exists() && !dir.join(COMPLETE).is_file() {
        // An unpacking that never finished.
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    if let Err(e) = fs::rename(&tmp, &dir) {
        // Another run may have put the same kernel there meanwhile: use that one.
        let _ = fs::remove_dir_all(&tmp);
        if !dir.join(COMPLETE).is_file() {
            return Err(e).with_context(|| format!("moving {} into place", tmp.display()));
        }
    }
    kernel_in(&dir, abi, true)
}

fn find_deb(dir: &Path, pkg: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{pkg}_");
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn kernel_in(dir: &Path, abi: u32, downloaded: bool) -> Result<Kernel> {
    let release = release(abi);
    let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
    let modules = dir.join("lib/modules").join(&release);
    if !vmlinuz.is_file() || !modules.is_dir() {
        bail!(
            "{} has no boot/vmlinuz-{release} or lib/modules/{release}: delete it and run again",
            dir.display()
        );
    }
    Ok(Kernel {
        release,
        vmlinuz,
        modules,
        downloaded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi() {
        assert_eq!(parse_abi("6.1.0-56"), Some(56));
        assert_eq!(parse_abi("6.1.0-56-cloud-amd64"), Some(56));
        assert_eq!(parse_abi("6.12.0-1"), None);
        assert_eq!(parse_abi("6.1.0-x"), None);
    }

    #[test]
    fn search_output() {
        let out = "linux-image-6.1.0-47-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud\n\
                   linux-image-6.1.0-56-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud\n\
                   linux-image-6.1.0-9-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud\n\
                   linux-image-6.1.0-99-cloud-amd64-unsigned-dbg - debug\n";
        assert_eq!(newest_in_search(out), Some(56));
        assert_eq!(newest_in_search(""), None);
    }
}
