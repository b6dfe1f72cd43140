//! ARM ids: a JSON rule id matched to its subnet-map entry whatever its
//! case, `[defaults]` turning short ids into full ones on export, and the
//! export refusing a short id it cannot expand.

use super::super::{ShortIdError, export_azure, export_subnet_map};
use super::{load, load_azure, refuse, refuse_azure, single};

const SUB: &str = "aaaaaaaa-0000-0000-0000-000000000001";

fn vault(id: &str) -> String {
    format!(
        r#"{{"properties": {{"networkAcls": {{"defaultAction": "Deny", "bypass": "None",
            "virtualNetworkRules": [{{"id": "{id}"}}]}}}}}}"#
    )
}

#[test]
fn a_mixed_case_full_id_matches_a_short_entry_through_the_map_defaults_and_takes_its_short_id() {
    let json = vault(
        "/subscriptions/AAAAAAAA-0000-0000-0000-000000000001/resourcegroups/rg-PROD/providers/\
         microsoft.network/virtualnetworks/VNET-HUB/subnets/App",
    );
    let map = format!(
        "[defaults]\nsubscription = \"{SUB}\"\nresource_group = \"RG-Prod\"\n\
         [[subnet]]\nid = \"vnet-hub/subnets/app\"\naddress_prefixes = [\"10.1.2.0/24\"]\n\
         endpoint = {{ interface = \"eth1\" }}\n"
    );
    let v = load_azure(&json, Some(("m.toml", &map)));
    assert_eq!(v.policy.virtual_network_rules[0].id, "vnet-hub/subnets/app");
    assert_eq!(v.policy.defaults.resource_group.as_deref(), Some("RG-Prod"));
    // Exported again: the full id, in the case the map's scope is written.
    let out = export_azure(&v.policy, false).expect("expandable").json;
    assert_eq!(
        out["properties"]["networkAcls"]["virtualNetworkRules"][0]["id"],
        format!(
            "/subscriptions/{SUB}/resourceGroups/RG-Prod/providers/Microsoft.Network/\
             virtualNetworks/vnet-hub/subnets/app"
        )
    );
}

#[test]
fn an_entry_with_its_own_scope_matches_only_its_subscription_and_keeps_the_json_id() {
    let other = "/subscriptions/bbbbbbbb-0000-0000-0000-000000000002/resourceGroups/rg/providers/\
                 Microsoft.Network/virtualNetworks/vnet-hub/subnets/app";
    let map = format!(
        "[[subnet]]\nid = \"vnet-hub/subnets/app\"\nsubscription = \"{SUB}\"\n\
         resource_group = \"rg\"\naddress_prefixes = [\"10.1.2.0/24\"]\n\
         endpoint = {{ interface = \"eth1\" }}\n"
    );
    let e = refuse_azure(&vault(other), Some(("m.toml", &map)));
    assert_eq!(
        single(&e).path,
        "properties.networkAcls.virtualNetworkRules[0].id"
    );
    let mine = other.replace("bbbbbbbb-0000-0000-0000-000000000002", SUB);
    let v = load_azure(&vault(&mine), Some(("m.toml", &map)));
    assert_eq!(v.policy.virtual_network_rules[0].id, mine);
}

#[test]
fn defaults_values_are_refused_with_their_path_in_either_file() {
    let e = refuse(
        "default_action = \"Deny\"\n[defaults]\nsubscription = \"prod\"\nresource_group = \"rg.\"\n\
         region = \"westeurope\"\n",
    );
    let paths: Vec<&str> = e.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "defaults.region",
            "defaults.subscription",
            "defaults.resource_group"
        ]
    );
    let e = refuse_azure(
        r#"{"defaultAction": "Deny"}"#,
        Some(("m.toml", "[defaults]\nsubscription = 7\n")),
    );
    assert_eq!(single(&e).path, "m.toml:defaults.subscription");
    let e = refuse_azure(
        &vault("v/subnets/s"),
        Some((
            "m.toml",
            "[[subnet]]\nid = \"v/subnets/s\"\nsubscription = \"x\"\n\
             address_prefixes = [\"10.1.0.0/16\"]\nendpoint = { vlan = 7 }\n",
        )),
    );
    assert_eq!(single(&e).path, "m.toml:subnet[0].subscription");
}

#[test]
fn export_refuses_a_short_id_it_cannot_expand_naming_the_rule_and_the_fix() {
    let v = load(
        "default_action = \"Deny\"\n[[virtual_network_rules]]\nid = \"vnet-lab/subnets/x\"\n\
         address_prefixes = [\"10.1.0.0/16\"]\nendpoint = { vlan = 7 }\n",
    );
    let e = export_azure(&v.policy, false).expect_err("short id without [defaults]");
    let message = e.to_string();
    assert!(message.contains("\"vnet-lab/subnets/x\""), "{message}");
    // The fix is said once, apart from the message.
    assert!(!message.contains("[defaults]"), "{message}");
    assert!(!message.contains("--allow-short-ids"), "{message}");
    assert!(ShortIdError::FIX.contains("[defaults]"));
    assert!(ShortIdError::FIX.contains("--allow-short-ids"));
    let allowed = export_azure(&v.policy, true).expect("allowed");
    assert_eq!(allowed.short_ids, ["vnet-lab/subnets/x"]);
    // The short id reads back through the subnet map.
    let json = allowed.json.to_string();
    let map = export_subnet_map(&v.policy);
    assert_eq!(load_azure(&json, Some(("m.toml", &map))).policy, v.policy);
}

#[test]
fn a_short_and_a_full_id_of_one_subnet_in_one_map_are_one_entry_twice() {
    let map = "[[subnet]]\nid = \"vnet/subnets/a\"\naddress_prefixes = [\"10.1.0.0/16\"]\n\
               endpoint = { vlan = 7 }\n[[subnet]]\nid = \"VNET/subnets/A/\"\n\
               address_prefixes = [\"10.2.0.0/16\"]\nendpoint = { vlan = 8 }\n";
    let e = refuse_azure(&vault("vnet/subnets/a"), Some(("m.toml", map)));
    assert_eq!(single(&e).path, "m.toml:subnet[1].id");
}

#[test]
fn a_short_id_and_the_full_id_defaults_make_of_it_are_one_subnet_twice() {
    let e = refuse(&format!(
        "default_action = \"Deny\"\n[defaults]\nsubscription = \"{SUB}\"\nresource_group = \"rg\"\n\
         [[virtual_network_rules]]\nid = \"vnet/subnets/a\"\naddress_prefixes = [\"10.1.0.0/16\"]\n\
         endpoint = {{ vlan = 7 }}\n[[virtual_network_rules]]\n\
         id = \"/subscriptions/{SUB}/resourceGroups/RG/providers/Microsoft.Network/virtualNetworks/VNET/subnets/a\"\n\
         address_prefixes = [\"10.2.0.0/16\"]\nendpoint = {{ vlan = 8 }}\n"
    ));
    let e = single(&e);
    assert_eq!(e.path, "virtual_network_rules[1].id");
    assert!(e.reason.contains("[defaults]"), "{e}");
}
