//! A crash, a stop or a restart of the daemon never opens the vault and
//! never locks its clients out: a daemon killed with
//! SIGKILL under traffic leaves its pinned filter in force with the last
//! policy (a rule added through the CLI included); a new daemon on the same
//! pins adopts them — same program, same generation, counters carried over —
//! while a client connecting every 20 ms never fails; a stop with
//! `--on-exit keep` leaves the filter, and `show` says so without a daemon.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vaultfw_tests::agent::{LeftPins, xdp_attached};
use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::{
    assert_connects, assert_connects_without_agent, assert_dropped, assert_dropped_without_agent,
};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, DENIED_SRC, PROBE_TIMEOUT, Prober, TcpServer, Topology,
    cli_in_netns,
};

const POLICY: &str = r#"
# the office reaches the vault; nobody else
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
"#;

/// A source allowed only by a rule added through the CLI before the crash.
const CLI_ADDED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

fn keep_options(topo: &Topology) -> AgentOptions {
    AgentOptions {
        on_exit: "keep",
        ..AgentOptions::iface(topo.server_veth())
    }
}

/// An agent that filters and answers on its socket.
fn serving(topo: &Topology, options: AgentOptions) -> Agent {
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

/// Keeps the prober going until one of its probes started after `until`.
fn probe_until(prober: &Prober, until: Instant) {
    while Instant::now() < until {
        prober.wait_more(1, Duration::from_secs(5));
    }
    prober.wait_more(1, Duration::from_secs(5));
}

#[test]
fn sigkill_under_traffic_leaves_the_last_policy_in_force_and_the_pins_in_place() {
    let topo = Topology::with_client_addrs(&[CLI_ADDED]);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo, keep_options(&topo));
    agent
        .cli_json(&[
            "network-rule",
            "add",
            "--ip-address",
            &CLI_ADDED.to_string(),
        ])
        .ok();
    let generation = agent.generation();
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "before the kill");
    assert_connects(&topo, &agent, CLI_ADDED, 443, "rule added through the CLI");
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "before the kill");

    let prober = Prober::start(
        &topo.client,
        ALLOWED_SRC,
        topo.server_addr(443),
        PROBE_INTERVAL,
        PROBE_TIMEOUT,
    );
    prober.wait_more(5, Duration::from_secs(10));
    let killed_at = Instant::now();
    let (_policy, paths) = agent.kill();
    let _pins = LeftPins(paths.clone());
    // Half a second of traffic with no daemon at all.
    probe_until(&prober, killed_at + Duration::from_millis(500));
    let probes = prober.stop();
    probes.assert_all_established(25, killed_at, killed_at + Duration::from_millis(500));

    assert_connects_without_agent(&topo, ALLOWED_SRC, 443, "after SIGKILL");
    assert_connects_without_agent(&topo, CLI_ADDED, 443, "CLI-added rule after SIGKILL");
    assert_dropped_without_agent(&topo, DENIED_SRC, 443, "after SIGKILL");

    let veth = topo.server_veth();
    assert!(
        xdp_attached(&topo.server, veth),
        "the XDP program left {veth}"
    );
    let link_pin = paths.pin_dir.join("links").join(veth);
    assert!(link_pin.exists(), "link pin {} is gone", link_pin.display());
    let maps = std::fs::read_dir(paths.pin_dir.join("maps"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        maps > 0,
        "no pinned maps left in {}",
        paths.pin_dir.display()
    );

    // Without a daemon, `show` reads the pins and the kernel (exit 3).
    let show = cli_in_netns(&topo.server, &paths, &["show"]);
    show.expect_code(exit::NOT_RUNNING);
    let doc = show.json();
    assert_eq!(doc["daemon_running"], false, "{}", show.context());
    assert_eq!(doc["filtering"], true, "{}", show.context());
    assert_eq!(doc["generation"], generation, "{}", show.context());
    assert_eq!(doc["interfaces"][0]["name"], veth, "{}", show.context());
    assert_eq!(doc["interfaces"][0]["live"], true, "{}", show.context());
    assert_eq!(doc["interfaces"][0]["mode"], "native", "{}", show.context());
}

#[test]
fn restart_on_the_same_pins_adopts_them_without_failing_an_allowed_connection() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo, keep_options(&topo));
    let before = agent.show();
    let generation = before["generation"].as_u64().expect("a generation");
    let prog_id = before["interfaces"][0]["prog_id"].clone();
    assert!(prog_id.is_u64(), "show has no prog_id: {before:#}");

    let prober = Prober::start(
        &topo.client,
        ALLOWED_SRC,
        topo.server_addr(443),
        PROBE_INTERVAL,
        PROBE_TIMEOUT,
    );
    prober.wait_more(5, Duration::from_secs(10));
    let killed_at = Instant::now();
    let (policy, paths) = agent.kill();
    let _pins = LeftPins(paths.clone());
    prober.wait_more(5, Duration::from_secs(10));

    // The next daemon removes what it keeps when it stops (on-exit detach).
    let mut agent = Agent::spawn(
        &topo.server,
        policy,
        paths.clone(),
        AgentOptions::iface(topo.server_veth()),
    );
    agent.wait_ready();
    let ready_at = Instant::now();
    agent.wait_serving();
    probe_until(&prober, ready_at + Duration::from_secs(1));
    let probes = prober.stop();
    probes.assert_all_established(50, killed_at, ready_at + Duration::from_secs(1));

    let lines = agent.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "attached" && l["vaultfw"]["outcome"] == "adopted"),
        "the restarted daemon did not log that it adopted the pinned link:\n{}",
        agent.output()
    );
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("adopted pinned maps"))),
        "the restarted daemon did not log that it adopted the pinned maps:\n{}",
        agent.output()
    );
    let after = agent.show();
    assert_eq!(
        after["generation"], generation,
        "a restart is not a new policy: {after:#}"
    );
    assert_eq!(after["interfaces"][0]["attach"], "adopted", "{after:#}");
    assert_eq!(
        after["interfaces"][0]["prog_id"], prog_id,
        "the program was swapped: {after:#}"
    );
    assert_eq!(after["interfaces"][0]["mode"], "native", "{after:#}");

    // Counters carried over: every probe's SYN was counted, before and after.
    let established = probes.probes.len() as u64;
    let allowed = agent.counter("allow_ip_rule");
    assert!(
        allowed >= established,
        "allow_ip_rule {allowed} < {established} handshakes: the counters restarted from zero"
    );
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "after the restart");
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "after the restart");

    let stats = agent.stop();
    assert!(stats.is_final, "{}", stats.log());
    assert!(
        !xdp_attached(&topo.server, topo.server_veth()),
        "still attached after a detaching stop"
    );
    assert!(
        !paths.pin_dir.exists(),
        "{} left behind",
        paths.pin_dir.display()
    );
}

#[test]
fn stop_with_on_exit_keep_leaves_the_filter_and_show_says_so() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo, keep_options(&topo));
    let generation = agent.generation();
    assert_eq!(agent.show()["on_exit"], "keep");

    let (stats, _policy, paths) = agent.stop_keeping();
    let _pins = LeftPins(paths.clone());
    assert!(stats.is_final, "{}", stats.log());
    assert!(
        stats.stdout_lines().any(|l| l.contains("stays in force")),
        "the stop does not say the filter stays:\n{}",
        stats.log()
    );
    assert!(
        xdp_attached(&topo.server, topo.server_veth()),
        "a keeping stop detached"
    );
    assert_connects_without_agent(&topo, ALLOWED_SRC, 443, "after a keeping stop");
    assert_dropped_without_agent(&topo, DENIED_SRC, 443, "after a keeping stop");

    let show = cli_in_netns(&topo.server, &paths, &["show"]);
    show.expect_code(exit::NOT_RUNNING);
    let doc = show.json();
    assert_eq!(doc["daemon_running"], false, "{}", show.context());
    assert_eq!(doc["filtering"], true, "{}", show.context());
    assert_eq!(doc["generation"], generation, "{}", show.context());
}

/// A restart that re-creates the rule
/// maps (new limits) must move the pinned link to the new program; adopting
/// it because the instructions are equal left the kernel reading the old
/// tries, and every later change reached maps nobody read.
#[test]
fn a_restart_that_resizes_the_maps_swaps_the_program_so_changes_are_enforced() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo, keep_options(&topo));
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "before the restart");
    let (_, policy, paths) = agent.stop_keeping();
    let _pins = LeftPins(paths.clone());
    policy.write(&format!("limits = \"kv-current\"\n{POLICY}"));

    let mut agent = Agent::spawn(
        &topo.server,
        policy,
        paths,
        AgentOptions::iface(topo.server_veth()),
    );
    agent.wait_ready();
    agent.wait_serving();
    assert_eq!(
        agent.show()["interfaces"][0]["attach"],
        "replaced",
        "the link must move to the program that reads the new maps"
    );
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "after the resize");
    agent
        .cli_json(&["network-rule", "remove", "--ip-address", "203.0.113.0/24"])
        .ok();
    assert_dropped(
        &topo,
        &agent,
        ALLOWED_SRC,
        443,
        "the removed rule no longer admits",
    );
    agent.stop();
}
