//! The one loader (`PolicySource`, `PolicyText`): both formats, relative
//! references resolved against their own file's directory (not the
//! current one), made absolute for `apply` with only that value rewritten,
//! refused when a received policy names a file relatively or one the
//! daemon cannot read, and what a daemon's files get written back.

use std::path::Path;

use super::super::{
    FileText, LoadError, Mode, PolicyFormat, PolicySource, PolicyText, WriteBack, export_native,
    parse_toml,
};
use super::{TempDir, fixture};

const TAGS: &str = "ServiceTags_test.json";

/// A native policy in `dir/drafts/` naming `tags/…` beside it, with
/// comments around the reference.
fn native_draft(dir: &TempDir) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.0.join("drafts/tags")).expect("mkdir");
    std::fs::copy(fixture(TAGS), dir.0.join("drafts/tags").join(TAGS)).expect("copy fixture");
    dir.write(
        "drafts/policy.toml",
        "# the draft\ndefault_action = \"Deny\"\nbypass = \"AzureServices\"\n\n\
         [trusted_services]\n# Microsoft's file, beside this one\n\
         service_tags_file = \"tags/ServiceTags_test.json\"   # weekly\nenabled = [\"AzureBackup\"]\n",
    )
}

/// The vault JSON and its map (whose tags path is relative) copied to
/// `dir/azure/`, the tags file to `dir/azure/tags/`, the map naming it.
fn azure_draft(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir.0.join("azure/tags")).expect("mkdir");
    std::fs::copy(fixture(TAGS), dir.0.join("azure/tags").join(TAGS)).expect("copy fixture");
    let json = dir.write(
        "azure/vault.json",
        &std::fs::read_to_string(fixture("az-keyvault-show.json")).expect("fixture"),
    );
    let map = std::fs::read_to_string(fixture("az-keyvault-show.subnet-map.toml"))
        .expect("fixture")
        .replace(
            "service_tags_file = \"ServiceTags_test.json\"",
            "service_tags_file = \"tags/ServiceTags_test.json\"",
        );
    (json, dir.write("azure/map.toml", &map))
}

fn errors_of(result: Result<impl std::fmt::Debug, LoadError>) -> String {
    match result {
        Err(LoadError::Invalid { errors, .. }) => errors.to_string(),
        other => panic!("expected an invalid policy, got {other:?}"),
    }
}

#[test]
fn a_relative_tags_file_resolves_against_the_policy_files_directory_not_the_current_one() {
    let dir = TempDir::new("source-native");
    let path = native_draft(&dir);
    let v = PolicySource::new(&path, None)
        .load()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        v.policy.trusted_services.service_tags_file.as_deref(),
        Some(dir.0.join("drafts/tags").join(TAGS).as_path())
    );
    assert!(!v.policy.trusted_services.prefixes.is_empty());
}

#[test]
fn absolute_references_rewrite_only_the_tags_path_and_keep_comments() {
    let dir = TempDir::new("source-rewrite");
    let path = native_draft(&dir);
    let read = PolicySource::new(&path, None).read().expect("reads");
    let before = read.text().to_owned();
    let sent = read.with_absolute_references();
    let absolute = dir.0.join("drafts/tags").join(TAGS);
    assert_eq!(
        sent.text(),
        before.replace(
            "\"tags/ServiceTags_test.json\"",
            &format!("{:?}", absolute.display().to_string())
        ),
        "only the value changes"
    );
    assert!(
        sent.text().contains("# Microsoft's file, beside this one")
            && sent.text().contains("# weekly")
    );
    // It means the same anywhere: parsed against another directory.
    let elsewhere = parse_toml(sent.text()).expect("loads from the current directory");
    assert_eq!(elsewhere.policy, sent.validate().expect("valid").policy);
    // An absolute path, and a text without a reference, stay as they are.
    assert_eq!(sent.clone().with_absolute_references(), sent);
    let plain = PolicySource::new(
        dir.write("plain.toml", "default_action = \"Deny\" # c\n"),
        None,
    )
    .read()
    .expect("reads");
    assert_eq!(plain.clone().with_absolute_references(), plain);
}

#[test]
fn inline_and_dotted_trusted_services_tables_are_rewritten_too() {
    let dir = TempDir::new("source-forms");
    std::fs::copy(fixture(TAGS), dir.0.join(TAGS)).expect("copy fixture");
    let absolute = format!("{:?}", dir.0.join(TAGS).display().to_string());
    for (text, expected) in [
        (
            "default_action = \"Deny\"\ntrusted_services = { service_tags_file = \"ServiceTags_test.json\" }\n",
            format!(
                "default_action = \"Deny\"\ntrusted_services = {{ service_tags_file = {absolute} }}\n"
            ),
        ),
        (
            "default_action = \"Deny\"\ntrusted_services.service_tags_file = \"./ServiceTags_test.json\"\n",
            format!("default_action = \"Deny\"\ntrusted_services.service_tags_file = {absolute}\n"),
        ),
    ] {
        let path = dir.write("p.toml", text);
        let sent = PolicySource::new(&path, None)
            .read()
            .expect("reads")
            .with_absolute_references();
        assert_eq!(sent.text(), expected.replace("/./", "/"));
        sent.validate().unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn azure_json_reads_its_map_and_the_maps_relative_tags_file_against_the_maps_directory() {
    let dir = TempDir::new("source-azure");
    let (json, map) = azure_draft(&dir);
    let source = PolicySource::new(&json, Some(map.clone()));
    let read = source.read().expect("reads");
    assert_eq!(read.format(), PolicyFormat::AzureJson);
    let loaded = read.validate().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.policy.mode, Mode::Audit);
    let sent = read.clone().with_absolute_references();
    assert_eq!(sent.text(), read.text(), "the JSON names no file");
    let sent_map = &sent.subnet_map().expect("a map").text;
    let absolute = dir.0.join("azure/tags").join(TAGS);
    assert!(
        sent_map.contains(&format!(
            "service_tags_file = {:?}",
            absolute.display().to_string()
        )),
        "{sent_map}"
    );
    assert!(
        sent_map.contains("# Relative to this file's directory."),
        "{sent_map}"
    );
    // What the daemon rebuilds from the socket loads to the same policy.
    let received = PolicyText::received(
        "/elsewhere/vault.json".into(),
        PolicyFormat::AzureJson,
        sent.text().to_owned(),
        sent.subnet_map().cloned(),
    );
    assert_eq!(
        received.validate().unwrap_or_else(|e| panic!("{e}")).policy,
        loaded.policy
    );
}

#[test]
fn a_received_policy_naming_a_relative_file_is_refused_with_the_field_and_the_fix() {
    let text = "default_action = \"Deny\"\n[trusted_services]\nservice_tags_file = \"tags.json\"\n";
    let received = PolicyText::received(
        "/home/op/p.toml".into(),
        PolicyFormat::Native,
        text.into(),
        None,
    );
    let shown = errors_of(received.validate());
    assert!(
        shown.starts_with(
            "trusted_services.service_tags_file: \"tags.json\" is refused: a relative path"
        ),
        "{shown}"
    );
    assert!(shown.contains("absolute path"), "{shown}");
}

#[test]
fn a_received_policy_naming_a_file_the_daemon_cannot_read_is_refused_with_the_path_and_where_to_put_it()
 {
    let text = "default_action = \"Deny\"\n[trusted_services]\nservice_tags_file = \"/home/x/tags.json\"\n";
    let received = PolicyText::received(
        "/home/x/p.toml".into(),
        PolicyFormat::Native,
        text.into(),
        None,
    );
    let shown = errors_of(received.validate());
    assert!(
        shown.starts_with("trusted_services.service_tags_file: \"/home/x/tags.json\" is refused: the daemon cannot read it"),
        "{shown}"
    );
    assert!(
        shown.contains("ProtectHome") && shown.contains("/etc/vaultfw"),
        "{shown}"
    );
    // In an Azure policy the field is the map's.
    let map = FileText {
        path: "/home/x/map.toml".into(),
        text: "[trusted_services]\nservice_tags_file = \"/home/x/tags.json\"\n".into(),
    };
    let received = PolicyText::received(
        "/home/x/v.json".into(),
        PolicyFormat::AzureJson,
        r#"{"defaultAction": "Deny"}"#.into(),
        Some(map),
    );
    let shown = errors_of(received.validate());
    assert!(
        shown.starts_with(
            "/home/x/map.toml:trusted_services.service_tags_file: \"/home/x/tags.json\""
        ),
        "{shown}"
    );
}

#[test]
fn a_native_file_gets_a_native_apply_as_sent_and_an_azure_apply_as_native_toml() {
    let dir = TempDir::new("source-write-native");
    let served = PolicySource::new(
        dir.write("served.toml", "default_action = \"Allow\"\n"),
        None,
    );
    let draft = native_draft(&dir);
    let sent = PolicySource::new(&draft, None)
        .read()
        .expect("reads")
        .with_absolute_references();
    let policy = sent.validate().expect("valid").policy;
    assert_eq!(
        served.write_back(&sent, &policy).expect("holds it"),
        WriteBack {
            policy: sent.text().to_owned(),
            subnet_map: None
        }
    );

    let (json, map) = azure_draft(&dir);
    let sent = PolicySource::new(&json, Some(map))
        .read()
        .expect("reads")
        .with_absolute_references();
    let policy = sent.validate().expect("valid").policy;
    let files = served.write_back(&sent, &policy).expect("holds it");
    assert_eq!(
        files,
        WriteBack {
            policy: export_native(&policy),
            subnet_map: None
        }
    );
    // Written there, the file loads as the applied policy.
    std::fs::write(&served.path, &files.policy).expect("write");
    assert_eq!(served.load().expect("loads").policy, policy);
}

#[test]
fn an_azure_file_gets_the_applied_json_and_map_and_refuses_what_it_cannot_hold() {
    let dir = TempDir::new("source-write-azure");
    let (json, map) = azure_draft(&dir);
    let sent = PolicySource::new(&json, Some(map))
        .read()
        .expect("reads")
        .with_absolute_references();
    let policy = sent.validate().expect("valid").policy;

    std::fs::create_dir_all(dir.0.join("served")).expect("mkdir");
    let served_json = dir.write("served/vault.json", r#"{"defaultAction": "Allow"}"#);
    let served_map = dir.write("served/map.toml", "");
    let served = PolicySource::new(&served_json, Some(served_map));
    let files = served.write_back(&sent, &policy).expect("holds it");
    assert_eq!(files.policy, sent.text());
    assert_eq!(
        files.subnet_map.as_deref(),
        Some(sent.subnet_map().expect("map").text.as_str())
    );

    // A native apply is rendered as JSON and a map.
    let draft = native_draft(&dir);
    let native = PolicySource::new(&draft, None)
        .read()
        .expect("reads")
        .with_absolute_references();
    let native_policy = native.validate().expect("valid").policy;
    let files = served
        .write_back(&native, &native_policy)
        .expect("holds it");
    std::fs::write(&served.path, &files.policy).expect("write");
    std::fs::write(
        served.subnet_map.as_ref().expect("map"),
        files.subnet_map.expect("a map"),
    )
    .expect("write");
    assert_eq!(served.load().expect("loads").policy, native_policy);

    // Without a map, the JSON alone cannot hold subnet prefixes or `mode`.
    let mapless = PolicySource::new(&served_json, None);
    let refused = mapless
        .write_back(&sent, &policy)
        .expect_err("cannot hold it");
    assert!(refused.reason.contains("without a subnet map"), "{refused}");
    assert!(refused.fix.contains("--subnet-map"), "{refused}");
}

#[test]
fn a_subnet_map_given_with_a_native_policy_is_not_read_and_says_so() {
    let dir = TempDir::new("source-unused-map");
    let path = dir.write("p.toml", "default_action = \"Deny\"\n");
    let v = PolicySource::new(&path, Some(Path::new("/nonexistent/map.toml").into()))
        .load()
        .expect("the map is not read");
    assert_eq!(v.warnings.len(), 1);
    assert!(
        v.warnings[0]
            .message
            .contains("applies only to an Azure JSON policy")
    );
}
