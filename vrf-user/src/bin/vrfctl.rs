//! vrfctl — inspect a running vrfd: its VRFs, and what the data plane does with a packet.
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use vrf_user::{
    cli::{Command, VrfctlArgs as Args},
    inspect,
};

fn main() -> ExitCode {
    let args = Args::parse();
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
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "vrfs": vrfs }))?
                );
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
                        if m.up {
                            m.name.clone()
                        } else {
                            format!("{}(down)", m.name)
                        }
                    })
                    .collect();
                let state = if v.degraded { "degraded" } else { "ok" };
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
    }
}
