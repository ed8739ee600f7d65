//! vrfd's half of the dead-man switch: while the main loop turns, it moves the data plane's
//! deadline forward (and tells systemd's watchdog); a vrfd that crashes, hangs or is stopped
//! stops doing so, and within `LEASE` every program passes every packet to the kernel.
use std::time::Duration;

use anyhow::Result;
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

pub struct Heartbeat {
    /// systemd asked for WATCHDOG=1 (WatchdogSec= in the unit).
    watchdog: bool,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            watchdog: sd_notify::watchdog_enabled().is_some(),
        }
    }
}

impl Heartbeat {
    /// The loop is alive: extend the data plane's lease, pet systemd's watchdog.
    pub fn beat(&self, maps: &mut Maps) -> Result<()> {
        self.extend(maps, LEASE)?;
        if self.watchdog {
            if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                warn!(error = %e, "sd_notify WATCHDOG=1 failed");
            }
        }
        Ok(())
    }

    /// Let the data plane decide for `lease` from now (and no longer).
    pub fn extend(&self, maps: &mut Maps, lease: Duration) -> Result<()> {
        maps.set_heartbeat(vrf_common::Heartbeat {
            deadline_ns: monotonic_ns() + lease.as_nanos() as u64,
            stamp: crate::dataplane::object_stamp(),
        })
    }
}
