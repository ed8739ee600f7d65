//! Can a device take an XDP redirect? `xdp_do_redirect` into a device without `ndo_xdp_xmit`
//! (a bridge, macvlan, a VLAN upper, most tunnels) drops the frame, so a nexthop through such a
//! device must pass to the kernel. The kernel says it itself since 6.3: the `netdev` generic
//! netlink family's NETDEV_CMD_DEV_GET reports `xdp-features`, whose NETDEV_XDP_ACT_NDO_XMIT bit
//! is set exactly when the device accepts redirected frames now (veth: only while its peer has an
//! XDP program or GRO on). Older kernels: a fallback by device kind.
//!
//! One blocking NETLINK_GENERIC socket in the calling thread's network namespace.
use anyhow::{anyhow, bail, Result};
use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, Nla, NlaBuffer, NlasIterator, Parseable,
    ParseableParametrized,
};
use netlink_packet_generic::{
    ctrl::{nlas::GenlCtrlAttrs, GenlCtrl, GenlCtrlCmd},
    GenlFamily, GenlHeader, GenlMessage,
};
use netlink_sys::protocols::NETLINK_GENERIC;

use crate::model::LinkInfo;
use crate::netlink::blocking::{Reply, Requester};

/// `enum netdev_xdp_act` (include/uapi/linux/netdev.h).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpFeatures(pub u64);

impl XdpFeatures {
    pub const BASIC: u64 = 1 << 0;
    pub const REDIRECT: u64 = 1 << 1;
    /// `ndo_xdp_xmit` works: the device can be the target of a redirect.
    pub const NDO_XMIT: u64 = 1 << 2;
    pub const XSK_ZEROCOPY: u64 = 1 << 3;
    pub const HW_OFFLOAD: u64 = 1 << 4;
    pub const RX_SG: u64 = 1 << 5;
    pub const NDO_XMIT_SG: u64 = 1 << 6;

    pub fn accepts_redirect(self) -> bool {
        self.0 & Self::NDO_XMIT != 0
    }
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The netdev family's xdp-features (kernel ≥ 6.3).
    Kernel(XdpFeatures),
    /// The device kind, on a kernel without the netdev family.
    Kind,
}

/// Whether frames may be redirected into a device, and why we think so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectTarget {
    pub accepts: bool,
    pub source: Source,
}

/// The fallback for kernels before 6.3, by IFLA_INFO_KIND: veth implements `ndo_xdp_xmit`, and
/// so does a bond (`bond_xdp_xmit`, 5.15+, the kernels where vrf-xdp runs a bond natively: it
/// hands the frames to the slave the bond picks; only in the modes of [`LinkInfo::bond_xdp`],
/// the others drop them); a device without a kind is a physical NIC,
/// whose XDP drivers implement it; tun only while a reader has a queue attached, and every
/// virtual kind known to lack it (bridge, macvlan, vlan, tunnels, …) and every kind not known
/// is refused, so the kernel routes through it.
pub fn accepts_by_kind(link: &LinkInfo) -> bool {
    match link.kind.as_deref() {
        None | Some("veth") => true,
        Some("bond") => link.bond_xdp,
        _ => false,
    }
}

/// netdev family command and attribute numbers (include/uapi/linux/netdev.h).
const NETDEV_FAMILY: &str = "netdev";
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

/// One attribute of a netdev `dev` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevAttr {
    Ifindex(u32),
    XdpFeatures(u64),
    Other(DefaultNla),
}

impl Nla for DevAttr {
    fn value_len(&self) -> usize {
        match self {
            DevAttr::Ifindex(_) => 4,
            DevAttr::XdpFeatures(_) => 8,
            DevAttr::Other(n) => n.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DevAttr::Ifindex(_) => NETDEV_A_DEV_IFINDEX,
            DevAttr::XdpFeatures(_) => NETDEV_A_DEV_XDP_FEATURES,
            DevAttr::Other(n) => n.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            DevAttr::Ifindex(i) => buffer[..4].copy_from_slice(&i.to_ne_bytes()),
            DevAttr::XdpFeatures(f) => buffer[..8].copy_from_slice(&f.to_ne_bytes()),
            DevAttr::Other(n) => n.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DevAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            NETDEV_A_DEV_IFINDEX => DevAttr::Ifindex(ErrorContext::context(
                netlink_packet_core::parse_u32(v),
                "invalid NETDEV_A_DEV_IFINDEX",
            )?),
            NETDEV_A_DEV_XDP_FEATURES => DevAttr::XdpFeatures(ErrorContext::context(
                netlink_packet_core::parse_u64(v),
                "invalid NETDEV_A_DEV_XDP_FEATURES",
            )?),
            _ => DevAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A netdev family message (request or answer) about one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevMessage {
    pub cmd: u8,
    pub attrs: Vec<DevAttr>,
}

impl GenlFamily for DevMessage {
    fn family_name() -> &'static str {
        NETDEV_FAMILY
    }
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        1
    }
}

impl Emitable for DevMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for DevMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let attrs = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| DevAttr::parse(&nla)))
            .collect::<Result<Vec<_>, _>>();
        let attrs = ErrorContext::context(attrs, "netdev dev attributes")?;
        Ok(DevMessage {
            cmd: header.cmd,
            attrs,
        })
    }
}

/// Asks the kernel about devices' XDP features.
pub struct XdpFeatureProbe {
    netlink: Requester,
    /// The netdev family's id; None on kernels without it (before 6.3).
    family: Option<u16>,
}

impl XdpFeatureProbe {
    /// Opens the socket in the calling thread's network namespace and resolves the family.
    pub fn new() -> Result<Self> {
        let mut probe = XdpFeatureProbe {
            netlink: Requester::new(NETLINK_GENERIC)?,
            family: None,
        };
        probe.family = probe.resolve_family()?;
        Ok(probe)
    }

    /// Whether the kernel has the netdev family (and so reports xdp-features).
    pub fn has_netdev_family(&self) -> bool {
        self.family.is_some()
    }

    fn resolve_family(&mut self) -> Result<Option<u16>> {
        let mut msg = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(NETDEV_FAMILY.to_string())],
        });
        msg.finalize();
        match self.request::<GenlCtrl>(msg)? {
            Err(libc::ENOENT) => Ok(None),
            Err(e) => bail!("CTRL_CMD_GETFAMILY netdev: errno {e}"),
            Ok(answer) => answer
                .payload
                .nlas
                .iter()
                .find_map(|a| match a {
                    GenlCtrlAttrs::FamilyId(id) => Some(Some(*id)),
                    _ => None,
                })
                .ok_or_else(|| anyhow!("CTRL_CMD_GETFAMILY netdev: no family id in the answer")),
        }
    }

    /// The device's xdp-features, or None when the kernel has no netdev family.
    pub fn xdp_features(&mut self, ifindex: u32) -> Result<Option<XdpFeatures>> {
        let Some(family) = self.family else {
            return Ok(None);
        };
        let mut msg = GenlMessage::from_payload(DevMessage {
            cmd: NETDEV_CMD_DEV_GET,
            attrs: vec![DevAttr::Ifindex(ifindex)],
        });
        msg.set_resolved_family_id(family);
        msg.finalize();
        let answer = match self.request::<DevMessage>(msg)? {
            Ok(a) => a,
            Err(e) => bail!(
                "NETDEV_CMD_DEV_GET ifindex {ifindex}: {}",
                std::io::Error::from_raw_os_error(e)
            ),
        };
        let features = answer
            .payload
            .attrs
            .iter()
            .find_map(|a| match a {
                DevAttr::XdpFeatures(f) => Some(XdpFeatures(*f)),
                _ => None,
            })
            .unwrap_or_default();
        Ok(Some(features))
    }

    /// Whether `link` can be the target of an XDP redirect: the kernel's own answer where it has
    /// one, the kind's otherwise.
    pub fn redirect_target(&mut self, link: &LinkInfo) -> Result<RedirectTarget> {
        Ok(match self.xdp_features(link.ifindex)? {
            Some(f) => RedirectTarget {
                accepts: f.accepts_redirect(),
                source: Source::Kernel(f),
            },
            None => RedirectTarget {
                accepts: accepts_by_kind(link),
                source: Source::Kind,
            },
        })
    }

    /// Send one request; the answer, or the errno the kernel refused it with.
    fn request<F>(&mut self, msg: GenlMessage<F>) -> Result<Result<GenlMessage<F>, i32>>
    where
        F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + std::fmt::Debug,
    {
        Ok(match self.netlink.request(msg, 0)? {
            Reply::Message(m) => Ok(m),
            Reply::Refused(errno) => Err(errno),
            Reply::Ack => bail!("an empty generic netlink answer"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_get_request_round_trips() {
        let m = DevMessage {
            cmd: NETDEV_CMD_DEV_GET,
            attrs: vec![DevAttr::Ifindex(7), DevAttr::XdpFeatures(0x47)],
        };
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        assert_eq!(buf.len(), 8 + 12);
        let header = GenlHeader {
            cmd: NETDEV_CMD_DEV_GET,
            version: 1,
        };
        assert_eq!(DevMessage::parse_with_param(&buf, header).unwrap(), m);
        assert!(XdpFeatures(0x47).accepts_redirect());
        assert!(!XdpFeatures(XdpFeatures::BASIC | XdpFeatures::REDIRECT).accepts_redirect());
    }

    #[test]
    fn the_kind_fallback_refuses_what_lacks_ndo_xdp_xmit() {
        for kind in [
            "bridge",
            "macvlan",
            "vlan",
            "vxlan",
            "gre",
            "wireguard",
            "tun",
            "new",
        ] {
            assert!(!accepts_by_kind(&of_kind(Some(kind))), "{kind}");
        }
        assert!(accepts_by_kind(&of_kind(Some("veth"))) && !accepts_by_kind(&of_kind(Some("tun"))));
        let bond = |bond_xdp| LinkInfo {
            bond_xdp,
            ..of_kind(Some("bond"))
        };
        assert!(accepts_by_kind(&bond(true)), "bond_xdp_xmit (5.15+)");
        assert!(
            !accepts_by_kind(&bond(false)),
            "broadcast, tlb, alb, encap hash: dropped"
        );
        assert!(accepts_by_kind(&of_kind(None)));
    }

    fn of_kind(kind: Option<&str>) -> LinkInfo {
        LinkInfo {
            kind: kind.map(Into::into),
            ..LinkInfo::default()
        }
    }
}
