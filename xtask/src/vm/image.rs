//! The guest: a Debian 12 root file system built by mmdebstrap from the package list
//! `vm/image/packages` and the hook `vm/image/customize.sh`, as an ext4 disk image, with the
//! kernel and initramfs Debian installed in it copied out beside it.
//!
//! Cached outside the clone, in `$VRF_XDP_VM_CACHE` or `/var/cache/vrf-xdp/vm`, under a
//! directory named after a hash of the recipe (the package list, the hook, and the mmdebstrap
//! arguments below): a second run, or another clone, finds it; a changed recipe builds anew.
//! QEMU opens the disk with `snapshot=on`, so the cached image is never written.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::cargo::{probe_stdout, root, run};

/// Debian 12, the oldest release vrf-xdp supports, with its 6.1 kernel.
const SUITE: &str = "bookworm";
const MIRRORS: [&str; 3] = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];
/// The size of the ext4 file system (sparse: only what is written takes space).
const DISK_SIZE: &str = "3G";
/// Bump when the way the image is built changes in ways the files above do not show.
const RECIPE: &str = "vrf-xdp vm image v1: mmdebstrap minbase, ext4 /dev/vda, cloud kernel";
/// Marks a completely built image directory.
const COMPLETE: &str = ".complete";
/// Touched by every run that uses the image.
const USED: &str = ".used";
/// Images no run used for this long are removed when a new one is built.
const KEEP_UNUSED: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

pub struct Image {
    pub dir: PathBuf,
    /// The ext4 root file system (`/dev/vda` in the guest).
    pub disk: PathBuf,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    /// `6.1.0-<abi>-cloud-amd64`.
    pub kernel_release: String,
    /// Whether this run built it (else it came from the cache).
    pub built: bool,
}

/// The cached image for the current recipe, built first when it is not there.
pub fn ensure() -> Result<Image> {
    let recipe_dir = root().join("vm/image");
    let packages = read_packages(&recipe_dir.join("packages"))?;
    let hook = recipe_dir.join("customize.sh");
    let hook_text =
        fs::read_to_string(&hook).with_context(|| format!("reading {}", hook.display()))?;
    let key = format!(
        "{:016x}",
        fnv1a(&[
            RECIPE,
            SUITE,
            &MIRRORS.join("\n"),
            DISK_SIZE,
            &packages.join(","),
            &hook_text
        ])
    );
    let cache = cache_dir();
    let dir = cache.join(format!("{SUITE}-{key}"));
    if dir.join(COMPLETE).is_file() {
        let _ = fs::write(dir.join(USED), b"");
        return image_in(&dir, false);
    }
    prune(&cache);
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let tmp = cache.join(format!(".{SUITE}-{key}.{}.tmp", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    let result = build(&tmp, &packages, &hook);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() && !dir.join(COMPLETE).is_file() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    if let Err(e) = fs::rename(&tmp, &dir) {
        // Another run may have built the same image meanwhile: use that one.
        let _ = fs::remove_dir_all(&tmp);
        if !dir.join(COMPLETE).is_file() {
            return Err(e).with_context(|| format!("moving {} into place", tmp.display()));
        }
    }
    image_in(&dir, true)
}

/// Removes what interrupted builds left, and the images (other recipes: other branches, older commits) no run used for
/// [`KEEP_UNUSED`]; each is some 500 MB.
fn prune(cache: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let stamp = if dir.join(USED).exists() {
            dir.join(USED)
        } else {
            dir.join(COMPLETE)
        };
        let age = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        // `.<suite>-<key>.<pid>.tmp`: a build whose process is gone.
        let dead_build = name.starts_with('.')
            && name
                .strip_suffix(".tmp")
                .and_then(|n| n.rsplit('.').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if dead_build {
            let _ = fs::remove_dir_all(&dir);
        } else if name.starts_with(&format!("{SUITE}-")) && age.is_some_and(|a| a > KEEP_UNUSED) {
            eprintln!("vm-test: removing {} (unused for 14 days)", dir.display());
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

fn cache_dir() -> PathBuf {
    std::env::var_os("VRF_XDP_VM_CACHE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/var/cache/vrf-xdp/vm"), PathBuf::from)
}

/// Package names, one a line; `#` starts a comment.
fn read_packages(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let packages: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = packages.iter().find(|p| {
        !p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    }) {
        bail!("{}: {bad:?} is not a package name", path.display());
    }
    Ok(packages)
}

/// mmdebstrap into `tmp/root`, the ext4 image from it, the kernel and initramfs copied out.
fn build(tmp: &Path, packages: &[String], hook: &Path) -> Result<()> {
    eprintln!(
        "vm-test: building the Debian {SUITE} image ({} packages) in {}; later runs reuse it",
        packages.len(),
        tmp.display()
    );
    let rootfs = tmp.join("root");
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", "--mode=root", "--format=directory"])
        .arg(format!("--include={}", packages.join(",")))
        .arg("--aptopt=Acquire::Check-Valid-Until \"false\"")
        .arg("--aptopt=Acquire::Retries \"3\"")
        .arg(format!("--customize-hook={} \"$1\"", hook.display()))
        .arg(SUITE)
        .arg(&rootfs)
        .args(MIRRORS)
        .stdin(Stdio::null());
    run(&mut cmd).context("mmdebstrap (package mmdebstrap: `cargo xtask setup`)")?;

    let boot = rootfs.join("boot");
    let vmlinuz = newest(&boot, "vmlinuz-")?;
    let release = vmlinuz
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_owned();
    let initrd = boot.join(format!("initrd.img-{release}"));
    if !initrd.is_file() {
        bail!("the image has no {}", initrd.display());
    }
    fs::copy(&vmlinuz, tmp.join("vmlinuz"))?;
    fs::copy(&initrd, tmp.join("initrd.img"))?;
    let manifest = probe_stdout(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                rootfs.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Package} ${Version}\\n"]),
    )?;
    fs::write(tmp.join("packages.txt"), manifest)?;

    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-L", "vrf-xdp-vm", "-d"])
        .arg(&rootfs)
        .arg(tmp.join("rootfs.img"))
        .arg(DISK_SIZE))
    .context("mkfs.ext4 -d (package e2fsprogs)")?;
    fs::remove_dir_all(&rootfs).with_context(|| format!("removing {}", rootfs.display()))?;
    fs::write(tmp.join(COMPLETE), format!("{release}\n"))?;
    Ok(())
}

/// The last (by name) file in `dir` starting with `prefix`.
fn newest(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    found
        .pop()
        .with_context(|| format!("no {prefix}* in {}", dir.display()))
}

fn image_in(dir: &Path, built: bool) -> Result<Image> {
    let release = fs::read_to_string(dir.join(COMPLETE))?.trim().to_owned();
    let image = Image {
        dir: dir.to_path_buf(),
        disk: dir.join("rootfs.img"),
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        kernel_release: release,
        built,
    };
    for f in [&image.disk, &image.vmlinuz, &image.initrd] {
        if !f.is_file() {
            bail!(
                "{} is missing: delete {} and run again",
                f.display(),
                dir.display()
            );
        }
    }
    Ok(image)
}

/// FNV-1a (64 bits) over the parts, each followed by a NUL: a stable cache key, not a security
/// measure.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable() {
        // The separator keeps parts apart.
        assert_ne!(fnv1a(&["a"]), fnv1a(&["a", ""]));
        assert_eq!(fnv1a(&["ab"]), fnv1a(&["ab"]));
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
    }
}
