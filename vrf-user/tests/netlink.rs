//! The rtnetlink layer against a real kernel, inside throwaway network namespaces (needs root).
//!
//! Each test creates a namespace with `ip netns add`, enters it from a fresh thread (`setns`:
//! netlink sockets belong to the namespace of the thread that opens them) and runs a
//! current-thread tokio runtime there; changes are made from outside with `ip -n NS …`.
use std::fs::File;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::mpsc::UnboundedReceiver;
use vrf_user::model::{
    KernelEvent, LinkInfo, PathInfo, RouteInfo, RouteKind, RuleAction, NUD_PERMANENT,
};
use vrf_user::netlink::{IpFamily, Netlink};

const EVENT_TIMEOUT: Duration = Duration::from_secs(2);

/// A named network namespace, deleted on drop.
struct Ns {
    name: String,
}

impl Ns {
    fn new() -> Ns {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "vxnl-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ns = Ns { name };
        ns.ip("link set lo up");
        ns
    }

    /// `ip -n NS <args>`; panics with ip's message on failure. Returns stdout.
    fn ip(&self, args: &str) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args.split_whitespace())
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {args}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -n NS -batch FILE` with the given lines.
    fn ip_batch(&self, lines: &str) {
        let path = std::env::temp_dir().join(format!("{}.batch", self.name));
        std::fs::write(&path, lines).unwrap();
        let out = Command::new("ip")
            .args(["-n", &self.name, "-batch"])
            .arg(&path)
            .output()
            .expect("run ip");
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "ip -batch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` on a thread inside the namespace, on a current-thread runtime; panics in `f`
    /// fail the calling test.
    fn run<F, Fut>(&self, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let path = format!("/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on a valid namespace fd; only this thread changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(f());
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two veth pairs' worth of topology: va <-> vb (both in the namespace), addresses on both.
fn topology(ns: &Ns) {
    ns.ip("link add name va type veth peer name vb");
    ns.ip("link set va up");
    ns.ip("link set vb up");
    ns.ip("addr add 10.1.0.1/24 dev va");
    ns.ip("addr add 10.2.0.1/24 dev vb");
    ns.ip("-6 addr add 2001:db8:1::1/64 dev va nodad");
    ns.ip("-6 addr add 2001:db8:2::1/64 dev vb nodad");
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn link<'a>(links: &'a [LinkInfo], name: &str) -> &'a LinkInfo {
    links
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no link {name} in {links:#?}"))
}

fn route<'a>(routes: &'a [RouteInfo], table: u32, prefix: &str) -> &'a RouteInfo {
    let prefix = net(prefix);
    routes
        .iter()
        .find(|r| r.table == table && r.prefix == prefix)
        .unwrap_or_else(|| panic!("no route {prefix} in table {table}"))
}

/// The first event matching `pred` within [`EVENT_TIMEOUT`]; other events are skipped.
async fn expect_event(
    rx: &mut UnboundedReceiver<KernelEvent>,
    what: &str,
    pred: impl Fn(&KernelEvent) -> bool,
) -> KernelEvent {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) if pred(&ev) => return ev,
            Ok(Some(ev)) => seen.push(ev),
            Ok(None) => panic!("event stream ended waiting for {what}; saw {seen:#?}"),
            Err(_) => panic!("no {what} within {EVENT_TIMEOUT:?}; saw {seen:#?}"),
        }
    }
}

#[test]
fn snapshot_reports_links_addresses_routes_neighbours_rules() {
    let ns = Ns::new();
    topology(&ns);
    ns.ip("route add 10.110.0.0/24 via 10.1.0.2 dev va table 110 metric 5");
    ns.ip("route add 10.100.0.0/16 dev vb table 100000");
    ns.ip("-6 route add 2001:db8:100::/48 via 2001:db8:1::2 dev va table 100000");
    ns.ip("route add 10.50.0.0/24 table 110 \
         nexthop via 10.1.0.2 dev va weight 1 nexthop via 10.2.0.2 dev vb weight 3");
    ns.ip("route add blackhole 10.66.0.0/16 table 110");
    ns.ip("route add 10.120.0.0/24 via 10.1.0.2 dev va table 110 mtu 1400");
    ns.ip("neigh add 10.1.0.2 lladdr 02:00:00:00:00:02 dev va nud permanent");
    ns.ip("-6 neigh add 2001:db8:1::2 lladdr 02:00:00:00:00:62 dev va nud permanent");

    ns.run(|| async {
        let (nl, _events) = Netlink::connect().await.unwrap();
        assert!(
            nl.receive_buffer() >= 8 << 20,
            "SO_RCVBUF {}",
            nl.receive_buffer()
        );
        let snap = nl.snapshot().await.unwrap();

        let va = link(&snap.links, "va");
        let vb = link(&snap.links, "vb");
        assert!(va.up && vb.up, "{va:?} {vb:?}");
        assert_eq!(va.mtu, 1500);
        assert_eq!(va.kind.as_deref(), Some("veth"));
        assert!(va.mac.is_some());
        assert_eq!((va.master, va.vrf_table), (None, None));
        let lo = link(&snap.links, "lo");
        assert_eq!(lo.ifindex, 1);
        let (va, vb) = (va.ifindex, vb.ifindex);

        for (ifindex, addr, len) in [
            (va, "10.1.0.1", 24),
            (vb, "10.2.0.1", 24),
            (va, "2001:db8:1::1", 64),
        ] {
            assert!(
                snap.addrs
                    .iter()
                    .any(|a| a.ifindex == ifindex && a.addr == ip(addr) && a.prefix_len == len),
                "{addr}/{len} on {ifindex} missing from {:#?}",
                snap.addrs
            );
        }

        let r = route(&snap.routes, 110, "10.110.0.0/24");
        assert_eq!(
            (r.kind, r.metric, r.tos, r.mtu),
            (RouteKind::Unicast, 5, 0, None)
        );
        assert_eq!(
            r.paths,
            vec![PathInfo {
                ifindex: va,
                gateway: Some(ip("10.1.0.2")),
                weight: 1,
                dead: false
            }]
        );
        assert_eq!((r.nexthop_id, r.unsupported), (None, None));

        // Tables above 255 come through with their full id, in both families.
        let r = route(&snap.routes, 100_000, "10.100.0.0/16");
        assert_eq!(
            r.paths,
            vec![PathInfo {
                ifindex: vb,
                gateway: None,
                weight: 1,
                dead: false
            }]
        );
        let r = route(&snap.routes, 100_000, "2001:db8:100::/48");
        assert_eq!(r.paths[0].gateway, Some(ip("2001:db8:1::2")));
        assert_eq!(r.metric, 1024);

        let r = route(&snap.routes, 110, "10.50.0.0/24");
        let mut paths = r.paths.clone();
        paths.sort();
        let mut want = vec![
            PathInfo {
                ifindex: va,
                gateway: Some(ip("10.1.0.2")),
                weight: 1,
                dead: false,
            },
            PathInfo {
                ifindex: vb,
                gateway: Some(ip("10.2.0.2")),
                weight: 3,
                dead: false,
            },
        ];
        want.sort();
        assert_eq!(paths, want);

        let r = route(&snap.routes, 110, "10.66.0.0/16");
        assert_eq!(r.kind, RouteKind::Blackhole, "blackhole");
        assert!(r.paths.is_empty());

        assert_eq!(route(&snap.routes, 110, "10.120.0.0/24").mtu, Some(1400));

        // The kernel's own routes: connected, local.
        assert_eq!(
            route(&snap.routes, 254, "10.1.0.0/24").kind,
            RouteKind::Unicast
        );
        assert_eq!(
            route(&snap.routes, 255, "10.1.0.1/32").kind,
            RouteKind::Local
        );
        assert_eq!(
            route(&snap.routes, 255, "2001:db8:1::1/128").kind,
            RouteKind::Local
        );
        let odd: Vec<_> = snap
            .routes
            .iter()
            .filter(|r| r.unsupported.is_some())
            .collect();
        assert!(odd.is_empty(), "{odd:#?}");

        let n = snap
            .neighbours
            .iter()
            .find(|n| n.addr == ip("10.1.0.2"))
            .expect("neighbour 10.1.0.2");
        assert_eq!(
            (n.ifindex, n.mac, n.state),
            (va, Some([2, 0, 0, 0, 0, 2]), NUD_PERMANENT)
        );
        let n = snap
            .neighbours
            .iter()
            .find(|n| n.addr == ip("2001:db8:1::2"))
            .expect("neighbour 2001:db8:1::2");
        assert_eq!(n.mac, Some([2, 0, 0, 0, 0, 0x62]));

        // A fresh namespace has the default rules: local (0), main (32766), default (32767).
        for (family, priority, table) in [
            (IpFamily::V4, 0, 255),
            (IpFamily::V4, 32766, 254),
            (IpFamily::V4, 32767, 253),
            (IpFamily::V6, 32766, 254),
        ] {
            assert!(
                snap.rules.iter().any(|r| r.family == family
                    && r.priority == priority
                    && r.table == table
                    && r.action == RuleAction::ToTable
                    && r.iif.is_none()
                    && !r.l3mdev
                    && !r.has_other_selectors),
                "rule {family:?}/{priority}/{table} missing from {:#?}",
                snap.rules
            );
        }

        assert_eq!(
            nl.link_by_name("vb").await.unwrap().map(|l| l.ifindex),
            Some(vb)
        );
        assert_eq!(nl.link_by_name("nope").await.unwrap(), None);
    });
}

#[test]
fn changes_arrive_as_events() {
    let ns = Ns::new();
    topology(&ns);
    ns.ip("neigh add 10.1.0.2 lladdr 02:00:00:00:00:02 dev va nud permanent");
    let ns_name = ns.name.clone();
    let ns = std::sync::Arc::new(ns);
    let ns2 = ns.clone();
    ns.run(move || async move {
        let ns = ns2;
        let (nl, mut rx) = Netlink::connect().await.unwrap();
        let snap = nl.snapshot().await.unwrap();
        let va = link(&snap.links, "va").ifindex;
        let vb = link(&snap.links, "vb").ifindex;

        ns.ip("route add 10.77.0.0/24 via 10.1.0.2 dev va table 100000 metric 7");
        let ev = expect_event(&mut rx, "NewRoute 10.77.0.0/24", |e| {
            matches!(e, KernelEvent::NewRoute(r) if r.prefix == net("10.77.0.0/24"))
        })
        .await;
        let KernelEvent::NewRoute(r) = ev else { unreachable!() };
        assert_eq!((r.table, r.metric, r.kind), (100_000, 7, RouteKind::Unicast));
        assert_eq!(r.paths[0].ifindex, va);

        ns.ip("route del 10.77.0.0/24 table 100000");
        expect_event(&mut rx, "DelRoute 10.77.0.0/24", |e| {
            matches!(e, KernelEvent::DelRoute(r) if r.prefix == net("10.77.0.0/24") && r.table == 100_000)
        })
        .await;

        ns.ip(
            "-6 route add 2001:db8:77::/64 table 110 \
             nexthop via 2001:db8:1::2 dev va nexthop via 2001:db8:2::2 dev vb weight 2",
        );
        // An IPv6 add is an append: IPv6 keeps every route of one prefix and metric.
        let ev = expect_event(&mut rx, "AppendRoute 2001:db8:77::/64", |e| {
            matches!(e, KernelEvent::AppendRoute(r) if r.prefix == net("2001:db8:77::/64"))
        })
        .await;
        let KernelEvent::AppendRoute(r) = ev else { unreachable!() };
        assert_eq!(r.table, 110);
        assert_eq!(r.paths.len(), 2, "{r:?}");

        ns.ip("neigh replace 10.1.0.2 lladdr 02:00:00:00:00:99 dev va nud permanent");
        expect_event(&mut rx, "NewNeigh with the new MAC", |e| {
            matches!(e, KernelEvent::NewNeigh(n)
                if n.addr == ip("10.1.0.2") && n.mac == Some([2, 0, 0, 0, 0, 0x99]) && n.ifindex == va)
        })
        .await;
        ns.ip("neigh del 10.1.0.2 dev va");
        expect_event(&mut rx, "DelNeigh 10.1.0.2", |e| {
            matches!(e, KernelEvent::DelNeigh(n) if n.addr == ip("10.1.0.2"))
        })
        .await;

        ns.ip("addr add 10.3.0.1/24 dev va");
        expect_event(&mut rx, "NewAddr 10.3.0.1", |e| {
            matches!(e, KernelEvent::NewAddr(a) if a.addr == ip("10.3.0.1") && a.prefix_len == 24 && a.ifindex == va)
        })
        .await;
        ns.ip("addr del 10.3.0.1/24 dev va");
        expect_event(&mut rx, "DelAddr 10.3.0.1", |e| {
            matches!(e, KernelEvent::DelAddr(a) if a.addr == ip("10.3.0.1"))
        })
        .await;

        ns.ip("link set vb down");
        expect_event(&mut rx, "NewLink vb down", |e| {
            matches!(e, KernelEvent::NewLink(l) if l.ifindex == vb && !l.up)
        })
        .await;
        // The peer lost its carrier.
        expect_event(&mut rx, "NewLink va without carrier", |e| {
            matches!(e, KernelEvent::NewLink(l) if l.ifindex == va && !l.up)
        })
        .await;

        ns.ip("link add name vc type veth peer name vd");
        let ev = expect_event(&mut rx, "NewLink vc", |e| {
            matches!(e, KernelEvent::NewLink(l) if l.name == "vc")
        })
        .await;
        let KernelEvent::NewLink(vc) = ev else { unreachable!() };
        ns.ip("link del vc");
        expect_event(&mut rx, "DelLink vc", |e| matches!(e, KernelEvent::DelLink(i) if *i == vc.ifindex))
            .await;

        ns.ip("rule add iif va lookup 110 pref 500");
        expect_event(&mut rx, "RulesChanged", |e| matches!(e, KernelEvent::RulesChanged)).await;
        drop(nl);
    });
    drop(ns);
    assert!(!std::path::Path::new(&format!("/run/netns/{ns_name}")).exists());
}

#[test]
fn add_and_delete_rules() {
    let ns = Ns::new();
    topology(&ns);
    let ns = std::sync::Arc::new(ns);
    let ns2 = ns.clone();
    ns.run(move || async move {
        let ns = ns2;
        let (nl, mut rx) = Netlink::connect().await.unwrap();

        nl.add_rule(IpFamily::V4, "va", 100_000, 1000)
            .await
            .unwrap();
        nl.add_rule(IpFamily::V6, "va", 110, 1001).await.unwrap();
        assert!(ns
            .ip("rule show")
            .contains("1000:\tfrom all iif va lookup 100000"));
        assert!(ns
            .ip("-6 rule show")
            .contains("1001:\tfrom all iif va lookup 110"));
        // Our own change is announced too.
        expect_event(&mut rx, "RulesChanged", |e| {
            matches!(e, KernelEvent::RulesChanged)
        })
        .await;

        let rules = nl.rules().await.unwrap();
        let r = rules
            .iter()
            .find(|r| r.priority == 1000)
            .expect("rule 1000");
        assert_eq!(
            (
                r.family,
                r.table,
                r.action,
                r.iif.as_deref(),
                r.oif.as_deref(),
                r.l3mdev,
                r.has_other_selectors
            ),
            (
                IpFamily::V4,
                100_000,
                RuleAction::ToTable,
                Some("va"),
                None,
                false,
                false
            )
        );
        let r = rules
            .iter()
            .find(|r| r.priority == 1001)
            .expect("rule 1001");
        assert_eq!(
            (r.family, r.table, r.iif.as_deref()),
            (IpFamily::V6, 110, Some("va"))
        );

        let err = nl
            .add_rule(IpFamily::V4, "va", 100_000, 1000)
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("ip -4 rule add iif va lookup 100000 pref 1000"),
            "{text}"
        );
        assert!(text.contains("exists"), "{text}");

        nl.del_rule(IpFamily::V4, "va", 100_000, 1000)
            .await
            .unwrap();
        nl.del_rule(IpFamily::V6, "va", 110, 1001).await.unwrap();
        let rules = nl.rules().await.unwrap();
        assert!(
            !rules
                .iter()
                .any(|r| r.priority == 1000 || r.priority == 1001),
            "{rules:#?}"
        );
        assert!(!ns.ip("rule show").contains("iif va"));

        let err = nl
            .del_rule(IpFamily::V6, "va", 110, 1001)
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("ip -6 rule del iif va lookup 110 pref 1001"),
            "{text}"
        );
        assert!(text.contains("No such file"), "{text}");
    });
}

#[test]
fn a_full_receive_buffer_is_reported_as_overrun() {
    let ns = Ns::new();
    topology(&ns);
    let ns = std::sync::Arc::new(ns);
    let ns2 = ns.clone();
    ns.run(move || async move {
        let ns = ns2;
        let (nl, mut rx) = Netlink::connect_with_receive_buffer(16 << 10)
            .await
            .unwrap();
        // The runtime is single-threaded: while `ip` runs nobody reads the socket, so the
        // notifications of 3000 new routes cannot all fit.
        let batch: String = (0..3000)
            .map(|i| {
                format!(
                    "route add 10.200.{}.{}/32 dev va table 120\n",
                    i / 256,
                    i % 256
                )
            })
            .collect();
        ns.ip_batch(&batch);
        expect_event(
            &mut rx,
            "Overrun (ENOBUFS)",
            |e| matches!(e, KernelEvent::Overrun(why) if why.contains("ENOBUFS")),
        )
        .await;

        // The connection survives: a resync sees every route, and events keep coming.
        let snap = nl.snapshot().await.unwrap();
        assert_eq!(snap.routes.iter().filter(|r| r.table == 120).count(), 3000);
        while rx.try_recv().is_ok() {}
        ns.ip("route add 10.201.0.0/24 dev va table 120");
        expect_event(
            &mut rx,
            "NewRoute after the overrun",
            |e| matches!(e, KernelEvent::NewRoute(r) if r.prefix == net("10.201.0.0/24")),
        )
        .await;
        assert!(!nl.is_closed());
    });
}

/// Another process's notification carries *its* request's sequence number; on a socket that
/// listened and asked at once, netlink-proto gave it to our pending request with the same
/// number, which ended that request (dumps cut short, 10 times in a row under load). Requests
/// go on a socket that hears no notification: while a client churns routes with netlink-proto's
/// own numbering (the same numbers as ours), every dump is whole, none collides, and the
/// churn's notifications still arrive as events.
#[test]
fn dumps_are_whole_while_another_client_churns_with_the_same_sequence_numbers() {
    use std::net::Ipv4Addr;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let ns = Ns::new();
    topology(&ns);
    let batch: String = (0..3000)
        .map(|i| {
            format!(
                "route add 10.200.{}.{}/32 dev va table 120\n",
                i / 256,
                i % 256
            )
        })
        .collect();
    ns.ip_batch(&batch);

    // A churner with netlink-proto's own numbering (1, 2, 3, … per connection), reconnecting
    // every 300 requests, adding and deleting a route in table 130.
    let stop = Arc::new(AtomicBool::new(false));
    let path = format!("/run/netns/{}", ns.name);
    let churn_stop = stop.clone();
    let churn = std::thread::spawn(move || {
        let file = File::open(&path).unwrap();
        // SAFETY: as in `Ns::run`.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let va = unsafe { libc::if_nametoindex(c"va".as_ptr()) };
            let mut requests = 0u32;
            while !churn_stop.load(Ordering::Relaxed) {
                let (conn, handle, _) = rtnetlink::new_connection().unwrap();
                let task = tokio::spawn(conn);
                for i in 0..300 {
                    let msg = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(Ipv4Addr::new(10, 130, 0, 0), 24)
                        .gateway(Ipv4Addr::new(10, 1, 0, 2))
                        .output_interface(va)
                        .table_id(130)
                        .build();
                    let _ = if i % 2 == 0 {
                        handle.route().add(msg).execute().await
                    } else {
                        handle.route().del(msg).execute().await
                    };
                    requests += 1;
                }
                task.abort();
            }
            requests
        })
    });

    /// Stops the churner however the test ends (a panic must not leave it spinning).
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let run_stop = StopOnDrop(stop.clone());
    ns.run(move || async move {
        let _stop = run_stop;
        let (nl, mut rx) = Netlink::connect().await.unwrap();
        let (mut collisions, mut churned) = (0, 0);
        let started = std::time::Instant::now();
        let mut dumps = 0;
        // Our first 300 sequence numbers are the churner's, over and over.
        while dumps < 300 || started.elapsed() < Duration::from_secs(3) {
            let routes = nl.routes().await.unwrap();
            dumps += 1;
            assert_eq!(routes.iter().filter(|r| r.table == 120).count(), 3000);
            while let Ok(ev) = rx.try_recv() {
                match &ev {
                    KernelEvent::Overrun(why) if why.contains("collided") => collisions += 1,
                    KernelEvent::NewRoute(r)
                    | KernelEvent::AppendRoute(r)
                    | KernelEvent::PrependRoute(r)
                    | KernelEvent::DelRoute(r)
                        if r.prefix == net("10.130.0.0/24") =>
                    {
                        churned += 1
                    }
                    _ => {}
                }
            }
        }
        eprintln!("{dumps} complete route dumps, {collisions} collisions, {churned} churn events");
        assert_eq!(collisions, 0, "a notification collided with a request");
        assert!(
            churned > 0,
            "the churner's notifications never arrived as events"
        );
    });
    stop.store(true, Ordering::Relaxed);
    let requests = churn.join().unwrap();
    eprintln!("churner sent {requests} requests");
}
