//! (5) vrfd going away and coming back, under load, and what the dead-man switch costs:
//! - loss across a restart (same build: adopted pins) and an upgrade (another stamp, via
//!   `VRFD_TEST_STAMP_SALT`: fresh maps, links moved with bpf_link_update) of a real vrfd, with
//!   a paced UDP flow from host A to host B counted at B (datagrams offered vs distinct ones
//!   received), next to the same flow through a vrfd left alone (the baseline);
//! - the switch's per-packet cost: BPF_PROG_TEST_RUN with repeat of one forwarded frame with
//!   the heartbeat armed (a deadline in the future: the lookup, the clock read, the compare)
//!   and disarmed (deadline 0), interleaved round by round.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use aya::{programs::Xdp, EbpfLoader};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use vrf_common::{prog_names, Heartbeat};
use vrf_user::maps::Maps;

use super::lookup::{self, Stats};
use super::programs::run_repeated;
use super::{system, Progress};
use tests::daemon::{log_has_message, topology_config, unique_pin_path, ConfigFile};
use tests::flow::Flow;
use tests::topology::TopologySpec;
use tests::{BgProcess, NetNs};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub switch: SwitchCost,
    pub flows: Vec<FlowResult>,
    /// Offered rate of every flow, datagrams per second.
    pub pps: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwitchCost {
    pub rounds: usize,
    pub repeat: u32,
    pub frame_len: usize,
    pub armed: Stats,
    pub disarmed: Stats,
    pub cpu: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowResult {
    /// "steady", "restart" or "upgrade".
    pub what: String,
    pub sent: u64,
    pub received: u64,
    /// Datagrams the router's kernel forwarded meanwhile (IpForwDatagrams; 0: XDP carried all).
    pub kernel_forwarded: u64,
    /// From the old vrfd's exit to the new one's `ready` (none for the baseline).
    pub handover_ms: Option<f64>,
}

pub fn run(quick: bool, progress: &Progress) -> Result<Results> {
    let switch = switch_cost(quick, progress)?;
    let pps = if quick { 5_000 } else { 10_000 };
    let flows = flows(quick, pps, progress)?;
    Ok(Results { switch, flows, pps })
}

fn switch_cost(quick: bool, progress: &Progress) -> Result<SwitchCost> {
    progress.step("dead-man switch cost: building the namespace topology");
    let topo = lookup::cost_topology("bsw")?;
    let router = topo.router();
    let m0 = topo.member("blook", 0);
    let mut ebpf = EbpfLoader::new()
        .load(vrf_user::EBPF_OBJECT)
        .context("loading vrf-xdp's object")?;
    let prog: &mut Xdp = ebpf
        .program_mut(prog_names::XDP_VRF)
        .ok_or_else(|| anyhow!("no {}", prog_names::XDP_VRF))?
        .try_into()?;
    prog.load().context("verifier rejected xdp_vrf")?;
    let mut maps = Maps::take(&mut ebpf, None)?;
    let routes = super::routes::v4_table(1_000, lookup::SEED);
    lookup::fill_cost_table(&mut maps, &topo, &routes)?;
    let dst = IpNet::V4(routes[routes.len() / 2]);
    let frame = lookup::frame(m0, dst.addr())?;
    let rounds = if quick { 200 } else { 1000 };
    progress.detail(&format!(
        "{rounds} rounds × 2 modes × {} repetitions of a {}-byte frame to {dst}",
        lookup::REPEAT,
        frame.len()
    ));
    let (mut armed, mut disarmed) = (Vec::new(), Vec::new());
    router.run_in(|| -> Result<()> {
        system::pin(0, super::forward::ROUTER_CPU)?;
        let prog: &Xdp = ebpf
            .program(prog_names::XDP_VRF)
            .ok_or_else(|| anyhow!("no xdp_vrf"))?
            .try_into()?;
        for round in 0..rounds {
            for k in 0..2 {
                let arm = (k + round) % 2 == 0;
                maps.set_heartbeat(Heartbeat {
                    // A day ahead: armed and never expiring during the run.
                    deadline_ns: if arm {
                        monotonic_ns() + 86_400_000_000_000
                    } else {
                        0
                    },
                    stamp: 0,
                })?;
                let r = run_repeated(prog, m0.ifindex, &frame, lookup::REPEAT)?;
                lookup::check(&r, "xdp_vrf", dst)?;
                let ns = r.per_run.as_nanos() as f64;
                if arm {
                    armed.push(ns)
                } else {
                    disarmed.push(ns)
                }
            }
        }
        Ok(())
    })?;
    let r = SwitchCost {
        rounds,
        repeat: lookup::REPEAT,
        frame_len: frame.len(),
        armed: Stats::of(&armed),
        disarmed: Stats::of(&disarmed),
        cpu: super::forward::ROUTER_CPU,
    };
    progress.detail(&format!(
        "armed {:.1} ns/packet, disarmed {:.1} (medians)",
        r.armed.median, r.disarmed.median
    ));
    Ok(r)
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// vrfd on `pins`, ready within 30 s.
fn vrfd(ns: &NetNs, config: &Path, pins: &Path, salt: Option<&str>) -> Result<BgProcess> {
    let mut c = ns.command(tests::bin_path("vrfd"));
    c.arg("--config")
        .arg(config)
        .arg("--pin-path")
        .arg(pins)
        .args(["--log-format", "json"]);
    if let Some(s) = salt {
        c.env(vrf_user::dataplane::STAMP_SALT_ENV, s);
    }
    let mut p = BgProcess::spawn(c)?;
    p.wait_for_log(|l| log_has_message(l, "ready"), Duration::from_secs(30))
        .context("vrfd not ready")?;
    Ok(p)
}

fn flows(quick: bool, pps: u64, progress: &Progress) -> Result<Vec<FlowResult>> {
    progress.step(&format!(
        "restart and upgrade under a {pps} datagrams/s UDP flow, counted at the receiving host"
    ));
    let topo = TopologySpec::two_vrfs_identical()
        .with_prefix("brst")
        .build()
        .context("building the restart topology")?;
    tests::fastpath::complete_host_checksums(&topo)?;
    topo.remove_all_rules();
    let r = topo.router();
    let config = ConfigFile::new(&topology_config(&topo))?;
    let pins = unique_pin_path()?;
    let detach = || {
        let _ = tests::daemon::detach_in(r, &pins);
        let _ = std::fs::remove_file(tests::daemon::lock_file(&pins));
    };
    let result = (|| -> Result<Vec<FlowResult>> {
        let settle = Duration::from_millis(if quick { 500 } else { 1000 });
        let mut out = Vec::new();
        let mut current = vrfd(r, config.path(), &pins, None)?;
        for (what, salt) in [("steady", None), ("restart", None), ("upgrade", Some("1"))] {
            let kernel0 = tests::forwarded_datagrams(r)?.0;
            let flow = Flow::start(&topo, pps);
            std::thread::sleep(settle);
            let mut handover_ms = None;
            if what != "steady" {
                let status = current.stop_with(Duration::from_secs(10))?;
                ensure!(status.code() == Some(0), "vrfd exited with {status}");
                let t0 = Instant::now();
                current = vrfd(r, config.path(), &pins, salt)?;
                handover_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
                if what == "upgrade" {
                    ensure!(
                        log_has_message(
                            &current.log(),
                            "upgrade done: every link runs this build, the old pins are gone"
                        ),
                        "the second vrfd did not upgrade"
                    );
                }
            }
            std::thread::sleep(settle);
            let (sent, received) = flow.finish();
            let kernel_forwarded = tests::forwarded_datagrams(r)?.0 - kernel0;
            progress.detail(&format!(
                "{what}: {sent} sent, {received} received, {} lost, kernel forwarded {kernel_forwarded}{}",
                sent - received.min(sent),
                handover_ms
                    .map(|ms| format!(", new vrfd ready {ms:.0} ms after the old exited"))
                    .unwrap_or_default()
            ));
            out.push(FlowResult {
                what: what.into(),
                sent,
                received,
                kernel_forwarded,
                handover_ms,
            });
        }
        let _ = current.stop_with(Duration::from_secs(10));
        Ok(out)
    })();
    detach();
    result
}

/// BENCHMARKS.md's section on restart, upgrade and the switch.
pub fn section(o: &mut String, r: &Results) {
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "## 5. Restart, upgrade and the dead-man switch\n\n\
         **Loss across a restart and an upgrade.** A real vrfd serves two VRFs of the test topology; \
         host A sends UDP to host B through red at {} datagrams/s (paced, 64-byte payloads, each with its \
         sequence number), B counts the distinct datagrams it receives. *steady*: vrfd left alone (the \
         baseline); *restart*: SIGTERM, a new vrfd of the same build adopts the pins; *upgrade*: the new \
         vrfd's stamp differs (`VRFD_TEST_STAMP_SALT=1`, as if its map layout had changed), so it fills \
         fresh maps beside the old and moves each pinned link to its programs (bpf_link_update). The \
         router's IpForwDatagrams says how much the kernel carried meanwhile. The offered rate is what one \
         paced socket sends: below what the kernel alone forwards, so a loss here would be the data \
         plane's, not the kernel's capacity.\n",
        r.pps
    );
    let _ = writeln!(
        o,
        "| case | sent | received at B | lost | forwarded by the kernel | new vrfd ready after |\n|---|---|---|---|---|---|"
    );
    for f in &r.flows {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            f.what,
            f.sent,
            f.received,
            f.sent - f.received.min(f.sent),
            f.kernel_forwarded,
            f.handover_ms
                .map(|ms| format!("{ms:.0} ms"))
                .unwrap_or_else(|| "—".into())
        );
    }
    let s = &r.switch;
    let _ = writeln!(
        o,
        "\nCounters: a restart keeps them (same maps); an upgrade starts them from zero (fresh maps; \
         the old ones stop counting once the links moved).\n\n\
         **What the switch costs per packet.** BPF_PROG_TEST_RUN with `repeat` ({} repetitions) of one \
         {}-byte UDP frame forwarded by a 1k-route table (the per-packet part's topology and frame), on \
         CPU {}, {} rounds, the two modes interleaved in rotating order. *armed*: HEARTBEAT holds a \
         deadline in the future (what a live vrfd keeps there); *disarmed*: deadline 0 (a data plane \
         loaded without vrfd). Both pay the array lookup and the coarse clock read (the helper is called \
         before the deadline is looked at); the difference is the compare. There is no build without \
         the check to compare with.\n\n\
         | mode | mean | median | p10 | p90 |\n|---|---|---|---|---|\n\
         | armed | {:.1} ns | {:.1} | {:.1} | {:.1} |\n\
         | disarmed | {:.1} ns | {:.1} | {:.1} | {:.1} |\n\n\
         Difference of the medians: {:+.1} ns/packet.\n",
        s.repeat,
        s.frame_len,
        s.cpu,
        s.rounds,
        s.armed.mean,
        s.armed.median,
        s.armed.p10,
        s.armed.p90,
        s.disarmed.mean,
        s.disarmed.median,
        s.disarmed.p10,
        s.disarmed.p90,
        s.armed.median - s.disarmed.median
    );
}
