//! The kernel's forwarding decision for one packet, asked over rtnetlink: RTM_GETROUTE with the
//! ingress interface and the source, as `ip route get fibmatch DST from SRC iif IF` asks it. The
//! kernel runs its real input route lookup (`ip_route_input` / `ip6_route_input`: policy rules,
//! the local table, martian checks, source validation) and answers with the FIB entry that
//! matched, every nexthop of a multipath route included, or with the error its input path would
//! hand the packet to (`EINVAL` blackhole or martian, `EHOSTUNREACH` unreachable, `EACCES`
//! prohibit, `ENETUNREACH` nothing matched).
//!
//! [`RouteOracle::table_routes`] dumps what a table holds (the destinations `vrfctl verify` asks
//! about).
//!
//! One blocking NETLINK_ROUTE socket, created in the calling thread's network namespace (create
//! it on a thread inside the namespace under test; it keeps that namespace).

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteType},
    AddressFamily, RouteNetlinkMessage,
};

use crate::netlink::blocking::{Reply, Requester};

/// One path of the kernel's matched route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelPath {
    pub oif: u32,
    pub gateway: Option<IpAddr>,
    /// rtnh_hops + 1.
    pub weight: u32,
}

/// What the kernel's input path does with the packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelAnswer {
    /// A FIB entry matched and the input lookup succeeded: `kind` is its `rtm_type` (unicast,
    /// local, broadcast…), `table` the table it came from, `prefix` its destination.
    Route {
        kind: RouteType,
        table: u32,
        prefix: IpNet,
        paths: Vec<KernelPath>,
    },
    /// The input lookup failed with this errno.
    Error(i32),
}

impl KernelAnswer {
    pub fn is_unicast(&self) -> bool {
        matches!(
            self,
            KernelAnswer::Route {
                kind: RouteType::Unicast,
                ..
            }
        )
    }

    /// A short label for histograms: `unicast`, `local`, `EINVAL`, …
    pub fn label(&self) -> String {
        match self {
            KernelAnswer::Route { kind, .. } => format!("{kind:?}").to_lowercase(),
            KernelAnswer::Error(e) => match errno_name(*e) {
                "errno?" => format!("errno{e}"),
                name => name.to_string(),
            },
        }
    }
}

pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EINVAL => "EINVAL",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EACCES => "EACCES",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EAGAIN => "EAGAIN",
        libc::ENODEV => "ENODEV",
        libc::EXDEV => "EXDEV",
        _ => "errno?",
    }
}

/// A NETLINK_ROUTE socket for route queries.
pub struct RouteOracle {
    netlink: Requester,
}

impl RouteOracle {
    /// Opens the socket in the calling thread's network namespace.
    pub fn new() -> Result<RouteOracle> {
        Ok(RouteOracle {
            netlink: Requester::route()?,
        })
    }

    /// `ip route get fibmatch DST from SRC iif IIF`.
    pub fn route_get(&mut self, iif: u32, src: IpAddr, dst: IpAddr) -> Result<KernelAnswer> {
        self.get(iif, src, dst, true)
    }

    /// `ip route get DST from SRC iif IIF`: the route the kernel really hands the packet to
    /// (its one path's egress and gateway), not the FIB entry. For IPv6 through a nexthop
    /// object this is the only trustworthy answer: the kernel caches one dst per nexthop
    /// (per CPU) and reports the route that first created it, for every route sharing that
    /// nexthop, also under fibmatch (ENVIRONMENT.md).
    pub fn route_get_egress(&mut self, iif: u32, src: IpAddr, dst: IpAddr) -> Result<KernelAnswer> {
        self.get(iif, src, dst, false)
    }

    fn get(&mut self, iif: u32, src: IpAddr, dst: IpAddr, fibmatch: bool) -> Result<KernelAnswer> {
        let (family, len) = match dst {
            IpAddr::V4(_) => (AddressFamily::Inet, 32),
            IpAddr::V6(_) => (AddressFamily::Inet6, 128),
        };
        if src.is_ipv4() != dst.is_ipv4() {
            bail!("source {src} and destination {dst} are of different families");
        }
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        msg.header.destination_prefix_length = len;
        msg.header.source_prefix_length = len;
        // LookupTable: report the table the match came from (without it IPv4 says "main").
        msg.header.flags = if fibmatch {
            RouteFlags::FibMatch | RouteFlags::LookupTable
        } else {
            RouteFlags::LookupTable
        };
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        msg.attributes
            .push(RouteAttribute::Source(RouteAddress::from(src)));
        msg.attributes.push(RouteAttribute::Iif(iif));
        let reply = self
            .netlink
            .request(RouteNetlinkMessage::GetRoute(msg), 0)
            .context("RTM_GETROUTE")?;
        match reply {
            Reply::Refused(errno) => Ok(KernelAnswer::Error(errno)),
            Reply::Message(RouteNetlinkMessage::NewRoute(m)) => Ok(parse_route(&m)),
            other => bail!("unexpected RTM_GETROUTE answer: {other:?}"),
        }
    }
}

/// One route of a table dump: its table, destination and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRoute {
    pub table: u32,
    pub prefix: IpNet,
    pub kind: RouteType,
}

impl RouteOracle {
    /// Every route of `table` in both families (`ip route show table T` and `ip -6 …`).
    pub fn table_routes(&mut self, table: u32) -> Result<Vec<TableRoute>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            let routes = self
                .netlink
                .dump(RouteNetlinkMessage::GetRoute(msg))
                .context("route dump")?;
            for m in routes {
                let RouteNetlinkMessage::NewRoute(m) = m else {
                    continue;
                };
                if let KernelAnswer::Route {
                    kind,
                    table: t,
                    prefix,
                    ..
                } = parse_route(&m)
                {
                    if t == table {
                        out.push(TableRoute {
                            table: t,
                            prefix,
                            kind,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

impl RouteOracle {
    /// The FIB entry `table` holds for `dst`, from a dump of the table (the kernel's routes,
    /// not a lookup, so no route cache is involved): the longest prefix containing `dst`, of
    /// those the lowest metric. None when no route of the table contains it.
    pub fn table_match(&mut self, table: u32, dst: IpAddr) -> Result<Option<KernelAnswer>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if dst.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let routes = self
            .netlink
            .dump(RouteNetlinkMessage::GetRoute(msg))
            .context("route dump")?;
        let mut best: Option<(u8, u32, KernelAnswer)> = None;
        for m in routes {
            let RouteNetlinkMessage::NewRoute(m) = m else {
                continue;
            };
            let metric = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Priority(p) => Some(*p),
                    _ => None,
                })
                .unwrap_or(0);
            let answer = parse_route(&m);
            let KernelAnswer::Route {
                table: t, prefix, ..
            } = &answer
            else {
                continue;
            };
            if *t != table || !prefix.contains(&dst) {
                continue;
            }
            let key = (prefix.prefix_len(), metric);
            let better = match &best {
                None => true,
                Some((len, met, _)) => key.0 > *len || (key.0 == *len && key.1 < *met),
            };
            if better {
                best = Some((key.0, key.1, answer));
            }
        }
        Ok(best.map(|(_, _, a)| a))
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn gateway(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => route_addr(g),
        RouteAttribute::Via(netlink_packet_route::route::RouteVia::Inet(v)) => Some(IpAddr::V4(*v)),
        RouteAttribute::Via(netlink_packet_route::route::RouteVia::Inet6(v)) => {
            Some(IpAddr::V6(*v))
        }
        _ => None,
    })
}

fn parse_route(m: &RouteMessage) -> KernelAnswer {
    let h = &m.header;
    let mut table = u32::from(h.table);
    let mut dst = None;
    let mut oif = None;
    let mut multipath = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = route_addr(d),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            _ => {}
        }
    }
    let unspecified: IpAddr = match h.address_family {
        AddressFamily::Inet6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
        _ => std::net::Ipv4Addr::UNSPECIFIED.into(),
    };
    let prefix = IpNet::new(dst.unwrap_or(unspecified), h.destination_prefix_length)
        .map(|p| p.trunc())
        .unwrap_or_else(|_| IpNet::from(unspecified));
    let paths = match multipath {
        Some(hops) => hops
            .iter()
            .map(|nh| KernelPath {
                oif: nh.interface_index,
                gateway: gateway(&nh.attributes),
                weight: u32::from(nh.hops) + 1,
            })
            .collect(),
        None => match (oif, gateway(&m.attributes)) {
            (None, None) => Vec::new(),
            (oif, gw) => vec![KernelPath {
                oif: oif.unwrap_or(0),
                gateway: gw,
                weight: 1,
            }],
        },
    };
    KernelAnswer::Route {
        kind: h.kind,
        table,
        prefix,
        paths,
    }
}
