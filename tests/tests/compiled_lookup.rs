//! `vaultfw run --lookup compiled`: the data plane walks the compiled
//! prefix table, with real TCP through the harness's namespaces. Thousands
//! of policy swaps under traffic never fail a connection allowed by every
//! version and never admit a source the serving version refuses (the
//! agent waits an RCU grace period after each flip before it rewrites the
//! spare set); and a restart with the other `--lookup` on the same pins
//! serves the same verdicts, says which lookup it serves (`show`, from
//! the daemon and from the pins, and the start-up log) and logs the switch.

use std::time::{Duration, Instant};

use vaultfw_tests::agent::LeftPins;
use vaultfw_tests::cli::{cli_in_netns, exit};
use vaultfw_tests::reach::{assert_connects, assert_dropped, assert_dropped_within};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, DENIED_SRC, PROBE_TIMEOUT, Prober, TcpServer, Topology,
};

const POLICY: &str = "default_action = \"Deny\"\nbypass = \"None\"\nip_rules = [\"203.0.113.0/24\"]\n\n[data_plane]\ntcp_ports = [443]\n";
/// Back-to-back probes while the policy flips.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// How long a SYN that must be dropped is given (a passed SYN is answered
/// in well under a millisecond on a veth).
const DROP_TIMEOUT: Duration = Duration::from_millis(100);

fn options(topo: &Topology, lookup: &str, on_exit: &'static str) -> AgentOptions {
    AgentOptions {
        extra_args: vec!["--lookup".into(), lookup.into()],
        on_exit,
        ..AgentOptions::iface(topo.server_veth())
    }
}

#[test]
fn two_thousand_compiled_swaps_under_traffic_never_fail_an_allowed_connection() {
    const PAIRS: usize = 1000; // 2,000 flips
    const CHECK_EVERY: usize = 100;
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let mut agent = Agent::start_with(&topo.server, POLICY, options(&topo, "compiled", "detach"));
    agent.wait_ready();
    agent.wait_serving();
    let denied_src = DENIED_SRC.to_string();
    let first_generation = agent.generation();
    let prober = Prober::start(
        &topo.client,
        ALLOWED_SRC,
        topo.server_addr(443),
        PROBE_INTERVAL,
        PROBE_TIMEOUT,
    );
    prober.wait_more(3, Duration::from_secs(10));
    let started = Instant::now();
    for pair in 0..PAIRS {
        let added = agent
            .cli_json(&["network-rule", "add", "--ip-address", &denied_src])
            .ok();
        assert_eq!(added["changed"], true, "swap {pair}: {added:#}");
        if pair % CHECK_EVERY == 0 {
            assert_connects(
                &topo,
                &agent,
                DENIED_SRC,
                443,
                &format!("swap {pair}: added"),
            );
        }
        let removed = agent
            .cli_json(&["network-rule", "remove", "--ip-address", &denied_src])
            .ok();
        assert_eq!(removed["changed"], true, "swap {pair}: {removed:#}");
        if pair % CHECK_EVERY == 0 {
            assert_dropped_within(
                &topo,
                &agent,
                DENIED_SRC,
                443,
                DROP_TIMEOUT,
                &format!("swap {pair}: first SYN after the remove returned"),
            );
            assert_eq!(prober.failed(), 0, "a probe failed by swap {pair}");
        }
    }
    let finished = Instant::now();
    prober.wait_more(2, Duration::from_secs(5));
    let probes = prober.stop();
    probes.assert_all_established(PAIRS / CHECK_EVERY, started, finished);
    eprintln!(
        "{} handshakes from {ALLOWED_SRC}, none failed, across {} compiled flips in {:?}",
        probes.probes.len(),
        2 * PAIRS,
        finished - started
    );
    assert_eq!(agent.generation(), first_generation + 2 * PAIRS as u64);
    assert_eq!(
        agent.counter("deny_no_match"),
        (PAIRS / CHECK_EVERY) as u64,
        "exactly the SYNs sent after the checked removes were dropped\n{}",
        agent.output()
    );
    agent.stop();
}

/// `agent`'s start-up log says it serves `lookup`, and, when `from` is
/// another lookup, that it switched from it (once).
fn assert_logged_lookup(agent: &Agent, lookup: &str, from: Option<&str>) {
    let lines = agent.log_lines();
    let filtering: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "filtering")
        .collect();
    assert_eq!(filtering.len(), 1, "{}", agent.output());
    assert_eq!(
        filtering[0]["vaultfw"]["lookup"],
        lookup,
        "{}",
        agent.output()
    );
    let switched: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "lookup switched")
        .collect();
    match from {
        Some(from) if from != lookup => {
            assert_eq!(switched.len(), 1, "{}", agent.output());
            assert_eq!(switched[0]["log"]["level"], "info", "{}", agent.output());
            assert_eq!(switched[0]["vaultfw"]["from"], from, "{}", agent.output());
            assert_eq!(switched[0]["vaultfw"]["to"], lookup, "{}", agent.output());
        }
        _ => assert!(switched.is_empty(), "{}", agent.output()),
    }
}

#[test]
fn a_restart_with_the_other_lookup_on_the_same_pins_keeps_the_verdicts_and_reports_the_switch() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let mut agent = Agent::start_with(&topo.server, POLICY, options(&topo, "trie", "keep"));
    agent.wait_ready();
    agent.wait_serving();
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "trie: allowed");
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "trie: denied");
    assert_eq!(agent.cli_json(&["show"]).ok()["lookup"], "trie");
    assert_logged_lookup(&agent, "trie", None);
    // Removes the pins once the test ends, whatever happens.
    let mut pins = Vec::new();
    let mut previous = "trie";
    for lookup in ["compiled", "compiled", "trie", "compiled"] {
        let (_, policy, paths) = agent.stop_keeping();
        pins.push(LeftPins(paths.clone()));
        // No daemon: `show` reads what the pinned program serves.
        let show = cli_in_netns(&topo.server, &paths, &["show"]);
        show.expect_code(exit::NOT_RUNNING);
        assert_eq!(show.json()["lookup"], previous, "{}", show.context());
        agent = Agent::spawn(&topo.server, policy, paths, options(&topo, lookup, "keep"));
        agent.wait_ready();
        agent.wait_serving();
        assert_eq!(agent.cli_json(&["show"]).ok()["lookup"], lookup);
        assert_logged_lookup(&agent, lookup, Some(previous));
        previous = lookup;
        assert_connects(
            &topo,
            &agent,
            ALLOWED_SRC,
            443,
            &format!("{lookup}: allowed"),
        );
        assert_dropped(&topo, &agent, DENIED_SRC, 443, &format!("{lookup}: denied"));
        agent
            .cli_json(&[
                "network-rule",
                "add",
                "--ip-address",
                &DENIED_SRC.to_string(),
            ])
            .ok();
        assert_connects(&topo, &agent, DENIED_SRC, 443, &format!("{lookup}: added"));
        agent
            .cli_json(&[
                "network-rule",
                "remove",
                "--ip-address",
                &DENIED_SRC.to_string(),
            ])
            .ok();
        assert_dropped(
            &topo,
            &agent,
            DENIED_SRC,
            443,
            &format!("{lookup}: removed"),
        );
    }
    let (_, _policy, paths) = agent.stop_keeping();
    pins.push(LeftPins(paths));
}
