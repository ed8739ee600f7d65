//! vrfd's view of the kernel through rtnetlink: one NETLINK_ROUTE socket, subscribed to every
//! group vrfd mirrors before the first dump, that both answers dumps ([`Netlink::snapshot`]) and
//! streams changes ([`KernelEvent`]s on the receiver [`Netlink::connect`] returns).
//!
//! # Using the two together
//! Take [`Netlink::snapshot`], install it, then apply every event from the receiver in order —
//! including those queued while the snapshot was being taken: the socket was subscribed before
//! the dump started, so every change the dump may have missed is in the queue, and re-applying a
//! change the dump already contained is harmless. On [`KernelEvent::Overrun`] take a new
//! snapshot the same way — unless [`Netlink::is_closed`]: then the socket is gone (its last
//! event was that `Overrun`) and only [`Netlink::connect`] helps.
//!
//! # Kernel behaviour the consumer must know
//! - IPv4 routes through a link are removed **without** RTM_DELROUTE when the link goes down or
//!   loses its last IPv4 address (both seen on 6.18; only the kernel's own connected, local and
//!   broadcast routes are announced); IPv6 ones are announced. Re-read the routes (or drop the
//!   IPv4 routes through that ifindex) on a `NewLink` with `up == false` and on a `DelAddr`.
//! - IPv6 `ip -6 route del P via G` on a multipath route announces a `DelRoute` carrying only
//!   the deleted path; the route stays with the others. A `DelRoute` means "these paths are gone".
//! - IPv4 allows several routes with the same (table, prefix, tos, metric) (`ip route append`):
//!   only the first one in dump order is used.
//!
//! # Socket details
//! The connection is netlink-proto's (the one rtnetlink wraps) with `codec::TolerantCodec`, so
//! a message the crate cannot parse becomes an `Overrun` instead of silently disappearing.
//! ENOBUFS from `recvmsg` (the kernel dropped notifications because the receive buffer was full)
//! is turned into an `NLMSG_OVERRUN` message by netlink-proto and into `KernelEvent::Overrun`
//! here. Only one dump may run on a netlink socket at a time (the kernel answers EBUSY), so dumps
//! are serialised.
//!
//! A notification carries the sequence number of the request that caused it, and netlink-proto
//! matches responses on (sequence number, sender = kernel) only. On a socket that both listens
//! and asks, another process's notification whose number equals one of our pending requests'
//! ends that request early — a dump then silently returns part of the table (in testing,
//! against a client churning routes with netlink-proto's numbering, 64 dump attempts were cut
//! short while 32 completed; under load, 10 in a row). So requests (dumps, acknowledged
//! changes) go on a second socket that joins no multicast group: the kernel sends it nothing
//! but its answers, and the event socket asks nothing, so no number can collide. What would
//! still reach a request unasked is handed back (rule changes as `RulesChanged`, anything else
//! as `Overrun`, since its order relative to the stream is lost), and a dump without
//! NLMSG_DONE is restarted.
pub mod blocking;
mod codec;
pub mod convert;
pub mod nexthop;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{stream::BoxStream, Stream, StreamExt};
use netlink_packet_core::{
    NetlinkDeserializable, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLM_F_ACK,
    NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_MULTIPART,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::AddressMessage,
    link::LinkMessage,
    neighbour::NeighbourMessage,
    route::{RouteHeader, RouteMessage},
    rule::{RuleAction, RuleAttribute, RuleMessage},
    AddressFamily, RouteNetlinkMessage,
};
use rtnetlink::proto::ConnectionHandle;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, AsyncSocket, SocketAddr, TokioSocket};
use rtnetlink::MulticastGroup;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use crate::model::IpFamily;
use crate::model::{
    AddrInfo, KernelEvent, KernelSnapshot, LinkInfo, NeighInfo, RouteInfo, RuleInfo,
};
use codec::TolerantCodec;

/// The groups the socket joins (bound before any request is sent).
const GROUPS: [MulticastGroup; 8] = [
    MulticastGroup::Link,
    MulticastGroup::Ipv4Ifaddr,
    MulticastGroup::Ipv6Ifaddr,
    MulticastGroup::Ipv4Route,
    MulticastGroup::Ipv6Route,
    MulticastGroup::Neigh,
    MulticastGroup::Ipv4Rule,
    MulticastGroup::Ipv6Rule,
];

/// Receive buffer asked for (SO_RCVBUFFORCE, falling back to SO_RCVBUF, which rmem_max caps).
pub const RECEIVE_BUFFER: usize = 8 << 20;

/// How many times a dump is restarted when the kernel flags it inconsistent (NLM_F_DUMP_INTR),
/// busy, or when it was cut short.
const DUMP_ATTEMPTS: u32 = 10;

/// An rtnetlink connection: cheap to clone, shared by every clone. Dropping the last clone
/// closes the socket and ends the event stream.
#[derive(Clone)]
pub struct Netlink {
    inner: Arc<Inner>,
}

struct Inner {
    /// The request socket's: it hears only answers (see the module's socket details).
    handle: ConnectionHandle<RouteNetlinkMessage>,
    /// The event socket's, never asked anything; kept so its connection lives.
    _events: ConnectionHandle<RouteNetlinkMessage>,
    events: mpsc::UnboundedSender<KernelEvent>,
    /// One dump at a time per socket.
    dump_lock: tokio::sync::Mutex<()>,
    closed: Arc<AtomicBool>,
    receive_buffer: usize,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

enum Dump {
    Complete(Vec<RouteNetlinkMessage>),
    Retry(&'static str),
}

/// The kernel kept interrupting (or cutting short) a dump, [`DUMP_ATTEMPTS`] times in a row:
/// nothing is wrong with the connection, a later dump may succeed.
#[derive(Debug)]
pub struct DumpInterrupted {
    pub why: &'static str,
}

impl std::fmt::Display for DumpInterrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {DUMP_ATTEMPTS} times in a row", self.why)
    }
}

impl std::error::Error for DumpInterrupted {}

/// Was `e` (anywhere in its chain) a dump the kernel kept interrupting?
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<DumpInterrupted>())
}

/// Test hook: while the file `VRFD_TEST_FAIL_DUMPS` names exists, every dump attempt counts as
/// interrupted (the kernel cannot be made to interrupt ten dumps in a row on demand).
pub const FAIL_DUMPS_ENV: &str = "VRFD_TEST_FAIL_DUMPS";

fn dump_failure_injected() -> bool {
    static PATH: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    PATH.get_or_init(|| std::env::var_os(FAIL_DUMPS_ENV).map(Into::into))
        .as_ref()
        .is_some_and(|p| p.exists())
}

impl Netlink {
    /// Opens the socket, sizes its receive buffer, joins the link, address, route, neighbour and
    /// rule groups of both families, and starts the connection and the event forwarder on the
    /// current tokio runtime. Every change from this moment on is on the returned receiver.
    pub async fn connect() -> Result<(Netlink, mpsc::UnboundedReceiver<KernelEvent>)> {
        Self::connect_with_receive_buffer(RECEIVE_BUFFER).await
    }

    /// [`Netlink::connect`] with another receive buffer size (bytes; the kernel doubles it).
    pub async fn connect_with_receive_buffer(
        receive_buffer: usize,
    ) -> Result<(Netlink, mpsc::UnboundedReceiver<KernelEvent>)> {
        let groups = GROUPS.iter().fold(0u32, |m, g| m | 1 << (*g as u32 - 1));
        let events = route_socket::<RouteNetlinkMessage>(receive_buffer, groups)
            .context("netlink: cannot join the rtnetlink multicast groups")?;
        let requests = route_socket::<RouteNetlinkMessage>(receive_buffer, 0)?;

        let (tx, rx) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        let tasks = vec![
            tokio::spawn(events.conn),
            tokio::spawn(requests.conn),
            tokio::spawn(forward_events(events.messages, tx.clone(), closed.clone())),
            // It joins no group, so nothing comes unasked; this reports the connection's end.
            tokio::spawn(forward_events(
                requests.messages,
                tx.clone(),
                closed.clone(),
            )),
        ];
        let inner = Inner {
            handle: requests.handle,
            _events: events.handle,
            events: tx,
            dump_lock: tokio::sync::Mutex::new(()),
            closed,
            receive_buffer: events.receive_buffer,
            tasks,
        };
        Ok((
            Netlink {
                inner: Arc::new(inner),
            },
            rx,
        ))
    }

    /// The connection ended (socket error): requests fail and no more events come.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Relaxed)
    }

    /// SO_RCVBUF as the kernel reports it (twice the usable size) after connecting.
    pub fn receive_buffer(&self) -> usize {
        self.inner.receive_buffer
    }

    /// The kernel's links, addresses, routes (every table of both families), neighbours and
    /// rules, dumped one after the other.
    pub async fn snapshot(&self) -> Result<KernelSnapshot> {
        Ok(KernelSnapshot {
            links: self.links().await?,
            addrs: self.addresses().await?,
            routes: self.routes().await?,
            neighbours: self.neighbours().await?,
            rules: self.rules().await?,
            // Filled from the nexthop socket by whoever holds it.
            nexthops: Vec::new(),
        })
    }

    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        let req = RouteNetlinkMessage::GetLink(LinkMessage::default());
        self.dump_convert("link", req, |m| match m {
            RouteNetlinkMessage::NewLink(l) => convert::link(l),
            _ => None,
        })
        .await
    }

    /// The link called `name`, if any.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>> {
        Ok(self.links().await?.into_iter().find(|l| l.name == name))
    }

    pub async fn addresses(&self) -> Result<Vec<AddrInfo>> {
        self.dump_families(convert::address).await
    }

    /// Routes of every table (a dump with rtm_table = RT_TABLE_UNSPEC and no RTA_TABLE covers
    /// them all, ids above 255 included), in the kernel's order; cache clones are left out.
    pub async fn routes(&self) -> Result<Vec<RouteInfo>> {
        self.dump_families(convert::route).await
    }

    pub async fn neighbours(&self) -> Result<Vec<NeighInfo>> {
        self.dump_families(convert::neighbour).await
    }

    /// Policy routing rules of both families, in priority order per family.
    pub async fn rules(&self) -> Result<Vec<RuleInfo>> {
        self.rules_where(|_| true).await
    }

    /// The rules vrfd added (tagged with [`crate::rule_tag::RULE_PROTOCOL`]), by any vrfd.
    pub async fn tagged_rules(&self) -> Result<Vec<RuleInfo>> {
        self.rules_where(crate::rule_tag::is_ours).await
    }

    /// The rules of both families that `keep` accepts, in priority order per family.
    async fn rules_where(&self, keep: fn(&RuleMessage) -> bool) -> Result<Vec<RuleInfo>> {
        self.dump_families(|r| keep(r).then(|| convert::rule(r)).flatten())
            .await
    }

    /// `ip rule add iif IIF lookup TABLE pref PRIORITY proto 246` (fails with EEXIST if that exact rule
    /// exists).
    pub async fn add_rule(
        &self,
        family: IpFamily,
        iif: &str,
        table: u32,
        priority: u32,
    ) -> Result<()> {
        self.change_rule(true, family, iif, table, priority).await
    }

    /// `ip rule del iif IIF lookup TABLE pref PRIORITY` (fails with ENOENT if there is none).
    pub async fn del_rule(
        &self,
        family: IpFamily,
        iif: &str,
        table: u32,
        priority: u32,
    ) -> Result<()> {
        self.change_rule(false, family, iif, table, priority).await
    }

    /// [`add_rule`](Self::add_rule) (`add`) or [`del_rule`](Self::del_rule).
    async fn change_rule(
        &self,
        add: bool,
        family: IpFamily,
        iif: &str,
        table: u32,
        priority: u32,
    ) -> Result<()> {
        let msg = rule_message(family, iif, table, priority);
        let (req, flags, verb) = if add {
            let req = RouteNetlinkMessage::NewRule(msg);
            (req, NLM_F_CREATE | NLM_F_EXCL, "add")
        } else {
            (RouteNetlinkMessage::DelRule(msg), 0, "del")
        };
        self.acked(req, flags)
            .await
            .with_context(|| rule_text(verb, family, iif, table, priority))
    }

    /// Give `ifindex` a `pfifo_fast` root qdisc unless it has a real one already: a VRF device
    /// passes what the host sends through its own transmit path (where tc sees it) only when
    /// its root qdisc is not the default noqueue (drivers/net/vrf.c: `vrf_ip_out`). Returns
    /// whether a qdisc was added (and so is ours to remove).
    pub async fn add_root_qdisc(&self, ifindex: u32) -> Result<bool> {
        let msg = root_qdisc_message(ifindex, true);
        match self
            .acked(
                RouteNetlinkMessage::NewQueueDiscipline(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if crate::errno::is_exists(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("tc qdisc add dev {ifindex} root pfifo_fast")),
        }
    }

    /// Remove the root qdisc of `ifindex` (back to the device's default).
    pub async fn del_root_qdisc(&self, ifindex: u32) -> Result<()> {
        let msg = root_qdisc_message(ifindex, false);
        self.acked(RouteNetlinkMessage::DelQueueDiscipline(msg), 0)
            .await
            .with_context(|| format!("tc qdisc del dev {ifindex} root"))
    }

    fn closed_error(&self) -> anyhow::Error {
        anyhow!("netlink connection closed (call Netlink::connect again)")
    }

    /// One dump of `M` per IP family (IPv4 first), each message read by `read`.
    async fn dump_families<M: FamilyDump, T>(
        &self,
        read: impl Fn(&M) -> Option<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for family in IpFamily::ALL {
            let req = M::request(convert::address_family(family));
            out.extend(
                self.dump_convert(M::WHAT, req, |m| M::of(m).and_then(&read))
                    .await?,
            );
        }
        Ok(out)
    }

    async fn dump_convert<T>(
        &self,
        what: &str,
        req: RouteNetlinkMessage,
        f: impl Fn(&RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<T>> {
        let family = request_family(&req);
        let msgs = self
            .dump(req)
            .await
            .with_context(|| format!("netlink {what} dump ({family})"))?;
        Ok(msgs.iter().filter_map(f).collect())
    }

    /// A complete, consistent dump: restarted when the kernel flags it interrupted by a
    /// concurrent change (NLM_F_DUMP_INTR), answers EBUSY, or it ends without NLMSG_DONE.
    async fn dump(&self, req: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>> {
        let _one_at_a_time = self.inner.dump_lock.lock().await;
        let mut why = "";
        for attempt in 0..DUMP_ATTEMPTS {
            if attempt > 0 {
                tracing::debug!("netlink dump restarted: {why}");
                tokio::time::sleep(Duration::from_millis(5 << attempt.min(6))).await;
            }
            match self.dump_once(req.clone()).await? {
                _ if dump_failure_injected() => why = "test hook: VRFD_TEST_FAIL_DUMPS exists",
                Dump::Complete(msgs) => return Ok(msgs),
                Dump::Retry(reason) => why = reason,
            }
        }
        Err(DumpInterrupted { why }.into())
    }

    async fn dump_once(&self, req: RouteNetlinkMessage) -> Result<Dump> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        let mut req = NetlinkMessage::from(req);
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut responses = self
            .inner
            .handle
            .request(req, SocketAddr::new(0, 0))
            .map_err(|_| self.closed_error())?;
        let mut out = Vec::new();
        let mut done = false;
        let mut interrupted = false;
        while let Some(msg) = responses.next().await {
            interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
            let multipart = msg.header.flags & NLM_F_MULTIPART != 0;
            let undecodable = codec::is_undecodable(&msg);
            match msg.payload {
                NetlinkPayload::InnerMessage(m) if multipart => out.push(m),
                // Not part of a dump: a notification whose sequence number happens to equal
                // this request's (it ends the request early; see `stray`).
                NetlinkPayload::InnerMessage(m) => self.stray(m),
                NetlinkPayload::Overrun(_) if undecodable && !multipart => {
                    self.stray_undecodable(msg.header.message_type)
                }
                NetlinkPayload::Overrun(_) if undecodable => bail!(
                    "the kernel sent a message (type {}) netlink-packet-route cannot parse",
                    msg.header.message_type
                ),
                NetlinkPayload::Overrun(_) => return Ok(Dump::Retry("receive buffer overrun")),
                NetlinkPayload::Done(d) if d.code == -libc::EBUSY => {
                    return Ok(Dump::Retry("EBUSY"))
                }
                NetlinkPayload::Done(d) if d.code < 0 => {
                    return Err(io::Error::from_raw_os_error(-d.code)).context("dump failed");
                }
                NetlinkPayload::Done(_) => done = true,
                NetlinkPayload::Error(e) if e.raw_code() == -libc::EBUSY => {
                    return Ok(Dump::Retry(
                        "EBUSY (another dump still running on the socket)",
                    ))
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(e.to_io()).context("the kernel refused the dump")
                }
                _ => {}
            }
        }
        if self.is_closed() {
            return Err(self.closed_error());
        }
        Ok(if !done {
            Dump::Retry("the dump ended without NLMSG_DONE")
        } else if interrupted {
            Dump::Retry("the dump was interrupted by a concurrent change (NLM_F_DUMP_INTR)")
        } else {
            Dump::Complete(out)
        })
    }

    /// Sends a request with NLM_F_ACK and waits for the kernel's verdict.
    async fn acked(&self, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut responses = self
            .inner
            .handle
            .request(req, SocketAddr::new(0, 0))
            .map_err(|_| self.closed_error())?;
        while let Some(msg) = responses.next().await {
            let undecodable = codec::is_undecodable(&msg);
            match msg.payload {
                NetlinkPayload::Error(e) => match e.code {
                    None => return Ok(()),
                    Some(_) => return Err(e.to_io().into()),
                },
                // The notification of this very change carries this request's sequence number
                // and arrives before the ACK: netlink-proto hands it to the request.
                NetlinkPayload::InnerMessage(m) => self.stray(m),
                NetlinkPayload::Overrun(_) if undecodable => {
                    self.stray_undecodable(msg.header.message_type)
                }
                _ => {}
            }
        }
        Err(anyhow!(
            "no acknowledgement from the kernel (netlink connection closed?)"
        ))
    }

    /// A notification netlink-proto routed to a pending request because its sequence number
    /// matched (our own change's notification, or another process's with a colliding number).
    /// Rule changes are safe to report late; anything else may now be out of order with the
    /// event stream, so it costs a resync.
    fn stray(&self, msg: RouteNetlinkMessage) {
        let event = match convert::event(&msg) {
            None => return,
            Some(KernelEvent::RulesChanged) => KernelEvent::RulesChanged,
            Some(_) => KernelEvent::Overrun(
                "a kernel notification collided with a request's sequence number".into(),
            ),
        };
        let _ = self.inner.events.send(event);
    }

    fn stray_undecodable(&self, message_type: u16) {
        let _ = self.inner.events.send(KernelEvent::Overrun(format!(
            "undecodable netlink notification (type {message_type})"
        )));
    }
}

/// A route notification says with its flags what the kernel did: append, prepend, replace.
fn by_flags(event: KernelEvent, flags: u16) -> KernelEvent {
    match event {
        KernelEvent::NewRoute(r) if flags & NLM_F_APPEND != 0 => KernelEvent::AppendRoute(r),
        // Only `ip route prepend` is announced with NLM_F_CREATE alone (an add carries
        // CREATE|EXCL, a replace REPLACE; seen on 6.18). IPv6 announces a plain add that way
        // too and has no prepend.
        KernelEvent::NewRoute(r)
            if r.prefix.addr().is_ipv4()
                && flags & (NLM_F_CREATE | NLM_F_EXCL | NLM_F_REPLACE) == NLM_F_CREATE =>
        {
            KernelEvent::PrependRoute(r)
        }
        // IPv6 has no alias to replace: a route of an existing id that is not a replace is
        // another route at that metric (the per-device `ff00::/8` the kernel adds with every
        // link, a dev-only route beside a gateway one) or a sibling announcement.
        KernelEvent::NewRoute(r) if r.prefix.addr().is_ipv6() && flags & NLM_F_REPLACE == 0 => {
            KernelEvent::AppendRoute(r)
        }
        e => e,
    }
}

/// A NETLINK_ROUTE connection for messages `M` (netlink-proto's, with `TolerantCodec`).
pub(crate) struct RouteSocket<M>
where
    M: std::fmt::Debug + NetlinkSerializable + NetlinkDeserializable + Unpin,
{
    pub conn: rtnetlink::proto::Connection<M, TokioSocket, TolerantCodec>,
    pub handle: ConnectionHandle<M>,
    /// What comes unasked: the joined groups' notifications (and leftovers of a request
    /// netlink-proto stopped listening to).
    pub messages: BoxStream<'static, (NetlinkMessage<M>, SocketAddr)>,
    /// SO_RCVBUF as the kernel reports it.
    pub receive_buffer: usize,
}

/// A [`RouteSocket`] bound to `groups` (0: none), with `receive_buffer` asked for.
pub(crate) fn route_socket<M>(receive_buffer: usize, groups: u32) -> Result<RouteSocket<M>>
where
    M: std::fmt::Debug + NetlinkSerializable + NetlinkDeserializable + Unpin + Send + 'static,
{
    let (mut conn, handle, messages) =
        rtnetlink::proto::new_connection_with_codec::<M, TokioSocket, TolerantCodec>(NETLINK_ROUTE)
            .context("netlink: cannot open a NETLINK_ROUTE socket")?;
    // Dumps check for NLMSG_DONE (a dump without one was cut short), acknowledged requests
    // for the ACK (a request without one never completed).
    conn.set_forward_done(true);
    conn.set_forward_ack(true);
    let socket = conn.socket_mut().socket_mut();
    let receive_buffer = set_receive_buffer(socket, receive_buffer);
    socket.bind(&SocketAddr::new(0, groups))?;
    Ok(RouteSocket {
        conn,
        handle,
        messages: messages.boxed(),
        receive_buffer,
    })
}

async fn forward_events(
    mut messages: impl Stream<Item = (NetlinkMessage<RouteNetlinkMessage>, SocketAddr)> + Unpin,
    tx: mpsc::UnboundedSender<KernelEvent>,
    closed: Arc<AtomicBool>,
) {
    while let Some((msg, _)) = messages.next().await {
        let undecodable = codec::is_undecodable(&msg);
        let event = match msg.payload {
            // Notifications are never multipart: this is the rest of a dump whose request a
            // colliding notification ended (already reported, and the dump restarted).
            _ if msg.header.flags & NLM_F_MULTIPART != 0 => continue,
            NetlinkPayload::InnerMessage(m) => match convert::event(&m) {
                Some(e) => by_flags(e, msg.header.flags),
                None => continue,
            },
            NetlinkPayload::Overrun(_) if undecodable => KernelEvent::Overrun(format!(
                "undecodable netlink notification (type {})",
                msg.header.message_type
            )),
            NetlinkPayload::Overrun(_) => KernelEvent::Overrun(
                "netlink receive buffer overrun (ENOBUFS): notifications were lost".into(),
            ),
            // Leftovers of a request that stopped listening (the end of a cut-short dump).
            _ => continue,
        };
        if tx.send(event).is_err() {
            return;
        }
    }
    closed.store(true, Ordering::Relaxed);
    tracing::warn!("netlink connection closed");
    let _ = tx.send(KernelEvent::Overrun(
        "netlink connection closed: no more notifications (reconnect)".into(),
    ));
}

/// SO_RCVBUFFORCE (root may exceed rmem_max), else SO_RCVBUF. Returns the size the kernel
/// reports afterwards.
fn set_receive_buffer(socket: &rtnetlink::sys::Socket, size: usize) -> usize {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt on a socket we own with a c_int option value of the right length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        tracing::debug!("netlink: SO_RCVBUFFORCE failed ({err}); using SO_RCVBUF");
        if let Err(e) = socket.set_rx_buf_sz(value) {
            tracing::warn!("netlink: cannot set SO_RCVBUF: {e}");
        }
    }
    let got = socket.get_rx_buf_sz().unwrap_or(0);
    if got < size {
        tracing::warn!(
            "netlink: receive buffer is {got} bytes (asked {size}); bursts may overrun it"
        );
    }
    got
}

/// A message vrfd dumps once per address family: its dump request, and itself in the answer.
trait FamilyDump: Sized {
    /// The dump's name in errors.
    const WHAT: &'static str;
    fn request(family: AddressFamily) -> RouteNetlinkMessage;
    fn of(m: &RouteNetlinkMessage) -> Option<&Self>;
}

/// Each line: the message, its name, where its family goes, its dump request and its answer.
macro_rules! family_dumps {
    ($($msg:ident: $what:literal, $($family:ident).+, $get:ident, $new:ident;)+) => {$(
        impl FamilyDump for $msg {
            const WHAT: &'static str = $what;
            fn request(family: AddressFamily) -> RouteNetlinkMessage {
                let mut msg = $msg::default();
                msg.$($family).+ = family;
                RouteNetlinkMessage::$get(msg)
            }
            fn of(m: &RouteNetlinkMessage) -> Option<&Self> {
                match m {
                    RouteNetlinkMessage::$new(m) => Some(m),
                    _ => None,
                }
            }
        }
    )+};
}

// A route dump's rtm_table is RT_TABLE_UNSPEC (0, the default): every table.
const _: () = assert!(RouteHeader::RT_TABLE_UNSPEC == 0);
family_dumps! {
    AddressMessage: "address", header.family, GetAddress, NewAddress;
    RouteMessage: "route", header.address_family, GetRoute, NewRoute;
    NeighbourMessage: "neighbour", header.family, GetNeighbour, NewNeighbour;
    RuleMessage: "rule", header.family, GetRule, NewRule;
}

fn request_family(req: &RouteNetlinkMessage) -> &'static str {
    let family = match req {
        RouteNetlinkMessage::GetAddress(m) => m.header.family,
        RouteNetlinkMessage::GetRoute(m) => m.header.address_family,
        RouteNetlinkMessage::GetNeighbour(m) => m.header.family,
        RouteNetlinkMessage::GetRule(m) => m.header.family,
        _ => AddressFamily::Unspec,
    };
    match family {
        AddressFamily::Inet => "AF_INET",
        AddressFamily::Inet6 => "AF_INET6",
        _ => "AF_UNSPEC",
    }
}

/// What iproute2 sends for `ip rule add|del iif IIF lookup TABLE pref PRIORITY`: FR_ACT_TO_TBL,
/// the table in the header when it fits in 8 bits and always in FRA_TABLE.
fn rule_message(family: IpFamily, iif: &str, table: u32, priority: u32) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = convert::address_family(family);
    msg.header.action = RuleAction::ToTable;
    msg.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    msg.attributes.push(RuleAttribute::Priority(priority));
    msg.attributes.push(RuleAttribute::Iifname(iif.to_string()));
    msg.attributes.push(RuleAttribute::Table(table));
    // vrfd's own: it outlives vrfd, and the next one (and vrfctl) must know it.
    msg.attributes.push(crate::rule_tag::attribute());
    msg
}

fn rule_text(verb: &str, family: IpFamily, iif: &str, table: u32, priority: u32) -> String {
    format!(
        "ip {} rule {verb} iif {iif} lookup {table} pref {priority}",
        family.ip_flag()
    )
}

fn root_qdisc_message(ifindex: u32, with_kind: bool) -> netlink_packet_route::tc::TcMessage {
    use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle::ROOT;
    if with_kind {
        msg.attributes
            .push(TcAttribute::Kind("pfifo_fast".to_string()));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RouteInfo;
    use vrf_common::RouteKind;

    fn event(prefix: &str, flags: u16) -> KernelEvent {
        let r = RouteInfo::of(255, prefix, RouteKind::Multicast, &[(7, None)]);
        by_flags(KernelEvent::NewRoute(r), flags)
    }

    #[test]
    fn route_notifications_are_read_by_their_flags() {
        let kind = |e: KernelEvent| match e {
            KernelEvent::NewRoute(_) => "new",
            KernelEvent::AppendRoute(_) => "append",
            KernelEvent::PrependRoute(_) => "prepend",
            _ => "other",
        };
        let add = NLM_F_CREATE | NLM_F_EXCL;
        assert_eq!(kind(event("10.0.0.0/8", add)), "new");
        assert_eq!(kind(event("10.0.0.0/8", NLM_F_REPLACE)), "new");
        assert_eq!(kind(event("10.0.0.0/8", NLM_F_CREATE)), "prepend");
        assert_eq!(
            kind(event("10.0.0.0/8", NLM_F_CREATE | NLM_F_APPEND)),
            "append"
        );
        // The kernel's own per-device routes (no flags), IPv6 adds and prepends: appends.
        assert_eq!(kind(event("ff00::/8", 0)), "append");
        assert_eq!(kind(event("ff00::/8", NLM_F_CREATE)), "append");
        assert_eq!(kind(event("ff00::/8", add)), "append");
        assert_eq!(kind(event("ff00::/8", NLM_F_REPLACE)), "new");
    }
}
