//! First stage of reading a native TOML policy: syntax and shape only. The
//! text becomes a [`RawPolicy`] that mirrors the file (strings stay strings,
//! numbers stay `i64`); unknown keys, keys this version refuses and values of
//! the wrong TOML type are reported here, every one of them, with the path of
//! the value. Meaning (enum values, addresses, ranges, limits) is checked in
//! `validate`.
//!
//! The walk is by hand over a parsed `toml::Table` rather than a
//! `#[serde(deny_unknown_fields)]` derive: serde stops at the first problem,
//! and a policy's errors are reported all at once.

use toml::{Table, Value};

use super::error::PolicyError;

/// A value that may be missing, or present but already reported as invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field<T> {
    /// The key is not in the file.
    Absent,
    /// The key is there but its value was refused (error already recorded).
    Invalid,
    /// The key is there with a value of the right shape.
    Given(T),
}

/// The top-level keys of the native format and what a valid line looks like.
const TOP_KEYS: [(&str, &str); 7] = [
    (
        "default_action",
        "default_action = \"Deny\" or default_action = \"Allow\"",
    ),
    ("bypass", "bypass = \"None\" or bypass = \"AzureServices\""),
    ("mode", "mode = \"Enforce\" or mode = \"Audit\""),
    ("ipv6", "ipv6 = \"Deny\" or ipv6 = \"Allow\""),
    (
        "limits",
        "limits = \"kv-2020\", limits = \"kv-current\" or \
         limits = { ip_rules = N, virtual_network_rules = M }",
    ),
    (
        "ip_rules",
        "ip_rules = [\"203.0.113.7\", \"198.51.100.0/24\"]",
    ),
    (
        "data_plane",
        "[data_plane] with tcp_ports = [443] and udp_ports = []",
    ),
];

/// Keys of the format that this version refuses (they come in a later change).
const LATER_KEYS: [&str; 2] = ["virtual_network_rules", "trusted_services"];

/// Keys of one table item in `ip_rules`.
const IP_RULE_KEYS: [&str; 3] = ["value", "comment", "expires_at"];
/// Keys of `[data_plane]`.
const DATA_PLANE_KEYS: [&str; 2] = ["tcp_ports", "udp_ports"];
/// Keys of an explicit `limits` table.
const LIMITS_KEYS: [&str; 2] = ["ip_rules", "virtual_network_rules"];

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
    pub data_plane: Field<RawDataPlane>,
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
    },
}

/// One item of `ip_rules`, a string or a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawIpRule {
    /// Position in the `ip_rules` array.
    pub index: usize,
    /// True for the `{ value = ... }` form (paths then end in `.value`).
    pub is_table: bool,
    /// The address or range as written.
    pub value: String,
    /// `comment`, if any.
    pub comment: Option<String>,
    /// `expires_at` as text (a TOML date-time is turned into its RFC 3339
    /// text), if any.
    pub expires_at: Option<String>,
}

impl RawIpRule {
    /// `ip_rules[3]`: the rule as a whole.
    pub fn path(&self) -> String {
        format!("ip_rules[{}]", self.index)
    }

    /// `ip_rules[3]` or `ip_rules[3].value`: where the address is written.
    pub fn value_path(&self) -> String {
        if self.is_table {
            format!("ip_rules[{}].value", self.index)
        } else {
            self.path()
        }
    }
}

/// `[data_plane]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawDataPlane {
    pub tcp_ports: Field<Vec<i64>>,
    pub udp_ports: Field<Vec<i64>>,
}

/// Parses `text` as TOML and checks its shape, recording every problem in
/// `errors`. `None` only for a TOML syntax error (the one error recorded).
pub fn read(text: &str, errors: &mut Vec<PolicyError>) -> Option<RawPolicy> {
    let table = match text.parse::<Table>() {
        Ok(t) => t,
        Err(e) => {
            errors.push(syntax_error(text, &e));
            return None;
        }
    };
    let mut raw = RawPolicy {
        default_action: Field::Absent,
        bypass: Field::Absent,
        mode: Field::Absent,
        ipv6: Field::Absent,
        limits: Field::Absent,
        ip_rules: Field::Absent,
        data_plane: Field::Absent,
    };
    for (key, value) in sorted(&table) {
        match key.as_str() {
            "default_action" => raw.default_action = string(key, value, errors),
            "bypass" => raw.bypass = string(key, value, errors),
            "mode" => raw.mode = string(key, value, errors),
            "ipv6" => raw.ipv6 = string(key, value, errors),
            "limits" => raw.limits = limits(value, errors),
            "ip_rules" => raw.ip_rules = ip_rules(value, errors),
            "data_plane" => raw.data_plane = data_plane(value, errors),
            k if LATER_KEYS.contains(&k) => errors.push(PolicyError::new(
                k,
                "",
                format!("`{k}` is not supported by this version of vaultfw yet"),
                format!("remove `{k}` from the policy; it comes in a later version"),
            )),
            k => {
                let valid: Vec<&str> = TOP_KEYS.iter().map(|(name, _)| *name).collect();
                errors.push(unknown_key(k, k, "at the top level", &valid));
            }
        }
    }
    Some(raw)
}

/// The entries of `t` by key name, so that errors come in the same order
/// whichever map type `toml` was built with.
fn sorted(t: &Table) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = t.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
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

/// A value as it appears in a message: strings bare, others in TOML form,
/// clipped to one readable line.
pub fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => clip(s),
        other => clip(&other.to_string()),
    }
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

fn type_error(path: &str, value: &Value, expected: &str, fix: String) -> PolicyError {
    PolicyError::new(
        path,
        shown(value),
        format!(
            "expected {expected}, found {} {}",
            article(value.type_str()),
            value.type_str()
        ),
        fix,
    )
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn hint(key: &str) -> &'static str {
    TOP_KEYS
        .iter()
        .find(|(name, _)| *name == key)
        .map_or("", |(_, h)| *h)
}

/// An unknown key, with the valid ones (and the closest, if one is close).
fn unknown_key(path: &str, key: &str, place: &str, valid: &[&str]) -> PolicyError {
    let near = valid
        .iter()
        .map(|v| (edit_distance(&key.to_ascii_lowercase(), v), *v))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d);
    let list = valid.join(", ");
    let fix = match near {
        Some((_, v)) => format!("did you mean `{v}`? The valid keys {place} are: {list}"),
        None => format!("remove it or correct its name; the valid keys {place} are: {list}"),
    };
    PolicyError::new(path, "", format!("unknown key `{key}`"), fix)
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn string(key: &str, value: &Value, errors: &mut Vec<PolicyError>) -> Field<String> {
    match value {
        Value::String(s) => Field::Given(s.clone()),
        other => {
            errors.push(type_error(
                key,
                other,
                "a string",
                format!("write {}", hint(key)),
            ));
            Field::Invalid
        }
    }
}

fn integer(path: &str, value: &Value, errors: &mut Vec<PolicyError>) -> Field<i64> {
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

fn limits(value: &Value, errors: &mut Vec<PolicyError>) -> Field<RawLimits> {
    match value {
        Value::String(s) => Field::Given(RawLimits::Profile(s.clone())),
        Value::Table(t) => {
            let mut ip_rules = Field::Absent;
            let mut virtual_network_rules = Field::Absent;
            for (key, v) in sorted(t) {
                let path = format!("limits.{key}");
                match key.as_str() {
                    "ip_rules" => ip_rules = integer(&path, v, errors),
                    "virtual_network_rules" => virtual_network_rules = integer(&path, v, errors),
                    k => errors.push(unknown_key(&path, k, "in limits", &LIMITS_KEYS)),
                }
            }
            Field::Given(RawLimits::Explicit {
                ip_rules,
                virtual_network_rules,
            })
        }
        other => {
            errors.push(type_error(
                "limits",
                other,
                "a profile name or a table",
                format!("write {}", hint("limits")),
            ));
            Field::Invalid
        }
    }
}

fn ip_rules(value: &Value, errors: &mut Vec<PolicyError>) -> Field<Vec<RawIpRule>> {
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
        .filter_map(|(index, item)| ip_rule(index, item, errors))
        .collect();
    Field::Given(rules)
}

fn ip_rule(index: usize, item: &Value, errors: &mut Vec<PolicyError>) -> Option<RawIpRule> {
    let path = format!("ip_rules[{index}]");
    let table = match item {
        Value::String(s) => {
            return Some(RawIpRule {
                index,
                is_table: false,
                value: s.clone(),
                comment: None,
                expires_at: None,
            });
        }
        Value::Table(t) => t,
        other => {
            errors.push(type_error(
                &path,
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
        match (key.as_str(), v) {
            ("value", Value::String(s)) => value = Some(s.clone()),
            ("comment", Value::String(s)) => comment = Some(s.clone()),
            ("expires_at", Value::String(s)) => expires_at = Some(s.clone()),
            ("expires_at", Value::Datetime(d)) => expires_at = Some(d.to_string()),
            ("value", other) => {
                errors.push(type_error(
                    &key_path,
                    other,
                    "a string",
                    "write the address or range in quotes, e.g. value = \"203.0.113.7\"".into(),
                ));
            }
            ("comment", other) => {
                errors.push(type_error(
                    &key_path,
                    other,
                    "a string",
                    "write the comment in quotes".into(),
                ));
            }
            ("expires_at", other) => {
                errors.push(type_error(
                    &key_path,
                    other,
                    "a date-time",
                    format!("write {}", super::expiry::EXPECTED_FORM),
                ));
            }
            (k, _) => {
                errors.push(unknown_key(&key_path, k, "of an IP rule", &IP_RULE_KEYS));
            }
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
        index,
        is_table: true,
        value,
        comment,
        expires_at,
    })
}

fn data_plane(value: &Value, errors: &mut Vec<PolicyError>) -> Field<RawDataPlane> {
    let Value::Table(t) = value else {
        errors.push(type_error(
            "data_plane",
            value,
            "a table",
            format!("write {}", hint("data_plane")),
        ));
        return Field::Invalid;
    };
    let mut dp = RawDataPlane {
        tcp_ports: Field::Absent,
        udp_ports: Field::Absent,
    };
    for (key, v) in sorted(t) {
        let path = format!("data_plane.{key}");
        match key.as_str() {
            "tcp_ports" => dp.tcp_ports = ports(&path, v, errors),
            "udp_ports" => dp.udp_ports = ports(&path, v, errors),
            k => errors.push(unknown_key(&path, k, "in [data_plane]", &DATA_PLANE_KEYS)),
        }
    }
    Field::Given(dp)
}

fn ports(path: &str, value: &Value, errors: &mut Vec<PolicyError>) -> Field<Vec<i64>> {
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
