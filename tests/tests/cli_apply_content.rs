//! `vaultfw apply` sends the policy's content, not its path: a daemon that
//! cannot see the operator's directory (its own mount namespace, as the
//! systemd unit's PrivateTmp/ProtectHome give it) serves a draft from
//! there; a service-tags file it cannot see is refused
//! naming the field, the path and the fix; a relative `service_tags_file`
//! is written back absolute, so the policy file still loads after a
//! restart, a SIGHUP and a CLI edit; Azure JSON with its subnet map is
//! applied as `run` accepts it, into a native policy file (as native TOML)
//! or into a daemon's own Azure JSON file and subnet map; a version-1
//! (path-sending) `apply` is refused by name. Every outcome is checked with real connections.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, DENIED_SRC, PolicyFile, TcpServer, Topology, vaultfw,
};

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

/// The swap: 198.51.100.7 (DENIED_SRC) in, the 203.0.113.0/24 range out.
const SWAPPED: &str = r#"# the draft: only the build agent
default_action = "Deny"
bypass = "None"
ip_rules = ["198.51.100.7"]

[data_plane]
tcp_ports = [443]
"#;

/// A source in AzureBackup's 192.0.2.128/29 in the service-tags fixture.
const TRUSTED_SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 130);

/// A draft that lets AzureBackup in through a service-tags file named
/// relative to the draft (`tags/…`), with comments around it.
const TRUSTED_DRAFT: &str = r#"# the draft: the office and AzureBackup
default_action = "Deny"
bypass = "AzureServices"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]

[trusted_services]
# Microsoft's file, kept beside this draft
service_tags_file = "tags/ServiceTags_test.json"   # weekly
enabled = ["AzureBackup"]
"#;

/// How long a reload may take to be logged.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// The repository's service-tags fixture (AzureBackup: 192.0.2.128/29).
fn tags_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../firewall-agent/tests/fixtures/ServiceTags_test.json")
}

/// Copies the fixture to `tags/ServiceTags_test.json` beside `draft`;
/// returns its path.
fn tags_beside(draft: &PolicyFile) -> PathBuf {
    let dir = draft.path().with_file_name("tags");
    std::fs::create_dir_all(&dir).expect("creating the tags directory");
    let path = dir.join("ServiceTags_test.json");
    std::fs::copy(tags_fixture(), &path).expect("copying the service-tags fixture");
    path
}

fn dir_of(file: &PolicyFile) -> PathBuf {
    file.path()
        .parent()
        .expect("a temp file has a directory")
        .to_owned()
}

fn serving(topo: &Topology, options: AgentOptions) -> Agent {
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

fn policy_text(agent: &Agent) -> String {
    std::fs::read_to_string(agent.policy().path()).expect("reading the policy file")
}

/// Whether `path` exists as the process `pid` sees the filesystem.
fn visible_to(pid: u32, path: &Path) -> bool {
    Path::new(&format!("/proc/{pid}/root"))
        .join(path.strip_prefix("/").expect("absolute"))
        .exists()
}

#[test]
fn a_draft_in_a_directory_the_daemon_cannot_see_is_applied_and_served_by_the_kernel() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let draft = PolicyFile::named("draft.toml", SWAPPED);
    let options = AgentOptions {
        hidden_dirs: vec![dir_of(&draft)],
        ..AgentOptions::iface(topo.server_veth())
    };
    let agent = serving(&topo, options);
    assert!(draft.path().exists(), "the test sees its draft");
    assert!(
        !visible_to(agent.pid(), draft.path()),
        "the daemon must not see the draft's directory"
    );
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "before the apply");

    let out = agent.cli_json(&["apply", draft.path_str()]);
    let doc = out.ok();
    assert_eq!(doc["changed"], true, "{}", out.context());
    assert_connects(&topo, &agent, DENIED_SRC, 443, "the draft's rule");
    assert_dropped(
        &topo,
        &agent,
        ALLOWED_SRC,
        443,
        "the range the draft left out",
    );
    assert_eq!(
        policy_text(&agent),
        SWAPPED,
        "the policy file holds the draft as sent"
    );
    agent.stop();
}

#[test]
fn a_service_tags_file_the_daemon_cannot_see_is_refused_naming_the_field_the_path_and_the_fix() {
    let topo = Topology::with_client_addrs(&[TRUSTED_SRC]);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let draft = PolicyFile::named("draft.toml", TRUSTED_DRAFT);
    let tags = tags_beside(&draft);
    let options = AgentOptions {
        hidden_dirs: vec![dir_of(&draft)],
        ..AgentOptions::iface(topo.server_veth())
    };
    let agent = serving(&topo, options);
    let generation = agent.generation();
    let file_before = policy_text(&agent);

    let out = agent.cli_json(&["apply", draft.path_str()]);
    out.expect_code(exit::INVALID_INPUT);
    // The field, the path and the fix apart from the message.
    let error = &out.json()["error"];
    assert_eq!(
        error["field"],
        "trusted_services.service_tags_file",
        "names the field: {}",
        out.context()
    );
    assert_eq!(
        error["value"],
        tags.display().to_string(),
        "names the path: {}",
        out.context()
    );
    assert!(
        out.error_message().contains("the daemon cannot read it"),
        "{}",
        out.context()
    );
    assert!(
        error["fix"]
            .as_str()
            .is_some_and(|fix| fix.contains("/etc/vaultfw")),
        "names the fix: {}",
        out.context()
    );

    assert_eq!(
        agent.generation(),
        generation,
        "a refused apply costs no generation"
    );
    assert_eq!(policy_text(&agent), file_before);
    assert_connects(
        &topo,
        &agent,
        ALLOWED_SRC,
        443,
        "the running policy, after the refusal",
    );
    assert_dropped(
        &topo,
        &agent,
        TRUSTED_SRC,
        443,
        "the refused draft's trusted service",
    );
    agent.stop();
}

#[test]
fn a_relative_service_tags_file_is_written_back_absolute_and_the_policy_survives_restart_reload_and_edits()
 {
    let topo = Topology::with_client_addrs(&[TRUSTED_SRC]);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let draft = PolicyFile::named("draft.toml", TRUSTED_DRAFT);
    let tags = tags_beside(&draft);
    let agent = serving(&topo, AgentOptions::iface(topo.server_veth()));
    assert_dropped(&topo, &agent, TRUSTED_SRC, 443, "before the apply");

    agent.cli_json(&["apply", draft.path_str()]).ok();
    assert_connects(
        &topo,
        &agent,
        TRUSTED_SRC,
        443,
        "AzureBackup, after the apply",
    );
    let written = policy_text(&agent);
    assert_eq!(
        written,
        TRUSTED_DRAFT.replace(
            "\"tags/ServiceTags_test.json\"",
            &format!("{:?}", tags.display().to_string())
        ),
        "only the tags path changes, made absolute; comments stay"
    );

    // A restart from the file alone (the previous run detached: nothing
    // pinned is carried over) serves the applied policy.
    let (_, policy, paths) = agent.stop_keeping();
    let mut agent = Agent::spawn(
        &topo.server,
        policy,
        paths,
        AgentOptions::iface(topo.server_veth()),
    );
    agent.wait_ready();
    agent.wait_serving();
    assert_connects(
        &topo,
        &agent,
        TRUSTED_SRC,
        443,
        "AzureBackup, after the restart",
    );
    assert_connects(
        &topo,
        &agent,
        ALLOWED_SRC,
        443,
        "the office range, after the restart",
    );
    assert_dropped(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "an unlisted source, after the restart",
    );

    let mark = agent.log_mark();
    agent.signal(Signal::SIGHUP);
    let reload = agent.wait_log(mark, "the SIGHUP reload", LOG_TIMEOUT, |l| {
        l["vaultfw"]["cause"] == "SIGHUP"
            || l["message"] == "policy reload refused; the running policy stays"
    });
    assert_ne!(
        reload["message"],
        "policy reload refused; the running policy stays",
        "{reload}\n{}",
        agent.output()
    );

    agent
        .cli_json(&[
            "network-rule",
            "add",
            "--ip-address",
            &DENIED_SRC.to_string(),
        ])
        .ok();
    assert_connects(&topo, &agent, DENIED_SRC, 443, "the rule the CLI added");
    assert_connects(
        &topo,
        &agent,
        TRUSTED_SRC,
        443,
        "AzureBackup, after the CLI edit",
    );
    agent.stop();
}

#[test]
fn an_azure_json_draft_with_its_subnet_map_is_applied_and_enforced() {
    let topo = Topology::with_client_addrs(&[TRUSTED_SRC]);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let vault = PolicyFile::named(
        "vault.json",
        r#"{
  "name": "kv-example",
  "properties": {
    "networkAcls": {
      "bypass": "AzureServices",
      "defaultAction": "Deny",
      "ipRules": [{ "value": "198.51.100.7/32" }],
      "virtualNetworkRules": []
    }
  }
}
"#,
    );
    let map = vault.path().with_file_name("subnet-map.toml");
    std::fs::write(
        &map,
        "# what the JSON has no field for\n[data_plane]\ntcp_ports = [443]\n\n\
         [trusted_services]\nservice_tags_file = \"tags/ServiceTags_test.json\"\n\
         enabled = [\"AzureBackup\"]\n\n[[ip_rule]]\nvalue = \"198.51.100.7\"\ncomment = \"build agent\"\n",
    )
    .expect("writing the subnet map");
    tags_beside(&vault);
    let agent = serving(&topo, AgentOptions::iface(topo.server_veth()));

    let map_arg = map.display().to_string();
    let out = agent.cli_json(&["apply", vault.path_str(), "--subnet-map", &map_arg]);
    out.ok();
    assert_connects(&topo, &agent, DENIED_SRC, 443, "the JSON's IP rule");
    assert_connects(
        &topo,
        &agent,
        TRUSTED_SRC,
        443,
        "AzureBackup, from the map's tags file",
    );
    assert_dropped(
        &topo,
        &agent,
        ALLOWED_SRC,
        443,
        "the range the JSON left out",
    );

    // The daemon's native policy file now holds the policy as native TOML,
    // and loads as such.
    let written = policy_text(&agent);
    assert!(written.contains("comment = \"build agent\""), "{written}");
    let validated = vaultfw(&["validate", agent.policy().path_str(), "--output", "json"]);
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stdout)
    );
    let doc: serde_json::Value = serde_json::from_slice(&validated.stdout).expect("JSON");
    assert_eq!(
        doc["policy"]["ip_rules"][0]["network"], "198.51.100.7",
        "{doc:#}"
    );
    assert_eq!(
        doc["policy"]["ip_rules"][0]["comment"], "build agent",
        "{doc:#}"
    );
    agent.stop();
}

#[test]
fn a_daemon_serving_azure_json_takes_an_azure_apply_into_its_json_and_subnet_map_and_a_restart_serves_it()
 {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let vault = |rule: &str| {
        format!(
            r#"{{"properties": {{"networkAcls": {{"bypass": "None", "defaultAction": "Deny",
  "ipRules": [{{ "value": "{rule}" }}], "virtualNetworkRules": [] }}}}}}
"#
        )
    };
    let map_text = |comment: &str| format!("[data_plane]\ntcp_ports = [443]\n# {comment}\n");
    // The daemon runs with vault.json and subnet-map.toml.
    let served = PolicyFile::named("vault.json", &vault("203.0.113.0/24"));
    let served_map = served.path().with_file_name("subnet-map.toml");
    std::fs::write(&served_map, map_text("served")).expect("writing the served map");
    let paths = vaultfw_tests::AgentPaths::new(&served);
    let options = AgentOptions {
        extra_args: vec!["--subnet-map".to_owned(), served_map.display().to_string()],
        ..AgentOptions::iface(topo.server_veth())
    };
    let mut agent = Agent::spawn(&topo.server, served, paths, options.clone());
    agent.wait_ready();
    agent.wait_serving();
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "the served JSON's rule");

    let draft = PolicyFile::named("draft.json", &vault("198.51.100.7/32"));
    let draft_map = draft.path().with_file_name("draft-map.toml");
    std::fs::write(&draft_map, map_text("applied")).expect("writing the draft map");
    let map_arg = draft_map.display().to_string();
    agent
        .cli_json(&["apply", draft.path_str(), "--subnet-map", &map_arg])
        .ok();
    assert_connects(&topo, &agent, DENIED_SRC, 443, "the applied JSON's rule");
    assert_dropped(
        &topo,
        &agent,
        ALLOWED_SRC,
        443,
        "the rule the applied JSON left out",
    );
    assert_eq!(
        policy_text(&agent),
        vault("198.51.100.7/32"),
        "the JSON file holds the applied JSON"
    );
    assert_eq!(
        std::fs::read_to_string(&served_map).expect("reading the map"),
        map_text("applied"),
        "the daemon's subnet map holds the applied map"
    );

    let (_, policy, paths) = agent.stop_keeping();
    let mut agent = Agent::spawn(&topo.server, policy, paths, options);
    agent.wait_ready();
    agent.wait_serving();
    assert_connects(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "the applied rule, after the restart",
    );
    assert_dropped(
        &topo,
        &agent,
        ALLOWED_SRC,
        443,
        "the removed rule, after the restart",
    );
    agent.stop();
}

#[test]
fn an_apply_sending_a_path_with_protocol_version_1_is_refused_by_name() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving(&topo, AgentOptions::iface(topo.server_veth()));
    let generation = agent.generation();
    let draft = PolicyFile::named("draft.toml", SWAPPED);

    // What a vaultfw CLI of protocol version 1 sends.
    let request = serde_json::json!({
        "version": 1,
        "command": { "verb": "apply", "path": draft.path_str(), "confirm_within_s": null, "if_generation": null },
    });
    let mut stream = UnixStream::connect(&agent.paths().socket).expect("connecting to the socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    writeln!(stream, "{request}").expect("sending");
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .expect("an answer");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("a JSON answer");
    assert_eq!(answer["ok"], false, "{answer:#}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("protocol version 1") && message.contains("content"),
        "{answer:#}"
    );

    assert_eq!(agent.generation(), generation);
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "the running policy");
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "the refused draft's rule");
    agent.stop();
}
