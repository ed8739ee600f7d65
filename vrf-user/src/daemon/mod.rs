//! vrfd: take kernel events, update the mirror, apply the plan's changes, serve counters.
//!
//! netlink → [`Engine`] (mirror, VRFs) → [`crate::plan`] → [`MapWriter`] (maps) → attach
//! (members) → export (pins, metrics).
pub mod export;
mod periodic;
mod pins;
mod rules;
pub mod switch;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::{signal::unix::SignalKind, sync::mpsc::UnboundedReceiver};
use tracing::{error, info, warn};

use crate::{
    config::Config,
    dataplane::{DataPlane, LoadOptions, TcProgram, XdpAttachMode},
    engine::Engine,
    mirror::{read_sysctls, Dirty},
    model::{IpFamily, KernelEvent, KernelSnapshot},
    netfilter::NetfilterWatcher,
    netlink::{
        nexthop::{NexthopEvent, NexthopSocket},
        Netlink,
    },
    sysctl::SysctlWatcher,
    vrfs::VrfView,
    writer::MapWriter,
    xfrm::XfrmWatcher,
};

pub use pins::DEFAULT_PIN_PATH;

/// How often vrfd looks whether a capture holds its lease (`LINK_CAPTURE` follows it).
const CAPTURE_WATCH: Duration = Duration::from_millis(200);
/// Most events applied in one batch before the maps are written.
const BATCH: usize = 4096;

pub struct Options {
    pub config: Option<PathBuf>,
    pub xdp_mode: XdpAttachMode,
    pub pin_path: PathBuf,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
    /// Leave programs, links, maps and rules in place on SIGTERM; adopt (or upgrade) them at
    /// start. The default; `--no-persist` turns it off.
    pub persist: bool,
    /// Bytes asked for the rtnetlink socket's receive buffer.
    pub netlink_receive_buffer: usize,
    /// Capacity of the FIB maps (routes of every VRF together), per family.
    pub fib4_entries: u32,
    pub fib6_entries: u32,
}

/// `vrfd --detach`: remove what a persisting vrfd left (links, tc filters, pins).
pub fn detach(pin_path: &std::path::Path) -> Result<()> {
    pins::detach(pin_path)
}

/// A configuration problem: vrfd exits 2 and leaves nothing behind.
#[derive(Debug)]
pub struct ConfigError(pub anyhow::Error);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for ConfigError {}

struct Daemon {
    netlink: Netlink,
    /// Nexthop objects come on their own socket (the main one is typed on route messages).
    nexthops: NexthopSocket,
    engine: Engine,
    dp: DataPlane,
    writer: MapWriter,
    mode: XdpAttachMode,
    rules: rules::OwnedRules,
    /// VRF devices whose root qdisc vrfd added (removed again on exit).
    qdiscs: BTreeSet<u32>,
    telemetry: export::DaemonMetrics,
    heartbeat: switch::Heartbeat,
    pins: pins::PinDir,
    persist: bool,
    /// Started on a previous vrfd's pins (adopted or upgraded): the rules it added are ours.
    adopted: bool,
    neighbours: periodic::Neighbours,
    redirect: periodic::RedirectTargets,
    verifier: periodic::Verifier,
    /// What the kernel applies around the route lookup, followed live.
    watch: KernelWatchers,
    /// The reasons last logged, per (VRF, family): each change is logged once.
    logged: BTreeMap<(String, IpFamily), Vec<String>>,
    /// Set while the kernel's tables could not be read: when to dump again.
    resync_retry: Option<ResyncRetry>,
    /// Keeps the adopted data plane's heartbeat going until the first full plan is written.
    starting: Option<switch::BusyGuard>,
}

#[derive(Clone, Copy)]
struct ResyncRetry {
    at: tokio::time::Instant,
    failures: u32,
}

/// Backoff between resyncs whose dump failed: doubling from the first to the last.
const RESYNC_RETRY_FIRST: Duration = Duration::from_millis(500);
const RESYNC_RETRY_MAX: Duration = Duration::from_secs(15);

/// Sleeps until `at`, or forever without one (a select branch that is off).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What only the kernel can tell against the configuration (see
/// [`crate::config::check_against_kernel`]).
fn check_config_against_kernel(config: &Config, engine: &Engine) -> anyhow::Result<()> {
    let links: Vec<crate::model::LinkInfo> = engine.mirror().links().cloned().collect();
    crate::config::check_against_kernel(config, &links)
}

/// The watchers of netfilter, IPsec and the interface sysctls (kernel facts without rtnetlink
/// objects of their own).
struct KernelWatchers {
    sysctl: SysctlWatcher,
    netfilter: NetfilterWatcher,
    xfrm: XfrmWatcher,
}

impl KernelWatchers {
    fn new() -> Result<Self> {
        Ok(KernelWatchers {
            sysctl: SysctlWatcher::new().context("following the interface sysctls")?,
            netfilter: NetfilterWatcher::new().context("following netfilter")?,
            xfrm: XfrmWatcher::new().context("following the xfrm policies")?,
        })
    }
}

/// Run vrfd until SIGINT/SIGTERM; everything attached, added or pinned is undone on return.
pub async fn run(opts: Options) -> Result<()> {
    let config = match &opts.config {
        Some(path) => Config::load(path).map_err(ConfigError)?,
        None => Config::default(),
    };
    let (netlink, mut events) = Netlink::connect_with_receive_buffer(opts.netlink_receive_buffer)
        .await
        .context("opening rtnetlink")?;
    // Subscribed before its dump, like the main socket: nothing between the two is lost.
    let (mut nexthops, mut nexthop_events) = NexthopSocket::connect().await?;
    // Pins of a previous vrfd: the fast path it left keeps deciding from here on, before the
    // dump and the program load (the expensive steps), for as long as we live. The beat means
    // what it means during a resync: a live vrfd follows the kernel; whatever changed since the
    // maps were written is in the events it holds and will be written. A start that fails
    // hands over at once (the heartbeat's drop).
    let layout = LoadOptions {
        persist: opts.persist,
        fib4_entries: opts.fib4_entries,
        fib6_entries: opts.fib6_entries,
        ..Default::default()
    };
    let stamp = layout.layout_stamp();
    let (pins, start) = pins::PinDir::open(&opts.pin_path, opts.persist, stamp)?;
    let adopted = start == pins::Start::Adopt;
    let heartbeat = switch::Heartbeat::without_map(stamp);
    let starting = match start {
        pins::Start::Adopt => {
            heartbeat.adopt_pinned(pins.path())?;
            Some(heartbeat.hold())
        }
        pins::Start::Upgrade => match heartbeat.follow_predecessor(pins.path()) {
            Ok(()) => Some(heartbeat.hold()),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "the older build's switch runs out meanwhile");
                None
            }
        },
        pins::Start::Fresh => None,
    };
    if starting.is_some() {
        info!(
            ?start,
            lease_ms = switch::LEASE.as_millis() as u64,
            "heartbeat resumed on the pinned data plane: it keeps deciding while this vrfd starts"
        );
    }
    let snapshot = snapshot(&netlink, &mut nexthops).await?;
    let watch = KernelWatchers::new()?;
    let mut engine = Engine::new(config.vrf.clone(), Box::new(read_sysctls));
    engine.set_sysctls(watch.sysctl.current().clone());
    engine.set_netfilter(watch.netfilter.current().clone());
    engine.set_xfrm(watch.xfrm.current().clone());
    set_netfilter_bypass(&mut engine, &config, &BTreeSet::new());
    engine.load(snapshot);
    check_config_against_kernel(&config, &engine).map_err(ConfigError)?;
    for d in &config.vrf {
        for name in &d.interfaces {
            if engine.mirror().link_by_name(name).is_none() {
                return Err(ConfigError(anyhow::anyhow!(
                    "VRF {:?}: interface {:?} does not exist",
                    d.name,
                    name
                ))
                .into());
            }
        }
    }

    let listener = match opts.metrics {
        Some(addr) => Some(export::bind(addr).await?),
        None => None,
    };
    let loading = std::time::Instant::now();
    let mut dp = DataPlane::load_with(&LoadOptions {
        pin_dir: Some(pins.load_dir().to_path_buf()),
        reuse_programs: start == pins::Start::Adopt,
        ..layout
    })?;
    info!(
        ms = loading.elapsed().as_millis() as u64,
        programs = if dp.programs_reused() {
            "the previous vrfd's, pinned"
        } else {
            "loaded"
        },
        "eBPF object loaded"
    );
    match start {
        pins::Start::Adopt => {
            // Same map as the pinned one the beat already refreshes.
            let links = dp.adopt_links()?;
            info!(
                links,
                "adopting the pins of a previous vrfd: nothing is detached"
            );
        }
        pins::Start::Upgrade => {
            heartbeat.set_ours(&dp.maps, true, pins.load_dir())?;
            let links = dp.take_over(&pins.path().join("links"))?;
            info!(
                links,
                "upgrade: filling fresh maps, then moving each link to this build"
            );
        }
        // Armed and expired: whatever gets attached passes to the kernel until the first
        // full plan is written and the first heartbeat says so.
        pins::Start::Fresh => {
            heartbeat.set_ours(&dp.maps, false, pins.load_dir())?;
            heartbeat.extend(&mut dp.maps, Duration::ZERO)?
        }
    }
    let telemetry = export::DaemonMetrics::default();
    let _exporter = match listener {
        Some(l) => Some(export::spawn(l, pins.load_dir(), telemetry.clone())?),
        None => None,
    };
    let writer = if adopted {
        MapWriter::adopt(dp.maps.try_clone()?)?
    } else {
        MapWriter::new(dp.maps.try_clone()?)
    };
    let mut daemon = Daemon {
        netlink,
        nexthops,
        engine,
        dp,
        writer,
        mode: opts.xdp_mode,
        rules: rules::OwnedRules::default(),
        qdiscs: BTreeSet::new(),
        telemetry,
        heartbeat,
        pins,
        persist: opts.persist,
        adopted: start != pins::Start::Fresh,
        neighbours: periodic::Neighbours::new(),
        redirect: periodic::RedirectTargets::new(),
        verifier: periodic::Verifier::new(),
        watch,
        logged: BTreeMap::new(),
        resync_retry: None,
        starting,
    };
    let result = daemon
        .serve(
            config,
            opts.config.as_deref(),
            &mut events,
            &mut nexthop_events,
        )
        .await;
    daemon.shutdown().await;
    result
}

/// The kernel's state: the main dump, then the nexthop objects from their own socket.
async fn snapshot(netlink: &Netlink, nexthops: &mut NexthopSocket) -> Result<KernelSnapshot> {
    let mut snapshot = netlink
        .snapshot()
        .await
        .context("dumping the kernel's state")?;
    snapshot.nexthops = nexthops
        .dump()
        .await
        .context("dumping the nexthop objects")?;
    Ok(snapshot)
}

/// The VRFs whose netfilter the configuration bypasses, logged once when the bypass begins.
fn set_netfilter_bypass(engine: &mut Engine, config: &Config, before: &BTreeSet<String>) {
    let bypass = config.netfilter_bypass();
    for name in bypass.difference(before) {
        info!(vrf = %name, "netfilter is bypassed for this VRF by the configuration: its forwarded traffic skips the firewall");
    }
    for name in before.difference(&bypass) {
        info!(vrf = %name, "netfilter is honoured again for this VRF");
    }
    engine.set_netfilter_bypass(bypass);
}

/// A nexthop socket's event as a kernel event for the mirror.
fn nexthop_kernel_event(event: NexthopEvent) -> KernelEvent {
    match event {
        NexthopEvent::New(nh) => KernelEvent::NewNexthop(nh),
        NexthopEvent::Deleted(id) => KernelEvent::DelNexthop(id),
        NexthopEvent::Overrun => KernelEvent::Overrun("nexthop notifications lost".into()),
    }
}

impl Daemon {
    async fn serve(
        &mut self,
        mut config: Config,
        config_path: Option<&std::path::Path>,
        events: &mut UnboundedReceiver<KernelEvent>,
        nexthop_events: &mut UnboundedReceiver<NexthopEvent>,
    ) -> Result<()> {
        self.rules
            .ensure(&self.netlink, &config, self.adopted)
            .await?;
        // The rules we added are in the kernel now; see them as the kernel does.
        self.resync().await?;
        // The view is complete and in the maps: the fast path may decide from now on.
        self.heartbeat.beat(&mut self.dp.maps)?;
        self.starting = None;
        self.pins.finish_upgrade(&mut self.dp)?;
        self.heartbeat.drop_predecessor();
        self.ready();

        let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
        let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
        let mut sighup = tokio::signal::unix::signal(SignalKind::hangup())?;
        let mut capture = tokio::time::interval(CAPTURE_WATCH);
        let mut beat = tokio::time::interval(switch::REFRESH);
        let mut neighbours = tokio::time::interval(crate::neigh_activity::INTERVAL);
        let mut verify = periodic::verify_timer(config.verify_period());
        // A veth takes redirects only while its peer has GRO or XDP: no rtnetlink event says so.
        let mut redirect_poll = tokio::time::interval(periodic::REDIRECT_POLL);
        loop {
            tokio::select! {
                _ = beat.tick() => self.heartbeat.beat(&mut self.dp.maps)?,
                _ = neighbours.tick() => self.neighbours.tick(&mut self.dp.maps, self.engine.mirror(), &self.telemetry),
                _ = verify.tick() => self.verifier.run(&mut self.dp, &self.telemetry),
                _ = sigint.recv() => { info!("SIGINT: shutting down"); return Ok(()) }
                _ = sigterm.recv() => { info!("SIGTERM: shutting down"); return Ok(()) }
                _ = sighup.recv() => {
                    if let Some(new) = self.reload(&config, config_path).await? {
                        if new.verify_interval != config.verify_interval {
                            verify = periodic::verify_timer(new.verify_period());
                        }
                        config = new;
                    }
                }
                _ = sleep_until(self.resync_retry.map(|r| r.at)) => self.resync().await?,
                _ = capture.tick() => self.watch_capture()?,
                _ = redirect_poll.tick() => self.poll_redirect_targets()?,
                state = self.watch.sysctl.changed() => {
                    self.engine.set_sysctls(state);
                    self.refresh_links()?;
                }
                state = self.watch.netfilter.changed() => {
                    self.engine.set_netfilter(state);
                    self.refresh_vrfs()?;
                }
                state = self.watch.xfrm.changed() => {
                    self.engine.set_xfrm(state);
                    self.refresh_vrfs()?;
                }
                event = events.recv() => {
                    let Some(event) = event else {
                        anyhow::bail!("the rtnetlink connection closed");
                    };
                    let mut dirty = self.take(event);
                    while let Ok(more) = events.try_recv() {
                        dirty.merge(self.take(more));
                        if dirty.routes.len() + dirty.neighbours.len() >= BATCH { break; }
                    }
                    self.apply(dirty).await?;
                    self.heartbeat.beat(&mut self.dp.maps)?;
                }
                event = nexthop_events.recv() => {
                    let Some(event) = event else {
                        anyhow::bail!("the nexthop netlink connection closed");
                    };
                    let mut dirty = self.take(nexthop_kernel_event(event));
                    while let Ok(more) = nexthop_events.try_recv() {
                        dirty.merge(self.take(nexthop_kernel_event(more)));
                        if dirty.routes.len() >= BATCH { break; }
                    }
                    self.apply(dirty).await?;
                }
            }
        }
    }

    /// SIGHUP: read the configuration again and apply the difference (VRFs added, removed,
    /// changed) by diff; a configuration that does not load or names a missing member is
    /// refused with an error and the running one stays.
    async fn reload(
        &mut self,
        old: &Config,
        path: Option<&std::path::Path>,
    ) -> Result<Option<Config>> {
        let Some(path) = path else {
            info!("SIGHUP: no --config to reload");
            return Ok(None);
        };
        let config = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %format!("{e:#}"), "SIGHUP: configuration refused, the running one stays");
                return Ok(None);
            }
        };
        if let Err(e) = check_config_against_kernel(&config, &self.engine) {
            error!(error = %format!("{e:#}"), "SIGHUP: configuration refused, the running one stays");
            return Ok(None);
        }
        for d in &config.vrf {
            for name in &d.interfaces {
                if self.engine.mirror().link_by_name(name).is_none() {
                    error!(vrf = %d.name, interface = %name, "SIGHUP: configuration refused (interface does not exist), the running one stays");
                    return Ok(None);
                }
            }
        }
        if config.netfilter_bypass() != old.netfilter_bypass() {
            set_netfilter_bypass(&mut self.engine, &config, &old.netfilter_bypass());
            self.refresh_vrfs()?;
        }
        if config.vrf == old.vrf {
            info!("SIGHUP: VRF declarations unchanged");
            return Ok(Some(config));
        }
        self.rules.remove_unwanted(&self.netlink, &config).await;
        self.rules.ensure(&self.netlink, &config, false).await?;
        self.engine.set_declared(config.vrf.clone());
        // The rules changed under us: dump again; the writer touches only what differs.
        self.resync().await?;
        info!(
            vrfs = self.engine.vrfs().len(),
            "SIGHUP: configuration reloaded"
        );
        Ok(Some(config))
    }

    /// One kernel event into the mirror.
    fn take(&mut self, event: KernelEvent) -> Dirty {
        self.telemetry.event(&event);
        self.engine.apply(event)
    }

    fn ready(&self) {
        let vrfs = self.engine.vrfs();
        let members: usize = vrfs.iter().map(|v| v.members.len()).sum();
        info!(
            vrfs = vrfs.len(),
            members,
            routes = self.writer.route_count(),
            neighbours = self.writer.neighbour_count(),
            "ready"
        );
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
                warn!(error = %e, "sd_notify READY=1 failed");
            }
        }
    }

    /// Dump everything again and converge the maps to it.
    /// Dump the kernel and write the whole plan. A dump the kernel keeps interrupting is not
    /// fatal: every VRF goes to the kernel until a later attempt (backing off) succeeds.
    async fn resync(&mut self) -> Result<()> {
        let _busy = self.heartbeat.hold();
        let snapshot = match snapshot(&self.netlink, &mut self.nexthops).await {
            Err(e) if crate::netlink::is_interrupted(&e) => return self.kernel_unread(e),
            other => other?,
        };
        if let Some(retry) = self.resync_retry.take() {
            info!(
                failures = retry.failures,
                "the kernel's tables are read again: the VRFs are served"
            );
        }
        self.writer.lift_unread();
        self.engine.load(snapshot);
        self.apply_plan().await
    }

    /// A resync's dump failed: hand every VRF to the kernel and try again later.
    fn kernel_unread(&mut self, e: anyhow::Error) -> Result<()> {
        let failures = self.resync_retry.map_or(0, |r| r.failures) + 1;
        let wait = RESYNC_RETRY_FIRST
            .saturating_mul(1 << (failures - 1).min(5))
            .min(RESYNC_RETRY_MAX);
        if failures == 1 {
            error!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64,
                "the kernel's tables could not be read: every VRF goes to the kernel until a dump succeeds");
        } else {
            warn!(failures, retry_in_ms = wait.as_millis() as u64, error = %format!("{e:#}"),
                "the kernel's tables still cannot be read");
        }
        self.resync_retry = Some(ResyncRetry {
            at: tokio::time::Instant::now() + wait,
            failures,
        });
        self.writer.degrade_all_unread()
    }

    /// The whole plan into the maps, then XDP and tc where the VRFs now need them.
    async fn apply_plan(&mut self) -> Result<()> {
        let plan = self.engine.plan();
        for v in &plan.vrfs {
            for m in &v.missing {
                warn!(vrf = %v.name, interface = %m, "declared member does not exist (yet)");
            }
        }
        let refused = self
            .redirect
            .refused(self.engine.mirror(), plan.links.keys());
        self.writer.set_redirect_refused(refused);
        self.log_reasons(&plan.vrfs);
        self.writer.apply_plan(&plan)?;
        self.attach(plan.xdp_ports())?;
        self.attach_tc().await
    }

    async fn apply(&mut self, dirty: Dirty) -> Result<()> {
        let _busy = self.heartbeat.hold();
        if self.resync_retry.is_some() {
            // The mirror follows, the maps wait for the resync the retry timer runs.
            return Ok(());
        }
        if dirty.resync {
            info!("resync");
            self.telemetry.resync();
            return self.resync().await;
        }
        if dirty.rules {
            // Rules are few: re-read them rather than everything.
            let rules = self.netlink.rules().await.context("re-reading the rules")?;
            self.engine.load_rules(rules);
        }
        if dirty.links || dirty.rules {
            return self.apply_plan().await;
        }
        self.writer
            .apply_changes(&self.engine.planner().changes(&dirty))?;
        if self.writer.wants_refit() {
            // A degraded table shrank: a full plan serves its VRFs again if it now fits.
            return self.apply_plan().await;
        }
        Ok(())
    }

    /// Netfilter or IPsec changed: only the VRF entries' flags follow.
    fn refresh_vrfs(&mut self) -> Result<()> {
        let vrfs = self.engine.vrfs().to_vec();
        self.log_reasons(&vrfs);
        self.writer.apply_vrfs(&vrfs)
    }

    /// Log, once per change, why each VRF's traffic of a family goes to the kernel (and when
    /// it takes the fast path again).
    fn log_reasons(&mut self, vrfs: &[VrfView]) {
        let mut now = BTreeMap::new();
        for v in vrfs {
            for family in IpFamily::ALL {
                let mut why = Vec::new();
                for (what, reasons) in [
                    ("policy rule", &v.degraded),
                    ("netfilter", &v.netfilter),
                    ("ipsec", &v.ipsec),
                    ("host traffic, policy rule", &v.local_rules),
                    ("host traffic with a mark, policy rule", &v.local_marked),
                ] {
                    why.extend(reasons.of(family).iter().map(|r| format!("{what}: {r}")));
                }
                let key = (v.name.clone(), family);
                if self
                    .logged
                    .get(&key)
                    .map_or(!why.is_empty(), |old| *old != why)
                {
                    if why.is_empty() {
                        info!(vrf = %v.name, ?family, "the VRF's traffic takes the fast path again");
                    }
                    for r in &why {
                        warn!(vrf = %v.name, ?family, reason = %r, "the kernel decides this VRF's traffic of this family");
                    }
                }
                if !why.is_empty() {
                    now.insert(key, why);
                }
            }
        }
        self.logged = now;
    }

    /// The sysctls or the redirect targets changed: rewrite links whose entries changed.
    fn refresh_links(&mut self) -> Result<()> {
        let _busy = self.heartbeat.hold();
        let links = self.engine.planner().links();
        let refused = self.redirect.refused(self.engine.mirror(), links.keys());
        self.writer.set_redirect_refused(refused);
        self.writer.apply_links(&links)
    }

    /// Ask the kernel again which written links take redirects; only when an answer changed
    /// are the links planned and written again (planning them walks the routes).
    fn poll_redirect_targets(&mut self) -> Result<()> {
        let written = self.writer.link_ifindexes();
        let refused = self.redirect.refused(self.engine.mirror(), written.iter());
        if refused == *self.writer.redirect_refused() {
            return Ok(());
        }
        self.writer.set_redirect_refused(refused);
        let _busy = self.heartbeat.hold();
        self.writer.apply_links(&self.engine.planner().links())
    }

    /// `LINK_CAPTURE` on while `vrfctl capture` renews its lease, off once it stopped or died.
    fn watch_capture(&mut self) -> Result<()> {
        let on = self.dp.capture.running().unwrap_or(false);
        self.writer.set_capture(on)
    }

    /// XDP on exactly the devices that receive members' frames: members, and the trunks of
    /// VLAN members (see [`crate::plan::Plan::xdp_ports`]).
    fn attach(&mut self, want: BTreeSet<u32>) -> Result<()> {
        let have: BTreeSet<u32> = self.dp.attached().map(|(i, _)| i).collect();
        for ifindex in have.difference(&want) {
            self.dp.detach(*ifindex)?;
            info!(ifindex, "detached");
        }
        for ifindex in want.difference(&have) {
            let name = self
                .engine
                .mirror()
                .link(*ifindex)
                .map(|l| l.name.clone())
                .unwrap_or_default();
            match self.dp.attach(*ifindex, self.mode) {
                Ok(mode) => info!(interface = %name, ifindex, %mode, "attached"),
                // A member that cannot take XDP is simply served by the kernel.
                Err(e) => {
                    error!(interface = %name, ifindex, error = %format!("{e:#}"), "XDP attach failed")
                }
            }
        }
        Ok(())
    }

    /// tc egress on every VRF device (the fast path for what the host sends inside the VRF,
    /// behind a root qdisc so the kernel passes that traffic through the device) and on every
    /// member (to count what the kernel transmits).
    async fn attach_tc(&mut self) -> Result<()> {
        let vrfs = self.engine.vrfs();
        let devices: BTreeSet<u32> = vrfs.iter().filter_map(|v| v.device).collect();
        let members: BTreeSet<u32> = vrfs
            .iter()
            .flat_map(|v| v.members.iter().copied())
            .collect();
        let have: Vec<(TcProgram, u32)> = self.dp.attached_tc().collect();
        for (program, ifindex) in have {
            let wanted = match program {
                TcProgram::VrfEgress => devices.contains(&ifindex),
                TcProgram::MemberTx => members.contains(&ifindex),
            };
            if !wanted {
                self.dp.detach_tc(program, ifindex)?;
            }
        }
        self.qdiscs.retain(|i| devices.contains(i));
        let wanted = devices
            .iter()
            .map(|i| (TcProgram::VrfEgress, *i))
            .chain(members.iter().map(|i| (TcProgram::MemberTx, *i)));
        for (program, ifindex) in wanted.collect::<Vec<_>>() {
            let Some(name) = self.engine.mirror().link(ifindex).map(|l| l.name.clone()) else {
                continue;
            };
            if program == TcProgram::VrfEgress && !self.qdiscs.contains(&ifindex) {
                match self.netlink.add_root_qdisc(ifindex).await {
                    Ok(true) => {
                        info!(vrf = %name, "added a pfifo_fast root qdisc so host traffic passes the VRF device");
                        self.qdiscs.insert(ifindex);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        warn!(vrf = %name, error = %format!("{e:#}"), "no root qdisc: host traffic in this VRF stays on the kernel path")
                    }
                }
            }
            if let Err(e) = self.dp.attach_tc(program, &name, ifindex) {
                // Without it the kernel path serves this traffic; only speed or counts suffer.
                warn!(interface = %name, ?program, error = %format!("{e:#}"), "tc attach failed");
            }
        }
        Ok(())
    }

    async fn shutdown(&mut self) {
        if self.persist {
            // The next vrfd adopts all this; if none comes, the switch hands every packet to
            // the kernel within the 2 s.
            if let Err(e) = self.heartbeat.extend(&mut self.dp.maps, switch::STOP_LEASE) {
                error!(error = %format!("{e:#}"), "setting the last lease");
            }
            self.dp.keep_attached();
            self.pins.keep();
            info!("stopped: programs, links, maps and rules left in place for the next vrfd");
            return;
        }
        if let Err(e) = self.dp.detach_all() {
            error!(error = %format!("{e:#}"), "detaching");
        }
        for ifindex in std::mem::take(&mut self.qdiscs) {
            if let Err(e) = self.netlink.del_root_qdisc(ifindex).await {
                warn!(ifindex, error = %format!("{e:#}"), "removing the root qdisc vrfd added");
            }
        }
        // The declared VRFs' rules stay: they keep each VRF's traffic in its table without vrfd.
        info!("stopped: programs detached and pins removed; the VRFs' ip rules stay");
    }
}
