//! A stop is explicit at every moment: the daemon says
//! `"filtering"` only once SIGTERM and SIGINT lead to its ordered shutdown,
//! so a service manager (or a test) that stops it right after it reported
//! ready still gets the `--on-exit` action, the final counters and exit 0 —
//! never a process killed by the signal's default action, with the pinned
//! filter left behind although `--on-exit detach` was asked for.

use nix::sys::signal::Signal;
use vaultfw_tests::agent::{AgentOptions, xdp_attached};
use vaultfw_tests::{Agent, Topology};

const POLICY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]
"#;

/// Starts from scratch this many times: the window, if any, is short.
const ROUNDS: usize = 10;

fn stop_right_after_ready(signal: Signal) {
    let topo = Topology::new();
    for round in 0..ROUNDS {
        let mut agent = Agent::start_with(
            &topo.server,
            POLICY,
            AgentOptions::iface(topo.server_veth()),
        );
        agent.wait_ready();
        let pin_dir = agent.paths().pin_dir.clone();
        if signal != Signal::SIGTERM {
            agent.signal(signal);
        }
        // `stop` sends SIGTERM (again, for SIGINT) and insists on exit 0
        // and a final counters line.
        let stats = agent.stop();
        assert!(
            stats.is_final,
            "round {round}: no final counters\n{}",
            stats.log()
        );
        assert!(
            !xdp_attached(&topo.server, topo.server_veth()),
            "round {round}: --on-exit detach left the program attached"
        );
        assert!(
            !pin_dir.exists(),
            "round {round}: {} left behind",
            pin_dir.display()
        );
    }
}

#[test]
fn sigterm_right_after_ready_runs_the_on_exit_action_and_exits_0() {
    stop_right_after_ready(Signal::SIGTERM);
}

#[test]
fn sigint_right_after_ready_runs_the_on_exit_action_and_exits_0() {
    stop_right_after_ready(Signal::SIGINT);
}
