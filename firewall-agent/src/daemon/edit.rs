//! CLI changes as a diff of the in-memory policy.
//!
//! The daemon keeps the policy file it last wrote ([`NativeFile`]: its
//! text, split around its `ip_rules` items: `persist::SplitFile`). A CLI
//! change whose file still holds exactly that text edits the kept file
//! and the served policy instead of parsing and validating the whole file
//! again: an IP rule added is validated alone (the same validator, on a
//! document holding only that rule) and spliced in; an IP rule removed is
//! spliced out, and the IP-rule entries are compiled as a diff of the
//! served ones (`compile::compile_next_changed`). Other edits parse the
//! kept text and validate the whole edited text. The edited text is
//! written back as before (`reconcile`: atomically, before the kernel is
//! touched). The kept file is dropped 30 s after the last change
//! (`memory.rs`: ~180 bytes of RSS per rule).
//!
//! The kept file is taken out of the daemon for the edit and put back only
//! after the change was served, so a refusal at any step leaves nothing
//! kept: the next change parses the file again.

use ipnet::IpNet;

use super::state::{Daemon, EditRefused};
use crate::compile::IpRuleChange;
use crate::persist::{self, Edit, NativeDocument, SplitFile};
use crate::policy::{self, Policy, PolicyFormat, Validated};

/// The native policy file as the daemon last wrote it.
#[derive(Debug)]
pub(super) struct NativeFile {
    /// Its text.
    pub text: String,
    /// That text, split around its IP rules.
    pub split: SplitFile,
    /// The generation that serves what it declares.
    pub generation: u64,
    /// When the CLI change that wrote it was served (see
    /// `memory::KEEP_PARSED_FOR`).
    pub kept_at: std::time::Instant,
}

/// An edit of the policy file, validated, not yet written.
pub(super) struct Edited {
    /// The new text of the policy file.
    pub text: String,
    /// It, validated.
    pub validated: Validated,
    /// It, split around its IP rules (kept once the change is served);
    /// `None` when the split does not reproduce it.
    pub split: Option<SplitFile>,
    /// What it did to the IPv4 IP rules, when it changed nothing else.
    pub ip_change: Option<IpRuleChange>,
    /// The text it was edited from, when that is the file's (the kept
    /// file, just compared with it).
    pub file_before: Option<String>,
}

impl Daemon {
    /// Whether the policy file holds exactly the text the daemon last
    /// wrote and serves (no parse: one read and one comparison).
    pub(super) fn holds_own_write(&self) -> bool {
        self.native_file.as_ref().is_some_and(|kept| {
            self.pending.is_none()
                && kept.generation == self.generation
                && self.options.source.file_text().ok().as_deref() == Some(kept.text.as_str())
        })
    }

    /// Edits the native policy file in place (keeping comments) and
    /// validates the result; returns the new text and policy without
    /// writing anything. Through the kept document when the file holds
    /// the daemon's own write; else the whole file is read and checked.
    pub(super) fn edited(&mut self, edits: &[Edit]) -> Result<Edited, EditRefused> {
        let own = self.holds_own_write();
        match self.native_file.take() {
            Some(kept) if own => self.edited_kept(kept, edits),
            _ => self.edited_from(edits, &self.policy),
        }
    }

    fn edited_kept(&self, kept: NativeFile, edits: &[Edit]) -> Result<Edited, EditRefused> {
        let mut split = kept.split;
        let (text, split) = if split.edit(edits) {
            (split.text(), Some(split))
        } else {
            let mut doc =
                NativeDocument::parse(&kept.text).map_err(|e| EditRefused::Said(e.to_string()))?;
            doc.edit(edits)
                .map_err(|e| EditRefused::Said(e.to_string()))?;
            let text = doc.text();
            let split = SplitFile::of(doc, &text);
            (text, split)
        };
        let source = &self.options.source;
        let base_dir = source
            .path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        // One reading of the clock for what has expired, as one parse of
        // the whole file would have.
        let now = std::time::SystemTime::now();
        let (validated, ip_change) = match ip_rules_edited(&self.policy, edits, &base_dir, now)? {
            Some((policy, change)) => {
                #[cfg(debug_assertions)]
                check_same_as_parsed(&policy, &text, &base_dir, now);
                let validated = Validated {
                    policy,
                    warnings: Vec::new(),
                };
                (validated, Some(change))
            }
            None => {
                let files = source
                    .read()
                    .map_err(|e| EditRefused::Said(e.to_string()))?;
                if files.format() != PolicyFormat::Native {
                    return Err(EditRefused::Said(super::state::azure_json_refusal(source)));
                }
                let validated = files
                    .with_text(text.clone())
                    .validate()
                    .map_err(|e| match e {
                        policy::LoadError::Invalid { errors, .. } => EditRefused::Invalid(errors),
                        other => EditRefused::Said(other.to_string()),
                    })?;
                (validated, None)
            }
        };
        Ok(Edited {
            text,
            validated,
            split,
            ip_change,
            file_before: Some(kept.text),
        })
    }
}

/// `served` with `edits` applied, and what they did to its IPv4 IP rules,
/// when they only add and remove IP rules; `None` for any other edit. As a
/// parse of the edited file at `now` would, it leaves out every IP rule
/// whose expiry has passed by `now` — a served rule too, when the change
/// comes before the daemon's own removal of it. An added rule is validated alone by the
/// policy validator (a document holding only it), so it means what the
/// whole file would make of it: the same network, comment and expiry, and
/// nothing when it is already past its expiry. The caller checked the
/// limits and that an added network is new.
pub(super) fn ip_rules_edited(
    served: &Policy,
    edits: &[Edit],
    base_dir: &std::path::Path,
    now: std::time::SystemTime,
) -> Result<Option<(Policy, IpRuleChange)>, EditRefused> {
    let ip_only = edits.iter().all(|e| {
        matches!(
            e,
            Edit::AddIpRule(_) | Edit::AddIpRuleWith { .. } | Edit::RemoveIpRule(_)
        )
    });
    if !ip_only {
        return Ok(None);
    }
    let mut policy = served.clone();
    let mut change = IpRuleChange::default();
    for edit in edits {
        if let Edit::RemoveIpRule(network) = edit {
            match network {
                IpNet::V4(net) => {
                    if let Ok(i) = policy
                        .ip_rules
                        .binary_search_by_key(&key4(*net), |r| key4(r.network))
                    {
                        change.removed.push(policy.ip_rules.remove(i).network);
                    }
                }
                IpNet::V6(net) => {
                    if let Ok(i) = policy
                        .ipv6_rules
                        .binary_search_by_key(&key6(*net), |r| key6(r.network))
                    {
                        policy.ipv6_rules.remove(i);
                    }
                }
            }
            continue;
        }
        let Some(item) = persist::ip_rule_item(edit) else {
            continue;
        };
        // The rule alone, read by the same validator as the whole file.
        let alone = format!("default_action = \"Deny\"\nip_rules = [{item}]\n");
        let one = policy::parse_toml_in(&alone, base_dir, now)
            .map_err(EditRefused::Invalid)?
            .policy;
        // A rule declared again replaces the one served (in the file, in
        // place: `Edit::AddIpRule`).
        for rule in one.ip_rules {
            change.added.push(rule.network);
            match policy
                .ip_rules
                .binary_search_by_key(&key4(rule.network), |r| key4(r.network))
            {
                Ok(i) => {
                    change.removed.push(rule.network);
                    policy.ip_rules[i] = rule;
                }
                Err(i) => policy.ip_rules.insert(i, rule),
            }
        }
        for rule in one.ipv6_rules {
            match policy
                .ipv6_rules
                .binary_search_by_key(&key6(rule.network), |r| key6(r.network))
            {
                Ok(i) => policy.ipv6_rules[i] = rule,
                Err(i) => policy.ipv6_rules.insert(i, rule),
            }
        }
    }
    let expired = |at: &Option<std::time::SystemTime>| at.is_some_and(|at| at <= now);
    policy.ip_rules.retain(|r| {
        if expired(&r.expires_at) {
            change.removed.push(r.network);
        }
        !expired(&r.expires_at)
    });
    policy.ipv6_rules.retain(|r| !expired(&r.expires_at));
    Ok(Some((policy, change)))
}

/// The order of [`Policy::ip_rules`]: (address, prefix length).
fn key4(net: ipnet::Ipv4Net) -> (u32, u8) {
    (u32::from(net.addr()), net.prefix_len())
}

/// The order of [`Policy::ipv6_rules`]: (address, prefix length).
fn key6(net: ipnet::Ipv6Net) -> (u128, u8) {
    (u128::from(net.addr()), net.prefix_len())
}

/// Debug builds (the tests) check every diffed policy against a parse of
/// the whole edited file.
#[cfg(debug_assertions)]
fn check_same_as_parsed(
    policy: &Policy,
    text: &str,
    base_dir: &std::path::Path,
    now: std::time::SystemTime,
) {
    let parsed = policy::parse_toml_in(text, base_dir, now)
        .expect("the edited policy file parses")
        .policy;
    assert!(
        parsed == *policy,
        "the policy edited in memory differs from the edited file's"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"# the vault
default_action = "Deny"
bypass = "None"
limits = { ip_rules = 20, virtual_network_rules = 2 }
ip_rules = [
    "203.0.113.0/24", # office
    { value = "198.51.100.7", comment = "build agent" },
    "2001:db8::/48",
    "192.0.2.9",
]
"#;

    fn parsed(text: &str) -> Policy {
        policy::parse_toml(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .policy
    }

    /// The diffed policy is the one the edited file reads as.
    fn same_as_file(edits: &[Edit]) {
        let served = parsed(FILE);
        let now = std::time::SystemTime::now();
        let (diffed, _) = ip_rules_edited(&served, edits, std::path::Path::new("."), now)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("IP rule edits are diffed");
        let text = persist::edit_native(FILE, edits).expect("edited");
        assert_eq!(diffed, parsed(&text), "after {edits:?}");
    }

    #[test]
    fn added_and_removed_ip_rules_make_the_policy_the_edited_file_reads_as() {
        let net = |s: &str| s.parse::<IpNet>().expect("network");
        same_as_file(&[Edit::AddIpRule("198.51.100.0/25".into())]);
        same_as_file(&[Edit::AddIpRule("8.8.8.8".into())]);
        same_as_file(&[Edit::AddIpRule("2001:db8:1::/64".into())]);
        same_as_file(&[Edit::AddIpRuleWith {
            value: "100.1.2.3".into(),
            comment: Some("on call".into()),
            expires_at: Some("2099-01-31T00:00:00Z".into()),
        }]);
        same_as_file(&[Edit::RemoveIpRule(net("198.51.100.7/32"))]);
        same_as_file(&[Edit::RemoveIpRule(net("2001:db8::/48"))]);
        same_as_file(&[
            Edit::RemoveIpRule(net("192.0.2.9/32")),
            Edit::AddIpRule("192.0.2.9".into()),
            Edit::RemoveIpRule(net("203.0.113.0/24")),
        ]);
    }

    #[test]
    fn other_edits_are_not_diffed_and_an_invalid_rule_is_refused() {
        let served = parsed(FILE);
        let dir = std::path::Path::new(".");
        let update = [Edit::SetString("bypass", "AzureServices".into())];
        let now = std::time::SystemTime::now();
        assert!(matches!(
            ip_rules_edited(&served, &update, dir, now),
            Ok(None)
        ));
        let bad = [Edit::AddIpRule("10.0.0.0/33".into())];
        assert!(matches!(
            ip_rules_edited(&served, &bad, dir, now),
            Err(EditRefused::Invalid(_))
        ));
    }

    /// A served rule whose expiry passed before the daemon removed it is
    /// left out of the edited policy, as a parse of the edited file at the
    /// same time leaves it out, and the change says it is removed.
    #[test]
    fn a_served_rule_past_its_expiry_is_left_out_as_the_parse_leaves_it_out() {
        let at = humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
        let file = "default_action = \"Deny\"\nip_rules = [\n    { value = \"192.0.2.9\", expires_at = \"2030-01-01T00:00:00Z\" },\n    \"203.0.113.0/24\",\n]\n";
        // Served while the rule was live.
        let served = policy::parse_toml_in(
            file,
            std::path::Path::new("."),
            at - std::time::Duration::from_secs(1),
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .policy;
        assert_eq!(served.ip_rules.len(), 2);
        let edits = [Edit::AddIpRule("198.51.100.7".into())];
        // The change comes the instant the rule expires.
        let (diffed, change) = ip_rules_edited(&served, &edits, std::path::Path::new("."), at)
            .unwrap_or_else(|e| panic!("{e}"))
            .expect("IP rule edits are diffed");
        let text = persist::edit_native(file, &edits).expect("edited");
        let parsed = policy::parse_toml_in(&text, std::path::Path::new("."), at)
            .unwrap_or_else(|e| panic!("{e}"))
            .policy;
        assert_eq!(diffed, parsed);
        assert_eq!(
            change.removed,
            ["192.0.2.9/32".parse::<ipnet::Ipv4Net>().unwrap()]
        );
        assert_eq!(
            change.added,
            ["198.51.100.7/32".parse::<ipnet::Ipv4Net>().unwrap()]
        );
    }
}
