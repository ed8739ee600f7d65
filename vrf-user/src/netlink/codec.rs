//! The netlink-proto codec, minus its one silent failure.
//!
//! netlink-proto's `NetlinkCodec` logs and *drops* a message that netlink-packet-route cannot
//! parse. For a mirror of the kernel's state a dropped notification is a silent divergence, so
//! this codec frames and parses exactly like it (the crate's `NetlinkBuffer` and
//! `NetlinkMessage::deserialize`, no byte parsing of our own) but hands an undecodable message on
//! as `NetlinkPayload::Overrun(raw bytes)` under the original header's type, flags and sequence
//! number. A notification thus reaches the event stream, which turns it into
//! `KernelEvent::Overrun`; a dump part reaches the dump, which fails with a clear error.
use std::fmt::Debug;
use std::io;

use bytes::BytesMut;
use netlink_packet_core::{
    NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, NLMSG_OVERRUN,
};
use rtnetlink::proto::{NetlinkCodec, NetlinkMessageCodec};

pub struct TolerantCodec;

/// An `Overrun` payload under a header that is not NLMSG_OVERRUN: a message that could not be
/// parsed (the payload holds its raw bytes, the header its type, flags and sequence number).
pub fn is_undecodable<T>(msg: &NetlinkMessage<T>) -> bool {
    matches!(msg.payload, NetlinkPayload::Overrun(_)) && msg.header.message_type != NLMSG_OVERRUN
}

impl NetlinkMessageCodec for TolerantCodec {
    fn decode<T>(src: &mut BytesMut) -> io::Result<Option<NetlinkMessage<T>>>
    where
        T: NetlinkDeserializable + Debug,
    {
        if src.is_empty() {
            return Ok(None);
        }
        let (len, mut header) = match NetlinkBuffer::new_checked(src.as_ref()) {
            Ok(buf) => {
                let mut header = NetlinkHeader::default();
                header.length = buf.length();
                header.message_type = buf.message_type();
                header.flags = buf.flags();
                header.sequence_number = buf.sequence_number();
                header.port_number = buf.port_number();
                (buf.length() as usize, header)
            }
            Err(e) => {
                // Truncated datagram or nonsense length: the rest of the datagram cannot be
                // framed either. Report it once and drop the remainder.
                tracing::error!("netlink: cannot frame datagram: {e}");
                let raw = src.split().to_vec();
                let mut header = NetlinkHeader::default();
                header.message_type = u16::MAX;
                return Ok(Some(NetlinkMessage::new(
                    header,
                    NetlinkPayload::Overrun(raw),
                )));
            }
        };
        let bytes = src.split_to(len);
        match NetlinkMessage::<T>::deserialize(&bytes) {
            Ok(msg) => Ok(Some(msg)),
            Err(e) => {
                tracing::error!(
                    "netlink: cannot parse message type {} (seq {}): {e}",
                    header.message_type,
                    header.sequence_number
                );
                if header.message_type == NLMSG_OVERRUN {
                    // Keep the distinction with a real overrun visible.
                    header.message_type = u16::MAX;
                }
                Ok(Some(NetlinkMessage::new(
                    header,
                    NetlinkPayload::Overrun(bytes.to_vec()),
                )))
            }
        }
    }

    fn encode<T>(msg: NetlinkMessage<T>, buf: &mut BytesMut) -> io::Result<()>
    where
        T: NetlinkSerializable + Debug,
    {
        NetlinkCodec::encode(msg, buf)
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::{
        route::{RouteAddress, RouteAttribute, RouteMessage},
        AddressFamily, RouteNetlinkMessage,
    };

    use super::*;

    const RTM_NEWROUTE: u16 = 24;

    fn push(buf: &mut BytesMut, gateway: RouteAddress, seq: u32) {
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.attributes.push(RouteAttribute::Gateway(gateway));
        let mut msg = NetlinkMessage::from(RouteNetlinkMessage::NewRoute(route));
        msg.header.sequence_number = seq;
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        buf.extend_from_slice(&bytes);
    }

    #[test]
    fn an_unparseable_message_is_reported_not_dropped() {
        let mut buf = BytesMut::new();
        push(&mut buf, RouteAddress::Inet("10.0.0.1".parse().unwrap()), 1);
        // A 3-byte IPv4 gateway: netlink-packet-route refuses the message.
        push(&mut buf, RouteAddress::Other(vec![10, 0, 0]), 7);
        push(&mut buf, RouteAddress::Inet("10.0.0.2".parse().unwrap()), 2);

        let first = TolerantCodec::decode::<RouteNetlinkMessage>(&mut buf)
            .unwrap()
            .unwrap();
        assert!(matches!(first.payload, NetlinkPayload::InnerMessage(_)));
        assert!(!is_undecodable(&first));

        let bad = TolerantCodec::decode::<RouteNetlinkMessage>(&mut buf)
            .unwrap()
            .unwrap();
        assert!(is_undecodable(&bad));
        assert_eq!(bad.header.message_type, RTM_NEWROUTE);
        assert_eq!(bad.header.sequence_number, 7);

        let third = TolerantCodec::decode::<RouteNetlinkMessage>(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(third.header.sequence_number, 2);
        assert!(TolerantCodec::decode::<RouteNetlinkMessage>(&mut buf)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_real_overrun_is_not_undecodable() {
        let mut header = NetlinkHeader::default();
        header.message_type = NLMSG_OVERRUN;
        let msg =
            NetlinkMessage::<RouteNetlinkMessage>::new(header, NetlinkPayload::Overrun(vec![]));
        assert!(!is_undecodable(&msg));
    }
}
