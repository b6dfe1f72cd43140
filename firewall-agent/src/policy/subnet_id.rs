//! Subnet ids, short (`vnet-prod/subnets/app`) and full ARM
//! (`/subscriptions/<guid>/resourceGroups/<rg>/providers/Microsoft.Network/
//! virtualNetworks/<vnet>/subnets/<subnet>`), and the ARM scope
//! (`[defaults]`: subscription and resource group) that turns a short id
//! into a full one. ARM compares ids case-insensitively (and returns them
//! lower-cased): every comparison of subnet ids — validation, the subnet
//! map, the CLI's `add`/`remove` — goes through [`canonical`] and
//! [`same_subnet`], so a rule written one way is found when named another.
//!
//! The `[defaults]` table (in the native policy and in a subnet map):
//!
//! ```toml
//! [defaults]
//! subscription = "00000000-0000-0000-0000-000000000000"
//! resource_group = "rg-prod"
//! ```

use toml::Value;

use super::error::PolicyError;
pub use super::model::ArmScope;
use super::raw_value::{At, Field, sorted, type_error, unknown_key};

/// Keys of `[defaults]` (and the per-entry scope keys of a map's
/// `[[subnet]]`).
pub const SCOPE_KEYS: [&str; 2] = ["subscription", "resource_group"];

/// The form every subnet-id comparison uses: lower case, without a
/// trailing `/` (ARM ignores the case of ids and lower-cases them).
pub fn canonical(id: &str) -> String {
    id.trim_end_matches('/').to_lowercase()
}

/// True for a full ARM id (it starts with `/`).
pub fn is_full(id: &str) -> bool {
    id.starts_with('/')
}

/// The canonical `<vnet>/subnets/<subnet>` that `id` ends with, if any.
pub fn short(id: &str) -> Option<String> {
    let canonical = canonical(id);
    let segments: Vec<&str> = canonical.split('/').collect();
    match segments.as_slice() {
        [.., vnet, "subnets", subnet] if !vnet.is_empty() && !subnet.is_empty() => {
            Some(format!("{vnet}/subnets/{subnet}"))
        }
        _ => None,
    }
}

/// Whether `a` and `b` name the same subnet: equal [`canonical`] forms,
/// or one is short (`<vnet>/subnets/<subnet>`) and the other is a full
/// ARM id ending in it.
pub fn same_subnet(a: &str, b: &str) -> bool {
    let (ca, cb) = (canonical(a), canonical(b));
    if ca == cb {
        return true;
    }
    match (is_full(a), is_full(b)) {
        (false, true) => short(b).is_some_and(|s| s == ca),
        (true, false) => short(a).is_some_and(|s| s == cb),
        _ => false,
    }
}

/// The full ARM id of the short id `short_id` in `scope`; `None` when
/// `short_id` is not `<vnet>/subnets/<subnet>` or a part of the scope is
/// unknown. The id keeps the case `short_id` and the scope were written in.
pub fn full_id(short_id: &str, scope: &ArmScope) -> Option<String> {
    let (Some(sub), Some(rg)) = (&scope.subscription, &scope.resource_group) else {
        return None;
    };
    let segments: Vec<&str> = short_id.trim_end_matches('/').split('/').collect();
    match segments.as_slice() {
        [vnet, subnets, subnet] if subnets.eq_ignore_ascii_case("subnets") => Some(format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/\
             virtualNetworks/{vnet}/subnets/{subnet}"
        )),
        _ => None,
    }
}

/// `[defaults]` (or a map entry's scope keys) as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawScope {
    /// `subscription`.
    pub subscription: Option<At<String>>,
    /// `resource_group`.
    pub resource_group: Option<At<String>>,
}

/// Reads the [`SCOPE_KEYS`] of `table` (at `path`); other keys are left to
/// the caller.
pub fn read_scope_keys(path: &str, table: &toml::Table, errors: &mut Vec<PolicyError>) -> RawScope {
    let mut scope = RawScope::default();
    for (key, value) in sorted(table) {
        if !SCOPE_KEYS.contains(&key.as_str()) {
            continue;
        }
        let key_path = format!("{path}.{key}");
        let Value::String(s) = value else {
            errors.push(type_error(
                &key_path,
                value,
                "a string",
                format!("write {key} = \"…\" as `az account show` / `az group list` print it"),
            ));
            continue;
        };
        let at = Some(At::new(key_path, s.clone()));
        if key == "subscription" {
            scope.subscription = at;
        } else {
            scope.resource_group = at;
        }
    }
    scope
}

/// `[defaults]` at `path`: a table of [`SCOPE_KEYS`].
pub fn read_defaults(path: &str, value: &Value, errors: &mut Vec<PolicyError>) -> Field<RawScope> {
    let Value::Table(t) = value else {
        errors.push(type_error(
            path,
            value,
            "a table",
            "write [defaults] with subscription = \"<guid>\" and resource_group = \"<rg>\"".into(),
        ));
        return Field::Invalid;
    };
    for key in t.keys().filter(|k| !SCOPE_KEYS.contains(&k.as_str())) {
        errors.push(unknown_key(
            &format!("{path}.{key}"),
            key,
            "in [defaults]",
            &SCOPE_KEYS,
        ));
    }
    Field::Given(read_scope_keys(path, t, errors))
}

/// Validates a raw scope: the subscription a GUID, the resource group a
/// name ARM accepts. `None` after recording an error.
pub fn validate_scope(raw: &RawScope, errors: &mut Vec<PolicyError>) -> Option<ArmScope> {
    let before = errors.len();
    if let Some(at) = &raw.subscription
        && !is_guid(&at.value)
    {
        errors.push(PolicyError::new(
            &at.path,
            &at.value,
            "a subscription id is a GUID (8-4-4-4-12 hexadecimal digits)",
            "write the id `az account show --query id` prints, e.g. \
             \"00000000-0000-0000-0000-000000000000\"",
        ));
    }
    if let Some(at) = &raw.resource_group
        && let Some(reason) = resource_group_problem(&at.value)
    {
        errors.push(PolicyError::new(
            &at.path,
            &at.value,
            reason,
            "write the resource group's name as `az group list --query [].name` prints it",
        ));
    }
    (errors.len() == before).then(|| ArmScope {
        subscription: raw.subscription.as_ref().map(|a| a.value.clone()),
        resource_group: raw.resource_group.as_ref().map(|a| a.value.clone()),
    })
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn resource_group_problem(name: &str) -> Option<String> {
    let len = name.chars().count();
    if len == 0 || len > 90 {
        return Some(format!(
            "a resource group name has 1–90 characters; this one has {len}"
        ));
    }
    if name.ends_with('.') {
        return Some("a resource group name cannot end with '.'".into());
    }
    name.chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '(' | ')')))
        .map(|c| {
            format!(
                "a resource group name holds letters, digits, '_', '-', '.', '(' and ')' only; \
                 it contains {c:?}"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "/subscriptions/00000000-0000-0000-0000-0000000000AA/resourceGroups/\
                        RG-Prod/providers/Microsoft.Network/virtualNetworks/Vnet-Hub/subnets/App";

    #[test]
    fn short_and_full_ids_of_one_subnet_are_the_same_subnet_in_any_case() {
        assert!(same_subnet("vnet-hub/subnets/app", FULL));
        assert!(same_subnet(FULL, "VNET-HUB/subnets/APP/"));
        assert!(same_subnet(FULL, &FULL.to_lowercase()));
        assert!(!same_subnet("vnet-hub/subnets/web", FULL));
        let other_subscription = FULL.replace("AA/", "BB/");
        assert!(!same_subnet(&other_subscription, FULL));
    }

    #[test]
    fn a_short_id_becomes_full_only_with_both_parts_of_the_scope() {
        let scope = ArmScope {
            subscription: Some("00000000-0000-0000-0000-0000000000AA".into()),
            resource_group: Some("RG-Prod".into()),
        };
        assert_eq!(
            full_id("Vnet-Hub/subnets/App", &scope).as_deref(),
            Some(FULL)
        );
        let half = ArmScope {
            resource_group: None,
            ..scope
        };
        assert_eq!(full_id("Vnet-Hub/subnets/App", &half), None);
    }

    #[test]
    fn scope_values_are_checked_with_their_path() {
        let raw = RawScope {
            subscription: Some(At::new("defaults.subscription", "not-a-guid".into())),
            resource_group: Some(At::new("defaults.resource_group", "rg/x".into())),
        };
        let mut errors = Vec::new();
        assert_eq!(validate_scope(&raw, &mut errors), None);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["defaults.subscription", "defaults.resource_group"]);
    }
}
