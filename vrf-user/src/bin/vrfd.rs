//! vrfd — the vrf-xdp loader daemon.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, ValueEnum};
use vrf_user::{
    daemon::{self, ConfigError, DEFAULT_PIN_PATH},
    dataplane::XdpAttachMode,
};

/// Accelerate Linux VRFs with XDP: vrfd mirrors each VRF's routing table, neighbours and links
/// from the kernel into BPF maps and attaches the fast path to every VRF member interface.
/// The kernel stays the control plane (iproute2, FRR, BIRD keep writing its tables) and the slow
/// path: whatever the fast path does not model goes to it unchanged.
///
/// Kernel VRF devices (`ip link add vrf-red type vrf table 110`) are found by themselves.
/// On kernels without vrf.ko, declare VRFs in a TOML file (see --config).
///
/// vrfd runs in the foreground, pins its maps for vrfctl, signals readiness (a log line, and
/// READY=1 to systemd when NOTIFY_SOCKET is set), and on SIGINT/SIGTERM detaches everything,
/// removes the ip rules it added and its pins.
///
/// Exit status: 0 after a clean shutdown, 1 on a runtime error, 2 on a bad configuration.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// VRFs declared for kernels without vrf.ko. Example:
    ///
    ///   [[vrf]]
    ///   name = "red"               # used by vrfctl and in metrics
    ///   table = 110                # kernel routing table id
    ///   interfaces = ["r1", "r2"]  # member interfaces
    ///   rule_priority = 1000       # optional: priority of `ip rule iif <member> lookup 110`
    #[arg(long, value_name = "FILE", verbatim_doc_comment)]
    config: Option<PathBuf>,

    /// How XDP is attached: auto tries native (driver) mode and falls back to generic with a
    /// warning; native fails where the driver lacks XDP; generic always works, slower.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    xdp_mode: Mode,

    /// Directory on a bpffs where the maps are pinned for vrfctl (created 0700, removed on exit).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
    pin_path: PathBuf,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. info, debug, vrf_user=debug. RUST_LOG wins.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let opts = daemon::Options {
        config: args.config,
        xdp_mode: match args.xdp_mode {
            Mode::Auto => XdpAttachMode::Auto,
            Mode::Native => XdpAttachMode::Native,
            Mode::Generic => XdpAttachMode::Generic,
        },
        pin_path: args.pin_path,
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
            tracing::error!("{e:#}");
            eprintln!("vrfd: {e:#}");
            ExitCode::from(code)
        }
    }
}
