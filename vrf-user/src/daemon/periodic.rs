//! vrfd's periodic jobs besides the heartbeat and the sysctl poll: neighbour activity reports,
//! redirect-target probes, and the live differential (`verify`). None of them is fatal: a job
//! that fails logs why and tries again on its next tick.
use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tracing::{debug, info, warn};

use super::export::DaemonMetrics;
use crate::{
    dataplane::DataPlane,
    maps::Maps,
    mirror::Mirror,
    model::{NUD_NOARP, NUD_PERMANENT},
    neigh_activity::NeighActivity,
    oracle::RouteOracle,
    verify,
    xdp_target::XdpFeatureProbe,
};

/// Routes asked about per VRF on each periodic verify (drawn at random each run): bounds the
/// time one run holds the event loop on large tables; every route is drawn in time.
pub const VERIFY_SAMPLE: usize = 1024;

/// How often the redirect targets are asked again (see [`RedirectTargets`]).
pub const REDIRECT_POLL: Duration = Duration::from_secs(2);

/// The fast path's neighbour marks, reported to the kernel (NTF_USE) every
/// [`crate::neigh_activity::INTERVAL`].
pub struct Neighbours {
    activity: Option<NeighActivity>,
}

impl Neighbours {
    pub fn new() -> Self {
        let activity = NeighActivity::new()
            .map_err(|e| warn!(error = %format!("{e:#}"), "no neighbour activity reports: the kernel revalidates only what it sends itself"))
            .ok();
        Neighbours { activity }
    }

    pub fn tick(&mut self, maps: &mut Maps, mirror: &Mirror, metrics: &DaemonMetrics) {
        let Some(activity) = &mut self.activity else {
            return;
        };
        // Only entries the kernel itself revalidates: NTF_USE would demote a PERMANENT one to a
        // learnt one (and NOARP ones are never probed).
        let dynamic = |key: &vrf_common::NeighKey| {
            let addr = match key.family {
                4 => std::net::IpAddr::from([key.addr[0], key.addr[1], key.addr[2], key.addr[3]]),
                _ => std::net::IpAddr::from(key.addr),
            };
            mirror
                .neighbour(key.ifindex, addr)
                .is_some_and(|n| n.state & (NUD_PERMANENT | NUD_NOARP) == 0)
        };
        match activity.tick_where(maps, dynamic) {
            Ok(t) => {
                metrics.neighbour_reports(t.reported as u64);
                if !t.refused.is_empty() {
                    // An entry the kernel dropped meanwhile: its deletion event follows.
                    debug!(refused = ?t.refused, "NTF_USE refused for some neighbours");
                }
            }
            Err(e) => warn!(error = %format!("{e:#}"), "neighbour activity report"),
        }
    }
}

/// Which planned links can take an XDP redirect, asked of the kernel on every link plan (a
/// veth's answer follows its peer's GRO and XDP, which send no event for it).
pub struct RedirectTargets {
    probe: Option<XdpFeatureProbe>,
    refused: BTreeSet<u32>,
}

impl RedirectTargets {
    pub fn new() -> Self {
        let probe = XdpFeatureProbe::new()
            .map_err(|e| warn!(error = %format!("{e:#}"), "no xdp-features probe: redirect targets are judged by device kind"))
            .ok();
        RedirectTargets {
            probe,
            refused: BTreeSet::new(),
        }
    }

    /// The links among `links` that cannot take a redirect now. A device the kernel cannot
    /// answer for (it vanished meanwhile) is refused: the kernel routes its traffic.
    pub fn refused<'a>(
        &mut self,
        mirror: &Mirror,
        links: impl Iterator<Item = &'a u32>,
    ) -> BTreeSet<u32> {
        let mut refused = BTreeSet::new();
        for &ifindex in links {
            let Some(link) = mirror.link(ifindex) else {
                continue;
            };
            // VRF devices and VLAN uppers are never redirect targets in the writer anyway.
            if matches!(link.kind.as_deref(), Some("vrf" | "vlan")) {
                continue;
            }
            let accepts = match &mut self.probe {
                Some(p) => p.redirect_target(link).map(|t| t.accepts).unwrap_or(false),
                None => crate::xdp_target::accepts_by_kind(link),
            };
            if !accepts {
                if !self.refused.contains(&ifindex) {
                    info!(interface = %link.name, ifindex, kind = ?link.kind, "cannot take an XDP redirect: what is routed through it goes to the kernel");
                }
                refused.insert(ifindex);
            } else if self.refused.contains(&ifindex) {
                info!(interface = %link.name, ifindex, "takes XDP redirects now");
            }
        }
        self.refused = refused.clone();
        refused
    }
}

/// `verify_interval`: the differential against the kernel, run by vrfd itself.
pub struct Verifier {
    oracle: Option<RouteOracle>,
}

impl Verifier {
    pub fn new() -> Self {
        Verifier { oracle: None }
    }

    /// One run: every disagreement is logged, their count and the time exported.
    pub fn run(&mut self, dp: &mut DataPlane, metrics: &DaemonMetrics) {
        if self.oracle.is_none() {
            match RouteOracle::new() {
                Ok(o) => self.oracle = Some(o),
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "verify: no rtnetlink socket");
                    return;
                }
            }
        }
        let oracle = self.oracle.as_mut().expect("just set");
        let opts = verify::Options {
            vrf: None,
            sample: Some(VERIFY_SAMPLE),
        };
        match verify::verify(dp, oracle, &opts) {
            Ok(report) => {
                for m in &report.mismatches {
                    warn!(vrf = %m.vrf, table = m.table, prefix = %m.prefix, destination = %m.destination, iif = %m.iif, kernel = %m.kernel, data_plane = %m.data_plane, problem = %m.problem, "verify: the fast path disagrees with the kernel");
                }
                info!(
                    checked = report.checked,
                    mismatches = report.mismatches.len(),
                    "verify"
                );
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO);
                metrics.verified(report.mismatches.len() as u64, now);
            }
            Err(e) => {
                // A socket in doubt: open a fresh one next time.
                self.oracle = None;
                warn!(error = %format!("{e:#}"), "verify");
            }
        }
    }
}

/// The verify timer: off (never fires) without an interval.
pub fn verify_timer(interval: Option<Duration>) -> tokio::time::Interval {
    let period = interval.unwrap_or(Duration::from_secs(86_400 * 365));
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}
