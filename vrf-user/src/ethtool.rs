//! The one ethtool fact vrfd needs: does a device strip VLAN tags on receive (rx-vlan-offload,
//! `NETIF_F_HW_VLAN_CTAG_RX`)? A NIC that does hands XDP the frame without its tag (the tag
//! rides in the descriptor), so a frame for `eth0.100` looks like one for `eth0`. Kernels ≥ 6.8
//! let a device-bound program read it back (`bpf_xdp_metadata_rx_vlan_tag`); aya 0.14 loads no
//! device-bound programs, so such a trunk is passed to the kernel whole.
//!
//! `ETHTOOL_GFLAGS` over `SIOCETHTOOL` (linux/ethtool.h): the legacy flags word still reports
//! `ETH_FLAG_RXVLAN` from the device's active features.
use std::io;

/// linux/sockios.h.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// linux/ethtool.h: get the `ETH_FLAG_*` word.
const ETHTOOL_GFLAGS: u32 = 0x0000_0025;
/// linux/ethtool.h: rx VLAN offload (tag stripping) is on.
const ETH_FLAG_RXVLAN: u32 = 1 << 8;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member (the union is 24 bytes on 64-bit).
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

/// Is rx-vlan-offload on for `name` in the calling thread's network namespace?
pub fn rx_vlan_offload(name: &str) -> io::Result<bool> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        _pad: [0; 16],
    };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: a plain datagram socket, closed below; `req` and `value` outlive the ioctl.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfReq);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(value.data & ETH_FLAG_RXVLAN != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn loopback_strips_no_tags_and_a_missing_device_is_an_error() {
        assert_eq!(rx_vlan_offload("lo").ok(), Some(false));
        assert!(rx_vlan_offload("no-such-dev0").is_err());
        assert!(rx_vlan_offload("").is_err());
    }
}
