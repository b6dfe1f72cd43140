//! The two stages of loading a policy text, run in order for either format:
//! raw (syntax and the shape of each key: [`raw`](super::raw) for TOML,
//! [`azure`](super::azure) for Azure JSON) then validation into a
//! [`Policy`] ([`validate`](super::validate)). Pure: the text is given.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::error::{PolicyError, PolicyErrors, PolicyWarning};
use super::model::Policy;
use super::validate::{self, Context};
use super::{azure, raw};

/// A policy that passed validation, and what is worth telling the operator
/// about it (duplicates merged, shadowed rules, settings without effect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validated {
    /// The policy to apply.
    pub policy: Policy,
    /// Warnings, in input order as far as the format allows.
    pub warnings: Vec<PolicyWarning>,
}

/// The two input formats. On the wire (the control protocol's `apply`):
/// `"native"` and `"azure_json"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyFormat {
    /// The native TOML format.
    Native,
    /// Azure's `networkAcls` JSON (whole vault, `{"properties":
    /// {"networkAcls": …}}`, or the `networkAcls` object).
    AzureJson,
}

impl PolicyFormat {
    /// The format of a policy file: `.json` is Azure JSON and `.toml`
    /// native (by extension, case-insensitive); otherwise Azure JSON when
    /// the first non-space character of `text` is `{` (a TOML document
    /// cannot start with one), else native.
    pub fn detect(path: &Path, text: &str) -> PolicyFormat {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("json") => PolicyFormat::AzureJson,
            Some("toml") => PolicyFormat::Native,
            _ if text
                .trim_start_matches('\u{feff}')
                .trim_start()
                .starts_with('{') =>
            {
                PolicyFormat::AzureJson
            }
            _ => PolicyFormat::Native,
        }
    }
}

/// Parse and validate a native-format (TOML) policy. Collects ALL errors,
/// not just the first: a syntax error alone, or every shape and meaning
/// error of the document. A relative `service_tags_file` resolves against
/// the current directory (see [`parse_toml_with_base`]).
pub fn parse_toml(text: &str) -> Result<Validated, PolicyErrors> {
    parse_toml_in(text, &current_dir(), SystemTime::now())
}

/// [`parse_toml`] for a policy whose relative paths (`service_tags_file`)
/// resolve against `base_dir` (the policy file's directory).
pub fn parse_toml_with_base(text: &str, base_dir: &Path) -> Result<Validated, PolicyErrors> {
    parse_toml_in(text, base_dir, SystemTime::now())
}

/// [`parse_toml`] with the current time given, for `expires_at` checks.
#[cfg(test)]
pub(crate) fn parse_toml_at(text: &str, now: SystemTime) -> Result<Validated, PolicyErrors> {
    parse_toml_in(text, &current_dir(), now)
}

/// [`parse_toml_with_base`] with the current time given.
pub(crate) fn parse_toml_in(
    text: &str,
    base_dir: &Path,
    now: SystemTime,
) -> Result<Validated, PolicyErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let ctx = Context { now, base_dir };
    let policy = raw::read(text, &mut errors)
        .and_then(|raw| validate::validate(raw, &ctx, &mut errors, &mut warnings));
    finish(policy, errors, warnings)
}

/// Parse and validate Azure JSON (`properties.networkAcls`; see
/// [`PolicyFormat::AzureJson`]) with an optional subnet map, given as its
/// path (used in error paths, `map.toml:subnet[0].endpoint`, and as the
/// base of its relative paths) and its text. Error paths in the JSON are
/// JSON paths in the shape the input had
/// (`properties.networkAcls.ipRules[0].value`).
pub fn parse_azure_json(
    json: &str,
    subnet_map: Option<(&Path, &str)>,
) -> Result<Validated, PolicyErrors> {
    parse_azure_at(json, subnet_map, SystemTime::now())
}

/// [`parse_azure_json`] with the current time given.
pub(crate) fn parse_azure_at(
    json: &str,
    subnet_map: Option<(&Path, &str)>,
    now: SystemTime,
) -> Result<Validated, PolicyErrors> {
    let base_dir = subnet_map
        .and_then(|(path, _)| path.parent())
        .map_or_else(current_dir, Path::to_path_buf);
    parse_azure_in(json, subnet_map, &base_dir, now)
}

/// [`parse_azure_json`] whose map's relative paths resolve against
/// `base_dir` (the map's directory).
pub(crate) fn parse_azure_in(
    json: &str,
    subnet_map: Option<(&Path, &str)>,
    base_dir: &Path,
    now: SystemTime,
) -> Result<Validated, PolicyErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let ctx = Context { now, base_dir };
    let policy = azure::read(json, subnet_map, &mut errors, &mut warnings)
        .and_then(|raw| validate::validate(raw, &ctx, &mut errors, &mut warnings));
    // A map entry used by two ARM rules reports its own problems once.
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert(e.to_string()));
    let mut seen = std::collections::HashSet::new();
    warnings.retain(|w| seen.insert(w.to_string()));
    finish(policy, errors, warnings)
}

fn finish(
    policy: Option<Policy>,
    errors: Vec<PolicyError>,
    warnings: Vec<PolicyWarning>,
) -> Result<Validated, PolicyErrors> {
    match policy {
        Some(policy) if errors.is_empty() => Ok(Validated { policy, warnings }),
        _ => Err(PolicyErrors(errors)),
    }
}

fn current_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_default()
}
