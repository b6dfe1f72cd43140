//! The firewall policy: what it means ([`model`]) and how it is read. A
//! native TOML policy goes through two stages, raw (TOML syntax and the
//! shape of each key) then validation into a [`Policy`]; every error of the
//! input is collected and reported together, each with the path of the
//! value, the value, the reason and the fix, and nothing is applied unless
//! there is none. [`parse_ip_rule`] is the same check for one IP-rule value
//! typed on the command line. Pure: no I/O but [`load_file`]'s read.

pub mod model;
pub use model::*;

mod error;
mod expiry;
pub mod ipv4;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

pub use error::{LoadError, PolicyError, PolicyErrors, PolicyWarning};

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

/// A policy that passed validation, and what is worth telling the operator
/// about it (duplicates merged, shadowed rules, settings without effect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validated {
    /// The policy to apply.
    pub policy: Policy,
    /// Warnings, in input order as far as the format allows.
    pub warnings: Vec<PolicyWarning>,
}

/// Parse and validate a native-format (TOML) policy. Collects ALL errors,
/// not just the first: a syntax error alone, or every shape and meaning
/// error of the document.
pub fn parse_toml(text: &str) -> Result<Validated, PolicyErrors> {
    parse_toml_at(text, SystemTime::now())
}

/// [`parse_toml`] with the current time given, for `expires_at` checks.
pub(crate) fn parse_toml_at(text: &str, now: SystemTime) -> Result<Validated, PolicyErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let policy = raw::read(text, &mut errors)
        .and_then(|raw| validate::validate(raw, now, &mut errors, &mut warnings));
    match policy {
        Some(policy) if errors.is_empty() => Ok(Validated { policy, warnings }),
        _ => Err(PolicyErrors(errors)),
    }
}

/// Read a policy file and [`parse_toml`] it.
pub fn load_file(path: &Path) -> Result<Validated, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_toml(&text).map_err(|errors| LoadError::Invalid {
        path: path.to_path_buf(),
        errors,
    })
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
