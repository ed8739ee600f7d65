//! The bench's own XDP programs (`vrf_user::bench::FIB_HELPER_OBJECT`): the `bpf_fib_lookup`
//! forwarder, the live-frame traffic source and the counting sink.
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{Array, DevMapHash, MapData, PerCpuArray},
    programs::{xdp::XdpLinkId, Xdp, XdpMode},
    Ebpf, TestRun, TestRunAttrs, TestRunOptions,
};
use vrf_user::bench::{map_names, prog_names, FIB_HELPER_OBJECT, TEMPLATE_LEN};

/// Frames per batch of a live-frame test run (xdp-trafficgen's default is 64; 256 is the most).
pub const LIVE_BATCH: u32 = 256;

pub struct BenchPrograms {
    ebpf: Ebpf,
    table: Array<MapData, u32>,
    tx_ports: DevMapHash<MapData>,
    template: Array<MapData, [u8; TEMPLATE_LEN]>,
    sink: PerCpuArray<MapData, u64>,
}

/// What one non-live test run reported.
pub struct Run {
    pub action: vrf_user::dataplane::XdpAction,
    pub frame: Vec<u8>,
    /// Average per repetition, as the kernel measured it.
    pub per_run: Duration,
}

impl BenchPrograms {
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(FIB_HELPER_OBJECT).context("loading the bench's eBPF object")?;
        for name in [prog_names::FIB_HELPER, prog_names::GEN, prog_names::SINK] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("verifier rejected {name}"))?;
        }
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("map {name} missing"))
        };
        let table = take(map_names::TABLE)?.try_into()?;
        let tx_ports = take(map_names::TX_PORTS)?.try_into()?;
        let template = take(map_names::TEMPLATE)?.try_into()?;
        let sink = take(map_names::SINK_COUNT)?.try_into()?;
        Ok(BenchPrograms {
            ebpf,
            table,
            tx_ports,
            template,
            sink,
        })
    }

    fn prog(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing"))?
            .try_into()?)
    }

    /// The table `xdp_fib_helper` looks up.
    pub fn set_table(&mut self, table: u32) -> Result<()> {
        Ok(self.table.set(0, table, 0)?)
    }

    /// Make `ifindex` (in the calling thread's namespace) a redirect target of the helper.
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<()> {
        Ok(self.tx_ports.insert(ifindex, ifindex, None, 0)?)
    }

    /// The first [`TEMPLATE_LEN`] bytes of `frame` become the generator's headers.
    pub fn set_template(&mut self, frame: &[u8]) -> Result<()> {
        let mut t = [0u8; TEMPLATE_LEN];
        t.copy_from_slice(&frame[..TEMPLATE_LEN]);
        Ok(self.template.set(0, t, 0)?)
    }

    /// Frames the sink has dropped so far, all CPUs.
    pub fn sink_count(&self) -> Result<u64> {
        Ok(self.sink.get(&0, 0)?.iter().sum())
    }

    /// Attach program `name` natively to `ifindex` (in the calling thread's namespace).
    pub fn attach(&mut self, name: &str, ifindex: u32) -> Result<XdpLinkId> {
        self.prog(name)?
            .attach_to_if_index(ifindex, XdpMode::Driver)
            .with_context(|| format!("attaching {name} to ifindex {ifindex}"))
    }

    pub fn detach(&mut self, name: &str, id: XdpLinkId) -> Result<()> {
        Ok(self.prog(name)?.detach(id)?)
    }

    /// Transmit `count` copies of `frame` out of `ifindex` (in the calling thread's namespace)
    /// as XDP live frames; returns how long the kernel took.
    pub fn generate(&mut self, ifindex: u32, frame: &[u8], count: u32) -> Result<Duration> {
        let ctx = xdp_md(ifindex, frame.len());
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.ctx_in = Some(bytemuck::cast_slice(&ctx));
        opts.repeat = count;
        opts.attrs = TestRunAttrs::new().xdp_live_frames(LIVE_BATCH);
        let prog = self.prog(prog_names::GEN)?;
        let start = std::time::Instant::now();
        prog.test_run(opts)
            .context("BPF_PROG_TEST_RUN with XDP live frames")?;
        Ok(start.elapsed())
    }

    /// Run the helper `repeat` times on `frame` arriving on `ifindex`.
    pub fn run_helper(&mut self, ifindex: u32, frame: &[u8], repeat: u32) -> Result<Run> {
        let prog = self.prog(prog_names::FIB_HELPER)?;
        run_repeated(prog, ifindex, frame, repeat)
    }
}

/// struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
fn xdp_md(ifindex: u32, len: usize) -> [u32; 6] {
    [0, len as u32, 0, ifindex, 0, 0]
}

/// BPF_PROG_TEST_RUN of an XDP program with `repeat`: the kernel times the loop and reports
/// the average. The frame is not restored between repetitions.
pub fn run_repeated(prog: &Xdp, ifindex: u32, frame: &[u8], repeat: u32) -> Result<Run> {
    let ctx = xdp_md(ifindex, frame.len());
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(bytemuck::cast_slice(&ctx));
    opts.repeat = repeat;
    let r = prog
        .test_run(opts)
        .with_context(|| format!("BPF_PROG_TEST_RUN on ifindex {ifindex}"))?;
    out.truncate(r.data_size_out as usize);
    Ok(Run {
        action: r.return_value.into(),
        frame: out,
        per_run: r.duration,
    })
}
