//! The differential under churn (#13): random, seeded sequences of route operations (add,
//! replace, append, prepend, delete, unreachable/blackhole/prohibit, multipath and partial
//! multipath deletes, IPv4 and IPv6), link operations (a member admin down/up, a host's carrier
//! lost and back) and address operations (a member's address removed and restored with its
//! connected route) applied to a live kernel while vrfd runs. After each batch, once vrfd had
//! time to follow, every route of every VRF (the kernel's and the maps' prefixes) is compared by
//! `vrfctl verify` (RTM_GETROUTE with the member as iif against the loaded program through
//! BPF_PROG_TEST_RUN): a disagreement that does not go away is a wrong decision.
//!
//! CI size: 300 operations; `cargo xtask test --long` (VRF_XDP_LONG=1): 10,000. The seed is
//! printed; `VRF_XDP_SEED=N` replays it.
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::Value;
use tests::daemon::{start_on, Vrfd};
use tests::differential::{long, seed};
use tests::{list_own_netns, require_root, TopologySpec};

/// Operations between two comparisons.
const BATCH: usize = 10;
/// How long vrfd may take to follow a batch.
const SETTLE: Duration = Duration::from_secs(3);

/// (VRF, table, [(member, IPv4 gateway, IPv6 gateway)]) of the three-member topology.
const VRFS: [(&str, u32); 2] = [("red", 110), ("blue", 120)];

fn gateways(vrf: &str) -> Vec<(String, &'static str, &'static str)> {
    [
        ("1", "10.0.2.2", "fd00:2::2"),
        ("2", "10.0.3.2", "fd00:3::2"),
    ]
    .into_iter()
    .map(|(i, g4, g6)| (format!("{vrf}{i}"), g4, g6))
    .collect()
}

/// One random operation as `ip -batch` lines (errors such as EEXIST or ESRCH are the kernel's
/// answer, not the test's: `ip -force` goes on).
fn operation(rng: &mut StdRng, churned: &mut Vec<String>) -> Vec<String> {
    let (vrf, table) = VRFS[rng.random_range(0..VRFS.len())];
    let gws = gateways(vrf);
    let v6 = rng.random_bool(0.4);
    let prefix = if v6 {
        let n: u32 = rng.random_range(0..6);
        match n {
            0 => "fd50::/32".to_string(),
            _ => format!("fd50:{n}::/48"),
        }
    } else {
        match rng.random_range(0..8) {
            0 => "10.50.0.0/16".to_string(),
            1 => "10.0.0.0/8".to_string(),
            n => format!("10.50.{}.0/24", n - 2),
        }
    };
    let fam = if v6 { "-6" } else { "-4" };
    let hop = |rng: &mut StdRng| {
        let (dev, g4, g6) = &gws[rng.random_range(0..gws.len())];
        format!("via {} dev {dev}", if v6 { g6 } else { g4 })
    };
    let t = format!("table {table}");
    let line = match rng.random_range(0..100) {
        0..=14 => format!("{fam} route add {prefix} {} {t}", hop(rng)),
        15..=29 => format!("{fam} route replace {prefix} {} {t}", hop(rng)),
        30..=39 => format!("{fam} route append {prefix} {} {t}", hop(rng)),
        40..=44 => format!("{fam} route prepend {prefix} {} {t}", hop(rng)),
        45..=59 => format!("{fam} route del {prefix} {t}"),
        60..=64 => format!("{fam} route del {prefix} {} {t}", hop(rng)),
        65..=72 => {
            let kind = ["unreachable", "blackhole", "prohibit"][rng.random_range(0..3)];
            let verb = ["add", "replace", "append"][rng.random_range(0..3)];
            format!("{fam} route {verb} {kind} {prefix} {t}")
        }
        73..=82 => {
            let (a, b) = (&gws[0], &gws[1]);
            let (ga, gb) = if v6 { (a.2, b.2) } else { (a.1, b.1) };
            let w = rng.random_range(1..4);
            format!(
                "{fam} route replace {prefix} {t} nexthop via {ga} dev {} weight {w} nexthop via {gb} dev {}",
                a.0, b.0
            )
        }
        83..=86 => {
            // A member's carrier (its host's end down) or admin state.
            let (dev, _, _) = &gws[rng.random_range(0..gws.len())];
            churned.push(dev.clone());
            return vec![format!("link set {dev} down")];
        }
        87..=90 => {
            // Back up, with what admin-down took (IPv6 keeps nothing, IPv4 its connected route).
            let Some(dev) = churned.pop() else {
                return vec![];
            };
            return restore(&dev, table);
        }
        91..=94 => {
            // The member's address removed (its connected routes in the VRF's table too).
            let (dev, g4, _) = &gws[rng.random_range(0..gws.len())];
            let net = &g4[..g4.len() - 2];
            churned.push(dev.clone());
            return vec![
                format!("-4 addr del {net}.1/24 dev {dev}"),
                format!("-4 route del {net}.0/24 dev {dev} {t}"),
            ];
        }
        _ => format!("{fam} route flush {t} proto boot"),
    };
    vec![line]
}

/// A member back as the topology built it: up, its addresses, connected routes in its table.
fn restore(dev: &str, table: u32) -> Vec<String> {
    let n = if dev.ends_with('1') { 2 } else { 3 };
    vec![
        format!("link set {dev} up"),
        format!("-4 addr add 10.0.{n}.1/24 dev {dev} noprefixroute"),
        format!("-6 addr add fd00:{n}::1/64 dev {dev} nodad noprefixroute"),
        format!("-4 route add 10.0.{n}.0/24 dev {dev} table {table} proto kernel"),
        format!("-6 route add fd00:{n}::/64 dev {dev} table {table} proto kernel"),
    ]
}

fn verify(vrfd: &Vrfd<'_>) -> (i32, Value) {
    let out = vrfd
        .vrfctl(&["verify", "--json"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "vrfctl verify: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

#[test]
fn the_data_plane_follows_the_kernel_under_random_churn() {
    require_root();
    let seed = seed("churn");
    let ops = if long() { 10_000 } else { 300 };
    let prefix = "ch_churn";
    let topo = TopologySpec::two_vrfs_three_members()
        .with_prefix(prefix)
        .built_for_xdp();
    let mut vrfd = start_on(&topo);
    let r = topo.router();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut churned = Vec::new();
    let (mut done, mut batches, mut compared) = (0, 0, 0u64);
    let mut history = String::new();
    let dir = tempfile_dir();
    let t0 = Instant::now();
    while done < ops {
        let mut lines = Vec::new();
        while lines.len() < BATCH {
            lines.extend(operation(&mut rng, &mut churned));
        }
        done += lines.len();
        batches += 1;
        // The last batches only, to replay by hand.
        if batches % 20 == 0 {
            history.clear();
        }
        let _ = writeln!(history, "# batch {batches}\n{}", lines.join("\n"));
        let file = dir.join("batch");
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        // Errors are the kernel's answers (EEXIST, ESRCH…): -force goes on.
        let _ = r.ip(&["-force", "-batch", file.to_str().unwrap()]);
        // vrfd's events first: a comparison while it is still applying them proves little.
        std::thread::sleep(Duration::from_millis(50));
        let settle = Instant::now();
        loop {
            let (code, report) = verify(&vrfd);
            if code == 0 {
                compared += report["checked"].as_u64().unwrap_or(0);
                break;
            }
            assert!(
                settle.elapsed() < SETTLE,
                "seed {seed}: after batch {batches} ({done} operations) the data plane still \
                 disagrees with the kernel:\n{report:#}\nlast operations:\n{history}\n\
                 kernel table 110:\n{}\ntable 120:\n{}",
                r.ip(&["route", "show", "table", "110"]).unwrap_or_default()
                    + &r.ip(&["-6", "route", "show", "table", "110"])
                        .unwrap_or_default(),
                r.ip(&["route", "show", "table", "120"]).unwrap_or_default(),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        vrfd.check_running().unwrap();
    }
    eprintln!(
        "churn: {done} operations in {batches} batches, {compared} destinations compared, in {:?}",
        t0.elapsed()
    );
    // Everything back, and still forwarding as before.
    let mut back = Vec::new();
    while let Some(dev) = churned.pop() {
        let table = if dev.starts_with("red") { 110 } else { 120 };
        back.extend(restore(&dev, table));
    }
    std::fs::write(dir.join("batch"), back.join("\n") + "\n").unwrap();
    let _ = r.ip(&["-force", "-batch", dir.join("batch").to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    vrfd.check_running().unwrap();
    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vrf-xdp-churn-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
