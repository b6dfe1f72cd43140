//! Reader for Microsoft's service-tags files (`ServiceTags_Public_*.json`,
//! "Azure IP Ranges and Service Tags", published weekly), the source of the
//! trusted services' prefixes. The shape read:
//!
//! ```json
//! { "changeNumber": 301, "cloud": "Public",
//!   "values": [ { "name": "AzureBackup", "id": "AzureBackup",
//!                 "properties": { "addressPrefixes": ["4.166.35.241/32", "2603:1000::/40"],
//!                                 "changeNumber": 67, "region": "", ... } }, ... ] }
//! ```
//!
//! Every other field is ignored, so that new fields Microsoft adds do not
//! break the reader. IPv4 prefixes are kept (canonical, sorted, each once
//! per tag); IPv6 prefixes are checked for syntax, skipped and counted; a
//! prefix with host bits set is read as its network and counted (the real
//! files have none, so this is tolerance, not a habit). Refused, each with
//! its JSON path (`values[12].properties.addressPrefixes[3]`): malformed
//! prefixes, non-public IPv4 space (a service tag holds Azure's public
//! addresses; private or special space means the file is not Microsoft's),
//! a tag name that appears twice, and a file without `values`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::Value;

use super::error::PolicyError;
use super::ipv4::{self, describe_conflict};

/// A service-tags file, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTagsFile {
    /// The top-level `changeNumber` (increases with each publication).
    pub change_number: Option<u64>,
    /// The top-level `cloud` (`"Public"`, `"AzureGovernment"`, …).
    pub cloud: Option<String>,
    /// The tags, in file order.
    pub tags: Vec<ServiceTag>,
}

impl ServiceTagsFile {
    /// The tag whose `name` is `name` (case-insensitive), if any.
    pub fn tag(&self, name: &str) -> Option<&ServiceTag> {
        self.tags.iter().find(|t| t.name.eq_ignore_ascii_case(name))
    }
}

/// One entry of `values[]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTag {
    /// `name` (`"AzureBackup"`, regional ones like `"Sql.WestEurope"`).
    pub name: String,
    /// `id` (usually equal to `name`; `name` when absent).
    pub id: String,
    /// Where the entry is in the file: `values[3]`.
    pub path: String,
    /// The IPv4 prefixes: canonical, sorted by (address, prefix length),
    /// each once.
    pub ipv4: Vec<Ipv4Net>,
    /// The IPv6 prefixes in global unicast space (2000::/3): canonical
    /// (host bits cleared), sorted, each once.
    pub ipv6: Vec<Ipv6Net>,
    /// IPv6 prefixes skipped: outside global unicast space or in a range
    /// [`ipv6`](super::ipv6) refuses (no Azure source has such an address).
    pub ipv6_skipped: usize,
    /// IPv4 prefixes written with host bits set, read as their network.
    pub host_bits_cleared: usize,
    /// The first of those: its JSON path and the text as written.
    pub first_host_bits: Option<(String, String)>,
    /// IPv4 prefixes listed more than once in this tag (kept once).
    pub duplicates: usize,
}

/// Why a service-tags file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ServiceTagsError {
    /// The file could not be read.
    #[error("cannot read service-tags file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file was read but is not a valid service-tags file. Each error's
    /// path is `<file>:<JSON path>` (or `<file>:<line>:<column>` for a
    /// JSON syntax error).
    #[error("service-tags file {path} is invalid:\n{}", show(errors))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every error found.
        errors: Vec<PolicyError>,
    },
}

fn show(errors: &[PolicyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and parses the service-tags file at `path`.
pub fn read(path: &Path) -> Result<ServiceTagsFile, ServiceTagsError> {
    let text = super::input::read_text_file(path, super::input::MAX_SERVICE_TAGS_BYTES).map_err(
        |source| ServiceTagsError::Io {
            path: path.to_path_buf(),
            source,
        },
    )?;
    parse(&text, &path.display().to_string()).map_err(|errors| ServiceTagsError::Invalid {
        path: path.to_path_buf(),
        errors,
    })
}

/// The fix of every error about the file's content.
const FIX: &str = "use the file as Microsoft publishes it (\"Azure IP Ranges and Service \
                   Tags – Public Cloud\", ServiceTags_Public_*.json), downloaded again if it \
                   was edited or truncated";

/// Parses the text of a service-tags file. `label` (the file's path)
/// prefixes every error path as `label:path`; empty for none. Collects every
/// error.
pub fn parse(text: &str, label: &str) -> Result<ServiceTagsFile, Vec<PolicyError>> {
    let at = |path: &str| {
        if label.is_empty() {
            path.to_string()
        } else if path.is_empty() {
            label.to_string()
        } else {
            format!("{label}:{path}")
        }
    };
    let root: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![PolicyError::new(
                at(&format!("{}:{}", e.line(), e.column())),
                "",
                format!("JSON syntax error: {e}"),
                FIX,
            )]);
        }
    };
    let mut errors = Vec::new();
    let Value::Object(root) = root else {
        return Err(vec![PolicyError::new(
            at(""),
            "",
            format!(
                "expected a JSON object with `values`, found {}",
                kind(&root)
            ),
            FIX,
        )]);
    };
    let change_number = match root.get("changeNumber") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                errors.push(type_error(&at("changeNumber"), v, "a whole number"));
                None
            }
        },
    };
    let cloud = root
        .get("cloud")
        .and_then(Value::as_str)
        .map(str::to_string);
    let values = match root.get("values") {
        Some(Value::Array(values)) => values,
        Some(other) => {
            errors.push(type_error(&at("values"), other, "an array of service tags"));
            return Err(errors);
        }
        None => {
            errors.push(PolicyError::new(
                at("values"),
                "",
                "there is no `values` array: this is not a service-tags file",
                FIX,
            ));
            return Err(errors);
        }
    };

    let mut tags = Vec::with_capacity(values.len());
    let mut first_of: BTreeMap<String, String> = BTreeMap::new();
    for (i, value) in values.iter().enumerate() {
        let path = format!("values[{i}]");
        if let Some(tag) = read_tag(&path, value, &at, &mut errors) {
            let key = tag.name.to_ascii_lowercase();
            if let Some(first) = first_of.get(&key) {
                errors.push(PolicyError::new(
                    at(&format!("{path}.name")),
                    &tag.name,
                    format!("the tag name is already used by {first}"),
                    FIX,
                ));
                continue;
            }
            first_of.insert(key, path);
            tags.push(tag);
        }
    }
    if errors.is_empty() {
        Ok(ServiceTagsFile {
            change_number,
            cloud,
            tags,
        })
    } else {
        Err(errors)
    }
}

fn read_tag(
    path: &str,
    value: &Value,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<PolicyError>,
) -> Option<ServiceTag> {
    let Value::Object(entry) = value else {
        errors.push(type_error(&at(path), value, "a service tag object"));
        return None;
    };
    let name = match entry.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | Some(Value::Null) | None => {
            errors.push(PolicyError::new(
                at(&format!("{path}.name")),
                "",
                "the service tag has no name",
                FIX,
            ));
            return None;
        }
        Some(other) => {
            errors.push(type_error(&at(&format!("{path}.name")), other, "a string"));
            return None;
        }
    };
    let id = entry
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| name.clone(), str::to_string);
    let prefixes_path = format!("{path}.properties.addressPrefixes");
    let prefixes = match entry
        .get("properties")
        .and_then(|p| p.get("addressPrefixes"))
    {
        Some(Value::Array(items)) => items.as_slice(),
        Some(Value::Null) => &[],
        Some(other) => {
            errors.push(type_error(
                &at(&prefixes_path),
                other,
                "an array of prefixes",
            ));
            return None;
        }
        None => {
            errors.push(PolicyError::new(
                at(&prefixes_path),
                "",
                format!("service tag \"{name}\" has no properties.addressPrefixes"),
                FIX,
            ));
            return None;
        }
    };

    let mut tag = ServiceTag {
        name,
        id,
        path: path.to_string(),
        ipv4: Vec::new(),
        ipv6: Vec::new(),
        ipv6_skipped: 0,
        host_bits_cleared: 0,
        first_host_bits: None,
        duplicates: 0,
    };
    let mut set = BTreeSet::new();
    let mut set6 = BTreeSet::new();
    let mut ok = true;
    for (j, item) in prefixes.iter().enumerate() {
        let item_path = format!("{prefixes_path}[{j}]");
        let Value::String(text) = item else {
            ok = false;
            errors.push(type_error(&at(&item_path), item, "a prefix string"));
            continue;
        };
        match read_prefix(text) {
            Ok(Prefix::V6(Some(net))) => {
                set6.insert((u128::from(net.addr()), net.prefix_len()));
            }
            Ok(Prefix::V6(None)) => tag.ipv6_skipped += 1,
            Ok(Prefix::V4 { net, host_bits }) => {
                if host_bits {
                    tag.host_bits_cleared += 1;
                    if tag.first_host_bits.is_none() {
                        tag.first_host_bits = Some((item_path.clone(), text.clone()));
                    }
                }
                if !set.insert((u32::from(net.addr()), net.prefix_len())) {
                    tag.duplicates += 1;
                }
            }
            Err(reason) => {
                ok = false;
                errors.push(PolicyError::new(at(&item_path), text, reason, FIX));
            }
        }
    }
    tag.ipv4 = set
        .into_iter()
        .map(|(addr, len)| {
            // Built from a valid Ipv4Net above.
            Ipv4Net::new(addr.into(), len).expect("invariant: prefix length 0..=32")
        })
        .collect();
    tag.ipv6 = set6
        .into_iter()
        .map(|(addr, len)| Ipv6Net::new_assert(addr.into(), len))
        .collect();
    ok.then_some(tag)
}

enum Prefix {
    V4 {
        net: Ipv4Net,
        host_bits: bool,
    },
    /// Global unicast, canonical; `None` for a prefix no rule may name.
    V6(Option<Ipv6Net>),
}

/// One prefix of a tag: IPv4 or IPv6, made canonical (an IPv6 prefix
/// outside what an IP rule may name is kept as `V6(None)`: skipped).
fn read_prefix(text: &str) -> Result<Prefix, String> {
    if text.contains(':') {
        let net = match (text.parse::<Ipv6Net>(), text.parse::<Ipv6Addr>()) {
            (Ok(net), _) => net.trunc(),
            (_, Ok(addr)) => Ipv6Net::from(addr),
            _ => return Err("not an IPv4 or IPv6 prefix".into()),
        };
        let usable = super::ipv6::check_value(
            super::ipv4::ValueKind::IpRule,
            super::ipv4::Dialect::Native,
            "",
            &net.to_string(),
        )
        .ok();
        return Ok(Prefix::V6(usable));
    }
    let (addr, len) = ipv4::parse_cidr(text)?;
    let net = Ipv4Net::new(addr, len)
        .map_err(|_| format!("prefix length {len} is outside 0–32"))?
        .trunc();
    if let Some(c) = ipv4::conflict(net) {
        return Err(format!(
            "{}: a service tag holds Azure's public addresses only",
            describe_conflict(net, &c)
        ));
    }
    Ok(Prefix::V4 {
        net,
        host_bits: net.addr() != addr,
    })
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

fn type_error(path: &str, value: &Value, expected: &str) -> PolicyError {
    let shown = match value {
        Value::String(s) => s.clone(),
        other => {
            let mut s = other.to_string();
            if s.chars().count() > 80 {
                s = s.chars().take(80).collect::<String>() + "…";
            }
            s
        }
    };
    PolicyError::new(
        path,
        shown,
        format!("expected {expected}, found {}", kind(value)),
        FIX,
    )
}
