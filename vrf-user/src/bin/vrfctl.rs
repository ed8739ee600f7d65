//! vrfctl — inspect a running vrfd: its VRFs, and what the data plane does with a packet.
use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};
use vrf_user::inspect::{self, DEFAULT_PIN_PATH};

/// Inspect vrf-xdp: reads the maps a running vrfd pinned (no vrfd, no answer).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Where vrfd pinned its maps (vrfd --pin-path).
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
    pin_path: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// VRFs with their table, members, route and neighbour counts, and degraded state.
    Show {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What the data plane does with a packet to ADDR arriving on a member of a VRF. The loaded
    /// XDP program itself runs on a synthesized UDP packet (BPF_PROG_TEST_RUN): the answer is
    /// the program's, not a model's.
    Lookup {
        /// The VRF to look up in.
        #[arg(long)]
        vrf: String,
        /// The member the packet arrives on (default: the VRF's first member).
        #[arg(long, value_name = "IFACE")]
        iif: Option<String>,
        /// Source address of the packet (default 198.51.100.1 or 2001:db8::1); it matters when a
        /// reverse-path filter is on.
        #[arg(long, value_name = "ADDR")]
        from: Option<IpAddr>,
        /// Destination address.
        addr: IpAddr,
        /// Print JSON: {"action", "reason", "oif", "gateway", "neighbour", "vrf", "iif"}.
        #[arg(long)]
        json: bool,
    },
}

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
