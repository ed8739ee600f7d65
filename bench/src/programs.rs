//! The bench's own XDP programs (`vrf_user::bench::FIB_HELPER_OBJECT`): the `bpf_fib_lookup`
//! forwarder, the live-frame traffic source and the counting sink. They live in the test
//! harness (`tests::livegen`), which the restart tests share.
pub use tests::livegen::{run_repeated, BenchPrograms, Run, LIVE_BATCH};
