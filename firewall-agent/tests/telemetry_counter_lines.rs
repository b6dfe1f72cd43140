//! The counter log lines without a kernel: the fields of the `verdict
//! counters` line (totals and deltas, packets per second, event
//! accounting, what totals and deltas mean) and of the per-interface
//! lines, as the daemon's ECS JSON log layer writes them.

use std::io::Write;
use std::sync::{Arc, Mutex};

use firewall_common::Verdict;
use serde_json::Value;
use tracing_subscriber::layer::SubscriberExt;
use vaultfw::dataplane::EventTotals;
use vaultfw::telemetry::logging::EcsJsonLayer;
use vaultfw::telemetry::{CounterSample, InterfaceCounters, StatsReporter};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with the agent's JSON log format captured; the lines.
fn logged(f: impl FnOnce()) -> Vec<Value> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::registry().with(EcsJsonLayer::new(move || writer.clone()));
    tracing::subscriber::with_default(subscriber, f);
    let bytes = captured.0.lock().unwrap().clone();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn row(pairs: &[(Verdict, u64)]) -> [u64; Verdict::COUNT] {
    let mut row = [0; Verdict::COUNT];
    for (v, n) in pairs {
        row[v.index() as usize] = *n;
    }
    row
}

#[test]
fn deltas_count_from_the_baseline_and_every_line_carries_every_counter_without_prose() {
    // A predecessor's counts are in the baseline: they are totals, never
    // deltas of this agent.
    let eth0 = |deny, allow| InterfaceCounters {
        name: "eth0".into(),
        ifindex: 2,
        totals: row(&[(Verdict::DenyNoMatch, deny), (Verdict::AllowIpRule, allow)]),
    };
    let baseline = CounterSample {
        totals: row(&[(Verdict::DenyNoMatch, 100), (Verdict::AllowIpRule, 10)]),
        interfaces: vec![eth0(100, 10)],
        events: EventTotals {
            sent: 5,
            rate_limited: 1,
            ring_full: 0,
        },
    };
    let mut reporter = StatsReporter::from_sample(&baseline);
    let now = CounterSample {
        totals: row(&[(Verdict::DenyNoMatch, 130), (Verdict::AllowIpRule, 13)]),
        interfaces: vec![eth0(130, 13)],
        events: EventTotals {
            sent: 7,
            rate_limited: 30,
            ring_full: 2,
        },
    };
    let lines = logged(|| reporter.report_sample(&now, true));
    assert_eq!(lines.len(), 2, "{lines:?}");
    let (interface, total) = (&lines[0], &lines[1]);
    assert_eq!(interface["message"], "interface verdict counters");
    let ingress = &interface["observer"]["ingress"]["interface"];
    assert_eq!(
        (ingress["name"].as_str(), ingress["id"].as_str()),
        (Some("eth0"), Some("2"))
    );
    assert_eq!(total["message"], "verdict counters");
    for line in [interface, total] {
        let own = &line["vaultfw"];
        let (totals, deltas) = (&own["counters"]["totals"], &own["counters"]["deltas"]);
        assert_eq!(
            (
                totals["deny_no_match"].as_u64(),
                deltas["deny_no_match"].as_u64()
            ),
            (Some(130), Some(30)),
            "{line}"
        );
        assert_eq!(
            (
                totals["allow_ip_rule"].as_u64(),
                deltas["allow_ip_rule"].as_u64()
            ),
            (Some(13), Some(3)),
            "{line}"
        );
        for v in Verdict::ALL {
            assert!(
                totals[v.name()].is_u64() && deltas[v.name()].is_u64(),
                "every counter is on the line: {} in {line}",
                v.name()
            );
        }
        assert_eq!(own["packets_delta"].as_u64(), Some(33), "{line}");
        assert!(
            own["packets_per_s"].as_f64().is_some_and(|r| r > 0.0),
            "{line}"
        );
        assert_eq!(own["final"], true);
        assert_eq!(line["event"]["dataset"], "vaultfw.counters");
        // What totals and deltas mean is in docs/logging.md, not in the
        // line: no field holds prose.
        assert!(line.to_string().len() < 1500, "{line}");
    }
    let events = &total["vaultfw"]["events"];
    assert_eq!(
        (events["sent"].as_u64(), events["sent_delta"].as_u64()),
        (Some(7), Some(2)),
        "{total}"
    );
    assert_eq!(
        (events["dropped"].as_u64(), events["dropped_delta"].as_u64()),
        (Some(32), Some(31)),
        "{total}"
    );
    assert_eq!(
        (
            events["rate_limited"].as_u64(),
            events["ring_full"].as_u64()
        ),
        (Some(30), Some(2)),
        "{total}"
    );

    // The next line's deltas count from this one.
    let later = CounterSample {
        totals: row(&[(Verdict::DenyNoMatch, 131), (Verdict::AllowIpRule, 13)]),
        interfaces: vec![eth0(131, 13)],
        events: now.events,
    };
    let lines = logged(|| reporter.report_sample(&later, false));
    let own = &lines[1]["vaultfw"];
    assert_eq!(own["counters"]["deltas"]["deny_no_match"].as_u64(), Some(1));
    assert_eq!(own["events"]["dropped_delta"].as_u64(), Some(0));
    assert_eq!(own["final"], false);
}

#[test]
fn the_original_report_keeps_its_fields() {
    let mut reporter = StatsReporter::new(row(&[(Verdict::PassControlPlane, 4)]));
    let lines = logged(|| reporter.report(row(&[(Verdict::PassControlPlane, 9)]), false));
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["message"], "verdict counters");
    let own = &line["vaultfw"];
    assert_eq!(
        (
            own["counters"]["totals"]["pass_control_plane"].as_u64(),
            own["counters"]["deltas"]["pass_control_plane"].as_u64()
        ),
        (Some(9), Some(5))
    );
    assert!(own["interval_s"].is_number());
}
