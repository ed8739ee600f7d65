//! (5) vrfd going away and coming back, under load, and what the dead-man switch costs:
//! - loss across a restart (same build: adopted pins) and an upgrade (another stamp, via
//!   `VRFD_TEST_STAMP_SALT`: fresh maps, links moved with bpf_link_update) of a real vrfd,
//!   under live frames from host A to host B (`tests::livegen::Load`, the restart test's load)
//!   at a rate R above what the kernel alone forwards here (measured first, unpaced), next to
//!   steady windows of the fast path and the control: the kernel alone at R. Twice: with the
//!   generator's window (at most `livegen::IN_FLIGHT` frames in flight: the load the restart
//!   test asserts, no ring can overflow) and without (every frame the pacing sends goes, and
//!   full veth rings drop what this VM's stalls leave there);
//! - the switch's per-packet cost: BPF_PROG_TEST_RUN with repeat of one forwarded frame with
//!   the switch alive (the lookup of `SWITCH`, the compare: no clock read, the timer does that),
//!   expired (every packet passed), and through a copy loaded with `DEADMAN` = 0 (the verifier drops
//!   the check), interleaved round by round.
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use aya::{programs::Xdp, EbpfLoader};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use vrf_common::{prog_names, SwitchState, DEADMAN_GLOBAL};
use vrf_user::maps::Maps;

use super::lookup::{self, Stats};
use super::programs::run_repeated;
use super::{system, Progress};
use tests::daemon::{topology_config, unique_pin_path, ConfigFile};
use tests::livegen::{self, Phase, RestartPlan};
use tests::topology::TopologySpec;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub switch: SwitchCost,
    /// Without the generator's window.
    pub load: LoadResults,
    /// With it (None: a run from before it existed).
    #[serde(default)]
    pub windowed: Option<LoadResults>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwitchCost {
    pub rounds: usize,
    pub repeat: u32,
    pub frame_len: usize,
    pub armed: Stats,
    pub disarmed: Stats,
    /// The copy loaded with `DEADMAN` = 0: no lookup, no compare.
    pub without: Stats,
    /// Translated instructions of xdp_vrf with and without the switch.
    pub insns_with: u32,
    pub insns_without: u32,
    pub cpu: usize,
}

/// Runs recorded before `carried` was: R was always a carried factor then.
fn carried_before_it_was_recorded() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadResults {
    /// What the kernel alone forwarded here, unpaced (frames/s received at B): the larger of
    /// before and after.
    pub kernel_capacity_pps: f64,
    pub kernel_before_pps: f64,
    pub kernel_after_pps: f64,
    /// R, as a multiple of the kernel's capacity before.
    pub factor: f64,
    pub offered_pps: f64,
    /// Whether R's steady window was carried; false: none was, R is the least lossy one.
    #[serde(default = "carried_before_it_was_recorded")]
    pub carried: bool,
    /// Red's forwarded counter during the restart (the same maps).
    pub restart_counted: Option<u64>,
    /// ... and during the upgrade: in the old maps, in the new ones from zero.
    pub upgrade_counted: Option<(u64, u64)>,
    /// The generator's window, in frames (None: without).
    #[serde(default)]
    pub window: Option<u32>,
    pub windows: Vec<WindowResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WindowResult {
    /// "kernel alone, unpaced", "steady", "restart", "upgrade", "steady again", "kernel alone at R".
    pub what: String,
    pub seconds: f64,
    pub sent: u64,
    pub received: u64,
    /// Frames that found the router member's receive ring full (host A's xmit errors): the
    /// router's vCPU was not running, the frames never reached it.
    pub ring_full_in: u64,
    /// Frames the router sent into a full receive ring at B.
    pub ring_full_out: u64,
    pub lost_in_router: u64,
    /// The router's IpForwDatagrams meanwhile (0: XDP carried everything).
    pub kernel_forwarded: u64,
    /// From the old vrfd's exit to the new one's `ready`.
    pub ready_ms: Option<f64>,
    /// Frames the generator's window held back (the path had that many in flight).
    #[serde(default)]
    pub held: u64,
}

impl WindowResult {
    fn of(what: &str, p: &Phase, ready: Option<Duration>) -> Self {
        let w = &p.window;
        WindowResult {
            what: what.into(),
            seconds: w.seconds,
            sent: w.sent,
            received: w.received,
            ring_full_in: w.ring_full_in,
            ring_full_out: w.ring_full_out,
            lost_in_router: w.lost_in_router(),
            kernel_forwarded: p.kernel_forwarded,
            ready_ms: ready.map(|d| d.as_secs_f64() * 1e3),
            held: w.held,
        }
    }
    fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
    /// Frames sent per second of the window.
    fn offered_pps(&self) -> f64 {
        self.sent as f64 / self.seconds.max(1e-9)
    }
    fn percent(&self, n: u64) -> f64 {
        100.0 * n as f64 / (self.sent as f64).max(1.0)
    }
}

pub fn run(quick: bool, progress: &Progress) -> Result<Results> {
    let switch = switch_cost(quick, progress)?;
    let windowed = Some(under_load(quick, Some(livegen::IN_FLIGHT), progress)?);
    let load = under_load(quick, None, progress)?;
    Ok(Results {
        switch,
        load,
        windowed,
    })
}

/// xdp_vrf of `ebpf`, loaded; its translated size in instructions.
fn load_xdp_vrf(ebpf: &mut aya::Ebpf, what: &str) -> Result<u32> {
    let prog: &mut Xdp = ebpf
        .program_mut(prog_names::XDP_VRF)
        .ok_or_else(|| anyhow!("no {}", prog_names::XDP_VRF))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("verifier rejected xdp_vrf {what}"))?;
    Ok(prog.info()?.size_translated().unwrap_or(0) / 8)
}

fn loaded_xdp_vrf(ebpf: &aya::Ebpf) -> Result<&Xdp> {
    Ok(ebpf
        .program(prog_names::XDP_VRF)
        .ok_or_else(|| anyhow!("no xdp_vrf"))?
        .try_into()?)
}

fn switch_cost(quick: bool, progress: &Progress) -> Result<SwitchCost> {
    progress.step("dead-man switch cost: building the namespace topology");
    let topo = lookup::cost_topology("bsw")?;
    let router = topo.router();
    let m0 = topo.member("blook", 0);
    let mut ebpf = EbpfLoader::new()
        .load(vrf_user::EBPF_OBJECT)
        .context("loading vrf-xdp's object")?;
    let insns_with = load_xdp_vrf(&mut ebpf, "")?;
    let mut maps = Maps::take(&mut ebpf, None)?;
    // The same object with the switch off (`.rodata` frozen: the verifier drops the check),
    // its own maps filled alike.
    let mut bare = EbpfLoader::new()
        .override_global(DEADMAN_GLOBAL, &0u8, true)
        .load(vrf_user::EBPF_OBJECT)
        .context("loading vrf-xdp's object without the switch")?;
    let insns_without = load_xdp_vrf(&mut bare, "without the switch")?;
    let mut bare_maps = Maps::take(&mut bare, None)?;
    let routes = super::routes::v4_table(1_000, lookup::SEED);
    lookup::fill_cost_table(&mut maps, &topo, &routes)?;
    lookup::fill_cost_table(&mut bare_maps, &topo, &routes)?;
    // Expired: a switch left in would pass everything; only the copy without it forwards.
    bare_maps.set_switch(SwitchState::Expired)?;
    let dst = IpNet::V4(routes[routes.len() / 2]);
    let frame = lookup::frame(m0, dst.addr())?;
    let rounds = if quick { 200 } else { 1000 };
    progress.detail(&format!(
        "{rounds} rounds × 3 modes × {} repetitions of a {}-byte frame to {dst}",
        lookup::REPEAT,
        frame.len()
    ));
    let mut ns: [Vec<f64>; 3] = Default::default();
    router.run_in(|| -> Result<()> {
        system::pin(0, super::forward::ROUTER_CPU)?;
        let (with, without) = (loaded_xdp_vrf(&ebpf)?, loaded_xdp_vrf(&bare)?);
        for round in 0..rounds {
            for k in 0..3 {
                let mode = (k + round) % 3;
                let p = if mode == 2 { without } else { with };
                if mode < 2 {
                    // Set from userspace: no timer, so alive stays alive through the run.
                    maps.set_switch(if mode == 0 {
                        SwitchState::Alive
                    } else {
                        SwitchState::Expired
                    })?;
                }
                let r = run_repeated(p, m0.ifindex, &frame, lookup::REPEAT)?;
                if mode == 1 {
                    ensure!(
                        r.action == vrf_user::dataplane::XdpAction::Pass,
                        "xdp_vrf with the switch expired: {:?}, not a pass to the kernel",
                        r.action
                    );
                } else {
                    lookup::check(&r, "xdp_vrf", dst)?;
                }
                ns[mode].push(r.per_run.as_nanos() as f64);
            }
        }
        Ok(())
    })?;
    let [armed, disarmed, without] = ns.map(|v| Stats::of(&v));
    let r = SwitchCost {
        rounds,
        repeat: lookup::REPEAT,
        frame_len: frame.len(),
        armed,
        disarmed,
        without,
        insns_with,
        insns_without,
        cpu: super::forward::ROUTER_CPU,
    };
    progress.detail(&format!(
        "with the switch {:.1} ns/packet, without {:.1} (medians; {} vs {} insns)",
        r.armed.median, r.without.median, insns_with, insns_without
    ));
    Ok(r)
}

/// The restart test's sequence (`tests::livegen::restart_under_load`), measured rather than
/// asserted; the generator with `window` (frames in flight) or without.
fn under_load(quick: bool, window: Option<u32>, progress: &Progress) -> Result<LoadResults> {
    progress.step(&format!(
        "restart and upgrade under live frames above the kernel's capacity, {}",
        window.map_or("the generator without a window".into(), |w| format!(
            "the generator's window {w} frames"
        ))
    ));
    let topo = TopologySpec::two_vrfs_identical()
        .with_prefix("brst")
        .build()
        .context("building the restart topology")?;
    tests::fastpath::complete_host_checksums(&topo)?;
    // vrfd adds its own rules; the kernel alone then forwards on them.
    topo.remove_all_rules();
    let r = topo.router();
    let config = ConfigFile::new(&topology_config(&topo))?;
    let pins = unique_pin_path()?;
    let result = (|| -> Result<LoadResults> {
        let mut first = livegen::start_vrfd(r, config.path(), &pins, None)?;
        ensure!(first.stop_with(Duration::from_secs(10))?.code() == Some(0));
        livegen::detach_for_kernel(&topo, "red", r, &pins)?;
        let plan = RestartPlan {
            ns: r,
            config: config.path(),
            pins: &pins,
            capacity: Duration::from_secs(if quick { 1 } else { 2 }),
            pre: Duration::from_millis(500),
            post: Duration::from_millis(700),
            steady: Duration::from_secs(if quick { 2 } else { 4 }),
            window,
        };
        let m = livegen::restart_under_load(&topo, "red", &plan, &|l| progress.detail(l))?;
        let mut windows = vec![WindowResult::of(
            "kernel alone, unpaced",
            &m.kernel_before,
            None,
        )];
        for (factor, p) in &m.tried {
            windows.push(WindowResult::of(
                &format!("steady at {factor} × K"),
                p,
                None,
            ));
        }
        ensure!(
            m.rate > 0.0,
            "no steady fast-path window at any of {:?} × the kernel's capacity was usable (lost in the router, or under 95 % of R offered)",
            livegen::RATE_FACTORS
        );
        for (what, h) in [("restart", &m.restart), ("upgrade", &m.upgrade)] {
            let h = h.as_ref().context("handover not measured")?;
            windows.push(WindowResult::of(what, &h.phase, Some(h.ready)));
        }
        for (what, p) in [
            ("steady again", &m.steady_again),
            ("kernel alone, unpaced, after", &m.kernel_after),
            ("kernel alone at R", &m.control),
        ] {
            windows.push(WindowResult::of(
                what,
                p.as_ref().context("window not measured")?,
                None,
            ));
        }
        let counted =
            |h: &Option<livegen::Handover>| h.as_ref().map(|h| (h.old_counted, h.new_counted));
        Ok(LoadResults {
            kernel_capacity_pps: m.kernel_capacity(),
            kernel_before_pps: m.kernel_before.window.received_pps(),
            kernel_after_pps: m.kernel_after.map_or(0.0, |p| p.window.received_pps()),
            factor: m.factor,
            offered_pps: m.rate,
            carried: m.carried,
            restart_counted: counted(&m.restart).map(|c| c.0),
            upgrade_counted: counted(&m.upgrade).map(|c| (c.0, c.1.unwrap_or(0))),
            window,
            windows,
        })
    })();
    let _ = tests::daemon::detach_in(r, &pins);
    let _ = std::fs::remove_file(tests::daemon::lock_file(&pins));
    result
}

/// BENCHMARKS.md's section on restart, upgrade and the switch.
pub fn section(o: &mut String, r: &Results) {
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "## 5. Restart, upgrade and the dead-man switch\n\n\
         **Loss across a restart and an upgrade, above the kernel's capacity.** A real vrfd serves \
         two VRFs of the test topology; host A sends 64-byte UDP frames to host B through red as XDP \
         live frames (the bench's generator, paced in the program), B's sink counts them: \
         `tests::livegen::restart_under_load`, the sequence the restart test asserts. The router's \
         NAPI thread of the receiving member runs SCHED_FIFO on CPU 1, the generator and B's sink on \
         CPU 0; vrfd is not pinned (on CPU 0 it time-shared the generator, which then offered in \
         bursts the router's ring could not take). K: what the kernel alone (vrfd detached, its ip \
         rules left) forwarded, offered all the generator sends, the larger of before and right \
         after. R: the first of 3 / 2.5 / 2 / 1.5 / 1.25 × K (before) at which a steady window of \
         the fast path was carried (nothing lost in the router, at most 5 % at a full ring, 95 % of \
         R offered). *restart*: SIGTERM, a new vrfd of the same build adopts the pins; *upgrade*: \
         the new vrfd's stamp differs (`VRFD_TEST_STAMP_SALT=1`), so it fills fresh maps and moves \
         each pinned link (bpf_link_update). A starting vrfd that finds pins beats their switch from \
         the moment it has opened them and subscribed to the kernel's events, so the fast path never \
         stops deciding. *offered*: frames sent / the window's length. *ring full*: frames host A's \
         veth could not put into the router member's 256-frame receive ring (the router's vCPU was \
         not running: this VM's stalls), or the router into B's; they never reached the router's \
         program, or B. *in the router*: the rest of the loss. *held back*: frames the generator's \
         window did not send. IpForwDatagrams: what the router's kernel forwarded meanwhile.\n"
    );
    if let Some(w) = &r.windowed {
        let _ = writeln!(
            o,
            "**With the generator's window** (the load tests/tests/restart.rs asserts): at most {} \
             frames between A and B, fewer than a veth ring holds, so no ring on the way can \
             overflow; when a thread on the way does not run, the generator waits, as a sender \
             with a transport window does. Every frame sent must arrive at B; the offered rate is \
             what the path took. K is still measured with every frame offered (the kernel \
             forwarded 15–25 % more so than under the window: full rings, full NAPI \
             batches).\n",
            w.window.unwrap_or(0)
        );
        load_table(o, w);
    }
    let _ = writeln!(
        o,
        "**Without a window**: every frame the pacing sends leaves, and a full veth ring drops \
         what a stalled thread leaves in it — in the steady windows as much as across a restart \
         or an upgrade.\n"
    );
    load_table(o, &r.load);
    let s = &r.switch;
    let _ = writeln!(
        o,
        "Counters: a restart keeps them (same maps); an upgrade starts them from zero (fresh maps; \
         the old ones stop counting once the links moved).\n\n\
         **What the switch costs per packet.** BPF_PROG_TEST_RUN with `repeat` ({} repetitions) of one \
         {}-byte UDP frame forwarded by a 1k-route table (the per-packet part's topology and frame), on \
         CPU {}, {} rounds, the three modes interleaved in rotating order. *with the switch*: `SWITCH` \
         says alive (what a live vrfd's beat keeps there; the BPF timer that expires it is armed by \
         the beat, not per packet): the array lookup and the compare, no clock read; *expired*: \
         every packet passed to the kernel (checked: XDP_PASS), after the same lookup, no route \
         lookup; *without*: the same object loaded with \
         `DEADMAN` = 0 (frozen `.rodata`: the verifier removes the check; {} instructions instead of \
         {}).\n\n\
         | mode | mean | median | p10 | p90 |\n|---|---|---|---|---|\n\
         | with the switch | {:.1} ns | {:.1} | {:.1} | {:.1} |\n\
         | without | {:.1} ns | {:.1} | {:.1} | {:.1} |\n\
         | expired (passes) | {:.1} ns | {:.1} | {:.1} | {:.1} |\n\n\
         What the switch costs: {:+.1} ns/packet (difference of the medians).\n",
        s.repeat,
        s.frame_len,
        s.cpu,
        s.rounds,
        s.insns_without,
        s.insns_with,
        s.armed.mean,
        s.armed.median,
        s.armed.p10,
        s.armed.p90,
        s.without.mean,
        s.without.median,
        s.without.p10,
        s.without.p90,
        s.disarmed.mean,
        s.disarmed.median,
        s.disarmed.p10,
        s.disarmed.p90,
        s.armed.median - s.without.median
    );
}

/// One load's K and R, its windows' table, and its counters.
fn load_table(o: &mut String, l: &LoadResults) {
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "K = {:.0} frames/s ({:.0} before, {:.0} after); R = {:.2} × K before = {:.0} frames/s{}.\n",
        l.kernel_capacity_pps,
        l.kernel_before_pps,
        l.kernel_after_pps,
        l.factor,
        l.offered_pps,
        if l.carried {
            ""
        } else {
            " — in this run no factor was carried, and R is the factor whose window found a full \
             ring least often (windowed: 95 % of what the best steady window took)"
        }
    );
    let _ = writeln!(
        o,
        "| window | length | sent | offered | received at B | lost | ring full (in / out) | in the router | held back | forwarded by the kernel | new vrfd ready after |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for w in &l.windows {
        let _ = writeln!(
            o,
            "| {} | {:.2} s | {} | {:.0}/s ({:.2} × K) | {} | {} ({:.2}%) | {} / {} ({:.2}%) | {} | {} | {} | {} |",
            w.what,
            w.seconds,
            w.sent,
            w.offered_pps(),
            w.offered_pps() / l.kernel_capacity_pps.max(1.0),
            w.received,
            w.lost(),
            w.percent(w.lost()),
            w.ring_full_in,
            w.ring_full_out,
            w.percent(w.ring_full_in + w.ring_full_out),
            w.lost_in_router,
            w.held,
            w.kernel_forwarded,
            w.ready_ms
                .map(|ms| format!("{ms:.0} ms"))
                .unwrap_or_else(|| "—".into())
        );
    }
    if let (Some(rc), Some((old, new))) = (l.restart_counted, l.upgrade_counted) {
        let _ = writeln!(
            o,
            "\nRed's forwarded counter: +{rc} across the restart (the same maps); across the \
             upgrade +{old} in the old maps, then {new} in the new ones from zero.\n"
        );
    }
}
