//! The decision order of DESIGN.md section 2, on a parsed frame. The
//! active table set is read once per frame and used for every lookup, so a
//! policy flip never mixes two policies in one verdict.

use aya_ebpf::{btf_maps::lpm_trie::Key, programs::XdpContext};
use firewall_common::{
    FLAG_AUDIT, FLAG_DEFAULT_ALLOW, FLAG_IPV6_ALLOW, FLAG_VALID, PORT_PROTO_TCP, PORT_PROTO_UDP,
    Verdict, port_slot,
};

use crate::parse::{self, IPPROTO_TCP, Packet, Transport};
use crate::{VFW_ACTIVE, VFW_CONFIG, VFW_IP_RULES_0, VFW_IP_RULES_1, VFW_PORTS};

/// Judges one frame.
#[inline(always)]
pub fn judge(ctx: &XdpContext) -> Verdict {
    let (packet, _vlan_id) = parse::parse(ctx);
    let transport = match packet {
        Packet::NonIp => return Verdict::PassNonIp,
        Packet::NotTransport => return Verdict::PassControlPlane,
        Packet::Fragment => return Verdict::PassFragment,
        Packet::Malformed => return Verdict::DenyMalformed,
        Packet::Transport(t) => t,
    };
    let set = active_set();
    if !is_data_plane(set, &transport) {
        return Verdict::PassControlPlane;
    }
    if !transport.header_complete {
        return Verdict::DenyMalformed;
    }
    // A slot the agent never wrote (FLAG_VALID clear) reads as flags 0:
    // default Deny, no bypass, enforce — closed, never open.
    let flags = VFW_CONFIG.get(set).map_or(0, |c| c.flags);
    let flags = if flags & FLAG_VALID != 0 { flags } else { 0 };
    let Some(src) = transport.ipv4_src else {
        return if flags & FLAG_IPV6_ALLOW != 0 {
            Verdict::PassIpv6
        } else {
            deny(flags, Verdict::DenyIpv6)
        };
    };
    if flags & FLAG_DEFAULT_ALLOW != 0 {
        return Verdict::AllowDefault;
    }
    if ip_rule_matches(set, src) {
        return Verdict::AllowIpRule;
    }
    deny(flags, Verdict::DenyNoMatch)
}

/// The table set the agent last flipped to (0 or 1).
#[inline(always)]
fn active_set() -> u32 {
    VFW_ACTIVE.get(0).map_or(0, |s| *s & 1)
}

/// Whether the frame's destination port is guarded in table set `set`.
#[inline(always)]
fn is_data_plane(set: u32, t: &Transport) -> bool {
    let proto = if t.proto == IPPROTO_TCP {
        PORT_PROTO_TCP
    } else {
        PORT_PROTO_UDP
    };
    let (word, bit) = port_slot(set, proto, t.dport);
    VFW_PORTS.get(word).is_some_and(|w| *w & bit != 0)
}

/// Longest-prefix match of the IPv4 source (network byte order) against
/// table set `set`'s IP rules.
#[inline(always)]
fn ip_rule_matches(set: u32, src: [u8; 4]) -> bool {
    let key = Key::new(32, src);
    let hit = if set == 0 {
        VFW_IP_RULES_0.get(&key)
    } else {
        VFW_IP_RULES_1.get(&key)
    };
    hit.is_some()
}

/// `denial`, or `audit_would_deny` when the set is in audit mode.
#[inline(always)]
fn deny(flags: u32, denial: Verdict) -> Verdict {
    if flags & FLAG_AUDIT != 0 {
        Verdict::AuditWouldDeny
    } else {
        denial
    }
}
