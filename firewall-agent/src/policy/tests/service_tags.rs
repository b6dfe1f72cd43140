//! The service-tags reader: Microsoft's format, IPv6 skipped and counted,
//! tolerance, errors with JSON paths, and the real file at scale.

use std::time::Instant;

use super::super::service_tags::{self, ServiceTagsError};
use super::{TempDir, fixture};

#[test]
fn the_test_fixture_reads_every_tag_with_its_counts() {
    let file = service_tags::read(&fixture("ServiceTags_test.json")).expect("reads");
    assert_eq!(file.change_number, Some(7));
    assert_eq!(file.cloud.as_deref(), Some("Public"));
    let counts: Vec<(&str, usize, usize)> = file
        .tags
        .iter()
        .map(|t| (t.name.as_str(), t.ipv4.len(), t.ipv6.len()))
        .collect();
    assert_eq!(
        counts,
        [
            ("AzureResourceManager", 1, 1),
            ("AzureBackup", 1, 1),
            ("AzureInformationProtection", 1, 0),
            ("AppService", 2, 0),
            ("Sql", 1, 1),
            ("Sql.WestEurope", 1, 0),
            ("Storage", 1, 1),
            ("AzureDataLake", 2, 0),
            ("AzureCloud", 3, 1),
        ]
    );
    let backup = file.tag("azurebackup").expect("case-insensitive lookup");
    assert_eq!(backup.ipv4, ["192.0.2.128/29".parse().unwrap()]);
    assert_eq!(backup.path, "values[1]");
}

#[test]
fn host_bits_are_cleared_and_counted_duplicates_kept_once_extra_fields_ignored() {
    let file = service_tags::parse(
        r#"{"changeNumber": 3, "cloud": "Public", "future": {"x": 1},
            "values": [{"name": "Sql", "id": "Sql", "colour": "blue",
              "properties": {"addressPrefixes": ["198.51.100.70/27", "198.51.100.64/27",
                                                "203.0.113.9", "2001:db8::/32", "2001:db8::1"],
                             "networkFeatures": null, "something": [1, 2]}}]}"#,
        "tags.json",
    )
    .expect("parses");
    let sql = &file.tags[0];
    assert_eq!(
        sql.ipv4,
        [
            "198.51.100.64/27".parse().unwrap(),
            "203.0.113.9/32".parse().unwrap()
        ]
    );
    assert_eq!(sql.host_bits_cleared, 1);
    assert_eq!(
        sql.first_host_bits,
        Some((
            "values[0].properties.addressPrefixes[0]".to_string(),
            "198.51.100.70/27".to_string()
        ))
    );
    assert_eq!(sql.duplicates, 1);
    assert_eq!((sql.ipv6.len(), sql.ipv6_skipped), (2, 0));
}

#[test]
fn malformed_prefixes_are_reported_with_the_file_and_json_path() {
    let errors = service_tags::parse(
        r#"{"values": [
            {"name": "AzureBackup", "properties": {"addressPrefixes": ["192.0.2.128/29"]}},
            {"name": "Sql", "properties": {"addressPrefixes": ["198.51.100.64/33", "2001:db8::zz/32", 7, "10.0.0.0/8"]}}
        ]}"#,
        "tags.json",
    )
    .expect_err("malformed");
    let got: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "tags.json:values[1].properties.addressPrefixes[0]",
                "198.51.100.64/33"
            ),
            (
                "tags.json:values[1].properties.addressPrefixes[1]",
                "2001:db8::zz/32"
            ),
            ("tags.json:values[1].properties.addressPrefixes[2]", "7"),
            (
                "tags.json:values[1].properties.addressPrefixes[3]",
                "10.0.0.0/8"
            ),
        ]
    );
    assert!(errors[3].reason.contains("private range"), "{}", errors[3]);
    assert!(
        errors[3].reason.contains("public addresses only"),
        "{}",
        errors[3]
    );
    assert!(
        errors[0].fix.contains("ServiceTags_Public"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_file_without_values_or_with_a_repeated_tag_is_refused() {
    let e = service_tags::parse(r#"{"changeNumber": 1}"#, "t.json").expect_err("no values");
    assert_eq!(e[0].path, "t.json:values");
    assert!(e[0].reason.contains("not a service-tags file"), "{}", e[0]);
    let e = service_tags::parse("[1, 2]", "t.json").expect_err("not an object");
    assert_eq!(e[0].path, "t.json");
    let e = service_tags::parse(
        r#"{"values": [{"name": "Sql", "properties": {"addressPrefixes": []}},
                       {"name": "SQL", "properties": {"addressPrefixes": []}}]}"#,
        "t.json",
    )
    .expect_err("repeated");
    assert_eq!(e[0].path, "t.json:values[1].name");
    assert!(e[0].reason.contains("values[0]"), "{}", e[0]);
    let e = service_tags::parse(r#"{"values": [{"properties": {}}]}"#, "").expect_err("no name");
    assert_eq!(e[0].path, "values[0].name");
}

#[test]
fn an_unreadable_file_is_an_io_error_naming_it() {
    let dir = TempDir::new("tags-io");
    let missing = dir.0.join("missing.json");
    match service_tags::read(&missing) {
        Err(e @ ServiceTagsError::Io { .. }) => {
            assert!(e.to_string().contains("missing.json"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

/// The real file (Microsoft's data, change 301, June 2026): tags, their
/// IPv4 prefixes and the IPv6 prefixes skipped, as observed.
#[test]
fn the_real_service_tags_file_loads_at_scale_with_the_observed_counts() {
    let started = Instant::now();
    let file = service_tags::read(&fixture("ServiceTags_Public_subset.json")).expect("reads");
    let elapsed = started.elapsed();
    assert_eq!(file.change_number, Some(301));
    assert_eq!(file.cloud.as_deref(), Some("Public"));
    let counts: Vec<(&str, usize, usize, usize)> = file
        .tags
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.ipv4.len(),
                t.ipv6.len(),
                t.host_bits_cleared + t.duplicates,
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("AzureBackup", 362, 203, 0),
            ("AzureResourceManager", 214, 163, 0),
            ("Storage", 496, 79, 0),
            ("Sql", 1113, 400, 0),
            ("AppService", 1089, 206, 0),
            ("AzureDataLake", 19, 0, 0),
            ("AzureInformationProtection", 196, 58, 0),
            ("AzureCloud", 11229, 4093, 0),
        ]
    );
    let ipv4: usize = file.tags.iter().map(|t| t.ipv4.len()).sum();
    let ipv6: usize = file.tags.iter().map(|t| t.ipv6.len()).sum();
    assert!(
        file.tags.iter().all(|t| t.ipv6_skipped == 0),
        "all global unicast"
    );
    assert_eq!((ipv4, ipv6), (14718, 5202));
    // Not a timing claim (those live in `cargo xtask bench`): printed for
    // the record, with --nocapture.
    println!("read {ipv4} IPv4 and {ipv6} IPv6 prefixes in {elapsed:?}");
}

#[test]
fn the_real_file_gives_the_whole_catalogue_3489_trusted_prefixes() {
    let text = format!(
        "default_action = \"Deny\"\nbypass = \"AzureServices\"\n[trusted_services]\n\
         service_tags_file = {:?}\n",
        fixture("ServiceTags_Public_subset.json")
            .display()
            .to_string()
    );
    let v = super::load(&text);
    let t = &v.policy.trusted_services;
    // The seven tags share no IPv4 prefix in this file; AzureCloud is not used.
    assert_eq!(t.prefixes.len(), 3489);
    assert_eq!((t.prefixes_v6.len(), t.ipv6_skipped), (1109, 0));
    assert_eq!(t.change_number, Some(301));
    let arm = t
        .prefixes
        .iter()
        .filter(|p| p.tag == "AzureResourceManager")
        .count();
    assert_eq!(arm, 214);
    assert!(
        t.prefixes
            .iter()
            .filter(|p| p.tag == "AzureResourceManager")
            .all(|p| p.service == "VirtualMachines")
    );
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
}
