//! One classification of failures: the kernel's errno, wherever it sits in an error's chain.
use std::io;

use aya::maps::MapError;

/// The errno behind `e` (a syscall's, a netlink ACK's, a map update's), if there is one.
pub fn errno(e: &anyhow::Error) -> Option<i32> {
    e.chain().find_map(|cause| {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return io.raw_os_error();
        }
        match cause.downcast_ref::<MapError>()? {
            MapError::SyscallError(s) => s.io_error.raw_os_error(),
            _ => None,
        }
    })
}

/// A map (or the memory behind it) is full: the caller degrades instead of failing.
pub fn is_full(e: &anyhow::Error) -> bool {
    matches!(errno(e), Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM))
}

/// The kernel answered "that exists already".
pub fn is_exists(e: &anyhow::Error) -> bool {
    errno(e) == Some(libc::EEXIST)
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
    }
}
