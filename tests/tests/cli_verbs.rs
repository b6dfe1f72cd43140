//! The read and settings verbs through the real control socket, JSON output
//! parsed and checked: `show` reports the
//! generation, the policy and each interface's XDP mode and program as the
//! kernel holds them; `stats` counts each verdict exactly; `update` changes
//! the default action and the bypass (invalid values: exit 2); every verb
//! exits 3 when no daemon listens; a non-root caller is told the socket is
//! root-only; `--help` has an example for each verb; completions print (hidden verbs left out).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;
use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentPaths, COUNTERS, CliOutput, DENIED_SRC, PolicyFile, TcpServer,
    Topology, vaultfw, vaultfw_bin,
};

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

fn serving(topo: &Topology) -> Agent {
    let mut agent = Agent::start(&topo.server, topo.server_veth(), POLICY);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

/// The XDP program id `ip -d -j link show` reports for `dev` in `topo`'s
/// server namespace.
fn kernel_prog_id(topo: &Topology, dev: &str) -> Option<u64> {
    let json = topo.server.ip(&["-d", "-j", "link", "show", "dev", dev]);
    let links: Value = serde_json::from_str(&json).expect("ip -j output");
    let xdp = &links[0]["xdp"];
    xdp["prog"]["id"]
        .as_u64()
        .or_else(|| xdp["attached"][0]["prog"]["id"].as_u64())
}

#[test]
fn show_reports_generation_policy_and_the_attach_mode_the_kernel_holds() {
    let topo = Topology::new();
    let agent = serving(&topo);
    let show = agent.show();
    assert!(
        show["generation"].as_u64().is_some_and(|g| g >= 1),
        "{show:#}"
    );
    assert_eq!(show["protected"], true, "{show:#}");
    assert_eq!(show["default_action"], "Deny", "{show:#}");
    assert_eq!(show["bypass"], "None", "{show:#}");
    assert_eq!(show["ip_rules"], 1, "{show:#}");
    assert_eq!(
        show["on_exit"], "detach",
        "the harness runs it with --on-exit detach: {show:#}"
    );
    assert_eq!(
        show["pin_dir"],
        agent.paths().pin_dir.display().to_string(),
        "{show:#}"
    );
    assert_eq!(show["policy_file"], agent.policy().path_str(), "{show:#}");
    let interfaces = show["interfaces"].as_array().expect("an interfaces array");
    assert_eq!(interfaces.len(), 1, "{show:#}");
    let veth = &interfaces[0];
    assert_eq!(veth["name"], topo.server_veth(), "{show:#}");
    assert_eq!(veth["mode"], "native", "veth has native XDP: {show:#}");
    assert_eq!(veth["attach"], "attached", "{show:#}");
    let kernel = kernel_prog_id(&topo, topo.server_veth());
    assert!(kernel.is_some(), "ip link shows no XDP program");
    assert_eq!(
        veth["prog_id"].as_u64(),
        kernel,
        "show's program is not the kernel's: {show:#}"
    );

    // The same through the default table output, for people.
    let table = agent.cli(&["show"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim() == format!("generation: {}", show["generation"])),
        "{text}"
    );
    agent.stop();
}

#[test]
fn stats_counts_each_verdict_exactly() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let _ssh = TcpServer::start(&topo.server, topo.server_addr(22));
    let agent = serving(&topo);
    let out = agent.cli_json(&["stats"]);
    let doc = out.ok();
    let counters = doc["counters"].as_object().expect("a counters object");
    let mut names: Vec<&str> = counters.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = COUNTERS.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected, "{}", out.context());
    assert_eq!(doc["generation"], agent.generation(), "{}", out.context());
    let before: Vec<u64> = COUNTERS
        .iter()
        .map(|c| counters[*c].as_u64().unwrap())
        .collect();
    assert!(
        before.iter().all(|&n| n == 0),
        "a quiet link counts nothing yet: {}",
        out.context()
    );

    for _ in 0..3 {
        assert_dropped(&topo, &agent, DENIED_SRC, 443, "a denied SYN");
    }
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "an allowed connection");
    assert_connects(&topo, &agent, DENIED_SRC, 22, "the control plane");
    // The last connection's teardown is judged before this barrier's SYN.
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "barrier");
    let counters = agent.counters();
    assert_eq!(counters["deny_no_match"], 3, "{counters:?}");
    // At least three frames of the allowed connection, plus the barrier's SYN.
    assert!(
        counters["allow_ip_rule"].as_u64().unwrap() >= 4,
        "{counters:?}"
    );
    assert!(
        counters["pass_control_plane"].as_u64().unwrap() >= 3,
        "{counters:?}"
    );
    for name in [
        "allow_default",
        "pass_non_ip",
        "deny_malformed",
        "audit_would_deny",
        "pass_forwarded",
    ] {
        assert_eq!(counters[name], 0, "{name}: {counters:?}");
    }
    agent.stop();
}

#[test]
fn update_changes_default_action_and_bypass_and_refuses_invalid_values() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo);
    let generation = agent.generation();

    let out = agent.cli_json(&["update", "--default-action", "Allow"]);
    let doc = out.ok();
    assert_eq!(doc["changed"], true, "{}", out.context());
    assert_eq!(doc["generation"], generation + 1, "{}", out.context());
    assert_connects(&topo, &agent, DENIED_SRC, 443, "default_action = Allow");
    let show = agent.show();
    assert_eq!(show["default_action"], "Allow", "{show:#}");
    let file = std::fs::read_to_string(agent.policy().path()).unwrap();
    assert!(
        file.contains("default_action = \"Allow\""),
        "not written back:\n{file}"
    );

    let out = agent.cli_json(&[
        "update",
        "--default-action",
        "Deny",
        "--bypass",
        "AzureServices",
    ]);
    assert_eq!(out.ok()["generation"], generation + 2, "{}", out.context());
    let show = agent.show();
    assert_eq!(show["default_action"], "Deny", "{show:#}");
    assert_eq!(show["bypass"], "AzureServices", "{show:#}");
    assert_dropped(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "default_action = Deny again",
    );

    for args in [
        vec!["update", "--default-action", "Open"],
        vec!["update", "--bypass", "Everyone"],
        vec!["update"],
    ] {
        let out = agent.cli_json(&args);
        out.expect_code(exit::INVALID_INPUT);
        assert_eq!(
            out.json()["error"]["code"],
            "invalid_input",
            "{}",
            out.context()
        );
    }
    let out = agent.cli_json(&["update", "--default-action", "Open"]);
    // The field and the value apart from the message.
    let error = &out.json()["error"];
    assert_eq!(error["field"], "--default-action", "{}", out.context());
    assert_eq!(error["value"], "Open", "{}", out.context());
    assert_eq!(
        agent.generation(),
        generation + 2,
        "a refused update moved the generation"
    );
    agent.stop();
}

#[test]
fn every_verb_exits_3_when_no_daemon_listens() {
    let policy = PolicyFile::new(POLICY);
    let paths = AgentPaths::new(&policy);
    let socket = paths.socket.display().to_string();
    let pin_dir = paths.pin_dir.display().to_string();
    let verbs: [&[&str]; 8] = [
        &["network-rule", "list"],
        &["network-rule", "add", "--ip-address", "198.51.100.1"],
        &["network-rule", "remove", "--ip-address", "198.51.100.1"],
        &["update", "--default-action", "Allow"],
        &["apply", policy.path_str()],
        &["confirm"],
        &["stats", "--pin-dir", &pin_dir],
        &["show", "--pin-dir", &pin_dir],
    ];
    let run = |verb: &[&str]| {
        let mut args = verb.to_vec();
        args.extend(["--socket", socket.as_str(), "--output", "json"]);
        CliOutput::new(
            args.iter().map(|a| (*a).to_owned()).collect(),
            vaultfw(&args),
        )
    };
    // No socket file at all, then a stale one (a crashed daemon's).
    for stale in [false, true] {
        if stale {
            let _listener = std::os::unix::net::UnixListener::bind(&paths.socket)
                .expect("binding a socket nobody will accept on");
            // Dropped here: the file stays, nobody listens.
        }
        for verb in verbs {
            let out = run(verb);
            out.expect_code(exit::NOT_RUNNING);
            if verb[0] != "show" && verb[0] != "stats" {
                // The one error document of `--output json`.
                let doc = out.json();
                assert_eq!(doc["ok"], false, "{}", out.context());
                assert_eq!(doc["error"]["code"], "not_running", "{}", out.context());
                assert_eq!(doc["exit_code"], exit::NOT_RUNNING, "{}", out.context());
                assert!(
                    doc["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("not running")),
                    "stale socket file: {stale}; {}",
                    out.context()
                );
            }
        }
    }
    // `show` still says what the pins say: here, nothing is filtered.
    let out = run(&["show", "--pin-dir", &pin_dir]);
    let doc = out.json();
    assert_eq!(doc["daemon_running"], false, "{}", out.context());
    assert_ne!(doc["filtering"], true, "{}", out.context());
    paths.remove_pins(); // never created; this unregisters it
}

#[test]
fn a_non_root_caller_is_told_the_socket_is_root_only() {
    let topo = Topology::new();
    let agent = serving(&topo);
    let socket = agent.paths().socket.clone();
    let mode = std::fs::metadata(&socket)
        .expect("the socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is not root-only: {mode:o}");
    // A copy of the binary that anyone may run.
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("vaultfw");
    std::fs::copy(vaultfw_bin(), &copy).expect("copying vaultfw");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&copy)
        .args(["network-rule", "list", "--socket"])
        .arg(&socket)
        .output()
        .expect("running setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a non-root caller was served: {stderr}"
    );
    assert!(
        stderr.contains("root"),
        "the message does not say the socket is root-only: {stderr}"
    );
    assert_ne!(
        out.status.code(),
        Some(exit::NOT_RUNNING),
        "a running daemon is not 'not running' to a non-root caller: {stderr}"
    );
    agent.stop();
}

#[test]
fn every_verb_has_help_with_an_example_and_completions_print() {
    for verb in [
        "run",
        "validate",
        "check",
        "network-rule",
        "update",
        "apply",
        "confirm",
        "show",
        "stats",
        "detach",
        "completions",
    ] {
        let out = vaultfw(&[verb, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "vaultfw {verb} --help failed");
        assert!(
            text.contains("Example:"),
            "vaultfw {verb} --help has no example:\n{text}"
        );
        assert!(
            text.contains("vaultfw "),
            "vaultfw {verb} --help example:\n{text}"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = vaultfw(&["completions", shell]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "completions {shell} failed");
        assert!(
            text.contains("network-rule"),
            "{shell} completions lack the verbs"
        );
        assert!(
            text.contains("if-generation"),
            "{shell} completions lack the options"
        );
        assert!(
            !text.contains("man-pages"),
            "{shell} completions offer the hidden packaging verb"
        );
    }
}
