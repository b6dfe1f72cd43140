//! The access log end to end: a denied SYN appears in the access
//! log — `vaultfw logs` (JSON and table, `--since`, `--follow`) and the
//! `--access-log` file, which SIGHUP reopens after a rotation — with its
//! fields; `--log-allowed` names the rule that allowed an attempt; and a
//! bounded flood of denied SYNs between the test's namespaces is logged at
//! no more than the configured rate, `events_dropped` accounting for every
//! other one, while the daemon keeps answering.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use vaultfw_tests::cli::{CliOutput, exit};
use vaultfw_tests::raw::{mac, send_frames, tcp_syn};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, DENIED_SRC, NetNs, PolicyFile, SERVER_IP, Topology, in_netns,
    vaultfw, vaultfw_bin,
};

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

const WAIT: Duration = Duration::from_secs(10);

/// The records of `vaultfw logs --output json` (one JSON object a line).
fn records(out: &CliOutput) -> Vec<Value> {
    out.expect_code(0);
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON record ({e}): {l}\n{}", out.context()))
        })
        .collect()
}

/// `vaultfw logs ARGS --output json` until it returns at least `n`
/// records (bounded); returns them.
fn wait_records(agent: &Agent, args: &[&str], n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    loop {
        let found = records(&agent.cli_json(&all));
        if found.len() >= n || Instant::now() > deadline {
            assert!(
                found.len() >= n,
                "{} access-log record(s), expected {n}: {found:?}\n{}",
                found.len(),
                agent.output()
            );
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines of a file, parsed as JSON.
fn file_records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", path.display()))
        })
        .collect()
}

/// One raw SYN from `src`:40000 to the server's `port`.
fn syn(topo: &Topology, src: Ipv4Addr, port: u16) -> Vec<u8> {
    tcp_syn(
        mac(&topo.client, topo.client_veth()),
        mac(&topo.server, topo.server_veth()),
        None,
        src,
        SERVER_IP,
        port,
    )
}

/// Checks the fields of the record of a denied SYN from `src`.
fn assert_denied_syn(record: &Value, src: Ipv4Addr, interface: &str) {
    let expected = [
        ("event.dataset", Value::from("vaultfw.access")),
        ("source.ip", Value::from(src.to_string())),
        ("destination.ip", Value::from(SERVER_IP.to_string())),
        ("source.port", Value::from(40000)),
        ("destination.port", Value::from(443)),
        ("network.transport", Value::from("tcp")),
        ("vaultfw.verdict", Value::from("deny_no_match")),
        ("event.action", Value::from("drop")),
        ("event.type", serde_json::json!(["connection", "denied"])),
        ("observer.ingress.interface.name", Value::from(interface)),
        ("network.vlan", Value::Null),
    ];
    for (field, want) in expected {
        let got = field.split('.').fold(record, |v, part| &v[part]);
        assert_eq!(*got, want, "field {field} of {record}");
    }
    // RFC 3339 in UTC: 2026-01-31T12:00:00.123456Z
    let time = record["@timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("no time in {record}"));
    assert!(
        time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
        "time {time:?} is not RFC 3339 UTC"
    );
    assert!(
        record["observer"]["ingress"]["interface"]["id"]
            .as_str()
            .and_then(|i| i.parse::<u32>().ok())
            .is_some_and(|i| i > 0),
        "{record}"
    );
    assert!(
        record.get("rule").is_none(),
        "a denied attempt names no rule: {record}"
    );
}

#[test]
fn a_denied_syn_is_in_the_access_log_file_and_in_vaultfw_logs_with_its_fields() {
    let topo = Topology::new();
    let files = PolicyFile::named("access.log", "");
    let log_path = files.path().to_owned();
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec!["--access-log".into(), files.path_str().to_owned()];
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();
    let veth = topo.server_veth().to_owned();

    send_frames(
        &topo.client,
        topo.client_veth(),
        &[syn(&topo, DENIED_SRC, 443)],
    );
    let first = wait_records(&agent, &[], 1);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_denied_syn(&first[0], DENIED_SRC, &veth);
    assert_eq!(
        file_records(&log_path),
        first,
        "the file and `vaultfw logs` differ"
    );
    // The table form, for people.
    let table = agent.cli(&["logs"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains(&format!(
            "{veth}  deny_no_match  tcp {DENIED_SRC}:40000 -> {SERVER_IP}:443"
        )),
        "{table}"
    );

    // logrotate: move the file away, SIGHUP, and the next record goes to a
    // new file at the same path.
    let rotated = log_path.with_extension("log.1");
    std::fs::rename(&log_path, &rotated).expect("rotating the access log");
    let mark = agent.log_mark();
    agent.signal(Signal::SIGHUP);
    agent.wait_message(mark, "access log reopened", WAIT);
    let second_src = Ipv4Addr::new(198, 51, 100, 8);
    send_frames(
        &topo.client,
        topo.client_veth(),
        &[syn(&topo, second_src, 443)],
    );
    let both = wait_records(&agent, &[], 2);
    assert_denied_syn(&both[1], second_src, &veth);
    assert_eq!(
        file_records(&rotated),
        vec![both[0].clone()],
        "the rotated file"
    );
    assert_eq!(
        file_records(&log_path),
        vec![both[1].clone()],
        "the reopened file"
    );

    // --since: a duration ago, or a time.
    assert_eq!(
        records(&agent.cli_json(&["logs", "--since", "1h"])).len(),
        2
    );
    assert!(records(&agent.cli_json(&["logs", "--since", "2099-01-01T00:00:00Z"])).is_empty());
    let bad = agent.cli_json(&["logs", "--since", "yesterday-ish"]);
    bad.expect_code(2);

    // --follow prints what is there, then each new record as it comes.
    let mut child = Command::new(vaultfw_bin())
        .args(["logs", "--follow", "--output", "json", "--socket"])
        .arg(&agent.paths().socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting vaultfw logs --follow");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let third_src = Ipv4Addr::new(198, 51, 100, 9);
    let mut followed = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut sent_third = false;
    while !followed
        .iter()
        .any(|r: &Value| r["source"]["ip"] == third_src.to_string())
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => {
                followed.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")))
            }
            Err(_) if Instant::now() < deadline => {}
            Err(_) => break,
        }
        if followed.len() >= 2 && !sent_third {
            send_frames(
                &topo.client,
                topo.client_veth(),
                &[syn(&topo, third_src, 443)],
            );
            sent_third = true;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    assert_eq!(
        followed.len(),
        3,
        "logs --follow printed {followed:?}\n{}",
        agent.output()
    );
    assert_eq!(
        &followed[..2],
        &both[..],
        "--follow starts with what is there"
    );
    assert_denied_syn(&followed[2], third_src, &veth);
    agent.stop();
}

#[test]
fn allowed_attempts_are_logged_with_their_rule_when_asked() {
    let topo = Topology::new();
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec!["--log-allowed".into()];
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();
    // Nothing listens on 443: the SYN is judged, answered by a RST, and
    // the client's kernel ignores that.
    let mark = agent.log_mark();
    send_frames(
        &topo.client,
        topo.client_veth(),
        &[syn(&topo, ALLOWED_SRC, 443)],
    );
    // Without --access-log, records go to stdout among the log lines.
    let line = agent.wait_log(mark, "an access record on stdout", WAIT, |l| {
        l["event"]["dataset"] == "vaultfw.access"
    });
    assert_eq!(line["vaultfw"]["verdict"], "allow_ip_rule", "{line}");
    assert_eq!(line["event"]["action"], "pass", "{line}");
    assert_eq!(line["rule"]["name"], "203.0.113.0/24", "{line}");
    assert_eq!(line["rule"]["category"], "ip", "{line}");
    assert_eq!(line["source"]["ip"], ALLOWED_SRC.to_string(), "{line}");
    let logged = wait_records(&agent, &[], 1);
    assert_eq!(logged, vec![line]);
    agent.stop();
}

#[test]
fn metrics_on_a_non_loopback_address_are_refused_unless_allowed() {
    let topo = Topology::new();
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec!["--metrics-addr".into(), "0.0.0.0:9464".into()];
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    let status = agent.wait_exit(WAIT);
    assert_eq!(
        status.code(),
        Some(exit::INVALID_INPUT),
        "{}",
        agent.output()
    );
    assert!(
        agent.output().contains("--metrics-allow-remote"),
        "{}",
        agent.output()
    );

    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec![
        "--metrics-addr".into(),
        "0.0.0.0:9464".into(),
        "--metrics-allow-remote".into(),
    ];
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();
    agent.stop();
}

/// Sends `frames` out of `iface` in `ns` in bursts of 64 with a short
/// pause between them, so the veth's 256-frame ring toward the XDP program
/// never overflows (an overflow would drop frames before the program
/// judges them).
fn send_paced(ns: &NetNs, iface: &str, frames: &[Vec<u8>]) {
    let iface = iface.to_owned();
    in_netns(ns, || {
        let ifindex = nix::net::if_::if_nametoindex(iface.as_str())
            .unwrap_or_else(|e| panic!("{iface}: {e}"));
        // SAFETY: plain socket(2); closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        for burst in frames.chunks(64) {
            for frame in burst {
                // SAFETY: frame and addr are valid for the lengths given.
                let sent = unsafe {
                    libc::sendto(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&addr as *const libc::sockaddr_ll).cast(),
                        size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                assert_eq!(
                    sent,
                    frame.len() as isize,
                    "sendto: {}",
                    std::io::Error::last_os_error()
                );
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
    });
}

/// CPUs the kernel keeps per-CPU state for (each has its own bucket).
fn possible_cpus() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    u64::try_from(n).unwrap_or(1).max(1)
}

#[test]
fn a_flood_of_denied_syns_is_logged_at_the_configured_rate_and_every_other_one_counted_as_dropped()
{
    const FLOOD: usize = 20_000;
    const RATE: u64 = 50;
    let topo = Topology::new();
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec!["--event-rate".into(), RATE.to_string()];
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();

    // 20,000 SYNs from 20,000 sources in 198.18.0.0/15 (benchmarking
    // space: never a real host), none of them allowed.
    let (client_mac, server_mac) = (
        mac(&topo.client, topo.client_veth()),
        mac(&topo.server, topo.server_veth()),
    );
    let frames: Vec<Vec<u8>> = (0..FLOOD)
        .map(|i| {
            let src = Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250 + 1) as u8);
            tcp_syn(client_mac, server_mac, None, src, SERVER_IP, 443)
        })
        .collect();
    let socket = agent.paths().socket.display().to_string();
    let flooding = AtomicBool::new(true);
    let started = Instant::now();
    let (slowest, answered) = std::thread::scope(|scope| {
        // The daemon keeps answering while the flood lasts.
        let prober = scope.spawn(|| {
            let (mut slowest, mut answered) = (Duration::ZERO, 0u32);
            while flooding.load(Ordering::SeqCst) {
                let asked = Instant::now();
                let out = vaultfw(&["show", "--output", "json", "--socket", &socket]);
                let took = asked.elapsed();
                assert!(
                    out.status.success(),
                    "show failed during the flood: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                slowest = slowest.max(took);
                answered += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (slowest, answered)
        });
        send_paced(&topo.client, topo.client_veth(), &frames);
        // A control-plane SYN behind the flood on the same queue: once it is
        // counted, every SYN of the flood was judged.
        send_frames(
            &topo.client,
            topo.client_veth(),
            &[syn(&topo, Ipv4Addr::new(198, 19, 255, 1), 22)],
        );
        let deadline = Instant::now() + WAIT;
        while agent.counter("pass_control_plane") < 1 {
            assert!(
                Instant::now() < deadline,
                "the fence frame was never counted\n{}",
                agent.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        flooding.store(false, Ordering::SeqCst);
        prober.join().expect("the show prober panicked")
    });
    let elapsed = started.elapsed();
    eprintln!(
        "flood: {FLOOD} SYNs judged in {elapsed:?}; show answered {answered} time(s), the slowest in {slowest:?}"
    );
    assert!(answered >= 1, "show was never asked during the flood");
    assert!(
        slowest < Duration::from_secs(1),
        "show took {slowest:?} during the flood"
    );

    let stats = agent.cli_json(&["stats"]).ok();
    let denied = stats["counters"]["deny_no_match"].as_u64();
    assert_eq!(
        denied,
        Some(FLOOD as u64),
        "every SYN of the flood judged once: {stats:#}"
    );
    let events = &stats["events"];
    let (sent, rate_limited, ring_full) = (
        events["sent"].as_u64().expect("events.sent"),
        events["rate_limited"]
            .as_u64()
            .expect("events.rate_limited"),
        events["ring_full"].as_u64().expect("events.ring_full"),
    );
    assert_eq!(
        sent + rate_limited + ring_full,
        FLOOD as u64,
        "every denied SYN is either logged or counted as dropped: {stats:#}"
    );
    assert_eq!(
        events["dropped"].as_u64(),
        Some(rate_limited + ring_full),
        "{stats:#}"
    );
    // Each CPU's bucket holds one second of budget and refills at RATE/s.
    let bound =
        (possible_cpus() as f64 * RATE as f64 * (1.0 + elapsed.as_secs_f64())).ceil() as u64;
    assert!(
        sent <= bound,
        "{sent} events in {elapsed:?} exceed {} CPU(s) × {RATE}/s (+1 s of burst): {stats:#}",
        possible_cpus()
    );
    assert!(
        sent >= RATE,
        "a full bucket logs its first {RATE} events: {stats:#}"
    );

    // Every event sent reached the access log, and only those.
    let logged = wait_records(&agent, &[], sent as usize);
    assert_eq!(logged.len() as u64, sent, "{stats:#}");
    assert!(
        logged
            .iter()
            .all(|r| r["vaultfw"]["verdict"] == "deny_no_match" && r["destination"]["port"] == 443),
        "{logged:?}"
    );
    let final_stats = agent.stop();
    assert_eq!(
        final_stats.get("events_sent"),
        sent,
        "{}",
        final_stats.log()
    );
    assert_eq!(
        final_stats.get("events_dropped"),
        rate_limited + ring_full,
        "{}",
        final_stats.log()
    );
    let stdout_records = final_stats
        .stdout_lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["event"]["dataset"] == "vaultfw.access")
        .count() as u64;
    assert_eq!(stdout_records, sent, "access records on stdout");
}
