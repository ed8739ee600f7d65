//! Marks the `ip rule`s vrfd adds and tells them from the operator's: they carry a protocol of
//! their own (FRA_PROTOCOL, `ip rule` shows `proto 246`), as they are the declared VRFs' kernel
//! path and outlive vrfd, so a later vrfd, `vrfctl show` and `vrfd --detach --remove-rules`
//! know them.
//!
//! Blocking, on one NETLINK_ROUTE socket in the calling thread's network namespace.
use anyhow::{Context as _, Result};
use netlink_packet_core::NLM_F_ACK;
use netlink_packet_route::{
    route::RouteProtocol,
    rule::{RuleAttribute, RuleMessage},
    RouteNetlinkMessage,
};
use serde::Serialize;

use crate::{
    model::{IpFamily, RuleInfo},
    netlink::{
        blocking::{Reply, Requester},
        convert,
    },
};

/// FRA_PROTOCOL of vrfd's rules (unassigned in iproute2's rt_protos).
pub const RULE_PROTOCOL: u8 = 246;

/// The attribute vrfd puts on every rule it adds.
pub fn attribute() -> RuleAttribute {
    RuleAttribute::Protocol(RouteProtocol::from(RULE_PROTOCOL))
}

/// Whether a rule message is one of vrfd's.
pub fn is_ours(msg: &RuleMessage) -> bool {
    msg.attributes
        .iter()
        .any(|a| matches!(a, RuleAttribute::Protocol(p) if u8::from(*p) == RULE_PROTOCOL))
}

/// One rule vrfd added, as `vrfctl show` reports it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TaggedRule {
    pub family: &'static str,
    pub priority: u32,
    pub iif: Option<String>,
    pub table: u32,
}

fn dump() -> Result<Vec<RuleMessage>> {
    let mut netlink = Requester::route()?;
    let mut out = Vec::new();
    for family in IpFamily::ALL {
        let mut msg = RuleMessage::default();
        msg.header.family = convert::address_family(family);
        for m in netlink
            .dump(RouteNetlinkMessage::GetRule(msg))
            .context("dumping the rules")?
        {
            if let RouteNetlinkMessage::NewRule(r) = m {
                if is_ours(&r) {
                    out.push(r);
                }
            }
        }
    }
    Ok(out)
}

fn describe(info: &RuleInfo) -> TaggedRule {
    TaggedRule {
        family: match info.family {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        },
        priority: info.priority,
        iif: info.iif.clone(),
        table: info.table,
    }
}

/// Every rule in the kernel that vrfd added.
pub fn tagged() -> Result<Vec<TaggedRule>> {
    Ok(dump()?
        .iter()
        .filter_map(convert::rule)
        .map(|r| describe(&r))
        .collect())
}

/// Delete every rule vrfd added (`vrfd --detach --remove-rules`); returns them.
pub fn remove_tagged() -> Result<Vec<TaggedRule>> {
    let mut netlink = Requester::route()?;
    let mut removed = Vec::new();
    for msg in dump()? {
        let info = convert::rule(&msg).map(|r| describe(&r));
        match netlink.request(RouteNetlinkMessage::DelRule(msg), NLM_F_ACK)? {
            // Gone meanwhile: what was asked for.
            Reply::Ack | Reply::Message(_) | Reply::Refused(libc::ENOENT) => {}
            Reply::Refused(errno) => {
                return Err(std::io::Error::from_raw_os_error(errno))
                    .with_context(|| format!("removing rule {info:?}"))
            }
        }
        removed.extend(info);
    }
    Ok(removed)
}
