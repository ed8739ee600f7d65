//! FRR 8.4 (Debian's `frr`) inside a test namespace: zebra, staticd and bgpd as one guard.
//!
//! Each daemon runs in the foreground under `ip netns exec` (zebra must see the namespace's
//! /sys) with `-N NAME`, which puts its pid file, vty and zserv sockets under
//! /var/run/frr/NAME; NAME is unique per instance, so several routers run at once. Dropping
//! the guard stops the daemons (SIGTERM, then SIGKILL to each process group) and removes the
//! instance's directories; zebra's routes go with the namespace.
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{run, unique_suffix};
use crate::netns::{BgProcess, NetNs};

const FRR_LIB: &str = "/usr/lib/frr";

/// Is FRR installed (`cargo xtask setup` installs it)?
pub fn available() -> bool {
    std::path::Path::new(FRR_LIB).join("zebra").exists()
}

/// A running FRR router in a namespace.
pub struct Frr {
    /// The `-N` instance name (vtysh -N NAME talks to it).
    pub name: String,
    run_dir: PathBuf,
    conf_dir: PathBuf,
    // Stopped in reverse order of start: bgpd and staticd before zebra.
    daemons: Vec<BgProcess>,
}

impl Frr {
    /// Starts zebra, staticd and bgpd in `ns` with `bgpd_conf` (the text of bgpd.conf) and
    /// `staticd_conf`; waits until vtysh answers every daemon.
    pub fn start(ns: &NetNs, bgpd_conf: &str, staticd_conf: &str) -> Result<Frr> {
        let name = format!("vx{}", unique_suffix()).replace('-', "");
        let run_dir = PathBuf::from("/var/run/frr").join(&name);
        let conf_dir = PathBuf::from("/etc/frr").join(&name);
        let mut frr = Frr {
            name,
            run_dir,
            conf_dir,
            daemons: Vec::new(),
        };
        for dir in [&frr.run_dir, &frr.conf_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            run(Command::new("chown").args(["frr:frr"]).arg(dir))?;
        }
        for (daemon, conf) in [
            ("zebra", "hostname zebra\n"),
            ("staticd", staticd_conf),
            ("bgpd", bgpd_conf),
        ] {
            let path = frr.conf_dir.join(format!("{daemon}.conf"));
            std::fs::write(&path, conf).with_context(|| format!("write {}", path.display()))?;
            run(Command::new("chown").args(["frr:frr"]).arg(&path))?;
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns.name()])
                .arg(format!("{FRR_LIB}/{daemon}"))
                .args(["-N", &frr.name, "-f"])
                .arg(&path);
            if daemon == "zebra" {
                // Keep routes installed by a daemon that dies in a test visible for the assert.
                cmd.arg("-r");
            }
            frr.daemons.push(BgProcess::spawn(cmd)?);
            frr.wait_for_vty(daemon)?;
        }
        Ok(frr)
    }

    fn wait_for_vty(&mut self, daemon: &str) -> Result<()> {
        let sock = self.run_dir.join(format!("{daemon}.vty"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if sock.exists() {
                return Ok(());
            }
            if let Some(d) = self.daemons.last_mut() {
                if let Some(st) = d.try_wait()? {
                    bail!("{daemon} exited ({st}):\n{}", d.log());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{daemon} did not open {} within 10 s", sock.display())
    }

    /// `vtysh -N NAME -c CMD`; returns its output.
    pub fn vtysh(&self, cmd: &str) -> Result<String> {
        let out = run(Command::new("vtysh").args(["-N", &self.name, "-c", cmd]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        while let Some(mut d) = self.daemons.pop() {
            let _ = d.stop();
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
        let _ = std::fs::remove_dir_all(&self.conf_dir);
    }
}
