//! What operators read about the running filter, and nothing that decides
//! a verdict:
//!
//! - [`counters`]: the periodic `verdict counters` log line (kernel totals
//!   and deltas, in total and per interface, packets per second, access-log
//!   accounting).
//! - [`access`]: the deny access log — kernel events decoded into JSON
//!   records, written to stdout or a file (reopened on SIGHUP) and kept in
//!   memory for `vaultfw logs`.
//! - [`audit`]: the audit trail — one record per change request, to the
//!   daemon log and `--audit-log FILE`.
//! - [`ecs`]: the one record schema (Elastic Common Schema names) all of
//!   them follow; [`file`]: the log files, written safely; [`logging`]:
//!   the daemon log's subscriber (JSON, text or journald).
//! - [`ring`]: the reader of the kernel's event ring buffer.
//! - [`metrics`]: the Prometheus text exposition and its opt-in HTTP server.
//!
//! Everything here is fed plain data by the daemon loop; only [`ring`]
//! holds a kernel object (the ring buffer the dataplane handed out).

pub mod access;
pub mod audit;
pub mod counters;
pub mod ecs;
pub mod file;
pub mod logging;
pub mod metrics;
pub mod ring;

pub use access::{AccessLog, AccessRecord, LogsPage};
pub use counters::{CounterSample, InterfaceCounters, StatsReporter};
pub use metrics::{
    DurationHistogram, HealthSample, InterfaceSample, MapFill, MetricsServer, MetricsSnapshot,
    Readiness, RuleHitSample, ServiceTagsSample, SnapshotRequest,
};
pub use ring::EventRing;
