//! Malformed and unusual frames through the XDP program (BPF_PROG_TEST_RUN), checked against an
//! independent judge (`tests::fuzzing::RefModel`, from the kernel's rules, not `forward.rs`):
//! - never XDP_ABORTED or XDP_TX; a passed frame comes back untouched;
//! - a drop only where the kernel drops too: a header `ip_rcv_core` / `ip6_rcv_core` refuses
//!   (sent to the member's MAC), or a blackhole route;
//! - a forward only where the kernel would forward and the data plane's documented limits allow
//!   (no TTL ≤ 1, no IPv4 options, no hop-by-hop header, no multicast / broadcast / link-local /
//!   martian address, addressed to the member's MAC, a unicast route of the member's own VRF, an
//!   up egress other than the ingress, within the MTU, a known neighbour), and then exactly once:
//!   the egress link's MAC and the neighbour's, TTL / hop limit one lower, a valid IPv4 header
//!   checksum, padding trimmed, every other byte the same;
//! - `xdp_vrf` and `xdp_vrf_explain` agree on the action and the frame, and explain's egress and
//!   neighbour are an allowed path.
//!
//! Frames: seeds for every decision of the fixture (`tests::dataplane`, plus blackhole, local,
//! unreachable, prohibit, throw, MTU-limited, multipath and leaked routes added here), every seed
//! truncated at every length and with every header byte set to boundary values, then random
//! structure-aware mutations (`tests::fuzzing::Mutator`). The seed is printed; `VRF_XDP_LONG=1`
//! runs ten times as many frames.
//!
//! Corpus (`tests/corpus/fuzz/*.hex`): frames worth keeping, replayed by
//! `corpus_frames_still_hold` every run. A failing frame is always written there (`fail-*.hex`);
//! with `VRF_XDP_FUZZ_SAVE=1` the first frame of every (reason, kind of frame) not yet in the
//! corpus is written too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{rngs::StdRng, SeedableRng};
use tests::dataplane::nexthop;
use tests::dataplane::*;
use tests::fuzzing::{CorpusEntry, Mutator, RefModel, Seed};
use tests::invariants::{fix_ipv4_checksum, hex, ETH_LEN};
use vrf_common::RouteKind;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join("fuzz")
}

/// The fixture with the routes the fuzzer aims at.
fn world() -> Fixture {
    let mut fx = Fixture::new();
    let (r1, r2, r3, b1, vblue) = (
        fx.r1.ifindex,
        fx.r2.ifindex,
        fx.r3.ifindex,
        fx.b1.ifindex,
        fx.vblue.ifindex,
    );
    for (p4, p6, kind) in [
        ("10.66.0.0/16", "fd00:66::/32", RouteKind::Blackhole),
        ("10.67.0.0/16", "fd00:67::/32", RouteKind::Unreachable),
        ("10.68.0.0/16", "fd00:68::/32", RouteKind::Prohibit),
        ("10.69.0.0/16", "fd00:69::/32", RouteKind::Throw),
        ("10.1.0.1/32", "fd00:1::1/128", RouteKind::Local),
    ] {
        fx.typed_route(RED_TABLE, p4, kind);
        fx.typed_route(RED_TABLE, p6, kind);
    }
    fx.typed_route(RED_TABLE, "10.1.0.255/32", RouteKind::Broadcast);
    // A route MTU below the link's.
    fx.route(
        RED_TABLE,
        "10.101.0.0/16",
        RouteKind::Unicast,
        600,
        &[nexthop(r2, Some(ip("10.1.2.1")))],
    );
    fx.route(
        RED_TABLE,
        "fd00:101::/32",
        RouteKind::Unicast,
        1280,
        &[nexthop(r2, Some(ip("fd00:1:2::1")))],
    );
    // Multipath over three gateways.
    fx.unicast(
        RED_TABLE,
        "10.102.0.0/16",
        &[
            nexthop(r1, Some(ip("10.1.1.1"))),
            nexthop(r2, Some(ip("10.1.2.1"))),
            nexthop(r3, Some(ip("10.1.3.1"))),
        ],
    );
    fx.unicast(
        RED_TABLE,
        "fd00:102::/32",
        &[
            nexthop(r1, Some(ip("fd00:1:1::1"))),
            nexthop(r2, Some(ip("fd00:1:2::1"))),
            nexthop(r3, Some(ip("fd00:1:3::1"))),
        ],
    );
    // Leaked into blue through its VRF device: forwarded there, or blackholed there.
    for (p4, p6) in [
        ("10.250.0.0/16", "fd00:250::/32"),
        ("10.251.0.0/16", "fd00:251::/32"),
    ] {
        fx.unicast(RED_TABLE, p4, &[nexthop(vblue, None)]);
        fx.unicast(RED_TABLE, p6, &[nexthop(vblue, None)]);
    }
    fx.unicast(
        BLUE_TABLE,
        "10.250.0.0/16",
        &[nexthop(b1, Some(ip(BLUE_GW4)))],
    );
    fx.unicast(
        BLUE_TABLE,
        "fd00:250::/32",
        &[nexthop(b1, Some(ip(BLUE_GW6)))],
    );
    fx.typed_route(BLUE_TABLE, "10.251.0.0/16", RouteKind::Blackhole);
    fx.typed_route(BLUE_TABLE, "fd00:251::/32", RouteKind::Blackhole);
    // Red's blackhole is a route in blue: a lookup in the wrong table forwards instead of drops.
    fx.unicast(
        BLUE_TABLE,
        "10.66.0.0/16",
        &[nexthop(b1, Some(ip(BLUE_GW4)))],
    );
    fx.unicast(
        BLUE_TABLE,
        "fd00:66::/32",
        &[nexthop(b1, Some(ip(BLUE_GW6)))],
    );
    fx
}

fn ifaces(fx: &Fixture) -> Vec<Iface> {
    let mut v = fx.known_links().to_vec();
    v.push(fx.outsider);
    v
}

fn iface_by_name(fx: &Fixture, name: &str) -> Option<Iface> {
    ifaces(fx).into_iter().find(|i| i.name == name)
}

fn iface_by_index(fx: &Fixture, ifindex: u32) -> Iface {
    ifaces(fx)
        .into_iter()
        .find(|i| i.ifindex == ifindex)
        .expect("fixture link")
}

fn seeds(fx: &Fixture) -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |ingress: Iface, src: &str, dst: &str, payload: usize, ttl: u8, tcp: bool| {
        let mut s = fx.spec(ingress, src, dst);
        s.payload_len = payload;
        s.ttl = ttl;
        let frame = if tcp { s.tcp() } else { s.udp() }.expect("seed frame");
        out.push(Seed {
            ingress: ingress.ifindex,
            frame,
        });
    };
    let red4 = [
        RED_REMOTE4,
        RED_DIRECT4,
        "10.1.1.9",
        "10.66.0.1",
        "10.67.0.1",
        "10.68.0.1",
        "10.69.0.1",
        "10.1.0.1",
        "10.1.0.255",
        "10.101.0.1",
        "10.102.0.7",
        "10.250.0.1",
        "10.251.0.1",
        "10.99.0.1",
        "10.1.0.7",
    ];
    let red6 = [
        RED_REMOTE6,
        RED_DIRECT6,
        "fd00:1:1::9",
        "fd00:66::1",
        "fd00:67::1",
        "fd00:68::1",
        "fd00:69::1",
        "fd00:1::1",
        "fd00:101::1",
        "fd00:102::7",
        "fd00:250::1",
        "fd00:251::1",
        "fd00:99::1",
        "fd00:1::7",
    ];
    for (i, d) in red4.iter().enumerate() {
        add(fx.r0, RED_SRC4, d, 18 + 37 * i, 64, i % 3 == 0);
    }
    for (i, d) in red6.iter().enumerate() {
        add(fx.r0, RED_SRC6, d, 18 + 41 * i, 64, i % 3 == 1);
    }
    add(fx.r0, RED_SRC4, "10.101.0.1", 1000, 64, false);
    add(fx.r0, RED_SRC6, "fd00:101::1", 1400, 64, false);
    add(fx.r0, RED_SRC4, RED_REMOTE4, 0, 1, false);
    add(fx.r0, RED_SRC6, RED_REMOTE6, 0, 2, true);
    add(fx.r1, "10.1.1.7", RED_REMOTE4, 18, 64, false);
    for d in [BLUE_REMOTE4, BLUE_DIRECT4, "10.66.0.1"] {
        add(fx.b0, BLUE_SRC4, d, 18, 64, false);
    }
    for d in [BLUE_REMOTE6, BLUE_DIRECT6, "fd00:66::1"] {
        add(fx.b0, BLUE_SRC6, d, 18, 64, true);
    }
    // ARP, padded.
    let mut arp = Vec::new();
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&HOST_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&HOST_MAC);
    arp.extend_from_slice(&[10, 1, 0, 2, 0, 0, 0, 0, 0, 0, 10, 1, 0, 1]);
    arp.resize(60, 0);
    out.push(Seed {
        ingress: fx.r0.ifindex,
        frame: arp,
    });
    out
}

fn mutator(fx: &Fixture) -> Mutator {
    let addrs4 = [
        RED_SRC4,
        RED_REMOTE4,
        RED_DIRECT4,
        RED_GW4,
        BLUE_SRC4,
        BLUE_REMOTE4,
        "10.66.0.1",
        "10.1.0.1",
        "10.1.0.255",
        "10.102.0.9",
        "10.250.0.3",
        "10.251.0.3",
        "0.0.0.0",
        "0.1.2.3",
        "127.0.0.1",
        "169.254.9.9",
        "224.0.0.5",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "10.1.1.9",
    ];
    let addrs6 = [
        RED_SRC6,
        RED_REMOTE6,
        RED_DIRECT6,
        RED_GW6,
        BLUE_REMOTE6,
        "fd00:66::1",
        "fd00:1::1",
        "fd00:102::9",
        "fd00:250::3",
        "fd00:251::3",
        "::",
        "::1",
        "::ffff:10.1.1.7",
        "fe80::1",
        "ff02::1",
        "ff01::1",
        "ff0e::1",
        "ff00::1",
    ];
    Mutator {
        seeds: seeds(fx),
        links: ifaces(fx).iter().map(|i| (i.ifindex, i.mac)).collect(),
        addrs4: addrs4.iter().map(|a| a.parse().unwrap()).collect(),
        addrs6: addrs6.iter().map(|a| a.parse().unwrap()).collect(),
    }
}

/// "v4", "v4-options", "v4-fragment", "v4-padded", "v6", "v6-ext", "v6-padded", "vlan", … :
/// what kind of frame, for corpus keys.
fn class(frame: &[u8]) -> &'static str {
    if frame.len() < ETH_LEN {
        return "runt";
    }
    let ip = &frame[ETH_LEN..];
    match [frame[12], frame[13]] {
        [0x08, 0x00] if ip.len() >= 20 => {
            let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            if ip[0] & 0x0f > 5 {
                "v4-options"
            } else if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                "v4-fragment"
            } else if ip.len() > tot {
                "v4-padded"
            } else {
                "v4"
            }
        }
        [0x86, 0xdd] if ip.len() >= 40 => {
            let len = 40 + u16::from_be_bytes([ip[4], ip[5]]) as usize;
            if matches!(ip[6], 43 | 44 | 60) {
                "v6-ext"
            } else if ip.len() > len {
                "v6-padded"
            } else {
                "v6"
            }
        }
        [0x08, 0x00] => "v4-short",
        [0x86, 0xdd] => "v6-short",
        [0x81, 0x00] | [0x88, 0xa8] => "vlan",
        _ => "other",
    }
}

/// One frame through both programs, judged. `Ok(reason)`, or the failure.
fn judge_one(
    fx: &mut Fixture,
    model: &RefModel,
    ingress: u32,
    frame: &[u8],
) -> anyhow::Result<Result<&'static str, String>> {
    let Fixture { ns, dp, .. } = fx;
    let (run, e) = ns.run_in(|| -> anyhow::Result<_> {
        Ok((dp.run(ingress, frame)?, dp.explain(ingress, frame).ok()))
    })?;
    Ok(check_one(model, ingress, frame, &run, e.as_ref()))
}

fn check_one(
    model: &RefModel,
    ingress: u32,
    frame: &[u8],
    run: &vrf_user::dataplane::RunResult,
    e: Option<&vrf_user::dataplane::Explanation>,
) -> Result<&'static str, String> {
    let explained = e.map(|e| (e.oif, e.neighbour));
    model.check(ingress, frame, run.action, &run.frame, explained)?;
    match e {
        // Not a member: explain records nothing; the fast path must have passed.
        None => Ok("not_a_member"),
        Some(e) => {
            if e.action != run.action || e.frame != run.frame {
                return Err(format!(
                    "xdp_vrf returned {} ({} bytes), xdp_vrf_explain {} ({} bytes)",
                    action_name(run.action),
                    run.frame.len(),
                    action_name(e.action),
                    e.frame.len()
                ));
            }
            Ok(e.reason.name())
        }
    }
}

fn save(entry: &CorpusEntry, name: &str) -> PathBuf {
    let dir = corpus_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(name);
    if let Err(e) = std::fs::write(&path, entry.render()) {
        eprintln!("could not write {}: {e}", path.display());
    }
    path
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// (reason, class) keys the corpus already has.
fn corpus_keys() -> BTreeSet<(String, String)> {
    let mut keys = BTreeSet::new();
    for (_, e) in read_corpus() {
        let get = |k: &str| {
            e.notes
                .iter()
                .find_map(|n| n.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        if let (Some(r), Some(c)) = (get("reason:"), get("class:")) {
            keys.insert((r, c));
        }
    }
    keys
}

fn read_corpus() -> Vec<(PathBuf, CorpusEntry)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(corpus_dir()) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "hex"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        match CorpusEntry::parse(&text) {
            Ok(e) => out.push((p, e)),
            Err(err) => panic!("corpus file {}: {err:#}", p.display()),
        }
    }
    out
}

#[test]
fn malformed_and_mutated_frames_never_break_the_rules() {
    let seed = tests::differential::seed("fuzz");
    let long = tests::differential::long();
    let random_frames: usize = if long { 2_000_000 } else { 200_000 };
    let save_new = std::env::var("VRF_XDP_FUZZ_SAVE").is_ok_and(|v| v == "1");
    let mut fx = world();
    let model = RefModel::from_maps(&fx.dp.maps).expect("reading the maps");
    let mutator = mutator(&fx);
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();

    // Deterministic sweeps first: every seed at every length, every header byte at its bounds.
    let mut frames: Vec<(u32, Vec<u8>)> = Vec::new();
    for s in &mutator.seeds {
        for len in ETH_LEN..s.frame.len() {
            frames.push((s.ingress, s.frame[..len].to_vec()));
        }
        for i in 0..s.frame.len().min(ETH_LEN + 48) {
            for v in [0x00, 0xff, s.frame[i] ^ 0x01, s.frame[i] ^ 0x80] {
                let mut f = s.frame.clone();
                f[i] = v;
                frames.push((s.ingress, f.clone()));
                if f[12..14] == [0x08, 0x00] && i != ETH_LEN + 10 && i != ETH_LEN + 11 {
                    fix_ipv4_checksum(&mut f);
                    frames.push((s.ingress, f));
                }
            }
        }
    }
    let sweep = frames.len();

    let mut reasons: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
    let mut first: BTreeMap<(String, &'static str), (u32, Vec<u8>)> = BTreeMap::new();
    let mut failures: Vec<(u32, Vec<u8>, String)> = Vec::new();
    let mut actions = [0usize; 5];
    let total = sweep + random_frames;
    {
        let Fixture { ns, dp, .. } = &mut fx;
        ns.run_in(|| -> anyhow::Result<()> {
            let mut swept = std::mem::take(&mut frames).into_iter();
            for _ in 0..total {
                let (ingress, frame) = match swept.next() {
                    Some(f) => f,
                    None => mutator.next(&mut rng),
                };
                let run = dp.run(ingress, &frame)?;
                let e = dp.explain(ingress, &frame).ok();
                actions[(u32::from(run.action) as usize).min(4)] += 1;
                match check_one(&model, ingress, &frame, &run, e.as_ref()) {
                    Ok(reason) => {
                        let key = (reason.to_string(), class(&frame));
                        *reasons.entry(key.clone()).or_default() += 1;
                        first.entry(key).or_insert((ingress, frame));
                    }
                    Err(why) => {
                        if failures.len() < 1000 {
                            failures.push((ingress, frame, why));
                        }
                    }
                }
            }
            Ok(())
        })
        .expect("running the fuzzer");
    }
    let elapsed = t0.elapsed();
    println!(
        "fuzz: {total} frames ({sweep} from the sweeps, {random_frames} mutated) in {elapsed:.2?}: \
         {} dropped, {} passed, {} forwarded",
        actions[1], actions[2], actions[4]
    );
    for ((r, c), n) in &reasons {
        println!("  {r:<16} {c:<11} {n}");
    }

    let have = corpus_keys();
    if save_new {
        for ((reason, class), (ingress, frame)) in &first {
            if have.contains(&(reason.clone(), class.to_string())) {
                continue;
            }
            let entry = CorpusEntry {
                ingress: iface_by_index(&fx, *ingress).name.to_string(),
                notes: vec![
                    format!("reason: {reason}"),
                    format!("class: {class}"),
                    format!("found by the fuzzer, seed {seed}"),
                ],
                frame: frame.clone(),
            };
            let p = save(&entry, &format!("{reason}-{class}.hex"));
            println!("saved {}", p.display());
        }
    }
    if !failures.is_empty() {
        let mut text = Vec::new();
        for (ingress, frame, why) in failures.iter().take(20) {
            let name = iface_by_index(&fx, *ingress).name;
            let entry = CorpusEntry {
                ingress: name.to_string(),
                notes: vec![
                    format!("failure: {why}"),
                    format!("found by the fuzzer, seed {seed}"),
                ],
                frame: frame.clone(),
            };
            let p = save(&entry, &format!("fail-{:016x}.hex", fnv(frame)));
            text.push(format!(
                "on {name}: {why}\n    {}\n    saved as {}",
                hex(frame),
                p.display()
            ));
        }
        panic!(
            "seed {seed}: {} of {total} frames broke the rules:\n{}",
            failures.len(),
            text.join("\n")
        );
    }
    // The fuzzer reached every decision it can reach with this fixture.
    let seen: BTreeSet<&str> = reasons.keys().map(|(r, _)| r.as_str()).collect();
    for r in [
        "forwarded",
        "not_ip",
        "other_host",
        "ip_options",
        "hop_by_hop",
        "multicast",
        "link_local",
        "local",
        "ttl",
        "no_route",
        "unreachable",
        "prohibit",
        "throw",
        "no_neighbour",
        "mtu",
        "martian",
        "egress",
        "malformed",
        "bad_checksum",
        "blackhole",
    ] {
        assert!(seen.contains(r), "seed {seed}: no frame reached reason {r}");
    }
}

/// Every frame of the corpus still obeys the rules (see the module documentation).
#[test]
fn corpus_frames_still_hold() {
    let corpus = read_corpus();
    assert!(
        !corpus.is_empty(),
        "no corpus under {}",
        corpus_dir().display()
    );
    let mut fx = world();
    let model = RefModel::from_maps(&fx.dp.maps).expect("reading the maps");
    let mut failures = Vec::new();
    for (path, entry) in &corpus {
        let ingress = iface_by_name(&fx, &entry.ingress)
            .unwrap_or_else(|| panic!("{}: unknown ingress {}", path.display(), entry.ingress));
        match judge_one(&mut fx, &model, ingress.ifindex, &entry.frame).expect("running") {
            Ok(reason) => {
                let recorded = entry
                    .notes
                    .iter()
                    .find_map(|n| n.strip_prefix("reason:").map(str::trim));
                if recorded.is_some_and(|r| r != reason) {
                    println!(
                        "{}: now {reason} (recorded {})",
                        path.display(),
                        recorded.unwrap_or_default()
                    );
                }
            }
            Err(why) => failures.push(format!("{}: {why}", path.display())),
        }
    }
    println!("{} corpus frames replayed", corpus.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The judge itself refuses wrong answers, so the fuzzer's silence means something: a drop or
/// an untouched "forward" of a forwardable frame, a forward of a TTL-1 frame, a wrong MAC, a
/// missing TTL decrement, a rewritten pass, a forward to the other VRF's next hop.
#[test]
fn the_judge_refuses_wrong_answers() {
    use vrf_user::dataplane::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
    let mut fx = world();
    let model = RefModel::from_maps(&fx.dp.maps).expect("reading the maps");
    let frame = fx.udp(fx.r0, RED_SRC4, RED_REMOTE4);
    let run = fx.run(fx.r0.ifindex, &frame);
    assert_eq!(run.action, XDP_REDIRECT);
    let ok = |action, out: &[u8]| model.check(fx.r0.ifindex, &frame, action, out, None);
    assert_eq!(ok(XDP_REDIRECT, &run.frame), Ok(()));
    assert_eq!(ok(XDP_PASS, &frame), Ok(()));
    assert!(
        ok(XDP_DROP, &frame).is_err(),
        "a drop of a forwardable frame"
    );
    assert!(
        ok(XDP_REDIRECT, &frame).is_err(),
        "a forward without rewrite"
    );
    assert!(
        ok(XDP_PASS, &run.frame).is_err(),
        "a pass of a modified frame"
    );
    assert!(
        ok(XDP_ABORTED, &frame).is_err() && ok(XDP_TX, &frame).is_err(),
        "aborted / tx"
    );
    let mut wrong_mac = run.frame.clone();
    wrong_mac[5] ^= 1;
    assert!(
        ok(XDP_REDIRECT, &wrong_mac).is_err(),
        "a wrong neighbour MAC"
    );
    let mut no_ttl = run.frame.clone();
    no_ttl[22] += 1;
    fix_ipv4_checksum(&mut no_ttl);
    assert!(ok(XDP_REDIRECT, &no_ttl).is_err(), "TTL not decremented");
    let mut bad_sum = run.frame.clone();
    bad_sum[24] ^= 0x10;
    assert!(ok(XDP_REDIRECT, &bad_sum).is_err(), "a bad checksum");
    // Out of blue's gateway instead (what a lookup in the wrong VRF would do).
    let mut other_vrf = run.frame.clone();
    other_vrf[..6].copy_from_slice(&neigh_mac(fx.b1.id, 1, false));
    other_vrf[6..12].copy_from_slice(&fx.b1.mac);
    assert!(
        ok(XDP_REDIRECT, &other_vrf).is_err(),
        "a forward out of blue"
    );
    // The same frame with TTL 1 may not be forwarded, even rewritten correctly.
    let mut ttl1 = frame.clone();
    ttl1[22] = 1;
    fix_ipv4_checksum(&mut ttl1);
    let mut ttl1_out = run.frame.clone();
    ttl1_out[22] = 0;
    fix_ipv4_checksum(&mut ttl1_out);
    assert!(model
        .check(fx.r0.ifindex, &ttl1, XDP_REDIRECT, &ttl1_out, None)
        .is_err());
    // A blackhole drop is allowed, and so is the drop of a bad checksum; not in blue.
    let bh = fx.udp(fx.r0, RED_SRC4, "10.66.0.1");
    assert_eq!(model.check(fx.r0.ifindex, &bh, XDP_DROP, &bh, None), Ok(()));
    let bh_blue = fx.udp(fx.b0, BLUE_SRC4, "10.66.0.1");
    assert!(model
        .check(fx.b0.ifindex, &bh_blue, XDP_DROP, &bh_blue, None)
        .is_err());
    let mut bad = frame.clone();
    bad[24] ^= 0xff;
    assert_eq!(
        model.check(fx.r0.ifindex, &bad, XDP_DROP, &bad, None),
        Ok(())
    );
}
