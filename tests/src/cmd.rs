//! Running external commands with checked exit status, unique names, and a cross-process lock.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

/// Renders a command line for error messages (`prog arg1 arg2 ...`).
pub fn display_command(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, capturing stdout/stderr. Fails (with the command line, exit
/// status, stderr and stdout in the message) unless it exits with status 0.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let line = display_command(cmd);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): stderr: {} stdout: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out)
}

/// Runs `prog args...` in the current (root) network namespace; returns stdout on success.
pub fn run_ok<S: AsRef<OsStr>>(prog: &str, args: &[S]) -> Result<String> {
    let out = run(Command::new(prog).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS...` in the current (root) network namespace; returns stdout.
pub fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<String> {
    run_ok("ip", args)
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A number unique within this process (starts at 1).
pub fn next_id() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed) + 1
}

/// `pid-counter`: unique across concurrently running processes (and threads).
pub fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), next_id())
}

fn base36(mut n: u64, min_width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut v = Vec::new();
    while n > 0 {
        v.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    while v.len() < min_width {
        v.push(b'0');
    }
    v.reverse();
    String::from_utf8(v).expect("ascii")
}

/// A short interface name (≤ 15 bytes, the kernel's IFNAMSIZ-1) that is unique across
/// processes and threads for a given `prefix`: the prefix (letters/digits only, cut to 4
/// chars), the pid in base 36 (fixed 5 chars), then a per-process counter in base 36.
/// E.g. `unique_ifname("r")` → `"r02ktb1"`.
///
/// Only names created in a shared namespace (the root one) need this: interfaces inside the
/// private namespaces of a [`crate::NetNs`] cannot clash with anybody else's.
pub fn unique_ifname(prefix: &str) -> String {
    let p: String = prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(4)
        .collect();
    let p = if p.is_empty() { "x".to_string() } else { p };
    let name = format!(
        "{p}{}{}",
        base36(u64::from(std::process::id()), 5),
        base36(next_id(), 1)
    );
    assert!(name.len() <= 15, "interface name {name} too long");
    name
}

/// Cross-process exclusive lock (flock on a file in /run), held until the guard drops.
/// Used around the few operations that race between processes: the first `ip netns add`
/// (which turns /run/netns into a shared mount) and mounting bpffs.
pub struct GlobalLock {
    _file: File,
}

pub fn global_lock() -> Result<GlobalLock> {
    let path = "/run/vrf-xdp-tests.lock";
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("open {path}"))?;
    loop {
        // SAFETY: valid fd owned by `file`.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).with_context(|| format!("flock {path}"));
        }
    }
    Ok(GlobalLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifnames_are_short_and_unique() {
        let a = unique_ifname("router");
        let b = unique_ifname("router");
        assert_ne!(a, b);
        assert!(a.len() <= 15 && a.starts_with("rout"), "{a}");
        assert_eq!(base36(0, 1), "0");
        assert_eq!(base36(35, 1), "z");
        assert_eq!(base36(36, 3), "010");
    }
}
