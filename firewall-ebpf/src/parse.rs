//! Header parsing: Ethernet, up to [`MAX_VLAN_TAGS`] VLAN tags, IPv4 (with
//! options) or IPv6 (with extension headers), and the TCP/UDP destination
//! port. Every read is checked against `data_end`; every variable offset is
//! bounded first, so the verifier can prove each access.
//!
//! Two ways in, one parser from the IP header on: [`parse_ethernet`] for
//! Ethernet devices walks the link layer and hands the IP header's offset
//! to [`parse_ipv4`]/[`parse_ipv6`]; [`parse_ip_packet`] for L3 devices
//! (ipip, gre, sit, wireguard, tun), whose frames start at the IP header,
//! picks the version from its first nibble.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use firewall_common::{MAX_IPV6_EXT_HEADERS, MAX_IPV6_TRANSPORT_OFFSET, MAX_VLAN_TAGS};

const ETH_HDR_LEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_HDR_LEN: usize = 4;

const IPV4_MIN_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
/// IPv4 fragment offset bits of the flags/offset field (RFC 791).
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1FFF;
/// IPv6 fragment header offset bits (RFC 8200 section 4.5).
const IPV6_FRAG_OFFSET_MASK: u16 = 0xFFF8;

/// IANA protocol numbers.
pub const IPPROTO_TCP: u8 = 6;
/// See [`IPPROTO_TCP`].
pub const IPPROTO_UDP: u8 = 17;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

const TCP_MIN_HDR_LEN: usize = 20;
const UDP_HDR_LEN: usize = 8;

/// What the headers of a frame say, as far as the policy cares.
pub enum Packet {
    /// Neither IPv4 nor IPv6 (ARP, LLDP, ...).
    NonIp,
    /// Cannot be parsed, and could be data-plane traffic.
    Malformed,
    /// IP, but not TCP or UDP (ICMP, ...): cannot be data plane.
    NotTransport,
    /// A non-first fragment: carries no ports.
    Fragment,
    /// TCP or UDP with a readable destination port.
    Transport(Transport),
}

/// A TCP/UDP packet's fields the verdict and the access log need.
pub struct Transport {
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// Source port, host byte order.
    pub sport: u16,
    /// Destination port, host byte order.
    pub dport: u16,
    /// Whether the whole minimal TCP/UDP header lies inside the IP payload.
    pub header_complete: bool,
    /// IPv4 source address, network byte order; `None` for IPv6.
    pub ipv4_src: Option<[u8; 4]>,
    /// Frame offset of the IP header (for the access log's addresses).
    pub l3: usize,
    /// Frame offset of the TCP/UDP header.
    pub l4: usize,
    /// Frame offset just past the IP packet (its length as the IP header
    /// says, plus the link-layer header on an Ethernet device): the bytes a
    /// rule hit counts.
    pub end: usize,
}

/// TCP flags byte offset in the TCP header, and the SYN/ACK bits.
const TCP_FLAGS_OFFSET: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

impl Transport {
    /// Whether this is the first packet of a TCP connection attempt (SYN
    /// without ACK). Only meaningful when `header_complete`.
    #[inline(always)]
    pub fn is_tcp_syn(&self, ctx: &XdpContext) -> bool {
        self.proto == IPPROTO_TCP
            && read::<u8>(ctx, self.l4 + TCP_FLAGS_OFFSET)
                .is_some_and(|f| f & (TCP_SYN | TCP_ACK) == TCP_SYN)
    }
}

/// Reads `N` bytes at frame offset `offset` (for addresses).
#[inline(always)]
pub fn read_bytes<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    read::<[u8; N]>(ctx, offset)
}

/// Reads a `T` at byte `offset` of the frame, or `None` past `data_end`.
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    // SAFETY: the bytes [start + offset, start + offset + size) are inside
    // the frame, checked just above; read_unaligned needs no alignment.
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
}

/// Whether the frame is at least `len` bytes long. Compares packet
/// pointers, never `data_end - data`: the verifier only trusts the former.
#[inline(always)]
fn frame_holds(ctx: &XdpContext, len: usize) -> bool {
    ctx.data() + len <= ctx.data_end()
}

/// A 16-bit length field as a `usize` the verifier knows is below 65536.
/// LLVM turns `u16::from_be_bytes` into a `be16` byte swap, and older
/// verifiers (6.1) forget every bound across it, then refuse the pointer
/// arithmetic the length takes part in. The volatile read hides the value
/// from LLVM, so it keeps the mask, and the mask bounds it for the verifier.
#[inline(always)]
fn bounded_u16(value: u16) -> usize {
    // SAFETY: a read of a local variable.
    let value = unsafe { core::ptr::read_volatile(&(value as usize)) };
    value & 0xFFFF
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    read::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

/// Parses an Ethernet frame and returns what the policy needs, plus the
/// outer VLAN id (0 when untagged).
#[inline(always)]
pub fn parse_ethernet(ctx: &XdpContext) -> (Packet, u16) {
    let Some(mut ethertype) = read_be16(ctx, 12) else {
        // Shorter than an Ethernet header: nothing to attribute.
        return (Packet::Malformed, 0);
    };
    let mut offset = ETH_HDR_LEN;
    let mut vlan_id = 0u16;
    for depth in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let (Some(tci), Some(inner)) = (read_be16(ctx, offset), read_be16(ctx, offset + 2)) else {
            return (Packet::Malformed, vlan_id);
        };
        if depth == 0 {
            vlan_id = tci & 0x0FFF;
        }
        ethertype = inner;
        offset += VLAN_HDR_LEN;
    }
    let packet = match ethertype {
        ETH_P_IPV4 => parse_ipv4(ctx, offset),
        ETH_P_IPV6 => parse_ipv6(ctx, offset),
        // More tags than we walk: never pass a frame unread.
        ETH_P_8021Q | ETH_P_8021AD => Packet::Malformed,
        _ => Packet::NonIp,
    };
    (packet, vlan_id)
}

/// Parses the packet of an L3 device: the IP header at offset 0, its
/// version in the first nibble (the device carries no ethertype). Such a
/// frame has no VLAN tag: the VLAN id is 0 (untagged).
#[inline(always)]
pub fn parse_ip_packet(ctx: &XdpContext) -> (Packet, u16) {
    // Two bytes, not one: the verifier learns no packet range from the
    // `data < data_end` test LLVM makes of a one-byte bounds check.
    let Some(first) = read::<[u8; 2]>(ctx, 0) else {
        // Shorter than any IP header: nothing to attribute.
        return (Packet::Malformed, 0);
    };
    let packet = match first[0] >> 4 {
        4 => parse_ipv4(ctx, 0),
        6 => parse_ipv6(ctx, 0),
        // Not IP: the kernel's IPv4 and IPv6 receive paths drop a header
        // whose version is not theirs, so this cannot reach the data plane.
        _ => Packet::NonIp,
    };
    (packet, 0)
}

/// IPv4 (RFC 791): header length from IHL, total length checked against
/// the frame, fragments recognised, then the transport header.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Packet {
    let Some(first) = read::<[u8; IPV4_MIN_HDR_LEN]>(ctx, l3) else {
        return Packet::Malformed;
    };
    let version = first[0] >> 4;
    let header_len = ((first[0] & 0x0F) as usize) * 4;
    if version != 4 || header_len < IPV4_MIN_HDR_LEN {
        return Packet::Malformed;
    }
    let total_len = bounded_u16(u16::from_be_bytes([first[2], first[3]]));
    if total_len < header_len || !frame_holds(ctx, l3 + total_len) {
        return Packet::Malformed;
    }
    let proto = first[9];
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Packet::NotTransport;
    }
    let frag = u16::from_be_bytes([first[6], first[7]]);
    if frag & IPV4_FRAG_OFFSET_MASK != 0 {
        return Packet::Fragment;
    }
    let src = [first[12], first[13], first[14], first[15]];
    transport(ctx, proto, l3, l3 + header_len, l3 + total_len, Some(src))
}

/// IPv6 (RFC 8200): walks up to [`MAX_IPV6_EXT_HEADERS`] extension headers
/// to the transport header.
#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3: usize) -> Packet {
    let Some(fixed) = read::<[u8; 8]>(ctx, l3) else {
        return Packet::Malformed;
    };
    if fixed[0] >> 4 != 6 {
        return Packet::Malformed;
    }
    let payload_len = bounded_u16(u16::from_be_bytes([fixed[4], fixed[5]]));
    let end = l3 + IPV6_HDR_LEN + payload_len;
    if !frame_holds(ctx, end) {
        return Packet::Malformed;
    }
    let mut next = fixed[6];
    let mut offset = IPV6_HDR_LEN;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if next == IPPROTO_TCP || next == IPPROTO_UDP {
            return transport(ctx, next, l3, l3 + offset, end, None);
        }
        if !is_walked_extension(next) {
            // ICMPv6, ESP, no next header, ...: not TCP/UDP.
            return Packet::NotTransport;
        }
        // Read first, then compare with the payload's end (see transport).
        let Some(h) = read::<[u8; 4]>(ctx, l3 + offset) else {
            return Packet::Malformed;
        };
        let header_len = match next {
            IPPROTO_AH => (h[1] as usize + 2) * 4,
            IPPROTO_FRAGMENT => 8,
            _ => (h[1] as usize + 1) * 8,
        };
        // An extension header must lie inside the IPv6 payload: bytes past
        // it (Ethernet padding, garbage) are not part of the packet.
        if l3 + offset + header_len > end {
            return Packet::Malformed;
        }
        if next == IPPROTO_FRAGMENT && u16::from_be_bytes([h[2], h[3]]) & IPV6_FRAG_OFFSET_MASK != 0
        {
            return Packet::Fragment;
        }
        next = h[0];
        offset += header_len;
        if offset > MAX_IPV6_TRANSPORT_OFFSET {
            return Packet::Malformed;
        }
    }
    if next == IPPROTO_TCP || next == IPPROTO_UDP {
        return transport(ctx, next, l3, l3 + offset, end, None);
    }
    if is_walked_extension(next) {
        // Longer chain than we walk: it could hide a data-plane port.
        Packet::Malformed
    } else {
        Packet::NotTransport
    }
}

/// The IPv6 extension headers the parser walks (RFC 8200 section 4).
#[inline(always)]
fn is_walked_extension(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    )
}

/// Reads the destination port of a TCP/UDP header at `l4`, whose IP payload
/// ends at `end` (both frame offsets).
#[inline(always)]
fn transport(
    ctx: &XdpContext,
    proto: u8,
    l3: usize,
    l4: usize,
    end: usize,
    ipv4_src: Option<[u8; 4]>,
) -> Packet {
    // Read first, then compare with the IP payload's end: checking `end`
    // first lets LLVM drop the pointer check the verifier needs.
    let Some(ports) = read::<[u8; 4]>(ctx, l4) else {
        return Packet::Malformed;
    };
    let sport = u16::from_be_bytes([ports[0], ports[1]]);
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    if l4 + 4 > end {
        return Packet::Malformed;
    }
    let min_len = if proto == IPPROTO_TCP {
        TCP_MIN_HDR_LEN
    } else {
        UDP_HDR_LEN
    };
    Packet::Transport(Transport {
        proto,
        sport,
        dport,
        header_complete: l4 + min_len <= end,
        ipv4_src,
        l3,
        l4,
        end,
    })
}
