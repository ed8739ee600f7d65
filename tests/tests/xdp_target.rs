//! Which devices take an XDP redirect, as the kernel says it (the netdev generic netlink
//! family's xdp-features, NETDEV_XDP_ACT_NDO_XMIT), for the device kinds a VRF route may point
//! through: veth (only while its peer can receive: GRO on or an XDP program), bridge, macvlan,
//! tun (no reader attached here). The kind fallback for older kernels must never say yes where this kernel says no.
use tests::{ifindex, require_root, set_gro, set_up, NetNs};
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
            let t = probe.redirect_target(ifindex, Some(kind)).unwrap();
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
    assert!(!accepts_by_kind(Some("bridge")) && !accepts_by_kind(Some("macvlan")));
    assert!(!accepts_by_kind(Some("tun")));

    // A device that is not there is an error, not a yes.
    let gone = ns.run_in(|| XdpFeatureProbe::new().unwrap().xdp_features(999_999));
    assert!(gone.is_err(), "{gone:?}");
}
