//! Frames for `vrfctl lookup` and the tests, built with etherparse (checksums included).
use std::net::IpAddr;

use anyhow::{bail, Result};
use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep};

/// What to put in a synthesized frame.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL / hop limit.
    pub ttl: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl FrameSpec {
    pub fn new(src: IpAddr, dst: IpAddr) -> Self {
        FrameSpec {
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            src,
            dst,
            ttl: 64,
            src_port: 40000,
            dst_port: 5201,
            payload_len: 18,
        }
    }

    /// The Ethernet and IP headers, for a transport header to follow.
    fn ip(&self) -> Result<PacketBuilderStep<IpHeaders>> {
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        Ok(match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), self.ttl),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), self.ttl),
            _ => bail!(
                "source {} and destination {} are of different families",
                self.src,
                self.dst
            ),
        })
    }

    /// An Ethernet + IP + UDP frame.
    pub fn udp(&self) -> Result<Vec<u8>> {
        let ip = self.ip()?;
        let builder = ip.udp(self.src_port, self.dst_port);
        let payload = vec![0xa5u8; self.payload_len];
        let mut out = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut out, &payload)?;
        Ok(out)
    }

    /// An Ethernet + IP + TCP (SYN) frame.
    pub fn tcp(&self) -> Result<Vec<u8>> {
        let ip = self.ip()?;
        let builder = ip.tcp(self.src_port, self.dst_port, 1, 65535).syn();
        let payload = vec![0x5au8; self.payload_len];
        let mut out = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut out, &payload)?;
        Ok(out)
    }
}
