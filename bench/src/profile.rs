//! Where the time goes: `perf record` of one CPU or one process while a measurement runs,
//! summarised as the hottest symbols. Optional: without perf the report says so.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hot {
    pub percent: f64,
    pub symbol: String,
}

/// A running `perf record`.
pub struct Recording {
    child: Child,
    data: PathBuf,
}

pub fn available() -> bool {
    Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sample `target` (`-t TID` or `-p PID`) for `seconds` at `hz`, with call chains, writing to
/// `dir/<name>.perf.data`.
pub fn start(dir: &Path, name: &str, target: &[&str], seconds: f64, hz: u32) -> Result<Recording> {
    let data = dir.join(format!("{name}.perf.data"));
    let child = Command::new("perf")
        .args(["record", "-q", "-g", "-F", &hz.to_string(), "-o"])
        .arg(&data)
        .args(target)
        .args(["--", "sleep", &format!("{seconds:.1}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record")?;
    Ok(Recording { child, data })
}

impl Recording {
    /// Like [`finish`](Self::finish), counting only samples with `frame` in their call chain
    /// (e.g. `bpf_test_run`: the program and its helpers, not the test-run set-up).
    pub fn finish_within(mut self, top: usize, frame: &str) -> Result<Vec<Hot>> {
        self.child.wait().context("waiting for perf record")?;
        let out = Command::new("perf")
            .args(["script", "-F", "ip,sym", "-i"])
            .arg(&self.data)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .context("perf script")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut counts: std::collections::HashMap<String, u64> = Default::default();
        let mut total = 0u64;
        for sample in text.split("\n\n") {
            let syms: Vec<&str> = sample
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .collect();
            if syms.contains(&frame) {
                *counts.entry(shorten(syms[0])).or_default() += 1;
                total += 1;
            }
        }
        let _ = std::fs::remove_file(&self.data);
        let mut hot: Vec<Hot> = counts
            .into_iter()
            .map(|(symbol, n)| Hot {
                percent: 100.0 * n as f64 / total.max(1) as f64,
                symbol,
            })
            .collect();
        hot.sort_by(|a, b| b.percent.total_cmp(&a.percent));
        hot.truncate(top);
        Ok(hot)
    }

    /// Wait for the recording and return the `top` hottest symbols (self time).
    pub fn finish(mut self, top: usize) -> Result<Vec<Hot>> {
        self.child.wait().context("waiting for perf record")?;
        let out = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "symbol",
                "-q",
                "-i",
            ])
            .arg(&self.data)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .context("perf report")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut hot = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            let Some((pct, rest)) = line.split_once('%') else {
                continue;
            };
            let Ok(percent) = pct.trim().parse::<f64>() else {
                continue;
            };
            // "[k] symbol" or "[.] symbol"
            let symbol = rest
                .trim()
                .trim_start_matches("[k]")
                .trim_start_matches("[.]")
                .trim();
            // perf pads the column and may add "-" placeholders after it.
            let symbol = symbol.split("  ").next().unwrap_or(symbol).to_string();
            hot.push(Hot {
                percent,
                symbol: shorten(symbol.trim()),
            });
            if hot.len() == top {
                break;
            }
        }
        let _ = std::fs::remove_file(&self.data);
        let _ = std::fs::remove_file(self.data.with_extension("data.old"));
        Ok(hot)
    }
}

/// Rust symbols without their hash and long generic paths.
fn shorten(s: &str) -> String {
    let s = match s.rfind("::h") {
        Some(i) if s.len() - i == 19 => &s[..i],
        _ => s,
    };
    let mut out = String::new();
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '<' => {
                depth += 1;
                if depth == 1 {
                    out.push_str("<…>");
                }
            }
            '>' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    if out.len() > 90 {
        out.truncate(90);
        out.push('…');
    }
    out
}
