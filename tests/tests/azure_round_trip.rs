//! A vault's ACL in, managed and back out, with the kernel checked by real
//! connections after every step: an `az keyvault show` document (full ARM
//! ids in mixed case, `publicNetworkAccess`, `ipRules` with and without
//! `/32`) runs with its subnet map; a CLI change to it is refused naming
//! the `vaultfw convert` command; converted and run as native TOML it
//! takes a CLI add (several addresses, comment, expiry) and a remove by a
//! full ARM id in another case; exported to Azure JSON and back to native
//! it serves the same. Then `publicNetworkAccess = Disabled` (a listed
//! public address refused, a subnet through its endpoint admitted, the
//! reason named by `show`, `check --explain` and the access log) and a
//! private endpoint (its prefix admitted on its interface only).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use serde_json::Value;
use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, AgentPaths, CONNECT_TIMEOUT, Connect, DENIED_SRC, PolicyFile,
    SERVER_IP, TcpServer, Topology, connect, vaultfw,
};

const SUB: &str = "0a1b2c3d-0000-4000-8000-00000000abcd";
/// Listed in the vault JSON as `203.0.113.77/32`.
const LISTED_SLASH32: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);
/// Added by the CLI with DENIED_SRC.
const ADDED_TOO: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
/// In subnet `app` (10.1.2.0/25), arriving through the private link.
const APP_SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
/// In subnet `data` (10.1.2.128/25), arriving through the private link.
const DATA_SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 200);
const PRIVATE_SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 1);

/// The full ARM id of subnet `subnet` of `VNet-Hub`, as ARM returns it
/// (lower-cased segments, mixed-case names).
fn arm_id(subnet: &str) -> String {
    format!(
        "/subscriptions/{}/resourcegroups/RG-Prod/providers/microsoft.network/virtualnetworks/\
         VNet-Hub/subnets/{subnet}",
        SUB.to_uppercase()
    )
}

/// `az keyvault show` of the vault, trimmed to what matters plus a few
/// fields vaultfw does not read.
fn vault_json() -> String {
    format!(
        r#"{{
  "id": "/subscriptions/{SUB}/resourceGroups/RG-Prod/providers/Microsoft.KeyVault/vaults/kv-prod",
  "location": "westeurope",
  "name": "kv-prod",
  "properties": {{
    "enableRbacAuthorization": true,
    "networkAcls": {{
      "bypass": "None",
      "defaultAction": "Deny",
      "ipRules": [ {{ "value": "203.0.113.5" }}, {{ "value": "203.0.113.77/32" }} ],
      "virtualNetworkRules": [
        {{ "id": "{}", "ignoreMissingVnetServiceEndpoint": false }},
        {{ "id": "{}", "ignoreMissingVnetServiceEndpoint": null }}
      ]
    }},
    "publicNetworkAccess": "Enabled",
    "sku": {{ "family": "A", "name": "standard" }},
    "tenantId": "00000000-0000-0000-0000-000000000000",
    "vaultUri": "https://kv-prod.vault.azure.net/"
  }},
  "resourceGroup": "RG-Prod",
  "type": "Microsoft.KeyVault/vaults"
}}
"#,
        arm_id("App"),
        arm_id("Data")
    )
}

/// The subnet map: short ids matched through `[defaults]`.
fn subnet_map(endpoint: &str) -> String {
    format!(
        r#"[defaults]
subscription = "{SUB}"
resource_group = "RG-Prod"

[data_plane]
tcp_ports = [443]

[[subnet]]
id = "vnet-hub/subnets/app"
address_prefixes = ["10.1.2.0/25"]
endpoint = {{ interface = "{endpoint}" }}

[[subnet]]
id = "VNET-HUB/subnets/DATA"
address_prefixes = ["10.1.2.128/25"]
endpoint = {{ interface = "{endpoint}" }}
comment = "data tier"
"#
    )
}

fn via_endpoint(topo: &Topology, src: Ipv4Addr) -> Connect {
    connect(
        &topo.client,
        src,
        SocketAddrV4::new(PRIVATE_SERVER, 443),
        Duration::from_secs(2),
    )
}

/// What the served policy admits, checked by connections: each public
/// source and each subnet source through the endpoint.
struct Expect<'a> {
    public_allowed: &'a [Ipv4Addr],
    public_dropped: &'a [Ipv4Addr],
    subnets_allowed: &'a [Ipv4Addr],
    subnets_dropped: &'a [Ipv4Addr],
}

impl Expect<'_> {
    fn check(&self, topo: &Topology, agent: &Agent, step: &str) {
        for src in self.public_allowed {
            assert_connects(topo, agent, *src, 443, step);
        }
        for src in self.public_dropped {
            assert_dropped(topo, agent, *src, 443, step);
        }
        for src in self.subnets_allowed {
            let c = via_endpoint(topo, *src);
            assert!(
                c.is_established(),
                "{step}: {src} through the endpoint: {c:?}\n{}",
                agent.output()
            );
        }
        for src in self.subnets_dropped {
            let c = connect(
                &topo.client,
                *src,
                SocketAddrV4::new(PRIVATE_SERVER, 443),
                CONNECT_TIMEOUT,
            );
            assert!(
                matches!(c, Connect::TimedOut),
                "{step}: {src} through the endpoint should be dropped: {c:?}\n{}",
                agent.output()
            );
        }
    }
}

fn start(topo: &Topology, policy: PolicyFile, endpoint: &str, map: Option<&str>) -> Agent {
    let paths = AgentPaths::new(&policy);
    let mut options = AgentOptions::iface(topo.server_veth());
    options.ifaces.push(endpoint.to_owned());
    if let Some(map) = map {
        options.extra_args = vec!["--subnet-map".to_owned(), map.to_owned()];
    }
    let mut agent = Agent::spawn(&topo.server, policy, paths, options);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

fn run_ok(args: &[&str]) -> String {
    let out = vaultfw(args);
    assert!(
        out.status.success(),
        "vaultfw {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn an_az_keyvault_show_vault_runs_converts_takes_cli_changes_and_exports_back_serving_the_same() {
    let topo = Topology::with_client_addrs(&[LISTED_SLASH32, ADDED_TOO]);
    let (_, endpoint) = topo.add_private_link("10.1.2.1/24", &[APP_SRC, DATA_SRC]);
    let _https = TcpServer::start(&topo.server, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443));
    let first = Expect {
        public_allowed: &[ALLOWED_SRC, LISTED_SLASH32],
        public_dropped: &[DENIED_SRC],
        subnets_allowed: &[APP_SRC, DATA_SRC],
        subnets_dropped: &[],
    };

    // 1. The vault JSON runs with its subnet map.
    let vault = PolicyFile::named("vault.json", &vault_json());
    let dir = vault.path().parent().expect("a directory").to_owned();
    let map = dir.join("subnet-map.toml");
    std::fs::write(&map, subnet_map(&endpoint)).expect("writing the map");
    let map_arg = map.display().to_string();
    let vault_arg = vault.path_str().to_owned();
    let agent = start(&topo, vault, &endpoint, Some(&map_arg));
    first.check(&topo, &agent, "the vault JSON as served");
    let listed = agent.cli_json(&["network-rule", "list"]).ok();
    assert!(
        listed.to_string().contains("vnet-hub/subnets/app"),
        "the map's short id names the rule: {listed:#}"
    );

    // 2. A CLI change to the JSON is refused, naming the command that
    // converts it; nothing changed.
    let refused = agent.cli_json(&["network-rule", "add", "--ip-address", "198.51.100.7"]);
    refused.expect_code(exit::INVALID_INPUT);
    let native = dir.join("vault.toml");
    let command = format!(
        "vaultfw convert {vault_arg} --subnet-map {map_arg} --out {}",
        native.display()
    );
    assert!(
        refused.error_message().contains(&command),
        "{}",
        refused.context()
    );
    first.check(&topo, &agent, "after the refused change");
    let (_, _vault, _) = agent.stop_keeping();

    // 3. Converted as the refusal says, and run as native TOML.
    run_ok(&[
        "convert",
        &vault_arg,
        "--subnet-map",
        &map_arg,
        "--out",
        &native.display().to_string(),
    ]);
    let converted = std::fs::read_to_string(&native).expect("the converted policy");
    assert!(
        converted.contains("vault \"kv-prod\" (\"/subscriptions/"),
        "the head comment names the vault:\n{converted}"
    );
    assert!(
        converted.contains("public_network_access = \"Enabled\""),
        "{converted}"
    );
    let native_policy = PolicyFile::named("policy.toml", &converted);
    let native_arg = native_policy.path_str().to_owned();
    let agent = start(&topo, native_policy, &endpoint, None);
    first.check(&topo, &agent, "the converted policy as served");

    // 4. CLI add: two addresses in one flag, with a comment and an expiry.
    let added = agent.cli_json(&[
        "network-rule",
        "add",
        "--ip-address",
        "198.51.100.7,198.51.100.9",
        "--comment",
        "build agents",
        "--expires-at",
        "8h",
    ]);
    assert_eq!(added.ok()["changed"], true, "{}", added.context());
    let list = agent.cli_json(&["network-rule", "list"]).ok();
    let rule = list["ip_rules"]
        .as_array()
        .expect("ip_rules")
        .iter()
        .find(|r| r["rule"] == "198.51.100.7")
        .unwrap_or_else(|| panic!("198.51.100.7 is listed: {list:#}"))
        .clone();
    assert_eq!(rule["comment"], "build agents", "{rule}");
    assert!(rule["expires_at"].is_string(), "{rule}");
    // The table: az's columns plus hits.
    let table = agent.cli(&["network-rule", "list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    for cell in [
        "Value",
        "IgnoreMissingVnetServiceEndpoint",
        "Hits",
        "build agents",
    ] {
        assert!(table.contains(cell), "{cell:?} missing:\n{table}");
    }
    let added = Expect {
        public_allowed: &[ALLOWED_SRC, LISTED_SLASH32, DENIED_SRC, ADDED_TOO],
        public_dropped: &[],
        subnets_allowed: &[APP_SRC, DATA_SRC],
        subnets_dropped: &[],
    };
    added.check(&topo, &agent, "after the CLI add");

    // 5. CLI remove by the full ARM id, in another case than the file's.
    let full = arm_id("App")
        .to_uppercase()
        .replace("/SUBNETS/", "/subnets/");
    let removed = agent.cli_json(&["network-rule", "remove", "--subnet", &full]);
    let answer = removed.ok();
    assert_eq!(answer["changed"], true, "{}", removed.context());
    // Named as the policy file holds it (converted to the short id), not
    // as the request spelled it.
    assert_eq!(
        answer["message"],
        "removed subnet rule vnet-hub/subnets/app",
        "{}",
        removed.context()
    );
    let after_remove = Expect {
        public_allowed: &[ALLOWED_SRC, LISTED_SLASH32, DENIED_SRC, ADDED_TOO],
        public_dropped: &[],
        subnets_allowed: &[DATA_SRC],
        subnets_dropped: &[APP_SRC],
    };
    after_remove.check(&topo, &agent, "after the remove by full id");
    let (_, _native_policy, _) = agent.stop_keeping();

    // 6. Exported to Azure JSON: full ARM ids; served again, the same.
    let out_map = dir.join("exported-map.toml");
    let json = run_ok(&[
        "export",
        &native_arg,
        "--format",
        "azure",
        "--subnet-map-out",
        &out_map.display().to_string(),
    ]);
    let doc: Value = serde_json::from_str(&json).expect("exported JSON");
    assert_eq!(doc["properties"]["publicNetworkAccess"], "Enabled");
    let acls = &doc["properties"]["networkAcls"];
    assert_eq!(
        acls["virtualNetworkRules"][0]["id"],
        format!(
            "/subscriptions/{SUB}/resourceGroups/RG-Prod/providers/Microsoft.Network/\
             virtualNetworks/VNET-HUB/subnets/DATA"
        ),
        "{doc:#}"
    );
    assert!(
        acls["ipRules"]
            .as_array()
            .expect("ipRules")
            .contains(&serde_json::json!({"value": "198.51.100.7/32"})),
        "{doc:#}"
    );
    let exported = PolicyFile::named("exported.json", &json);
    let exported_arg = exported.path_str().to_owned();
    let agent = start(
        &topo,
        exported,
        &endpoint,
        Some(&out_map.display().to_string()),
    );
    after_remove.check(&topo, &agent, "the exported JSON as served");

    // 7. And back to native (`export --format native`): served, the same.
    let back = run_ok(&[
        "export",
        &exported_arg,
        "--subnet-map",
        &out_map.display().to_string(),
        "--format",
        "native",
    ]);
    assert!(back.contains("comment = \"build agents\""), "{back}");
    let (_, _exported, _) = agent.stop_keeping();
    let agent = start(
        &topo,
        PolicyFile::named("back.toml", &back),
        &endpoint,
        None,
    );
    after_remove.check(&topo, &agent, "the policy converted back as served");
    agent.stop();
}

#[test]
fn export_to_azure_refuses_a_short_id_and_a_json_that_would_drop_the_subnet_map() {
    let policy = PolicyFile::named(
        "p.toml",
        "default_action = \"Deny\"\n[[virtual_network_rules]]\nid = \"vnet-lab/subnets/x\"\n\
         address_prefixes = [\"10.1.0.0/16\"]\nendpoint = { vlan = 7 }\n",
    );
    let out = vaultfw(&["export", policy.path_str(), "--format", "azure"]);
    assert_eq!(out.status.code(), Some(exit::INVALID_INPUT));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"vnet-lab/subnets/x\"") && stderr.contains("--allow-short-ids"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing written");
    // Under --output json the fix is said once: in `fix`, not in `message`.
    let out = vaultfw(&[
        "export",
        policy.path_str(),
        "--format",
        "azure",
        "--output",
        "json",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("the error document");
    let error = &doc["error"];
    let (message, fix) = (
        error["message"].as_str().unwrap_or_default(),
        error["fix"].as_str().unwrap_or_default(),
    );
    assert!(
        fix.contains("--allow-short-ids") && fix.contains("[defaults]"),
        "{doc:#}"
    );
    assert!(
        !message.contains("--allow-short-ids") && !message.contains("[defaults]"),
        "{doc:#}"
    );
    let out = vaultfw(&[
        "export",
        policy.path_str(),
        "--format",
        "azure",
        "--allow-short-ids",
    ]);
    assert_eq!(out.status.code(), Some(exit::INVALID_INPUT));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARNING") && stderr.contains("--subnet-map-out"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing written: {stderr}");
}

/// `vaultfw logs --output json` records, until one holds `reason` (any
/// field) or the wait ends.
fn wait_reason(agent: &Agent, reason: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = agent.cli_json(&["logs"]);
        let records: Vec<Value> = out
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if records.iter().any(|r| r.to_string().contains(reason)) || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn public_network_access_disabled_refuses_a_listed_public_ip_and_admits_a_subnet_through_its_endpoint()
 {
    let topo = Topology::new();
    let (_, endpoint) = topo.add_private_link("10.1.2.1/24", &[APP_SRC]);
    let _https = TcpServer::start(&topo.server, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443));
    let text = format!(
        r#"default_action = "Deny"
public_network_access = "Disabled"
ip_rules = ["{ALLOWED_SRC}"]
[data_plane]
tcp_ports = [443]
[[virtual_network_rules]]
id = "vnet-hub/subnets/app"
address_prefixes = ["10.1.2.0/25"]
endpoint = {{ interface = "{endpoint}" }}
"#
    );
    let policy = PolicyFile::named("policy.toml", &text);
    let policy_arg = policy.path_str().to_owned();
    let agent = start(&topo, policy, &endpoint, None);
    Expect {
        public_allowed: &[],
        public_dropped: &[ALLOWED_SRC, DENIED_SRC],
        subnets_allowed: &[APP_SRC],
        subnets_dropped: &[],
    }
    .check(&topo, &agent, "public network access disabled");

    let show = agent.show();
    assert_eq!(show["public_network_access"], "Disabled", "{show:#}");
    assert!(
        show["warnings"]
            .to_string()
            .contains("public network access disabled"),
        "{show:#}"
    );
    let records = wait_reason(&agent, "public_network_access_disabled");
    let listed: Vec<&Value> = records
        .iter()
        .filter(|r| r.to_string().contains(&ALLOWED_SRC.to_string()))
        .collect();
    assert!(
        !listed.is_empty()
            && listed
                .iter()
                .all(|r| r.to_string().contains("public_network_access_disabled")),
        "the listed source's records name the reason: {records:#?}"
    );
    assert!(
        records
            .iter()
            .filter(|r| r.to_string().contains(&DENIED_SRC.to_string()))
            .all(|r| !r.to_string().contains("public_network_access_disabled")),
        "an unlisted source is refused for no match: {records:#?}"
    );
    let (_, _policy, _) = agent.stop_keeping();

    // `check --explain` names the reason for the listed source.
    let out = run_ok(&[
        "check",
        "--policy",
        &policy_arg,
        "--src",
        &ALLOWED_SRC.to_string(),
        "--dst",
        &SERVER_IP.to_string(),
        "--proto",
        "tcp",
        "--dport",
        "443",
        "--explain",
    ]);
    assert!(
        out.contains("which does not apply: public network access disabled"),
        "{out}"
    );
}

/// Key Vault refuses public access when it is disabled whatever
/// `defaultAction` says: `default_action = "Allow"` does not open the data
/// plane then; subnet rules through their endpoints still admit.
#[test]
fn public_network_access_disabled_refuses_public_sources_even_with_default_action_allow() {
    let topo = Topology::new();
    let (_, endpoint) = topo.add_private_link("10.1.2.1/24", &[APP_SRC]);
    let _https = TcpServer::start(&topo.server, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443));
    let text = format!(
        r#"default_action = "Allow"
public_network_access = "Disabled"
[data_plane]
tcp_ports = [443]
[[virtual_network_rules]]
id = "vnet-hub/subnets/app"
address_prefixes = ["10.1.2.0/25"]
endpoint = {{ interface = "{endpoint}" }}
"#
    );
    let policy = PolicyFile::named("policy.toml", &text);
    let policy_arg = policy.path_str().to_owned();
    let agent = start(&topo, policy, &endpoint, None);
    Expect {
        public_allowed: &[],
        public_dropped: &[ALLOWED_SRC, DENIED_SRC],
        subnets_allowed: &[APP_SRC],
        subnets_dropped: &[],
    }
    .check(
        &topo,
        &agent,
        "default Allow, public network access disabled",
    );
    let records = wait_reason(&agent, "public_network_access_disabled");
    assert!(
        records
            .iter()
            .filter(|r| r.to_string().contains(&DENIED_SRC.to_string()))
            .any(|r| r.to_string().contains("public_network_access_disabled")),
        "a public source refused despite default Allow names the reason: {records:#?}"
    );
    let (_, _policy, _) = agent.stop_keeping();

    let out = run_ok(&[
        "check",
        "--policy",
        &policy_arg,
        "--src",
        &DENIED_SRC.to_string(),
        "--dst",
        &SERVER_IP.to_string(),
        "--proto",
        "tcp",
        "--dport",
        "443",
        "--explain",
    ]);
    assert!(
        out.contains("XDP_DROP") && out.contains("default_action = Allow does not apply"),
        "{out}"
    );
    let validate = vaultfw(&["validate", &policy_arg]);
    let stderr = String::from_utf8_lossy(&validate.stderr).to_string()
        + &String::from_utf8_lossy(&validate.stdout);
    assert!(
        validate.status.success() && stderr.contains("does not apply while"),
        "validate warns: {stderr}"
    );
}

#[test]
fn a_private_endpoint_interface_admits_its_prefix_there_only_whatever_the_ip_rules() {
    let topo = Topology::new();
    let (_, endpoint) = topo.add_private_link("10.1.2.1/24", &[APP_SRC]);
    let _https = TcpServer::start(&topo.server, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443));
    let text = format!(
        r#"default_action = "Deny"
public_network_access = "Disabled"
[data_plane]
tcp_ports = [443]
[[private_endpoints]]
interface = "{endpoint}"
allowed_prefixes = ["10.1.2.0/24"]
"#
    );
    let agent = start(
        &topo,
        PolicyFile::named("policy.toml", &text),
        &endpoint,
        None,
    );
    Expect {
        public_allowed: &[],
        public_dropped: &[ALLOWED_SRC],
        subnets_allowed: &[APP_SRC],
        subnets_dropped: &[],
    }
    .check(&topo, &agent, "a private endpoint");
    // The same private source on the public interface: not admitted.
    assert_dropped(&topo, &agent, APP_SRC, 443, "the prefix off its interface");
    let list = agent.cli_json(&["network-rule", "list"]).ok();
    assert!(
        list.to_string().contains("private endpoint"),
        "the entry is named as the private endpoint's: {list:#}"
    );
    let show = agent.show();
    assert_eq!(show["private_endpoints"], 1, "{show:#}");
    agent.stop();
}

#[test]
fn a_private_endpoint_on_a_missing_interface_is_refused_naming_it() {
    let text = "default_action = \"Deny\"\n[[private_endpoints]]\ninterface = \"nosuch0\"\n\
                allowed_prefixes = [\"10.1.2.0/24\"]\n";
    let topo = Topology::new();
    let policy = PolicyFile::named("policy.toml", text);
    let paths = AgentPaths::new(&policy);
    let mut agent = Agent::spawn(
        &topo.server,
        policy,
        paths,
        AgentOptions::iface(topo.server_veth()),
    );
    let status = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(exit::INVALID_INPUT),
        "{}",
        agent.output()
    );
    assert!(agent.output().contains("\"nosuch0\""), "{}", agent.output());
}
