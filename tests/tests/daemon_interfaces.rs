//! Which interfaces the daemon filters, and that the kernel follows.
//!
//! Interfaces come and go: when the filtered interface is
//! deleted and created again with the same name (a new veth pair, same
//! names and addresses, new ifindex), the daemon attaches to it again by
//! itself — the denied source is dropped again, the allowed one connects,
//! `show` reports the new ifindex in native mode, and the log says so.
//!
//! The ACL protects the host, not a list: the endpoint
//! interface of a subnet rule is filtered whether or not `--iface` names
//! it — added and removed with the rule — and `--iface all` filters every
//! interface, including one created after the start.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use vaultfw_tests::agent::xdp_attached;
use vaultfw_tests::cli::exit;
use vaultfw_tests::netns::unique_name;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, CONNECT_TIMEOUT, Connect, DENIED_SRC, PolicyFile, TcpServer,
    Topology, connect, vaultfw,
};

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

const LOG_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn deleted_and_recreated_interface_is_filtered_again() {
    let mut topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let mut agent = Agent::start(&topo.server, topo.server_veth(), POLICY);
    agent.wait_ready();
    agent.wait_serving();
    let before = agent.show();
    let old_ifindex = before["interfaces"][0]["ifindex"].clone();
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "before the interface goes");

    let mark = agent.log_mark();
    topo.delete_veth();
    agent.wait_log(
        mark,
        "that the filtered interface vanished",
        LOG_TIMEOUT,
        |l| {
            l["log"]["level"] == "warn"
                && l["vaultfw"]["interface"] == topo.server_veth()
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("vanished"))
        },
    );

    let mark = agent.log_mark();
    topo.recreate_veth();
    let back = agent.wait_log(
        mark,
        "that the interface is attached again",
        LOG_TIMEOUT,
        |l| {
            l["vaultfw"]["interface"] == topo.server_veth()
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("attached again"))
        },
    );
    assert_ne!(
        back["ifindex"], old_ifindex,
        "the same ifindex: not a new interface? {back}"
    );
    assert!(
        xdp_attached(&topo.server, topo.server_veth()),
        "no XDP program on the new veth"
    );

    assert_dropped(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "after the interface came back",
    );
    assert_connects(
        &topo,
        &agent,
        ALLOWED_SRC,
        443,
        "after the interface came back",
    );
    let show = agent.show();
    assert_eq!(
        show["interfaces"].as_array().map(Vec::len),
        Some(1),
        "{show:#}"
    );
    assert_eq!(
        show["interfaces"][0]["name"],
        topo.server_veth(),
        "{show:#}"
    );
    assert_eq!(
        show["interfaces"][0]["ifindex"], back["vaultfw"]["ifindex"],
        "{show:#}"
    );
    assert_eq!(show["interfaces"][0]["mode"], "native", "{show:#}");
    assert_eq!(show["protected"], true, "{show:#}");
    let link_pin = agent.paths().pin_dir.join("links").join(topo.server_veth());
    assert!(
        link_pin.exists(),
        "the new link is not pinned at {}",
        link_pin.display()
    );

    let pin_dir = agent.paths().pin_dir.clone();
    let stats = agent.stop();
    assert!(stats.get("deny_no_match") >= 2, "{:?}", stats.counters);
    assert!(
        !xdp_attached(&topo.server, topo.server_veth()),
        "still attached after stop"
    );
    assert!(
        !pin_dir.exists(),
        "{} left behind by a detaching stop",
        pin_dir.display()
    );
}

/// The server's address on the private link (a subnet's endpoint).
const PRIVATE_SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 1);
/// A source of the subnet rule's prefix (10.1.2.0/25).
const SUBNET_SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
/// On the private link but outside the rule's prefix: unauthorised.
const OUTSIDE_SUBNET: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 200);

fn subnet_policy(endpoint: &str) -> String {
    format!(
        r#"{POLICY}
[[virtual_network_rules]]
id = "vnet-prod/subnets/app"
address_prefixes = ["10.1.2.0/25"]
endpoint = {{ interface = "{endpoint}" }}
"#
    )
}

/// A TCP connection from `src` in the client namespace to the server's
/// private address, port 443.
fn to_private(topo: &Topology, src: Ipv4Addr, timeout: Duration) -> Connect {
    connect(
        &topo.client,
        src,
        SocketAddrV4::new(PRIVATE_SERVER, 443),
        timeout,
    )
}

/// The entry of `show`'s `interfaces` for `name`.
fn shown<'a>(show: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    show["interfaces"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == name)
}

fn names(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_endpoint_interface_not_given_with_iface_is_filtered_and_its_subnet_connects() {
    let topo = Topology::new();
    let (_, private) = topo.add_private_link("10.1.2.1/24", &[SUBNET_SRC, OUTSIDE_SUBNET]);
    let _https = TcpServer::start(&topo.server, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443));
    // --iface names only the public veth; the policy names the private one.
    let mut agent = Agent::start(&topo.server, topo.server_veth(), &subnet_policy(&private));
    agent.wait_ready();

    // The subnet's source first (this also resolves ARP on the link).
    let subnet = to_private(&topo, SUBNET_SRC, Duration::from_secs(3));
    assert!(
        subnet.is_established(),
        "subnet source through its endpoint: {subnet:?}\n{}",
        agent.output()
    );
    let outside = to_private(&topo, OUTSIDE_SUBNET, CONNECT_TIMEOUT);
    assert!(
        matches!(outside, Connect::TimedOut),
        "an unauthorised source through the endpoint interface reached the data plane: {outside:?}\n{}",
        agent.output()
    );
    assert!(
        xdp_attached(&topo.server, &private),
        "no XDP program on {private}"
    );

    let show = agent.show();
    let entry =
        shown(&show, &private).unwrap_or_else(|| panic!("{private} not filtered: {show:#}"));
    assert_eq!(entry["reason"], "endpoint", "{show:#}");
    assert_eq!(entry["program"], "l2", "{show:#}");
    assert_eq!(
        shown(&show, topo.server_veth()).map(|i| &i["reason"]),
        Some(&"iface".into()),
        "{show:#}"
    );
    assert_eq!(show["protected"], true, "{show:#}");
    assert_eq!(
        names(&show["unfiltered_interfaces"]),
        Vec::<String>::new(),
        "{show:#}"
    );

    let stats = agent.stop();
    // The one unauthorised SYN was seen and dropped (not lost on the way).
    assert_eq!(stats.get("deny_no_match"), 1, "{}", stats.log());
    assert!(stats.get("allow_vnet_rule") >= 1, "{}", stats.log());
    assert!(
        !xdp_attached(&topo.server, &private),
        "still attached to {private} after a detaching stop"
    );
}

#[test]
fn a_subnet_rule_added_through_the_cli_filters_its_endpoint_and_removing_it_detaches_it() {
    let topo = Topology::new();
    let (_, private) = topo.add_private_link("10.1.2.1/24", &[SUBNET_SRC, OUTSIDE_SUBNET]);
    let _https = TcpServer::start(&topo.server, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443));
    let mut agent = Agent::start(&topo.server, topo.server_veth(), POLICY);
    agent.wait_ready();

    // Nothing names the private link yet: show warns that it is open.
    let show = agent.show();
    assert_eq!(
        names(&show["unfiltered_interfaces"]),
        std::slice::from_ref(&private),
        "{show:#}"
    );
    assert!(
        show["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains(&private)))),
        "{show:#}"
    );
    assert!(!xdp_attached(&topo.server, &private));

    let added = agent.cli_json(&[
        "network-rule",
        "add",
        "--vnet-rule",
        "vnet-prod/subnets/app",
        "--subnet",
        "10.1.2.0/25",
        "--endpoint",
        &private,
    ]);
    added.ok();
    assert!(
        xdp_attached(&topo.server, &private),
        "the new endpoint is not filtered: {}",
        agent.output()
    );
    let subnet = to_private(&topo, SUBNET_SRC, Duration::from_secs(3));
    assert!(subnet.is_established(), "{subnet:?}\n{}", agent.output());
    let outside = to_private(&topo, OUTSIDE_SUBNET, CONNECT_TIMEOUT);
    assert!(
        matches!(outside, Connect::TimedOut),
        "{outside:?}\n{}",
        agent.output()
    );
    let show = agent.show();
    assert_eq!(
        shown(&show, &private).map(|i| &i["reason"]),
        Some(&"endpoint".into()),
        "{show:#}"
    );
    assert_eq!(show["protected"], true, "{show:#}");

    // A prefix of the rule, then the rule: each answer names what went.
    let cli = |verb: &str, prefix: Option<&str>| {
        let mut args = vec!["network-rule", verb, "--vnet-rule", "vnet-prod/subnets/app"];
        if let Some(prefix) = prefix {
            args.extend(["--subnet", prefix]);
        }
        if verb == "add" {
            args.extend(["--endpoint", &private]);
        }
        agent.cli_json(&args)
    };
    cli("add", Some("10.1.3.0/24")).ok();
    let mut removed = cli("remove", Some("10.1.3.0/24"));
    assert_eq!(
        removed.ok()["message"],
        "removed 10.1.3.0/24 from subnet rule vnet-prod/subnets/app"
    );
    removed = cli("remove", None);
    assert_eq!(
        removed.ok()["message"],
        "removed subnet rule vnet-prod/subnets/app"
    );
    assert!(
        !xdp_attached(&topo.server, &private),
        "detached once nothing names it: {}",
        agent.output()
    );
    let show = agent.show();
    assert_eq!(
        names(&show["unfiltered_interfaces"]),
        std::slice::from_ref(&private),
        "{show:#}"
    );
    assert_eq!(
        names(&show["interfaces"]),
        [topo.server_veth().to_owned()],
        "{show:#}"
    );

    let stats = agent.stop();
    assert_eq!(stats.get("deny_no_match"), 1, "{}", stats.log());
}

#[test]
fn iface_all_filters_an_interface_created_after_the_start() {
    let allowed_inner = Ipv4Addr::new(203, 0, 113, 77);
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443));
    let mut agent = Agent::start_with(&topo.server, POLICY, AgentOptions::iface("all"));
    agent.wait_ready();
    let show = agent.show();
    // Every interface but lo (a kernel with tunnel modules adds its
    // fallback devices, gre0, tunl0, ..., to every namespace: filtered too).
    let filtered = names(&show["interfaces"]);
    assert!(filtered.iter().any(|n| n == topo.server_veth()), "{show:#}");
    assert!(
        !filtered.iter().any(|n| n == "lo"),
        "lo is filtered: {show:#}"
    );
    assert_eq!(show["iface"], "all", "{show:#}");
    assert_dropped(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "on the veth present at the start",
    );

    let mark = agent.log_mark();
    let (_, late) = topo.add_private_link("10.1.2.1/24", &[SUBNET_SRC, allowed_inner]);
    topo.server
        .ip(&["route", "add", &format!("{allowed_inner}/32"), "dev", &late]);
    agent.wait_log(
        mark,
        "that the new interface is attached",
        LOG_TIMEOUT,
        |l| {
            l["vaultfw"]["interface"] == late.as_str()
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("attached"))
        },
    );

    let allowed = to_private(&topo, allowed_inner, Duration::from_secs(3));
    assert!(allowed.is_established(), "{allowed:?}\n{}", agent.output());
    let denied = to_private(&topo, SUBNET_SRC, CONNECT_TIMEOUT);
    assert!(
        matches!(denied, Connect::TimedOut),
        "a denied source through the new interface: {denied:?}\n{}",
        agent.output()
    );
    let show = agent.show();
    assert_eq!(
        shown(&show, &late).map(|i| &i["reason"]),
        Some(&"all".into()),
        "{show:#}"
    );
    assert_eq!(show["protected"], true, "{show:#}");

    let stats = agent.stop();
    assert_eq!(stats.get("deny_no_match"), 2, "{}", stats.log());
}

#[test]
fn iface_all_with_other_names_is_refused_with_a_clear_message() {
    let policy = PolicyFile::new(POLICY);
    let out = vaultfw(&[
        "run",
        "--iface",
        "all",
        "--iface",
        "eth0",
        "--policy",
        policy.path_str(),
    ]);
    assert_eq!(out.status.code(), Some(exit::INVALID_INPUT), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--iface all already selects every interface")
            && stderr.contains("--iface eth0"),
        "{stderr}"
    );
}

#[test]
fn a_subnet_rule_whose_endpoint_cannot_be_filtered_is_refused_and_changes_nothing() {
    let topo = Topology::new();
    // No native XDP on a dummy (an ifb where the kernel has no dummy
    // driver): under --xdp-mode native it cannot be filtered.
    let odd = unique_name("d");
    if topo
        .server
        .try_ip(&["link", "add", &odd, "type", "dummy"])
        .is_err()
    {
        topo.server.ip(&["link", "add", &odd, "type", "ifb"]);
    }
    topo.server.ip(&["link", "set", &odd, "up"]);
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec!["--xdp-mode".to_owned(), "native".to_owned()];
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    let before = agent.show();
    let file_before = std::fs::read_to_string(agent.policy().path()).expect("read the policy file");

    let refused = agent.cli_json(&[
        "network-rule",
        "add",
        "--vnet-rule",
        "vnet-prod/subnets/odd",
        "--subnet",
        "10.1.2.0/25",
        "--endpoint",
        &odd,
    ]);
    // Exit 4: the kernel refused to attach (nothing else was wrong).
    refused.expect_code(4);
    assert!(
        refused.error_message().contains(&odd),
        "{}",
        refused.context()
    );

    let after = agent.show();
    assert_eq!(after["generation"], before["generation"], "{after:#}");
    assert_eq!(after["virtual_network_rules"], 0, "{after:#}");
    assert_eq!(
        names(&after["interfaces"]),
        [topo.server_veth().to_owned()],
        "{after:#}"
    );
    assert!(!xdp_attached(&topo.server, &odd));
    let file_after = std::fs::read_to_string(agent.policy().path()).expect("read the policy file");
    assert_eq!(
        file_after, file_before,
        "the refused change reached the policy file"
    );
    assert_dropped(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "the running policy stays in force",
    );
    agent.stop();
}

/// An `--iface all` agent (`options`) beside another agent holding the
/// link `busy` (its attach fails there), with a TCP server on 443.
struct HeldInterface {
    topo: Topology,
    busy: String,
    _https: TcpServer,
    /// The agent holding `busy`, until [`HeldInterface::free`].
    holder: Option<Agent>,
    agent: Agent,
}

impl HeldInterface {
    fn start(options: AgentOptions) -> Self {
        let topo = Topology::new();
        let (_, busy) = topo.add_private_link("10.1.2.1/24", &[OUTSIDE_SUBNET]);
        let https = TcpServer::start(&topo.server, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443));
        let mut holder = Agent::start_with(&topo.server, POLICY, AgentOptions::iface(&busy));
        holder.wait_ready();
        let mut agent = Agent::start_with(&topo.server, POLICY, options);
        agent.wait_ready();
        agent.wait_serving();
        let held = HeldInterface {
            topo,
            busy,
            _https: https,
            holder: Some(holder),
            agent,
        };
        held.assert_filtered(false, "while the other program holds it");
        held
    }

    /// Stops the agent holding `busy`, which detaches it.
    fn free(&mut self) {
        if let Some(holder) = self.holder.take() {
            holder.stop();
        }
    }

    /// Whether `show` lists `busy` as filtered, and — when it should be —
    /// that a denied source through it is dropped.
    fn assert_filtered(&self, filtered: bool, when: &str) {
        let busy = &self.busy;
        assert_eq!(
            shown(&self.agent.show(), busy).is_some(),
            filtered,
            "{busy} filtered {when}"
        );
        if filtered {
            assert!(
                matches!(
                    to_private(&self.topo, OUTSIDE_SUBNET, Duration::from_millis(800)),
                    Connect::TimedOut
                ),
                "a denied source through {busy} is dropped {when}"
            );
        }
    }
}

/// An interface `--iface all` could not attach (another XDP program held
/// it) is attached once it can be: a failed attach is not final, the daemon
/// retries on its tick, with no link event to prompt it.
#[test]
fn an_interface_that_could_not_be_attached_is_filtered_once_it_can_be() {
    let mut held = HeldInterface::start(AgentOptions::iface("all"));
    held.free();
    let mark = held.agent.log_mark();
    let busy = held.busy.clone();
    held.agent.wait_log(
        mark,
        "that the freed interface is attached",
        LOG_TIMEOUT,
        |l| {
            l["vaultfw"]["interface"] == busy.as_str()
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("attached"))
        },
    );
    held.assert_filtered(true, "after the tick");
    held.agent.stop();
}

/// A change of IP rules attaches an interface whose attach failed before it
/// is answered: the freed interface is filtered when the change says so,
/// not at the next retry tick (here an hour away).
#[test]
fn a_change_of_ip_rules_attaches_an_interface_that_could_not_be_attached() {
    let mut held = HeldInterface::start(AgentOptions {
        stats_interval_s: 3600,
        ..AgentOptions::iface("all")
    });
    // The first change parses the file; the next edits the kept copy (a
    // change of IP rules only).
    let add = |agent: &Agent, address: &str| {
        let out = agent.cli(&["network-rule", "add", "--ip-address", address]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    add(&held.agent, "198.51.100.9");
    held.assert_filtered(false, "while the other program holds it");
    held.free();
    add(&held.agent, "198.51.100.10");
    held.assert_filtered(true, "once the change is answered");
    held.agent.stop();
}

/// A device stacked on a NIC (here a vxlan whose name sorts first) does
/// not keep the NIC unfiltered: `--iface all` attaches lower devices first,
/// as the kernel refuses XDP under an upper device that has a program
/// (upper first would leave the NIC open at every fresh start).
#[test]
fn iface_all_attaches_a_nic_before_the_device_stacked_on_it() {
    let source = Ipv4Addr::new(10, 3, 3, 5);
    let topo = Topology::new();
    let (_, nic) = topo.add_private_link("10.3.3.1/24", &[source]);
    let upper = format!("a{}", unique_name("x"));
    topo.server.ip(&[
        "link", "add", &upper, "type", "vxlan", "id", "42", "dstport", "4789", "dev", &nic,
        "local", "10.3.3.1", "remote", "10.3.3.5",
    ]);
    topo.server
        .ip(&["addr", "add", "10.4.4.1/24", "dev", &upper]);
    topo.server.ip(&["link", "set", &upper, "up"]);
    let _https = TcpServer::start(&topo.server, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 443));
    let mut agent = Agent::start_with(&topo.server, POLICY, AgentOptions::iface("all"));
    agent.wait_ready();
    agent.wait_serving();
    let show = agent.show();
    assert!(shown(&show, &nic).is_some(), "{nic} is filtered: {show:#}");
    assert!(
        shown(&show, &upper).is_some(),
        "{upper} is filtered: {show:#}"
    );
    assert!(
        matches!(
            connect(
                &topo.client,
                source,
                SocketAddrV4::new(Ipv4Addr::new(10, 3, 3, 1), 443),
                Duration::from_millis(800)
            ),
            Connect::TimedOut
        ),
        "a denied source through {nic} is dropped"
    );
    agent.stop();
}

/// A subnet rule added through the CLI whose endpoint interface does not
/// exist is refused by name, with the CLI flag that lets it wait for the
/// interface, and changes nothing.
#[test]
fn a_cli_subnet_rule_on_a_missing_endpoint_is_refused_with_the_flag_that_waits_for_it() {
    let topo = Topology::new();
    let mut agent = Agent::start(&topo.server, topo.server_veth(), POLICY);
    agent.wait_ready();
    let generation = agent.generation();
    let file_before = std::fs::read_to_string(agent.policy().path()).expect("read the policy file");
    let missing = unique_name("gone");
    let refused = agent.cli_json(&[
        "network-rule",
        "add",
        "--vnet-rule",
        "vnet-prod/subnets/gone",
        "--subnet",
        "10.1.2.0/25",
        "--endpoint",
        &missing,
    ]);
    refused.expect_code(exit::INVALID_INPUT);
    let message = refused.error_message();
    assert!(
        message.contains(&missing) && message.contains("--ignore-missing-vnet-service-endpoint"),
        "{}",
        refused.context()
    );
    assert_eq!(agent.generation(), generation);
    let file_after = std::fs::read_to_string(agent.policy().path()).expect("read the policy file");
    assert_eq!(
        file_after, file_before,
        "the refused change reached the file"
    );
    agent.stop();
}
