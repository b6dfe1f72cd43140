//! vaultfw-policy(5) is hand-written: it must document every key the
//! parser accepts, so a key added to the parser without its documentation
//! fails here.

use crate::policy::{raw, raw_rules, raw_value, subnet_id, subnet_map};

const PAGE: &str = include_str!("../../../man/vaultfw-policy.5");

/// Whether the page names `key` in bold (`\fBkey\fR`, `.B key`, `.BR key`
/// or a `[table]`/`[[table]]` heading).
fn documented(key: &str) -> bool {
    PAGE.contains(&format!("\\fB{key}\\fR"))
        || PAGE.lines().any(|line| {
            let words: Vec<&str> = line
                .split(|c: char| c.is_whitespace() || c == ',' || c == '"')
                .filter(|w| !w.is_empty())
                .collect();
            matches!(words.first(), Some(&".B" | &".BR"))
                && words[1..]
                    .iter()
                    .any(|w| w.trim_start_matches('[').trim_end_matches(']') == key)
        })
}

#[test]
fn the_policy_man_page_documents_every_key_the_parser_accepts() {
    let keys = raw_value::TOP_KEYS
        .iter()
        .map(|(name, _)| *name)
        .chain(raw::DATA_PLANE_KEYS)
        .chain(raw::LIMITS_KEYS)
        .chain(raw_rules::IP_RULE_KEYS)
        .chain(raw_rules::VNET_RULE_KEYS)
        .chain(raw_rules::ENDPOINT_KEYS)
        .chain(raw_rules::TRUSTED_KEYS)
        .chain(raw_rules::PRIVATE_ENDPOINT_KEYS)
        .chain(subnet_id::SCOPE_KEYS)
        .chain(subnet_map::MAP_KEYS);
    let missing: Vec<&str> = keys.filter(|k| !documented(k)).collect();
    assert!(
        missing.is_empty(),
        "firewall-agent/man/vaultfw-policy.5 does not document {missing:?}"
    );
}

#[test]
fn the_man_page_check_tells_a_documented_key_from_a_missing_one() {
    assert!(documented("default_action"));
    assert!(documented("guard_control_ports"));
    assert!(!documented("no_such_key"));
}
