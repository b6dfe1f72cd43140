//! Policy changes are atomic (DESIGN.md section 2): the new rule
//! set is written into the inactive table set and one index flips, so no
//! packet is judged by a half-applied policy. While the policy is swapped
//! hundreds of times through the control socket, a client allowed by every
//! version keeps connecting and not one connection fails; a source allowed
//! only by the old version is refused from the flip on (its first SYN after
//! the CLI returns is dropped); and nothing from the always-allowed source
//! is ever dropped (the deny counter equals the refused SYNs exactly).

use std::time::{Duration, Instant};

use vaultfw_tests::reach::{assert_connects, assert_dropped_within};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, DENIED_SRC, PROBE_TIMEOUT, PolicyFile, Prober, TcpServer, Topology,
};

/// Back-to-back probes, a few milliseconds apart: as many chances as the
/// machine allows to catch a half-applied policy.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// How long a SYN that must be dropped is given (a passed SYN is answered
/// in well under a millisecond on a veth).
const DROP_TIMEOUT: Duration = Duration::from_millis(100);

fn policy(ip_rules: &[&str]) -> String {
    let quoted: Vec<String> = ip_rules.iter().map(|r| format!("{r:?}")).collect();
    format!(
        "default_action = \"Deny\"\nbypass = \"None\"\nip_rules = [{}]\n\n[data_plane]\ntcp_ports = [443]\n",
        quoted.join(", ")
    )
}

fn serving(topo: &Topology, policy: &str) -> Agent {
    let mut agent = Agent::start(&topo.server, topo.server_veth(), policy);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

fn start_prober(topo: &Topology) -> Prober {
    let prober = Prober::start(
        &topo.client,
        ALLOWED_SRC,
        topo.server_addr(443),
        PROBE_INTERVAL,
        PROBE_TIMEOUT,
    );
    prober.wait_more(3, Duration::from_secs(10));
    prober
}

#[test]
fn two_hundred_rule_swaps_never_fail_a_connection_allowed_by_both_policies() {
    const PAIRS: usize = 100; // 200 swaps
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    // 203.0.113.5 is allowed by the /24 in every version; 198.51.100.7 only
    // while its own rule is in.
    let agent = serving(&topo, &policy(&["203.0.113.0/24"]));
    let denied_before = agent.counter("deny_no_match");
    let first_generation = agent.generation();
    let denied_src = DENIED_SRC.to_string();

    let prober = start_prober(&topo);
    let started = Instant::now();
    for pair in 0..PAIRS {
        let added = agent
            .cli_json(&["network-rule", "add", "--ip-address", &denied_src])
            .ok();
        assert_eq!(added["changed"], true, "swap {pair}: {added:#}");
        assert_connects(
            &topo,
            &agent,
            DENIED_SRC,
            443,
            &format!("swap {pair}: rule added"),
        );
        // In-order barrier: this handshake completing means every earlier
        // frame of the client (the teardown above included) was judged.
        assert_connects(
            &topo,
            &agent,
            ALLOWED_SRC,
            443,
            &format!("swap {pair}: barrier"),
        );
        let removed = agent
            .cli_json(&["network-rule", "remove", "--ip-address", &denied_src])
            .ok();
        assert_eq!(removed["changed"], true, "swap {pair}: {removed:#}");
        assert_dropped_within(
            &topo,
            &agent,
            DENIED_SRC,
            443,
            DROP_TIMEOUT,
            &format!("swap {pair}: first SYN after the remove returned"),
        );
        assert_eq!(
            prober.failed(),
            0,
            "a probe failed by swap {pair}\n{}",
            agent.output()
        );
    }
    let finished = Instant::now();
    prober.wait_more(2, Duration::from_secs(5));
    let probes = prober.stop();
    probes.assert_all_established(PAIRS, started, finished);
    eprintln!(
        "{} handshakes from {ALLOWED_SRC}, none failed, across {} swaps in {:?}",
        probes.probes.len(),
        2 * PAIRS,
        finished - started
    );

    assert_eq!(
        agent.generation(),
        first_generation + 2 * PAIRS as u64,
        "one generation per swap"
    );
    assert_eq!(
        agent.counter("deny_no_match") - denied_before,
        PAIRS as u64,
        "exactly the SYNs sent after each remove were dropped, nothing else\n{}",
        agent.output()
    );
    agent.stop();
}

#[test]
fn three_hundred_applies_of_rotating_policies_never_fail_a_connection_allowed_by_all() {
    const ROUNDS: usize = 100; // 300 swaps
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    // 203.0.113.5 is admitted by a different rule in each version (/24,
    // /25, /32): every swap replaces the entry that matches it. Only
    // version A admits 198.51.100.7.
    let a = PolicyFile::named("a.toml", &policy(&["203.0.113.0/24", "198.51.100.7"]));
    let b = PolicyFile::named("b.toml", &policy(&["203.0.113.0/25"]));
    let c = PolicyFile::named("c.toml", &policy(&["203.0.113.5"]));
    let agent = serving(&topo, &policy(&["203.0.113.0/24", "198.51.100.7"]));
    let denied_before = agent.counter("deny_no_match");
    let first_generation = agent.generation();

    let prober = start_prober(&topo);
    let started = Instant::now();
    for round in 0..ROUNDS {
        for (name, file) in [("B", &b), ("C", &c), ("A", &a)] {
            let applied = agent.cli_json(&["apply", file.path_str()]).ok();
            assert_eq!(
                applied["changed"], true,
                "round {round}, {name}: {applied:#}"
            );
            match name {
                "B" => assert_dropped_within(
                    &topo,
                    &agent,
                    DENIED_SRC,
                    443,
                    DROP_TIMEOUT,
                    &format!("round {round}: first SYN after the flip from A to B"),
                ),
                "A" => {
                    assert_connects(&topo, &agent, DENIED_SRC, 443, &format!("round {round}: A"));
                    assert_connects(
                        &topo,
                        &agent,
                        ALLOWED_SRC,
                        443,
                        &format!("round {round}: barrier"),
                    );
                }
                _ => {}
            }
        }
        assert_eq!(
            prober.failed(),
            0,
            "a probe failed by round {round}\n{}",
            agent.output()
        );
    }
    let finished = Instant::now();
    prober.wait_more(2, Duration::from_secs(5));
    let probes = prober.stop();
    probes.assert_all_established(ROUNDS, started, finished);
    eprintln!(
        "{} handshakes from {ALLOWED_SRC}, none failed, across {} swaps in {:?}",
        probes.probes.len(),
        3 * ROUNDS,
        finished - started
    );

    assert_eq!(
        agent.generation(),
        first_generation + 3 * ROUNDS as u64,
        "one generation per swap"
    );
    assert_eq!(
        agent.counter("deny_no_match") - denied_before,
        ROUNDS as u64,
        "exactly the SYNs sent after each flip to B were dropped, nothing else\n{}",
        agent.output()
    );
    agent.stop();
}
