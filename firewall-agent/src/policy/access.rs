//! How the data plane is reached besides the ACL's rules: Key Vault's
//! `publicNetworkAccess` and its private endpoints, modelled the way a host
//! can model them.
//!
//! ```toml
//! public_network_access = "Disabled"  # default "Enabled"
//! [[private_endpoints]]
//! interface = "eth1"                  # the interface private traffic arrives on
//! allowed_prefixes = ["10.9.0.0/24"]  # the sources admitted through it
//! ```
//!
//! `Disabled`: the IP rules do not apply (public sources are refused even
//! when a rule lists them); subnet rules through their endpoints and, with
//! the bypass, trusted services still do. A private endpoint admits its
//! prefixes arriving on its interface whatever the IP rules and
//! `public_network_access` say, as Key Vault's private endpoint connections
//! are not subject to its firewall. Both are compiled in user space (the
//! program's tables): the packet path does not change.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use super::error::{PolicyError, PolicyWarning};
use super::model::PrivateEndpoint;
use super::raw_rules::RawPrivateEndpoint;
use super::raw_value::Field;
use super::vnet::{check_interface_name, distinct_prefixes};

/// Validates the private endpoints: each names a valid interface (each
/// interface once) and at least one prefix, checked as a subnet rule's
/// (private space allowed) and kept canonical, each once. The result is
/// sorted by interface, each endpoint's prefixes by (address, length).
pub fn validate(
    field: &Field<Vec<RawPrivateEndpoint>>,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Vec<PrivateEndpoint> {
    let Field::Given(items) = field else {
        return Vec::new();
    };
    let mut by_interface: BTreeMap<String, (String, PrivateEndpoint)> = BTreeMap::new();
    for raw in items {
        let interface = match &raw.interface {
            Field::Invalid => None,
            Field::Absent => {
                errors.push(PolicyError::new(
                    &raw.path,
                    "",
                    "the private endpoint has no `interface`",
                    "add interface = \"eth1\" (the interface its private traffic arrives on)",
                ));
                None
            }
            Field::Given(at) => match check_interface_name(&at.path, &at.value) {
                Ok(()) => Some(at),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        };
        let prefixes = prefixes(raw, errors, warnings);
        let (Some(at), Some(allowed_prefixes)) = (interface, prefixes) else {
            continue;
        };
        if let Some((first, _)) = by_interface.get(&at.value) {
            errors.push(PolicyError::new(
                &at.path,
                &at.value,
                format!("the same interface as {first}: an interface is one private endpoint"),
                format!("merge the allowed_prefixes into {first}"),
            ));
            continue;
        }
        by_interface.insert(
            at.value.clone(),
            (
                raw.path.clone(),
                PrivateEndpoint {
                    interface: at.value.clone(),
                    allowed_prefixes,
                },
            ),
        );
    }
    by_interface.into_values().map(|(_, e)| e).collect()
}

fn prefixes(
    raw: &RawPrivateEndpoint,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Option<Vec<Ipv4Net>> {
    let path = format!("{}.allowed_prefixes", raw.path);
    let list = match &raw.allowed_prefixes {
        Field::Invalid => return None,
        Field::Absent => {
            errors.push(PolicyError::new(
                &raw.path,
                "",
                "the private endpoint has no allowed_prefixes: it admits the sources of its \
                 prefixes",
                "add allowed_prefixes = [\"10.9.0.0/24\"] (the sources that reach the vault \
                 through it)",
            ));
            return None;
        }
        Field::Given(list) => list,
    };
    if list.is_empty() {
        errors.push(PolicyError::new(
            path,
            "",
            "allowed_prefixes is empty: the private endpoint would admit nothing",
            "list the sources it admits, e.g. allowed_prefixes = [\"10.9.0.0/24\"], or remove \
             the private endpoint",
        ));
        return None;
    }
    let (kept, kept6) = distinct_prefixes(list, errors, warnings)?;
    if !kept6.is_empty() {
        // The kernel's private-endpoint entries live in the IPv4 subnet
        // table: an IPv6 prefix would be dropped, so it is refused.
        errors.push(PolicyError::new(
            &path,
            kept6
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            "private endpoints admit IPv4 prefixes only",
            "list the endpoint's IPv6 sources as a subnet rule bound to the same interface",
        ));
        return None;
    }
    Some(kept.into_iter().map(|(net, _)| net).collect())
}
