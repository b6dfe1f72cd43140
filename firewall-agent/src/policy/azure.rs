//! Azure JSON in: a vault's `networkAcls` as the ARM API and `az keyvault
//! show` return it, in any of three shapes — the whole vault
//! (`{"id": …, "properties": {"networkAcls": {…}, …}}`), `{"properties":
//! {"networkAcls": …}}`, `{"networkAcls": …}`, or the `networkAcls` object
//! itself (what `az keyvault network-rule list` prints). Read:
//!
//! - `defaultAction` (required, as in the native format);
//! - `bypass`: `"AzureServices"` or `"None"`; absent or null means
//!   AzureServices, as ARM reads it;
//! - `ipRules[].value`;
//! - `virtualNetworkRules[].id` and `.ignoreMissingVnetServiceEndpoint`
//!   (absent or null means false); each rule's prefixes and endpoint come
//!   from the subnet map ([`subnet_map`](super::subnet_map)), matched by id.
//!
//! - `properties.publicNetworkAccess` (`"Enabled"` or `"Disabled"`; absent
//!   or null means Enabled, as ARM reads it), when the input is a vault or
//!   its `properties`.
//!
//! Other fields of `networkAcls` and of its rule items are ignored with a
//! warning (a field this version does not know could change what Azure
//! admits); other fields outside `networkAcls` are ignored silently.
//! The result is a [`RawPolicy`] whose paths are JSON paths in the shape
//! the input had (`properties.networkAcls.ipRules[0].value`), validated like
//! the native format.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::error::{PolicyError, PolicyWarning};
use super::ipv4::{self, Dialect, ValueKind};
use super::model::Bypass;
use super::raw::{Key, Keys, RawPolicy};
use super::raw_rules::{RawIpRule, RawVnetRule};
use super::raw_value::{At, Field};
use super::subnet_id::{self, ArmScope, RawScope};
use super::subnet_map::{self, SubnetMap};

/// The fields of `networkAcls` that are read.
const ACL_FIELDS: [&str; 5] = [
    "bypass",
    "defaultAction",
    "ipRules",
    "ipv6Rules",
    "virtualNetworkRules",
];

/// Reads Azure JSON and its optional subnet map (path and text) into a raw
/// policy, recording every problem. `None` when the JSON cannot be read
/// as a `networkAcls` at all.
pub fn read(
    json: &str,
    map: Option<(&Path, &str)>,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Option<RawPolicy> {
    let root: Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => {
            let line = json.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
            errors.push(PolicyError::new(
                format!("{}:{}", e.line(), e.column()),
                clip(line.trim()),
                format!("JSON syntax error: {e}"),
                "correct the JSON at that position, or export it again with az keyvault show",
            ));
            return None;
        }
    };
    let (acls, prefix, public_access) = locate(&root, errors)?;

    let map_prefix = map.map(|(p, _)| subnet_map::prefix(p)).unwrap_or_default();
    let keys = Keys {
        default_action: Key::json(format!("{prefix}defaultAction"), "defaultAction"),
        bypass: Key::json(format!("{prefix}bypass"), "bypass"),
        mode: Key::toml(&map_prefix, "mode"),
        ipv6: Key::toml(&map_prefix, "ipv6"),
        public_network_access: Key::json(PUBLIC_ACCESS_PATH.to_string(), "publicNetworkAccess"),
        private_endpoints: format!("{map_prefix}private_endpoints"),
        defaults: format!("{map_prefix}defaults"),
        limits: format!("{map_prefix}limits"),
        ip_rules: format!("{prefix}ipRules"),
        virtual_network_rules: format!("{prefix}virtualNetworkRules"),
        data_plane: format!("{map_prefix}data_plane"),
        trusted_services: format!("{map_prefix}trusted_services"),
        dialect: Dialect::AzureJson,
        bypass_default: Bypass::AzureServices,
    };
    let mut raw = RawPolicy::empty(keys);
    let map = match map {
        Some((path, text)) => subnet_map::read(path, text, &mut raw, errors),
        None => SubnetMap::default(),
    };

    raw.public_network_access = match public_access {
        None | Some(Value::Null) => Field::Absent,
        Some(Value::String(s)) => Field::Given(s.clone()),
        Some(other) => {
            errors.push(json_type_error(
                PUBLIC_ACCESS_PATH,
                other,
                "a string",
                "write \"publicNetworkAccess\": \"Enabled\" or \"publicNetworkAccess\": \"Disabled\"",
            ));
            Field::Invalid
        }
    };
    raw.default_action = string(&acls, "defaultAction", &prefix, errors);
    raw.bypass = string(&acls, "bypass", &prefix, errors);
    raw.ip_rules = ip_rules(&acls, &prefix, &map, errors, warnings);
    let defaults = match &raw.defaults {
        Field::Given(scope) => scope.clone(),
        _ => RawScope::default(),
    };
    raw.virtual_network_rules = vnet_rules(&acls, &prefix, &map, &defaults, errors, warnings);
    for key in acls.keys().filter(|k| !ACL_FIELDS.contains(&k.as_str())) {
        warnings.push(PolicyWarning::new(
            format!("{prefix}{key}"),
            format!(
                "vaultfw does not know this networkAcls field and ignores it (it reads {})",
                ACL_FIELDS.join(", ")
            ),
        ));
    }
    Some(raw)
}

/// The path `publicNetworkAccess` is read from.
const PUBLIC_ACCESS_PATH: &str = "properties.publicNetworkAccess";

/// Finds `networkAcls` in the input; returns it with the path prefix of
/// its fields (`properties.networkAcls.`, `networkAcls.` or empty), and
/// `properties.publicNetworkAccess` when the input has it.
fn locate<'a>(
    root: &'a Value,
    errors: &mut Vec<PolicyError>,
) -> Option<(Map<String, Value>, String, Option<&'a Value>)> {
    let Value::Object(obj) = root else {
        errors.push(PolicyError::new(
            "policy",
            "",
            format!(
                "expected a JSON object (a vault, or its networkAcls), found {}",
                kind(root)
            ),
            SHAPES,
        ));
        return None;
    };
    let mut public_access = None;
    let (found, path) = if let Some(Value::Object(props)) = obj.get("properties") {
        public_access = props.get("publicNetworkAccess");
        (props.get("networkAcls"), "properties.networkAcls")
    } else if obj.contains_key("networkAcls") {
        (obj.get("networkAcls"), "networkAcls")
    } else if ACL_FIELDS.iter().any(|f| obj.contains_key(*f)) {
        return Some((obj.clone(), String::new(), None));
    } else {
        errors.push(PolicyError::new(
            "policy",
            "",
            "found neither properties.networkAcls nor networkAcls fields (defaultAction, \
             ipRules, …)",
            SHAPES,
        ));
        return None;
    };
    match found {
        Some(Value::Object(acls)) => Some((acls.clone(), format!("{path}."), public_access)),
        None | Some(Value::Null) => {
            errors.push(PolicyError::new(
                path,
                "",
                "the vault has no network rules (networkAcls is null or absent): Key Vault then \
                 admits every source",
                "give networkAcls a \"defaultAction\" (and its rules), or write a native policy \
                 with default_action = \"Allow\" if every source is meant to pass",
            ));
            None
        }
        Some(other) => {
            errors.push(json_type_error(path, other, "an object", SHAPES));
            None
        }
    }
}

/// The input shapes, for fixes.
const SHAPES: &str = "give the output of `az keyvault show` (the whole vault), \
     {\"properties\": {\"networkAcls\": {…}}}, or the networkAcls object \
     {\"defaultAction\": \"Deny\", \"bypass\": \"AzureServices\", \"ipRules\": [], \
     \"virtualNetworkRules\": []}";

fn string(
    acls: &Map<String, Value>,
    field: &str,
    prefix: &str,
    errors: &mut Vec<PolicyError>,
) -> Field<String> {
    match acls.get(field) {
        None | Some(Value::Null) => Field::Absent,
        Some(Value::String(s)) => Field::Given(s.clone()),
        Some(other) => {
            let fix = if field == "bypass" {
                "write \"bypass\": \"AzureServices\" or \"bypass\": \"None\""
            } else {
                "write \"defaultAction\": \"Deny\" or \"defaultAction\": \"Allow\""
            };
            errors.push(json_type_error(
                &format!("{prefix}{field}"),
                other,
                "a string",
                fix,
            ));
            Field::Invalid
        }
    }
}

/// The items of the array `field` (absent or null: none).
fn items<'a>(
    acls: &'a Map<String, Value>,
    field: &str,
    prefix: &str,
    errors: &mut Vec<PolicyError>,
) -> Option<&'a [Value]> {
    match acls.get(field) {
        None | Some(Value::Null) => Some(&[]),
        Some(Value::Array(items)) => Some(items),
        Some(other) => {
            errors.push(json_type_error(
                &format!("{prefix}{field}"),
                other,
                "an array",
                &format!("write \"{field}\": [ … ] (an empty array for none)"),
            ));
            None
        }
    }
}

/// The network of an Azure IP-rule value of either family, if valid.
fn any_rule_value(value: &str) -> Option<ipnet::IpNet> {
    if super::ipv6::is_ipv6_text(value) {
        super::ipv6::check_value(ValueKind::IpRule, Dialect::AzureJson, "", value)
            .ok()
            .map(ipnet::IpNet::V6)
    } else {
        ipv4::check_value(ValueKind::IpRule, Dialect::AzureJson, "", value)
            .ok()
            .map(ipnet::IpNet::V4)
    }
}

fn ip_rules(
    acls: &Map<String, Value>,
    prefix: &str,
    map: &SubnetMap,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Field<Vec<RawIpRule>> {
    // Metadata from the map, by network; the first entry for a network wins.
    let mut meta: BTreeMap<ipnet::IpNet, (&RawIpRule, bool)> = BTreeMap::new();
    for entry in &map.ip_rules {
        let checked = if super::ipv6::is_ipv6_text(&entry.value) {
            super::ipv6::check_value(
                ValueKind::IpRule,
                Dialect::Native,
                &entry.value_path,
                &entry.value,
            )
            .map(ipnet::IpNet::V6)
        } else {
            ipv4::check_rule_value(&entry.value_path, &entry.value).map(ipnet::IpNet::V4)
        };
        match checked {
            Err(e) => errors.push(e),
            Ok(key) => {
                if let Some((first, _)) = meta.get(&key) {
                    warnings.push(PolicyWarning::new(
                        &entry.path,
                        format!(
                            "the same network as {} {:?}; that entry's comment and expiry are used",
                            first.path, first.value
                        ),
                    ));
                } else {
                    meta.insert(key, (entry, false));
                }
            }
        }
    }

    // Key Vault has only `ipRules`; other Azure services (Storage) list
    // IPv6 rules under `ipv6Rules`. Both are read; either may hold either
    // family.
    let (Some(v4_items), Some(v6_items)) = (
        items(acls, "ipRules", prefix, errors),
        items(acls, "ipv6Rules", prefix, errors),
    ) else {
        return Field::Invalid;
    };
    let all = v4_items
        .iter()
        .enumerate()
        .map(|(i, item)| ("ipRules", i, item))
        .chain(
            v6_items
                .iter()
                .enumerate()
                .map(|(i, item)| ("ipv6Rules", i, item)),
        );
    let mut rules = Vec::with_capacity(v4_items.len() + v6_items.len());
    for (field, i, item) in all {
        let path = format!("{prefix}{field}[{i}]");
        let Value::Object(obj) = item else {
            let fix = match item {
                Value::String(s) => format!("write {{\"value\": {s:?}}}"),
                _ => "write {\"value\": \"203.0.113.7/32\"}".to_string(),
            };
            errors.push(json_type_error(&path, item, "an object", &fix));
            continue;
        };
        unknown_fields(obj, &path, &["value"], warnings);
        let value_path = format!("{path}.value");
        let value = match obj.get("value") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => {
                errors.push(PolicyError::new(
                    &path,
                    "",
                    "the rule has no \"value\"",
                    "write {\"value\": \"203.0.113.7/32\"} (the address or range it admits)",
                ));
                continue;
            }
            Some(other) => {
                errors.push(json_type_error(
                    &value_path,
                    other,
                    "a string",
                    "write the address or range as a string, e.g. \"203.0.113.7/32\"",
                ));
                continue;
            }
        };
        let entry = any_rule_value(&value)
            .and_then(|net| meta.get_mut(&net))
            .map(|(entry, used)| {
                *used = true;
                *entry
            });
        rules.push(RawIpRule {
            path,
            value_path,
            value,
            comment: entry.and_then(|e| e.comment.clone()),
            expires_at: entry.and_then(|e| e.expires_at.clone()),
        });
    }
    for (entry, used) in meta.values() {
        if !used {
            warnings.push(PolicyWarning::new(
                &entry.path,
                format!(
                    "no ipRules entry of the JSON is the network {:?}; this entry is not used",
                    entry.value
                ),
            ));
        }
    }
    Field::Given(rules)
}

fn vnet_rules(
    acls: &Map<String, Value>,
    prefix: &str,
    map: &SubnetMap,
    defaults: &RawScope,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Field<Vec<RawVnetRule>> {
    let Some(items) = items(acls, "virtualNetworkRules", prefix, errors) else {
        return Field::Invalid;
    };
    let mut used = vec![false; map.subnets.len()];
    let mut rules = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("{prefix}virtualNetworkRules[{i}]");
        let Value::Object(obj) = item else {
            errors.push(json_type_error(
                &path,
                item,
                "an object",
                "write {\"id\": \"/subscriptions/…/subnets/<subnet>\"}",
            ));
            continue;
        };
        unknown_fields(
            obj,
            &path,
            &["id", "ignoreMissingVnetServiceEndpoint"],
            warnings,
        );
        let id_path = format!("{path}.id");
        let id = match obj.get("id") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => {
                errors.push(PolicyError::new(
                    &path,
                    "",
                    "the rule has no \"id\"",
                    "write the ARM subnet id: {\"id\": \"/subscriptions/<guid>/resourceGroups/\
                     <rg>/providers/Microsoft.Network/virtualNetworks/<vnet>/subnets/<subnet>\"}",
                ));
                continue;
            }
            Some(other) => {
                errors.push(json_type_error(
                    &id_path,
                    other,
                    "a string",
                    "write the ARM subnet id as a string",
                ));
                continue;
            }
        };
        let ignore_path = format!("{path}.ignoreMissingVnetServiceEndpoint");
        let ignore_missing = match obj.get("ignoreMissingVnetServiceEndpoint") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                errors.push(json_type_error(
                    &ignore_path,
                    other,
                    "a boolean",
                    "write true or false without quotes",
                ));
                false
            }
        };
        let Some((index, rule_id)) = find_entry(map, defaults, &id) else {
            errors.push(missing_entry(&id_path, &id, map.subnets.is_empty()));
            continue;
        };
        used[index] = true;
        let entry = &map.subnets[index];
        rules.push(RawVnetRule {
            path,
            id: Field::Given(At::new(id_path, rule_id)),
            address_prefixes: entry.address_prefixes.clone(),
            prefixes_path: entry.prefixes_path.clone(),
            endpoint: entry.endpoint.clone(),
            endpoint_path: entry.endpoint_path.clone(),
            ignore_missing_endpoint: ignore_missing,
            comment: entry.comment.clone(),
            expires_at: entry.expires_at.clone(),
        });
    }
    for (entry, used) in map.subnets.iter().zip(used) {
        if !used && let Field::Given(at) = &entry.id {
            warnings.push(PolicyWarning::new(
                &entry.path,
                format!(
                    "no virtualNetworkRules entry of the JSON is the subnet {:?}; this entry is \
                     not used",
                    at.value
                ),
            ));
        }
    }
    Field::Given(rules)
}

/// The map entry for the rule id `id` and the id the rule takes (see the
/// `subnet_map` module): an entry with the same id; else a short entry
/// whose full id in its scope (its own, else `defaults`) is `id` — the rule
/// takes the entry's short id when the scope came wholly from `defaults`;
/// else a short entry without a full scope that `id` ends with.
fn find_entry(map: &SubnetMap, defaults: &RawScope, id: &str) -> Option<(usize, String)> {
    let value = |at: &Option<At<String>>| at.as_ref().map(|a| a.value.clone());
    let defaults = ArmScope {
        subscription: value(&defaults.subscription),
        resource_group: value(&defaults.resource_group),
    };
    let entries: Vec<(usize, &str, ArmScope)> = map
        .subnets
        .iter()
        .zip(&map.scopes)
        .enumerate()
        .filter_map(|(i, (entry, scope))| match &entry.id {
            Field::Given(at) => Some((
                i,
                at.value.as_str(),
                ArmScope {
                    subscription: value(&scope.subscription),
                    resource_group: value(&scope.resource_group),
                },
            )),
            _ => None,
        })
        .collect();
    let want = subnet_id::canonical(id);
    if let Some((i, ..)) = entries
        .iter()
        .find(|(_, e, _)| subnet_id::canonical(e) == want)
    {
        return Some((*i, id.to_string()));
    }
    for (i, entry, own) in &entries {
        if subnet_id::is_full(entry) {
            continue;
        }
        let scope = own.or(&defaults);
        if let Some(full) = subnet_id::full_id(entry, &scope)
            && subnet_id::canonical(&full) == want
        {
            let rule_id = if own.is_empty() { entry } else { id };
            return Some((*i, rule_id.to_string()));
        }
    }
    entries
        .iter()
        .find(|(_, entry, own)| {
            !subnet_id::is_full(entry)
                && subnet_id::full_id(entry, &own.or(&defaults)).is_none()
                && subnet_id::same_subnet(entry, id)
        })
        .map(|(i, ..)| (*i, id.to_string()))
}

fn missing_entry(path: &str, id: &str, no_map: bool) -> PolicyError {
    let short = subnet_id::short(id).unwrap_or_else(|| id.to_string());
    let reason = if no_map {
        "an ARM subnet id carries neither the subnet's address prefixes nor the endpoint its \
         traffic arrives through, and no subnet map gives them"
    } else {
        "an ARM subnet id carries neither the subnet's address prefixes nor the endpoint its \
         traffic arrives through, and the subnet map has no entry for this subnet"
    };
    PolicyError::new(
        path,
        id,
        reason,
        format!(
            "add to the subnet map (given with --subnet-map): [[subnet]] id = {short:?}, \
             address_prefixes = [\"<the subnet's prefix, e.g. 10.1.2.0/24>\"], endpoint = \
             {{ interface = \"<host interface>\" }} (and/or vlan = <802.1Q id>)"
        ),
    )
}

fn unknown_fields(
    obj: &Map<String, Value>,
    path: &str,
    known: &[&str],
    warnings: &mut Vec<PolicyWarning>,
) {
    for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        warnings.push(PolicyWarning::new(
            format!("{path}.{key}"),
            format!(
                "vaultfw does not know this field of a rule and ignores it (it reads {})",
                known.join(", ")
            ),
        ));
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn json_type_error(path: &str, value: &Value, expected: &str, fix: &str) -> PolicyError {
    let shown = match value {
        Value::String(s) => clip(s),
        other => clip(&other.to_string()),
    };
    PolicyError::new(
        path,
        shown,
        format!("expected {expected}, found {}", kind(value)),
        fix,
    )
}

fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// The vault's `name` and `id` as `az keyvault show` gives them (top-level
/// fields), when the JSON has them: what a converted policy's comments name.
pub fn vault_identity(json: &str) -> (Option<String>, Option<String>) {
    let Ok(Value::Object(root)) = serde_json::from_str::<Value>(json) else {
        return (None, None);
    };
    let field = |k: &str| root.get(k).and_then(Value::as_str).map(str::to_owned);
    (field("name"), field("id"))
}
