//! The demo lab started by `cargo xtask run` without arguments.
//!
//! Placeholder: replace this file with the real lab, keeping the signature of [`run_demo`].

use std::path::Path;

use anyhow::{bail, Result};

/// Sets up and runs the demo lab using vrfd/vrfctl from `bin_dir` (absolute `target/release`).
pub fn run_demo(bin_dir: &Path) -> Result<()> {
    let _ = bin_dir;
    bail!("demo lab: not yet implemented")
}
