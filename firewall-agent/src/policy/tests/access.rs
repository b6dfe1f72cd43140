//! `public_network_access` and `[[private_endpoints]]`: read, validated
//! with the path of each value, and compiled into the program's tables
//! (IP rules without entries while Disabled; a private endpoint's prefixes
//! under its interface, with their own hit slot).

use super::super::{PublicNetworkAccess, export_native};
use super::{load, refuse, single};
use crate::compile::{RuleKind, compile, hit_slots_for, rule_table};
use crate::links::InterfaceIndex;

const BOTH: &str = r#"
default_action = "Deny"
public_network_access = "Disabled"
ip_rules = ["203.0.113.7"]
[[private_endpoints]]
interface = "eth2"
allowed_prefixes = ["10.9.0.0/24", "10.9.0.0/24", "192.168.7.1"]
"#;

#[test]
fn private_endpoints_are_canonical_sorted_and_each_prefix_kept_once() {
    let v = load(BOTH);
    assert_eq!(
        v.policy.public_network_access,
        PublicNetworkAccess::Disabled
    );
    let endpoint = &v.policy.private_endpoints[0];
    assert_eq!(endpoint.interface, "eth2");
    let shown: Vec<String> = endpoint
        .allowed_prefixes
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(shown, ["10.9.0.0/24", "192.168.7.1/32"]);
    let paths: Vec<&str> = v.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "private_endpoints[0].allowed_prefixes[1]",
            "public_network_access"
        ]
    );
    assert!(
        v.policy.endpoint_interfaces().contains("eth2"),
        "a private endpoint's interface is filtered"
    );
    // And out and back.
    assert_eq!(load(&export_native(&v.policy)).policy, v.policy);
}

#[test]
fn each_private_endpoint_problem_is_refused_with_its_path() {
    let e = refuse(
        r#"
default_action = "Deny"
[[private_endpoints]]
interface = "eth 2"
allowed_prefixes = ["10.9.0.1/24"]
[[private_endpoints]]
allowed_prefixes = []
[[private_endpoints]]
interface = "eth3"
vlan = 7
[[private_endpoints]]
interface = "eth4"
allowed_prefixes = ["10.1.0.0/16"]
[[private_endpoints]]
interface = "eth4"
allowed_prefixes = ["10.2.0.0/16"]
"#,
    );
    let paths: Vec<&str> = e.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "private_endpoints[2].vlan",
            "private_endpoints[0].interface",
            "private_endpoints[0].allowed_prefixes[0]",
            "private_endpoints[1]",
            "private_endpoints[1].allowed_prefixes",
            "private_endpoints[2]",
            "private_endpoints[4].interface",
        ],
        "{e}"
    );
}

#[test]
fn public_network_access_takes_enabled_or_disabled_only() {
    let e = refuse("default_action = \"Deny\"\npublic_network_access = \"Off\"\n");
    let e = single(&e);
    assert_eq!(e.path, "public_network_access");
    assert_eq!(e.value, "Off");
    assert!(
        e.fix.contains("public_network_access = \"Disabled\""),
        "{e}"
    );
    let e = refuse("default_action = \"Deny\"\npublic_network_access = false\n");
    assert_eq!(single(&e).path, "public_network_access");
    assert_eq!(
        load("default_action = \"Deny\"\n")
            .policy
            .public_network_access,
        PublicNetworkAccess::Enabled
    );
}

#[test]
fn disabled_public_access_compiles_no_ip_rule_entry_and_a_private_endpoint_its_own_slot() {
    let v = load(BOTH);
    let mut interfaces = InterfaceIndex::new();
    interfaces.insert("eth2".into(), 7);
    let clock = crate::clock::MonotonicClock::now();
    let tables = compile(&v.policy, &interfaces, &clock);
    assert!(tables.ip_rules.is_empty(), "{:?}", tables.ip_rules);
    assert_eq!(tables.vnet_rules.len(), 2);
    assert!(tables.vnet_rules.keys().all(|k| k.ifindex == 7));
    let owners = rule_table(&v.policy, &interfaces, &tables, hit_slots_for(&v.policy));
    let kinds: Vec<(RuleKind, &str)> = owners
        .iter()
        .filter(|(_, r)| r.kind != RuleKind::Trusted)
        .map(|(_, r)| (r.kind, r.name.as_str()))
        .collect();
    assert_eq!(kinds, [(RuleKind::PrivateEndpoint, "eth2")]);
    // Enabled again: the IP rule has its entry.
    let enabled = load(&BOTH.replace("\"Disabled\"", "\"Enabled\""));
    assert_eq!(
        compile(&enabled.policy, &interfaces, &clock).ip_rules.len(),
        1
    );
}
