//! The kernel's forwarding decision for one packet: vrf-user's oracle, the one `vrfctl verify`
//! asks too (a single implementation for the tests and the tool).
pub use vrf_user::oracle::*;
