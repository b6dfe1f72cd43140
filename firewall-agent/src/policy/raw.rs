//! First stage of reading a native TOML policy: syntax and shape only. The
//! text becomes a [`RawPolicy`] that mirrors the file (strings stay strings,
//! numbers stay `i64`); unknown keys, keys that belong elsewhere and values of
//! the wrong TOML type are reported here, every one of them, with the path of
//! the value. Meaning (enum values, addresses, ranges, limits) is checked in
//! `validate`.
//!
//! The walk is by hand over a parsed `toml::Table` rather than a
//! `#[serde(deny_unknown_fields)]` derive: serde stops at the first problem,
//! and a policy's errors are reported all at once.
//!
//! Every raw value carries the path it will be reported under, and
//! [`Keys`] the paths and spelling of the settings, so that validation
//! reports Azure JSON input (`properties.networkAcls.defaultAction`) and the
//! subnet map (`map.toml:subnet[0].endpoint`) as precisely as the native
//! format. The rule items live in `raw_rules`.

use toml::{Table, Value};

use super::error::PolicyError;
use super::ipv4::Dialect;
use super::model::Bypass;
pub use super::raw_rules::{RawEndpoint, RawIpRule, RawPrivateEndpoint, RawTrusted, RawVnetRule};
use super::raw_rules::{ip_rules, private_endpoints, trusted_services, vnet_rules};
use super::raw_value::{Field, TOP_KEYS, clip, hint, sorted, type_error, unknown_key};
use super::subnet_id::{self, RawScope};

/// A setting's path and how it is spelt in its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// Where it is reported (`default_action`,
    /// `properties.networkAcls.defaultAction`, `map.toml:mode`).
    pub path: String,
    /// Its name in the input (`default_action`, `defaultAction`).
    pub name: &'static str,
    /// True when the input is JSON (`"name": "value"`), false for TOML.
    pub json: bool,
}

impl Key {
    /// A TOML key: `{prefix}{name}`.
    pub fn toml(prefix: &str, name: &'static str) -> Self {
        Key {
            path: format!("{prefix}{name}"),
            name,
            json: false,
        }
    }

    /// A JSON field at `path`.
    pub fn json(path: String, name: &'static str) -> Self {
        Key {
            path,
            name,
            json: true,
        }
    }

    /// How to write this setting with `value`: `mode = "Audit"` or
    /// `"defaultAction": "Deny"`.
    pub fn assign(&self, value: &str) -> String {
        if self.json {
            format!("\"{}\": \"{value}\"", self.name)
        } else {
            format!("{} = \"{value}\"", self.name)
        }
    }
}

/// The paths and spelling of one input's settings, and the defaults that
/// differ by format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// `default_action` / `defaultAction`.
    pub default_action: Key,
    /// `bypass`.
    pub bypass: Key,
    /// `mode`.
    pub mode: Key,
    /// `ipv6`.
    pub ipv6: Key,
    /// `public_network_access` / `properties.publicNetworkAccess`.
    pub public_network_access: Key,
    /// Path of `private_endpoints`.
    pub private_endpoints: String,
    /// Path of `[defaults]`.
    pub defaults: String,
    /// Path of `limits`.
    pub limits: String,
    /// Path of the IP rules as a whole (`ip_rules`,
    /// `properties.networkAcls.ipRules`).
    pub ip_rules: String,
    /// Path of the virtual network rules as a whole.
    pub virtual_network_rules: String,
    /// Path of `[data_plane]`.
    pub data_plane: String,
    /// Path of `[trusted_services]`.
    pub trusted_services: String,
    /// Whose names the fixes of rule values use.
    pub dialect: Dialect,
    /// `bypass` when it is absent: `None` in the native format,
    /// `AzureServices` in Azure JSON (as ARM reads it).
    pub bypass_default: Bypass,
}

impl Keys {
    /// The native format's keys.
    pub fn native() -> Self {
        Keys {
            default_action: Key::toml("", "default_action"),
            bypass: Key::toml("", "bypass"),
            mode: Key::toml("", "mode"),
            ipv6: Key::toml("", "ipv6"),
            public_network_access: Key::toml("", "public_network_access"),
            private_endpoints: "private_endpoints".into(),
            defaults: "defaults".into(),
            limits: "limits".into(),
            ip_rules: "ip_rules".into(),
            virtual_network_rules: "virtual_network_rules".into(),
            data_plane: "data_plane".into(),
            trusted_services: "trusted_services".into(),
            dialect: Dialect::Native,
            bypass_default: Bypass::None,
        }
    }
}

/// Keys of `[data_plane]`.
pub(super) const DATA_PLANE_KEYS: [&str; 3] = ["tcp_ports", "udp_ports", "guard_control_ports"];
/// Keys of an explicit `limits` table.
pub(super) const LIMITS_KEYS: [&str; 3] = ["ip_rules", "virtual_network_rules", "ipv6_rules"];

/// The policy file as written, shape-checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPolicy {
    pub default_action: Field<String>,
    pub bypass: Field<String>,
    pub mode: Field<String>,
    pub ipv6: Field<String>,
    pub limits: Field<RawLimits>,
    /// The items that had the right shape (bad ones are already reported).
    pub ip_rules: Field<Vec<RawIpRule>>,
    /// The items that had the right shape (bad ones are already reported).
    pub virtual_network_rules: Field<Vec<RawVnetRule>>,
    pub data_plane: Field<RawDataPlane>,
    pub trusted_services: Field<RawTrusted>,
    pub public_network_access: Field<String>,
    /// The items that had the right shape.
    pub private_endpoints: Field<Vec<RawPrivateEndpoint>>,
    pub defaults: Field<RawScope>,
    /// Paths and spelling of the settings.
    pub keys: Keys,
}

impl RawPolicy {
    /// A policy with every key absent, reported under `keys`.
    pub fn empty(keys: Keys) -> Self {
        RawPolicy {
            default_action: Field::Absent,
            bypass: Field::Absent,
            mode: Field::Absent,
            ipv6: Field::Absent,
            limits: Field::Absent,
            ip_rules: Field::Absent,
            virtual_network_rules: Field::Absent,
            data_plane: Field::Absent,
            trusted_services: Field::Absent,
            public_network_access: Field::Absent,
            private_endpoints: Field::Absent,
            defaults: Field::Absent,
            keys,
        }
    }
}

/// `limits`: a profile name or explicit numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawLimits {
    /// `limits = "kv-2020"`.
    Profile(String),
    /// `limits = { ip_rules = N, virtual_network_rules = M }`.
    Explicit {
        ip_rules: Field<i64>,
        virtual_network_rules: Field<i64>,
        /// Optional; absent = as many as `ip_rules`.
        ipv6_rules: Field<i64>,
    },
}

/// `[data_plane]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDataPlane {
    pub tcp_ports: Field<Vec<i64>>,
    pub udp_ports: Field<Vec<i64>>,
    pub guard_control_ports: Field<Vec<i64>>,
}

/// Parses `text` as TOML and checks its shape, recording every problem in
/// `errors`. `None` only for a TOML syntax error (the one error recorded).
pub fn read(text: &str, errors: &mut Vec<PolicyError>) -> Option<RawPolicy> {
    let table = parse_table(text, "", errors)?;
    let mut raw = RawPolicy::empty(Keys::native());
    for (key, value) in sorted(&table) {
        match key.as_str() {
            "default_action" => raw.default_action = string(key, key, value, errors),
            "bypass" => raw.bypass = string(key, key, value, errors),
            "public_network_access" => {
                raw.public_network_access = string(key, key, value, errors);
            }
            "ip_rules" => raw.ip_rules = ip_rules(value, errors),
            "virtual_network_rules" => {
                raw.virtual_network_rules = vnet_rules(value, errors);
            }
            k if shared_key(k, value, "", &mut raw, errors) => {}
            k => {
                let valid: Vec<&str> = TOP_KEYS.iter().map(|(name, _)| *name).collect();
                errors.push(unknown_key(k, k, "at the top level", &valid));
            }
        }
    }
    Some(raw)
}

/// Parses `text` as a TOML table; a syntax error is recorded with the path
/// `{prefix}line:column`.
pub fn parse_table(text: &str, prefix: &str, errors: &mut Vec<PolicyError>) -> Option<Table> {
    match text.parse::<Table>() {
        Ok(t) => Some(t),
        Err(e) => {
            let mut error = syntax_error(text, &e);
            error.path = format!("{prefix}{}", error.path);
            errors.push(error);
            None
        }
    }
}

/// The settings shared by the native format and the subnet map (`mode`,
/// `ipv6`, `limits`, `[data_plane]`, `[trusted_services]`,
/// `[[private_endpoints]]`, `[defaults]`), read into `raw`
/// with paths `{prefix}{key}`. False when `key` is none of them.
pub fn shared_key(
    key: &str,
    value: &Value,
    prefix: &str,
    raw: &mut RawPolicy,
    errors: &mut Vec<PolicyError>,
) -> bool {
    let path = format!("{prefix}{key}");
    match key {
        "mode" => raw.mode = string(&path, key, value, errors),
        "ipv6" => raw.ipv6 = string(&path, key, value, errors),
        "limits" => raw.limits = limits(&path, value, errors),
        "data_plane" => raw.data_plane = data_plane(&path, value, errors),
        "trusted_services" => raw.trusted_services = trusted_services(&path, value, errors),
        "private_endpoints" => raw.private_endpoints = private_endpoints(&path, value, errors),
        "defaults" => raw.defaults = subnet_id::read_defaults(&path, value, errors),
        _ => return false,
    }
    true
}

/// A TOML syntax error, with `line:column` (1-based) as its path.
fn syntax_error(text: &str, e: &toml::de::Error) -> PolicyError {
    let reason = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let reason = format!("TOML syntax error: {reason}");
    let fix = "correct the TOML at that position (strings in double quotes, arrays in [ ], \
               one key = value per line, each key once)";
    let Some(span) = e.span() else {
        return PolicyError::new("policy", "", reason, fix);
    };
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..start].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("").trim();
    PolicyError::new(format!("{line}:{column}"), clip(line_text), reason, fix)
}

/// A string setting at `path` whose native key is `key` (for the hint).
pub(super) fn string(
    path: &str,
    key: &str,
    value: &Value,
    errors: &mut Vec<PolicyError>,
) -> Field<String> {
    match value {
        Value::String(s) => Field::Given(s.clone()),
        other => {
            errors.push(type_error(
                path,
                other,
                "a string",
                format!("write {}", hint(key)),
            ));
            Field::Invalid
        }
    }
}

pub(super) fn integer(path: &str, value: &Value, errors: &mut Vec<PolicyError>) -> Field<i64> {
    match value {
        Value::Integer(n) => Field::Given(*n),
        other => {
            errors.push(type_error(
                path,
                other,
                "a whole number",
                format!("write {path} as a number without quotes, e.g. 1000"),
            ));
            Field::Invalid
        }
    }
}

fn limits(base: &str, value: &Value, errors: &mut Vec<PolicyError>) -> Field<RawLimits> {
    match value {
        Value::String(s) => Field::Given(RawLimits::Profile(s.clone())),
        Value::Table(t) => {
            let mut ip_rules = Field::Absent;
            let mut virtual_network_rules = Field::Absent;
            let mut ipv6_rules = Field::Absent;
            for (key, v) in sorted(t) {
                let path = format!("{base}.{key}");
                match key.as_str() {
                    "ip_rules" => ip_rules = integer(&path, v, errors),
                    "virtual_network_rules" => virtual_network_rules = integer(&path, v, errors),
                    "ipv6_rules" => ipv6_rules = integer(&path, v, errors),
                    k => errors.push(unknown_key(&path, k, "in limits", &LIMITS_KEYS)),
                }
            }
            Field::Given(RawLimits::Explicit {
                ip_rules,
                virtual_network_rules,
                ipv6_rules,
            })
        }
        other => {
            errors.push(type_error(
                base,
                other,
                "a profile name or a table",
                format!("write {}", hint("limits")),
            ));
            Field::Invalid
        }
    }
}

fn data_plane(base: &str, value: &Value, errors: &mut Vec<PolicyError>) -> Field<RawDataPlane> {
    let Value::Table(t) = value else {
        errors.push(type_error(
            base,
            value,
            "a table",
            format!("write {}", hint("data_plane")),
        ));
        return Field::Invalid;
    };
    let mut dp = RawDataPlane {
        tcp_ports: Field::Absent,
        udp_ports: Field::Absent,
        guard_control_ports: Field::Absent,
    };
    for (key, v) in sorted(t) {
        let path = format!("{base}.{key}");
        match key.as_str() {
            "tcp_ports" => dp.tcp_ports = ports(&path, v, errors),
            "udp_ports" => dp.udp_ports = ports(&path, v, errors),
            "guard_control_ports" => dp.guard_control_ports = ports(&path, v, errors),
            k => errors.push(unknown_key(&path, k, "in [data_plane]", &DATA_PLANE_KEYS)),
        }
    }
    Field::Given(dp)
}

pub(super) fn ports(path: &str, value: &Value, errors: &mut Vec<PolicyError>) -> Field<Vec<i64>> {
    let Value::Array(items) = value else {
        let fix = match value {
            Value::Integer(n) => format!("write it as an array: {path} = [{n}]"),
            _ => format!("write {path} as an array of port numbers, e.g. [443]"),
        };
        errors.push(type_error(path, value, "an array of port numbers", fix));
        return Field::Invalid;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Integer(n) => out.push(*n),
            other => {
                ok = false;
                let fix = match other {
                    Value::String(s) => format!("write the port as a number without quotes: {s}"),
                    _ => "write the port as a number from 1 to 65535".into(),
                };
                errors.push(type_error(
                    &format!("{path}[{i}]"),
                    other,
                    "a port number",
                    fix,
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
