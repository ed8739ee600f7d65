//! Which devices take an XDP redirect, as the kernel says it (the netdev generic netlink
//! family's xdp-features, NETDEV_XDP_ACT_NDO_XMIT), for the device kinds a VRF route may point
//! through: veth (only while its peer can receive: GRO on or an XDP program), bridge, macvlan,
//! tun (no reader attached here). The kind fallback for older kernels must never say yes where this kernel says no.
//!
//! Then vrfd: a VRF route through a bridge (no `ndo_xdp_xmit`: `xdp_do_redirect` would drop the
//! frame) is passed to the kernel, which delivers it.
use std::time::{Duration, Instant};

use tests::daemon::{vrf_toml, Vrfd};
use tests::{
    add_addr, add_permanent_neigh, fastpath, forwarded_datagrams, ifindex, list_own_netns, mac,
    ping, require_root, set_gro, set_up, veth_pair, NetNs, TopologySpec,
};
use vrf_common::{Direction, Reason};
use vrf_user::model::LinkInfo;
use vrf_user::xdp_target::{accepts_by_kind, Source, XdpFeatureProbe};

#[test]
fn the_kernel_says_which_devices_take_a_redirect() {
    require_root();
    let ns = NetNs::new("xt_feat").unwrap();
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"])
        .unwrap();
    ns.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    ns.ip(&[
        "link", "add", "mv0", "link", "va", "type", "macvlan", "mode", "bridge",
    ])
    .unwrap();
    ns.ip(&["tuntap", "add", "dev", "tn0", "mode", "tun"])
        .unwrap();
    for dev in ["va", "vb", "br0", "mv0", "tn0"] {
        set_up(&ns, dev).unwrap();
    }
    set_gro(&ns, "vb", false).unwrap();
    let index = |n: &str| ifindex(&ns, n).unwrap();
    let (va, br0, mv0, tn0) = (index("va"), index("br0"), index("mv0"), index("tn0"));

    let ask = |ifindex: u32, kind: &str| {
        ns.run_in(|| {
            let mut probe = XdpFeatureProbe::new().unwrap();
            assert!(
                probe.has_netdev_family(),
                "kernel 6.18 has the netdev family"
            );
            let link = LinkInfo {
                ifindex,
                kind: Some(kind.into()),
                ..LinkInfo::default()
            };
            let t = probe.redirect_target(&link).unwrap();
            let Source::Kernel(f) = t.source else {
                panic!("the answer for {kind} did not come from the kernel: {t:?}")
            };
            eprintln!("{kind} ifindex {ifindex}: xdp-features {:#x}", f.0);
            t.accepts
        })
    };
    assert!(!ask(br0, "bridge"), "a bridge has no ndo_xdp_xmit");
    assert!(!ask(mv0, "macvlan"), "macvlan has no ndo_xdp_xmit");
    // tun sets its features only while a reader has a queue attached: none here.
    assert!(
        !ask(tn0, "tun"),
        "a tun without a reader takes no redirects"
    );
    // veth: frames redirected into va are received by vb, which needs GRO (or XDP) for them.
    assert!(
        !ask(va, "veth"),
        "veth whose peer has neither GRO nor XDP drops redirects"
    );
    set_gro(&ns, "vb", true).unwrap();
    assert!(
        ask(va, "veth"),
        "veth whose peer has GRO on takes redirects"
    );
    set_gro(&ns, "vb", false).unwrap();
    assert!(!ask(va, "veth"), "and not once GRO is off again");

    // The fallback refuses what this kernel refuses.
    let of_kind = |kind: &str| LinkInfo {
        kind: Some(kind.into()),
        ..LinkInfo::default()
    };
    assert!(!accepts_by_kind(&of_kind("bridge")) && !accepts_by_kind(&of_kind("macvlan")));
    assert!(!accepts_by_kind(&of_kind("tun")));

    // A device that is not there is an error, not a yes.
    let gone = ns.run_in(|| XdpFeatureProbe::new().unwrap().xdp_features(999_999));
    assert!(gone.is_err(), "{gone:?}");
}

#[test]
fn a_vrf_route_through_a_bridge_is_delivered_by_the_kernel() {
    let prefix = "xt_bridge";
    let topo = TopologySpec::two_vrfs_identical()
        .with_prefix(prefix)
        .built_for_xdp();
    let r = topo.router();
    // Host H (10.0.9.2) behind bridge `xbr` on the router, reached from red by table 110.
    let h = NetNs::new(&format!("{prefix}_h")).unwrap();
    veth_pair(r, "xbp", &h, "eth0").unwrap();
    r.ip(&["link", "add", "xbr", "type", "bridge"]).unwrap();
    r.ip(&["link", "set", "xbp", "master", "xbr"]).unwrap();
    for dev in ["xbr", "xbp"] {
        set_up(r, dev).unwrap();
    }
    set_up(&h, "eth0").unwrap();
    // GRO on H's side: were the frame redirected to xbp itself it would arrive; only the
    // bridge refuses it.
    set_gro(&h, "eth0", true).unwrap();
    add_addr(r, "xbr", "10.0.9.1/24", &["noprefixroute"]).unwrap();
    add_addr(&h, "eth0", "10.0.9.2/24", &[]).unwrap();
    h.ip(&["route", "add", "default", "via", "10.0.9.1"])
        .unwrap();
    r.ip(&["route", "add", "10.0.9.0/24", "dev", "xbr", "table", "110"])
        .unwrap();
    add_permanent_neigh(r, "xbr", "10.0.9.2", mac(&h, "eth0").unwrap()).unwrap();
    add_permanent_neigh(&h, "eth0", "10.0.9.1", mac(r, "xbr").unwrap()).unwrap();
    let xbr = ifindex(r, "xbr").unwrap();

    // The bridge is a member of red: its replies are routed by red's table, and the source of
    // what red sends into it is validated by that table (an egress-only link's rules vrfd does
    // not know: it would pass those packets as martians before ever trying the redirect).
    topo.remove_all_rules();
    let config = format!(
        "{}{}",
        vrf_toml("red", 110, &["red0", "red1", "xbr"]),
        vrf_toml("blue", 120, &["blue0", "blue1"])
    );
    let vrfd = Vrfd::start(r, &config).unwrap_or_else(|e| panic!("starting vrfd: {e:#}"));
    // What red0 (host A's member) received, by reason: the requests towards H.
    let red0 = ifindex(r, "red0").unwrap();
    let red0_counters = || {
        let maps = vrfd.maps().unwrap();
        let (_, link) = maps
            .links()
            .unwrap()
            .into_iter()
            .find(|(i, _)| *i == red0)
            .expect("red0 in the maps");
        maps.link_counters(link.stats_slot, Direction::Ingress)
            .unwrap()
    };
    let count = |reason: Reason| red0_counters().by_reason[reason as usize].packets;
    // vrfd knows the bridge, and left it out of the redirect targets.
    let t0 = Instant::now();
    while !vrfd.log().contains("cannot take an XDP redirect") {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "vrfd never judged the bridge: {}",
            vrfd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        vrfd.maps()
            .unwrap()
            .links()
            .unwrap()
            .iter()
            .any(|(i, _)| *i == xbr),
        "the bridge is not in the maps"
    );

    let a = topo.host("red", 0);
    let (pass_before, fwd_before) = (count(Reason::PassEgress), count(Reason::Forwarded));
    let kernel_before = forwarded_datagrams(r).unwrap().0;
    let p = ping(a, "10.0.9.2", 4).unwrap();
    assert!(p.all_received(), "H not reached through the bridge: {p:?}");
    assert!(
        count(Reason::PassEgress) >= pass_before + 4,
        "the requests were not passed to the kernel at the bridge: {}; lookup: {}",
        fastpath::describe_counters(&red0_counters()),
        vrfd.lookup("red", Some("red0"), None, "10.0.9.2").unwrap()
    );
    assert_eq!(
        count(Reason::Forwarded),
        fwd_before,
        "XDP redirected into a bridge"
    );
    // The kernel forwarded the requests (the replies, from the bridge to red0, may take XDP).
    assert!(forwarded_datagrams(r).unwrap().0 >= kernel_before + 4);

    vrfd.stop().unwrap_or_else(|e| panic!("{e:#}"));
    drop(h);
    drop(topo);
    assert!(list_own_netns(prefix).unwrap().is_empty());
}
