//! The one `--output json` contract (docs/output.md), parsed from the real
//! CLI: every verb's success is `{"ok":true,"verb":...}` with its
//! documented keys and types; every failure — the CLI's own, the daemon's
//! refusal, the validator's list — is the one error document whose
//! `exit_code` is the process's; `show` and `stats` have one schema whether
//! the daemon answers or only the pins are read; a second daemon on locked
//! pins exits 5; `confirm` with nothing pending exits 0.

use serde_json::Value;
use vaultfw_tests::agent::{LeftPins, run_in_netns};
use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, CliOutput, DENIED_SRC, PolicyFile, TcpServer, Topology,
    cli_in_netns, vaultfw,
};

use vaultfw_tests::OFFICE_POLICY as POLICY;

fn serving(topo: &Topology, on_exit: &'static str) -> Agent {
    let options = AgentOptions {
        on_exit,
        ..AgentOptions::iface(topo.server_veth())
    };
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Checks the success shape of `out` for `verb` (exit `code`) and returns
/// the document.
fn success(out: &CliOutput, verb: &str, code: i32) -> Value {
    out.expect_code(code);
    let doc = out.json();
    assert_eq!(doc["ok"], true, "{}", out.context());
    assert_eq!(doc["verb"], verb, "{}", out.context());
    // `ok` and `verb` come first, for people reading it.
    assert!(
        out.stdout
            .trim_start()
            .starts_with("{\n  \"ok\": true,\n  \"verb\""),
        "{}",
        out.context()
    );
    doc
}

/// Checks the one error document of `out`: every key, `error` the first of
/// `errors`, `exit_code` the process's and `code`'s. Returns it.
fn failure(out: &CliOutput, verb: &str, code: &str, exit_code: i32) -> Value {
    out.expect_code(exit_code);
    let doc = out.json();
    assert_eq!(
        keys(&doc),
        ["error", "errors", "exit_code", "ok", "verb"],
        "{}",
        out.context()
    );
    assert_eq!(doc["ok"], false, "{}", out.context());
    assert_eq!(doc["verb"], verb, "{}", out.context());
    assert_eq!(doc["exit_code"], exit_code, "{}", out.context());
    let errors = doc["errors"].as_array().expect("errors is an array");
    assert!(!errors.is_empty(), "{}", out.context());
    assert_eq!(errors[0], doc["error"], "{}", out.context());
    for error in errors {
        assert_eq!(
            keys(error),
            ["code", "field", "fix", "message", "value"],
            "{}",
            out.context()
        );
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            out.context()
        );
        for key in ["field", "fix"] {
            assert!(
                error[key].is_null() || error[key].is_string(),
                "{key}: {}",
                out.context()
            );
        }
    }
    assert_eq!(doc["error"]["code"], code, "{}", out.context());
    assert!(
        out.stdout
            .trim_start()
            .starts_with("{\n  \"ok\": false,\n  \"verb\""),
        "{}",
        out.context()
    );
    doc
}

/// `vaultfw ARGS` (no daemon involved).
fn run(args: &[&str]) -> CliOutput {
    CliOutput::new(
        args.iter().map(|a| (*a).to_owned()).collect(),
        vaultfw(args),
    )
}

#[test]
fn every_verb_answers_the_one_success_shape_and_the_one_error_shape() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo, "detach");

    let list = success(
        &agent.cli_json(&["network-rule", "list"]),
        "network-rule list",
        0,
    );
    assert!(
        list["generation"].is_u64() && list["ip_rules"].is_array(),
        "{list:#}"
    );

    let denied = DENIED_SRC.to_string();
    let added = agent.cli_json(&["network-rule", "add", "--ip-address", &denied]);
    let added = success(&added, "network-rule add", 0);
    assert_eq!(added["changed"], true, "{added:#}");
    assert!(
        added["generation"].is_u64() && added["message"].is_string(),
        "{added:#}"
    );
    assert_connects(&topo, &agent, DENIED_SRC, 443, "the added rule");

    let removed = agent.cli_json(&["network-rule", "remove", "--ip-address", &denied]);
    assert_eq!(success(&removed, "network-rule remove", 0)["changed"], true);

    let updated = agent.cli_json(&["update", "--bypass", "None"]);
    assert!(success(&updated, "update", 0)["changed"].is_boolean());

    // `confirm` with nothing pending: a success that says so (idempotent).
    let confirm = success(&agent.cli_json(&["confirm"]), "confirm", 0);
    assert_eq!(confirm["confirmed"], false, "{confirm:#}");
    assert!(confirm["generation"].is_u64(), "{confirm:#}");

    let applied = success(
        &agent.cli_json(&["apply", agent.policy().path_str()]),
        "apply",
        0,
    );
    assert!(applied["changed"].is_boolean(), "{applied:#}");

    let stats = success(&agent.cli_json(&["stats"]), "stats", 0);
    assert_eq!(stats["source"], "daemon", "{stats:#}");
    assert!(stats["counters"]["deny_no_match"].is_u64(), "{stats:#}");
    assert!(
        stats["rates"].is_null(),
        "a single sample has no rates: {stats:#}"
    );

    let show = success(&agent.cli_json(&["show"]), "show", 0);
    assert_eq!(show["source"], "daemon", "{show:#}");
    assert_eq!(show["daemon_running"], true, "{show:#}");
    assert_eq!(show["filtering"], true, "{show:#}");

    // The daemon's refusals: a rule that does not exist (2), a stale
    // generation (5).
    let missing = agent.cli_json(&["network-rule", "remove", "--ip-address", "192.0.2.99"]);
    failure(
        &missing,
        "network-rule remove",
        "invalid_input",
        exit::INVALID_INPUT,
    );
    let stale = agent.cli_json(&["update", "--bypass", "None", "--if-generation", "1"]);
    failure(&stale, "update", "conflict", exit::CONFLICT);

    // The CLI's own refusal names the field, the value and the fix.
    let bad = PolicyFile::named(
        "bad.toml",
        "default_action = \"Deny\"\nip_rules = [\"10.0.0.0/8\", \"not-an-address\"]\n",
    );
    let refused = agent.cli_json(&["apply", bad.path_str()]);
    let doc = failure(&refused, "apply", "invalid_input", exit::INVALID_INPUT);
    assert_eq!(doc["errors"].as_array().unwrap().len(), 2, "{doc:#}");
    for error in doc["errors"].as_array().unwrap() {
        assert!(
            error["field"]
                .as_str()
                .is_some_and(|f| f.starts_with("ip_rules[")),
            "{doc:#}"
        );
        assert!(
            error["value"].is_string() && error["fix"].is_string(),
            "{doc:#}"
        );
    }

    let detached = success(&agent.cli_json(&["detach"]), "detach", 0);
    assert_eq!(detached["detached"], true, "{detached:#}");
    let mut agent = agent;
    agent.wait_exit(std::time::Duration::from_secs(10));

    // No daemon: the same error document, code not_running (3).
    let gone = agent.cli_json(&["network-rule", "list"]);
    failure(&gone, "network-rule list", "not_running", exit::NOT_RUNNING);
}

#[test]
fn validate_export_and_check_use_the_same_shapes_without_a_daemon() {
    let good = PolicyFile::new(POLICY);
    let valid = success(
        &run(&["validate", good.path_str(), "--output", "json"]),
        "validate",
        0,
    );
    assert_eq!(valid["valid"], true, "{valid:#}");
    assert!(
        valid["policy"].is_object() && valid["warnings"].is_array(),
        "{valid:#}"
    );

    // Every invalid value is listed, each with its field, value and fix.
    let bad = PolicyFile::new(
        "default_action = \"Sometimes\"\nip_rules = [\"10.0.0.0/8\", \"not-an-address\"]\n",
    );
    let out = run(&["validate", bad.path_str(), "--output", "json"]);
    let doc = failure(&out, "validate", "invalid_input", exit::INVALID_INPUT);
    let errors = doc["errors"].as_array().unwrap();
    assert!(errors.len() >= 3, "{doc:#}");
    let fields: Vec<&str> = errors.iter().filter_map(|e| e["field"].as_str()).collect();
    assert!(fields.contains(&"default_action"), "{doc:#}");
    assert!(
        errors.iter().any(|e| e["value"] == "not-an-address"),
        "{doc:#}"
    );
    // For people: one `vaultfw: FIELD = VALUE: REASON; fix: FIX` line each.
    let table = run(&["validate", bad.path_str()]);
    table.expect_code(exit::INVALID_INPUT);
    assert!(
        table.stderr.lines().any(
            |l| l.starts_with("vaultfw: default_action = \"Sometimes\": ") && l.contains("; fix: ")
        ),
        "{}",
        table.context()
    );

    let export = run(&[
        "export",
        good.path_str(),
        "--format",
        "azure",
        "--output",
        "json",
    ]);
    let export = success(&export, "export", 0);
    assert_eq!(export["format"], "azure", "{export:#}");
    assert_eq!(
        export["document"]["properties"]["networkAcls"]["defaultAction"], "Deny",
        "{export:#}"
    );
    assert!(export["subnet_map_written"].is_null(), "{export:#}");
    // Without --output json: the Azure document itself, to redirect.
    let plain = run(&["export", good.path_str(), "--format", "azure"]);
    let plain = plain.expect_code(0).json();
    assert_eq!(plain, export["document"]);

    let missing = run(&[
        "check",
        "--policy",
        "/nonexistent/policy.toml",
        "--src",
        "198.51.100.7",
        "--dst",
        "203.0.113.10",
        "--proto",
        "tcp",
        "--dport",
        "443",
        "--output",
        "json",
    ]);
    failure(&missing, "check", "invalid_input", exit::INVALID_INPUT);
}

#[test]
fn show_and_stats_keep_their_schema_when_only_the_pins_answer() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo, "keep");
    for _ in 0..3 {
        assert_dropped(&topo, &agent, DENIED_SRC, 443, "a denied SYN");
    }
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "barrier");
    let from_daemon = success(&agent.cli_json(&["show"]), "show", 0);
    let stats_daemon = success(&agent.cli_json(&["stats"]), "stats", 0);
    let denied = stats_daemon["counters"]["deny_no_match"].as_u64().unwrap();
    assert_eq!(denied, 3, "{stats_daemon:#}");

    // A second daemon on the same pins: another holds them (exit 5), and
    // the first is untouched.
    let other_socket = agent.policy().path().with_file_name("second.sock");
    let pin_dir = agent.paths().pin_dir.display().to_string();
    let second = run_in_netns(
        &topo.server,
        &[
            "run",
            "--iface",
            topo.server_veth(),
            "--policy",
            agent.policy().path_str(),
            "--pin-dir",
            &pin_dir,
            "--socket",
            other_socket.to_str().unwrap(),
        ],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(
        second.status.code(),
        Some(exit::CONFLICT),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("uses the pin directory"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    success(&agent.cli_json(&["show"]), "show", 0);

    let (_stats, _policy, paths) = agent.stop_keeping();
    let _pins = LeftPins(paths.clone());

    let show = cli_in_netns(&topo.server, &paths, &["show"]);
    let from_pins = success(&show, "show", exit::NOT_RUNNING);
    assert_eq!(from_pins["source"], "pins", "{}", show.context());
    assert_eq!(keys(&from_pins), keys(&from_daemon), "{}", show.context());
    assert_eq!(
        keys(&from_pins["interfaces"][0]),
        keys(&from_daemon["interfaces"][0]),
        "{}",
        show.context()
    );
    for key in ["generation", "lookup", "filtering", "pin_dir"] {
        assert_eq!(
            from_pins[key],
            from_daemon[key],
            "{key}: {}",
            show.context()
        );
    }
    assert_eq!(
        from_pins["interfaces"][0]["name"],
        topo.server_veth(),
        "{}",
        show.context()
    );
    assert!(from_pins["default_action"].is_null(), "{}", show.context());

    // The pinned counters, read without a daemon, under the same names.
    let stats = cli_in_netns(&topo.server, &paths, &["stats"]);
    let stats_pins = success(&stats, "stats", exit::NOT_RUNNING);
    assert_eq!(stats_pins["source"], "pins", "{}", stats.context());
    assert_eq!(
        keys(&stats_pins),
        keys(&stats_daemon),
        "{}",
        stats.context()
    );
    assert_eq!(
        stats_pins["counters"]["deny_no_match"],
        denied,
        "{}",
        stats.context()
    );
    assert_eq!(
        stats_pins["interfaces"][0]["counters"]["deny_no_match"],
        denied,
        "{}",
        stats.context()
    );
    assert_eq!(stats_pins["generation"], from_daemon["generation"]);
}

/// A stand-in daemon on `socket` that answers every request with `answer`
/// (one line), as a daemon of another release might.
fn foreign_daemon(socket: &std::path::Path, answer: &'static str) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("binding the socket");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = String::new();
            let _ = BufReader::new(&stream).read_line(&mut request);
            let _ = writeln!(stream, "{answer}");
        }
    });
}

#[test]
fn an_answer_the_cli_cannot_read_is_the_error_document_under_output_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let read: &[&[&str]] = &[&["show"], &["stats"], &["logs"]];
    let every: &[&[&str]] = &[
        &["show"],
        &["stats"],
        &["logs"],
        &["confirm"],
        &["network-rule", "list"],
    ];
    // A reply missing every field (to the verbs that read the reply), and
    // a success without a result (to every verb).
    for (name, answer, verbs) in [
        ("fields", r#"{"ok":true,"result":{}}"#, read),
        ("result", r#"{"ok":true}"#, every),
    ] {
        let socket = dir.path().join(format!("{name}.sock"));
        foreign_daemon(&socket, answer);
        let socket = socket.display().to_string();
        for verb in verbs {
            let mut args = verb.to_vec();
            args.extend(["--socket", &socket, "--output", "json"]);
            let out = run(&args);
            let doc = failure(&out, &verb.join(" "), "internal", 1);
            assert_eq!(
                doc["error"]["fix"],
                "use the vaultfw binary of the daemon's release",
                "{}",
                out.context()
            );
            let message = doc["error"]["message"].as_str().unwrap_or_default();
            assert!(
                !message.contains("release"),
                "the fix is in `fix`, not in the message: {}",
                out.context()
            );
        }
    }
}

#[test]
fn a_command_line_clap_refuses_is_the_error_document_under_output_json() {
    for (args, verb) in [
        (&["show", "--output", "json", "--no-such-flag"][..], "show"),
        (
            &["stats", "--output=json", "--interval", "soon"][..],
            "stats",
        ),
        (
            &["network-rule", "add", "--output", "json", "--bogus"][..],
            "network-rule add",
        ),
    ] {
        let out = run(args);
        let doc = failure(&out, verb, "invalid_input", 2);
        assert!(
            doc["error"]["fix"]
                .as_str()
                .is_some_and(|fix| fix.contains("--help")),
            "{}",
            out.context()
        );
    }
    // Without `--output json`, clap's own words on stderr.
    let out = run(&["show", "--no-such-flag"]);
    out.expect_code(2);
    assert!(out.stdout.is_empty(), "{}", out.context());
    assert!(out.stderr.contains("--no-such-flag"), "{}", out.context());
}
