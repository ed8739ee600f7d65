//! Named network namespaces (`ip netns add`) as RAII guards, and ways to run things inside them.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cmd::{display_command, global_lock, run, unique_suffix};

/// Every namespace this library creates is called `vx-<prefix>-<pid>-<counter>`.
pub const NETNS_PREFIX: &str = "vx-";
const NETNS_DIR: &str = "/run/netns";

/// A named network namespace, deleted (`ip netns del`) when dropped. Processes still inside it
/// (leaked by a test) are SIGKILLed first.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
}

fn sanitize_prefix(prefix: &str) -> String {
    let p: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    if p.is_empty() {
        "ns".into()
    } else {
        p
    }
}

/// The name prefix `vx-<prefix>-<this pid>-` shared by every namespace this process creates
/// with `NetNs::new(prefix)`.
pub fn netns_name_prefix(prefix: &str) -> String {
    format!(
        "{NETNS_PREFIX}{}-{}-",
        sanitize_prefix(prefix),
        std::process::id()
    )
}

/// Names in `ip netns list` that were created by this process with `NetNs::new(prefix)`.
pub fn list_own_netns(prefix: &str) -> Result<Vec<String>> {
    let want = netns_name_prefix(prefix);
    let out = crate::cmd::ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&want))
        .map(str::to_string)
        .collect())
}

/// Deletes `vx-*-<pid>-<n>` namespaces left behind by test processes that no longer exist
/// (killed by SIGKILL, so their Drop guards never ran). Set `VRF_XDP_TEST_NO_REAP=1` to skip.
fn reap_stale_namespaces() {
    if std::env::var_os("VRF_XDP_TEST_NO_REAP").is_some() {
        return;
    }
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    let me = std::process::id();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let parts: Vec<&str> = rest.rsplitn(3, '-').collect();
        if parts.len() != 3 || parts[0].parse::<u64>().is_err() {
            continue;
        }
        let Ok(pid) = parts[1].parse::<u32>() else {
            continue;
        };
        if pid == me || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match run(Command::new("ip").args(["netns", "del", &name])) {
            Ok(_) => eprintln!("vrf-xdp tests: removed stale namespace {name} (pid {pid} is gone)"),
            Err(e) => eprintln!("vrf-xdp tests: could not remove stale namespace {name}: {e:#}"),
        }
    }
}

/// Moves the calling thread into the network namespace at `path` (setns CLONE_NEWNET).
/// Only the calling thread changes; the mount namespace (bpffs, /sys) stays the host's.
/// `net.ipv4.ip_forward` (or `net/ipv4/conf/eth0.100/rp_filter`, for names with dots) under
/// /proc/sys.
fn sysctl_path(key: &str) -> String {
    let rel = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    format!("/proc/sys/{rel}")
}

fn enter_netns(path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: valid fd; setns only affects the calling thread for CLONE_NEWNET.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setns({}, CLONE_NEWNET)", path.display()));
    }
    Ok(())
}

impl NetNs {
    /// Creates `vx-<prefix>-<pid>-<counter>` with `ip netns add`, brings `lo` up.
    pub fn new(prefix: &str) -> Result<NetNs> {
        static REAP: Once = Once::new();
        REAP.call_once(reap_stale_namespaces);

        let prefix = sanitize_prefix(prefix);
        let mut attempts = 0;
        let ns = loop {
            let name = format!("{NETNS_PREFIX}{prefix}-{}", unique_suffix());
            let path = Path::new(NETNS_DIR).join(&name);
            // A stale file with the same name (pid reuse after a crash): pick another counter.
            if path.exists() && attempts < 16 {
                attempts += 1;
                continue;
            }
            let _lock = global_lock()?;
            run(Command::new("ip").args(["netns", "add", &name]))?;
            break NetNs { name, path };
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, the bind-mounted namespace file (for `nsenter --net=`, setns, aya).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `ip -n <name> ARGS...`; returns stdout. Errors include the command and its stderr.
    pub fn ip<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        let out = run(Command::new("ip").arg("-n").arg(&self.name).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A `Command` that runs `prog` inside this namespace through `nsenter --net=PATH`
    /// (only the network namespace changes: bpffs pins under /sys/fs/bpf stay visible,
    /// unlike `ip netns exec`). Add arguments, env, stdio as needed.
    pub fn command<S: AsRef<OsStr>>(&self, prog: S) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path.display()))
            .arg("--")
            .arg(prog);
        c
    }

    /// Runs `args[0] args[1..]` in the namespace and waits; fails unless it exits with 0.
    pub fn exec<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(&mut self.argv("exec", args)?)
    }

    /// Like [`exec`](Self::exec) but returns stdout as a String.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.exec(args)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `args[0] args[1..]` in the background inside the namespace. stdout and stderr go
    /// to a log file (see [`BgProcess::log`]). The process is stopped when the guard drops.
    pub fn spawn<I, S>(&self, args: I) -> Result<BgProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        BgProcess::spawn(self.argv("spawn", args)?)
    }

    /// `args[0] args[1..]` as a command in the namespace; `what` names the caller in the error.
    fn argv<I, S>(&self, what: &str, args: I) -> Result<Command>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut it = args.into_iter();
        let prog = it
            .next()
            .with_context(|| format!("{what}: empty argument list"))?;
        let mut c = self.command(prog);
        c.args(it);
        Ok(c)
    }

    /// Runs `f` on a fresh thread that has entered this network namespace (setns), waits
    /// for it and returns its result. Panics inside `f` propagate to the caller. The closure
    /// may borrow from the caller (scoped thread). Sockets, netlink, if_nametoindex and aya
    /// attach calls made in `f` act on this namespace. Note: `/proc/net` and `/sys/class/net`
    /// still show the *process's* namespace; use `/proc/thread-self/net/...`.
    pub fn run_in<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = self.path.clone();
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                if let Err(e) = enter_netns(&path) {
                    panic!("run_in: {e:#}");
                }
                f()
            });
            match h.join() {
                Ok(r) => r,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        })
    }

    /// Like [`run_in`](Self::run_in) but does not wait: returns the thread's JoinHandle.
    pub fn spawn_thread<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = self.path.clone();
        std::thread::spawn(move || {
            if let Err(e) = enter_netns(&path) {
                panic!("spawn_thread: {e:#}");
            }
            f()
        })
    }

    /// Sets a sysctl inside the namespace. `key` is dotted (`net.ipv4.ip_forward`) or a path
    /// below /proc/sys (`net/ipv4/conf/eth0.5/forwarding`, for names containing dots).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key);
        self.run_in(|| std::fs::write(&path, value))
            .with_context(|| format!("sysctl {key} in netns {}", self.name))
    }

    /// Reads a sysctl inside the namespace (trimmed).
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key);
        let s = self
            .run_in(move || std::fs::read_to_string(&path))
            .with_context(|| format!("read sysctl {key} in netns {}", self.name))?;
        Ok(s.trim().to_string())
    }

    /// PIDs of processes whose (main thread's) network namespace is this one.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let out = crate::cmd::ip(&["netns", "pids", &self.name])?;
        Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let me = std::process::id();
        if let Ok(pids) = self.pids() {
            for pid in pids.into_iter().filter(|&p| p != me) {
                eprintln!(
                    "vrf-xdp tests: killing leftover pid {pid} in netns {}",
                    self.name
                );
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("vrf-xdp tests: {e:#}");
        }
    }
}

/// A background process (started by [`NetNs::spawn`] or [`BgProcess::spawn`]); on drop it gets
/// SIGTERM, then SIGKILL after 3 s, and is reaped. If the current thread is panicking, its log
/// is printed to stderr to help diagnose the failure.
#[derive(Debug)]
pub struct BgProcess {
    child: Option<Child>,
    pid: u32,
    desc: String,
    log_path: PathBuf,
}

impl BgProcess {
    /// Spawns `cmd` with stdin from /dev/null and stdout+stderr appended to a fresh log file,
    /// in a new process group (signals from [`stop`](Self::stop) and drop go to the whole
    /// group, so children of a shell are stopped too).
    pub fn spawn(mut cmd: Command) -> Result<BgProcess> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let desc = display_command(&cmd);
        let log_path = std::env::temp_dir().join(format!("vrf-xdp-test-{}.log", unique_suffix()));
        let log = File::create(&log_path)
            .with_context(|| format!("create log file {}", log_path.display()))?;
        let log2 = log.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .with_context(|| format!("failed to spawn `{desc}`"))?;
        Ok(BgProcess {
            pid: child.id(),
            child: Some(child),
            desc,
            log_path,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The command line, for messages.
    pub fn description(&self) -> &str {
        &self.desc
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `Ok(None)` while running, `Ok(Some(status))` once it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => anyhow::bail!("process already stopped"),
        }
    }

    /// Polls `pred(log)` every 20 ms until true; fails on timeout or if the process exits.
    pub fn wait_for_log<P: Fn(&str) -> bool>(&mut self, pred: P, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.log()) {
                return Ok(());
            }
            if let Some(st) = self.try_wait()? {
                anyhow::bail!(
                    "`{}` exited ({st}) before ready; log:\n{}",
                    self.desc,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!("timeout waiting for `{}`; log:\n{}", self.desc, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the process (while it has not been stopped/reaped by this guard).
    pub fn signal(&self, sig: i32) -> Result<()> {
        anyhow::ensure!(self.child.is_some(), "process already stopped");
        // SAFETY: plain kill(2) on our unreaped child.
        if unsafe { libc::kill(self.pid as libc::pid_t, sig) } != 0 {
            return Err(std::io::Error::last_os_error()).context("kill");
        }
        Ok(())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns the exit status.
    pub fn stop_with(&mut self, grace: Duration) -> Result<ExitStatus> {
        let mut child = self.child.take().context("process already stopped")?;
        // The group id is the child's pid (process_group(0)); it stays valid while the group
        // has members, even after the leader exits, so leftovers are signalled too.
        let pgid = -(self.pid as libc::pid_t);
        if let Some(st) = child.try_wait()? {
            // SAFETY: plain kill(2) on our own process group.
            unsafe { libc::kill(pgid, libc::SIGKILL) };
            return Ok(st);
        }
        // SAFETY: plain kill(2) on our own process group; the leader is not reaped yet.
        unsafe { libc::kill(pgid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        let mut status = None;
        while Instant::now() < deadline {
            if let Some(st) = child.try_wait()? {
                status = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Whatever is left of the group (the leader if it ignored SIGTERM, or its children).
        // SAFETY: as above.
        unsafe { libc::kill(pgid, libc::SIGKILL) };
        match status {
            Some(st) => Ok(st),
            None => Ok(child.wait()?),
        }
    }

    /// [`stop_with`](Self::stop_with) a 3 s grace period.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.stop_with(Duration::from_secs(3))
    }
}

impl Drop for BgProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(e) = self.stop() {
                eprintln!("vrf-xdp tests: stopping `{}`: {e:#}", self.desc);
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "----- log of `{}` (pid {}) -----\n{}\n----- end of log -----",
                self.desc,
                self.pid(),
                self.log()
            );
        }
        if std::env::var_os("VRF_XDP_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}
