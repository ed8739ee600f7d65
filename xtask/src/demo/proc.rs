//! The demo's child processes: commands inside a namespace, background processes that are
//! always stopped, and the Ctrl-C flag that every wait checks.
//!
//! Every child gets its own process group, so a Ctrl-C in the terminal reaches xtask alone: it
//! sets [`interrupted`], the demo unwinds, and the guards stop the children in order (vrfd
//! first, with SIGTERM, so that it detaches XDP and removes its rules and pins).

use std::{
    ffi::OsStr,
    fmt,
    fs::File,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::cargo::display;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The error the demo unwinds with after Ctrl-C (or SIGTERM/SIGHUP).
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// SIGINT, SIGTERM and SIGHUP set a flag instead of killing xtask.
pub fn install_interrupt_handler() -> Result<()> {
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")
}

/// Fails with [`Interrupted`] once Ctrl-C was pressed.
pub fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// Sleeps `d`, waking up early (with [`Interrupted`]) on Ctrl-C.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupt()?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// `program` in its own process group.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.process_group(0);
    cmd
}

/// `program` inside network namespace `ns`. `nsenter --net` enters only the network namespace
/// (`ip netns exec` would also give it a fresh /sys without the bpffs where vrfd pins its maps).
pub fn in_ns(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = command("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}")).arg(program);
    cmd
}

/// Runs `cmd` to completion with any exit status, capturing its output.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{}`", display(cmd)))
}

/// Runs `cmd`, which must succeed; returns its stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Background {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
}

impl Background {
    /// Starts `cmd` with stdout to `stdout` and stderr to `stderr` (files, created).
    pub fn spawn(name: &str, cmd: &mut Command, stdout: &Path, stderr: &Path) -> Result<Self> {
        let file = |p: &Path| File::create(p).with_context(|| format!("creating {}", p.display()));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file(stdout)?)
            .stderr(file(stderr)?)
            .spawn()
            .with_context(|| format!("failed to start `{}`", display(cmd)))?;
        Ok(Background {
            name: name.to_owned(),
            child,
            status: None,
        })
    }

    /// Its exit status, once it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?;
        }
        Ok(self.status)
    }

    /// SIGTERM, and SIGKILL if it has not exited after `grace`. Returns its exit status.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(st) = self.try_wait()? {
            return Ok(st);
        }
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) on our own child, which has not been reaped (try_wait saw it running),
        // so the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Some(st) = self.try_wait()? {
                return Ok(st);
            }
            // Not `sleep`: stopping must finish even after Ctrl-C.
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("{} ignored SIGTERM for {grace:?}: killing it", self.name);
        let _ = self.child.kill();
        let st = self
            .child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        self.status = Some(st);
        Ok(st)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Err(e) = self.stop(Duration::from_secs(3)) {
            eprintln!("stopping {}: {e:#}", self.name);
        }
    }
}
