//! Traffic a host decapsulates is judged too (the ACL protects the host,
//! not a list of interfaces): a tunnel between the two namespaces over their
//! veth, the agent run with `--iface all` as the systemd unit and the
//! DaemonSet run it, and real TCP to the data-plane port through the
//! tunnel — a denied inner source is refused, an allowed one connects.
//!
//! The outer packets (VXLAN's UDP 4789, IP-in-IP, GRE, WireGuard's UDP)
//! are control plane on the veth and pass; the inner packet is judged on
//! the tunnel device: with the Ethernet entry on vxlan, with the L3 entry
//! (frames start at the IP header) on ipip, gre, wireguard and tun. VXLAN
//! must work; a tunnel type this kernel cannot create is skipped with the
//! reason printed. The tun relay builds an L3 tunnel on every kernel.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use vaultfw_tests::agent::LeftPins;
use vaultfw_tests::tunnel::{TUNNEL_SERVER_IP, TunRelay, Tunnel, TunnelKind};
use vaultfw_tests::{Agent, AgentOptions, CONNECT_TIMEOUT, Connect, TcpServer, Topology, connect};

/// Allowed by the policy's IP rule.
const INNER_ALLOWED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);
/// Matched by no rule.
const INNER_DENIED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

/// Runs the agent with `--iface all` in `topo`'s server namespace, then
/// connects through the tunnel whose server end is `server_dev`: the
/// allowed inner source first (it also resolves the inner neighbours),
/// then the denied one. `program` is the entry point the tunnel device
/// must run (`"l2"` or `"l3"`).
fn a_denied_inner_source_is_refused_through(topo: &Topology, server_dev: &str, program: &str) {
    let _https = TcpServer::start(&topo.server, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443));
    let mut agent = Agent::start_with(&topo.server, POLICY, AgentOptions::iface("all"));
    agent.wait_ready();
    let show = agent.show();
    let tunnel = show["interfaces"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["name"] == server_dev))
        .unwrap_or_else(|| {
            panic!("--iface all did not attach to the tunnel device {server_dev}: {show:#}")
        });
    assert_eq!(tunnel["program"], program, "{show:#}");
    assert_eq!(tunnel["reason"], "all", "{show:#}");
    assert!(
        !tunnel["mode"].is_null(),
        "the kernel reports no XDP program on {server_dev}: {show:#}"
    );
    assert_eq!(show["protected"], true, "{show:#}");

    let target = SocketAddrV4::new(TUNNEL_SERVER_IP, 443);
    let allowed = connect(&topo.client, INNER_ALLOWED, target, Duration::from_secs(3));
    assert!(
        allowed.is_established(),
        "allowed inner source: {allowed:?}\n{}",
        agent.output()
    );
    let denied = connect(&topo.client, INNER_DENIED, target, CONNECT_TIMEOUT);
    assert!(
        matches!(denied, Connect::TimedOut),
        "denied inner source: {denied:?}\n{}",
        agent.output()
    );
    // Control plane through the tunnel still passes: only the data plane
    // is guarded (nothing listens on 444: a reset proves the SYN arrived).
    let other_port = connect(
        &topo.client,
        INNER_DENIED,
        SocketAddrV4::new(TUNNEL_SERVER_IP, 444),
        CONNECT_TIMEOUT,
    );
    assert!(
        matches!(other_port, Connect::Refused),
        "denied source to port 444: {other_port:?}"
    );

    let stats = agent.stop();
    assert_eq!(stats.get("deny_no_match"), 1, "{}", stats.log());
    assert!(stats.get("allow_ip_rule") >= 1, "{}", stats.log());
}

fn kernel_tunnel(kind: TunnelKind, program: &str) {
    let topo = Topology::new();
    let tunnel = match Tunnel::over(&topo, kind, &[INNER_ALLOWED, INNER_DENIED]) {
        Ok(tunnel) => tunnel,
        Err(reason) => {
            eprintln!("skipping: {reason}");
            return;
        }
    };
    a_denied_inner_source_is_refused_through(&topo, &tunnel.server_dev, program);
}

#[test]
fn vxlan_a_denied_inner_source_is_refused_and_an_allowed_one_connects() {
    let topo = Topology::new();
    let tunnel = Tunnel::over(&topo, TunnelKind::Vxlan, &[INNER_ALLOWED, INNER_DENIED])
        .unwrap_or_else(|reason| panic!("VXLAN is required here: {reason}"));
    a_denied_inner_source_is_refused_through(&topo, &tunnel.server_dev, "l2");
}

#[test]
fn ipip_a_denied_inner_source_is_refused_and_an_allowed_one_connects() {
    kernel_tunnel(TunnelKind::Ipip, "l3");
}

#[test]
fn gre_a_denied_inner_source_is_refused_and_an_allowed_one_connects() {
    kernel_tunnel(TunnelKind::Gre, "l3");
}

#[test]
fn wireguard_a_denied_inner_source_is_refused_and_an_allowed_one_connects() {
    kernel_tunnel(TunnelKind::Wireguard, "l3");
}

#[test]
fn tun_l3_device_a_denied_inner_source_is_refused_and_an_allowed_one_connects() {
    let topo = Topology::new();
    let relay = match TunRelay::new(&topo, &[INNER_ALLOWED, INNER_DENIED]) {
        Ok(relay) => relay,
        Err(reason) => {
            eprintln!("skipping: tun: {reason}");
            return;
        }
    };
    a_denied_inner_source_is_refused_through(&topo, &relay.server_dev, "l3");
}

#[test]
fn a_restart_adopts_the_l3_link_of_a_tunnel_device_and_it_keeps_judging() {
    let topo = Topology::new();
    let relay = match TunRelay::new(&topo, &[INNER_ALLOWED, INNER_DENIED]) {
        Ok(relay) => relay,
        Err(reason) => {
            eprintln!("skipping: tun: {reason}");
            return;
        }
    };
    let _https = TcpServer::start(&topo.server, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443));
    let mut keep = AgentOptions::iface("all");
    keep.on_exit = "keep";
    let mut agent = Agent::start_with(&topo.server, POLICY, keep);
    agent.wait_ready();
    let before = agent.show();
    let entry = |show: &serde_json::Value| -> serde_json::Value {
        show["interfaces"]
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|i| i["name"] == relay.server_dev.as_str())
                    .cloned()
            })
            .unwrap_or_else(|| panic!("{} not filtered: {show:#}", relay.server_dev))
    };
    let prog_id = entry(&before)["prog_id"].clone();
    assert!(prog_id.is_u64(), "{before:#}");
    let (_, policy, paths) = agent.stop_keeping();
    let _pins = LeftPins(paths.clone());

    let mut agent = Agent::spawn(&topo.server, policy, paths, AgentOptions::iface("all"));
    agent.wait_ready();
    let after = agent.show();
    let tunnel = entry(&after);
    // Compared with the L3 program it runs, not the Ethernet one: kept.
    assert_eq!(tunnel["attach"], "adopted", "{after:#}");
    assert_eq!(tunnel["program"], "l3", "{after:#}");
    assert_eq!(
        tunnel["prog_id"], prog_id,
        "the program was swapped: {after:#}"
    );

    let target = SocketAddrV4::new(TUNNEL_SERVER_IP, 443);
    let allowed = connect(&topo.client, INNER_ALLOWED, target, Duration::from_secs(3));
    assert!(allowed.is_established(), "{allowed:?}\n{}", agent.output());
    let denied = connect(&topo.client, INNER_DENIED, target, CONNECT_TIMEOUT);
    assert!(
        matches!(denied, Connect::TimedOut),
        "{denied:?}\n{}",
        agent.output()
    );
    agent.stop();
}
