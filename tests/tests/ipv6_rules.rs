//! IPv6 rules end to end, over real IPv6 TCP on veth pairs: an IPv6 IP rule
//! admits its prefix (with and without an extension header before TCP)
//! while other IPv6 sources get the policy's `ipv6` default; a subnet
//! rule's unique-local prefix passes through its endpoint only; a
//! VLAN-bound IPv6 subnet matches only its VLAN's frames; a trusted
//! service's IPv6 prefix passes only with the bypass on.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use vaultfw_tests::ipv6::{
    ALLOWED_SRC6, DENIED_SRC6, SERVER_IP6, TcpServer6, assert_connects6, assert_dropped6,
    enable_ipv6, enable_ipv6_on, server_addr6, tcp6_syn,
};
use vaultfw_tests::raw::{mac, send_frames};
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, DENIED_SRC, PolicyFile, TcpServer, Topology,
};

const IPV6_RULE_POLICY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24", "2001:db8:1::/48"]

[data_plane]
tcp_ports = [443]
"#;

#[test]
fn an_ipv6_rule_admits_its_prefix_with_and_without_extension_headers_and_the_rest_is_denied() {
    let topo = Topology::new();
    enable_ipv6(&topo, &[]);
    let _https6 = TcpServer6::start(&topo.server, 443);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let _ssh6 = TcpServer6::start(&topo.server, 22);

    let mut agent = Agent::start(&topo.server, topo.server_veth(), IPV6_RULE_POLICY);
    agent.wait_ready();

    for dest_options in [false, true] {
        assert_connects6(
            &topo.client,
            &agent,
            ALLOWED_SRC6,
            server_addr6(443),
            dest_options,
            "inside the IPv6 rule",
        );
        assert_dropped6(
            &topo.client,
            &agent,
            DENIED_SRC6,
            server_addr6(443),
            dest_options,
            "outside every rule, ipv6 = Deny (default)",
        );
    }
    // The control plane stays open over IPv6; IPv4 rules keep their meaning.
    assert_connects6(
        &topo.client,
        &agent,
        DENIED_SRC6,
        server_addr6(22),
        false,
        "control plane",
    );
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "IPv4 rule");
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "no IPv4 rule");

    let rules = agent.cli(&["network-rule", "list", "--output", "json"]);
    let listed = String::from_utf8_lossy(&rules.stdout);
    assert!(rules.status.success(), "{listed}");
    assert!(listed.contains("2001:db8:1::/48"), "{listed}");

    // The access log shows IPv6 endpoints in brackets.
    let wanted = format!("deny_ipv6  tcp [{DENIED_SRC6}]:");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let out = agent.cli(&["logs"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(&wanted) || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(logs.contains(&wanted), "{logs}");
    assert!(logs.contains(&format!("-> [{SERVER_IP6}]:443")), "{logs}");

    let stats = agent.stop();
    assert_eq!(stats.get("deny_ipv6"), 2, "{}", stats.log());
    assert!(stats.get("allow_ip_rule") >= 3, "{}", stats.log());
}

#[test]
fn ipv6_sources_no_rule_matches_follow_the_ipv6_setting() {
    let topo = Topology::new();
    enable_ipv6(&topo, &[]);
    let _https6 = TcpServer6::start(&topo.server, 443);
    let policy =
        IPV6_RULE_POLICY.replace("bypass = \"None\"", "bypass = \"None\"\nipv6 = \"Allow\"");
    let mut agent = Agent::start(&topo.server, topo.server_veth(), &policy);
    agent.wait_ready();
    assert_connects6(
        &topo.client,
        &agent,
        DENIED_SRC6,
        server_addr6(443),
        true,
        "no rule matches; ipv6 = Allow",
    );
    assert_connects6(
        &topo.client,
        &agent,
        ALLOWED_SRC6,
        server_addr6(443),
        false,
        "the rule matches first",
    );
    let stats = agent.stop();
    assert!(stats.get("pass_ipv6") >= 1, "{}", stats.log());
    assert!(stats.get("allow_ip_rule") >= 1, "{}", stats.log());
    assert_eq!(stats.get("deny_ipv6"), 0, "{}", stats.log());
}

const SUBNET_SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 2, 0, 0, 0, 0, 3);
const PRIVATE_SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 2, 0, 0, 0, 0, 1);

#[test]
fn a_unique_local_subnet_passes_through_its_endpoint_and_is_dropped_on_the_public_interface() {
    let topo = Topology::new();
    let (private_client, private_server) = topo.add_private_link("10.1.2.1/24", &[]);
    enable_ipv6_on(
        &topo,
        &private_client,
        &private_server,
        &format!("{PRIVATE_SERVER6}/64"),
        &[SUBNET_SRC6],
    );
    // The same source on the public link: a spoof the endpoint binding refuses.
    enable_ipv6(&topo, &[SUBNET_SRC6]);
    let _https6 = TcpServer6::start(&topo.server, 443);
    let policy = format!(
        r#"
default_action = "Deny"

[[virtual_network_rules]]
id = "vnet-prod/subnets/app6"
address_prefixes = ["fd00:1:2::/64"]
endpoint = {{ interface = "{private_server}" }}
"#
    );
    let mut options = AgentOptions::iface(topo.server_veth());
    options.ifaces.push(private_server.clone());
    let mut agent = Agent::start_with(&topo.server, &policy, options);
    agent.wait_ready();

    assert_connects6(
        &topo.client,
        &agent,
        SUBNET_SRC6,
        SocketAddrV6::new(PRIVATE_SERVER6, 443, 0, 0),
        false,
        "through the endpoint",
    );
    assert_dropped6(
        &topo.client,
        &agent,
        SUBNET_SRC6,
        server_addr6(443),
        false,
        "the subnet's source on the public interface",
    );
    let stats = agent.stop();
    assert!(stats.get("allow_vnet_rule") >= 1, "{}", stats.log());
    assert_eq!(stats.get("deny_ipv6"), 1, "{}", stats.log());
}

#[test]
fn a_vlan_bound_ipv6_subnet_matches_only_frames_tagged_with_its_vlan() {
    let topo = Topology::new();
    let policy = r#"
default_action = "Deny"

[[virtual_network_rules]]
id = "vnet-prod/subnets/vlan120"
address_prefixes = ["2001:db8:120::/48"]
endpoint = { vlan = 120 }
"#;
    let mut agent = Agent::start(&topo.server, topo.server_veth(), policy);
    agent.wait_ready();
    let client_mac = mac(&topo.client, topo.client_veth());
    let server_mac = mac(&topo.server, topo.server_veth());
    let src = Ipv6Addr::new(0x2001, 0xdb8, 0x120, 0, 0, 0, 0, 5);
    let frame = |vlan| tcp6_syn(client_mac, server_mac, vlan, src, SERVER_IP6, 443);
    // 4 tagged with VLAN 120 (allowed), 3 untagged and 2 on VLAN 121 (denied).
    let mut frames = vec![frame(Some(120)); 4];
    frames.extend(vec![frame(None); 3]);
    frames.extend(vec![frame(Some(121)); 2]);
    send_frames(&topo.client, topo.client_veth(), &frames);
    // A control-plane frame counted last proves the others were judged.
    let marker = tcp6_syn(client_mac, server_mac, None, src, SERVER_IP6, 22);
    send_frames(&topo.client, topo.client_veth(), &[marker]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let seen = agent
            .output()
            .lines()
            .filter_map(vaultfw_tests::stats::parse_counters)
            .any(|(counters, _)| counters.get("pass_control_plane").copied().unwrap_or(0) >= 1);
        if seen {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = agent.stop();
    stats.assert_counters(&[
        ("allow_vnet_rule", 4),
        ("deny_ipv6", 5),
        ("pass_control_plane", 1),
    ]);
}

/// A service-tags file holding AzureBackup's IPv4 and IPv6 prefixes.
const SERVICE_TAGS: &str = r#"{
  "changeNumber": 1,
  "cloud": "Public",
  "values": [
    { "name": "AzureBackup", "id": "AzureBackup",
      "properties": { "changeNumber": 1, "region": "", "platform": "Azure", "systemService": "AzureBackup",
                      "addressPrefixes": ["192.0.2.128/29", "2001:db8:5::/48"] } }
  ]
}"#;

#[test]
fn a_trusted_service_passes_over_ipv6_only_with_the_bypass_on() {
    let trusted = Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 9);
    let topo = Topology::new();
    enable_ipv6(&topo, &[trusted]);
    let _https6 = TcpServer6::start(&topo.server, 443);
    let tags = PolicyFile::named("ServiceTags_Public.json", SERVICE_TAGS);
    let policy = format!(
        r#"
default_action = "Deny"
bypass = "AzureServices"

[trusted_services]
service_tags_file = "{}"
"#,
        tags.path_str()
    );
    let mut agent = Agent::start(&topo.server, topo.server_veth(), &policy);
    agent.wait_ready();
    assert_connects6(
        &topo.client,
        &agent,
        trusted,
        server_addr6(443),
        false,
        "a trusted service's IPv6 prefix, bypass on",
    );
    assert_dropped6(
        &topo.client,
        &agent,
        DENIED_SRC6,
        server_addr6(443),
        false,
        "not in the service's prefixes",
    );
    let out = agent.cli(&["update", "--bypass", "None", "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_dropped6(
        &topo.client,
        &agent,
        trusted,
        server_addr6(443),
        false,
        "the same source, bypass off",
    );
    let stats = agent.stop();
    assert!(stats.get("allow_trusted_service") >= 1, "{}", stats.log());
    assert_eq!(stats.get("deny_ipv6"), 2, "{}", stats.log());
}

#[test]
fn network_rule_add_and_remove_take_ipv6_addresses_and_list_counts_their_hits() {
    let topo = Topology::new();
    enable_ipv6(&topo, &[]);
    let _https6 = TcpServer6::start(&topo.server, 443);
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec!["--metrics-addr".into(), "127.0.0.1:9464".into()];
    let mut agent = Agent::start_with(
        &topo.server,
        "default_action = \"Deny\"\nbypass = \"None\"\nip_rules = [\"203.0.113.0/24\"]\n",
        options,
    );
    agent.wait_ready();
    assert_dropped6(
        &topo.client,
        &agent,
        ALLOWED_SRC6,
        server_addr6(443),
        false,
        "no IPv6 rule yet",
    );

    // Non-canonical text is accepted and canonicalised.
    let out = agent.cli(&["network-rule", "add", "--ip-address", "2001:db8:1:0::/48"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_connects6(
        &topo.client,
        &agent,
        ALLOWED_SRC6,
        server_addr6(443),
        false,
        "added over the CLI",
    );
    let list = agent.cli(&["network-rule", "list", "--output", "json"]);
    let json: serde_json::Value =
        serde_json::from_slice(&list.stdout).expect("list --output json is JSON");
    let rule = json["ip_rules"]
        .as_array()
        .expect("ip_rules")
        .iter()
        .find(|r| r["rule"] == "2001:db8:1::/48")
        .unwrap_or_else(|| panic!("the IPv6 rule is listed: {json}"));
    assert!(rule["packets"].as_u64().unwrap_or(0) >= 1, "{json}");
    let file = std::fs::read_to_string(agent.policy().path()).expect("policy file");
    assert!(file.contains("\"2001:db8:1::/48\""), "written back: {file}");
    // `export` writes the rule the way Azure services list IPv6 rules.
    let export =
        vaultfw_tests::vaultfw(&["export", agent.policy().path_str(), "--format", "azure"]);
    let exported = String::from_utf8_lossy(&export.stdout);
    assert!(export.status.success(), "{exported}");
    let json: serde_json::Value = serde_json::from_str(&exported).expect("export is JSON");
    assert_eq!(
        json["properties"]["networkAcls"]["ipv6Rules"],
        serde_json::json!([{ "value": "2001:db8:1::/48" }]),
        "{exported}"
    );
    let metrics = vaultfw_tests::traffic::http_get(&topo.server, "127.0.0.1:9464", "/metrics");
    let hits = metrics
        .lines()
        .find(|l| {
            l.starts_with(r#"vaultfw_rule_hit_packets_total{kind="ip6",rule="2001:db8:1::/48"}"#)
        })
        .unwrap_or_else(|| panic!("no metric for the IPv6 rule:\n{metrics}"));
    assert!(!hits.ends_with(" 0"), "{hits}");
    assert!(
        metrics.contains(r#"vaultfw_map_entries{table="ipv6_ip_rules"} 1"#),
        "{metrics}"
    );

    // A refused class: the error names the flag, the value, the RFC and the fix.
    let out = agent.cli(&["network-rule", "add", "--ip-address", "fe80::1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--ip-address") && err.contains("fe80::1") && err.contains("RFC 4291"),
        "{err}"
    );

    let out = agent.cli(&["network-rule", "remove", "--ip-address", "2001:db8:1::/48"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_dropped6(
        &topo.client,
        &agent,
        ALLOWED_SRC6,
        server_addr6(443),
        false,
        "removed over the CLI",
    );
    let file = std::fs::read_to_string(agent.policy().path()).expect("policy file");
    assert!(
        !file.contains("2001:db8:1::/48"),
        "removed from the file: {file}"
    );
    let stats = agent.stop();
    assert_eq!(stats.get("deny_ipv6"), 2, "{}", stats.log());
}

/// The maps a build before IPv6 rules did not have.
const IPV6_TRIES: [&str; 6] = [
    "VFW_IP6_RULES_0",
    "VFW_IP6_RULES_1",
    "VFW_VNET6_RULES_0",
    "VFW_VNET6_RULES_1",
    "VFW_TRUSTED6_0",
    "VFW_TRUSTED6_1",
];

const IPV4_ONLY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
"#;

/// Serves [`IPV4_ONLY`] with `binary` (this build when `None`), makes three
/// allowed connections, and stops leaving the filter in force; returns the
/// generation, the rule's packets, the policy and the paths.
fn serve_ipv4_only(
    topo: &Topology,
    binary: Option<std::path::PathBuf>,
) -> (u64, u64, PolicyFile, vaultfw_tests::AgentPaths) {
    let mut options = AgentOptions::iface(topo.server_veth());
    options.on_exit = "keep";
    options.binary = binary;
    let mut agent = Agent::start_with(&topo.server, IPV4_ONLY, options);
    agent.wait_ready();
    agent.wait_serving();
    for _ in 0..3 {
        assert_connects(topo, &agent, ALLOWED_SRC, 443, "before the upgrade");
    }
    let generation = agent.generation();
    let hits = agent.rule_packets("203.0.113.0/24");
    let (_, policy, paths) = agent.stop_keeping();
    (generation, hits, policy, paths)
}

/// Restarts on `paths` with this build and [`IPV6_RULE_POLICY`] written
/// into `policy`: the filter moves to maps with the IPv6 tries, the IPv4
/// rule keeps its counters and the generation numbering goes on, and the
/// IPv6 rule is enforced from then on.
fn upgrade_and_check(
    topo: &Topology,
    policy: PolicyFile,
    paths: vaultfw_tests::AgentPaths,
    generation: u64,
    hits: u64,
) {
    std::fs::write(policy.path(), IPV6_RULE_POLICY).expect("writing the new policy");
    let mut options = AgentOptions::iface(topo.server_veth());
    options.on_exit = "keep";
    let _pins = vaultfw_tests::agent::LeftPins(paths.clone());
    let mut agent = Agent::spawn(&topo.server, policy, paths, options);
    agent.wait_ready();
    agent.wait_serving();
    assert!(
        agent.output().contains("moving the filter to new maps"),
        "{}",
        agent.output()
    );
    assert!(agent.generation() > generation, "the numbering goes on");
    assert_eq!(
        agent.rule_packets("203.0.113.0/24"),
        hits,
        "the IPv4 rule keeps its counters"
    );
    assert_connects6(
        &topo.client,
        &agent,
        ALLOWED_SRC6,
        server_addr6(443),
        false,
        "the IPv6 rule, after the upgrade",
    );
    assert_dropped6(
        &topo.client,
        &agent,
        DENIED_SRC6,
        server_addr6(443),
        false,
        "no IPv6 rule, after the upgrade",
    );
    assert_connects(
        topo,
        &agent,
        ALLOWED_SRC,
        443,
        "the IPv4 rule, after the upgrade",
    );
    assert!(agent.rule_packets("2001:db8:1::/48") >= 1);
    agent.stop();
}

#[test]
fn pins_without_the_ipv6_tries_are_migrated_keeping_the_counters() {
    let topo = Topology::new();
    enable_ipv6(&topo, &[]);
    let _https6 = TcpServer6::start(&topo.server, 443);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let (generation, hits, policy, paths) = serve_ipv4_only(&topo, None);
    // What a build before IPv6 rules leaves pinned: no IPv6 tries (the
    // attached program keeps its own references to them).
    for name in IPV6_TRIES {
        let pin = paths.pin_dir.join("maps").join(name);
        std::fs::remove_file(&pin).unwrap_or_else(|e| panic!("removing {}: {e}", pin.display()));
    }
    upgrade_and_check(&topo, policy, paths, generation, hits);
}

/// The same from a real earlier build: needs a vaultfw built without IPv6
/// rules in `VAULTFW_PREVIOUS_BIN`; skipped without it.
#[test]
fn upgrade_from_a_build_without_ipv6_rules_keeps_the_counters() {
    let Some(previous) = std::env::var_os("VAULTFW_PREVIOUS_BIN") else {
        eprintln!("skipping: set VAULTFW_PREVIOUS_BIN to a vaultfw built without IPv6 rules");
        return;
    };
    let topo = Topology::new();
    enable_ipv6(&topo, &[]);
    let _https6 = TcpServer6::start(&topo.server, 443);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let (generation, hits, policy, paths) = serve_ipv4_only(&topo, Some(previous.into()));
    upgrade_and_check(&topo, policy, paths, generation, hits);
}
