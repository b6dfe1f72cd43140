//! The subnet map: what Azure's `networkAcls` JSON lacks, in native TOML.
//! An ARM subnet id carries neither the subnet's prefixes nor the host
//! interface or VLAN its traffic arrives through, and Key Vault has no field
//! for vaultfw's own settings or for rule comments and expiry. The map:
//!
//! ```toml
//! mode = "Audit"                      # optional; as in the native format
//! ipv6 = "Deny"                       # optional
//! limits = "kv-current"               # optional
//! [data_plane]                        # optional; default TCP 443
//! tcp_ports = [443]
//! [trusted_services]                  # optional; relative paths resolve
//! service_tags_file = "ServiceTags_Public.json"   # against the map's directory
//! enabled = ["AzureBackup", "Sql"]
//!
//! [defaults]                          # optional: the ARM scope of short ids
//! subscription = "00000000-0000-0000-0000-000000000000"
//! resource_group = "rg-prod"
//!
//! [[private_endpoints]]               # optional; see the `access` module
//! interface = "eth2"
//! allowed_prefixes = ["10.9.0.0/24"]
//!
//! [[subnet]]                          # one per ARM virtual network rule
//! id = "vnet-prod/subnets/app"        # "<vnet>/subnets/<subnet>", or the full ARM id
//! subscription = "…"                  # optional: this entry's own scope
//! resource_group = "…"                # (else [defaults])
//! address_prefixes = ["10.1.2.0/24"]
//! endpoint = { interface = "eth1" }   # and/or vlan = 120
//! comment = "app tier"                # optional
//! expires_at = "2027-01-31T00:00:00Z" # optional
//!
//! [[ip_rule]]                         # optional metadata of a JSON ipRules entry,
//! value = "192.0.2.77"                # matched by network ("a.b.c.d" = "a.b.c.d/32")
//! comment = "build agent"
//! expires_at = "2027-01-31T00:00:00Z"
//! ```
//!
//! A JSON rule id is matched to an entry (ids compare as ARM does,
//! case-insensitively, see `subnet_id`): an entry with the same id, else a
//! short entry whose full id (its own scope, else `[defaults]`) is the
//! rule's, else a short entry without a known scope that the rule id ends
//! with. A short entry matched through `[defaults]` gives the rule its
//! short id (a native policy writes it so, with the same `[defaults]`);
//! every other match keeps the JSON's id.
//!
//! Absent settings take the native format's defaults. `default_action`,
//! `bypass` and the rule lists themselves belong to the JSON and are
//! refused here. Paths in errors are `<map file>:<key path>`.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Value;

use super::error::PolicyError;
use super::raw::{RawPolicy, parse_table, shared_key};
use super::raw_rules::{RawIpRule, RawVnetRule, ip_rule, vnet_rule};
use super::raw_value::{Field, sorted, tables_of, type_error, unknown_key};
use super::subnet_id::{RawScope, canonical, read_scope_keys, validate_scope};

/// The keys a subnet map may hold.
pub(super) const MAP_KEYS: [&str; 9] = [
    "mode",
    "ipv6",
    "limits",
    "data_plane",
    "trusted_services",
    "private_endpoints",
    "defaults",
    "subnet",
    "ip_rule",
];

/// A subnet map, read (its settings went into the [`RawPolicy`]).
#[derive(Debug, Default)]
pub struct SubnetMap {
    /// `[[subnet]]` entries whose id had the right shape.
    pub subnets: Vec<RawVnetRule>,
    /// Each entry's own `subscription` / `resource_group` (by position in
    /// `subnets`); `[defaults]` is in the raw policy.
    pub scopes: Vec<RawScope>,
    /// `[[ip_rule]]` metadata entries.
    pub ip_rules: Vec<RawIpRule>,
}

/// The path prefix of the map's values: `map.toml:`.
pub fn prefix(path: &Path) -> String {
    format!("{}:", path.display())
}

/// Reads the map `text` (from `path`) into `raw` (settings) and a
/// [`SubnetMap`] (entries), recording every problem.
pub fn read(
    path: &Path,
    text: &str,
    raw: &mut RawPolicy,
    errors: &mut Vec<PolicyError>,
) -> SubnetMap {
    let prefix = prefix(path);
    let mut map = SubnetMap::default();
    let Some(table) = parse_table(text, &prefix, errors) else {
        return map;
    };
    for (key, value) in sorted(&table) {
        let key_path = format!("{prefix}{key}");
        match key.as_str() {
            "subnet" => (map.subnets, map.scopes) = subnets(&key_path, value, errors),
            "ip_rule" => map.ip_rules = ip_rules(&key_path, value, errors),
            k if shared_key(k, value, &prefix, raw, errors) => {}
            "public_network_access" => errors.push(PolicyError::new(
                key_path,
                "",
                "`public_network_access` of an Azure policy is the vault's \
                 properties.publicNetworkAccess, set in its JSON",
                "remove it here and set \"publicNetworkAccess\": \"Enabled\" or \"Disabled\" in \
                 the JSON's properties",
            )),
            k @ ("default_action" | "bypass") => {
                let json = if k == "bypass" {
                    "bypass"
                } else {
                    "defaultAction"
                };
                errors.push(PolicyError::new(
                    key_path,
                    "",
                    format!("`{k}` of an Azure policy is set in its JSON, not in the subnet map"),
                    format!("remove it here and set \"{json}\" in the JSON's networkAcls"),
                ));
            }
            k @ ("ip_rules" | "virtual_network_rules") => {
                let (json, entry) = if k == "ip_rules" {
                    ("ipRules", "[[ip_rule]] (comment and expires_at of a rule)")
                } else {
                    ("virtualNetworkRules", "[[subnet]] (prefixes and endpoint)")
                };
                errors.push(PolicyError::new(
                    key_path,
                    "",
                    format!("the rules of an Azure policy are listed in its JSON ({json})"),
                    format!("list them in the JSON's {json}; the map gives each one's {entry}"),
                ));
            }
            k => errors.push(unknown_key(&key_path, k, "in a subnet map", &MAP_KEYS)),
        }
    }
    check_ids(&map.subnets, errors);
    map
}

fn subnets(
    path: &str,
    value: &Value,
    errors: &mut Vec<PolicyError>,
) -> (Vec<RawVnetRule>, Vec<RawScope>) {
    let form = "[[subnet]] tables with id, address_prefixes and endpoint";
    let Some(tables) = tables_of(path, value, form, errors) else {
        return (Vec::new(), Vec::new());
    };
    let mut out = Vec::new();
    let mut scopes = Vec::new();
    for (item_path, t) in tables {
        let entry = vnet_rule(&item_path, t, false, errors);
        let scope = read_scope_keys(&item_path, t, errors);
        validate_scope(&scope, errors);
        match &entry.id {
            Field::Given(_) => {
                out.push(entry);
                scopes.push(scope);
            }
            Field::Invalid => {}
            Field::Absent => errors.push(PolicyError::new(
                item_path,
                "",
                "the entry has no `id`: it cannot be matched to a virtual network rule",
                "add id = \"<vnet>/subnets/<subnet>\" (or the full ARM subnet id) as in the \
                 JSON's virtualNetworkRules",
            )),
        }
    }
    (out, scopes)
}

fn ip_rules(path: &str, value: &Value, errors: &mut Vec<PolicyError>) -> Vec<RawIpRule> {
    let Value::Array(items) = value else {
        errors.push(type_error(
            path,
            value,
            "an array of tables",
            "write [[ip_rule]] tables with value, comment and expires_at".into(),
        ));
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| ip_rule(&format!("{path}[{i}]"), item, errors))
        .collect()
}

/// Two entries whose ids are equal case-insensitively would make a match
/// ambiguous: an error.
fn check_ids(subnets: &[RawVnetRule], errors: &mut Vec<PolicyError>) {
    let mut first: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    for entry in subnets {
        let Field::Given(at) = &entry.id else {
            continue;
        };
        let key = canonical(&at.value);
        if let Some((path, id)) = first.get(&key) {
            errors.push(PolicyError::new(
                &at.path,
                &at.value,
                format!("the same subnet id as {path} {id:?} (ids compare case-insensitively)"),
                "keep one entry per subnet",
            ));
        } else {
            first.insert(key, (&at.path, &at.value));
        }
    }
}
