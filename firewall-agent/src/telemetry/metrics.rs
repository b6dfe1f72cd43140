//! Metrics in the Prometheus text format (0.0.4), served on `GET /metrics`
//! of an opt-in address (`--metrics-addr`): build info, the lookup in use,
//! verdict counters per interface, per-rule hits, rule counts, access-log events written and
//! dropped, the policy generation, apply durations (a histogram), reload
//! and readiness state, per-interface attach state and XDP mode, a pending
//! confirmation's deadline, the service-tags file, and map fill. The same
//! listener answers the probes: `GET /healthz` (the daemon loop answers)
//! and `GET /readyz` (the filter is in force as declared). Every name is
//! listed in `docs/operations.md`.
//!
//! The HTTP server ([`hyper`], HTTP/1) runs on the daemon's tokio runtime,
//! with bounds no client can outgrow: [`MAX_CONNECTIONS`] at once,
//! [`READ_DEADLINE`] to send a request, [`WRITE_DEADLINE`] to take the
//! answer, and an accept loop that outlasts EMFILE/ENFILE. Each scrape asks
//! the daemon loop — the only owner of the maps — for a [`MetricsSnapshot`]
//! and renders it into a fresh registry, so what a scrape shows is what the
//! kernel counted at that moment, never a cached copy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use firewall_common::{INTERFACE_SLOTS, Verdict};
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::counters::CounterSample;
use crate::compile::{RuleKind, RuleRef};

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
    /// How the served table set looks up IPv4 sources (`--lookup`).
    pub lookup: crate::compile::cpt::Lookup,
    /// How long each change that produced a generation took (validate,
    /// compile, write, flip), since the daemon started.
    pub apply_durations: DurationHistogram,
    /// Fill of each trie.
    pub map_fill: Vec<MapFill>,
    /// The daemon's state beyond the kernel.
    pub health: HealthSample,
    /// Whether the filter is in force as declared (`/readyz`).
    pub readiness: Readiness,
    /// Each interface the daemon filters or must filter.
    pub interfaces: Vec<InterfaceSample>,
    /// When an unconfirmed apply rolls back (`None`: none pending).
    pub confirmation_deadline: Option<SystemTime>,
    /// The service-tags file of the served policy (`None`: none configured).
    pub service_tags: Option<ServiceTagsSample>,
}

/// Whether the filter is in force as declared: every interface the daemon
/// must filter is attached, the policy file declares the served policy
/// (or an apply awaits confirmation), and the last reload was accepted.
/// Also the body of `/readyz`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// All of the above holds.
    pub ready: bool,
    /// Why not, one short sentence each (empty when ready).
    pub reasons: Vec<String>,
}

/// One interface the daemon filters or must filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceSample {
    /// Its name.
    pub name: String,
    /// Whether the kernel runs the daemon's program there.
    pub attached: bool,
    /// The XDP mode the kernel reports (`"native"`, `"generic"`,
    /// `"offload"`; `None` when not attached).
    pub mode: Option<String>,
}

/// The service-tags file the trusted-services prefixes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTagsSample {
    /// The file's top-level `changeNumber` as served (`None`: it has none).
    pub change_number: Option<u64>,
    /// When the file was last modified (`None`: unreadable now).
    pub modified: Option<SystemTime>,
}

/// Upper bounds (seconds) of the apply-duration buckets: a few ms for a
/// small policy, seconds for one at the map limits.
const APPLY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of durations with the [`APPLY_BUCKETS`] bounds (plus
/// `+Inf`): plain counts, so a snapshot is a value the daemon loop hands to
/// the HTTP side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationHistogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    counts: [u64; APPLY_BUCKETS.len() + 1],
    /// Their sum.
    sum: Duration,
}

impl Default for DurationHistogram {
    fn default() -> Self {
        DurationHistogram {
            counts: [0; APPLY_BUCKETS.len() + 1],
            sum: Duration::ZERO,
        }
    }
}

impl DurationHistogram {
    /// Counts one observation.
    pub fn observe(&mut self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = APPLY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(APPLY_BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += duration;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = APPLY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum.as_secs_f64(), self.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The commit the binary was built from (`build.rs`; `"unknown"` outside a
/// git checkout).
const COMMIT: &str = match option_env!("VAULTFW_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// The running kernel's release (`uname -r`).
fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
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

    let build = Family::<Labels, Gauge>::default();
    registry.register(
        "vaultfw_build_info",
        "Always 1; the labels say which vaultfw runs (version, git commit) on which kernel",
        build.clone(),
    );
    build
        .get_or_create(&labels(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", COMMIT),
            ("kernel", &kernel_release()),
        ]))
        .set(1);

    let lookup = Family::<Labels, Gauge>::default();
    registry.register(
        "vaultfw_lookup_info",
        "Always 1; the label says how the served tables look up IPv4 sources (trie or compiled: run --lookup)",
        lookup.clone(),
    );
    lookup
        .get_or_create(&labels(&[("lookup", snapshot.lookup.name())]))
        .set(1);

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
    let rules = Family::<Labels, Gauge>::default();
    registry.register(
        "vaultfw_rules",
        "Rules the kernel serves, by kind (ip, vnet: one per prefix; trusted: one per service-tag prefix)",
        rules.clone(),
    );
    for kind in [RuleKind::Ip, RuleKind::Vnet, RuleKind::Trusted] {
        let served = snapshot
            .rules
            .iter()
            .filter(|h| h.rule.kind == kind)
            .count();
        rules
            .get_or_create(&labels(&[("kind", kind.name())]))
            .set(i64::try_from(served).unwrap_or(i64::MAX));
    }
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
        "vaultfw_access_log_events_written",
        "Access-log events the program wrote to the ring buffer",
        sent,
    );
    let dropped = Family::<Labels, Counter>::default();
    registry.register(
        "vaultfw_access_log_events_dropped",
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
    registry.register(
        "vaultfw_apply_duration_seconds",
        "How long each policy change took to validate, compile and write into the kernel (start-up included)",
        snapshot.apply_durations.clone(),
    );

    let flag = |value: bool| {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::from(value));
        gauge
    };
    let timestamp = |at: SystemTime| {
        let gauge = Gauge::<f64, AtomicU64>::default();
        gauge.set(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        gauge
    };
    registry.register(
        "vaultfw_ready",
        "1 when the filter is in force as declared: every interface to filter attached, the policy file in sync, the last reload accepted (what /readyz answers)",
        flag(snapshot.readiness.ready),
    );
    let attached = Family::<Labels, Gauge>::default();
    let modes = Family::<Labels, Gauge>::default();
    registry.register(
        "vaultfw_interface_attached",
        "1 when the kernel runs vaultfw's program on an interface the daemon filters, 0 when it must filter it and does not",
        attached.clone(),
    );
    registry.register(
        "vaultfw_interface_xdp_mode",
        "Always 1; the mode label says how the program is attached (native, generic, offload)",
        modes.clone(),
    );
    for i in &snapshot.interfaces {
        attached
            .get_or_create(&labels(&[("interface", &i.name)]))
            .set(i64::from(i.attached));
        if let Some(mode) = &i.mode {
            modes
                .get_or_create(&labels(&[("interface", &i.name), ("mode", mode)]))
                .set(1);
        }
    }
    registry.register(
        "vaultfw_confirmation_deadline_timestamp_seconds",
        "When an unconfirmed `apply --confirm-within` rolls back (Unix time; 0 when none is pending)",
        snapshot
            .confirmation_deadline
            .map_or_else(|| timestamp(SystemTime::UNIX_EPOCH), timestamp),
    );
    if let Some(tags) = &snapshot.service_tags {
        if let Some(change) = tags.change_number {
            let gauge = Gauge::<i64>::default();
            gauge.set(i64::try_from(change).unwrap_or(i64::MAX));
            registry.register(
                "vaultfw_service_tags_change_number",
                "The top-level changeNumber of the service-tags file the served policy was built from",
                gauge,
            );
        }
        if let Some(modified) = tags.modified {
            let age = Gauge::<f64, AtomicU64>::default();
            age.set(
                SystemTime::now()
                    .duration_since(modified)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
            registry.register(
                "vaultfw_service_tags_file_age_seconds",
                "Seconds since the service-tags file was last modified (refresh it weekly: Azure publishes weekly)",
                age,
            );
        }
    }
    let health = &snapshot.health;
    if let Some((success, at)) = health.last_reload {
        registry.register(
            "vaultfw_last_reload_success",
            "1 when the latest reload of the policy file (SIGHUP, an edit) was accepted, 0 when it was refused",
            flag(success),
        );
        registry.register(
            "vaultfw_last_reload_timestamp_seconds",
            "When the latest reload of the policy file ran (Unix time)",
            timestamp(at),
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

/// A request of the HTTP side to the daemon loop, with where to send the
/// answer.
pub enum SnapshotRequest {
    /// `/metrics`: everything.
    Metrics(oneshot::Sender<MetricsSnapshot>),
    /// `/healthz` and `/readyz`: readiness only (no map is read).
    Readiness(oneshot::Sender<Readiness>),
}

/// How long a scrape waits for the daemon loop.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a probe waits for the daemon loop: a loop that does not answer
/// within it is not alive (a reload at the map limits takes well under it).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many connections are served at once (each holds one file
/// descriptor); one more is closed at once, never queued on a task.
pub const MAX_CONNECTIONS: usize = 64;

/// A connection has this long to send its request's head; one that sends
/// nothing (or too slowly) is closed.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// A connection has this long to take its answer once it is ready.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// Everything a connection may take, from accept to close: reading, the
/// wait for the daemon loop, writing. Past it the connection is closed
/// whatever it is doing (hyper itself has no write timeout).
const CONNECTION_DEADLINE: Duration = READ_DEADLINE
    .saturating_add(SNAPSHOT_TIMEOUT)
    .saturating_add(WRITE_DEADLINE);

/// When accepting fails (out of file descriptors: EMFILE/ENFILE), the loop
/// waits this long before it tries again, doubling up to
/// [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest wait between failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per this long about failed or refused accepts.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The HTTP server: a task on the daemon's tokio runtime (hyper, HTTP/1,
/// one request per connection).
///
/// Clients cannot starve it or the daemon: at most [`MAX_CONNECTIONS`] are
/// served at once and the next is closed at once; each has
/// [`READ_DEADLINE`] to send its request and [`CONNECTION_DEADLINE`] in
/// all; when accepting fails (EMFILE/ENFILE) the loop waits and tries
/// again, and the port stays open.
pub struct MetricsServer {
    /// The accept loop; aborting it drops the listener and every
    /// connection it serves.
    task: Option<tokio::task::JoinHandle<()>>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Listens on `addr` and serves scrapes, each answered with a snapshot
    /// asked for through `snapshots`. Must be called within a tokio runtime.
    pub fn start(
        addr: SocketAddr,
        snapshots: mpsc::Sender<SnapshotRequest>,
    ) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let bound = listener.local_addr()?;
        let task = tokio::spawn(serve(listener, snapshots));
        tracing::info!(
            addr = %bound,
            max_connections = MAX_CONNECTIONS,
            read_deadline_s = READ_DEADLINE.as_secs(),
            "serving metrics on /metrics, probes on /healthz and /readyz"
        );
        Ok(MetricsServer {
            task: Some(task),
            addr: bound,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: the listener and every open connection close.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// At most one log line per period; counts the ones it held back.
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(held back since the last line)` when a line may be logged now.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Accepts connections until aborted. The connections run in a
/// [`JoinSet`](tokio::task::JoinSet) owned here, so aborting this task
/// closes them too.
async fn serve(listener: tokio::net::TcpListener, snapshots: mpsc::Sender<SnapshotRequest>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut accept_failures = Throttle::new(ACCEPT_LOG_EVERY);
    let mut refusals = Throttle::new(ACCEPT_LOG_EVERY);
    loop {
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    // Closed at once: its descriptor is freed now.
                    drop(stream);
                    if let Some(suppressed) = refusals.allow() {
                        tracing::warn!(
                            limit = MAX_CONNECTIONS,
                            suppressed,
                            "closed a metrics connection: {MAX_CONNECTIONS} are open already \
                             (each has {}s to send its request); is a client opening connections \
                             and not using them?",
                            READ_DEADLINE.as_secs()
                        );
                    }
                    continue;
                };
                let snapshots = snapshots.clone();
                connections.spawn(async move {
                    let served = tokio::time::timeout(
                        CONNECTION_DEADLINE,
                        serve_connection(stream, snapshots),
                    )
                    .await;
                    match served {
                        Ok(Err(error)) => tracing::debug!(%error, "metrics connection failed"),
                        Err(_) => tracing::debug!(
                            "closed a metrics connection still open after {}s",
                            CONNECTION_DEADLINE.as_secs()
                        ),
                        Ok(Ok(())) => {}
                    }
                    drop(slot);
                });
            }
            Err(error) => {
                if let Some(suppressed) = accept_failures.allow() {
                    let hint = match error.raw_os_error() {
                        Some(libc::EMFILE) => {
                            "; the process is out of file descriptors (raise LimitNOFILE)"
                        }
                        Some(libc::ENFILE) => {
                            "; the system is out of file descriptors (fs.file-max)"
                        }
                        _ => "",
                    };
                    tracing::warn!(
                        %error,
                        suppressed,
                        retry_in_ms = backoff.as_millis() as u64,
                        "accepting a metrics connection failed{hint}; retrying after a pause \
                         (at most one such line every {}s; `suppressed` counts the others)",
                        ACCEPT_LOG_EVERY.as_secs()
                    );
                }
                // The connection stays queued in the kernel: trying again at
                // once would fail again at once (a busy loop).
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// Serves one connection: one request (no keep-alive), whose head must
/// arrive within [`READ_DEADLINE`].
async fn serve_connection(
    stream: tokio::net::TcpStream,
    snapshots: mpsc::Sender<SnapshotRequest>,
) -> Result<(), hyper::Error> {
    let service = hyper::service::service_fn(move |request| {
        let snapshots = snapshots.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(&request, &snapshots).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(READ_DEADLINE)
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await
}

/// The answer to one request.
async fn answer(
    request: &hyper::Request<hyper::body::Incoming>,
    snapshots: &mpsc::Sender<SnapshotRequest>,
) -> hyper::Response<Full<Bytes>> {
    let path = request.uri().path();
    let is_get = matches!(*request.method(), hyper::Method::GET | hyper::Method::HEAD);
    let (status, body, content_type) = match (is_get, path) {
        (true, "/metrics") => {
            match ask(snapshots, SnapshotRequest::Metrics, SNAPSHOT_TIMEOUT).await {
                Some(snapshot) => (200, render(&snapshot), prometheus_text::CONTENT_TYPE),
                None => (503, "the daemon did not answer\n".to_owned(), "text/plain"),
            }
        }
        (true, "/healthz") => match ask(snapshots, SnapshotRequest::Readiness, PROBE_TIMEOUT).await
        {
            Some(_) => (200, "ok\n".to_owned(), "text/plain"),
            None => (
                503,
                "the daemon loop did not answer\n".to_owned(),
                "text/plain",
            ),
        },
        (true, "/readyz") => {
            let readiness = ask(snapshots, SnapshotRequest::Readiness, PROBE_TIMEOUT)
                .await
                .unwrap_or_else(|| Readiness {
                    ready: false,
                    reasons: vec!["the daemon loop did not answer".to_owned()],
                });
            let status = if readiness.ready { 200 } else { 503 };
            let body = serde_json::to_string(&readiness).unwrap_or_default() + "\n";
            (status, body, "application/json")
        }
        (true, "/") => (
            200,
            "vaultfw: metrics are on /metrics, probes on /healthz and /readyz\n".to_owned(),
            "text/plain",
        ),
        (true, _) => (
            404,
            "not found: metrics are on /metrics, probes on /healthz and /readyz\n".to_owned(),
            "text/plain",
        ),
        (false, _) => (405, "only GET\n".to_owned(), "text/plain"),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).expect("invariant: the statuses above are valid");
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Asks the daemon loop (`request` wraps where to answer) and waits at most
/// `timeout`.
async fn ask<T>(
    snapshots: &mpsc::Sender<SnapshotRequest>,
    request: impl FnOnce(oneshot::Sender<T>) -> SnapshotRequest,
    timeout: Duration,
) -> Option<T> {
    let (reply, answer) = oneshot::channel();
    // A full queue means the loop is not taking requests: no answer.
    snapshots.try_send(request(reply)).ok()?;
    tokio::time::timeout(timeout, answer).await.ok()?.ok()
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

    #[test]
    fn the_lookup_in_use_is_the_one_label_of_vaultfw_lookup_info() {
        for lookup in [
            crate::compile::cpt::Lookup::Trie,
            crate::compile::cpt::Lookup::Compiled,
        ] {
            let text = render(&MetricsSnapshot {
                lookup,
                ..MetricsSnapshot::default()
            });
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("vaultfw_lookup_info"))
                .collect();
            assert_eq!(
                lines,
                [format!(
                    "vaultfw_lookup_info{{lookup=\"{}\"}} 1",
                    lookup.name()
                )],
                "{text}"
            );
            assert!(text.contains("# TYPE vaultfw_lookup_info gauge"), "{text}");
        }
    }
}
