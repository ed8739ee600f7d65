//! `vrf-bench`: vrf-xdp side by side with the kernel. Run by `cargo xtask bench [--quick]`
//! (as root); see `bench/src/lib.rs`.
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match bench::main(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vrf-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
