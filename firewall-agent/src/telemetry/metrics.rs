//! Metrics in the Prometheus text format (0.0.4), served on `GET /metrics`
//! of an opt-in address (`--metrics-addr`): verdict counters per interface,
//! per-rule hits, access-log events sent and dropped, the policy generation
//! and the duration of the last apply, and map fill.
//!
//! The HTTP server ([`tiny_http`]) runs on its own thread. Each scrape asks
//! the daemon loop — the only owner of the maps — for a [`MetricsSnapshot`]
//! and renders it into a fresh registry, so what a scrape shows is what the
//! kernel counted at that moment, never a cached copy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use firewall_common::{INTERFACE_SLOTS, Verdict};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use super::counters::CounterSample;
use crate::compile::RuleRef;

/// One rule's hits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleHitSample {
    /// The rule.
    pub rule: RuleRef,
    /// Frames it allowed.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Its latest hit.
    pub last_hit: Option<SystemTime>,
}

/// How full one kind of trie is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapFill {
    /// `ip_rules`, `virtual_network_rules`, `trusted_services`, or their
    /// IPv6 tries `ipv6_ip_rules`, `ipv6_virtual_network_rules`,
    /// `ipv6_trusted_services`.
    pub table: &'static str,
    /// Entries the active table set holds.
    pub entries: u64,
    /// Entries it can hold.
    pub capacity: u64,
}

/// Everything one scrape shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Verdict counters (totals and per interface) and event accounting.
    pub counters: CounterSample,
    /// Every rule the kernel serves, hit or not.
    pub rules: Vec<RuleHitSample>,
    /// The generation the kernel serves.
    pub generation: u64,
    /// How long the change that produced it took (validate, compile,
    /// write, flip).
    pub last_apply: Option<Duration>,
    /// Fill of each trie.
    pub map_fill: Vec<MapFill>,
    /// The daemon's state beyond the kernel.
    pub health: HealthSample,
}

/// The daemon's health as the metrics show it (default: no reload yet,
/// file in sync, socket in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthSample {
    /// The latest reload: whether it was accepted, and when.
    pub last_reload: Option<(bool, std::time::SystemTime)>,
    /// Whether the policy file declares the served policy.
    pub policy_in_sync: bool,
    /// Whether the control socket is still reachable.
    pub control_socket_present: bool,
    /// Interfaces with an address that no program filters, plus those the
    /// daemon must filter but could not attach.
    pub unfiltered_interfaces: u64,
}

impl Default for HealthSample {
    fn default() -> Self {
        HealthSample {
            last_reload: None,
            policy_in_sync: true,
            control_socket_present: true,
            unfiltered_interfaces: 0,
        }
    }
}

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Renders `snapshot` in the Prometheus text format.
pub fn render(snapshot: &MetricsSnapshot) -> String {
    let mut registry = Registry::default();

    let verdicts = Family::<Labels, Counter>::default();
    registry.register(
        "vaultfw_verdict_packets",
        "Frames judged by the XDP program, by ingress interface and verdict (exactly one verdict per frame; per-CPU counters summed)",
        verdicts.clone(),
    );
    for (interface, row) in interface_rows(&snapshot.counters) {
        for verdict in Verdict::ALL {
            verdicts
                .get_or_create(&labels(&[
                    ("interface", &interface),
                    ("verdict", verdict.name()),
                ]))
                .inc_by(row[verdict.index() as usize]);
        }
    }

    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let last_hit = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "vaultfw_rule_hit_packets",
        "Frames each rule allowed",
        packets.clone(),
    );
    registry.register(
        "vaultfw_rule_hit_bytes",
        "Bytes of the frames each rule allowed",
        bytes.clone(),
    );
    registry.register(
        "vaultfw_rule_last_hit_timestamp_seconds",
        "When each rule last allowed a frame (Unix time; absent for rules never hit)",
        last_hit.clone(),
    );
    for hit in &snapshot.rules {
        let l = labels(&[("kind", hit.rule.kind.name()), ("rule", &hit.rule.name)]);
        packets.get_or_create(&l).inc_by(hit.packets);
        bytes.get_or_create(&l).inc_by(hit.bytes);
        if let Some(at) = hit
            .last_hit
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        {
            last_hit.get_or_create(&l).set(at.as_secs_f64());
        }
    }

    let events = &snapshot.counters.events;
    let sent = Counter::<u64>::default();
    sent.inc_by(events.sent);
    registry.register(
        "vaultfw_events_sent",
        "Access-log events the program wrote to the ring buffer",
        sent,
    );
    let dropped = Family::<Labels, Counter>::default();
    registry.register(
        "vaultfw_events_dropped",
        "Access-log events not written: over the per-CPU rate limit, or the ring buffer was full",
        dropped.clone(),
    );
    dropped
        .get_or_create(&labels(&[("reason", "rate_limited")]))
        .inc_by(events.rate_limited);
    dropped
        .get_or_create(&labels(&[("reason", "ring_full")]))
        .inc_by(events.ring_full);

    let generation = Gauge::<i64>::default();
    generation.set(i64::try_from(snapshot.generation).unwrap_or(i64::MAX));
    registry.register(
        "vaultfw_policy_generation",
        "The policy generation the kernel serves",
        generation,
    );
    if let Some(apply) = snapshot.last_apply {
        let duration = Gauge::<f64, AtomicU64>::default();
        duration.set(apply.as_secs_f64());
        registry.register(
            "vaultfw_policy_apply_duration_seconds",
            "How long the last policy change took to validate, compile and write into the kernel",
            duration,
        );
    }

    let flag = |value: bool| {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::from(value));
        gauge
    };
    let health = &snapshot.health;
    if let Some((success, at)) = health.last_reload {
        registry.register(
            "vaultfw_last_reload_success",
            "1 when the latest reload of the policy file (SIGHUP, an edit) was accepted, 0 when it was refused",
            flag(success),
        );
        let seconds = Gauge::<f64, AtomicU64>::default();
        seconds.set(
            at.duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        registry.register(
            "vaultfw_last_reload_timestamp_seconds",
            "When the latest reload of the policy file ran (Unix time)",
            seconds,
        );
    }
    registry.register(
        "vaultfw_policy_in_sync",
        "1 when the policy file declares exactly the policy the kernel serves",
        flag(health.policy_in_sync),
    );
    let unfiltered = Gauge::<i64>::default();
    unfiltered.set(i64::try_from(health.unfiltered_interfaces).unwrap_or(i64::MAX));
    registry.register(
        "vaultfw_unfiltered_interfaces",
        "Interfaces with an address that no program filters, or that the daemon must filter and could not attach (see `vaultfw show`)",
        unfiltered,
    );
    registry.register(
        "vaultfw_control_socket_present",
        "1 while the control socket the daemon bound is in place",
        flag(health.control_socket_present),
    );

    let entries = Family::<Labels, Gauge>::default();
    let capacity = Family::<Labels, Gauge>::default();
    registry.register(
        "vaultfw_map_entries",
        "Entries in each rule trie of the active table set",
        entries.clone(),
    );
    registry.register(
        "vaultfw_map_capacity_entries",
        "Entries each rule trie can hold",
        capacity.clone(),
    );
    for fill in &snapshot.map_fill {
        let l = labels(&[("table", fill.table)]);
        entries
            .get_or_create(&l)
            .set(i64::try_from(fill.entries).unwrap_or(i64::MAX));
        capacity
            .get_or_create(&l)
            .set(i64::try_from(fill.capacity).unwrap_or(i64::MAX));
    }

    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut text, &registry);
    text
}

/// The verdict rows by interface label: each attached interface (names
/// joined by `+` when they share a counter slot), and `other` for frames
/// counted in slots of no attached interface (an interface detached or
/// re-created since), so the rows always add up to the totals.
fn interface_rows(sample: &CounterSample) -> Vec<(String, [u64; Verdict::COUNT])> {
    let mut by_slot: std::collections::BTreeMap<u32, (Vec<&str>, [u64; Verdict::COUNT])> =
        Default::default();
    for i in &sample.interfaces {
        let entry = by_slot
            .entry(i.ifindex % INTERFACE_SLOTS)
            .or_insert_with(|| (Vec::new(), i.totals));
        entry.0.push(&i.name);
    }
    let mut other = sample.totals;
    let mut rows = Vec::new();
    for (names, row) in by_slot.into_values() {
        for (o, v) in other.iter_mut().zip(row) {
            *o = o.saturating_sub(v);
        }
        rows.push((names.join("+"), row));
    }
    if other.iter().any(|v| *v > 0) {
        rows.push(("other".to_owned(), other));
    }
    rows
}

/// A scrape's request to the daemon loop: where to send the snapshot.
pub type SnapshotRequest = std::sync::mpsc::SyncSender<MetricsSnapshot>;

/// How long a scrape waits for the daemon loop.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP server thread.
pub struct MetricsServer {
    /// `None` once stopped (dropping the server closes its listener).
    server: Option<Arc<tiny_http::Server>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Listens on `addr` and serves scrapes, each answered with a snapshot
    /// asked for through `snapshots`.
    pub fn start(
        addr: SocketAddr,
        snapshots: mpsc::Sender<SnapshotRequest>,
    ) -> std::io::Result<Self> {
        let server = Arc::new(tiny_http::Server::http(addr).map_err(std::io::Error::other)?);
        let bound = server.server_addr().to_ip().unwrap_or(addr);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, stop) = (server.clone(), stop.clone());
            std::thread::Builder::new()
                .name("vaultfw-metrics".into())
                .spawn(move || serve(&server, &stop, &snapshots))?
        };
        tracing::info!(addr = %bound, "serving metrics on /metrics");
        Ok(MetricsServer {
            server: Some(server),
            stop,
            thread: Some(thread),
            addr: bound,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: the thread ends, and the listener closes (tiny_http
    /// closes it from its own accept thread, a moment later).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(server) = &self.server {
            server.unblock();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.server = None;
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(server: &tiny_http::Server, stop: &AtomicBool, snapshots: &mpsc::Sender<SnapshotRequest>) {
    while !stop.load(Ordering::SeqCst) {
        let request = match server.recv() {
            Ok(request) => request,
            Err(error) => {
                if !stop.load(Ordering::SeqCst) {
                    tracing::debug!(%error, "metrics connection failed");
                }
                continue;
            }
        };
        let path = request.url().split('?').next().unwrap_or("");
        let is_get = matches!(
            request.method(),
            tiny_http::Method::Get | tiny_http::Method::Head
        );
        let (status, body, content_type) = match (is_get, path) {
            (true, "/metrics") => match snapshot(snapshots) {
                Some(snapshot) => (200, render(&snapshot), prometheus_text::CONTENT_TYPE),
                None => (503, "the daemon did not answer\n".to_owned(), "text/plain"),
            },
            (true, "/") => (
                200,
                "vaultfw: metrics are on /metrics\n".to_owned(),
                "text/plain",
            ),
            (true, _) => (
                404,
                "not found: metrics are on /metrics\n".to_owned(),
                "text/plain",
            ),
            (false, _) => (405, "only GET\n".to_owned(), "text/plain"),
        };
        let mut response = tiny_http::Response::from_string(body).with_status_code(status);
        if let Ok(header) = tiny_http::Header::from_bytes("Content-Type", content_type) {
            response = response.with_header(header);
        }
        if let Err(error) = request.respond(response) {
            tracing::debug!(%error, "answering a metrics request failed");
        }
    }
}

fn snapshot(snapshots: &mpsc::Sender<SnapshotRequest>) -> Option<MetricsSnapshot> {
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    snapshots.blocking_send(reply).ok()?;
    answer.recv_timeout(SNAPSHOT_TIMEOUT).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::counters::InterfaceCounters;

    #[test]
    fn interface_rows_add_up_to_the_totals() {
        let mut a = [0u64; Verdict::COUNT];
        a[9] = 5;
        let mut totals = a;
        totals[9] += 2;
        let sample = CounterSample {
            totals,
            interfaces: vec![InterfaceCounters {
                name: "eth0".into(),
                ifindex: 3,
                totals: a,
            }],
            events: Default::default(),
        };
        let rows = interface_rows(&sample);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].0.as_str(), rows[0].1[9]), ("eth0", 5));
        assert_eq!((rows[1].0.as_str(), rows[1].1[9]), ("other", 2));
    }
}
