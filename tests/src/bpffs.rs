//! bpffs at /sys/fs/bpf (mounted on demand, never unmounted) and per-test pin directories.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use crate::cmd::{global_lock, unique_suffix};

pub const BPFFS: &str = "/sys/fs/bpf";

/// Whether a bpf filesystem is mounted exactly at `dir` (per /proc/self/mountinfo).
pub fn is_bpffs_mounted(dir: &str) -> Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("read mountinfo")?;
    Ok(info.lines().any(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        let mount_point = fields.get(4).copied();
        let fstype = l
            .split_once(" - ")
            .and_then(|(_, rest)| rest.split_whitespace().next());
        mount_point == Some(dir) && fstype == Some("bpf")
    }))
}

fn mount_bpffs() -> Result<()> {
    // Serialise with other test processes: two concurrent mounts would stack two distinct
    // bpffs instances and hide pins made in the lower one.
    let _lock = global_lock()?;
    if is_bpffs_mounted(BPFFS)? {
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS).with_context(|| format!("mkdir {BPFFS}"))?;
    let src = CString::new("bpf").expect("no NUL");
    let target = CString::new(BPFFS).expect("no NUL");
    // SAFETY: valid NUL-terminated strings, null data.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        // Someone else (outside our lock) mounted it meanwhile.
        if e.raw_os_error() == Some(libc::EBUSY) && is_bpffs_mounted(BPFFS)? {
            return Ok(());
        }
        return Err(e).context(format!("mount -t bpf bpf {BPFFS}"));
    }
    if !is_bpffs_mounted(BPFFS)? {
        bail!("mounted bpffs at {BPFFS} but mountinfo does not show it");
    }
    Ok(())
}

/// Makes sure bpffs is mounted at /sys/fs/bpf (mounts it if needed; never unmounts). Safe to
/// call from many threads and processes at once (the outcome is cached per process).
pub fn ensure_bpffs() -> Result<()> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    let r = RESULT.get_or_init(|| mount_bpffs().map_err(|e| format!("{e:#}")));
    match r {
        Ok(()) => Ok(()),
        Err(e) => bail!("cannot mount bpffs at {BPFFS}: {e}"),
    }
}

/// A fresh directory `/sys/fs/bpf/vrf-xdp-test-<pid>-<n>` for pinning maps/programs/links;
/// removed recursively (unpinning everything in it) on drop. Calls [`ensure_bpffs`].
///
/// The pins are visible to processes started with `NetNs::command`/`exec`/`spawn` (nsenter
/// keeps the mount namespace) but *not* to `ip netns exec`.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    pub fn new() -> Result<PinDir> {
        ensure_bpffs()?;
        let path = Path::new(BPFFS).join(format!("vrf-xdp-test-{}", unique_suffix()));
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(PinDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(rel)`.
    pub fn join<P: AsRef<Path>>(&self, rel: P) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("vrf-xdp tests: remove {}: {e}", self.path.display());
            }
        }
    }
}
