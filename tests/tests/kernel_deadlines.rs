//! Deadlines hold with no daemon running: the kernel enforces them. An
//! unconfirmed `apply --confirm-within` that opened the data plane (`default_action = "Allow"`) is rolled back by the
//! XDP program itself at its deadline after the daemon was killed, and a
//! restart then reports the rollback, with `show`, the policy file and the
//! kernel in agreement; a stop (SIGTERM, `--on-exit keep`) rolls a pending
//! apply back before it exits; an IP rule's `expires_at` stops admitting on
//! time after the daemon was killed. Every check is a real TCP connection.
//!
//! Waits past a deadline are generous (seconds); a check that must come
//! before a deadline has tens of seconds of room, or is made right after
//! the step that starts the clock.

use std::time::{Duration, SystemTime};

use vaultfw_tests::agent::{LeftPins, xdp_attached};
use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::{
    assert_connects, assert_connects_without_agent, assert_dropped, assert_dropped_without_agent,
};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, DEADLINE_LEAD, DENIED_SRC, PolicyFile, TcpServer, Topology,
    cli_in_netns, confirm_within_lead,
};

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

/// The change an operator regrets: the data plane open to everyone.
const OPEN: &str = r#"
default_action = "Allow"
bypass = "None"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
"#;

/// How long past a deadline the checks wait: the coarse clock is exact to
/// a few ms; this is for a busy machine.
const PAST_DEADLINE: Duration = Duration::from_secs(2);

fn keep_options(topo: &Topology) -> AgentOptions {
    AgentOptions {
        on_exit: "keep",
        ..AgentOptions::iface(topo.server_veth())
    }
}

fn serving(topo: &Topology) -> Agent {
    let mut agent = Agent::start_with(&topo.server, POLICY, keep_options(topo));
    agent.wait_ready();
    agent.wait_serving();
    agent
}

/// The audit records among daemon log `lines` with this `event.action`.
fn audit_records(lines: &[serde_json::Value], action: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["event"]["dataset"] == "vaultfw.audit" && l["event"]["action"] == action)
        .cloned()
        .collect()
}

fn sleep_until(at: SystemTime) {
    std::thread::sleep(at.duration_since(SystemTime::now()).unwrap_or_default());
}

#[test]
fn an_unconfirmed_allow_is_rolled_back_by_the_kernel_at_its_deadline_after_sigkill() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo);
    let generation = agent.generation();
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "before the apply");

    let open = PolicyFile::named("open.toml", OPEN);
    let applied_at = SystemTime::now();
    let out = agent.cli_json(&[
        "apply",
        open.path_str(),
        "--confirm-within",
        &confirm_within_lead(),
    ]);
    let doc = out.ok();
    assert_eq!(doc["generation"], generation + 1, "{}", out.context());
    let deadline = SystemTime::now() + DEADLINE_LEAD;
    assert_connects(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "the unconfirmed Allow, before its deadline",
    );

    let (policy, paths) = agent.kill();
    let _pins = LeftPins(paths.clone());
    if SystemTime::now() + Duration::from_millis(1500) < applied_at + DEADLINE_LEAD {
        // Nothing but the deadline rolls it back: killed, it stays open.
        assert_connects_without_agent(&topo, DENIED_SRC, 443, "after SIGKILL, before the deadline");
    }
    sleep_until(deadline + PAST_DEADLINE);
    assert_dropped_without_agent(&topo, DENIED_SRC, 443, "past the deadline with no daemon");
    assert_connects_without_agent(&topo, ALLOWED_SRC, 443, "the previous policy's rule");
    let pinned = cli_in_netns(&topo.server, &paths, &["show"]);
    pinned.expect_code(exit::NOT_RUNNING);
    assert_eq!(
        pinned.json()["generation"],
        generation,
        "without a daemon, show reads the generation the kernel serves: {}",
        pinned.context()
    );

    // A restart on the same pins says what the kernel did, and everything
    // agrees with what it enforces.
    let mut agent = Agent::spawn(&topo.server, policy, paths.clone(), keep_options(&topo));
    agent.wait_ready();
    agent.wait_serving();
    let reported = agent.log_lines().into_iter().find(|l| {
        l["vaultfw"]["by_kernel"] == true && l["vaultfw"]["dropped_generation"] == generation + 1
    });
    assert!(
        reported.is_some(),
        "the start did not report the kernel's rollback:\n{}",
        agent.output()
    );
    let show = agent.show();
    assert_eq!(show["default_action"], "Deny", "{show:#}");
    assert_eq!(show["generation"], generation, "{show:#}");
    assert!(show["awaiting_confirmation_until"].is_null(), "{show:#}");
    let rollbacks = audit_records(&agent.log_lines(), "rollback");
    assert_eq!(rollbacks.len(), 1, "one audit record: {rollbacks:#?}");
    let record = &rollbacks[0]["vaultfw"];
    assert_eq!(record["outcome"], "applied", "{rollbacks:#?}");
    assert_eq!(rollbacks[0]["event"]["reason"], "timer", "{rollbacks:#?}");
    assert_eq!(record["generation"]["before"], generation + 1, "{record:#}");
    assert_eq!(record["generation"]["after"], generation, "{record:#}");
    // The restarted daemon knows the apply is gone: no confirm succeeds.
    let late = agent.cli_json(&["confirm"]);
    late.expect_code(exit::INVALID_INPUT);
    assert!(
        late.error_message()
            .contains(&format!("generation {} was rolled back", generation + 1)),
        "{}",
        late.context()
    );
    let file = std::fs::read_to_string(agent.policy().path()).expect("policy file");
    assert_eq!(
        file, POLICY,
        "the policy file must hold the policy in force"
    );
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "after the restart");
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "after the restart");
    agent.stop();
}

#[test]
fn a_stop_with_on_exit_keep_rolls_a_pending_apply_back_before_exiting() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo);
    let generation = agent.generation();
    let open = PolicyFile::named("open.toml", OPEN);
    // A deadline far enough away that anything seen before it is the
    // stop's doing, not the kernel's.
    agent
        .cli_json(&["apply", open.path_str(), "--confirm-within", "120s"])
        .ok();
    let deadline = SystemTime::now() + Duration::from_secs(120);
    assert_connects(&topo, &agent, DENIED_SRC, 443, "the unconfirmed Allow");

    let (stats, _policy, paths) = agent.stop_keeping();
    let _pins = LeftPins(paths.clone());
    assert_dropped_without_agent(&topo, DENIED_SRC, 443, "right after the stop");
    assert_connects_without_agent(&topo, ALLOWED_SRC, 443, "the previous policy's rule");
    assert!(
        SystemTime::now() < deadline,
        "checked after the deadline: proves nothing"
    );
    let rolled_back = stats.stdout_lines().any(|l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|l| {
            l["message"] == "unconfirmed apply rolled back"
                && l["vaultfw"]["generation"] == generation
        })
    });
    assert!(
        rolled_back,
        "the stop did not log the rollback:\n{}",
        stats.log()
    );
    let lines: Vec<serde_json::Value> = stats
        .stdout_lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let rollbacks = audit_records(&lines, "rollback");
    assert_eq!(rollbacks.len(), 1, "one audit record: {}", stats.log());
    assert_eq!(
        rollbacks[0]["event"]["reason"], "shutdown",
        "{rollbacks:#?}"
    );
    let record = &rollbacks[0]["vaultfw"];
    assert_eq!(record["outcome"], "applied", "{record:#}");
    assert_eq!(record["generation"]["before"], generation + 1, "{record:#}");
    assert_eq!(record["generation"]["after"], generation, "{record:#}");
    assert!(
        xdp_attached(&topo.server, topo.server_veth()),
        "--on-exit keep must leave the filter attached"
    );
    let pinned = cli_in_netns(&topo.server, &paths, &["show"]);
    pinned.expect_code(exit::NOT_RUNNING);
    assert_eq!(
        pinned.json()["generation"],
        generation,
        "{}",
        pinned.context()
    );
}

#[test]
fn an_expiring_ip_rule_stops_admitting_on_time_after_sigkill() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo);
    let expires = SystemTime::now() + DEADLINE_LEAD;
    let with_contractor = PolicyFile::named(
        "contractor.toml",
        &format!(
            r#"default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24", {{ value = "{DENIED_SRC}", comment = "contractor", expires_at = "{}" }}]

[data_plane]
tcp_ports = [443]
"#,
            humantime::format_rfc3339_millis(expires)
        ),
    );
    agent.cli_json(&["apply", with_contractor.path_str()]).ok();

    let (_policy, paths) = agent.kill();
    let _pins = LeftPins(paths);
    assert_connects_without_agent(&topo, DENIED_SRC, 443, "before its expiry, no daemon");
    sleep_until(expires + PAST_DEADLINE);
    assert_dropped_without_agent(&topo, DENIED_SRC, 443, "after its expiry, no daemon");
    assert_connects_without_agent(&topo, ALLOWED_SRC, 443, "the rule without expiry");
}

/// After a rollback the next change gets a number above the rolled-back
/// generation — also across a restart — so `--if-generation N` always
/// names one policy, never two.
#[test]
fn a_rolled_back_generation_number_is_never_issued_again() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo);
    let generation = agent.generation();
    let open = PolicyFile::named("open.toml", OPEN);
    let applied = agent
        .cli_json(&["apply", open.path_str(), "--confirm-within", "120s"])
        .ok();
    assert_eq!(applied["generation"], generation + 1);
    // A stop rolls it back; the restart serves `generation` again.
    let (_, policy, paths) = agent.stop_keeping();
    let _pins = LeftPins(paths.clone());
    let mut restarted = Agent::spawn(&topo.server, policy, paths, keep_options(&topo));
    restarted.wait_ready();
    restarted.wait_serving();
    assert_eq!(
        restarted.generation(),
        generation,
        "the rollback serves the previous generation"
    );
    let refused = restarted.cli_json(&[
        "network-rule",
        "add",
        "--ip-address",
        "198.51.100.7",
        "--if-generation",
        &(generation + 1).to_string(),
    ]);
    refused.expect_code(exit::CONFLICT);
    let added = restarted
        .cli_json(&["network-rule", "add", "--ip-address", "198.51.100.7"])
        .ok();
    assert_eq!(
        added["generation"],
        generation + 2,
        "the rolled-back number is skipped"
    );
    assert_connects(&topo, &restarted, DENIED_SRC, 443, "the added rule serves");
    restarted.stop();
}

/// A policy whose subnet rule makes a second link an endpoint (filtered
/// without `--iface`), and one without it.
fn endpoint_policies(endpoint: &str) -> (String, String) {
    let with = format!(
        "{POLICY}\n[[virtual_network_rules]]\nid = \"vnet-app/subnets/app\"\naddress_prefixes = [\"10.1.2.0/24\"]\nendpoint = {{ interface = \"{endpoint}\" }}\n"
    );
    (with, POLICY.to_owned())
}

/// `src` to the second link's server, through that link.
fn through_endpoint(topo: &Topology, src: std::net::Ipv4Addr) -> vaultfw_tests::Connect {
    let addr = std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 1, 2, 1), 443);
    vaultfw_tests::connect(&topo.client, src, addr, Duration::from_millis(800))
}

/// An unconfirmed apply that stops naming an endpoint interface leaves it
/// filtered until it is confirmed: rolled back — by the daemon at the
/// deadline, or by the kernel alone after a SIGKILL — the previous policy
/// judges that interface again; it is never left open.
#[test]
fn a_rolled_back_apply_leaves_the_previous_policys_endpoint_filtered() {
    let inside = std::net::Ipv4Addr::new(10, 1, 2, 5);
    let outside = std::net::Ipv4Addr::new(10, 9, 9, 9);
    let topo = Topology::new();
    let (_, endpoint) = topo.add_private_link("10.1.2.1/24", &[inside, outside]);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let _private = TcpServer::start(
        &topo.server,
        std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 1, 2, 1), 443),
    );
    let (with, without) = endpoint_policies(&endpoint);
    let check = |why: &str| {
        assert!(
            matches!(
                through_endpoint(&topo, outside),
                vaultfw_tests::Connect::TimedOut
            ),
            "{why}: {outside} through {endpoint} is dropped"
        );
        assert!(
            matches!(
                through_endpoint(&topo, inside),
                vaultfw_tests::Connect::Established { .. }
            ),
            "{why}: the subnet connects through {endpoint}"
        );
    };
    for kill in [false, true] {
        let mut agent = Agent::start_with(&topo.server, &with, keep_options(&topo));
        agent.wait_ready();
        agent.wait_serving();
        check("the declared policy");
        let draft = PolicyFile::named("without.toml", &without);
        agent
            .cli_json(&["apply", draft.path_str(), "--confirm-within", "3s"])
            .ok();
        let deadline = SystemTime::now() + Duration::from_secs(3);
        assert!(
            matches!(
                through_endpoint(&topo, outside),
                vaultfw_tests::Connect::TimedOut
            ),
            "while unconfirmed, {endpoint} stays filtered"
        );
        if kill {
            let (_policy, paths) = agent.kill();
            let _pins = LeftPins(paths);
            sleep_until(deadline + PAST_DEADLINE);
            check("rolled back by the kernel, no daemon");
        } else {
            sleep_until(deadline + PAST_DEADLINE);
            check("rolled back by the daemon");
            agent.stop();
        }
    }
}

#[test]
fn a_confirm_after_the_daemon_rolled_back_at_the_deadline_is_refused_and_audited() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo);
    let generation = agent.generation();
    let open = PolicyFile::named("open.toml", OPEN);
    agent
        .cli_json(&["apply", open.path_str(), "--confirm-within", "2s"])
        .ok();
    let deadline = SystemTime::now() + Duration::from_secs(2);
    sleep_until(deadline + PAST_DEADLINE);
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "past the deadline");

    let late = agent.cli_json(&["confirm"]);
    late.expect_code(exit::INVALID_INPUT);
    let message = late.error_message();
    assert!(
        message.contains(&format!(
            "the apply of generation {} was rolled back at ",
            generation + 1
        )) && message.contains("apply it again"),
        "{}",
        late.context()
    );
    let confirms = audit_records(&agent.log_lines(), "confirm");
    assert_eq!(confirms.len(), 1, "{confirms:#?}");
    assert_eq!(
        confirms[0]["vaultfw"]["outcome"], "refused",
        "{confirms:#?}"
    );
    // Refused, and still nothing served from the rolled-back apply.
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "after the late confirm");
    assert_connects(
        &topo,
        &agent,
        ALLOWED_SRC,
        443,
        "the previous policy's rule",
    );
    assert_eq!(agent.generation(), generation);

    // A new apply, confirmed, ends the refusal; then nothing is pending.
    agent
        .cli_json(&["apply", open.path_str(), "--confirm-within", "60s"])
        .ok();
    assert_eq!(agent.cli_json(&["confirm"]).ok()["confirmed"], true);
    let again = agent.cli_json(&["confirm"]).ok();
    assert_eq!(again["confirmed"], false, "{again:#}");
    assert_connects(&topo, &agent, DENIED_SRC, 443, "the confirmed Allow");
    agent.stop();
}
