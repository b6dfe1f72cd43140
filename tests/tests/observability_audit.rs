//! The audit trail end to end: every change request through the control
//! socket leaves exactly one audit record — in the daemon log and in the
//! `--audit-log` file — naming the caller by its peer credentials (uid,
//! gid, pid, command), the rules added, the generations and the outcome;
//! a refused request (a private address, a rule past the limit) is
//! recorded with its error. The daemon's own write-back of the policy file
//! is no reload (no record, `last_reload` untouched). The audit file is
//! created 0640, a link at its path refuses the start, and SIGHUP reopens
//! it after a rotation.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use vaultfw_tests::cli::exit;
use vaultfw_tests::{Agent, AgentOptions, PolicyFile, Topology};

const POLICY: &str = r#"default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
"#;

const WAIT: Duration = Duration::from_secs(10);

/// A temp directory for the audit file (kept alive by the returned guard).
fn audit_dir() -> (PolicyFile, PathBuf) {
    let guard = PolicyFile::named("unused", "");
    let dir = guard.path().parent().expect("a temp dir").to_owned();
    (guard, dir)
}

fn start(topo: &Topology, audit: &Path) -> Agent {
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec!["--audit-log".into(), audit.display().to_string()];
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

/// The records of `path` (one JSON object a line), waiting (bounded) for
/// at least `n`.
fn wait_records(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let records: Vec<Value> = text
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", path.display()))
            })
            .collect();
        if records.len() >= n || Instant::now() > deadline {
            assert!(
                records.len() >= n,
                "{} audit record(s) in {}, expected {n}: {records:#?}",
                records.len(),
                path.display()
            );
            return records;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The audit records of the daemon log.
fn logged_records(agent: &Agent) -> Vec<Value> {
    agent
        .log_lines()
        .into_iter()
        .filter(|l| l["event"]["dataset"] == "vaultfw.audit")
        .collect()
}

/// Checks the caller fields: the CLI runs as this test's user.
fn assert_caller_is_us(record: &Value) {
    let uid = nix::unistd::getuid().as_raw().to_string();
    let gid = nix::unistd::getgid().as_raw().to_string();
    assert_eq!(record["user"]["id"], Value::from(uid), "{record:#}");
    assert_eq!(
        record["user"]["group"]["id"],
        Value::from(gid),
        "{record:#}"
    );
    assert!(record["process"]["pid"].as_u64().is_some(), "{record:#}");
    assert_eq!(record["process"]["name"], "vaultfw", "{record:#}");
    assert_eq!(record["vaultfw"]["caller"], "socket", "{record:#}");
}

#[test]
fn an_applied_and_a_refused_cli_change_each_leave_one_record_with_the_caller_and_the_rule() {
    let topo = Topology::new();
    let (_dir, dir) = audit_dir();
    let audit = dir.join("audit.log");
    let agent = start(&topo, &audit);
    let before = agent.generation();

    let mark = agent.log_mark();
    agent
        .cli_json(&["network-rule", "add", "--ip-address", "198.51.100.7"])
        .expect_code(exit::OK);
    // The kernel serves it (read back from the maps).
    let list = agent.cli_json(&["network-rule", "list"]).ok();
    assert!(list.to_string().contains("198.51.100.7"), "{list:#}");
    // The daemon's own write of the policy file is seen by the watch, and
    // is no reload.
    agent.wait_message(
        mark,
        "the policy file holds what the daemon wrote; not a reload",
        WAIT,
    );

    let refused = agent.cli_json(&["network-rule", "add", "--ip-address", "10.1.2.3"]);
    refused.expect_code(exit::INVALID_INPUT);
    // The validator's field, value and fix reach the error document apart.
    let error = &refused.json()["error"];
    let fix = error["fix"].as_str().unwrap_or_default();
    assert!(error["field"].is_string(), "{}", refused.context());
    assert!(error["value"].is_string(), "{}", refused.context());
    assert!(!fix.is_empty(), "{}", refused.context());
    assert!(
        !error["message"].as_str().unwrap_or_default().contains(fix),
        "the fix is said once: {}",
        refused.context()
    );

    let records = wait_records(&audit, 2);
    assert_eq!(records.len(), 2, "one record per request: {records:#?}");
    let applied = &records[0];
    assert_eq!(
        applied["event"]["action"], "network-rule-add",
        "{applied:#}"
    );
    assert_eq!(applied["event"]["outcome"], "success", "{applied:#}");
    assert_eq!(applied["vaultfw"]["outcome"], "applied", "{applied:#}");
    assert_caller_is_us(applied);
    assert_eq!(
        applied["vaultfw"]["ip_rules"]["added"],
        serde_json::json!(["198.51.100.7"]),
        "{applied:#}"
    );
    assert_eq!(
        applied["vaultfw"]["ip_rules"]["removed"],
        serde_json::json!([])
    );
    assert_eq!(applied["vaultfw"]["generation"]["before"], before);
    assert_eq!(applied["vaultfw"]["generation"]["after"], before + 1);
    assert_eq!(applied["vaultfw"]["default_action"]["before"], "Deny");
    assert_eq!(applied["vaultfw"]["default_action"]["after"], "Deny");
    assert_eq!(applied["log"]["level"], "info");
    assert!(
        applied["@timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let refused = &records[1];
    assert_eq!(
        refused["event"]["action"], "network-rule-add",
        "{refused:#}"
    );
    assert_eq!(refused["event"]["outcome"], "failure", "{refused:#}");
    assert_eq!(refused["vaultfw"]["outcome"], "refused", "{refused:#}");
    assert_caller_is_us(refused);
    assert_eq!(refused["vaultfw"]["request"]["rule"]["address"], "10.1.2.3");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("10.1.2.3")),
        "{refused:#}"
    );
    assert_eq!(
        refused["vaultfw"]["ip_rules"]["added"],
        serde_json::json!([])
    );
    assert_eq!(refused["vaultfw"]["generation"]["after"], before + 1);
    assert_eq!(refused["log"]["level"], "warn");

    // The same two records in the daemon log, once the harness has read
    // the refused one from the daemon's output (it reads it as it comes).
    agent.wait_log(mark, "the refused change's audit record", WAIT, |l| {
        l["event"]["dataset"] == "vaultfw.audit" && l["vaultfw"]["outcome"] == "refused"
    });
    let logged = logged_records(&agent);
    assert_eq!(logged.len(), 2, "{logged:#?}");
    for (file, log) in records.iter().zip(&logged) {
        assert_eq!(file["vaultfw"], log["vaultfw"]);
        assert_eq!(file["user"], log["user"]);
    }
    // No reload happened: the write-back is not one.
    let show = agent.show();
    assert!(show["health"]["last_reload"].is_null(), "{show:#}");
}

#[test]
fn a_stale_generation_is_recorded_as_a_conflict() {
    let topo = Topology::new();
    let (_dir, dir) = audit_dir();
    let audit = dir.join("audit.log");
    let agent = start(&topo, &audit);
    let stale = (agent.generation() + 7).to_string();
    agent
        .cli_json(&[
            "update",
            "--default-action",
            "Allow",
            "--if-generation",
            &stale,
        ])
        .expect_code(exit::CONFLICT);
    let records = wait_records(&audit, 1);
    let record = &records[0];
    assert_eq!(record["event"]["action"], "update", "{record:#}");
    assert_eq!(record["vaultfw"]["outcome"], "conflict", "{record:#}");
    assert_eq!(record["vaultfw"]["request"]["default_action"], "Allow");
    assert_eq!(record["vaultfw"]["default_action"]["after"], "Deny");
    assert_caller_is_us(record);
}

#[test]
fn an_unusable_audit_or_access_log_path_refuses_the_start_as_invalid_input() {
    let topo = Topology::new();
    let (_dir, dir) = audit_dir();
    let victim = dir.join("victim");
    std::fs::write(&victim, "untouched\n").expect("writing the victim");
    let link = dir.join("linked.log");
    symlink(&victim, &link).expect("planting a link");
    let unusable = [
        link.clone(),                          // a link
        dir.clone(),                           // a directory
        dir.join("no-such-dir").join("x.log"), // a missing parent
        victim.join("x.log"),                  // a parent that is a file
    ];
    for flag in ["--audit-log", "--access-log"] {
        for path in &unusable {
            let mut options = AgentOptions::iface(topo.server_veth());
            options.extra_args = vec![flag.into(), path.display().to_string()];
            let mut refused = Agent::start_with(&topo.server, POLICY, options);
            let status = refused.wait_exit(WAIT);
            assert_eq!(
                status.code(),
                Some(exit::INVALID_INPUT),
                "{flag} {}:\n{}",
                path.display(),
                refused.output()
            );
            assert!(
                refused.output().contains(flag),
                "the refusal names {flag}:\n{}",
                refused.output()
            );
        }
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
}

#[test]
fn the_audit_file_is_0640_reopened_after_sighup_and_a_link_at_its_path_refuses_the_start() {
    let topo = Topology::new();
    let (_dir, dir) = audit_dir();

    // A link at the path: the start is refused, naming the path and the fix.
    let victim = dir.join("victim");
    std::fs::write(&victim, "untouched\n").expect("writing the victim");
    let link = dir.join("linked.log");
    symlink(&victim, &link).expect("planting a link");
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec!["--audit-log".into(), link.display().to_string()];
    let mut refused = Agent::start_with(&topo.server, POLICY, options);
    let status = refused.wait_exit(WAIT);
    assert!(
        !status.success(),
        "a linked audit log was accepted:\n{}",
        refused.output()
    );
    let output = refused.output();
    assert!(
        output.contains(&format!(
            "--audit-log {} is a symbolic link",
            link.display()
        )) && output.contains("give --audit-log the path of the real file"),
        "{output}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
    drop(refused);

    let audit = dir.join("audit.log");
    let agent = start(&topo, &audit);
    let mode = std::fs::metadata(&audit)
        .expect("created at start")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640, "created {:o}", mode & 0o7777);
    agent
        .cli_json(&["network-rule", "add", "--ip-address", "198.51.100.7"])
        .expect_code(exit::OK);
    wait_records(&audit, 1);

    // logrotate: moved away, SIGHUP; the next records go to a new file.
    let rotated = dir.join("audit.log.1");
    std::fs::rename(&audit, &rotated).expect("rotating");
    let mark = agent.log_mark();
    agent.signal(Signal::SIGHUP);
    agent.wait_message(mark, "audit log reopened", WAIT);
    agent
        .cli_json(&["network-rule", "remove", "--ip-address", "198.51.100.7"])
        .expect_code(exit::OK);
    let old = wait_records(&rotated, 1);
    assert_eq!(old.len(), 1, "{old:#?}");
    assert_eq!(old[0]["event"]["action"], "network-rule-add");
    // The SIGHUP's reload (the file is unchanged), then the removal.
    let new = wait_records(&audit, 2);
    assert_eq!(new.len(), 2, "{new:#?}");
    assert_eq!(new[0]["event"]["action"], "reload", "{:#}", new[0]);
    assert_eq!(new[0]["vaultfw"]["caller"], "file");
    assert_eq!(new[0]["event"]["reason"], "SIGHUP");
    assert_eq!(new[0]["vaultfw"]["outcome"], "unchanged");
    assert_eq!(new[1]["event"]["action"], "network-rule-remove");
    assert_eq!(
        new[1]["vaultfw"]["ip_rules"]["removed"],
        serde_json::json!(["198.51.100.7"])
    );
    let mode = std::fs::metadata(&audit)
        .expect("reopened")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);
}
