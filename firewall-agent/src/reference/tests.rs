//! The model on crafted frames, without a kernel: key byte order, prefix
//! edges, the traffic that keeps flowing under default Deny, default Allow
//! and the trusted bypass, and the parser's edges.

use std::collections::BTreeMap;

use firewall_common::{
    FLAG_AUDIT, FLAG_BYPASS_TRUSTED, FLAG_DEFAULT_ALLOW, FLAG_IPV6_ALLOW, FLAG_VALID, IFINDEX_ANY,
    PORT_PROTO_TCP, PORT_PROTO_UDP, VLAN_ANY,
    Verdict::{self, *},
    port_slot,
};

use super::*;
use crate::compile::{PrefixKey, RuleKind, VnetPrefixKey};

const LO: u32 = 1;
const ETH1: u32 = 7;
/// The CLOCK_MONOTONIC time the frames are judged at.
const NOW: u64 = 5_000_000_000;

fn key(octets: [u8; 4], prefix_len: u32) -> PrefixKey {
    PrefixKey { prefix_len, octets }
}

/// Deny, TCP 443, the given ip rules.
fn tables(ip_rules: &[([u8; 4], u32)]) -> CompiledTables {
    let mut t = CompiledTables::empty();
    t.flags = FLAG_VALID;
    guard(&mut t, PORT_PROTO_TCP, 443);
    t.ip_rules = ip_rules
        .iter()
        .enumerate()
        .map(|(i, (o, l))| (key(*o, *l), RuleValue::new(i as u32)))
        .collect();
    t
}

fn guard(t: &mut CompiledTables, proto: u32, port: u16) {
    let (word, bit) = port_slot(0, proto, port);
    t.port_words[word as usize] |= bit;
}

fn eth(tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0xc];
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 with `options` bytes of options, protocol `proto`, `l4` after it.
fn ipv4(src: [u8; 4], proto: u8, options: usize, frag: u16, l4: &[u8]) -> Vec<u8> {
    let ihl = 5 + options / 4;
    let total = ihl * 4 + l4.len();
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&(total as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[192, 0, 2, 1]);
    h.extend(std::iter::repeat_n(1u8, options));
    h.extend_from_slice(l4);
    h
}

fn tcp(dport: u16) -> Vec<u8> {
    let mut t = 40000u16.to_be_bytes().to_vec();
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
    t
}

fn udp(dport: u16) -> Vec<u8> {
    let mut u = 40000u16.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&[0, 16, 0, 0]);
    u.extend_from_slice(&[0; 8]);
    u
}

fn syn(src: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = eth(&[], 0x0800);
    f.extend(ipv4(src, 6, 0, 0x4000, &tcp(dport)));
    f
}

/// IPv6 with the extension headers `ext` (raw bytes, chained by the
/// caller) after a fixed header whose next header is `first`.
fn ipv6(first: u8, rest: &[u8]) -> Vec<u8> {
    let mut f = eth(&[], 0x86DD);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    f.extend_from_slice(&[first, 64]);
    f.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    f.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(rest);
    f
}

fn verdict(frame: &[u8], t: &CompiledTables) -> Verdict {
    judge(frame, LO, t, NOW).verdict
}

#[test]
fn the_reversed_twin_of_an_allowed_address_is_denied() {
    let mut t = tables(&[([203, 0, 113, 10], 32)]);
    t.vnet_rules = BTreeMap::from([(
        VnetPrefixKey {
            ifindex: LO,
            vlan: VLAN_ANY,
            prefix: key([10, 20, 0, 0], 16),
        },
        RuleValue::new(0),
    )]);
    assert_eq!(verdict(&syn([203, 0, 113, 10], 443), &t), AllowIpRule);
    assert_eq!(verdict(&syn([10, 113, 0, 203], 443), &t), DenyNoMatch);
    assert_eq!(verdict(&syn([10, 20, 30, 40], 443), &t), AllowVnetRule);
    assert_eq!(verdict(&syn([10, 21, 0, 1], 443), &t), DenyNoMatch);
}

#[test]
fn traffic_that_keeps_flowing_under_default_deny() {
    let t = tables(&[]);
    let mut arp = eth(&[], 0x0806);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0; 20]);
    assert_eq!(verdict(&arp, &t), PassNonIp);
    let ns = ipv6(58, &[135, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(verdict(&ns, &t), PassControlPlane);
    assert_eq!(verdict(&syn([198, 51, 100, 7], 22), &t), PassControlPlane);
    let mut icmp = eth(&[], 0x0800);
    icmp.extend(ipv4([198, 51, 100, 7], 1, 0, 0, &[8, 0, 0, 0, 0, 1, 0, 1]));
    assert_eq!(verdict(&icmp, &t), PassControlPlane);
    // A reply from port 443: only the destination port is guarded.
    let mut reply = eth(&[], 0x0800);
    let mut segment = tcp(51000);
    segment[0..2].copy_from_slice(&443u16.to_be_bytes());
    reply.extend(ipv4([198, 51, 100, 7], 6, 0, 0, &segment));
    assert_eq!(verdict(&reply, &t), PassControlPlane);
    let mut u = eth(&[], 0x0800);
    u.extend(ipv4([198, 51, 100, 7], 17, 0, 0, &udp(443)));
    assert_eq!(verdict(&u, &t), PassControlPlane);
    assert_eq!(verdict(&syn([198, 51, 100, 7], 443), &t), DenyNoMatch);
}

#[test]
fn default_allow_and_the_trusted_bypass() {
    let mut allow = tables(&[([203, 0, 113, 0], 24)]);
    allow.flags |= FLAG_DEFAULT_ALLOW;
    assert_eq!(verdict(&syn([198, 51, 100, 7], 443), &allow), AllowDefault);

    let mut bypass = tables(&[]);
    bypass.flags |= FLAG_BYPASS_TRUSTED;
    bypass.trusted = BTreeMap::from([(key([192, 0, 2, 128], 29), RuleValue::new(4))]);
    let j = judge(&syn([192, 0, 2, 130], 443), LO, &bypass, NOW);
    assert_eq!(j.verdict, AllowTrustedService);
    let m = j.matched.expect("a trusted prefix matched");
    assert_eq!(
        (m.kind, m.id, m.prefix.to_string()),
        (RuleKind::Trusted, 4, "192.0.2.128/29".to_owned())
    );
    assert_eq!(verdict(&syn([192, 0, 2, 140], 443), &bypass), DenyNoMatch);

    let mut no_bypass = bypass.clone();
    no_bypass.flags &= !FLAG_BYPASS_TRUSTED;
    assert_eq!(
        verdict(&syn([192, 0, 2, 130], 443), &no_bypass),
        DenyNoMatch
    );
}

#[test]
fn trusted_comes_before_ip_rules_and_ip_rules_before_subnets() {
    let mut t = tables(&[([203, 0, 113, 0], 24)]);
    t.flags |= FLAG_BYPASS_TRUSTED;
    t.trusted = BTreeMap::from([(key([203, 0, 113, 0], 25), RuleValue::new(0))]);
    t.vnet_rules = BTreeMap::from([(
        VnetPrefixKey {
            ifindex: LO,
            vlan: VLAN_ANY,
            prefix: key([203, 0, 0, 0], 16),
        },
        RuleValue::new(0),
    )]);
    assert_eq!(
        verdict(&syn([203, 0, 113, 5], 443), &t),
        AllowTrustedService
    );
    assert_eq!(verdict(&syn([203, 0, 113, 200], 443), &t), AllowIpRule);
    assert_eq!(verdict(&syn([203, 0, 9, 9], 443), &t), AllowVnetRule);
}

#[test]
fn subnet_rules_match_only_through_their_endpoint() {
    let mut t = tables(&[]);
    let entry = |ifindex, vlan, octets, id| {
        (
            VnetPrefixKey {
                ifindex,
                vlan,
                prefix: key(octets, 16),
            },
            RuleValue::new(id),
        )
    };
    t.vnet_rules = BTreeMap::from([
        entry(ETH1, VLAN_ANY, [10, 1, 0, 0], 0),
        entry(IFINDEX_ANY, 120, [10, 2, 0, 0], 1),
        entry(ETH1, 7, [10, 3, 0, 0], 2),
    ]);
    let tagged = |src, vid: u16| {
        let mut f = eth(&[(0x8100, vid)], 0x0800);
        f.extend(ipv4(src, 6, 0, 0, &tcp(443)));
        f
    };
    let at = |frame: &[u8], ifindex| judge(frame, ifindex, &t, NOW).verdict;
    // Interface-bound: any VLAN on eth1, nothing on another interface.
    assert_eq!(at(&syn([10, 1, 0, 1], 443), ETH1), AllowVnetRule);
    assert_eq!(at(&tagged([10, 1, 0, 1], 99), ETH1), AllowVnetRule);
    assert_eq!(at(&syn([10, 1, 0, 1], 443), LO), DenyNoMatch);
    // VLAN-bound: VLAN 120 on any interface, never untagged.
    assert_eq!(at(&tagged([10, 2, 0, 1], 120), LO), AllowVnetRule);
    assert_eq!(at(&tagged([10, 2, 0, 1], 121), LO), DenyNoMatch);
    assert_eq!(at(&syn([10, 2, 0, 1], 443), LO), DenyNoMatch);
    // Both: VLAN 7 on eth1 only.
    assert_eq!(at(&tagged([10, 3, 0, 1], 7), ETH1), AllowVnetRule);
    assert_eq!(at(&tagged([10, 3, 0, 1], 7), LO), DenyNoMatch);
    assert_eq!(at(&syn([10, 3, 0, 1], 443), ETH1), DenyNoMatch);
    // The outer tag of a stack is the one that counts.
    let mut stacked = eth(&[(0x88A8, 120), (0x8100, 5)], 0x0800);
    stacked.extend(ipv4([10, 2, 0, 1], 6, 0, 0, &tcp(443)));
    assert_eq!(at(&stacked, LO), AllowVnetRule);
}

#[test]
fn vlan_stacks_deeper_than_two_are_malformed_even_to_control_ports() {
    let t = tables(&[([203, 0, 113, 0], 24)]);
    for depth in 0..=3usize {
        let tags: Vec<(u16, u16)> = (0..depth).map(|i| (0x8100, 10 + i as u16)).collect();
        let mut f = eth(&tags, 0x0800);
        f.extend(ipv4([203, 0, 113, 5], 6, 0, 0, &tcp(22)));
        let expected = if depth > firewall_common::MAX_VLAN_TAGS {
            DenyMalformed
        } else {
            PassControlPlane
        };
        assert_eq!(verdict(&f, &t), expected, "{depth} tags");
    }
    // A tag cut off by the end of the frame.
    let f = eth(&[], 0x8100);
    assert_eq!(verdict(&f, &t), DenyMalformed);
}

#[test]
fn ipv4_header_checks() {
    let t = tables(&[([203, 0, 113, 0], 24)]);
    let good = syn([203, 0, 113, 5], 443);
    assert_eq!(verdict(&good, &t), AllowIpRule);
    let bent = |at: usize, value: u8| {
        let mut f = good.clone();
        f[at] = value;
        verdict(&f, &t)
    };
    for ihl in 0..5 {
        assert_eq!(bent(14, 0x40 | ihl), DenyMalformed);
    }
    assert_eq!(bent(14, 0x65), DenyMalformed);
    assert_eq!(bent(14, 0x4F), DenyMalformed);
    assert_eq!(bent(17, 19), DenyMalformed); // total length 19
    assert_eq!(bent(16, 5), DenyMalformed); // total length 1320
    for words in 1..=10 {
        let mut f = eth(&[], 0x0800);
        f.extend(ipv4([203, 0, 113, 5], 6, words * 4, 0, &tcp(443)));
        let j = judge(&f, LO, &t, NOW);
        assert_eq!(j.verdict, AllowIpRule);
        assert!(j.explanation[0].starts_with(&format!("IPv4 IHL {} (options", 5 + words)));
    }
    // Ethernet padding after the packet is not read as part of it.
    let mut padded = syn([203, 0, 113, 5], 443);
    padded.extend_from_slice(&[0xAA; 6]);
    assert_eq!(verdict(&padded, &t), AllowIpRule);
}

#[test]
fn every_truncation_of_a_data_plane_syn_is_malformed() {
    let t = tables(&[([203, 0, 113, 0], 24)]);
    let f = syn([203, 0, 113, 5], 443);
    for len in 0..f.len() {
        assert_eq!(verdict(&f[..len], &t), DenyMalformed, "cut to {len} bytes");
    }
}

#[test]
fn a_cut_transport_header_is_malformed_only_on_the_data_plane() {
    let t = tables(&[([203, 0, 113, 0], 24)]);
    for (dport, expected) in [(443, DenyMalformed), (22, PassControlPlane)] {
        let mut f = eth(&[], 0x0800);
        f.extend(ipv4([203, 0, 113, 5], 6, 0, 0, &tcp(dport)[..12]));
        assert_eq!(verdict(&f, &t), expected, "dport {dport}");
    }
    // Ports themselves cut off: malformed whatever the port.
    let mut f = eth(&[], 0x0800);
    f.extend(ipv4([203, 0, 113, 5], 6, 0, 0, &tcp(22)[..3]));
    assert_eq!(verdict(&f, &t), DenyMalformed);
}

#[test]
fn fragments_first_judged_with_ports_later_ones_pass() {
    let mut t = tables(&[([203, 0, 113, 0], 24)]);
    guard(&mut t, PORT_PROTO_UDP, 4433);
    let frag = |src, offset_units: u16, more: bool| {
        let mut f = eth(&[], 0x0800);
        let flags = offset_units | if more { 0x2000 } else { 0 };
        f.extend(ipv4(src, 17, 0, flags, &udp(4433)));
        verdict(&f, &t)
    };
    assert_eq!(frag([198, 51, 100, 7], 0, true), DenyNoMatch);
    assert_eq!(frag([203, 0, 113, 5], 0, true), AllowIpRule);
    assert_eq!(frag([198, 51, 100, 7], 1, true), PassFragment);
    assert_eq!(frag([198, 51, 100, 7], 185, false), PassFragment);
}

#[test]
fn ipv6_follows_the_ipv6_setting_through_extension_headers() {
    let mut t = tables(&[]);
    let chain = |count: usize, dport: u16| {
        let mut rest = Vec::new();
        for i in 0..count {
            let next = if i + 1 == count { 6 } else { 60 };
            rest.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
        rest.extend(tcp(dport));
        ipv6(if count == 0 { 6 } else { 60 }, &rest)
    };
    assert_eq!(verdict(&chain(0, 443), &t), DenyIpv6);
    assert_eq!(verdict(&chain(3, 443), &t), DenyIpv6);
    assert_eq!(verdict(&chain(3, 22), &t), PassControlPlane);
    let max = firewall_common::MAX_IPV6_EXT_HEADERS;
    assert_eq!(verdict(&chain(max, 22), &t), PassControlPlane);
    assert_eq!(verdict(&chain(max + 1, 22), &t), DenyMalformed);
    t.flags |= FLAG_IPV6_ALLOW;
    assert_eq!(verdict(&chain(2, 443), &t), PassIpv6);
    t.flags = FLAG_VALID | FLAG_AUDIT;
    assert_eq!(verdict(&chain(0, 443), &t), AuditWouldDeny);
}

#[test]
fn ipv6_fragments_and_chains_past_the_payload() {
    let t = tables(&[]);
    // Non-first fragment: passes whatever follows.
    let later = ipv6(44, &[6, 0, 0, 8 << 3, 0, 0, 0, 1]);
    assert_eq!(verdict(&later, &t), PassFragment);
    // First fragment: judged with its ports.
    let mut first = vec![6, 0, 0, 1, 0, 0, 0, 1];
    first.extend(tcp(443));
    assert_eq!(verdict(&ipv6(44, &first), &t), DenyIpv6);
    // A hop-by-hop header that claims more than the payload holds.
    let mut cut = ipv6(0, &[58, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(verdict(&cut, &t), DenyMalformed);
    // ...and one that lies past the payload, in the frame's padding.
    cut = ipv6(0, &[]);
    cut.extend_from_slice(&[58, 0, 0, 0, 0, 0, 0, 0]);
    let j = judge(&cut, LO, &t, NOW);
    assert_eq!(
        j.malformed,
        Some(Malformed::Ipv6ExtensionBeyondPayload { header: 0 })
    );
    // A chain deeper than the offset bound.
    let mut deep = Vec::new();
    deep.extend_from_slice(&[60, 255]); // (255 + 1) * 8 = 2048 bytes
    deep.resize(2048, 0);
    deep.extend(tcp(22));
    assert_eq!(
        judge(&ipv6(0, &deep), LO, &t, NOW).malformed,
        Some(Malformed::Ipv6ChainTooDeep { offset: 2088 })
    );
}

#[test]
fn an_unwritten_table_set_denies_the_data_plane_without_rules() {
    let mut t = tables(&[([203, 0, 113, 0], 24)]);
    t.flags = FLAG_DEFAULT_ALLOW; // FLAG_VALID clear: ignored.
    assert_eq!(verdict(&syn([203, 0, 113, 5], 443), &t), DenyNoMatch);
    assert_eq!(verdict(&syn([203, 0, 113, 5], 22), &t), PassControlPlane);
}

#[test]
fn the_explanation_names_each_step() {
    let t = tables(&[([203, 0, 113, 0], 24)]);
    let mut f = eth(&[(0x8100, 120)], 0x0800);
    f.extend(ipv4([203, 0, 113, 5], 6, 4, 0, &tcp(443)));
    let j = judge(&f, LO, &t, NOW);
    let text = j.explanation.join("\n");
    for step in [
        "802.1Q tag VLAN 120",
        "IPv4 IHL 6 (options, 4 bytes)",
        "TCP dport 443 is data plane",
        "source 203.0.113.5 in ip_rules 203.0.113.0/24",
        "verdict allow_ip_rule (XDP_PASS)",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
}

#[test]
fn an_expired_longest_match_stops_its_table_but_not_the_later_ones() {
    let mut t = tables(&[([203, 0, 113, 0], 24)]);
    // 203.0.113.0/28 is the longest match for .5 and has expired: the /24
    // of the same table is not consulted; the subnet table still is.
    t.ip_rules
        .insert(key([203, 0, 113, 0], 28), RuleValue::expiring(1, NOW));
    assert_eq!(verdict(&syn([203, 0, 113, 5], 443), &t), DenyNoMatch);
    assert_eq!(verdict(&syn([203, 0, 113, 200], 443), &t), AllowIpRule);
    t.vnet_rules.insert(
        VnetPrefixKey {
            ifindex: LO,
            vlan: VLAN_ANY,
            prefix: key([203, 0, 113, 0], 29),
        },
        RuleValue::new(7),
    );
    let j = judge(&syn([203, 0, 113, 5], 443), LO, &t, NOW);
    assert_eq!(
        (j.verdict, j.matched.map(|m| m.id)),
        (AllowVnetRule, Some(7))
    );
    assert!(
        j.explanation.iter().any(|s| s.contains("expired")),
        "{:?}",
        j.explanation
    );
    // A moment earlier the rule still admitted.
    assert_eq!(
        judge(&syn([203, 0, 113, 5], 443), LO, &t, NOW - 1).verdict,
        AllowIpRule
    );
}

#[test]
fn an_expired_subnet_entry_stops_the_subnet_table_for_the_other_endpoints_too() {
    let mut t = tables(&[]);
    let entry = |ifindex, vlan, value| {
        (
            VnetPrefixKey {
                ifindex,
                vlan,
                prefix: key([10, 1, 0, 0], 16),
            },
            value,
        )
    };
    t.vnet_rules = BTreeMap::from([
        entry(ETH1, VLAN_ANY, RuleValue::expiring(0, 1)),
        entry(IFINDEX_ANY, 120, RuleValue::new(1)),
    ]);
    let mut tagged = eth(&[(0x8100, 120)], 0x0800);
    tagged.extend(ipv4([10, 1, 0, 1], 6, 0, 0, &tcp(443)));
    assert_eq!(judge(&tagged, ETH1, &t, NOW).verdict, DenyNoMatch);
    assert_eq!(judge(&tagged, LO, &t, NOW).verdict, AllowVnetRule);
}
