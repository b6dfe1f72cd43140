//! The reference model of the packet path: a pure function from a frame,
//! its ingress interface and one table set's contents to the verdict the
//! XDP program must reach, with the steps that lead there in words. Its
//! source is the decision order in `docs/DESIGN.md` §2 (the packet path),
//! not the eBPF code, and it reads the frame as a plain byte slice;
//! `vaultfw check --explain` prints its steps, and the differential tests
//! hold the kernel program to it frame by frame.
//!
//! Where DESIGN.md is silent the model follows the program's contract in
//! `firewall-common` (tag and extension-header bounds, endpoint wildcards,
//! `FLAG_VALID`, rule expiry: a table whose matching entry has expired
//! does not match, and no shorter prefix of it is consulted). Where the two could differ, the model keeps the design's
//! reading: an IPv6 extension header must lie inside the packet's payload
//! (a chain that runs past the payload length is a truncated header, so
//! malformed), as an IPv4 header must lie inside its total length.
//!
//! The model judges the policy, not the host's routes: it has no routing
//! table, so it leaves out step 8 (`FLAG_PASS_FORWARDED`: a frame the
//! kernel would forward out of the host passes as `pass_forwarded`) and
//! never reaches that verdict. `vaultfw check` and the differential tests
//! load table sets without the flag, so the program never asks the
//! routing table there either; the flag is the daemon's, and the
//! end-to-end tests (`tests/tests/forwarded_traffic.rs`) prove it.

mod headers;
mod lookup;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use firewall_common::{
    FLAG_AUDIT, FLAG_BYPASS_TRUSTED, FLAG_DEFAULT_ALLOW, FLAG_IPV6_ALLOW, FLAG_VALID, IFINDEX_ANY,
    PORT_PROTO_TCP, PORT_PROTO_UDP, RuleValue, VLAN_ANY, Verdict, port_slot,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::compile::{CompiledTables, RuleKind};

pub use headers::{Proto, Source};

/// What the XDP program returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    /// `XDP_DROP` (1).
    Drop,
    /// `XDP_PASS` (2).
    Pass,
}

impl XdpAction {
    /// The action a verdict leads to.
    pub fn of(verdict: Verdict) -> XdpAction {
        if verdict.drops() {
            XdpAction::Drop
        } else {
            XdpAction::Pass
        }
    }

    /// The kernel's return code: `XDP_DROP` = 1, `XDP_PASS` = 2.
    pub fn code(self) -> u32 {
        match self {
            XdpAction::Drop => 1,
            XdpAction::Pass => 2,
        }
    }

    /// The action for a kernel return code, if it is one of ours.
    pub fn from_code(code: u32) -> Option<XdpAction> {
        match code {
            1 => Some(XdpAction::Drop),
            2 => Some(XdpAction::Pass),
            _ => None,
        }
    }

    /// `XDP_DROP` or `XDP_PASS`.
    pub fn name(self) -> &'static str {
        match self {
            XdpAction::Drop => "XDP_DROP",
            XdpAction::Pass => "XDP_PASS",
        }
    }
}

/// The table entry that let a frame through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchedRule {
    /// The table.
    pub kind: RuleKind,
    /// The entry's hit-counter slot ([`RuleValue::slot`]).
    pub id: u32,
    /// The prefix that covered the source.
    pub prefix: IpNet,
    /// For a virtual network rule, the endpoint of the entry that matched:
    /// (ifindex or `IFINDEX_ANY`, VLAN id or `VLAN_ANY`).
    pub endpoint: Option<(u32, u32)>,
}

/// Why a frame is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than an Ethernet header.
    ShortEthernet {
        /// Frame length.
        len: usize,
    },
    /// More VLAN tags than the parser walks.
    TooManyVlanTags {
        /// The TPID of the tag one too deep.
        tpid: u16,
    },
    /// A VLAN tag cut off by the end of the frame.
    VlanTagTruncated {
        /// Frame offset of the tag's TCI.
        offset: usize,
    },
    /// Fewer than 20 bytes after the EtherType.
    Ipv4HeaderTruncated {
        /// Bytes present.
        available: usize,
    },
    /// EtherType IPv4 but another version nibble.
    Ipv4Version {
        /// The nibble.
        version: u8,
    },
    /// IHL below 5.
    Ipv4Ihl {
        /// The IHL.
        ihl: u8,
    },
    /// Total length below the header length.
    Ipv4TotalLengthBelowHeader {
        /// Total length.
        total_len: usize,
        /// IHL × 4.
        header_len: usize,
    },
    /// Total length beyond the frame.
    Ipv4TotalLengthBeyondFrame {
        /// Total length.
        total_len: usize,
        /// Bytes from the IPv4 header to the end of the frame.
        available: usize,
    },
    /// Fewer than 40 bytes after the EtherType.
    Ipv6HeaderTruncated {
        /// Bytes present.
        available: usize,
    },
    /// EtherType IPv6 but another version nibble.
    Ipv6Version {
        /// The nibble.
        version: u8,
    },
    /// Payload length beyond the frame.
    Ipv6PayloadBeyondFrame {
        /// Payload length.
        payload_len: usize,
        /// Bytes after the fixed header.
        available: usize,
    },
    /// An extension header that does not lie wholly inside the payload.
    Ipv6ExtensionBeyondPayload {
        /// Its type (next-header value).
        header: u8,
    },
    /// More extension headers than the walk's bound.
    Ipv6ChainTooLong {
        /// Headers walked.
        walked: usize,
    },
    /// The transport header would start past the walk's offset bound.
    Ipv6ChainTooDeep {
        /// Offset from the IPv6 header.
        offset: usize,
    },
    /// The TCP/UDP ports are not inside the IP payload.
    PortsOutsidePayload {
        /// `TCP` or `UDP`.
        proto: &'static str,
        /// Payload bytes at the transport header.
        available: usize,
    },
    /// A data-plane packet whose minimal TCP/UDP header is cut off.
    TransportHeaderIncomplete {
        /// `TCP` or `UDP`.
        proto: &'static str,
    },
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use firewall_common::{MAX_IPV6_EXT_HEADERS, MAX_IPV6_TRANSPORT_OFFSET, MAX_VLAN_TAGS};
        match *self {
            Malformed::ShortEthernet { len } => {
                write!(f, "{len} bytes: shorter than an Ethernet header")
            }
            Malformed::TooManyVlanTags { tpid } => write!(
                f,
                "VLAN tag (0x{tpid:04x}) deeper than the {MAX_VLAN_TAGS} tags walked"
            ),
            Malformed::VlanTagTruncated { offset } => {
                write!(
                    f,
                    "VLAN tag at offset {offset} cut off by the end of the frame"
                )
            }
            Malformed::Ipv4HeaderTruncated { available } => {
                write!(f, "IPv4 header cut off: {available} of 20 bytes")
            }
            Malformed::Ipv4Version { version } => {
                write!(f, "IPv4 EtherType with IP version {version}")
            }
            Malformed::Ipv4Ihl { ihl } => write!(f, "IPv4 IHL {ihl} is below 5"),
            Malformed::Ipv4TotalLengthBelowHeader {
                total_len,
                header_len,
            } => write!(
                f,
                "IPv4 total length {total_len} is shorter than its {header_len}-byte header"
            ),
            Malformed::Ipv4TotalLengthBeyondFrame {
                total_len,
                available,
            } => write!(
                f,
                "IPv4 total length {total_len} but the frame holds {available} bytes of it"
            ),
            Malformed::Ipv6HeaderTruncated { available } => {
                write!(f, "IPv6 header cut off: {available} of 40 bytes")
            }
            Malformed::Ipv6Version { version } => {
                write!(f, "IPv6 EtherType with IP version {version}")
            }
            Malformed::Ipv6PayloadBeyondFrame {
                payload_len,
                available,
            } => write!(
                f,
                "IPv6 payload length {payload_len} but the frame holds {available} bytes of it"
            ),
            Malformed::Ipv6ExtensionBeyondPayload { header } => write!(
                f,
                "IPv6 extension header {header} runs past the end of the payload"
            ),
            Malformed::Ipv6ChainTooLong { walked } => write!(
                f,
                "IPv6 extension chain longer than the {walked} headers walked \
                 (bound {MAX_IPV6_EXT_HEADERS}): it could hide a data-plane port"
            ),
            Malformed::Ipv6ChainTooDeep { offset } => write!(
                f,
                "IPv6 transport header at offset {offset}, past the walk's bound \
                 {MAX_IPV6_TRANSPORT_OFFSET}"
            ),
            Malformed::PortsOutsidePayload { proto, available } => write!(
                f,
                "{proto} ports not inside the IP payload ({available} of 4 bytes)"
            ),
            Malformed::TransportHeaderIncomplete { proto } => {
                write!(f, "{proto} header cut off inside the IP payload")
            }
        }
    }
}

/// The model's answer for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// The verdict counter the frame must increment.
    pub verdict: Verdict,
    /// The XDP action.
    pub action: XdpAction,
    /// The entry that let the frame through, for the rule verdicts.
    pub matched: Option<MatchedRule>,
    /// Why, for `deny_malformed`.
    pub malformed: Option<Malformed>,
    /// The steps, in order ("802.1Q tag VLAN 120", "TCP dport 443 is data
    /// plane", ...), ending with the verdict.
    pub explanation: Vec<String>,
}

/// The IPv4 source of a TCP or UDP `frame`, as [`judge`] reads it; `None`
/// for anything else.
pub fn ipv4_source(frame: &[u8]) -> Option<Ipv4Addr> {
    match headers::walk(frame, &mut Vec::new()).classified {
        headers::Classified::Transport(headers::Ports {
            source: Source::V4(addr),
            ..
        }) => Some(addr),
        _ => None,
    }
}

/// Judges `frame` (an Ethernet frame as the NIC hands it to XDP) arriving
/// through interface `ingress_ifindex` against one table set, at
/// CLOCK_MONOTONIC time `now_ns` (what `bpf_ktime_get_coarse_ns` would
/// read; see [`crate::clock::kernel_now_ns`]) for rule expiry.
pub fn judge(
    frame: &[u8],
    ingress_ifindex: u32,
    tables: &CompiledTables,
    now_ns: u64,
) -> Judgement {
    let mut steps = Vec::new();
    let walked = headers::walk(frame, &mut steps);
    let at = Context {
        ingress_ifindex,
        now_ns,
    };
    let (verdict, matched, malformed) = decide(walked, &at, tables, &mut steps);
    let action = XdpAction::of(verdict);
    steps.push(format!("verdict {} ({})", verdict.name(), action.name()));
    Judgement {
        verdict,
        action,
        matched,
        malformed,
        explanation: steps,
    }
}

type Decision = (Verdict, Option<MatchedRule>, Option<Malformed>);

/// Where and when a frame is judged.
struct Context {
    ingress_ifindex: u32,
    now_ns: u64,
}

fn decide(
    walked: headers::Walked,
    at: &Context,
    tables: &CompiledTables,
    steps: &mut Vec<String>,
) -> Decision {
    use headers::Classified;
    let plain = |verdict| (verdict, None, None);
    let ports = match walked.classified {
        Classified::NotIp => return plain(Verdict::PassNonIp),
        Classified::OtherProtocol => return plain(Verdict::PassControlPlane),
        Classified::LaterFragment => return plain(Verdict::PassFragment),
        Classified::Malformed(why) => {
            steps.push(format!("malformed: {why}"));
            return (Verdict::DenyMalformed, None, Some(why));
        }
        Classified::Transport(ports) => ports,
    };

    let proto = ports.proto.name();
    if !guarded(tables, ports.proto, ports.dport) {
        steps.push(format!("{proto} dport {} is not data plane", ports.dport));
        return plain(Verdict::PassControlPlane);
    }
    steps.push(format!("{proto} dport {} is data plane", ports.dport));
    if !ports.header_complete {
        let why = Malformed::TransportHeaderIncomplete { proto };
        steps.push(format!("malformed: {why}"));
        return (Verdict::DenyMalformed, None, Some(why));
    }

    // A set the agent never wrote judges as Deny with no rules: closed.
    let written = tables.flags & FLAG_VALID != 0;
    let flags = if written { tables.flags } else { 0 };
    if !written {
        steps.push("table set never written (FLAG_VALID clear): Deny, no rules".to_owned());
    }
    let audit = flags & FLAG_AUDIT != 0;
    let refuse = |denial: Verdict, steps: &mut Vec<String>| {
        if audit {
            steps.push(format!(
                "mode Audit: {} becomes audit_would_deny",
                denial.name()
            ));
            plain(Verdict::AuditWouldDeny)
        } else {
            plain(denial)
        }
    };

    let source = match ports.source {
        Source::V6(source) => {
            // The same order as IPv4 on the IPv6 tables; `default_action`
            // is not consulted: a source no rule matches gets `ipv6`.
            let matched = written
                .then(|| {
                    first_match(
                        IpAddr::V6(source),
                        at,
                        walked.outer_vlan,
                        flags,
                        tables,
                        steps,
                    )
                })
                .flatten();
            if let Some(matched) = matched {
                return (matched.kind.verdict(), Some(matched), None);
            }
            return if flags & FLAG_IPV6_ALLOW != 0 {
                steps.push(format!(
                    "no rule matched IPv6 source {source}, ipv6 = Allow"
                ));
                plain(Verdict::PassIpv6)
            } else {
                steps.push(format!("no rule matched IPv6 source {source}, ipv6 = Deny"));
                refuse(Verdict::DenyIpv6, steps)
            };
        }
        Source::V4(source) => source,
    };
    if flags & FLAG_DEFAULT_ALLOW != 0 {
        steps.push("default_action Allow: rules are not consulted".to_owned());
        return plain(Verdict::AllowDefault);
    }
    let matched = written
        .then(|| {
            first_match(
                IpAddr::V4(source),
                at,
                walked.outer_vlan,
                flags,
                tables,
                steps,
            )
        })
        .flatten();
    if let Some(matched) = matched {
        return (matched.kind.verdict(), Some(matched), None);
    }
    steps.push(format!("default_action Deny: no rule matched {source}"));
    refuse(Verdict::DenyNoMatch, steps)
}

/// Whether `dport` of `proto` is a data-plane port in the set's bitmap
/// (rows TCP then UDP, numbered as set 0's).
fn guarded(tables: &CompiledTables, proto: Proto, dport: u16) -> bool {
    let row = match proto {
        Proto::Tcp => PORT_PROTO_TCP,
        Proto::Udp => PORT_PROTO_UDP,
    };
    let (word, bit) = port_slot(0, row, dport);
    tables
        .port_words
        .get(word as usize)
        .is_some_and(|w| w & bit != 0)
}

/// A table's longest match for `source` in its family's table: the
/// prefix and the entry.
fn longest_of(
    v4: &std::collections::BTreeMap<crate::compile::PrefixKey, RuleValue>,
    v6: &std::collections::BTreeMap<crate::compile::Prefix6Key, RuleValue>,
    source: IpAddr,
) -> Option<(IpNet, RuleValue)> {
    match source {
        IpAddr::V4(a) => lookup::longest(v4, a).map(|(k, v)| (IpNet::V4(Ipv4Net::from(k)), v)),
        IpAddr::V6(a) => lookup::longest6(v6, a).map(|(k, v)| (IpNet::V6(Ipv6Net::from(k)), v)),
    }
}

/// The virtual-network entry for `source` bound to exactly (`ifindex`,
/// `vlan`), in its family's table.
fn longest_at_endpoint_of(
    tables: &CompiledTables,
    ifindex: u32,
    vlan: u32,
    source: IpAddr,
) -> Option<(IpNet, RuleValue)> {
    match source {
        IpAddr::V4(a) => lookup::longest_at_endpoint(&tables.vnet_rules, ifindex, vlan, a)
            .map(|(k, v)| (IpNet::V4(Ipv4Net::from(k.prefix)), v)),
        IpAddr::V6(a) => lookup::longest6_at_endpoint(&tables.vnet6_rules, ifindex, vlan, a)
            .map(|(k, v)| (IpNet::V6(Ipv6Net::from(k.prefix)), v)),
    }
}

/// `a.b.c.d/N` or an IPv6 prefix as rules show it.
fn words(prefix: IpNet) -> String {
    prefix.to_string()
}

/// Key Vault's order: trusted services (with the bypass), IP rules, then
/// virtual network rules through the frame's endpoint; an IPv6 source is
/// looked up in the IPv6 tables the same way.
fn first_match(
    source: IpAddr,
    at: &Context,
    outer_vlan: u16,
    flags: u32,
    tables: &CompiledTables,
    steps: &mut Vec<String>,
) -> Option<MatchedRule> {
    if flags & FLAG_BYPASS_TRUSTED != 0 {
        match longest_of(&tables.trusted, &tables.trusted6, source) {
            Some((prefix, value)) => {
                let prefix_words = words(prefix);
                if live(
                    value,
                    at,
                    &format!("trusted services {prefix_words}"),
                    steps,
                ) {
                    steps.push(format!("source {source} in trusted services {prefix}"));
                    return Some(MatchedRule {
                        kind: RuleKind::Trusted,
                        id: value.slot,
                        prefix,
                        endpoint: None,
                    });
                }
            }
            None => steps.push(format!("source {source} not in trusted services")),
        }
    } else {
        steps.push("bypass None: trusted services not consulted".to_owned());
    }
    match longest_of(&tables.ip_rules, &tables.ip6_rules, source) {
        Some((prefix, value)) => {
            let prefix_words = words(prefix);
            if live(value, at, &format!("ip_rules {prefix_words}"), steps) {
                steps.push(format!("source {source} in ip_rules {prefix}"));
                return Some(MatchedRule {
                    kind: if source.is_ipv6() {
                        RuleKind::Ip6
                    } else {
                        RuleKind::Ip
                    },
                    id: value.slot,
                    prefix,
                    endpoint: None,
                });
            }
        }
        None => steps.push(format!("source {source} not in ip_rules")),
    }

    // The endpoints a frame can match: its interface on any VLAN; and, when
    // tagged, its interface on its VLAN, then its VLAN on any interface.
    // The first endpoint with a covering entry is the table's match.
    let ingress_ifindex = at.ingress_ifindex;
    let vlan = u32::from(outer_vlan);
    let mut endpoints = vec![(ingress_ifindex, VLAN_ANY)];
    if outer_vlan != 0 {
        endpoints.push((ingress_ifindex, vlan));
        endpoints.push((IFINDEX_ANY, vlan));
    }
    for (ifindex, vlan) in endpoints {
        if let Some((prefix, value)) = longest_at_endpoint_of(tables, ifindex, vlan, source) {
            let via = endpoint_words(ifindex, vlan);
            if !live(
                value,
                at,
                &format!("virtual network rule {prefix} via {via}"),
                steps,
            ) {
                return None;
            }
            steps.push(format!(
                "source {source} in virtual network rule {prefix} via {via}"
            ));
            return Some(MatchedRule {
                kind: RuleKind::Vnet,
                id: value.slot,
                prefix,
                endpoint: Some((ifindex, vlan)),
            });
        }
    }
    let arrived = if outer_vlan == 0 {
        format!("ifindex {ingress_ifindex}, untagged")
    } else {
        format!("ifindex {ingress_ifindex}, VLAN {outer_vlan}")
    };
    steps.push(format!(
        "source {source} in no virtual network rule of its endpoint ({arrived})"
    ));
    None
}

/// Whether the entry a table matched is still in force at `at.now_ns`; an
/// expired one is said, and its table does not match (no shorter prefix of
/// the table is consulted: the kernel's trie answers only the longest).
fn live(value: RuleValue, at: &Context, entry: &str, steps: &mut Vec<String>) -> bool {
    if value.expired(|| at.now_ns) {
        steps.push(format!(
            "{entry} matched but expired (at monotonic {} ns, now {} ns): the table does not \
             match; a shorter prefix in it is not consulted",
            value.expires_at_ns(),
            at.now_ns
        ));
        false
    } else {
        true
    }
}

/// `ifindex 3, any VLAN`, `ifindex 3, VLAN 120`, `any interface, VLAN 120`.
pub fn endpoint_words(ifindex: u32, vlan: u32) -> String {
    let interface = if ifindex == IFINDEX_ANY {
        "any interface".to_owned()
    } else {
        format!("ifindex {ifindex}")
    };
    let vlan = if vlan == VLAN_ANY {
        "any VLAN".to_owned()
    } else {
        format!("VLAN {vlan}")
    };
    format!("{interface}, {vlan}")
}
