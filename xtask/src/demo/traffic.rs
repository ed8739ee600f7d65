//! The demo's traffic, one phase at a time, the same in both tenants at once: ping (IPv4 and
//! IPv6), a TCP transfer and a UDP flow (iperf3) from host A to host B, and one-way UDP from
//! each tenant to the shared service.
//!
//! A phase only starts processes; the caller watches the counters while they run
//! ([`Phase::done`]) and then collects one [`Outcome`] per job ([`Phase::finish`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::ExitStatus,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{
    lab::{Lab, SERVICE_ADDR, TENANTS},
    proc::{in_ns, output, sleep, Background},
};

/// How long the TCP and UDP transfers run.
pub const TCP_SECS: u32 = 3;
pub const UDP_SECS: u32 = 2;
/// The UDP flow's rate and datagram size.
const UDP_RATE: &str = "100M";
const UDP_LEN: &str = "1200";
/// Echo requests per ping.
const PINGS: u32 = 5;
/// Datagrams each tenant sends to the shared service, one every 20 ms.
pub const SERVICE_DATAGRAMS: u32 = 50;
const SERVICE_PORT: u16 = 7000;
const IPERF_PORT: u16 = 5201;

/// What one job achieved.
#[derive(Debug)]
pub struct Outcome {
    pub vrf: &'static str,
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

enum Kind {
    Ping,
    Tcp,
    Udp,
    /// One-way datagrams to the service; judged by what the service received.
    ToService,
}

struct Job {
    vrf: &'static str,
    what: String,
    kind: Kind,
    proc: Background,
    stdout: PathBuf,
    stderr: PathBuf,
    deadline: Instant,
    timed_out: bool,
}

/// A traffic phase in progress.
pub struct Phase {
    pub title: &'static str,
    jobs: Vec<Job>,
    /// Servers: stopped when the phase ends.
    servers: Vec<Background>,
    sink: Option<ServiceSink>,
}

impl Phase {
    fn new(title: &'static str) -> Self {
        Phase {
            title,
            jobs: Vec::new(),
            servers: Vec::new(),
            sink: None,
        }
    }

    /// Starts `args` in `ns` as a job of `vrf`, allowed to run for `limit`.
    fn job(
        &mut self,
        dir: &Path,
        ns: &str,
        (vrf, what, kind): (&'static str, String, Kind),
        args: &[&str],
        limit: Duration,
    ) -> Result<()> {
        let n = self.jobs.len();
        let stdout = dir.join(format!("{}-{vrf}-{n}.out", slug(self.title)));
        let stderr = stdout.with_extension("err");
        let mut cmd = in_ns(ns, args[0]);
        cmd.args(&args[1..]);
        let proc = Background::spawn(&format!("{what} ({vrf})"), &mut cmd, &stdout, &stderr)?;
        self.jobs.push(Job {
            vrf,
            what,
            kind,
            proc,
            stdout,
            stderr,
            deadline: Instant::now() + limit,
            timed_out: false,
        });
        Ok(())
    }

    /// Whether every job has exited; stops those past their time limit.
    pub fn done(&mut self) -> Result<bool> {
        let mut all = true;
        for job in &mut self.jobs {
            if job.proc.try_wait()?.is_some() {
                continue;
            }
            if Instant::now() > job.deadline {
                job.timed_out = true;
                job.proc.stop(Duration::from_secs(2))?;
                continue;
            }
            all = false;
        }
        Ok(all)
    }

    /// One outcome per job (after [`done`](Self::done) said true).
    pub fn finish(mut self) -> Result<Vec<Outcome>> {
        let received = match self.sink.take() {
            Some(sink) => Some(sink.finish()?),
            None => None,
        };
        let mut out = Vec::new();
        for job in &mut self.jobs {
            let status = job.proc.stop(Duration::from_secs(2))?;
            let stdout = std::fs::read_to_string(&job.stdout).unwrap_or_default();
            let (ok, detail) = if job.timed_out {
                (false, "timed out".to_owned())
            } else {
                match &job.kind {
                    Kind::Ping => judge_ping(&stdout, status),
                    Kind::Tcp => judge_iperf(&stdout, status, false),
                    Kind::Udp => judge_iperf(&stdout, status, true),
                    Kind::ToService => {
                        let got = received.as_ref().map_or(0, |r| r.count(job.vrf));
                        (
                            status.success() && got == SERVICE_DATAGRAMS,
                            format!("{SERVICE_DATAGRAMS} sent, {got} received by the service"),
                        )
                    }
                }
            };
            let detail = if ok {
                detail
            } else {
                let stderr = std::fs::read_to_string(&job.stderr).unwrap_or_default();
                let stderr = stderr.trim();
                if stderr.is_empty() {
                    detail
                } else {
                    format!("{detail}: {}", last_line(stderr))
                }
            };
            out.push(Outcome {
                vrf: job.vrf,
                what: job.what.clone(),
                ok,
                detail,
            });
        }
        if let Some(r) = received {
            out.push(Outcome {
                vrf: "svc",
                what: format!("received at {SERVICE_ADDR}"),
                ok: true,
                detail: r.describe(),
            });
        }
        Ok(out)
    }
}

fn slug(title: &str) -> String {
    title
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s)
}

/// ping IPv4 and IPv6 from host A to host B in each tenant.
pub fn ping(lab: &Lab, dir: &Path) -> Result<Phase> {
    let mut p = Phase::new("ping A→B");
    let count = PINGS.to_string();
    for vrf in TENANTS {
        let (a, b) = endpoints(lab, vrf.name)?;
        let dsts = [Some(b.host4.as_str()), b.v6.as_ref().map(|v| v.1.as_str())];
        for dst in dsts.into_iter().flatten() {
            p.job(
                dir,
                &a.host_ns,
                (vrf.name, format!("ping {dst}"), Kind::Ping),
                &["ping", "-n", "-c", &count, "-i", "0.2", "-W", "1", dst],
                Duration::from_secs(10),
            )?;
        }
    }
    Ok(p)
}

/// A TCP transfer (IPv4) from host A to host B in each tenant, `TCP_SECS` long.
pub fn tcp(lab: &Lab, dir: &Path) -> Result<Phase> {
    iperf(lab, dir, "TCP A→B", false)
}

/// A UDP flow (IPv6) from host A to host B in each tenant, `UDP_SECS` long.
pub fn udp(lab: &Lab, dir: &Path) -> Result<Phase> {
    iperf(lab, dir, "UDP A→B", true)
}

fn iperf(lab: &Lab, dir: &Path, title: &'static str, udp: bool) -> Result<Phase> {
    let mut p = Phase::new(title);
    let port = IPERF_PORT.to_string();
    let mut targets = Vec::new();
    for vrf in TENANTS {
        let (a, b) = endpoints(lab, vrf.name)?;
        let dst = if udp {
            b.v6.as_ref()
                .map(|v| v.1.clone())
                .context("host B has no IPv6")?
        } else {
            b.host4.clone()
        };
        let mut server = in_ns(&b.host_ns, "iperf3");
        server.args(["-s", "-1", "-B", &dst, "-p", &port]);
        let log = dir.join(format!("iperf3-server-{}-{}.log", slug(title), vrf.name));
        p.servers.push(Background::spawn(
            &format!("iperf3 server ({})", vrf.name),
            &mut server,
            &log,
            &log.with_extension("err"),
        )?);
        targets.push((vrf.name, a.host_ns.clone(), b.host_ns.clone(), dst));
    }
    for (_, _, server_ns, _) in &targets {
        wait_listening(server_ns, "-Hltn", IPERF_PORT)?;
    }
    for (vrf, client_ns, _, dst) in targets {
        let secs = if udp { UDP_SECS } else { TCP_SECS }.to_string();
        let mut args = vec![
            "iperf3",
            "-c",
            &dst,
            "-p",
            &port,
            "-t",
            &secs,
            "-J",
            "--connect-timeout",
            "2000",
        ];
        let (what, kind) = if udp {
            args.extend(["-u", "-b", UDP_RATE, "-l", UDP_LEN]);
            (format!("UDP to {dst} (iperf3)"), Kind::Udp)
        } else {
            (format!("TCP to {dst} (iperf3)"), Kind::Tcp)
        };
        p.job(
            dir,
            &client_ns,
            (vrf, what, kind),
            &args,
            Duration::from_secs(u64::from(TCP_SECS.max(UDP_SECS)) + 6),
        )?;
    }
    Ok(p)
}

/// One-way UDP from host A of each tenant to the shared service, which tells the tenants
/// apart only by the payload: both send from 10.0.1.2.
pub fn to_service(lab: &Lab, dir: &Path) -> Result<Phase> {
    let mut p = Phase::new("UDP to service");
    p.sink = Some(ServiceSink::start(lab, dir)?);
    for vrf in TENANTS {
        let (a, _) = endpoints(lab, vrf.name)?;
        // bash's /dev/udp: one connected socket, one datagram per echo.
        let script = format!(
            "exec 3>/dev/udp/{SERVICE_ADDR}/{SERVICE_PORT}; \
             for i in $(seq 1 {SERVICE_DATAGRAMS}); do echo \"{} $i\" >&3; sleep 0.02; done",
            vrf.name
        );
        p.job(
            dir,
            &a.host_ns,
            (
                vrf.name,
                format!("UDP to {SERVICE_ADDR}:{SERVICE_PORT}"),
                Kind::ToService,
            ),
            &["bash", "-c", &script],
            Duration::from_secs(15),
        )?;
    }
    Ok(p)
}

/// The service's receiver: socat writes every datagram's payload to a file and logs its source.
struct ServiceSink {
    proc: Background,
    data: PathBuf,
    log: PathBuf,
}

/// What the service received: datagrams per tenant tag, and the source addresses seen.
pub struct Received {
    pub by_tag: BTreeMap<String, u32>,
    pub sources: BTreeSet<String>,
}

impl Received {
    fn count(&self, tag: &str) -> u32 {
        self.by_tag.get(tag).copied().unwrap_or(0)
    }

    fn describe(&self) -> String {
        if self.by_tag.is_empty() {
            return "nothing".into();
        }
        let tags: Vec<String> = self
            .by_tag
            .iter()
            .map(|(t, n)| format!("{n} from {t}"))
            .collect();
        let addrs: BTreeSet<&str> = self
            .sources
            .iter()
            .map(|s| s.rsplit_once(':').map_or(s.as_str(), |(a, _)| a))
            .collect();
        let addrs: Vec<&str> = addrs.into_iter().collect();
        format!(
            "{} (by payload); source address{}: {}",
            tags.join(", "),
            if addrs.len() == 1 { "" } else { "es" },
            addrs.join(", ")
        )
    }
}

impl ServiceSink {
    fn start(lab: &Lab, dir: &Path) -> Result<Self> {
        let svc = lab.service();
        let data = dir.join("service-received.txt");
        let log = dir.join("service-socat.log");
        let mut cmd = in_ns(&svc.host_ns, "socat");
        cmd.args(["-d", "-d", "-u"])
            .arg(format!("UDP-RECV:{SERVICE_PORT},bind={SERVICE_ADDR}"))
            .arg(format!("OPEN:{},creat,trunc", data.display()));
        let proc = Background::spawn("socat (service)", &mut cmd, &dir.join("socat.out"), &log)?;
        wait_listening(&svc.host_ns, "-Hlun", SERVICE_PORT)?;
        Ok(ServiceSink { proc, data, log })
    }

    /// Lets the last datagrams arrive, stops the receiver and counts.
    fn finish(mut self) -> Result<Received> {
        sleep(Duration::from_millis(200))?;
        self.proc.stop(Duration::from_secs(2))?;
        let data = std::fs::read_to_string(&self.data).unwrap_or_default();
        let mut by_tag = BTreeMap::new();
        for line in data.lines() {
            if let Some(tag) = line.split_whitespace().next() {
                *by_tag.entry(tag.to_owned()).or_insert(0) += 1;
            }
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        // socat -d -d: "N received packet with 7 bytes from AF=2 10.0.1.2:53539"
        let sources = log
            .lines()
            .filter_map(|l| l.split_once(" from AF=")?.1.split_whitespace().nth(1))
            .map(str::to_owned)
            .collect();
        Ok(Received { by_tag, sources })
    }
}

/// Host A and host B of tenant `vrf`.
fn endpoints<'a>(
    lab: &'a Lab,
    vrf: &str,
) -> Result<(&'a super::lab::Member, &'a super::lab::Member)> {
    match lab.tenant(vrf)[..] {
        [a, b] => Ok((a, b)),
        _ => bail!("tenant {vrf} does not have two hosts"),
    }
}

/// Waits (5 s at most) until something listens on `port` in `ns` (`ss FLAGS sport = :PORT`).
fn wait_listening(ns: &str, flags: &str, port: u16) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let out = output(in_ns(ns, "ss").args([flags, &format!("sport = :{port}")]))?;
        if out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("nothing listens on port {port} in {ns} after 5 s");
        }
        sleep(Duration::from_millis(20))?;
    }
}

fn judge_ping(stdout: &str, status: ExitStatus) -> (bool, String) {
    // "5 packets transmitted, 5 received, 0% packet loss, time 803ms"
    let Some(line) = stdout.lines().find(|l| l.contains("packets transmitted")) else {
        return (false, format!("no summary from ping ({status})"));
    };
    let mut nums = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    let (sent, got) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    (
        status.success() && sent > 0 && got == sent,
        format!("{got}/{sent} replies"),
    )
}

fn judge_iperf(stdout: &str, status: ExitStatus, udp: bool) -> (bool, String) {
    let v: Value = match serde_json::from_str(stdout) {
        Ok(v) => v,
        Err(_) => return (false, format!("iperf3 printed no JSON ({status})")),
    };
    if let Some(e) = v["error"].as_str() {
        return (false, format!("iperf3: {e}"));
    }
    let end = &v["end"];
    let rx = &end["sum_received"];
    let bytes = rx["bytes"].as_u64().unwrap_or(0);
    let secs = rx["seconds"].as_f64().unwrap_or(0.0);
    let gbps = rx["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9;
    if udp {
        let sent = end["sum_sent"]["packets"].as_u64().unwrap_or(0);
        let lost = rx["lost_packets"].as_u64().unwrap_or(0);
        let got = rx["packets"].as_u64().unwrap_or(0).saturating_sub(lost);
        (
            status.success() && sent > 0 && lost * 100 <= sent,
            format!(
                "{got}/{sent} datagrams in {secs:.1} s ({:.0} Mbit/s), {lost} lost",
                gbps * 1000.0
            ),
        )
    } else {
        let retransmits = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
        (
            status.success() && bytes > 0,
            format!(
                "{} MB in {secs:.1} s, {gbps:.2} Gbit/s, {retransmits} retransmits",
                bytes / 1_000_000
            ),
        )
    }
}
