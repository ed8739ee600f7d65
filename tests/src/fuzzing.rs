//! Structure-aware frame mutation and an independent judge of what the data plane may do with a
//! frame, for `tests/tests/fuzz.rs`.
//!
//! [`RefModel`] reads the configuration out of a loaded data plane's maps (links, VRFs, FIB,
//! nexthop groups, neighbours, redirect targets) and decides from the kernel's rules, not from
//! `forward.rs`:
//! - which frames the kernel drops before routing (`invariants::kernel_rx_drop`) or by a
//!   blackhole route: the only drops allowed;
//! - which forwards are allowed: plain unicast IPv4 / IPv6 addressed to the member's MAC, a
//!   header the kernel accepts, no IPv4 options, no hop-by-hop header, TTL / hop limit above 1,
//!   no multicast, broadcast, link-local, loopback, unspecified or v4-mapped address, a unicast
//!   route in the member's VRF (through a VRF device: in that VRF), an egress link that is up,
//!   a redirect target and not the ingress, a packet within the MTU, and a neighbour entry —
//!   and then only out of such a path, to that neighbour's MAC, rewritten exactly once.
//!
//! [`Mutator`] turns seed frames into truncated, extended and mutated ones: every header field,
//! IPv4 options, IPv6 extension headers, fragments, VLAN tags, MACs and ethertypes.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use ipnet::IpNet;
use rand::{rngs::StdRng, seq::IndexedRandom, Rng};
use vrf_common::{
    Link, NexthopGroup, Route, RouteKind, Vrf, LINK_FWD4, LINK_FWD6, LINK_MEMBER, LINK_RPF_LOOSE,
    LINK_RPF_STRICT, LINK_UP, LINK_VRF_DEVICE, MAX_VRFS, NH_GATEWAY, VRF_ACTIVE, VRF_DEGRADED,
};
use vrf_user::{
    dataplane::{XdpAction, XDP_DROP, XDP_PASS, XDP_REDIRECT},
    maps::{addr_from16, Maps},
};

use crate::invariants::{
    addr4, addr6, check_forwarded, fix_ipv4_checksum, kernel_rx_drop, ETH_LEN, ETH_P_IP, ETH_P_IPV6,
};

/// A forward the judge allows: out of `oif` with `src_mac`, to `neighbour` at `dst_mac`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedForward {
    pub oif: u32,
    pub neighbour: IpAddr,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// What the data plane may do with one frame (passing is always allowed).
#[derive(Clone, Debug, Default)]
pub struct Allowed {
    /// Empty: no forward allowed; `no_forward` says why.
    pub forwards: Vec<AllowedForward>,
    pub no_forward: &'static str,
    /// Why the kernel drops it too, if it does.
    pub drop: Option<&'static str>,
}

/// The data plane's configuration, read from its maps.
pub struct RefModel {
    links: HashMap<u32, Link>,
    vrfs: HashMap<u32, Vrf>,
    routes: Vec<(u32, IpNet, Route)>,
    groups: HashMap<u32, NexthopGroup>,
    neigh: HashMap<(u32, IpAddr), [u8; 6]>,
    tx_ports: HashSet<u32>,
}

fn martian4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 0 || o[0] == 127 || o[0] >= 224 || (o[0] == 169 && o[1] == 254)
}

fn special6(a: Ipv6Addr) -> bool {
    a.is_multicast()
        || a.is_unspecified()
        || a.is_loopback()
        || a.to_ipv4_mapped().is_some()
        || (a.segments()[0] & 0xffc0) == 0xfe80
}

impl RefModel {
    pub fn from_maps(maps: &Maps) -> Result<RefModel> {
        let links = maps.links()?.into_iter().collect();
        let mut vrfs = HashMap::new();
        for slot in 0..MAX_VRFS {
            vrfs.insert(slot, maps.vrf(slot)?);
        }
        let routes = maps.routes()?;
        let mut groups = HashMap::new();
        for g in maps.nexthops.iter() {
            let (id, g) = g?;
            groups.insert(id, g);
        }
        let mut neigh = HashMap::new();
        for n in maps.neigh.iter() {
            let (k, v) = n?;
            if let Some(a) = addr_from16(k.family, k.addr) {
                neigh.insert((k.ifindex, a), v.mac);
            }
        }
        let mut tx_ports = HashSet::new();
        for k in maps.tx_ports.keys() {
            tx_ports.insert(k?);
        }
        Ok(RefModel {
            links,
            vrfs,
            routes,
            groups,
            neigh,
            tx_ports,
        })
    }

    fn lpm(&self, table: u32, a: IpAddr) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|(t, p, _)| *t == table && p.contains(&a))
            .max_by_key(|(_, p, _)| p.prefix_len())
            .map(|(_, _, r)| r)
    }

    fn active(&self, slot: u32) -> Option<&Vrf> {
        self.vrfs
            .get(&slot)
            .filter(|v| v.flags & VRF_ACTIVE != 0 && v.flags & VRF_DEGRADED == 0)
    }

    /// Every (path, egress link, route) a packet to `dst` in `table` may leave by, following
    /// paths through a VRF device into that VRF's table once; `blackhole` when a lookup on the
    /// way is a blackhole route.
    fn paths(
        &self,
        table: u32,
        dst: IpAddr,
        blackhole: &mut bool,
    ) -> Vec<(vrf_common::Nexthop, Link, Route)> {
        let mut out = Vec::new();
        let Some(route) = self.lpm(table, dst) else {
            return out;
        };
        if route.kind == RouteKind::Blackhole as u16 {
            *blackhole = true;
            return out;
        }
        if route.kind != RouteKind::Unicast as u16 {
            return out;
        }
        let Some(g) = self.groups.get(&route.nexthop) else {
            return out;
        };
        for p in g.paths.iter().take(g.count as usize) {
            let Some(link) = self.links.get(&p.ifindex) else {
                continue;
            };
            if link.flags & LINK_VRF_DEVICE != 0 {
                let Some(other) = self.active(link.vrf) else {
                    continue;
                };
                let Some(r2) = self.lpm(other.table, dst) else {
                    continue;
                };
                if r2.kind == RouteKind::Blackhole as u16 {
                    *blackhole = true;
                    continue;
                }
                if r2.kind != RouteKind::Unicast as u16 {
                    continue;
                }
                let Some(g2) = self.groups.get(&r2.nexthop) else {
                    continue;
                };
                for p2 in g2.paths.iter().take(g2.count as usize) {
                    if let Some(l2) = self.links.get(&p2.ifindex) {
                        if l2.flags & LINK_VRF_DEVICE == 0 {
                            out.push((*p2, *l2, *r2));
                        }
                    }
                }
            } else {
                out.push((*p, *link, *route));
            }
        }
        out
    }

    /// What the data plane may do with `frame` arriving on `ingress`.
    pub fn judge(&self, ingress: u32, frame: &[u8]) -> Allowed {
        let none = |why: &'static str| Allowed {
            no_forward: why,
            ..Default::default()
        };
        let Some(member) = self
            .links
            .get(&ingress)
            .filter(|l| l.flags & LINK_MEMBER != 0)
        else {
            return none("not a member");
        };
        if frame.len() < ETH_LEN {
            return none("runt");
        }
        if frame[..6] != member.mac {
            return none("not addressed to the member's MAC");
        }
        let ethertype = [frame[12], frame[13]];
        let v6 = ethertype == ETH_P_IPV6;
        if ethertype != ETH_P_IP && !v6 {
            return none("not plain IPv4 / IPv6");
        }
        if let Some(why) = kernel_rx_drop(frame) {
            return Allowed {
                forwards: Vec::new(),
                no_forward: "the kernel drops the header",
                drop: Some(why),
            };
        }
        let Some(vrf) = self.active(member.vrf) else {
            return none("VRF inactive or degraded");
        };
        let ip = &frame[ETH_LEN..];
        let (src, dst, ttl, len, fwd_flag): (IpAddr, IpAddr, u8, usize, u16) = if v6 {
            (
                addr6(&ip[8..24]).into(),
                addr6(&ip[24..40]).into(),
                ip[7],
                40 + u16::from_be_bytes([ip[4], ip[5]]) as usize,
                LINK_FWD6,
            )
        } else {
            (
                addr4(&ip[12..16]).into(),
                addr4(&ip[16..20]).into(),
                ip[8],
                u16::from_be_bytes([ip[2], ip[3]]) as usize,
                LINK_FWD4,
            )
        };
        let dst_group = match dst {
            IpAddr::V4(a) => a.octets()[0] >= 224,
            IpAddr::V6(a) => a.is_multicast(),
        };
        let mut blackhole = false;
        let paths = if dst_group {
            Vec::new()
        } else {
            self.paths(vrf.table, dst, &mut blackhole)
        };
        let drop = blackhole.then_some("blackhole route");
        let refuse = |why: &'static str| Allowed {
            forwards: Vec::new(),
            no_forward: why,
            drop,
        };
        if !v6 && ip[0] & 0x0f != 5 {
            return refuse("IPv4 options");
        }
        if v6 && ip[6] == 0 {
            return refuse("hop-by-hop header");
        }
        let bad_addr = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => martian4(s) || martian4(d),
            (IpAddr::V6(s), IpAddr::V6(d)) => special6(s) || special6(d),
            _ => true,
        };
        if bad_addr {
            return refuse("multicast, broadcast, link-local or martian address");
        }
        if member.flags & fwd_flag == 0 {
            return refuse("forwarding off");
        }
        if member.flags & (LINK_RPF_STRICT | LINK_RPF_LOOSE) != 0 {
            return refuse("reverse-path filter (not modelled here)");
        }
        if ttl <= 1 {
            return refuse("TTL ≤ 1");
        }
        let mut forwards = Vec::new();
        for (path, link, route) in paths {
            let mtu = if route.mtu != 0 && u32::from(route.mtu) < link.mtu {
                u32::from(route.mtu)
            } else {
                link.mtu
            } as usize;
            if link.flags & LINK_UP == 0
                || path.ifindex == ingress
                || !self.tx_ports.contains(&path.ifindex)
                || len > mtu
            {
                continue;
            }
            let neighbour = if path.flags & NH_GATEWAY == 0 {
                dst
            } else {
                match addr_from16(
                    if path.flags & vrf_common::NH_GATEWAY6 != 0 || v6 {
                        6
                    } else {
                        4
                    },
                    path.gateway,
                ) {
                    Some(a) => a,
                    None => continue,
                }
            };
            if let Some(mac) = self.neigh.get(&(path.ifindex, neighbour)) {
                forwards.push(AllowedForward {
                    oif: path.ifindex,
                    neighbour,
                    src_mac: link.mac,
                    dst_mac: *mac,
                });
            }
        }
        Allowed {
            no_forward: if forwards.is_empty() {
                "no usable path (route, egress, MTU or neighbour)"
            } else {
                ""
            },
            forwards,
            drop,
        }
    }

    /// Checks one result of the fast path: `action` and the `output` frame for `input` on
    /// `ingress`. `oif` / `neighbour`: what the explain program reported, when known.
    pub fn check(
        &self,
        ingress: u32,
        input: &[u8],
        action: XdpAction,
        output: &[u8],
        explained: Option<(Option<u32>, Option<IpAddr>)>,
    ) -> Result<(), String> {
        let allowed = self.judge(ingress, input);
        match action {
            XDP_PASS => {
                if output != input {
                    return Err("a passed frame was modified".into());
                }
            }
            XDP_DROP => {
                if allowed.drop.is_none() {
                    return Err(
                        "dropped a frame the kernel does not drop (well-formed, no blackhole route)"
                            .into(),
                    );
                }
            }
            XDP_REDIRECT => {
                if allowed.forwards.is_empty() {
                    return Err(format!(
                        "forwarded a frame that must go to the kernel: {}",
                        allowed.no_forward
                    ));
                }
                let fw = allowed.forwards.iter().find(|f| {
                    output.len() >= 12 && output[..6] == f.dst_mac && output[6..12] == f.src_mac
                });
                let Some(fw) = fw else {
                    return Err(format!(
                        "forwarded with MACs that match no allowed path: {:?}",
                        allowed.forwards
                    ));
                };
                if let Some((oif, neighbour)) = explained {
                    if !allowed
                        .forwards
                        .iter()
                        .any(|f| Some(f.oif) == oif && Some(f.neighbour) == neighbour)
                    {
                        return Err(format!(
                            "explain says out of {oif:?} to {neighbour:?}, none of {:?}",
                            allowed.forwards
                        ));
                    }
                }
                check_forwarded(input, output, fw.src_mac, fw.dst_mac)?;
            }
            XdpAction::Other(n) => return Err(format!("unknown XDP action {n}")),
            other => return Err(other.to_string()),
        }
        Ok(())
    }
}

/// A frame the mutator starts from, and where it arrives.
#[derive(Clone, Debug)]
pub struct Seed {
    pub ingress: u32,
    pub frame: Vec<u8>,
}

/// Turns seeds into mutated frames.
pub struct Mutator {
    pub seeds: Vec<Seed>,
    /// (ifindex, MAC) of every link a frame may arrive on, members or not.
    pub links: Vec<(u32, [u8; 6])>,
    /// Addresses worth writing into headers.
    pub addrs4: Vec<Ipv4Addr>,
    pub addrs6: Vec<Ipv6Addr>,
}

/// The largest frame BPF_PROG_TEST_RUN takes for XDP without fragments (a page minus the
/// headroom and the shared info; kept a little below).
pub const MAX_FRAME: usize = 3400;

fn is_v4(f: &[u8]) -> bool {
    f.len() >= ETH_LEN + 20 && f[12..14] == ETH_P_IP
}

fn is_v6(f: &[u8]) -> bool {
    f.len() >= ETH_LEN + 40 && f[12..14] == ETH_P_IPV6
}

/// Any version in the header's first nibble (the header length beside it stays).
fn version(rng: &mut StdRng, first: &mut u8) {
    *first = (rng.random_range(0..16u8) << 4) | (*first & 0x0f);
}

/// A 16-bit length field near its value (or 0, 0xffff, anything): the parsers' bounds.
fn length(rng: &mut StdRng, field: &mut [u8]) {
    let cur = u16::from_be_bytes([field[0], field[1]]);
    let v: u16 = match rng.random_range(0..5) {
        0 => 0,
        1 => 0xffff,
        2 => rng.random(),
        _ => cur.wrapping_add(rng.random_range(0..8)).wrapping_sub(4),
    };
    field.copy_from_slice(&v.to_be_bytes());
}

/// A TTL or hop limit around the ones that decide (0, 1, 2), or any.
fn hop_limit(rng: &mut StdRng) -> u8 {
    *[0u8, 1, 2, 64, 255, rng.random()].choose(rng).unwrap()
}

impl Mutator {
    /// A mutated frame from a random seed, and its ingress.
    pub fn next(&self, rng: &mut StdRng) -> (u32, Vec<u8>) {
        let seed = self.seeds.choose(rng).expect("seeds");
        let mut f = seed.frame.clone();
        let mut ingress = seed.ingress;
        if rng.random_bool(0.1) {
            let (i, mac) = *self.links.choose(rng).unwrap();
            ingress = i;
            if rng.random_bool(0.6) {
                f[..6].copy_from_slice(&mac);
            }
        }
        let n = rng.random_range(1..=3);
        let mut fix_lengths = rng.random_bool(0.4);
        for _ in 0..n {
            match rng.random_range(0..100) {
                0..8 => {
                    let len = rng.random_range(ETH_LEN..=f.len().max(ETH_LEN));
                    f.truncate(len);
                    fix_lengths = false;
                }
                8..14 => {
                    let extra = if rng.random_bool(0.1) {
                        rng.random_range(1..=MAX_FRAME.saturating_sub(f.len()).max(1))
                    } else {
                        rng.random_range(1..=64)
                    };
                    let zero = rng.random_bool(0.5);
                    for _ in 0..extra {
                        f.push(if zero { 0 } else { rng.random() });
                    }
                }
                14..22 => {
                    let i = rng.random_range(0..f.len().min(ETH_LEN + 60));
                    f[i] ^= 1 << rng.random_range(0..8);
                }
                22..28 => {
                    let i = rng.random_range(0..f.len().min(ETH_LEN + 60));
                    f[i] = rng.random();
                }
                28..52 => self.ipv4_field(rng, &mut f),
                52..72 => self.ipv6_field(rng, &mut f),
                72..77 => {
                    // VLAN tag (or QinQ), the original ethertype behind it.
                    let tpid: [u8; 2] = if rng.random_bool(0.7) {
                        [0x81, 0x00]
                    } else {
                        [0x88, 0xa8]
                    };
                    let tci: u16 = rng.random_range(0..4096);
                    let t = tci.to_be_bytes();
                    f.splice(12..12, [tpid[0], tpid[1], t[0], t[1]]);
                }
                77..83 => Self::ipv4_options(rng, &mut f),
                83..88 => Self::ipv6_ext_header(rng, &mut f),
                88..94 => {
                    let choices: [[u8; 6]; 5] = [
                        [0xff; 6],
                        [0x01, 0x00, 0x5e, 0x00, 0x00, 0x05],
                        [0x33, 0x33, 0x00, 0x00, 0x00, 0x01],
                        [0x02, 0x12, 0x34, 0x56, 0x78, 0x9a],
                        self.links.choose(rng).unwrap().1,
                    ];
                    f[..6].copy_from_slice(choices.choose(rng).unwrap());
                }
                _ => {
                    let types: [[u8; 2]; 5] = [
                        [0x08, 0x06],
                        [0x88, 0xcc],
                        ETH_P_IP,
                        ETH_P_IPV6,
                        [rng.random(), rng.random()],
                    ];
                    let t = *types.choose(rng).unwrap();
                    f[12..14].copy_from_slice(&t);
                }
            }
        }
        if fix_lengths {
            let n = f.len() - ETH_LEN;
            if is_v4(&f) {
                let tot = if rng.random_bool(0.8) {
                    n
                } else {
                    n.saturating_sub(rng.random_range(0..40))
                };
                f[ETH_LEN + 2..ETH_LEN + 4]
                    .copy_from_slice(&(tot.min(0xffff) as u16).to_be_bytes());
            } else if is_v6(&f) {
                let plen = (n - 40).min(0xffff) as u16;
                f[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&plen.to_be_bytes());
            }
        }
        if is_v4(&f) && rng.random_bool(0.8) {
            fix_ipv4_checksum(&mut f);
        }
        f.truncate(MAX_FRAME);
        (ingress, f)
    }

    fn ipv4_field(&self, rng: &mut StdRng, f: &mut [u8]) {
        if !is_v4(f) {
            return;
        }
        let ip = &mut f[ETH_LEN..];
        match rng.random_range(0..12) {
            0 => version(rng, &mut ip[0]),
            1 => ip[0] = (ip[0] & 0xf0) | rng.random_range(0..16u8),
            2 => ip[1] = rng.random(),
            3 => length(rng, &mut ip[2..4]),
            4 => {
                let flags: u16 = [0x0000, 0x2000, 0x4000, 0x8000, 0x6000]
                    .choose(rng)
                    .copied()
                    .unwrap();
                let off: u16 = if rng.random_bool(0.5) {
                    0
                } else {
                    rng.random_range(0..0x2000)
                };
                ip[6..8].copy_from_slice(&(flags | off).to_be_bytes());
            }
            5 | 6 => ip[8] = hop_limit(rng),
            7 => {
                ip[9] = *[1u8, 6, 17, 0, 47, 50, 255, rng.random()]
                    .choose(rng)
                    .unwrap()
            }
            8 => {
                ip[10] = rng.random();
                ip[11] = rng.random();
            }
            // The source address, or the destination.
            k => {
                let at = if k == 9 { 12 } else { 16 };
                let a = self.addrs4.choose(rng).unwrap().octets();
                ip[at..at + 4].copy_from_slice(&a);
            }
        }
    }

    fn ipv6_field(&self, rng: &mut StdRng, f: &mut [u8]) {
        if !is_v6(f) {
            return;
        }
        let ip = &mut f[ETH_LEN..];
        match rng.random_range(0..9) {
            0 => version(rng, &mut ip[0]),
            1 => {
                ip[1] = rng.random();
                ip[2] = rng.random();
                ip[3] = rng.random();
            }
            2 => length(rng, &mut ip[4..6]),
            3 => {
                ip[6] = *[0u8, 43, 44, 60, 59, 6, 17, 58, rng.random()]
                    .choose(rng)
                    .unwrap()
            }
            4 | 5 => ip[7] = hop_limit(rng),
            // The source address, or the destination.
            k => {
                let at = if k == 6 { 8 } else { 24 };
                let a = self.addrs6.choose(rng).unwrap().octets();
                ip[at..at + 16].copy_from_slice(&a);
            }
        }
    }

    /// IPv4 options after the fixed header (IHL and total length follow).
    fn ipv4_options(rng: &mut StdRng, f: &mut Vec<u8>) {
        if !is_v4(f) || f[ETH_LEN] & 0x0f != 5 {
            return;
        }
        let words = rng.random_range(1..=10usize);
        let mut opts = Vec::new();
        match rng.random_range(0..4) {
            0 => opts.extend_from_slice(&[148, 4, 0, 0]), // router alert
            1 => {
                let len = (words * 4).min(39);
                opts.extend_from_slice(&[7, len as u8, 4]); // record route
                opts.resize(len, 0);
            }
            2 => opts.resize(words * 4, 1), // NOPs
            _ => {
                for _ in 0..words * 4 {
                    opts.push(rng.random());
                }
            }
        }
        opts.resize(words * 4, 0);
        let n = opts.len();
        f.splice(ETH_LEN + 20..ETH_LEN + 20, opts);
        f[ETH_LEN] = 0x40 | (5 + (n / 4) as u8);
        let tot = u16::from_be_bytes([f[ETH_LEN + 2], f[ETH_LEN + 3]]).wrapping_add(n as u16);
        f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&tot.to_be_bytes());
    }

    /// An IPv6 extension header (hop-by-hop, routing, fragment, destination options) in front
    /// of the payload.
    fn ipv6_ext_header(rng: &mut StdRng, f: &mut Vec<u8>) {
        if !is_v6(f) {
            return;
        }
        let kind = *[0u8, 43, 44, 60].choose(rng).unwrap();
        let next = f[ETH_LEN + 6];
        let mut h = vec![next, 0, 0, 0, 0, 0, 0, 0];
        match kind {
            43 => {
                h[2] = rng.random_range(0..5); // routing type
                h[3] = rng.random_range(0..3); // segments left
            }
            44 => {
                let off: u16 = if rng.random_bool(0.5) {
                    rng.random_range(0..0x2000) << 3
                } else {
                    0
                };
                let m = u16::from(rng.random_bool(0.5));
                h[2..4].copy_from_slice(&(off | m).to_be_bytes());
                h[4..8].copy_from_slice(&rng.random::<u32>().to_be_bytes());
            }
            _ => {
                // PadN options.
                h[2] = 1;
                h[3] = 4;
            }
        }
        f[ETH_LEN + 6] = kind;
        f.splice(ETH_LEN + 40..ETH_LEN + 40, h);
        let plen = u16::from_be_bytes([f[ETH_LEN + 4], f[ETH_LEN + 5]]).wrapping_add(8);
        f[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&plen.to_be_bytes());
    }
}

/// A corpus entry: `# key: value` lines, then the frame in hex on one line.
#[derive(Clone, Debug)]
pub struct CorpusEntry {
    pub ingress: String,
    pub notes: Vec<String>,
    pub frame: Vec<u8>,
}

impl CorpusEntry {
    pub fn parse(text: &str) -> Result<CorpusEntry> {
        let mut ingress = None;
        let mut notes = Vec::new();
        let mut hexs = String::new();
        for l in text.lines() {
            let l = l.trim();
            if let Some(c) = l.strip_prefix('#') {
                let c = c.trim();
                if let Some(i) = c.strip_prefix("ingress:") {
                    ingress = Some(i.trim().to_string());
                } else {
                    notes.push(c.to_string());
                }
            } else {
                hexs.push_str(l);
            }
        }
        anyhow::ensure!(hexs.len().is_multiple_of(2), "odd number of hex digits");
        let frame = (0..hexs.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hexs[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()?;
        Ok(CorpusEntry {
            ingress: ingress.ok_or_else(|| anyhow::anyhow!("no `# ingress:` line"))?,
            notes,
            frame,
        })
    }

    pub fn render(&self) -> String {
        let mut s = format!("# ingress: {}\n", self.ingress);
        for n in &self.notes {
            s.push_str(&format!("# {n}\n"));
        }
        s.push_str(&crate::invariants::hex(&self.frame));
        s.push('\n');
        s
    }
}
