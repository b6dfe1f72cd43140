//! The decision order of DESIGN.md section 2, on a parsed frame. The
//! serving table set is chosen once per frame and used for every lookup, so
//! a policy flip never mixes two policies in one verdict: the active set,
//! or — once the active set's fallback deadline (an unconfirmed apply) has
//! passed — the other set, which still holds the previous generation.
//!
//! With `FLAG_PASS_FORWARDED` (set by the daemon's opt-in `--pass-forwarded`,
//! off by default) a frame the policy
//! would drop or, in audit mode, would deny is judged once more by the
//! kernel's routing table (`route`): one the host would forward out of
//! itself is not addressed to this host's data plane and passes as
//! `pass_forwarded`. `vaultfw check` and the reference model never set the
//! flag — they judge the policy, not the host's routes — so the reference
//! model needs no routing table.
//!
//! An entry whose expiry has passed makes its table not match (see
//! `firewall_common::RuleValue::expires_at_ns`): the decision goes on to the
//! next table, never to a shorter prefix of the same one.

use aya_ebpf::{btf_maps::lpm_trie::Key, programs::XdpContext};
use aya_log_ebpf::error;
use firewall_common::{
    FLAG_AUDIT, FLAG_BYPASS_TRUSTED, FLAG_DEFAULT_ALLOW, FLAG_HAS_VLAN_VNET, FLAG_HAS_VNET,
    FLAG_IPV6_ALLOW, FLAG_LOG_ALLOWED, FLAG_PASS_FORWARDED, FLAG_VALID, IFINDEX_ANY,
    PORT_PROTO_TCP, PORT_PROTO_UDP, PolicyConfig, RuleValue, VLAN_ANY, VLAN_UNTAGGED,
    VNET_ENDPOINT_BITS, Verdict, Vnet6Key, VnetKey, cpt::subnet_may_match, port_slot,
};

use crate::cpt;
use crate::parse::{IPPROTO_TCP, Packet, Transport, read_bytes};
use crate::route;
use crate::stats::now;
use crate::{
    VFW_ACTIVE, VFW_CONFIG, VFW_IP_RULES_0, VFW_IP_RULES_1, VFW_IP6_RULES_0, VFW_IP6_RULES_1,
    VFW_PORTS, VFW_TRUSTED_0, VFW_TRUSTED_1, VFW_TRUSTED6_0, VFW_TRUSTED6_1, VFW_VNET_RULES_0,
    VFW_VNET_RULES_1, VFW_VNET6_RULES_0, VFW_VNET6_RULES_1,
};

/// Byte offset of the source address in the IPv6 header (RFC 8200).
const IPV6_SRC_OFFSET: usize = 8;

/// No rule matched (the `rule_slot` of a verdict without one).
pub const NO_SLOT: u32 = u32::MAX;

/// A verdict and what the counters and the access log need of it.
pub struct Judged {
    /// The verdict.
    pub verdict: Verdict,
    /// The hit slot of the rule that allowed the frame, or [`NO_SLOT`].
    pub rule_slot: u32,
    /// The packet's length in bytes (link layer included) as its IP header
    /// says, for the rule's byte counter; 0 when no rule matched.
    pub bytes: u64,
    /// Set for a data-plane decision the access log may record.
    pub loggable: Option<Loggable>,
}

/// A data-plane decision, with what an access-log record needs.
pub struct Loggable {
    /// The parsed transport header.
    pub transport: Transport,
    /// The outer VLAN id (0 untagged).
    pub vlan: u16,
    /// The set's event cost (0: events off).
    pub event_cost_ns: u32,
}

impl Judged {
    const fn plain(verdict: Verdict) -> Self {
        Judged {
            verdict,
            rule_slot: NO_SLOT,
            bytes: 0,
            loggable: None,
        }
    }
}

/// Judges one frame, parsed by the entry point's parser into the packet
/// and its outer VLAN id (0 untagged).
#[inline(always)]
pub fn judge(ctx: &XdpContext, (packet, vlan): (Packet, u16)) -> Judged {
    let transport = match packet {
        Packet::NonIp => return Judged::plain(Verdict::PassNonIp),
        Packet::NotTransport => return Judged::plain(Verdict::PassControlPlane),
        Packet::Fragment => return Judged::plain(Verdict::PassFragment),
        Packet::Malformed => return Judged::plain(Verdict::DenyMalformed),
        Packet::Transport(t) => t,
    };
    let (set, config) = serving_set(ctx);
    if !is_data_plane(set, &transport) {
        return Judged::plain(Verdict::PassControlPlane);
    }
    // A slot the agent never wrote (FLAG_VALID clear) reads as flags 0:
    // default Deny, no bypass, enforce, forwarded frames judged — closed,
    // never open.
    let flags = if config.flags & FLAG_VALID != 0 {
        config.flags
    } else {
        0
    };
    if !transport.header_complete {
        if passes_forwarded(ctx, flags, &transport) {
            return Judged::plain(Verdict::PassForwarded);
        }
        return Judged::plain(Verdict::DenyMalformed);
    }
    let (verdict, rule_slot) = decide(ctx, set, flags, vlan, &transport);
    let refused = verdict.drops() || verdict == Verdict::AuditWouldDeny;
    if refused && passes_forwarded(ctx, flags, &transport) {
        return Judged::plain(Verdict::PassForwarded);
    }
    let logs = refused || flags & FLAG_LOG_ALLOWED != 0;
    let bytes = transport.end as u64;
    let loggable = (logs && config.event_cost_ns != 0).then_some(Loggable {
        transport,
        vlan,
        event_cost_ns: config.event_cost_ns,
    });
    Judged {
        verdict,
        rule_slot,
        bytes,
        loggable,
    }
}

/// Step 8 of DESIGN.md section 2, for a data-plane frame the policy would
/// not admit: whether forwarded frames pass (`FLAG_PASS_FORWARDED`) and the
/// kernel would forward this one out of the host — then it is not
/// addressed to this host's data plane. Only such frames pay for the
/// routing lookup.
#[inline(always)]
fn passes_forwarded(ctx: &XdpContext, flags: u32, transport: &Transport) -> bool {
    flags & FLAG_PASS_FORWARDED != 0 && route::is_forwarded(ctx, transport)
}

/// Whether IPv4 lookups walk the compiled prefix table
/// (`firewall_common::LOOKUP_COMPILED_GLOBAL`); 0, the tries, unless the
/// loader says otherwise. The loader sets it in `.rodata`, so the verifier
/// sees a constant and checks only the lookup this program runs.
#[unsafe(no_mangle)]
static VFW_LOOKUP_COMPILED: u32 = 0;

#[inline(always)]
fn compiled_lookup() -> bool {
    // SAFETY: a plain read of a static; volatile so the compiler does not
    // fold the 0 it was compiled with (the loader replaces it).
    unsafe { core::ptr::read_volatile(&VFW_LOOKUP_COMPILED) != 0 }
}

/// Steps 5–7 of DESIGN.md section 2 for a data-plane frame.
#[inline(always)]
fn decide(
    ctx: &XdpContext,
    set: u32,
    flags: u32,
    vlan: u16,
    transport: &Transport,
) -> (Verdict, u32) {
    let Some(src) = transport.ipv4_src else {
        return decide_ipv6(ctx, set, flags, vlan, transport);
    };
    if flags & FLAG_DEFAULT_ALLOW != 0 {
        return (Verdict::AllowDefault, NO_SLOT);
    }
    // The compiled table answers both global tables in one walk; the
    // tries are walked only for the tables the decision reaches.
    let compiled = compiled_lookup();
    let [trusted_word, ip_word] = if compiled {
        cpt::global_words(set, src)
    } else {
        [0; 2]
    };
    // Key Vault's order: trusted services, IP rules, virtual network rules.
    if flags & FLAG_BYPASS_TRUSTED != 0 {
        let trusted = if compiled {
            cpt::rule(set, trusted_word)
        } else {
            trusted_match(set, src)
        };
        if let Some(slot) = live(trusted) {
            return (Verdict::AllowTrustedService, slot);
        }
    }
    let ip = if compiled {
        cpt::rule(set, ip_word)
    } else {
        ip_rule_match(set, src)
    };
    if let Some(slot) = live(ip) {
        return (Verdict::AllowIpRule, slot);
    }
    // The compiled table's IP-rule word also says when no subnet entry of
    // any endpoint covers the source: then no scope table is walked.
    if flags & FLAG_HAS_VNET != 0 && (!compiled || subnet_may_match(ip_word)) {
        let vlan = if flags & FLAG_HAS_VLAN_VNET != 0 {
            u32::from(vlan)
        } else {
            VLAN_UNTAGGED // no rule names a VLAN: skip the VLAN lookups
        };
        let ifindex = ctx.ingress_ifindex() as u32;
        let vnet = if compiled {
            cpt::vnet_match(set, ifindex, vlan, src)
        } else {
            vnet_rule_match(set, ifindex, vlan, src)
        };
        if let Some(slot) = live(vnet) {
            return (Verdict::AllowVnetRule, slot);
        }
    }
    (deny(flags, Verdict::DenyNoMatch), NO_SLOT)
}

/// Steps 5–7 for an IPv6 frame: the same order as IPv4 (trusted services
/// with the bypass, IP rules, virtual network rules), each by longest
/// prefix of the 128-bit source; a source no rule matches gets the
/// policy's `ipv6` setting (`pass_ipv6` or `deny_ipv6`), so a policy
/// without IPv6 rules keeps its meaning. `default_action = "Allow"` does
/// not admit IPv6 by itself: that is `ipv6 = "Allow"`'s job.
#[inline(always)]
fn decide_ipv6(
    ctx: &XdpContext,
    set: u32,
    flags: u32,
    vlan: u16,
    transport: &Transport,
) -> (Verdict, u32) {
    let Some(src) = read_bytes::<16>(ctx, transport.l3 + IPV6_SRC_OFFSET) else {
        // The parser read the whole fixed header: cannot happen.
        return (deny(flags, Verdict::DenyMalformed), NO_SLOT);
    };
    if flags & FLAG_BYPASS_TRUSTED != 0 {
        if let Some(slot) = live(trusted6_match(set, src)) {
            return (Verdict::AllowTrustedService, slot);
        }
    }
    if let Some(slot) = live(ip6_rule_match(set, src)) {
        return (Verdict::AllowIpRule, slot);
    }
    if flags & FLAG_HAS_VNET != 0 {
        let vlan = if flags & FLAG_HAS_VLAN_VNET != 0 {
            u32::from(vlan)
        } else {
            VLAN_UNTAGGED
        };
        if let Some(slot) = live(vnet6_rule_match(
            set,
            ctx.ingress_ifindex() as u32,
            vlan,
            src,
        )) {
            return (Verdict::AllowVnetRule, slot);
        }
    }
    let verdict = if flags & FLAG_IPV6_ALLOW != 0 {
        Verdict::PassIpv6
    } else {
        deny(flags, Verdict::DenyIpv6)
    };
    (verdict, NO_SLOT)
}

/// Longest-prefix match of the IPv6 source (network byte order) against
/// table set `set`'s IPv6 IP rules.
#[inline(always)]
fn ip6_rule_match(set: u32, src: [u8; 16]) -> Option<RuleValue> {
    let key = Key::new(128, src);
    let hit = if set == 0 {
        VFW_IP6_RULES_0.get(&key)
    } else {
        VFW_IP6_RULES_1.get(&key)
    };
    hit.copied()
}

/// Longest-prefix match of the IPv6 source against table set `set`'s
/// trusted-service IPv6 prefixes.
#[inline(always)]
fn trusted6_match(set: u32, src: [u8; 16]) -> Option<RuleValue> {
    let key = Key::new(128, src);
    let hit = if set == 0 {
        VFW_TRUSTED6_0.get(&key)
    } else {
        VFW_TRUSTED6_1.get(&key)
    };
    hit.copied()
}

/// [`vnet_rule_match`] for an IPv6 source: the same three endpoint
/// lookups in the IPv6 subnet trie.
#[inline(always)]
fn vnet6_rule_match(set: u32, ifindex: u32, vlan: u32, src: [u8; 16]) -> Option<RuleValue> {
    let prefix_len = VNET_ENDPOINT_BITS + 128;
    let lookup = |key: Vnet6Key| {
        let key = Key::new(prefix_len, key);
        if set == 0 {
            VFW_VNET6_RULES_0.get(&key).copied()
        } else {
            VFW_VNET6_RULES_1.get(&key).copied()
        }
    };
    if let Some(slot) = lookup(Vnet6Key::new(ifindex, VLAN_ANY, src)) {
        return Some(slot);
    }
    if vlan == VLAN_UNTAGGED {
        return None;
    }
    lookup(Vnet6Key::new(ifindex, vlan, src))
        .or_else(|| lookup(Vnet6Key::new(IFINDEX_ANY, vlan, src)))
}

/// The hit slot of a table's match, or `None` when the matching entry has
/// expired: the table then does not match this frame (fails closed; a
/// shorter prefix of the same table is not consulted). The clock is read
/// only for an entry with a deadline.
#[inline(always)]
fn live(matched: Option<RuleValue>) -> Option<u32> {
    match matched {
        Some(value) if !value.expired(now) => Some(value.slot),
        _ => None,
    }
}

/// The table set that judges this frame and its settings: the set the
/// agent last flipped to, or the other one once the active set's fallback
/// deadline has passed (an apply nobody confirmed in time: the other set
/// still holds the previous generation). The clock is read only when a
/// deadline is set.
#[inline(always)]
fn serving_set(ctx: &XdpContext) -> (u32, PolicyConfig) {
    let active = match VFW_ACTIVE.get(0) {
        Some(slot) => *slot & 1,
        None => {
            // An array's slot 0 always exists: only a broken load gets here.
            error!(ctx, "VFW_ACTIVE slot 0 unreadable: serving table set 0");
            0
        }
    };
    let config = config_of(ctx, active);
    if config.fallback_due(now) {
        let previous = active ^ 1;
        return (previous, config_of(ctx, previous));
    }
    (active, config)
}

/// Table set `set`'s settings (all zero, so closed, if unreadable).
#[inline(always)]
fn config_of(ctx: &XdpContext, set: u32) -> PolicyConfig {
    match VFW_CONFIG.get(set) {
        Some(config) => *config,
        None => {
            // Both sets' slots always exist: only a broken load gets here.
            error!(ctx, "VFW_CONFIG slot {} unreadable: judging closed", set);
            PolicyConfig::default()
        }
    }
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
/// table set `set`'s IP rules; the matching entry.
#[inline(always)]
fn ip_rule_match(set: u32, src: [u8; 4]) -> Option<RuleValue> {
    let key = Key::new(32, src);
    let hit = if set == 0 {
        VFW_IP_RULES_0.get(&key)
    } else {
        VFW_IP_RULES_1.get(&key)
    };
    hit.copied()
}

/// Longest-prefix match of the source against table set `set`'s
/// trusted-service prefixes; the matching entry.
#[inline(always)]
fn trusted_match(set: u32, src: [u8; 4]) -> Option<RuleValue> {
    let key = Key::new(32, src);
    let hit = if set == 0 {
        VFW_TRUSTED_0.get(&key)
    } else {
        VFW_TRUSTED_1.get(&key)
    };
    hit.copied()
}

/// The entry of a virtual network rule of table set `set` covering `src`
/// arriving through this endpoint: the first found of a rule bound to the
/// interface (any VLAN), to the interface and the frame's VLAN, or to the
/// frame's VLAN on any interface. That first entry is the table's match,
/// expired or not.
#[inline(always)]
fn vnet_rule_match(set: u32, ifindex: u32, vlan: u32, src: [u8; 4]) -> Option<RuleValue> {
    let prefix_len = VNET_ENDPOINT_BITS + 32;
    let lookup = |key: VnetKey| {
        let key = Key::new(prefix_len, key);
        if set == 0 {
            VFW_VNET_RULES_0.get(&key).copied()
        } else {
            VFW_VNET_RULES_1.get(&key).copied()
        }
    };
    if let Some(slot) = lookup(VnetKey::new(ifindex, VLAN_ANY, src)) {
        return Some(slot);
    }
    if vlan == VLAN_UNTAGGED {
        return None;
    }
    lookup(VnetKey::new(ifindex, vlan, src))
        .or_else(|| lookup(VnetKey::new(IFINDEX_ANY, vlan, src)))
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
