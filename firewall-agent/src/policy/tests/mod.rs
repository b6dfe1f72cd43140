//! Unit tests of policy loading, by topic.

mod access;
mod arm_ids;
mod azure;
mod document;
mod examples;
mod ip_rule_value;
mod ip_rules;
mod ipv6_rules;
mod man_page;
mod round_trip;
mod round_trip_generated;
mod service_tags;
mod source;
mod trusted;
mod vnet_rules;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{PolicyError, PolicyErrors, Validated, parse_azure_at, parse_toml_at};

/// The fixed "now" of every test: 2026-06-01T00:00:00Z.
fn now() -> SystemTime {
    humantime::parse_rfc3339("2026-06-01T00:00:00Z").expect("valid time")
}

/// Parses `text` as of [`now`], expecting success.
fn load(text: &str) -> Validated {
    match parse_toml_at(text, now()) {
        Ok(v) => v,
        Err(e) => panic!("expected the policy to load, got:\n{e}"),
    }
}

/// Parses `text` as of [`now`], expecting failure.
fn refuse(text: &str) -> PolicyErrors {
    match parse_toml_at(text, now()) {
        Ok(v) => panic!("expected errors, the policy loaded: {v:?}"),
        Err(e) => {
            assert!(!e.is_empty(), "an Err carries at least one error");
            e
        }
    }
}

/// The only error of `errors`.
fn single(errors: &PolicyErrors) -> &PolicyError {
    assert_eq!(
        errors.len(),
        1,
        "expected exactly one error, got:\n{errors}"
    );
    &errors.0[0]
}

/// A Deny policy with `rules` (TOML array items, already quoted).
fn deny_with_rules<S: AsRef<str>>(rules: &[S]) -> String {
    let items: Vec<&str> = rules.iter().map(AsRef::as_ref).collect();
    format!(
        "default_action = \"Deny\"\nip_rules = [{}]\n",
        items.join(", ")
    )
}

/// `n` distinct public single-address rules as quoted TOML strings,
/// 23.0.0.0 upwards.
fn distinct_rules(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let i = u32::try_from(i).expect("small count");
            let base = u32::from(std::net::Ipv4Addr::new(23, 0, 0, 0));
            format!("\"{}\"", std::net::Ipv4Addr::from(base + i))
        })
        .collect()
}

/// The absolute path of `firewall-agent/tests/fixtures/{name}`.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Parses Azure JSON with an optional subnet map `(path, text)` as of
/// [`now`], expecting success.
fn load_azure(json: &str, map: Option<(&str, &str)>) -> Validated {
    match parse_azure_at(json, map.map(|(p, t)| (Path::new(p), t)), now()) {
        Ok(v) => v,
        Err(e) => panic!("expected the policy to load, got:\n{e}"),
    }
}

/// Parses Azure JSON as of [`now`], expecting failure.
fn refuse_azure(json: &str, map: Option<(&str, &str)>) -> PolicyErrors {
    match parse_azure_at(json, map.map(|(p, t)| (Path::new(p), t)), now()) {
        Ok(v) => panic!("expected errors, the policy loaded: {v:?}"),
        Err(e) => {
            assert!(!e.is_empty(), "an Err carries at least one error");
            e
        }
    }
}

/// A fresh directory under the temp dir, removed with its content on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("vaultfw-policy-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// Writes `text` to `name` in the directory; returns its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
