//! `vrfd --metrics ADDR`: the data plane's counters and vrfd's own in the Prometheus
//! (OpenMetrics) text format at `http://ADDR/metrics`.
//!
//! Every scrape reads the pinned maps afresh through [`crate::stats`] (the same numbers as
//! `vrfctl stats`), on a blocking thread: the event loop never waits for a scrape, and the fast
//! path only ever sees per-CPU counters. The daemon loop counts its own events in
//! [`DaemonMetrics`] (atomics shared with the exporter).
//!
//! Metrics (prefix `vrf_xdp_`; counters end in `_total`, bytes are in bytes):
//! - `vrf_info{vrf,table,kind}` 1 per VRF served;
//! - `vrf_rx_packets_total`, `vrf_rx_bytes_total` `{vrf,direction}`: every packet seen;
//! - `vrf_packets_total`, `vrf_bytes_total` `{vrf,direction,action,reason}`: each packet under the
//!   one reason that decided it (every reason, zeros included);
//! - `interface_rx_packets_total`, `interface_rx_bytes_total` `{vrf,interface,direction}`,
//!   `interface_packets_total`, `interface_bytes_total` `{vrf,interface,direction,action}`:
//!   per member (by action only, to bound the series; reasons are per VRF);
//! - `interface_up{vrf,interface}`, `vrf_routes{vrf,family}`, `vrf_neighbours{vrf}`,
//!   `vrf_degraded{vrf}` gauges;
//! - `nexthop_forwarded_packets_total`, `nexthop_forwarded_bytes_total` `{vrf,nhid,gateway,dev}`:
//!   what the data plane forwarded per kernel nexthop (`nhid` only for nexthop objects,
//!   `gateway` empty for a connected path): the kernel's nexthop statistics never see it;
//! - `sync_events_total{kind}`, `resyncs_total`: the daemon loop's kernel events and full resyncs;
//! - `neighbour_activity_reports_total`: NTF_USE updates for neighbours the fast path used;
//! - `verify_mismatches`, `verify_last_run_seconds` gauges: the last periodic verify
//!   (`verify_interval` in the configuration; off by default);
//! - `build_info{version}` 1.
use std::{convert::Infallible, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, header, server::conn::http1, service::service_fn, Method, Request, Response,
    StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::{text, DescriptorEncoder, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        info::Info,
        MetricType,
    },
    registry::{Registry, Unit},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::{debug, info, warn};
use vrf_common::{Action, Direction};

use crate::{
    inspect::{self, VrfReport},
    maps::Maps,
    model::KernelEvent,
    stats::{self, NexthopStats, Totals, VrfStats},
};

/// What a scrape answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PREFIX: &str = "vrf_xdp";
/// A client that has not sent its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

type EventLabels = [(&'static str, &'static str); 1];

/// The daemon loop's own counters; clones share the values.
#[derive(Clone, Debug)]
pub struct DaemonMetrics {
    sync_events: Family<EventLabels, Counter>,
    resyncs: Counter,
    /// NTF_USE updates the kernel accepted for neighbours the fast path used.
    neighbour_reports: Counter,
    /// Disagreements found by the last periodic verify, and when it ran (Unix seconds).
    verify_mismatches: Gauge,
    verify_last_run: Gauge,
}

/// Kernel event kinds, as the `kind` label of `sync_events_total`.
const EVENT_KINDS: [&str; 6] = ["link", "address", "route", "neighbour", "rule", "overrun"];

impl Default for DaemonMetrics {
    fn default() -> Self {
        let m = DaemonMetrics {
            sync_events: Family::default(),
            resyncs: Counter::default(),
            neighbour_reports: Counter::default(),
            verify_mismatches: Gauge::default(),
            verify_last_run: Gauge::default(),
        };
        // Every kind from the start, so that rate() sees the first event.
        for kind in EVENT_KINDS {
            let _ = m.sync_events.get_or_create(&[("kind", kind)]);
        }
        m
    }
}

impl DaemonMetrics {
    /// One kernel event taken from rtnetlink.
    pub fn event(&self, e: &KernelEvent) {
        let kind = match e {
            KernelEvent::NewLink(_) | KernelEvent::DelLink(_) => "link",
            KernelEvent::NewAddr(_) | KernelEvent::DelAddr(_) => "address",
            KernelEvent::NewRoute(_)
            | KernelEvent::AppendRoute(_)
            | KernelEvent::PrependRoute(_)
            | KernelEvent::DelRoute(_) => "route",
            KernelEvent::NewNeigh(_) | KernelEvent::DelNeigh(_) => "neighbour",
            KernelEvent::RulesChanged => "rule",
            KernelEvent::NewNexthop(_) | KernelEvent::DelNexthop(_) => "nexthop",
            KernelEvent::Overrun(_) => "overrun",
        };
        self.sync_events.get_or_create(&[("kind", kind)]).inc();
    }

    /// One full resync (dump and converge) after the kernel's notifications were in doubt.
    pub fn resync(&self) {
        self.resyncs.inc();
    }

    pub fn resyncs(&self) -> u64 {
        self.resyncs.get()
    }

    pub fn neighbour_reports(&self, n: u64) {
        self.neighbour_reports.inc_by(n);
    }

    /// One periodic verify finished at `at` (since the Unix epoch) with `mismatches`.
    pub fn verified(&self, mismatches: u64, at: Duration) {
        self.verify_mismatches.set(mismatches as i64);
        self.verify_last_run.set(at.as_secs() as i64);
    }
}

/// The whole exposition for the data plane behind `maps`, read now.
pub fn render(maps: &Maps, daemon: &DaemonMetrics) -> Result<String> {
    let vrfs = inspect::vrfs(maps)?;
    let stats = stats::of_vrfs(maps, &vrfs, true)?;
    let nexthops = stats::of_nexthops(maps, &vrfs)?;
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register(
        "build",
        "vrf-xdp version",
        Info::new([("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register(
        "sync_events",
        "Kernel events (rtnetlink) vrfd applied to the maps, by kind",
        daemon.sync_events.clone(),
    );
    for (name, help, counter) in [
        (
            "resyncs",
            "Full dumps of the kernel's state after its notifications were in doubt",
            &daemon.resyncs,
        ),
        (
            "neighbour_activity_reports",
            "Neighbours the fast path used, reported to the kernel (NTF_USE) so it revalidates them",
            &daemon.neighbour_reports,
        ),
    ] {
        registry.register(name, help, counter.clone());
    }
    for (name, help, gauge) in [
        (
            "verify_mismatches",
            "Destinations on which the fast path disagreed with the kernel in the last periodic verify",
            &daemon.verify_mismatches,
        ),
        (
            "verify_last_run_seconds",
            "When the last periodic verify finished (Unix time; 0: never ran)",
            &daemon.verify_last_run,
        ),
    ] {
        registry.register(name, help, gauge.clone());
    }
    registry.register_collector(Box::new(Snapshot {
        vrfs,
        stats,
        nexthops,
    }));
    let mut out = String::new();
    text::encode(&mut out, &registry).context("encoding metrics")?;
    Ok(out)
}

/// One scrape's reading of the maps.
#[derive(Debug)]
struct Snapshot {
    vrfs: Vec<VrfReport>,
    stats: Vec<VrfStats>,
    nexthops: Vec<NexthopStats>,
}

const DIRECTION: &str = Direction::Ingress.name();
const ACTIONS: [Action; 3] = [Action::Forward, Action::Pass, Action::Drop];

/// Writes one metric family: a descriptor, then one sample per label set.
fn family<L, M>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error>
where
    L: prometheus_client::encoding::EncodeLabelSet,
    M: EncodeMetric,
{
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let mut metric = enc.encode_descriptor(name, help, unit.as_ref(), first.metric_type())?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if !self.vrfs.is_empty() {
            let mut m =
                enc.encode_descriptor("vrf", "A VRF vrfd serves", None, MetricType::Info)?;
            for v in &self.vrfs {
                m.encode_info(&[
                    ("vrf", v.name.clone()),
                    ("table", v.table.to_string()),
                    ("kind", v.kind.to_string()),
                ])?;
            }
        }
        // Ingress only for now: the other directions' counters (`VrfStats::directions`) get the
        // same families with their own `direction` label once their meaning is settled.
        let directions = || {
            self.stats
                .iter()
                .map(|s| (s.name.as_str(), DIRECTION, &s.totals))
        };
        let vrf_rx = |f: fn(&Totals) -> u64| {
            directions()
                .map(move |(vrf, dir, t)| ([("vrf", vrf), ("direction", dir)], counter(f(t))))
        };
        family(
            &mut enc,
            "vrf_rx_packets",
            "Packets that arrived on the VRF's members",
            None,
            vrf_rx(|t| t.rx_packets),
        )?;
        family(
            &mut enc,
            "vrf_rx",
            "Bytes that arrived on the VRF's members",
            Some(Unit::Bytes),
            vrf_rx(|t| t.rx_bytes),
        )?;
        let by_reason = |bytes: bool| {
            directions().flat_map(move |(vrf, dir, t)| {
                t.reasons.iter().map(move |(r, c)| {
                    (
                        [
                            ("vrf", vrf),
                            ("direction", dir),
                            ("action", r.action().name()),
                            ("reason", r.name()),
                        ],
                        counter(if bytes { c.bytes } else { c.packets }),
                    )
                })
            })
        };
        family(
            &mut enc,
            "vrf_packets",
            "Packets of the VRF by the data plane's decision (action) and why (reason)",
            None,
            by_reason(false),
        )?;
        family(
            &mut enc,
            "vrf",
            "Bytes of the VRF by decision and reason",
            Some(Unit::Bytes),
            by_reason(true),
        )?;

        let nexthop = |bytes: bool| {
            self.nexthops.iter().map(move |n| {
                let mut labels = vec![("vrf", n.vrf.clone())];
                if let Some(id) = n.nhid {
                    labels.push(("nhid", id.to_string()));
                }
                labels.push((
                    "gateway",
                    n.gateway.map(|g| g.to_string()).unwrap_or_default(),
                ));
                labels.push(("dev", n.dev.clone()));
                (labels, counter(if bytes { n.bytes } else { n.packets }))
            })
        };
        family(
            &mut enc,
            "nexthop_forwarded_packets",
            "Packets the data plane forwarded through a kernel nexthop",
            None,
            nexthop(false),
        )?;
        family(
            &mut enc,
            "nexthop_forwarded",
            "Bytes the data plane forwarded through a kernel nexthop",
            Some(Unit::Bytes),
            nexthop(true),
        )?;

        let members = || {
            self.stats.iter().flat_map(|s| {
                s.interfaces
                    .iter()
                    .flatten()
                    .map(move |m| (s.name.as_str(), m))
            })
        };
        let if_rx = |bytes: bool| {
            members().map(move |(vrf, m)| {
                let c = m.totals.action(Action::None);
                (
                    [
                        ("vrf", vrf),
                        ("interface", m.name.as_str()),
                        ("direction", DIRECTION),
                    ],
                    counter(if bytes { c.bytes } else { c.packets }),
                )
            })
        };
        family(
            &mut enc,
            "interface_rx_packets",
            "Packets that arrived on a member",
            None,
            if_rx(false),
        )?;
        family(
            &mut enc,
            "interface_rx",
            "Bytes that arrived on a member",
            Some(Unit::Bytes),
            if_rx(true),
        )?;
        let if_action = |bytes: bool| {
            members().flat_map(move |(vrf, m)| {
                ACTIONS.into_iter().map(move |a| {
                    let c = m.totals.action(a);
                    (
                        [
                            ("vrf", vrf),
                            ("interface", m.name.as_str()),
                            ("direction", DIRECTION),
                            ("action", a.name()),
                        ],
                        counter(if bytes { c.bytes } else { c.packets }),
                    )
                })
            })
        };
        family(
            &mut enc,
            "interface_packets",
            "Packets that arrived on a member, by the data plane's decision",
            None,
            if_action(false),
        )?;
        family(
            &mut enc,
            "interface",
            "Bytes that arrived on a member, by decision",
            Some(Unit::Bytes),
            if_action(true),
        )?;
        family(
            &mut enc,
            "interface_up",
            "Whether the member is up (1) or down (0)",
            None,
            members().map(|(vrf, m)| {
                (
                    [("vrf", vrf), ("interface", m.name.as_str())],
                    ConstGauge::new(i64::from(m.up)),
                )
            }),
        )?;

        family(
            &mut enc,
            "vrf_routes",
            "Routes of the VRF's table in the data plane",
            None,
            self.vrfs.iter().flat_map(|v| {
                [("ipv4", v.routes4), ("ipv6", v.routes6)].map(|(fam, n)| {
                    (
                        [("vrf", v.name.as_str()), ("family", fam)],
                        ConstGauge::new(i64::from(n)),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "vrf_neighbours",
            "Neighbours on the VRF's members in the data plane",
            None,
            self.vrfs.iter().map(|v| {
                (
                    [("vrf", v.name.as_str())],
                    ConstGauge::new(i64::from(v.neighbours)),
                )
            }),
        )?;
        family(
            &mut enc,
            "vrf_degraded",
            "1 when all of the VRF's traffic goes to the kernel (a map is full, or a rule ahead \
             of the VRF's own could match)",
            None,
            self.vrfs.iter().map(|v| {
                (
                    [("vrf", v.name.as_str())],
                    ConstGauge::new(i64::from(v.degraded)),
                )
            }),
        )?;
        Ok(())
    }
}

/// `--metrics` as given: a port alone means loopback.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("{s:?}: expected PORT (on 127.0.0.1), IPV4:PORT or [IPV6]:PORT"))
}

/// Bind the listener (before anything is loaded, so a busy port fails early).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("serving metrics on {addr}"))
}

/// The running exporter; stops when dropped.
pub struct Exporter {
    task: JoinHandle<()>,
    pub addr: SocketAddr,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    maps: Maps,
    daemon: DaemonMetrics,
}

/// Serve `/metrics` on `listener` from the maps pinned under `pin_dir`.
pub fn spawn(listener: TcpListener, pin_dir: &Path, daemon: DaemonMetrics) -> Result<Exporter> {
    let addr = listener.local_addr()?;
    let state = Arc::new(State {
        maps: Maps::from_pins(pin_dir)?,
        daemon,
    });
    info!(address = %addr, "serving metrics at http://{addr}/metrics");
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(respond(state, req).await) }
                });
                if let Err(e) = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%peer, error = %e, "metrics connection");
                }
            });
        }
    });
    Ok(Exporter { task, addr })
}

async fn respond(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts")
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "GET /metrics\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let rendered =
                tokio::task::spawn_blocking(move || render(&state.maps, &state.daemon)).await;
            match rendered {
                Ok(Ok(body)) => reply(StatusCode::OK, CONTENT_TYPE, body),
                Ok(Err(e)) => {
                    warn!(error = %format!("{e:#}"), "metrics: reading the maps");
                    reply(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("{e:#}\n"))
                }
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("{e}\n")),
            }
        }
        "/" => reply(
            StatusCode::OK,
            PLAIN,
            "vrf-xdp: metrics at /metrics\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_alone_is_loopback() {
        assert_eq!(parse_addr("9100"), Ok("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(
            parse_addr("0.0.0.0:9100"),
            Ok("0.0.0.0:9100".parse().unwrap())
        );
        assert_eq!(parse_addr("[::1]:9100"), Ok("[::1]:9100".parse().unwrap()));
        assert!(parse_addr("localhost").is_err());
        assert!(parse_addr(":9100").is_err());
    }

    #[test]
    fn daemon_counters_are_exported_by_kind() {
        let d = DaemonMetrics::default();
        d.event(&KernelEvent::RulesChanged);
        d.event(&KernelEvent::RulesChanged);
        d.resync();
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register("sync_events", "h", d.sync_events.clone());
        registry.register("resyncs", "h", d.resyncs.clone());
        let mut out = String::new();
        text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("vrf_xdp_sync_events_total{kind=\"rule\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("vrf_xdp_sync_events_total{kind=\"route\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("vrf_xdp_resyncs_total 1\n"), "{out}");
    }
}
