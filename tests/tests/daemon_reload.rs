//! The policy file is watched: a bad edit —
//! a TOML syntax error, or a file whose valid half would open the host — is
//! refused with its errors logged, and the running policy keeps filtering
//! unchanged, also when SIGHUP asks for a reload; a valid edit is picked up
//! without SIGHUP and its new rule takes effect.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{ALLOWED_SRC, Agent, DENIED_SRC, LogMark, TcpServer, Topology};

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

/// The same policy plus a rule for 198.51.100.7.
const POLICY_WITH_DENIED_SRC: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24", "198.51.100.7"]

[data_plane]
tcp_ports = [443]
"#;

/// Would admit 198.51.100.7 — if any of it were applied.
const INVALID_PRIVATE_RULE: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["198.51.100.7", "10.0.0.0/8"]

[data_plane]
tcp_ports = [443]
"#;

/// Unclosed array.
const INVALID_TOML: &str = "default_action = \"Deny\"\nip_rules = [\"203.0.113.0/24\"\n";

const REFUSED: &str = "policy reload refused; the running policy stays";
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

fn serving(topo: &Topology) -> Agent {
    let mut agent = Agent::start(&topo.server, topo.server_veth(), POLICY);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

/// Saves `contents` the way editors do: a temporary file in the same
/// directory, renamed over the policy.
fn save_like_an_editor(path: &Path, contents: &str) {
    let temp = path.with_file_name(".policy.toml.swp");
    std::fs::write(&temp, contents).expect("writing the temporary file");
    std::fs::rename(&temp, path).expect("renaming it over the policy");
}

fn wait_refused(agent: &Agent, mark: LogMark, cause: &str) -> Value {
    let line = agent.wait_log(
        mark,
        &format!("{REFUSED:?} (cause {cause})"),
        LOG_TIMEOUT,
        |l| l["message"] == REFUSED && l["vaultfw"]["cause"] == cause,
    );
    assert_eq!(
        line["log"]["level"], "error",
        "a refused reload is an error: {line}"
    );
    line
}

fn assert_old_policy_in_force(topo: &Topology, agent: &Agent, generation: u64, why: &str) {
    assert_connects(topo, agent, ALLOWED_SRC, 443, why);
    assert_dropped(topo, agent, DENIED_SRC, 443, why);
    let show = agent.show();
    assert_eq!(show["generation"], generation, "{why}: {show:#}");
    assert_eq!(show["ip_rules"], 1, "{why}: {show:#}");
}

#[test]
fn invalid_policy_edits_are_refused_and_the_running_policy_stays() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo);
    let generation = agent.generation();

    let mark = agent.log_mark();
    agent.policy().write(INVALID_TOML);
    let refused = wait_refused(&agent, mark, "policy file changed");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "the refusal does not say why: {refused}"
    );
    assert_old_policy_in_force(&topo, &agent, generation, "after a TOML syntax error");

    let mark = agent.log_mark();
    save_like_an_editor(agent.policy().path(), INVALID_PRIVATE_RULE);
    let refused = wait_refused(&agent, mark, "policy file changed");
    let error = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        error.contains("10.0.0.0/8") && error.contains("ip_rules[1]"),
        "the refusal names neither the value nor its path: {refused}"
    );
    // Nothing of it was applied: its valid rule does not admit 198.51.100.7.
    assert_old_policy_in_force(&topo, &agent, generation, "after a private-range rule");

    let mark = agent.log_mark();
    agent.signal(Signal::SIGHUP);
    wait_refused(&agent, mark, "SIGHUP");
    assert_old_policy_in_force(&topo, &agent, generation, "after SIGHUP with the bad file");

    agent.stop();
}

#[test]
fn valid_policy_edit_is_applied_without_sighup() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo);
    let generation = agent.generation();
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "before the edit");

    let mark = agent.log_mark();
    save_like_an_editor(agent.policy().path(), POLICY_WITH_DENIED_SRC);
    let applied = agent.wait_log(mark, "the edit applied", LOG_TIMEOUT, |l| {
        l["message"] == "policy applied" && l["vaultfw"]["cause"] == "policy file changed"
    });
    assert_eq!(
        applied["vaultfw"]["generation"],
        generation + 1,
        "{applied}"
    );
    assert_connects(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "its rule was added by the edit",
    );
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "after the edit");
    let show = agent.show();
    assert_eq!(show["generation"], generation + 1, "{show:#}");
    assert_eq!(show["ip_rules"], 2, "{show:#}");

    // Written in place (truncate, then write), the way `cat > file` does.
    let mark = agent.log_mark();
    agent.policy().write(POLICY);
    agent.wait_log(mark, "the in-place edit applied", LOG_TIMEOUT, |l| {
        l["message"] == "policy applied" && l["vaultfw"]["cause"] == "policy file changed"
    });
    assert_dropped(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "its rule was removed by the edit",
    );
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "after the second edit");

    agent.stop();
}

/// An edit that leaves the tables as they were (a comment) keeps the
/// generation; putting the file back to what a CLI change wrote is then a
/// change of the declared policy like any other. It is reloaded, and the
/// next CLI change edits what the file declares — never the policy the
/// edit had made.
#[test]
fn an_edit_reverted_to_the_daemons_own_write_is_reloaded_and_the_next_change_edits_the_file() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo);
    let added = agent.cli_json(&[
        "network-rule",
        "add",
        "--ip-address",
        "198.51.100.9",
        "--comment",
        "AAAA",
    ]);
    added.ok();
    let own_write = std::fs::read_to_string(agent.policy().path()).expect("the policy file");
    assert!(own_write.contains("AAAA"), "{own_write}");

    // The tables come out the same: the reload serves the file's policy
    // under the same generation.
    let applied = |mark: LogMark, what: &str| {
        agent.wait_log(mark, what, LOG_TIMEOUT, |l| {
            l["message"] == "policy unchanged; nothing written"
                && l["vaultfw"]["cause"] == "policy file changed"
        })
    };
    let mark = agent.log_mark();
    save_like_an_editor(agent.policy().path(), &own_write.replace("AAAA", "BBBB"));
    applied(mark, "the comment edit reloaded");
    let mark = agent.log_mark();
    save_like_an_editor(agent.policy().path(), &own_write);
    applied(mark, "the revert to the daemon's own write reloaded");
    let comment_listed = || {
        let list = agent.cli_json(&["network-rule", "list"]).ok();
        list["ip_rules"]
            .as_array()
            .and_then(|rules| rules.iter().find(|r| r["rule"] == "198.51.100.9"))
            .map(|r| r["comment"].clone())
            .unwrap_or_else(|| panic!("198.51.100.9 is listed: {list:#}"))
    };
    assert_eq!(comment_listed(), "AAAA", "the served policy is the file's");

    let added = agent.cli_json(&[
        "network-rule",
        "add",
        "--ip-address",
        &DENIED_SRC.to_string(),
    ]);
    assert_eq!(added.ok()["changed"], true, "{}", added.context());
    assert_connects(&topo, &agent, DENIED_SRC, 443, "the rule the CLI added");
    let file = std::fs::read_to_string(agent.policy().path()).expect("the policy file");
    assert!(
        file.contains("AAAA") && !file.contains("BBBB") && file.contains(&DENIED_SRC.to_string()),
        "the file holds the declared policy plus the new rule:\n{file}"
    );
    assert_eq!(comment_listed(), "AAAA", "after the next change");
    assert_eq!(agent.show()["health"]["policy"]["state"], "in_sync");
    agent.stop();
}
