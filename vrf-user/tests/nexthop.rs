//! Nexthop objects against the real kernel, inside throwaway network namespaces (needs root):
//! the nexthop module parses what the kernel sends (compared with `ip -j nexthop show`), the
//! kernel accepts what it emits (a 16-bit weight, beyond what Debian's iproute2 can write), and
//! the nexthop socket streams changes after its dump.
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use serde_json::Value;
use vrf_user::netlink::nexthop::{
    NexthopAttribute, NexthopEvent, NexthopGroupEntry, NexthopInfo, NexthopKind, NexthopMessage,
    NexthopNetlinkMessage, NexthopSocket, Resilient,
};

/// A named network namespace, deleted on drop.
struct Ns {
    name: String,
}

impl Ns {
    fn new() -> Ns {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "vxnh-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip netns add {name}");
        let ns = Ns { name };
        // Blackhole nexthops need lo up.
        ns.ip("link set lo up");
        ns.ip("link add name va type veth peer name vb");
        ns.ip("link set va up");
        ns.ip("link set vb up");
        ns.ip("addr add 10.1.0.1/24 dev va");
        ns.ip("-6 addr add 2001:db8:1::1/64 dev va nodad");
        ns
    }

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

    fn ifindex(&self, dev: &str) -> u32 {
        let v: Value = serde_json::from_str(&self.ip(&format!("-j link show dev {dev}"))).unwrap();
        v[0]["ifindex"].as_u64().unwrap() as u32
    }

    /// Runs `f` on a thread inside the namespace (netlink sockets belong to the opener's).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap();
            // SAFETY: setns on a valid namespace fd; only this thread changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Sends `req` on a plain NETLINK_ROUTE socket and returns every message of the answer as raw
/// bytes (up to NLMSG_DONE or the ack).
fn exchange(mut req: NetlinkMessage<NexthopNetlinkMessage>) -> Vec<Vec<u8>> {
    let mut socket = Socket::new(NETLINK_ROUTE).unwrap();
    socket.bind_auto().unwrap();
    socket.connect(&SocketAddr::new(0, 0)).unwrap();
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0).unwrap();
    let mut out = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full().unwrap();
        let mut off = 0;
        while off + 16 <= data.len() {
            let len = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(data[off + 4..off + 6].try_into().unwrap());
            let msg = data[off..off + len].to_vec();
            off += (len + 3) & !3;
            match kind {
                // NLMSG_DONE, NLMSG_ERROR (the ack, or an error: checked by the caller).
                3 => return out,
                2 => {
                    out.push(msg);
                    return out;
                }
                _ => out.push(msg),
            }
        }
    }
}

fn dump_raw() -> Vec<Vec<u8>> {
    let mut req =
        NetlinkMessage::from(NexthopNetlinkMessage::GetNexthop(NexthopMessage::default()));
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    exchange(req)
}

fn parse(raw: &[u8]) -> NexthopInfo {
    let msg = NetlinkMessage::<NexthopNetlinkMessage>::deserialize(raw)
        .unwrap_or_else(|e| panic!("parse {}: {e}", hex(raw)));
    match msg.payload {
        NetlinkPayload::InnerMessage(NexthopNetlinkMessage::NewNexthop(ref m)) => {
            // What we parse we emit the same way (attribute order and padding included).
            let mut again = vec![0; msg.buffer_len()];
            msg.serialize(&mut again);
            assert_eq!(hex(&again), hex(raw), "re-emitted message differs");
            NexthopInfo::try_from(m).unwrap()
        }
        other => panic!("not a nexthop: {other:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `ip -j nexthop show` as our model, field by field.
fn from_ip(ns: &Ns, j: &Value) -> NexthopInfo {
    let id = j["id"].as_u64().unwrap() as u32;
    let kind = if let Some(g) = j["group"].as_array() {
        let members = g
            .iter()
            .map(|m| {
                let w = m["weight"].as_u64().unwrap_or(1) as u32;
                (m["id"].as_u64().unwrap() as u32, w)
            })
            .collect();
        let resilient = (j["type"] == "resilient").then(|| Resilient {
            buckets: j["resilient_args"]["buckets"].as_u64().unwrap() as u16,
            // iproute2 prints seconds; the kernel sends clock_t (USER_HZ = 100).
            idle_timer: j["resilient_args"]["idle_timer"].as_u64().unwrap() as u32 * 100,
            unbalanced_timer: j["resilient_args"]["unbalanced_timer"].as_u64().unwrap() as u32
                * 100,
        });
        NexthopKind::Group { members, resilient }
    } else if j.get("blackhole").is_some() {
        NexthopKind::Blackhole
    } else {
        let flags = j["flags"].as_array().unwrap();
        NexthopKind::Single {
            oif: ns.ifindex(j["dev"].as_str().unwrap()),
            gateway: j["gateway"].as_str().map(|g| g.parse::<IpAddr>().unwrap()),
            onlink: flags.iter().any(|f| f == "onlink"),
            dead: flags.iter().any(|f| f == "dead" || f == "linkdown"),
        }
    };
    NexthopInfo {
        id,
        protocol: 0,
        kind,
    }
}

#[test]
fn every_kind_of_nexthop_parses_as_ip_shows_it() {
    let ns = Ns::new();
    for cmd in [
        "nexthop add id 11 via 10.1.0.2 dev va",
        "nexthop add id 12 via 10.9.0.3 dev va onlink",
        "nexthop add id 13 dev vb",
        "nexthop add id 14 blackhole",
        "nexthop add id 15 via 2001:db8:1::2 dev va",
        "nexthop add id 20 group 11/12",
        "nexthop add id 21 group 11,1/12,3",
        "nexthop add id 22 group 11/12 type resilient buckets 32",
        "nexthop add id 23 group 11,255/12,17 protocol 186",
    ] {
        ns.ip(cmd);
    }
    let raw = ns.run(dump_raw);
    let ours: Vec<NexthopInfo> = raw.iter().map(|m| parse(m)).collect();
    for (m, info) in raw.iter().zip(&ours) {
        eprintln!("nexthop {}: {}", info.id, hex(m));
    }
    let shown: Value = serde_json::from_str(&ns.ip("-j nexthop show")).unwrap();
    let mut theirs: Vec<NexthopInfo> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|j| from_ip(&ns, j))
        .collect();
    // iproute2 shows the protocol by name; 186 is BGP's number, as FRR uses it.
    theirs.iter_mut().find(|n| n.id == 23).unwrap().protocol = 186;
    let ours_cmp: Vec<NexthopInfo> = ours
        .iter()
        .cloned()
        .map(|mut n| {
            if n.id != 23 {
                n.protocol = 0;
            }
            n
        })
        .collect();
    assert_eq!(ours_cmp, theirs);
    assert_eq!(ours.len(), 9);
    assert!(
        matches!(ours[3].kind, NexthopKind::Blackhole),
        "{:?}",
        ours[3]
    );
}

#[test]
fn a_sixteen_bit_weight_is_written_and_read_back() {
    let ns = Ns::new();
    ns.ip("nexthop add id 11 via 10.1.0.2 dev va");
    ns.ip("nexthop add id 12 via 10.1.0.3 dev va");
    let new = NexthopMessage {
        header: Default::default(),
        attributes: vec![
            NexthopAttribute::Id(30),
            NexthopAttribute::Group(vec![
                NexthopGroupEntry {
                    id: 11,
                    weight: 300,
                },
                NexthopGroupEntry {
                    id: 12,
                    weight: 65535,
                },
            ]),
        ],
    };
    let mut req = NetlinkMessage::from(NexthopNetlinkMessage::NewNexthop(new));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let ack = ns.run(move || exchange(req));
    let code = i32::from_ne_bytes(ack[0][16..20].try_into().unwrap());
    assert_eq!(
        code,
        0,
        "the kernel refused the group (errno {}): {}",
        -code,
        String::from_utf8_lossy(&ack[0])
    );
    let raw = ns.run(dump_raw);
    let group = raw.iter().map(|m| parse(m)).find(|n| n.id == 30).unwrap();
    assert_eq!(
        group.kind,
        NexthopKind::Group {
            members: vec![(11, 300), (12, 65535)],
            resilient: None
        }
    );
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<NexthopEvent>) -> NexthopEvent {
    tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("event within 2 s")
        .expect("stream open")
}

#[test]
fn the_nexthop_socket_dumps_then_streams_changes() {
    let ns = Ns::new();
    ns.ip("nexthop add id 11 via 10.1.0.2 dev va");
    let name = ns.name.clone();
    let va = ns.ifindex("va");
    ns.run(move || {
        let ip = |args: &str| {
            let ok = Command::new("ip")
                .args(["-n", &name])
                .args(args.split_whitespace())
                .status()
                .unwrap()
                .success();
            assert!(ok, "ip {args}");
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (mut socket, mut events) = NexthopSocket::connect().await.unwrap();
            let dump = socket.dump().await.unwrap();
            assert_eq!(dump.len(), 1);
            assert_eq!(dump[0].id, 11);
            ip("nexthop add id 12 via 10.1.0.3 dev va");
            let NexthopEvent::New(n) = next(&mut events).await else {
                panic!("not New")
            };
            assert_eq!(
                n.kind,
                NexthopKind::Single {
                    oif: va,
                    gateway: Some("10.1.0.3".parse().unwrap()),
                    onlink: false,
                    dead: false
                }
            );
            ip("nexthop add id 20 group 11,2/12");
            let NexthopEvent::New(g) = next(&mut events).await else {
                panic!("not New")
            };
            assert_eq!(g.id, 20);
            ip("nexthop replace id 20 group 12");
            let NexthopEvent::New(g) = next(&mut events).await else {
                panic!("not New")
            };
            assert_eq!(
                g.kind,
                NexthopKind::Group {
                    members: vec![(12, 1)],
                    resilient: None
                }
            );
            ip("nexthop del id 12");
            // Deleting a group's last member deletes the group too; the kernel tells both.
            let mut deleted = vec![];
            while deleted.len() < 2 {
                match next(&mut events).await {
                    NexthopEvent::Deleted(id) => deleted.push(id),
                    other => panic!("unexpected {other:?}"),
                }
            }
            deleted.sort();
            assert_eq!(deleted, [12, 20]);
        });
    });
}

/// What vrfd's main socket (`netlink::Netlink`, not joined to RTNLGRP_NEXTHOP) sees of nexthop
/// changes today, in compat mode 1 and 0: no nexthop messages at all, so no Overrun and no
/// resync storm. Only route notifications: in mode 1 one on `route add` and one on the member's
/// replace (both with the paths), in mode 0 only the `route add` (no paths). Deleting the
/// group's last member removes the group and the route with **no** RTM_DELROUTE in either mode
/// (6.18): only the nexthop socket's RTM_DELNEXTHOP tells.
#[test]
fn the_main_socket_sees_no_nexthop_messages() {
    use vrf_user::model::KernelEvent;
    use vrf_user::netlink::Netlink;
    for compat in ["1", "0"] {
        let ns = Ns::new();
        let ok = Command::new("ip")
            .args(["netns", "exec", &ns.name, "sysctl", "-qw"])
            .arg(format!("net.ipv4.nexthop_compat_mode={compat}"))
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let name = ns.name.clone();
        let events = ns.run(move || {
            let ip = |args: &str| {
                let ok = Command::new("ip")
                    .args(["-n", &name])
                    .args(args.split_whitespace())
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "ip {args}");
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (nl, mut rx) = Netlink::connect().await.unwrap();
                nl.snapshot().await.unwrap();
                while rx.try_recv().is_ok() {}
                ip("nexthop add id 11 via 10.1.0.2 dev va");
                ip("nexthop add id 12 via 10.1.0.3 dev va");
                ip("nexthop add id 20 group 11/12,3");
                ip("route add 10.9.0.0/24 nhid 20");
                ip("nexthop replace id 11 via 10.1.0.4 dev va");
                ip("nexthop del id 12");
                ip("nexthop del id 11");
                let mut seen = Vec::new();
                while let Ok(Some(ev)) =
                    tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
                {
                    seen.push(ev);
                }
                seen
            })
        });
        let routes: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                KernelEvent::NewRoute(r) if r.prefix.to_string() == "10.9.0.0/24" => {
                    Some(("new", r.nexthop_id, r.paths.len()))
                }
                KernelEvent::DelRoute(r) if r.prefix.to_string() == "10.9.0.0/24" => {
                    Some(("del", r.nexthop_id, r.paths.len()))
                }
                _ => None,
            })
            .collect();
        eprintln!("compat mode {compat}: route events {routes:?}");
        let expected = if compat == "1" {
            vec![("new", Some(20), 2), ("new", Some(20), 2)]
        } else {
            vec![("new", Some(20), 0)]
        };
        assert_eq!(routes, expected, "compat mode {compat}");
        assert!(
            !events.iter().any(|e| matches!(e, KernelEvent::Overrun(_))),
            "compat mode {compat}: {events:#?}"
        );
    }
}
