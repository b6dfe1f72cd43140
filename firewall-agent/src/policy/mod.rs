//! The firewall policy: what it means ([`model`]) and how it is read, in
//! two formats:
//!
//! - the native TOML format (DESIGN.md section 1): [`parse_toml`],
//!   [`parse_toml_with_base`], and back with [`export_native`];
//! - Azure's JSON (`properties.networkAcls` of a vault, as the ARM API and
//!   `az keyvault show` return it) with a *subnet map*, a small TOML file
//!   that gives what the JSON lacks (subnet prefixes and endpoints, the
//!   settings Key Vault has no field for): [`parse_azure_json`], and back
//!   with [`export_azure`] and [`export_subnet_map`].
//!
//! Files are read in one place, [`source`]: a [`PolicySource`] (the policy
//! file and, for Azure JSON, its subnet map) read into a [`PolicyText`] and
//! validated. Every command and the daemon load policies through it; a
//! policy `apply` sends over the control socket is a [`PolicyText`] too.
//!
//! Both go through two stages, raw (syntax and the shape of each key) then
//! validation into a [`Policy`]; every error of the input is collected and
//! reported together, each with the path of the value in its input, the
//! value, the reason and the fix, and nothing is applied unless there is
//! none. [`parse_ip_rule`] and [`parse_subnet_prefix`] are the same checks
//! for one value typed on the command line.
//!
//! I/O: reading the policy file, the subnet map and the service-tags file
//! that `[trusted_services]` names ([`service_tags`]). Everything else is
//! pure.

pub mod model;
pub use model::*;

mod access;
mod azure;
mod error;
mod expiry;
mod export;
pub mod input;
mod ip_rules;
pub mod ipv4;
pub mod ipv6;
mod overlap;
mod parse;
mod raw;
mod raw_rules;
mod raw_value;
pub mod service_tags;
pub mod source;
pub mod subnet_id;
mod subnet_map;
mod trusted;
mod validate;
mod vnet;

#[cfg(test)]
mod tests;

pub use azure::vault_identity;
pub use error::{LoadError, PolicyError, PolicyErrors, PolicyWarning};
pub use export::{
    AzureExport, NativeSource, ShortIdError, endpoint_table, export_azure, export_native,
    export_native_from, export_subnet_map, needs_subnet_map,
};
pub use overlap::added_ip_rule_notes;
pub(crate) use parse::parse_toml_in;
pub use parse::{PolicyFormat, Validated, parse_azure_json, parse_toml, parse_toml_with_base};
#[cfg(test)]
pub(crate) use parse::{parse_azure_at, parse_toml_at};
pub use source::{FileText, PolicySource, PolicyText, WriteBack};
pub use trusted::{catalogue, find as find_trusted_service};
pub use validate::{parse_bypass, parse_default_action};
pub use vnet::{check_interface_name, check_vlan_id, parse_endpoint};

use std::path::Path;

/// Read a policy file in either format and validate it: shorthand for
/// [`PolicySource::load`] (the one loader; see [`source`]).
pub fn load_policy(path: &Path, subnet_map: Option<&Path>) -> Result<Validated, LoadError> {
    PolicySource::new(path, subnet_map.map(Path::to_path_buf)).load()
}

/// Strictly parse one IP-rule value (as written by an operator on the CLI
/// or in a file), applying every IP-rule check that concerns a single value:
/// syntax (`a.b.c.d` or `a.b.c.d/N`, N in 0–32, no leading zeros), IPv4
/// only, no `/31`, no host bits, public space only (see
/// [`ipv4::SPECIAL_RANGES`]), no `0.0.0.0/0`. `path` is used in the error
/// (e.g. `"--ip-address"` or `"ip_rules[3]"`). The result is canonical: a
/// single address is a `/32`.
pub fn parse_ip_rule(path: &str, text: &str) -> Result<ipnet::Ipv4Net, PolicyError> {
    ipv4::check_rule_value(path, text)
}

/// [`parse_ip_rule`] for IPv4 text; for IPv6 text (with a `:`) the IPv6
/// checks of [`ipv6::check_value`]: global unicast (2000::/3) only, each
/// special-purpose range refused with its RFC. Canonical: a single address
/// is a `/32` or `/128`.
pub fn parse_any_ip_rule(path: &str, text: &str) -> Result<ipnet::IpNet, PolicyError> {
    if ipv6::is_ipv6_text(text) {
        ipv6::check_value(ipv4::ValueKind::IpRule, ipv4::Dialect::Native, path, text)
            .map(ipnet::IpNet::V6)
    } else {
        parse_ip_rule(path, text).map(ipnet::IpNet::V4)
    }
}

/// [`parse_subnet_prefix`] for IPv4 text; IPv6 text as
/// [`parse_any_ip_rule`] checks it, unique-local space (fc00::/7) allowed.
pub fn parse_any_subnet_prefix(path: &str, text: &str) -> Result<ipnet::IpNet, PolicyError> {
    if ipv6::is_ipv6_text(text) {
        ipv6::check_value(
            ipv4::ValueKind::SubnetPrefix,
            ipv4::Dialect::Native,
            path,
            text,
        )
        .map(ipnet::IpNet::V6)
    } else {
        parse_subnet_prefix(path, text).map(ipnet::IpNet::V4)
    }
}

/// A rule's network as rules are shown: the bare address for a single
/// address (`/32`, `/128`), CIDR otherwise; IPv6 in RFC 5952 form.
pub fn shown_any(net: ipnet::IpNet) -> String {
    match net {
        ipnet::IpNet::V4(net) => shown(net),
        ipnet::IpNet::V6(net) => shown6(net),
    }
}

/// Strictly parse one virtual network rule prefix: the same checks as
/// [`parse_ip_rule`], except that private (RFC 1918) and shared (RFC 6598)
/// space are allowed; `0/8`, loopback, link-local, multicast, reserved and
/// broadcast are not (see [`ipv4::SpecialRange::subnet_ok`]).
pub fn parse_subnet_prefix(path: &str, text: &str) -> Result<ipnet::Ipv4Net, PolicyError> {
    ipv4::check_subnet_prefix(path, text)
}
