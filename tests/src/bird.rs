//! BIRD 2 (Debian's `bird2`) inside a test namespace, as a guard.
//!
//! `bird -f -c CONF -s SOCKET` runs in the foreground under `ip netns exec`; its config and
//! control socket live in a fresh temporary directory. Dropping the guard stops it (SIGTERM,
//! then SIGKILL) and removes the directory.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{run, unique_suffix};
use crate::netns::{BgProcess, NetNs};

/// Is BIRD installed (`cargo xtask setup` installs it)?
pub fn available() -> bool {
    Path::new("/usr/sbin/bird").exists()
}

pub struct Bird {
    dir: PathBuf,
    socket: PathBuf,
    process: Option<BgProcess>,
}

impl Bird {
    /// Starts BIRD in `ns` with `config` (the text of bird.conf); waits for its control socket.
    pub fn start(ns: &NetNs, config: &str) -> Result<Bird> {
        let dir = std::env::temp_dir().join(format!("vrf-xdp-bird-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let conf = dir.join("bird.conf");
        let socket = dir.join("bird.ctl");
        std::fs::write(&conf, config).with_context(|| format!("write {}", conf.display()))?;
        // A config error would only show in the log of a daemon that has already opened its
        // socket: check it first (`-p`: parse and exit).
        if let Err(e) = run(Command::new("bird").arg("-p").arg("-c").arg(&conf)) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.context("BIRD refuses its config"));
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name(), "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket);
        let mut bird = Bird {
            dir,
            socket,
            process: Some(BgProcess::spawn(cmd)?),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bird.socket.exists() {
            let p = bird.process.as_mut().unwrap();
            if let Some(st) = p.try_wait()? {
                bail!("bird exited ({st}):\n{}", p.log());
            }
            if Instant::now() > deadline {
                bail!("bird did not open {} within 10 s", bird.socket.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(bird)
    }

    /// `birdc -s SOCKET CMD…`; returns its output.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = run(Command::new("birdc").arg("-s").arg(&self.socket).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
