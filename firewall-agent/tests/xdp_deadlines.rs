//! Deadlines the XDP program keeps by itself, judged on crafted frames
//! through BPF_PROG_TEST_RUN (root, no network namespace): an apply with a
//! fallback deadline serves until then and the previous generation after
//! it — with nobody flipping anything — until it is confirmed or reverted;
//! a rule past its `expires_at` stops admitting, its table then does not
//! match (no shorter prefix of it is consulted) and later tables still do.
//!
//! Deadlines are set long past or far ahead, so the verdicts do not hang on
//! the moment; one test holds a real deadline to a bound (exact to well
//! under a second).

mod support;

use std::time::{Duration, SystemTime};

use firewall_common::Verdict::*;
use firewall_common::{RuleValue, VLAN_ANY};
use support::*;
use vaultfw::compile::{CompiledTables, PrefixKey, VnetPrefixKey};
use vaultfw::dataplane::{Confirmation, DataplaneError, Reverted};

/// The office may reach the data plane; nobody else.
const DENY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]
"#;

/// What an operator might apply and regret: the data plane open to all.
const ALLOW: &str = r#"
default_action = "Allow"
bypass = "None"
ip_rules = ["203.0.113.0/24"]
"#;

const DENIED: [u8; 4] = [198, 51, 100, 7];
const OFFICE: [u8; 4] = [203, 0, 113, 5];

/// BPF_PROG_TEST_RUN judges frames as received on the loopback device.
const LOOPBACK_IFINDEX: u32 = 1;

fn an_hour_ago() -> SystemTime {
    SystemTime::now() - Duration::from_secs(3600)
}

fn in_an_hour() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

fn prefix(octets: [u8; 4], prefix_len: u32) -> PrefixKey {
    PrefixKey { prefix_len, octets }
}

/// Makes the entry for `key` expire at `at_ns` (CLOCK_MONOTONIC; 1 = at
/// boot, long past), keeping its hit slot.
fn expire(tables: &mut CompiledTables, key: PrefixKey, at_ns: u64) {
    let value = tables.ip_rules.get_mut(&key).expect("the rule is compiled");
    *value = RuleValue::expiring(value.slot, at_ns);
}

#[test]
fn a_passed_fallback_deadline_judges_with_the_previous_set() {
    if !require_root() {
        return;
    }
    let mut p = Program::with_policy(DENY);
    let allow = p.compile(ALLOW);
    let report = p.apply_with_fallback(&allow, an_hour_ago());
    assert!(report.changed);
    // The flip happened (the agent serves generation 2 on paper), but its
    // deadline has passed: the program judges with generation 1 itself.
    assert_eq!(p.generation(), 2);
    p.expect(&tcp_syn(DENIED, 443), XDP_DROP, DenyNoMatch);
    p.expect(&tcp_syn(OFFICE, 443), XDP_PASS, AllowIpRule);

    // Too late to confirm; the revert makes the rollback official.
    assert_eq!(
        p.dataplane.confirm().expect("confirm"),
        Confirmation::TooLate
    );
    let reverted = p.dataplane.revert().expect("revert");
    assert_eq!(
        reverted,
        Some(Reverted {
            generation: 1,
            dropped_generation: 2,
            by_kernel: true
        })
    );
    assert_eq!(p.generation(), 1);
    p.expect(&tcp_syn(DENIED, 443), XDP_DROP, DenyNoMatch);
    assert_eq!(
        p.dataplane.revert().expect("revert again"),
        None,
        "nothing left to undo"
    );
}

#[test]
fn a_future_fallback_deadline_serves_the_new_set_and_confirm_keeps_it() {
    if !require_root() {
        return;
    }
    let mut p = Program::with_policy(DENY);
    let allow = p.compile(ALLOW);
    p.apply_with_fallback(&allow, in_an_hour());
    assert!(p.dataplane.fallback_deadline().is_some());
    p.expect(&tcp_syn(DENIED, 443), XDP_PASS, AllowDefault);

    // While the deadline is armed the kernel may serve either set: every
    // apply is refused, and nothing is written.
    let deny = p.compile(DENY);
    match p.dataplane.apply(&deny, 9) {
        Err(DataplaneError::FallbackPending { generation: 2 }) => {}
        other => panic!("an apply over an armed deadline must be refused, got {other:?}"),
    }
    p.expect(&tcp_syn(DENIED, 443), XDP_PASS, AllowDefault);

    assert_eq!(
        p.dataplane.confirm().expect("confirm"),
        Confirmation::Confirmed
    );
    assert_eq!(p.dataplane.fallback_deadline(), None);
    p.expect(&tcp_syn(DENIED, 443), XDP_PASS, AllowDefault);
    assert_eq!(p.generation(), 2);
    // Confirmed, the other set is the spare again.
    p.apply(DENY);
    p.expect(&tcp_syn(DENIED, 443), XDP_DROP, DenyNoMatch);
}

#[test]
fn revert_before_the_deadline_serves_the_untouched_previous_generation() {
    if !require_root() {
        return;
    }
    let mut p = Program::with_policy(DENY);
    let previous_rules = p.dataplane.active_ip_rules().expect("read rules");
    let mut widened = p.compile(ALLOW);
    widened
        .ip_rules
        .insert(prefix([198, 51, 100, 0], 24), RuleValue::new(5));
    p.apply_with_fallback(&widened, in_an_hour());
    p.expect(&tcp_syn(DENIED, 443), XDP_PASS, AllowDefault);
    let reverted = p
        .dataplane
        .revert()
        .expect("revert")
        .expect("a deadline was armed");
    assert_eq!(
        reverted,
        Reverted {
            generation: 1,
            dropped_generation: 2,
            by_kernel: false
        }
    );
    p.expect(&tcp_syn(DENIED, 443), XDP_DROP, DenyNoMatch);
    p.expect(&tcp_syn(OFFICE, 443), XDP_PASS, AllowIpRule);
    assert_eq!(
        p.dataplane.active_ip_rules().expect("read rules"),
        previous_rules
    );
    // The next apply writes the abandoned set, never the served one.
    p.apply(ALLOW);
    p.expect(&tcp_syn(DENIED, 443), XDP_PASS, AllowDefault);
}

#[test]
fn an_apply_equal_to_the_served_policy_arms_no_deadline() {
    if !require_root() {
        return;
    }
    let mut p = Program::with_policy(DENY);
    let same = p.compile(DENY);
    let report = p.apply_with_fallback(&same, an_hour_ago());
    assert!(!report.changed);
    assert_eq!(p.dataplane.fallback_deadline(), None);
    assert_eq!(
        p.dataplane.confirm().expect("confirm"),
        Confirmation::NothingPending
    );
    p.expect(&tcp_syn(OFFICE, 443), XDP_PASS, AllowIpRule);
}

#[test]
fn a_rule_past_its_expiry_no_longer_admits_and_one_ahead_still_does() {
    if !require_root() {
        return;
    }
    let mut p = Program::with_policy(DENY);
    let mut tables = p.compile(
        r#"
default_action = "Deny"
ip_rules = ["203.0.113.0/24", { value = "198.51.100.7", expires_at = "2099-01-01T00:00:00Z" }]
"#,
    );
    p.apply_tables(&tables);
    p.expect(&tcp_syn(DENIED, 443), XDP_PASS, AllowIpRule);
    expire(&mut tables, prefix(DENIED, 32), 1);
    p.apply_tables(&tables);
    p.expect(&tcp_syn(DENIED, 443), XDP_DROP, DenyNoMatch);
    p.expect(&tcp_syn(OFFICE, 443), XDP_PASS, AllowIpRule);
    let slot = tables.ip_rules[&prefix(DENIED, 32)].slot;
    let hits = p.dataplane.rule_hits().expect("read hits");
    assert_eq!(
        hits.get(&slot).map(|h| h.packets),
        Some(1),
        "only the hit before the expiry counts: {hits:?}"
    );
}

#[test]
fn an_expired_longest_match_does_not_fall_back_to_a_shorter_prefix_but_reaches_a_later_table() {
    if !require_root() {
        return;
    }
    let mut p = Program::with_policy(DENY);
    let mut tables = p.compile(
        r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24", "203.0.113.0/28"]
"#,
    );
    expire(&mut tables, prefix([203, 0, 113, 0], 28), 1);
    p.apply_tables(&tables);
    // 203.0.113.5: the /28 is its longest match and has expired; the /24
    // that also covers it is not consulted.
    p.expect(&tcp_syn(OFFICE, 443), XDP_DROP, DenyNoMatch);
    p.expect(&tcp_syn([203, 0, 113, 200], 443), XDP_PASS, AllowIpRule);

    // A subnet entry through this endpoint still admits it: the decision
    // goes on to the next table.
    tables.vnet_rules.insert(
        VnetPrefixKey {
            ifindex: LOOPBACK_IFINDEX,
            vlan: VLAN_ANY,
            prefix: prefix([203, 0, 113, 0], 29),
        },
        RuleValue::new(p.dataplane.hit_slots().vnet(0)),
    );
    p.apply_tables(&tables);
    p.expect(&tcp_syn(OFFICE, 443), XDP_PASS, AllowVnetRule);
}

#[test]
fn an_expired_trusted_service_entry_lets_the_ip_rules_decide() {
    if !require_root() {
        return;
    }
    let mut p = Program::with_policy(DENY);
    let mut tables = p.compile(DENY);
    tables.flags |= firewall_common::FLAG_BYPASS_TRUSTED;
    let service = p.dataplane.hit_slots().trusted(0);
    tables.trusted.insert(
        prefix([203, 0, 113, 0], 25),
        RuleValue::expiring(service, 1),
    );
    tables.trusted.insert(
        prefix([198, 51, 100, 0], 24),
        RuleValue::expiring(service, 1),
    );
    p.apply_tables(&tables);
    p.expect(&tcp_syn(OFFICE, 443), XDP_PASS, AllowIpRule);
    p.expect(&tcp_syn(DENIED, 443), XDP_DROP, DenyNoMatch);
}

/// The bound the task sets: exact to well under a second. The coarse
/// clock ticks every few ms; 150 ms of margin covers a busy machine.
#[test]
fn a_rule_stops_admitting_within_150_ms_of_its_expiry() {
    if !require_root() {
        return;
    }
    let mut p = Program::with_policy(DENY);
    let expires = SystemTime::now() + Duration::from_secs(2);
    let tables = p.compile(&format!(
        "default_action = \"Deny\"\nip_rules = [{{ value = \"198.51.100.7\", expires_at = \"{}\" }}]\n",
        humantime::format_rfc3339_millis(expires)
    ));
    p.apply_tables(&tables);
    p.expect(&tcp_syn(DENIED, 443), XDP_PASS, AllowIpRule);
    let wait = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        + Duration::from_millis(150);
    std::thread::sleep(wait);
    p.expect(&tcp_syn(DENIED, 443), XDP_DROP, DenyNoMatch);
}
