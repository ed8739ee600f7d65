//! The real control planes, without vrfd: BIRD in a peer namespace announces prefixes over two
//! BGP sessions (two links) to FRR in the router namespace; FRR installs every prefix with a
//! nexthop object, the two equal paths as a group — what vrfd will have to mirror.
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::{bird::Bird, frr::Frr, veth_pair, NetNs};

const PREFIXES: usize = 200;

fn bird_conf() -> String {
    let mut routes = String::new();
    for i in 0..PREFIXES {
        writeln!(
            routes,
            "  route 10.{}.{}.0/24 blackhole;",
            200 + i / 256,
            i % 256
        )
        .unwrap();
    }
    format!(
        r#"log stderr all;
router id 10.0.1.2;
protocol device {{ }}
protocol static announced {{
  ipv4;
{routes}}}
protocol bgp r1 {{
  local 10.0.1.2 as 65002;
  neighbor 10.0.1.1 as 65001;
  ipv4 {{ import none; export where source = RTS_STATIC; next hop self; }};
}}
protocol bgp r2 {{
  local 10.0.2.2 as 65002;
  neighbor 10.0.2.1 as 65001;
  ipv4 {{ import none; export where source = RTS_STATIC; next hop self; }};
}}
"#
    )
}

const BGPD_CONF: &str = "hostname bgpd
router bgp 65001
 bgp router-id 10.0.1.1
 no bgp ebgp-requires-policy
 neighbor 10.0.1.2 remote-as 65002
 neighbor 10.0.2.2 remote-as 65002
 address-family ipv4 unicast
  maximum-paths 64
 exit-address-family
";

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn frr_installs_birds_prefixes_as_nexthop_objects() {
    tests::require_root();
    assert!(
        tests::frr::available() && tests::bird::available(),
        "FRR and BIRD are not installed: run `cargo xtask setup`"
    );
    let router = NetNs::new("frr").unwrap();
    let peer = NetNs::new("bird").unwrap();
    for (i, (r, p)) in [("r1", "p1"), ("r2", "p2")].iter().enumerate() {
        veth_pair(&router, r, &peer, p).unwrap();
        router
            .ip(&["addr", "add", &format!("10.0.{}.1/24", i + 1), "dev", r])
            .unwrap();
        peer.ip(&["addr", "add", &format!("10.0.{}.2/24", i + 1), "dev", p])
            .unwrap();
        router.ip(&["link", "set", r, "up"]).unwrap();
        peer.ip(&["link", "set", p, "up"]).unwrap();
    }
    let bird = Bird::start(&peer, &bird_conf()).unwrap();
    let frr = Frr::start(&router, BGPD_CONF, "hostname staticd\n").unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let routes = loop {
        let routes = json(&router.ip(&["-j", "route", "show", "proto", "bgp"]).unwrap());
        let routes = routes.as_array().unwrap().clone();
        let multipath = routes.iter().filter(|r| r["nexthops"].is_array()).count();
        if routes.len() == PREFIXES && multipath == PREFIXES {
            break routes;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {PREFIXES} prefixes installed ({multipath} with both paths) after 60 s\n{}\n{}",
            routes.len(),
            frr.vtysh("show bgp summary").unwrap_or_default(),
            bird.birdc(&["show", "protocols"]).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };

    // Every route names a nexthop object, and they all share one two-path group.
    let nhids: BTreeSet<u64> = routes
        .iter()
        .map(|r| r["nhid"].as_u64().unwrap_or_else(|| panic!("no nhid: {r}")))
        .collect();
    assert_eq!(nhids.len(), 1, "{nhids:?}");
    let nhid = *nhids.iter().next().unwrap();
    let group = json(
        &router
            .ip(&["-j", "nexthop", "show", "id", &nhid.to_string()])
            .unwrap(),
    );
    let members = group[0]["group"]
        .as_array()
        .unwrap_or_else(|| panic!("{group}"));
    assert_eq!(members.len(), 2, "{group}");
    let devs: BTreeSet<String> = members
        .iter()
        .map(|m| {
            let id = m["id"].as_u64().unwrap().to_string();
            let nh = json(&router.ip(&["-j", "nexthop", "show", "id", &id]).unwrap());
            nh[0]["dev"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(devs, BTreeSet::from(["r1".to_owned(), "r2".to_owned()]));
    drop(frr);
    drop(bird);
}
