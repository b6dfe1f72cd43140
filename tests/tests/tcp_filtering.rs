//! The main job end to end: with `vaultfw run` on the server's veth, an
//! allowed source completes a TCP handshake to the data plane (443), a denied
//! source's SYN is dropped (its connect times out, in well under a second),
//! the control plane (22) stays open to everyone, and `default_action =
//! "Allow"` lets everyone in. Each test first shows the same connections
//! succeed without the agent, so a timeout can only be the firewall's doing.

use std::time::{Duration, Instant};

use vaultfw_tests::agent::xdp_attached;
use vaultfw_tests::{
    ALLOWED_SRC, Agent, CONNECT_TIMEOUT, Connect, DENIED_SRC, TcpServer, Topology, connect,
    connect_from,
};

const DENY_DOCUMENTATION_RANGE: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
"#;

const ALLOW_BY_DEFAULT: &str = r#"
default_action = "Allow"
bypass = "None"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
"#;

/// Without a firewall, both sources reach both ports.
fn assert_open_without_agent(topo: &Topology) {
    for src in [ALLOWED_SRC, DENIED_SRC] {
        for port in [443, 22] {
            assert!(
                connect_from(&topo.client, src, topo.server_addr(port), CONNECT_TIMEOUT),
                "{src} -> {port} fails even without the agent"
            );
        }
    }
}

#[test]
fn allowed_source_connects_and_denied_source_times_out() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let _ssh = TcpServer::start(&topo.server, topo.server_addr(22));
    assert_open_without_agent(&topo);

    let mut agent = Agent::start(&topo.server, topo.server_veth(), DENY_DOCUMENTATION_RANGE);
    agent.wait_ready();
    assert!(
        xdp_attached(&topo.server, topo.server_veth()),
        "no XDP program on the veth"
    );

    match connect(
        &topo.client,
        ALLOWED_SRC,
        topo.server_addr(443),
        CONNECT_TIMEOUT,
    ) {
        Connect::Established { greeting } => assert_eq!(greeting, "vaultfw-test 443\n"),
        other => panic!(
            "allowed {ALLOWED_SRC} -> 443: {other:?}\n{}",
            agent.output()
        ),
    }
    let start = Instant::now();
    let denied = connect(
        &topo.client,
        DENIED_SRC,
        topo.server_addr(443),
        CONNECT_TIMEOUT,
    );
    let elapsed = start.elapsed();
    assert!(
        matches!(denied, Connect::TimedOut),
        "denied {DENIED_SRC} -> 443: {denied:?}"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "the denied attempt took {elapsed:?}"
    );

    let stats = agent.stop();
    assert_eq!(
        stats.get("deny_no_match"),
        1,
        "one SYN dropped\n{}",
        stats.log()
    );
    assert!(stats.get("allow_ip_rule") >= 1, "{:?}", stats.counters);
    assert_eq!(stats.get("allow_default"), 0, "{:?}", stats.counters);
    assert!(
        !xdp_attached(&topo.server, topo.server_veth()),
        "still attached after stop"
    );
    // Detached: the denied source gets in again.
    assert!(connect_from(
        &topo.client,
        DENIED_SRC,
        topo.server_addr(443),
        CONNECT_TIMEOUT
    ));
}

#[test]
fn control_plane_port_is_reachable_from_every_source() {
    let topo = Topology::new();
    let ssh = TcpServer::start(&topo.server, topo.server_addr(22));
    let mut agent = Agent::start(&topo.server, topo.server_veth(), DENY_DOCUMENTATION_RANGE);
    agent.wait_ready();
    for src in [ALLOWED_SRC, DENIED_SRC] {
        match connect(&topo.client, src, topo.server_addr(22), CONNECT_TIMEOUT) {
            Connect::Established { greeting } => assert_eq!(greeting, "vaultfw-test 22\n"),
            other => panic!("{src} -> 22: {other:?}\n{}", agent.output()),
        }
    }
    assert_eq!(ssh.accepted(), 2);
    let stats = agent.stop();
    // Two handshakes and their teardown: only control-plane verdicts.
    let control = stats.get("pass_control_plane");
    assert!(
        control >= 2 * 3,
        "SYN, ACK, FIN per connection at least: {control}"
    );
    stats.assert_counters(&[("pass_control_plane", control)]);
}

#[test]
fn default_allow_lets_the_denied_source_in() {
    let topo = Topology::new();
    let https = TcpServer::start(&topo.server, topo.server_addr(443));
    let mut agent = Agent::start(&topo.server, topo.server_veth(), ALLOW_BY_DEFAULT);
    agent.wait_ready();
    for src in [DENIED_SRC, ALLOWED_SRC] {
        let outcome = connect(&topo.client, src, topo.server_addr(443), CONNECT_TIMEOUT);
        assert!(
            outcome.is_established(),
            "{src} -> 443 under Allow: {outcome:?}"
        );
    }
    assert_eq!(https.accepted(), 2);
    let stats = agent.stop();
    // Rules are not consulted under Allow: every data-plane frame counts as
    // allow_default, none as allow_ip_rule, even from 203.0.113.5.
    let allowed = stats.get("allow_default");
    assert!(
        allowed >= 2 * 3,
        "SYN, ACK, FIN per connection at least: {allowed}"
    );
    stats.assert_counters(&[("allow_default", allowed)]);
}
