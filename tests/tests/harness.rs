//! The harness itself, without the agent: namespaces and veth pairs are
//! built as documented and removed even when a test panics, traffic flows
//! between them, the link carries nothing but what a test sends (so counters
//! can be exact), and the agent guard starts, reads and stops a process the
//! way it will drive `vaultfw` (checked with a stand-in script).

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vaultfw_tests::agent::{AgentOptions, PolicyFile, spawn_in_netns};
use vaultfw_tests::netns::{host_link_exists, leftover_namespaces};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, CONNECT_TIMEOUT, Connect, DENIED_SRC, NetNs, TcpServer, Topology,
    UdpReceiver, connect, in_netns, send_udp,
};

fn namespace_exists(name: &str) -> bool {
    leftover_namespaces().iter().any(|n| n == name)
}

#[test]
fn namespaces_and_veth_are_removed_on_drop() {
    let topo = Topology::new();
    let names = [topo.client.name().to_owned(), topo.server.name().to_owned()];
    let veths = [topo.client_veth().to_owned(), topo.server_veth().to_owned()];
    assert!(names.iter().all(|n| namespace_exists(n)));
    assert!(veths.iter().all(|v| v.len() <= 15), "{veths:?}");
    assert!(
        !veths.iter().any(|v| host_link_exists(v)),
        "veth visible on the host"
    );
    drop(topo);
    for name in &names {
        assert!(!namespace_exists(name), "namespace {name} left behind");
    }
}

#[test]
fn namespaces_are_removed_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let topo = Topology::new();
        let _server = TcpServer::start(&topo.server, topo.server_addr(443));
        tx.send([topo.client.name().to_owned(), topo.server.name().to_owned()])
            .unwrap();
        panic!("a failing test");
    })
    .join();
    assert!(result.is_err(), "the thread should have panicked");
    let names = rx.recv().expect("the thread created a topology");
    for name in &names {
        assert!(
            !namespace_exists(name),
            "namespace {name} left behind after a panic"
        );
    }
}

#[test]
fn topology_is_quiet_ipv6_off_static_neighbours() {
    let topo = Topology::new();
    for ns in [&topo.client, &topo.server] {
        assert_eq!(ns.read_sysctl("net.ipv6.conf.all.disable_ipv6"), "1");
        assert_eq!(ns.read_sysctl("net.ipv6.conf.default.disable_ipv6"), "1");
    }
    assert_eq!(
        topo.server.read_sysctl(&format!(
            "net.ipv6.conf.{}.disable_ipv6",
            topo.server_veth()
        )),
        "1"
    );
    let neigh = topo.server_neighbours();
    for addr in [ALLOWED_SRC, DENIED_SRC] {
        let line = neigh
            .lines()
            .find(|l| l.starts_with(&format!("{addr} ")))
            .unwrap_or_else(|| panic!("no neighbour entry for {addr}: {neigh}"));
        assert!(line.contains("PERMANENT"), "{line}");
    }
    let routes = topo.client.ip(&["route", "show", "default"]);
    assert!(routes.contains(topo.client_veth()), "{routes}");
}

#[test]
fn in_netns_runs_the_closure_inside_the_namespace() {
    let topo = Topology::new();
    let dev = in_netns(&topo.server, || {
        std::fs::read_to_string("/proc/thread-self/net/dev").expect("reading net/dev")
    });
    assert!(dev.contains(topo.server_veth()), "{dev}");
    assert!(!dev.contains(topo.client_veth()), "{dev}");
}

#[test]
fn spawned_process_enters_the_network_namespace_only() {
    let topo = Topology::new();
    let mut cmd = Command::new("readlink");
    cmd.args(["/proc/self/ns/net", "/proc/self/ns/mnt"])
        .stdout(Stdio::piped());
    let out = spawn_in_netns(&topo.server, cmd)
        .expect("spawning readlink")
        .wait_with_output()
        .expect("readlink output");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let child_net = lines.next().unwrap().to_owned();
    let child_mnt = lines.next().unwrap().to_owned();
    let ns_inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(topo.server.path()).unwrap().ino()
    };
    assert_eq!(child_net, format!("net:[{ns_inode}]"));
    let our_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_eq!(
        child_mnt,
        our_mnt.to_str().unwrap(),
        "the child must keep our mounts"
    );
}

#[test]
fn tcp_reaches_servers_from_every_source_without_a_firewall() {
    let topo = Topology::new();
    let https = TcpServer::start(&topo.server, topo.server_addr(443));
    let ssh = TcpServer::start(&topo.server, topo.server_addr(22));
    for src in [ALLOWED_SRC, DENIED_SRC] {
        for port in [443, 22] {
            match connect(&topo.client, src, topo.server_addr(port), CONNECT_TIMEOUT) {
                Connect::Established { greeting } => {
                    assert_eq!(greeting, format!("vaultfw-test {port}\n"))
                }
                other => panic!("{src} -> {port}: {other:?}"),
            }
        }
    }
    assert_eq!(https.accepted(), 2);
    assert_eq!(ssh.accepted(), 2);
}

#[test]
fn closed_port_is_refused_not_timed_out() {
    // A timeout in the filtering tests means "dropped", never "no listener".
    let topo = Topology::new();
    let start = Instant::now();
    let outcome = connect(
        &topo.client,
        ALLOWED_SRC,
        topo.server_addr(444),
        CONNECT_TIMEOUT,
    );
    assert!(matches!(outcome, Connect::Refused), "{outcome:?}");
    assert!(start.elapsed() < CONNECT_TIMEOUT);
}

#[test]
fn unreachable_destination_times_out_quickly() {
    // A dropped SYN looks like this: the client gives up after the connect
    // timeout. Simulated without a firewall: the server's answers go into a
    // blackhole route.
    let topo = Topology::new();
    topo.server
        .ip(&["route", "add", "blackhole", &format!("{ALLOWED_SRC}/32")]);
    let start = Instant::now();
    let outcome = connect(
        &topo.client,
        ALLOWED_SRC,
        topo.server_addr(444),
        CONNECT_TIMEOUT,
    );
    let elapsed = start.elapsed();
    assert!(matches!(outcome, Connect::TimedOut), "{outcome:?}");
    assert!(
        // poll() rounds its timeout: allow a little less than the timeout.
        elapsed >= CONNECT_TIMEOUT - Duration::from_millis(20)
            && elapsed < CONNECT_TIMEOUT + Duration::from_millis(500),
        "{elapsed:?}"
    );
}

/// `ip -s -j link show` rx packets of `dev` in `ns`.
fn rx_packets(ns: &NetNs, dev: &str) -> u64 {
    let json = ns.ip(&["-s", "-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("{json}"))
}

#[test]
fn server_veth_receives_exactly_the_datagrams_sent() {
    // What makes exact counter tests possible: no ARP, no IPv6, nothing but
    // the test's own frames arrives on the interface the agent watches.
    let topo = Topology::new();
    let receiver = UdpReceiver::start(&topo.server, topo.server_addr(4433));
    let before = rx_packets(&topo.server, topo.server_veth());
    send_udp(&topo.client, ALLOWED_SRC, topo.server_addr(4433), 40);
    send_udp(&topo.client, DENIED_SRC, topo.server_addr(4433), 25);
    assert_eq!(receiver.wait_for(65, Duration::from_secs(5)), 65);
    assert_eq!(rx_packets(&topo.server, topo.server_veth()) - before, 65);
    assert_eq!(before, 0, "frames arrived before the test sent any");
}

#[test]
fn extra_client_addresses_can_send() {
    let extra = Ipv4Addr::new(203, 0, 113, 200);
    let topo = Topology::with_client_addrs(&[extra]);
    let _server = TcpServer::start(&topo.server, topo.server_addr(443));
    assert!(connect(&topo.client, extra, topo.server_addr(443), CONNECT_TIMEOUT).is_established());
}

#[test]
fn flushed_neighbours_are_learned_again_by_arp() {
    let topo = Topology::new();
    let _server = TcpServer::start(&topo.server, topo.server_addr(443));
    topo.flush_neighbours();
    assert!(
        !topo.server_neighbours().contains("PERMANENT"),
        "{}",
        topo.server_neighbours()
    );
    let before = rx_packets(&topo.server, topo.server_veth());
    assert!(
        connect(
            &topo.client,
            ALLOWED_SRC,
            topo.server_addr(443),
            CONNECT_TIMEOUT
        )
        .is_established()
    );
    assert!(topo.server_neighbours().contains(&ALLOWED_SRC.to_string()));
    // SYN, ACK, FIN... plus at least one ARP frame.
    assert!(rx_packets(&topo.server, topo.server_veth()) - before >= 4);
}

/// A stand-in for `vaultfw run`: logs where it runs, "filtering", and final
/// counters on SIGTERM. Like the real agent must, it handles SIGTERM before it
/// says "filtering": a test may stop it right after.
const FAKE_AGENT: &str = r#"#!/bin/bash
echo "{\"level\":\"INFO\",\"message\":\"starting\",\"args\":\"$*\",\"netns\":\"$(readlink /proc/self/ns/net)\"}"
echo "attaching" >&2
counters='"pass_non_ip":0,"pass_control_plane":3,"pass_fragment":0,"pass_ipv6":0,"allow_default":0,"allow_ip_rule":5,"allow_vnet_rule":0,"allow_trusted_service":0,"audit_would_deny":0,"deny_no_match":2,"deny_ipv6":0,"deny_malformed":0,"pass_forwarded":0'
trap 'echo "{\"message\":\"verdict counters\",\"vaultfw\":{\"final\":true,\"interval_s\":1,\"counters\":{\"totals\":{$counters}}}}"; exit 0' TERM
echo "{\"level\":\"INFO\",\"message\":\"filtering\",\"target\":\"vaultfw\"}"
echo "{\"message\":\"verdict counters\",\"vaultfw\":{\"interval_s\":1,\"counters\":{\"totals\":{\"deny_no_match\":1},\"deltas\":{\"deny_no_match\":1}}}}"
while true; do sleep 0.05; done
"#;

fn fake_agent() -> (PolicyFile, AgentOptions) {
    let dir = PolicyFile::named("fake-vaultfw", FAKE_AGENT);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let options = AgentOptions {
        binary: Some(dir.path().to_owned()),
        ..AgentOptions::iface("placeholder")
    };
    (dir, options)
}

#[test]
fn agent_guard_waits_for_filtering_and_reads_final_counters() {
    let topo = Topology::new();
    let (_script, mut options) = fake_agent();
    options.ifaces = vec![topo.server_veth().to_owned()];
    let mut agent = Agent::start_with(&topo.server, "default_action = \"Deny\"\n", options);
    agent.wait_ready();
    let output = agent.output();
    assert!(
        output.contains(&format!("--iface {}", topo.server_veth())),
        "{output}"
    );
    assert!(output.contains("--stats-interval 1"), "{output}");
    let ns_inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(topo.server.path()).unwrap().ino()
    };
    assert!(
        output.contains(&format!("net:[{ns_inode}]")),
        "runs in the server netns: {output}"
    );
    let stats = agent.stop();
    // stderr has its own reader thread: complete only after the exit.
    assert!(
        stats.log().contains("[stderr] attaching"),
        "{}",
        stats.log()
    );
    assert!(stats.is_final);
    stats.assert_counters(&[
        ("pass_control_plane", 3),
        ("allow_ip_rule", 5),
        ("deny_no_match", 2),
    ]);
}

#[test]
fn agent_guard_kills_a_running_agent_on_drop() {
    let topo = Topology::new();
    let (_script, options) = fake_agent();
    let mut agent = Agent::start_with(&topo.server, "", options);
    agent.wait_ready();
    let pid = nix::unistd::Pid::from_raw(agent.pid() as i32);
    drop(agent);
    assert!(
        nix::sys::signal::kill(pid, None).is_err(),
        "agent {pid} still running"
    );
}

#[test]
fn agent_guard_reports_an_agent_that_exits_before_ready() {
    let topo = Topology::new();
    let script = PolicyFile::named(
        "fake-vaultfw",
        "#!/bin/sh\necho 'policy: bad' >&2\nexit 2\n",
    );
    std::fs::set_permissions(script.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let options = AgentOptions {
        binary: Some(script.path().to_owned()),
        ..AgentOptions::iface("x")
    };
    let server = topo.server.name().to_owned();
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut agent = Agent::start_with(&topo.server, "", options);
        agent.wait_ready();
    }))
    .expect_err("wait_ready must panic");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("exited"), "{message}");
    assert!(message.contains("policy: bad"), "{message}");
    assert!(message.contains(&server), "{message}");
}
