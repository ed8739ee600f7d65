//! `cargo xtask run`: build, then run vrfd (or the demo lab without arguments).

use std::{ffi::OsString, os::unix::process::CommandExt, process::Command, process::ExitCode};

use anyhow::{Context, Result};

use crate::{cargo, demo, setup};

/// With `args`, replaces this process with `target/release/vrfd ARGS` (so its exit status is
/// ours); without, runs the demo lab.
pub fn run(args: Vec<OsString>) -> Result<ExitCode> {
    let tc = setup::ensure(true)?;
    let bin_dir = cargo::build_binaries(&tc, true)?;
    if args.is_empty() {
        demo::run_demo(&bin_dir)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut cmd = Command::new(bin_dir.join("vrfd"));
    cmd.args(&args);
    let line = cargo::display(&cmd);
    eprintln!("$ {line}");
    // exec only returns on failure.
    let err = cmd.exec();
    Err(err).with_context(|| format!("failed to exec `{line}`"))
}
