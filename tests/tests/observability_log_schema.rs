//! One log schema (docs/logging.md): every record a short agent session
//! writes — daemon log lines, access-log records and audit records, all on
//! stdout, the audit records also in `--audit-log` — is one JSON object
//! with the Elastic Common Schema fields its kind has, lists as arrays.
//! `--log-format text` writes lines for people; `--log-format journald`
//! without a reachable journal says so and writes JSON lines.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::assert_dropped;
use vaultfw_tests::{Agent, AgentOptions, DENIED_SRC, PolicyFile, TcpServer, Topology};

const POLICY: &str = r#"default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
"#;

const WAIT: Duration = Duration::from_secs(10);

/// The value at `path` (dotted) in `record`.
fn at<'a>(record: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(record, |v, part| &v[part])
}

/// Asserts that `record` has a non-null value at each of `paths`.
fn assert_has(record: &Value, paths: &[&str]) {
    for path in paths {
        assert!(!at(record, path).is_null(), "no {path} in {record}");
    }
}

/// Checks the fields every record has: `@timestamp` (RFC 3339 UTC),
/// `log.level`, `log.logger`, `message`; and no key of the old flat
/// schema at the top level.
fn assert_base(record: &Value) {
    let time = record["@timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("no @timestamp in {record}"));
    assert!(
        time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
        "@timestamp {time:?} is not RFC 3339 UTC: {record}"
    );
    let level = at(record, "log.level").as_str().unwrap_or_default();
    assert!(
        ["error", "warn", "info", "debug", "trace"].contains(&level),
        "log.level {level:?}: {record}"
    );
    assert_has(record, &["log.logger", "message"]);
    let allowed = [
        "@timestamp",
        "log",
        "message",
        "event",
        "source",
        "destination",
        "network",
        "observer",
        "rule",
        "user",
        "process",
        "error",
        "file",
        "vaultfw",
    ];
    for key in record.as_object().expect("an object").keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "top-level field {key:?} is neither ECS nor vaultfw.*: {record}"
        );
    }
}

/// Checks the values of a daemon line's own fields (`vaultfw.*`): no
/// string that is a list written as text (`"eth0(native,l2),eth1(...)"`,
/// `"[\"a\", \"b\"]"`): lists are arrays; and the names of states
/// (`reason`, `outcome`, `on_exit`, `cause` aside) lowercase, as `show`
/// prints them (`"all"`, `"adopted"`, `"keep"`), not Rust's `Debug`.
fn assert_daemon_values(record: &Value) {
    fn walk(path: &str, value: &Value, record: &Value) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    walk(&format!("{path}.{key}"), value, record);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(path, item, record);
                }
            }
            Value::String(text) => {
                let bracketed = (text.starts_with('[') && text.ends_with(']'))
                    || (text.starts_with('{') && text.ends_with('}'));
                // A comma not followed by a space: items run together.
                let run_together = text
                    .as_bytes()
                    .windows(2)
                    .any(|w| w[0] == b',' && w[1] != b' ');
                assert!(
                    !bracketed && !run_together,
                    "{path} = {text:?} is a list or object written as a string: {record}"
                );
                let key = path.rsplit('.').next().unwrap_or_default();
                if ["reason", "outcome", "on_exit", "lookup"].contains(&key) {
                    assert_eq!(
                        text,
                        &text.to_lowercase(),
                        "{path} is not the lowercase name show prints: {record}"
                    );
                }
            }
            _ => {}
        }
    }
    walk("vaultfw", &record["vaultfw"], record);
}

#[test]
fn every_record_of_a_session_is_json_with_the_ecs_fields_of_its_kind() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let dir = PolicyFile::named("unused", "");
    let audit = dir.path().with_file_name("audit.log");
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec!["--audit-log".into(), audit.display().to_string()];
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();

    // A denied attempt (access log), an applied and a refused change
    // (audit), counter lines, and a clean stop (daemon lines).
    let mark = agent.log_mark();
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "denied by the policy");
    agent
        .cli_json(&["network-rule", "add", "--ip-address", "198.51.100.7"])
        .expect_code(exit::OK);
    agent
        .cli_json(&["network-rule", "add", "--ip-address", "10.1.2.3"])
        .expect_code(exit::INVALID_INPUT);
    agent.wait_log(mark, "an access record", WAIT, |l| {
        l["event"]["dataset"] == "vaultfw.access"
    });
    let stats = agent.stop();

    let mut by_dataset = std::collections::BTreeMap::<String, usize>::new();
    let mut lines = 0;
    let (mut filtering, mut attached) = (0, 0);
    for line in stats.stdout_lines() {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a stdout line is not JSON ({e}): {line}"));
        lines += 1;
        assert_base(&record);
        let dataset = at(&record, "event.dataset")
            .as_str()
            .unwrap_or("")
            .to_owned();
        match dataset.as_str() {
            "vaultfw.access" => {
                assert_has(
                    &record,
                    &[
                        "event.kind",
                        "event.category",
                        "event.type",
                        "event.action",
                        "event.outcome",
                        "event.sequence",
                        "source.ip",
                        "source.port",
                        "destination.ip",
                        "destination.port",
                        "network.transport",
                        "observer.ingress.interface.name",
                        "vaultfw.verdict",
                    ],
                );
                assert!(at(&record, "event.category").is_array(), "{record}");
                assert_eq!(at(&record, "source.ip"), DENIED_SRC.to_string().as_str());
            }
            "vaultfw.audit" => {
                assert_has(
                    &record,
                    &[
                        "event.kind",
                        "event.action",
                        "event.outcome",
                        "user.id",
                        "user.group.id",
                        "process.pid",
                        "process.name",
                        "vaultfw.caller",
                        "vaultfw.outcome",
                        "vaultfw.generation.before",
                        "vaultfw.generation.after",
                    ],
                );
                assert!(at(&record, "vaultfw.ip_rules.added").is_array(), "{record}");
                assert!(
                    at(&record, "vaultfw.ip_rules.removed").is_array(),
                    "{record}"
                );
            }
            "vaultfw.counters" => {
                assert_has(
                    &record,
                    &[
                        "event.kind",
                        "vaultfw.counters.totals.deny_no_match",
                        "vaultfw.counters.deltas.deny_no_match",
                        "vaultfw.interval_s",
                    ],
                );
                // The explanation of totals and deltas is in the docs, not
                // in every line.
                assert!(
                    line.len() < 1500,
                    "a counter line of {} bytes: {line}",
                    line.len()
                );
            }
            "" => {
                assert_daemon_values(&record);
                let vaultfw = &record["vaultfw"];
                if record["message"] == "filtering" {
                    let interfaces = vaultfw["interfaces"]
                        .as_array()
                        .unwrap_or_else(|| panic!("interfaces is not an array: {record}"));
                    assert_eq!(interfaces.len(), 1, "{record}");
                    assert_eq!(interfaces[0]["name"], topo.server_veth(), "{record}");
                    assert_has(&interfaces[0], &["mode", "entry"]);
                    assert_eq!(vaultfw["on_exit"], "detach", "{record}");
                    // The default `--lookup`.
                    assert_eq!(vaultfw["lookup"], "compiled", "{record}");
                    filtering += 1;
                }
                if record["message"] == "attached" {
                    assert_eq!(vaultfw["reason"], "iface", "{record}");
                    assert_eq!(vaultfw["outcome"], "attached", "{record}");
                    attached += 1;
                }
            }
            _ => {}
        }
        *by_dataset.entry(dataset).or_default() += 1;
    }
    assert!(lines > 5, "{}", stats.log());
    assert_eq!((filtering, attached), (1, 1), "{}", stats.log());
    for dataset in ["vaultfw.access", "vaultfw.audit", "vaultfw.counters", ""] {
        assert!(
            by_dataset.contains_key(dataset),
            "no record of dataset {dataset:?}: {by_dataset:?}\n{}",
            stats.log()
        );
    }
    assert_eq!(by_dataset["vaultfw.audit"], 2, "{by_dataset:?}");

    // The audit file holds the same records, each parsing alike.
    let file = std::fs::read_to_string(&audit).expect("the audit file");
    let records: Vec<Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(records.len(), 2, "{file}");
    for record in &records {
        assert_base(record);
        assert_eq!(at(record, "event.dataset"), "vaultfw.audit");
    }
}

/// The output of a start refused for an invalid policy, run with `args`
/// added.
fn refused_start(topo: &Topology, args: &[&str]) -> String {
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = args.iter().map(|a| (*a).to_owned()).collect();
    let mut agent = Agent::start_with(&topo.server, "default_action = \"Sometimes\"\n", options);
    let status = agent.wait_exit(WAIT);
    assert_eq!(
        status.code(),
        Some(exit::INVALID_INPUT),
        "{}",
        agent.output()
    );
    agent.output()
}

#[test]
fn text_format_is_for_people_and_journald_without_a_journal_falls_back_to_json() {
    let topo = Topology::new();
    let text = refused_start(&topo, &["--log-format", "text"]);
    let line = text
        .lines()
        .find(|l| l.contains("vaultfw run failed"))
        .unwrap_or_else(|| panic!("no failure line:\n{text}"));
    assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
    assert!(line.contains("ERROR"), "{line}");
    // Stdout is not a terminal here: no colour codes.
    assert!(
        !text.contains('\x1b'),
        "escape codes in text written to a pipe:\n{text:?}"
    );

    if Path::new("/run/systemd/journal/socket").exists() {
        println!(
            "skipping the journald fallback check: a journal listens on \
             /run/systemd/journal/socket here, so entries go there"
        );
        return;
    }
    let fallback = refused_start(&topo, &["--log-format", "journald"]);
    let records: Vec<Value> = fallback
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["message"] == "cannot reach the journal; logging JSON lines to stdout"),
        "{fallback}"
    );
    let failed = records
        .iter()
        .find(|r| r["message"] == "vaultfw run failed")
        .unwrap_or_else(|| panic!("{fallback}"));
    assert_eq!(failed["log"]["level"], "error", "{failed}");
    assert!(failed["error"]["message"].is_string(), "{failed}");
}
