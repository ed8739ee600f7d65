//! The machine: what it is, where threads run, how busy each CPU was, kernel memory.
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// Where threads run (shared with the restart tests).
pub use tests::livegen::{pin, pin_napi};

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Nanoseconds task `pid` has run on a CPU (the live generator's reading, shared).
pub fn cpu_ns(pid: &str) -> Result<u64> {
    tests::livegen::thread_ns(pid)
}

/// Per-CPU jiffies from /proc/stat: (busy, total) per CPU.
pub fn cpu_times() -> Result<Vec<(u64, u64)>> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let mut out = Vec::new();
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        out.push((total - idle, total));
    }
    Ok(out)
}

/// Busy share of each CPU between two [`cpu_times`] readings, in percent.
pub fn busy_percent(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|((b0, t0), (b1, t1))| {
            let t = t1.saturating_sub(*t0);
            if t == 0 {
                0.0
            } else {
                100.0 * b1.saturating_sub(*b0) as f64 / t as f64
            }
        })
        .collect()
}

/// `Key: N kB` from /proc/meminfo, in bytes.
pub fn meminfo(key: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            let kb: u64 = rest
                .split_whitespace()
                .next()
                .context("meminfo value")?
                .parse()?;
            return Ok(kb * 1024);
        }
    }
    bail!("no {key} in /proc/meminfo")
}

/// Kernel memory that map and FIB allocations land in: unreclaimable slab plus per-CPU and
/// vmalloc'ed memory.
pub fn kernel_memory() -> Result<u64> {
    Ok(meminfo("SUnreclaim")? + meminfo("Percpu")? + meminfo("VmallocUsed")?)
}

/// The `memlock:` of every BPF map this process holds whose `map_type` is `map_type`, by
/// key size: what the kernel charges for the map.
pub fn map_memlock(pid: u32, map_type: u32, key_size: u32) -> Result<u64> {
    let mut total = 0;
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir)
        .with_context(|| dir.clone())?
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |k: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse().ok())
        };
        if field("map_type:") == Some(map_type.into())
            && field("key_size:") == Some(key_size.into())
        {
            total += field("memlock:").unwrap_or(0);
        }
    }
    Ok(total)
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// What the numbers were measured on.
pub fn describe() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown")
        .to_string();
    let mhz = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("cpu MHz")
                .map(|v| v.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("")
        .to_string();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let virt = first_line(Command::new("systemd-detect-virt").arg("--vm"));
    json!({
        "date": first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
        "cpu": model,
        "cpu_mhz": mhz,
        "cpus": cpus(),
        "memory_gib": (meminfo("MemTotal").unwrap_or(0) as f64 / (1u64 << 30) as f64 * 10.0).round() / 10.0,
        "kernel": first_line(Command::new("uname").arg("-r")),
        "virtualization": if virt.is_empty() { "unknown".to_string() } else { virt },
        "loadavg_at_start": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "iproute2": first_line(Command::new("ip").arg("-V")),
    })
}
