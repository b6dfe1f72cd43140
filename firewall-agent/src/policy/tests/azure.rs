//! Azure JSON in: the input shapes, `bypass` as ARM reads it, JSON paths in
//! errors, the subnet map, and a real-looking `az keyvault show` output.

use std::path::Path;

use ipnet::Ipv4Net;

use super::super::{
    Bypass, DefaultAction, LimitProfile, LoadError, Mode, PolicyFormat, load_policy,
};
use super::{TempDir, fixture, load_azure, refuse_azure, single};

const ARM_APP: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/\
                       rg-network/providers/Microsoft.Network/virtualNetworks/vnet-prod/subnets/app";

fn net(text: &str) -> Ipv4Net {
    text.parse().expect("test network")
}

#[test]
fn the_three_input_shapes_load_the_same_policy() {
    let acls = r#"{"bypass": "None", "defaultAction": "Deny",
                   "ipRules": [{"value": "203.0.113.7/32"}], "virtualNetworkRules": []}"#;
    let shapes = [
        format!(
            r#"{{"id": "/subscriptions/x/vaults/kv", "name": "kv", "properties": {{"networkAcls": {acls}, "sku": {{"name": "standard"}}}}}}"#
        ),
        format!(r#"{{"properties": {{"networkAcls": {acls}}}}}"#),
        format!(r#"{{"networkAcls": {acls}}}"#),
        acls.to_string(),
    ];
    let first = load_azure(&shapes[0], None);
    assert_eq!(first.policy.ip_rules[0].network, net("203.0.113.7/32"));
    assert_eq!(first.policy.bypass, Bypass::None);
    for shape in &shapes[1..] {
        assert_eq!(load_azure(shape, None).policy, first.policy, "{shape}");
    }
}

#[test]
fn an_absent_or_null_bypass_means_azure_services_as_arm_reads_it() {
    let v = load_azure(r#"{"defaultAction": "Deny"}"#, None);
    assert_eq!(v.policy.bypass, Bypass::AzureServices);
    // Without a service-tags file the bypass admits nothing: said on the
    // JSON path of bypass.
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "bypass");
    let v = load_azure(
        r#"{"properties": {"networkAcls": {"defaultAction": "Deny", "bypass": null}}}"#,
        None,
    );
    assert_eq!(v.policy.bypass, Bypass::AzureServices);
    assert_eq!(v.warnings[0].path, "properties.networkAcls.bypass");
    let v = load_azure(r#"{"defaultAction": "deny", "bypass": "none"}"#, None);
    assert_eq!(
        (v.policy.default_action, v.policy.bypass),
        (DefaultAction::Deny, Bypass::None)
    );
}

#[test]
fn a_missing_default_action_is_an_error_worded_in_json() {
    let errors = refuse_azure(
        r#"{"properties": {"networkAcls": {"bypass": "None"}}}"#,
        None,
    );
    let e = single(&errors);
    assert_eq!(e.path, "properties.networkAcls.defaultAction");
    assert!(e.reason.starts_with("`defaultAction` is missing"), "{e}");
    assert!(
        e.fix.contains("\"defaultAction\": \"Deny\" (only sources"),
        "{e}"
    );
    let errors = refuse_azure(r#"{"defaultAction": "Block", "bypass": 1}"#, None);
    let got: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        got,
        [("bypass", "1"), ("defaultAction", "Block")],
        "{errors}"
    );
}

#[test]
fn ip_rule_errors_carry_json_paths_in_the_shape_of_the_input() {
    let errors = refuse_azure(
        r#"{"properties": {"networkAcls": {"defaultAction": "Deny", "bypass": "None",
            "ipRules": [{"value": "203.0.113.7"}, {"value": "10.0.0.0/8"},
                        {"value": "203.0.113.77/24"}, {"value": "0.0.0.0/0"}]}}}"#,
        None,
    );
    let got: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("properties.networkAcls.ipRules[1].value", "10.0.0.0/8"),
            ("properties.networkAcls.ipRules[2].value", "203.0.113.77/24"),
            ("properties.networkAcls.ipRules[3].value", "0.0.0.0/0"),
        ]
    );
    assert!(errors.0[0].reason.contains("RFC 1918"), "{}", errors.0[0]);
    assert!(
        errors.0[0]
            .fix
            .contains("add the subnet to virtualNetworkRules"),
        "{}",
        errors.0[0]
    );
    assert!(
        errors.0[1].fix.contains("203.0.113.0/24"),
        "{}",
        errors.0[1]
    );
    assert!(
        errors.0[2].fix.contains("set \"defaultAction\": \"Allow\""),
        "{}",
        errors.0[2]
    );
    // The bare networkAcls object: paths start at its fields.
    let errors = refuse_azure(
        r#"{"defaultAction": "Deny", "ipRules": [{"value": "127.0.0.1"}]}"#,
        None,
    );
    assert_eq!(single(&errors).path, "ipRules[0].value");
}

#[test]
fn an_address_and_its_slash_32_in_json_are_one_rule_reported_once() {
    let v = load_azure(
        r#"{"defaultAction": "Deny", "bypass": "None",
            "ipRules": [{"value": "203.0.113.10"}, {"value": "203.0.113.10/32"}]}"#,
        None,
    );
    assert_eq!(v.policy.ip_rules.len(), 1);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "ipRules[1]");
    assert!(
        v.warnings[0]
            .message
            .contains("ipRules[0] \"203.0.113.10\"")
    );
}

#[test]
fn rule_items_of_the_wrong_shape_are_refused_with_json_paths() {
    let errors = refuse_azure(
        r#"{"defaultAction": "Deny", "ipRules": ["203.0.113.7", {"val": "x"}, {"value": 7}],
            "virtualNetworkRules": [{"id": 5}, {}, {"id": "/x/subnets/y", "ignoreMissingVnetServiceEndpoint": "yes"}]}"#,
        None,
    );
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "ipRules[0]",
            "ipRules[1]",
            "ipRules[2].value",
            "virtualNetworkRules[0].id",
            "virtualNetworkRules[1]",
            "virtualNetworkRules[2].ignoreMissingVnetServiceEndpoint",
            "virtualNetworkRules[2].id",
        ],
        "{errors}"
    );
    assert!(
        errors.0[0].fix.contains("{\"value\": \"203.0.113.7\"}"),
        "{}",
        errors.0[0]
    );
    let errors = refuse_azure(
        r#"{"defaultAction": "Deny", "ipRules": "203.0.113.7"}"#,
        None,
    );
    assert_eq!(single(&errors).path, "ipRules");
}

#[test]
fn a_subnet_rule_without_a_map_entry_is_an_error_naming_it_and_the_fix() {
    let json = format!(
        r#"{{"defaultAction": "Deny", "bypass": "None", "virtualNetworkRules": [{{"id": "{ARM_APP}"}}]}}"#
    );
    let errors = refuse_azure(&json, None);
    let e = single(&errors);
    assert_eq!(
        (e.path.as_str(), e.value.as_str()),
        ("virtualNetworkRules[0].id", ARM_APP)
    );
    assert!(e.reason.contains("no subnet map gives them"), "{e}");
    assert!(
        e.fix.contains("[[subnet]] id = \"vnet-prod/subnets/app\""),
        "{e}"
    );
    let errors = refuse_azure(
        &json,
        Some((
            "map.toml",
            "[[subnet]]\nid = \"vnet-prod/subnets/db\"\naddress_prefixes = [\"10.1.9.0/24\"]\n\
             endpoint = { interface = \"eth1\" }\n",
        )),
    );
    assert!(
        errors.0[0].reason.contains("the subnet map has no entry"),
        "{errors}"
    );
}

#[test]
fn map_entries_match_by_full_id_or_trailing_name_case_insensitively() {
    let json = format!(
        r#"{{"defaultAction": "Deny", "bypass": "None", "virtualNetworkRules": [
            {{"id": "{}", "ignoreMissingVnetServiceEndpoint": true}},
            {{"id": "{}"}}]}}"#,
        ARM_APP.to_lowercase(),
        ARM_APP.replace("/app", "/data")
    );
    let map = format!(
        "[[subnet]]\nid = \"VNET-PROD/subnets/APP\"\naddress_prefixes = [\"10.1.2.0/24\"]\n\
         endpoint = {{ interface = \"eth1\" }}\n\
         [[subnet]]\nid = \"vnet-prod/subnets/data\"\naddress_prefixes = [\"10.1.3.0/24\"]\n\
         endpoint = {{ vlan = 120 }}\n\
         # The full id wins over the trailing match above.\n\
         [[subnet]]\nid = \"{}\"\naddress_prefixes = [\"10.1.4.0/24\"]\n\
         endpoint = {{ vlan = 121 }}\n",
        ARM_APP.replace("/app", "/data").to_uppercase()
    );
    let v = load_azure(&json, Some(("map.toml", &map)));
    let rules = &v.policy.virtual_network_rules;
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].id, ARM_APP.to_lowercase());
    assert_eq!(rules[0].address_prefixes, [net("10.1.2.0/24")]);
    assert!(rules[0].ignore_missing_endpoint);
    assert_eq!(rules[1].address_prefixes, [net("10.1.4.0/24")]);
    assert!(!rules[1].ignore_missing_endpoint);
    // The trailing entry for data is not used.
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "map.toml:subnet[1]");
    assert!(v.warnings[0].message.contains("not used"));
}

#[test]
fn map_errors_are_reported_under_the_map_file_path() {
    let json =
        format!(r#"{{"defaultAction": "Deny", "virtualNetworkRules": [{{"id": "{ARM_APP}"}}]}}"#);
    let map = "mode = \"Audited\"\ndefault_action = \"Allow\"\ncolour = 1\n\
               [[subnet]]\nid = \"vnet-prod/subnets/app\"\naddress_prefixes = [\"10.1.2.3/24\"]\n\
               endpoint = { interface = \"eth/1\" }\nignore_missing_endpoint = true\n";
    let errors = refuse_azure(&json, Some(("/etc/vaultfw/map.toml", map)));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/etc/vaultfw/map.toml:colour",
            "/etc/vaultfw/map.toml:default_action",
            "/etc/vaultfw/map.toml:subnet[0].ignore_missing_endpoint",
            "/etc/vaultfw/map.toml:mode",
            "/etc/vaultfw/map.toml:subnet[0].address_prefixes[0]",
            "/etc/vaultfw/map.toml:subnet[0].endpoint.interface",
        ],
        "{errors}"
    );
    assert!(
        errors.0[1].fix.contains("\"defaultAction\""),
        "{}",
        errors.0[1]
    );
    assert!(
        errors.0[2]
            .fix
            .contains("\"ignoreMissingVnetServiceEndpoint\": true"),
        "{}",
        errors.0[2]
    );
    assert!(errors.0[4].fix.contains("10.1.2.0/24"), "{}", errors.0[4]);
    let errors = refuse_azure(
        r#"{"defaultAction": "Deny"}"#,
        Some(("m.toml", "mode = \n")),
    );
    assert_eq!(single(&errors).path, "m.toml:1:8");
}

#[test]
fn a_map_entry_used_by_two_rules_reports_its_errors_once() {
    let json = format!(
        r#"{{"defaultAction": "Deny", "virtualNetworkRules": [{{"id": "{ARM_APP}"}},
            {{"id": "{}"}}]}}"#,
        ARM_APP.replace("rg-network", "rg-other")
    );
    let map = "[[subnet]]\nid = \"vnet-prod/subnets/app\"\naddress_prefixes = [\"127.0.0.0/24\"]\n\
               endpoint = { interface = \"eth1\" }\n";
    let errors = refuse_azure(&json, Some(("map.toml", map)));
    assert_eq!(
        single(&errors).path,
        "map.toml:subnet[0].address_prefixes[0]"
    );
}

#[test]
fn ip_rule_metadata_in_the_map_attaches_by_network() {
    let v = load_azure(
        r#"{"defaultAction": "Deny", "bypass": "None", "ipRules": [{"value": "192.0.2.77/32"}]}"#,
        Some((
            "map.toml",
            "[[ip_rule]]\nvalue = \"192.0.2.77\"\ncomment = \"build agent\"\n\
             expires_at = \"2027-01-31T00:00:00Z\"\n\
             [[ip_rule]]\nvalue = \"198.51.100.9\"\ncomment = \"gone\"\n",
        )),
    );
    let rule = &v.policy.ip_rules[0];
    assert_eq!(rule.comment.as_deref(), Some("build agent"));
    assert!(rule.expires_at.is_some());
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "map.toml:ip_rule[1]");
}

#[test]
fn unknown_fields_inside_network_acls_are_warned_about_and_ignored() {
    let v = load_azure(
        r#"{"defaultAction": "Deny", "bypass": "None", "ipRulesV6": [],
            "ipRules": [{"value": "203.0.113.7", "action": "Allow"}]}"#,
        None,
    );
    let paths: Vec<&str> = v.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["ipRules[0].action", "ipRulesV6"]);
}

#[test]
fn json_that_is_not_network_acls_is_refused_saying_which_shapes_are_read() {
    let e = refuse_azure("[1]", None);
    assert_eq!(single(&e).path, "policy");
    let e = refuse_azure(r#"{"name": "kv"}"#, None);
    assert!(single(&e).fix.contains("az keyvault show"), "{e}");
    let e = refuse_azure(r#"{"properties": {"networkAcls": null}}"#, None);
    let e = single(&e);
    assert_eq!(e.path, "properties.networkAcls");
    assert!(e.reason.contains("admits every source"), "{e}");
    let e = refuse_azure("{\n  \"defaultAction\": \"Deny\",\n}", None);
    let e = single(&e);
    assert_eq!(e.path, "3:1");
    assert!(e.reason.starts_with("JSON syntax error"), "{e}");
}

#[test]
fn public_network_access_is_read_from_the_vault_properties_and_disabled_ip_rules_warn() {
    let v = load_azure(
        r#"{"properties": {"publicNetworkAccess": "Disabled",
            "networkAcls": {"defaultAction": "Deny", "bypass": "None"}}}"#,
        None,
    );
    assert_eq!(
        v.policy.public_network_access,
        super::super::PublicNetworkAccess::Disabled
    );
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let v = load_azure(
        r#"{"properties": {"publicNetworkAccess": "Disabled",
            "networkAcls": {"defaultAction": "Deny", "ipRules": [{"value": "203.0.113.7"}]}}}"#,
        None,
    );
    let warning = v
        .warnings
        .iter()
        .find(|w| w.path == "properties.publicNetworkAccess")
        .unwrap_or_else(|| panic!("{:?}", v.warnings));
    assert!(
        warning.message.contains("public network access disabled"),
        "{warning:?}"
    );
    let e = refuse_azure(
        r#"{"properties": {"publicNetworkAccess": "Off",
            "networkAcls": {"defaultAction": "Deny"}}}"#,
        None,
    );
    let e = single(&e);
    assert_eq!(e.path, "properties.publicNetworkAccess");
    assert!(
        e.fix.contains("\"publicNetworkAccess\": \"Disabled\""),
        "{e}"
    );
}

#[test]
fn a_real_looking_az_keyvault_show_output_loads_with_its_subnet_map() {
    let v = load_policy(
        &fixture("az-keyvault-show.json"),
        Some(&fixture("az-keyvault-show.subnet-map.toml")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p = &v.policy;
    assert_eq!(p.default_action, DefaultAction::Deny);
    assert_eq!(p.bypass, Bypass::AzureServices);
    assert_eq!(p.mode, Mode::Audit);
    assert_eq!(p.limits.profile, LimitProfile::KvCurrent);
    assert_eq!(
        p.data_plane.tcp_ports.iter().copied().collect::<Vec<_>>(),
        [443, 8443]
    );
    let shown: Vec<String> = p.ip_rules.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["192.0.2.77", "198.51.100.0/24", "203.0.113.10"]);
    assert_eq!(p.ip_rules[0].comment.as_deref(), Some("build agent"));
    let rules = &p.virtual_network_rules;
    assert_eq!(rules.len(), 2);
    assert!(
        rules[0]
            .id
            .ends_with("/virtualnetworks/vnet-prod/subnets/app")
    );
    assert_eq!(rules[0].address_prefixes, [net("10.1.2.0/24")]);
    assert_eq!(rules[0].endpoint.interface.as_deref(), Some("eth1"));
    assert_eq!(rules[0].comment.as_deref(), Some("app tier"));
    assert!(!rules[0].ignore_missing_endpoint);
    assert_eq!(
        rules[1].address_prefixes,
        [net("10.1.3.0/24"), net("100.64.7.0/24")]
    );
    assert_eq!(rules[1].endpoint.vlan, Some(120));
    assert!(rules[1].ignore_missing_endpoint);
    let names: Vec<&str> = p.trusted_services.enabled.iter().map(|s| s.name).collect();
    assert_eq!(names, ["AzureBackup", "Sql"]);
    assert_eq!(
        p.trusted_services.service_tags_file.as_deref(),
        Some(fixture("ServiceTags_test.json").as_path())
    );
    assert_eq!(p.trusted_services.prefixes.len(), 2);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
}

#[test]
fn load_policy_detects_the_format_and_reports_both_files() {
    assert_eq!(
        PolicyFormat::detect(Path::new("vault.JSON"), ""),
        PolicyFormat::AzureJson
    );
    assert_eq!(
        PolicyFormat::detect(Path::new("policy"), "  \n{\"a\": 1}"),
        PolicyFormat::AzureJson
    );
    assert_eq!(
        PolicyFormat::detect(Path::new("policy.toml"), "{"),
        PolicyFormat::Native
    );
    assert_eq!(
        PolicyFormat::detect(Path::new("policy"), "default_action = \"Deny\""),
        PolicyFormat::Native
    );

    let dir = TempDir::new("load-policy");
    let native = dir.write("p.conf", "default_action = \"Deny\"\n");
    let map = dir.write("map.toml", "");
    let v = load_policy(&native, Some(&map)).expect("native loads");
    assert_eq!(v.warnings.len(), 1);
    assert!(
        v.warnings[0]
            .message
            .contains("applies only to an Azure JSON policy")
    );

    let json = dir.write(
        "v.json",
        r#"{"defaultAction": "Deny", "ipRules": [{"value": "10.0.0.1"}]}"#,
    );
    match load_policy(&json, None) {
        Err(LoadError::Invalid { path, errors }) => {
            assert_eq!(path, json);
            assert_eq!(single(&errors).path, "ipRules[0].value");
        }
        other => panic!("{other:?}"),
    }
    match load_policy(&json, Some(&dir.0.join("absent.toml"))) {
        Err(LoadError::Io { path, .. }) => assert!(path.ends_with("absent.toml")),
        other => panic!("{other:?}"),
    }
}

/// The vault's `name` and `id` head the converted file as a comment: a line
/// break (or any control character) in them must not end the comment and
/// write TOML that widens the policy.
#[test]
fn a_vault_name_cannot_write_toml_into_the_converted_policy() {
    let json = r#"{"name": "kv-prod\nvirtual_network_rules = [{ id = \"v/subnets/s\", address_prefixes = [\"45.0.0.0/8\"], endpoint = { vlan = 7 } }]\nmode = \"Audit\"\n#",
        "id": "/subscriptions/x\r\n[data_plane]\ntcp_ports = []",
        "properties": {"networkAcls": {"defaultAction": "Deny", "bypass": "None",
            "ipRules": [{"value": "203.0.113.7/32"}], "virtualNetworkRules": []}}}"#;
    let source = super::super::parse_azure_json(json, None).expect("valid vault JSON");
    let (vault_name, vault_id) = super::super::vault_identity(json);
    assert!(vault_name.as_deref().is_some_and(|n| n.contains('\n')));
    let native = super::super::export_native_from(
        &source.policy,
        &super::super::NativeSource {
            file: "vault\n.json".to_owned(),
            vault_name,
            vault_id,
        },
    );
    let read = super::super::parse_toml(&native).expect("the converted policy parses");
    assert_eq!(read.policy, source.policy, "{native}");
    assert!(
        native.lines().take(2).all(|l| l.starts_with('#')),
        "{native}"
    );
}
