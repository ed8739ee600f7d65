//! The loaded data plane: the embedded object, its XDP programs, where they are attached, and
//! BPF_PROG_TEST_RUN of the programs for packet-level checks and `vrfctl lookup`.
use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        tc::{self, SchedClassifierLinkId, TcAttachType},
        xdp::XdpLink,
        xdp::XdpLinkId,
        Program, SchedClassifier, Xdp, XdpMode,
    },
    util::KernelVersion,
    Ebpf, EbpfLoader, TestRun, TestRunOptions,
};
use aya_obj::programs::XdpAttachType;
use vrf_common::{map_names, prog_names, Explain, Reason, FIB4_ENTRIES, FIB6_ENTRIES};

use crate::{
    capture::CaptureMaps,
    errno,
    maps::{addr_from16, zeroed_per_cpu, Maps},
};

/// How XDP is attached to a member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttachMode {
    /// Native (driver) mode, falling back to generic with a warning.
    #[default]
    Auto,
    /// Native only: fail where the driver has no XDP support.
    Native,
    /// Generic (skb) mode: works everywhere, slower.
    Generic,
}

impl FromStr for XdpAttachMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "native" => Ok(Self::Native),
            "generic" => Ok(Self::Generic),
            other => bail!("unknown XDP mode {other:?}: expected auto, native or generic"),
        }
    }
}

/// The mode an attachment ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        })
    }
}

/// Choices made at load time.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// FIB capacities (routes over all VRFs).
    pub fib4_entries: u32,
    pub fib6_entries: u32,
    /// Chunks of the flat IPv4 FIB's pool (1 KiB each, preallocated).
    pub flat4_chunks: u32,
    /// Pin the maps and the explain program here (an existing directory on a bpffs); with
    /// `persist`, every program.
    pub pin_dir: Option<PathBuf>,
    /// With `pin_dir`: reuse the maps already pinned there (a previous vrfd's, of the same
    /// stamp), pin the programs and every attachment (under `pin_dir/links`), and leave them
    /// attached when the data plane is dropped (the dead-man switch makes that safe).
    pub persist: bool,
    /// With `persist`: open the programs a previous vrfd of this very object pinned instead of
    /// loading them again (all of them, or none: then loaded, and pinned in their place). A
    /// load is the verifier's second of CPU (1.15 s for the four here), in the kernel in runs
    /// of up to 6 ms that a router's NAPI thread on the same CPU waits out, dropping frames.
    pub reuse_programs: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            fib4_entries: FIB4_ENTRIES,
            fib6_entries: FIB6_ENTRIES,
            flat4_chunks: vrf_common::FLAT4_CHUNKS,
            pin_dir: None,
            persist: false,
            reuse_programs: false,
        }
    }
}

/// What a program did with one frame in a test run: an [`XdpAction`] or a [`TcAction`].
#[derive(Debug)]
pub struct RunResult<A = XdpAction> {
    /// The action the program returned.
    pub action: A,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// An XDP program's verdict (`enum xdp_action`); a number outside it is kept as it came.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XdpAction {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    Other(u32),
}

/// The uapi name (`XDP_PASS`); a number outside the enum as it is.
impl fmt::Display for XdpAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpAction::Aborted => "XDP_ABORTED",
            XdpAction::Drop => "XDP_DROP",
            XdpAction::Pass => "XDP_PASS",
            XdpAction::Tx => "XDP_TX",
            XdpAction::Redirect => "XDP_REDIRECT",
            XdpAction::Other(n) => return write!(f, "{n}"),
        })
    }
}

impl From<u32> for XdpAction {
    fn from(n: u32) -> Self {
        match n {
            0 => XdpAction::Aborted,
            1 => XdpAction::Drop,
            2 => XdpAction::Pass,
            3 => XdpAction::Tx,
            4 => XdpAction::Redirect,
            n => XdpAction::Other(n),
        }
    }
}

impl From<XdpAction> for u32 {
    fn from(a: XdpAction) -> u32 {
        match a {
            XdpAction::Aborted => 0,
            XdpAction::Drop => 1,
            XdpAction::Pass => 2,
            XdpAction::Tx => 3,
            XdpAction::Redirect => 4,
            XdpAction::Other(n) => n,
        }
    }
}

/// The uapi names, for code that reads like the kernel's.
pub const XDP_ABORTED: XdpAction = XdpAction::Aborted;
pub const XDP_DROP: XdpAction = XdpAction::Drop;
pub const XDP_PASS: XdpAction = XdpAction::Pass;
pub const XDP_TX: XdpAction = XdpAction::Tx;
pub const XDP_REDIRECT: XdpAction = XdpAction::Redirect;

/// The program's own account of one packet (from `xdp_vrf_explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub action: XdpAction,
    pub reason: Reason,
    /// Egress ifindex when forwarded.
    pub oif: Option<u32>,
    /// The neighbour the packet is sent to (gateway, or the destination when connected).
    pub neighbour: Option<IpAddr>,
    /// VRF slot of the table that decided.
    pub vrf: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// The tc programs, both on the egress side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TcProgram {
    /// On a VRF device: the fast path for traffic the host sends inside the VRF.
    VrfEgress,
    /// On a member: counts what the kernel transmits out of it.
    MemberTx,
}

impl TcProgram {
    fn name(self) -> &'static str {
        match self {
            TcProgram::VrfEgress => prog_names::TC_VRF_EGRESS,
            TcProgram::MemberTx => prog_names::TC_MEMBER_TX,
        }
    }
}

/// One attachment: owned by the program (gone with it), pinned (outlives vrfd), or a netlink tc
/// filter taken from the program (outlives vrfd when forgotten).
enum Attachment<Id> {
    Owned(Id),
    Pinned(PinnedLink),
    Netlink(SchedClassifierLink),
}

pub struct DataPlane {
    ebpf: Ebpf,
    /// The programs, when opened from a previous vrfd's pins; empty: `ebpf`'s, loaded.
    pinned: BTreeMap<&'static str, Program>,
    pub maps: Maps,
    /// `vrfctl capture`'s maps: its flag, filters, counters and ring buffer.
    pub capture: CaptureMaps,
    attached: BTreeMap<u32, (Attachment<XdpLinkId>, AttachedMode)>,
    tc: BTreeMap<(TcProgram, u32), Attachment<SchedClassifierLinkId>>,
    /// Where attachments are pinned (persist mode).
    link_dir: Option<PathBuf>,
    /// An upgrade's predecessor links, still running the old build's programs: the next
    /// attach to the same port moves the link to our program (bpf_link_update), never detaches.
    replace_xdp: BTreeMap<u32, (PinnedLink, AttachedMode)>,
    replace_tc: BTreeMap<(TcProgram, u32), PinnedLink>,
}

impl LoadOptions {
    /// The stamp of what these options load: a vrfd adopts pins only of the very same object
    /// (same programs, same map layouts) loaded with the same capacities (a pinned map is
    /// opened as it is: the kernel's map keeps the size it was created with); anything else is
    /// an upgrade (fresh maps, links moved over). Conservative on purpose: a program-only
    /// change is treated as a layout change too.
    pub fn layout_stamp(&self) -> u64 {
        let capacities = [self.fib4_entries, self.fib6_entries, self.flat4_chunks];
        let bytes = (crate::EBPF_OBJECT.iter().copied())
            .chain(capacities.iter().flat_map(|c| c.to_le_bytes()));
        // FNV-1a: stable across builds and Rust versions, unlike std's hasher.
        let stamp = bytes.fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        stamp ^ stamp_salt()
    }
}

/// Test hook: `VRFD_TEST_STAMP_SALT=N` makes this build's stamp differ from the unsalted one,
/// so a test can upgrade between two runs of one binary as if the map layout had changed.
pub const STAMP_SALT_ENV: &str = "VRFD_TEST_STAMP_SALT";

fn stamp_salt() -> u64 {
    std::env::var(STAMP_SALT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn xdp_pin_name(ifindex: u32, mode: AttachedMode) -> String {
    format!("xdp-{mode}-{ifindex}")
}

fn tc_pin_name(program: TcProgram, ifindex: u32) -> String {
    format!("{}-{ifindex}", program.name())
}

impl DataPlane {
    /// Load the embedded object with default capacities, unpinned.
    pub fn load() -> Result<Self> {
        Self::load_with(&LoadOptions::default())
    }

    pub fn load_with(opts: &LoadOptions) -> Result<Self> {
        raise_memlock_limit();
        Self::try_load(opts)
    }

    fn try_load(opts: &LoadOptions) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(map_names::FIB4, opts.fib4_entries)
            .map_max_entries(map_names::FIB6, opts.fib6_entries)
            .map_max_entries(vrf_common::flat4_names::CHUNKS, opts.flat4_chunks);
        let persist_dir = opts.pin_dir.as_ref().filter(|_| opts.persist);
        if let Some(dir) = persist_dir {
            // Opened when pinned already (adopting a previous vrfd's maps), created and pinned
            // otherwise.
            for name in map_names::ALL
                .iter()
                .chain(&map_names::CAPTURE_ALL)
                .chain(&vrf_common::flat4_names::ALL)
            {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader
            .load(crate::EBPF_OBJECT)
            .context("loading the vrf-xdp eBPF object (root or CAP_BPF + CAP_NET_ADMIN needed)")?;
        let reused = match persist_dir.filter(|_| opts.reuse_programs) {
            Some(dir) => pinned_programs(&ebpf, dir),
            None => None,
        };
        if reused.is_none() {
            load_programs(&mut ebpf)?;
        }
        let own_pins = opts.pin_dir.as_deref().filter(|_| persist_dir.is_none());
        let maps = Maps::take(&mut ebpf, own_pins)?;
        let capture = CaptureMaps::take(&mut ebpf, own_pins)?;
        let mut dp = DataPlane {
            ebpf,
            pinned: reused.unwrap_or_default(),
            maps,
            capture,
            attached: BTreeMap::new(),
            tc: BTreeMap::new(),
            link_dir: persist_dir.map(|d| d.join("links")),
            replace_xdp: BTreeMap::new(),
            replace_tc: BTreeMap::new(),
        };
        if let Some(dir) = &dp.link_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if dp.pinned.is_empty() {
            // Ours pinned in a previous vrfd's place (vrfctl opens the explain program per
            // call: the next call finds ours; vrfd's heartbeat opens the beat); persisting,
            // all of them, for the next vrfd.
            let names: &[&str] = match persist_dir {
                Some(_) => &PROGRAMS,
                None => &[prog_names::XDP_VRF_EXPLAIN, prog_names::XDP_VRF_BEAT],
            };
            if let Some(dir) = &opts.pin_dir {
                for name in names {
                    let path = dir.join(name);
                    let _ = std::fs::remove_file(&path);
                    dp.any_program(name)?
                        .pin(&path)
                        .with_context(|| format!("pinning {}", path.display()))?;
                }
            }
        }
        Ok(dp)
    }

    /// Whether the programs are a previous vrfd's, opened from their pins (not loaded).
    pub fn programs_reused(&self) -> bool {
        !self.pinned.is_empty()
    }

    fn any_program(&mut self, name: &str) -> Result<&mut Program> {
        program_in(&mut self.ebpf, &mut self.pinned, name)
    }

    fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self.any_program(name)?.try_into()?)
    }

    fn tc_program(&mut self, program: TcProgram) -> Result<&mut SchedClassifier> {
        Ok(self.any_program(program.name())?.try_into()?)
    }

    /// Attach the fast path to `ifindex` (in the calling thread's network namespace).
    pub fn attach(&mut self, ifindex: u32, mode: XdpAttachMode) -> Result<AttachedMode> {
        if let Some((_, m)) = self.attached.get(&ifindex) {
            return Ok(*m);
        }
        if let Some((old, mode)) = self.replace_xdp.remove(&ifindex) {
            // Upgrade: the same link (and attach mode) now runs our program, atomically.
            let link = XdpLink::try_from(FdLink::from(old)).context("not an XDP link")?;
            let prog = self.program(prog_names::XDP_VRF)?;
            let id = prog
                .attach_to_link(link)
                .with_context(|| format!("moving the XDP link of ifindex {ifindex}"))?;
            let attachment = self.pin_taken_xdp(id, ifindex, mode)?;
            self.attached.insert(ifindex, (attachment, mode));
            return Ok(mode);
        }
        let prog = self.program(prog_names::XDP_VRF)?;
        let (id, mode) = match mode {
            XdpAttachMode::Native => (
                prog.attach_to_if_index(ifindex, XdpMode::Driver)?,
                AttachedMode::Native,
            ),
            XdpAttachMode::Generic => (
                prog.attach_to_if_index(ifindex, XdpMode::Skb)?,
                AttachedMode::Generic,
            ),
            XdpAttachMode::Auto => match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
                Ok(id) => (id, AttachedMode::Native),
                Err(native) => {
                    tracing::warn!(ifindex, error = %native, "native XDP unavailable, attaching in generic mode");
                    (
                        prog.attach_to_if_index(ifindex, XdpMode::Skb)?,
                        AttachedMode::Generic,
                    )
                }
            },
        };
        let attachment = self.pin_taken_xdp(id, ifindex, mode)?;
        self.attached.insert(ifindex, (attachment, mode));
        Ok(mode)
    }

    /// In persist mode the link is taken from the program and pinned under `links/`.
    fn pin_taken_xdp(
        &mut self,
        id: XdpLinkId,
        ifindex: u32,
        mode: AttachedMode,
    ) -> Result<Attachment<XdpLinkId>> {
        let Some(dir) = self.link_dir.clone() else {
            return Ok(Attachment::Owned(id));
        };
        let path = dir.join(xdp_pin_name(ifindex, mode));
        let link = self.program(prog_names::XDP_VRF)?.take_link(id)?;
        let fd = FdLink::try_from(link).context("XDP attached without a bpf_link")?;
        Ok(Attachment::Pinned(
            fd.pin(&path)
                .with_context(|| format!("pinning {}", path.display()))?,
        ))
    }

    /// Take over the attachments a previous vrfd pinned (persist mode): they stay attached,
    /// untouched, and are detached only when their link stops being wanted.
    pub fn adopt_links(&mut self) -> Result<usize> {
        let Some(dir) = self.link_dir.clone() else {
            return Ok(0);
        };
        let mut n = 0;
        for (pin, pinned) in live_link_pins(&dir)? {
            match pin {
                LinkPin::Xdp(ifindex, mode) => {
                    self.attached
                        .insert(ifindex, (Attachment::Pinned(pinned), mode));
                }
                LinkPin::Tc(program, ifindex) => {
                    self.tc
                        .insert((program, ifindex), Attachment::Pinned(pinned));
                }
            }
            n += 1;
        }
        Ok(n)
    }

    /// Upgrade: the links an older build pinned under `old` are kept attached, and moved to
    /// this build's programs as the ports are attached (after the maps are filled); the ones
    /// no port wants any more go with the old pins.
    pub fn take_over(&mut self, old: &Path) -> Result<usize> {
        let mut n = 0;
        for (pin, pinned) in live_link_pins(old)? {
            match pin {
                LinkPin::Xdp(ifindex, mode) => {
                    self.replace_xdp.insert(ifindex, (pinned, mode));
                }
                LinkPin::Tc(program, ifindex) => {
                    self.replace_tc.insert((program, ifindex), pinned);
                }
            }
            n += 1;
        }
        Ok(n)
    }

    /// After an upgrade moved the pin directory into place: our links are pinned under
    /// `dir/links` now; old links no port took are let go (their pins go with the old
    /// directory, and with them the links). Returns how many were let go.
    pub fn relocate(&mut self, dir: &Path) -> Result<usize> {
        let links = dir.join("links");
        for (ifindex, (a, mode)) in self.attached.iter_mut() {
            if let Attachment::Pinned(_) = a {
                let pinned = PinnedLink::from_pin(links.join(xdp_pin_name(*ifindex, *mode)))?;
                if let Attachment::Pinned(old) = std::mem::replace(a, Attachment::Pinned(pinned)) {
                    drop(FdLink::from(old));
                }
            }
        }
        for ((program, ifindex), a) in self.tc.iter_mut() {
            if let Attachment::Pinned(_) = a {
                let pinned = PinnedLink::from_pin(links.join(tc_pin_name(*program, *ifindex)))?;
                if let Attachment::Pinned(old) = std::mem::replace(a, Attachment::Pinned(pinned)) {
                    drop(FdLink::from(old));
                }
            }
        }
        self.link_dir = Some(links);
        let unused = self.replace_xdp.len() + self.replace_tc.len();
        for (_, (p, _)) in std::mem::take(&mut self.replace_xdp) {
            drop(FdLink::from(p));
        }
        for (_, p) in std::mem::take(&mut self.replace_tc) {
            drop(FdLink::from(p));
        }
        Ok(unused)
    }

    /// Detach the fast path from `ifindex`; a link that is already gone counts as detached.
    pub fn detach(&mut self, ifindex: u32) -> Result<()> {
        let Some((attachment, _)) = self.attached.remove(&ifindex) else {
            return Ok(());
        };
        let id = match attachment {
            Attachment::Owned(id) => id,
            other => return release(other),
        };
        match self.program(prog_names::XDP_VRF)?.detach(id) {
            Ok(()) => Ok(()),
            Err(e) if errno::is_gone(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("detaching XDP from ifindex {ifindex}")),
        }
    }

    /// Attach a tc program to the egress of `ifname` (in the calling thread's network
    /// namespace): TCX on kernels ≥ 6.6, a clsact qdisc and netlink tc before.
    pub fn attach_tc(&mut self, program: TcProgram, ifname: &str, ifindex: u32) -> Result<()> {
        if self.tc.contains_key(&(program, ifindex)) {
            return Ok(());
        }
        let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        if let Some(old) = self.replace_tc.remove(&(program, ifindex)) {
            // Upgrade: the TCX link now runs our program, atomically.
            let link =
                SchedClassifierLink::try_from(FdLink::from(old)).context("not a TCX link")?;
            let id = self
                .tc_program(program)?
                .attach_to_link(link)
                .with_context(|| format!("moving the {} link of {ifname}", program.name()))?;
            let dir = self.link_dir.clone().context("an upgrade pins its links")?;
            let link = self.tc_program(program)?.take_link(id)?;
            let path = dir.join(tc_pin_name(program, ifindex));
            let fd = FdLink::try_from(link).context("TCX attached without a bpf_link")?;
            let pinned = fd
                .pin(&path)
                .with_context(|| format!("pinning {}", path.display()))?;
            self.tc
                .insert((program, ifindex), Attachment::Pinned(pinned));
            return Ok(());
        }
        if !tcx {
            if self.link_dir.is_some() {
                // A previous vrfd's netlink filter survived it (it is no link to pin): one
                // instance only, or the member counters count twice.
                let _ = tc::qdisc_detach_program(ifname, TcAttachType::Egress, program.name());
            }
            if let Err(e) = tc::qdisc_add_clsact(ifname) {
                // EEXIST: a clsact qdisc is already there, which is all we need.
                // 6.1 says "Exclusivity flag on, cannot modify" with EEXIST.
                let text = format!("{e:?} {e}");
                if !["EEXIST", "File exists", "os error 17", "Exclusivity flag"]
                    .iter()
                    .any(|m| text.contains(m))
                {
                    return Err(e).with_context(|| format!("adding a clsact qdisc to {ifname}"));
                }
            }
        }
        let prog = self.tc_program(program)?;
        let id = prog
            .attach(ifname, TcAttachType::Egress)
            .with_context(|| format!("attaching {} to {ifname} egress", program.name()))?;
        let attachment = match self.link_dir.clone() {
            None => Attachment::Owned(id),
            Some(dir) => {
                let link = self.tc_program(program)?.take_link(id)?;
                if tcx {
                    let path = dir.join(tc_pin_name(program, ifindex));
                    let fd = FdLink::try_from(link).context("TCX attached without a bpf_link")?;
                    Attachment::Pinned(
                        fd.pin(&path)
                            .with_context(|| format!("pinning {}", path.display()))?,
                    )
                } else {
                    Attachment::Netlink(link)
                }
            }
        };
        self.tc.insert((program, ifindex), attachment);
        Ok(())
    }

    pub fn detach_tc(&mut self, program: TcProgram, ifindex: u32) -> Result<()> {
        let Some(attachment) = self.tc.remove(&(program, ifindex)) else {
            return Ok(());
        };
        let id = match attachment {
            Attachment::Owned(id) => id,
            other => return release(other),
        };
        let prog = self.tc_program(program)?;
        match prog.detach(id) {
            Ok(()) => Ok(()),
            Err(e) if errno::is_gone(&e) => Ok(()),
            Err(e) => Err(e)
                .with_context(|| format!("detaching {} from ifindex {ifindex}", program.name())),
        }
    }

    /// tc attachments, as (program, ifindex).
    pub fn attached_tc(&self) -> impl Iterator<Item = (TcProgram, u32)> + '_ {
        self.tc.keys().copied()
    }

    /// Detach from every interface.
    pub fn detach_all(&mut self) -> Result<()> {
        let mut first_err = None;
        for ifindex in self.attached.keys().copied().collect::<Vec<_>>() {
            if let Err(e) = self.detach(ifindex) {
                tracing::error!(ifindex, error = %e, "detach failed");
                first_err.get_or_insert(e);
            }
        }
        for (program, ifindex) in self.tc.keys().copied().collect::<Vec<_>>() {
            if let Err(e) = self.detach_tc(program, ifindex) {
                tracing::error!(ifindex, error = %e, "tc detach failed");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Run a tc program on `packet` (an Ethernet frame) as if sent through `ifindex` (which must
    /// exist in the calling thread's network namespace). A redirect is reported, not performed.
    pub fn run_tc(
        &mut self,
        program: TcProgram,
        ifindex: u32,
        packet: &[u8],
    ) -> Result<RunResult<TcAction>> {
        self.run_tc_marked(program, ifindex, 0, packet)
    }

    /// [`run_tc`](Self::run_tc) for a packet carrying `skb->mark` (a socket's `SO_MARK`).
    pub fn run_tc_marked(
        &mut self,
        program: TcProgram,
        ifindex: u32,
        mark: u32,
        packet: &[u8],
    ) -> Result<RunResult<TcAction>> {
        let prog = self.tc_program(program)?;
        // struct __sk_buff is 192 bytes; mark is its 3rd u32 (offset 8), ifindex its 11th (40).
        let mut ctx = [0u32; 48];
        ctx[2] = mark;
        ctx[10] = ifindex;
        test_run(prog, bytemuck::cast_slice(&ctx), packet).with_context(|| {
            format!(
                "BPF_PROG_TEST_RUN of {} on ifindex {ifindex}",
                program.name()
            )
        })
    }

    /// Interfaces the fast path is attached to, and how.
    pub fn attached(&self) -> impl Iterator<Item = (u32, AttachedMode)> + '_ {
        self.attached.iter().map(|(i, (_, m))| (*i, *m))
    }

    /// Run the fast path on `frame` as if it arrived on `ifindex` (which must exist in the
    /// calling thread's network namespace). A redirect is reported, not performed.
    pub fn run(&mut self, ifindex: u32, frame: &[u8]) -> Result<RunResult> {
        run_xdp(self.program(prog_names::XDP_VRF)?, ifindex, frame)
    }

    /// Run the explain program on `frame` arriving on `ifindex` and read back its decision.
    pub fn explain(&mut self, ifindex: u32, frame: &[u8]) -> Result<Explanation> {
        let DataPlane {
            ebpf, pinned, maps, ..
        } = self;
        let prog: &mut Xdp = program_in(ebpf, pinned, prog_names::XDP_VRF_EXPLAIN)?.try_into()?;
        explain_with(prog, maps, ifindex, frame)
    }
}

/// Program `name`: the pinned one when the programs were reused, else the object's.
fn program_in<'a>(
    ebpf: &'a mut Ebpf,
    pinned: &'a mut BTreeMap<&'static str, Program>,
    name: &str,
) -> Result<&'a mut Program> {
    match pinned.get_mut(name) {
        Some(p) => Ok(p),
        None => ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing")),
    }
}

/// Every program of the object, pinned by name in the pin directory when persisting.
const PROGRAMS: [&str; 5] = [
    prog_names::XDP_VRF,
    prog_names::XDP_VRF_EXPLAIN,
    prog_names::TC_VRF_EGRESS,
    prog_names::TC_MEMBER_TX,
    prog_names::XDP_VRF_BEAT,
];

/// Load (verify) every program of the object.
fn load_programs(ebpf: &mut Ebpf) -> Result<()> {
    for name in PROGRAMS {
        let prog = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?;
        let loaded = match prog {
            Program::Xdp(p) => retry_eagain(|| p.load()),
            Program::SchedClassifier(p) => retry_eagain(|| p.load()),
            _ => bail!("program {name}: neither XDP nor tc"),
        };
        loaded.with_context(|| format!("verifier rejected program {name}"))?;
    }
    Ok(())
}

/// The programs a previous vrfd of this object pinned in `dir`, if all are there; a missing or
/// unreadable one (pins of a vrfd that pinned no programs) means loading them all again.
fn pinned_programs(ebpf: &Ebpf, dir: &Path) -> Option<BTreeMap<&'static str, Program>> {
    let mut out = BTreeMap::new();
    for name in PROGRAMS {
        let path = dir.join(name);
        // Opened as the kind the object declares it.
        let prog = match ebpf.program(name)? {
            Program::Xdp(_) => Xdp::from_pin(&path, XdpAttachType::Interface).map(Program::Xdp),
            Program::SchedClassifier(_) => {
                SchedClassifier::from_pin(&path).map(Program::SchedClassifier)
            }
            _ => return None,
        };
        match prog {
            Ok(p) => {
                out.insert(name, p);
            }
            Err(e) => {
                tracing::info!(program = name, error = %e, "no reusable pinned program: loading all");
                return None;
            }
        }
    }
    Some(out)
}

/// What a pin under `links/` names.
enum LinkPin {
    Xdp(u32, AttachedMode),
    Tc(TcProgram, u32),
}

impl LinkPin {
    fn parse(name: &str) -> Option<LinkPin> {
        let (kind, ifindex) = name.rsplit_once('-')?;
        let ifindex = ifindex.parse::<u32>().ok()?;
        Some(match kind {
            "xdp-native" => LinkPin::Xdp(ifindex, AttachedMode::Native),
            "xdp-generic" => LinkPin::Xdp(ifindex, AttachedMode::Generic),
            _ => LinkPin::Tc(
                [TcProgram::VrfEgress, TcProgram::MemberTx]
                    .into_iter()
                    .find(|p| p.name() == kind)?,
                ifindex,
            ),
        })
    }

    fn ifindex(&self) -> u32 {
        match self {
            LinkPin::Xdp(i, _) | LinkPin::Tc(_, i) => *i,
        }
    }
}

/// The links pinned under `dir` that are still attached to the interface their name says.
/// A link whose device went away (its netns deleted, the interface removed while no vrfd ran)
/// is defunct, and its ifindex may belong to another interface by now: it is unpinned.
fn live_link_pins(dir: &Path) -> Result<Vec<(LinkPin, PinnedLink)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for entry in entries {
        let path = entry?.path();
        let Some(pin) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(LinkPin::parse)
        else {
            continue;
        };
        let attached_to = bpf_link::ifindex(&path);
        let pinned = PinnedLink::from_pin(&path)
            .with_context(|| format!("opening pinned link {}", path.display()))?;
        match attached_to {
            Ok(i) if i == pin.ifindex() => out.push((pin, pinned)),
            other => {
                tracing::warn!(link = %path.display(), attached_to = ?other.ok(), "pinned link no longer attached to its interface: removed");
                drop(pinned.unpin());
            }
        }
    }
    Ok(out)
}

/// The ifindex a pinned XDP or TCX link is attached to (0: its device is gone), from
/// BPF_OBJ_GET_INFO_BY_FD; aya's `LinkInfo` does not expose it.
mod bpf_link {
    use std::{
        ffi::CString,
        io,
        os::fd::{AsRawFd, FromRawFd, OwnedFd},
        path::Path,
    };

    use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_link_info, bpf_link_type};

    fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
        // SAFETY: the bpf(2) syscall with a zero-initialised attribute union of its full size.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd as libc::c_long,
                attr as *mut bpf_attr,
                std::mem::size_of::<bpf_attr>(),
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    pub fn ifindex(pin: &Path) -> io::Result<u32> {
        let path = CString::new(pin.as_os_str().as_encoded_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: plain-old-data unions and structs, valid when zeroed.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.__bindgen_anon_4.pathname = path.as_ptr() as u64;
        let fd = bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)?;
        // SAFETY: BPF_OBJ_GET returned a new descriptor that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: as above.
        let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.info.bpf_fd = fd.as_raw_fd() as u32;
        attr.info.info_len = std::mem::size_of::<bpf_link_info>() as u32;
        attr.info.info = &mut info as *mut bpf_link_info as u64;
        bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        // SAFETY: the kernel filled the union member of the link's type.
        Ok(unsafe {
            match info.type_ {
                t if t == bpf_link_type::BPF_LINK_TYPE_XDP as u32 => {
                    info.__bindgen_anon_1.xdp.ifindex
                }
                t if t == bpf_link_type::BPF_LINK_TYPE_TCX as u32 => {
                    info.__bindgen_anon_1.tcx.ifindex
                }
                _ => 0,
            }
        })
    }
}

/// Detach a pinned or taken attachment: unpinned and closed, the kernel drops the link.
fn release<Id>(attachment: Attachment<Id>) -> Result<()> {
    match attachment {
        Attachment::Owned(_) => Ok(()),
        Attachment::Pinned(p) => {
            drop(p.unpin().context("unpinning a link")?);
            Ok(())
        }
        Attachment::Netlink(link) => {
            drop(link);
            Ok(())
        }
    }
}

impl DataPlane {
    /// Leave every attachment in place when dropped (persist mode's plain stop): pinned links
    /// stay pinned, netlink filters stay, the dead-man switch hands over if no vrfd returns.
    pub fn keep_attached(&mut self) {
        for (_, (a, _)) in std::mem::take(&mut self.attached) {
            keep(a);
        }
        for (_, a) in std::mem::take(&mut self.tc) {
            keep(a);
        }
    }
}

fn keep<Id>(attachment: Attachment<Id>) {
    match attachment {
        // Closing our descriptor leaves the pinned link attached.
        Attachment::Pinned(p) => drop(FdLink::from(p)),
        // Its drop would detach the filter.
        Attachment::Netlink(link) => std::mem::forget(link),
        Attachment::Owned(_) => {}
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if let Err(e) = self.detach_all() {
            tracing::error!(error = %e, "detaching on drop");
        }
    }
}

/// The explain program a running vrfd pinned, with its maps.
pub struct PinnedExplain {
    prog: Xdp,
    pub maps: Maps,
}

impl PinnedExplain {
    pub fn open(dir: &Path) -> Result<Self> {
        let path: PathBuf = dir.join(prog_names::XDP_VRF_EXPLAIN);
        let prog = Xdp::from_pin(&path, XdpAttachType::Interface)
            .with_context(|| format!("opening pinned program {}", path.display()))?;
        Ok(PinnedExplain {
            prog,
            maps: Maps::from_pins(dir)?,
        })
    }

    pub fn explain(&mut self, ifindex: u32, frame: &[u8]) -> Result<Explanation> {
        explain_with(&mut self.prog, &mut self.maps, ifindex, frame)
    }
}

fn explain_with(
    prog: &mut Xdp,
    maps: &mut Maps,
    ifindex: u32,
    frame: &[u8],
) -> Result<Explanation> {
    // Per-CPU record: clear every CPU's, run, then read the one CPU that wrote.
    maps.explain.set(0, zeroed_per_cpu::<Explain>()?, 0)?;
    let run = run_xdp(prog, ifindex, frame)?;
    let per_cpu = maps.explain.get(&0, 0)?;
    let e = per_cpu
        .iter()
        .find(|e| e.seq != 0)
        .copied()
        .ok_or_else(|| anyhow!("ifindex {ifindex} is not a VRF member known to the data plane"))?;
    let reason =
        Reason::from_u32(e.reason).ok_or_else(|| anyhow!("unknown reason {}", e.reason))?;
    let forwarded = reason == Reason::Forwarded;
    Ok(Explanation {
        action: run.action,
        reason,
        oif: forwarded.then_some(e.oif),
        neighbour: if forwarded {
            addr_from16(e.family, e.neighbour)
        } else {
            None
        },
        vrf: e.vrf,
        frame: run.frame,
    })
}

/// BPF_PROG_TEST_RUN of `frame` arriving on `ifindex` (0: no device).
pub(crate) fn run_xdp(prog: &Xdp, ifindex: u32, frame: &[u8]) -> Result<RunResult> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    test_run(prog, bytemuck::cast_slice(&ctx), frame).with_context(|| {
        format!("BPF_PROG_TEST_RUN on ifindex {ifindex} (does it exist in this network namespace?)")
    })
}

/// BPF_PROG_TEST_RUN of `packet` with context `ctx`: the action and the packet as left.
fn test_run<P, A: From<u32>>(prog: &P, ctx: &[u8], packet: &[u8]) -> Result<RunResult<A>>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::programs::TestRunResult>,
{
    let mut out = vec![0u8; packet.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(packet);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(ctx);
    let result = prog.test_run(opts)?;
    out.truncate(result.data_size_out as usize);
    Ok(RunResult {
        action: A::from(result.return_value),
        frame: out,
    })
}

/// A tc program's verdict (`TC_ACT_*` of pkt_cls.h); the ones this project returns, and any
/// other number as it came.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcAction {
    Ok,
    Shot,
    Redirect,
    Other(u32),
}

impl From<u32> for TcAction {
    fn from(n: u32) -> Self {
        match n {
            0 => TcAction::Ok,
            2 => TcAction::Shot,
            7 => TcAction::Redirect,
            n => TcAction::Other(n),
        }
    }
}

/// The uapi names.
pub const TC_ACT_OK: TcAction = TcAction::Ok;
pub const TC_ACT_SHOT: TcAction = TcAction::Shot;
pub const TC_ACT_REDIRECT: TcAction = TcAction::Redirect;

/// The verifier gives up with EAGAIN when a signal reaches the loading thread (libbpf retries
/// it too); a daemon that handles signals meets it. On a loaded machine one verification can
/// outlast the interval between signals, so retrying alone never gets through: the thread
/// blocks signals while it loads (they stay pending and arrive right after), and still retries
/// what a signal it could not block caused. A failed load leaves the program unloaded, so
/// loading it again starts clean.
fn retry_eagain(
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), aya::programs::ProgramError> {
    const ATTEMPTS: u32 = 20;
    let _blocked = SignalsBlocked::new();
    let mut attempt = 1;
    loop {
        match load() {
            Err(e) if attempt < ATTEMPTS && errno::is_eagain(&e) => {
                tracing::debug!(
                    attempt,
                    "program load interrupted by a signal (EAGAIN): retrying"
                );
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Every blockable signal held back on this thread until dropped (SIGKILL and SIGSTOP cannot
/// be blocked; the previous mask comes back on drop).
struct SignalsBlocked(libc::sigset_t, std::marker::PhantomData<*const ()>);

impl SignalsBlocked {
    fn new() -> Self {
        // SAFETY: sigfillset initialises `all`; pthread_sigmask only reads and writes the sets.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            SignalsBlocked(old, std::marker::PhantomData)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`, on the same thread (the raw-pointer marker keeps
        // the guard from moving to another).
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (the VM lane's 6.1 does not, but a
/// raised limit costs nothing).
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    if ret != 0 {
        tracing::debug!("setrlimit(RLIMIT_MEMLOCK) failed; map creation may fail on old kernels");
    }
}
