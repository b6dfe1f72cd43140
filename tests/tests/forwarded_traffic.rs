//! Traffic the host forwards is not for its data plane. With `--iface all`
//! (the systemd unit, the DaemonSet) the program runs on every interface of
//! a host that routes for pods, containers or networks; their own
//! connections to a data-plane port elsewhere cross it. A frame the policy
//! would drop is passed with `--pass-forwarded`, as `pass_forwarded`, when
//! the kernel's routing would forward it out of the host — while a
//! connection to the host's own address stays dropped. By default forwarded
//! traffic is judged like local traffic (nothing passes by a path the
//! filter cannot see), and a router with forwarding off keeps the drop
//! (fails closed).
//!
//! ```text
//!   client ns (a "pod")       router ns (vaultfw --iface all)    upstream ns
//!   198.51.100.7  ------ 192.0.2.1 [XDP]   198.18.0.1 [XDP] ------ 198.18.0.2:443
//!                                  :443                           (TcpServer)
//! ```
//!
//! Also here: a restart whose maps change shape keeps the verdict counters
//! per interface and verdict, and (with `VAULTFW_PREVIOUS_BIN`) so does an
//! upgrade from the build before `pass_forwarded`, whose verdict-counter
//! rows are one verdict shorter.

use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::Value;
use vaultfw_tests::agent::LeftPins;
use vaultfw_tests::netns::unique_name;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, CONNECT_TIMEOUT, Connect, DENIED_SRC, NetNs, PROBE_TIMEOUT,
    SERVER_IP, TcpServer, Topology, connect,
};

/// Only 203.0.113.0/24 may reach the data plane (TCP 443): the client's
/// 198.51.100.7 is a "pod" the vault does not admit.
// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

/// [`POLICY`] with other limits, so other map shapes.
const POLICY_OTHER_LIMITS: &str = r#"
default_action = "Deny"
bypass = "None"
limits = { ip_rules = 300, virtual_network_rules = 30 }
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
"#;

/// The router's address on the upstream link (/24).
const ROUTER_UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The upstream host: a server the "pods" reach through the router.
const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// [`Topology`]'s client and server, the server made a router to a third
/// namespace, with TCP servers on port 443 upstream and on the router.
struct Routed {
    topo: Topology,
    _upstream: NetNs,
    /// The router's end of the upstream link.
    router_upstream_veth: String,
    upstream_server: TcpServer,
    _router_server: TcpServer,
}

impl Routed {
    fn new() -> Self {
        let topo = Topology::new();
        let upstream = NetNs::new("u");
        upstream.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        upstream.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        let (router_veth, upstream_veth) = (unique_name("r"), unique_name("u"));
        // Created directly inside the namespaces: never visible on the host.
        vaultfw_tests::netns::ip(&[
            "link",
            "add",
            &router_veth,
            "netns",
            topo.server.name(),
            "numtxqueues",
            "1",
            "numrxqueues",
            "1",
            "type",
            "veth",
            "peer",
            "name",
            &upstream_veth,
            "netns",
            upstream.name(),
            "numtxqueues",
            "1",
            "numrxqueues",
            "1",
        ]);
        topo.server
            .sysctl(&format!("net.ipv6.conf.{router_veth}.disable_ipv6"), "1");
        upstream.sysctl(&format!("net.ipv6.conf.{upstream_veth}.disable_ipv6"), "1");
        topo.server.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_UPSTREAM_IP}/24"),
            "dev",
            &router_veth,
        ]);
        topo.server.ip(&["link", "set", &router_veth, "up"]);
        upstream.ip(&[
            "addr",
            "add",
            &format!("{UPSTREAM_IP}/24"),
            "dev",
            &upstream_veth,
        ]);
        upstream.ip(&["link", "set", &upstream_veth, "up"]);
        upstream.ip(&[
            "route",
            "add",
            "default",
            "via",
            &ROUTER_UPSTREAM_IP.to_string(),
        ]);
        // The client reaches the upstream network through the router.
        topo.client.ip(&[
            "route",
            "add",
            "198.18.0.0/24",
            "via",
            &SERVER_IP.to_string(),
            "dev",
            topo.client_veth(),
            "onlink",
        ]);
        topo.server.sysctl("net.ipv4.ip_forward", "1");
        let upstream_server = TcpServer::start(&upstream, SocketAddrV4::new(UPSTREAM_IP, 443));
        let router_server = TcpServer::start(&topo.server, topo.server_addr(443));
        Routed {
            topo,
            _upstream: upstream,
            router_upstream_veth: router_veth,
            upstream_server,
            _router_server: router_server,
        }
    }

    /// The agent on every interface of the router, `extra` arguments added.
    fn agent(&self, policy: &str, extra: &[&str]) -> Agent {
        let mut options = AgentOptions::iface("all");
        options.extra_args = extra.iter().map(|a| (*a).to_owned()).collect();
        let mut agent = Agent::start_with(&self.topo.server, policy, options);
        agent.wait_ready();
        agent.wait_serving();
        agent
    }

    /// Connects from `src` in the client namespace to upstream:443 through
    /// the router.
    fn connect_upstream(&self, src: Ipv4Addr, timeout: std::time::Duration) -> Connect {
        connect(
            &self.topo.client,
            src,
            SocketAddrV4::new(UPSTREAM_IP, 443),
            timeout,
        )
    }
}

/// `vaultfw stats`: the counters of interface `name`.
fn interface_counters(agent: &Agent, name: &str) -> serde_json::Map<String, Value> {
    let stats = agent.cli_json(&["stats"]).ok();
    stats["interfaces"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["name"] == name))
        .and_then(|i| i["counters"].as_object().cloned())
        .unwrap_or_else(|| panic!("stats has no counters for {name}: {stats:#}"))
}

fn count(counters: &serde_json::Map<String, Value>, name: &str) -> u64 {
    counters[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}: {counters:?}"))
}

#[test]
fn forwarded_connection_passes_while_the_hosts_own_data_plane_stays_closed() {
    let net = Routed::new();
    let agent = net.agent(POLICY, &["--pass-forwarded"]);
    assert_eq!(agent.show()["forwarded_traffic"], "passed");

    match net.connect_upstream(DENIED_SRC, PROBE_TIMEOUT) {
        Connect::Established { greeting } => assert_eq!(greeting.trim(), "vaultfw-test 443"),
        other => panic!(
            "a pod's own connection to upstream:443 through the router should pass, got {other:?}\n{}",
            agent.output()
        ),
    }
    assert_eq!(
        net.upstream_server.accepted(),
        1,
        "the upstream server saw it"
    );
    let client_side = interface_counters(&agent, net.topo.server_veth());
    assert!(
        count(&client_side, "pass_forwarded") >= 1,
        "the forwarded SYN counts as pass_forwarded where it entered: {client_side:?}"
    );
    assert_eq!(count(&client_side, "deny_no_match"), 0, "{client_side:?}");

    // The host's own data plane: the same source, the router's address.
    assert_dropped(
        &net.topo,
        &agent,
        DENIED_SRC,
        443,
        "the router's own port 443",
    );
    let forwarded = count(
        &interface_counters(&agent, net.topo.server_veth()),
        "pass_forwarded",
    );
    let counters = agent.counters();
    assert_eq!(
        counters["deny_no_match"], 1,
        "exactly the one SYN to the host: {counters:?}"
    );
    // An admitted source is judged by the rules, not by the route.
    assert_connects(
        &net.topo,
        &agent,
        ALLOWED_SRC,
        443,
        "an allowed source to the host",
    );
    assert!(
        matches!(
            net.connect_upstream(ALLOWED_SRC, PROBE_TIMEOUT),
            Connect::Established { .. }
        ),
        "an allowed source through the router"
    );
    assert_eq!(
        count(
            &interface_counters(&agent, net.topo.server_veth()),
            "pass_forwarded"
        ),
        forwarded,
        "a dropped or admitted frame to the host is never counted as forwarded"
    );
    let upstream_side = interface_counters(&agent, &net.router_upstream_veth);
    assert_eq!(
        count(&upstream_side, "deny_no_match") + count(&upstream_side, "pass_forwarded"),
        0,
        "replies from upstream are not data plane: {upstream_side:?}"
    );
    agent.stop();
}

#[test]
fn forwarded_connections_the_policy_does_not_admit_are_dropped_by_default() {
    let net = Routed::new();
    let agent = net.agent(POLICY, &[]);
    assert_eq!(agent.show()["forwarded_traffic"], "judged");
    assert!(
        agent.output().contains("run with --pass-forwarded"),
        "a forwarding host is warned:\n{}",
        agent.output()
    );

    match net.connect_upstream(DENIED_SRC, CONNECT_TIMEOUT) {
        Connect::TimedOut => {}
        other => panic!(
            "judged like local traffic, the SYN is dropped; got {other:?}\n{}",
            agent.output()
        ),
    }
    assert_eq!(net.upstream_server.accepted(), 0);
    let counters = agent.counters();
    assert_eq!(counters["deny_no_match"], 1, "{counters:?}");
    assert_eq!(counters["pass_forwarded"], 0, "{counters:?}");
    assert!(
        matches!(
            net.connect_upstream(ALLOWED_SRC, PROBE_TIMEOUT),
            Connect::Established { .. }
        ),
        "an admitted source still reaches upstream"
    );
    agent.stop();
}

#[test]
fn router_with_forwarding_off_keeps_the_drop() {
    let net = Routed::new();
    net.topo.server.sysctl("net.ipv4.conf.all.forwarding", "0");
    let agent = net.agent(POLICY, &["--pass-forwarded"]);

    match net.connect_upstream(DENIED_SRC, CONNECT_TIMEOUT) {
        Connect::TimedOut => {}
        other => panic!("no forwarding: nothing gets through; got {other:?}"),
    }
    // The kernel would not have forwarded it either; the counters show that
    // the program dropped it (FWD_DISABLED keeps the drop: fails closed).
    let counters = agent.counters();
    assert_eq!(
        counters["deny_no_match"], 1,
        "the program dropped the SYN: {counters:?}"
    );
    assert_eq!(counters["pass_forwarded"], 0, "{counters:?}");
    agent.stop();
}

/// A restart over pins whose maps change shape (other limits) keeps every
/// interface's verdict counters, verdict by verdict.
#[test]
fn restart_with_other_map_shapes_keeps_verdict_counters_per_interface() {
    let net = Routed::new();
    let mut options = AgentOptions::iface("all");
    options.on_exit = "keep";
    options.extra_args = vec!["--pass-forwarded".into()];
    let mut agent = Agent::start_with(&net.topo.server, POLICY, options.clone());
    agent.wait_ready();
    agent.wait_serving();
    assert!(matches!(
        net.connect_upstream(DENIED_SRC, PROBE_TIMEOUT),
        Connect::Established { .. }
    ));
    assert_dropped(&net.topo, &agent, DENIED_SRC, 443, "the host's own port");
    let before = interface_counters(&agent, net.topo.server_veth());
    let (_, policy, paths) = agent.stop_keeping();
    let _pins = LeftPins(paths.clone());
    policy.write(POLICY_OTHER_LIMITS);

    let mut restarted = Agent::spawn(&net.topo.server, policy, paths, options);
    restarted.wait_ready();
    restarted.wait_serving();
    assert!(
        restarted.output().contains("moving the filter to new maps"),
        "{}",
        restarted.output()
    );
    let after = interface_counters(&restarted, net.topo.server_veth());
    for name in ["deny_no_match", "pass_forwarded", "pass_control_plane"] {
        assert_eq!(
            count(&after, name),
            count(&before, name),
            "{name}: {before:?} -> {after:?}"
        );
    }
    restarted.stop();
}

/// An upgrade from the build before `pass_forwarded` (one verdict less per
/// interface row of the verdict counters, so the map is recreated) keeps
/// each interface's counters under the same verdict — not shifted by a
/// row's length. Needs that build in `VAULTFW_PREVIOUS_BIN`; skipped
/// without it.
#[test]
fn upgrade_to_pass_forwarded_keeps_verdict_counters_per_interface_and_verdict() {
    let Some(previous) = std::env::var_os("VAULTFW_PREVIOUS_BIN") else {
        eprintln!("skipping: set VAULTFW_PREVIOUS_BIN to a vaultfw built before pass_forwarded");
        return;
    };
    let net = Routed::new();
    let mut options = AgentOptions::iface("all");
    options.on_exit = "keep";
    let mut old = options.clone();
    old.binary = Some(previous.into());
    let mut agent = Agent::start_with(&net.topo.server, POLICY, old);
    agent.wait_ready();
    agent.wait_serving();
    assert_dropped(&net.topo, &agent, DENIED_SRC, 443, "the host's own port");
    assert_dropped(
        &net.topo,
        &agent,
        DENIED_SRC,
        443,
        "the host's own port, again",
    );
    assert_connects(&net.topo, &agent, ALLOWED_SRC, 443, "an allowed source");
    let before = interface_counters(&agent, net.topo.server_veth());
    let (_, policy, paths) = agent.stop_keeping();
    let _pins = LeftPins(paths.clone());

    let mut upgraded = Agent::spawn(&net.topo.server, policy, paths, options);
    upgraded.wait_ready();
    upgraded.wait_serving();
    assert!(
        upgraded.output().contains("moving the filter to new maps"),
        "{}",
        upgraded.output()
    );
    let after = interface_counters(&upgraded, net.topo.server_veth());
    for name in [
        "deny_no_match",
        "allow_ip_rule",
        "pass_control_plane",
        "pass_non_ip",
    ] {
        assert_eq!(
            count(&after, name),
            count(&before, name),
            "{name}: {before:?} -> {after:?}"
        );
    }
    assert_eq!(count(&after, "deny_no_match"), 2, "{after:?}");
    assert_eq!(count(&after, "pass_forwarded"), 0, "{after:?}");
    upgraded.stop();
}
