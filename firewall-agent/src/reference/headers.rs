//! Reading a frame's headers for the reference model: Ethernet, VLAN tags,
//! IPv4 or IPv6 (with its extension chain) and the TCP/UDP ports. Every
//! byte is read through [`Bytes`], which answers `None` past the end of the
//! slice, so no read can run off the frame. Each step the walk takes is
//! written to `steps` in the words `check --explain` prints.

use std::net::{Ipv4Addr, Ipv6Addr};

use firewall_common::{MAX_IPV6_EXT_HEADERS, MAX_IPV6_TRANSPORT_OFFSET, MAX_VLAN_TAGS};

use super::Malformed;

/// Layer-4 protocols the data plane can guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// IP protocol 6.
    Tcp,
    /// IP protocol 17.
    Udp,
}

impl Proto {
    fn from_ip_protocol(protocol: u8) -> Option<Proto> {
        match protocol {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }

    /// `TCP` or `UDP`.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }

    /// The smallest header of the protocol: TCP 20 bytes, UDP 8.
    fn min_header(self) -> usize {
        match self {
            Proto::Tcp => 20,
            Proto::Udp => 8,
        }
    }
}

/// The source address of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// IPv4: rules can name it.
    V4(Ipv4Addr),
    /// IPv6: IPv6 rules, then the `ipv6` setting.
    V6(Ipv6Addr),
}

/// A TCP or UDP packet whose destination port could be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// TCP or UDP.
    pub proto: Proto,
    /// Destination port.
    pub dport: u16,
    /// The IP source.
    pub source: Source,
    /// Whether the protocol's minimal header lies inside the IP payload.
    pub header_complete: bool,
}

/// What the headers of a frame amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classified {
    /// Neither IPv4 nor IPv6.
    NotIp,
    /// Cannot be read, and so could be anything, data plane included.
    Malformed(Malformed),
    /// IP but neither TCP nor UDP (ICMP, ESP, no next header, ...).
    OtherProtocol,
    /// A non-first fragment: no ports in it.
    LaterFragment,
    /// TCP or UDP with a destination port.
    Transport(Ports),
}

/// The outcome of the walk: the classification and the outer VLAN id
/// (`0` when the frame is untagged or carries a priority tag only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walked {
    /// See [`Classified`].
    pub classified: Classified,
    /// VID of the outermost tag; 0 = untagged.
    pub outer_vlan: u16,
}

/// A frame with checked big-endian reads.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn u8(&self, at: usize) -> Option<u8> {
        self.0.get(at).copied()
    }
    fn u16(&self, at: usize) -> Option<u16> {
        let end = at.checked_add(2)?;
        let b = self.0.get(at..end)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn array<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        let end = at.checked_add(N)?;
        self.0.get(at..end)?.try_into().ok()
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88A8;

/// Walks `frame` from its Ethernet header to the destination port.
pub fn walk(frame: &[u8], steps: &mut Vec<String>) -> Walked {
    let bytes = Bytes(frame);
    let mut outer_vlan = 0u16;
    let done = |classified, outer_vlan| Walked {
        classified,
        outer_vlan,
    };
    let Some(mut ethertype) = bytes.u16(12) else {
        return done(
            Classified::Malformed(Malformed::ShortEthernet { len: frame.len() }),
            outer_vlan,
        );
    };
    let mut cursor = 14;
    let mut tags = 0usize;
    while ethertype == TPID_8021Q || ethertype == TPID_8021AD {
        let kind = if ethertype == TPID_8021Q {
            "802.1Q"
        } else {
            "802.1ad"
        };
        if tags == MAX_VLAN_TAGS {
            return done(
                Classified::Malformed(Malformed::TooManyVlanTags { tpid: ethertype }),
                outer_vlan,
            );
        }
        let (Some(tci), Some(inner)) = (bytes.u16(cursor), bytes.u16(cursor + 2)) else {
            return done(
                Classified::Malformed(Malformed::VlanTagTruncated { offset: cursor }),
                outer_vlan,
            );
        };
        let vid = tci & 0x0FFF;
        if tags == 0 {
            outer_vlan = vid;
        }
        if vid == 0 {
            steps.push(format!("{kind} priority tag (VLAN 0)"));
        } else {
            steps.push(format!("{kind} tag VLAN {vid}"));
        }
        tags += 1;
        ethertype = inner;
        cursor += 4;
    }
    if tags > 0 && outer_vlan == 0 {
        steps.push("outer tag carries VLAN 0: the frame counts as untagged".to_owned());
    }
    let classified = match ethertype {
        ETHERTYPE_IPV4 => ipv4(&bytes, cursor, steps),
        ETHERTYPE_IPV6 => ipv6(&bytes, cursor, steps),
        other => {
            steps.push(format!(
                "EtherType 0x{other:04x} ({}): not IP",
                ethertype_name(other)
            ));
            Classified::NotIp
        }
    };
    done(classified, outer_vlan)
}

fn ethertype_name(ethertype: u16) -> &'static str {
    match ethertype {
        0x0806 => "ARP",
        0x88CC => "LLDP",
        0x8035 => "RARP",
        0x8847 | 0x8848 => "MPLS",
        0x88E5 => "MACsec",
        0x8863 | 0x8864 => "PPPoE",
        t if t < 0x0600 => "802.3 length field",
        _ => "other",
    }
}

/// IPv4 at `l3` (RFC 791).
fn ipv4(bytes: &Bytes<'_>, l3: usize, steps: &mut Vec<String>) -> Classified {
    let Some(header) = bytes.array::<20>(l3) else {
        return Classified::Malformed(Malformed::Ipv4HeaderTruncated {
            available: bytes.len().saturating_sub(l3),
        });
    };
    let version = header[0] >> 4;
    if version != 4 {
        return Classified::Malformed(Malformed::Ipv4Version { version });
    }
    let ihl = header[0] & 0x0F;
    if ihl < 5 {
        return Classified::Malformed(Malformed::Ipv4Ihl { ihl });
    }
    let header_len = usize::from(ihl) * 4;
    if ihl == 5 {
        steps.push("IPv4 IHL 5".to_owned());
    } else {
        steps.push(format!(
            "IPv4 IHL {ihl} (options, {} bytes)",
            header_len - 20
        ));
    }
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if total_len < header_len {
        return Classified::Malformed(Malformed::Ipv4TotalLengthBelowHeader {
            total_len,
            header_len,
        });
    }
    let packet_end = l3 + total_len;
    if packet_end > bytes.len() {
        return Classified::Malformed(Malformed::Ipv4TotalLengthBeyondFrame {
            total_len,
            available: bytes.len() - l3,
        });
    }
    steps.push(format!("IPv4 total length {total_len} fits the frame"));
    let source = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    steps.push(format!("source {source}"));
    let protocol = header[9];
    let Some(proto) = Proto::from_ip_protocol(protocol) else {
        steps.push(format!(
            "IPv4 protocol {protocol} ({}): not TCP/UDP, not data plane",
            protocol_name(protocol)
        ));
        return Classified::OtherProtocol;
    };
    let flags_offset = u16::from_be_bytes([header[6], header[7]]);
    let offset_units = flags_offset & 0x1FFF;
    let more_fragments = flags_offset & 0x2000 != 0;
    if offset_units != 0 {
        steps.push(format!(
            "IPv4 fragment at offset {} bytes: a non-first fragment carries no ports",
            usize::from(offset_units) * 8
        ));
        return Classified::LaterFragment;
    }
    if more_fragments {
        steps.push("IPv4 first fragment (MF set): judged with its ports".to_owned());
    }
    ports(
        bytes,
        proto,
        l3 + header_len,
        packet_end,
        Source::V4(source),
    )
}

/// IPv6 at `l3` (RFC 8200), walking up to [`MAX_IPV6_EXT_HEADERS`]
/// extension headers, each of which must lie inside the payload.
fn ipv6(bytes: &Bytes<'_>, l3: usize, steps: &mut Vec<String>) -> Classified {
    let Some(header) = bytes.array::<40>(l3) else {
        // The version nibble decides nothing here: a header cut short is
        // malformed whatever it claims to be.
        return Classified::Malformed(Malformed::Ipv6HeaderTruncated {
            available: bytes.len().saturating_sub(l3),
        });
    };
    let version = header[0] >> 4;
    if version != 6 {
        return Classified::Malformed(Malformed::Ipv6Version { version });
    }
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let packet_end = l3 + 40 + payload_len;
    if packet_end > bytes.len() {
        return Classified::Malformed(Malformed::Ipv6PayloadBeyondFrame {
            payload_len,
            available: bytes.len() - l3 - 40,
        });
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&header[8..24]);
    let source = Ipv6Addr::from(src);
    steps.push(format!(
        "IPv6 payload length {payload_len} fits the frame; source {source}"
    ));

    let mut next = header[6];
    // Offset from the start of the IPv6 header.
    let mut offset = 40usize;
    let mut walked = 0usize;
    loop {
        if let Some(proto) = Proto::from_ip_protocol(next) {
            return ports(bytes, proto, l3 + offset, packet_end, Source::V6(source));
        }
        let Some(name) = extension_name(next) else {
            steps.push(format!(
                "IPv6 next header {next} ({}): not TCP/UDP, not data plane",
                protocol_name(next)
            ));
            return Classified::OtherProtocol;
        };
        if walked == MAX_IPV6_EXT_HEADERS {
            return Classified::Malformed(Malformed::Ipv6ChainTooLong { walked });
        }
        let at = l3 + offset;
        // Next header and length byte; the fragment header has a fixed
        // length and its offset in bytes 2-3.
        let (Some(following), Some(len_byte)) = (bytes.u8(at), bytes.u8(at + 1)) else {
            return Classified::Malformed(Malformed::Ipv6ExtensionBeyondPayload { header: next });
        };
        let length = match next {
            44 => 8,
            51 => (usize::from(len_byte) + 2) * 4,
            _ => (usize::from(len_byte) + 1) * 8,
        };
        if at + length > packet_end {
            return Classified::Malformed(Malformed::Ipv6ExtensionBeyondPayload { header: next });
        }
        if next == 44 {
            let Some(offset_field) = bytes.u16(at + 2) else {
                return Classified::Malformed(Malformed::Ipv6ExtensionBeyondPayload {
                    header: next,
                });
            };
            let fragment_offset = offset_field >> 3;
            if fragment_offset != 0 {
                steps.push(format!(
                    "IPv6 fragment header, offset {} bytes: a non-first fragment carries no ports",
                    usize::from(fragment_offset) * 8
                ));
                return Classified::LaterFragment;
            }
            steps.push("IPv6 fragment header, first fragment: judged with its ports".to_owned());
        } else {
            steps.push(format!(
                "IPv6 extension header {next} ({name}), {length} bytes"
            ));
        }
        walked += 1;
        offset += length;
        next = following;
        if offset > MAX_IPV6_TRANSPORT_OFFSET {
            return Classified::Malformed(Malformed::Ipv6ChainTooDeep { offset });
        }
    }
}

/// The IPv6 extension headers the walk steps over.
fn extension_name(next_header: u8) -> Option<&'static str> {
    match next_header {
        0 => Some("hop-by-hop options"),
        43 => Some("routing"),
        44 => Some("fragment"),
        51 => Some("authentication header"),
        60 => Some("destination options"),
        _ => None,
    }
}

fn protocol_name(protocol: u8) -> &'static str {
    match protocol {
        1 => "ICMP",
        2 => "IGMP",
        4 => "IPv4-in-IP",
        41 => "IPv6-in-IP",
        47 => "GRE",
        50 => "ESP",
        58 => "ICMPv6",
        59 => "no next header",
        89 => "OSPF",
        103 => "PIM",
        112 => "VRRP",
        132 => "SCTP",
        _ => "other",
    }
}

/// The ports of a TCP/UDP header at `l4` in an IP payload ending at
/// `packet_end` (both frame offsets).
fn ports(
    bytes: &Bytes<'_>,
    proto: Proto,
    l4: usize,
    packet_end: usize,
    source: Source,
) -> Classified {
    // Source and destination port: the first four bytes, inside the
    // payload (the frame may go on past it: Ethernet padding is not IP).
    if l4 + 4 > packet_end {
        return Classified::Malformed(Malformed::PortsOutsidePayload {
            proto: proto.name(),
            available: packet_end.saturating_sub(l4),
        });
    }
    let Some(dport) = bytes.u16(l4 + 2) else {
        // packet_end never exceeds the frame; kept for the reader's sake.
        return Classified::Malformed(Malformed::PortsOutsidePayload {
            proto: proto.name(),
            available: 0,
        });
    };
    let header_complete = l4 + proto.min_header() <= packet_end;
    Classified::Transport(Ports {
        proto,
        dport,
        source,
        header_complete,
    })
}
