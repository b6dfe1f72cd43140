//! A [`Policy`] written out. Azure JSON: `{"properties":
//! {"publicNetworkAccess": …, "networkAcls": …}}`, the shape `az keyvault update` and ARM templates take, plus the
//! subnet map that carries what the JSON has no field for; reading the two
//! back with [`parse_azure_json`](super::parse_azure_json) gives the same
//! policy. Native TOML: [`export_native`], read back with
//! [`parse_toml`](super::parse_toml) to the same policy. Both round trips
//! are tested.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, value};

use super::model::{Endpoint, LimitProfile, Policy, PrivateEndpoint, VnetRule, shown, shown6};
use super::subnet_id::{self, ArmScope};
use super::trusted::catalogue;

/// A subnet rule whose short id cannot be written as a full ARM id. Its
/// text says what is wrong; [`ShortIdError::FIX`] says how to fix it.
#[derive(Debug, thiserror::Error)]
#[error(
    "virtual network rule {id:?} has a short id and the policy does not know its subscription \
     and resource group: ARM rejects {id:?} as a subnet id"
)]
pub struct ShortIdError {
    /// The rule's id as the policy holds it.
    pub id: String,
}

impl ShortIdError {
    /// How to fix it.
    pub const FIX: &str = "add [defaults] with subscription = \"<guid>\" and resource_group = \
                           \"<rg>\" to the policy (or write the rule's full ARM id), or pass \
                           --allow-short-ids to write it short anyway";
}

/// [`export_azure`]'s result: the JSON, and the rule ids written short
/// (with `allow_short_ids`), which ARM will refuse.
#[derive(Debug)]
pub struct AzureExport {
    /// `{"properties": {"publicNetworkAccess", "networkAcls"}}`.
    pub json: Value,
    /// Ids written short.
    pub short_ids: Vec<String>,
}

/// `policy` as Azure JSON: `{"properties": {"publicNetworkAccess",
/// "networkAcls": {"bypass", "defaultAction", "ipRules": [{"value"}],
/// "virtualNetworkRules": [{"id", "ignoreMissingVnetServiceEndpoint"}]}}}`.
/// Single addresses are written `a.b.c.d/32`, as Key Vault stores them.
/// Subnet ids are written as full ARM ids: a full id as the rule holds it,
/// a short one (`vnet/subnets/s`) expanded with the policy's `[defaults]`;
/// a short id that cannot be expanded is an error naming the rule, unless
/// `allow_short_ids` (then it is written short and listed in
/// [`AzureExport::short_ids`]). IPv6 rules go under `"ipv6Rules"` (as
/// other Azure services write them; Key Vault has none), left out when
/// there are none. The subnets' prefixes and endpoints, rule comments and
/// expiry, and vaultfw's own settings are in
/// [`export_subnet_map`].
pub fn export_azure(policy: &Policy, allow_short_ids: bool) -> Result<AzureExport, ShortIdError> {
    let ip_rules: Vec<Value> = policy
        .ip_rules
        .iter()
        .map(|r| json!({ "value": r.network.to_string() }))
        .collect();
    let mut short_ids = Vec::new();
    let mut vnet_rules = Vec::with_capacity(policy.virtual_network_rules.len());
    for rule in &policy.virtual_network_rules {
        let id = if subnet_id::is_full(&rule.id) {
            rule.id.clone()
        } else if let Some(full) = subnet_id::full_id(&rule.id, &policy.defaults) {
            full
        } else if allow_short_ids {
            short_ids.push(rule.id.clone());
            rule.id.clone()
        } else {
            return Err(ShortIdError {
                id: rule.id.clone(),
            });
        };
        vnet_rules.push(json!({
            "id": id,
            "ignoreMissingVnetServiceEndpoint": rule.ignore_missing_endpoint,
        }));
    }
    let ipv6_rules: Vec<Value> = policy
        .ipv6_rules
        .iter()
        .map(|r| json!({ "value": r.network.to_string() }))
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
    let json = json!({
        "properties": {
            "publicNetworkAccess": policy.public_network_access.name(),
            "networkAcls": acls,
        }
    });
    Ok(AzureExport { json, short_ids })
}

/// What [`export_azure`]'s JSON alone does not carry: the subnet map
/// holds it. `None` when the JSON alone reads back as `policy`.
pub fn needs_subnet_map(policy: &Policy) -> Option<&'static str> {
    if !policy.virtual_network_rules.is_empty() {
        Some("the subnets' address prefixes and endpoints")
    } else if !policy.private_endpoints.is_empty() {
        Some("the private endpoints")
    } else if policy
        .ip_rules
        .iter()
        .any(|r| r.comment.is_some() || r.expires_at.is_some())
        || policy
            .ipv6_rules
            .iter()
            .any(|r| r.comment.is_some() || r.expires_at.is_some())
    {
        Some("the IP rules' comments and expiry")
    } else {
        None
    }
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
    defaults_and_private_endpoints(&mut doc, policy);
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

/// Where a policy converted to the native format came from, for the
/// comment at its head.
#[derive(Clone, Debug, Default)]
pub struct NativeSource {
    /// The policy file.
    pub file: String,
    /// The vault's name (`name` of `az keyvault show`), if known.
    pub vault_name: Option<String>,
    /// The vault's ARM id, if known.
    pub vault_id: Option<String>,
}

/// [`export_native`] with a head comment naming `source` (the vault and
/// the file it was converted from).
pub fn export_native_from(policy: &Policy, source: &NativeSource) -> String {
    // The names come from the source document: quoted and escaped, so a
    // line break in one cannot end the comment and write TOML.
    let mut head =
        String::from("# vaultfw policy (native format), converted by `vaultfw convert`\n");
    head.push_str(&format!("# from {:?}", source.file));
    match (&source.vault_name, &source.vault_id) {
        (Some(name), Some(id)) => head.push_str(&format!(", vault {name:?} ({id:?})")),
        (Some(name), None) => head.push_str(&format!(", vault {name:?}")),
        (None, Some(id)) => head.push_str(&format!(", vault {id:?}")),
        (None, None) => {}
    }
    head.push('\n');
    native(policy, &head)
}

/// `policy` in the native TOML format (DESIGN.md section 1): every setting
/// written explicitly, each IP rule (a table item when it has a comment or
/// an expiry), `[trusted_services]` when it differs from the default, one
/// `[[virtual_network_rules]]` per subnet rule. Reading it back with
/// [`parse_toml`](super::parse_toml) gives the same policy (the round trip
/// is tested); a daemon serving a native file writes a policy applied as
/// Azure JSON into it this way.
pub fn export_native(policy: &Policy) -> String {
    native(
        policy,
        "# vaultfw policy (native format), written by vaultfw from an applied policy.\n",
    )
}

fn native(policy: &Policy, head: &str) -> String {
    let mut doc = DocumentMut::new();
    doc["default_action"] = value(policy.default_action.name());
    header(&mut doc, "default_action", head);
    doc["bypass"] = value(policy.bypass.name());
    doc["public_network_access"] = value(policy.public_network_access.name());
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
    defaults_and_private_endpoints(&mut doc, policy);
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

/// `[defaults]` when the policy has an ARM scope, and
/// `[[private_endpoints]]` (tables of both TOML forms).
fn defaults_and_private_endpoints(doc: &mut DocumentMut, policy: &Policy) {
    let ArmScope {
        subscription,
        resource_group,
    } = &policy.defaults;
    if !policy.defaults.is_empty() {
        let mut t = spaced_table();
        if let Some(s) = subscription {
            t["subscription"] = value(s.as_str());
        }
        if let Some(rg) = resource_group {
            t["resource_group"] = value(rg.as_str());
        }
        doc["defaults"] = Item::Table(t);
    }
    let mut endpoints = ArrayOfTables::new();
    for PrivateEndpoint {
        interface,
        allowed_prefixes,
    } in &policy.private_endpoints
    {
        let mut t = spaced_table();
        t["interface"] = value(interface.as_str());
        t["allowed_prefixes"] = value(
            allowed_prefixes
                .iter()
                .map(|p| shown(*p))
                .collect::<Array>(),
        );
        endpoints.push(t);
    }
    if !endpoints.is_empty() {
        doc["private_endpoints"] = Item::ArrayOfTables(endpoints);
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
