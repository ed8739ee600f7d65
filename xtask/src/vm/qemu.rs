//! Booting the guest under QEMU with TCG (no KVM: see ENVIRONMENT.md) and reading its serial
//! console line by line.

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::cargo::display;

pub struct Vm {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The root file system, `/dev/vda`, opened with `snapshot=on` (never written).
    pub disk: PathBuf,
    /// A tar archive, `/dev/vdb` (read-only): what the guest's test runner unpacks and runs.
    pub payload: PathBuf,
    pub cpus: u32,
    pub memory_mb: u32,
    /// The guest is killed after this long.
    pub timeout: Duration,
}

/// How the guest ended.
pub enum End {
    /// QEMU exited (the guest powered off, or QEMU failed).
    Exited(ExitStatus),
    /// Killed after [`Vm::timeout`].
    TimedOut,
}

enum Msg {
    Line(String),
    Closed,
}

impl Vm {
    fn command(&self) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max"])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-m", &self.memory_mb.to_string()])
            // No default devices (no NIC, CD-ROM, floppy or VGA for the guest to probe): the
            // tests build their own networks; the serial console is the only output.
            .args([
                "-nodefaults",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-no-reboot",
            ])
            .arg("-drive")
            .arg(drive(&self.disk, "snapshot=on"))
            .arg("-drive")
            .arg(drive(&self.payload, "readonly=on"))
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            // Quiet: only the test runner (and a kernel panic) write to the console; no fsck of
            // a snapshot that is thrown away; no speculation mitigations to emulate.
            .args([
                "-append",
                "root=/dev/vda rw console=ttyS0 quiet loglevel=1 panic=-1 \
                 systemd.show_status=0 fsck.mode=skip mitigations=off",
            ]);
        cmd
    }

    /// Boots the guest and hands `on_line` every console line (control sequences removed) until
    /// QEMU exits or the timeout.
    pub fn run(&self, mut on_line: impl FnMut(&str)) -> Result<End> {
        let mut cmd = self.command();
        let line = display(&cmd);
        eprintln!("$ {line}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                format!("failed to start `{line}` (package qemu-system-x86: `cargo xtask setup`)")
            })?;
        let (tx, rx) = mpsc::channel();
        let readers = [
            forward(child.stdout.take().expect("piped"), tx.clone()),
            forward(child.stderr.take().expect("piped"), tx),
        ];
        let deadline = Instant::now() + self.timeout;
        let mut open = readers.len();
        while open > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Msg::Line(l)) => on_line(&l),
                Ok(Msg::Closed) => open -= 1,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    kill(&mut child);
                    return Ok(End::TimedOut);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait().context("waiting for qemu")?;
        Ok(End::Exited(status))
    }
}

/// A virtio disk; commas in the path are doubled, as QEMU's option syntax wants.
fn drive(path: &std::path::Path, extra: &str) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from("file=");
    s.push(path.to_string_lossy().replace(',', ",,"));
    s.push(format!(",format=raw,if=virtio,{extra}"));
    s
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn forward(stream: impl Read + Send + 'static, tx: mpsc::Sender<Msg>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = clean(&String::from_utf8_lossy(&buf));
                    if tx.send(Msg::Line(line)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Msg::Closed);
    })
}

/// A console line without its line ending, terminal escape sequences (SeaBIOS clears the screen)
/// and other control characters.
pub fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte; otherwise ESC plus one character.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_console_lines() {
        assert_eq!(
            clean("\x1bc\x1b[?7l\x1b[2JSeaBIOS (version 1.16)\r\n"),
            "SeaBIOS (version 1.16)"
        );
        assert_eq!(clean("VMTEST a PASS\r\n"), "VMTEST a PASS");
        assert_eq!(clean("a\tb"), "a\tb");
    }
}
