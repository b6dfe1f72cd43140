//! Writing accepted CLI changes back to the native policy file, so a
//! restart serves the same policy. Edits go through `toml_edit`, which
//! keeps the operator's comments, order and formatting around them; the
//! result replaces the file atomically ([`write_atomically`]: a crash
//! leaves the old file or the new one, never half of one; links planted
//! beside it are never followed; a symlinked policy file is written
//! through to its target).

mod files;
mod split;

use std::path::PathBuf;

use ipnet::IpNet;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, Value};

use crate::policy::{self, Endpoint, endpoint_table, subnet_id};

pub use files::{
    StagedWrite, TEMP_MARKER, TEMP_SUFFIX, remove_leftover_temp_files, stage, write_atomically,
};
pub use split::SplitFile;

/// One change to a native policy document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Declares an IP rule written as `text` (canonical form): in place
    /// of the first entry of its network, keeping that entry's comments
    /// (other entries of the network go), else appended.
    AddIpRule(String),
    /// [`Edit::AddIpRule`] with a comment and/or an expiry, written as a
    /// table item `{ value = "…", comment = "…", expires_at = "…" }`.
    AddIpRuleWith {
        /// The address or range, canonical text.
        value: String,
        /// `comment`.
        comment: Option<String>,
        /// `expires_at`, RFC 3339.
        expires_at: Option<String>,
    },
    /// Removes every IP rule whose network is this one (whatever its
    /// spelling: `a.b.c.d`, `a.b.c.d/32`, `2001:db8:0::1`, or a table with
    /// `value`).
    RemoveIpRule(IpNet),
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
        /// `ignore_missing_endpoint = true` on a new rule.
        ignore_missing_endpoint: bool,
    },
    /// Removes `prefix` from subnet rule `id`; the rule goes when it has no
    /// prefix left.
    RemoveVnetPrefix {
        /// The rule id.
        id: String,
        /// The prefix.
        prefix: IpNet,
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
    let mut doc = NativeDocument::parse(text)?;
    doc.edit(edits)?;
    Ok(doc.text())
}

/// A native policy document, parsed for editing (the daemon keeps the
/// file it last wrote as a [`SplitFile`] made from one). Edits keep
/// comments as [`edit_native`] does.
#[derive(Clone, Debug)]
pub struct NativeDocument(DocumentMut);

impl NativeDocument {
    /// Parses native policy `text` (TOML; not validated).
    ///
    /// Errors: [`PersistError::Parse`] when it is not TOML.
    pub fn parse(text: &str) -> Result<Self, PersistError> {
        text.parse()
            .map(NativeDocument)
            .map_err(|e| PersistError::Parse(format!("{e}")))
    }

    /// Applies `edits` in order. On an error the document may hold the
    /// edits before the failing one: parse it again.
    ///
    /// Errors: [`PersistError::Shape`] when a key the edit needs has
    /// another type.
    pub fn edit(&mut self, edits: &[Edit]) -> Result<(), PersistError> {
        edits.iter().try_for_each(|edit| apply(&mut self.0, edit))
    }

    /// The document as TOML text.
    pub fn text(&self) -> String {
        self.0.to_string()
    }
}

/// The `ip_rules` item an [`Edit::AddIpRule`] or [`Edit::AddIpRuleWith`]
/// writes, as TOML (`"203.0.113.7"` or `{ value = …, … }`); `None` for
/// other edits.
pub fn ip_rule_item(edit: &Edit) -> Option<String> {
    ip_rule_value(edit).map(|value| value.to_string().trim().to_owned())
}

fn ip_rule_value(edit: &Edit) -> Option<Value> {
    match edit {
        Edit::AddIpRule(text) => Some(Value::from(text.as_str())),
        Edit::AddIpRuleWith {
            value,
            comment,
            expires_at,
        } => {
            let mut t = toml_edit::InlineTable::new();
            t.insert("value", value.as_str().into());
            if let Some(c) = comment {
                t.insert("comment", c.as_str().into());
            }
            if let Some(at) = expires_at {
                t.insert("expires_at", at.as_str().into());
            }
            Some(Value::InlineTable(t))
        }
        _ => None,
    }
}

fn apply(doc: &mut DocumentMut, edit: &Edit) -> Result<(), PersistError> {
    match edit {
        Edit::AddIpRule(_) | Edit::AddIpRuleWith { .. } => {
            let value = ip_rule_value(edit).expect("an IP rule edit");
            let rules = ip_rules(doc)?;
            let held = rule_network(&value)
                .and_then(|network| entry_of(rules, network, 0).map(|at| (network, at)));
            let Some((network, at)) = held else {
                push_keeping_comments(rules, value);
                return Ok(());
            };
            // Declared again: in its place, with its comments.
            rules.replace(at, value);
            while let Some(i) = entry_of(rules, network, at + 1) {
                remove_keeping_comments(rules, i);
            }
        }
        Edit::RemoveIpRule(network) => {
            let rules = ip_rules(doc)?;
            while let Some(i) = entry_of(rules, *network, 0) {
                remove_keeping_comments(rules, i);
            }
        }
        Edit::SetString(key, value) => {
            // Keep the comment beside the setting (the old value's decor).
            let decor = doc
                .get(key)
                .and_then(Item::as_value)
                .map(|v| v.decor().clone());
            let mut new = Value::from(value.as_str());
            if let Some(decor) = decor {
                *new.decor_mut() = decor;
            }
            doc[*key] = Item::Value(new);
        }
        Edit::AddVnetPrefix {
            id,
            prefix,
            endpoint,
            ignore_missing_endpoint,
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
            let mut rule = new_vnet_rule(id, prefix, endpoint.as_ref());
            if *ignore_missing_endpoint {
                rule["ignore_missing_endpoint"] = toml_edit::value(true);
            }
            rules.push(rule);
        }
        Edit::RemoveVnetPrefix { id, prefix } => {
            let rules = vnet_rules(doc)?;
            for rule in rules.iter_mut().filter(|t| has_id(t, id)) {
                if let Some(prefixes) = rule
                    .get_mut("address_prefixes")
                    .and_then(Item::as_array_mut)
                {
                    prefixes.retain(|v| prefix_network(v) != Some(*prefix));
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

// How toml_edit keeps comments in a multi-line array: a comment after an
// item's comma is stored in the *next* item's prefix, and the last item's
// comment in the array's trailing text. So edits move that text along with
// the line it belongs to.

/// Without a trailing comma a parse gives the text after the last item
/// (its comment, the line breaks and comment lines before `]`) to that
/// item, where an added item's comma would follow it and a removal would
/// drop it: it goes to the array's trailing text first, as in an array
/// the daemon edited without parsing it again.
fn trailing_takes_last_suffix(array: &mut Array) {
    let trailing = array.trailing().as_str().unwrap_or("").to_owned();
    if !array.trailing_comma()
        && let Some(last) = array.iter_mut().last()
        && let Some(suffix) = last.decor().suffix().and_then(|s| s.as_str())
        && !suffix.is_empty()
    {
        let trailing = format!("{suffix}{trailing}");
        last.decor_mut().set_suffix("");
        array.set_trailing(trailing);
    }
}

/// Appends `item` to `array` as its own line, leaving the last item's
/// comment on the last item's line.
fn push_keeping_comments(array: &mut Array, item: Value) {
    trailing_takes_last_suffix(array);
    let last_prefix = array
        .iter()
        .last()
        .and_then(|v| v.decor().prefix())
        .and_then(|p| p.as_str())
        .map(str::to_owned);
    let Some(last_prefix) = last_prefix.filter(|p| p.contains('\n')) else {
        array.push(item); // single-line (or empty) array: toml_edit's layout
        return;
    };
    let indent = last_prefix.rsplit('\n').next().unwrap_or("").to_owned();
    let trailing = array.trailing().as_str().unwrap_or("").to_owned();
    let (last_comment, rest) = match trailing.rfind('\n') {
        Some(at) => (trailing[..at].to_owned(), trailing[at..].to_owned()),
        None => (trailing.clone(), "\n".to_owned()),
    };
    let mut value = item;
    value
        .decor_mut()
        .set_prefix(format!("{last_comment}\n{indent}"));
    value.decor_mut().set_suffix("");
    array.push_formatted(value);
    array.set_trailing(rest);
}

/// Removes item `i`, taking its own comment with it and leaving the
/// previous item's comment on the previous item's line and the lines
/// above the next item (or `]`) above it ([`prefix_after_removal`],
/// [`trailing_after_removal`]).
fn remove_keeping_comments(array: &mut Array, i: usize) {
    trailing_takes_last_suffix(array);
    let prefix = array
        .get(i)
        .and_then(|v| v.decor().prefix())
        .and_then(|p| p.as_str())
        .unwrap_or("")
        .to_owned();
    array.remove(i);
    if let Some(next) = array.get_mut(i) {
        let next_prefix = next.decor().prefix().and_then(|p| p.as_str()).unwrap_or("");
        let joined = prefix_after_removal(&prefix, next_prefix);
        next.decor_mut().set_prefix(joined);
    } else if let Some(trailing) =
        trailing_after_removal(&prefix, array.trailing().as_str().unwrap_or(""))
    {
        array.set_trailing(trailing);
    }
    // An empty array has no comma to keep (its text parses without one).
    if array.is_empty() {
        array.set_trailing_comma(false);
    }
}

/// The prefix of the item after a removed one, from the removed item's
/// prefix (`removed`: the previous item's comment, then the lines above
/// the removed item) and its own (`next`: the removed item's comment,
/// then the lines above it). Both kept, but the removed item's comment
/// goes: `"a", # a` / `"b", # b` / `# about c` / `"c"` without `"b"` keeps
/// `# a` on its line and `# about c` above `"c"`.
fn prefix_after_removal(removed: &str, next: &str) -> String {
    match (removed.rfind('\n'), next.find('\n')) {
        (Some(r), Some(n)) => format!("{}{}", &removed[..=r], &next[n + 1..]),
        _ => removed.to_owned(),
    }
}

/// The array's trailing text after its last item was removed, from that
/// item's prefix (`removed`) and the trailing text (`trailing`: the item's
/// comment, then the lines before `]`): the previous item's comment and
/// the lines before `]` stay, the removed item's comment goes. `None` when
/// the item was on the previous item's line (nothing to move).
fn trailing_after_removal(removed: &str, trailing: &str) -> Option<String> {
    let at = removed.rfind('\n')?;
    let below = trailing.find('\n').map_or("", |n| &trailing[n + 1..]);
    Some(format!("{}{below}", &removed[..=at]))
}

/// A `[[virtual_network_rules]]` table with one prefix.
fn new_vnet_rule(id: &str, prefix: &str, endpoint: Option<&Endpoint>) -> Table {
    let mut rule = Table::new();
    rule["id"] = toml_edit::value(id);
    let mut prefixes = Array::new();
    prefixes.push(prefix);
    rule["address_prefixes"] = toml_edit::value(prefixes);
    rule["endpoint"] = toml_edit::value(endpoint.map(endpoint_table).unwrap_or_default());
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
        .is_some_and(|have| subnet_id::canonical(have) == subnet_id::canonical(id))
}

/// The index of the first `ip_rules` item from `from` on whose network is
/// `network` (whatever its spelling).
fn entry_of(rules: &Array, network: IpNet, from: usize) -> Option<usize> {
    (from..rules.len()).find(|&i| {
        rules
            .get(i)
            .is_some_and(|item| may_be(item, network) && rule_network(item) == Some(network))
    })
}

/// The network of an `ip_rules` item: a string or `{ value = "..." }`.
fn rule_network(item: &Value) -> Option<IpNet> {
    let value = match item {
        Value::InlineTable(table) => table.get("value")?,
        other => other,
    };
    policy::parse_any_ip_rule("ip_rules", value.as_str()?).ok()
}

/// Whether `item` may spell `network`: false only when its text reads,
/// by the plain address parser, as another network (a cheap test before
/// [`rule_network`], which runs the policy's checks, on 100,000 items).
fn may_be(item: &Value, network: IpNet) -> bool {
    let value = match item {
        Value::InlineTable(table) => table.get("value"),
        other => Some(other),
    };
    let Some(text) = value.and_then(Value::as_str) else {
        return true;
    };
    // std's address parser: `IpNet`'s allocates on every call, and this
    // runs once per item.
    let read = match text.split_once('/') {
        Some((address, len)) => address
            .parse::<std::net::IpAddr>()
            .ok()
            .zip(len.parse::<u8>().ok())
            .and_then(|(address, len)| IpNet::new(address, len).ok()),
        None => text.parse::<std::net::IpAddr>().ok().map(IpNet::from),
    };
    match read {
        Some(read) => read == network || read.trunc() == network,
        None => true,
    }
}

/// The network of an `address_prefixes` item.
fn prefix_network(value: &Value) -> Option<IpNet> {
    policy::parse_any_subnet_prefix("address_prefixes", value.as_str()?).ok()
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

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_rules_are_removed_whatever_their_spelling() {
        let text = edit_native(
            "ip_rules = [\"203.0.113.0/24\", \"2001:db8:0:0::7\", { value = \"2001:DB8:1::/48\" }]\n",
            &[
                Edit::RemoveIpRule(net("2001:db8::7/128")),
                Edit::RemoveIpRule(net("2001:db8:1::/48")),
            ],
        )
        .unwrap();
        assert_eq!(text, "ip_rules = [\"203.0.113.0/24\"]\n");
    }

    #[test]
    fn adding_and_removing_ip_rules_keeps_comments() {
        let text = edit_native(FILE, &[Edit::AddIpRule("192.0.2.77".into())]).unwrap();
        assert!(text.contains("# production vault"));
        assert!(text.contains("# office"));
        assert!(text.contains("\"192.0.2.77\""));
        let text = edit_native(&text, &[Edit::RemoveIpRule(net("198.51.100.7/32"))]).unwrap();
        assert!(!text.contains("198.51.100.7"), "{text}");
        // A /32 written with its length is found by its network too.
        let text = edit_native(&text, &[Edit::RemoveIpRule(net("192.0.2.10/32"))]).unwrap();
        assert!(!text.contains("192.0.2.10"), "{text}");
        assert!(text.contains("203.0.113.0/24"));
    }

    const COMMENTED: &str = r#"default_action = "Deny" # closed unless a rule says otherwise
ip_rules = [
    "203.0.113.0/24", # office
    "198.51.100.20", # vpn gateway
    "198.51.100.30", # build agent
]
"#;

    /// Each rule's comment, by the rule on the same line.
    fn comments(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| {
                let (code, comment) = l.split_once('#')?;
                let rule = code
                    .trim()
                    .trim_end_matches(',')
                    .trim()
                    .trim_matches('"')
                    .to_owned();
                Some((rule, comment.trim().to_owned()))
            })
            .collect()
    }

    #[test]
    fn an_added_rule_leaves_every_comment_on_its_own_rule() {
        let text = edit_native(COMMENTED, &[Edit::AddIpRule("198.51.100.40".into())]).unwrap();
        let c = comments(&text);
        assert!(
            c.contains(&("198.51.100.30".into(), "build agent".into())),
            "{text}"
        );
        assert!(
            c.contains(&("203.0.113.0/24".into(), "office".into())),
            "{text}"
        );
        assert!(text.contains("\n    \"198.51.100.40\""), "{text}");
    }

    /// Without a trailing comma the last item's comment and line break
    /// stay behind it: the comma goes after the item, not on a line of
    /// its own.
    #[test]
    fn a_rule_added_after_a_last_item_without_a_comma_gets_the_comma_on_its_line() {
        let file = "ip_rules = [\n  \"203.0.113.0/24\",\n  \"192.0.2.10\" # last\n]\n";
        let text = edit_native(file, &[Edit::AddIpRule("8.8.8.8".into())]).unwrap();
        assert_eq!(
            text,
            "ip_rules = [\n  \"203.0.113.0/24\",\n  \"192.0.2.10\", # last\n  \"8.8.8.8\"\n]\n"
        );
        let one_line = "ip_rules = [\"203.0.113.0/24\", \"192.0.2.10\" ]\n";
        let text = edit_native(one_line, &[Edit::AddIpRule("8.8.8.8".into())]).unwrap();
        assert_eq!(
            text,
            "ip_rules = [\"203.0.113.0/24\", \"192.0.2.10\", \"8.8.8.8\" ]\n"
        );
    }

    /// A rule declared again (a renewed comment or expiry) stays in its
    /// place with its comments; another spelling of its network goes.
    #[test]
    fn a_rule_declared_again_is_replaced_in_place_keeping_its_comments() {
        let file = "ip_rules = [\n  \"203.0.113.5\",   # HQ host A\n  # HQ host B, ticket OPS-7\n  { value = \"203.0.113.9\", comment = \"HQ host B\" },   # keep until Q3\n  \"198.51.100.1\",\n  \"203.0.113.9/32\",\n]\n";
        let edit = Edit::AddIpRuleWith {
            value: "203.0.113.9".into(),
            comment: Some("HQ host B".into()),
            expires_at: Some("2027-09-30T00:00:00Z".into()),
        };
        let text = edit_native(file, &[edit]).unwrap();
        assert_eq!(
            text,
            "ip_rules = [\n  \"203.0.113.5\",   # HQ host A\n  # HQ host B, ticket OPS-7\n  { value = \"203.0.113.9\", comment = \"HQ host B\", expires_at = \"2027-09-30T00:00:00Z\" },   # keep until Q3\n  \"198.51.100.1\",\n]\n"
        );
    }

    /// A comment on a line of its own above `]` stays when the last rule
    /// goes, with a trailing comma or without.
    #[test]
    fn a_removed_last_rule_leaves_the_comment_above_the_closing_bracket() {
        for (file, left) in [
            (
                "ip_rules = [\n  \"1.2.3.4\", # a\n  \"5.5.5.5\", # vpn\n  # keep me\n]\n",
                "ip_rules = [\n  \"1.2.3.4\", # a\n  # keep me\n]\n",
            ),
            (
                "ip_rules = [\n  \"1.2.3.4\", # a\n  \"5.5.5.5\" # vpn\n  # keep me\n]\n",
                "ip_rules = [\n  \"1.2.3.4\" # a\n  # keep me\n]\n",
            ),
        ] {
            let text = edit_native(file, &[Edit::RemoveIpRule(net("5.5.5.5/32"))]).unwrap();
            assert_eq!(text, left);
        }
    }

    /// A comment on a line of its own above the next rule stays.
    #[test]
    fn a_removed_rule_leaves_the_comment_above_the_next_rule() {
        let file = "ip_rules = [\n\t\"203.0.113.0/24\",\t# office\n\t# own line comment\n\t\"192.0.2.10\",\t# b\n]\n";
        let text = edit_native(file, &[Edit::RemoveIpRule(net("203.0.113.0/24"))]).unwrap();
        assert_eq!(
            text,
            "ip_rules = [\n\t# own line comment\n\t\"192.0.2.10\",\t# b\n]\n"
        );
    }

    #[test]
    fn a_removed_rule_takes_only_its_own_comment() {
        let middle =
            edit_native(COMMENTED, &[Edit::RemoveIpRule(net("198.51.100.20/32"))]).unwrap();
        let c = comments(&middle);
        assert_eq!(
            c[1..],
            [
                ("203.0.113.0/24".to_owned(), "office".to_owned()),
                ("198.51.100.30".to_owned(), "build agent".to_owned())
            ],
            "{middle}"
        );
        let last = edit_native(COMMENTED, &[Edit::RemoveIpRule(net("198.51.100.30/32"))]).unwrap();
        let c = comments(&last);
        assert_eq!(c.len(), 3, "{last}");
        assert_eq!(
            c[2],
            ("198.51.100.20".to_owned(), "vpn gateway".to_owned()),
            "{last}"
        );
        assert!(!last.contains("build agent"), "{last}");
    }

    #[test]
    fn an_update_keeps_the_comment_beside_the_changed_setting() {
        let text = edit_native(
            COMMENTED,
            &[Edit::SetString("default_action", "Allow".into())],
        )
        .unwrap();
        assert!(
            text.starts_with("default_action = \"Allow\" # closed unless a rule says otherwise\n"),
            "{text}"
        );
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
                ignore_missing_endpoint: false,
            }],
        )
        .unwrap();
        let text = edit_native(
            &text,
            &[Edit::AddVnetPrefix {
                id: "VNET/subnets/APP".into(),
                prefix: "10.1.3.0/24".into(),
                endpoint: None,
                ignore_missing_endpoint: false,
            }],
        )
        .unwrap();
        assert_eq!(
            text.matches("[[virtual_network_rules]]").count(),
            1,
            "{text}"
        );
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
}
