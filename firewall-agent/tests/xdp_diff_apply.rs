//! Applies write into the spare set only what differs from what that set
//! holds (the generation before the active one): after many applies of
//! overlapping policies, the kernel's active set holds exactly the last
//! generation — read back entry by entry, and judged on frames from
//! representative sources through BPF_PROG_TEST_RUN.

mod support;

use std::collections::BTreeSet;

use ipnet::Ipv4Net;
use support::*;

/// Nested and neighbouring prefixes: a /16, /24s inside it, a /25, /32s,
/// and unrelated ones.
const POOL: [&str; 16] = [
    "203.0.0.0/16",
    "203.0.113.0/24",
    "203.0.113.128/25",
    "203.0.113.7/32",
    "203.0.113.200/32",
    "203.0.114.0/24",
    "198.51.100.0/24",
    "198.51.100.1/32",
    "192.0.2.0/25",
    "192.0.2.129/32",
    "100.0.0.0/10",
    "8.8.8.8/32",
    "1.0.0.0/8",
    "1.2.3.0/24",
    "128.0.0.0/3",
    "150.1.0.0/16",
];

fn policy(rules: &BTreeSet<Ipv4Net>) -> String {
    let listed: Vec<String> = rules.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "default_action = \"Deny\"\nbypass = \"None\"\nip_rules = [{}]\n",
        listed.join(", ")
    )
}

/// Sources inside and around every pool prefix.
fn sources() -> Vec<[u8; 4]> {
    let mut out = Vec::new();
    for p in POOL {
        let net: Ipv4Net = p.parse().expect("pool prefix");
        let (first, last) = (u32::from(net.network()), u32::from(net.broadcast()));
        for addr in [first, last, first.wrapping_sub(1), last.wrapping_add(1)] {
            out.push(addr.to_be_bytes());
        }
    }
    out
}

#[test]
fn diff_writes_leave_exactly_each_new_generation_in_the_kernel() {
    if !require_root() {
        return;
    }
    let pool: Vec<Ipv4Net> = POOL.iter().map(|p| p.parse().expect("prefix")).collect();
    let mut rules: BTreeSet<Ipv4Net> = pool[..4].iter().copied().collect();
    let mut p = Program::with_policy(&policy(&rules));
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..60 {
        // Toggle one to four pool prefixes: the two sets drift apart and
        // back together.
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        for k in 0..=(state >> 62) {
            let net = pool[((state >> (8 * k + 8)) % pool.len() as u64) as usize];
            if !rules.remove(&net) {
                rules.insert(net);
            }
        }
        let report = p.apply(&policy(&rules));
        let held: BTreeSet<Ipv4Net> = p
            .dataplane
            .active_ip_rules()
            .expect("read the active set back")
            .into_keys()
            .collect();
        assert_eq!(held, rules, "round {round}: the active set's entries");
        for src in sources() {
            let addr = std::net::Ipv4Addr::from(src);
            let allowed = rules.iter().any(|n| n.contains(&addr));
            // The action alone: `judge` also reads every verdict counter
            // twice, which made this test slow under emulation.
            let action = p.dataplane.test_run(&tcp_syn(src, 443)).expect("test run");
            let want = if allowed { XDP_PASS } else { XDP_DROP };
            assert_eq!(
                action, want,
                "round {round}: a SYN from {addr} ({report:?})"
            );
        }
    }
}

#[test]
fn a_one_rule_change_writes_only_that_rule_into_the_spare_set() {
    if !require_root() {
        return;
    }
    let base: BTreeSet<Ipv4Net> = POOL[..10]
        .iter()
        .map(|p| p.parse().expect("prefix"))
        .collect();
    let mut p = Program::with_policy(&policy(&base));
    let mut next = base.clone();
    next.insert("8.8.4.4/32".parse().expect("prefix"));
    // The spare set is empty: every rule is written.
    p.apply(&policy(&next));
    next.insert("9.9.9.9/32".parse().expect("prefix"));
    // The spare set holds `base`: two inserts, the set's config, the flip.
    let report = p.apply(&policy(&next));
    assert_eq!(report.map_writes, 4, "{report:?}");
    next.remove(&"203.0.113.7/32".parse().expect("prefix"));
    // The spare set holds base + 8.8.4.4: one insert (9.9.9.9), one
    // removal (203.0.113.7), the config, the flip.
    let report = p.apply(&policy(&next));
    assert_eq!(report.map_writes, 4, "{report:?}");
    let held: BTreeSet<Ipv4Net> = p
        .dataplane
        .active_ip_rules()
        .expect("read back")
        .into_keys()
        .collect();
    assert_eq!(held, next);
    p.expect(
        &tcp_syn([9, 9, 9, 9], 443),
        XDP_PASS,
        firewall_common::Verdict::AllowIpRule,
    );
    p.expect(
        &tcp_syn([203, 0, 113, 7], 443),
        XDP_PASS,
        firewall_common::Verdict::AllowIpRule,
    );
}
