//! The bench-only load-time constant (`Dataplane::load_omitting`,
//! `firewall_common::BENCH_OMIT_*`) leaves out exactly the recording piece
//! it names and nothing else, and a program loaded the ordinary way records
//! every piece: the fixed-cost rows of `cargo xtask bench` measure what
//! they say they measure, and production loads stay whole.

mod support;

use firewall_common::{
    BENCH_OMIT_ACCESS_LOG, BENCH_OMIT_RULE_HITS, BENCH_OMIT_VERDICT_COUNTER, Verdict,
};
use support::*;
use vaultfw::dataplane::{Capacity, Dataplane};
use vaultfw::policy::parse_toml;

const POLICY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]
"#;
const ALLOWED: [u8; 4] = [203, 0, 113, 5];
const DENIED: [u8; 4] = [198, 51, 100, 7];

/// What one allowed and one denied SYN moved: (allow_ip_rule verdicts,
/// deny_no_match verdicts, rule hit packets, access-log events sent or
/// rate-limited).
fn recorded(omit: u32) -> (u64, u64, u64, u64) {
    let validated = parse_toml(POLICY).expect("test policy valid");
    let capacity = Capacity::for_ip_rule_limit(validated.policy.limits.ip_rules as u32);
    let mut dataplane = if omit == 0 {
        Dataplane::load(capacity)
    } else {
        Dataplane::load_omitting(capacity, &omit)
    }
    .expect("load");
    let tables = vaultfw::compile::compile_next(
        &validated.policy,
        &Default::default(),
        dataplane.hit_slots(),
        &dataplane.active_tables(),
        &vaultfw::clock::MonotonicClock::now(),
    )
    .with_access_log(100, false);
    dataplane.apply(&tables, 1).expect("apply");
    assert_eq!(
        dataplane.test_run(&tcp_syn(ALLOWED, 443)).unwrap(),
        XDP_PASS
    );
    assert_eq!(dataplane.test_run(&tcp_syn(DENIED, 443)).unwrap(), XDP_DROP);
    let verdicts = dataplane.verdict_totals().expect("verdict counters");
    let hits: u64 = dataplane
        .rule_hits()
        .expect("rule hits")
        .values()
        .map(|h| h.packets)
        .sum();
    let events = dataplane.event_totals().expect("event counters");
    (
        verdicts[Verdict::AllowIpRule.index() as usize],
        verdicts[Verdict::DenyNoMatch.index() as usize],
        hits,
        events.sent + events.rate_limited + events.ring_full,
    )
}

#[test]
fn each_bench_omit_bit_leaves_out_only_its_piece_and_an_ordinary_load_records_all() {
    if !require_root() {
        return;
    }
    assert_eq!(
        recorded(0),
        (1, 1, 1, 1),
        "an ordinary load records every piece"
    );
    assert_eq!(recorded(BENCH_OMIT_VERDICT_COUNTER), (0, 0, 1, 1));
    assert_eq!(recorded(BENCH_OMIT_RULE_HITS), (1, 1, 0, 1));
    assert_eq!(recorded(BENCH_OMIT_ACCESS_LOG), (1, 1, 1, 0));
}
