//! `vaultfw network-rule add|remove|list` through the real control socket,
//! JSON output parsed and checked: an
//! address and its /32 are one rule; adding a present rule is an idempotent
//! no-op; removing a /32 removes the bare rule and its SYNs are then
//! dropped; removing what was never added, adding past the limit and
//! invalid input are refused with exit 2 and change nothing (generation,
//! kernel rules, policy file); a stale `--if-generation` is a conflict
//! (exit 5); concurrent calls are serialized and each gets an answer.

use std::net::Ipv4Addr;

use serde_json::Value;
use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{Agent, DENIED_SRC, TcpServer, Topology};

const SINGLE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

fn policy(ip_rules: &[&str]) -> String {
    let quoted: Vec<String> = ip_rules.iter().map(|r| format!("{r:?}")).collect();
    format!(
        "default_action = \"Deny\"\nbypass = \"None\"\nip_rules = [{}]\n\n[data_plane]\ntcp_ports = [443]\n",
        quoted.join(", ")
    )
}

fn serving(topo: &Topology, policy: &str) -> Agent {
    let mut agent = Agent::start(&topo.server, topo.server_veth(), policy);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

/// The IP rules `network-rule list` reports, as shown.
fn listed(agent: &Agent) -> Vec<String> {
    let list = agent.cli_json(&["network-rule", "list"]).ok();
    list["ip_rules"]
        .as_array()
        .unwrap_or_else(|| panic!("list has no ip_rules array: {list:#}"))
        .iter()
        .map(|r| {
            r["rule"]
                .as_str()
                .unwrap_or_else(|| panic!("a listed rule without \"rule\": {r}"))
                .to_owned()
        })
        .collect()
}

/// What must not move when a request is refused.
struct Unchanged {
    generation: u64,
    rules: Vec<String>,
    file: String,
}

impl Unchanged {
    fn capture(agent: &Agent) -> Self {
        Unchanged {
            generation: agent.generation(),
            rules: listed(agent),
            file: std::fs::read_to_string(agent.policy().path()).expect("reading the policy"),
        }
    }

    fn assert_same(&self, agent: &Agent, why: &str) {
        assert_eq!(
            agent.generation(),
            self.generation,
            "{why}: the generation moved"
        );
        assert_eq!(
            listed(agent),
            self.rules,
            "{why}: the kernel's rules changed"
        );
        let file = std::fs::read_to_string(agent.policy().path()).expect("reading the policy");
        assert_eq!(file, self.file, "{why}: the policy file changed");
    }
}

#[test]
fn an_address_and_its_slash32_in_one_policy_are_listed_as_one_rule() {
    let topo = Topology::new();
    let agent = serving(&topo, &policy(&["203.0.113.10", "203.0.113.10/32"]));
    assert_eq!(listed(&agent), ["203.0.113.10"]);
    assert_eq!(agent.show()["ip_rules"], 1);
    // One warning names both spellings.
    let warnings: Vec<Value> = agent
        .log_lines()
        .into_iter()
        .filter(|l| {
            l["log"]["level"] == "warn"
                && l["message"].as_str().is_some_and(|m| {
                    m.contains("\"203.0.113.10/32\"") && m.contains("\"203.0.113.10\"")
                })
        })
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning naming both spellings:\n{}",
        agent.output()
    );
    agent.stop();
}

#[test]
fn adding_the_slash32_of_a_present_address_says_already_present_and_changes_nothing() {
    let topo = Topology::new();
    let agent = serving(&topo, &policy(&["203.0.113.0/24", "203.0.113.10"]));
    let before = Unchanged::capture(&agent);

    let out = agent.cli_json(&["network-rule", "add", "--ip-address", "203.0.113.10/32"]);
    let doc = out.ok();
    assert_eq!(doc["changed"], false, "{}", out.context());
    assert!(
        doc["message"]
            .as_str()
            .is_some_and(|m| m.contains("already present")),
        "{}",
        out.context()
    );
    assert_eq!(doc["generation"], before.generation, "{}", out.context());
    assert!(
        doc["map_writes"].as_u64().unwrap_or(0) == 0,
        "{}",
        out.context()
    );
    before.assert_same(&agent, "an idempotent add");
    agent.stop();
}

#[test]
fn an_added_rule_that_overlaps_held_rules_is_added_with_a_note_naming_them() {
    let topo = Topology::with_client_addrs(&[SINGLE]);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo, &policy(&["203.0.113.0/25", "198.51.100.7"]));

    let out = agent.cli_json(&["network-rule", "add", "--ip-address", "203.0.113.10"]);
    let doc = out.ok();
    assert_eq!(doc["changed"], true, "{}", out.context());
    assert_eq!(
        doc["notes"][0].as_str().unwrap_or_default(),
        "203.0.113.10 lies inside the IP rule 203.0.113.0/25: the wider rule already admits it \
         (overlaps are allowed; the longest prefix matches and counts the hit)",
        "{}",
        out.context()
    );
    assert_connects(&topo, &agent, SINGLE, 443, "inside both rules");
    // The human view prints the notes under their key.
    let human = agent.cli(&["network-rule", "add", "--ip-address", "198.51.100.0/24"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success(), "{text}");
    assert!(
        text.contains("notes:")
            && text.contains("198.51.100.0/24 contains 1 IP rule (198.51.100.7)"),
        "{text}"
    );
    // A rule with no overlap has no notes.
    let plain = agent.cli_json(&["network-rule", "add", "--ip-address", "192.0.2.1"]);
    assert!(plain.ok().get("notes").is_none(), "{}", plain.context());
    agent.stop();
}

#[test]
fn removing_the_slash32_of_a_bare_rule_removes_it_and_its_syn_is_then_dropped() {
    let topo = Topology::with_client_addrs(&[SINGLE]);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo, &policy(&["203.0.113.10", "198.51.100.0/25"]));
    assert_connects(&topo, &agent, SINGLE, 443, "before the remove");
    let generation = agent.generation();

    let out = agent.cli_json(&["network-rule", "remove", "--ip-address", "203.0.113.10/32"]);
    let doc = out.ok();
    assert_eq!(doc["changed"], true, "{}", out.context());
    assert_eq!(doc["generation"], generation + 1, "{}", out.context());
    assert_dropped(&topo, &agent, SINGLE, 443, "after removing its /32");
    assert_eq!(listed(&agent), ["198.51.100.0/25"]);
    let file = std::fs::read_to_string(agent.policy().path()).expect("reading the policy");
    assert!(
        !file.contains("203.0.113.10"),
        "the policy file still has the rule:\n{file}"
    );
    agent.stop();
}

#[test]
fn removing_a_never_added_overlapping_range_is_refused_and_changes_nothing() {
    let topo = Topology::new();
    let agent = serving(&topo, &policy(&["203.0.113.0/24", "203.0.113.64/26"]));
    let before = Unchanged::capture(&agent);

    let out = agent.cli_json(&["network-rule", "remove", "--ip-address", "203.0.113.0/25"]);
    out.expect_code(exit::INVALID_INPUT);
    let doc = out.json();
    assert_eq!(doc["ok"], false, "{}", out.context());
    assert!(
        out.error_message().contains("not found"),
        "{}",
        out.context()
    );
    before.assert_same(&agent, "removing 203.0.113.0/25");
    assert_eq!(before.rules, ["203.0.113.0/24", "203.0.113.64/26"]);
    agent.stop();
}

#[test]
fn adding_a_rule_at_the_limit_of_127_is_refused_and_changes_nothing() {
    let topo = Topology::new();
    let rules: Vec<String> = (1..=127).map(|i| format!("203.0.113.{i}")).collect();
    let refs: Vec<&str> = rules.iter().map(String::as_str).collect();
    let agent = serving(&topo, &policy(&refs));
    let before = Unchanged::capture(&agent);
    assert_eq!(before.rules.len(), 127);

    let out = agent.cli_json(&["network-rule", "add", "--ip-address", "198.51.100.200"]);
    assert_ne!(out.code, Some(exit::OK), "{}", out.context());
    assert_eq!(out.code, Some(exit::INVALID_INPUT), "{}", out.context());
    assert!(
        out.error_message()
            .contains("limit of 127 IP rules reached"),
        "{}",
        out.context()
    );
    before.assert_same(&agent, "an add past the limit");
    agent.stop();
}

#[test]
fn invalid_rule_input_exits_2_names_the_value_and_changes_nothing() {
    let topo = Topology::new();
    let agent = serving(&topo, &policy(&["203.0.113.0/24"]));
    let before = Unchanged::capture(&agent);
    // (input, what the message must contain: the value and the fix)
    let cases = [
        ("203.0.113.77/24", "203.0.113.0/24"),
        ("10.0.0.1", "virtual network"),
        ("203.0.113.10/31", "203.0.113.11"),
        ("0.0.0.0/0", "default_action"),
        ("fe80::1", "RFC 4291"),
        ("2001:db8::1::2", "not an IPv6 address"),
        ("not-an-address", "not-an-address"),
    ];
    for (input, fix) in cases {
        let out = agent.cli_json(&["network-rule", "add", "--ip-address", input]);
        out.expect_code(exit::INVALID_INPUT);
        // The value and the fix: in the message, or apart in `value`
        // and `fix`, each said once.
        let error = &out.json()["error"];
        let part = |key: &str| error[key].as_str().unwrap_or_default().to_owned();
        let said = format!("{} {} {}", part("message"), part("value"), part("fix"));
        assert!(
            said.contains(input),
            "the error does not show the value: {}",
            out.context()
        );
        assert!(
            said.to_lowercase().contains(&fix.to_lowercase()),
            "the error does not say {fix:?}: {}",
            out.context()
        );
        if !part("fix").is_empty() {
            assert!(
                !part("message").contains(&part("fix")),
                "the fix is said twice: {}",
                out.context()
            );
        }
    }
    // Flags the CLI itself refuses: invalid input too.
    let out = agent.cli_json(&["network-rule", "add"]);
    out.expect_code(exit::INVALID_INPUT);
    let out = agent.cli_json(&[
        "network-rule",
        "add",
        "--ip-address",
        "198.51.100.1",
        "--bogus",
    ]);
    out.expect_code(exit::INVALID_INPUT);
    before.assert_same(&agent, "invalid input");
    agent.stop();
}

#[test]
fn a_stale_if_generation_is_refused_with_exit_5_and_a_current_one_is_accepted() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo, &policy(&["203.0.113.0/24"]));
    let generation = agent.generation();
    let current = generation.to_string();
    let out = agent.cli_json(&[
        "network-rule",
        "add",
        "--ip-address",
        "198.51.100.20",
        "--if-generation",
        &current,
    ]);
    assert_eq!(out.ok()["generation"], generation + 1, "{}", out.context());

    // A second operator still holding the old generation.
    let before = Unchanged::capture(&agent);
    for args in [
        vec![
            "network-rule",
            "add",
            "--ip-address",
            "198.51.100.7",
            "--if-generation",
            &current,
        ],
        vec![
            "network-rule",
            "remove",
            "--ip-address",
            "198.51.100.20",
            "--if-generation",
            &current,
        ],
        vec![
            "update",
            "--default-action",
            "Allow",
            "--if-generation",
            &current,
        ],
    ] {
        let out = agent.cli_json(&args);
        out.expect_code(exit::CONFLICT);
        assert_eq!(out.json()["error"]["code"], "conflict", "{}", out.context());
        assert!(out.error_message().contains(&current), "{}", out.context());
    }
    before.assert_same(&agent, "stale --if-generation");
    assert_dropped(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "the refused add did not happen",
    );
    agent.stop();
}

#[test]
fn concurrent_rule_adds_are_serialized_and_each_gets_a_definite_answer() {
    const CALLERS: u8 = 8;
    let topo = Topology::new();
    let agent = serving(&topo, &policy(&["203.0.113.0/24"]));
    let generation = agent.generation();
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CALLERS)
            .map(|i| {
                let agent = &agent;
                scope.spawn(move || {
                    let address = format!("198.51.100.{}", 100 + i);
                    agent
                        .cli_json(&["network-rule", "add", "--ip-address", &address])
                        .ok()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a caller panicked"))
            .collect()
    });
    let mut generations: Vec<u64> = answers
        .iter()
        .map(|a| a["generation"].as_u64().unwrap_or_else(|| panic!("{a:#}")))
        .collect();
    generations.sort_unstable();
    let expected: Vec<u64> = (1..=u64::from(CALLERS)).map(|i| generation + i).collect();
    assert_eq!(
        generations, expected,
        "each add is its own generation: {answers:#?}"
    );
    let rules = listed(&agent);
    for i in 0..CALLERS {
        let address = format!("198.51.100.{}", 100 + i);
        assert!(rules.contains(&address), "{address} missing from {rules:?}");
    }
    let file = std::fs::read_to_string(agent.policy().path()).expect("reading the policy");
    for i in 0..CALLERS {
        let address = format!("198.51.100.{}", 100 + i);
        assert!(
            file.contains(&address),
            "{address} not written back:\n{file}"
        );
    }
    agent.stop();
}

#[test]
fn list_reads_rules_back_with_their_comments_and_expiry() {
    let topo = Topology::new();
    let agent = serving(
        &topo,
        r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24", { value = "198.51.100.7", comment = "build agent", expires_at = "2099-01-31T00:00:00Z" }]
"#,
    );
    let list = agent.cli_json(&["network-rule", "list"]).ok();
    let rules = list["ip_rules"].as_array().expect("an ip_rules array");
    assert_eq!(rules.len(), 2, "{list:#}");
    let build = rules
        .iter()
        .find(|r| r["rule"] == "198.51.100.7")
        .unwrap_or_else(|| panic!("198.51.100.7 not listed: {list:#}"));
    assert_eq!(build["comment"], "build agent", "{list:#}");
    assert!(
        build["expires_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2099-01-31")),
        "{list:#}"
    );
    assert_eq!(list["generation"], agent.generation(), "{list:#}");
    agent.stop();
}

/// The audit records of the daemon log with this `event.action`.
fn audit_records(agent: &Agent, action: &str) -> Vec<Value> {
    agent
        .log_lines()
        .into_iter()
        .filter(|l| l["event"]["dataset"] == "vaultfw.audit" && l["event"]["action"] == action)
        .collect()
}

#[test]
fn under_public_network_access_disabled_an_added_ip_rule_is_a_change_that_admits_nothing() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let disabled = format!(
        "public_network_access = \"Disabled\"\n{}",
        policy(&["203.0.113.0/24"])
    );
    let agent = serving(&topo, &disabled);
    let denied = DENIED_SRC.to_string();
    let out = agent.cli_json(&["network-rule", "add", "--ip-address", &denied]);
    let doc = out.ok();
    assert_eq!(
        doc["changed"],
        true,
        "the declared policy changed: {}",
        out.context()
    );
    let file = std::fs::read_to_string(agent.policy().path()).expect("reading the policy");
    assert!(file.contains(&denied), "the rule is in the file:\n{file}");
    let records = audit_records(&agent, "network-rule-add");
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["vaultfw"]["outcome"], "applied", "{records:#?}");
    // The kernel admits nothing by IP rule while public access is off.
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "an IP rule under Disabled");

    let out = agent.cli_json(&["network-rule", "remove", "--ip-address", &denied]);
    assert_eq!(out.ok()["changed"], true, "{}", out.context());
    let records = audit_records(&agent, "network-rule-remove");
    assert_eq!(records[0]["vaultfw"]["outcome"], "applied", "{records:#?}");

    // An apply that only changes IP rules is a change too.
    let applied = vaultfw_tests::PolicyFile::named(
        "applied.toml",
        &format!(
            "public_network_access = \"Disabled\"\n{}",
            policy(&["203.0.113.0/24", "192.0.2.0/24"])
        ),
    );
    let out = agent.cli_json(&["apply", applied.path_str()]);
    assert_eq!(out.ok()["changed"], true, "{}", out.context());
    let records = audit_records(&agent, "apply");
    assert_eq!(records[0]["vaultfw"]["outcome"], "applied", "{records:#?}");
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "after the apply");
}

#[test]
fn an_expires_at_in_the_past_is_refused_by_the_daemon_and_changes_nothing() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo, &policy(&["203.0.113.0/24"]));
    let denied = DENIED_SRC.to_string();
    let before = Unchanged::capture(&agent);
    let past = "2020-01-01T00:00:00Z";
    let out = agent.cli_json(&[
        "network-rule",
        "add",
        "--ip-address",
        &denied,
        "--expires-at",
        past,
    ]);
    out.expect_code(exit::INVALID_INPUT);
    // The error document's five parts: the flag, the value, why, the fix.
    let error = &out.json()["error"];
    assert_eq!(
        (&error["field"], &error["value"]),
        (&Value::from("--expires-at"), &Value::from(past)),
        "{error}"
    );
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("in the past"))
            && error["fix"].as_str().is_some_and(|f| f.contains("future")),
        "{error}"
    );
    before.assert_same(&agent, "an expiry in the past");
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "after the refused add");

    // Another client sends the protocol directly: the daemon refuses too.
    let mut stream = std::os::unix::net::UnixStream::connect(&agent.paths().socket)
        .expect("connecting to the control socket");
    let request = format!(
        "{{\"version\":1,\"command\":{{\"verb\":\"rule_add\",\"rule\":{{\"kind\":\"ip\",\
         \"address\":\"{denied}\",\"expires_at\":\"{past}\"}},\"if_generation\":null}}}}\n"
    );
    use std::io::{Read, Write};
    stream.write_all(request.as_bytes()).expect("sending");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("a read timeout");
    let mut answer = String::new();
    let mut buf = [0u8; 4096];
    while !answer.contains('\n') {
        let n = stream.read(&mut buf).expect("an answer");
        if n == 0 {
            break;
        }
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        answer.contains("invalid_input") && answer.contains("\"field\":\"--expires-at\""),
        "{answer}"
    );
    before.assert_same(&agent, "an expiry in the past, sent as the protocol");
}

#[test]
fn adding_a_network_the_file_holds_as_an_expired_entry_replaces_that_entry() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let denied = DENIED_SRC.to_string();
    let stale = format!(
        "default_action = \"Deny\"\nbypass = \"None\"\nip_rules = [\"203.0.113.0/24\", \
         {{ value = \"{denied}\", expires_at = \"2020-01-01T00:00:00Z\" }}]\n\n\
         [data_plane]\ntcp_ports = [443]\n"
    );
    let agent = serving(&topo, &stale);
    assert_dropped(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "an expired entry matches nothing",
    );
    let out = agent.cli_json(&["network-rule", "add", "--ip-address", &denied]);
    assert_eq!(out.ok()["changed"], true, "{}", out.context());
    let file = std::fs::read_to_string(agent.policy().path()).expect("reading the policy");
    assert_eq!(
        file.matches(denied.as_str()).count(),
        1,
        "one entry for the network, the expired one replaced:\n{file}"
    );
    assert!(!file.contains("2020-01-01"), "{file}");
    assert_connects(&topo, &agent, DENIED_SRC, 443, "the added rule");
    assert!(listed(&agent).contains(&denied), "{:?}", listed(&agent));
}
