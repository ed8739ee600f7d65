//! vrfd's half of the dead-man switch: while the main loop turns, it moves the data plane's
//! deadline forward (and tells systemd's watchdog); a vrfd that crashes, hangs or is stopped
//! stops doing so, and within `LEASE` every program passes every packet to the kernel.
use std::{
    os::fd::AsFd,
    sync::{mpsc::RecvTimeoutError, Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::maps::{Array, IterableMap as _, Map, MapData};
use tracing::warn;

use crate::maps::Maps;

/// How long the data plane keeps deciding after the last heartbeat. The limit is 2 s;
/// the rest is margin for the coarse clock (one jiffy) and a busy scheduler.
pub const LEASE: Duration = Duration::from_millis(1500);
/// The lease a persisting vrfd leaves when it stops: its successor's time to take over.
pub const STOP_LEASE: Duration = Duration::from_secs(2);
/// How often the main loop refreshes it: several beats per lease, so one late tick is harmless.
pub const REFRESH: Duration = Duration::from_millis(250);

/// CLOCK_MONOTONIC in ns, the clock `bpf_ktime_get_coarse_ns` reads (coarse: one jiffy behind
/// at most, which only lengthens the lease by that much).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One HEARTBEAT map this vrfd refreshes, with the stamp it writes there.
struct Target {
    map: Array<MapData, vrf_common::Heartbeat>,
    stamp: u64,
}

impl Target {
    fn extend(&mut self, lease: Duration) -> Result<()> {
        self.map
            .set(
                0,
                vrf_common::Heartbeat {
                    deadline_ns: monotonic_ns() + lease.as_nanos() as u64,
                    stamp: self.stamp,
                },
                0,
            )
            .context("refreshing the heartbeat")
    }
}

#[derive(Default)]
struct Targets {
    ours: Option<Target>,
    /// During an upgrade: the older build's HEARTBEAT, so its programs keep deciding (on the
    /// maps its vrfd left) until each link has moved to ours.
    predecessor: Option<Target>,
    /// Whether our programs may decide yet: a fresh start beats only once the first full plan
    /// is written, so the resync guard leaves an expired lease alone until then.
    live: bool,
}

impl Targets {
    fn beat(&mut self) -> Result<()> {
        if let Some(t) = &mut self.predecessor {
            if let Err(e) = t.extend(LEASE) {
                warn!(error = %format!("{e:#}"), "refreshing the older build's heartbeat");
            }
        }
        if !self.live {
            return Ok(());
        }
        match &mut self.ours {
            Some(t) => t.extend(LEASE),
            None => Ok(()),
        }
    }
}

pub struct Heartbeat {
    /// systemd asked for WATCHDOG=1 (WatchdogSec= in the unit).
    watchdog: bool,
    /// Shared with the resync guard's thread.
    targets: Arc<Mutex<Targets>>,
}

fn heartbeat_map(maps: &Maps) -> Result<Array<MapData, vrf_common::Heartbeat>> {
    let fd = maps
        .heartbeat
        .map()
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating the HEARTBEAT map")?;
    Ok(Map::from_map_data(MapData::from_fd(fd)?)?.try_into()?)
}

impl Heartbeat {
    /// The heartbeat in `maps`; `live`: our programs may decide from the first beat on (an
    /// adopted or upgraded data plane), else only after [`Heartbeat::beat`] is first called.
    pub fn new(maps: &Maps, live: bool) -> Result<Self> {
        Ok(Heartbeat {
            watchdog: sd_notify::watchdog_enabled().is_some(),
            targets: Arc::new(Mutex::new(Targets {
                ours: Some(Target {
                    map: heartbeat_map(maps)?,
                    stamp: crate::dataplane::object_stamp(),
                }),
                predecessor: None,
                live,
            })),
        })
    }

    /// Also refresh the older build's HEARTBEAT pinned under `dir` (an upgrade), keeping its
    /// stamp, until [`Heartbeat::drop_predecessor`].
    pub fn follow_predecessor(&self, dir: &std::path::Path) -> Result<()> {
        let data = MapData::from_pin(dir.join(vrf_common::map_names::HEARTBEAT))
            .context("opening the older build's HEARTBEAT")?;
        let map: Array<MapData, vrf_common::Heartbeat> = Map::from_map_data(data)?
            .try_into()
            .context("the older build's HEARTBEAT has another layout")?;
        let stamp = map.get(&0, 0)?.stamp;
        let mut t = Target { map, stamp };
        t.extend(LEASE)?;
        self.lock().predecessor = Some(t);
        Ok(())
    }

    pub fn drop_predecessor(&self) {
        self.lock().predecessor = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Targets> {
        // A panic in the guard thread leaves plain data behind: keep using it.
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The loop is alive: extend the data plane's lease, pet systemd's watchdog.
    pub fn beat(&self, _maps: &mut Maps) -> Result<()> {
        {
            let mut t = self.lock();
            t.live = true;
            t.beat()?;
        }
        if self.watchdog {
            if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                warn!(error = %e, "sd_notify WATCHDOG=1 failed");
            }
        }
        Ok(())
    }

    /// Let the data plane decide for `lease` from now (and no longer).
    pub fn extend(&self, _maps: &mut Maps, lease: Duration) -> Result<()> {
        match &mut self.lock().ours {
            Some(t) => t.extend(lease),
            None => Ok(()),
        }
    }

    /// Keep beating while a resync runs (the dump, the plan and the writes of a million routes
    /// outlast the lease many times over), for at most [`RESYNC_MAX`]: a vrfd that crashes or
    /// is stopped stops this too (same process), one stuck inside a resync hands over after
    /// that bound. The beats stop when the guard is dropped.
    pub fn hold(&self) -> ResyncGuard {
        self.hold_for(RESYNC_MAX)
    }

    fn hold_for(&self, max: Duration) -> ResyncGuard {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let targets = self.targets.clone();
        let watchdog = self.watchdog;
        let thread = std::thread::Builder::new()
            .name("vrfd-resync-beat".into())
            .spawn(move || {
                let t0 = std::time::Instant::now();
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(REFRESH) {
                    if t0.elapsed() > max {
                        warn!(
                            ?max,
                            "resync still running: no more heartbeats until it ends (the kernel decides)"
                        );
                        return;
                    }
                    let mut t = targets.lock().unwrap_or_else(|p| p.into_inner());
                    if let Err(e) = t.beat() {
                        warn!(error = %format!("{e:#}"), "heartbeat during a resync");
                    }
                    drop(t);
                    if watchdog {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
            })
            .ok();
        ResyncGuard {
            stop: Some(tx),
            thread,
        }
    }
}

/// The longest a resync keeps the data plane deciding by itself.
pub const RESYNC_MAX: Duration = Duration::from_secs(30);

/// See [`Heartbeat::hold`].
pub struct ResyncGuard {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ResyncGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
