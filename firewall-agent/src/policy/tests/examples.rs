//! The policies in the repository's `examples/` load as documented.

use std::path::{Path, PathBuf};

use super::super::{Bypass, Mode, load_policy};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

#[test]
fn the_example_policies_load_without_warnings() {
    for name in ["policy.toml", "policy-full.toml"] {
        let v = load_policy(&example(name), None).unwrap_or_else(|e| panic!("{e}"));
        assert!(v.warnings.is_empty(), "{name}: {:?}", v.warnings);
    }
    let v = load_policy(&example("policy-full.toml"), None).expect("loads");
    assert_eq!(v.policy.virtual_network_rules.len(), 2);
    assert_eq!(v.policy.trusted_services.prefixes.len(), 2);
}

#[test]
fn the_azure_example_loads_with_its_subnet_map() {
    let v = load_policy(
        &example("azure/vault.json"),
        Some(&example("azure/subnet-map.toml")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    assert_eq!(v.policy.bypass, Bypass::AzureServices);
    assert_eq!(v.policy.mode, Mode::Audit);
    assert_eq!(v.policy.ip_rules.len(), 2);
    assert_eq!(v.policy.virtual_network_rules.len(), 1);
    // The whole catalogue: 8 prefixes in the fixture.
    assert_eq!(v.policy.trusted_services.prefixes.len(), 8);
}
