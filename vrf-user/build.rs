//! Builds vrf-ebpf for bpfel-unknown-none and leaves the object in OUT_DIR, so that vrfd and
//! vrfctl embed it and are self-contained.
//!
//! Toolchain: `VRF_XDP_EBPF_TOOLCHAIN` (set by `cargo xtask`), else `nightly` when rustup has it,
//! else the stable toolchain with RUSTC_BOOTSTRAP=1 (aya-build honours it for build-std).
use std::process::Command;

use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=VRF_XDP_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-changed=../vrf-common/src");
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .iter()
        .find(|p| p.name.as_str() == "vrf-ebpf")
        .ok_or_else(|| anyhow!("package vrf-ebpf not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("vrf-ebpf manifest has no parent directory"))?;
    let toolchain = std::env::var("VRF_XDP_EBPF_TOOLCHAIN").unwrap_or_else(|_| {
        let nightly = Command::new("rustup")
            .args(["run", "nightly", "rustc", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if nightly { "nightly" } else { "stable" }.to_string()
    });
    if toolchain != "nightly" {
        // SAFETY: build scripts are single-threaded here; aya-build reads it for -Z build-std.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::Custom(&toolchain))
        .with_context(|| format!("building the eBPF object with the {toolchain} toolchain (is `cargo xtask setup` done?)"))
}
