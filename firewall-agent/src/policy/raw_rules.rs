//! First stage, continued: the shape of the rule items and of
//! `[trusted_services]` in TOML (the native format, and the subnet map of
//! Azure JSON input, which reuses these readers). Only shape is checked
//! here; addresses, ids, endpoints and names are validated later.

use toml::{Table, Value};

use super::error::PolicyError;
use super::expiry;
use super::raw_value::{At, Field, hint, sorted, tables_of, type_error, unknown_key};

/// Keys of one table item in `ip_rules` (and of `[[ip_rule]]` in a map).
pub const IP_RULE_KEYS: [&str; 3] = ["value", "comment", "expires_at"];
/// Keys of one `[[virtual_network_rules]]` item.
pub const VNET_RULE_KEYS: [&str; 6] = [
    "id",
    "address_prefixes",
    "endpoint",
    "ignore_missing_endpoint",
    "comment",
    "expires_at",
];
/// Keys of an `endpoint` table.
pub(super) const ENDPOINT_KEYS: [&str; 2] = ["interface", "vlan"];
/// Keys of `[trusted_services]`.
pub(super) const TRUSTED_KEYS: [&str; 2] = ["service_tags_file", "enabled"];

/// One IP rule as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawIpRule {
    /// Where the rule is (`ip_rules[3]`, `properties.networkAcls.ipRules[0]`).
    pub path: String,
    /// Where its address is (`ip_rules[3]` for a string item,
    /// `ip_rules[3].value` for a table, `…ipRules[0].value` in JSON).
    pub value_path: String,
    /// The address or range as written.
    pub value: String,
    /// `comment`, if any.
    pub comment: Option<String>,
    /// `expires_at` as text (a TOML date-time is turned into its RFC 3339
    /// text), if any.
    pub expires_at: Option<At<String>>,
}

/// One virtual network rule as written. Paths point where each part was
/// written: for Azure JSON the id is in the JSON and the prefixes and
/// endpoint are in the subnet map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawVnetRule {
    /// Where the rule is (`virtual_network_rules[0]`).
    pub path: String,
    /// `id`.
    pub id: Field<At<String>>,
    /// `address_prefixes`, each with its path.
    pub address_prefixes: Field<Vec<At<String>>>,
    /// Path of `address_prefixes` (for "missing" and "empty").
    pub prefixes_path: String,
    /// `endpoint`.
    pub endpoint: Field<RawEndpoint>,
    /// Path of `endpoint`.
    pub endpoint_path: String,
    /// `ignore_missing_endpoint` (false when absent or refused).
    pub ignore_missing_endpoint: bool,
    /// `comment`, if any.
    pub comment: Option<String>,
    /// `expires_at` as text, if any.
    pub expires_at: Option<At<String>>,
}

/// An `endpoint` table as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEndpoint {
    /// `interface`.
    pub interface: Option<At<String>>,
    /// `vlan`.
    pub vlan: Option<At<i64>>,
}

/// `[trusted_services]` as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTrusted {
    /// Where the section is (`trusted_services`, `map.toml:trusted_services`).
    pub path: String,
    /// `service_tags_file`, if any.
    pub service_tags_file: Option<At<String>>,
    /// `enabled`: the names that had the right shape.
    pub enabled: Field<Vec<At<String>>>,
}

/// `ip_rules = [...]` of the native format.
pub fn ip_rules(value: &Value, errors: &mut Vec<PolicyError>) -> Field<Vec<RawIpRule>> {
    let Value::Array(items) = value else {
        let fix = match value {
            Value::String(s) => format!("write it as an array: ip_rules = [{s:?}]"),
            _ => format!("write {}", hint("ip_rules")),
        };
        errors.push(type_error("ip_rules", value, "an array", fix));
        return Field::Invalid;
    };
    let rules = items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| ip_rule(&format!("ip_rules[{index}]"), item, errors))
        .collect();
    Field::Given(rules)
}

/// One IP-rule item at `path`: a string, or a table with `value`,
/// `comment` and `expires_at`.
pub fn ip_rule(path: &str, item: &Value, errors: &mut Vec<PolicyError>) -> Option<RawIpRule> {
    let table = match item {
        Value::String(s) => {
            return Some(RawIpRule {
                path: path.to_string(),
                value_path: path.to_string(),
                value: s.clone(),
                comment: None,
                expires_at: None,
            });
        }
        Value::Table(t) => t,
        other => {
            errors.push(type_error(
                path,
                other,
                "a string or a table",
                "write the address as a string (\"203.0.113.7\") or as a table \
                 { value = \"203.0.113.7\", comment = \"...\", expires_at = \"2027-01-31T00:00:00Z\" }"
                    .into(),
            ));
            return None;
        }
    };
    let mut value = None;
    let mut comment = None;
    let mut expires_at = None;
    for (key, v) in sorted(table) {
        let key_path = format!("{path}.{key}");
        match key.as_str() {
            "value" => match v {
                Value::String(s) => value = Some(s.clone()),
                other => errors.push(type_error(
                    &key_path,
                    other,
                    "a string",
                    "write the address or range in quotes, e.g. value = \"203.0.113.7\"".into(),
                )),
            },
            "comment" => comment = comment_value(&key_path, v, errors),
            "expires_at" => expires_at = expires_value(&key_path, v, errors),
            k => errors.push(unknown_key(&key_path, k, "of an IP rule", &IP_RULE_KEYS)),
        }
    }
    let Some(value) = value else {
        if !table.contains_key("value") {
            errors.push(PolicyError::new(
                path,
                "",
                "the rule has no `value`",
                "add value = \"203.0.113.7\" (the address or range the rule admits)",
            ));
        }
        return None;
    };
    // Kept even when another key of the item was refused, so that the
    // value's own problems are reported in the same run.
    Some(RawIpRule {
        path: path.to_string(),
        value_path: format!("{path}.value"),
        value,
        comment,
        expires_at,
    })
}

fn comment_value(path: &str, v: &Value, errors: &mut Vec<PolicyError>) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        other => {
            errors.push(type_error(
                path,
                other,
                "a string",
                "write the comment in quotes".into(),
            ));
            None
        }
    }
}

fn expires_value(path: &str, v: &Value, errors: &mut Vec<PolicyError>) -> Option<At<String>> {
    match v {
        Value::String(s) => Some(At::new(path, s.clone())),
        Value::Datetime(d) => Some(At::new(path, d.to_string())),
        other => {
            errors.push(type_error(
                path,
                other,
                "a date-time",
                format!("write {}", expiry::EXPECTED_FORM),
            ));
            None
        }
    }
}

/// `[[virtual_network_rules]]` of the native format.
pub fn vnet_rules(value: &Value, errors: &mut Vec<PolicyError>) -> Field<Vec<RawVnetRule>> {
    let form = hint("virtual_network_rules");
    let Some(tables) = tables_of("virtual_network_rules", value, form, errors) else {
        return Field::Invalid;
    };
    let rules = tables
        .into_iter()
        .map(|(path, t)| vnet_rule(&path, t, true, errors))
        .collect();
    Field::Given(rules)
}

/// One subnet table at `path`: a `[[virtual_network_rules]]` item, or a
/// subnet map's `[[subnet]]` entry (`native = false`: there
/// `ignore_missing_endpoint` belongs to the JSON, and is refused).
pub fn vnet_rule(
    path: &str,
    table: &Table,
    native: bool,
    errors: &mut Vec<PolicyError>,
) -> RawVnetRule {
    let mut rule = RawVnetRule {
        path: path.to_string(),
        id: Field::Absent,
        address_prefixes: Field::Absent,
        prefixes_path: format!("{path}.address_prefixes"),
        endpoint: Field::Absent,
        endpoint_path: format!("{path}.endpoint"),
        ignore_missing_endpoint: false,
        comment: None,
        expires_at: None,
    };
    let valid: &[&str] = if native {
        &VNET_RULE_KEYS
    } else {
        &[
            "id",
            "address_prefixes",
            "endpoint",
            "comment",
            "expires_at",
            "subscription",
            "resource_group",
        ]
    };
    for (key, v) in sorted(table) {
        let key_path = format!("{path}.{key}");
        match (key.as_str(), v) {
            ("id", Value::String(s)) => rule.id = Field::Given(At::new(&key_path, s.clone())),
            ("id", other) => {
                rule.id = Field::Invalid;
                errors.push(type_error(
                    &key_path,
                    other,
                    "a string",
                    "write the subnet's id in quotes, e.g. id = \"vnet-prod/subnets/app\"".into(),
                ));
            }
            ("address_prefixes", v) => rule.address_prefixes = prefixes(&key_path, v, errors),
            ("endpoint", v) => rule.endpoint = endpoint(&key_path, v, errors),
            ("ignore_missing_endpoint", _) if !native => errors.push(PolicyError::new(
                &key_path,
                "",
                "ignore_missing_endpoint of an Azure rule is set in its JSON",
                "remove it here and set \"ignoreMissingVnetServiceEndpoint\": true on the rule \
                 in virtualNetworkRules",
            )),
            ("ignore_missing_endpoint", Value::Boolean(b)) => rule.ignore_missing_endpoint = *b,
            ("ignore_missing_endpoint", other) => errors.push(type_error(
                &key_path,
                other,
                "a boolean",
                "write ignore_missing_endpoint = true or ignore_missing_endpoint = false \
                 (without quotes)"
                    .into(),
            )),
            // A map entry's own ARM scope, read by the subnet map.
            ("subscription" | "resource_group", _) if !native => {}
            ("comment", v) => rule.comment = comment_value(&key_path, v, errors),
            ("expires_at", v) => rule.expires_at = expires_value(&key_path, v, errors),
            (k, _) => {
                let place = if native {
                    "of a virtual network rule"
                } else {
                    "of a subnet map entry"
                };
                errors.push(unknown_key(&key_path, k, place, valid));
            }
        }
    }
    rule
}

fn prefixes(path: &str, value: &Value, errors: &mut Vec<PolicyError>) -> Field<Vec<At<String>>> {
    string_array(
        path,
        value,
        errors,
        "address_prefixes",
        "prefix",
        "\"10.1.2.0/24\"",
    )
}

fn endpoint(path: &str, value: &Value, errors: &mut Vec<PolicyError>) -> Field<RawEndpoint> {
    let form = "endpoint = { interface = \"eth1\" }, endpoint = { vlan = 120 } or both";
    let Value::Table(t) = value else {
        let fix = match value {
            Value::String(s) => format!("write endpoint = {{ interface = {s:?} }}"),
            _ => format!("write {form}"),
        };
        errors.push(type_error(path, value, "a table", fix));
        return Field::Invalid;
    };
    let mut ep = RawEndpoint {
        interface: None,
        vlan: None,
    };
    let mut ok = true;
    for (key, v) in sorted(t) {
        let key_path = format!("{path}.{key}");
        match (key.as_str(), v) {
            ("interface", Value::String(s)) => ep.interface = Some(At::new(key_path, s.clone())),
            ("vlan", Value::Integer(n)) => ep.vlan = Some(At::new(key_path, *n)),
            ("interface", other) => {
                ok = false;
                errors.push(type_error(
                    &key_path,
                    other,
                    "a string",
                    "write the interface name in quotes, e.g. interface = \"eth1\"".into(),
                ));
            }
            ("vlan", other) => {
                ok = false;
                let fix = match other {
                    Value::String(s) => format!("write the VLAN id as a number: vlan = {s}"),
                    _ => "write the 802.1Q VLAN id as a number from 1 to 4094".into(),
                };
                errors.push(type_error(&key_path, other, "a VLAN id", fix));
            }
            (k, _) => {
                ok = false;
                errors.push(unknown_key(&key_path, k, "of an endpoint", &ENDPOINT_KEYS));
            }
        }
    }
    if ok { Field::Given(ep) } else { Field::Invalid }
}

/// `[trusted_services]` at `path`.
pub fn trusted_services(
    path: &str,
    value: &Value,
    errors: &mut Vec<PolicyError>,
) -> Field<RawTrusted> {
    let Value::Table(t) = value else {
        errors.push(type_error(
            path,
            value,
            "a table",
            format!("write {}", hint("trusted_services")),
        ));
        return Field::Invalid;
    };
    let mut raw = RawTrusted {
        path: path.to_string(),
        service_tags_file: None,
        enabled: Field::Absent,
    };
    let mut ok = true;
    for (key, v) in sorted(t) {
        let key_path = format!("{path}.{key}");
        match (key.as_str(), v) {
            ("service_tags_file", Value::String(s)) => {
                raw.service_tags_file = Some(At::new(key_path, s.clone()));
            }
            ("service_tags_file", other) => {
                ok = false;
                errors.push(type_error(
                    &key_path,
                    other,
                    "a string",
                    "write the path in quotes, e.g. service_tags_file = \
                     \"/etc/vaultfw/ServiceTags_Public.json\""
                        .into(),
                ));
            }
            ("enabled", v) => raw.enabled = names(&key_path, v, errors),
            (k, _) => {
                ok = false;
                errors.push(unknown_key(
                    &key_path,
                    k,
                    "in [trusted_services]",
                    &TRUSTED_KEYS,
                ));
            }
        }
    }
    if ok {
        Field::Given(raw)
    } else {
        Field::Invalid
    }
}

fn names(path: &str, value: &Value, errors: &mut Vec<PolicyError>) -> Field<Vec<At<String>>> {
    string_array(
        path,
        value,
        errors,
        "enabled",
        "service name",
        "\"AzureBackup\"",
    )
}

/// An array of strings at `path` (the key `key`), each a `what` such as
/// `example`; every item that is not a string is its own error.
fn string_array(
    path: &str,
    value: &Value,
    errors: &mut Vec<PolicyError>,
    key: &str,
    what: &str,
    example: &str,
) -> Field<Vec<At<String>>> {
    let Value::Array(items) = value else {
        let fix = match value {
            Value::String(s) => format!("write it as an array: {key} = [{s:?}]"),
            _ => format!("write {key} = [{example}]"),
        };
        errors.push(type_error(
            path,
            value,
            &format!("an array of {what}s"),
            fix,
        ));
        return Field::Invalid;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        match item {
            Value::String(s) => out.push(At::new(item_path, s.clone())),
            other => {
                ok = false;
                errors.push(type_error(
                    &item_path,
                    other,
                    &format!("a {what}"),
                    format!("write the {what} in quotes, e.g. {example}"),
                ));
            }
        }
    }
    if ok {
        Field::Given(out)
    } else {
        Field::Invalid
    }
}

/// Keys of one `[[private_endpoints]]` item.
pub const PRIVATE_ENDPOINT_KEYS: [&str; 2] = ["interface", "allowed_prefixes"];

/// One private endpoint as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPrivateEndpoint {
    /// Where the item is (`private_endpoints[0]`).
    pub path: String,
    /// `interface`.
    pub interface: Field<At<String>>,
    /// `allowed_prefixes`, each with its path.
    pub allowed_prefixes: Field<Vec<At<String>>>,
}

/// `private_endpoints = [...]` at `path` (an array of tables).
pub fn private_endpoints(
    path: &str,
    value: &Value,
    errors: &mut Vec<PolicyError>,
) -> Field<Vec<RawPrivateEndpoint>> {
    let form = "[[private_endpoints]] tables with interface = \"eth1\" and allowed_prefixes = \
                [\"10.9.0.0/24\"]";
    let Some(tables) = tables_of(path, value, form, errors) else {
        return Field::Invalid;
    };
    let mut out = Vec::with_capacity(tables.len());
    for (item_path, t) in tables {
        let mut entry = RawPrivateEndpoint {
            path: item_path.clone(),
            interface: Field::Absent,
            allowed_prefixes: Field::Absent,
        };
        for (key, v) in sorted(t) {
            let key_path = format!("{item_path}.{key}");
            match key.as_str() {
                "interface" => {
                    entry.interface = match v {
                        Value::String(s) => Field::Given(At::new(key_path, s.clone())),
                        other => {
                            errors.push(type_error(
                                &key_path,
                                other,
                                "a string",
                                "write the interface name as `ip link` shows it, e.g. \"eth1\""
                                    .into(),
                            ));
                            Field::Invalid
                        }
                    }
                }
                "allowed_prefixes" => entry.allowed_prefixes = prefix_strings(&key_path, v, errors),
                k => errors.push(unknown_key(
                    &key_path,
                    k,
                    "in a private endpoint",
                    &PRIVATE_ENDPOINT_KEYS,
                )),
            }
        }
        out.push(entry);
    }
    Field::Given(out)
}

fn prefix_strings(
    path: &str,
    value: &Value,
    errors: &mut Vec<PolicyError>,
) -> Field<Vec<At<String>>> {
    let Value::Array(items) = value else {
        errors.push(type_error(
            path,
            value,
            "an array of prefixes",
            "write allowed_prefixes = [\"10.9.0.0/24\"]".into(),
        ));
        return Field::Invalid;
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        match item {
            Value::String(s) => out.push(At::new(item_path, s.clone())),
            other => {
                errors.push(type_error(
                    &item_path,
                    other,
                    "a string",
                    "write the prefix as a string, e.g. \"10.9.0.0/24\"".into(),
                ));
                return Field::Invalid;
            }
        }
    }
    Field::Given(out)
}
