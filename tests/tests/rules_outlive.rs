//! The declared VRFs' `ip rule`s are the VRF (#13): they stay when vrfd is killed or stopped,
//! a restarted vrfd takes its own back (tagged `proto 246`) without duplicating them, a VRF
//! or member that leaves the configuration (at a reload, or while no vrfd ran) loses its
//! rules, `vrfctl show` lists the rules vrfd added, and `vrfd --detach --remove-rules` removes
//! them all, never the operator's.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::daemon::{json_log_lines, log_has_message, log_message, vrf_toml, Vrfd};
use tests::{list_own_netns, NetNs, TopologySpec};

/// (family flag, priority, iif, table, protocol) of every `iif` rule.
fn iif_rules(ns: &NetNs) -> BTreeSet<(String, u64, String, String, String)> {
    let mut out = BTreeSet::new();
    for fam in ["-4", "-6"] {
        let text = ns.ip(&["-j", fam, "rule", "show"]).unwrap();
        let rules: Vec<Value> = serde_json::from_str(&text).unwrap();
        for r in rules {
            if let (Some(p), Some(iif), Some(t)) = (
                r["priority"].as_u64(),
                r["iif"].as_str(),
                r["table"].as_str(),
            ) {
                let proto = r["protocol"].as_str().unwrap_or("").to_string();
                out.insert((fam.into(), p, iif.into(), t.into(), proto));
            }
        }
    }
    out
}

fn ours(members: &[(&str, u32)]) -> BTreeSet<(String, u64, String, String, String)> {
    let mut out = BTreeSet::new();
    for fam in ["-4", "-6"] {
        for (iif, table) in members {
            out.insert((
                fam.into(),
                1000,
                iif.to_string(),
                table.to_string(),
                "246".into(),
            ));
        }
    }
    out
}

fn added_rules(log: &str) -> usize {
    json_log_lines(log)
        .iter()
        .filter(|r| log_message(r) == Some("added ip rule"))
        .count()
}

fn wait_log(vrfd: &Vrfd<'_>, message: &str) {
    let t0 = Instant::now();
    while !log_has_message(&vrfd.log(), message) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no {message:?} in:\n{}",
            vrfd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_vrfs_rules_outlive_vrfd_and_go_only_with_their_vrf_or_on_full_removal() {
    let prefix = "ro_rules";
    let topo = TopologySpec::two_vrfs_identical()
        .with_prefix(prefix)
        .built();
    let r = topo.router();
    topo.remove_all_rules();
    let both = format!(
        "{}{}",
        vrf_toml("red", 110, &["red0", "red1"]),
        vrf_toml("blue", 120, &["blue0", "blue1"])
    );
    let all = [("red0", 110), ("red1", 110), ("blue0", 120), ("blue1", 120)];
    let first = Vrfd::start(r, &both).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(iif_rules(r), ours(&all));
    assert_eq!(added_rules(&first.log()), 8);
    let shown = first.show().unwrap();
    let listed = shown["rules_added_by_vrfd"].as_array().unwrap();
    assert_eq!(listed.len(), 8, "{shown:#}");
    assert!(
        listed
            .iter()
            .any(|x| x["iif"] == "red0" && x["table"] == 110 && x["family"] == "ipv6"),
        "{shown:#}"
    );
    let text = first.vrfctl(&["show"]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("ip rules added by vrfd (proto 246)")
            && text.contains("ipv4 pref 1000 iif red0 lookup 110"),
        "{text}"
    );

    // Killed: the rules stay (the kernel keeps each VRF's traffic in its table).
    tests::run_ok("kill", &["-KILL", &first.pid().unwrap().to_string()]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(first);
    assert_eq!(iif_rules(r), ours(&all), "rules after kill -9");

    // Restarted: its rules are taken back, none added twice; a reload without blue removes
    // blue's.
    let mut second = Vrfd::start(r, &both).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(added_rules(&second.log()), 0, "{}", second.log());
    assert_eq!(iif_rules(r), ours(&all));
    std::fs::write(
        second.config_path(),
        vrf_toml("red", 110, &["red0", "red1"]),
    )
    .unwrap();
    tests::run_ok("kill", &["-HUP", &second.pid().unwrap().to_string()]).unwrap();
    wait_log(&second, "SIGHUP: configuration reloaded");
    second.check_running().unwrap();
    assert_eq!(
        iif_rules(r),
        ours(&all[..2]),
        "rules after blue left the configuration"
    );

    // Stopped: red's stay; red1 leaves the configuration while no vrfd runs, and the next vrfd
    // removes its rules at start. An operator's own rule (untagged) is never vrfd's.
    second.stop().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(iif_rules(r), ours(&all[..2]), "rules after SIGTERM");
    for fam in ["-4", "-6"] {
        r.ip(&[
            fam, "rule", "add", "iif", "blue0", "lookup", "120", "pref", "1000",
        ])
        .unwrap();
    }
    let third =
        Vrfd::start(r, &vrf_toml("red", 110, &["red0"])).unwrap_or_else(|e| panic!("{e:#}"));
    let mut want = ours(&all[..1]);
    for fam in ["-4", "-6"] {
        want.insert((
            fam.into(),
            1000,
            "blue0".into(),
            "120".into(),
            String::new(),
        ));
    }
    let got: BTreeSet<_> = iif_rules(r)
        .into_iter()
        .map(|(f, p, i, t, proto)| {
            // iproute2 names the kernel's default protocol, or omits it.
            let proto = if proto == "246" { proto } else { String::new() };
            (f, p, i, t, proto)
        })
        .collect();
    assert_eq!(got, want, "{}", third.log());
    third.stop().unwrap_or_else(|e| panic!("{e:#}"));

    // The explicit full removal: vrfd's rules go, the operator's stay.
    let pins = tests::daemon::unique_pin_path().unwrap();
    tests::daemon::remove_rules_detached(r, &pins);
    let left: Vec<_> = iif_rules(r).into_iter().map(|(_, _, i, _, _)| i).collect();
    assert_eq!(left, vec!["blue0".to_string(), "blue0".to_string()]);

    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}
