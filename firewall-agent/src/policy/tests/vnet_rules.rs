//! `[[virtual_network_rules]]` in the native format: prefixes (host bits,
//! private space),
//! ids, endpoints, canonical form, overlaps and the count limit.

use ipnet::Ipv4Net;

use super::super::{Endpoint, LimitProfile, parse_subnet_prefix};
use super::{load, now, refuse, single};

fn net(text: &str) -> Ipv4Net {
    text.parse().expect("test network")
}

/// A Deny policy with one rule per `(id, prefixes, endpoint)` (TOML
/// fragments).
fn deny_with_vnets(rules: &[(&str, &str, &str)]) -> String {
    let mut text = String::from("default_action = \"Deny\"\n");
    for (id, prefixes, endpoint) in rules {
        text.push_str(&format!(
            "[[virtual_network_rules]]\nid = {id:?}\naddress_prefixes = {prefixes}\n\
             endpoint = {endpoint}\n"
        ));
    }
    text
}

fn one_rule(prefixes: &str) -> String {
    deny_with_vnets(&[(
        "vnet-prod/subnets/app",
        prefixes,
        "{ interface = \"eth1\" }",
    )])
}

#[test]
fn a_private_range_is_accepted_as_a_subnet_prefix() {
    let v = load(&one_rule("[\"10.1.2.0/24\"]"));
    let rule = &v.policy.virtual_network_rules[0];
    assert_eq!(rule.address_prefixes, [net("10.1.2.0/24")]);
    assert_eq!(
        rule.endpoint,
        Endpoint {
            interface: Some("eth1".into()),
            vlan: None
        }
    );
    assert!(!rule.ignore_missing_endpoint);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
}

#[test]
fn host_bits_in_a_subnet_prefix_are_refused_suggesting_the_network() {
    let errors = refuse(&one_rule("[\"10.1.2.3/24\"]"));
    let e = single(&errors);
    assert_eq!(
        (e.path.as_str(), e.value.as_str()),
        (
            "virtual_network_rules[0].address_prefixes[0]",
            "10.1.2.3/24"
        )
    );
    assert!(e.reason.contains("host bits are set"), "{e}");
    assert!(
        e.fix
            .contains("write 10.1.2.0/24 for the whole network, or 10.1.2.3 if one host was meant"),
        "{e}"
    );
}

#[test]
fn private_shared_public_and_documentation_space_are_subnet_prefixes() {
    for p in [
        "10.0.0.0/8",
        "172.16.5.0/24",
        "192.168.1.0/24",
        "100.64.7.0/24",
        "100.64.0.0/10",
        "203.0.113.0/24",
        "52.0.0.0/8",
        "10.1.2.3",
        "10.1.2.3/32",
        // Contains 10.0.0.0/8 (allowed) and nothing refused.
        "8.0.0.0/6",
    ] {
        assert!(parse_subnet_prefix("p", p).is_ok(), "{p}");
    }
    assert_eq!(parse_subnet_prefix("p", "10.1.2.3"), Ok(net("10.1.2.3/32")));
}

#[test]
fn ranges_no_subnet_holds_are_refused_as_subnet_prefixes_naming_the_range() {
    for (p, range) in [
        ("127.0.0.0/8", "loopback range"),
        ("127.0.0.1", "loopback range"),
        ("169.254.1.0/24", "link-local range"),
        ("0.1.2.0/24", "\"this network\" range"),
        ("224.0.0.0/24", "multicast range"),
        ("240.0.0.0/8", "reserved range"),
        ("255.255.255.255", "limited broadcast address"),
    ] {
        let e =
            parse_subnet_prefix("virtual_network_rules[0].address_prefixes[0]", p).expect_err(p);
        assert_eq!(e.value, p);
        assert!(e.reason.contains(range), "{p}: {e}");
        assert!(
            e.reason
                .contains("virtual network rules admit private (RFC 1918), shared"),
            "{p}: {e}"
        );
        assert!(
            e.fix.contains("remove it from address_prefixes"),
            "{p}: {e}"
        );
    }
}

#[test]
fn a_subnet_prefix_containing_a_refused_range_names_it_and_the_allowed_parts() {
    let e = parse_subnet_prefix("p", "96.0.0.0/3").expect_err("contains 127/8");
    assert!(e.reason.contains("127.0.0.0/8"), "{e}");
    // The private and shared ranges inside are not named: they are allowed.
    assert!(!e.reason.contains("10.0.0.0/8"), "{e}");
    assert!(!e.reason.contains("100.64.0.0/10"), "{e}");
    let e = parse_subnet_prefix("p", "126.0.0.0/7").expect_err("contains 127/8");
    assert!(e.fix.contains("split it into 126.0.0.0/8"), "{e}");
}

#[test]
fn slash_0_ipv6_slash_31_and_leading_zeros_are_refused_in_subnet_prefixes() {
    let e = parse_subnet_prefix("p", "0.0.0.0/0").expect_err("/0");
    assert!(e.reason.contains("a /0 covers every IPv4 address"), "{e}");
    assert!(e.fix.contains("default_action = \"Allow\""), "{e}");
    let e = parse_subnet_prefix("p", "fd00::/8").expect_err("IPv6");
    assert!(
        e.reason
            .contains("virtual network rules can name only IPv4 addresses and ranges"),
        "{e}"
    );
    let e = parse_subnet_prefix("p", "10.1.2.10/31").expect_err("/31");
    assert!(e.fix.contains("10.1.2.10 and 10.1.2.11"), "{e}");
    let e = parse_subnet_prefix("p", "10.01.2.0/24").expect_err("leading zero");
    assert!(e.reason.contains("leading zero"), "{e}");
    let e = parse_subnet_prefix("p", "10.1.2.0/33").expect_err("length");
    assert!(e.fix.contains("0–32"), "{e}");
}

#[test]
fn prefixes_of_a_rule_are_canonical_sorted_and_kept_once_with_a_warning() {
    let v = load(&one_rule(
        "[\"10.1.3.0/24\", \"10.1.2.7\", \"10.1.2.7/32\", \"10.1.2.0/25\"]",
    ));
    let rule = &v.policy.virtual_network_rules[0];
    assert_eq!(
        rule.address_prefixes,
        [net("10.1.2.0/25"), net("10.1.2.7/32"), net("10.1.3.0/24")]
    );
    let paths: Vec<&str> = v.warnings.iter().map(|w| w.path.as_str()).collect();
    assert!(
        paths.contains(&"virtual_network_rules[0].address_prefixes[2]"),
        "{:?}",
        v.warnings
    );
    let dup = v
        .warnings
        .iter()
        .find(|w| w.path.ends_with("address_prefixes[2]"))
        .expect("duplicate warning");
    assert!(
        dup.message
            .contains("virtual_network_rules[0].address_prefixes[1] \"10.1.2.7\""),
        "{dup}"
    );
    // 10.1.2.7 lies inside 10.1.2.0/25 of the same rule.
    assert!(
        v.warnings.iter().any(|w| w
            .message
            .contains("10.1.2.7 lies inside this rule's 10.1.2.0/25")),
        "{:?}",
        v.warnings
    );
}

#[test]
fn every_refused_prefix_is_reported_with_its_own_path() {
    let errors = refuse(&one_rule(
        "[\"10.1.2.3/24\", \"10.1.4.0/24\", \"127.0.0.1\"]",
    ));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "virtual_network_rules[0].address_prefixes[0]",
            "virtual_network_rules[0].address_prefixes[2]"
        ],
        "{errors}"
    );
}

#[test]
fn ids_compare_case_insensitively_and_a_duplicate_names_both_paths() {
    let errors = refuse(&deny_with_vnets(&[
        (
            "vnet-prod/subnets/app",
            "[\"10.1.2.0/24\"]",
            "{ interface = \"eth1\" }",
        ),
        (
            "VNET-PROD/Subnets/App",
            "[\"10.1.3.0/24\"]",
            "{ interface = \"eth2\" }",
        ),
    ]));
    let e = single(&errors);
    assert_eq!(
        (e.path.as_str(), e.value.as_str()),
        ("virtual_network_rules[1].id", "VNET-PROD/Subnets/App")
    );
    assert!(
        e.reason
            .contains("virtual_network_rules[0].id \"vnet-prod/subnets/app\""),
        "{e}"
    );
    assert!(e.reason.contains("case-insensitively"), "{e}");
}

#[test]
fn rules_are_sorted_by_id_ignoring_case_and_keep_the_id_as_written() {
    let v = load(&deny_with_vnets(&[
        ("vnet-b/subnets/x", "[\"10.2.0.0/24\"]", "{ vlan = 20 }"),
        ("Vnet-A/subnets/y", "[\"10.1.0.0/24\"]", "{ vlan = 10 }"),
    ]));
    let ids: Vec<&str> = v
        .policy
        .virtual_network_rules
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ids, ["Vnet-A/subnets/y", "vnet-b/subnets/x"]);
}

#[test]
fn a_missing_or_empty_id_is_refused() {
    let errors = refuse(
        "default_action = \"Deny\"\n[[virtual_network_rules]]\naddress_prefixes = [\"10.1.2.0/24\"]\n\
         endpoint = { interface = \"eth1\" }\n",
    );
    let e = single(&errors);
    assert_eq!(e.path, "virtual_network_rules[0]");
    assert_eq!(e.reason, "the rule has no `id`");
    for id in ["", "  ", " vnet/subnets/a"] {
        let errors = refuse(&deny_with_vnets(&[(
            id,
            "[\"10.1.2.0/24\"]",
            "{ interface = \"eth1\" }",
        )]));
        assert_eq!(
            single(&errors).path,
            "virtual_network_rules[0].id",
            "{id:?}"
        );
    }
}

#[test]
fn endpoints_take_an_interface_a_vlan_or_both() {
    let v = load(&deny_with_vnets(&[
        ("a", "[\"10.1.0.0/24\"]", "{ interface = \"eth1\" }"),
        ("b", "[\"10.2.0.0/24\"]", "{ vlan = 120 }"),
        (
            "c",
            "[\"10.3.0.0/24\"]",
            "{ interface = \"ens5\", vlan = 4094 }",
        ),
        ("d", "[\"10.4.0.0/24\"]", "{ vlan = 1 }"),
    ]));
    let shown: Vec<String> = v
        .policy
        .virtual_network_rules
        .iter()
        .map(|r| r.endpoint.to_string())
        .collect();
    assert_eq!(
        shown,
        [
            "interface eth1",
            "VLAN 120",
            "interface ens5, VLAN 4094",
            "VLAN 1"
        ]
    );
}

#[test]
fn an_endpoint_is_required_and_must_name_an_interface_or_a_vlan() {
    let errors = refuse(
        "default_action = \"Deny\"\n[[virtual_network_rules]]\nid = \"a\"\n\
         address_prefixes = [\"10.1.2.0/24\"]\n",
    );
    let e = single(&errors);
    assert_eq!(e.path, "virtual_network_rules[0].endpoint");
    assert!(e.reason.contains("service endpoint"), "{e}");
    assert!(e.fix.contains("interface = \"eth1\""), "{e}");
    let errors = refuse(&one_rule("[\"10.1.2.0/24\"]").replace("{ interface = \"eth1\" }", "{}"));
    let e = single(&errors);
    assert_eq!(e.path, "virtual_network_rules[0].endpoint");
    assert!(e.reason.contains("neither an interface nor a VLAN"), "{e}");
}

#[test]
fn interface_names_follow_the_linux_rules() {
    for bad in [
        "",
        "a-name-of-16-byt",
        ".",
        "..",
        "eth0/1",
        "eth0:1",
        "eth 1",
        "eth\t1",
    ] {
        let errors = refuse(&deny_with_vnets(&[(
            "a",
            "[\"10.1.2.0/24\"]",
            &format!("{{ interface = {bad:?} }}"),
        )]));
        let e = single(&errors);
        assert_eq!(
            e.path, "virtual_network_rules[0].endpoint.interface",
            "{bad:?}"
        );
        assert_eq!(e.value, bad);
        assert!(e.fix.contains("ip link"), "{e}");
    }
    let v = load(&deny_with_vnets(&[(
        "a",
        "[\"10.1.2.0/24\"]",
        "{ interface = \"a-name-of-15-by\" }",
    )]));
    assert_eq!(
        v.policy.virtual_network_rules[0]
            .endpoint
            .interface
            .as_deref(),
        Some("a-name-of-15-by")
    );
}

#[test]
fn vlan_ids_outside_1_to_4094_are_refused_naming_the_reserved_ones() {
    for (vlan, reason) in [
        ("0", "VLAN id 0 is reserved"),
        ("4095", "VLAN id 4095 is reserved"),
        ("4096", "VLAN id 4096 is outside 1–4094"),
        ("-1", "VLAN id -1 is outside 1–4094"),
    ] {
        let errors = refuse(&deny_with_vnets(&[(
            "a",
            "[\"10.1.2.0/24\"]",
            &format!("{{ vlan = {vlan} }}"),
        )]));
        let e = single(&errors);
        assert_eq!(
            (e.path.as_str(), e.value.as_str()),
            ("virtual_network_rules[0].endpoint.vlan", vlan)
        );
        assert!(e.reason.starts_with(reason), "{e}");
    }
}

#[test]
fn the_same_prefix_under_the_same_endpoint_in_two_rules_is_a_warning() {
    let v = load(&deny_with_vnets(&[
        ("a", "[\"10.1.2.0/24\"]", "{ interface = \"eth1\" }"),
        ("b", "[\"10.1.2.0/24\"]", "{ interface = \"eth1\" }"),
        ("c", "[\"10.1.2.0/24\"]", "{ interface = \"eth2\" }"),
    ]));
    assert_eq!(v.policy.virtual_network_rules.len(), 3);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    let w = &v.warnings[0];
    assert_eq!(w.path, "virtual_network_rules[1].address_prefixes[0]");
    assert!(
        w.message.starts_with(
            "10.1.2.0/24 under interface eth1 is already admitted by virtual_network_rules[0]"
        ),
        "{w}"
    );
}

#[test]
fn a_prefix_inside_another_rules_prefix_under_the_same_endpoint_is_a_warning() {
    let v = load(&deny_with_vnets(&[
        ("a", "[\"10.1.0.0/16\"]", "{ vlan = 120 }"),
        ("b", "[\"10.1.2.0/24\"]", "{ vlan = 120 }"),
        ("c", "[\"10.1.3.0/24\"]", "{ vlan = 121 }"),
    ]));
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert!(
        v.warnings[0]
            .message
            .starts_with("10.1.2.0/24 lies inside virtual_network_rules[0] 10.1.0.0/16"),
        "{}",
        v.warnings[0]
    );
}

#[test]
fn ignore_missing_endpoint_comment_and_expiry_are_read() {
    let v = load(
        "default_action = \"Deny\"\n[[virtual_network_rules]]\nid = \"a\"\n\
         address_prefixes = [\"10.1.2.0/24\"]\nendpoint = { interface = \"eth9\" }\n\
         ignore_missing_endpoint = true\ncomment = \"new subnet\"\n\
         expires_at = \"2027-01-31T00:00:00Z\"\n",
    );
    let rule = &v.policy.virtual_network_rules[0];
    assert!(rule.ignore_missing_endpoint);
    assert_eq!(rule.comment.as_deref(), Some("new subnet"));
    assert_eq!(
        rule.expires_at,
        Some(humantime::parse_rfc3339("2027-01-31T00:00:00Z").expect("time"))
    );
}

#[test]
fn ignore_missing_endpoint_without_an_interface_is_a_warning() {
    let v = load(
        "default_action = \"Deny\"\n[[virtual_network_rules]]\nid = \"a\"\n\
         address_prefixes = [\"10.1.2.0/24\"]\nendpoint = { vlan = 7 }\n\
         ignore_missing_endpoint = true\n",
    );
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert!(v.warnings[0].message.contains("without an interface"));
}

#[test]
fn a_past_expiry_leaves_the_rule_out_and_a_close_one_warns() {
    let base = "default_action = \"Deny\"\n[[virtual_network_rules]]\nid = \"a\"\n\
                address_prefixes = [\"10.1.2.0/24\"]\nendpoint = { interface = \"eth1\" }\n";
    let expired = load(&format!("{base}expires_at = \"2026-05-01T00:00:00Z\"\n"));
    assert!(expired.policy.virtual_network_rules.is_empty());
    assert_eq!(
        expired.warnings[0].path,
        "virtual_network_rules[0].expires_at"
    );
    assert!(
        expired.warnings[0].message.contains("expired at"),
        "{}",
        expired.warnings[0]
    );
    let v = load(&format!("{base}expires_at = 2026-06-01T02:00:00Z\n"));
    assert_eq!(v.warnings.len(), 1);
    assert_eq!(v.warnings[0].path, "virtual_network_rules[0].expires_at");
    assert_eq!(
        v.policy.virtual_network_rules[0].expires_at,
        Some(now() + std::time::Duration::from_secs(7200))
    );
}

#[test]
fn rule_items_of_the_wrong_shape_are_refused_each_with_its_path() {
    let errors = refuse(
        r#"
default_action = "Deny"
[[virtual_network_rules]]
id = 7
address_prefixes = "10.1.2.0/24"
endpoint = "eth1"
[[virtual_network_rules]]
id = "b"
address_prefixes = [10]
endpoint = { interface = "eth1", vlan = "120", port = 1 }
ignore_missing_endpoint = "yes"
subnet = "x"
"#,
    );
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "virtual_network_rules[0].address_prefixes",
            "virtual_network_rules[0].endpoint",
            "virtual_network_rules[0].id",
            "virtual_network_rules[1].address_prefixes[0]",
            "virtual_network_rules[1].endpoint.port",
            "virtual_network_rules[1].endpoint.vlan",
            "virtual_network_rules[1].ignore_missing_endpoint",
            "virtual_network_rules[1].subnet",
        ],
        "{errors}"
    );
    assert!(
        errors.0[0]
            .fix
            .contains("address_prefixes = [\"10.1.2.0/24\"]"),
        "{}",
        errors.0[0]
    );
    assert!(
        errors.0[1].fix.contains("interface = \"eth1\""),
        "{}",
        errors.0[1]
    );
    assert!(errors.0[5].fix.contains("vlan = 120"), "{}", errors.0[5]);
    let errors = refuse("default_action = \"Deny\"\nvirtual_network_rules = [\"x\"]\n");
    assert_eq!(single(&errors).path, "virtual_network_rules[0]");
    let errors = refuse(&one_rule("[]"));
    let e = single(&errors);
    assert_eq!(e.path, "virtual_network_rules[0].address_prefixes");
    assert!(e.reason.contains("empty"), "{e}");
}

/// `n` distinct valid rules, ids `vnet/subnets/sN`, prefixes 10.N.
fn many(n: usize) -> String {
    let mut text = String::from("default_action = \"Deny\"\n");
    for i in 0..n {
        text.push_str(&format!(
            "[[virtual_network_rules]]\nid = \"vnet/subnets/s{i}\"\n\
             address_prefixes = [\"10.{}.{}.0/24\"]\nendpoint = {{ interface = \"eth1\" }}\n",
            i / 256,
            i % 256
        ));
    }
    text
}

#[test]
fn a_policy_of_127_subnet_rules_loads_and_one_of_128_is_refused_with_the_exact_limit_message() {
    assert_eq!(load(&many(127)).policy.virtual_network_rules.len(), 127);
    let errors = refuse(&many(128));
    let e = single(&errors);
    assert_eq!(e.path, "virtual_network_rules");
    assert_eq!(
        e.reason,
        "128 virtual network rules exceed the limit of 127 (profile kv-2020)"
    );
    assert!(e.fix.contains("remove 1 rule"), "{e}");
    assert!(
        e.fix
            .contains("limits = \"kv-current\" (200 virtual network rules"),
        "{e}"
    );
}

#[test]
fn kv_current_admits_200_subnet_rules_and_explicit_limits_are_named() {
    let v = load(&format!("limits = \"kv-current\"\n{}", many(200)));
    assert_eq!(v.policy.virtual_network_rules.len(), 200);
    let errors = refuse(&format!("limits = \"kv-current\"\n{}", many(201)));
    assert_eq!(
        single(&errors).reason,
        "201 virtual network rules exceed the limit of 200 (profile kv-current)"
    );
    let errors = refuse(&format!(
        "limits = {{ ip_rules = 5, virtual_network_rules = 2 }}\n{}",
        many(3)
    ));
    let e = single(&errors);
    assert_eq!(
        e.reason,
        "3 virtual network rules exceed the limit of 2 (profile explicit)"
    );
    assert!(e.fix.contains("limits.virtual_network_rules"), "{e}");
    let v = load(&format!(
        "limits = {{ ip_rules = 5, virtual_network_rules = 3 }}\n{}",
        many(3)
    ));
    assert_eq!(v.policy.limits.profile, LimitProfile::Explicit);
}

#[test]
fn default_allow_warning_counts_subnet_rules_too() {
    let v = load(&one_rule("[\"10.1.2.0/24\"]").replace("\"Deny\"", "\"Allow\""));
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert!(
        v.warnings[0]
            .message
            .contains("(1 virtual network rule is kept but not consulted)"),
        "{}",
        v.warnings[0]
    );
}

#[test]
fn subnet_rules_serialize_with_prefixes_as_text() {
    let v = load(&one_rule("[\"10.1.2.0/24\"]"));
    let json = serde_json::to_value(&v.policy).expect("serializes");
    let rule = &json["virtual_network_rules"][0];
    assert_eq!(rule["address_prefixes"][0], "10.1.2.0/24");
    assert_eq!(rule["endpoint"]["interface"], "eth1");
    assert_eq!(json["trusted_services"]["enabled"][0], "VirtualMachines");
}

#[test]
fn an_endpoint_flag_is_checked_as_a_file_endpoint_is() {
    use super::super::parse_endpoint;
    assert_eq!(
        parse_endpoint("--endpoint", "eth1,vlan:120").expect("valid"),
        Endpoint {
            interface: Some("eth1".into()),
            vlan: Some(120)
        }
    );
    assert_eq!(
        parse_endpoint("--endpoint", "vlan:7").expect("valid"),
        Endpoint {
            interface: None,
            vlan: Some(7)
        }
    );
    let e = parse_endpoint("--endpoint", "eth1,vlan:4095").expect_err("reserved VLAN");
    assert_eq!((e.path.as_str(), e.value.as_str()), ("--endpoint", "4095"));
    assert!(e.fix.contains("1–4094"), "{e}");
    let e = parse_endpoint("--endpoint", "vlan:x").expect_err("not a number");
    assert_eq!(e.value, "vlan:x");
    assert!(e.fix.contains("1–4094"), "{e}");
    let e = parse_endpoint("--endpoint", "eth:1").expect_err("':' in a name");
    assert_eq!((e.path.as_str(), e.value.as_str()), ("--endpoint", "eth:1"));
}
