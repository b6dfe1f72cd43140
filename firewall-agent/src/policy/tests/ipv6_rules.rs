//! IPv6 values in policies: IP rules beside IPv4 ones in `ip_rules` (and
//! Azure's `ipRules`/`ipv6Rules`), subnet prefixes, limits; every refused
//! class with the exact path of the value, its RFC and a fix.

use super::{deny_with_rules, load, load_azure, refuse, refuse_azure, single};

#[test]
fn ipv6_rules_sit_beside_ipv4_ones_canonical_sorted_and_deduplicated() {
    let v = load(&deny_with_rules(&[
        "\"203.0.113.0/24\"",
        "\"2001:db8:1::/48\"",
        "\"2001:DB8:0:0::7\"",
        "{ value = \"2001:db8::7/128\", comment = \"again\" }",
    ]));
    let ipv4: Vec<String> = v.policy.ip_rules.iter().map(|r| r.to_string()).collect();
    let ipv6: Vec<String> = v.policy.ipv6_rules.iter().map(|r| r.to_string()).collect();
    assert_eq!(ipv4, ["203.0.113.0/24"]);
    assert_eq!(ipv6, ["2001:db8::7", "2001:db8:1::/48"]);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "ip_rules[3]");
}

/// Each refused class: the value, the exact path, the RFC its reason
/// cites, and a word of its fix.
const REFUSED: [(&str, &str, &str); 16] = [
    ("::", "RFC 4291 section 2.5.2", "remove the rule"),
    ("::1", "RFC 4291 section 2.5.3", "remove the rule"),
    (
        "::ffff:203.0.113.7",
        "RFC 4291 section 2.5.5.2",
        "IPv4 rule 203.0.113.7",
    ),
    (
        "::203.0.113.7",
        "RFC 4291 section 2.5.5.1",
        "IPv4 rule 203.0.113.7",
    ),
    ("fe80::1", "RFC 4291 section 2.5.6", "remove the rule"),
    ("fd12:3456::/48", "RFC 4193", "virtual_network_rules"),
    ("fc00::/7", "RFC 4193", "virtual_network_rules"),
    ("ff02::1", "RFC 4291 section 2.7", "remove the rule"),
    ("fec0::/10", "RFC 3879", "remove the rule"),
    ("2002:cb00:7107::/48", "RFC 3056", "IPv4 rule 203.0.113.7"),
    ("2001::/32", "RFC 4380", "IPv4 rule"),
    ("64:ff9b::203.0.113.7", "RFC 6052", "IPv4 rule 203.0.113.7"),
    ("2001:db8::/129", "RFC 4291 section 2.3", "0–128"),
    ("2001:db8::1/64", "RFC 4291 section 2.3", "2001:db8::/64"),
    ("fe80::1%eth0", "RFC 4007", "without it (fe80::1)"),
    (
        "2001:db8::1::2",
        "not an IPv6 address",
        "RFC 4291 section 2.2",
    ),
];

#[test]
fn every_refused_ipv6_class_names_its_path_value_rfc_and_fix() {
    for (text, rfc, fix) in REFUSED {
        let errors = refuse(&deny_with_rules(&[
            "\"203.0.113.0/24\"",
            &format!("{text:?}"),
        ]));
        let e = single(&errors);
        assert_eq!((e.path.as_str(), e.value.as_str()), ("ip_rules[1]", text));
        let shown = e.to_string();
        assert!(shown.contains(rfc), "{text}: {shown}");
        assert!(e.fix.contains(fix), "{text}: fix {:?}", e.fix);
    }
    // In a table, the path is the value's.
    let errors = refuse(&deny_with_rules(&["{ value = \"ff02::1\" }"]));
    assert_eq!(single(&errors).path, "ip_rules[0].value");
}

#[test]
fn an_ipv6_rule_inside_a_wider_one_is_reported_as_shadowed() {
    let v = load(&deny_with_rules(&[
        "\"2001:db8::/32\"",
        "\"2001:db8:1::/48\"",
    ]));
    assert_eq!(v.policy.ipv6_rules.len(), 2);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "ip_rules[1]");
    assert!(
        v.warnings[0]
            .message
            .contains("2001:db8:1::/48 lies inside ip_rules[0] 2001:db8::/32"),
        "{:?}",
        v.warnings
    );
}

#[test]
fn subnet_prefixes_take_unique_local_ipv6_but_not_link_local() {
    let policy = |prefix: &str| {
        format!(
            "default_action = \"Deny\"\n[[virtual_network_rules]]\nid = \"v/subnets/a\"\n\
             address_prefixes = [\"10.1.2.0/24\", {prefix:?}]\nendpoint = {{ vlan = 120 }}\n"
        )
    };
    let v = load(&policy("fd00:1:2::/64"));
    let rule = &v.policy.virtual_network_rules[0];
    assert_eq!(rule.address_prefixes_v6, ["fd00:1:2::/64".parse().unwrap()]);
    let errors = refuse(&policy("fe80::/64"));
    let e = single(&errors);
    assert_eq!(e.path, "virtual_network_rules[0].address_prefixes[1]");
    assert!(e.reason.contains("RFC 4291 section 2.5.6"), "{e}");
}

#[test]
fn ipv6_rules_count_against_their_own_limit() {
    let rules = [
        "\"2001:db8:1::/48\"",
        "\"2001:db8:2::/48\"",
        "\"2001:db8:3::/48\"",
        "\"203.0.113.0/24\"",
    ];
    let text = deny_with_rules(&rules).replace(
        "ip_rules = [",
        "limits = { ip_rules = 1, virtual_network_rules = 1, ipv6_rules = 2 }\nip_rules = [",
    );
    let errors = refuse(&text);
    let e = single(&errors);
    assert!(
        e.reason.contains("3 IPv6 IP rules exceed the limit of 2"),
        "{e}"
    );
    assert!(e.fix.contains("limits.ipv6_rules"), "{e}");
    let v = load(&text.replace("ipv6_rules = 2", "ipv6_rules = 3"));
    assert_eq!((v.policy.ip_rules.len(), v.policy.ipv6_rules.len()), (1, 3));
    // Without `ipv6_rules`, IPv6 rules get as many as IPv4 ones.
    let v = load(&deny_with_rules(&rules[..1]));
    assert_eq!(v.policy.limits.ipv6_rules, v.policy.limits.ip_rules);
}

#[test]
fn azure_json_reads_ipv6_in_ip_rules_and_ipv6_rules_with_their_paths() {
    let v = load_azure(
        r#"{"defaultAction": "Deny", "bypass": "None",
            "ipRules": [{"value": "203.0.113.0/24"}, {"value": "2001:db8:1::/48"}],
            "ipv6Rules": [{"value": "2001:db8:2::7/128"}]}"#,
        None,
    );
    let ipv6: Vec<String> = v.policy.ipv6_rules.iter().map(|r| r.to_string()).collect();
    assert_eq!(ipv6, ["2001:db8:1::/48", "2001:db8:2::7"]);
    let errors = refuse_azure(
        r#"{"defaultAction": "Deny", "bypass": "None", "ipRules": [],
            "ipv6Rules": [{"value": "fd00::/8"}]}"#,
        None,
    );
    let e = single(&errors);
    assert_eq!(e.path, "ipv6Rules[0].value");
    assert!(e.fix.contains("virtualNetworkRules"), "Azure words: {e}");
}
