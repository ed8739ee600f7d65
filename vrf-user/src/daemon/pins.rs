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
    /// Left in place on drop (persist mode's plain stop).
    keep: bool,
}

impl PinDir {
    /// With `adopt`, pins a previous vrfd of the very same object left (its stamp in
    /// HEARTBEAT) are kept and `true` is returned; anything else there is removed.
    pub fn open(path: &Path, adopt: bool) -> Result<(Self, bool)> {
        if adopt && path.is_dir() {
            let parent = path.parent().unwrap_or(Path::new("/"));
            ensure_bpffs(parent)?;
            let lock = lock(path)?;
            match pinned_stamp(path) {
                Some(stamp) if stamp == crate::dataplane::object_stamp() => {
                    return Ok((
                        PinDir {
                            path: path.to_path_buf(),
                            _lock: lock,
                            keep: false,
                        },
                        true,
                    ));
                }
                other => {
                    warn!(path = %path.display(), stamp = ?other, "pins of another build (or none readable): starting afresh")
                }
            }
            drop(lock);
        }
        Ok((Self::create(path)?, false))
    }

    pub fn keep(&mut self) {
        self.keep = true;
    }

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
            keep: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
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

/// The object stamp a vrfd wrote into the pinned HEARTBEAT under `dir`, if readable.
fn pinned_stamp(dir: &Path) -> Option<u64> {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(dir.join(vrf_common::map_names::HEARTBEAT)).ok()?;
    let map: Array<MapData, vrf_common::Heartbeat> =
        Map::from_map_data(data).ok()?.try_into().ok()?;
    map.get(&0, 0).ok().map(|hb| hb.stamp)
}

/// `vrfd --detach`: every link pinned under `dir` unpinned (the kernel detaches it), netlink tc
/// filters of vrf-xdp removed from every interface (kernels without TCX), the pins removed.
pub fn detach(dir: &Path) -> Result<()> {
    use aya::programs::{links::PinnedLink, tc, tc::TcAttachType};
    let links = dir.join("links");
    if let Ok(entries) = fs::read_dir(&links) {
        for entry in entries {
            let path = entry?.path();
            let link = PinnedLink::from_pin(&path)
                .with_context(|| format!("opening pinned link {}", path.display()))?;
            drop(
                link.unpin()
                    .with_context(|| format!("unpinning {}", path.display()))?,
            );
            tracing::info!(link = %path.display(), "detached");
        }
    }
    {
        // The calling thread's network namespace (sysfs may show another).
        for name in interface_names() {
            for prog in [
                vrf_common::prog_names::TC_VRF_EGRESS,
                vrf_common::prog_names::TC_MEMBER_TX,
            ] {
                if tc::qdisc_detach_program(&name, TcAttachType::Egress, prog).is_ok() {
                    tracing::info!(interface = %name, program = prog, "tc filter removed");
                }
            }
        }
    }
    if dir.exists() {
        let _lock = lock(dir)?;
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Every interface name in the calling thread's network namespace (if_nameindex(3)).
fn interface_names() -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            out.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}
