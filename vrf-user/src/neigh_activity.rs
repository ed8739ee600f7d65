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
    time::Duration,
};

use anyhow::{anyhow, Context as _, Result};
use netlink_packet_core::NLM_F_ACK;
use netlink_packet_route::{
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage},
    AddressFamily, RouteNetlinkMessage,
};
use vrf_common::NeighKey;

use crate::maps::Maps;
use crate::netlink::blocking::{Reply, Requester};

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
    netlink: Requester,
}

impl NeighActivity {
    /// Opens the socket in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        Ok(NeighActivity {
            netlink: Requester::route()?,
        })
    }

    /// Report every neighbour the data plane used since the last tick, and clear the marks.
    pub fn tick(&mut self, maps: &mut Maps) -> Result<Tick> {
        self.tick_where(maps, |_| true)
    }

    /// [`tick`](Self::tick), reporting only the entries `reportable` accepts (the marks of all
    /// are cleared). vrfd reports only dynamic entries: NTF_USE on a PERMANENT one makes the
    /// kernel drop NUD_PERMANENT (`__neigh_update` with NEIGH_UPDATE_F_USE) and resolve it
    /// afresh, so a static entry would silently become a learnt one.
    pub fn tick_where(
        &mut self,
        maps: &mut Maps,
        reportable: impl Fn(&NeighKey) -> bool,
    ) -> Result<Tick> {
        let mut tick = Tick::default();
        for (key, seen) in maps.used_neighbours()? {
            tick.used += 1;
            // Clear first: a frame sent after this is reported next time, not lost.
            maps.clear_neighbour_used(&key, &seen)?;
            if !reportable(&key) {
                continue;
            }
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
        let reply = self
            .netlink
            .request(RouteNetlinkMessage::NewNeighbour(msg), NLM_F_ACK)
            .context("RTM_NEWNEIGH")?;
        Ok(match reply {
            Reply::Refused(errno) => errno,
            Reply::Ack | Reply::Message(_) => 0,
        })
    }
}
