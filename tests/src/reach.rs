//! Assertions on what reaches the protected server: a source completes a
//! TCP handshake to a port, or its SYN is dropped (unanswered within a
//! timeout shorter than the first SYN retransmission, so exactly one SYN
//! was sent and judged). Failures print the agent's output.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::agent::Agent;
use crate::probe::PROBE_TIMEOUT;
use crate::topology::Topology;
use crate::traffic::{CONNECT_TIMEOUT, Connect, connect};

/// Panics unless `src` completes a handshake to the server's `port`.
pub fn assert_connects(topo: &Topology, agent: &Agent, src: Ipv4Addr, port: u16, why: &str) {
    match connect(&topo.client, src, topo.server_addr(port), PROBE_TIMEOUT) {
        Connect::Established { .. } => {}
        other => panic!(
            "{why}: {src} -> {port} should connect, got {other:?}\nagent output:\n{}",
            agent.output()
        ),
    }
}

/// Panics unless `src`'s SYN to the server's `port` goes unanswered for
/// [`CONNECT_TIMEOUT`].
pub fn assert_dropped(topo: &Topology, agent: &Agent, src: Ipv4Addr, port: u16, why: &str) {
    assert_dropped_within(topo, agent, src, port, CONNECT_TIMEOUT, why);
}

/// [`assert_dropped`] with another timeout (under 1 s).
pub fn assert_dropped_within(
    topo: &Topology,
    agent: &Agent,
    src: Ipv4Addr,
    port: u16,
    timeout: Duration,
    why: &str,
) {
    assert!(
        timeout < Duration::from_secs(1),
        "one SYN only: keep it under 1 s"
    );
    match connect(&topo.client, src, topo.server_addr(port), timeout) {
        Connect::TimedOut => {}
        other => panic!(
            "{why}: {src} -> {port} should be dropped, got {other:?}\nagent output:\n{}",
            agent.output()
        ),
    }
}

/// Connects without the agent's help: for checks made while no agent runs
/// (panics with `why` unless the handshake completes).
pub fn assert_connects_without_agent(topo: &Topology, src: Ipv4Addr, port: u16, why: &str) {
    match connect(&topo.client, src, topo.server_addr(port), PROBE_TIMEOUT) {
        Connect::Established { .. } => {}
        other => panic!("{why}: {src} -> {port} should connect, got {other:?}"),
    }
}

/// [`assert_dropped`] while no agent runs (a pinned filter alone).
pub fn assert_dropped_without_agent(topo: &Topology, src: Ipv4Addr, port: u16, why: &str) {
    match connect(&topo.client, src, topo.server_addr(port), CONNECT_TIMEOUT) {
        Connect::TimedOut => {}
        other => panic!("{why}: {src} -> {port} should be dropped, got {other:?}"),
    }
}
