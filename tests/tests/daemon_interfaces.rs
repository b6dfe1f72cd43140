//! Interfaces come and go (issue 5, item 6): when the filtered interface is
//! deleted and created again with the same name (a new veth pair, same
//! names and addresses, new ifindex), the daemon attaches to it again by
//! itself — the denied source is dropped again, the allowed one connects,
//! `show` reports the new ifindex in native mode, and the log says so.

use std::time::Duration;

use vaultfw_tests::agent::xdp_attached;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{ALLOWED_SRC, Agent, DENIED_SRC, TcpServer, Topology};

const POLICY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
"#;

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
            l["level"] == "WARN"
                && l["interface"] == topo.server_veth()
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
            l["interface"] == topo.server_veth()
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
        show["interfaces"][0]["ifindex"], back["ifindex"],
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
