//! Each verdict counter equals the number of frames the test sent of its
//! kind, exactly: the topology is quiet (no ARP, no IPv6), so every frame the
//! XDP program sees is one the test sent. No sleeps: a later frame that
//! arrives proves the earlier ones were judged (one veth queue, in order).

use std::time::Duration;

use vaultfw_tests::{
    ALLOWED_SRC, Agent, CONNECT_TIMEOUT, Connect, DENIED_SRC, TcpServer, Topology, UdpReceiver,
    connect, send_udp,
};

const DATA_PLANE_UDP: u16 = 4433;
const CONTROL_PLANE_UDP: u16 = 5353;

const POLICY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
udp_ports = [4433]
"#;

const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn udp_verdict_counters_equal_the_datagrams_sent() {
    const ALLOWED: usize = 40; // N, allowed source to the data plane
    const DENIED: usize = 25; // M, denied source to the data plane
    const CONTROL: usize = 15; // K, denied source to a control-plane port

    let topo = Topology::new();
    let data = UdpReceiver::start(&topo.server, topo.server_addr(DATA_PLANE_UDP));
    let control = UdpReceiver::start(&topo.server, topo.server_addr(CONTROL_PLANE_UDP));
    let mut agent = Agent::start(&topo.server, topo.server_veth(), POLICY);
    agent.wait_ready();

    send_udp(
        &topo.client,
        DENIED_SRC,
        topo.server_addr(DATA_PLANE_UDP),
        DENIED,
    );
    send_udp(
        &topo.client,
        ALLOWED_SRC,
        topo.server_addr(DATA_PLANE_UDP),
        ALLOWED,
    );
    assert_eq!(
        data.wait_for(ALLOWED, ARRIVAL_TIMEOUT),
        ALLOWED,
        "allowed datagrams lost\n{}",
        agent.output()
    );
    send_udp(
        &topo.client,
        DENIED_SRC,
        topo.server_addr(CONTROL_PLANE_UDP),
        CONTROL,
    );
    assert_eq!(
        control.wait_for(CONTROL, ARRIVAL_TIMEOUT),
        CONTROL,
        "control-plane datagrams lost"
    );
    assert_eq!(
        data.count(),
        ALLOWED,
        "a denied datagram reached the data-plane socket"
    );

    let stats = agent.stop();
    stats.assert_counters(&[
        ("allow_ip_rule", ALLOWED as u64),
        ("deny_no_match", DENIED as u64),
        ("pass_control_plane", CONTROL as u64),
    ]);
}

#[test]
fn each_denied_tcp_attempt_counts_once() {
    const ATTEMPTS: u64 = 5; // D, each one SYN within the connect timeout

    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let ssh = TcpServer::start(&topo.server, topo.server_addr(22));
    let mut agent = Agent::start(&topo.server, topo.server_veth(), POLICY);
    agent.wait_ready();

    for attempt in 0..ATTEMPTS {
        let outcome = connect(
            &topo.client,
            DENIED_SRC,
            topo.server_addr(443),
            CONNECT_TIMEOUT,
        );
        assert!(
            matches!(outcome, Connect::TimedOut),
            "attempt {attempt}: {outcome:?}"
        );
    }
    // The fence: a control-plane connection from the same source, after the
    // denied SYNs on the same queue.
    let fence = connect(
        &topo.client,
        DENIED_SRC,
        topo.server_addr(22),
        CONNECT_TIMEOUT,
    );
    assert!(
        fence.is_established(),
        "control plane from {DENIED_SRC}: {fence:?}"
    );
    assert_eq!(ssh.accepted(), 1);

    let stats = agent.stop();
    let control = stats.get("pass_control_plane");
    assert!(control >= 3, "the fence connection: {control}");
    stats.assert_counters(&[("deny_no_match", ATTEMPTS), ("pass_control_plane", control)]);
}
