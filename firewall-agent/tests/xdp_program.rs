//! The XDP program judged on crafted frames through BPF_PROG_TEST_RUN (root,
//! no network namespace): key byte order, prefix edges, what keeps flowing
//! under default deny, exact per-CPU counters, the parser's edges (VLAN
//! stacks, IPv4 options, fragments, truncation, IPv6 extension headers) and
//! the double-buffered apply.

mod support;

use firewall_common::Verdict::{self, *};
use support::*;

const POLICY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]
"#;

/// A rule, sources it lets through, sources just outside it.
type EdgeCase = (&'static str, &'static [[u8; 4]], &'static [[u8; 4]]);

const DENIED: [u8; 4] = [198, 51, 100, 7];
const ALLOWED: [u8; 4] = [203, 0, 113, 5];

#[test]
fn lpm_key_byte_order_matches_the_address_not_its_reversed_twin() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy("default_action = \"Deny\"\nip_rules = [\"203.0.113.10\"]\n");
    p.expect(&tcp_syn([203, 0, 113, 10], 443), XDP_PASS, AllowIpRule);
    p.expect(&tcp_syn([10, 113, 0, 203], 443), XDP_DROP, DenyNoMatch);
    let rules: Vec<String> = p
        .dataplane
        .active_ip_rules()
        .expect("read rules back")
        .keys()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(rules, ["203.0.113.10/32"]);
}

#[test]
fn prefix_edges_at_32_29_and_23() {
    if !require_root() {
        return;
    }
    let cases: [EdgeCase; 3] = [
        (
            "203.0.113.10/32",
            &[[203, 0, 113, 10]],
            &[[203, 0, 113, 11]],
        ),
        (
            "203.0.113.8/29",
            &[[203, 0, 113, 8], [203, 0, 113, 15]],
            &[[203, 0, 113, 7], [203, 0, 113, 16]],
        ),
        (
            "198.51.100.0/23",
            &[[198, 51, 101, 255]],
            &[[198, 51, 102, 0]],
        ),
    ];
    for (rule, pass, drop) in cases {
        let p = Program::with_policy(&format!(
            "default_action = \"Deny\"\nip_rules = [\"{rule}\"]\n"
        ));
        for src in pass {
            p.expect(&tcp_syn(*src, 443), XDP_PASS, AllowIpRule);
        }
        for src in drop {
            p.expect(&tcp_syn(*src, 443), XDP_DROP, DenyNoMatch);
        }
    }
}

#[test]
fn traffic_that_must_keep_flowing_under_default_deny() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy("default_action = \"Deny\"\n");
    p.expect(&arp_request(), XDP_PASS, PassNonIp);
    p.expect(&ipv6_neighbor_solicitation(), XDP_PASS, PassControlPlane);
    p.expect(&tcp_syn(DENIED, 22), XDP_PASS, PassControlPlane);
    p.expect(&icmp_echo(DENIED), XDP_PASS, PassControlPlane);
    // A reply to the host's own HTTPS call: only the destination port counts.
    p.expect(&tcp_ack(DENIED, 443, 51000), XDP_PASS, PassControlPlane);
    p.expect(&udp(DENIED, 443), XDP_PASS, PassControlPlane);
    // ...and the guarded port itself is closed.
    p.expect(&tcp_syn(DENIED, 443), XDP_DROP, DenyNoMatch);
}

#[test]
fn counters_are_exact_across_cpus_and_survive_a_policy_change() {
    if !require_root() || !two_cpus() {
        return;
    }
    let mut p = Program::with_policy(POLICY);
    let frame = tcp_syn(DENIED, 443);
    run_on_cpus(&p, &frame, &[(0, 600), (1, 400)]);
    let count = |p: &Program, v: Verdict| p.dataplane.verdict_totals().unwrap()[v.index() as usize];
    assert_eq!(count(&p, DenyNoMatch), 1000);
    let report = p.apply("default_action = \"Deny\"\nip_rules = [\"203.0.113.0/25\"]\n");
    assert!(report.changed);
    assert_eq!(
        count(&p, DenyNoMatch),
        1000,
        "applying a policy must not reset counters"
    );
}

/// Whether the machine has the two CPUs a per-CPU test needs (says so when
/// not).
fn two_cpus() -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipping: counters on two CPUs need two CPUs, this machine has {cpus}");
    }
    cpus >= 2
}

/// Runs `frame` on each `(cpu, times)`, from a thread pinned to that CPU.
fn run_on_cpus(p: &Program, frame: &[u8], runs: &[(usize, usize)]) {
    std::thread::scope(|s| {
        for &(cpu, times) in runs {
            let dataplane = &p.dataplane;
            s.spawn(move || {
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu).expect("cpu index");
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                    .expect("pin the thread to one CPU");
                for _ in 0..times {
                    dataplane.test_run(frame).expect("test run");
                }
            });
        }
    });
}

#[test]
fn a_hit_slot_handed_to_another_rule_starts_from_zero_on_every_cpu() {
    if !require_root() || !two_cpus() {
        return;
    }
    // Two slots: the rule added must take the one the removed rule freed.
    let limits =
        "default_action = \"Deny\"\nlimits = { ip_rules = 2, virtual_network_rules = 1 }\n";
    let mut p = Program::with_policy(&format!(
        "{limits}ip_rules = [\"203.0.113.0/24\", \"198.51.100.0/24\"]\n"
    ));
    run_on_cpus(&p, &tcp_syn(ALLOWED, 443), &[(0, 30), (1, 30)]);
    run_on_cpus(&p, &tcp_syn(DENIED, 443), &[(0, 20), (1, 20)]);
    let slot_of =
        |p: &Program, rule: &str| p.dataplane.active_ip_rules().unwrap()[&rule.parse().unwrap()];
    let (kept, freed) = (
        slot_of(&p, "203.0.113.0/24"),
        slot_of(&p, "198.51.100.0/24"),
    );
    let hits = p.dataplane.rule_hits().unwrap();
    assert_eq!((hits[&kept].packets, hits[&freed].packets), (60, 40));

    p.apply(&format!(
        "{limits}ip_rules = [\"203.0.113.0/24\", \"192.0.2.0/24\"]\n"
    ));
    assert_eq!(
        slot_of(&p, "192.0.2.0/24"),
        freed,
        "the new rule takes the freed slot"
    );
    let hits = p.dataplane.rule_hits().unwrap();
    assert_eq!(hits[&kept].packets, 60, "a kept rule keeps its hits");
    assert!(
        !hits.contains_key(&freed),
        "the new owner starts from zero: {hits:?}"
    );
    run_on_cpus(&p, &tcp_syn([192, 0, 2, 9], 443), &[(0, 5), (1, 5)]);
    assert_eq!(p.dataplane.rule_hits().unwrap()[&freed].packets, 10);
}

#[test]
fn default_allow_lets_every_source_in() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy("default_action = \"Allow\"\nip_rules = [\"203.0.113.0/24\"]\n");
    p.expect(&tcp_syn(DENIED, 443), XDP_PASS, AllowDefault);
    p.expect(&tcp_syn(ALLOWED, 443), XDP_PASS, AllowDefault);
    p.expect(&tcp_syn(DENIED, 22), XDP_PASS, PassControlPlane);
}

#[test]
fn audit_mode_passes_and_counts_what_it_would_deny() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy(&format!("{POLICY}mode = \"Audit\"\n"));
    p.expect(&tcp_syn(DENIED, 443), XDP_PASS, AuditWouldDeny);
    p.expect(&tcp_syn(ALLOWED, 443), XDP_PASS, AllowIpRule);
}

#[test]
fn udp_data_plane_ports_are_guarded_and_tcp_ones_are_not_implied() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy(&format!(
        "{POLICY}[data_plane]\ntcp_ports = []\nudp_ports = [4433]\n"
    ));
    p.expect(&udp(DENIED, 4433), XDP_DROP, DenyNoMatch);
    p.expect(&udp(ALLOWED, 4433), XDP_PASS, AllowIpRule);
    p.expect(&tcp_syn(DENIED, 443), XDP_PASS, PassControlPlane);
}

#[test]
fn vlan_tagged_frames_are_judged_and_a_deeper_stack_is_malformed() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy(POLICY);
    p.expect(&tcp_syn_vlan(ALLOWED, 443, &[120]), XDP_PASS, AllowIpRule);
    p.expect(&tcp_syn_vlan(DENIED, 443, &[120]), XDP_DROP, DenyNoMatch);
    p.expect(
        &tcp_syn_vlan(DENIED, 443, &[100, 120]),
        XDP_DROP,
        DenyNoMatch,
    );
    p.expect(
        &tcp_syn_vlan(ALLOWED, 443, &[100, 120]),
        XDP_PASS,
        AllowIpRule,
    );
    // Three tags: more than the parser walks, never passed unread — even
    // to a control-plane port or from an allowed source.
    p.expect(
        &tcp_syn_vlan(ALLOWED, 443, &[1, 2, 3]),
        XDP_DROP,
        DenyMalformed,
    );
    p.expect(
        &tcp_syn_vlan(DENIED, 22, &[1, 2, 3]),
        XDP_DROP,
        DenyMalformed,
    );
}

#[test]
fn ipv4_options_move_the_transport_header() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy(POLICY);
    for words in 1..=10usize {
        // NOP options (type 1); IHL = 5 + words, up to 15.
        let options = vec![1u8; words * 4];
        p.expect(
            &tcp_syn_with_options(DENIED, 443, &options),
            XDP_DROP,
            DenyNoMatch,
        );
        p.expect(
            &tcp_syn_with_options(ALLOWED, 443, &options),
            XDP_PASS,
            AllowIpRule,
        );
        p.expect(
            &tcp_syn_with_options(DENIED, 22, &options),
            XDP_PASS,
            PassControlPlane,
        );
    }
}

#[test]
fn bad_ipv4_headers_are_malformed() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy(POLICY);
    let good = tcp_syn(ALLOWED, 443);
    let ip = 14;
    let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut frame = good.clone();
        f(&mut frame);
        frame
    };
    // IHL below 5.
    for ihl in 0..5u8 {
        p.expect(&mutate(&|fr| fr[ip] = 0x40 | ihl), XDP_DROP, DenyMalformed);
    }
    // Version other than 4 under the IPv4 ethertype.
    p.expect(&mutate(&|fr| fr[ip] = 0x65), XDP_DROP, DenyMalformed);
    // Total length shorter than the header.
    p.expect(
        &mutate(&|fr| fr[ip + 2..ip + 4].copy_from_slice(&19u16.to_be_bytes())),
        XDP_DROP,
        DenyMalformed,
    );
    // Total length longer than the frame.
    p.expect(
        &mutate(&|fr| fr[ip + 2..ip + 4].copy_from_slice(&1500u16.to_be_bytes())),
        XDP_DROP,
        DenyMalformed,
    );
    // IHL claims options the frame does not hold.
    p.expect(&mutate(&|fr| fr[ip] = 0x4F), XDP_DROP, DenyMalformed);
}

#[test]
fn every_truncation_of_a_data_plane_syn_is_dropped_or_harmless() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy(POLICY);
    let frame = tcp_syn(ALLOWED, 443);
    // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header
    // (EINVAL), as no NIC delivers one; start there.
    for len in 14..frame.len() {
        let (action, verdict) = p.judge(&frame[..len]);
        assert_eq!(
            (action, verdict),
            (XDP_DROP, DenyMalformed),
            "a SYN cut to {len} bytes must be malformed"
        );
    }
    p.expect(&frame, XDP_PASS, AllowIpRule);
}

#[test]
fn fragments_first_judged_with_ports_later_ones_pass() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy(&format!(
        "{POLICY}[data_plane]\ntcp_ports = [443]\nudp_ports = [4433]\n"
    ));
    p.expect(&udp_fragment(DENIED, 4433, 0, true), XDP_DROP, DenyNoMatch);
    p.expect(&udp_fragment(ALLOWED, 4433, 0, true), XDP_PASS, AllowIpRule);
    // Non-first fragments carry no ports, whatever their payload looks like.
    p.expect(&udp_fragment(DENIED, 4433, 1, true), XDP_PASS, PassFragment);
    p.expect(
        &udp_fragment(DENIED, 4433, 185, false),
        XDP_PASS,
        PassFragment,
    );
}

#[test]
fn ipv6_to_the_data_plane_follows_the_ipv6_setting() {
    if !require_root() {
        return;
    }
    let deny = Program::with_policy(POLICY);
    deny.expect(&ipv6_tcp_syn(443), XDP_DROP, DenyIpv6);
    deny.expect(&ipv6_tcp_syn(22), XDP_PASS, PassControlPlane);
    deny.expect(&ipv6_tcp_syn_behind_ext_headers(443, 3), XDP_DROP, DenyIpv6);
    deny.expect(
        &ipv6_tcp_syn_behind_ext_headers(22, 3),
        XDP_PASS,
        PassControlPlane,
    );
    // Longer than the walk's bound: it could hide port 443.
    let too_long = firewall_common::MAX_IPV6_EXT_HEADERS + 1;
    deny.expect(
        &ipv6_tcp_syn_behind_ext_headers(22, too_long),
        XDP_DROP,
        DenyMalformed,
    );

    let allow = Program::with_policy(&format!("{POLICY}ipv6 = \"Allow\"\n"));
    allow.expect(&ipv6_tcp_syn(443), XDP_PASS, PassIpv6);
    allow.expect(&ipv6_tcp_syn_behind_ext_headers(443, 2), XDP_PASS, PassIpv6);
}

#[test]
fn applying_the_same_policy_twice_writes_nothing() {
    if !require_root() {
        return;
    }
    let mut p = Program::with_policy(POLICY);
    let again = p.apply(POLICY);
    assert!(!again.changed);
    assert_eq!(again.map_writes, 0);
    assert_eq!(again.generation, 1);
    // The same rule spelled as /32 and bare is one rule.
    let spelled =
        "default_action = \"Deny\"\nip_rules = [\"203.0.113.0/24\", \"198.51.100.7/32\"]\n";
    let bare = "default_action = \"Deny\"\nip_rules = [\"203.0.113.0/24\", \"198.51.100.7\"]\n";
    assert!(p.apply(spelled).changed);
    assert!(!p.apply(bare).changed);
}

#[test]
fn a_flip_serves_the_new_policy_whole_and_forgets_removed_rules() {
    if !require_root() {
        return;
    }
    let mut p = Program::with_policy(POLICY);
    p.expect(&tcp_syn(ALLOWED, 443), XDP_PASS, AllowIpRule);
    let report = p.apply("default_action = \"Deny\"\nip_rules = [\"198.51.100.0/24\"]\n[data_plane]\ntcp_ports = [8443]\n");
    assert_eq!(
        (
            report.generation,
            report.ip_rules_added,
            report.ip_rules_removed
        ),
        (2, 1, 1)
    );
    p.expect(&tcp_syn(ALLOWED, 8443), XDP_DROP, DenyNoMatch);
    p.expect(&tcp_syn(DENIED, 8443), XDP_PASS, AllowIpRule);
    p.expect(&tcp_syn(ALLOWED, 443), XDP_PASS, PassControlPlane);
    // Back to POLICY: set 0 is rewritten by diff, not from scratch.
    let back = p.apply(POLICY);
    assert_eq!(back.generation, 3);
    p.expect(&tcp_syn(ALLOWED, 443), XDP_PASS, AllowIpRule);
    p.expect(&tcp_syn(DENIED, 443), XDP_DROP, DenyNoMatch);
    p.expect(&tcp_syn(DENIED, 8443), XDP_PASS, PassControlPlane);
}

#[test]
fn an_allowed_frame_counts_packets_and_bytes_on_its_rule() {
    if !require_root() {
        return;
    }
    let p = Program::with_policy(
        "default_action = \"Deny\"\nip_rules = [\"203.0.113.0/24\", \"198.51.100.0/24\"]\n",
    );
    let frame = tcp_syn(ALLOWED, 443);
    for _ in 0..3 {
        p.expect(&frame, XDP_PASS, AllowIpRule);
    }
    p.expect(&tcp_syn([192, 0, 2, 200], 443), XDP_DROP, DenyNoMatch);
    let slot = p
        .dataplane
        .active_tables()
        .ip_rules
        .get(&vaultfw::compile::PrefixKey {
            prefix_len: 24,
            octets: [203, 0, 113, 0],
        })
        .expect("rule compiled")
        .slot;
    let hits = p.dataplane.rule_hits().expect("read hits");
    assert_eq!(hits.len(), 1, "only the matching rule counts: {hits:?}");
    let h = hits[&slot];
    assert_eq!((h.packets, h.bytes), (3, 3 * frame.len() as u64));
    assert!(h.last_hit.is_some());
}

#[test]
fn a_denied_syn_is_logged_with_its_fields_and_the_rate_limit_holds() {
    if !require_root() {
        return;
    }
    let mut p = Program::with_policy(POLICY);
    p.apply_with_events(
        &format!("{POLICY}[data_plane]\ntcp_ports = [443]\nudp_ports = [4433]\n"),
        10,
    );
    let mut ring = p.dataplane.take_event_ring().expect("ring buffer");
    // A flood of 50 SYNs inside one test run (microseconds: the bucket
    // refills by a negligible fraction). The bucket starts with one second
    // of budget, 10 events at 10/s: 10 are logged, 40 counted as dropped.
    let (action, _) = p
        .dataplane
        .test_run_repeated(&tcp_syn(DENIED, 443), 50)
        .expect("test run");
    assert_eq!(action, XDP_DROP);
    assert_eq!(
        p.dataplane.verdict_totals().unwrap()[DenyNoMatch.index() as usize],
        50
    );
    let totals = p.dataplane.event_totals().expect("telemetry");
    assert_eq!(
        (totals.sent, totals.rate_limited, totals.ring_full),
        (10, 40, 0)
    );
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        // SAFETY: the program writes whole AccessEvent records.
        events.push(unsafe {
            std::ptr::read_unaligned(item.as_ptr().cast::<firewall_common::AccessEvent>())
        });
    }
    assert_eq!(events.len(), 10);
    let event = events[0];
    assert_eq!(&event.src[..4], &DENIED);
    assert_eq!(&event.dst[..4], &HOST);
    assert_eq!(
        (event.sport, event.dport, event.proto, event.family),
        (40000, 443, 6, 4)
    );
    assert_eq!(event.verdict as u32, DenyNoMatch.index());
    // A non-SYN segment is dropped but is no connection attempt: not logged.
    p.expect(&tcp_ack(DENIED, 40000, 443), XDP_DROP, DenyNoMatch);
    assert_eq!(
        p.dataplane.event_totals().unwrap().sent + p.dataplane.event_totals().unwrap().rate_limited,
        50
    );
    // A UDP flow logs once per window, however many datagrams it sends.
    let mut q = Program::with_policy(POLICY);
    q.apply_with_events(
        &format!("{POLICY}[data_plane]\ntcp_ports = [443]\nudp_ports = [4433]\n"),
        1000,
    );
    let mut ring = q.dataplane.take_event_ring().expect("ring buffer");
    for _ in 0..5 {
        q.expect(&udp(DENIED, 4433), XDP_DROP, DenyNoMatch);
    }
    let mut udp_events = 0;
    while ring.next().is_some() {
        udp_events += 1;
    }
    assert_eq!(udp_events, 1);
}
