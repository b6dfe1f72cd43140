//! The L3 entry point (`vaultfw_l3`, for ipip, gre, sit, wireguard and tun
//! devices, whose frames start at the IP header) judged on raw IPv4 and
//! IPv6 packets through BPF_PROG_TEST_RUN (root, no network namespace): it
//! reaches the same verdict as the Ethernet entry on the same packet,
//! picks the IP version from the first nibble, treats every packet as
//! untagged, and shares the Ethernet entry's maps and counters.

mod support;

use firewall_common::Verdict::{self, *};
use support::*;
use vaultfw::dataplane::AttachKind::{L2, L3};

const POLICY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
udp_ports = [4433]
"#;

const DENIED: [u8; 4] = [198, 51, 100, 7];
const ALLOWED: [u8; 4] = [203, 0, 113, 5];

/// Untagged Ethernet frames covering every verdict the Ethernet entry
/// reaches on IP, each with the verdict it must get.
fn cases() -> Vec<(&'static str, Vec<u8>, u32, Verdict)> {
    let mut bad_ihl = tcp_syn(ALLOWED, 443);
    bad_ihl[14] = 0x44;
    let mut long_total = tcp_syn(ALLOWED, 443);
    long_total[16..18].copy_from_slice(&1500u16.to_be_bytes());
    vec![
        ("allowed SYN", tcp_syn(ALLOWED, 443), XDP_PASS, AllowIpRule),
        ("denied SYN", tcp_syn(DENIED, 443), XDP_DROP, DenyNoMatch),
        (
            "denied SYN to SSH",
            tcp_syn(DENIED, 22),
            XDP_PASS,
            PassControlPlane,
        ),
        (
            "reply from 443",
            tcp_ack(DENIED, 443, 51000),
            XDP_PASS,
            PassControlPlane,
        ),
        ("ICMP echo", icmp_echo(DENIED), XDP_PASS, PassControlPlane),
        ("denied UDP", udp(DENIED, 4433), XDP_DROP, DenyNoMatch),
        ("allowed UDP", udp(ALLOWED, 4433), XDP_PASS, AllowIpRule),
        (
            "IPv4 options",
            tcp_syn_with_options(DENIED, 443, &[1u8; 40]),
            XDP_DROP,
            DenyNoMatch,
        ),
        (
            "IPv4 options, allowed",
            tcp_syn_with_options(ALLOWED, 443, &[1u8; 12]),
            XDP_PASS,
            AllowIpRule,
        ),
        (
            "first fragment",
            udp_fragment(DENIED, 4433, 0, true),
            XDP_DROP,
            DenyNoMatch,
        ),
        (
            "later fragment",
            udp_fragment(DENIED, 4433, 185, false),
            XDP_PASS,
            PassFragment,
        ),
        ("IHL below 5", bad_ihl, XDP_DROP, DenyMalformed),
        (
            "total length past the end",
            long_total,
            XDP_DROP,
            DenyMalformed,
        ),
        ("IPv6 SYN", ipv6_tcp_syn(443), XDP_DROP, DenyIpv6),
        ("IPv6 SSH", ipv6_tcp_syn(22), XDP_PASS, PassControlPlane),
        (
            "IPv6 behind 3 extension headers",
            ipv6_tcp_syn_behind_ext_headers(443, 3),
            XDP_DROP,
            DenyIpv6,
        ),
        (
            "IPv6 chain longer than the walk",
            ipv6_tcp_syn_behind_ext_headers(22, firewall_common::MAX_IPV6_EXT_HEADERS + 1),
            XDP_DROP,
            DenyMalformed,
        ),
        (
            "IPv6 neighbour solicitation",
            ipv6_neighbor_solicitation(),
            XDP_PASS,
            PassControlPlane,
        ),
    ]
}

#[test]
fn the_l3_entry_judges_a_raw_ip_packet_as_the_ethernet_entry_judges_its_frame() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy(POLICY);
    for (what, frame, action, verdict) in cases() {
        let l2 = p.judge_with(L2, &frame);
        let l3 = p.judge_with(L3, &ip_packet(&frame));
        assert_eq!(l2, (action, verdict), "{what}: Ethernet entry");
        assert_eq!(
            l3,
            (action, verdict),
            "{what}: L3 entry on {}",
            hex(&ip_packet(&frame))
        );
    }
}

#[test]
fn the_l3_entry_follows_the_ipv6_setting_and_default_allow_like_the_ethernet_entry() {
    if !require_root() {
        return;
    }
    let allow6 = Program::with_policy(&format!("ipv6 = \"Allow\"\n{POLICY}"));
    allow6.expect_with(L3, &ip_packet(&ipv6_tcp_syn(443)), XDP_PASS, PassIpv6);
    let open = Program::with_policy("default_action = \"Allow\"\n");
    open.expect_with(
        L3,
        &ip_packet(&tcp_syn(DENIED, 443)),
        XDP_PASS,
        AllowDefault,
    );
    let audit = Program::with_policy(&format!("mode = \"Audit\"\n{POLICY}"));
    audit.expect_with(
        L3,
        &ip_packet(&tcp_syn(DENIED, 443)),
        XDP_PASS,
        AuditWouldDeny,
    );
}

#[test]
fn every_truncation_of_a_raw_ipv4_syn_is_malformed() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy(POLICY);
    let packet = ip_packet(&tcp_syn(ALLOWED, 443));
    // BPF_PROG_TEST_RUN refuses data shorter than an Ethernet header
    // (EINVAL); an L3 device delivers at least an IP header anyway.
    for len in 14..packet.len() {
        assert_eq!(
            p.judge_with(L3, &packet[..len]),
            (XDP_DROP, DenyMalformed),
            "a raw SYN cut to {len} bytes must be malformed"
        );
    }
    p.expect_with(L3, &packet, XDP_PASS, AllowIpRule);
}

#[test]
fn the_version_nibble_picks_the_parser_and_anything_else_is_not_ip() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy(POLICY);
    let v4 = ip_packet(&tcp_syn(DENIED, 443));
    // An IPv4 header read as IPv6 (or the reverse) would not be malformed
    // here: the nibble decides, not a guess.
    p.expect_with(L3, &v4, XDP_DROP, DenyNoMatch);
    p.expect_with(L3, &ip_packet(&ipv6_tcp_syn(443)), XDP_DROP, DenyIpv6);
    for version in [0u8, 1, 5, 7, 15] {
        let mut other = v4.clone();
        other[0] = (version << 4) | 5;
        // The kernel's IPv4 and IPv6 receive paths drop such a packet: it
        // cannot reach the data plane.
        p.expect_with(L3, &other, XDP_PASS, PassNonIp);
    }
}

#[test]
fn l3_packets_are_untagged_for_subnet_rules_and_match_their_interface() {
    if !require_root() {
        return;
    }
    // BPF_PROG_TEST_RUN runs on the loopback's ingress (ifindex 1).
    let subnet = [10, 1, 2, 3];
    let mut p = Program::with_policy(POLICY);
    p.interfaces.insert("lo".to_owned(), 1);
    let vnet = |endpoint: &str| {
        format!(
            "{POLICY}\n[[virtual_network_rules]]\nid = \"vnet/subnets/app\"\naddress_prefixes = [\"10.1.2.0/24\"]\nendpoint = {endpoint}\n"
        )
    };
    p.apply(&vnet("{ interface = \"lo\" }"));
    p.expect_with(
        L3,
        &ip_packet(&tcp_syn(subnet, 443)),
        XDP_PASS,
        AllowVnetRule,
    );
    p.expect_with(
        L3,
        &ip_packet(&tcp_syn([10, 1, 3, 3], 443)),
        XDP_DROP,
        DenyNoMatch,
    );
    // A rule bound to a VLAN never matches on an L3 device: no tag there.
    p.apply(&vnet("{ interface = \"lo\", vlan = 120 }"));
    p.expect_with(L3, &ip_packet(&tcp_syn(subnet, 443)), XDP_DROP, DenyNoMatch);
    p.expect_with(
        L2,
        &tcp_syn_vlan(subnet, 443, &[120]),
        XDP_PASS,
        AllowVnetRule,
    );
    p.apply(&vnet("{ vlan = 120 }"));
    p.expect_with(L3, &ip_packet(&tcp_syn(subnet, 443)), XDP_DROP, DenyNoMatch);
}

#[test]
fn both_entries_serve_the_same_generation_and_count_hits_on_the_same_rule() {
    if !require_root() {
        return;
    }
    let mut p = Program::with_policy(POLICY);
    let frame = tcp_syn(ALLOWED, 443);
    p.expect_with(L3, &ip_packet(&frame), XDP_PASS, AllowIpRule);
    p.expect_with(L2, &frame, XDP_PASS, AllowIpRule);
    let hits = p.dataplane.rule_hits().expect("read hits");
    let total: (u64, u64) = hits
        .values()
        .fold((0, 0), |a, h| (a.0 + h.packets, a.1 + h.bytes));
    // One hit each; the L3 packet counts its IP length (40), the frame its
    // Ethernet header too (54).
    assert_eq!(total, (2, 40 + 54), "{hits:?}");
    // A flip is seen by both entries at once: the same maps.
    p.apply("default_action = \"Deny\"\nbypass = \"None\"\nip_rules = [\"198.51.100.0/24\"]\n");
    p.expect_with(L3, &ip_packet(&frame), XDP_DROP, DenyNoMatch);
    p.expect_with(L2, &frame, XDP_DROP, DenyNoMatch);
    p.expect_with(L3, &ip_packet(&tcp_syn(DENIED, 443)), XDP_PASS, AllowIpRule);
}
