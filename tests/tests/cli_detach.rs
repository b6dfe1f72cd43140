//! `vaultfw detach` removes the filter at any time (xdp-filter's test shape
//! "... unload → pins gone"): through a running daemon
//! — even one started with `--on-exit keep` — the answer comes back, the
//! daemon exits 0, no XDP program is left on the interface, the pin
//! directory is gone and the denied source gets in; and without a daemon
//! (after a crash) it removes the pinned filter directly.

use std::time::Duration;

use vaultfw_tests::agent::{LeftPins, xdp_attached};
use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::{
    assert_connects_without_agent, assert_dropped, assert_dropped_without_agent,
};
use vaultfw_tests::{Agent, AgentOptions, DENIED_SRC, TcpServer, Topology, cli_in_netns};

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

fn keeping(topo: &Topology) -> Agent {
    let options = AgentOptions {
        on_exit: "keep",
        ..AgentOptions::iface(topo.server_veth())
    };
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

#[test]
fn detach_through_the_daemon_removes_the_filter_and_the_daemon_exits_0() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let mut agent = keeping(&topo);
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "before detach");
    let pin_dir = agent.paths().pin_dir.clone();
    assert!(pin_dir.join("links").join(topo.server_veth()).exists());

    let out = agent.cli_json(&["detach"]);
    let doc = out.ok();
    assert_eq!(doc["detached"], true, "{}", out.context());
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "the daemon exited with {status} after detach\n{}",
        agent.output()
    );

    assert!(
        !xdp_attached(&topo.server, topo.server_veth()),
        "an XDP program is still attached"
    );
    assert!(!pin_dir.exists(), "{} is still there", pin_dir.display());
    assert_connects_without_agent(&topo, DENIED_SRC, 443, "the filter is gone");
    let show = cli_in_netns(&topo.server, agent.paths(), &["show"]);
    show.expect_code(exit::NOT_RUNNING);
    assert_eq!(show.json()["filtering"], false, "{}", show.context());
}

#[test]
fn detach_without_a_daemon_removes_the_pinned_filter() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = keeping(&topo);
    let (_policy, paths) = agent.kill();
    let _pins = LeftPins(paths.clone());
    assert_dropped_without_agent(&topo, DENIED_SRC, 443, "the crashed daemon's filter");

    let out = cli_in_netns(&topo.server, &paths, &["detach"]);
    let doc = out.ok();
    assert_eq!(doc["detached"], true, "{}", out.context());
    assert_eq!(doc["daemon_running"], false, "{}", out.context());
    let unpinned = doc["unpinned"].as_array().map(Vec::len).unwrap_or(0);
    assert!(unpinned > 1, "the link and the maps: {}", out.context());

    assert!(
        !xdp_attached(&topo.server, topo.server_veth()),
        "an XDP program is still attached"
    );
    assert!(
        !paths.pin_dir.exists(),
        "{} is still there",
        paths.pin_dir.display()
    );
    assert_connects_without_agent(&topo, DENIED_SRC, 443, "the filter is gone");
}
