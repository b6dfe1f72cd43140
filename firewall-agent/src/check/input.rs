//! The frames `vaultfw check` judges: one synthesized from the command
//! line's flags, or every packet of a pcap or pcapng capture of an
//! Ethernet interface.

use std::net::IpAddr;
use std::path::Path;

use etherparse::{IpHeaders, Ipv4Header, Ipv6Header, PacketBuilder};
use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, PcapError};

use super::CheckError;

/// The client and host MAC addresses of synthesized frames.
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Source port when `--sport` is not given.
const DEFAULT_SPORT: u16 = 40000;

/// One frame to judge and what is known of where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The bytes, from the Ethernet header on.
    pub data: Vec<u8>,
    /// Length on the wire when the capture cut it (snaplen), else `None`.
    pub cut_from: Option<u32>,
}

/// The kind of frame to synthesize (`--proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowProto {
    /// A TCP SYN.
    Tcp,
    /// A UDP datagram.
    Udp,
    /// An ICMP (ICMPv6 for IPv6) echo request.
    Icmp,
}

/// What `--src ... --dst ...` asks for.
#[derive(Clone, Debug)]
pub struct FlowFlags {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (same family as `src`).
    pub dst: IpAddr,
    /// Protocol.
    pub proto: FlowProto,
    /// Destination port (TCP/UDP).
    pub dport: Option<u16>,
    /// Source port (TCP/UDP).
    pub sport: Option<u16>,
    /// An 802.1Q tag.
    pub vlan: Option<u16>,
}

/// The frame a client would send for `flow`: a TCP SYN, a UDP datagram
/// with 8 bytes of payload, or an ICMP(v6) echo request, optionally behind
/// one 802.1Q tag.
pub fn synthesize(flow: &FlowFlags) -> Result<Frame, CheckError> {
    let invalid = |message: String| CheckError::Flags { message };
    let ip = match (flow.src, flow.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, s.octets(), d.octets())
                .map_err(|e| invalid(format!("cannot build an IPv4 header: {e}")))?;
            h.dont_fragment = true;
            IpHeaders::Ipv4(h, Default::default())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
            Ipv6Header {
                hop_limit: 64,
                source: s.octets(),
                destination: d.octets(),
                ..Default::default()
            },
            Default::default(),
        ),
        (s, d) => {
            return Err(invalid(format!(
                "--src {s} and --dst {d} are of different IP versions: give two IPv4 or two \
                 IPv6 addresses"
            )));
        }
    };
    let step = PacketBuilder::ethernet2(CLIENT_MAC, HOST_MAC).ip(ip);
    let sport = flow.sport.unwrap_or(DEFAULT_SPORT);
    let need_dport = |name: &str| {
        flow.dport.ok_or_else(|| {
            invalid(format!(
                "--proto {name} needs --dport N (the destination port to check)"
            ))
        })
    };
    let mut data = Vec::new();
    let written = match flow.proto {
        FlowProto::Tcp => {
            let dport = need_dport("tcp")?;
            step.tcp(sport, dport, 1, 64240).syn().write(&mut data, &[])
        }
        FlowProto::Udp => {
            let dport = need_dport("udp")?;
            step.udp(sport, dport).write(&mut data, &[0u8; 8])
        }
        FlowProto::Icmp => {
            if flow.dport.is_some() || flow.sport.is_some() {
                return Err(invalid(
                    "--dport/--sport are TCP/UDP ports: --proto icmp has none".to_owned(),
                ));
            }
            match flow.src {
                IpAddr::V4(_) => step.icmpv4_echo_request(1, 1).write(&mut data, &[0u8; 8]),
                IpAddr::V6(_) => step.icmpv6_echo_request(1, 1).write(&mut data, &[0u8; 8]),
            }
        }
    };
    written.map_err(|e| invalid(format!("cannot build the frame: {e}")))?;
    if let Some(vid) = flow.vlan {
        // An 802.1Q tag between the MAC addresses and the EtherType.
        let mut tag = 0x8100u16.to_be_bytes().to_vec();
        tag.extend_from_slice(&vid.to_be_bytes());
        data.splice(12..12, tag);
    }
    Ok(Frame {
        data,
        cut_from: None,
    })
}

/// The capture formats `--pcap` reads, by their first four bytes.
enum Format {
    Pcap,
    PcapNg,
}

fn format_of(head: &[u8]) -> Option<Format> {
    match head {
        // Microsecond and nanosecond pcap, either byte order.
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d] => Some(Format::Pcap),
        // A pcapng section header block.
        [0x0a, 0x0d, 0x0d, 0x0a] => Some(Format::PcapNg),
        _ => None,
    }
}

/// Every packet of the capture at `path`, which must be an Ethernet
/// capture (pcap or pcapng, as `tcpdump -i IFACE -w FILE` writes it).
pub fn read_capture(path: &Path) -> Result<Vec<Frame>, CheckError> {
    let data = std::fs::read(path).map_err(|source| CheckError::CaptureIo {
        path: path.to_path_buf(),
        source,
    })?;
    let refuse = |reason: String, fix: &str| CheckError::Capture {
        path: path.to_path_buf(),
        reason,
        fix: fix.to_owned(),
    };
    let Some(format) = data.get(..4).and_then(format_of) else {
        let reason = if data.len() < 4 {
            format!("{} bytes: too short to be a capture", data.len())
        } else {
            format!(
                "not a pcap or pcapng file (it starts with {:02x} {:02x} {:02x} {:02x})",
                data[0], data[1], data[2], data[3]
            )
        };
        return Err(refuse(reason, FIX_FORMAT));
    };
    match format {
        Format::Pcap => read_pcap(path, &data),
        Format::PcapNg => read_pcapng(path, &data),
    }
}

const FIX_FORMAT: &str = "give a capture written by `tcpdump -i IFACE -w FILE` (pcap) or \
                          Wireshark/dumpcap (pcapng)";
const FIX_TRUNCATED: &str = "the file ends in the middle of a record: it was cut short (a copy \
                             interrupted, or tcpdump still writing); capture again and stop \
                             tcpdump with Ctrl-C before reading the file";
const FIX_LINK: &str = "capture on one Ethernet interface (`tcpdump -i eth0 -w FILE`), not on \
                        `any` or a tunnel: the XDP program sees Ethernet frames";

fn capture_error(path: &Path, index: Option<usize>, error: PcapError) -> CheckError {
    let place = match index {
        Some(i) => format!("record {i}"),
        None => "the file header".to_owned(),
    };
    let (reason, fix) = match error {
        PcapError::IncompleteBuffer => (format!("truncated at {place}"), FIX_TRUNCATED),
        other => (format!("invalid at {place}: {other}"), FIX_FORMAT),
    };
    CheckError::Capture {
        path: path.to_path_buf(),
        reason,
        fix: fix.to_owned(),
    }
}

fn link_error(path: &Path, link: DataLink) -> CheckError {
    CheckError::Capture {
        path: path.to_path_buf(),
        reason: format!("link type {link:?}, not Ethernet"),
        fix: FIX_LINK.to_owned(),
    }
}

fn read_pcap(path: &Path, data: &[u8]) -> Result<Vec<Frame>, CheckError> {
    let (mut rest, parser) = PcapParser::new(data).map_err(|e| capture_error(path, None, e))?;
    let link = parser.header().datalink;
    if link != DataLink::ETHERNET {
        return Err(link_error(path, link));
    }
    let mut frames = Vec::new();
    while !rest.is_empty() {
        // The raw record: pcap-file's validated one refuses a record whose
        // wire length exceeds the snaplen, which is exactly what a capture
        // with `tcpdump -s N` holds.
        let (next, packet) = parser
            .next_raw_packet(rest)
            .map_err(|e| capture_error(path, Some(frames.len()), e))?;
        frames.push(frame(packet.data.into_owned(), packet.orig_len));
        rest = next;
    }
    Ok(frames)
}

fn read_pcapng(path: &Path, data: &[u8]) -> Result<Vec<Frame>, CheckError> {
    let (mut rest, mut parser) =
        PcapNgParser::new(data).map_err(|e| capture_error(path, None, e))?;
    let mut frames = Vec::new();
    // Block 0 is the section header the parser read.
    let mut record = 0usize;
    while !rest.is_empty() {
        record += 1;
        let (next, block) = parser
            .next_block(rest)
            .map_err(|e| capture_error(path, Some(record), e))?;
        let (interface, bytes, original_len) = match block {
            Block::EnhancedPacket(p) => (p.interface_id, p.data, p.original_len),
            Block::SimplePacket(p) => (0, p.data, p.original_len),
            Block::Packet(p) => (u32::from(p.interface_id), p.data, p.original_len),
            _ => {
                rest = next;
                continue;
            }
        };
        let Some(description) = parser.interfaces().get(interface as usize) else {
            return Err(CheckError::Capture {
                path: path.to_path_buf(),
                reason: format!(
                    "record {record} names interface {interface}, which the file never describes"
                ),
                fix: FIX_FORMAT.to_owned(),
            });
        };
        if description.linktype != DataLink::ETHERNET {
            return Err(link_error(path, description.linktype));
        }
        frames.push(frame(bytes.into_owned(), original_len));
        rest = next;
    }
    Ok(frames)
}

fn frame(data: Vec<u8>, original_len: u32) -> Frame {
    let cut_from = (original_len as usize > data.len()).then_some(original_len);
    Frame { data, cut_from }
}
