//! The daemon says when what it serves and what the operator declared part
//! ways: a policy file edited and not reloaded (`--no-watch`), a reload
//! refused (with its error, while the kernel keeps serving the previous
//! policy), and a control socket removed behind its back — in `show` and in
//! the metrics; `show` then says which process still holds the pins.

use std::time::Duration;

use nix::sys::signal::Signal;
use vaultfw_tests::agent::run_in_netns;
use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, DENIED_SRC, TcpServer, Topology, cli_in_netns, http_get,
};

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

/// A valid policy that also admits [`DENIED_SRC`].
const EDITED: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24", "198.51.100.7"]

[data_plane]
tcp_ports = [443]
"#;

const METRICS_ADDR: &str = "127.0.0.1:9464";
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// The value of the unlabelled metric `name`.
fn metric(agent: &Agent, topo: &Topology, name: &str) -> Option<f64> {
    let answer = http_get(&topo.server, METRICS_ADDR, "/metrics");
    answer
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .or_else(|| {
            assert!(
                answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
                "{answer}\n{}",
                agent.output()
            );
            None
        })
}

#[test]
fn show_and_metrics_say_when_the_file_and_the_kernel_part_ways() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec![
        "--no-watch".into(),
        "--metrics-addr".into(),
        METRICS_ADDR.into(),
    ];
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();
    let health = &agent.show()["health"];
    assert_eq!(health["policy"]["state"], "in_sync", "{health}");
    assert_eq!(metric(&agent, &topo, "vaultfw_policy_in_sync"), Some(1.0));

    // Edited, not reloaded (no watch): the kernel serves the old policy.
    agent.policy().write(EDITED);
    let health = &agent.show()["health"];
    assert_eq!(health["policy"]["state"], "differs", "{health}");
    assert_eq!(metric(&agent, &topo, "vaultfw_policy_in_sync"), Some(0.0));
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "edited but not reloaded");

    // A refused reload: the error is kept, the previous policy serves.
    agent.policy().write("default_action = \"Sometimes\"\n");
    let mark = agent.log_mark();
    agent.signal(Signal::SIGHUP);
    agent.wait_message(
        mark,
        "policy reload refused; the running policy stays",
        LOG_TIMEOUT,
    );
    let health = &agent.show()["health"];
    assert_eq!(health["last_reload"]["success"], false, "{health}");
    assert!(
        health["last_reload"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("default_action")),
        "the reload's error names the field: {health}"
    );
    assert_eq!(health["policy"]["state"], "invalid", "{health}");
    assert_eq!(
        metric(&agent, &topo, "vaultfw_last_reload_success"),
        Some(0.0)
    );
    assert!(
        metric(&agent, &topo, "vaultfw_last_reload_timestamp_seconds").is_some_and(|t| t > 1.7e9)
    );
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "after a refused reload");
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "after a refused reload");

    // An accepted reload brings them together again.
    agent.policy().write(EDITED);
    let mark = agent.log_mark();
    agent.signal(Signal::SIGHUP);
    agent.wait_message(mark, "policy applied", LOG_TIMEOUT);
    let health = &agent.show()["health"];
    assert_eq!(health["last_reload"]["success"], true, "{health}");
    assert_eq!(health["policy"]["state"], "in_sync", "{health}");
    assert_eq!(metric(&agent, &topo, "vaultfw_policy_in_sync"), Some(1.0));
    assert_connects(&topo, &agent, DENIED_SRC, 443, "the reloaded policy serves");

    // An interface with an address that nothing filters is counted.
    assert_eq!(
        metric(&agent, &topo, "vaultfw_unfiltered_interfaces"),
        Some(0.0)
    );
    let (spare, peer) = (
        vaultfw_tests::netns::unique_name("d"),
        vaultfw_tests::netns::unique_name("e"),
    );
    topo.server
        .ip(&["link", "add", &spare, "type", "veth", "peer", "name", &peer]);
    topo.server
        .ip(&["addr", "add", "192.0.2.200/32", "dev", &spare]);
    topo.server.ip(&["link", "set", &spare, "up"]);
    assert_eq!(
        metric(&agent, &topo, "vaultfw_unfiltered_interfaces"),
        Some(1.0)
    );

    // The control socket removed behind the daemon's back.
    assert_eq!(
        metric(&agent, &topo, "vaultfw_control_socket_present"),
        Some(1.0)
    );
    let mark = agent.log_mark();
    std::fs::remove_file(&agent.paths().socket).expect("removing the socket");
    agent.wait_message(
        mark,
        "the control socket was removed or replaced: the CLI cannot reach this daemon; restart it (the filter stays in force)",
        LOG_TIMEOUT,
    );
    assert_eq!(
        metric(&agent, &topo, "vaultfw_control_socket_present"),
        Some(0.0)
    );
    // `show` cannot reach it, and says a daemon still holds the pins.
    let show = cli_in_netns(&topo.server, agent.paths(), &["show"]);
    show.expect_code(exit::NOT_RUNNING);
    assert_eq!(
        show.json()["held_by_pid"],
        agent.pid(),
        "{}",
        show.context()
    );
    // A second daemon on those pins is refused, naming the one that holds them.
    let mut second = vec![
        "run",
        "--iface",
        topo.server_veth(),
        "--policy",
        agent.policy().path_str(),
    ];
    let pins = agent.paths().args();
    second.extend(pins.iter().map(String::as_str));
    let refused = run_in_netns(&topo.server, &second, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("(pid {})", agent.pid())),
        "the refusal names the holder: {stderr}"
    );
    agent.stop();
}
