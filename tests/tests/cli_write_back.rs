//! Accepted CLI changes are written back to the policy file (atomically,
//! comments kept where the format allows), so a restart serves the same
//! policy. TOML keeps a comment where the operator wrote it;
//! the write-back must too: an added rule does not take another rule's
//! comment, a removed rule takes only its own, and a changed setting keeps
//! the comment beside it.

use vaultfw_tests::{Agent, AgentOptions, Topology, vaultfw};

/// An operator's file: a header, a comment on a setting, one per rule, and
/// one before a table.
const COMMENTED: &str = r#"# production vault: only the office and the VPN reach the secrets
default_action = "Deny" # closed unless a rule says otherwise
bypass = "None"
ip_rules = [
    "203.0.113.0/24", # office
    "198.51.100.20", # vpn gateway
    "198.51.100.30", # build agent
]

# the data plane: HTTPS only
[data_plane]
tcp_ports = [443]
"#;

fn serving(topo: &Topology, policy: &str) -> Agent {
    let mut agent = Agent::start(&topo.server, topo.server_veth(), policy);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

fn policy_text(agent: &Agent) -> String {
    std::fs::read_to_string(agent.policy().path()).expect("reading the policy file")
}

/// Panics unless the line holding `comment` also holds `owner` (the rule
/// or setting it was written beside) and nothing it was not written beside.
fn assert_comment_on(text: &str, comment: &str, owner: &str, strangers: &[&str]) {
    let line = text
        .lines()
        .find(|l| l.contains(comment))
        .unwrap_or_else(|| panic!("comment {comment:?} was lost:\n{text}"));
    assert!(
        line.contains(owner),
        "comment {comment:?} moved away from {owner:?}: {line:?}\n{text}"
    );
    for stranger in strangers {
        assert!(
            !line.contains(stranger),
            "comment {comment:?} now sits beside {stranger:?}: {line:?}\n{text}"
        );
    }
}

fn assert_unrelated_comments_kept(text: &str) {
    for comment in [
        "# production vault: only the office and the VPN reach the secrets",
        "# the data plane: HTTPS only",
    ] {
        assert!(
            text.contains(comment),
            "comment {comment:?} was lost:\n{text}"
        );
    }
}

#[test]
fn an_added_rule_leaves_every_comment_on_its_own_rule() {
    let topo = Topology::new();
    let agent = serving(&topo, COMMENTED);
    agent
        .cli_json(&["network-rule", "add", "--ip-address", "198.51.100.40"])
        .ok();
    let text = policy_text(&agent);
    assert!(
        text.contains("\"198.51.100.40\""),
        "the rule was not written back:\n{text}"
    );
    assert_comment_on(&text, "# office", "\"203.0.113.0/24\"", &["198.51.100.40"]);
    assert_comment_on(
        &text,
        "# vpn gateway",
        "\"198.51.100.20\"",
        &["198.51.100.40"],
    );
    assert_comment_on(
        &text,
        "# build agent",
        "\"198.51.100.30\"",
        &["198.51.100.40"],
    );
    assert_comment_on(&text, "# closed unless", "default_action", &[]);
    assert_unrelated_comments_kept(&text);
    agent.stop();
}

/// Renewing a rule (a new comment or expiry) declares it again in its
/// place: it keeps its line, its comment and its neighbours, first
/// through a parse of the file and then through the file the daemon
/// keeps after a change.
#[test]
fn a_renewed_rule_stays_on_its_line_with_its_comment() {
    let topo = Topology::new();
    let agent = serving(&topo, COMMENTED);
    for expiry in ["8h", "9h"] {
        agent
            .cli_json(&[
                "network-rule",
                "add",
                "--ip-address",
                "198.51.100.20",
                "--expires-at",
                expiry,
            ])
            .ok();
        let text = policy_text(&agent);
        assert_comment_on(&text, "# vpn gateway", "expires_at", &[]);
        assert_comment_on(&text, "# vpn gateway", "198.51.100.20", &[]);
        let rules: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("203.0.113.0/24") || l.contains("198.51.100."))
            .collect();
        assert!(
            rules.len() == 3
                && rules[0].contains("# office")
                && rules[1].contains("198.51.100.20")
                && rules[2].contains("# build agent"),
            "the renewed rule moved (after --expires-at {expiry}):\n{text}"
        );
        assert_unrelated_comments_kept(&text);
    }
    agent.stop();
}

#[test]
fn a_removed_rule_takes_only_its_own_comment() {
    let topo = Topology::new();
    let agent = serving(&topo, COMMENTED);
    agent
        .cli_json(&["network-rule", "remove", "--ip-address", "198.51.100.20"])
        .ok();
    let text = policy_text(&agent);
    assert!(
        !text.contains("198.51.100.20"),
        "the rule is still in the file:\n{text}"
    );
    assert!(
        !text.contains("# vpn gateway"),
        "the removed rule's comment stayed behind:\n{text}"
    );
    assert_comment_on(&text, "# office", "\"203.0.113.0/24\"", &[]);
    assert_comment_on(&text, "# build agent", "\"198.51.100.30\"", &[]);
    assert_unrelated_comments_kept(&text);
    agent.stop();
}

#[test]
fn an_update_keeps_the_comment_beside_the_changed_setting() {
    let topo = Topology::new();
    let agent = serving(&topo, COMMENTED);
    agent
        .cli_json(&["update", "--default-action", "Allow"])
        .ok();
    let text = policy_text(&agent);
    assert!(
        text.contains("default_action = \"Allow\""),
        "not written back:\n{text}"
    );
    assert_comment_on(&text, "# closed unless", "default_action", &[]);
    assert_comment_on(&text, "# office", "\"203.0.113.0/24\"", &[]);
    assert_unrelated_comments_kept(&text);
    agent.stop();
}

#[test]
fn accepted_changes_are_written_back_and_a_restart_serves_the_same_policy() {
    let topo = Topology::new();
    let agent = serving(&topo, COMMENTED);
    agent
        .cli_json(&["network-rule", "add", "--ip-address", "198.51.100.40"])
        .ok();
    agent
        .cli_json(&["network-rule", "remove", "--ip-address", "198.51.100.20"])
        .ok();
    agent
        .cli_json(&["update", "--bypass", "AzureServices"])
        .ok();
    let rules = agent.cli_json(&["network-rule", "list"]).ok()["ip_rules"].clone();
    let show = agent.show();

    // The file is a valid policy on its own, with no temporary file beside it.
    let path = agent.policy().path().to_owned();
    let validated = vaultfw(&["validate", path.to_str().unwrap(), "--output", "json"]);
    assert!(
        validated.status.success(),
        "the written-back file is invalid: {}",
        String::from_utf8_lossy(&validated.stdout)
    );
    let dir = path.parent().unwrap();
    let leftovers: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // The agent detaches when it stops (harness default): the next one
    // starts from the written file alone, adopting nothing.
    let (_stats, policy, paths) = agent.stop_keeping();
    assert!(!paths.pin_dir.exists(), "the first agent left its pins");
    let mut restarted = Agent::spawn(
        &topo.server,
        policy,
        paths,
        AgentOptions::iface(topo.server_veth()),
    );
    restarted.wait_ready();
    restarted.wait_serving();
    let again = restarted.cli_json(&["network-rule", "list"]).ok()["ip_rules"].clone();
    assert_eq!(again, rules, "the restarted daemon serves other rules");
    let show_again = restarted.show();
    for key in ["default_action", "bypass", "ip_rules", "mode", "data_plane"] {
        assert_eq!(
            show_again[key], show[key],
            "{key} differs after the restart"
        );
    }
    restarted.stop();
}
