//! The periodic verdict-counter log lines.
//!
//! Each interval the daemon logs one `interface verdict counters` line per
//! attached interface, then one `verdict counters` line for all of them.
//! Every line carries each verdict counter twice: under
//! `vaultfw.counters.totals` the kernel's total (per-CPU values summed; the
//! counters live in pinned maps, so they survive restarts and upgrades of
//! the agent), under `vaultfw.counters.deltas` what was added since the
//! previous line — since this agent started for the first line, so an
//! agent that adopts a predecessor's pins never counts a frame twice.
//! docs/logging.md says so once, instead of every line.

use std::collections::BTreeMap;
use std::time::Instant;

use firewall_common::{INTERFACE_SLOTS, Verdict};
use serde_json::{Map, Value, json};

use super::ecs;

use crate::dataplane::{EventTotals, VerdictTotals};

/// One attached interface's verdict counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// Interface name.
    pub name: String,
    /// Its ifindex (its counters live in slot `ifindex % 64`).
    pub ifindex: u32,
    /// The kernel totals of its counter slot.
    pub totals: VerdictTotals,
}

/// The counters read at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSample {
    /// Verdict totals over every interface.
    pub totals: VerdictTotals,
    /// Per attached interface.
    pub interfaces: Vec<InterfaceCounters>,
    /// Access-log accounting.
    pub events: EventTotals,
}

impl CounterSample {
    /// Interfaces whose counter slot another listed interface shares (their
    /// ifindexes are 64 apart): their per-interface numbers are the sum of
    /// both.
    pub fn shared_slots(&self) -> Vec<&str> {
        let mut by_slot: BTreeMap<u32, usize> = BTreeMap::new();
        for i in &self.interfaces {
            *by_slot.entry(i.ifindex % INTERFACE_SLOTS).or_default() += 1;
        }
        self.interfaces
            .iter()
            .filter(|i| by_slot[&(i.ifindex % INTERFACE_SLOTS)] > 1)
            .map(|i| i.name.as_str())
            .collect()
    }
}

/// The sum of every verdict counter: all frames judged.
pub fn frames(totals: &VerdictTotals) -> u64 {
    totals.iter().sum()
}

/// Per-counter growth from `before` to `now` (saturating: a counter map
/// replaced underneath us reads as no growth, never as a wrap).
pub fn deltas(now: &VerdictTotals, before: &VerdictTotals) -> VerdictTotals {
    let mut d = [0u64; Verdict::COUNT];
    for (i, delta) in d.iter_mut().enumerate() {
        *delta = now[i].saturating_sub(before[i]);
    }
    d
}

/// Remembers the last sample so each line can report deltas.
pub struct StatsReporter {
    last: VerdictTotals,
    last_interfaces: BTreeMap<(String, u32), VerdictTotals>,
    last_events: EventTotals,
    last_at: Instant,
}

impl StatsReporter {
    /// Starts from `baseline` (the counters at start: deltas count from it).
    pub fn new(baseline: VerdictTotals) -> Self {
        Self::from_sample(&CounterSample {
            totals: baseline,
            ..CounterSample::default()
        })
    }

    /// Starts from a whole sample taken at start: totals, interfaces and
    /// access-log accounting. An interface first seen later counts its
    /// deltas from the first line that lists it.
    pub fn from_sample(baseline: &CounterSample) -> Self {
        StatsReporter {
            last: baseline.totals,
            last_interfaces: baseline
                .interfaces
                .iter()
                .map(|i| ((i.name.clone(), i.ifindex), i.totals))
                .collect(),
            last_events: baseline.events,
            last_at: Instant::now(),
        }
    }

    /// Logs one `verdict counters` line with every counter's total and its
    /// delta since the previous line. `is_final` marks the line at shutdown.
    pub fn report(&mut self, totals: VerdictTotals, is_final: bool) {
        let events = self.last_events;
        self.report_sample(
            &CounterSample {
                totals,
                interfaces: Vec::new(),
                events,
            },
            is_final,
        );
    }

    /// Logs one `interface verdict counters` line per interface of `sample`,
    /// then the `verdict counters` line of the totals.
    pub fn report_sample(&mut self, sample: &CounterSample, is_final: bool) {
        let interval_s = self.last_at.elapsed().as_secs_f64();
        let shared = sample.shared_slots();
        let mut seen = BTreeMap::new();
        for interface in &sample.interfaces {
            let key = (interface.name.clone(), interface.ifindex);
            let before = self
                .last_interfaces
                .get(&key)
                .copied()
                .unwrap_or(interface.totals);
            let d = deltas(&interface.totals, &before);
            let line = Line::new(&interface.totals, &d, interval_s, is_final);
            log_interface(
                &line,
                &interface.name,
                interface.ifindex,
                shared.contains(&interface.name.as_str()),
            );
            seen.insert(key, interface.totals);
        }
        let d = deltas(&sample.totals, &self.last);
        let line = Line::new(&sample.totals, &d, interval_s, is_final);
        let events = EventLine::new(&sample.events, &self.last_events);
        log_totals(&line, &events, sample.interfaces.len());

        self.last = sample.totals;
        self.last_interfaces = seen;
        self.last_events = sample.events;
        self.last_at = Instant::now();
    }
}

/// What one counter line carries besides the counters.
struct Line<'a> {
    totals: &'a VerdictTotals,
    deltas: &'a VerdictTotals,
    interval_s: f64,
    is_final: bool,
    frames_delta: u64,
    packets_per_s: f64,
}

impl<'a> Line<'a> {
    fn new(
        totals: &'a VerdictTotals,
        deltas: &'a VerdictTotals,
        interval_s: f64,
        is_final: bool,
    ) -> Self {
        let frames_delta = frames(deltas);
        let packets_per_s = if interval_s > 0.0 {
            // Two decimals are plenty for a rate, and keep the line short.
            (frames_delta as f64 / interval_s * 100.0).round() / 100.0
        } else {
            0.0
        };
        Line {
            totals,
            deltas,
            interval_s,
            is_final,
            frames_delta,
            packets_per_s,
        }
    }
}

/// The access log's accounting on a counter line.
struct EventLine {
    sent: u64,
    sent_delta: u64,
    dropped: u64,
    dropped_delta: u64,
    rate_limited: u64,
    ring_full: u64,
}

impl EventLine {
    fn new(now: &EventTotals, before: &EventTotals) -> Self {
        let dropped = |e: &EventTotals| e.rate_limited + e.ring_full;
        EventLine {
            sent: now.sent,
            sent_delta: now.sent.saturating_sub(before.sent),
            dropped: dropped(now),
            dropped_delta: dropped(now).saturating_sub(dropped(before)),
            rate_limited: now.rate_limited,
            ring_full: now.ring_full,
        }
    }
}

/// The counters of a line as JSON objects: name → total, name → delta,
/// named exactly like the counters of DESIGN.md section 2.
fn counters_json(line: &Line<'_>) -> (Map<String, Value>, Map<String, Value>) {
    let mut totals = Map::new();
    let mut deltas = Map::new();
    for v in Verdict::ALL {
        let i = v.index() as usize;
        totals.insert(v.name().to_owned(), line.totals[i].into());
        deltas.insert(v.name().to_owned(), line.deltas[i].into());
    }
    (totals, deltas)
}

/// The fields every counter line has.
fn line_body(line: &Line<'_>) -> Map<String, Value> {
    let (totals, deltas) = counters_json(line);
    ecs::object([
        ("event.kind", json!("metric")),
        ("event.dataset", json!("vaultfw.counters")),
        ("vaultfw.interval_s", json!(line.interval_s)),
        ("vaultfw.final", json!(line.is_final)),
        ("vaultfw.packets_delta", json!(line.frames_delta)),
        ("vaultfw.packets_per_s", json!(line.packets_per_s)),
        ("vaultfw.counters.totals", Value::Object(totals)),
        ("vaultfw.counters.deltas", Value::Object(deltas)),
    ])
}

/// The per-interface lines have their own message: the totals line keeps
/// `verdict counters`, which tools already look for.
fn log_interface(line: &Line<'_>, name: &str, ifindex: u32, shared_slot: bool) {
    let mut body = line_body(line);
    ecs::merge(
        &mut body,
        ecs::object([
            ("observer.ingress.interface.name", json!(name)),
            ("observer.ingress.interface.id", json!(ifindex.to_string())),
            ("vaultfw.counter_slot", json!(ifindex % INTERFACE_SLOTS)),
            ("vaultfw.shared_slot", json!(shared_slot)),
        ]),
    );
    let body = Value::Object(body);
    tracing::info!(target: "vaultfw::stats", ecs = %body, "interface verdict counters");
}

fn log_totals(line: &Line<'_>, events: &EventLine, interfaces: usize) {
    let mut body = line_body(line);
    ecs::merge(
        &mut body,
        ecs::object([
            ("vaultfw.interfaces", json!(interfaces)),
            ("vaultfw.events.sent", json!(events.sent)),
            ("vaultfw.events.sent_delta", json!(events.sent_delta)),
            ("vaultfw.events.dropped", json!(events.dropped)),
            ("vaultfw.events.dropped_delta", json!(events.dropped_delta)),
            ("vaultfw.events.rate_limited", json!(events.rate_limited)),
            ("vaultfw.events.ring_full", json!(events.ring_full)),
        ]),
    );
    let body = Value::Object(body);
    tracing::info!(target: "vaultfw::stats", ecs = %body, "verdict counters");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_saturate_instead_of_wrapping() {
        let mut before = [0u64; Verdict::COUNT];
        let mut now = [0u64; Verdict::COUNT];
        before[3] = 10;
        now[3] = 4;
        now[5] = 7;
        let d = deltas(&now, &before);
        assert_eq!((d[3], d[5], frames(&d)), (0, 7, 7));
    }

    #[test]
    fn interfaces_64_apart_share_a_slot() {
        let row = [0u64; Verdict::COUNT];
        let sample = CounterSample {
            totals: row,
            interfaces: vec![
                InterfaceCounters {
                    name: "a".into(),
                    ifindex: 2,
                    totals: row,
                },
                InterfaceCounters {
                    name: "b".into(),
                    ifindex: 66,
                    totals: row,
                },
                InterfaceCounters {
                    name: "c".into(),
                    ifindex: 3,
                    totals: row,
                },
            ],
            events: EventTotals::default(),
        };
        assert_eq!(sample.shared_slots(), vec!["a", "b"]);
    }
}
