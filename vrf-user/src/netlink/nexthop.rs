//! Nexthop objects (linux/nexthop.h): RTM_NEWNEXTHOP / RTM_DELNEXTHOP / RTM_GETNEXTHOP, typed on
//! netlink-packet-core's traits in the style of netlink-packet-route's route module (which has
//! no nexthop messages), and vrfd's model of them ([`NexthopInfo`]).
//!
//! # Why a socket of its own
//! rtnetlink's connection is typed on `RouteNetlinkMessage`, which cannot carry these messages:
//! on vrfd's main socket (`super::Netlink`) a nexthop message would not parse and would become
//! an `Overrun` (a resync). That socket does not join RTNLGRP_NEXTHOP, so today it never sees
//! one. [`NexthopSocket`] is a second NETLINK_ROUTE socket with the same tolerant codec, typed on
//! [`NexthopNetlinkMessage`], joined to RTNLGRP_NEXTHOP before its first dump: take
//! [`NexthopSocket::dump`], then apply every [`NexthopEvent`] in order (the same contract as the
//! main socket). Ordering between the two sockets is not given by the kernel: a route naming
//! `nhid N` may arrive before nexthop N; the mirror must hold such a route until N is known.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{Stream, StreamExt};
use netlink_packet_core::{
    emit_u16, emit_u32, emit_u64, parse_u16, parse_u32, parse_u64, DecodeError, DefaultNla,
    Emitable, ErrorContext, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, Nla, NlaBuffer, NlasIterator, Parseable, NLA_F_NESTED, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::{
    route::{RouteProtocol, RouteScope},
    AddressFamily,
};
use rtnetlink::proto::ConnectionHandle;
use rtnetlink::sys::SocketAddr;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::codec::is_undecodable;

pub const RTM_NEWNEXTHOP: u16 = 104;
pub const RTM_DELNEXTHOP: u16 = 105;
pub const RTM_GETNEXTHOP: u16 = 106;

/// rtnetlink multicast group of nexthop objects (linux/rtnetlink.h `RTNLGRP_NEXTHOP`).
pub const RTNLGRP_NEXTHOP: u32 = 32;

const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_GROUP_TYPE: u16 = 3;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const NHA_ENCAP_TYPE: u16 = 7;
const NHA_ENCAP: u16 = 8;
const NHA_GROUPS: u16 = 9;
const NHA_MASTER: u16 = 10;
const NHA_FDB: u16 = 11;
const NHA_RES_GROUP: u16 = 12;
const NHA_OP_FLAGS: u16 = 14;

const NHA_RES_GROUP_BUCKETS: u16 = 1;
const NHA_RES_GROUP_IDLE_TIMER: u16 = 2;
const NHA_RES_GROUP_UNBALANCED_TIMER: u16 = 3;
const NHA_RES_GROUP_UNBALANCED_TIME: u16 = 4;

/// `nh_flags` bits (RTNH_F_*).
pub const RTNH_F_DEAD: u32 = 1;
pub const RTNH_F_ONLINK: u32 = 4;
pub const RTNH_F_LINKDOWN: u32 = 16;

const NEXTHOP_HEADER_LEN: usize = 8;

/// netlink-packet-core's context on a decode error (anyhow's `context` has the same name).
fn ctx<T>(r: Result<T, DecodeError>, what: &'static str) -> Result<T, DecodeError> {
    ErrorContext::context(r, what)
}
const NEXTHOP_GRP_LEN: usize = 8;

/// struct nhmsg.
#[derive(Debug, PartialEq, Eq, Clone, Default)]
pub struct NexthopHeader {
    pub family: AddressFamily,
    /// Set by the kernel in answers only.
    pub scope: RouteScope,
    /// Who installed it (`proto zebra`, `proto bird`…).
    pub protocol: RouteProtocol,
    /// RTNH_F_* bits.
    pub flags: u32,
}

impl Emitable for NexthopHeader {
    fn buffer_len(&self) -> usize {
        NEXTHOP_HEADER_LEN
    }

    fn emit(&self, buffer: &mut [u8]) {
        buffer[0] = u8::from(self.family);
        buffer[1] = u8::from(self.scope);
        buffer[2] = u8::from(self.protocol);
        buffer[3] = 0;
        emit_u32(&mut buffer[4..8], self.flags).unwrap();
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<T> for NexthopHeader {
    fn parse(buf: &T) -> Result<Self, DecodeError> {
        let b = buf.as_ref();
        if b.len() < NEXTHOP_HEADER_LEN {
            return Err(DecodeError::buffer_too_small(b.len(), NEXTHOP_HEADER_LEN));
        }
        Ok(NexthopHeader {
            family: b[0].into(),
            scope: b[1].into(),
            protocol: b[2].into(),
            flags: parse_u32(&b[4..8])?,
        })
    }
}

/// One member of a group (struct nexthop_grp) with its weight as the kernel uses it: 1 to 256,
/// or 1 to 65535 on kernels ≥ 6.12 (`weight_high` holds the upper 8 bits of weight - 1; the
/// kernel computes the weight in 16 bits, so 65536 is refused with EINVAL). Those kernels mark
/// group answers with NHA_OP_FLAGS bit 31 (NHA_OP_FLAG_RESP_GRP_RESVD_0): `weight_high` is real.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct NexthopGroupEntry {
    pub id: u32,
    pub weight: u32,
}

impl NexthopGroupEntry {
    fn parse(b: &[u8]) -> Result<Self, DecodeError> {
        let id = parse_u32(&b[0..4])?;
        // weight and weight_high are weight - 1 split in bytes; older kernels leave resvd1 0.
        let weight = (u32::from(b[5]) << 8 | u32::from(b[4])) + 1;
        Ok(NexthopGroupEntry { id, weight })
    }

    fn emit(&self, b: &mut [u8]) {
        emit_u32(&mut b[0..4], self.id).unwrap();
        let w = self.weight.clamp(1, 0xffff) - 1;
        b[4] = w as u8;
        b[5] = (w >> 8) as u8;
        b[6] = 0;
        b[7] = 0;
    }
}

/// NEXTHOP_GRP_TYPE_*.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum NexthopGroupType {
    /// Hash-threshold (the default).
    Mpath,
    Resilient,
    Other(u16),
}

impl From<u16> for NexthopGroupType {
    fn from(v: u16) -> Self {
        match v {
            0 => NexthopGroupType::Mpath,
            1 => NexthopGroupType::Resilient,
            v => NexthopGroupType::Other(v),
        }
    }
}

impl From<NexthopGroupType> for u16 {
    fn from(v: NexthopGroupType) -> u16 {
        match v {
            NexthopGroupType::Mpath => 0,
            NexthopGroupType::Resilient => 1,
            NexthopGroupType::Other(v) => v,
        }
    }
}

/// Attributes nested in NHA_RES_GROUP (timers in clock_t, USER_HZ ticks).
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum ResilientGroupAttribute {
    Buckets(u16),
    IdleTimer(u32),
    UnbalancedTimer(u32),
    UnbalancedTime(u64),
    Other(DefaultNla),
}

impl Nla for ResilientGroupAttribute {
    fn value_len(&self) -> usize {
        match self {
            Self::Buckets(_) => 2,
            Self::IdleTimer(_) | Self::UnbalancedTimer(_) => 4,
            Self::UnbalancedTime(_) => 8,
            Self::Other(n) => n.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Buckets(_) => NHA_RES_GROUP_BUCKETS,
            Self::IdleTimer(_) => NHA_RES_GROUP_IDLE_TIMER,
            Self::UnbalancedTimer(_) => NHA_RES_GROUP_UNBALANCED_TIMER,
            Self::UnbalancedTime(_) => NHA_RES_GROUP_UNBALANCED_TIME,
            Self::Other(n) => n.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Buckets(v) => emit_u16(buffer, *v).unwrap(),
            Self::IdleTimer(v) | Self::UnbalancedTimer(v) => emit_u32(buffer, *v).unwrap(),
            Self::UnbalancedTime(v) => emit_u64(buffer, *v).unwrap(),
            Self::Other(n) => n.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for ResilientGroupAttribute {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            NHA_RES_GROUP_BUCKETS => Self::Buckets(ctx(parse_u16(v), "NHA_RES_GROUP_BUCKETS")?),
            NHA_RES_GROUP_IDLE_TIMER => {
                Self::IdleTimer(ctx(parse_u32(v), "NHA_RES_GROUP_IDLE_TIMER")?)
            }
            NHA_RES_GROUP_UNBALANCED_TIMER => {
                Self::UnbalancedTimer(ctx(parse_u32(v), "NHA_RES_GROUP_UNBALANCED_TIMER")?)
            }
            NHA_RES_GROUP_UNBALANCED_TIME => {
                Self::UnbalancedTime(ctx(parse_u64(v), "NHA_RES_GROUP_UNBALANCED_TIME")?)
            }
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// NHA_* attributes. Encapsulation (MPLS, seg6…) is kept as raw bytes: vrfd does not forward it.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum NexthopAttribute {
    Id(u32),
    Group(Vec<NexthopGroupEntry>),
    GroupType(NexthopGroupType),
    Blackhole,
    Oif(u32),
    Gateway(IpAddr),
    EncapType(u16),
    Encap(Vec<u8>),
    /// Dump filter: groups only.
    Groups,
    /// Dump filter: nexthops through links of this master.
    Master(u32),
    Fdb,
    ResilientGroup(Vec<ResilientGroupAttribute>),
    OpFlags(u32),
    Other(DefaultNla),
}

impl Nla for NexthopAttribute {
    fn value_len(&self) -> usize {
        match self {
            Self::Id(_) | Self::Oif(_) | Self::Master(_) | Self::OpFlags(_) => 4,
            Self::Group(g) => g.len() * NEXTHOP_GRP_LEN,
            Self::GroupType(_) | Self::EncapType(_) => 2,
            Self::Blackhole | Self::Groups | Self::Fdb => 0,
            Self::Gateway(IpAddr::V4(_)) => 4,
            Self::Gateway(IpAddr::V6(_)) => 16,
            Self::Encap(v) => v.len(),
            Self::ResilientGroup(a) => a.as_slice().buffer_len(),
            Self::Other(n) => n.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Id(_) => NHA_ID,
            Self::Group(_) => NHA_GROUP,
            Self::GroupType(_) => NHA_GROUP_TYPE,
            Self::Blackhole => NHA_BLACKHOLE,
            Self::Oif(_) => NHA_OIF,
            Self::Gateway(_) => NHA_GATEWAY,
            Self::EncapType(_) => NHA_ENCAP_TYPE,
            Self::Encap(_) => NHA_ENCAP | NLA_F_NESTED,
            Self::Groups => NHA_GROUPS,
            Self::Master(_) => NHA_MASTER,
            Self::Fdb => NHA_FDB,
            Self::ResilientGroup(_) => NHA_RES_GROUP | NLA_F_NESTED,
            Self::OpFlags(_) => NHA_OP_FLAGS,
            Self::Other(n) => n.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Id(v) | Self::Oif(v) | Self::Master(v) | Self::OpFlags(v) => {
                emit_u32(buffer, *v).unwrap()
            }
            Self::Group(g) => {
                for (e, b) in g.iter().zip(buffer.chunks_exact_mut(NEXTHOP_GRP_LEN)) {
                    e.emit(b);
                }
            }
            Self::GroupType(t) => emit_u16(buffer, u16::from(*t)).unwrap(),
            Self::EncapType(v) => emit_u16(buffer, *v).unwrap(),
            Self::Blackhole | Self::Groups | Self::Fdb => {}
            Self::Gateway(IpAddr::V4(a)) => buffer.copy_from_slice(&a.octets()),
            Self::Gateway(IpAddr::V6(a)) => buffer.copy_from_slice(&a.octets()),
            Self::Encap(v) => buffer.copy_from_slice(v),
            Self::ResilientGroup(a) => a.as_slice().emit(buffer),
            Self::Other(n) => n.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for NexthopAttribute {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            NHA_ID => Self::Id(ctx(parse_u32(v), "NHA_ID")?),
            NHA_GROUP => {
                if !v.len().is_multiple_of(NEXTHOP_GRP_LEN) {
                    return Err(format!("NHA_GROUP of {} bytes", v.len()).into());
                }
                Self::Group(
                    v.chunks_exact(NEXTHOP_GRP_LEN)
                        .map(NexthopGroupEntry::parse)
                        .collect::<Result<_, _>>()?,
                )
            }
            NHA_GROUP_TYPE => Self::GroupType(ctx(parse_u16(v), "NHA_GROUP_TYPE")?.into()),
            NHA_BLACKHOLE => Self::Blackhole,
            NHA_OIF => Self::Oif(ctx(parse_u32(v), "NHA_OIF")?),
            NHA_GATEWAY => Self::Gateway(match v.len() {
                4 => IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
                16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).unwrap())),
                n => return Err(DecodeError::invalid_ip_address(n)),
            }),
            NHA_ENCAP_TYPE => Self::EncapType(ctx(parse_u16(v), "NHA_ENCAP_TYPE")?),
            NHA_ENCAP => Self::Encap(v.to_vec()),
            NHA_GROUPS => Self::Groups,
            NHA_MASTER => Self::Master(ctx(parse_u32(v), "NHA_MASTER")?),
            NHA_FDB => Self::Fdb,
            NHA_RES_GROUP => {
                let mut attrs = Vec::new();
                for nla in NlasIterator::new(v) {
                    let nla = ctx(nla, "NHA_RES_GROUP")?;
                    attrs.push(ResilientGroupAttribute::parse(&nla)?);
                }
                Self::ResilientGroup(attrs)
            }
            NHA_OP_FLAGS => Self::OpFlags(ctx(parse_u32(v), "NHA_OP_FLAGS")?),
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// One RTM_*NEXTHOP message.
#[derive(Debug, PartialEq, Eq, Clone, Default)]
pub struct NexthopMessage {
    pub header: NexthopHeader,
    pub attributes: Vec<NexthopAttribute>,
}

impl Emitable for NexthopMessage {
    fn buffer_len(&self) -> usize {
        self.header.buffer_len() + self.attributes.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.header.emit(buffer);
        self.attributes
            .as_slice()
            .emit(&mut buffer[self.header.buffer_len()..]);
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<T> for NexthopMessage {
    fn parse(buf: &T) -> Result<Self, DecodeError> {
        let b = buf.as_ref();
        let header = ctx(
            NexthopHeader::parse(b),
            "failed to parse nexthop message header",
        )?;
        let mut attributes = Vec::new();
        for nla in NlasIterator::new(&b[NEXTHOP_HEADER_LEN..]) {
            let nla = ctx(nla, "failed to parse nexthop message NLAs")?;
            attributes.push(NexthopAttribute::parse(&nla)?);
        }
        Ok(NexthopMessage { header, attributes })
    }
}

/// The messages a nexthop socket carries.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum NexthopNetlinkMessage {
    NewNexthop(NexthopMessage),
    DelNexthop(NexthopMessage),
    GetNexthop(NexthopMessage),
}

impl NexthopNetlinkMessage {
    fn message(&self) -> &NexthopMessage {
        match self {
            Self::NewNexthop(m) | Self::DelNexthop(m) | Self::GetNexthop(m) => m,
        }
    }
}

impl NetlinkSerializable for NexthopNetlinkMessage {
    fn message_type(&self) -> u16 {
        match self {
            Self::NewNexthop(_) => RTM_NEWNEXTHOP,
            Self::DelNexthop(_) => RTM_DELNEXTHOP,
            Self::GetNexthop(_) => RTM_GETNEXTHOP,
        }
    }

    fn buffer_len(&self) -> usize {
        self.message().buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        self.message().emit(buffer)
    }
}

impl NetlinkDeserializable for NexthopNetlinkMessage {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        let msg = NexthopMessage::parse(payload)?;
        Ok(match header.message_type {
            RTM_NEWNEXTHOP => Self::NewNexthop(msg),
            RTM_DELNEXTHOP => Self::DelNexthop(msg),
            RTM_GETNEXTHOP => Self::GetNexthop(msg),
            t => return Err(format!("message type {t} is not a nexthop message").into()),
        })
    }
}

impl From<NexthopNetlinkMessage> for NetlinkPayload<NexthopNetlinkMessage> {
    fn from(message: NexthopNetlinkMessage) -> Self {
        NetlinkPayload::InnerMessage(message)
    }
}

// The model.

/// A nexthop object as vrfd mirrors it.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct NexthopInfo {
    pub id: u32,
    pub protocol: u8,
    pub kind: NexthopKind,
}

#[derive(Debug, PartialEq, Eq, Clone)]
pub enum NexthopKind {
    /// One path: out of `oif`, via `gateway` (none: the destination is on the link).
    Single {
        oif: u32,
        gateway: Option<IpAddr>,
        onlink: bool,
        /// RTNH_F_DEAD / RTNH_F_LINKDOWN: the kernel does not use it now.
        dead: bool,
    },
    Blackhole,
    /// Members by id with their weights (1…65535), in the kernel's order.
    Group {
        members: Vec<(u32, u32)>,
        resilient: Option<Resilient>,
    },
    /// Something vrfd leaves to the kernel (encapsulation, bridge FDB nexthops), and why.
    Unsupported(&'static str),
}

/// A resilient group's parameters (timers in clock_t, USER_HZ ticks).
#[derive(Debug, PartialEq, Eq, Clone, Copy, Default)]
pub struct Resilient {
    pub buckets: u16,
    pub idle_timer: u32,
    pub unbalanced_timer: u32,
}

/// A change of a nexthop object.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum NexthopEvent {
    New(NexthopInfo),
    Deleted(u32),
    /// Notifications were lost or could not be parsed: dump again.
    Overrun,
}

impl TryFrom<&NexthopMessage> for NexthopInfo {
    type Error = anyhow::Error;

    fn try_from(msg: &NexthopMessage) -> Result<Self> {
        let mut id = None;
        let (mut oif, mut gateway, mut blackhole, mut fdb, mut encap) =
            (None, None, false, false, false);
        let (mut group, mut group_type, mut res) = (None, NexthopGroupType::Mpath, None);
        for a in &msg.attributes {
            match a {
                NexthopAttribute::Id(v) => id = Some(*v),
                NexthopAttribute::Oif(v) => oif = Some(*v),
                NexthopAttribute::Gateway(g) => gateway = Some(*g),
                NexthopAttribute::Blackhole => blackhole = true,
                NexthopAttribute::Fdb => fdb = true,
                NexthopAttribute::EncapType(_) | NexthopAttribute::Encap(_) => encap = true,
                NexthopAttribute::Group(g) => group = Some(g),
                NexthopAttribute::GroupType(t) => group_type = *t,
                NexthopAttribute::ResilientGroup(r) => {
                    let mut p = Resilient::default();
                    for x in r {
                        match x {
                            ResilientGroupAttribute::Buckets(v) => p.buckets = *v,
                            ResilientGroupAttribute::IdleTimer(v) => p.idle_timer = *v,
                            ResilientGroupAttribute::UnbalancedTimer(v) => p.unbalanced_timer = *v,
                            _ => {}
                        }
                    }
                    res = Some(p);
                }
                _ => {}
            }
        }
        let id = id.ok_or_else(|| anyhow!("nexthop message without NHA_ID"))?;
        let flags = msg.header.flags;
        let kind = if let Some(g) = group {
            match group_type {
                NexthopGroupType::Mpath => NexthopKind::Group {
                    members: g.iter().map(|e| (e.id, e.weight)).collect(),
                    resilient: None,
                },
                NexthopGroupType::Resilient => NexthopKind::Group {
                    members: g.iter().map(|e| (e.id, e.weight)).collect(),
                    resilient: Some(res.unwrap_or_default()),
                },
                NexthopGroupType::Other(_) => NexthopKind::Unsupported("unknown group type"),
            }
        } else if fdb {
            NexthopKind::Unsupported("bridge FDB nexthop")
        } else if encap {
            NexthopKind::Unsupported("encapsulation")
        } else if blackhole {
            NexthopKind::Blackhole
        } else if let Some(oif) = oif {
            NexthopKind::Single {
                oif,
                gateway,
                onlink: flags & RTNH_F_ONLINK != 0,
                dead: flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN) != 0,
            }
        } else {
            bail!("nexthop {id} has neither a group, a blackhole nor an oif");
        };
        Ok(NexthopInfo {
            id,
            protocol: u8::from(msg.header.protocol),
            kind,
        })
    }
}

/// The event a received message stands for; `None` for messages that are not events (dump
/// parts, acks, requests echoed).
pub fn nexthop_event(msg: &NetlinkMessage<NexthopNetlinkMessage>) -> Option<NexthopEvent> {
    if is_undecodable(msg) {
        return Some(NexthopEvent::Overrun);
    }
    match &msg.payload {
        NetlinkPayload::Overrun(_) => Some(NexthopEvent::Overrun),
        NetlinkPayload::InnerMessage(NexthopNetlinkMessage::NewNexthop(m)) => {
            match NexthopInfo::try_from(m) {
                Ok(info) => Some(NexthopEvent::New(info)),
                Err(e) => {
                    tracing::error!("netlink: {e:#}");
                    Some(NexthopEvent::Overrun)
                }
            }
        }
        NetlinkPayload::InnerMessage(NexthopNetlinkMessage::DelNexthop(m)) => {
            m.attributes.iter().find_map(|a| match a {
                NexthopAttribute::Id(id) => Some(NexthopEvent::Deleted(*id)),
                _ => None,
            })
        }
        _ => None,
    }
}

/// Every nexthop object of the socket's namespace. Restarts (a few times) a dump the kernel
/// flags as interrupted by a change.
pub async fn dump_nexthops(
    handle: &mut ConnectionHandle<NexthopNetlinkMessage>,
) -> Result<Vec<NexthopInfo>> {
    'attempt: for _ in 0..10 {
        let mut req =
            NetlinkMessage::from(NexthopNetlinkMessage::GetNexthop(NexthopMessage::default()));
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut answers = handle
            .request(req, SocketAddr::new(0, 0))
            .context("netlink: cannot send the nexthop dump request")?;
        let mut out = Vec::new();
        while let Some(msg) = answers.next().await {
            if msg.header.flags & NLM_F_DUMP_INTR != 0 {
                continue 'attempt;
            }
            match msg.payload {
                NetlinkPayload::InnerMessage(NexthopNetlinkMessage::NewNexthop(ref m)) => {
                    out.push(NexthopInfo::try_from(m)?)
                }
                NetlinkPayload::Error(e) => {
                    return Err(e.to_io()).context("netlink: nexthop dump failed")
                }
                NetlinkPayload::Overrun(_) => bail!("netlink: a nexthop dump part did not parse"),
                _ => {}
            }
        }
        return Ok(out);
    }
    bail!("netlink: the nexthop dump was interrupted 10 times")
}

/// NETLINK_ROUTE sockets for nexthop objects only: one joined to RTNLGRP_NEXTHOP before any
/// dump, one for the dumps that joins nothing (a notification sharing a dump's sequence number
/// would end it early, as on the main socket: see `super`'s socket details).
pub struct NexthopSocket {
    /// The dump socket's.
    pub handle: ConnectionHandle<NexthopNetlinkMessage>,
    /// The event socket's, never asked anything; kept so its connection lives.
    _events: ConnectionHandle<NexthopNetlinkMessage>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for NexthopSocket {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl NexthopSocket {
    /// Opens and subscribes the socket on the current tokio runtime; every change from now on is
    /// on the returned receiver.
    pub async fn connect() -> Result<(NexthopSocket, mpsc::UnboundedReceiver<NexthopEvent>)> {
        // Same receive buffer as the main socket: a lost notification costs a resync.
        let events = super::route_socket::<NexthopNetlinkMessage>(
            super::RECEIVE_BUFFER,
            1 << (RTNLGRP_NEXTHOP - 1),
        )
        .context("netlink: cannot join RTNLGRP_NEXTHOP")?;
        let dumps = super::route_socket::<NexthopNetlinkMessage>(super::RECEIVE_BUFFER, 0)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(events.conn),
            tokio::spawn(dumps.conn),
            tokio::spawn(forward(events.messages, tx.clone())),
            // It joins no group, so nothing comes unasked; this reports the connection's end.
            tokio::spawn(forward(dumps.messages, tx)),
        ];
        Ok((
            NexthopSocket {
                handle: dumps.handle,
                _events: events.handle,
                tasks,
            },
            rx,
        ))
    }

    /// [`dump_nexthops`] on this socket.
    pub async fn dump(&mut self) -> Result<Vec<NexthopInfo>> {
        dump_nexthops(&mut self.handle).await
    }
}

async fn forward(
    mut messages: impl Stream<Item = (NetlinkMessage<NexthopNetlinkMessage>, SocketAddr)> + Unpin,
    tx: mpsc::UnboundedSender<NexthopEvent>,
) {
    while let Some((msg, _)) = messages.next().await {
        if let Some(ev) = nexthop_event(&msg) {
            if tx.send(ev).is_err() {
                return;
            }
        }
    }
    // The connection ended: whatever comes next must start from a dump.
    let _ = tx.send(NexthopEvent::Overrun);
}

#[cfg(test)]
mod tests {
    //! Messages the kernel (6.18) sent in `vrf-user/tests/nexthop.rs`, as captured there.
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Parses a captured RTM_NEWNEXTHOP, checks it re-emits byte for byte, returns the model.
    fn info(raw: &str) -> NexthopInfo {
        let raw = hex(raw);
        let msg = NetlinkMessage::<NexthopNetlinkMessage>::deserialize(&raw).unwrap();
        let mut again = vec![0; msg.buffer_len()];
        msg.serialize(&mut again);
        assert_eq!(again, raw);
        let NetlinkPayload::InnerMessage(NexthopNetlinkMessage::NewNexthop(m)) = &msg.payload
        else {
            panic!("{msg:?}")
        };
        NexthopInfo::try_from(m).unwrap()
    }

    fn single(oif: u32, gateway: Option<&str>, onlink: bool) -> NexthopKind {
        NexthopKind::Single {
            oif,
            gateway: gateway.map(|g| g.parse().unwrap()),
            onlink,
            dead: false,
        }
    }

    // ip nexthop add id 11 via 10.1.0.2 dev va
    const VIA: &str = "3000000068000200010000000615000002fd000000000000080001000b0000000800050003000000080006000a010002";
    // ip nexthop add id 12 via 10.9.0.3 dev va onlink
    const ONLINK: &str = "3000000068000200010000000615000002fd000004000000080001000c0000000800050003000000080006000a090003";
    // ip nexthop add id 13 dev vb
    const DEV: &str =
        "2800000068000200010000000615000002fe000000000000080001000d0000000800050002000000";
    // ip nexthop add id 14 blackhole
    const BLACKHOLE: &str =
        "240000006800020001000000061500000200000000000000080001000e00000004000400";
    // ip nexthop add id 15 via 2001:db8:1::2 dev va
    const VIA6: &str = "3c0000006800020001000000061500000afd000000000000080001000f00000008000500030000001400060020010db8000100000000000000000002";
    // ip nexthop add id 21 group 11,1/12,3
    const WEIGHTED: &str = "44000000680002000100000006150000000000000000000008000100150000000600030000000000140002000b000000000000000c0000000200000008000e0000000080";
    // ip nexthop add id 22 group 11/12 type resilient buckets 32
    const RESILIENT: &str = "6c000000680002000100000006150000000000000000000008000100160000000600030001000000140002000b000000000000000c0000000000000028000c80060001002000000008000200e02e000008000300000000000c000400000000000000000008000e0000000080";
    // ip nexthop add id 23 group 11,255/12,17 protocol 186
    const PROTO_BGP: &str = "440000006800020001000000061500000000ba000000000008000100170000000600030000000000140002000b000000fe0000000c0000001000000008000e0000000080";

    #[test]
    fn singletons() {
        assert_eq!(info(VIA).kind, single(3, Some("10.1.0.2"), false));
        assert_eq!(info(ONLINK).kind, single(3, Some("10.9.0.3"), true));
        assert_eq!(info(DEV).kind, single(2, None, false));
        assert_eq!(info(VIA6).kind, single(3, Some("2001:db8:1::2"), false));
        let bh = info(BLACKHOLE);
        assert_eq!((bh.id, bh.kind), (14, NexthopKind::Blackhole));
    }

    #[test]
    fn groups_with_weights_and_resilience() {
        assert_eq!(
            info(WEIGHTED).kind,
            NexthopKind::Group {
                members: vec![(11, 1), (12, 3)],
                resilient: None
            }
        );
        assert_eq!(
            info(RESILIENT).kind,
            NexthopKind::Group {
                members: vec![(11, 1), (12, 1)],
                resilient: Some(Resilient {
                    buckets: 32,
                    idle_timer: 12000,
                    unbalanced_timer: 0
                })
            }
        );
        let bgp = info(PROTO_BGP);
        assert_eq!(bgp.protocol, 186);
        assert_eq!(
            bgp.kind,
            NexthopKind::Group {
                members: vec![(11, 255), (12, 17)],
                resilient: None
            }
        );
    }

    #[test]
    fn weight_high_carries_the_upper_bits() {
        let e = NexthopGroupEntry::parse(&[11, 0, 0, 0, 0x2b, 0x01, 0, 0]).unwrap();
        assert_eq!(
            e,
            NexthopGroupEntry {
                id: 11,
                weight: 300
            }
        );
        let mut b = [0xff; 8];
        NexthopGroupEntry {
            id: 7,
            weight: 65535,
        }
        .emit(&mut b);
        assert_eq!(b, [7, 0, 0, 0, 0xfe, 0xff, 0, 0]);
    }

    #[test]
    fn unknown_attributes_are_kept() {
        let mut raw = hex(VIA);
        // Append an attribute of a kind nobody knows (type 99, 4 bytes).
        raw.extend_from_slice(&[8, 0, 99, 0, 1, 2, 3, 4]);
        let len = raw.len() as u32;
        raw[0..4].copy_from_slice(&len.to_ne_bytes());
        let msg = NetlinkMessage::<NexthopNetlinkMessage>::deserialize(&raw).unwrap();
        let NetlinkPayload::InnerMessage(NexthopNetlinkMessage::NewNexthop(m)) = msg.payload else {
            panic!()
        };
        assert_eq!(
            m.attributes.last(),
            Some(&NexthopAttribute::Other(DefaultNla::new(
                99,
                vec![1, 2, 3, 4]
            )))
        );
    }

    #[test]
    fn a_delete_event_names_the_id() {
        let mut raw = hex(VIA);
        raw[4..6].copy_from_slice(&RTM_DELNEXTHOP.to_ne_bytes());
        let msg = NetlinkMessage::<NexthopNetlinkMessage>::deserialize(&raw).unwrap();
        assert_eq!(nexthop_event(&msg), Some(NexthopEvent::Deleted(11)));
    }
}
