//! A doorbell for state read through other libraries: a netlink multicast subscription where
//! any message (or a lost one, ENOBUFS) means "re-read the state through its library"; a poll
//! period bounds how stale a state the kernel does not announce can get.
use std::{io, time::Duration};

use anyhow::{Context, Result};
use netlink_sys::{Socket, SocketAddr};
use tokio::io::{unix::AsyncFd, Interest};

/// A socket of one netlink protocol joined to some multicast groups.
pub struct Doorbell {
    fd: AsyncFd<Socket>,
    poll: Duration,
    /// When the poll period ends: kept across calls, so a select loop whose other branches
    /// fire more often than `poll` (the heartbeat) does not starve the re-read.
    deadline: tokio::time::Instant,
}

impl Doorbell {
    /// Subscribe (in the calling thread's network namespace) to `groups` of `protocol`.
    pub fn new(protocol: isize, groups: &[u32], poll: Duration) -> Result<Doorbell> {
        let mut s = Socket::new(protocol).context("netlink socket")?;
        s.bind(&SocketAddr::new(0, 0)).context("netlink bind")?;
        for g in groups {
            s.add_membership(*g)
                .with_context(|| format!("joining netlink group {g} of protocol {protocol}"))?;
        }
        s.set_non_blocking(true)?;
        // SAFETY: the Socket owns its fd and moves into the AsyncFd, which closes it last.
        let fd = unsafe { AsyncFd::register_with_interest(s, Interest::READABLE) }
            .map_err(io::Error::from)
            .context("registering with tokio")?;
        Ok(Doorbell {
            fd,
            poll,
            deadline: tokio::time::Instant::now() + poll,
        })
    }

    /// Wait until the kernel announces something (all queued messages are drained) or the poll
    /// period has passed. Errors of the socket count as announcements: the caller re-reads.
    pub async fn rung(&mut self) {
        let deadline = self.deadline;
        let _ = tokio::time::timeout_at(deadline, async {
            loop {
                let Ok(mut guard) = self.fd.readable().await else {
                    return;
                };
                let mut got = false;
                let mut buf = vec![0u8; 65536];
                loop {
                    match guard.get_inner().recv(&mut &mut buf[..], 0) {
                        Ok(_) => got = true,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            guard.clear_ready();
                            break;
                        }
                        // ENOBUFS: announcements were lost, which is itself one.
                        Err(_) => {
                            got = true;
                            break;
                        }
                    }
                }
                if got {
                    return;
                }
            }
        })
        .await;
        self.deadline = tokio::time::Instant::now() + self.poll;
    }
}

/// A kernel state that is re-read whenever its [`Doorbell`] rings, yielded when it changed.
pub struct Watcher<S> {
    bell: Doorbell,
    read: fn() -> S,
    last: S,
}

impl<S: Clone + PartialEq> Watcher<S> {
    /// Subscribe (in the calling thread's network namespace, inside a tokio runtime), then take
    /// the first reading ([`current`](Self::current)).
    pub fn subscribe(
        protocol: isize,
        groups: &[u32],
        poll: Duration,
        read: fn() -> S,
    ) -> Result<Watcher<S>> {
        let bell = Doorbell::new(protocol, groups, poll)?;
        Ok(Watcher {
            bell,
            read,
            last: read(),
        })
    }

    pub fn current(&self) -> &S {
        &self.last
    }

    /// The next state that differs from the last one returned (cancel-safe).
    pub async fn changed(&mut self) -> S {
        loop {
            self.bell.rung().await;
            let now = (self.read)();
            if now != self.last {
                self.last = now.clone();
                return now;
            }
        }
    }
}
