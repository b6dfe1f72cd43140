//! What operators read about the running filter, and nothing that decides
//! a verdict:
//!
//! - [`counters`]: the periodic `verdict counters` log line (kernel totals
//!   and deltas, in total and per interface, packets per second, access-log
//!   accounting).
//! - [`access`]: the deny access log — kernel events decoded into JSON
//!   records, written to stdout or a file (reopened on SIGHUP) and kept in
//!   memory for `vaultfw logs`.
//! - [`ring`]: the reader of the kernel's event ring buffer.
//! - [`metrics`]: the Prometheus text exposition and its opt-in HTTP server.
//!
//! Everything here is fed plain data by the daemon loop; only [`ring`]
//! holds a kernel object (the ring buffer the dataplane handed out).

pub mod access;
pub mod counters;
pub mod metrics;
pub mod ring;

pub use access::{AccessLog, AccessRecord, LogsPage};
pub use counters::{CounterSample, InterfaceCounters, StatsReporter};
pub use metrics::{
    DurationHistogram, HealthSample, InterfaceSample, MapFill, MetricsServer, MetricsSnapshot,
    Readiness, RuleHitSample, ServiceTagsSample, SnapshotRequest,
};
pub use ring::EventRing;

/// Installs the JSON log subscriber: one JSON object per line on stdout,
/// event fields at the top level. `RUST_LOG` overrides the `info` default
/// (which lets every XDP program record through: the program filters
/// those by `--bpf-log-level`).
pub fn init_json_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "info,{}",
            crate::dataplane::bpf_log::BPF_LOG_DIRECTIVE
        ))
    });
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}
