//! What every raw reader shares (the native document in `raw`, its rule
//! items in `raw_rules`, the subnet map): the [`Field`] and [`At`]
//! wrappers a raw value travels in, and the shape errors (wrong TOML type,
//! unknown key) with the line a valid setting would be.

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

/// A value and the path it is reported under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At<T> {
    /// Where the value is in the input (`virtual_network_rules[0].id`).
    pub path: String,
    /// The value as written.
    pub value: T,
}

impl<T> At<T> {
    /// `value` at `path`.
    pub fn new(path: impl Into<String>, value: T) -> Self {
        At {
            path: path.into(),
            value,
        }
    }
}

/// The top-level keys of the native format and what a valid line looks like.
pub(super) const TOP_KEYS: [(&str, &str); 12] = [
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
        "virtual_network_rules",
        "[[virtual_network_rules]] with id, address_prefixes and endpoint",
    ),
    (
        "data_plane",
        "[data_plane] with tcp_ports = [443] and udp_ports = []",
    ),
    (
        "trusted_services",
        "[trusted_services] with service_tags_file and enabled",
    ),
    (
        "public_network_access",
        "public_network_access = \"Enabled\" or public_network_access = \"Disabled\"",
    ),
    (
        "private_endpoints",
        "[[private_endpoints]] with interface and allowed_prefixes",
    ),
    (
        "defaults",
        "[defaults] with subscription and resource_group",
    ),
];

/// The entries of `t` by key name, so that errors come in the same order
/// whichever map type `toml` was built with.
pub(super) fn sorted(t: &Table) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = t.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// A value as it appears in a message: strings bare, others in TOML form,
/// clipped to one readable line.
fn as_written(value: &Value) -> String {
    match value {
        Value::String(s) => clip(s),
        other => clip(&other.to_string()),
    }
}

pub(super) fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// The tables of the array of tables at `path`, each with its path
/// (`path[i]`). `None` when `value` is not an array; an item that is not
/// a table is skipped. Either is an error whose fix is "write `form`".
pub(super) fn tables_of<'a>(
    path: &str,
    value: &'a Value,
    form: &str,
    errors: &mut Vec<PolicyError>,
) -> Option<Vec<(String, &'a Table)>> {
    let Value::Array(items) = value else {
        errors.push(type_error(
            path,
            value,
            "an array of tables",
            format!("write {form}"),
        ));
        return None;
    };
    let mut tables = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        match item {
            Value::Table(t) => tables.push((item_path, t)),
            other => errors.push(type_error(
                &item_path,
                other,
                "a table",
                format!("write {form}"),
            )),
        }
    }
    Some(tables)
}

pub(super) fn type_error(path: &str, value: &Value, expected: &str, fix: String) -> PolicyError {
    PolicyError::new(
        path,
        as_written(value),
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

pub(super) fn hint(key: &str) -> &'static str {
    TOP_KEYS
        .iter()
        .find(|(name, _)| *name == key)
        .map_or("", |(_, h)| *h)
}

/// An unknown key, with the valid ones (and the closest, if one is close).
pub(super) fn unknown_key(path: &str, key: &str, place: &str, valid: &[&str]) -> PolicyError {
    let near = valid
        .iter()
        .map(|v| (strsim::levenshtein(&key.to_ascii_lowercase(), v), *v))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d);
    let list = valid.join(", ");
    let fix = match near {
        Some((_, v)) => format!("did you mean `{v}`? The valid keys {place} are: {list}"),
        None => format!("remove it or correct its name; the valid keys {place} are: {list}"),
    };
    PolicyError::new(path, "", format!("unknown key `{key}`"), fix)
}
