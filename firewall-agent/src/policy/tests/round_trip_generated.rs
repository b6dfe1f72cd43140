//! The round trip on many generated policies: native → Azure JSON + subnet
//! map → policy → native gives the policy it started from (comments in the
//! files aside: the policies compare equal), whatever the mix of short and
//! full ARM ids, their case, `[defaults]`, public network access, private
//! endpoints, settings, comments and expiry.

use proptest::prelude::*;

use super::super::{export_azure, export_native, export_subnet_map};
use super::{load, load_azure};

const SUB: &str = "aaaaaaaa-0000-0000-0000-00000000000a";

/// One virtual network rule's TOML table (`i` keeps ids and prefixes
/// distinct).
fn vnet_rule(i: usize) -> impl Strategy<Value = String> {
    (
        0u8..4,
        prop::option::of(1u16..4094),
        any::<bool>(),
        any::<bool>(),
        prop::option::of("[a-z \"\\\\é]{0,12}"),
        any::<bool>(),
    )
        .prop_map(move |(form, vlan, iface, ignore, comment, expires)| {
            let id = match form {
                0 => format!("vnet-{i}/subnets/app"),
                1 => format!("VNet-{i}/subnets/App"),
                2 => format!(
                    "/subscriptions/{SUB}/resourceGroups/RG-{i}/providers/Microsoft.Network/\
                     virtualNetworks/vnet-{i}/subnets/app"
                ),
                _ => format!(
                    "/subscriptions/{}/resourcegroups/rg-{i}/providers/microsoft.network/\
                     virtualnetworks/vnet-{i}/subnets/app",
                    SUB.to_uppercase()
                ),
            };
            let mut endpoint = Vec::new();
            if iface || vlan.is_none() {
                endpoint.push(format!("interface = \"eth{i}\""));
            }
            if let Some(v) = vlan {
                endpoint.push(format!("vlan = {v}"));
            }
            let mut t = format!(
                "\n[[virtual_network_rules]]\nid = {id:?}\naddress_prefixes = [\"10.{i}.0.0/16\", \
                 \"172.16.{i}.0/24\"]\nendpoint = {{ {} }}\n",
                endpoint.join(", ")
            );
            if ignore && iface {
                t.push_str("ignore_missing_endpoint = true\n");
            }
            if let Some(c) = comment {
                t.push_str(&format!("comment = {c:?}\n"));
            }
            if expires {
                t.push_str("expires_at = \"2099-01-31T00:00:00Z\"\n");
            }
            t
        })
}

/// One IP rule item.
fn ip_rule(i: usize) -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![32u8, 24, 16]),
        prop::option::of("[a-z 0-9]{0,8}"),
        any::<bool>(),
    )
        .prop_map(move |(len, comment, expires)| {
            let net = match len {
                32 => format!("{}.1.2.3", 11 + i),
                24 => format!("{}.1.2.0/24", 11 + i),
                _ => format!("{}.1.0.0/16", 11 + i),
            };
            if comment.is_none() && !expires {
                return format!("{net:?}");
            }
            let mut t = format!("{{ value = {net:?}");
            if let Some(c) = comment {
                t.push_str(&format!(", comment = {c:?}"));
            }
            if expires {
                t.push_str(", expires_at = \"2099-06-01T12:00:00Z\"");
            }
            t.push_str(" }");
            t
        })
}

fn policy() -> impl Strategy<Value = String> {
    let settings = (
        prop::sample::select(vec!["Deny", "Allow"]),
        prop::sample::select(vec!["None", "AzureServices"]),
        prop::sample::select(vec!["Enforce", "Audit"]),
        prop::sample::select(vec!["Enabled", "Disabled"]),
        prop::sample::select(vec![
            "\"kv-2020\"",
            "\"kv-current\"",
            "{ ip_rules = 50, virtual_network_rules = 20 }",
        ]),
        prop::sample::subsequence(vec![443u16, 8443, 9443], 1..=3),
        any::<bool>(),
    );
    let ips = (0usize..6).prop_flat_map(|n| (0..n).map(ip_rule).collect::<Vec<_>>());
    let vnets = (0usize..5).prop_flat_map(|n| (0..n).map(vnet_rule).collect::<Vec<_>>());
    let private = prop::option::of(prop::sample::subsequence(vec![1u8, 2, 3], 1..=3));
    (settings, ips, vnets, private).prop_map(
        |((action, bypass, mode, public, limits, ports, defaults), ips, vnets, private)| {
            let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
            let mut t = format!(
                "default_action = \"{action}\"\nbypass = \"{bypass}\"\nmode = \"{mode}\"\n\
                 public_network_access = \"{public}\"\nlimits = {limits}\n\
                 ip_rules = [{}]\n[data_plane]\ntcp_ports = [{}]\n",
                ips.join(", "),
                ports.join(", ")
            );
            if defaults {
                t.push_str(&format!(
                    "[defaults]\nsubscription = \"{SUB}\"\nresource_group = \"RG-Hub\"\n"
                ));
            }
            for n in private.unwrap_or_default() {
                t.push_str(&format!(
                    "\n[[private_endpoints]]\ninterface = \"pe{n}\"\n\
                     allowed_prefixes = [\"192.168.{n}.0/24\"]\n"
                ));
            }
            for v in vnets {
                t.push_str(&v);
            }
            t
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn native_to_azure_to_native_is_the_identity(text in policy()) {
        let native = load(&text).policy;
        // Short ids without [defaults] are written short (the map reads
        // them back); everything else as full ARM ids.
        let json = export_azure(&native, true)
            .unwrap_or_else(|e| panic!("{e}"))
            .json
            .to_string();
        let map = export_subnet_map(&native);
        let azure = load_azure(&json, Some(("map.toml", &map))).policy;
        prop_assert_eq!(&azure, &native, "json:\n{}\nmap:\n{}", json, map);
        let converted = export_native(&azure);
        prop_assert_eq!(&load(&converted).policy, &native, "native:\n{}", converted);
    }
}
