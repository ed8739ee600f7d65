//! One classification of failures: the kernel's errno, wherever it sits in an error's chain.
use std::error::Error;
use std::io;

use aya::maps::MapError;
use aya::programs::{tc::TcError, xdp::XdpError, ProgramError};

/// The errno behind `e` (a syscall's, a netlink ACK's, a map update's), if there is one.
pub fn errno(e: &anyhow::Error) -> Option<i32> {
    errno_in(e.as_ref())
}

/// [`errno`] of any error, found through its sources.
pub fn errno_in(e: &(dyn Error + 'static)) -> Option<i32> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(n) = own_errno(c) {
            return Some(n);
        }
        cause = c.source();
    }
    None
}

/// The errno an error carries itself. aya wraps many in `#[error(transparent)]` variants, whose
/// `source()` skips the wrapped error, so those are opened by hand.
fn own_errno(e: &(dyn Error + 'static)) -> Option<i32> {
    if let Some(io) = e.downcast_ref::<io::Error>() {
        return io.raw_os_error();
    }
    if let Some(MapError::SyscallError(s)) = e.downcast_ref::<MapError>() {
        return s.io_error.raw_os_error();
    }
    match e.downcast_ref::<ProgramError>()? {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        ProgramError::LoadError { io_error, .. } => io_error.raw_os_error(),
        ProgramError::MapError(MapError::SyscallError(s)) => s.io_error.raw_os_error(),
        ProgramError::XdpError(XdpError::NetlinkError(n))
        | ProgramError::TcError(TcError::NetlinkError(n)) => n.raw_os_error(),
        ProgramError::TcError(TcError::IoError(io)) => io.raw_os_error(),
        _ => None,
    }
}

/// A map (or the memory behind it) is full: the caller degrades instead of failing.
pub fn is_full(e: &anyhow::Error) -> bool {
    matches!(errno(e), Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM))
}

/// The kernel answered "that exists already".
pub fn is_exists(e: &anyhow::Error) -> bool {
    errno(e) == Some(libc::EEXIST)
}

/// The device or the link is gone (ENODEV, ENOENT): whatever was on it went with it.
pub fn is_gone(e: &(dyn Error + 'static)) -> bool {
    matches!(errno_in(e), Some(libc::ENODEV | libc::ENOENT))
}

/// The verifier (or another syscall) was interrupted by a signal: try again.
pub fn is_eagain(e: &(dyn Error + 'static)) -> bool {
    errno_in(e) == Some(libc::EAGAIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn errno_is_found_through_context_and_map_errors() {
        let map: Result<(), MapError> = Err(MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_elem",
            io_error: io::Error::from_raw_os_error(libc::E2BIG),
        }));
        let e = map.context("inserting route").unwrap_err();
        assert!(is_full(&e));
        let e = anyhow::Error::from(io::Error::from_raw_os_error(libc::EEXIST)).context("qdisc");
        assert!(is_exists(&e) && !is_full(&e));
        assert_eq!(errno(&anyhow::anyhow!("no errno")), None);
        // aya's transparent wrappers hide the io::Error from source(): opened by hand.
        let gone =
            ProgramError::TcError(TcError::IoError(io::Error::from_raw_os_error(libc::ENODEV)));
        assert!(is_gone(&gone) && !is_eagain(&gone));
        let load = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: io::Error::from_raw_os_error(libc::EAGAIN),
        });
        let load = anyhow::Error::from(load).context("loading");
        assert!(is_eagain(load.as_ref()) && errno(&load) == Some(libc::EAGAIN));
    }
}
