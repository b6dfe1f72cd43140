//! Writing accepted CLI changes back to the native policy file, so a
//! restart serves the same policy. Edits go through `toml_edit`, which
//! keeps the operator's comments, order and formatting around them; the
//! result is written to a temporary file in the same directory, synced,
//! and renamed over the original (atomic: a crash leaves the old file or
//! the new one, never half of one).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

use crate::policy::Endpoint;

/// One change to a native policy document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Appends an IP rule written as `text` (canonical form).
    AddIpRule(String),
    /// Removes every IP rule whose network is this one (whatever its
    /// spelling: `a.b.c.d`, `a.b.c.d/32`, or a table with `value`).
    RemoveIpRule(Ipv4Net),
    /// Sets a top-level string key (`default_action`, `bypass`).
    SetString(&'static str, String),
    /// Adds `prefix` to subnet rule `id` (ids compare case-insensitively),
    /// creating the rule with `endpoint` when it does not exist.
    AddVnetPrefix {
        /// The rule id.
        id: String,
        /// The prefix, canonical text.
        prefix: String,
        /// The endpoint of a new rule.
        endpoint: Option<Endpoint>,
    },
    /// Removes `prefix` from subnet rule `id`; the rule goes when it has no
    /// prefix left.
    RemoveVnetPrefix {
        /// The rule id.
        id: String,
        /// The prefix.
        prefix: Ipv4Net,
    },
    /// Removes subnet rule `id`.
    RemoveVnetRule(String),
}

/// Why a change could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The file is not a TOML document (it was valid when loaded: it
    /// changed underneath).
    #[error("the policy file is no longer valid TOML: {0}")]
    Parse(String),
    /// A key has an unexpected type.
    #[error("cannot edit `{key}` in the policy file: it is not {expected}")]
    Shape {
        /// The key.
        key: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// Writing failed; the old file is intact.
    #[error("cannot write {path}: {source} (the previous file is intact)")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Applies `edits` to the native policy `text`.
pub fn edit_native(text: &str, edits: &[Edit]) -> Result<String, PersistError> {
    let mut doc: DocumentMut = text.parse().map_err(|e| PersistError::Parse(format!("{e}")))?;
    for edit in edits {
        apply(&mut doc, edit)?;
    }
    Ok(doc.to_string())
}

fn apply(doc: &mut DocumentMut, edit: &Edit) -> Result<(), PersistError> {
    match edit {
        Edit::AddIpRule(text) => ip_rules(doc)?.push(text.as_str()),
        Edit::RemoveIpRule(network) => {
            let rules = ip_rules(doc)?;
            rules.retain(|item| rule_network(item) != Some(*network));
        }
        Edit::SetString(key, value) => {
            doc[*key] = toml_edit::value(value.as_str());
        }
        Edit::AddVnetPrefix {
            id,
            prefix,
            endpoint,
        } => {
            let rules = vnet_rules(doc)?;
            if let Some(rule) = rules.iter_mut().find(|t| has_id(t, id)) {
                let prefixes = rule
                    .entry("address_prefixes")
                    .or_insert(toml_edit::value(Array::new()))
                    .as_array_mut()
                    .ok_or(PersistError::Shape {
                        key: "virtual_network_rules[].address_prefixes",
                        expected: "an array",
                    })?;
                prefixes.push(prefix.as_str());
                return Ok(());
            }
            rules.push(new_vnet_rule(id, prefix, endpoint.as_ref()));
        }
        Edit::RemoveVnetPrefix { id, prefix } => {
            let rules = vnet_rules(doc)?;
            for rule in rules.iter_mut().filter(|t| has_id(t, id)) {
                if let Some(prefixes) = rule
                    .get_mut("address_prefixes")
                    .and_then(Item::as_array_mut)
                {
                    prefixes.retain(|v| value_network(v) != Some(*prefix));
                }
            }
            rules.retain(|t| {
                !has_id(t, id)
                    || t.get("address_prefixes")
                        .and_then(Item::as_array)
                        .is_some_and(|a| !a.is_empty())
            });
        }
        Edit::RemoveVnetRule(id) => vnet_rules(doc)?.retain(|t| !has_id(t, id)),
    }
    Ok(())
}

/// A `[[virtual_network_rules]]` table with one prefix.
fn new_vnet_rule(id: &str, prefix: &str, endpoint: Option<&Endpoint>) -> Table {
    let mut rule = Table::new();
    rule["id"] = toml_edit::value(id);
    let mut prefixes = Array::new();
    prefixes.push(prefix);
    rule["address_prefixes"] = toml_edit::value(prefixes);
    let mut ep = InlineTable::new();
    if let Some(endpoint) = endpoint {
        if let Some(interface) = &endpoint.interface {
            ep.insert("interface", interface.as_str().into());
        }
        if let Some(vlan) = endpoint.vlan {
            ep.insert("vlan", i64::from(vlan).into());
        }
    }
    rule["endpoint"] = toml_edit::value(ep);
    rule
}

fn ip_rules(doc: &mut DocumentMut) -> Result<&mut Array, PersistError> {
    doc.entry("ip_rules")
        .or_insert(toml_edit::value(Array::new()))
        .as_array_mut()
        .ok_or(PersistError::Shape {
            key: "ip_rules",
            expected: "an array",
        })
}

fn vnet_rules(doc: &mut DocumentMut) -> Result<&mut ArrayOfTables, PersistError> {
    doc.entry("virtual_network_rules")
        .or_insert(Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or(PersistError::Shape {
            key: "virtual_network_rules",
            expected: "an array of tables ([[virtual_network_rules]])",
        })
}

fn has_id(rule: &Table, id: &str) -> bool {
    rule.get("id")
        .and_then(Item::as_str)
        .is_some_and(|have| have.eq_ignore_ascii_case(id))
}

/// The network of an `ip_rules` item: a string or `{ value = "..." }`.
fn rule_network(item: &Value) -> Option<Ipv4Net> {
    match item {
        Value::InlineTable(table) => table.get("value").and_then(value_network),
        other => value_network(other),
    }
}

/// A validated file's address or CIDR string as a network.
fn value_network(value: &Value) -> Option<Ipv4Net> {
    let text = value.as_str()?;
    if text.contains('/') {
        text.parse().ok()
    } else {
        text.parse::<std::net::Ipv4Addr>().ok().map(Ipv4Net::from)
    }
}

/// Replaces `path` with `contents` atomically, keeping its permissions.
pub fn write_atomically(path: &Path, contents: &str) -> Result<(), PersistError> {
    let io = |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.vaultfw-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(contents.as_bytes())?;
        if let Ok(meta) = fs::metadata(path) {
            file.set_permissions(fs::Permissions::from_mode(meta.permissions().mode()))?;
        }
        file.sync_all()?;
        fs::rename(&temp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# production vault
default_action = "Deny" # closed
ip_rules = [
    "203.0.113.0/24", # office
    { value = "198.51.100.7", comment = "build agent" },
    "192.0.2.10/32",
]
"#;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn adding_and_removing_ip_rules_keeps_comments() {
        let text = edit_native(FILE, &[Edit::AddIpRule("192.0.2.77".into())]).unwrap();
        assert!(text.contains("# production vault"));
        assert!(text.contains("# office"));
        assert!(text.contains("\"192.0.2.77\""));
        let text = edit_native(&text, &[Edit::RemoveIpRule(net("198.51.100.7/32"))]).unwrap();
        assert!(!text.contains("198.51.100.7"), "{text}");
        // A /32 written with its length is found by its network too (P1).
        let text = edit_native(&text, &[Edit::RemoveIpRule(net("192.0.2.10/32"))]).unwrap();
        assert!(!text.contains("192.0.2.10"), "{text}");
        assert!(text.contains("203.0.113.0/24"));
    }

    #[test]
    fn setting_a_key_replaces_its_value_only() {
        let text = edit_native(FILE, &[Edit::SetString("default_action", "Allow".into())]).unwrap();
        assert!(text.contains("default_action = \"Allow\""));
        assert!(text.contains("# production vault"));
    }

    #[test]
    fn subnet_prefixes_are_added_to_existing_rules_and_rules_created() {
        let endpoint = Endpoint {
            interface: Some("eth1".into()),
            vlan: None,
        };
        let text = edit_native(
            FILE,
            &[Edit::AddVnetPrefix {
                id: "vnet/subnets/app".into(),
                prefix: "10.1.2.0/24".into(),
                endpoint: Some(endpoint),
            }],
        )
        .unwrap();
        let text = edit_native(
            &text,
            &[Edit::AddVnetPrefix {
                id: "VNET/subnets/APP".into(),
                prefix: "10.1.3.0/24".into(),
                endpoint: None,
            }],
        )
        .unwrap();
        assert_eq!(text.matches("[[virtual_network_rules]]").count(), 1, "{text}");
        assert!(text.contains("10.1.3.0/24"));
        let text = edit_native(
            &text,
            &[
                Edit::RemoveVnetPrefix {
                    id: "vnet/subnets/app".into(),
                    prefix: net("10.1.2.0/24"),
                },
                Edit::RemoveVnetPrefix {
                    id: "vnet/subnets/app".into(),
                    prefix: net("10.1.3.0/24"),
                },
            ],
        )
        .unwrap();
        assert!(!text.contains("virtual_network_rules"), "{text}");
    }

    #[test]
    fn atomic_write_replaces_the_file_and_keeps_its_mode() {
        let dir = std::env::temp_dir().join(format!("vfw-persist-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.toml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&path, "new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        fs::remove_dir_all(&dir).unwrap();
    }
}
