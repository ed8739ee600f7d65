//! Reads whether an xfrm (IPsec) policy could act on forwarded traffic, per family.
//!
//! The kernel evaluates fwd policies on every forwarded packet (__xfrm_policy_check in
//! ip_forward) and out policies on what leaves (xfrm_lookup in the output path, forwarded
//! packets included), so any fwd or out policy of a family sends that family to the kernel, as
//! does a default of "block" for forward or output (`ip xfrm policy setdefault`). Selectors are
//! not analysed: conservative, never permissive. xfrm interfaces (link kind "xfrm") are listed.
//! Read with netlink-packet-xfrm dumps; [`XfrmWatcher`] follows XFRMNLGRP_POLICY.
use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context as _, Result};
use netlink_packet_route::{
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
    RouteNetlinkMessage,
};
use netlink_packet_xfrm::{
    policy::{DefaultMessage, DelGetMessage},
    XfrmMessage, AF_INET, AF_INET6, XFRMNLGRP_POLICY, XFRM_POLICY_FWD, XFRM_POLICY_OUT,
    XFRM_USERPOLICY_BLOCK,
};

use crate::kernelwatch::Watcher;
use crate::netlink::blocking::Requester;

/// Per family, why IPsec could act on forwarded traffic (`None`: it cannot).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct XfrmState {
    pub v4: Option<String>,
    pub v6: Option<String>,
    /// Names of the xfrm interfaces.
    pub interfaces: BTreeSet<String>,
}

impl XfrmState {
    pub fn unreadable(why: impl std::fmt::Display) -> XfrmState {
        let r = format!("xfrm state unreadable: {why}");
        XfrmState {
            v4: Some(r.clone()),
            v6: Some(r),
            interfaces: BTreeSet::new(),
        }
    }

    /// Dump the policies, the defaults and the links of the calling thread's namespace.
    pub fn read() -> XfrmState {
        match read_inner() {
            Ok(s) => s,
            Err(e) => XfrmState::unreadable(format!("{e:#}")),
        }
    }
}

fn note(slot: &mut Option<String>, why: String) {
    if slot.is_none() {
        *slot = Some(why);
    }
}

fn read_inner() -> Result<XfrmState> {
    let mut s = XfrmState::default();
    let proto = netlink_sys::protocols::NETLINK_XFRM;
    let mut xfrm = Requester::new(proto)?;
    let defaults = xfrm
        .request(XfrmMessage::GetPolicyDefault(DefaultMessage::default()), 0)?
        .accepted()
        .context("XFRM_MSG_GETDEFAULT")?;
    if let Some(XfrmMessage::GetPolicyDefault(d)) = defaults {
        let u = d.user_policy;
        for (dir, v) in [("forward", u.forward), ("output", u.output)] {
            if v == XFRM_USERPOLICY_BLOCK {
                let why = format!("xfrm default policy for {dir} is block");
                note(&mut s.v4, why.clone());
                note(&mut s.v6, why);
            }
        }
    }
    let policies = xfrm.dump(XfrmMessage::GetPolicy(DelGetMessage::default()))?;
    for p in policies {
        let XfrmMessage::AddPolicy(p) = p else {
            continue;
        };
        let i = &p.user_policy_info;
        let dir = match i.direction {
            XFRM_POLICY_FWD => "fwd",
            XFRM_POLICY_OUT => "out",
            _ => continue, // in: local delivery only
        };
        let why = format!(
            "xfrm policy dir {dir} index {} priority {}",
            i.index, i.priority
        );
        match i.selector.family {
            AF_INET => note(&mut s.v4, why),
            AF_INET6 => note(&mut s.v6, why),
            // A selector of no family: both.
            _ => {
                note(&mut s.v4, why.clone());
                note(&mut s.v6, why);
            }
        }
    }
    let links = Requester::route()?.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
    for l in links {
        let RouteNetlinkMessage::NewLink(l) = l else {
            continue;
        };
        let is_xfrm = l.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(infos)
                if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Xfrm))))
        });
        if is_xfrm {
            if let Some(name) = l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            }) {
                s.interfaces.insert(name);
            }
        }
    }
    Ok(s)
}

/// A re-read also every poll period, in case an announcement was lost.
pub const XFRM_POLL: Duration = Duration::from_secs(1);

/// Follows [`XfrmState`]: `watcher.changed().await` yields each new state.
pub type XfrmWatcher = Watcher<XfrmState>;

impl XfrmWatcher {
    /// Must be called inside a tokio runtime (the socket registers with its reactor).
    pub fn new() -> Result<XfrmWatcher> {
        Watcher::subscribe(
            netlink_sys::protocols::NETLINK_XFRM,
            &[XFRMNLGRP_POLICY],
            XFRM_POLL,
            XfrmState::read,
        )
    }
}
