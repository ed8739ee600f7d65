//! Per-interface sysctls that change the kernel's forwarding decision, per ifindex, followed live.
//!
//! Read from /proc/sys/net of the calling thread's network namespace. The kernel announces only
//! some of them (RTM_NEWNETCONF on RTNLGRP_IPV4_NETCONF / IPV6_NETCONF: forwarding, rp_filter,
//! ignore_routes_with_linkdown; RTM_NEWLINK for link changes); `disable_ipv6`, `accept_local`
//! and the IPv6 MTU are not announced, so [`SysctlWatcher`] also re-reads every poll period.
//! A value that cannot be read takes the value that sends packets to the kernel.
use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;

use crate::kernelwatch::Doorbell;

/// One link's sysctls, as the forwarding decision needs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSysctls {
    pub name: String,
    /// `net.ipv4.conf.<if>.forwarding`.
    pub forwarding4: bool,
    /// ip6_forward checks `all.forwarding` or the link's `force_forwarding` (6.17+), never the
    /// link's own `forwarding`.
    pub forwarding6: bool,
    /// max(all, link) of `net.ipv4.conf.*.rp_filter`: 0 off, 1 strict, 2 loose.
    pub rp_filter: u8,
    /// `net.ipv6.conf.<if>.disable_ipv6` (or `all`): IPv6 neither in nor out of this link.
    pub disable_ipv6: bool,
    /// `net.ipv6.conf.<if>.mtu`: the MTU IPv6 forwarding uses out of this link (set by RAs too).
    pub mtu6: u32,
    /// `ignore_routes_with_linkdown` (max of all/link), IPv4 and IPv6.
    pub ignore_routes_with_linkdown4: bool,
    pub ignore_routes_with_linkdown6: bool,
    /// `net.ipv4.conf.<if>.accept_local` (or `all`): local source addresses accepted.
    pub accept_local: bool,
    /// rx-vlan-offload (ethtool): the driver may strip VLAN tags before XDP sees the frame.
    /// Not a sysctl, but like the unannounced ones it is re-read every poll.
    pub rx_vlan_offload: bool,
    /// Names of the values that could not be read (and so took their kernel-sending value).
    pub unreadable: Vec<&'static str>,
}

/// Every link's sysctls by ifindex.
pub type SysctlState = BTreeMap<u32, LinkSysctls>;

/// Smallest IPv6 MTU: what an unreadable `mtu` is taken to be, so more goes to the kernel.
pub const IPV6_MIN_MTU: u32 = 1280;

fn read_num(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl LinkSysctls {
    /// Read one link's sysctls by name.
    pub fn read(name: &str) -> LinkSysctls {
        let mut unreadable = Vec::new();
        let mut get = |what: &'static str, path: String, kernel: u32| -> u32 {
            read_num(&path).unwrap_or_else(|| {
                unreadable.push(what);
                kernel
            })
        };
        let v4 = |leaf: &str, i: &str| format!("/proc/sys/net/ipv4/conf/{i}/{leaf}");
        let v6 = |leaf: &str, i: &str| format!("/proc/sys/net/ipv6/conf/{i}/{leaf}");
        let forwarding4 = get("ipv4 forwarding", v4("forwarding", name), 0) == 1;
        let all_fwd6 = get("ipv6 all.forwarding", v6("forwarding", "all"), 0) == 1;
        // force_forwarding is new in 6.17: its absence is not a doubt.
        let force6 = read_num(&v6("force_forwarding", name)) == Some(1);
        let rp = get("rp_filter", v4("rp_filter", name), 1)
            .max(get("all.rp_filter", v4("rp_filter", "all"), 1))
            .min(2) as u8;
        let disable_ipv6 = get("disable_ipv6", v6("disable_ipv6", name), 1) != 0
            || get("all.disable_ipv6", v6("disable_ipv6", "all"), 1) != 0;
        let mtu6 = get("ipv6 mtu", v6("mtu", name), IPV6_MIN_MTU);
        let linkdown4 = get(
            "ipv4 ignore_routes_with_linkdown",
            v4("ignore_routes_with_linkdown", name),
            1,
        )
        .max(get(
            "ipv4 all.ignore_routes_with_linkdown",
            v4("ignore_routes_with_linkdown", "all"),
            1,
        )) != 0;
        let linkdown6 = get(
            "ipv6 ignore_routes_with_linkdown",
            v6("ignore_routes_with_linkdown", name),
            1,
        )
        .max(get(
            "ipv6 all.ignore_routes_with_linkdown",
            v6("ignore_routes_with_linkdown", "all"),
            1,
        )) != 0;
        let accept_local = get("accept_local", v4("accept_local", name), 1) != 0
            || get("all.accept_local", v4("accept_local", "all"), 1) != 0;
        LinkSysctls {
            name: name.to_string(),
            forwarding4,
            forwarding6: all_fwd6 || force6,
            rp_filter: rp,
            disable_ipv6,
            mtu6,
            ignore_routes_with_linkdown4: linkdown4,
            ignore_routes_with_linkdown6: linkdown6,
            accept_local,
            // Unreadable (no such device any more): assume stripping, the safe side for a trunk.
            rx_vlan_offload: crate::ethtool::rx_vlan_offload(name).unwrap_or(true),
            unreadable,
        }
    }
}

/// Every link of the calling thread's network namespace (names from /proc/sys/net/ipv4/conf,
/// ifindexes from if_nametoindex, both namespace-aware).
pub fn read_all() -> SysctlState {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/sys/net/ipv4/conf") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "all" || name == "default" {
            continue;
        }
        let Ok(c) = std::ffi::CString::new(name.clone()) else {
            continue;
        };
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if ifindex != 0 {
            out.insert(ifindex, LinkSysctls::read(&name));
        }
    }
    out
}

/// rtnetlink groups whose messages mean "a sysctl or a link may have changed".
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_NETCONF: u32 = 24;
const RTNLGRP_IPV6_NETCONF: u32 = 25;

/// How often values the kernel does not announce are re-read.
pub const SYSCTL_POLL: Duration = Duration::from_millis(500);

/// Follows [`SysctlState`]: create it in vrfd's network namespace, then
/// `watcher.changed().await` in the select loop yields each new state.
pub struct SysctlWatcher {
    bell: Doorbell,
    last: SysctlState,
}

impl SysctlWatcher {
    /// Subscribe, then take the first reading ([`current`](Self::current)).
    /// Must be called inside a tokio runtime (the socket registers with its reactor).
    pub fn new() -> Result<SysctlWatcher> {
        let bell = Doorbell::new(
            netlink_sys::protocols::NETLINK_ROUTE,
            &[RTNLGRP_LINK, RTNLGRP_IPV4_NETCONF, RTNLGRP_IPV6_NETCONF],
            SYSCTL_POLL,
        )?;
        Ok(SysctlWatcher {
            bell,
            last: read_all(),
        })
    }

    pub fn current(&self) -> &SysctlState {
        &self.last
    }

    /// The next state that differs from the last one returned (cancel-safe).
    pub async fn changed(&mut self) -> SysctlState {
        loop {
            self.bell.rung().await;
            let now = read_all();
            if now != self.last {
                self.last = now.clone();
                return now;
            }
        }
    }
}
