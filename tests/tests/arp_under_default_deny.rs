//! End to end: a default-Deny filter must let ARP
//! through, or clients are cut off when neighbour entries expire. With the
//! neighbour tables flushed, a connection from an allowed source needs ARP
//! both ways before its handshake can complete.

use vaultfw_tests::{ALLOWED_SRC, Agent, CONNECT_TIMEOUT, Connect, TcpServer, Topology, connect};

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

#[test]
fn handshake_completes_after_neighbour_flush_under_default_deny() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let mut agent = Agent::start(&topo.server, topo.server_veth(), POLICY);
    agent.wait_ready();

    topo.flush_neighbours();
    assert!(
        !topo.server_neighbours().contains(&ALLOWED_SRC.to_string()),
        "the server still knows {ALLOWED_SRC}: {}",
        topo.server_neighbours()
    );
    match connect(
        &topo.client,
        ALLOWED_SRC,
        topo.server_addr(443),
        CONNECT_TIMEOUT,
    ) {
        Connect::Established { greeting } => assert_eq!(greeting, "vaultfw-test 443\n"),
        other => panic!(
            "{ALLOWED_SRC} -> 443 after a neighbour flush: {other:?}\n{}",
            agent.output()
        ),
    }
    assert!(
        topo.server_neighbours().contains(&ALLOWED_SRC.to_string()),
        "the server did not learn {ALLOWED_SRC} by ARP: {}",
        topo.server_neighbours()
    );

    let stats = agent.stop();
    assert!(
        stats.get("pass_non_ip") >= 1,
        "ARP was not counted as pass_non_ip: {:?}",
        stats.counters
    );
    assert!(stats.get("allow_ip_rule") >= 1, "{:?}", stats.counters);
    assert_eq!(stats.get("deny_no_match"), 0, "{:?}", stats.counters);
}
