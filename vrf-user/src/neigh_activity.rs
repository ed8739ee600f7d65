//! Neighbour activity, reported to the kernel as switchdev drivers do (mlxsw's periodic
//! neighbour activity update): the fast path marks each neighbour entry it sends a frame to
//! (`Neigh::used`), and [`NeighActivity::tick`] collects the marked entries, clears the marks and
//! sends the kernel an RTM_NEWNEIGH with NTF_USE for each: the kernel runs `neigh_event_send`
//! as if it had sent the packet itself, so a STALE entry goes to DELAY and PROBE and a host that
//! changed its MAC silently is reprobed. Without it the kernel never sees the fast path's
//! traffic and keeps a stale MAC for as long as the entry lives.
//!
//! One blocking NETLINK_ROUTE socket in the calling thread's network namespace.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use anyhow::{anyhow, Context as _, Result};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::{
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage},
    AddressFamily, RouteNetlinkMessage,
};
use vrf_common::NeighKey;

use crate::maps::Maps;

/// How often vrfd should call [`NeighActivity::tick`]: well inside the kernel's shortest
/// default timer (delay_first_probe_time 5 s, base_reachable_time 30 s).
pub const INTERVAL: Duration = Duration::from_secs(1);

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Entries found marked (and cleared).
    pub used: usize,
    /// NTF_USE updates the kernel accepted.
    pub reported: usize,
    /// Refused ones (the entry vanished from the kernel meanwhile: ENOENT), by errno.
    pub refused: Vec<i32>,
}

pub struct NeighActivity {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl NeighActivity {
    /// Opens the socket in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        // SAFETY: plain socket(2); the fd is owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(NETLINK_ROUTE)");
        }
        // SAFETY: raw is a fresh, valid fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(NeighActivity {
            fd,
            seq: 0,
            buf: vec![0; 16 * 1024],
        })
    }

    /// Report every neighbour the data plane used since the last tick, and clear the marks.
    pub fn tick(&mut self, maps: &mut Maps) -> Result<Tick> {
        let mut tick = Tick::default();
        for (key, seen) in maps.used_neighbours()? {
            tick.used += 1;
            // Clear first: a frame sent after this is reported next time, not lost.
            maps.clear_neighbour_used(&key, &seen)?;
            match self.send_use(&key)? {
                0 => tick.reported += 1,
                errno => tick.refused.push(errno),
            }
        }
        Ok(tick)
    }

    /// RTM_NEWNEIGH with NTF_USE for one neighbour (`neigh_add` → `neigh_event_send`): 0, or the
    /// errno the kernel answered.
    fn send_use(&mut self, key: &NeighKey) -> Result<i32> {
        let mut msg = NeighbourMessage::default();
        msg.header.ifindex = key.ifindex;
        msg.header.flags = NeighbourFlags::Use;
        let dst = match key.family {
            4 => {
                msg.header.family = AddressFamily::Inet;
                let a = key.addr;
                NeighbourAddress::Inet(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            }
            6 => {
                msg.header.family = AddressFamily::Inet6;
                NeighbourAddress::Inet6(Ipv6Addr::from(key.addr))
            }
            other => return Err(anyhow!("neighbour entry of unknown family {other}")),
        };
        msg.attributes.push(NeighbourAttribute::Destination(dst));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        self.seq = self.seq.wrapping_add(1);
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut out = vec![0u8; req.buffer_len()];
        req.serialize(&mut out);
        // SAFETY: valid fd and buffer; the kernel is the default destination of an unbound
        // netlink socket's send.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), out.as_ptr().cast(), out.len(), 0) };
        if sent < 0 {
            return Err(std::io::Error::last_os_error()).context("send RTM_NEWNEIGH");
        }
        loop {
            // SAFETY: valid fd and buffer.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("recv RTM_NEWNEIGH ack");
            }
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[..n as usize])
                .map_err(|e| anyhow!("undecodable RTM_NEWNEIGH ack: {e}"))?;
            if msg.header.sequence_number != self.seq {
                continue;
            }
            return match msg.payload {
                NetlinkPayload::Error(e) => Ok(e.code.map_or(0, |_| -e.raw_code())),
                _ => Ok(0),
            };
        }
    }
}
