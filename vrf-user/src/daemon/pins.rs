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
    /// Left in place on drop (a plain stop: the next vrfd adopts it).
    keep: bool,
    /// An upgrade under way: this build's maps and links are pinned here until they replace
    /// the older build's under `path`.
    side: Option<PathBuf>,
}

/// What a starting vrfd found under its pin path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Nothing usable: fresh maps, fresh attachments (the switch armed and expired until the
    /// first plan is written).
    Fresh,
    /// Pins of this very build: its maps are converged by diff, its links kept as they are.
    Adopt,
    /// Pins of another build with live links: make-before-break, fresh maps filled under a
    /// side directory, then each link moved to this build's program, then the pins swapped.
    Upgrade,
}

/// `<dir>-<what>` next to `dir` on the same bpffs (bpffs refuses names with a dot: EPERM).
fn sibling(dir: &Path, what: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!("-{what}"));
    dir.with_file_name(name)
}

fn has_links(dir: &Path) -> bool {
    fs::read_dir(dir.join("links")).is_ok_and(|mut e| e.next().is_some())
}

impl PinDir {
    /// With `persist`, pins a previous vrfd of the very same object and capacities left (its
    /// `stamp`, [`LoadOptions::layout_stamp`](crate::dataplane::LoadOptions::layout_stamp),
    /// in HEARTBEAT) are adopted, and pins of another layout with links still attached are
    /// upgraded; anything else there is removed.
    pub fn open(path: &Path, persist: bool, stamp: u64) -> Result<(Self, Start)> {
        if persist && path.is_dir() {
            let parent = path.parent().unwrap_or(Path::new("/"));
            ensure_bpffs(parent)?;
            let lock = lock(path)?;
            let mut dir = PinDir {
                path: path.to_path_buf(),
                _lock: lock,
                keep: false,
                side: None,
            };
            match pinned_stamp(path) {
                Some(pinned) if pinned == stamp => {
                    // Kept even if this start fails: its heartbeat expires, the next vrfd
                    // adopts them again (`vrfd --detach` removes them).
                    dir.keep = true;
                    return Ok((dir, Start::Adopt));
                }
                Some(pinned) if has_links(path) => {
                    let side = sibling(path, "upgrade");
                    if side.exists() {
                        // An upgrade that did not finish: its links are pinned under `path`
                        // too, its maps go (the programs that use them hold them).
                        fs::remove_dir_all(&side)
                            .with_context(|| format!("removing stale {}", side.display()))?;
                    }
                    make_dir(&side)?;
                    tracing::info!(path = %path.display(), old = format_args!("{pinned:#x}"), new = format_args!("{stamp:#x}"), "pins of another build or capacities: upgrading make-before-break");
                    dir.side = Some(side);
                    return Ok((dir, Start::Upgrade));
                }
                other => {
                    warn!(path = %path.display(), stamp = ?other, "pins of another build (or none readable), nothing attached: starting afresh")
                }
            }
            dir.keep = true;
            drop(dir);
        }
        Ok((Self::create(path)?, Start::Fresh))
    }

    /// Where this vrfd loads and pins its maps (the side directory during an upgrade).
    pub fn load_dir(&self) -> &Path {
        self.side.as_deref().unwrap_or(&self.path)
    }

    /// The upgrade's last step, once every wanted link runs this build's program: the side
    /// directory takes the pin path's place and the older build's pins go (links no port
    /// wanted any more go with them, detached).
    pub fn finish_upgrade(&mut self, dp: &mut crate::dataplane::DataPlane) -> Result<()> {
        let Some(side) = self.side.take() else {
            return Ok(());
        };
        let old = sibling(&self.path, "old");
        if old.exists() {
            fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
        // Two renames: vrfctl finds no pins for a moment, the data plane never notices.
        fs::rename(&self.path, &old)
            .with_context(|| format!("moving {} aside", self.path.display()))?;
        fs::rename(&side, &self.path)
            .with_context(|| format!("moving {} into place", side.display()))?;
        let unused = dp.relocate(&self.path)?;
        fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        tracing::info!(
            unused_links_removed = unused,
            "upgrade done: every link runs this build, the old pins are gone"
        );
        Ok(())
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
        make_dir(path)?;
        Ok(PinDir {
            path: path.to_path_buf(),
            _lock: lock,
            keep: false,
            side: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn make_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating pin directory {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Some(side) = self.side.take() {
            // An upgrade that did not finish: the older build's pins stay (its switch runs
            // out), this build's go.
            let _ = fs::remove_dir_all(side);
            return;
        }
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
    // An upgrade that stopped half way leaves pins next to the directory too.
    for side in [sibling(dir, "upgrade"), sibling(dir, "old")] {
        if side.exists() {
            fs::remove_dir_all(&side).with_context(|| format!("removing {}", side.display()))?;
        }
    }
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
