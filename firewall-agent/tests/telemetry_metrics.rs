//! Metrics without a kernel: the Prometheus text a snapshot renders to,
//! and the HTTP server answering scrapes and probes through the daemon
//! loop's channel (here a stand-in thread).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use firewall_common::Verdict;
use vaultfw::compile::{RuleKind, RuleRef};
use vaultfw::control::replies::Readiness;
use vaultfw::dataplane::EventTotals;
use vaultfw::telemetry::metrics::{MAX_CONNECTIONS, READ_DEADLINE, SnapshotRequest, render};
use vaultfw::telemetry::{
    CounterSample, DurationHistogram, HealthSample, InterfaceCounters, InterfaceSample, MapFill,
    MetricsServer, MetricsSnapshot, RuleHitSample, ServiceTagsSample,
};

fn snapshot() -> MetricsSnapshot {
    let mut eth0 = [0u64; Verdict::COUNT];
    eth0[Verdict::DenyNoMatch.index() as usize] = 30;
    eth0[Verdict::AllowIpRule.index() as usize] = 43;
    let mut totals = eth0;
    totals[Verdict::PassNonIp.index() as usize] = 2; // a detached interface's slot
    MetricsSnapshot {
        counters: CounterSample {
            totals,
            interfaces: vec![InterfaceCounters {
                name: "eth0".into(),
                ifindex: 2,
                totals: eth0,
            }],
            events: EventTotals {
                sent: 6,
                rate_limited: 4,
                ring_full: 1,
            },
        },
        rules: vec![
            RuleHitSample {
                rule: RuleRef {
                    kind: RuleKind::Ip,
                    name: "203.0.113.0/24".into(),
                    index: 0,
                },
                packets: 43,
                bytes: 5842,
                last_hit: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_500)),
            },
            RuleHitSample {
                rule: RuleRef {
                    kind: RuleKind::Trusted,
                    name: "Sql".into(),
                    index: 0,
                },
                packets: 0,
                bytes: 0,
                last_hit: None,
            },
        ],
        generation: 7,
        lookup: vaultfw::cli::Lookup::Compiled,
        apply_durations: {
            let mut h = DurationHistogram::default();
            h.observe(Duration::from_millis(12));
            h.observe(Duration::from_secs(30));
            h
        },
        map_fill: vec![MapFill {
            table: "ip_rules",
            entries: 2,
            capacity: 127,
        }],
        health: HealthSample {
            last_reload: Some((
                false,
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_100),
            )),
            policy_in_sync: false,
            control_socket_present: true,
            unfiltered_interfaces: 2,
        },
        readiness: Readiness {
            ready: false,
            reasons: vec!["r".into()],
        },
        interfaces: vec![
            InterfaceSample {
                name: "eth0".into(),
                attached: true,
                mode: Some("native".into()),
            },
            InterfaceSample {
                name: "eth1".into(),
                attached: false,
                mode: None,
            },
        ],
        confirmation_deadline: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_200)),
        service_tags: Some(ServiceTagsSample {
            change_number: Some(301),
            modified: Some(SystemTime::now() - Duration::from_secs(7200)),
        }),
    }
}

#[test]
fn a_snapshot_renders_every_family_in_the_prometheus_text_format() {
    let text = render(&snapshot());
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        "# TYPE vaultfw_verdict_packets_total counter",
        r#"vaultfw_verdict_packets_total{interface="eth0",verdict="deny_no_match"} 30"#,
        r#"vaultfw_verdict_packets_total{interface="eth0",verdict="allow_ip_rule"} 43"#,
        r#"vaultfw_verdict_packets_total{interface="eth0",verdict="pass_non_ip"} 0"#,
        r#"vaultfw_verdict_packets_total{interface="other",verdict="pass_non_ip"} 2"#,
        r#"vaultfw_rule_hit_packets_total{kind="ip",rule="203.0.113.0/24"} 43"#,
        r#"vaultfw_rule_hit_bytes_total{kind="ip",rule="203.0.113.0/24"} 5842"#,
        r#"vaultfw_rule_last_hit_timestamp_seconds{kind="ip",rule="203.0.113.0/24"} 1800000000.5"#,
        r#"vaultfw_rule_hit_packets_total{kind="trusted",rule="Sql"} 0"#,
        "vaultfw_access_log_events_written_total 6",
        r#"vaultfw_access_log_events_dropped_total{reason="rate_limited"} 4"#,
        r#"vaultfw_access_log_events_dropped_total{reason="ring_full"} 1"#,
        "vaultfw_policy_generation 7",
        "# TYPE vaultfw_lookup_info gauge",
        r#"vaultfw_lookup_info{lookup="compiled"} 1"#,
        "# TYPE vaultfw_apply_duration_seconds histogram",
        r#"vaultfw_apply_duration_seconds_bucket{le="0.01"} 0"#,
        r#"vaultfw_apply_duration_seconds_bucket{le="0.025"} 1"#,
        r#"vaultfw_apply_duration_seconds_bucket{le="10"} 1"#,
        r#"vaultfw_apply_duration_seconds_bucket{le="+Inf"} 2"#,
        "vaultfw_apply_duration_seconds_sum 30.012",
        "vaultfw_apply_duration_seconds_count 2",
        r#"vaultfw_rules{kind="ip"} 1"#,
        r#"vaultfw_rules{kind="vnet"} 0"#,
        r#"vaultfw_rules{kind="trusted"} 1"#,
        "vaultfw_ready 0",
        r#"vaultfw_interface_attached{interface="eth0"} 1"#,
        r#"vaultfw_interface_attached{interface="eth1"} 0"#,
        r#"vaultfw_interface_xdp_mode{interface="eth0",mode="native"} 1"#,
        "vaultfw_confirmation_deadline_timestamp_seconds 1800000200.0",
        "vaultfw_service_tags_change_number 301",
        r#"vaultfw_map_entries{table="ip_rules"} 2"#,
        r#"vaultfw_map_capacity_entries{table="ip_rules"} 127"#,
        "vaultfw_last_reload_success 0",
        "vaultfw_last_reload_timestamp_seconds 1800000100.0",
        "vaultfw_policy_in_sync 0",
        "vaultfw_control_socket_present 1",
        "vaultfw_unfiltered_interfaces 2",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
    }
    // The labels say which build runs on which kernel.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("vaultfw_build_info{version=\"")
                && l.contains(",commit=\"")
                && l.contains(",kernel=\"")
                && l.ends_with("} 1")),
        "{text}"
    );
    let age: f64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("vaultfw_service_tags_file_age_seconds "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the file's age in\n{text}"));
    assert!((7200.0..7300.0).contains(&age), "{age}");
    // An interface not attached has no mode.
    assert!(!text.contains(r#"vaultfw_interface_xdp_mode{interface="eth1""#));
    // A rule never hit has no last-hit sample (not a 1970 date).
    assert!(
        !text.contains(r#"vaultfw_rule_last_hit_timestamp_seconds{kind="trusted""#),
        "{text}"
    );
    // Every frame appears once: the interface rows add up to the totals.
    let verdict_sum: u64 = lines
        .iter()
        .filter(|l| l.starts_with("vaultfw_verdict_packets_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(verdict_sum, 75);
}

fn get(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn the_server_answers_scrapes_with_a_fresh_snapshot_and_stops() {
    // The daemon's runtime; the test's own blocking calls stay off it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<SnapshotRequest>(4);
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), tx).unwrap();
    let addr = server.addr();
    assert_ne!(addr.port(), 0);
    // The daemon loop's part: one snapshot per request, generation counting
    // up, so two scrapes prove nothing is cached.
    let answering = std::thread::spawn(move || {
        let mut generation = 0;
        while let Some(request) = rx.blocking_recv() {
            match request {
                SnapshotRequest::Metrics(reply) => {
                    generation += 1;
                    let _ = reply.send(MetricsSnapshot {
                        generation,
                        ..snapshot()
                    });
                }
                // Ready once two scrapes were answered.
                SnapshotRequest::Readiness(reply) => {
                    let _ = reply.send(Readiness {
                        ready: generation >= 2,
                        reasons: if generation >= 2 {
                            vec![]
                        } else {
                            vec!["not yet".into()]
                        },
                    });
                }
            }
        }
    });
    let alive = get(addr, "GET /healthz HTTP/1.0\r\n\r\n");
    assert!(alive.contains(" 200 "), "{alive}");
    let unready = get(addr, "GET /readyz HTTP/1.0\r\n\r\n");
    assert!(unready.contains(" 503 "), "{unready}");
    assert!(
        unready.ends_with("{\"ready\":false,\"reasons\":[\"not yet\"]}\n"),
        "{unready}"
    );
    let first = get(addr, "GET /metrics HTTP/1.0\r\n\r\n");
    assert!(
        first.starts_with("HTTP/1.") && first.contains(" 200 "),
        "{first}"
    );
    assert!(
        first
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{first}"
    );
    assert!(first.contains("\nvaultfw_policy_generation 1\n"), "{first}");
    let second = get(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    assert!(
        second.contains("\nvaultfw_policy_generation 2\n"),
        "{second}"
    );
    let ready = get(addr, "GET /readyz HTTP/1.0\r\n\r\n");
    assert!(ready.contains(" 200 "), "{ready}");
    assert!(
        ready.ends_with("{\"ready\":true,\"reasons\":[]}\n"),
        "{ready}"
    );
    assert!(
        get(addr, "GET /other HTTP/1.0\r\n\r\n")
            .lines()
            .next()
            .unwrap()
            .contains(" 404")
    );
    assert!(
        get(addr, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
            .lines()
            .next()
            .unwrap()
            .contains(" 405")
    );
    server.stop();
    answering.join().unwrap();
    // The accept task is aborted on the runtime, a moment later.
    let closed = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        TcpStream::connect(addr).is_err()
    });
    assert!(closed, "still listening 2 s after stop");
}

/// A server on `runtime` whose stand-in daemon loop answers every probe
/// "ready" (it ends with the server).
fn ready_server(runtime: &tokio::runtime::Runtime) -> MetricsServer {
    let _entered = runtime.enter();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<SnapshotRequest>(4);
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), tx).unwrap();
    std::thread::spawn(move || {
        while let Some(request) = rx.blocking_recv() {
            match request {
                SnapshotRequest::Metrics(reply) => {
                    let _ = reply.send(snapshot());
                }
                SnapshotRequest::Readiness(reply) => {
                    let _ = reply.send(Readiness {
                        ready: true,
                        reasons: vec![],
                    });
                }
            }
        }
    });
    server
}

/// What the server sends on `stream` until it closes it; panics when it
/// is still open after `within`.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("still open after {within:?} ({e}); got {got:?}"),
    }
}

#[test]
fn a_connection_that_sends_no_request_is_closed_after_the_read_deadline() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = ready_server(&runtime);
    let mut idle = TcpStream::connect(server.addr()).unwrap();
    let started = std::time::Instant::now();
    // Generous: the deadline, plus time for a loaded machine.
    let got = read_until_closed(&mut idle, READ_DEADLINE * 4);
    assert!(
        started.elapsed() >= READ_DEADLINE - Duration::from_millis(500),
        "closed before the deadline, after {:?}: {got:?}",
        started.elapsed()
    );
    // Still serving.
    let alive = get(server.addr(), "GET /healthz HTTP/1.0\r\n\r\n");
    assert!(alive.contains(" 200 "), "{alive}");
}

#[test]
fn connections_over_the_cap_are_closed_at_once_and_slots_free_when_clients_leave() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = ready_server(&runtime);
    let held: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(server.addr()).unwrap())
        .collect();
    // Accepted after the held ones (the backlog is first in, first out):
    // no slot is left, so it is closed without an answer, long before the
    // held ones' read deadline.
    let mut over = TcpStream::connect(server.addr()).unwrap();
    over.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let got = read_until_closed(&mut over, READ_DEADLINE);
    assert!(
        got.is_empty(),
        "answered over the cap: {}",
        String::from_utf8_lossy(&got)
    );
    drop(held);
    // The slots free as the server sees the clients close.
    let answered = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        get(server.addr(), "GET /healthz HTTP/1.0\r\n\r\n").contains(" 200 ")
    });
    assert!(answered, "no answer after the held connections closed");
}
