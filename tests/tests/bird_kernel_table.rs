//! A BIRD router on the fast path: BIRD's kernel protocol writes weighted multipath straight
//! into a declared VRF's table (`kernel table 110`), from static routes with `via … weight N`.
//! vrfd serves it: the weights are in the maps (the group's 1024 buckets split as the weights
//! say), and real flows from host C spread over hosts A and B in proportion, with the router's
//! kernel forwarding none of them.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::daemon::Vrfd;
use tests::{bird::Bird, forwarded_datagrams, require_root, TopologySpec};
use vrf_common::{NEXTHOP_BUCKETS, NH_GATEWAY};

const WEIGHTED: &str = "10.9.0.0/24";
const EVEN: &str = "10.9.1.0/24";
const FLOWS: u16 = 800;
const PORT: u16 = 5201;

fn bird_conf() -> String {
    // Host A is 10.0.1.2 behind red0, host B 10.0.2.2 behind red1 (BIRD's weight is the
    // kernel's rtnh_hops + 1).
    format!(
        "log stderr all;
router id 10.0.3.1;
protocol device {{ }}
protocol static {{
  ipv4;
  route {WEIGHTED} via 10.0.1.2 weight 1 via 10.0.2.2 weight 3;
  route {EVEN} via 10.0.1.2 via 10.0.2.2;
}}
protocol kernel {{
  kernel table 110;
  ipv4 {{ import none; export all; }};
}}
"
    )
}

/// Gateway (dotted) → share of the 1024 buckets of the group vrfd wrote for `prefix` in 110.
fn bucket_shares(vrfd: &Vrfd<'_>, prefix: &str) -> Option<BTreeMap<Ipv4Addr, usize>> {
    let maps = vrfd.maps().unwrap_or_else(|e| panic!("{e:#}"));
    let prefix: ipnet::IpNet = prefix.parse().unwrap();
    let (_, _, route) = maps
        .routes()
        .unwrap()
        .into_iter()
        .find(|(t, p, _)| *t == 110 && *p == prefix)?;
    let group = maps.nexthops.get(&route.nexthop, 0).ok()?;
    let mut shares = BTreeMap::new();
    for &b in &group.buckets {
        let path = group.paths[usize::from(b)];
        assert_ne!(path.flags & NH_GATEWAY, 0, "{path:?}");
        let gw = Ipv4Addr::new(
            path.gateway[0],
            path.gateway[1],
            path.gateway[2],
            path.gateway[3],
        );
        *shares.entry(gw).or_default() += 1;
    }
    Some(shares)
}

#[test]
fn birds_weighted_multipath_in_a_vrf_table_spreads_flows_by_weight() {
    require_root();
    assert!(
        tests::bird::available(),
        "BIRD is not installed: run `cargo xtask setup`"
    );
    let topo = TopologySpec::two_vrfs_three_members()
        .with_prefix("birdkt")
        .built_for_xdp();
    let r = topo.router();
    let vrfd = Vrfd::start(
        r,
        "[[vrf]]\nname = \"red\"\ntable = 110\ninterfaces = [\"red0\", \"red1\", \"red2\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let bird = Bird::start(r, &bird_conf()).unwrap();

    // BIRD writes the routes into table 110 with the weights (`ip` prints rtnh_hops + 1).
    let t0 = Instant::now();
    let weights = loop {
        let routes: Value = serde_json::from_str(
            &r.ip(&["-j", "route", "show", "table", "110", WEIGHTED])
                .unwrap(),
        )
        .unwrap();
        let w: Vec<(String, u64)> = routes[0]["nexthops"]
            .as_array()
            .map(|hops| {
                hops.iter()
                    .map(|h| {
                        (
                            h["gateway"].as_str().unwrap().to_owned(),
                            h["weight"].as_u64().unwrap_or(1),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !w.is_empty() {
            // BIRD orders the paths its own way.
            let mut w = w;
            w.sort();
            break w;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "BIRD wrote no {WEIGHTED} into table 110: {routes}\n{}",
            bird.birdc(&["show", "route", "all"]).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        weights,
        [("10.0.1.2".to_owned(), 1), ("10.0.2.2".to_owned(), 3)],
        "the kernel's weights"
    );

    // vrfd holds them: 256 of 1024 buckets for A, 768 for B; the even route splits in halves.
    let (a, b): (Ipv4Addr, Ipv4Addr) = ("10.0.1.2".parse().unwrap(), "10.0.2.2".parse().unwrap());
    let q = NEXTHOP_BUCKETS / 4;
    for (prefix, want) in [(WEIGHTED, [q, 3 * q]), (EVEN, [2 * q, 2 * q])] {
        let t = Instant::now();
        loop {
            let got = bucket_shares(&vrfd, prefix);
            if got == Some(BTreeMap::from([(a, want[0]), (b, want[1])])) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{prefix}: buckets per gateway {got:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Real flows: FLOWS source ports from host C to one address; A and B accept it.
    for i in 0..2 {
        topo.host("red", i)
            .ip(&["route", "add", "local", "10.9.0.0/24", "dev", "lo"])
            .unwrap();
    }
    let receivers: Vec<UdpSocket> = (0..2)
        .map(|i| {
            let s = topo
                .host("red", i)
                .run_in(|| UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], PORT))))
                .unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let c = topo.host("red", 2);
    let dst = SocketAddr::from(([10, 9, 0, 5], PORT));
    let kernel_before = forwarded_datagrams(r).unwrap().0;
    // In batches a socket's receive buffer holds (a few hundred small datagrams).
    let mut got = [0usize; 2];
    let mut buf = [0u8; 16];
    for batch in (0..FLOWS).collect::<Vec<_>>().chunks(100) {
        c.run_in(|| {
            for f in batch {
                let s = UdpSocket::bind(SocketAddr::from(([10, 0, 3, 2], 20000 + f))).unwrap();
                s.send_to(b"flow", dst).unwrap();
            }
        });
        let want = usize::from(batch[batch.len() - 1] + 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.iter().sum::<usize>() < want && Instant::now() < deadline {
            for (i, s) in receivers.iter().enumerate() {
                if s.recv(&mut buf).is_ok() {
                    got[i] += 1;
                }
            }
        }
    }
    let kernel = forwarded_datagrams(r).unwrap().0 - kernel_before;
    eprintln!(
        "{FLOWS} flows: A {} B {}, kernel forwarded {kernel}",
        got[0], got[1]
    );
    assert_eq!(got.iter().sum::<usize>(), usize::from(FLOWS), "flows lost");
    assert_eq!(
        kernel, 0,
        "the router's kernel forwarded flows: not the XDP path"
    );
    // Weight 3 of 4: 600 of 800 expected, σ ≈ 12; 5 % is over 3σ.
    let share = got[1] as f64 / f64::from(FLOWS);
    assert!(
        (share - 0.75).abs() < 0.05,
        "B took {share} of the flows: {got:?}"
    );

    drop(bird);
    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
}
