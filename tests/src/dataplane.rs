//! A loaded [`DataPlane`] in a private network namespace, configured as two VRFs, for
//! packet-level tests through BPF_PROG_TEST_RUN, plus independent checks of what it returns.
//!
//! BPF_PROG_TEST_RUN resolves the ingress ifindex in the calling thread's network namespace and
//! devmap entries must be real devices, so every link below is a real veth end (both ends of each
//! pair live in the fixture's namespace; the `*p` peers are unknown to the data plane), and every
//! run goes through [`NetNs::run_in`]. Each fixture has its own maps: tests run in parallel.
//!
//! | link    | VRF slot         | stats slot | MAC                 | IPv4        | IPv6           |
//! |---------|------------------|------------|---------------------|-------------|----------------|
//! | `r0`    | red (1)          | 10         | `02:00:00:00:10:01` | 10.1.0.0/24 | fd00:1::/64    |
//! | `r1`    | red              | 11         | `02:00:00:00:11:01` | 10.1.1.0/24 | fd00:1:1::/64  |
//! | `r2`    | red              | 12         | `02:00:00:00:12:01` | 10.1.2.0/24 | fd00:1:2::/64  |
//! | `r3`    | red              | 13         | `02:00:00:00:13:01` | 10.1.3.0/24 | fd00:1:3::/64  |
//! | `b0`    | blue (2)         | 20         | `02:00:00:00:20:01` | 10.2.0.0/24 | fd00:2::/64    |
//! | `b1`    | blue             | 21         | `02:00:00:00:21:01` | 10.2.1.0/24 | fd00:2:1::/64  |
//! | `vblue` | VRF device: blue | 30         | `02:00:00:00:30:01` |             |                |
//! | `r0p`   | not in `LINKS`   |            | `02:00:00:00:10:02` |             |                |
//!
//! Members have `LINK_UP | LINK_MEMBER | LINK_FWD4 | LINK_FWD6`, MTU 1500 and are redirect
//! targets (`TX_PORTS`). Red is table 110, blue table 120; slot 3 is left inactive.
//!
//! Routes: every subnet above is connected (no gateway) in its VRF's table; red has
//! 10.100.0.0/16 and fd00:100::/32 via r1's gateway (.1 / ::1), blue 10.200.0.0/16 and
//! fd00:200::/32 via b1's gateway. Neighbours: the gateway `.1`/`::1` of r1, r2, r3, b1, the
//! host `.7`/`::7` on r1 and b1, and the sources `.2`/`::2` on r0 and b0, each with its own MAC
//! from [`neigh_mac`]. Neither table has a default route.
use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use vrf_common::{
    Counters, Direction, Link, NexthopGroup, Reason, Route, RouteKind, Vrf, LINK_FWD4, LINK_FWD6,
    LINK_MEMBER, LINK_UP, LINK_VRF_DEVICE, VRF_ACTIVE,
};
use vrf_user::{
    dataplane::{
        DataPlane, Explanation, RunResult, XdpAction, XDP_ABORTED, XDP_DROP, XDP_PASS,
        XDP_REDIRECT, XDP_TX,
    },
    packet::FrameSpec,
    plan::Path,
    writer::nexthop_group,
};

use crate::netns::NetNs;

pub use vrf_common::Nexthop;

/// One path in the map's form (the writer's own conversion).
pub fn nexthop(ifindex: u32, gateway: Option<IpAddr>) -> Nexthop {
    vrf_user::writer::nexthop(&Path {
        ifindex,
        gateway,
        weight: 1,
        nhid: None,
    })
}

pub const RED: u32 = 1;
pub const BLUE: u32 = 2;
/// A VRF slot nobody configured (flags 0: not active).
pub const INACTIVE_SLOT: u32 = 3;
pub const RED_TABLE: u32 = 110;
pub const BLUE_TABLE: u32 = 120;
/// Every VRF slot whose counters the fixture watches.
pub const WATCHED_VRF_SLOTS: [u32; 4] = [0, RED, BLUE, INACTIVE_SLOT];

pub const MEMBER_FLAGS: u16 = LINK_UP | LINK_MEMBER | LINK_FWD4 | LINK_FWD6;
pub const MTU: u32 = 1500;

/// Source of the test frames behind r0 (red) and b0 (blue).
pub const RED_SRC4: &str = "10.1.0.2";
pub const RED_SRC6: &str = "fd00:1::2";
pub const BLUE_SRC4: &str = "10.2.0.2";
pub const BLUE_SRC6: &str = "fd00:2::2";
/// r1's gateway, and a destination behind it.
pub const RED_GW4: &str = "10.1.1.1";
pub const RED_GW6: &str = "fd00:1:1::1";
pub const RED_REMOTE4: &str = "10.100.0.9";
pub const RED_REMOTE6: &str = "fd00:100::9";
/// A host directly on r1's subnet.
pub const RED_DIRECT4: &str = "10.1.1.7";
pub const RED_DIRECT6: &str = "fd00:1:1::7";
/// b1's gateway, and a destination behind it.
pub const BLUE_GW4: &str = "10.2.1.1";
pub const BLUE_GW6: &str = "fd00:2:1::1";
pub const BLUE_REMOTE4: &str = "10.200.0.9";
pub const BLUE_REMOTE6: &str = "fd00:200::9";
pub const BLUE_DIRECT4: &str = "10.2.1.7";
pub const BLUE_DIRECT6: &str = "fd00:2:1::7";
/// The source MAC of test frames (the host behind the ingress link).
pub const HOST_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x02];

/// One veth end of the fixture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iface {
    pub name: &'static str,
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// Index into `LINK_STATS` (0 for links unknown to the data plane).
    pub stats_slot: u32,
    /// VRF slot (0 for links unknown to the data plane).
    pub vrf: u32,
    /// The byte that tells this link's MACs apart (`02:00:00:00:ID:01`).
    pub id: u8,
}

/// The MAC of neighbour host `host` on the link with id `link_id`, distinct per family so that
/// the destination MAC of a forwarded frame also tells which neighbour table entry was used.
pub fn neigh_mac(link_id: u8, host: u8, v6: bool) -> [u8; 6] {
    [0x02, if v6 { 0xe6 } else { 0xe4 }, 0, 0, link_id, host]
}

/// Counters of every watched VRF slot and link, in the `Ingress` direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub vrfs: BTreeMap<u32, Counters>,
    /// By stats slot.
    pub links: BTreeMap<u32, Counters>,
}

pub struct Fixture {
    pub dp: DataPlane,
    pub r0: Iface,
    pub r1: Iface,
    pub r2: Iface,
    pub r3: Iface,
    pub b0: Iface,
    pub b1: Iface,
    pub vblue: Iface,
    /// `r0p`: a real device the data plane does not know.
    pub outsider: Iface,
    next_group: u32,
    /// IPv4 routes go into the flat FIB too, as the map writer puts them: the decisions are
    /// those of the flat lookup (tables the flat FIB does not hold stay in the trie).
    flat4: vrf_user::flat4::Flat4,
    // Dropped last: the data plane's maps hold references to the devices in TX_PORTS.
    pub ns: NetNs,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    /// Build the fixture; panics (with the cause) when it cannot.
    pub fn new() -> Fixture {
        crate::require_root();
        Self::build().expect("building the data-plane fixture")
    }

    fn build() -> Result<Fixture> {
        let ns = NetNs::new("xdpdec")?;
        let specs: [(&'static str, u8, u32, u32); 7] = [
            ("r0", 0x10, RED, 10),
            ("r1", 0x11, RED, 11),
            ("r2", 0x12, RED, 12),
            ("r3", 0x13, RED, 13),
            ("b0", 0x20, BLUE, 20),
            ("b1", 0x21, BLUE, 21),
            ("vblue", 0x30, BLUE, 30),
        ];
        for (name, id, _, _) in specs {
            let peer = format!("{name}p");
            ns.ip(&[
                "link",
                "add",
                "name",
                name,
                "address",
                &crate::mac_to_string(link_mac(id, 1)),
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "address",
                &crate::mac_to_string(link_mac(id, 2)),
            ])?;
        }
        // One `ip -j link show` for every ifindex and MAC (checks the addresses took).
        let json: serde_json::Value = serde_json::from_str(&ns.ip(&["-j", "link", "show"])?)?;
        let find = |name: &str| -> Result<(u32, [u8; 6])> {
            let l = json
                .as_array()
                .and_then(|a| a.iter().find(|l| l["ifname"] == name))
                .with_context(|| format!("no link {name} in {json}"))?;
            let ifindex = l["ifindex"].as_u64().context("ifindex")? as u32;
            let mac = crate::parse_mac(l["address"].as_str().context("address")?)?;
            Ok((ifindex, mac))
        };
        let mut ifaces = Vec::new();
        for (name, id, vrf, stats_slot) in specs {
            let (ifindex, mac) = find(name)?;
            if mac != link_mac(id, 1) {
                bail!("{name} has MAC {mac:02x?}, not {:02x?}", link_mac(id, 1));
            }
            ifaces.push(Iface {
                name,
                ifindex,
                mac,
                stats_slot,
                vrf,
                id,
            });
        }
        let (ifindex, mac) = find("r0p")?;
        let outsider = Iface {
            name: "r0p",
            ifindex,
            mac,
            stats_slot: 0,
            vrf: 0,
            id: 0x10,
        };
        let dp = load_data_plane()?;
        let flat4 = vrf_user::flat4::Flat4::new(dp.maps.flat4.sizes());
        let mut fx = Fixture {
            flat4,
            dp,
            r0: ifaces[0],
            r1: ifaces[1],
            r2: ifaces[2],
            r3: ifaces[3],
            b0: ifaces[4],
            b1: ifaces[5],
            vblue: ifaces[6],
            outsider,
            next_group: 1,
            ns,
        };
        fx.configure()?;
        Ok(fx)
    }

    fn configure(&mut self) -> Result<()> {
        for (slot, table, name) in [(RED, RED_TABLE, "red"), (BLUE, BLUE_TABLE, "blue")] {
            let mut vrf = Vrf {
                table,
                flags: VRF_ACTIVE,
                ..Default::default()
            };
            vrf.name[..name.len()].copy_from_slice(name.as_bytes());
            self.dp.maps.set_vrf(slot, &vrf)?;
        }
        let members = [self.r0, self.r1, self.r2, self.r3, self.b0, self.b1];
        for m in members {
            self.dp.maps.set_link(
                m.ifindex,
                &Link {
                    vrf: m.vrf,
                    stats_slot: m.stats_slot,
                    mtu: MTU,
                    mac: m.mac,
                    flags: MEMBER_FLAGS,
                    mtu6: MTU,
                },
            )?;
        }
        let vblue = self.vblue;
        self.dp.maps.set_link(
            vblue.ifindex,
            &Link {
                vrf: BLUE,
                stats_slot: vblue.stats_slot,
                mtu: 65535,
                mac: vblue.mac,
                flags: LINK_UP | LINK_VRF_DEVICE,
                mtu6: 65535,
            },
        )?;
        {
            let Fixture { ns, dp, .. } = self;
            ns.run_in(|| -> Result<()> {
                for m in members {
                    dp.maps.add_tx_port(m.ifindex)?;
                }
                Ok(())
            })?;
        }

        // Connected subnets.
        let connected = [
            (RED_TABLE, self.r0, "10.1.0.0/24", "fd00:1::/64"),
            (RED_TABLE, self.r1, "10.1.1.0/24", "fd00:1:1::/64"),
            (RED_TABLE, self.r2, "10.1.2.0/24", "fd00:1:2::/64"),
            (RED_TABLE, self.r3, "10.1.3.0/24", "fd00:1:3::/64"),
            (BLUE_TABLE, self.b0, "10.2.0.0/24", "fd00:2::/64"),
            (BLUE_TABLE, self.b1, "10.2.1.0/24", "fd00:2:1::/64"),
        ];
        for (table, link, p4, p6) in connected {
            self.unicast(table, p4, &[nexthop(link.ifindex, None)]);
            self.unicast(table, p6, &[nexthop(link.ifindex, None)]);
        }
        // Remote prefixes via gateways.
        let (r1, b1) = (self.r1.ifindex, self.b1.ifindex);
        self.unicast(
            RED_TABLE,
            "10.100.0.0/16",
            &[nexthop(r1, Some(ip(RED_GW4)))],
        );
        self.unicast(
            RED_TABLE,
            "fd00:100::/32",
            &[nexthop(r1, Some(ip(RED_GW6)))],
        );
        self.unicast(
            BLUE_TABLE,
            "10.200.0.0/16",
            &[nexthop(b1, Some(ip(BLUE_GW4)))],
        );
        self.unicast(
            BLUE_TABLE,
            "fd00:200::/32",
            &[nexthop(b1, Some(ip(BLUE_GW6)))],
        );
        // Neighbours: gateways .1, hosts .7, sources .2.
        let neighbours = [
            (self.r1, "10.1.1.1", "fd00:1:1::1", 1),
            (self.r2, "10.1.2.1", "fd00:1:2::1", 1),
            (self.r3, "10.1.3.1", "fd00:1:3::1", 1),
            (self.b1, "10.2.1.1", "fd00:2:1::1", 1),
            (self.r1, "10.1.1.7", "fd00:1:1::7", 7),
            (self.b1, "10.2.1.7", "fd00:2:1::7", 7),
            (self.r0, "10.1.0.2", "fd00:1::2", 2),
            (self.b0, "10.2.0.2", "fd00:2::2", 2),
        ];
        for (link, a4, a6, host) in neighbours {
            self.neighbour(link, a4, neigh_mac(link.id, host, false));
            self.neighbour(link, a6, neigh_mac(link.id, host, true));
        }
        Ok(())
    }

    /// Every link the data plane counts for (members and the VRF device).
    pub fn known_links(&self) -> [Iface; 7] {
        [
            self.r0, self.r1, self.r2, self.r3, self.b0, self.b1, self.vblue,
        ]
    }

    // Running the programs (inside the namespace).

    /// The fast path (`xdp_vrf`) on `frame` arriving on `ifindex`.
    pub fn run(&mut self, ifindex: u32, frame: &[u8]) -> RunResult {
        let Fixture { ns, dp, .. } = self;
        ns.run_in(|| dp.run(ifindex, frame))
            .unwrap_or_else(|e| panic!("running xdp_vrf on ifindex {ifindex}: {e:#}"))
    }

    /// The fast path on each of `frames` arriving on `ifindex` (one thread for all).
    pub fn run_many(&mut self, ifindex: u32, frames: &[Vec<u8>]) -> Vec<RunResult> {
        let Fixture { ns, dp, .. } = self;
        ns.run_in(|| {
            frames
                .iter()
                .map(|f| dp.run(ifindex, f))
                .collect::<Result<Vec<_>>>()
        })
        .unwrap_or_else(|e| panic!("running xdp_vrf on ifindex {ifindex}: {e:#}"))
    }

    /// The explain program on `frame` arriving on `ifindex`.
    pub fn explain(&mut self, ifindex: u32, frame: &[u8]) -> Result<Explanation> {
        let Fixture { ns, dp, .. } = self;
        ns.run_in(|| dp.explain(ifindex, frame))
    }

    // Configuration.

    /// Insert `prefix` (an IPv4 or IPv6 CIDR) in `table` with `kind`, route MTU `mtu` and `paths`
    /// (a fresh nexthop group; none when `paths` is empty). Returns the group id (0 for none).
    pub fn route(
        &mut self,
        table: u32,
        prefix: &str,
        kind: RouteKind,
        mtu: u16,
        paths: &[Nexthop],
    ) -> u32 {
        let group = if paths.is_empty() {
            0
        } else {
            let id = self.next_group;
            self.next_group += 1;
            let g = nexthop_group(paths).expect("nexthop group");
            self.dp.maps.set_nexthop_group(id, &g).expect("set group");
            id
        };
        self.route_raw(
            table,
            prefix,
            Route {
                kind: kind as u16,
                mtu,
                nexthop: group,
            },
        );
        group
    }

    /// A unicast route to `paths`.
    pub fn unicast(&mut self, table: u32, prefix: &str, paths: &[Nexthop]) -> u32 {
        self.route(table, prefix, RouteKind::Unicast, 0, paths)
    }

    /// Red's `prefix` via the link-local gateway fe80::1 on r2 (for IPv4 prefixes, RFC 5549),
    /// with fe80::1's neighbour entry when `neighbour`. Returns that neighbour's MAC.
    pub fn red_via_fe80_on_r2(&mut self, prefix: &str, neighbour: bool) -> [u8; 6] {
        let r2 = self.r2;
        self.unicast(
            RED_TABLE,
            prefix,
            &[nexthop(r2.ifindex, Some(ip("fe80::1")))],
        );
        let mac = neigh_mac(r2.id, 0xfe, true);
        if neighbour {
            self.neighbour(r2, "fe80::1", mac);
        }
        mac
    }

    /// Red's 10.60.0.0/16 through blue's VRF device: looked up again in blue's table.
    pub fn red_into_blue(&mut self) {
        let vblue = self.vblue.ifindex;
        self.unicast(RED_TABLE, "10.60.0.0/16", &[nexthop(vblue, None)]);
    }

    /// Blue's 10.60.1.0/24 via `gateway` out of b1.
    pub fn blue_via_b1(&mut self, gateway: &str) {
        let b1 = self.b1.ifindex;
        self.unicast(
            BLUE_TABLE,
            "10.60.1.0/24",
            &[nexthop(b1, Some(ip(gateway)))],
        );
    }

    /// A route of `kind` without nexthops (local, blackhole, unreachable…).
    pub fn typed_route(&mut self, table: u32, prefix: &str, kind: RouteKind) {
        self.route(table, prefix, kind, 0, &[]);
    }

    /// Insert `route` exactly as given.
    pub fn route_raw(&mut self, table: u32, prefix: &str, route: Route) {
        let net: IpNet = prefix.parse().expect("prefix");
        self.dp
            .maps
            .insert_route(table, net, &route)
            .expect("insert route");
        if let IpNet::V4(net) = net {
            self.flat4.set(table, net, Some(route));
            self.dp
                .maps
                .flat4
                .sync(&mut self.flat4)
                .expect("flat IPv4 FIB");
        }
    }

    /// Store `group` under a fresh id, bypassing the library's checks; returns the id.
    pub fn raw_group(&mut self, group: &NexthopGroup) -> u32 {
        let id = self.next_group;
        self.next_group += 1;
        self.dp
            .maps
            .set_nexthop_group(id, group)
            .expect("set group");
        id
    }

    pub fn neighbour(&mut self, link: Iface, addr: &str, mac: [u8; 6]) {
        self.dp
            .maps
            .set_neighbour(link.ifindex, ip(addr), mac)
            .expect("set neighbour");
    }

    pub fn link(&self, link: Iface) -> Link {
        self.dp
            .maps
            .link(link.ifindex)
            .expect("read link")
            .expect("link known")
    }

    /// Change `link`'s `LINKS` entry.
    pub fn update_link(&mut self, link: Iface, f: impl FnOnce(&mut Link)) {
        let mut l = self.link(link);
        f(&mut l);
        self.dp.maps.set_link(link.ifindex, &l).expect("set link");
    }

    /// Change VRF slot `slot`.
    pub fn update_vrf(&mut self, slot: u32, f: impl FnOnce(&mut Vrf)) {
        let mut v = self.dp.maps.vrf(slot).expect("read vrf");
        f(&mut v);
        self.dp.maps.set_vrf(slot, &v).expect("set vrf");
    }

    pub fn remove_tx_port(&mut self, link: Iface) {
        self.dp
            .maps
            .remove_tx_port(link.ifindex)
            .expect("remove tx port");
    }

    // Frames.

    /// A frame from the host behind `ingress` to `ingress`'s MAC.
    pub fn spec(&self, ingress: Iface, src: &str, dst: &str) -> FrameSpec {
        let mut s = FrameSpec::new(ip(src), ip(dst));
        s.src_mac = HOST_MAC;
        s.dst_mac = ingress.mac;
        s
    }

    /// A UDP frame from `src` to `dst` arriving on `ingress`.
    pub fn udp(&self, ingress: Iface, src: &str, dst: &str) -> Vec<u8> {
        self.spec(ingress, src, dst).udp().expect("build frame")
    }

    // Counters.

    pub fn snapshot(&self) -> Snapshot {
        let maps = &self.dp.maps;
        let vrfs = WATCHED_VRF_SLOTS
            .iter()
            .map(|&s| {
                let c = maps
                    .vrf_counters(s, Direction::Ingress)
                    .expect("vrf counters");
                (s, c)
            })
            .collect();
        let links = std::iter::once(0)
            .chain(self.known_links().iter().map(|l| l.stats_slot))
            .map(|s| {
                let c = maps
                    .link_counters(s, Direction::Ingress)
                    .expect("link counters");
                (s, c)
            })
            .collect();
        Snapshot { vrfs, links }
    }

    /// The change from `before` to now must be exactly `packets` packets of `bytes` bytes under
    /// `Rx` and `reason`, on `ingress`'s stats slot and on VRF slot `vrf` (none when `vrf` is
    /// beyond the counter array); every other counter of every watched slot unchanged.
    pub fn assert_counted(
        &self,
        before: &Snapshot,
        ingress: Iface,
        vrf: u32,
        reason: Reason,
        packets: u64,
        bytes: u64,
    ) {
        let after = self.snapshot();
        let expect = |c: &mut Counters| {
            for r in [Reason::Rx, reason] {
                c.by_reason[r as usize].packets += packets;
                c.by_reason[r as usize].bytes += bytes;
            }
        };
        let mut want = before.clone();
        if let Some(c) = want.vrfs.get_mut(&vrf) {
            expect(c);
        }
        expect(
            want.links
                .get_mut(&ingress.stats_slot)
                .expect("ingress stats slot watched"),
        );
        assert_snapshots_equal(&want, &after, &format!("{packets} × {reason:?}"));
    }

    /// No counter of any watched slot changed since `before`.
    pub fn assert_not_counted(&self, before: &Snapshot) {
        assert_snapshots_equal(before, &self.snapshot(), "nothing counted");
    }

    // Expectations: run both programs once, check what they did, the frame and the counters.

    /// `frame` on `ingress` must give `action` from both programs, `reason` from explain, the
    /// decision taken in VRF slot `ingress.vrf`, and count 1 packet under `Rx` and `reason`. For
    /// pass and drop the frame must come back unchanged.
    pub fn expect(
        &mut self,
        ingress: Iface,
        frame: &[u8],
        action: XdpAction,
        reason: Reason,
    ) -> Explanation {
        let e = self.expect_in_vrf(ingress, frame, action, reason, ingress.vrf);
        if action != XDP_REDIRECT {
            assert_eq!(
                e.vrf, ingress.vrf,
                "explain's VRF for {reason:?} on {}",
                ingress.name
            );
        }
        e
    }

    /// [`expect`](Self::expect) with counters expected on VRF slot `vrf` (which is the member's)
    /// and no check of explain's VRF.
    pub fn expect_in_vrf(
        &mut self,
        ingress: Iface,
        frame: &[u8],
        action: XdpAction,
        reason: Reason,
        vrf: u32,
    ) -> Explanation {
        let before = self.snapshot();
        let run = self.run(ingress.ifindex, frame);
        let e = self
            .explain(ingress.ifindex, frame)
            .unwrap_or_else(|err| panic!("explain on {}: {err:#}", ingress.name));
        assert_eq!(
            (action_name(run.action), action_name(e.action), e.reason),
            (action_name(action), action_name(action), reason),
            "(xdp_vrf action, explain action, explain reason) for a frame on {}: {}",
            ingress.name,
            hex(frame)
        );
        assert_eq!(
            run.frame, e.frame,
            "both programs must leave the same frame"
        );
        if action != XDP_REDIRECT {
            assert_eq!(e.oif, None);
            assert_eq!(e.neighbour, None);
            assert_eq!(
                hex(&run.frame),
                hex(frame),
                "a {} frame must be handed back unchanged",
                action_name(action)
            );
        }
        // The fast path counts its packet; explaining one counts nothing.
        self.assert_counted(&before, ingress, vrf, reason, 1, frame.len() as u64);
        e
    }

    pub fn expect_pass(&mut self, ingress: Iface, frame: &[u8], reason: Reason) -> Explanation {
        assert_ne!(reason.action(), vrf_common::Action::Drop);
        self.expect(ingress, frame, XDP_PASS, reason)
    }

    pub fn expect_drop(&mut self, ingress: Iface, frame: &[u8], reason: Reason) -> Explanation {
        self.expect(ingress, frame, XDP_DROP, reason)
    }

    /// `frame` on `ingress` must be redirected by both programs out of `egress` to `neighbour`
    /// (whose MAC is `neigh_mac`), decided in VRF slot `vrf`, the output frame rewritten exactly
    /// (see [`assert_forwarded`]) and 1 packet counted as forwarded (by the fast path; explaining counts nothing). Returns the output frame.
    pub fn expect_forward(
        &mut self,
        ingress: Iface,
        frame: &[u8],
        egress: Iface,
        neighbour: &str,
        neigh_mac: [u8; 6],
        vrf: u32,
    ) -> Vec<u8> {
        let e = self.expect_in_vrf(ingress, frame, XDP_REDIRECT, Reason::Forwarded, ingress.vrf);
        assert_eq!(
            (e.oif, e.neighbour, e.vrf),
            (Some(egress.ifindex), Some(ip(neighbour)), vrf),
            "(oif, neighbour, vrf): expected out of {} to {neighbour} in slot {vrf}",
            egress.name
        );
        assert_forwarded(frame, &e.frame, egress.mac, neigh_mac);
        e.frame
    }
}

/// `DataPlane::load`, retried while the kernel answers BPF_PROG_LOAD with EAGAIN: the verifier
/// gives up with EAGAIN when a signal is pending on the loading thread, and the loader does not
/// retry (see `data_plane_loads_while_signals_interrupt_the_verifier` in xdp_decisions.rs). Seen
/// here in roughly one full run of the test file in three.
fn load_data_plane() -> Result<DataPlane> {
    let mut attempt = 1;
    loop {
        match DataPlane::load() {
            Err(e) if attempt < 10 && is_eagain(&e) => attempt += 1,
            other => return other,
        }
    }
}

/// Is EAGAIN anywhere in `e`'s chain?
pub fn is_eagain(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EAGAIN))
    }) || format!("{e:#}").contains(&format!("(os error {})", libc::EAGAIN))
}

fn link_mac(id: u8, end: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, id, end]
}

fn assert_snapshots_equal(want: &Snapshot, got: &Snapshot, what: &str) {
    let mut diffs = Vec::new();
    let mut cmp = |kind: &str, slot: u32, w: &Counters, g: &Counters| {
        for r in Reason::ALL {
            let (w, g) = (w.by_reason[r as usize], g.by_reason[r as usize]);
            if w != g {
                diffs.push(format!(
                    "{kind} slot {slot} {}: want {} pkts / {} bytes, got {} / {}",
                    r.name(),
                    w.packets,
                    w.bytes,
                    g.packets,
                    g.bytes
                ));
            }
        }
    };
    for (slot, w) in &want.vrfs {
        cmp("vrf", *slot, w, &got.vrfs[slot]);
    }
    for (slot, w) in &want.links {
        cmp("link", *slot, w, &got.links[slot]);
    }
    assert!(
        diffs.is_empty(),
        "counters ({what}):\n  {}",
        diffs.join("\n  ")
    );
}

pub fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad address {s:?}: {e}"))
}

pub fn action_name(a: XdpAction) -> &'static str {
    match a {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        XdpAction::Other(_) => "unknown",
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// Independent frame checks.

pub use crate::invariants::ones_sum;

/// The IPv4 header checksum of `header` as the sender computes it (checksum field taken as 0).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut h = header.to_vec();
    h[10] = 0;
    h[11] = 0;
    !ones_sum(&h)
}

/// Recompute the IPv4 header checksum of an Ethernet frame in place (over IHL × 4 bytes).
pub fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ihl = ((frame[14] & 0x0f) as usize * 4).clamp(20, frame.len() - 14);
    let c = ipv4_checksum(&frame[14..14 + ihl]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

/// `output` is `input` forwarded once: MACs `src_mac` → `dst_mac`, TTL / hop limit one lower,
/// the IPv4 checksum exactly the recomputed one, Ethernet padding trimmed (length 14 + the IP
/// packet's length), and every other byte identical.
pub fn assert_forwarded(input: &[u8], output: &[u8], src_mac: [u8; 6], dst_mac: [u8; 6]) {
    use etherparse::{LinkSlice, NetSlice, SlicedPacket};
    assert_eq!(
        &output[..12.min(output.len())],
        &[dst_mac, src_mac].concat()[..],
        "destination and source MAC of the output {}",
        hex(output)
    );
    assert_eq!(output[12..14], input[12..14], "ethertype");
    let parsed = SlicedPacket::from_ethernet(output)
        .unwrap_or_else(|e| panic!("output frame does not parse: {e}: {}", hex(output)));
    match parsed.link {
        Some(LinkSlice::Ethernet2(eth)) => {
            assert_eq!(eth.destination(), dst_mac);
            assert_eq!(eth.source(), src_mac);
        }
        other => panic!("not Ethernet II: {other:?}"),
    }
    match parsed.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let ip_len = h.total_len() as usize;
            assert_eq!(
                output.len(),
                14 + ip_len,
                "output length must be 14 + IPv4 total length (padding trimmed)"
            );
            let in_ttl = input[14 + 8];
            assert_eq!(h.ttl(), in_ttl - 1, "TTL must go down by exactly 1");
            let hdr = h.slice();
            assert_eq!(
                h.header_checksum(),
                ipv4_checksum(hdr),
                "IPv4 header checksum must be the recomputed one: {}",
                hex(hdr)
            );
            assert_eq!(ones_sum(hdr), 0xffff, "IPv4 header must verify");
            let mut want = input[14..14 + ip_len].to_vec();
            want[8] -= 1;
            want[10..12].copy_from_slice(&hdr[10..12]);
            assert_eq!(
                hex(&output[14..]),
                hex(&want),
                "IPv4 packet: only TTL and checksum may change"
            );
        }
        Some(NetSlice::Ipv6(v6)) => {
            let h = v6.header();
            let ip_len = 40 + h.payload_length() as usize;
            assert_eq!(
                output.len(),
                14 + ip_len,
                "output length must be 14 + 40 + IPv6 payload length (padding trimmed)"
            );
            assert_eq!(
                h.hop_limit(),
                input[14 + 7] - 1,
                "hop limit must go down by exactly 1"
            );
            let mut want = input[14..14 + ip_len].to_vec();
            want[7] -= 1;
            assert_eq!(
                hex(&output[14..]),
                hex(&want),
                "IPv6 packet: only the hop limit may change"
            );
        }
        other => panic!("output is not IP: {other:?}"),
    }
}

/// IPv6 version, traffic class 0xab, flow label 0xcdef1: IPv6 test frames carry them so that a
/// rewrite that touched them would show.
pub const VERSION_CLASS_FLOW: [u8; 4] = [0x6a, 0xbc, 0xde, 0xf1];

pub fn with_flow_label(mut frame: Vec<u8>) -> Vec<u8> {
    frame[14..18].copy_from_slice(&VERSION_CLASS_FLOW);
    frame
}

/// One IP version's view of the fixture (its sources, gateways, frames), so that a decision
/// that does not depend on the version is written once and checked for both.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub v6: bool,
    pub red_src: &'static str,
    pub red_remote: &'static str,
    pub red_gw: &'static str,
    pub red_direct: &'static str,
    pub blue_src: &'static str,
    pub blue_remote: &'static str,
    pub blue_gw: &'static str,
    pub blue_direct: &'static str,
    /// The link flag that turns forwarding of this version on.
    pub fwd_flag: u16,
    /// IP and UDP headers: what a UDP packet adds to its payload.
    pub udp_headers: usize,
}

pub const V4: Family = Family {
    v6: false,
    red_src: RED_SRC4,
    red_remote: RED_REMOTE4,
    red_gw: RED_GW4,
    red_direct: RED_DIRECT4,
    blue_src: BLUE_SRC4,
    blue_remote: BLUE_REMOTE4,
    blue_gw: BLUE_GW4,
    blue_direct: BLUE_DIRECT4,
    fwd_flag: LINK_FWD4,
    udp_headers: 20 + 8,
};

pub const V6: Family = Family {
    v6: true,
    red_src: RED_SRC6,
    red_remote: RED_REMOTE6,
    red_gw: RED_GW6,
    red_direct: RED_DIRECT6,
    blue_src: BLUE_SRC6,
    blue_remote: BLUE_REMOTE6,
    blue_gw: BLUE_GW6,
    blue_direct: BLUE_DIRECT6,
    fwd_flag: LINK_FWD6,
    udp_headers: 40 + 8,
};

pub const FAMILIES: [Family; 2] = [V4, V6];

impl Family {
    pub fn name(&self) -> &'static str {
        self.pick("IPv4", "IPv6")
    }

    /// The other version.
    pub fn other(&self) -> Family {
        self.pick(V6, V4)
    }

    /// `v4` for IPv4, `v6` for IPv6: the literal each version's case uses.
    pub fn pick<T>(&self, v4: T, v6: T) -> T {
        if self.v6 {
            v6
        } else {
            v4
        }
    }

    /// Make an IPv6 frame carry [`VERSION_CLASS_FLOW`]; IPv4 frames as they are.
    pub fn finish(&self, frame: Vec<u8>) -> Vec<u8> {
        if self.v6 {
            with_flow_label(frame)
        } else {
            frame
        }
    }

    /// A UDP frame from `src` to `dst` arriving on `ingress`.
    pub fn udp(&self, fx: &Fixture, ingress: Iface, src: &str, dst: &str) -> Vec<u8> {
        self.finish(fx.udp(ingress, src, dst))
    }

    /// A UDP frame on r0 from red's source whose IP packet is exactly `ip_len` bytes long.
    pub fn udp_of_ip_len(&self, fx: &Fixture, dst: &str, ip_len: usize) -> Vec<u8> {
        let mut s = fx.spec(fx.r0, self.red_src, dst);
        s.payload_len = ip_len - self.udp_headers;
        let f = self.finish(s.udp().expect("build frame"));
        assert_eq!(f.len(), 14 + ip_len);
        f
    }

    /// The MAC of host `host` on `link` (`neigh_mac` of this version).
    pub fn mac(&self, link: Iface, host: u8) -> [u8; 6] {
        neigh_mac(link.id, host, self.v6)
    }
}

/// A route of `kind` (10.40.0.0/24, fd00:40::/48) that still has a usable path via r1's gateway,
/// so only its kind keeps it from being forwarded: `action` and `reason` expected.
pub fn typed_route_case(fam: Family, kind: RouteKind, action: XdpAction, reason: Reason) {
    let mut fx = Fixture::new();
    let r1 = fx.r1.ifindex;
    let prefix = fam.pick("10.40.0.0/24", "fd00:40::/48");
    fx.route(
        RED_TABLE,
        prefix,
        kind,
        0,
        &[nexthop(r1, Some(ip(fam.red_gw)))],
    );
    let frame = fam.udp(&fx, fx.r0, fam.red_src, fam.pick("10.40.0.5", "fd00:40::5"));
    fx.expect(fx.r0, &frame, action, reason);
}
