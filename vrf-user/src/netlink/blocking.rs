//! One blocking netlink request at a time, for the callers outside vrfd's async socket: send a
//! message and read its answer (a reply, an ACK or the errno) or its whole dump, on one socket of
//! any netlink protocol in the calling thread's network namespace.
use std::io;

use anyhow::{anyhow, bail, Context as _, Result};
use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Dump answers come in skbs of at most 32 KiB (`netlink_dump` caps them there): room for any
/// with large pages too.
const BUFFER: usize = 256 * 1024;

/// The kernel's answer to one request that is not a dump.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<T> {
    /// An ACK (asked with NLM_F_ACK) or an empty answer.
    Ack,
    /// The first message answering the request.
    Message(T),
    /// The kernel refused the request with this errno.
    Refused(i32),
}

impl<T> Reply<T> {
    /// The message, if any; a refusal as the `io::Error` of its errno.
    pub fn accepted(self) -> io::Result<Option<T>> {
        match self {
            Reply::Ack => Ok(None),
            Reply::Message(m) => Ok(Some(m)),
            Reply::Refused(errno) => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// A blocking netlink socket bound to the kernel; requests are numbered on it.
pub struct Requester {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Requester {
    /// A socket of `protocol` (`netlink_sys::protocols::*`) in the calling thread's namespace.
    pub fn new(protocol: isize) -> Result<Requester> {
        let mut socket = Socket::new(protocol)
            .with_context(|| format!("socket(AF_NETLINK, protocol {protocol})"))?;
        socket.bind_auto().context("bind(AF_NETLINK)")?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .context("connect(AF_NETLINK) to the kernel")?;
        Ok(Requester {
            socket,
            seq: 0,
            buf: Vec::with_capacity(BUFFER),
        })
    }

    /// A NETLINK_ROUTE socket.
    pub fn route() -> Result<Requester> {
        Requester::new(NETLINK_ROUTE)
    }

    /// Send `payload` with NLM_F_REQUEST and `flags` under a new sequence number; read the
    /// answer with [`Requester::answer`]. (Split from it for callers that time the kernel.)
    pub fn send<T>(&mut self, payload: T, flags: u16) -> Result<()>
    where
        T: NetlinkSerializable + std::fmt::Debug,
    {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        self.seq = self.seq.wrapping_add(1);
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        self.socket.send(&out, 0).context("netlink send")?;
        Ok(())
    }

    /// The answer to the request [`Requester::send`] sent last.
    pub fn answer<T>(&mut self) -> Result<Reply<T>>
    where
        T: NetlinkDeserializable + std::fmt::Debug,
    {
        self.read(|payload| {
            Ok(match payload {
                NetlinkPayload::Error(e) if e.code.is_some() => Some(Reply::Refused(-e.raw_code())),
                NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => Some(Reply::Ack),
                NetlinkPayload::InnerMessage(m) => Some(Reply::Message(m)),
                _ => None,
            })
        })
    }

    /// One request (NLM_F_REQUEST and `flags`) and its answer.
    pub fn request<T>(&mut self, payload: T, flags: u16) -> Result<Reply<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable + std::fmt::Debug,
    {
        self.send(payload, flags)?;
        self.answer()
    }

    /// A dump (NLM_F_DUMP): every message until NLMSG_DONE; a refusal is an error carrying its
    /// errno (see [`crate::errno`]).
    pub fn dump<T>(&mut self, payload: T) -> Result<Vec<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable + std::fmt::Debug,
    {
        self.send(payload, NLM_F_DUMP)?;
        let mut out = Vec::new();
        self.read(|payload| match payload {
            NetlinkPayload::Error(e) if e.code.is_some() => {
                Err(anyhow::Error::from(e.to_io()).context("netlink dump refused"))
            }
            NetlinkPayload::Done(_) | NetlinkPayload::Error(_) => Ok(Some(())),
            NetlinkPayload::InnerMessage(m) => {
                out.push(m);
                Ok(None)
            }
            _ => Ok(None),
        })?;
        Ok(out)
    }

    /// Reads datagrams and hands every message of the current request to `take` until it
    /// returns a value; messages of other sequence numbers are skipped.
    fn read<T, R>(
        &mut self,
        mut take: impl FnMut(NetlinkPayload<T>) -> Result<Option<R>>,
    ) -> Result<R>
    where
        T: NetlinkDeserializable + std::fmt::Debug,
    {
        loop {
            self.buf.clear();
            let n = match self.socket.recv(&mut self.buf, libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("netlink recv"),
            };
            if n > self.buf.len() {
                bail!("a netlink answer of {n} bytes overflows the {BUFFER}-byte buffer");
            }
            let mut at = 0;
            while at < n {
                let msg = NetlinkMessage::<T>::deserialize(&self.buf[at..n])
                    .map_err(|e| anyhow!("undecodable netlink answer: {e}"))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                // NLMSG_ALIGN: messages in one datagram start on 4-byte boundaries.
                at += (len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                if let Some(r) = take(msg.payload)? {
                    return Ok(r);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::{link::LinkMessage, RouteNetlinkMessage};

    #[test]
    fn a_link_dump_lists_loopback_and_a_get_of_a_missing_link_is_refused() {
        let mut nl = Requester::route().unwrap();
        let links = nl
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .unwrap();
        assert!(links.iter().any(|l| matches!(l,
            RouteNetlinkMessage::NewLink(l) if l.header.index == 1)));
        let mut missing = LinkMessage::default();
        // (An index above i32::MAX is refused as EINVAL before the lookup.)
        missing.header.index = 0x7fff_fff0;
        assert_eq!(
            nl.request(RouteNetlinkMessage::GetLink(missing), 0)
                .unwrap(),
            Reply::Refused(libc::ENODEV)
        );
    }
}
