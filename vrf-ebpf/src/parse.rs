//! Bounds-checked views of the headers the data plane reads. Headers are byte arrays so that no
//! field access is ever unaligned or byte-order ambiguous.
use core::mem::size_of;

pub const ETH_P_IP: [u8; 2] = [0x08, 0x00];
pub const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
pub const ETH_LEN: usize = size_of::<EthHdr>();
pub const IPV4_LEN: usize = size_of::<Ipv4Hdr>();
pub const IPV6_LEN: usize = size_of::<Ipv6Hdr>();
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_HOPOPTS: u8 = 0;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: [u8; 2],
}

/// Ethernet with one 802.1Q tag: the addresses, the tag (TPID, TCI) and the ethertype behind it.
#[repr(C)]
pub struct VlanEthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub tpid: [u8; 2],
    pub tci: [u8; 2],
    pub proto: [u8; 2],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    /// Kept as the wire's two bytes; checksum arithmetic is done on native-order u16 words.
    pub check: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

#[repr(C)]
pub struct Ipv6Hdr {
    pub version_class_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub nexthdr: u8,
    pub hop_limit: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// The packet as two addresses: valid bytes are `[data, data_end)`.
#[derive(Clone, Copy)]
pub struct Frame {
    pub data: usize,
    pub data_end: usize,
}

impl Frame {
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.data_end - self.data
    }

    /// The same frame seen `n` bytes later (a view whose L3 header sits at `ETH_LEN` behind a
    /// tag). The caller has checked that the frame holds at least `n` bytes.
    #[inline(always)]
    pub fn skip(&self, n: usize) -> Frame {
        Frame {
            data: self.data + n,
            data_end: self.data_end,
        }
    }

    /// A pointer to a `T` at `offset`, if the whole `T` is inside the frame.
    #[inline(always)]
    pub fn ptr_at<T>(&self, offset: usize) -> Option<*mut T> {
        let start = self.data + offset;
        if start + size_of::<T>() > self.data_end {
            return None;
        }
        Some(start as *mut T)
    }
}

/// Source and destination ports of a TCP or UDP header at `offset`, (0, 0) when not there.
#[inline(always)]
pub fn ports(frame: &Frame, offset: usize, protocol: u8) -> u32 {
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return 0;
    }
    match frame.ptr_at::<[u8; 4]>(offset) {
        Some(p) => u32::from_ne_bytes(unsafe { *p }),
        None => 0,
    }
}

/// One's-complement sum of the 20-byte option-less IPv4 header; 0xffff when the checksum holds.
#[inline(always)]
pub fn ipv4_header_sum(ip: *const Ipv4Hdr) -> u16 {
    let words = ip as *const [u8; 2];
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < IPV4_LEN / 2 {
        sum += u16::from_ne_bytes(unsafe { *words.add(i) }) as u32;
        i += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}
