//! A [`Policy`] written out. Azure JSON: `{"properties": {"networkAcls":
//! …}}`, the shape `az keyvault update` and ARM templates take, plus the
//! subnet map that carries what the JSON has no field for; reading the two
//! back with [`parse_azure_json`](super::parse_azure_json) gives the same
//! policy. Native TOML: [`export_native`], read back with
//! [`parse_toml`](super::parse_toml) to the same policy. Both round trips
//! are tested.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, value};

use super::model::{Endpoint, LimitProfile, Policy, VnetRule, shown, shown6};
use super::trusted::catalogue;

/// `policy` as Azure JSON: `{"properties": {"networkAcls": {"bypass",
/// "defaultAction", "ipRules": [{"value"}], "virtualNetworkRules": [{"id",
/// "ignoreMissingVnetServiceEndpoint"}]}}}`. Single addresses are written
/// `a.b.c.d/32`, as Key Vault stores them; subnet ids as the rules hold
/// them (an ARM id stays an ARM id). IPv6 rules go under `"ipv6Rules"` (as
/// other Azure services write them; Key Vault has none), left out when
/// there are none. The subnets' prefixes and endpoints,
/// rule comments and expiry, and vaultfw's own settings are in
/// [`export_subnet_map`].
pub fn export_azure(policy: &Policy) -> Value {
    let ip_rules: Vec<Value> = policy
        .ip_rules
        .iter()
        .map(|r| json!({ "value": r.network.to_string() }))
        .collect();
    let ipv6_rules: Vec<Value> = policy
        .ipv6_rules
        .iter()
        .map(|r| json!({ "value": r.network.to_string() }))
        .collect();
    let vnet_rules: Vec<Value> = policy
        .virtual_network_rules
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "ignoreMissingVnetServiceEndpoint": r.ignore_missing_endpoint,
            })
        })
        .collect();
    let mut acls = json!({
        "bypass": policy.bypass.name(),
        "defaultAction": policy.default_action.name(),
        "ipRules": ip_rules,
        "virtualNetworkRules": vnet_rules,
    });
    if !ipv6_rules.is_empty() {
        acls["ipv6Rules"] = Value::Array(ipv6_rules);
    }
    json!({ "properties": { "networkAcls": acls } })
}

/// The subnet map (TOML text, see the `subnet_map` module) that, read with
/// [`export_azure`]'s JSON, reproduces `policy`: every setting written
/// explicitly, `[trusted_services]` when it differs from the default, one
/// `[[ip_rule]]` per IP rule with a comment or expiry, and one `[[subnet]]`
/// per virtual network rule (its full id, prefixes, endpoint, comment and
/// expiry).
pub fn export_subnet_map(policy: &Policy) -> String {
    let mut doc = DocumentMut::new();
    settings(&mut doc, policy);
    header(
        &mut doc,
        "mode",
        "# vaultfw subnet map: what Azure's networkAcls JSON has no field for.\n\
         # Read with the JSON it was exported with (vaultfw validate --subnet-map).\n",
    );
    tables(&mut doc, policy);
    let mut ip_rules = ArrayOfTables::new();
    let all = policy
        .ip_rules
        .iter()
        .map(|r| (shown(r.network), &r.comment, r.expires_at))
        .chain(
            policy
                .ipv6_rules
                .iter()
                .map(|r| (shown6(r.network), &r.comment, r.expires_at)),
        );
    for (network, comment, expires_at) in all {
        let rule = Meta {
            comment,
            expires_at,
        };
        if rule.comment.is_none() && rule.expires_at.is_none() {
            continue;
        }
        let mut t = spaced_table();
        t["value"] = value(network);
        if let Some(c) = &rule.comment {
            t["comment"] = value(c.as_str());
        }
        if let Some(at) = rule.expires_at {
            t["expires_at"] = value(time(at));
        }
        ip_rules.push(t);
    }
    if !ip_rules.is_empty() {
        doc["ip_rule"] = Item::ArrayOfTables(ip_rules);
    }
    let mut subnets = ArrayOfTables::new();
    for rule in &policy.virtual_network_rules {
        subnets.push(vnet_rule(rule));
    }
    if !subnets.is_empty() {
        doc["subnet"] = Item::ArrayOfTables(subnets);
    }
    doc.to_string()
}

/// `policy` in the native TOML format (DESIGN.md section 1): every setting
/// written explicitly, each IP rule (a table item when it has a comment or
/// an expiry), `[trusted_services]` when it differs from the default, one
/// `[[virtual_network_rules]]` per subnet rule. Reading it back with
/// [`parse_toml`](super::parse_toml) gives the same policy (the round trip
/// is tested); a daemon serving a native file writes a policy applied as
/// Azure JSON into it this way.
pub fn export_native(policy: &Policy) -> String {
    let mut doc = DocumentMut::new();
    doc["default_action"] = value(policy.default_action.name());
    header(
        &mut doc,
        "default_action",
        "# vaultfw policy (native format), written by vaultfw from an applied policy.\n",
    );
    doc["bypass"] = value(policy.bypass.name());
    settings(&mut doc, policy);
    // One rule a line: a diff of the file shows the rule that changed.
    let mut ip_rules = Array::new();
    let all = policy
        .ip_rules
        .iter()
        .map(|r| (shown(r.network), &r.comment, r.expires_at))
        .chain(
            policy
                .ipv6_rules
                .iter()
                .map(|r| (shown6(r.network), &r.comment, r.expires_at)),
        );
    for (network, comment, expires_at) in all {
        let rule = Meta {
            comment,
            expires_at,
        };
        let mut item = if rule.comment.is_none() && rule.expires_at.is_none() {
            toml_edit::Value::from(network)
        } else {
            let mut t = InlineTable::new();
            t.insert("value", network.into());
            if let Some(c) = &rule.comment {
                t.insert("comment", c.as_str().into());
            }
            if let Some(at) = rule.expires_at {
                t.insert("expires_at", time(at).into());
            }
            toml_edit::Value::InlineTable(t)
        };
        item.decor_mut().set_prefix("\n    ");
        ip_rules.push_formatted(item);
    }
    ip_rules.set_trailing_comma(!ip_rules.is_empty());
    ip_rules.set_trailing("\n");
    doc["ip_rules"] = value(ip_rules);
    tables(&mut doc, policy);
    let mut vnet_rules = ArrayOfTables::new();
    for rule in &policy.virtual_network_rules {
        let mut t = vnet_rule(rule);
        if rule.ignore_missing_endpoint {
            t["ignore_missing_endpoint"] = value(true);
        }
        vnet_rules.push(t);
    }
    if !vnet_rules.is_empty() {
        doc["virtual_network_rules"] = Item::ArrayOfTables(vnet_rules);
    }
    doc.to_string()
}

/// A rule's comment and expiry, of either family.
struct Meta<'a> {
    comment: &'a Option<String>,
    expires_at: Option<std::time::SystemTime>,
}

/// Puts the comment lines `text` above the key `key` of `doc`.
fn header(doc: &mut DocumentMut, key: &str, text: &str) {
    if let Some(mut key) = doc.key_mut(key) {
        key.leaf_decor_mut().set_prefix(text);
    }
}

/// A table written after a blank line.
fn spaced_table() -> Table {
    let mut t = Table::new();
    t.decor_mut().set_prefix("\n");
    t
}

/// `mode`, `ipv6` and `limits` (top-level keys of both TOML forms).
fn settings(doc: &mut DocumentMut, policy: &Policy) {
    doc["mode"] = value(policy.mode.name());
    doc["ipv6"] = value(policy.ipv6.name());
    doc["limits"] = match policy.limits.profile {
        LimitProfile::Kv2020 | LimitProfile::KvCurrent => value(policy.limits.profile.name()),
        LimitProfile::Explicit => {
            let mut t = InlineTable::new();
            // Invariant: validated limits are at most `Limits::MAX_LOADABLE`.
            let count = |n: usize| i64::try_from(n).expect("invariant: a limit fits an i64");
            t.insert("ip_rules", count(policy.limits.ip_rules).into());
            t.insert(
                "virtual_network_rules",
                count(policy.limits.virtual_network_rules).into(),
            );
            if policy.limits.ipv6_rules != policy.limits.ip_rules {
                t.insert("ipv6_rules", count(policy.limits.ipv6_rules).into());
            }
            value(t)
        }
    };
}

/// `[data_plane]`, and `[trusted_services]` when it differs from the
/// default (tables of both TOML forms).
fn tables(doc: &mut DocumentMut, policy: &Policy) {
    let ports = |set: &BTreeSet<u16>| value(set.iter().map(|p| i64::from(*p)).collect::<Array>());
    let mut data_plane = spaced_table();
    data_plane["tcp_ports"] = ports(&policy.data_plane.tcp_ports);
    data_plane["udp_ports"] = ports(&policy.data_plane.udp_ports);
    if !policy.data_plane.guard_control_ports.is_empty() {
        data_plane["guard_control_ports"] = ports(&policy.data_plane.guard_control_ports);
    }
    doc["data_plane"] = Item::Table(data_plane);
    let trusted = &policy.trusted_services;
    let whole_catalogue = trusted.enabled.len() == catalogue().len();
    if trusted.service_tags_file.is_some() || !whole_catalogue {
        let mut t = spaced_table();
        if let Some(file) = &trusted.service_tags_file {
            t["service_tags_file"] = value(file.display().to_string());
        }
        if !whole_catalogue {
            t["enabled"] = value(trusted.enabled.iter().map(|s| s.name).collect::<Array>());
        }
        doc["trusted_services"] = Item::Table(t);
    }
}

/// The keys of one subnet rule that both TOML forms share: id, prefixes,
/// endpoint, comment, expiry.
fn vnet_rule(rule: &VnetRule) -> Table {
    let mut t = spaced_table();
    t["id"] = value(rule.id.as_str());
    t["address_prefixes"] = value(
        rule.address_prefixes
            .iter()
            .map(|p| shown(*p))
            .chain(rule.address_prefixes_v6.iter().map(|p| shown6(*p)))
            .collect::<Array>(),
    );
    t["endpoint"] = value(endpoint_table(&rule.endpoint));
    if let Some(c) = &rule.comment {
        t["comment"] = value(c.as_str());
    }
    if let Some(at) = rule.expires_at {
        t["expires_at"] = value(time(at));
    }
    t
}

/// `endpoint` as a rule's `endpoint` key holds it: `{ interface = "eth1",
/// vlan = 120 }`, either key left out when unset.
pub fn endpoint_table(endpoint: &Endpoint) -> InlineTable {
    let mut t = InlineTable::new();
    if let Some(i) = &endpoint.interface {
        t.insert("interface", i.as_str().into());
    }
    if let Some(v) = endpoint.vlan {
        t.insert("vlan", i64::from(v).into());
    }
    t
}

/// An expiry as an RFC 3339 time (written as a string).
fn time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339(t).to_string()
}
