//! The pin directory vrfctl reads: created 0700 on a mounted bpffs, owned by one vrfd at a time
//! (an flock), removed on exit.
use std::{
    fs::{self, File},
    os::fd::AsRawFd,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use tracing::warn;

pub use crate::inspect::DEFAULT_PIN_PATH;
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

pub struct PinDir {
    path: PathBuf,
    _lock: File,
}

impl PinDir {
    pub fn create(path: &Path) -> Result<Self> {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("/"));
        ensure_bpffs(parent)?;
        let lock = lock(path)?;
        if path.exists() {
            // We hold the lock: whoever pinned these is gone.
            warn!(path = %path.display(), "removing pins a previous vrfd left behind");
            fs::remove_dir_all(path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .with_context(|| format!("creating pin directory {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
        Ok(PinDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            warn!(path = %self.path.display(), error = %e, "removing pins");
        }
    }
}

/// One vrfd per pin directory: an exclusive lock on a file in /run named after it.
fn lock(pin: &Path) -> Result<File> {
    let dir = Path::new("/run/vrf-xdp");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = pin.to_string_lossy().trim_matches('/').replace('/', "_");
    let path = dir.join(format!("{name}.lock"));
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another vrfd is running with pin path {} (lock {} is held)",
            pin.display(),
            path.display()
        );
    }
    Ok(file)
}

/// Mount bpffs at /sys/fs/bpf when the pin path's parent is not on one already.
fn ensure_bpffs(parent: &Path) -> Result<()> {
    if is_bpffs(parent) {
        return Ok(());
    }
    let default = Path::new("/sys/fs/bpf");
    if parent.starts_with(default) && !is_bpffs(default) {
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()
            .context("running mount -t bpf")?;
        if !status.success() && !is_bpffs(default) {
            bail!("mounting bpffs at /sys/fs/bpf failed ({status})");
        }
        fs::create_dir_all(parent)?;
        if is_bpffs(parent) {
            return Ok(());
        }
    }
    bail!(
        "{} is not on a bpffs: pin under a mounted bpffs (default /sys/fs/bpf)",
        parent.display()
    )
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct with a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}
