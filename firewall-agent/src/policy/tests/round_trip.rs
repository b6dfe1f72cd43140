//! Policies out and back: native → `export_azure` + `export_subnet_map`
//! → `parse_azure_json`, and any policy → `export_native` → `parse_toml`,
//! give the same policy.

use serde_json::json;

use super::super::{Policy, export_native, export_subnet_map, load_policy};
use super::{TempDir, fixture, load, load_azure};

/// `policy` as Azure JSON (every short id expandable).
fn export_azure(policy: &Policy) -> serde_json::Value {
    super::super::export_azure(policy, false)
        .unwrap_or_else(|e| panic!("{e}"))
        .json
}

/// A policy that uses every field the model has.
fn everything() -> String {
    format!(
        r#"
default_action = "Deny"
bypass = "AzureServices"
mode = "Audit"
ipv6 = "Allow"
limits = {{ ip_rules = 300, virtual_network_rules = 50, ipv6_rules = 20 }}
ip_rules = ["203.0.113.0/24", "198.51.100.7/32", "2001:db8:1::/48",
            {{ value = "2001:db8:0:0::7", comment = "IPv6 build agent" }},
            {{ value = "192.0.2.77", comment = "build \"agent\" \\ one", expires_at = "2027-01-31T00:00:00.250Z" }},
            {{ value = "198.51.100.64/26", expires_at = "2027-06-01T12:00:00+02:00" }}]

[data_plane]
tcp_ports = [443, 8443]
udp_ports = [53]

[defaults]
subscription = "aaaaaaaa-0000-0000-0000-000000000001"
resource_group = "RG-Prod"

[[private_endpoints]]
interface = "eth3"
allowed_prefixes = ["10.9.0.0/24", "10.9.8.7"]

[[virtual_network_rules]]
id = "vnet-prod/subnets/app"
address_prefixes = ["10.1.2.0/24", "10.1.9.9", "fd00:1:2::/64", "2001:db8:77::/48"]
endpoint = {{ interface = "eth1" }}
comment = "app tier"

[[virtual_network_rules]]
id = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet-prod/subnets/data"
address_prefixes = ["100.64.7.0/24"]
endpoint = {{ interface = "eth2", vlan = 120 }}
ignore_missing_endpoint = true
expires_at = "2027-01-31T00:00:00Z"

[[virtual_network_rules]]
id = "vnet-lab/subnets/vlan-only"
address_prefixes = ["172.16.0.0/12"]
endpoint = {{ vlan = 7 }}

[trusted_services]
service_tags_file = {:?}
enabled = ["Storage", "AzureBackup", "DataLakeStore"]
"#,
        fixture("ServiceTags_test.json").display().to_string()
    )
}

#[test]
fn native_to_azure_json_and_subnet_map_and_back_is_lossless() {
    let native = load(&everything());
    let json = export_azure(&native.policy).to_string();
    let map = export_subnet_map(&native.policy);
    let back = load_azure(&json, Some(("/tmp/exported-map.toml", &map)));
    assert_eq!(back.policy, native.policy, "map:\n{map}\njson:\n{json}");
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
}

#[test]
fn minimal_and_default_policies_round_trip_too() {
    for text in [
        "default_action = \"Allow\"\n",
        "default_action = \"Deny\"\nbypass = \"AzureServices\"\nlimits = \"kv-current\"\n",
        "default_action = \"Deny\"\n[trusted_services]\nenabled = []\n",
        "default_action = \"Deny\"\n[data_plane]\nudp_ports = [443]\n",
    ] {
        let native = load(text);
        let json = export_azure(&native.policy).to_string();
        let map = export_subnet_map(&native.policy);
        let back = load_azure(&json, Some(("m.toml", &map)));
        assert_eq!(back.policy, native.policy, "{text}\nmap:\n{map}");
    }
}

#[test]
fn the_round_trip_works_through_files_with_load_policy() {
    let native = load(&everything());
    let dir = TempDir::new("round-trip");
    let json = dir.write(
        "vault.json",
        &serde_json::to_string_pretty(&export_azure(&native.policy)).expect("json"),
    );
    let map = dir.write("subnet-map.toml", &export_subnet_map(&native.policy));
    let back = load_policy(&json, Some(&map)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.policy, native.policy);
    // And exporting again gives the same files.
    assert_eq!(export_azure(&back.policy), export_azure(&native.policy));
    assert_eq!(
        export_subnet_map(&back.policy),
        export_subnet_map(&native.policy)
    );
}

#[test]
fn export_writes_key_vaults_shape_with_single_addresses_as_slash_32() {
    let native = load(&everything());
    let exported = export_azure(&native.policy);
    let acls = &exported["properties"]["networkAcls"];
    assert_eq!(exported["properties"]["publicNetworkAccess"], "Enabled");
    assert_eq!(acls["bypass"], "AzureServices");
    assert_eq!(acls["defaultAction"], "Deny");
    assert_eq!(
        acls["ipRules"],
        json!([
            {"value": "192.0.2.77/32"},
            {"value": "198.51.100.7/32"},
            {"value": "198.51.100.64/26"},
            {"value": "203.0.113.0/24"},
        ])
    );
    assert_eq!(
        acls["ipv6Rules"],
        json!([{"value": "2001:db8::7/128"}, {"value": "2001:db8:1::/48"}]),
        "IPv6 rules under ipv6Rules, canonical (RFC 5952)"
    );
    let ids: Vec<&str> = acls["virtualNetworkRules"]
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [
            "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet-prod/subnets/data",
            "/subscriptions/aaaaaaaa-0000-0000-0000-000000000001/resourceGroups/RG-Prod/providers/Microsoft.Network/virtualNetworks/vnet-lab/subnets/vlan-only",
            "/subscriptions/aaaaaaaa-0000-0000-0000-000000000001/resourceGroups/RG-Prod/providers/Microsoft.Network/virtualNetworks/vnet-prod/subnets/app",
        ]
    );
    assert_eq!(
        acls["virtualNetworkRules"][0]["ignoreMissingVnetServiceEndpoint"],
        true
    );
    let map = export_subnet_map(&native.policy);
    assert!(
        map.contains("endpoint = { interface = \"eth2\", vlan = 120 }"),
        "{map}"
    );
    assert!(
        map.contains("limits = { ip_rules = 300, virtual_network_rules = 50, ipv6_rules = 20 }"),
        "{map}"
    );
    assert!(
        map.contains("enabled = [\"AzureBackup\", \"Storage\", \"DataLakeStore\"]"),
        "{map}"
    );
    assert!(
        map.contains("expires_at = \"2027-01-31T00:00:00.250000000Z\""),
        "{map}"
    );
}

#[test]
fn the_az_keyvault_show_fixture_round_trips_through_export() {
    let v = load_policy(
        &fixture("az-keyvault-show.json"),
        Some(&fixture("az-keyvault-show.subnet-map.toml")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let json = export_azure(&v.policy).to_string();
    let map = export_subnet_map(&v.policy);
    let back = load_azure(&json, Some(("m.toml", &map)));
    assert_eq!(back.policy, v.policy);
    // The ARM ids stay ARM ids.
    assert!(
        json.contains("/virtualnetworks/vnet-prod/subnets/app"),
        "{json}"
    );
}

#[test]
fn native_out_and_back_is_lossless_for_every_field_and_for_defaults() {
    let mut texts = vec![everything()];
    texts.extend(
        [
            "default_action = \"Allow\"\n",
            "default_action = \"Deny\"\nbypass = \"AzureServices\"\nlimits = \"kv-current\"\n",
            "default_action = \"Deny\"\n[trusted_services]\nenabled = []\n",
            "default_action = \"Deny\"\n[data_plane]\nudp_ports = [443]\nguard_control_ports = [22]\ntcp_ports = [22, 443]\n",
        ]
        .map(str::to_owned),
    );
    for text in texts {
        let native = load(&text);
        let out = export_native(&native.policy);
        let back = load(&out);
        assert_eq!(back.policy, native.policy, "{text}\nexported:\n{out}");
        assert!(
            back.warnings.is_empty() || !native.warnings.is_empty(),
            "{:?}",
            back.warnings
        );
    }
}

#[test]
fn an_azure_policy_written_as_native_toml_loads_the_same() {
    let v = load_policy(
        &fixture("az-keyvault-show.json"),
        Some(&fixture("az-keyvault-show.subnet-map.toml")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = export_native(&v.policy);
    assert_eq!(load(&out).policy, v.policy, "exported:\n{out}");
}
