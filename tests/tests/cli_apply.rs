//! `vaultfw apply FILE [--confirm-within D]` and `vaultfw confirm` through
//! the real socket: an unconfirmed apply
//! rolls back by itself at its deadline — the rule it added stops working
//! and the policy file never held it; a confirmed one stays past its
//! deadline and the policy file now holds it; other changes wait (exit 5)
//! while an apply awaits confirmation; applying the same policy twice
//! writes nothing the second time; an invalid file is refused (exit 2).

use std::time::{Duration, Instant, SystemTime};

use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, DEADLINE_LEAD, DENIED_SRC, PolicyFile, TcpServer, Topology,
    confirm_within_lead,
};

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

/// The policy plus a rule for 198.51.100.7.
const NEW_POLICY: &str = r#"
# new: the build agent too
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24", "198.51.100.7"]

[data_plane]
tcp_ports = [443]
"#;

/// How far past a deadline the rollback may come (the daemon's timer, a
/// busy machine).
const ROLLBACK_SLACK: Duration = Duration::from_secs(10);

fn serving(topo: &Topology) -> Agent {
    let mut agent = Agent::start(&topo.server, topo.server_veth(), POLICY);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

fn policy_text(agent: &Agent) -> String {
    std::fs::read_to_string(agent.policy().path()).expect("reading the policy file")
}

/// The `awaiting_confirmation_until` of an answer, as a time.
fn deadline_of(doc: &serde_json::Value) -> SystemTime {
    let text = doc["awaiting_confirmation_until"]
        .as_str()
        .unwrap_or_else(|| panic!("no awaiting_confirmation_until: {doc:#}"));
    parse_rfc3339_seconds(text).unwrap_or_else(|| panic!("not an RFC 3339 UTC time: {text:?}"))
}

/// `YYYY-MM-DDTHH:MM:SSZ` → time (what the daemon prints).
fn parse_rfc3339_seconds(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3_600 + mm * 60 + ss;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[test]
fn an_unconfirmed_apply_rolls_back_at_its_deadline() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo);
    let generation = agent.generation();
    let file_before = policy_text(&agent);
    let new = PolicyFile::named("new.toml", NEW_POLICY);

    let mark = agent.log_mark();
    let out = agent.cli_json(&[
        "apply",
        new.path_str(),
        "--confirm-within",
        &confirm_within_lead(),
    ]);
    let doc = out.ok();
    assert_eq!(doc["generation"], generation + 1, "{}", out.context());
    let deadline = deadline_of(&doc);
    assert_connects(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "the applied rule, before the deadline",
    );
    let show = agent.show();
    assert!(show["awaiting_confirmation_until"].is_string(), "{show:#}");
    assert_eq!(
        policy_text(&agent),
        file_before,
        "the file changed before confirmation"
    );

    agent.wait_log(mark, "the rollback", ROLLBACK_SLACK + DEADLINE_LEAD, |l| {
        l["message"] == "unconfirmed apply rolled back"
            && l["vaultfw"]["cause"] == "rollback of an unconfirmed apply"
    });
    assert!(
        SystemTime::now() >= deadline,
        "rolled back before its deadline"
    );
    assert_dropped(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "the applied rule after the rollback",
    );
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "after the rollback");
    let show = agent.show();
    assert!(show["awaiting_confirmation_until"].is_null(), "{show:#}");
    assert_eq!(show["ip_rules"], 1, "{show:#}");
    assert_eq!(
        policy_text(&agent),
        file_before,
        "the rollback left the file changed"
    );
    // The apply was rolled back: a confirm now is refused (exit 2), not
    // taken for "nothing pending".
    let out = agent.cli_json(&["confirm"]);
    out.expect_code(exit::INVALID_INPUT);
    assert!(
        out.error_message().contains("was rolled back at"),
        "{}",
        out.context()
    );
    agent.stop();
}

#[test]
fn a_confirmed_apply_stays_past_its_deadline_and_is_written_to_the_policy_file() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo);
    let new = PolicyFile::named("new.toml", NEW_POLICY);

    let doc = agent
        .cli_json(&[
            "apply",
            new.path_str(),
            "--confirm-within",
            &confirm_within_lead(),
        ])
        .ok();
    let generation = doc["generation"].as_u64().expect("a generation");
    let deadline = deadline_of(&doc);
    let out = agent.cli_json(&["confirm"]);
    let confirmed = out.ok();
    assert_eq!(confirmed["generation"], generation, "{}", out.context());
    assert_eq!(
        policy_text(&agent),
        NEW_POLICY,
        "the policy file does not hold the applied policy"
    );

    // Past the deadline (wall clock, the daemon's own timer plus slack),
    // nothing moves back.
    let until = Instant::now()
        + deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default()
        + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(
            agent.generation(),
            generation,
            "the confirmed apply was rolled back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !agent
            .log_lines()
            .iter()
            .any(|l| l["vaultfw"]["cause"] == "rollback of an unconfirmed apply"),
        "a confirmed apply rolled back:\n{}",
        agent.output()
    );
    assert_connects(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "the confirmed rule after the deadline",
    );
    let show = agent.show();
    assert!(show["awaiting_confirmation_until"].is_null(), "{show:#}");
    assert_eq!(show["ip_rules"], 2, "{show:#}");
    agent.stop();
}

#[test]
fn changes_wait_with_exit_5_while_an_apply_awaits_confirmation() {
    let topo = Topology::new();
    let agent = serving(&topo);
    let new = PolicyFile::named("new.toml", NEW_POLICY);
    let doc = agent
        .cli_json(&["apply", new.path_str(), "--confirm-within", "60s"])
        .ok();
    let generation = doc["generation"].as_u64().expect("a generation");
    for args in [
        vec!["network-rule", "add", "--ip-address", "198.51.100.20"],
        vec!["update", "--bypass", "AzureServices"],
        vec!["apply", new.path_str()],
    ] {
        let out = agent.cli_json(&args);
        out.expect_code(exit::CONFLICT);
        assert!(out.error_message().contains("confirm"), "{}", out.context());
    }
    assert_eq!(agent.generation(), generation);
    agent.cli_json(&["confirm"]).ok();
    agent
        .cli_json(&["network-rule", "add", "--ip-address", "198.51.100.20"])
        .ok();
    agent.stop();
}

#[test]
fn applying_the_same_policy_twice_writes_nothing_the_second_time() {
    let topo = Topology::new();
    let agent = serving(&topo);
    let new = PolicyFile::named("new.toml", NEW_POLICY);
    let first = agent.cli_json(&["apply", new.path_str()]).ok();
    assert_eq!(first["changed"], true, "{first:#}");
    let out = agent.cli_json(&["apply", new.path_str()]);
    let second = out.ok();
    assert_eq!(second["changed"], false, "{}", out.context());
    assert_eq!(second["map_writes"], 0, "{}", out.context());
    assert_eq!(
        second["generation"],
        first["generation"],
        "{}",
        out.context()
    );
    assert_eq!(agent.generation(), first["generation"].as_u64().unwrap());
    agent.stop();
}

#[test]
fn applying_an_invalid_file_is_refused_with_exit_2_and_changes_nothing() {
    let topo = Topology::new();
    let agent = serving(&topo);
    let generation = agent.generation();
    let file_before = policy_text(&agent);
    let bad = PolicyFile::named(
        "bad.toml",
        "default_action = \"Deny\"\nip_rules = [\"198.51.100.7\", \"192.168.1.0/24\"]\n",
    );
    let out = agent.cli_json(&["apply", bad.path_str(), "--confirm-within", "30s"]);
    out.expect_code(exit::INVALID_INPUT);
    // The error names the field, the value and the fix apart.
    let doc = out.json();
    let error = &doc["error"];
    assert_eq!(error["code"], "invalid_input", "{}", out.context());
    assert_eq!(error["field"], "ip_rules[1]", "{}", out.context());
    assert_eq!(error["value"], "192.168.1.0/24", "{}", out.context());
    assert!(
        error["fix"].as_str().is_some_and(|f| !f.is_empty()),
        "{}",
        out.context()
    );
    let missing = agent.cli_json(&["apply", "/nonexistent/policy.toml"]);
    missing.expect_code(exit::INVALID_INPUT);
    assert_eq!(
        missing.json()["error"]["field"],
        "file",
        "{}",
        missing.context()
    );
    assert_eq!(agent.generation(), generation);
    assert!(agent.show()["awaiting_confirmation_until"].is_null());
    assert_eq!(policy_text(&agent), file_before);
    agent.stop();
}
