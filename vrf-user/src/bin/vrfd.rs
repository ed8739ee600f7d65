//! vrfd — the vrf-xdp loader daemon.
use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use vrf_user::{
    cli::{LogFormat, Mode, VrfdArgs as Args},
    daemon::{self, ConfigError},
    dataplane::XdpAttachMode,
};

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level));
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vrfd: --log-level {:?}: {e}", args.log_level);
            return ExitCode::from(2);
        }
    };
    // Colour only for a person at a terminal, never into a journal or a file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let log_format = args.log_format;
    match log_format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if args.detach {
        let removed = daemon::detach(&args.pin_path).and_then(|()| {
            if !args.remove_rules {
                return Ok(());
            }
            for r in vrf_user::rule_tag::remove_tagged()? {
                tracing::info!(family = r.family, iif = ?r.iif, table = r.table, priority = r.priority, "removed ip rule");
            }
            Ok(())
        });
        return match removed {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vrfd --detach: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let opts = daemon::Options {
        config: args.config,
        xdp_mode: match args.xdp_mode {
            Mode::Auto => XdpAttachMode::Auto,
            Mode::Native => XdpAttachMode::Native,
            Mode::Generic => XdpAttachMode::Generic,
        },
        pin_path: args.pin_path,
        metrics: args.metrics,
        persist: !args.no_persist,
        netlink_receive_buffer: args.netlink_receive_buffer as usize,
        fib4_entries: args.fib4_entries,
        fib6_entries: args.fib6_entries,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vrfd: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(daemon::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.downcast_ref::<ConfigError>().is_some() {
                2
            } else {
                1
            };
            // One message: a JSON log gets its record, a person the plain line.
            if matches!(log_format, LogFormat::Json) {
                tracing::error!("{e:#}");
            }
            eprintln!("vrfd: {e:#}");
            ExitCode::from(code)
        }
    }
}
