//! Traffic generators with bounded run time: ping (iputils), TCP and UDP transfers.
//!
//! The TCP/UDP transfers use std sockets created inside the namespaces (a socket keeps the
//! namespace it was created in), on kernel-chosen ephemeral ports, so parallel tests never
//! clash over ports and the byte count is measured exactly on the receiving side. The payload
//! follows a fixed pattern that the receiver verifies, so corruption by a rewriting data
//! plane is detected.

use std::fmt::Display;
use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::NetNs;

/// Default bound on a transfer.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingResult {
    pub transmitted: u32,
    pub received: u32,
}

impl PingResult {
    pub fn all_received(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }
}

/// `ping -n -c COUNT -i 0.2 -W 1 DST` inside `ns` (IPv4 or IPv6 address or name). Packet loss is
/// not an error (check the result); failing to run ping at all is.
pub fn ping(ns: &NetNs, dst: impl Display, count: u32) -> Result<PingResult> {
    let dst = dst.to_string();
    let count_s = count.to_string();
    let mut cmd = ns.command("ping");
    cmd.args(["-n", "-c", &count_s, "-i", "0.2", "-W", "1", &dst]);
    let line = crate::cmd::display_command(&cmd);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{line}`"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match parse_ping(&stdout) {
        // ping exits 1 when replies are missing: that is a result, not an error.
        Some(r) if out.status.success() || out.status.code() == Some(1) => Ok(r),
        _ => bail!(
            "`{line}` failed ({}): stderr: {} stdout: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        ),
    }
}

fn parse_ping(out: &str) -> Option<PingResult> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut transmitted = None;
    let mut received = None;
    for part in line.split(',') {
        let mut it = part.split_whitespace();
        let (Some(n), Some(word)) = (it.next(), it.next()) else {
            continue;
        };
        match word {
            "packets" => transmitted = n.parse().ok(),
            "received" => received = n.parse().ok(),
            _ => {}
        }
    }
    Some(PingResult {
        transmitted: transmitted?,
        received: received?,
    })
}

fn pattern_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// Gives `sock` a receive buffer of `bytes`, past rmem_max (SO_RCVBUFFORCE: root only).
pub fn force_receive_buffer(sock: &UdpSocket, bytes: libc::c_int) -> std::io::Result<()> {
    // SAFETY: a valid socket fd and option pointer/length.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(sock),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Fills `buf` with the pattern from `offset` on.
fn fill_pattern(buf: &mut [u8], offset: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(offset + i as u64);
    }
}

/// `buf` is the pattern from `offset` on.
fn is_pattern(buf: &[u8], offset: u64) -> bool {
    buf.iter()
        .enumerate()
        .all(|(i, &b)| b == pattern_byte(offset + i as u64))
}

/// A socket call that timed out or was interrupted: try again (until the deadline).
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// What is left until `deadline`, at least 10 ms (a socket timeout of 0 means none).
fn left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10))
}

/// A scoped thread's result; its panic goes on in the caller.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    match h.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

fn unspecified(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// Outcome of [`tcp_transfer_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpTransfer {
    /// Bytes the client managed to write.
    pub sent: u64,
    /// Bytes the server read (the number that counts).
    pub received: u64,
    /// Whether every byte read matched the expected pattern.
    pub intact: bool,
    /// Why the client stopped early (connect/write failure or timeout), if it did.
    pub client_error: Option<String>,
}

/// Sends `bytes` bytes over TCP from a client in `client_ns` to a server listening on
/// `server_addr` (ephemeral port) in `server_ns`, bounded by 10 s. Returns the number of bytes
/// the server received (0 if no connection could be made). Fails if the data arrived corrupted
/// or the server socket could not be set up.
pub fn tcp_transfer(
    server_ns: &NetNs,
    server_addr: IpAddr,
    client_ns: &NetNs,
    bytes: u64,
) -> Result<u64> {
    let t = tcp_transfer_with(server_ns, server_addr, client_ns, bytes, TRANSFER_TIMEOUT)?;
    if !t.intact {
        bail!("TCP payload corrupted in transit: {t:?}");
    }
    if let Some(e) = &t.client_error {
        eprintln!("tcp_transfer to {server_addr}: client stopped early: {e}");
    }
    Ok(t.received)
}

/// [`tcp_transfer`] with an explicit time bound and the full outcome.
pub fn tcp_transfer_with(
    server_ns: &NetNs,
    server_addr: IpAddr,
    client_ns: &NetNs,
    bytes: u64,
    timeout: Duration,
) -> Result<TcpTransfer> {
    let deadline = Instant::now() + timeout;
    let listener = server_ns
        .run_in(|| TcpListener::bind(SocketAddr::new(server_addr, 0)))
        .with_context(|| format!("bind TCP {server_addr}:0 in netns {}", server_ns.name()))?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let dst = SocketAddr::new(server_addr, port);
    let client_done = AtomicBool::new(false);

    std::thread::scope(|s| {
        let server = s.spawn(|| -> Result<(u64, bool)> {
            let mut stream = loop {
                match listener.accept() {
                    Ok((st, _)) => break st,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        // The client sets `client_done` only after giving up (it otherwise waits
                        // for us to close the connection), so nothing more will arrive.
                        if Instant::now() > deadline || client_done.load(Ordering::Acquire) {
                            return Ok((0, true));
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e).context("accept"),
                }
            };
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(Duration::from_millis(100)))?;
            let mut buf = vec![0u8; 64 * 1024];
            let (mut got, mut intact) = (0u64, true);
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        intact = intact && is_pattern(&buf[..n], got);
                        got += n as u64;
                    }
                    Err(e) if is_transient(&e) => {}
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                    Err(e) => return Err(e).context("read"),
                }
                if Instant::now() > deadline {
                    break;
                }
            }
            Ok((got, intact))
        });

        let client = || -> (u64, Option<String>) {
            let stream = client_ns.run_in(|| TcpStream::connect_timeout(&dst, left(deadline)));
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => return (0, Some(format!("connect {dst}: {e}"))),
            };
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let mut sent = 0u64;
            let mut chunk = vec![0u8; 64 * 1024];
            while sent < bytes {
                if Instant::now() > deadline {
                    return (sent, Some(format!("timeout after {sent} bytes")));
                }
                let n = (bytes - sent).min(chunk.len() as u64) as usize;
                fill_pattern(&mut chunk[..n], sent);
                match stream.write(&chunk[..n]) {
                    Ok(w) => sent += w as u64,
                    Err(e) if is_transient(&e) => {}
                    Err(e) => return (sent, Some(format!("write after {sent} bytes: {e}"))),
                }
            }
            let _ = stream.flush();
            let _ = stream.shutdown(Shutdown::Write);
            // Keep the socket open until the server has read everything (it sees EOF).
            let _ = stream.set_read_timeout(Some(left(deadline)));
            let _ = stream.read(&mut [0u8; 1]);
            (sent, None)
        };
        let (sent, client_error) = client();
        client_done.store(true, Ordering::Release);
        let (received, intact) = joined(server)?;
        Ok(TcpTransfer {
            sent,
            received,
            intact,
            client_error,
        })
    })
}

/// Outcome of [`udp_transfer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpTransfer {
    pub sent: u64,
    /// Distinct, intact datagrams the server received.
    pub received: u64,
    /// Datagrams that arrived with a wrong size or payload.
    pub corrupt: u64,
}

/// Sends `count` UDP datagrams of `size` bytes (≥ 8) from `client_ns` to an ephemeral port on
/// `server_addr` in `server_ns` (paced lightly), then waits up to 500 ms for stragglers; the
/// whole run is bounded by 10 s.
pub fn udp_transfer(
    server_ns: &NetNs,
    server_addr: IpAddr,
    client_ns: &NetNs,
    count: u64,
    size: usize,
) -> Result<UdpTransfer> {
    anyhow::ensure!(
        (8..=65000).contains(&size),
        "datagram size {size} out of range 8..=65000"
    );
    let deadline = Instant::now() + TRANSFER_TIMEOUT;
    let server = server_ns
        .run_in(|| UdpSocket::bind(SocketAddr::new(server_addr, 0)))
        .with_context(|| format!("bind UDP {server_addr}:0 in netns {}", server_ns.name()))?;
    let dst = SocketAddr::new(server_addr, server.local_addr()?.port());
    let client = client_ns
        .run_in(|| UdpSocket::bind(SocketAddr::new(unspecified(server_addr), 0)))
        .with_context(|| format!("bind UDP client socket in netns {}", client_ns.name()))?;
    server.set_read_timeout(Some(Duration::from_millis(50)))?;
    // A receive buffer large enough for the whole burst, so a descheduled receiver thread on a
    // busy test machine does not turn into socket-buffer drops (SO_RCVBUFFORCE: root).
    let want = (count as usize)
        .saturating_mul(size + 1024)
        .clamp(1 << 20, 64 << 20) as libc::c_int;
    let _ = force_receive_buffer(&server, want);
    let done_at = std::sync::Mutex::new(None::<Instant>);

    std::thread::scope(|s| {
        let rx = s.spawn(|| -> Result<(u64, u64)> {
            let mut seen = vec![false; count as usize];
            let (mut received, mut corrupt) = (0u64, 0u64);
            let mut buf = vec![0u8; 65536];
            loop {
                match server.recv(&mut buf) {
                    Ok(n) => {
                        let seq =
                            u64::from_be_bytes(buf[..8.min(n)].try_into().unwrap_or([0xff; 8]));
                        let ok = n == size && seq < count && is_pattern(&buf[8..n], seq);
                        if ok && !seen[seq as usize] {
                            seen[seq as usize] = true;
                            received += 1;
                        } else if !ok {
                            corrupt += 1;
                        }
                        if received == count {
                            break;
                        }
                    }
                    Err(e) if is_transient(&e) => {}
                    Err(e) => return Err(e).context("recv"),
                }
                let now = Instant::now();
                let grace_over = done_at
                    .lock()
                    .unwrap()
                    .is_some_and(|t| now > t + Duration::from_millis(500));
                if now > deadline || grace_over {
                    break;
                }
            }
            Ok((received, corrupt))
        });

        let mut sent = 0u64;
        let mut buf = vec![0u8; size];
        for seq in 0..count {
            if Instant::now() > deadline {
                break;
            }
            buf[..8].copy_from_slice(&seq.to_be_bytes());
            fill_pattern(&mut buf[8..], seq);
            if client.send_to(&buf, dst).is_ok() {
                sent += 1;
            }
            if seq % 32 == 31 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        *done_at.lock().unwrap() = Some(Instant::now());
        let (received, corrupt) = joined(rx)?;
        Ok(UdpTransfer {
            sent,
            received,
            corrupt,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ping_summary() {
        let out =
            "PING 10.0.2.2 (10.0.2.2) 56(84) bytes of data.\n\n--- 10.0.2.2 ping statistics ---\n\
                   3 packets transmitted, 2 received, 33.3333% packet loss, time 402ms\n";
        assert_eq!(
            parse_ping(out),
            Some(PingResult {
                transmitted: 3,
                received: 2
            })
        );
        let out = "5 packets transmitted, 0 received, +5 errors, 100% packet loss, time 4ms\n";
        assert_eq!(parse_ping(out).unwrap().received, 0);
        assert_eq!(parse_ping("garbage"), None);
    }
}
