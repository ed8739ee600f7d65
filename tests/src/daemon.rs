//! `vrfd` as a real process inside a namespace, and `vrfctl` next to it.
//!
//! [`Vrfd::start`] writes the configuration to a fresh temporary directory, starts
//! `vrfd --config F --pin-path /sys/fs/bpf/vrf-xdp-vrfd-<pid>-<n> --log-format json` inside the
//! given namespace with `nsenter --net` (so the pins land on the host's bpffs, where `vrfctl` and
//! the test process see them) and waits for its `ready` log line. [`Vrfd::vrfctl`] runs `vrfctl`
//! in the same namespace (it names interfaces by the namespace's ifindexes) with the same pin
//! path. [`Vrfd::stop`] is the orderly end: SIGTERM, exit status 0, then `vrfd --detach` on the
//! same pin path (a plain stop leaves programs, links and pins for the next vrfd), pins gone.
//! Dropping a `Vrfd` that was not stopped kills it and runs `vrfd --detach` the same way, so a
//! test leaves nothing attached or pinned.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::bpffs::{ensure_bpffs, BPFFS};
use crate::cmd::{display_command, unique_suffix};
use crate::netns::{BgProcess, NetNs};
use crate::topology::Topology;

/// How long vrfd may take to say `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long vrfd may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh, not yet existing pin path under /sys/fs/bpf (vrfd creates it).
pub fn unique_pin_path() -> Result<PathBuf> {
    ensure_bpffs()?;
    Ok(Path::new(BPFFS).join(format!("vrf-xdp-vrfd-{}", unique_suffix())))
}

/// The lock file vrfd takes for `pin_path` (`/run/vrf-xdp/<pin path with '/' as '_'>.lock`).
/// vrfd leaves it behind (an flock on a file that stays is the race-free way); the tests remove
/// theirs once their vrfd has exited.
pub fn lock_file(pin_path: &Path) -> PathBuf {
    let name = pin_path
        .to_string_lossy()
        .trim_matches('/')
        .replace('/', "_");
    Path::new("/run/vrf-xdp").join(format!("{name}.lock"))
}

/// A temporary directory holding one config file, removed on drop.
#[derive(Debug)]
pub struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    pub fn new(text: &str) -> Result<ConfigFile> {
        let dir = std::env::temp_dir().join(format!("vrf-xdp-vrfd-{}", unique_suffix()));
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let path = dir.join("vrfd.toml");
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        Ok(ConfigFile { dir, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `[[vrf]]` table of vrfd's configuration: a VRF's name, table and member names.
pub fn vrf_toml(name: &str, table: u32, interfaces: &[&str]) -> String {
    let members: Vec<String> = interfaces.iter().map(|m| format!("{m:?}")).collect();
    format!(
        "[[vrf]]\nname = {name:?}\ntable = {table}\ninterfaces = [{}]\n\n",
        members.join(", ")
    )
}

/// vrfd's configuration for every VRF of `topo`: name, table, member names, nothing else.
pub fn topology_config(topo: &Topology) -> String {
    topo.vrfs()
        .iter()
        .map(|v| {
            let members: Vec<&str> = v.members.iter().map(|m| m.ifname.as_str()).collect();
            vrf_toml(&v.name, v.table, &members)
        })
        .collect()
}

/// vrfd declaring every VRF of `topo`, started after the topology's own `iif` rules are gone
/// (so a vrfd that added none would forward nothing). Panics on failure (this is test code).
pub fn start_on(topo: &Topology) -> Vrfd<'_> {
    topo.remove_all_rules();
    Vrfd::start(topo.router(), &topology_config(topo))
        .unwrap_or_else(|e| panic!("starting vrfd: {e:#}"))
}

/// `vrfd --detach --remove-rules --pin-path PINS` in `ns` (every rule a vrfd added goes, no
/// daemon starts); panics unless it exits 0.
pub fn remove_rules_detached(ns: &NetNs, pins: &Path) {
    let out = ns
        .command(crate::bin_path("vrfd"))
        .args(["--detach", "--remove-rules", "--pin-path"])
        .arg(pins)
        .output()
        .unwrap_or_else(|e| panic!("running vrfd --detach --remove-rules: {e}"));
    assert!(
        out.status.success(),
        "vrfd --detach --remove-rules: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `action/reason [via OIF] [gw GATEWAY]` of a `vrfctl lookup --json` answer.
pub fn fate(v: &Value) -> String {
    let mut s = format!(
        "{}/{}",
        v["action"].as_str().unwrap_or("?"),
        v["reason"].as_str().unwrap_or("?")
    );
    if let Some(o) = v["oif"].as_str() {
        s += &format!(" via {o}");
    }
    if let Some(g) = v["gateway"].as_str() {
        s += &format!(" gw {g}");
    }
    s
}

/// The lines of a JSON log (tracing's `--log-format json`) that parse as JSON objects.
pub fn json_log_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// The `fields.message` of a JSON log line.
pub fn log_message(line: &Value) -> Option<&str> {
    line.get("fields")?.get("message")?.as_str()
}

/// Whether the JSON log has a line whose message is `message`.
pub fn log_has_message(log: &str, message: &str) -> bool {
    json_log_lines(log)
        .iter()
        .any(|l| log_message(l) == Some(message))
}

/// The outcome of a vrfd that was expected to exit on its own.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    /// stdout and stderr, interleaved.
    pub log: String,
}

/// A running vrfd (see the module documentation).
#[derive(Debug)]
pub struct Vrfd<'a> {
    ns: &'a NetNs,
    proc: Option<BgProcess>,
    pin_path: PathBuf,
    config: ConfigFile,
}

impl<'a> Vrfd<'a> {
    /// Starts vrfd with `config` inside `ns` and waits (10 s at most) for its `ready` log line.
    /// Fails with vrfd's log when it exits or times out first.
    pub fn start(ns: &'a NetNs, config: &str) -> Result<Vrfd<'a>> {
        Self::start_with(ns, config, &[])
    }

    /// [`start`](Self::start) with extra command-line arguments.
    pub fn start_with(ns: &'a NetNs, config: &str, extra: &[&str]) -> Result<Vrfd<'a>> {
        Self::start_with_env(ns, config, extra, &[])
    }

    /// [`start_with`](Self::start_with), `env` set for vrfd (its test hooks).
    pub fn start_with_env(
        ns: &'a NetNs,
        config: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Vrfd<'a>> {
        let mut d = Self::spawn_env(ns, config, "json", extra, env)?;
        let proc = d.proc.as_mut().expect("just spawned");
        proc.wait_for_log(|log| log_has_message(log, "ready"), READY_TIMEOUT)
            .context("vrfd did not become ready")?;
        ensure!(
            d.pin_path.is_dir(),
            "vrfd is ready but its pin path {} does not exist",
            d.pin_path.display()
        );
        Ok(d)
    }

    /// Spawns vrfd with `--log-format LOG_FORMAT` without waiting for anything.
    pub fn spawn(
        ns: &'a NetNs,
        config: &str,
        log_format: &str,
        extra: &[&str],
    ) -> Result<Vrfd<'a>> {
        Self::spawn_env(ns, config, log_format, extra, &[])
    }

    fn spawn_env(
        ns: &'a NetNs,
        config: &str,
        log_format: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Vrfd<'a>> {
        let config = ConfigFile::new(config)?;
        let pin_path = unique_pin_path()?;
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("--config"),
            config.path().as_os_str(),
            OsStr::new("--pin-path"),
            pin_path.as_os_str(),
            OsStr::new("--log-format"),
            OsStr::new(log_format),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let mut command = ns.command(crate::bin_path("vrfd"));
        command.args(args).envs(env.iter().copied());
        let proc = crate::BgProcess::spawn(command)?;
        Ok(Vrfd {
            ns,
            proc: Some(proc),
            pin_path,
            config,
        })
    }

    /// Runs vrfd with `config` in `ns` and waits (10 s at most) for it to exit by itself, as it
    /// must on a bad configuration. Returns its status and output, and the pin path it was given.
    pub fn run_to_exit(ns: &NetNs, config: &str) -> Result<(Exited, PathBuf)> {
        Self::run_to_exit_with(ns, config, "json")
    }

    /// [`run_to_exit`](Self::run_to_exit) with `--log-format LOG_FORMAT`.
    pub fn run_to_exit_with(
        ns: &NetNs,
        config: &str,
        log_format: &str,
    ) -> Result<(Exited, PathBuf)> {
        let mut d = Vrfd::spawn(ns, config, log_format, &[])?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let proc = d.proc.as_mut().expect("just spawned");
        loop {
            if let Some(status) = proc.try_wait()? {
                let log = proc.log();
                // Reap (the guard must not signal a finished process's group later).
                proc.stop()?;
                d.proc = None;
                return Ok((Exited { status, log }, d.pin_path.clone()));
            }
            if Instant::now() > deadline {
                bail!(
                    "vrfd did not exit within {READY_TIMEOUT:?}; log:\n{}",
                    proc.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a log line whose message is `message`; fails after
    /// `timeout`.
    pub fn wait_for_message(&mut self, message: &str, timeout: Duration) -> Result<()> {
        let proc = self.proc.as_mut().context("vrfd is not running")?;
        proc.wait_for_log(|log| log_has_message(log, message), timeout)
            .with_context(|| format!("vrfd never logged {message:?}"))
    }

    pub fn pin_path(&self) -> &Path {
        &self.pin_path
    }

    pub fn config_path(&self) -> &Path {
        self.config.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(BgProcess::pid)
    }

    /// Everything vrfd logged so far.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(BgProcess::log).unwrap_or_default()
    }

    /// Fails if vrfd has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let proc = self.proc.as_mut().context("vrfd was stopped")?;
        if let Some(st) = proc.try_wait()? {
            bail!("vrfd exited ({st}); log:\n{}", proc.log());
        }
        Ok(())
    }

    /// `vrfctl --pin-path P ARGS...` in vrfd's namespace; any exit status.
    pub fn vrfctl<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output> {
        vrfctl_in(self.ns, &self.pin_path, args)
    }

    /// `vrfctl ARGS...` that must succeed and print JSON.
    pub fn vrfctl_json<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Value> {
        let out = self.vrfctl(args)?;
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        ensure!(
            out.status.success(),
            "vrfctl {} failed ({}): {}",
            shown.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "vrfctl {}: not JSON: {}",
                shown.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `vrfctl show --json`.
    pub fn show(&self) -> Result<Value> {
        self.vrfctl_json(&["show", "--json"])
    }

    /// The `vrfctl show --json` object of VRF `name`.
    pub fn show_vrf(&self, name: &str) -> Result<Value> {
        let all = self.show()?;
        all["vrfs"]
            .as_array()
            .and_then(|a| a.iter().find(|v| v["name"] == name))
            .cloned()
            .with_context(|| format!("vrfctl show lists no VRF {name:?}: {all}"))
    }

    /// `vrfctl lookup --vrf VRF [--iif IIF] [--from SRC] DST --json`.
    pub fn lookup(
        &self,
        vrf: &str,
        iif: Option<&str>,
        from: Option<&str>,
        dst: &str,
    ) -> Result<Value> {
        let mut args = vec!["lookup", "--vrf", vrf];
        if let Some(i) = iif {
            args.extend(["--iif", i]);
        }
        if let Some(f) = from {
            args.extend(["--from", f]);
        }
        args.extend([dst, "--json"]);
        self.vrfctl_json(&args)
    }

    /// The maps vrfd pinned, opened by this process.
    pub fn maps(&self) -> Result<vrf_user::maps::Maps> {
        vrf_user::maps::Maps::from_pins(&self.pin_path)
    }

    /// For a vrfd started with `--no-persist`: SIGTERM, exit status 0 within 5 s, and vrfd itself
    /// removed its pin directory (no `vrfd --detach` before the check). Returns the full log.
    pub fn stop_removing_everything(mut self) -> Result<String> {
        let mut proc = self.proc.take().context("vrfd was already stopped")?;
        let status = proc.stop_with(STOP_TIMEOUT)?;
        let log = proc.log();
        ensure!(
            status.code() == Some(0),
            "vrfd exited with {status} after SIGTERM (want 0); log:\n{log}"
        );
        ensure!(
            !self.pin_path.exists(),
            "vrfd --no-persist exited but left its pin directory {}; log:\n{log}",
            self.pin_path.display()
        );
        Ok(log)
    }

    /// SIGTERM, then: vrfd must exit with status 0 within 5 s; `vrfd --detach` must succeed and
    /// leave no pin directory. Returns the full log.
    pub fn stop(mut self) -> Result<String> {
        let mut proc = self.proc.take().context("vrfd was already stopped")?;
        if let Some(st) = proc.try_wait()? {
            bail!("vrfd had already exited ({st}); log:\n{}", proc.log());
        }
        let status = proc.stop_with(STOP_TIMEOUT)?;
        let log = proc.log();
        ensure!(
            status.code() == Some(0),
            "vrfd exited with {status} after SIGTERM (want 0); log:\n{log}"
        );
        let out = detach_in(self.ns, &self.pin_path)?;
        ensure!(
            out.status.success(),
            "vrfd --detach after the stop failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        ensure!(
            !self.pin_path.exists(),
            "vrfd --detach left the pin directory {}; log:\n{log}",
            self.pin_path.display()
        );
        Ok(log)
    }
}

impl Drop for Vrfd<'_> {
    fn drop(&mut self) {
        // BgProcess's own drop: SIGTERM, SIGKILL after 3 s, log printed when panicking.
        drop(self.proc.take());
        if self.pin_path.exists() {
            let _ = detach_in(self.ns, &self.pin_path);
        }
        if self.pin_path.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.pin_path) {
                eprintln!("vrf-xdp tests: remove {}: {e}", self.pin_path.display());
            }
        }
        let _ = std::fs::remove_file(lock_file(&self.pin_path));
    }
}

/// `vrfd --detach --pin-path PIN` inside `ns` (the tc filters it removes are the namespace's),
/// with any exit status.
pub fn detach_in(ns: &NetNs, pin_path: &Path) -> Result<Output> {
    let mut c = ns.command(crate::bin_path("vrfd"));
    c.arg("--detach").arg("--pin-path").arg(pin_path);
    let line = display_command(&c);
    c.stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{line}`"))
}

/// `vrfctl --pin-path PIN ARGS...` inside `ns`, with any exit status.
pub fn vrfctl_in<S: AsRef<OsStr>>(ns: &NetNs, pin_path: &Path, args: &[S]) -> Result<Output> {
    let mut c = ns.command(crate::bin_path("vrfctl"));
    c.arg("--pin-path").arg(pin_path).args(args);
    let line = display_command(&c);
    c.stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{line}`"))
}

impl Vrfd<'_> {
    /// The address vrfd serves metrics on (started with `--metrics 127.0.0.1:0`), from its
    /// `serving metrics` log line.
    pub fn metrics_addr(&self) -> Result<std::net::SocketAddr> {
        let log = self.log();
        json_log_lines(&log)
            .iter()
            .find(|l| log_message(l).is_some_and(|m| m.starts_with("serving metrics")))
            .and_then(|l| l["fields"]["address"].as_str()?.parse().ok())
            .with_context(|| format!("no `serving metrics` line with an address in:\n{log}"))
    }

    /// The value of the sample `name` (exact, labels included) in one scrape of `/metrics`.
    pub fn metric(&self, name: &str) -> Result<Option<f64>> {
        use std::io::{Read as _, Write as _};
        let addr = self.metrics_addr()?;
        let body = self.ns.run_in(|| -> Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                s,
                "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })?;
        Ok(body.lines().find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse().ok()).flatten()
        }))
    }
}
