//! The decision order of DESIGN.md section 2, on a parsed frame. The
//! active table set is read once per frame and used for every lookup, so a
//! policy flip never mixes two policies in one verdict.

use aya_ebpf::{btf_maps::lpm_trie::Key, programs::XdpContext};
use firewall_common::{
    FLAG_AUDIT, FLAG_BYPASS_TRUSTED, FLAG_DEFAULT_ALLOW, FLAG_IPV6_ALLOW, FLAG_VALID, IFINDEX_ANY,
    PORT_PROTO_TCP, PORT_PROTO_UDP, VLAN_ANY, VLAN_UNTAGGED, VNET_ENDPOINT_BITS, Verdict, VnetKey,
    port_slot,
};

use crate::parse::{self, IPPROTO_TCP, Packet, Transport};
use crate::{
    VFW_ACTIVE, VFW_CONFIG, VFW_IP_RULES_0, VFW_IP_RULES_1, VFW_PORTS, VFW_TRUSTED_0,
    VFW_TRUSTED_1, VFW_VNET_RULES_0, VFW_VNET_RULES_1,
};

/// Judges one frame.
#[inline(always)]
pub fn judge(ctx: &XdpContext) -> Verdict {
    let (packet, vlan_id) = parse::parse(ctx);
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
    // Key Vault's order: trusted services, IP rules, virtual network rules.
    if flags & FLAG_BYPASS_TRUSTED != 0 && trusted_matches(set, src) {
        return Verdict::AllowTrustedService;
    }
    if ip_rule_matches(set, src) {
        return Verdict::AllowIpRule;
    }
    if vnet_rule_matches(set, ctx.ingress_ifindex() as u32, u32::from(vlan_id), src) {
        return Verdict::AllowVnetRule;
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

/// Longest-prefix match of the source against table set `set`'s
/// trusted-service prefixes.
#[inline(always)]
fn trusted_matches(set: u32, src: [u8; 4]) -> bool {
    let key = Key::new(32, src);
    let hit = if set == 0 {
        VFW_TRUSTED_0.get(&key)
    } else {
        VFW_TRUSTED_1.get(&key)
    };
    hit.is_some()
}

/// Whether a virtual network rule of table set `set` covers `src` arriving
/// through this endpoint: a rule bound to the interface (any VLAN), to the
/// interface and the frame's VLAN, or to the frame's VLAN on any interface.
#[inline(always)]
fn vnet_rule_matches(set: u32, ifindex: u32, vlan: u32, src: [u8; 4]) -> bool {
    let prefix_len = VNET_ENDPOINT_BITS + 32;
    let lookup = |key: VnetKey| {
        let key = Key::new(prefix_len, key);
        if set == 0 {
            VFW_VNET_RULES_0.get(&key).is_some()
        } else {
            VFW_VNET_RULES_1.get(&key).is_some()
        }
    };
    if lookup(VnetKey::new(ifindex, VLAN_ANY, src)) {
        return true;
    }
    vlan != VLAN_UNTAGGED
        && (lookup(VnetKey::new(ifindex, vlan, src)) || lookup(VnetKey::new(IFINDEX_ANY, vlan, src)))
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
