//! (1) Forwarding throughput: one VRF, two members, UDP offered at the highest rate this
//! machine produces, counted on the far side; vrf-xdp, the kernel (no XDP), and the
//! `bpf_fib_lookup` helper program.
//!
//! Traffic: host A's veth transmits XDP live frames (BPF_PROG_TEST_RUN, `xdp_bench_gen` returns
//! XDP_TX, which sends the frame out of the test run's ingress device, as xdp-trafficgen does)
//! into the router's member 0. The router forwards out of member 1 to host B, whose veth runs
//! `xdp_bench_sink` (count, drop) in native XDP, the same for every mode. CPUs: the generator
//! thread and host B's NAPI thread share CPU 0, the router's NAPI thread (member 0, threaded
//! NAPI) has CPU 1 to itself, so the router's work is what the measurement is bounded by; the
//! generator's own ceiling is measured into a sink on member 0.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use aya::programs::xdp::XdpLinkId;
use serde::{Deserialize, Serialize};
use vrf_common::Reason;
use vrf_user::bench::prog_names;
use vrf_user::dataplane::{DataPlane, XdpAttachMode};
use vrf_user::packet::FrameSpec;

use super::programs::BenchPrograms;
use super::{profile, system, Progress};
use tests::fastpath;
use tests::topology::{MemberSpec, Topology, TopologySpec, VrfSpec};

pub const TABLE: u32 = 100;
/// Ethernet frame sizes without the FCS: 64- and 1518-byte frames on the wire, the latter a
/// 1500-byte IP packet.
pub const FRAME_SIZES: [usize; 2] = [60, 1514];
pub const GEN_CPU: usize = 0;
pub const ROUTER_CPU: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    VrfXdp,
    Kernel,
    FibHelper,
    /// The ceiling of any XDP forwarder here: no lookup, fixed MACs, TTL − 1, redirect.
    RedirectCeiling,
    /// No router: the generator into a drop-everything sink on member 0.
    GeneratorCeiling,
}

impl Mode {
    pub const ROUTERS: [Mode; 4] = [
        Mode::VrfXdp,
        Mode::Kernel,
        Mode::FibHelper,
        Mode::RedirectCeiling,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Mode::VrfXdp => "vrf_xdp",
            Mode::Kernel => "kernel",
            Mode::FibHelper => "fib_helper",
            Mode::RedirectCeiling => "redirect_ceiling",
            Mode::GeneratorCeiling => "generator_ceiling",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Mode::VrfXdp => "vrf-xdp",
            Mode::Kernel => "kernel (no XDP)",
            Mode::FibHelper => "bpf_fib_lookup XDP",
            Mode::RedirectCeiling => "raw XDP redirect (no lookup)",
            Mode::GeneratorCeiling => "generator → sink",
        }
    }
}

/// The size key of a frame: "64" or "1500" (on-the-wire frame / IP packet size).
pub fn size_key(frame_len: usize) -> &'static str {
    if frame_len <= 60 {
        "64"
    } else {
        "1500"
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trial {
    pub mode: Mode,
    pub frame_len: usize,
    pub round: usize,
    pub seconds: f64,
    pub offered_pps: f64,
    pub received_pps: f64,
    /// What the router itself counted as forwarded in the trial, per second: vrf-xdp's
    /// `forwarded` counter, or the kernel's IpForwDatagrams; 0 for the helper.
    pub router_counted_pps: f64,
    /// Busy share of each CPU during the trial (the whole machine, other users included).
    pub cpu_busy: Vec<f64>,
    /// CPU seconds per second the router's NAPI thread got (it does all of the router's work).
    pub router_cpu: f64,
    /// CPU seconds per second of the generator thread and of host B's (sink) NAPI thread.
    pub generator_cpu: f64,
    pub sink_cpu: f64,
    /// Received packets per CPU second of the router thread: what one core forwards when it
    /// has nothing else to do (robust against other users of the machine).
    pub pps_per_router_core: f64,
}

/// mode key → size key → value.
pub type Table = BTreeMap<String, BTreeMap<String, f64>>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub trials: Vec<Trial>,
    /// Median received packets per second, by mode key then size key.
    pub median_pps: Table,
    /// Median of [`Trial::pps_per_router_core`], by mode key then size key.
    pub median_per_core: Table,
    pub rounds: usize,
    pub seconds: f64,
    pub pinning: String,
    /// perf of the router CPU during one extra 64-byte trial per router mode.
    pub profiles: BTreeMap<String, Vec<profile::Hot>>,
}

struct Rig {
    topo: Topology,
    dp: DataPlane,
    bp: BenchPrograms,
    slot: u32,
    router_links: Vec<(&'static str, XdpLinkId)>,
    sink_b: Option<XdpLinkId>,
    /// NAPI threads of the router's member 0 and of host B's veth.
    router_thread: i32,
    sink_thread: i32,
}

pub struct Config {
    pub seconds: f64,
    pub rounds: usize,
    pub profile: bool,
}

pub fn run(cfg: &Config, progress: &Progress) -> Result<Results> {
    ensure!(
        system::cpus() >= 2,
        "the forwarding benchmark pins the generator and the router to two different CPUs"
    );
    progress.step("forwarding: building the namespace topology");
    let spec = TopologySpec {
        prefix: "bench".into(),
        vrfs: vec![VrfSpec {
            name: "bfwd".into(),
            table: TABLE,
            members: vec![
                MemberSpec::dual("10.0.1.0/24", "fd00:1::/64"),
                MemberSpec::dual("10.0.2.0/24", "fd00:2::/64"),
            ],
        }],
    };
    let topo = spec.build().context("building the forwarding topology")?;
    let mut rig = Rig::new(topo)?;
    let result = rig.measure(cfg, progress);
    rig.teardown();
    result
}

impl Rig {
    fn new(topo: Topology) -> Result<Rig> {
        let (m0, m1) = (topo.member("bfwd", 0), topo.member("bfwd", 1));
        // NAPI on the router's members, so that the kernel path receives what host A's veth
        // redirects (and threaded NAPI has a thread to pin).
        tests::set_gro(topo.router(), &m0.ifname, true)?;
        tests::set_gro(topo.router(), &m1.ifname, true)?;
        let mut dp = DataPlane::load().context("loading vrf-xdp")?;
        let programmed = fastpath::program(&mut dp, &topo)?;
        let slot = programmed.slot("bfwd");
        let mut bp = BenchPrograms::load()?;
        bp.set_table(TABLE)?;
        topo.router().run_in(|| -> Result<()> {
            bp.add_tx_port(m0.ifindex)?;
            bp.add_tx_port(m1.ifindex)
        })?;
        // The ceiling sends every frame where the lookup would: out of member 1 to host B.
        bp.set_redirect(vrf_common::BenchRedirect {
            dst_mac: m1.host_mac,
            src_mac: m1.router_mac,
            oif: m1.ifindex,
        })?;
        let sink_b = Some(
            m1.host
                .run_in(|| bp.attach(prog_names::SINK, m1.host_ifindex))?,
        );
        Ok(Rig {
            topo,
            dp,
            bp,
            slot,
            router_links: Vec::new(),
            sink_b,
            router_thread: 0,
            sink_thread: 0,
        })
    }

    fn set_mode(&mut self, mode: Mode) -> Result<()> {
        let Rig {
            topo,
            dp,
            bp,
            router_links,
            ..
        } = self;
        let (m0, m1) = (topo.member("bfwd", 0), topo.member("bfwd", 1));
        topo.router().run_in(|| -> Result<()> {
            dp.detach(m0.ifindex)?;
            dp.detach(m1.ifindex)?;
            for (prog, id) in router_links.drain(..) {
                bp.detach(prog, id)?;
            }
            match mode {
                Mode::VrfXdp => {
                    dp.attach(m0.ifindex, XdpAttachMode::Native)?;
                    dp.attach(m1.ifindex, XdpAttachMode::Native)?;
                }
                Mode::Kernel => {}
                Mode::FibHelper | Mode::RedirectCeiling => {
                    let prog = if mode == Mode::FibHelper {
                        prog_names::FIB_HELPER
                    } else {
                        prog_names::REDIRECT
                    };
                    for m in [m0, m1] {
                        let id = bp.attach(prog, m.ifindex)?;
                        router_links.push((prog, id));
                    }
                }
                Mode::GeneratorCeiling => {
                    let id = bp.attach(prog_names::SINK, m0.ifindex)?;
                    router_links.push((prog_names::SINK, id));
                }
            }
            Ok(())
        })?;
        // Attaching or detaching XDP may rebuild a veth's NAPI: pin afresh every time.
        self.router_thread = system::pin_napi(topo.router(), &m0.ifname, ROUTER_CPU)?;
        self.sink_thread = system::pin_napi(&m1.host, tests::HOST_IFNAME, GEN_CPU)?;
        std::thread::sleep(Duration::from_millis(50));
        Ok(())
    }

    fn frame(&self, len: usize) -> Result<Vec<u8>> {
        let (m0, m1) = (self.topo.member("bfwd", 0), self.topo.member("bfwd", 1));
        let mut spec = FrameSpec::new(IpAddr::V4(m0.host4()), IpAddr::V4(m1.host4()));
        spec.src_mac = m0.host_mac;
        spec.dst_mac = m0.router_mac;
        spec.payload_len = len - 42;
        let frame = spec.udp()?;
        ensure!(
            frame.len() == len,
            "frame of {} bytes, not {len}",
            frame.len()
        );
        Ok(frame)
    }

    fn router_counter(&self, mode: Mode) -> Result<u64> {
        Ok(match mode {
            Mode::VrfXdp => fastpath::vrf_counter(&self.dp, self.slot, Reason::Forwarded)?.packets,
            Mode::Kernel => tests::nstat::forwarded_datagrams(self.topo.router())?.0,
            _ => 0,
        })
    }

    fn trial(&mut self, mode: Mode, frame_len: usize, seconds: f64, round: usize) -> Result<Trial> {
        let frame = self.frame(frame_len)?;
        self.bp.set_template(&frame)?;
        let counted0 = self.router_counter(mode)?;
        let sink0 = self.bp.sink_count()?;
        let (router, sink) = (self.router_thread.to_string(), self.sink_thread.to_string());
        let (router0, sink0_ns) = (system::cpu_ns(&router)?, system::cpu_ns(&sink)?);
        let cpu0 = system::cpu_times()?;
        let (sent, elapsed, gen_ns) = self.generate(&frame, seconds)?;
        std::thread::sleep(Duration::from_millis(30));
        let cpu1 = system::cpu_times()?;
        let router_ns = system::cpu_ns(&router)? - router0;
        let sink_ns = system::cpu_ns(&sink)? - sink0_ns;
        let received = self.bp.sink_count()? - sink0;
        let counted = self.router_counter(mode)? - counted0;
        let secs = elapsed.as_secs_f64();
        Ok(Trial {
            mode,
            frame_len,
            round,
            seconds: secs,
            offered_pps: sent as f64 / secs,
            received_pps: received as f64 / secs,
            router_counted_pps: counted as f64 / secs,
            cpu_busy: system::busy_percent(&cpu0, &cpu1),
            router_cpu: router_ns as f64 / 1e9 / secs,
            generator_cpu: gen_ns as f64 / 1e9 / secs,
            sink_cpu: sink_ns as f64 / 1e9 / secs,
            pps_per_router_core: received as f64 / (router_ns as f64 / 1e9).max(1e-9),
        })
    }

    /// Live frames out of host A's veth for `seconds`, from a thread pinned to [`GEN_CPU`].
    /// Returns frames sent, wall time and the thread's CPU time (ns).
    fn generate(&mut self, frame: &[u8], seconds: f64) -> Result<(u64, Duration, u64)> {
        let m0 = self.topo.member("bfwd", 0);
        let ifindex = m0.host_ifindex;
        let bp = &mut self.bp;
        m0.host.run_in(|| -> Result<(u64, Duration, u64)> {
            system::pin(0, GEN_CPU)?;
            let cpu0 = system::cpu_ns("thread-self")?;
            let mut chunk: u32 = 65536;
            let mut sent = 0u64;
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < seconds {
                let took = bp.generate(ifindex, frame, chunk)?;
                sent += u64::from(chunk);
                // About 50 ms per call: short enough to stop on time, long enough to amortise.
                let rate = f64::from(chunk) / took.as_secs_f64().max(1e-6);
                chunk = (rate * 0.05).clamp(4096.0, 4e6) as u32;
            }
            let elapsed = start.elapsed();
            Ok((sent, elapsed, system::cpu_ns("thread-self")? - cpu0))
        })
    }

    fn measure(&mut self, cfg: &Config, progress: &Progress) -> Result<Results> {
        let mut trials = Vec::new();
        let mut order: Vec<Mode> = Mode::ROUTERS.into();
        order.push(Mode::GeneratorCeiling);
        for round in 0..cfg.rounds {
            for &len in &FRAME_SIZES {
                for &mode in &order {
                    self.set_mode(mode)?;
                    let t = self.trial(mode, len, cfg.seconds, round)?;
                    progress.detail(&format!(
                        "round {} {:>4}-byte {:<22} offered {:>9.0} pps, received {:>9.0} pps, router thread {:>3.0}% of a CPU → {:>9.0} pps per core; CPUs busy {}",
                        round + 1,
                        size_key(len),
                        mode.label(),
                        t.offered_pps,
                        t.received_pps,
                        t.router_cpu * 100.0,
                        t.pps_per_router_core,
                        t.cpu_busy
                            .iter()
                            .map(|b| format!("{b:.0}%"))
                            .collect::<Vec<_>>()
                            .join("/")
                    ));
                    trials.push(t);
                }
                // Rotate so no mode always runs first (or always right after the same one).
                order.rotate_left(1);
            }
        }
        let mut profiles = BTreeMap::new();
        if cfg.profile && profile::available() {
            let dir = std::env::temp_dir();
            for mode in Mode::ROUTERS {
                self.set_mode(mode)?;
                let secs = cfg.seconds.max(2.0);
                let rec = profile::start(
                    &dir,
                    &format!("vrf-bench-fwd-{}", std::process::id()),
                    &["-t", &self.router_thread.to_string()],
                    secs - 0.5,
                    999,
                )?;
                let frame = self.frame(FRAME_SIZES[0])?;
                self.bp.set_template(&frame)?;
                self.generate(&frame, secs)?;
                profiles.insert(mode.key().to_string(), rec.finish(40)?);
            }
        }
        let mut median_pps = Table::new();
        let mut median_per_core = Table::new();
        for &mode in &order {
            for &len in &FRAME_SIZES {
                let of = |f: fn(&Trial) -> f64| -> f64 {
                    let v: Vec<f64> = trials
                        .iter()
                        .filter(|t| t.mode == mode && t.frame_len == len)
                        .map(f)
                        .collect();
                    super::median(&v)
                };
                for (table, value) in [
                    (&mut median_pps, of(|t| t.received_pps)),
                    (&mut median_per_core, of(|t| t.pps_per_router_core)),
                ] {
                    table
                        .entry(mode.key().to_string())
                        .or_default()
                        .insert(size_key(len).to_string(), value);
                }
            }
        }
        Ok(Results {
            trials,
            median_pps,
            median_per_core,
            rounds: cfg.rounds,
            seconds: cfg.seconds,
            pinning: format!(
                "generator thread (BPF_PROG_TEST_RUN, XDP live frames, batch {}) and host B's NAPI thread (sink) on CPU {GEN_CPU}; \
                 the router's member-0 NAPI thread (threaded NAPI) on CPU {ROUTER_CPU}",
                super::programs::LIVE_BATCH
            ),
            profiles,
        })
    }

    fn teardown(&mut self) {
        let Rig {
            topo,
            dp,
            bp,
            router_links,
            sink_b,
            ..
        } = self;
        let _ = topo.router().run_in(|| -> Result<()> {
            dp.detach_all()?;
            for (prog, id) in router_links.drain(..) {
                bp.detach(prog, id)?;
            }
            Ok(())
        });
        if let Some(id) = sink_b.take() {
            let _ = topo
                .member("bfwd", 1)
                .host
                .run_in(|| bp.detach(prog_names::SINK, id));
        }
    }
}
