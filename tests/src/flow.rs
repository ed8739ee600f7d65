//! A UDP flow from one host to another through the router, counted at the receiving host:
//! every datagram carries its sequence number, the receiver counts distinct ones.
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Topology;

/// UDP from red A to red B at about `pps` until stopped; returns (sent, distinct received).
pub struct Flow {
    stop: Arc<AtomicBool>,
    tx: std::thread::JoinHandle<u64>,
    rx: std::thread::JoinHandle<u64>,
}

impl Flow {
    /// Red host A (member 0) to red host B (member 1, 10.0.2.2) of a `two_vrfs_identical`-like
    /// topology, at about `pps` datagrams per second.
    pub fn start(topo: &Topology, pps: u64) -> Flow {
        let dst_ip: std::net::IpAddr = "10.0.2.2".parse().unwrap();
        let server = topo
            .host("red", 1)
            .run_in(|| UdpSocket::bind(SocketAddr::new(dst_ip, 0)))
            .unwrap();
        let dst = server.local_addr().unwrap();
        let client = topo
            .host("red", 0)
            .run_in(|| UdpSocket::bind("0.0.0.0:0"))
            .unwrap();
        let _ = crate::traffic::force_receive_buffer(&server, 16 << 20);
        server
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (s1, s2) = (stop.clone(), stop.clone());
        let tx = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut seq = 0u64;
            while !s1.load(Ordering::Relaxed) {
                let due = t0 + Duration::from_nanos(seq * 1_000_000_000 / pps);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let mut payload = [0u8; 64];
                payload[..8].copy_from_slice(&seq.to_be_bytes());
                if client.send_to(&payload, dst).is_ok() {
                    seq += 1;
                }
            }
            seq
        });
        let rx = std::thread::spawn(move || {
            let mut seen = std::collections::HashSet::new();
            let mut buf = [0u8; 128];
            let mut idle_since = None;
            loop {
                match server.recv(&mut buf) {
                    Ok(n) if n >= 8 => {
                        seen.insert(u64::from_be_bytes(buf[..8].try_into().unwrap()));
                        idle_since = None;
                    }
                    _ => {
                        if s2.load(Ordering::Relaxed) {
                            let t = *idle_since.get_or_insert_with(Instant::now);
                            if t.elapsed() > Duration::from_millis(500) {
                                return seen.len() as u64;
                            }
                        }
                    }
                }
            }
        });
        Flow { stop, tx, rx }
    }

    /// Stop sending; wait until B has been idle for 0.5 s; (sent, distinct received at B).
    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        (self.tx.join().unwrap(), self.rx.join().unwrap())
    }
}
