//! A restart whose maps change shape (new `limits`, or an upgrade that
//! changed a map) moves every filtered interface to the new maps: no
//! interface keeps judging by the old maps (a revoked rule stops admitting
//! on every interface, not only the first), every rule keeps its counters,
//! the generation numbering goes on, and a later restart adopts the new
//! pins. A start that fails half-way through that move puts every link
//! back on the program it ran: the previous policy stays in force.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use vaultfw_tests::agent::LeftPins;
use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::traffic::{Connect, connect};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, PROBE_TIMEOUT, PolicyFile, TcpServer, Topology, cli_in_netns,
};

const BEFORE: &str = r#"
default_action = "Deny"
bypass = "None"
limits = { ip_rules = 200, virtual_network_rules = 10 }
ip_rules = ["203.0.113.0/24", "198.51.100.96/28"]

[data_plane]
tcp_ports = [443]
"#;

/// Other limits (so other map shapes), and 198.51.100.96/28 revoked.
const AFTER: &str = r#"
default_action = "Deny"
bypass = "None"
limits = { ip_rules = 1000, virtual_network_rules = 20 }
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
"#;

/// Revoked by [`AFTER`], reaching the server through the first interface.
const REVOKED_FIRST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);
/// Revoked by [`AFTER`], reaching the server through the second interface.
const REVOKED_SECOND: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 98);
/// Allowed throughout, through the second interface.
const KEPT_SECOND: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);

/// The server, its two filtered interfaces and their TCP servers.
struct Host {
    topo: Topology,
    second: String,
    second_addr: SocketAddrV4,
    _servers: [TcpServer; 2],
}

impl Host {
    fn new() -> Self {
        let topo = Topology::with_client_addrs(&[REVOKED_FIRST]);
        let (_, second) = topo.add_private_link("10.1.2.1/24", &[REVOKED_SECOND, KEPT_SECOND]);
        let second_addr = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 1), 443);
        let servers = [
            TcpServer::start(&topo.server, topo.server_addr(443)),
            TcpServer::start(&topo.server, second_addr),
        ];
        Host {
            topo,
            second,
            second_addr,
            _servers: servers,
        }
    }

    fn options(&self, extra: &[&str]) -> AgentOptions {
        let mut ifaces = vec![self.topo.server_veth().to_owned(), self.second.clone()];
        ifaces.extend(extra.iter().map(|i| (*i).to_owned()));
        AgentOptions {
            ifaces,
            on_exit: "keep",
            ..AgentOptions::iface(self.topo.server_veth())
        }
    }

    fn second_connects(&self, src: Ipv4Addr) -> bool {
        matches!(
            connect(&self.topo.client, src, self.second_addr, PROBE_TIMEOUT),
            Connect::Established { .. }
        )
    }

    fn second_drops(&self, src: Ipv4Addr) -> bool {
        matches!(
            connect(
                &self.topo.client,
                src,
                self.second_addr,
                Duration::from_millis(800)
            ),
            Connect::TimedOut
        )
    }
}

/// The packets the kernel counted for IP rule `rule`.
fn rule_packets(agent: &Agent, rule: &str) -> u64 {
    let list = agent.cli_json(&["network-rule", "list"]).ok();
    list["ip_rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["rule"] == rule))
        .and_then(|r| r["packets"].as_u64())
        .unwrap_or_else(|| panic!("rule {rule} not listed: {list}"))
}

/// An agent serving [`BEFORE`] on both interfaces, with traffic through
/// both, stopped with its filter left in force. Returns the generation,
/// the counters of 203.0.113.0/24 and `allow_ip_rule`, the policy and paths.
fn serve_before(host: &Host) -> (u64, u64, u64, PolicyFile, vaultfw_tests::AgentPaths) {
    let mut agent = Agent::start_with(&host.topo.server, BEFORE, host.options(&[]));
    agent.wait_ready();
    agent.wait_serving();
    for _ in 0..3 {
        assert_connects(&host.topo, &agent, ALLOWED_SRC, 443, "before the restart");
    }
    assert_connects(&host.topo, &agent, REVOKED_FIRST, 443, "not yet revoked");
    assert!(
        host.second_connects(KEPT_SECOND),
        "allowed through the second interface"
    );
    assert!(
        host.second_connects(REVOKED_SECOND),
        "not yet revoked, second interface"
    );
    let generation = agent.generation();
    let hits = rule_packets(&agent, "203.0.113.0/24");
    let allowed = agent.counter("allow_ip_rule");
    let (_, policy, paths) = agent.stop_keeping();
    (generation, hits, allowed, policy, paths)
}

#[test]
fn limits_change_moves_every_interface_to_the_new_maps_and_keeps_every_counter() {
    let host = Host::new();
    let (generation, hits, allowed, policy, paths) = serve_before(&host);
    let _pins = LeftPins(paths.clone());
    policy.write(AFTER);

    let mut agent = Agent::spawn(&host.topo.server, policy, paths.clone(), host.options(&[]));
    agent.wait_ready();
    agent.wait_serving();
    assert!(
        agent.output().contains("moving the filter to new maps"),
        "the migration is logged:\n{}",
        agent.output()
    );
    assert_eq!(
        agent.generation(),
        generation + 1,
        "the generation numbering goes on"
    );
    assert_eq!(
        rule_packets(&agent, "203.0.113.0/24"),
        hits,
        "the rule keeps its counters"
    );
    assert!(
        agent.counter("allow_ip_rule") >= allowed,
        "verdict counters carried over"
    );

    assert_dropped(
        &host.topo,
        &agent,
        REVOKED_FIRST,
        443,
        "revoked, first interface",
    );
    assert!(
        host.second_drops(REVOKED_SECOND),
        "revoked, second interface: no program there reads the old maps"
    );
    assert!(
        host.second_connects(KEPT_SECOND),
        "still allowed through the second interface"
    );
    assert_connects(&host.topo, &agent, ALLOWED_SRC, 443, "still allowed");
    assert!(
        !paths.pin_dir.join("staged").exists(),
        "staged maps left behind"
    );

    // The new maps are the pins now: the next restart adopts them.
    let (_, policy, paths) = agent.stop_keeping();
    let mut again = Agent::spawn(&host.topo.server, policy, paths, host.options(&[]));
    again.wait_ready();
    again.wait_serving();
    assert!(
        again.output().contains("adopted pinned maps")
            && !again.output().contains("moving the filter"),
        "a restart with the same limits adopts the pins:\n{}",
        again.output()
    );
    assert!(
        host.second_drops(REVOKED_SECOND),
        "still revoked after another restart"
    );
    again.stop();
}

#[test]
fn start_failing_during_the_move_puts_every_link_back_on_its_program() {
    let host = Host::new();
    let (busy_client, busy) = host.topo.add_private_link("10.1.3.1/24", &[]);
    let _ = busy_client;
    let (generation, _, _, policy, paths) = serve_before(&host);
    let _pins = LeftPins(paths.clone());
    // Another XDP program holds a third interface: the start fails there,
    // after both links were moved to the new program.
    let mut holder = Agent::start_with(&host.topo.server, BEFORE, AgentOptions::iface(&busy));
    holder.wait_ready();
    policy.write(AFTER);

    let mut failed = Agent::spawn(
        &host.topo.server,
        policy,
        paths.clone(),
        host.options(&[&busy]),
    );
    let status = failed.wait_exit(Duration::from_secs(20));
    assert!(
        !status.success(),
        "the start must fail:\n{}",
        failed.output()
    );
    let output = failed.output();
    let (policy, paths) = failed.kill();

    // Both interfaces serve the previous policy, with no daemon.
    assert!(
        matches!(
            connect(
                &host.topo.client,
                REVOKED_FIRST,
                host.topo.server_addr(443),
                PROBE_TIMEOUT
            ),
            Connect::Established { .. }
        ),
        "the previous policy serves the first interface again\n{output}"
    );
    assert!(
        host.second_connects(REVOKED_SECOND),
        "the previous policy serves the second interface again\n{output}"
    );
    let show = cli_in_netns(&host.topo.server, &paths, &["show"]);
    show.expect_code(exit::NOT_RUNNING);
    assert_eq!(show.json()["generation"], generation, "{}", show.context());
    assert!(
        !paths.pin_dir.join("staged").exists(),
        "the failed start left staged maps"
    );
    holder.stop();

    // Once nothing holds the interface the same move goes through.
    let mut agent = Agent::spawn(&host.topo.server, policy, paths, host.options(&[]));
    agent.wait_ready();
    agent.wait_serving();
    assert!(
        host.second_drops(REVOKED_SECOND),
        "revoked once the move succeeds"
    );
    agent.stop();
}

/// An upgrade from the release before kernel-enforced deadlines (its trie
/// values and config were smaller): the new build moves the filter to new
/// maps and keeps every rule's counters. Needs that release's binary in
/// `VAULTFW_PREVIOUS_BIN` (build it from the release's tag); skipped
/// without it.
#[test]
fn upgrade_from_the_previous_release_keeps_the_counters() {
    let Some(previous) = std::env::var_os("VAULTFW_PREVIOUS_BIN") else {
        eprintln!(
            "skipping: set VAULTFW_PREVIOUS_BIN to a vaultfw built from the previous release"
        );
        return;
    };
    let host = Host::new();
    let mut old = host.options(&[]);
    old.binary = Some(previous.into());
    let mut agent = Agent::start_with(&host.topo.server, BEFORE, old);
    agent.wait_ready();
    agent.wait_serving();
    for _ in 0..3 {
        assert_connects(
            &host.topo,
            &agent,
            ALLOWED_SRC,
            443,
            "on the previous release",
        );
    }
    let generation = agent.generation();
    let hits = rule_packets(&agent, "203.0.113.0/24");
    let allowed = agent.counter("allow_ip_rule");
    let (_, policy, paths) = agent.stop_keeping();
    let _pins = LeftPins(paths.clone());

    let mut upgraded = Agent::spawn(&host.topo.server, policy, paths, host.options(&[]));
    upgraded.wait_ready();
    upgraded.wait_serving();
    assert!(
        upgraded.output().contains("moving the filter to new maps"),
        "{}",
        upgraded.output()
    );
    assert_eq!(
        upgraded.generation(),
        generation + 1,
        "the generation numbering goes on"
    );
    assert_eq!(
        rule_packets(&upgraded, "203.0.113.0/24"),
        hits,
        "the rule keeps its counters"
    );
    assert!(
        upgraded.counter("allow_ip_rule") >= allowed,
        "verdict counters carried over"
    );
    assert!(
        host.second_connects(KEPT_SECOND),
        "the upgraded filter serves the second interface"
    );
    upgraded.stop();
}
