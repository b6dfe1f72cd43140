//! `ip_rules` in a document: paths of errors, canonical rules (an address
//! and its /32 are one rule), ordering, overlaps, expiry and the count
//! limits.

use std::time::Duration;

use super::super::{LimitProfile, Limits};
use super::{deny_with_rules, distinct_rules, load, now, refuse, single};

#[test]
fn an_address_and_its_slash_32_load_as_one_rule_with_one_warning() {
    let v = load(&deny_with_rules(&[
        "\"203.0.113.10\"",
        "\"203.0.113.10/32\"",
    ]));
    assert_eq!(v.policy.ip_rules.len(), 1);
    assert_eq!(v.policy.ip_rules[0].to_string(), "203.0.113.10");
    assert_eq!(v.policy.ip_rules[0].network.prefix_len(), 32);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    let w = &v.warnings[0];
    assert_eq!(w.path, "ip_rules[1]");
    assert!(w.message.contains("\"203.0.113.10/32\""), "{w}");
    assert!(w.message.contains("ip_rules[0] \"203.0.113.10\""), "{w}");
    assert!(w.message.contains("kept once"), "{w}");
}

#[test]
fn a_network_spelled_with_and_without_an_expiry_keeps_the_longest_lasting_spelling() {
    // An expiring spelling first, then a permanent one and a later expiry:
    // the network stays admitted as long as any spelling admits it, so a
    // parse before and after the first expiry agree.
    for rules in [
        [
            "{ value = \"198.51.100.9\", expires_at = \"2026-06-01T00:10:00Z\" }",
            "\"198.51.100.9/32\"",
            "{ value = \"2001:db8::9\", expires_at = \"2026-06-01T00:10:00Z\" }",
            "\"2001:db8::9/128\"",
        ],
        [
            "\"198.51.100.9/32\"",
            "{ value = \"198.51.100.9\", expires_at = \"2026-06-01T00:10:00Z\" }",
            "\"2001:db8::9/128\"",
            "{ value = \"2001:db8::9\", expires_at = \"2026-06-01T00:10:00Z\" }",
        ],
    ] {
        let v = load(&deny_with_rules(&rules));
        assert_eq!(v.policy.ip_rules.len(), 1);
        assert_eq!(v.policy.ip_rules[0].expires_at, None, "{rules:?}");
        assert_eq!(v.policy.ipv6_rules.len(), 1);
        assert_eq!(v.policy.ipv6_rules[0].expires_at, None, "{rules:?}");
    }
    let v = load(&deny_with_rules(&[
        "{ value = \"198.51.100.9\", expires_at = \"2026-06-01T00:10:00Z\" }",
        "{ value = \"198.51.100.9\", expires_at = \"2026-06-03T00:00:00Z\" }",
    ]));
    assert_eq!(
        v.policy.ip_rules[0].expires_at,
        Some(humantime::parse_rfc3339("2026-06-03T00:00:00Z").unwrap())
    );
    let repeat = v
        .warnings
        .iter()
        .find(|w| w.path == "ip_rules[0]")
        .expect("a repeat warning");
    assert!(
        repeat.message.contains("same network as ip_rules[1]"),
        "{repeat}"
    );
    assert!(repeat.message.contains("longest-lasting"), "{repeat}");
}

#[test]
fn repeats_of_several_networks_are_reported_in_input_order_not_address_order() {
    let v = load(&deny_with_rules(&[
        "\"203.0.113.1\"",
        "\"198.51.100.7\"",
        "\"203.0.113.1/32\"",
        "\"198.51.100.7/32\"",
    ]));
    assert_eq!(v.policy.ip_rules.len(), 2);
    let paths: Vec<&str> = v.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["ip_rules[2]", "ip_rules[3]"]);
    assert!(
        v.warnings[0].message.contains("ip_rules[0]"),
        "{}",
        v.warnings[0]
    );
    assert!(
        v.warnings[1].message.contains("ip_rules[1]"),
        "{}",
        v.warnings[1]
    );
}

#[test]
fn the_same_network_three_times_is_one_rule_with_a_warning_per_repeat() {
    let v = load(&deny_with_rules(&[
        "\"203.0.113.10/32\"",
        "\"198.51.100.0/24\"",
        "\"203.0.113.10\"",
        "{ value = \"203.0.113.10/32\" }",
    ]));
    assert_eq!(v.policy.ip_rules.len(), 2);
    let paths: Vec<&str> = v.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["ip_rules[2]", "ip_rules[3]"]);
    for w in &v.warnings {
        assert!(w.message.contains("ip_rules[0] \"203.0.113.10/32\""), "{w}");
    }
}

#[test]
fn duplicates_with_different_comment_or_expiry_keep_the_first_and_say_so() {
    let v = load(&deny_with_rules(&[
        "{ value = \"203.0.113.10\", comment = \"first\" }",
        "{ value = \"203.0.113.10/32\", comment = \"second\", expires_at = \"2027-01-01T00:00:00Z\" }",
    ]));
    assert_eq!(v.policy.ip_rules.len(), 1);
    assert_eq!(v.policy.ip_rules[0].comment.as_deref(), Some("first"));
    assert_eq!(v.policy.ip_rules[0].expires_at, None);
    let w = &v.warnings[0];
    assert!(w.message.contains("comment and expires_at differ"), "{w}");
    assert!(w.message.contains("those of ip_rules[0] are kept"), "{w}");

    let v = load(&deny_with_rules(&[
        "{ value = \"203.0.113.10\", comment = \"first\" }",
        "{ value = \"203.0.113.10/32\", comment = \"second\" }",
    ]));
    assert!(
        v.warnings[0]
            .message
            .contains("its comment differs and the one of ip_rules[0] is kept")
    );
}

#[test]
fn rules_are_sorted_by_address_then_prefix_length() {
    let v = load(&deny_with_rules(&[
        "\"203.0.113.7\"",
        "\"198.51.100.0/24\"",
        "\"203.0.113.0/24\"",
        "\"203.0.113.0/25\"",
        "\"192.0.2.1\"",
    ]));
    let shown: Vec<String> = v.policy.ip_rules.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "192.0.2.1",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "203.0.113.0/25",
            "203.0.113.7"
        ]
    );
}

#[test]
fn overlapping_rules_are_allowed_with_a_warning_per_shadowed_rule() {
    let v = load(&deny_with_rules(&[
        "\"203.0.113.0/24\"",
        "\"203.0.113.64/26\"",
    ]));
    assert_eq!(v.policy.ip_rules.len(), 2);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "ip_rules[1]");
    assert!(
        v.warnings[0]
            .message
            .starts_with("203.0.113.64/26 lies inside ip_rules[0] 203.0.113.0/24"),
        "{}",
        v.warnings[0]
    );
}

#[test]
fn a_rule_nested_several_deep_names_its_innermost_container() {
    let v = load(&deny_with_rules(&[
        "\"203.0.113.0/24\"",
        "\"203.0.113.70\"",
        "\"203.0.113.64/26\"",
    ]));
    let got: Vec<String> = v.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter().any(|w| w
            .starts_with("ip_rules[2]: 203.0.113.64/26 lies inside ip_rules[0] 203.0.113.0/24")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|w| w
                .starts_with("ip_rules[1]: 203.0.113.70 lies inside ip_rules[2] 203.0.113.64/26")),
        "{got:?}"
    );
}

#[test]
fn errors_in_string_rules_name_the_item_and_in_table_rules_its_value() {
    let errors = refuse(&deny_with_rules(&[
        "\"203.0.113.7\"",
        "\"10.0.0.0/8\"",
        "{ value = \"203.0.113.77/24\", comment = \"typo\" }",
    ]));
    assert_eq!(errors.len(), 2, "{errors}");
    let e = &errors.0[0];
    assert_eq!(
        (e.path.as_str(), e.value.as_str()),
        ("ip_rules[1]", "10.0.0.0/8")
    );
    assert!(
        e.reason.contains("10.0.0.0–10.255.255.255") && e.reason.contains("RFC 1918"),
        "{e}"
    );
    assert!(e.fix.contains("virtual network rule"), "{e}");
    let e = &errors.0[1];
    assert_eq!(
        (e.path.as_str(), e.value.as_str()),
        ("ip_rules[2].value", "203.0.113.77/24")
    );
    assert!(
        e.fix.contains("203.0.113.0/24") && e.fix.contains("203.0.113.77"),
        "{e}"
    );
}

#[test]
fn host_bits_in_a_policy_are_refused_suggesting_network_or_host() {
    let errors = refuse(&deny_with_rules(&["\"203.0.113.77/24\""]));
    let e = single(&errors);
    assert_eq!(
        (e.path.as_str(), e.value.as_str()),
        ("ip_rules[0]", "203.0.113.77/24")
    );
    assert!(e.reason.contains("host bits"), "{e}");
    assert!(
        e.fix.contains(
            "write 203.0.113.0/24 for the whole network, or 203.0.113.77 if one host was meant"
        ),
        "{e}"
    );
}

#[test]
fn three_bad_rules_report_three_errors() {
    let errors = refuse(&deny_with_rules(&[
        "\"203.0.113.0/33\"",
        "\"198.51.100.7\"",
        "\"192.168.1.0/24\"",
        "\"203.0.113.10/31\"",
    ]));
    assert_eq!(errors.len(), 3, "{errors}");
    let got: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("ip_rules[0]", "203.0.113.0/33"),
            ("ip_rules[2]", "192.168.1.0/24"),
            ("ip_rules[3]", "203.0.113.10/31"),
        ]
    );
    assert!(errors.0[0].fix.contains("0–32"));
    assert!(errors.0[1].reason.contains("192.168.0.0/16"));
    assert!(errors.0[2].fix.contains("203.0.113.10 and 203.0.113.11"));
}

#[test]
fn rule_items_of_the_wrong_shape_are_refused_each_with_its_path() {
    let errors = refuse(&deny_with_rules(&[
        "42",
        "{ comment = \"no value\" }",
        "{ value = 7 }",
        "{ value = \"203.0.113.7\", note = \"x\" }",
        "{ value = \"203.0.113.8\", comment = 3 }",
    ]));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "ip_rules[0]",
            "ip_rules[1]",
            "ip_rules[2].value",
            "ip_rules[3].note",
            "ip_rules[4].comment",
        ],
        "{errors}"
    );
    assert_eq!(
        errors.0[0].reason,
        "expected a string or a table, found an integer"
    );
    assert_eq!(errors.0[1].reason, "the rule has no `value`");
    assert!(
        errors.0[3].fix.contains("value, comment, expires_at"),
        "{}",
        errors.0[3]
    );
}

#[test]
fn ip_rules_that_is_not_an_array_is_refused_with_the_array_form() {
    let errors = refuse("default_action = \"Deny\"\nip_rules = \"203.0.113.7\"\n");
    let e = single(&errors);
    assert_eq!(e.path, "ip_rules");
    assert!(e.fix.contains("ip_rules = [\"203.0.113.7\"]"), "{e}");
}

#[test]
fn array_of_tables_form_is_accepted() {
    let v = load(
        "default_action = \"Deny\"\n[[ip_rules]]\nvalue = \"203.0.113.7\"\ncomment = \"ops\"\n",
    );
    assert_eq!(v.policy.ip_rules[0].comment.as_deref(), Some("ops"));
}

#[test]
fn expires_at_accepts_rfc3339_text_offsets_and_toml_datetimes() {
    let v = load(&deny_with_rules(&[
        "{ value = \"203.0.113.1\", expires_at = \"2027-01-31T00:00:00Z\" }",
        "{ value = \"203.0.113.2\", expires_at = \"2027-01-31T01:00:00+01:00\" }",
        "{ value = \"203.0.113.3\", expires_at = 2027-01-30T19:00:00-05:00 }",
        "{ value = \"203.0.113.4\", expires_at = \"2027-01-31 00:00:00.000z\" }",
    ]));
    let expected = humantime::parse_rfc3339("2027-01-31T00:00:00Z").expect("time");
    for rule in &v.policy.ip_rules {
        assert_eq!(rule.expires_at, Some(expected), "{rule}");
    }
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
}

#[test]
fn expires_at_without_time_zone_or_malformed_is_refused_with_the_expected_form() {
    for text in [
        "2027-01-31T00:00:00",
        "tomorrow",
        "2027-02-30T00:00:00Z",
        "2027-01-31",
    ] {
        let errors = refuse(&deny_with_rules(&[format!(
            "{{ value = \"203.0.113.1\", expires_at = \"{text}\" }}"
        )]));
        let e = single(&errors);
        assert_eq!(
            (e.path.as_str(), e.value.as_str()),
            ("ip_rules[0].expires_at", text)
        );
        assert!(
            e.fix.contains("RFC 3339") && e.fix.contains("2027-01-31T00:00:00Z"),
            "{e}"
        );
    }
    let errors = refuse(&deny_with_rules(&[
        "{ value = \"203.0.113.1\", expires_at = 5 }",
    ]));
    assert_eq!(single(&errors).path, "ip_rules[0].expires_at");
}

#[test]
fn an_expired_rule_is_left_out_with_a_warning_and_the_rest_loads() {
    // An expired rule must neither stay in force nor stop a restarting
    // daemon from loading the rest.
    let v = load(&deny_with_rules(&[
        "{ value = \"203.0.113.1\", expires_at = \"2026-05-31T23:59:59Z\" }",
        "\"198.51.100.7\"",
    ]));
    let rules: Vec<String> = v.policy.ip_rules.iter().map(|r| r.to_string()).collect();
    assert_eq!(rules, ["198.51.100.7"]);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "ip_rules[0].expires_at");
    assert!(
        v.warnings[0]
            .message
            .contains("expired at 2026-05-31T23:59:59Z"),
        "{}",
        v.warnings[0]
    );
}

#[test]
fn an_expiry_within_the_last_minute_is_shown_in_seconds_not_as_zero() {
    let v = load(&deny_with_rules(&[
        "{ value = \"203.0.113.1\", expires_at = \"2026-06-01T00:00:15Z\" }",
    ]));
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert!(
        v.warnings[0].message.contains("(in 15s;"),
        "{}",
        v.warnings[0]
    );
}

#[test]
fn expires_at_within_24_hours_is_a_warning() {
    let v = load(&deny_with_rules(&[
        "{ value = \"203.0.113.1\", expires_at = \"2026-06-01T03:30:00Z\" }",
        "{ value = \"203.0.113.2\", expires_at = \"2026-06-02T00:00:01Z\" }",
    ]));
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "ip_rules[0].expires_at");
    assert!(
        v.warnings[0].message.contains("less than 24 h (in 3h 30m"),
        "{}",
        v.warnings[0]
    );
    assert_eq!(
        v.policy.ip_rules[0].expires_at,
        Some(now() + Duration::from_secs(3 * 3600 + 30 * 60))
    );
}

#[test]
fn a_policy_of_127_ip_rules_loads_under_the_default_limits() {
    let v = load(&deny_with_rules(&distinct_rules(127)));
    assert_eq!(v.policy.ip_rules.len(), 127);
    assert_eq!(v.policy.limits.profile, LimitProfile::Kv2020);
}

#[test]
fn a_policy_of_128_ip_rules_is_refused_with_the_exact_limit_message() {
    let errors = refuse(&deny_with_rules(&distinct_rules(128)));
    let e = single(&errors);
    assert_eq!(e.path, "ip_rules");
    assert_eq!(
        e.reason,
        "128 IP rules exceed the limit of 127 (profile kv-2020)"
    );
    assert!(
        e.to_string()
            .contains("128 IP rules exceed the limit of 127 (profile kv-2020)")
    );
    assert!(e.fix.contains("remove 1 rule"), "{e}");
    assert!(e.fix.contains("limits = \"kv-current\" (1000"), "{e}");
    assert!(
        e.fix.contains("ip_rules = N, virtual_network_rules = M"),
        "{e}"
    );
}

#[test]
fn the_limit_counts_rules_after_duplicates_are_merged() {
    let mut rules = distinct_rules(127);
    let first = rules[0].trim_matches('"').to_string();
    rules.push(format!("\"{first}/32\""));
    assert_eq!(rules.len(), 128);
    let v = load(&deny_with_rules(&rules));
    assert_eq!(v.policy.ip_rules.len(), 127);
}

#[test]
fn kv_current_loads_1000_rules_and_refuses_1001() {
    let policy = |n| {
        format!(
            "limits = \"kv-current\"\n{}",
            deny_with_rules(&distinct_rules(n))
        )
    };
    let v = load(&policy(1000));
    assert_eq!(v.policy.ip_rules.len(), 1000);
    assert_eq!(v.policy.limits, Limits::KV_CURRENT);
    let errors = refuse(&policy(1001));
    let e = single(&errors);
    assert_eq!(
        e.reason,
        "1001 IP rules exceed the limit of 1000 (profile kv-current)"
    );
    assert!(
        !e.fix.contains("limits = \"kv-current\""),
        "no self-referring fix: {e}"
    );
    assert!(e.fix.contains("ip_rules = N"), "{e}");
}

#[test]
fn explicit_limits_are_enforced_and_named_in_the_message() {
    let text = format!(
        "limits = {{ ip_rules = 2, virtual_network_rules = 1 }}\n{}",
        deny_with_rules(&distinct_rules(3))
    );
    let errors = refuse(&text);
    let e = single(&errors);
    assert_eq!(
        e.reason,
        "3 IP rules exceed the limit of 2 (profile explicit)"
    );
    assert!(e.fix.contains("limits.ip_rules"), "{e}");
}
