//! The daemon tells a service manager and probes when the filter is in
//! force: systemd's notify socket hears `READY=1` only once the XDP program
//! filters the interface (traffic already judged when it arrives),
//! `RELOADING=1` then `READY=1` around a SIGHUP, watchdog pings, and
//! `STOPPING=1` on SIGTERM; `/healthz`, `/readyz` and `vaultfw show --check` answer from
//! the one definition of readiness, which a refused reload breaks and an
//! accepted one restores.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use vaultfw_tests::agent::xdp_attached;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{ALLOWED_SRC, Agent, AgentOptions, DENIED_SRC, TcpServer, Topology, http_get};

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

/// A valid policy that also admits [`DENIED_SRC`].
const EDITED: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24", "198.51.100.7"]

[data_plane]
tcp_ports = [443]
"#;

/// systemd's `WatchdogSec=2`: pings every second.
const WATCHDOG_USEC: u64 = 2_000_000;
const METRICS_ADDR: &str = "127.0.0.1:9464";
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket a service manager would listen on.
struct NotifySocket {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        NotifySocket {
            socket,
            path: path.display().to_string(),
            _dir: dir,
        }
    }

    /// `AgentOptions` with `NOTIFY_SOCKET` pointing here and a watchdog
    /// of [`WATCHDOG_USEC`].
    fn options(&self, iface: &str) -> AgentOptions {
        AgentOptions {
            env: vec![
                ("NOTIFY_SOCKET".into(), self.path.clone()),
                ("WATCHDOG_USEC".into(), WATCHDOG_USEC.to_string()),
            ],
            ..AgentOptions::iface(iface)
        }
    }

    /// Messages until one holds `line` (returned last); panics with what
    /// came when none does within [`NOTIFY_TIMEOUT`].
    fn until(&self, line: &str, agent: &Agent) -> Vec<String> {
        let deadline = Instant::now() + NOTIFY_TIMEOUT;
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {line:?} on the notify socket within {NOTIFY_TIMEOUT:?}; got {seen:?}\n{}",
                agent.output()
            );
            self.socket
                .set_read_timeout(Some(left))
                .expect("read timeout");
            let Ok(n) = self.socket.recv(&mut buf) else {
                continue;
            };
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let found = message.lines().any(|l| l == line);
            seen.push(message);
            if found {
                return seen;
            }
        }
    }
}

#[test]
fn ready_arrives_only_once_the_filter_is_attached_and_stopping_follows_sigterm() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let notify = NotifySocket::bind();
    let mut agent = Agent::start_with(&topo.server, POLICY, notify.options(topo.server_veth()));

    let before = notify.until("READY=1", &agent);
    // At the moment READY=1 arrives the kernel already filters.
    assert!(
        xdp_attached(&topo.server, topo.server_veth()),
        "READY=1 arrived before the program was attached; messages {before:?}\n{}",
        agent.output()
    );
    assert_dropped(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "filtered when READY=1 arrives",
    );
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "the office is let in");
    assert!(
        before.iter().filter(|m| m.contains("READY=1")).count() == 1,
        "one READY=1: {before:?}"
    );
    let status = before
        .iter()
        .flat_map(|m| m.lines())
        .filter_map(|l| l.strip_prefix("STATUS="))
        .next_back()
        .unwrap_or_else(|| panic!("a STATUS= line came with READY=1: {before:?}"));
    assert!(
        status.starts_with("generation 1, filtering ") && status.contains(topo.server_veth()),
        "STATUS names the generation and the interface: {status}"
    );
    agent.wait_ready();
    // The loop pings the watchdog (at half its interval).
    notify.until("WATCHDOG=1", &agent);

    // A reload: RELOADING=1 with the monotonic time, then READY=1 again.
    agent.signal(Signal::SIGHUP);
    let reload = notify.until("READY=1", &agent);
    let reloading = reload
        .iter()
        .position(|m| m.lines().any(|l| l == "RELOADING=1"))
        .unwrap_or_else(|| panic!("RELOADING=1 before READY=1: {reload:?}"));
    assert!(
        reload[reloading].lines().any(|l| l
            .strip_prefix("MONOTONIC_USEC=")
            .is_some_and(|v| v.parse::<u64>().is_ok())),
        "RELOADING=1 carries MONOTONIC_USEC: {reload:?}"
    );

    agent.signal(Signal::SIGTERM);
    notify.until("STOPPING=1", &agent);
    let status = agent.wait_exit(LOG_TIMEOUT);
    assert!(status.success(), "{status}\n{}", agent.output());
}

/// `/readyz`'s status code and body.
fn readyz(topo: &Topology) -> (u16, serde_json::Value) {
    let answer = http_get(&topo.server, METRICS_ADDR, "/readyz");
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line: {answer}"));
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("/readyz body {body:?}: {e}"));
    (code, json)
}

/// `vaultfw show --check`'s exit code and stdout.
fn show_check(agent: &Agent) -> (Option<i32>, String) {
    let out = agent.cli(&["show", "--check"]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn readyz_and_show_check_turn_unready_on_a_refused_reload_and_back_on_a_good_one() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec![
        "--no-watch".into(),
        "--metrics-addr".into(),
        METRICS_ADDR.into(),
    ];
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();

    let healthz = http_get(&topo.server, METRICS_ADDR, "/healthz");
    assert!(
        healthz.starts_with("HTTP/1.0 200") || healthz.starts_with("HTTP/1.1 200"),
        "{healthz}"
    );
    let (code, body) = readyz(&topo);
    assert_eq!(
        (code, &body["ready"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );
    assert_eq!(show_check(&agent), (Some(0), "ready\n".to_owned()));

    // A refused reload: the filter stays, but it is not what was declared.
    agent.policy().write("default_action = \"Sometimes\"\n");
    let mark = agent.log_mark();
    agent.signal(Signal::SIGHUP);
    agent.wait_message(
        mark,
        "policy reload refused; the running policy stays",
        LOG_TIMEOUT,
    );
    let (code, body) = readyz(&topo);
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    let reasons = body["reasons"].to_string();
    assert!(
        reasons.contains("the policy file is invalid") && reasons.contains("default_action"),
        "the reasons name the invalid file and the field: {body}"
    );
    // The file's error and the reload's are the same: said once.
    let listed: Vec<&str> = body["reasons"]
        .as_array()
        .expect("reasons is an array")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    for (i, a) in listed.iter().enumerate() {
        let tail = a.split_once(": ").map_or(*a, |(_, t)| t);
        for b in &listed[i + 1..] {
            assert!(!b.contains(tail), "a reason repeated: {body}");
        }
    }
    let (code, text) = show_check(&agent);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.starts_with("not ready: ") && text.contains("refused"),
        "{text}"
    );
    assert_dropped(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "the previous policy still filters",
    );
    let healthz = http_get(&topo.server, METRICS_ADDR, "/healthz");
    assert!(healthz.contains(" 200 "), "alive though unready: {healthz}");

    // The edit reverted: the file declares what is served again, and the
    // refusal of what is no longer there is history — ready without a
    // reload.
    agent.policy().write(POLICY);
    let (code, body) = readyz(&topo);
    assert_eq!(
        (code, &body["reasons"]),
        (200, &serde_json::json!([])),
        "{body}"
    );
    agent.policy().write("default_action = \"Sometimes\"\n");
    let mark = agent.log_mark();
    agent.signal(Signal::SIGHUP);
    agent.wait_message(
        mark,
        "policy reload refused; the running policy stays",
        LOG_TIMEOUT,
    );
    assert_eq!(readyz(&topo).0, 503);

    // An accepted reload: ready again.
    agent.policy().write(EDITED);
    let mark = agent.log_mark();
    agent.signal(Signal::SIGHUP);
    agent.wait_message(mark, "policy applied", LOG_TIMEOUT);
    let (code, body) = readyz(&topo);
    assert_eq!(
        (code, &body["reasons"]),
        (200, &serde_json::json!([])),
        "{body}"
    );
    assert_eq!(show_check(&agent), (Some(0), "ready\n".to_owned()));
    assert_connects(&topo, &agent, DENIED_SRC, 443, "the reloaded policy serves");

    // No daemon: not ready.
    let socket = agent.paths().socket.clone();
    agent.stop();
    let out = vaultfw_tests::vaultfw(&["show", "--check", "--socket", socket_str(&socket)]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

fn socket_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 socket path")
}
