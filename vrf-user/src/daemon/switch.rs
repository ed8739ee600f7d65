//! vrfd's half of the dead-man switch: while the main loop turns, it moves the data plane's
//! deadline forward and runs the beat program, which arms the switch's BPF timer for the new
//! lease (and tells systemd's watchdog); a vrfd that crashes, hangs or is stopped stops doing
//! so, the timer fires, and from then on every program passes every packet to the kernel.
use std::{
    os::fd::AsFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{Array, IterableMap as _, Map, MapData},
    programs::Xdp,
};
use aya_obj::programs::XdpAttachType;
use tracing::warn;
use vrf_common::{prog_names, Switch, SwitchState};

use crate::{dataplane::XdpAction, maps::Maps};

/// How long the data plane keeps deciding after the last heartbeat. The limit is 2 s;
/// the rest is margin for the timer's callback on a busy machine and for older builds' switch
/// (the coarse clock, a jiffy late).
pub const LEASE: Duration = Duration::from_millis(1500);
/// The lease a persisting vrfd leaves when it stops: its successor's time to take over.
pub const STOP_LEASE: Duration = Duration::from_secs(2);
/// How often the main loop refreshes it: several beats per lease, so one late tick is harmless.
pub const REFRESH: Duration = Duration::from_millis(250);

/// CLOCK_MONOTONIC in ns: the clock of HEARTBEAT's deadline, of the beat's `bpf_ktime_get_ns`
/// and of the switch's timer.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One HEARTBEAT map this vrfd refreshes, with the stamp it writes there, and the switch its
/// programs read (None: an older build's, whose programs read the clock against HEARTBEAT).
struct Target {
    map: Array<MapData, vrf_common::Heartbeat>,
    stamp: u64,
    switch: Option<SwitchTimer>,
}

/// The `SWITCH` map of a data plane and the beat program that arms its timer.
struct SwitchTimer {
    map: Array<MapData, Switch>,
    beat: Xdp,
}

impl SwitchTimer {
    /// The switch pinned under `dir` (the maps and programs of one data plane).
    fn pinned(dir: &std::path::Path) -> Result<Self> {
        let map = pinned_array(dir, vrf_common::map_names::SWITCH, "the pinned SWITCH")?;
        Self::with(map, dir)
    }

    fn with(map: Array<MapData, Switch>, dir: &std::path::Path) -> Result<Self> {
        let path = dir.join(prog_names::XDP_VRF_BEAT);
        let beat = Xdp::from_pin(&path, XdpAttachType::Interface)
            .with_context(|| format!("opening the beat program {}", path.display()))?;
        Ok(SwitchTimer { map, beat })
    }

    /// Arm the timer for what is left of HEARTBEAT's deadline (just written).
    fn arm(&self) -> Result<()> {
        // XDP test runs want a frame of an Ethernet header at least; the beat never reads it.
        let r = crate::dataplane::run_xdp(&self.beat, 0, &[0u8; 64])
            .context("running the beat program")?;
        if r.action != XdpAction::Pass {
            bail!(
                "the beat program did not arm the switch's timer (XDP action {:?})",
                r.action
            );
        }
        Ok(())
    }

    /// Expire now (a write from userspace also cancels the timer).
    fn expire(&mut self) -> Result<()> {
        self.map
            .set(0, Switch::with(SwitchState::Expired), 0)
            .context("expiring the switch")
    }
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
            .context("refreshing the heartbeat")?;
        match &mut self.switch {
            Some(s) if lease.is_zero() => s.expire(),
            Some(s) => s.arm(),
            None => Ok(()),
        }
    }
}

#[derive(Default)]
struct Targets {
    ours: Option<Target>,
    /// During an upgrade: the older build's HEARTBEAT, so its programs keep deciding (on the
    /// maps its vrfd left) until each link has moved to ours.
    predecessor: Option<Target>,
    /// Whether our programs may decide yet: a fresh start beats only once the first full plan
    /// is written, so the beating thread leaves an expired lease alone until then.
    live: bool,
    /// The main loop has beaten once (the start is done): until then a vrfd that exits hands
    /// the data plane over at once instead of leaving a lease behind.
    ready: bool,
}

impl Targets {
    /// Every lease we hold ends now: the programs pass to the kernel from the next packet on.
    fn hand_over(&mut self) {
        for t in [&mut self.predecessor, &mut self.ours]
            .into_iter()
            .flatten()
        {
            if let Err(e) = t.extend(Duration::ZERO) {
                warn!(error = %format!("{e:#}"), "expiring the heartbeat");
            }
        }
    }

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
    /// What this vrfd writes into its own HEARTBEAT: its layout's stamp.
    stamp: u64,
    /// systemd asked for WATCHDOG=1 (WatchdogSec= in the unit).
    watchdog: bool,
    /// Shared with the beating thread.
    targets: Arc<Mutex<Targets>>,
    busy: Arc<Busy>,
}

/// A descriptor of its own for one of `maps`' maps (the beating thread holds it).
fn dup<V: aya::Pod>(map: &MapData, what: &str) -> Result<Array<MapData, V>> {
    let fd = map
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("duplicating the {what} map"))?;
    Ok(Map::from_map_data(MapData::from_fd(fd)?)?.try_into()?)
}

/// The HEARTBEAT pinned under `dir`; `what` names it in errors (ours, or an older build's).
fn pinned_heartbeat(
    dir: &std::path::Path,
    what: &str,
) -> Result<Array<MapData, vrf_common::Heartbeat>> {
    pinned_array(dir, vrf_common::map_names::HEARTBEAT, what)
}

/// The array `name` pinned under `dir`; `what` names it in errors.
fn pinned_array<V: aya::Pod>(
    dir: &std::path::Path,
    name: &str,
    what: &str,
) -> Result<Array<MapData, V>> {
    let data = MapData::from_pin(dir.join(name)).with_context(|| format!("opening {what}"))?;
    Map::from_map_data(data)?
        .try_into()
        .with_context(|| format!("{what} has another layout"))
}

impl Heartbeat {
    /// No HEARTBEAT yet (a start before its programs are loaded): the beating thread runs,
    /// with nothing to beat until [`Heartbeat::adopt_pinned`], [`Heartbeat::follow_predecessor`]
    /// or [`Heartbeat::set_ours`]; `stamp`: our layout's, written with each beat of ours.
    pub fn without_map(stamp: u64) -> Self {
        let hb = Heartbeat {
            stamp,
            watchdog: sd_notify::watchdog_enabled().is_some(),
            targets: Arc::new(Mutex::new(Targets::default())),
            busy: Arc::new(Busy::default()),
        };
        hb.spawn_beater();
        hb
    }

    /// Beat the HEARTBEAT in `maps` (this build's, its programs pinned under `dir`) from now
    /// on; `live`: our programs may decide from the first beat on (an adopted or upgraded data
    /// plane), else only after [`Heartbeat::beat`] is first called.
    pub fn set_ours(&self, maps: &Maps, live: bool, dir: &std::path::Path) -> Result<()> {
        let map = dup(maps.heartbeat.map(), "HEARTBEAT")?;
        let switch = SwitchTimer::with(dup(maps.switch.map(), "SWITCH")?, dir)?;
        let mut t = self.lock();
        t.ours = Some(Target {
            map,
            stamp: self.stamp,
            switch: Some(switch),
        });
        t.live |= live;
        Ok(())
    }

    /// Adopting: beat the HEARTBEAT this very build pinned under `dir`, live at once (opened
    /// from its pin, before the programs are loaded).
    pub fn adopt_pinned(&self, dir: &std::path::Path) -> Result<()> {
        let map = pinned_heartbeat(dir, "the pinned HEARTBEAT")?;
        let switch = SwitchTimer::pinned(dir)?;
        let mut t = self.lock();
        t.ours = Some(Target {
            map,
            stamp: self.stamp,
            switch: Some(switch),
        });
        t.live = true;
        Ok(())
    }

    /// Also refresh the older build's HEARTBEAT pinned under `dir` (an upgrade), keeping its
    /// stamp, until [`Heartbeat::drop_predecessor`].
    pub fn follow_predecessor(&self, dir: &std::path::Path) -> Result<()> {
        let map = pinned_heartbeat(dir, "the older build's HEARTBEAT")?;
        let stamp = map.get(&0, 0)?.stamp;
        // A build from before the timer has none: its programs read the clock.
        let switch = SwitchTimer::pinned(dir).ok();
        let mut t = Target { map, stamp, switch };
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
            t.ready = true;
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

    /// Keep beating while the main loop works on something long (a resync: the dump, the plan
    /// and the writes of a million routes outlast the lease many times over; a batch of
    /// events that touches every route), for at most [`BUSY_MAX`]: a vrfd that crashes or is
    /// stopped stops the beating thread too (same process), one stuck inside the work hands
    /// over after that bound. The beats stop when the guard is dropped.
    pub fn hold(&self) -> BusyGuard {
        // One beat now: the lease left from the main loop's last tick may be short already.
        if let Err(e) = self.lock().beat() {
            warn!(error = %format!("{e:#}"), "heartbeat before long work");
        }
        let set = self
            .busy
            .since
            .compare_exchange(0, monotonic_ns(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        BusyGuard {
            busy: set.then(|| self.busy.clone()),
        }
    }

    fn spawn_beater(&self) {
        let targets = self.targets.clone();
        let busy = self.busy.clone();
        let watchdog = self.watchdog;
        let spawned = std::thread::Builder::new()
            .name("vrfd-busy-beat".into())
            .spawn(move || {
                let mut warned = false;
                while !busy.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(REFRESH);
                    let since = busy.since.load(Ordering::SeqCst);
                    if since == 0 {
                        warned = false;
                        continue;
                    }
                    if monotonic_ns().saturating_sub(since) > BUSY_MAX.as_nanos() as u64 {
                        if !warned {
                            warn!(max = ?BUSY_MAX, "vrfd busy for too long: no more heartbeats until it is done (the kernel decides)");
                            warned = true;
                        }
                        continue;
                    }
                    let mut t = targets.lock().unwrap_or_else(|p| p.into_inner());
                    // Checked under the lock: no beat after a drop that handed over.
                    if busy.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Err(e) = t.beat() {
                        warn!(error = %format!("{e:#}"), "heartbeat during long work");
                    }
                    drop(t);
                    if watchdog {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "no beating thread: long resyncs may trip the switch");
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.busy.stop.store(true, Ordering::SeqCst);
        let mut t = self.lock();
        if !t.ready && (t.predecessor.is_some() || t.live) {
            // A start that beat for pins it adopted and then failed (a refused configuration,
            // an error): no lease is left behind, the kernel decides from now.
            t.hand_over();
            warn!("vrfd did not finish starting: the heartbeat it resumed is expired, the kernel decides");
        }
    }
}

/// The main loop's "busy since" (CLOCK_MONOTONIC ns, 0 = idle), shared with the beating thread.
#[derive(Default)]
struct Busy {
    since: AtomicU64,
    stop: AtomicBool,
}

/// The longest one piece of work keeps the data plane deciding by itself.
pub const BUSY_MAX: Duration = Duration::from_secs(30);

/// See [`Heartbeat::hold`].
pub struct BusyGuard {
    /// Set when this guard marked the loop busy (a nested one leaves it to the outer).
    busy: Option<Arc<Busy>>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if let Some(b) = self.busy.take() {
            b.since.store(0, Ordering::SeqCst);
        }
    }
}
