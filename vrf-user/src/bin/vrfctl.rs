//! vrfctl — inspect a running vrfd: its VRFs, its counters, and what the data plane does with a
//! packet.
use std::{
    io::Write as _,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Parser;
use vrf_user::{
    cli::{Command, VrfctlArgs as Args},
    inspect,
    stats::{self, Report},
};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::Verify { vrf, sample, json } = &args.command {
        return match verify(&args.pin_path, vrf.clone(), *sample, *json) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("vrfctl: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vrfctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Show { json } => {
            let maps = inspect::open(&args.pin_path)?;
            let vrfs = inspect::vrfs(&maps)?;
            // The ip rules vrfd added (they outlive it), from the kernel.
            let rules = vrf_user::rule_tag::tagged()?;
            if json {
                // A struct, not json!: its fields keep this order (the VM lane's reader and
                // people expect "vrfs" first; a json! map sorts its keys).
                #[derive(serde::Serialize)]
                struct Show<V, R> {
                    vrfs: V,
                    rules_added_by_vrfd: R,
                }
                let show = Show {
                    vrfs,
                    rules_added_by_vrfd: rules,
                };
                println!("{}", serde_json::to_string_pretty(&show)?);
                return Ok(());
            }
            println!(
                "{:<16} {:>10} {:>8} {:>8} {:>10}  {:<9} MEMBERS",
                "VRF", "TABLE", "ROUTES4", "ROUTES6", "NEIGHBOURS", "STATE"
            );
            for v in vrfs {
                let members: Vec<String> = v
                    .members
                    .iter()
                    .map(|m| {
                        let mut s = m.name.clone();
                        if !m.ports.is_empty() {
                            // A bond with the slaves XDP serves it on: "bond0[eth1,eth2]".
                            s.push_str(&format!("[{}]", m.ports.join(",")));
                        }
                        if !m.up {
                            s.push_str("(down)");
                        }
                        if m.kernel.is_some() {
                            // --json says why: the trunk may strip the VLAN tags.
                            s.push_str("(kernel:vlan-tags)");
                        }
                        s
                    })
                    .collect();
                // Per family, what sends traffic to the kernel: "ipv4:netfilter ipv6:rule".
                let mut why: Vec<String> = Vec::new();
                for (family, reasons) in [("ipv4", &v.kernel4), ("ipv6", &v.kernel6)] {
                    if !reasons.is_empty() {
                        why.push(format!("{family}:{}", reasons.join(",")));
                    }
                }
                if v.netfilter_bypass {
                    why.push("netfilter-bypassed".into());
                }
                let state = match (v.degraded, why.is_empty()) {
                    (false, true) => "ok".to_string(),
                    (true, true) => "degraded".to_string(),
                    (_, false) => why.join(" "),
                };
                println!(
                    "{:<16} {:>10} {:>8} {:>8} {:>10}  {:<9} {}",
                    v.name,
                    v.table,
                    v.routes4,
                    v.routes6,
                    v.neighbours,
                    state,
                    members.join(" ")
                );
            }
            if !rules.is_empty() {
                println!(
                    "\nip rules added by vrfd (proto {}):",
                    vrf_user::rule_tag::RULE_PROTOCOL
                );
                for r in &rules {
                    println!(
                        "  {} pref {} iif {} lookup {}",
                        r.family,
                        r.priority,
                        r.iif.as_deref().unwrap_or("*"),
                        r.table
                    );
                }
            }
            Ok(())
        }
        Command::Lookup {
            vrf,
            iif,
            from,
            addr,
            json,
        } => {
            let r = inspect::lookup(&args.pin_path, &vrf, iif.as_deref(), from, addr)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                let mut line = format!(
                    "{} in VRF {} from {}: {} ({})",
                    addr, r.vrf, r.iif, r.action, r.reason
                );
                if let Some(oif) = &r.oif {
                    line.push_str(&format!(" via {oif}"));
                }
                if let Some(gw) = r.gateway {
                    line.push_str(&format!(" gateway {gw}"));
                }
                println!("{line}");
            }
            Ok(())
        }
        Command::Stats {
            vrf,
            interfaces,
            json,
            watch,
        } => {
            let opts = stats::Options { vrf, interfaces };
            if let Some(every) = watch {
                return watch_stats(&args.pin_path, &opts, every);
            }
            let report = stats::collect(&inspect::open(&args.pin_path)?, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", stats::table(&report));
            }
            Ok(())
        }
        Command::Verify { .. } => unreachable!("handled in main"),
        Command::Capture(opts) => vrf_user::capture::run(&args.pin_path, &opts),
        Command::Generate { what } => {
            vrf_user::generate::generate(&what, &mut std::io::stdout().lock())
        }
    }
}

/// `vrfctl verify`: true when the kernel and the program agree everywhere.
fn verify(pin_path: &Path, vrf: Option<String>, sample: Option<usize>, json: bool) -> Result<bool> {
    inspect::open(pin_path)?;
    let mut program = vrf_user::dataplane::PinnedExplain::open(pin_path)?;
    let mut oracle = vrf_user::oracle::RouteOracle::new()?;
    let opts = vrf_user::verify::Options { vrf, sample };
    let report = vrf_user::verify::verify(&mut program, &mut oracle, &opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", vrf_user::verify::text(&report));
    }
    Ok(report.mismatches.is_empty())
}

/// Redraw the rates every `every` until SIGINT (exit 0) or until vrfd goes away (an error).
fn watch_stats(pin_path: &Path, opts: &stats::Options, every: Duration) -> Result<()> {
    // Open the pins afresh each time: a vrfd that stops (or restarts) is noticed.
    let read = || -> Result<(Instant, Report)> {
        let report = stats::collect(&inspect::open(pin_path)?, opts)?;
        Ok((Instant::now(), report))
    };
    let draw = |body: &str, over: Option<Duration>| {
        let over = over.map_or("measuring…".to_string(), |d| {
            format!("over the last {:.1}s", d.as_secs_f64())
        });
        let mut out = std::io::stdout().lock();
        // Home, clear the screen, then the frame.
        let _ = write!(
            out,
            "\x1b[H\x1b[2Jvrfctl stats, every {:.1}s, {over} (Ctrl-C to quit)\n\n{body}",
            every.as_secs_f64()
        );
        let _ = out.flush();
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut prev = read()?;
        draw(
            &stats::rates_table(
                &Report {
                    vrfs: vec![],
                    nexthops: vec![],
                },
                &prev.1,
                every,
            ),
            None,
        );
        loop {
            tokio::select! {
                _ = &mut ctrl_c => {
                    println!();
                    return Ok(());
                }
                _ = tokio::time::sleep(every) => {}
            }
            let now = read()?;
            let elapsed = now.0 - prev.0;
            draw(&stats::rates_table(&prev.1, &now.1, elapsed), Some(elapsed));
            prev = now;
        }
    })
}
