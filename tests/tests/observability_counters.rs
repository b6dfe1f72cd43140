//! Counters end to end: for a known mix of traffic across two
//! veth pairs — UDP to a data-plane port from an IP-rule source, a trusted
//! service, a subnet through its endpoint and a denied source, UDP to a
//! control-plane port, raw TCP SYNs allowed and denied — the counter log
//! lines (in total and per interface), the per-rule hits of
//! `network-rule list --output json` and the Prometheus metrics equal what
//! was sent, exactly; and a restart on the same pins never counts a frame
//! twice in the deltas.
//!
//! The links are quiet (no IPv6, static neighbours both ways on both
//! links), so every frame the program judges is one the test sent.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use serde_json::Value;
use vaultfw_tests::agent::LeftPins;
use vaultfw_tests::raw::{mac, send_frames, tcp_syn};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, DENIED_SRC, NetNs, PolicyFile, SERVER_IP, Topology,
    UdpReceiver, http_get, in_netns,
};

const DATA_UDP: u16 = 4433;
const CONTROL_UDP: u16 = 5353;
/// A trusted-service source (AzureBackup's 192.0.2.128/29 in the tags file).
const TRUSTED_SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 130);
/// A source of the subnet rule, on the private link.
const SUBNET_SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
const PRIVATE_SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 1);
const METRICS_ADDR: &str = "127.0.0.1:9464";

/// UDP payload bytes: a datagram is a 14 + 20 + 8 + 100 = 142-byte frame.
const PAYLOAD: usize = 100;
const UDP_FRAME: u64 = 142;
/// A raw SYN without options: 14 + 20 + 20 bytes.
const SYN_FRAME: u64 = 54;

const ARRIVAL: Duration = Duration::from_secs(5);

/// AzureBackup holds 192.0.2.128/29; Sql holds 198.51.100.64/27.
const SERVICE_TAGS: &str = r#"{
  "changeNumber": 1,
  "cloud": "Public",
  "values": [
    { "name": "AzureBackup", "id": "AzureBackup",
      "properties": { "changeNumber": 1, "region": "", "platform": "Azure", "systemService": "AzureBackup",
                      "addressPrefixes": ["192.0.2.128/29"] } },
    { "name": "Sql", "id": "Sql",
      "properties": { "changeNumber": 1, "region": "", "platform": "Azure", "systemService": "AzureSQL",
                      "addressPrefixes": ["198.51.100.64/27"] } }
  ]
}"#;

fn policy(private_iface: &str, tags: &PolicyFile) -> String {
    format!(
        r#"
default_action = "Deny"
bypass = "AzureServices"
ip_rules = ["203.0.113.0/24", "198.51.100.200"]

[data_plane]
tcp_ports = [443]
udp_ports = [{DATA_UDP}]

[[virtual_network_rules]]
id = "vnet-prod/subnets/app"
address_prefixes = ["10.1.2.0/24"]
endpoint = {{ interface = "{private_iface}" }}

[trusted_services]
service_tags_file = "{}"
enabled = ["AzureBackup", "Sql"]
"#,
        tags.path_str()
    )
}

/// Sends `count` datagrams of [`PAYLOAD`] bytes from `src` in `ns` to `dst`.
fn send_datagrams(ns: &NetNs, src: Ipv4Addr, dst: SocketAddrV4, count: usize) {
    in_netns(ns, || {
        let socket = UdpSocket::bind(SocketAddrV4::new(src, 0))
            .unwrap_or_else(|e| panic!("binding UDP to {src}: {e}"));
        for i in 0..count {
            let sent = socket
                .send_to(&[b'v'; PAYLOAD], dst)
                .unwrap_or_else(|e| panic!("UDP {src} -> {dst} #{i}: {e}"));
            assert_eq!(sent, PAYLOAD);
        }
    });
}

fn mac_text(ns: &NetNs, iface: &str) -> String {
    mac(ns, iface).map(|b| format!("{b:02x}")).join(":")
}

/// Static neighbours both ways on the private link: no ARP there either.
fn quiet_private_link(topo: &Topology, client_veth: &str, server_veth: &str) {
    let server_mac = mac_text(&topo.server, server_veth);
    let client_mac = mac_text(&topo.client, client_veth);
    topo.client.ip(&[
        "neigh",
        "replace",
        &PRIVATE_SERVER.to_string(),
        "lladdr",
        &server_mac,
        "dev",
        client_veth,
        "nud",
        "permanent",
    ]);
    topo.server.ip(&[
        "neigh",
        "replace",
        &SUBNET_SRC.to_string(),
        "lladdr",
        &client_mac,
        "dev",
        server_veth,
        "nud",
        "permanent",
    ]);
}

/// A Prometheus sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("metric line {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("value of {line:?}: {e}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let rest = rest.strip_suffix('}').expect("labels end with }");
                    let labels = rest
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').expect("label=value");
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            (name, labels, value)
        })
        .collect()
}

/// The value of the one sample named `name` whose labels include `labels`.
fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)], text: &str) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name}{labels:?}: {} samples in\n{text}",
        found.len()
    );
    found[0].2
}

/// The counter lines of an agent's stdout with `message`.
fn lines_with(stdout: &[Value], message: &str) -> Vec<Value> {
    stdout
        .iter()
        .filter(|l| l["message"] == message)
        .cloned()
        .collect()
}

fn stdout_json(lines: &mut dyn Iterator<Item = &str>) -> Vec<Value> {
    lines
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// Checks that each counter of `expected` (others: 0) is the total of the
/// last of `lines`, and that the deltas of all `lines` add up to it.
fn assert_line_counters(lines: &[Value], expected: &[(&str, u64)], what: &str, log: &str) {
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("no {what} line:\n{log}"));
    assert_eq!(
        last["vaultfw"]["final"], true,
        "the last {what} line is not the final one: {last}"
    );
    for name in vaultfw_tests::COUNTERS {
        let want = expected
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v);
        assert_eq!(
            last["vaultfw"]["counters"]["totals"][name].as_u64(),
            Some(want),
            "{what}: {name} in {last}\n{log}"
        );
        let deltas: u64 = lines
            .iter()
            .map(|l| {
                l["vaultfw"]["counters"]["deltas"][name]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum();
        assert_eq!(
            deltas, want,
            "{what}: the {name}_delta fields add up to {deltas}, not {want}\n{log}"
        );
    }
    assert!(
        last["vaultfw"]["packets_per_s"].is_number(),
        "{what}: no packets_per_s in {last}"
    );
}

#[test]
fn counter_lines_rule_hits_and_metrics_equal_the_traffic_sent() {
    const DENIED_SYNS: usize = 5;
    const ALLOWED_SYNS: usize = 3;
    const DENIED_UDP: usize = 25;
    const CONTROL: usize = 15;
    const TRUSTED: usize = 7;
    const ALLOWED_UDP: usize = 40;
    const SUBNET: usize = 9;

    let topo = Topology::with_client_addrs(&[TRUSTED_SRC]);
    let (private_client, private_server) = topo.add_private_link("10.1.2.1/24", &[SUBNET_SRC]);
    quiet_private_link(&topo, &private_client, &private_server);
    let tags = PolicyFile::named("ServiceTags_Public.json", SERVICE_TAGS);
    let data = UdpReceiver::start(&topo.server, topo.server_addr(DATA_UDP));
    let control = UdpReceiver::start(&topo.server, topo.server_addr(CONTROL_UDP));
    let private_data =
        UdpReceiver::start(&topo.server, SocketAddrV4::new(PRIVATE_SERVER, DATA_UDP));

    let mut options = AgentOptions::iface(topo.server_veth());
    options.ifaces.push(private_server.clone());
    options.extra_args = vec!["--metrics-addr".into(), METRICS_ADDR.into()];
    let mut agent = Agent::start_with(&topo.server, &policy(&private_server, &tags), options);
    agent.wait_ready();
    agent.wait_serving();

    // Raw SYNs first (nothing listens on 443: the allowed ones get a RST,
    // which leaves the server, and the client's kernel ignores).
    let (client_mac, server_mac) = (
        mac(&topo.client, topo.client_veth()),
        mac(&topo.server, topo.server_veth()),
    );
    let mut frames =
        vec![tcp_syn(client_mac, server_mac, None, DENIED_SRC, SERVER_IP, 443); DENIED_SYNS];
    frames.extend(vec![
        tcp_syn(
            client_mac,
            server_mac,
            None,
            ALLOWED_SRC,
            SERVER_IP,
            443
        );
        ALLOWED_SYNS
    ]);
    send_frames(&topo.client, topo.client_veth(), &frames);
    send_datagrams(
        &topo.client,
        DENIED_SRC,
        topo.server_addr(DATA_UDP),
        DENIED_UDP,
    );
    send_datagrams(
        &topo.client,
        DENIED_SRC,
        topo.server_addr(CONTROL_UDP),
        CONTROL,
    );
    send_datagrams(
        &topo.client,
        TRUSTED_SRC,
        topo.server_addr(DATA_UDP),
        TRUSTED,
    );
    send_datagrams(
        &topo.client,
        ALLOWED_SRC,
        topo.server_addr(DATA_UDP),
        ALLOWED_UDP,
    );
    send_datagrams(
        &topo.client,
        SUBNET_SRC,
        SocketAddrV4::new(PRIVATE_SERVER, DATA_UDP),
        SUBNET,
    );
    // One queue per link, in order: the last datagrams arriving prove every
    // earlier frame was judged.
    assert_eq!(
        data.wait_for(TRUSTED + ALLOWED_UDP, ARRIVAL),
        TRUSTED + ALLOWED_UDP,
        "{}",
        agent.output()
    );
    assert_eq!(
        control.wait_for(CONTROL, ARRIVAL),
        CONTROL,
        "{}",
        agent.output()
    );
    assert_eq!(
        private_data.wait_for(SUBNET, ARRIVAL),
        SUBNET,
        "{}",
        agent.output()
    );

    let public = topo.server_veth().to_owned();
    let public_counters = [
        ("deny_no_match", (DENIED_SYNS + DENIED_UDP) as u64),
        ("allow_ip_rule", (ALLOWED_SYNS + ALLOWED_UDP) as u64),
        ("pass_control_plane", CONTROL as u64),
        ("allow_trusted_service", TRUSTED as u64),
    ];
    let private_counters = [("allow_vnet_rule", SUBNET as u64)];
    let ip_rule_bytes = ALLOWED_UDP as u64 * UDP_FRAME + ALLOWED_SYNS as u64 * SYN_FRAME;

    // Per-rule hits next to each rule.
    let list = agent.cli_json(&["network-rule", "list"]).ok();
    let ip = |rule: &str| -> Value {
        list["ip_rules"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["rule"] == rule).cloned())
            .unwrap_or_else(|| panic!("no IP rule {rule} in {list:#}"))
    };
    let office = ip("203.0.113.0/24");
    assert_eq!(
        (office["packets"].as_u64(), office["bytes"].as_u64()),
        (Some(43), Some(ip_rule_bytes)),
        "{list:#}"
    );
    assert!(
        office["last_hit"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{list:#}"
    );
    let unused = ip("198.51.100.200");
    assert_eq!(
        (
            unused["packets"].as_u64(),
            unused["bytes"].as_u64(),
            unused["last_hit"].is_null()
        ),
        (Some(0), Some(0), true),
        "{list:#}"
    );
    let subnet = list["virtual_network_rules"]
        .as_array()
        .and_then(|a| a.first().cloned())
        .unwrap_or_default();
    assert_eq!(subnet["id"], "vnet-prod/subnets/app", "{list:#}");
    assert_eq!(
        (subnet["packets"].as_u64(), subnet["bytes"].as_u64()),
        (Some(SUBNET as u64), Some(SUBNET as u64 * UDP_FRAME)),
        "{list:#}"
    );
    let service = |name: &str| -> Value {
        list["trusted_services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["service"] == name).cloned())
            .unwrap_or_else(|| panic!("no trusted service {name} in {list:#}"))
    };
    let backup = service("AzureBackup");
    assert_eq!(
        (backup["packets"].as_u64(), backup["bytes"].as_u64()),
        (Some(TRUSTED as u64), Some(TRUSTED as u64 * UDP_FRAME)),
        "{list:#}"
    );
    assert_eq!(service("Sql")["packets"].as_u64(), Some(0), "{list:#}");
    // The table form shows them too: the rule's row holds its hits.
    let table = agent.cli(&["network-rule", "list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table
            .lines()
            .any(|row| row.contains(" 203.0.113.0/24 ") && row.contains(" 43 ")),
        "{table}"
    );

    // Metrics, scraped from the agent's own namespace.
    let answer = http_get(&topo.server, METRICS_ADDR, "/metrics");
    let (head, text) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not HTTP: {answer}"));
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let samples = parse_metrics(text);
    for (iface, expected) in [
        (&public, &public_counters[..]),
        (&private_server, &private_counters[..]),
    ] {
        for verdict in vaultfw_tests::COUNTERS {
            let want = expected
                .iter()
                .find(|(n, _)| *n == verdict)
                .map_or(0, |(_, v)| *v);
            let got = metric(
                &samples,
                "vaultfw_verdict_packets_total",
                &[("interface", iface), ("verdict", verdict)],
                text,
            );
            assert_eq!(got, want as f64, "metric {verdict} on {iface}\n{text}");
        }
    }
    assert!(
        !samples
            .iter()
            .any(|(_, l, _)| l.get("interface").is_some_and(|i| i == "other")),
        "frames outside the attached interfaces:\n{text}"
    );
    let rule = |kind: &str, name: &str, what: &str| {
        metric(
            &samples,
            &format!("vaultfw_rule_hit_{what}_total"),
            &[("kind", kind), ("rule", name)],
            text,
        )
    };
    assert_eq!(rule("ip", "203.0.113.0/24", "packets"), 43.0, "{text}");
    assert_eq!(
        rule("ip", "203.0.113.0/24", "bytes"),
        ip_rule_bytes as f64,
        "{text}"
    );
    assert_eq!(rule("ip", "198.51.100.200", "packets"), 0.0, "{text}");
    assert_eq!(
        rule("vnet", "vnet-prod/subnets/app", "packets"),
        SUBNET as f64,
        "{text}"
    );
    assert_eq!(
        rule("trusted", "AzureBackup", "bytes"),
        (TRUSTED as u64 * UDP_FRAME) as f64,
        "{text}"
    );
    assert_eq!(rule("trusted", "Sql", "packets"), 0.0, "{text}");
    // Events: one per denied SYN, one for the denied UDP flow (one per flow
    // and second), all within the default rate.
    let sent = metric(
        &samples,
        "vaultfw_access_log_events_written_total",
        &[],
        text,
    );
    let dropped: f64 = ["rate_limited", "ring_full"]
        .iter()
        .map(|r| {
            metric(
                &samples,
                "vaultfw_access_log_events_dropped_total",
                &[("reason", r)],
                text,
            )
        })
        .sum();
    assert_eq!((sent, dropped), ((DENIED_SYNS + 1) as f64, 0.0), "{text}");
    let generation = agent.generation();
    assert_eq!(
        metric(&samples, "vaultfw_policy_generation", &[], text),
        generation as f64,
        "{text}"
    );
    // The start-up apply is observed.
    assert!(
        metric(&samples, "vaultfw_apply_duration_seconds_count", &[], text) >= 1.0,
        "{text}"
    );
    assert!(
        metric(&samples, "vaultfw_apply_duration_seconds_sum", &[], text) > 0.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &samples,
            "vaultfw_map_entries",
            &[("table", "ip_rules")],
            text
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &samples,
            "vaultfw_map_capacity_entries",
            &[("table", "ip_rules")],
            text
        ),
        127.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &samples,
            "vaultfw_map_entries",
            &[("table", "virtual_network_rules")],
            text
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &samples,
            "vaultfw_map_entries",
            &[("table", "trusted_services")],
            text
        ),
        2.0,
        "{text}"
    );
    let missing = http_get(&topo.server, METRICS_ADDR, "/nothing");
    assert!(
        missing.lines().next().is_some_and(|l| l.contains(" 404")),
        "{missing}"
    );

    // The counter lines: the final ones, and every delta added up.
    let stats = agent.stop();
    let all: Vec<(&str, u64)> = public_counters
        .iter()
        .chain(&private_counters)
        .copied()
        .collect();
    stats.assert_counters(&all);
    let log = stats.log();
    let stdout = stdout_json(&mut stats.stdout_lines());
    let totals = lines_with(&stdout, "verdict counters");
    assert_line_counters(&totals, &all, "verdict counters", &log);
    let last = totals.last().expect("checked above");
    assert_eq!(
        (
            last["vaultfw"]["events"]["sent"].as_u64(),
            last["vaultfw"]["events"]["dropped"].as_u64()
        ),
        (Some((DENIED_SYNS + 1) as u64), Some(0)),
        "{last}"
    );
    let per_interface = lines_with(&stdout, "interface verdict counters");
    for (iface, expected) in [
        (&public, &public_counters[..]),
        (&private_server, &private_counters[..]),
    ] {
        let lines: Vec<Value> = per_interface
            .iter()
            .filter(|l| l["observer"]["ingress"]["interface"]["name"] == iface.as_str())
            .cloned()
            .collect();
        assert_line_counters(&lines, expected, &format!("interface {iface}"), &log);
    }
}

#[test]
fn a_restart_on_the_same_pins_counts_no_frame_twice() {
    let topo = Topology::new();
    let data = UdpReceiver::start(&topo.server, topo.server_addr(DATA_UDP));
    let policy = format!(
        "default_action = \"Deny\"\nip_rules = [\"203.0.113.0/24\"]\n[data_plane]\ntcp_ports = [443]\nudp_ports = [{DATA_UDP}]\n"
    );
    let keep = AgentOptions {
        on_exit: "keep",
        ..AgentOptions::iface(topo.server_veth())
    };
    let mut first = Agent::start_with(&topo.server, &policy, keep);
    first.wait_ready();
    send_datagrams(&topo.client, DENIED_SRC, topo.server_addr(DATA_UDP), 10);
    send_datagrams(&topo.client, ALLOWED_SRC, topo.server_addr(DATA_UDP), 1);
    assert_eq!(data.wait_for(1, ARRIVAL), 1);
    let (before, policy_file, paths) = first.stop_keeping();
    let _pins = LeftPins(paths.clone());
    before.assert_counters(&[("deny_no_match", 10), ("allow_ip_rule", 1)]);

    let mut second = Agent::spawn(
        &topo.server,
        policy_file,
        paths,
        AgentOptions::iface(topo.server_veth()),
    );
    second.wait_ready();
    send_datagrams(&topo.client, DENIED_SRC, topo.server_addr(DATA_UDP), 4);
    send_datagrams(&topo.client, ALLOWED_SRC, topo.server_addr(DATA_UDP), 1);
    assert_eq!(data.wait_for(2, ARRIVAL), 2);
    let after = second.stop();
    // Totals are the kernel's: they carried over.
    after.assert_counters(&[("deny_no_match", 14), ("allow_ip_rule", 2)]);
    // Deltas count only what this agent saw.
    let lines = lines_with(&stdout_json(&mut after.stdout_lines()), "verdict counters");
    let sum = |name: &str| -> u64 {
        lines
            .iter()
            .map(|l| {
                l["vaultfw"]["counters"]["deltas"][name]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum()
    };
    assert_eq!(
        (sum("deny_no_match"), sum("allow_ip_rule")),
        (4, 1),
        "{}",
        after.log()
    );
}

#[test]
fn stats_watch_shows_the_rates_per_second_in_total_and_per_interface() {
    let topo = Topology::new();
    let data = UdpReceiver::start(&topo.server, topo.server_addr(DATA_UDP));
    let policy = format!(
        "default_action = \"Deny\"\nip_rules = [\"203.0.113.0/24\"]\n[data_plane]\nudp_ports = [{DATA_UDP}]\n"
    );
    let mut agent = Agent::start(&topo.server, topo.server_veth(), &policy);
    agent.wait_ready();
    agent.wait_serving();
    send_datagrams(&topo.client, DENIED_SRC, topo.server_addr(DATA_UDP), 30);
    send_datagrams(&topo.client, ALLOWED_SRC, topo.server_addr(DATA_UDP), 1);
    assert_eq!(data.wait_for(1, ARRIVAL), 1);

    let stats = agent.cli_json(&["stats"]).ok();
    assert_eq!(
        stats["interfaces"][0]["name"],
        topo.server_veth(),
        "{stats:#}"
    );
    assert_eq!(
        stats["interfaces"][0]["counters"]["deny_no_match"], 30,
        "{stats:#}"
    );
    assert_eq!(
        stats["events"]["sent"], 1,
        "one event for the denied UDP flow: {stats:#}"
    );

    let watch = agent.cli_json(&["stats", "--watch", "--interval", "0.2", "--count", "2"]);
    watch.expect_code(0);
    let lines: Vec<Value> = watch
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{}", watch.context());
    for line in &lines {
        // The stats document with its rates: the same names as `stats`.
        assert_eq!(line["ok"], true, "{line}");
        assert_eq!(line["verb"], "stats", "{line}");
        assert_eq!(line["counters"]["deny_no_match"], 30, "{line}");
        assert_eq!(
            line["interfaces"][0]["counters"]["deny_no_match"], 30,
            "{line}"
        );
        assert_eq!(
            line["interfaces"][0]["rates"]["deny_no_match"], 0.0,
            "{line}"
        );
        assert_eq!(
            line["rates"]["deny_no_match"], 0.0,
            "nothing was sent while watching: {line}"
        );
        assert!(
            line["interval_s"].as_f64().is_some_and(|s| s > 0.1),
            "{line}"
        );
        assert_eq!(line["interfaces"][0]["name"], topo.server_veth(), "{line}");
        assert!(line["events"]["dropped_per_s"].is_number(), "{line}");
    }
    let table = agent.cli(&["stats", "--watch", "--interval", "0.2", "--count", "1"]);
    let table = String::from_utf8_lossy(&table.stdout);
    // A table (borders `│`, inner columns `┆`): a row per verdict with its
    // rate and its total.
    let row = |l: &str| -> Vec<String> {
        l.split(['│', '┆'])
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect()
    };
    assert!(
        table.contains("per s")
            && table.lines().map(row).any(|cells| cells
                .first()
                .is_some_and(|c| c == "deny_no_match")
                && cells.get(1).is_some_and(|c| c == "0.0")
                && cells.get(2).is_some_and(|c| c == "30")),
        "{table}"
    );
    agent.stop();
}
