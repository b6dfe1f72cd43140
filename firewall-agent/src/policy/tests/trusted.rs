//! `[trusted_services]`: the catalogue, `enabled`, the service-tags file
//! and the prefixes it gives.

use std::path::Path;

use super::super::service_tags;
use super::super::{Bypass, catalogue, find_trusted_service, parse_toml, parse_toml_in};
use super::{TempDir, fixture, load, now, refuse, single};

/// A Deny policy with `bypass` and a `[trusted_services]` section holding
/// `section` (TOML lines).
fn with_trusted(bypass: &str, section: &str) -> String {
    format!("default_action = \"Deny\"\nbypass = \"{bypass}\"\n[trusted_services]\n{section}\n")
}

fn tags_file_line() -> String {
    format!(
        "service_tags_file = {:?}",
        fixture("ServiceTags_test.json").display().to_string()
    )
}

#[test]
fn the_catalogue_lists_the_ten_documented_services_with_stable_names() {
    let names: Vec<&str> = catalogue().iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "VirtualMachines",
            "ResourceManager",
            "DiskEncryption",
            "AzureBackup",
            "ExchangeSharePoint",
            "InformationProtection",
            "AppService",
            "Sql",
            "Storage",
            "DataLakeStore",
        ]
    );
    for s in catalogue() {
        assert!(!s.description.is_empty(), "{}", s.name);
        assert!(!s.tags.contains(&"AzureCloud"), "{}", s.name);
    }
    assert_eq!(find_trusted_service("sql").map(|s| s.name), Some("Sql"));
    assert!(find_trusted_service("Sql Database").is_none());
}

#[test]
fn every_catalogue_tag_is_in_the_real_service_tags_file() {
    let real = service_tags::read(&fixture("ServiceTags_Public_subset.json")).expect("reads");
    for s in catalogue() {
        for tag in s.tags {
            let t = real
                .tag(tag)
                .unwrap_or_else(|| panic!("{tag} of {}", s.name));
            assert!(!t.ipv4.is_empty(), "{tag}");
        }
    }
}

#[test]
fn a_tag_holding_192_0_2_128_29_gives_that_prefix_to_azure_backup() {
    let v = load(&with_trusted(
        "AzureServices",
        &format!("{}\nenabled = [\"AzureBackup\"]", tags_file_line()),
    ));
    let t = &v.policy.trusted_services;
    assert_eq!(t.prefixes.len(), 1);
    assert_eq!(t.prefixes[0].network, "192.0.2.128/29".parse().unwrap());
    assert_eq!(t.prefixes[0].service, "AzureBackup");
    assert_eq!(t.prefixes[0].tag, "AzureBackup");
    assert_eq!(t.prefixes_v6.len(), 1);
    assert_eq!(t.prefixes_v6[0].service, "AzureBackup");
    assert_eq!(t.change_number, Some(7));
    assert_eq!(
        t.service_tags_file.as_deref(),
        Some(fixture("ServiceTags_test.json").as_path())
    );
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
}

#[test]
fn with_bypass_none_the_catalogue_is_loaded_but_reported_inactive() {
    let v = load(&with_trusted("None", &tags_file_line()));
    assert_eq!(v.policy.bypass, Bypass::None);
    assert!(!v.policy.trusted_services.prefixes.is_empty());
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    let w = &v.warnings[0];
    assert_eq!(w.path, "trusted_services");
    assert!(
        w.message
            .starts_with("the catalogue is inactive while bypass = \"None\""),
        "{w}"
    );
}

#[test]
fn the_whole_catalogue_is_the_default_and_uses_no_azure_cloud_prefix() {
    let v = load(&with_trusted("AzureServices", &tags_file_line()));
    let t = &v.policy.trusted_services;
    assert_eq!(t.enabled.len(), 10);
    let shown: Vec<String> = t
        .prefixes
        .iter()
        .map(|p| format!("{} {} {}", p.network, p.service, p.tag))
        .collect();
    assert_eq!(
        shown,
        [
            // The ARM tag serves three services: the first in catalogue
            // order is named.
            "192.0.2.16/28 VirtualMachines AzureResourceManager",
            "192.0.2.64/28 InformationProtection AzureInformationProtection",
            "192.0.2.128/29 AzureBackup AzureBackup",
            "198.51.100.64/27 Sql Sql",
            "198.51.100.128/26 AppService AppService",
            "198.51.100.250/31 AppService AppService",
            // Also in AzureDataLake; Storage comes first in catalogue order.
            "203.0.113.64/26 Storage Storage",
            "203.0.113.192/27 DataLakeStore AzureDataLake",
        ]
    );
    // ARM, AzureBackup, Sql and Storage each hold one IPv6 prefix; the ARM
    // tag's is kept once although three services use it.
    assert_eq!(t.prefixes_v6.len(), 4);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
}

#[test]
fn enabled_names_match_case_insensitively_and_are_normalised_to_catalogue_order() {
    let v = load(&with_trusted(
        "AzureServices",
        &format!(
            "{}\nenabled = [\"sql\", \"AZUREBACKUP\", \"Sql\"]",
            tags_file_line()
        ),
    ));
    let names: Vec<&str> = v
        .policy
        .trusted_services
        .enabled
        .iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["AzureBackup", "Sql"]);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "trusted_services.enabled[2]");
    assert!(
        v.warnings[0]
            .message
            .contains("already enabled by trusted_services.enabled[0]")
    );
}

#[test]
fn an_unknown_service_name_is_refused_listing_the_valid_names() {
    let errors = refuse(&with_trusted(
        "AzureServices",
        "enabled = [\"AzureBackup\", \"SqlDatabase\", \"KeyVault\"]",
    ));
    assert_eq!(errors.len(), 2, "{errors}");
    let e = &errors.0[0];
    assert_eq!(
        (e.path.as_str(), e.value.as_str()),
        ("trusted_services.enabled[1]", "SqlDatabase")
    );
    assert_eq!(e.reason, "not a trusted service of the catalogue");
    for s in catalogue() {
        assert!(e.fix.contains(s.name), "{} missing: {e}", s.name);
    }
    assert_eq!(errors.0[1].value, "KeyVault");
    let e = refuse(&with_trusted("AzureServices", "enabled = [\"AzureBakup\"]"));
    assert!(
        single(&e).fix.starts_with("did you mean \"AzureBackup\"?"),
        "{e}"
    );
}

#[test]
fn exchange_sharepoint_has_no_tag_and_says_so_when_enabled_by_name() {
    let v = load(&with_trusted(
        "AzureServices",
        &format!("{}\nenabled = [\"ExchangeSharePoint\"]", tags_file_line()),
    ));
    assert!(v.policy.trusted_services.prefixes.is_empty());
    let paths: Vec<&str> = v.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        ["trusted_services.enabled[0]", "bypass"],
        "{:?}",
        v.warnings
    );
    assert!(v.warnings[0].message.contains("Microsoft 365"));
    assert!(
        v.warnings[1]
            .message
            .starts_with("trusted-services catalogue has no prefixes: no source matches it")
    );
}

#[test]
fn an_empty_enabled_list_enables_nothing() {
    let v = load(&with_trusted(
        "AzureServices",
        &format!("{}\nenabled = []", tags_file_line()),
    ));
    assert!(v.policy.trusted_services.enabled.is_empty());
    assert!(v.warnings[0].message.contains("no service is enabled"));
}

#[test]
fn a_missing_tags_file_is_an_error_naming_the_file() {
    let errors = refuse(&with_trusted(
        "AzureServices",
        "service_tags_file = \"/nonexistent/vaultfw/ServiceTags.json\"",
    ));
    let e = single(&errors);
    assert_eq!(
        (e.path.as_str(), e.value.as_str()),
        (
            "trusted_services.service_tags_file",
            "/nonexistent/vaultfw/ServiceTags.json"
        )
    );
    assert!(
        e.reason
            .contains("cannot read the service-tags file /nonexistent/vaultfw/ServiceTags.json"),
        "{e}"
    );
}

#[test]
fn an_invalid_tags_file_is_an_error_naming_the_file_and_the_json_path() {
    let dir = TempDir::new("bad-tags");
    let file = dir.write(
        "tags.json",
        r#"{"values": [{"name": "AzureBackup", "properties": {"addressPrefixes": ["192.0.2.128/29", "192.0.2.300/32"]}}]}"#,
    );
    let errors = refuse(&with_trusted(
        "AzureServices",
        &format!("service_tags_file = {:?}", file.display().to_string()),
    ));
    let e = single(&errors);
    assert_eq!(
        e.path,
        format!("{}:values[0].properties.addressPrefixes[1]", file.display())
    );
    assert_eq!(e.value, "192.0.2.300/32");
    assert!(e.reason.contains("above 255"), "{e}");

    let file = dir.write("broken.json", "{\"values\": [\n  {\"name\": }\n]}");
    let errors = refuse(&with_trusted(
        "AzureServices",
        &format!("service_tags_file = {:?}", file.display().to_string()),
    ));
    let e = single(&errors);
    assert_eq!(e.path, format!("{}:2:12", file.display()));
    assert!(e.reason.starts_with("JSON syntax error"), "{e}");
}

#[test]
fn a_tag_missing_from_the_file_is_a_warning() {
    let dir = TempDir::new("partial-tags");
    let file = dir.write(
        "tags.json",
        r#"{"values": [{"name": "Sql", "properties": {"addressPrefixes": ["198.51.100.64/27"]}}]}"#,
    );
    let v = load(&with_trusted(
        "AzureServices",
        &format!(
            "service_tags_file = {:?}\nenabled = [\"AzureBackup\", \"Sql\"]",
            file.display().to_string()
        ),
    ));
    assert_eq!(v.policy.trusted_services.prefixes.len(), 1);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, file.display().to_string());
    assert!(
        v.warnings[0]
            .message
            .contains("the service tag \"AzureBackup\" of trusted service AzureBackup")
    );
}

#[test]
fn a_relative_tags_path_resolves_against_the_base_directory() {
    let text = with_trusted(
        "AzureServices",
        "service_tags_file = \"ServiceTags_test.json\"",
    );
    let v = parse_toml_in(&text, &fixture(""), now()).expect("loads");
    assert_eq!(
        v.policy.trusted_services.service_tags_file.as_deref(),
        Some(fixture("ServiceTags_test.json").as_path())
    );
    assert_eq!(v.policy.trusted_services.prefixes.len(), 8);
    // Without a base, against the current directory (the crate's, under
    // cargo test).
    let text = with_trusted(
        "AzureServices",
        "service_tags_file = \"tests/fixtures/ServiceTags_test.json\"",
    );
    let v = parse_toml(&text).expect("loads");
    let file = v.policy.trusted_services.service_tags_file.expect("file");
    assert!(file.is_absolute(), "{}", file.display());
    assert!(file.ends_with(Path::new("tests/fixtures/ServiceTags_test.json")));
}

#[test]
fn trusted_services_keys_of_the_wrong_shape_are_refused() {
    let errors = refuse(&with_trusted(
        "AzureServices",
        "service_tags_file = 5\nenabled = \"Sql\"\nservices = []",
    ));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "trusted_services.enabled",
            "trusted_services.service_tags_file",
            "trusted_services.services"
        ],
        "{errors}"
    );
    assert!(
        errors.0[0].fix.contains("enabled = [\"Sql\"]"),
        "{}",
        errors.0[0]
    );
    let errors = refuse(&with_trusted("AzureServices", "service_tags_file = \"\""));
    assert!(single(&errors).reason.contains("empty"));
}
