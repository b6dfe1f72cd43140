//! The native TOML document as a whole: syntax, keys, settings, defaults,
//! the data plane, warnings that concern settings, error reporting and
//! `PolicySource::load`.

use std::collections::BTreeSet;

use super::super::{
    Bypass, DataPlane, DefaultAction, Ipv6Action, LimitProfile, Limits, LoadError, Mode,
    PolicyError, PolicyErrors, PolicySource, PolicyWarning, parse_toml,
};
use super::{fixture, load, refuse, single};

#[test]
fn minimal_policy_gets_the_documented_defaults() {
    let v = load("default_action = \"Deny\"\n");
    let p = &v.policy;
    assert_eq!(p.default_action, DefaultAction::Deny);
    assert_eq!(p.bypass, Bypass::None);
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.ipv6, Ipv6Action::Deny);
    assert_eq!(p.limits, Limits::KV_2020);
    assert_eq!(p.data_plane, DataPlane::default());
    assert_eq!(p.data_plane.tcp_ports, BTreeSet::from([443]));
    assert!(p.data_plane.udp_ports.is_empty());
    assert!(p.ip_rules.is_empty());
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
}

#[test]
fn settings_and_ip_rules_with_comment_and_expiry_load() {
    let v = load(
        r#"
default_action = "Deny"            # "Allow" | "Deny"
bypass = "AzureServices"           # "AzureServices" | "None"
mode = "Enforce"                   # "Enforce" | "Audit"
ipv6 = "Deny"                      # "Deny" | "Allow"
limits = "kv-2020"
ip_rules = ["203.0.113.0/24", "198.51.100.7",
            { value = "192.0.2.77", comment = "build agent", expires_at = "2027-01-31T00:00:00Z" }]

[data_plane]
tcp_ports = [443]
udp_ports = []
"#,
    );
    let shown: Vec<String> = v.policy.ip_rules.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["192.0.2.77", "198.51.100.7", "203.0.113.0/24"]);
    let agent = &v.policy.ip_rules[0];
    assert_eq!(agent.comment.as_deref(), Some("build agent"));
    assert_eq!(
        agent.expires_at,
        Some(humantime::parse_rfc3339("2027-01-31T00:00:00Z").expect("time"))
    );
    assert_eq!(v.policy.bypass, Bypass::AzureServices);
    // The only warning: without a service-tags file the bypass matches
    // nothing.
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "bypass");
}

#[test]
fn missing_default_action_is_an_error_explaining_both_choices() {
    let errors = refuse("ip_rules = [\"203.0.113.7\"]\n");
    let e = single(&errors);
    assert_eq!(e.path, "default_action");
    assert_eq!(e.value, "");
    assert!(
        e.reason.contains("missing") && e.reason.contains("never defaulted"),
        "{e}"
    );
    assert!(
        e.fix
            .contains("default_action = \"Deny\" (only sources matched"),
        "{e}"
    );
    assert!(
        e.fix.contains("default_action = \"Allow\" (every source"),
        "{e}"
    );
}

#[test]
fn enum_values_are_accepted_case_insensitively_and_normalised() {
    let v = load(
        "default_action = \"allow\"\nbypass = \"AZURESERVICES\"\nmode = \"audit\"\n\
         ipv6 = \"ALLOW\"\nlimits = \"KV-Current\"\n",
    );
    assert_eq!(v.policy.default_action, DefaultAction::Allow);
    assert_eq!(v.policy.bypass, Bypass::AzureServices);
    assert_eq!(v.policy.mode, Mode::Audit);
    assert_eq!(v.policy.ipv6, Ipv6Action::Allow);
    assert_eq!(v.policy.limits, Limits::KV_CURRENT);
    let v =
        load("default_action = \"DENY\"\nbypass = \"none\"\nmode = \"ENFORCE\"\nipv6 = \"deny\"\n");
    assert_eq!(v.policy.default_action, DefaultAction::Deny);
    assert_eq!(v.policy.bypass, Bypass::None);
    assert_eq!(v.policy.mode, Mode::Enforce);
    assert_eq!(v.policy.ipv6, Ipv6Action::Deny);
}

#[test]
fn unknown_enum_values_are_refused_listing_the_choices() {
    let errors = refuse(
        "default_action = \"Block\"\nbypass = \"All\"\nmode = \"Enforcing\"\nipv6 = \"Drop\"\n",
    );
    assert_eq!(errors.len(), 4, "{errors}");
    let e = &errors.0[0];
    assert_eq!(
        (e.path.as_str(), e.value.as_str()),
        ("default_action", "Block")
    );
    assert_eq!(e.reason, "not one of \"Deny\", \"Allow\"");
    assert!(
        e.fix.contains("default_action = \"Deny\"") && e.fix.contains("\"Allow\""),
        "{e}"
    );
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["default_action", "bypass", "mode", "ipv6"]);
    assert!(
        errors.0[2].fix.contains("audit_would_deny"),
        "{}",
        errors.0[2]
    );
}

#[test]
fn a_setting_of_the_wrong_toml_type_is_refused_with_its_form() {
    let errors = refuse("default_action = true\nmode = 1\n");
    assert_eq!(errors.len(), 2, "{errors}");
    let e = &errors.0[0];
    assert_eq!(
        (e.path.as_str(), e.value.as_str()),
        ("default_action", "true")
    );
    assert_eq!(e.reason, "expected a string, found a boolean");
    assert!(e.fix.contains("default_action = \"Deny\""), "{e}");
    // Reported as the wrong type, not additionally as missing.
    assert!(!errors.to_string().contains("missing"), "{errors}");
}

#[test]
fn toml_syntax_errors_carry_line_and_column() {
    let e = refuse("default_action = \"Deny\"\nmode = Enforce\n");
    let e = single(&e);
    assert_eq!(e.path, "2:8");
    assert_eq!(e.value, "mode = Enforce");
    assert!(e.reason.starts_with("TOML syntax error"), "{e}");
    assert!(!e.fix.is_empty());

    let e = refuse("default_action = \"Deny\"\ndefault_action = \"Allow\"\n");
    let e = single(&e);
    assert_eq!(e.path, "2:1");
    assert!(e.reason.contains("duplicate key"), "{e}");
}

#[test]
fn unknown_keys_are_named_with_the_valid_keys() {
    let errors = refuse("default_action = \"Deny\"\ncolour = \"blue\"\n");
    let e = single(&errors);
    assert_eq!(e.path, "colour");
    assert_eq!(e.reason, "unknown key `colour`");
    for key in [
        "default_action",
        "bypass",
        "mode",
        "ipv6",
        "limits",
        "ip_rules",
        "virtual_network_rules",
        "data_plane",
        "trusted_services",
    ] {
        assert!(e.fix.contains(key), "{key} not listed: {e}");
    }
}

#[test]
fn a_misspelt_key_gets_a_suggestion() {
    let errors = refuse("default_action = \"Deny\"\nmdoe = \"Audit\"\n");
    let e = single(&errors);
    assert!(e.fix.starts_with("did you mean `mode`?"), "{e}");
    let errors = refuse("default_action = \"Deny\"\n[data_plane]\ntcp_port = [443]\n");
    let e = &errors.0[0];
    assert_eq!(e.path, "data_plane.tcp_port");
    assert!(e.fix.contains("did you mean `tcp_ports`?"), "{e}");
}

#[test]
fn a_policy_using_every_section_loads_with_subnets_and_trusted_services() {
    // The README's example policy with a third IP rule, and the
    // service-tags file pointed at the test fixture instead of /etc/vaultfw.
    let v = load(&format!(
        r#"
default_action = "Deny"            # "Allow" | "Deny"
bypass = "AzureServices"           # "AzureServices" | "None"
mode = "Enforce"                   # "Enforce" | "Audit"
ipv6 = "Deny"                      # "Deny" | "Allow"
limits = "kv-2020"                 # "kv-2020" | "kv-current" | {{ ip_rules = N, virtual_network_rules = M }}
ip_rules = ["203.0.113.0/24", "198.51.100.7",
            {{ value = "192.0.2.77", comment = "build agent", expires_at = "2027-01-31T00:00:00Z" }}]

[data_plane]                       # default: tcp_ports = [443]
tcp_ports = [443]
udp_ports = []

[[virtual_network_rules]]
id = "vnet-prod/subnets/app"
address_prefixes = ["10.1.2.0/24"]
endpoint = {{ interface = "eth1" }}  # and/or vlan = 120
ignore_missing_endpoint = false

[trusted_services]
service_tags_file = {:?}
enabled = ["AzureBackup", "Sql"]   # default: the whole catalogue
"#,
        fixture("ServiceTags_test.json")
    ));
    let p = &v.policy;
    assert_eq!(p.ip_rules.len(), 3);
    assert_eq!(p.virtual_network_rules.len(), 1);
    let rule = &p.virtual_network_rules[0];
    assert_eq!(rule.id, "vnet-prod/subnets/app");
    assert_eq!(
        rule.address_prefixes,
        ["10.1.2.0/24".parse::<ipnet::Ipv4Net>().unwrap()]
    );
    assert_eq!(rule.endpoint.interface.as_deref(), Some("eth1"));
    assert_eq!(rule.endpoint.vlan, None);
    let names: Vec<&str> = p.trusted_services.enabled.iter().map(|s| s.name).collect();
    assert_eq!(names, ["AzureBackup", "Sql"]);
    let shown: Vec<String> = p
        .trusted_services
        .prefixes
        .iter()
        .map(|t| format!("{} {} {}", t.network, t.service, t.tag))
        .collect();
    assert_eq!(
        shown,
        [
            "192.0.2.128/29 AzureBackup AzureBackup",
            "198.51.100.64/27 Sql Sql"
        ]
    );
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
}

#[test]
fn limits_profiles_and_explicit_numbers_load() {
    assert_eq!(
        load("default_action = \"Deny\"\nlimits = \"kv-2020\"\n")
            .policy
            .limits,
        Limits::KV_2020
    );
    assert_eq!(
        load("default_action = \"Deny\"\nlimits = \"kv-current\"\n")
            .policy
            .limits,
        Limits::KV_CURRENT
    );
    let v = load(
        "default_action = \"Deny\"\nlimits = { ip_rules = 5000, virtual_network_rules = 1 }\n",
    );
    assert_eq!(
        v.policy.limits,
        Limits {
            profile: LimitProfile::Explicit,
            ip_rules: 5000,
            virtual_network_rules: 1,
            ipv6_rules: 5000,
        }
    );
    let max = Limits::MAX_LOADABLE;
    let v = load(&format!(
        "default_action = \"Deny\"\nlimits = {{ ip_rules = {max}, virtual_network_rules = {max} }}\n"
    ));
    assert_eq!(v.policy.limits.ip_rules, max);
}

#[test]
fn bad_limits_are_refused() {
    let e = refuse("default_action = \"Deny\"\nlimits = \"kv-2030\"\n");
    let e = single(&e);
    assert_eq!((e.path.as_str(), e.value.as_str()), ("limits", "kv-2030"));
    assert!(
        e.fix.contains("kv-2020") && e.fix.contains("kv-current"),
        "{e}"
    );

    let over = Limits::MAX_LOADABLE + 1;
    let errors = refuse(&format!(
        "default_action = \"Deny\"\nlimits = {{ ip_rules = 0, virtual_network_rules = {over} }}\n"
    ));
    assert_eq!(errors.len(), 2, "{errors}");
    assert_eq!(
        (errors.0[0].path.as_str(), errors.0[0].value.as_str()),
        ("limits.ip_rules", "0")
    );
    assert_eq!(errors.0[0].reason, "0 is outside 1–1000000");
    assert_eq!(errors.0[1].path, "limits.virtual_network_rules");
    assert_eq!(errors.0[1].value, over.to_string());

    let e = refuse("default_action = \"Deny\"\nlimits = { ip_rules = 500 }\n");
    let e = single(&e);
    assert_eq!(e.path, "limits.virtual_network_rules");
    assert!(e.reason.contains("missing"), "{e}");

    let e = refuse(
        "default_action = \"Deny\"\nlimits = { ip_rules = \"500\", virtual_network_rules = 1 }\n",
    );
    assert_eq!(single(&e).path, "limits.ip_rules");
    let e = refuse(
        "default_action = \"Deny\"\nlimits = { ip = 5, ip_rules = 5, virtual_network_rules = 1 }\n",
    );
    assert_eq!(single(&e).path, "limits.ip");
    let e = refuse("default_action = \"Deny\"\nlimits = 127\n");
    assert_eq!(single(&e).path, "limits");
}

#[test]
fn data_plane_ports_are_read_as_written() {
    let v = load(
        "default_action = \"Deny\"\n[data_plane]\ntcp_ports = [8443, 443]\nudp_ports = [53]\n",
    );
    assert_eq!(v.policy.data_plane.tcp_ports, BTreeSet::from([443, 8443]));
    assert_eq!(v.policy.data_plane.udp_ports, BTreeSet::from([53]));
    // An absent key in a present table means no port of that protocol.
    let v = load("default_action = \"Deny\"\n[data_plane]\nudp_ports = [53]\n");
    assert!(v.policy.data_plane.tcp_ports.is_empty());
    let v = load("default_action = \"Deny\"\n[data_plane]\ntcp_ports = [1, 65535]\n");
    assert_eq!(v.policy.data_plane.tcp_ports, BTreeSet::from([1, 65535]));
}

#[test]
fn a_data_plane_that_guards_no_port_is_refused() {
    for text in [
        "default_action = \"Deny\"\n[data_plane]\n",
        "default_action = \"Deny\"\n[data_plane]\ntcp_ports = []\nudp_ports = []\n",
    ] {
        let errors = refuse(text);
        let e = single(&errors);
        assert_eq!(e.path, "data_plane");
        assert!(e.reason.contains("nothing would be guarded"), "{e}");
        assert!(e.fix.contains("tcp_ports = [443]"), "{e}");
    }
}

#[test]
fn ports_outside_1_to_65535_are_refused_each_with_its_path() {
    let errors = refuse(
        "default_action = \"Deny\"\n[data_plane]\ntcp_ports = [0, 443, 65536]\nudp_ports = [-1]\n",
    );
    assert_eq!(errors.len(), 3, "{errors}");
    let got: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("data_plane.tcp_ports[0]", "0"),
            ("data_plane.tcp_ports[2]", "65536"),
            ("data_plane.udp_ports[0]", "-1"),
        ]
    );
    assert_eq!(errors.0[1].reason, "port 65536 is outside 1–65535");
}

#[test]
fn ports_of_the_wrong_type_are_refused() {
    let errors =
        refuse("default_action = \"Deny\"\n[data_plane]\ntcp_ports = 443\nudp_ports = [\"53\"]\n");
    assert_eq!(errors.len(), 2, "{errors}");
    assert_eq!(errors.0[0].path, "data_plane.tcp_ports");
    assert!(
        errors.0[0].fix.contains("tcp_ports = [443]"),
        "{}",
        errors.0[0]
    );
    assert_eq!(errors.0[1].path, "data_plane.udp_ports[0]");
    // Bad entries are not also reported as "no port at all".
    assert!(
        !errors.to_string().contains("nothing would be guarded"),
        "{errors}"
    );
    let errors = refuse("default_action = \"Deny\"\ndata_plane = 443\n");
    assert_eq!(single(&errors).path, "data_plane");
}

#[test]
fn duplicate_ports_are_guarded_once_with_a_warning() {
    let v = load("default_action = \"Deny\"\n[data_plane]\ntcp_ports = [443, 8443, 443]\n");
    assert_eq!(v.policy.data_plane.tcp_ports, BTreeSet::from([443, 8443]));
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "data_plane.tcp_ports[2]");
    assert!(
        v.warnings[0].message.contains("data_plane.tcp_ports[0]"),
        "{}",
        v.warnings[0]
    );
}

#[test]
fn default_allow_with_rules_warns_that_rules_have_no_effect() {
    let v = load("default_action = \"Allow\"\nip_rules = [\"203.0.113.7\"]\n");
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "default_action");
    assert!(
        v.warnings[0]
            .message
            .contains("rules have no effect while default_action = \"Allow\"")
    );
    assert!(load("default_action = \"Allow\"\n").warnings.is_empty());
}

#[test]
fn bypass_azure_services_without_a_tags_file_warns_that_nothing_matches() {
    let v = load("default_action = \"Deny\"\nbypass = \"AzureServices\"\n");
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "bypass");
    assert!(
        v.warnings[0]
            .message
            .starts_with("trusted-services catalogue has no prefixes: no source matches it"),
        "{}",
        v.warnings[0]
    );
    assert!(v.policy.trusted_services.prefixes.is_empty());
    assert_eq!(v.policy.trusted_services.enabled.len(), 10);
}

#[test]
fn errors_of_every_kind_are_collected_in_one_run() {
    let errors = refuse(
        r#"
mode = "Enforcing"
colour = "blue"
ip_rules = ["10.0.0.0/8", "203.0.113.7", "203.0.113.77/24"]
[data_plane]
tcp_ports = [0]
"#,
    );
    let paths: BTreeSet<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    let expected = BTreeSet::from([
        "colour",
        "default_action",
        "mode",
        "ip_rules[0]",
        "ip_rules[2]",
        "data_plane.tcp_ports[0]",
    ]);
    assert_eq!(paths, expected, "{errors}");
}

#[test]
fn error_display_is_one_line_with_path_value_reason_and_fix() {
    let e = PolicyError::new("ip_rules[3]", "10.0.0.0/8", "it is private", "remove it");
    assert_eq!(
        e.to_string(),
        "ip_rules[3]: \"10.0.0.0/8\" is refused: it is private. Fix: remove it"
    );
    let e = PolicyError::new(
        "default_action",
        "",
        "`default_action` is missing",
        "add it",
    );
    assert_eq!(
        e.to_string(),
        "default_action: `default_action` is missing. Fix: add it"
    );
    let errors = refuse("ip_rules = [\"10.0.0.0/8\", \"127.0.0.1\"]\n");
    let shown = errors.to_string();
    assert_eq!(shown.lines().count(), 3, "{shown}");
    for (line, e) in shown.lines().zip(errors.iter()) {
        assert_eq!(line, e.to_string());
    }
    let w = PolicyWarning::new("bypass", "matches nothing");
    assert_eq!(w.to_string(), "bypass: matches nothing");
}

#[test]
fn errors_and_validated_policies_serialize_to_json() {
    let errors = refuse("ip_rules = [\"10.0.0.0/8\"]\n");
    let json = serde_json::to_value(&errors).expect("serializes");
    assert_eq!(json[0]["path"], "default_action");
    assert_eq!(json[1]["path"], "ip_rules[0]");
    assert!(
        json[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("RFC 1918"))
    );
    let v =
        load("default_action = \"Deny\"\nip_rules = [\"203.0.113.10/32\", \"203.0.113.0/25\"]\n");
    let json = serde_json::to_value(&v).expect("serializes");
    assert_eq!(json["policy"]["ip_rules"][0]["network"], "203.0.113.0/25");
    assert_eq!(json["policy"]["ip_rules"][1]["network"], "203.0.113.10");
}

#[test]
fn parse_toml_uses_the_clock_and_accepts_a_policy_without_expiry() {
    assert!(parse_toml("default_action = \"Deny\"\nip_rules = [\"203.0.113.7\"]\n").is_ok());
}

/// A file in the temp dir, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "vaultfw-policy-test-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_policy_source_reads_and_validates() {
    let f = TempFile::new(
        "good",
        "default_action = \"Deny\"\nip_rules = [\"203.0.113.7\"]\n",
    );
    let v = PolicySource::new(&f.0, None).load().expect("loads");
    assert_eq!(v.policy.ip_rules.len(), 1);
}

#[test]
fn a_policy_source_reports_an_unreadable_file_with_its_path() {
    let path = std::env::temp_dir().join("vaultfw-policy-test-does-not-exist.toml");
    match PolicySource::new(&path, None).load() {
        Err(e @ LoadError::Io { .. }) => {
            let shown = e.to_string();
            assert!(shown.starts_with("cannot read policy file "), "{shown}");
            assert!(shown.contains("does-not-exist.toml"), "{shown}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_policy_source_reports_every_error_of_an_invalid_file() {
    let f = TempFile::new("bad", "ip_rules = [\"10.0.0.0/8\"]\n");
    match PolicySource::new(&f.0, None).load() {
        Err(LoadError::Invalid { path, errors }) => {
            assert_eq!(path, f.0);
            let PolicyErrors(list) = &errors;
            assert_eq!(list.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    let shown = PolicySource::new(&f.0, None)
        .load()
        .expect_err("invalid")
        .to_string();
    assert!(shown.contains("is invalid:\ndefault_action: "), "{shown}");
}

#[test]
fn guarding_the_ssh_port_is_refused_unless_done_on_purpose() {
    let refused = parse_toml("default_action = \"Deny\"\n[data_plane]\ntcp_ports = [443, 22]\n")
        .expect_err("port 22 in the data plane is refused");
    let e = &refused.0[0];
    assert_eq!(
        (e.path.as_str(), e.value.as_str()),
        ("data_plane.tcp_ports[1]", "22")
    );
    assert!(e.reason.contains("SSH"), "{e}");
    assert!(e.fix.contains("guard_control_ports = [22]"), "{e}");
    let on_purpose = parse_toml(
        "default_action = \"Deny\"\n[data_plane]\ntcp_ports = [443, 22]\nguard_control_ports = [22]\n",
    )
    .expect("guarded on purpose");
    assert!(on_purpose.policy.data_plane.tcp_ports.contains(&22));
}

#[test]
fn setting_flags_take_the_file_values_in_any_case_and_name_the_choices_when_refused() {
    use super::super::{parse_bypass, parse_default_action};
    assert_eq!(
        parse_default_action("--default-action", "allow"),
        Ok(DefaultAction::Allow)
    );
    assert_eq!(
        parse_bypass("--bypass", "azureservices"),
        Ok(Bypass::AzureServices)
    );
    let e = parse_bypass("--bypass", "Everyone").expect_err("not a bypass");
    assert_eq!(
        (e.path.as_str(), e.value.as_str()),
        ("--bypass", "Everyone")
    );
    assert!(
        e.fix.contains("--bypass None") && e.fix.contains("--bypass AzureServices"),
        "{e}"
    );
    let e = parse_default_action("--default-action", "Open").expect_err("not an action");
    assert!(
        e.reason.contains("\"Allow\"") && e.reason.contains("\"Deny\""),
        "{e}"
    );
}
