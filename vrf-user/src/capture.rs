//! `vrfctl capture`: the frames the fast path decided on, with the decision, from the ring
//! buffer a running vrfd pinned, written as pcapng (one interface per member, a comment per
//! packet) or as one line per packet.
//!
//! Capture runs while a reader holds its lease: the reader writes `CAPTURE[0]` with a
//! CLOCK_MONOTONIC deadline and renews it every second; vrfd, the one writer of `LINKS`, sees
//! the live lease and sets `LINK_CAPTURE` on every link, the only thing the fast path tests
//! per packet. A reader that dies without turning capture off is recorded for at most
//! [`LEASE`] (the program checks the deadline), after which vrfd clears the bit again. One
//! capture at a time per vrfd (the ring has one reader): a second one is refused.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::File,
    io::{self, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{Array, Map, MapData, MapInfo, PerCpuArray, RingBuf};
use pcap_file::{
    pcapng::{
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
        PcapNgWriter,
    },
    DataLink,
};
use vrf_common::{
    map_names as names, Action, CaptureConfig, CaptureHeader, CaptureStats, Direction, Reason,
    CAPTURE_ANY_VRF, CAPTURE_SNAP_MAX, LINK_CAPTURE, LINK_MEMBER, LINK_VRF_DEVICE,
};

use crate::{
    inspect,
    maps::{typed, Maps},
};

/// How long a capture holds without renewal: what a killed reader leaves behind at most.
pub const LEASE: Duration = Duration::from_secs(3);
/// How often a running capture renews its lease and checks that vrfd is still there.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long vrfctl waits for vrfd to set `LINK_CAPTURE` (vrfd looks every 200 ms).
pub const VRFD_ACK: Duration = Duration::from_secs(3);
/// Default rate limit, records per second.
pub const DEFAULT_RATE: u32 = 10_000;

/// The capture maps of a loaded object or of a running vrfd's pins.
pub struct CaptureMaps {
    pub config: Array<MapData, CaptureConfig>,
    pub state: Array<MapData, u64>,
    pub stats: PerCpuArray<MapData, CaptureStats>,
    pub ring: RingBuf<MapData>,
}

impl CaptureMaps {
    /// Take the capture maps out of a loaded object, pinning them under `pin_dir` when given.
    pub fn take(ebpf: &mut aya::Ebpf, pin_dir: Option<&Path>) -> Result<Self> {
        Self::from_maps(&mut |name| crate::maps::take_map(ebpf, pin_dir, name))
    }

    /// Open the capture maps a running vrfd pinned under `dir`.
    pub fn from_pins(dir: &Path) -> Result<Self> {
        Self::from_maps(&mut |name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|e| {
                let denied = matches!(&e, aya::maps::MapError::SyscallError(s)
                    if s.io_error.kind() == io::ErrorKind::PermissionDenied);
                if denied {
                    anyhow!("opening {}: permission denied: only root can capture (vrfd's pins are 0700)", path.display())
                } else {
                    anyhow!("opening pinned map {}: {e} (is this vrfd older than capture?)", path.display())
                }
            })?;
            Ok(Map::from_map_data(data)?)
        })
    }

    fn from_maps(get: &mut dyn FnMut(&str) -> Result<Map>) -> Result<Self> {
        Ok(CaptureMaps {
            config: typed(get, names::CAPTURE)?,
            state: typed(get, names::CAPTURE_STATE)?,
            stats: typed(get, names::CAPTURE_STATS)?,
            ring: typed(get, names::CAPTURE_RING)?,
        })
    }

    /// Turn capture on with `settings`: counters and the rate limit start afresh, records a
    /// previous reader left in the ring are skipped.
    pub fn start(&mut self, settings: &Settings) -> Result<()> {
        self.stats
            .set(0, crate::maps::zeroed_per_cpu::<CaptureStats>()?, 0)
            .context("resetting capture counters")?;
        self.state.set(0, 0, 0)?;
        while self.ring.next().is_some() {}
        self.renew(settings)
    }

    /// Extend the lease (and apply `settings`) for another [`LEASE`].
    pub fn renew(&mut self, settings: &Settings) -> Result<()> {
        let cfg = settings.config(monotonic_ns() + LEASE.as_nanos() as u64);
        self.config
            .set(0, cfg, 0)
            .context("writing the capture configuration")
    }

    /// Turn capture off: nothing more is recorded, and vrfd clears `LINK_CAPTURE` at its next
    /// look.
    pub fn stop(&mut self) -> Result<()> {
        self.config
            .set(0, CaptureConfig::default(), 0)
            .context("turning capture off")
    }

    /// Whether some capture holds a live lease.
    pub fn running(&self) -> Result<bool> {
        let c = self.config.get(&0, 0)?;
        Ok(c.enabled != 0 && c.lease_until_ns > monotonic_ns())
    }

    /// Records and dropped records, summed over CPUs.
    pub fn counters(&self) -> Result<CaptureStats> {
        let per_cpu = self.stats.get(&0, 0)?;
        Ok(per_cpu
            .iter()
            .fold(CaptureStats::default(), |a, s| CaptureStats {
                records: a.records + s.records,
                rate_limited: a.rate_limited + s.rate_limited,
                ring_full: a.ring_full + s.ring_full,
            }))
    }

    /// The next record the fast path wrote, if any.
    pub fn next_record(&mut self) -> Option<Result<Record>> {
        self.ring.next().map(|item| Record::parse(&item))
    }
}

/// Which reasons a capture records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reasons(pub u64);

impl Reasons {
    pub const ALL: Reasons = Reasons(u64::MAX);

    /// A reason name (`forwarded`, `no_neighbour`, …) or a class: `forward`, `pass`, `drop`.
    pub fn parse(s: &str) -> Result<Reasons> {
        let class = |a: Action| {
            Reasons(
                Reason::ALL
                    .iter()
                    .filter(|r| r.action() == a)
                    .fold(0, |m, r| m | bit(*r)),
            )
        };
        Ok(match s {
            "all" => Reasons::ALL,
            "forward" => class(Action::Forward),
            "pass" => class(Action::Pass),
            "drop" => class(Action::Drop),
            name => match Reason::ALL
                .iter()
                .find(|r| r.name() == name && **r != Reason::Rx)
            {
                Some(r) => Reasons(bit(*r)),
                None => bail!(
                    "unknown reason {name:?}: expected forward, pass, drop or one of {}",
                    Reason::ALL[1..]
                        .iter()
                        .map(|r| r.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        })
    }

    pub fn contains(self, r: Reason) -> bool {
        self.0 & bit(r) != 0
    }

    /// What the program copies before sending: a forward that fails on the way out ends as
    /// one of these, so wanting them means copying what was decided `Forwarded`.
    fn early(self) -> u64 {
        let after_send =
            bit(Reason::PassEgress) | bit(Reason::PassMtu) | bit(Reason::DropMalformed);
        if self.0 & after_send != 0 {
            self.0 | bit(Reason::Forwarded)
        } else {
            self.0
        }
    }
}

fn bit(r: Reason) -> u64 {
    1 << (r as u32)
}

/// What a capture asks the fast path for, in kernel identities (VRF slot, ifindex).
#[derive(Clone, Debug)]
pub struct Settings {
    pub vrf: Option<u32>,
    pub ifindex: Option<u32>,
    pub reasons: Reasons,
    pub snaplen: u32,
    /// Records per second, 0 for no limit.
    pub rate: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            vrf: None,
            ifindex: None,
            reasons: Reasons::ALL,
            snaplen: CAPTURE_SNAP_MAX as u32,
            rate: DEFAULT_RATE,
        }
    }
}

impl Settings {
    pub fn config(&self, lease_until_ns: u64) -> CaptureConfig {
        let interval_ns = if self.rate == 0 {
            0
        } else {
            (1_000_000_000 / self.rate as u64).max(1)
        };
        // A tenth of a second's worth of records may come at once.
        let burst = (self.rate / 10).max(1) as u64;
        CaptureConfig {
            enabled: 1,
            vrf: self.vrf.unwrap_or(CAPTURE_ANY_VRF),
            ifindex: self.ifindex.unwrap_or(0),
            reasons: self.reasons.0,
            early_reasons: self.reasons.early(),
            snaplen: self.snaplen.clamp(1, CAPTURE_SNAP_MAX as u32),
            interval_ns,
            burst_ns: interval_ns * burst,
            lease_until_ns,
        }
    }
}

/// One captured frame and the fast path's decision about it.
#[derive(Clone, Debug)]
pub struct Record {
    pub header: CaptureHeader,
    pub data: Vec<u8>,
}

impl Record {
    pub fn parse(bytes: &[u8]) -> Result<Record> {
        let n = size_of::<CaptureHeader>();
        if bytes.len() < n {
            bail!("capture record of {} bytes is too short", bytes.len());
        }
        let header: CaptureHeader = bytemuck::pod_read_unaligned(&bytes[..n]);
        let len = (header.cap_len as usize).min(bytes.len() - n);
        Ok(Record {
            header,
            data: bytes[n..n + len].to_vec(),
        })
    }

    pub fn reason(&self) -> Option<Reason> {
        Reason::from_u32(self.header.reason)
    }

    pub fn direction(&self) -> Direction {
        if self.header.direction == Direction::VrfEgress as u32 {
            Direction::VrfEgress
        } else {
            Direction::Ingress
        }
    }

    /// The neighbour the frame was sent to, when forwarded.
    pub fn neighbour(&self) -> Option<IpAddr> {
        crate::maps::addr_from16(self.header.family, self.header.neighbour)
    }

    /// Where a forwarded frame went: its destination itself (`neighbour`, connected) or a
    /// `gateway`.
    fn next_hop(&self) -> Option<(&'static str, IpAddr)> {
        let n = self.neighbour()?;
        let what = if Some(n) == self.ip_destination() {
            "neighbour"
        } else {
            "gateway"
        };
        Some((what, n))
    }

    /// The IP destination of the frame, when it is IP and long enough.
    fn ip_destination(&self) -> Option<IpAddr> {
        let d = &self.data;
        match d.get(12..14)? {
            [0x08, 0x00] => Some(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(d.get(30..34)?).ok()?,
            ))),
            [0x86, 0xdd] => Some(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(d.get(38..54)?).ok()?,
            ))),
            _ => None,
        }
    }
}

/// Names for what records carry as numbers: interfaces and VRF slots.
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub ifnames: BTreeMap<u32, String>,
    pub vrfs: BTreeMap<u32, String>,
    /// Members and VRF devices, each an interface of the pcapng file.
    pub interfaces: Vec<(u32, String)>,
}

impl Names {
    /// Every link and VRF a running data plane knows.
    pub fn read(maps: &Maps) -> Result<Names> {
        let mut n = Names::default();
        for v in inspect::vrfs(maps)? {
            n.vrfs.insert(v.slot, v.name);
        }
        for (ifindex, link) in maps.links()? {
            let name = inspect::ifname(ifindex).unwrap_or_else(|| format!("if{ifindex}"));
            if link.flags & (LINK_MEMBER | LINK_VRF_DEVICE) != 0 {
                n.interfaces.push((ifindex, name.clone()));
            }
            n.ifnames.insert(ifindex, name);
        }
        n.interfaces.sort();
        Ok(n)
    }

    pub fn ifname(&self, ifindex: u32) -> String {
        self.ifnames
            .get(&ifindex)
            .cloned()
            .or_else(|| inspect::ifname(ifindex))
            .unwrap_or_else(|| format!("if{ifindex}"))
    }

    pub fn vrf(&self, slot: u32) -> String {
        self.vrfs
            .get(&slot)
            .cloned()
            .unwrap_or_else(|| format!("slot{slot}"))
    }

    /// The decision as `key=value` words: the per-packet comment of the pcapng file.
    /// `vrf=red dir=ingress in=r1 reason=forwarded action=forward out=r2 gateway=10.0.2.2`.
    pub fn comment(&self, r: &Record) -> String {
        let h = &r.header;
        let reason = r.reason();
        let mut s = format!("vrf={}", self.vrf(h.vrf));
        match r.direction() {
            Direction::VrfEgress => {
                let _ = write!(s, " dir=vrf_egress dev={}", self.ifname(h.ifindex));
            }
            _ => {
                let _ = write!(s, " dir=ingress in={}", self.ifname(h.ifindex));
            }
        }
        let _ = write!(
            s,
            " reason={} action={}",
            reason.map_or("unknown", |r| r.name()),
            reason.map_or("unknown", |r| r.action().name())
        );
        if h.decided_vrf != h.vrf {
            let _ = write!(s, " table_vrf={}", self.vrf(h.decided_vrf));
        }
        if reason == Some(Reason::Forwarded) {
            let _ = write!(s, " out={}", self.ifname(h.oif));
            if let Some((what, n)) = r.next_hop() {
                let _ = write!(s, " {what}={n}");
            }
        }
        s
    }
}

/// Converts the program's CLOCK_MONOTONIC stamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        Clock {
            offset_ns: wall - monotonic_ns() as i128,
        }
    }

    pub fn wall(&self, mono_ns: u64) -> Duration {
        Duration::from_nanos((mono_ns as i128 + self.offset_ns).max(0) as u64)
    }
}

/// CLOCK_MONOTONIC in ns, the clock of the capture lease the program checks (one reader for both).
pub use crate::daemon::switch::monotonic_ns;

/// A pcapng stream: one interface block per member and VRF device (more as they appear),
/// nanosecond timestamps, the decision as each packet's comment.
pub struct Pcapng<W: Write> {
    writer: PcapNgWriter<W>,
    ids: BTreeMap<u32, u32>,
    snaplen: u32,
}

impl<W: Write> Pcapng<W> {
    pub fn new(out: W, names: &Names, snaplen: u32) -> Result<Self> {
        let mut p = Pcapng {
            writer: PcapNgWriter::new(out).context("writing the pcapng section header")?,
            ids: BTreeMap::new(),
            snaplen,
        };
        for (ifindex, name) in &names.interfaces {
            p.interface(*ifindex, name)?;
        }
        Ok(p)
    }

    fn interface(&mut self, ifindex: u32, name: &str) -> Result<u32> {
        if let Some(id) = self.ids.get(&ifindex) {
            return Ok(*id);
        }
        let id = self.ids.len() as u32;
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: self.snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(name.to_string().into()),
                InterfaceDescriptionOption::IfDescription(
                    format!("vrf-xdp fast path, ifindex {ifindex}").into(),
                ),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.writer
            .write_pcapng_block(idb)
            .context("writing a pcapng interface block")?;
        self.ids.insert(ifindex, id);
        Ok(id)
    }

    pub fn write(&mut self, r: &Record, names: &Names, clock: &Clock) -> Result<()> {
        let id = self.interface(r.header.ifindex, &names.ifname(r.header.ifindex))?;
        let mut epb = EnhancedPacketBlock::default();
        epb.interface_id = id;
        epb.timestamp = clock.wall(r.header.ts_ns);
        epb.original_len = r.header.orig_len;
        epb.data = r.data.as_slice().into();
        epb.options = vec![EnhancedPacketOption::Comment(names.comment(r).into())];
        self.writer
            .write_pcapng_block(epb)
            .map_err(|e| anyhow!(e))
            .context("writing a pcapng packet block")?;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.get_mut().flush()
    }
}

/// One line per packet, like tcpdump's: time, interface, direction, the frame, the decision.
/// `10:02:03.123456 r1 in IP 10.0.1.2 > 10.0.2.2: ICMP echo request, length 84 | red forwarded out r2 gateway 10.0.2.2`
pub fn summary(r: &Record, names: &Names, clock: &Clock) -> String {
    let t = clock.wall(r.header.ts_ns);
    let secs = t.as_secs() % 86400;
    let h = &r.header;
    let dir = match r.direction() {
        Direction::VrfEgress => "out",
        _ => "in",
    };
    let mut s = format!(
        "{:02}:{:02}:{:02}.{:06} {} {dir} {}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        t.subsec_micros(),
        names.ifname(h.ifindex),
        describe(&r.data, h.orig_len)
    );
    let reason = r.reason();
    let _ = write!(
        s,
        " | {} {}",
        names.vrf(h.vrf),
        reason.map_or("unknown", |r| r.name())
    );
    if reason == Some(Reason::Forwarded) {
        let _ = write!(s, " out {}", names.ifname(h.oif));
        if let Some((what, n)) = r.next_hop() {
            let _ = write!(s, " {what} {n}");
        }
    }
    s
}

/// The frame in tcpdump's words, as far as the captured bytes go.
fn describe(data: &[u8], orig_len: u32) -> String {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let Ok(p) = SlicedPacket::from_ethernet(data) else {
        let ethertype = data
            .get(12..14)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        return format!("ethertype 0x{ethertype:04x}, length {orig_len}");
    };
    let (family, src, dst, ip_len) = match &p.net {
        Some(NetSlice::Ipv4(v4)) => (
            "IP",
            IpAddr::V4(v4.header().source_addr()),
            IpAddr::V4(v4.header().destination_addr()),
            v4.header().total_len() as u32,
        ),
        Some(NetSlice::Ipv6(v6)) => (
            "IP6",
            IpAddr::V6(v6.header().source_addr()),
            IpAddr::V6(v6.header().destination_addr()),
            40 + v6.header().payload_length() as u32,
        ),
        Some(NetSlice::Arp(_)) => return format!("ARP, length {orig_len}"),
        None => return format!("non-IP, length {orig_len}"),
    };
    let what = match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let flags: String = [
                (t.syn(), 'S'),
                (t.fin(), 'F'),
                (t.rst(), 'R'),
                (t.psh(), 'P'),
                (t.ack(), '.'),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, c)| *c)
            .collect();
            return format!(
                "{family} {src}.{} > {dst}.{}: Flags [{flags}], length {ip_len}",
                t.source_port(),
                t.destination_port()
            );
        }
        Some(TransportSlice::Udp(u)) => {
            return format!(
                "{family} {src}.{} > {dst}.{}: UDP, length {ip_len}",
                u.source_port(),
                u.destination_port()
            );
        }
        Some(TransportSlice::Icmpv4(i)) => match i.type_u8() {
            8 => "ICMP echo request".to_string(),
            0 => "ICMP echo reply".to_string(),
            t => format!("ICMP type {t}"),
        },
        Some(TransportSlice::Icmpv6(i)) => match i.type_u8() {
            128 => "ICMP6 echo request".to_string(),
            129 => "ICMP6 echo reply".to_string(),
            t => format!("ICMP6 type {t}"),
        },
        _ => "proto".to_string(),
    };
    format!("{family} {src} > {dst}: {what}, length {ip_len}")
}

// `vrfctl capture`'s options (its help is the Capture command's), resolved from names by `run`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Options {
    /// Only packets of this VRF.
    #[arg(long)]
    pub vrf: Option<String>,
    /// Only packets arriving on, or sent out of, this member.
    #[arg(long, value_name = "MEMBER")]
    pub interface: Option<String>,
    /// Only packets with this outcome: forward, pass, drop, or a reason (no_route,
    /// no_neighbour, blackhole, …, as in `vrfctl stats`).
    #[arg(long)]
    pub reason: Option<String>,
    /// Stop after N packets.
    #[arg(long, short = 'c', value_name = "N")]
    pub count: Option<u64>,
    /// Bytes of each frame kept (at most 2048).
    #[arg(long, short = 's', value_name = "BYTES", default_value_t = vrf_common::CAPTURE_SNAP_MAX as u32,
          value_parser = clap::value_parser!(u32).range(1..=vrf_common::CAPTURE_SNAP_MAX as i64))]
    pub snaplen: u32,
    /// Most packets recorded per second (0: no limit); the limit protects forwarding.
    #[arg(long, value_name = "PKTS/S", default_value_t = DEFAULT_RATE)]
    pub rate: u32,
    /// Write pcapng to FILE (`-`: standard output, e.g. `| tcpdump -r -`).
    #[arg(short = 'w', value_name = "FILE")]
    pub write: Option<PathBuf>,
}

enum Out {
    Pcapng(Pcapng<Box<dyn Write>>),
    Lines(Box<dyn Write>),
}

/// Run a capture until Ctrl-C (SIGINT/SIGTERM), `count` packets, or vrfd going away. The
/// summary of what was captured and dropped goes to stderr.
pub fn run(pin_dir: &Path, opts: &Options) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "only root can capture: vrfd's pins under {} are 0700",
            pin_dir.display()
        );
    }
    let maps = inspect::open(pin_dir)?;
    let names = Names::read(&maps)?;
    let mut settings = Settings {
        snaplen: opts.snaplen,
        rate: opts.rate,
        ..Settings::default()
    };
    if let Some(vrf) = &opts.vrf {
        let slot = names
            .vrfs
            .iter()
            .find(|(_, n)| *n == vrf)
            .map(|(s, _)| *s)
            .ok_or_else(|| {
                anyhow!(
                    "no VRF named {vrf:?} (known: {})",
                    names.vrfs.values().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
        settings.vrf = Some(slot);
    }
    if let Some(name) = &opts.interface {
        let ifindex = names
            .ifnames
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(i, _)| *i)
            .ok_or_else(|| anyhow!("{name:?} is not an interface vrfd serves"))?;
        settings.ifindex = Some(ifindex);
    }
    if let Some(r) = &opts.reason {
        settings.reasons = Reasons::parse(r)?;
    }
    let _lock = lock(pin_dir)?;
    let mut cap = CaptureMaps::from_pins(pin_dir)?;
    if cap.running()? {
        bail!("another capture is running on this vrfd: one capture at a time (the ring buffer has one reader)");
    }
    let ours = pinned_id(pin_dir)?;
    let clock = Clock::now();
    let mut out = match opts.write.as_deref() {
        Some(p) if p == Path::new("-") => Out::Pcapng(Pcapng::new(
            Box::new(io::stdout()) as Box<dyn Write>,
            &names,
            settings.snaplen,
        )?),
        Some(p) => {
            let f = File::create(p).with_context(|| format!("creating {}", p.display()))?;
            Out::Pcapng(Pcapng::new(
                Box::new(io::BufWriter::new(f)) as Box<dyn Write>,
                &names,
                settings.snaplen,
            )?)
        }
        None => Out::Lines(Box::new(io::stdout())),
    };
    cap.start(&settings)?;
    if let Err(e) = wait_for_vrfd(&maps, true) {
        let _ = cap.stop();
        return Err(e);
    }
    eprintln!(
        "vrfctl: capturing {} (snaplen {}, rate {}); Ctrl-C to stop",
        describe_filter(opts),
        settings.snaplen,
        if settings.rate == 0 {
            "unlimited".to_string()
        } else {
            format!("{}/s", settings.rate)
        }
    );
    let result = serve(
        &mut cap, &settings, &names, &clock, &mut out, opts.count, pin_dir, ours,
    );
    let stopped = cap.stop();
    // What the fast path wrote before it saw the flag go down still counts.
    let (written, end) = match result {
        Ok((n, end)) => (n, Ok(end)),
        Err(e) => (0, Err(e)),
    };
    let mut written = written;
    if end.as_ref().is_ok_and(|e| *e != End::Count) {
        while let Some(r) = cap.next_record() {
            if emit(&mut out, &r?, &names, &clock).is_err() {
                break;
            }
            written += 1;
        }
    }
    let _ = match &mut out {
        Out::Pcapng(p) => p.flush(),
        Out::Lines(w) => w.flush(),
    };
    let c = cap.counters().unwrap_or_default();
    eprintln!(
        "{written} packets captured; records dropped: {} by the rate limit (--rate), {} with the ring buffer full",
        c.rate_limited, c.ring_full
    );
    stopped?;
    match end? {
        End::VrfdGone => bail!("vrfd stopped: capture ended"),
        _ => Ok(()),
    }
}

fn describe_filter(o: &Options) -> String {
    let mut parts = Vec::new();
    if let Some(v) = &o.vrf {
        parts.push(format!("VRF {v}"));
    }
    if let Some(i) = &o.interface {
        parts.push(format!("interface {i}"));
    }
    if let Some(r) = &o.reason {
        parts.push(format!("reason {r}"));
    }
    if parts.is_empty() {
        "every VRF".to_string()
    } else {
        parts.join(", ")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Signal,
    Count,
    VrfdGone,
    /// The reader of `-w -` went away (broken pipe).
    Closed,
}

#[allow(clippy::too_many_arguments)]
fn serve(
    cap: &mut CaptureMaps,
    settings: &Settings,
    names: &Names,
    clock: &Clock,
    out: &mut Out,
    count: Option<u64>,
    pin_dir: &Path,
    ours: u32,
) -> Result<(u64, End)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // SAFETY: the ring's fd stays open while `cap` lives, longer than this registration.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                RingFd(cap.ring.as_raw_fd()),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(|e| anyhow!("polling the capture ring buffer: {e}"))?;
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut renew = tokio::time::interval(RENEW_EVERY);
        let mut written = 0u64;
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return Ok((written, End::Signal)),
                _ = sigterm.recv() => return Ok((written, End::Signal)),
                _ = renew.tick() => {
                    if pinned_id(pin_dir).ok() != Some(ours) {
                        return Ok((written, End::VrfdGone));
                    }
                    cap.renew(settings)?;
                }
                guard = fd.readable() => {
                    let mut guard = guard?;
                    while let Some(r) = cap.next_record() {
                        if emit(out, &r?, names, clock).is_err() {
                            return Ok((written, End::Closed));
                        }
                        written += 1;
                        if count.is_some_and(|n| written >= n) {
                            return Ok((written, End::Count));
                        }
                    }
                    let flushed = match out {
                        Out::Pcapng(p) => p.flush(),
                        Out::Lines(w) => w.flush(),
                    };
                    if flushed.is_err() {
                        return Ok((written, End::Closed));
                    }
                    guard.clear_ready();
                }
            }
        }
    })
}

fn emit(out: &mut Out, r: &Record, names: &Names, clock: &Clock) -> Result<()> {
    match out {
        Out::Pcapng(p) => p.write(r, names, clock),
        Out::Lines(w) => Ok(writeln!(w, "{}", summary(r, names, clock))?),
    }
}

struct RingFd(std::os::fd::RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// Wait until vrfd has `LINK_CAPTURE` set (`on`) or cleared on every link it serves.
pub fn wait_for_vrfd(maps: &Maps, on: bool) -> Result<()> {
    let deadline = std::time::Instant::now() + VRFD_ACK;
    loop {
        // A walk racing vrfd's own writes may fail: look again.
        let links = maps.links().ok();
        if links.is_some_and(|l| l.iter().all(|(_, l)| (l.flags & LINK_CAPTURE != 0) == on)) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "vrfd did not {} capture on its links within {}s (is this vrfd older than capture?)",
                if on { "turn on" } else { "turn off" },
                VRFD_ACK.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The id of the CAPTURE map pinned under `dir`: a different one (or none) means the vrfd we
/// capture from has stopped or restarted.
fn pinned_id(dir: &Path) -> Result<u32> {
    Ok(MapInfo::from_pin(dir.join(names::CAPTURE))?.id())
}

/// One capture per pin directory: an exclusive lock next to vrfd's own.
fn lock(pin: &Path) -> Result<File> {
    let dir = Path::new("/run/vrf-xdp");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = pin.to_string_lossy().trim_matches('/').replace('/', "_");
    let path = dir.join(format!("{name}.capture.lock"));
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another capture is running on this vrfd (lock {} is held): one capture at a time, the ring buffer has one reader",
            path.display()
        );
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_classes_cover_their_reasons() {
        let fwd = Reasons::parse("forward").unwrap();
        assert!(fwd.contains(Reason::Forwarded));
        assert!(!fwd.contains(Reason::PassNoRoute));
        let pass = Reasons::parse("pass").unwrap();
        assert!(pass.contains(Reason::PassNoNeighbour) && !pass.contains(Reason::DropBlackhole));
        let drop = Reasons::parse("drop").unwrap();
        assert!(drop.contains(Reason::DropBlackhole) && !drop.contains(Reason::Forwarded));
        assert_eq!(
            Reasons::parse("no_route").unwrap(),
            Reasons(1 << Reason::PassNoRoute as u32)
        );
        assert!(Reasons::parse("nonsense").is_err());
        // A pass after a failed redirect was decided `Forwarded`: it must be copied early.
        assert!(pass.early() & bit(Reason::Forwarded) != 0);
        assert_eq!(
            drop.early() & bit(Reason::Forwarded),
            bit(Reason::Forwarded)
        );
    }

    #[test]
    fn rate_becomes_an_interval_and_a_burst() {
        let s = Settings {
            rate: 100,
            ..Settings::default()
        };
        let c = s.config(5);
        assert_eq!(c.interval_ns, 10_000_000);
        assert_eq!(c.burst_ns, 100_000_000);
        assert_eq!(c.lease_until_ns, 5);
        let unlimited = Settings {
            rate: 0,
            ..Settings::default()
        };
        assert_eq!(unlimited.config(0).interval_ns, 0);
    }
}
