//! The readers of what the kernel applies around the route lookup (issue #11), against the real
//! kernel in a private namespace: nftables chains and rules (`nft`), legacy iptables, xfrm
//! policies (`ip xfrm policy`) and per-interface sysctls each change the watched state within a
//! second of being added, and removing them brings it back.
use std::time::{Duration, Instant};

use tests::netns::NetNs;
use vrf_user::{
    netfilter::{NetfilterState, NetfilterWatcher, Reach, NETFILTER_POLL},
    sysctl::{SysctlState, SysctlWatcher},
    xfrm::{XfrmState, XfrmWatcher},
};

/// What the issue allows between a change in the kernel and vrfd knowing it.
const WITHIN: Duration = Duration::from_secs(1);

/// A namespace with a veth pair `va`/`vb` (both up).
fn lab(prefix: &str) -> NetNs {
    let ns = NetNs::new(prefix).expect("netns");
    ns.ip(&[
        "link", "add", "name", "va", "type", "veth", "peer", "name", "vb",
    ])
    .unwrap();
    ns.ip(&["link", "set", "va", "up"]).unwrap();
    ns.ip(&["link", "set", "vb", "up"]).unwrap();
    ns
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `change` (a command in the namespace), then waits for the watcher's state to satisfy
/// `want`, at most [`WITHIN`]; returns the state. `changed` is the watcher's change stream.
macro_rules! expect_within {
    ($rt:expr, $watcher:expr, $change:expr, $want:expr, $what:expr) => {{
        expect_within!($rt, $watcher, $change, $want, $what, WITHIN)
    }};
    ($rt:expr, $watcher:expr, $change:expr, $want:expr, $what:expr, $within:expr) => {{
        $change;
        let within: Duration = $within;
        let start = Instant::now();
        let mut state = $watcher.current().clone();
        while !$want(&state) {
            let left = within.saturating_sub(start.elapsed());
            match $rt.block_on(tokio::time::timeout(left, $watcher.changed())) {
                Ok(s) => state = s,
                Err(_) => panic!(
                    "{}: not seen within {within:?}; last state {state:?}",
                    $what
                ),
            }
        }
        state
    }};
}

/// Legacy x_tables announce nothing: one poll period, plus the time one `iptables-save` takes
/// on a busy machine.
const LEGACY_WITHIN: Duration = Duration::from_secs(1).saturating_add(NETFILTER_POLL);

fn nft(ns: &NetNs, rule: &str) {
    ns.exec(["nft", rule])
        .unwrap_or_else(|e| panic!("nft {rule}: {e:#}"));
}

#[test]
fn nftables_forward_rules_and_policies_are_followed_live() {
    let ns = lab("nf");
    let ns = &ns;
    ns.run_in(|| {
        let rt = runtime();
        let _in_rt = rt.enter();
        let mut w = NetfilterWatcher::new().unwrap();
        assert_eq!(*w.current(), NetfilterState::default(), "a fresh namespace");

        // A base chain with no rule and an accept policy changes no packet's fate.
        nft(ns, "add table inet vx");
        nft(
            ns,
            "add chain inet vx fw { type filter hook forward priority 0; policy accept; }",
        );
        std::thread::sleep(Duration::from_millis(300));
        rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_millis(700), w.changed()).await;
        });
        assert_eq!(*w.current(), NetfilterState::default());

        // The rule: both families of the inet table go to the kernel.
        let s = expect_within!(
            rt,
            w,
            nft(ns, "add rule inet vx fw iifname va ip daddr 10.0.2.2 drop"),
            |s: &NetfilterState| s.v4 != Reach::None,
            "a forward rule"
        );
        let reason = s.v4.reason().unwrap().to_string();
        assert!(matches!(s.v4, Reach::All(_)), "{s:?}");
        assert!(matches!(s.v6, Reach::All(_)), "inet covers IPv6: {s:?}");
        assert!(
            reason.contains("table vx") && reason.contains("chain fw") && reason.contains("forward"),
            "the reason names table, chain and hook: {reason}"
        );

        expect_within!(
            rt,
            w,
            nft(ns, "flush chain inet vx fw"),
            |s: &NetfilterState| *s == NetfilterState::default(),
            "the rule removed"
        );

        // A drop policy on an ip6 postrouting chain: IPv6 only.
        nft(ns, "add table ip6 vx6");
        let s = expect_within!(
            rt,
            w,
            nft(
                ns,
                "add chain ip6 vx6 post { type filter hook postrouting priority 0; policy drop; }"
            ),
            |s: &NetfilterState| s.v6 != Reach::None,
            "a drop policy"
        );
        assert_eq!(s.v4, Reach::None, "{s:?}");
        assert!(s.v6.reason().unwrap().contains("policy drop"), "{s:?}");
        expect_within!(
            rt,
            w,
            nft(ns, "delete table ip6 vx6"),
            |s: &NetfilterState| *s == NetfilterState::default(),
            "the table deleted"
        );

        // A netdev ingress chain concerns its device only.
        nft(ns, "add table netdev vxd");
        let s = expect_within!(
            rt,
            w,
            nft(
                ns,
                "add chain netdev vxd in { type filter hook ingress device va priority 0; policy drop; }"
            ),
            |s: &NetfilterState| s.v4 != Reach::None,
            "a netdev ingress chain"
        );
        assert!(s.v4.covers("va") && s.v6.covers("va"), "{s:?}");
        // nft 1.0.6 (Debian 12) leaves the device out of its JSON: then every device, never
        // none; a newer nft names it and only that device is reached.
        if let Reach::Devices(d, _) = &s.v4 {
            assert_eq!(d.len(), 1, "{s:?}");
            assert!(!s.v4.covers("vb"), "{s:?}");
        }
        expect_within!(
            rt,
            w,
            nft(ns, "delete table netdev vxd"),
            |s: &NetfilterState| s.v4 == Reach::None,
            "the netdev table deleted"
        );
        nft(ns, "delete table inet vx");
    });
}

#[test]
fn legacy_iptables_forward_rules_are_seen() {
    let ns = lab("ipt");
    let ns = &ns;
    ns.run_in(|| {
        let rt = runtime();
        let _in_rt = rt.enter();
        let mut w = NetfilterWatcher::new().unwrap();
        assert_eq!(*w.current(), NetfilterState::default());
        // Legacy x_tables announce nothing: the poll finds it.
        let s = expect_within!(
            rt,
            w,
            ns.exec(["iptables-legacy", "-A", "FORWARD", "-i", "va", "-j", "DROP"])
                .unwrap(),
            |s: &NetfilterState| s.v4 != Reach::None,
            "a legacy FORWARD rule",
            LEGACY_WITHIN
        );
        assert_eq!(s.v6, Reach::None, "{s:?}");
        assert!(s.v4.reason().unwrap().contains("FORWARD"), "{s:?}");
        expect_within!(
            rt,
            w,
            ns.exec(["iptables-legacy", "-F", "FORWARD"]).unwrap(),
            |s: &NetfilterState| *s == NetfilterState::default(),
            "the rule flushed",
            LEGACY_WITHIN
        );
    });
}

#[test]
fn xfrm_fwd_and_out_policies_are_followed_live() {
    let ns = lab("xfrm");
    let ns = &ns;
    ns.run_in(|| {
        let rt = runtime();
        let _in_rt = rt.enter();
        let mut w = XfrmWatcher::new().unwrap();
        assert_eq!(*w.current(), XfrmState::default(), "a fresh namespace");

        // The policy: IPv4 only.
        let fwd = "src 10.0.1.0/24 dst 10.0.2.0/24 dir fwd";
        let s = expect_within!(
            rt,
            w,
            ns.ip(&format!("xfrm policy add {fwd} action block")
                .split(' ')
                .collect::<Vec<_>>())
                .unwrap(),
            |s: &XfrmState| s.v4.is_some(),
            "a fwd policy"
        );
        assert_eq!(s.v6, None, "{s:?}");
        assert!(s.v4.as_deref().unwrap().contains("dir fwd"), "{s:?}");
        expect_within!(
            rt,
            w,
            ns.ip(&format!("xfrm policy delete {fwd}")
                .split(' ')
                .collect::<Vec<_>>())
                .unwrap(),
            |s: &XfrmState| *s == XfrmState::default(),
            "the fwd policy deleted"
        );

        // An IPv6 out policy.
        let out = "src fd00:1::/64 dst fd00:2::/64 dir out";
        let s = expect_within!(
            rt,
            w,
            ns.ip(&format!("xfrm policy add {out} action block")
                .split(' ')
                .collect::<Vec<_>>())
                .unwrap(),
            |s: &XfrmState| s.v6.is_some(),
            "an out policy"
        );
        assert_eq!(s.v4, None, "{s:?}");
        // An in policy does not concern forwarding.
        ns.ip(&[
            "xfrm",
            "policy",
            "add",
            "src",
            "10.9.0.0/16",
            "dir",
            "in",
            "action",
            "block",
        ])
        .unwrap();
        expect_within!(
            rt,
            w,
            ns.ip(&format!("xfrm policy delete {out}")
                .split(' ')
                .collect::<Vec<_>>())
                .unwrap(),
            |s: &XfrmState| *s == XfrmState::default(),
            "the out policy deleted (the in policy stays)"
        );
    });
}

#[test]
fn interface_sysctls_are_followed_live() {
    let ns = lab("sysctl");
    let ns = &ns;
    ns.run_in(|| {
        let rt = runtime();
        let a = {
            let c = std::ffi::CString::new("va").unwrap();
            unsafe { libc::if_nametoindex(c.as_ptr()) }
        };
        assert_ne!(a, 0);
        let _in_rt = rt.enter();
        let mut w = SysctlWatcher::new().unwrap();
        let s = w.current()[&a].clone();
        assert!(
            !s.disable_ipv6 && !s.forwarding4 && s.unreadable.is_empty(),
            "{s:?}"
        );
        assert_eq!(s.mtu6, 1500);

        type Check = fn(&SysctlState, u32) -> bool;
        let cases: [(&str, &str, &str, Check, Check); 6] = [
            (
                "net/ipv4/conf/va/forwarding",
                "1",
                "0",
                |s, a| s[&a].forwarding4,
                |s, a| !s[&a].forwarding4,
            ),
            (
                "net/ipv6/conf/all/forwarding",
                "1",
                "0",
                |s, a| s[&a].forwarding6,
                |s, a| !s[&a].forwarding6,
            ),
            (
                "net/ipv6/conf/va/disable_ipv6",
                "1",
                "0",
                |s, a| s[&a].disable_ipv6,
                |s, a| !s[&a].disable_ipv6,
            ),
            (
                "net/ipv6/conf/va/mtu",
                "1400",
                "1500",
                |s, a| s[&a].mtu6 == 1400,
                |s, a| s[&a].mtu6 == 1500,
            ),
            // rp_filter is the max of all and the link.
            (
                "net/ipv4/conf/all/rp_filter",
                "2",
                "0",
                |s, a| s[&a].rp_filter == 2,
                |s, a| s[&a].rp_filter == 0,
            ),
            (
                "net/ipv4/conf/va/accept_local",
                "1",
                "0",
                |s, a| s[&a].accept_local,
                |s, a| !s[&a].accept_local,
            ),
        ];
        for (key, on, off, is_on, is_off) in cases {
            let path = format!("/proc/sys/{key}");
            expect_within!(
                rt,
                w,
                std::fs::write(&path, on).unwrap(),
                |s: &SysctlState| is_on(s, a),
                format!("{key}={on}")
            );
            expect_within!(
                rt,
                w,
                std::fs::write(&path, off).unwrap(),
                |s: &SysctlState| is_off(s, a),
                format!("{key}={off}")
            );
        }
    });
}
