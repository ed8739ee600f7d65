//! `vrfctl capture`: what the fast path records while a capture runs.
//!
//! Packet level (BPF_PROG_TEST_RUN on the `tests::dataplane` fixture): the records are the
//! frames sent, byte for byte as they arrived, one per packet, with the decision (VRF, reason,
//! action, egress, neighbour) for forwarded, passed and dropped packets; filters, the rate
//! limit and a full ring drop records (counted), never packets; idle and expired captures
//! record nothing.
//!
//! Process level (vrfd on a namespace topology, vrfctl as a process): a capture during a ping
//! and a TCP transfer in one VRF holds exactly that VRF's packets, none of another VRF with the
//! same addresses, and tcpdump reads the file.
use std::time::Instant;

use tests::dataplane::*;
use vrf_common::{CaptureConfig, Direction, Reason, RouteKind, LINK_CAPTURE};
use vrf_user::{
    capture::{monotonic_ns, CaptureMaps, Names, Reasons, Record, Settings},
    dataplane::{
        TcAction, TcProgram, XdpAction, TC_ACT_OK, TC_ACT_REDIRECT, XDP_DROP, XDP_PASS,
        XDP_REDIRECT,
    },
};

/// Every record the ring holds now.
fn drain(cap: &mut CaptureMaps) -> Vec<Record> {
    let mut out = Vec::new();
    while let Some(r) = cap.next_record() {
        out.push(r.expect("a well-formed capture record"));
    }
    out
}

/// What vrfctl and vrfd do together: the lease in `CAPTURE`, then `LINK_CAPTURE` on every link.
fn start(fx: &mut Fixture, s: Settings) {
    fx.dp.capture.start(&s).expect("starting a capture");
    link_capture_bit(fx, true);
}

/// `LINK_CAPTURE` on or off on every link, as vrfd's writer sets it.
fn link_capture_bit(fx: &mut Fixture, on: bool) {
    for (ifindex, mut link) in fx.dp.maps.links().unwrap() {
        link.flags = if on {
            link.flags | LINK_CAPTURE
        } else {
            link.flags & !LINK_CAPTURE
        };
        fx.dp.maps.set_link(ifindex, &link).unwrap();
    }
}

fn unlimited() -> Settings {
    Settings {
        rate: 0,
        ..Settings::default()
    }
}

/// Red frames: forwarded via r1's gateway, passed (no route), dropped (blackhole).
fn three_fates(fx: &mut Fixture) -> [Vec<u8>; 3] {
    fx.typed_route(RED_TABLE, "10.66.0.0/16", RouteKind::Blackhole);
    [
        fx.udp(fx.r0, RED_SRC4, RED_REMOTE4),
        fx.udp(fx.r0, RED_SRC4, "10.99.0.1"),
        fx.udp(fx.r0, RED_SRC4, "10.66.0.1"),
    ]
}

#[test]
fn records_are_the_frames_as_they_arrived_with_the_decision() {
    let mut fx = Fixture::new();
    let frames = three_fates(&mut fx);
    start(&mut fx, unlimited());
    let results = fx.run_many(fx.r0.ifindex, &frames);
    let actions: Vec<XdpAction> = results.iter().map(|r| r.action).collect();
    assert_eq!(actions, [XDP_REDIRECT, XDP_PASS, XDP_DROP]);
    // The forwarded frame left rewritten; the record holds it as it arrived.
    assert_ne!(results[0].frame, frames[0]);

    let recs = drain(&mut fx.dp.capture);
    assert_eq!(recs.len(), 3, "one record per packet");
    let want = [
        (Reason::Forwarded, XDP_REDIRECT),
        (Reason::PassNoRoute, XDP_PASS),
        (Reason::DropBlackhole, XDP_DROP),
    ];
    for ((rec, frame), (reason, action)) in recs.iter().zip(&frames).zip(want) {
        let h = &rec.header;
        assert_eq!(rec.data, *frame, "{reason:?}: bytes as sent");
        assert_eq!(h.orig_len as usize, frame.len());
        assert_eq!(h.cap_len as usize, frame.len());
        assert_eq!(rec.reason(), Some(reason));
        assert_eq!(XdpAction::from(h.action), action, "{reason:?}");
        assert_eq!(h.ifindex, fx.r0.ifindex);
        assert_eq!(h.direction, Direction::Ingress as u32);
        assert_eq!((h.vrf, h.decided_vrf), (RED, RED));
        assert!(h.ts_ns > 0 && h.ts_ns <= monotonic_ns());
    }
    assert_eq!(recs[0].header.oif, fx.r1.ifindex);
    assert_eq!(recs[0].neighbour(), Some(ip(RED_GW4)));
    assert_eq!(recs[1].neighbour(), None);

    // The comments a pcapng file carries, with the fixture's names.
    let names = {
        let Fixture { ns, dp, .. } = &fx;
        ns.run_in(|| Names::read(&dp.maps)).unwrap()
    };
    let comments: Vec<String> = recs.iter().map(|r| names.comment(r)).collect();
    assert_eq!(
        comments,
        [
            "vrf=red dir=ingress in=r0 reason=forwarded action=forward out=r1 gateway=10.1.1.1",
            "vrf=red dir=ingress in=r0 reason=no_route action=pass",
            "vrf=red dir=ingress in=r0 reason=blackhole action=drop",
        ]
    );
    let c = fx.dp.capture.counters().unwrap();
    assert_eq!((c.records, c.rate_limited, c.ring_full), (3, 0, 0));
}

#[test]
fn a_connected_destination_is_the_neighbour_not_a_gateway() {
    let mut fx = Fixture::new();
    let frame = fx.udp(fx.r0, RED_SRC4, RED_DIRECT4);
    start(&mut fx, unlimited());
    assert_eq!(fx.run(fx.r0.ifindex, &frame).action, XDP_REDIRECT);
    let recs = drain(&mut fx.dp.capture);
    assert_eq!(recs.len(), 1);
    let names = {
        let Fixture { ns, dp, .. } = &fx;
        ns.run_in(|| Names::read(&dp.maps)).unwrap()
    };
    assert_eq!(
        names.comment(&recs[0]),
        "vrf=red dir=ingress in=r0 reason=forwarded action=forward out=r1 neighbour=10.1.1.7"
    );
}

#[test]
fn ipv6_and_snaplen() {
    let mut fx = Fixture::new();
    let mut spec = fx.spec(fx.r0, RED_SRC6, RED_REMOTE6);
    spec.payload_len = 400;
    let frame = spec.udp().unwrap();
    start(
        &mut fx,
        Settings {
            snaplen: 96,
            ..unlimited()
        },
    );
    assert_eq!(fx.run(fx.r0.ifindex, &frame).action, XDP_REDIRECT);
    let recs = drain(&mut fx.dp.capture);
    assert_eq!(recs.len(), 1);
    let h = &recs[0].header;
    assert_eq!(h.orig_len as usize, frame.len());
    assert_eq!(h.cap_len, 96);
    assert_eq!(recs[0].data, frame[..96]);
    assert_eq!(recs[0].neighbour(), Some(ip(RED_GW6)));
}

#[test]
fn filters_by_vrf_interface_and_reason() {
    let mut fx = Fixture::new();
    let [fwd, pass, drop] = three_fates(&mut fx);
    let blue = fx.udp(fx.b0, BLUE_SRC4, BLUE_REMOTE4);
    let send_all = |fx: &mut Fixture| {
        for f in [&fwd, &pass, &drop] {
            fx.run(fx.r0.ifindex, f);
        }
        fx.run(fx.b0.ifindex, &blue);
    };
    let reasons_of =
        |recs: &[Record]| -> Vec<Reason> { recs.iter().filter_map(|r| r.reason()).collect() };

    start(
        &mut fx,
        Settings {
            vrf: Some(BLUE),
            ..unlimited()
        },
    );
    send_all(&mut fx);
    let recs = drain(&mut fx.dp.capture);
    assert_eq!(recs.len(), 1, "only blue's packet");
    assert_eq!(
        (recs[0].header.vrf, recs[0].data.clone()),
        (BLUE, blue.clone())
    );

    start(
        &mut fx,
        Settings {
            reasons: Reasons::parse("drop").unwrap(),
            ..unlimited()
        },
    );
    send_all(&mut fx);
    assert_eq!(
        reasons_of(&drain(&mut fx.dp.capture)),
        [Reason::DropBlackhole]
    );

    start(
        &mut fx,
        Settings {
            reasons: Reasons::parse("pass").unwrap(),
            ..unlimited()
        },
    );
    send_all(&mut fx);
    assert_eq!(
        reasons_of(&drain(&mut fx.dp.capture)),
        [Reason::PassNoRoute]
    );

    // An interface matches what arrives on it and what is forwarded out of it.
    let (r1, b0) = (fx.r1.ifindex, fx.b0.ifindex);
    start(
        &mut fx,
        Settings {
            ifindex: Some(r1),
            ..unlimited()
        },
    );
    send_all(&mut fx);
    assert_eq!(reasons_of(&drain(&mut fx.dp.capture)), [Reason::Forwarded]);
    start(
        &mut fx,
        Settings {
            ifindex: Some(b0),
            ..unlimited()
        },
    );
    send_all(&mut fx);
    let recs = drain(&mut fx.dp.capture);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].data, blue);
}

#[test]
fn a_redirect_that_fails_is_recorded_as_the_pass_it_became() {
    let mut fx = Fixture::new();
    let frame = fx.udp(fx.r0, RED_SRC4, RED_REMOTE4);
    let r1 = fx.r1;
    fx.remove_tx_port(r1);
    start(
        &mut fx,
        Settings {
            reasons: Reasons::parse("pass").unwrap(),
            ..unlimited()
        },
    );
    assert_eq!(fx.run(fx.r0.ifindex, &frame).action, XDP_PASS);
    let recs = drain(&mut fx.dp.capture);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].reason(), Some(Reason::PassEgress));
    assert_eq!(recs[0].data, frame);
    // Asked for forwards only, the same packet is not recorded.
    start(
        &mut fx,
        Settings {
            reasons: Reasons::parse("forward").unwrap(),
            ..unlimited()
        },
    );
    assert_eq!(fx.run(fx.r0.ifindex, &frame).action, XDP_PASS);
    assert!(drain(&mut fx.dp.capture).is_empty());
}

#[test]
fn the_vrf_egress_path_records_what_the_host_sent() {
    let mut fx = Fixture::new();
    let mut spec = fx.spec(fx.vblue, BLUE_SRC4, BLUE_REMOTE4);
    spec.ttl = 64;
    let frame = spec.udp().unwrap();
    start(&mut fx, unlimited());
    let r = {
        let Fixture { ns, dp, vblue, .. } = &mut fx;
        ns.run_in(|| dp.run_tc(TcProgram::VrfEgress, vblue.ifindex, &frame))
            .unwrap()
    };
    assert_eq!(r.action, TC_ACT_REDIRECT);
    let recs = drain(&mut fx.dp.capture);
    assert_eq!(recs.len(), 1);
    let h = &recs[0].header;
    assert_eq!(recs[0].data, frame);
    assert_eq!(h.direction, Direction::VrfEgress as u32);
    assert_eq!(
        (h.ifindex, h.vrf, h.oif),
        (fx.vblue.ifindex, BLUE, fx.b1.ifindex)
    );
    assert_eq!(TcAction::from(h.action), TC_ACT_REDIRECT);
    assert_eq!(recs[0].reason(), Some(Reason::Forwarded));
    // What the egress path leaves to the kernel is recorded as such.
    let unrouted = fx.spec(fx.vblue, BLUE_SRC4, "10.250.0.1").udp().unwrap();
    let r = {
        let Fixture { ns, dp, vblue, .. } = &mut fx;
        ns.run_in(|| dp.run_tc(TcProgram::VrfEgress, vblue.ifindex, &unrouted))
            .unwrap()
    };
    assert_eq!(r.action, TC_ACT_OK);
    let recs = drain(&mut fx.dp.capture);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].reason(), Some(Reason::PassNoRoute));
}

#[test]
fn idle_capture_records_nothing_and_counts_nothing() {
    let mut fx = Fixture::new();
    let frames = three_fates(&mut fx);
    fx.run_many(fx.r0.ifindex, &frames);
    assert!(drain(&mut fx.dp.capture).is_empty());
    // Stopped after running, before vrfd cleared the bit: nothing either.
    start(&mut fx, unlimited());
    fx.dp.capture.stop().unwrap();
    fx.run_many(fx.r0.ifindex, &frames);
    assert!(drain(&mut fx.dp.capture).is_empty());
    // A live lease without the bit (vrfd has not looked yet): the bit alone gates the path.
    fx.dp.capture.start(&unlimited()).unwrap();
    link_capture_bit(&mut fx, false);
    fx.run_many(fx.r0.ifindex, &frames);
    assert!(drain(&mut fx.dp.capture).is_empty());
    assert_eq!(fx.dp.capture.counters().unwrap(), Default::default());
}

#[test]
fn an_expired_lease_records_nothing_though_the_bit_is_still_set() {
    let mut fx = Fixture::new();
    let frame = fx.udp(fx.r0, RED_SRC4, RED_REMOTE4);
    // A reader that died a while ago: enabled, lease over, vrfd not yet looked.
    let cfg = CaptureConfig {
        lease_until_ns: monotonic_ns() - 1,
        ..unlimited().config(0)
    };
    fx.dp.capture.config.set(0, cfg, 0).unwrap();
    link_capture_bit(&mut fx, true);
    assert_eq!(fx.run(fx.r0.ifindex, &frame).action, XDP_REDIRECT);
    assert!(drain(&mut fx.dp.capture).is_empty());
    assert_eq!(fx.dp.capture.counters().unwrap(), Default::default());
    assert!(
        !fx.dp.capture.running().unwrap(),
        "what vrfd reads to clear the bit"
    );
}

#[test]
fn the_rate_limit_holds_under_a_flood_and_counts_what_it_drops() {
    let mut fx = Fixture::new();
    let frame = fx.udp(fx.r0, RED_SRC4, "10.99.0.1");
    const RATE: u32 = 100;
    const FLOOD: usize = 5000;
    start(
        &mut fx,
        Settings {
            rate: RATE,
            ..Settings::default()
        },
    );
    let t = Instant::now();
    let frames = vec![frame; FLOOD];
    let results = fx.run_many(fx.r0.ifindex, &frames);
    let elapsed = t.elapsed().as_secs_f64();
    assert!(
        results.iter().all(|r| r.action == XDP_PASS),
        "every packet keeps its fate"
    );
    let recs = drain(&mut fx.dp.capture);
    let c = fx.dp.capture.counters().unwrap();
    // GCRA: a burst of rate/10 (+1), then `rate` per second.
    let allowed = (RATE / 10 + 1) as f64 + RATE as f64 * elapsed + 1.0;
    assert!(
        recs.len() as f64 <= allowed && recs.len() >= (RATE / 10) as usize,
        "{} records in {elapsed:.3}s at {RATE}/s (allowed {allowed:.0})",
        recs.len()
    );
    assert_eq!(c.records as usize, recs.len());
    assert_eq!(
        c.records + c.rate_limited,
        FLOOD as u64,
        "every packet accounted for"
    );
    assert_eq!(c.ring_full, 0);
}

#[test]
fn a_full_ring_drops_records_not_packets() {
    let mut fx = Fixture::new();
    const FLOOD: usize = 3000;
    start(&mut fx, unlimited());
    // A record takes what was captured, not the whole snap: 3000 small frames fit.
    let small = fx.udp(fx.r0, RED_SRC4, RED_REMOTE4);
    fx.run_many(fx.r0.ifindex, &vec![small.clone(); FLOOD]);
    let c = fx.dp.capture.counters().unwrap();
    assert_eq!((c.records, c.ring_full), (FLOOD as u64, 0));
    let recs = drain(&mut fx.dp.capture);
    assert!(recs.len() == FLOOD && recs.iter().all(|r| r.data == small));

    fx.dp.capture.start(&unlimited()).unwrap();
    let mut spec = fx.spec(fx.r0, RED_SRC4, RED_REMOTE4);
    spec.payload_len = 1400;
    let frame = spec.udp().unwrap();
    let results = fx.run_many(fx.r0.ifindex, &vec![frame.clone(); FLOOD]);
    assert!(results.iter().all(|r| r.action == XDP_REDIRECT));
    let c = fx.dp.capture.counters().unwrap();
    let recs = drain(&mut fx.dp.capture);
    assert!(
        c.ring_full > 0,
        "{FLOOD} records of 1.5 KiB overflow a 4 MiB ring"
    );
    assert_eq!(c.records + c.ring_full, FLOOD as u64);
    assert_eq!(recs.len() as u64, c.records);
    assert!(recs.iter().all(|r| r.data == frame));
}

// ---------------------------------------------------------------------------------------------
// Process level: vrfd and `vrfctl capture` on the two-VRF topology with identical addresses.

mod process {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use pcap_file::pcapng::{
        blocks::{
            enhanced_packet::EnhancedPacketOption,
            interface_description::InterfaceDescriptionOption,
        },
        Block, PcapNgReader,
    };
    use tests::daemon::{vrfctl_in, Vrfd};
    use tests::{list_own_netns, ping, tcp_transfer, TopologySpec};
    use vrf_common::LINK_CAPTURE;

    const PINGS: u32 = 4;
    const TCP_BYTES: u64 = 256 << 10;

    /// One packet of the file: its interface's name, the frame, the comment.
    struct Packet {
        ifname: String,
        data: Vec<u8>,
        comment: String,
    }

    fn read_pcapng(path: &Path) -> Vec<Packet> {
        let file = std::fs::File::open(path).unwrap();
        let mut r = PcapNgReader::new(file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut names: Vec<String> = Vec::new();
        let mut out = Vec::new();
        while let Some(block) = r.next_block() {
            match block.unwrap() {
                Block::InterfaceDescription(idb) => names.push(
                    idb.options
                        .iter()
                        .find_map(|o| match o {
                            InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                            _ => None,
                        })
                        .expect("every interface has a name"),
                ),
                Block::EnhancedPacket(epb) => out.push(Packet {
                    ifname: names[epb.interface_id as usize].clone(),
                    data: epb.data.to_vec(),
                    comment: epb
                        .options
                        .iter()
                        .find_map(|o| match o {
                            EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                            _ => None,
                        })
                        .expect("every packet has a comment"),
                }),
                _ => {}
            }
        }
        out
    }

    fn rx_packets(vrfd: &Vrfd<'_>, vrf: &str) -> u64 {
        let stats = vrfd.vrfctl_json(&["stats", "--json"]).unwrap();
        stats["vrfs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == vrf)
            .and_then(|v| v["rx_packets"].as_u64())
            .unwrap_or_else(|| panic!("no {vrf} in {stats:#}"))
    }

    fn is_icmp_echo(data: &[u8]) -> bool {
        data.len() > 34
            && data[12..14] == [0x08, 0x00]
            && data[23] == 1
            && matches!(data[34], 0 | 8)
    }

    fn is_tcp(data: &[u8]) -> bool {
        data.len() > 34 && data[12..14] == [0x08, 0x00] && data[23] == 6
    }

    #[test]
    fn a_capture_in_one_vrf_holds_exactly_its_packets_and_tcpdump_reads_it() {
        let prefix = "cap_proc";
        let topo = TopologySpec::two_vrfs_identical()
            .with_prefix(prefix)
            .built_for_xdp();
        topo.remove_all_rules();
        let router = topo.router();
        let vrfd = Vrfd::start(router, &tests::daemon::topology_config(&topo))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let dir = TempDir::new();
        let file = dir.join("red.pcapng");

        let red_rx0 = rx_packets(&vrfd, "red");
        let mut capture = router
            .spawn([
                tests::bin_path("vrfctl").as_os_str(),
                "--pin-path".as_ref(),
                vrfd.pin_path().as_os_str(),
                "capture".as_ref(),
                "--vrf".as_ref(),
                "red".as_ref(),
                "--rate".as_ref(),
                "0".as_ref(),
                "-w".as_ref(),
                file.as_os_str(),
            ])
            .unwrap();
        capture
            .wait_for_log(|l| l.contains("capturing"), Duration::from_secs(10))
            .unwrap();
        // Hosts' own multicast (MLD, ND) may arrive while the capture starts or stops: what
        // red's members received is bracketed by the counter read around each edge.
        let red_rx1 = rx_packets(&vrfd, "red");

        // A second capture on the same vrfd is refused, clearly.
        let second = vrfctl_in(router, vrfd.pin_path(), &["capture", "--count", "1"]).unwrap();
        assert!(!second.status.success());
        let err = String::from_utf8_lossy(&second.stderr);
        assert!(err.contains("another capture is running"), "{err}");

        // The same traffic, to the same addresses, in both VRFs.
        for vrf in ["red", "blue"] {
            let (a, b) = (topo.host(vrf, 0), topo.host(vrf, 1));
            let p = ping(a, topo.host_addr(vrf, 1, false), PINGS).unwrap();
            assert!(p.all_received(), "{vrf}: {p:?}");
            let got = tcp_transfer(b, topo.host_addr(vrf, 1, false), a, TCP_BYTES).unwrap();
            assert_eq!(got, TCP_BYTES, "{vrf} TCP");
        }
        // Let the last frames reach the reader before it stops.
        std::thread::sleep(Duration::from_millis(300));
        let red_rx = rx_packets(&vrfd, "red");
        let status = capture.stop().unwrap();
        let red_rx_stopped = rx_packets(&vrfd, "red");
        let log = capture.log();
        assert!(status.success(), "capture exited {status}: {log}");
        assert!(
            log.contains("0 by the rate limit (--rate), 0 with the ring buffer full"),
            "{log}"
        );

        let packets = read_pcapng(&file);
        let red_members: Vec<&str> = topo
            .vrf("red")
            .members
            .iter()
            .map(|m| m.ifname.as_str())
            .collect();
        let mut by_if: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &packets {
            assert!(
                red_members.contains(&p.ifname.as_str()),
                "a packet of {} in a capture of red: {}",
                p.ifname,
                p.comment
            );
            assert!(p.comment.starts_with("vrf=red "), "{}", p.comment);
            *by_if
                .entry(red_members.iter().find(|m| **m == p.ifname).unwrap())
                .or_default() += 1;
        }
        // Every packet red's members received while it ran, no more: the data plane's own count.
        let (least, most) = (red_rx - red_rx1, red_rx_stopped - red_rx0);
        assert!(
            (least..=most).contains(&(packets.len() as u64)),
            "{} records, red's rx counter says {least}..={most}; per member {by_if:?}",
            packets.len()
        );
        let echoes: Vec<&Packet> = packets.iter().filter(|p| is_icmp_echo(&p.data)).collect();
        assert_eq!(
            echoes.len() as u32,
            2 * PINGS,
            "requests on red0 and replies on red1"
        );
        for e in &echoes {
            assert!(
                e.comment.contains("reason=forwarded action=forward"),
                "{}",
                e.comment
            );
        }
        let tcp = packets.iter().filter(|p| is_tcp(&p.data)).count();
        assert!(
            tcp as u64 > TCP_BYTES / 1500,
            "{tcp} TCP segments for {TCP_BYTES} bytes"
        );

        // tcpdump reads the file: every packet, and a filter on it.
        let out = std::process::Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(lines, packets.len(), "tcpdump -r sees every packet");
        let out = std::process::Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&file)
            .arg("icmp")
            .output()
            .unwrap();
        let icmp = String::from_utf8_lossy(&out.stdout);
        assert_eq!(icmp.lines().count() as u32, 2 * PINGS, "{icmp}");

        // A killed capture leaves no bit behind: vrfd clears LINK_CAPTURE once the lease ends.
        let mut killed = router
            .spawn([
                tests::bin_path("vrfctl").as_os_str(),
                "--pin-path".as_ref(),
                vrfd.pin_path().as_os_str(),
                "capture".as_ref(),
            ])
            .unwrap();
        killed
            .wait_for_log(|l| l.contains("capturing"), Duration::from_secs(10))
            .unwrap();
        let maps = vrfd.maps().unwrap();
        let bits = |maps: &vrf_user::maps::Maps| -> Vec<bool> {
            maps.links()
                .unwrap()
                .iter()
                .map(|(_, l)| l.flags & LINK_CAPTURE != 0)
                .collect()
        };
        assert!(
            bits(&maps).iter().all(|b| *b),
            "set on every link while capturing"
        );
        killed.signal(libc::SIGKILL).unwrap();
        let t = Instant::now();
        while bits(&maps).iter().any(|b| *b) {
            assert!(
                t.elapsed() < vrf_user::capture::LEASE + Duration::from_secs(2),
                "LINK_CAPTURE still set {:?} after the capture was killed",
                t.elapsed()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(killed);

        // A capture stops by itself when vrfd goes away.
        let mut lines = router
            .spawn([
                tests::bin_path("vrfctl").as_os_str(),
                "--pin-path".as_ref(),
                vrfd.pin_path().as_os_str(),
                "capture".as_ref(),
                "--vrf".as_ref(),
                "blue".as_ref(),
            ])
            .unwrap();
        lines
            .wait_for_log(|l| l.contains("capturing"), Duration::from_secs(10))
            .unwrap();
        let p = ping(topo.host("blue", 0), topo.host_addr("blue", 1, false), 1).unwrap();
        assert!(p.all_received());
        vrfd.stop().unwrap();
        let t = Instant::now();
        let st = loop {
            if let Some(st) = lines.try_wait().unwrap() {
                break st;
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "capture still running after vrfd stopped"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = lines.log();
        assert!(!st.success() && log.contains("vrfd stopped"), "{st}: {log}");
        assert!(
            log.contains("ICMP echo request") && log.contains("| blue forwarded out"),
            "{log}"
        );
        drop(lines);
        drop(capture);
        drop(topo);
        assert!(
            list_own_netns(prefix).unwrap().is_empty(),
            "namespaces left behind"
        );
    }

    /// A directory for the capture file, removed even when the test fails.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let d = std::env::temp_dir()
                .join(format!("vrf-xdp-capture-{}", tests::cmd::unique_suffix()));
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }

        fn join(&self, name: &str) -> std::path::PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
