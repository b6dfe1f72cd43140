//! Every allow path of the Key Vault ACL end to end, each with its
//! negative: a subnet arriving through its service endpoint (and the same
//! source spoofed on the public interface), a VLAN-bound subnet (raw
//! 802.1Q frames: the host kernel has no 802.1Q module), and a trusted
//! service with the bypass on and off.

use std::net::Ipv4Addr;
use std::time::Duration;

use vaultfw_tests::raw::{mac, send_frames, tcp_syn};
use vaultfw_tests::{
    Agent, AgentOptions, CONNECT_TIMEOUT, Connect, PolicyFile, SERVER_IP, TcpServer, Topology,
    connect, connect_from,
};

const SUBNET_SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
const PRIVATE_SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 1);

#[test]
fn a_subnet_passes_through_its_endpoint_and_is_dropped_when_spoofed_on_the_public_interface() {
    let topo = Topology::new();
    let (_, private_server) = topo.add_private_link("10.1.2.1/24", &[SUBNET_SRC]);
    let _https = TcpServer::start(
        &topo.server,
        std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443),
    );
    let policy = format!(
        r#"
default_action = "Deny"
ip_rules = ["203.0.113.0/24"]

[[virtual_network_rules]]
id = "vnet-prod/subnets/app"
address_prefixes = ["10.1.2.0/24"]
endpoint = {{ interface = "{private_server}" }}
"#
    );
    let mut options = AgentOptions::iface(topo.server_veth());
    options.ifaces.push(private_server.clone());
    let mut agent = Agent::start_with(&topo.server, &policy, options);
    agent.wait_ready();

    // Through the endpoint: allowed.
    let via_endpoint = connect(
        &topo.client,
        SUBNET_SRC,
        std::net::SocketAddrV4::new(PRIVATE_SERVER, 443),
        Duration::from_secs(2),
    );
    assert!(
        via_endpoint.is_established(),
        "{via_endpoint:?}\n{}",
        agent.output()
    );
    // The same private source on the public interface: spoofed, dropped.
    for _ in 0..3 {
        let spoofed = connect(
            &topo.client,
            SUBNET_SRC,
            topo.server_addr(443),
            CONNECT_TIMEOUT,
        );
        assert!(
            matches!(spoofed, Connect::TimedOut),
            "{spoofed:?}\n{}",
            agent.output()
        );
    }
    let stats = agent.stop();
    assert!(stats.get("allow_vnet_rule") >= 1, "{}", stats.log());
    assert_eq!(stats.get("deny_no_match"), 3, "{}", stats.log());
}

#[test]
fn a_vlan_bound_subnet_matches_only_frames_tagged_with_its_vlan() {
    let topo = Topology::new();
    let policy = r#"
default_action = "Deny"

[[virtual_network_rules]]
id = "vnet-prod/subnets/vlan120"
address_prefixes = ["10.3.0.0/16"]
endpoint = { vlan = 120 }
"#;
    let mut agent = Agent::start(&topo.server, topo.server_veth(), policy);
    agent.wait_ready();
    let client_mac = mac(&topo.client, topo.client_veth());
    let server_mac = mac(&topo.server, topo.server_veth());
    let src = Ipv4Addr::new(10, 3, 0, 5);
    let frame = |vlan| tcp_syn(client_mac, server_mac, vlan, src, SERVER_IP, 443);
    // 4 tagged with VLAN 120 (allowed), 3 untagged and 2 on VLAN 121 (denied).
    let mut frames = vec![frame(Some(120)); 4];
    frames.extend(vec![frame(None); 3]);
    frames.extend(vec![frame(Some(121)); 2]);
    send_frames(&topo.client, topo.client_veth(), &frames);
    // A last control-plane frame that must be counted proves the others were
    // judged (one queue, in order).
    let marker = tcp_syn(client_mac, server_mac, None, src, SERVER_IP, 22);
    send_frames(&topo.client, topo.client_veth(), &[marker]);
    let stats = wait_for_counter(agent, "pass_control_plane", 1);
    stats.assert_counters(&[
        ("allow_vnet_rule", 4),
        ("deny_no_match", 5),
        ("pass_control_plane", 1),
    ]);
}

/// A Microsoft-format service-tags file holding 192.0.2.128/29 under
/// AzureBackup, an IPv6 prefix to be skipped, and Sql.
const SERVICE_TAGS: &str = r#"{
  "changeNumber": 1,
  "cloud": "Public",
  "values": [
    { "name": "AzureBackup", "id": "AzureBackup",
      "properties": { "changeNumber": 1, "region": "", "platform": "Azure", "systemService": "AzureBackup",
                      "addressPrefixes": ["192.0.2.128/29", "2001:db8::/32"] } },
    { "name": "Sql", "id": "Sql",
      "properties": { "changeNumber": 1, "region": "", "platform": "Azure", "systemService": "AzureSQL",
                      "addressPrefixes": ["198.51.100.64/27"] } }
  ]
}"#;

fn trusted_policy(bypass: &str, tags: &PolicyFile) -> String {
    format!(
        r#"
default_action = "Deny"
bypass = "{bypass}"

[trusted_services]
service_tags_file = "{}"
"#,
        tags.path_str()
    )
}

#[test]
fn a_trusted_service_passes_only_with_the_bypass_on() {
    let trusted = Ipv4Addr::new(192, 0, 2, 130);
    let outside = Ipv4Addr::new(192, 0, 2, 140);
    let topo = Topology::with_client_addrs(&[trusted, outside]);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let tags = PolicyFile::named("ServiceTags_Public.json", SERVICE_TAGS);

    let mut agent = Agent::start(
        &topo.server,
        topo.server_veth(),
        &trusted_policy("AzureServices", &tags),
    );
    agent.wait_ready();
    assert!(
        connect_from(
            &topo.client,
            trusted,
            topo.server_addr(443),
            Duration::from_secs(2)
        ),
        "{}",
        agent.output()
    );
    assert!(matches!(
        connect(
            &topo.client,
            outside,
            topo.server_addr(443),
            CONNECT_TIMEOUT
        ),
        Connect::TimedOut
    ));
    // Bypass off through the CLI: the same source is refused from then on.
    let out = agent.cli(&["update", "--bypass", "None", "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(matches!(
        connect(
            &topo.client,
            trusted,
            topo.server_addr(443),
            CONNECT_TIMEOUT
        ),
        Connect::TimedOut
    ));
    let stats = agent.stop();
    assert!(stats.get("allow_trusted_service") >= 1, "{}", stats.log());
    assert_eq!(stats.get("deny_no_match"), 2, "{}", stats.log());
}

/// Stops the agent once `counter` reached `at_least` in a periodic line
/// (bounded wait), returning the final counters.
fn wait_for_counter(agent: Agent, counter: &str, at_least: u64) -> vaultfw_tests::FinalStats {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let seen = agent
            .output()
            .lines()
            .filter_map(vaultfw_tests::stats::parse_counters)
            .any(|(counters, _)| counters.get(counter).copied().unwrap_or(0) >= at_least);
        if seen {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.stop()
}
