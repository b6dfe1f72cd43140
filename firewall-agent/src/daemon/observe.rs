//! The daemon's side of observability: reads counters, hits and
//! events from the dataplane and feeds them to `telemetry` — the counter
//! lines, the access log, `vaultfw logs`, and metrics snapshots. The
//! daemon loop owns one [`Observer`]; nothing here changes the policy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use firewall_common::{AccessEvent, DEFAULT_TRUSTED_CAPACITY, DEFAULT_VNET_CAPACITY, Verdict};

use crate::compile::{RuleTable, rule_table};
use crate::control::protocol::{ErrorKind, Response};
use crate::control::replies::{EventCounts, LogsReply, RuleHits, VerdictCounts};
use crate::dataplane::{Dataplane, DataplaneError, EventTotals, RuleHitTotals, VerdictTotals};
use crate::telemetry::{
    AccessLog, AccessRecord, CounterSample, DurationHistogram, HealthSample, InterfaceCounters,
    InterfaceSample, MapFill, MetricsSnapshot, RuleHitSample, ServiceTagsSample, StatsReporter,
};

use super::state::Daemon;

/// The counters at this moment: totals, each named interface that
/// exists (`names`), and the access-log accounting.
pub(super) fn sample(
    dataplane: &Dataplane,
    names: impl IntoIterator<Item = (String, u32)>,
) -> Result<CounterSample, DataplaneError> {
    let interfaces = names
        .into_iter()
        .map(|(name, ifindex)| {
            dataplane
                .verdict_totals_for(ifindex)
                .map(|totals| InterfaceCounters {
                    name,
                    ifindex,
                    totals,
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(CounterSample {
        totals: dataplane.verdict_totals()?,
        interfaces,
        events: dataplane.event_totals()?,
    })
}

impl Daemon {
    /// The counters now, per attached interface.
    pub(super) fn counter_sample(&self) -> Result<CounterSample, DataplaneError> {
        let attached = self
            .dataplane
            .attached()
            .iter()
            .map(|a| (a.name.clone(), a.ifindex));
        sample(&self.dataplane, attached)
    }

    /// Hit slot → rule, for what the kernel serves now.
    pub(super) fn rule_owners(&self) -> RuleTable {
        rule_table(
            &self.policy,
            &self.interfaces,
            &self.dataplane.active_tables(),
            self.dataplane.hit_slots(),
        )
    }

    /// Every rule with its hits (zero for rules never hit).
    pub(super) fn rule_hit_samples(&self) -> Result<Vec<RuleHitSample>, DataplaneError> {
        let hits = self.dataplane.rule_hits()?;
        Ok(self
            .rule_owners()
            .into_iter()
            .map(|(slot, rule)| {
                let h = hits.get(&slot);
                RuleHitSample {
                    rule,
                    packets: h.map_or(0, |h| h.packets),
                    bytes: h.map_or(0, |h| h.bytes),
                    last_hit: h.and_then(|h| h.last_hit),
                }
            })
            .collect())
    }

    /// What a metrics scrape shows.
    pub(super) fn metrics_snapshot(
        &self,
        apply_durations: &DurationHistogram,
    ) -> Result<MetricsSnapshot, DataplaneError> {
        let tables = self.dataplane.active_tables();
        let slots = self.dataplane.hit_slots();
        let report = self.interface_report();
        let trusted = &self.policy.trusted_services;
        Ok(MetricsSnapshot {
            counters: self.counter_sample()?,
            rules: self.rule_hit_samples()?,
            generation: self.generation,
            lookup: self.dataplane.served_lookup(),
            apply_durations: apply_durations.clone(),
            health: HealthSample {
                last_reload: self.health.last_reload.as_ref().map(|r| (r.success, r.at)),
                policy_in_sync: self.health.policy.in_sync(),
                control_socket_present: self.health.control_socket_present,
                unfiltered_interfaces: (report.unfiltered.len() + report.not_attached.len()) as u64,
            },
            readiness: super::health::readiness(&report, &self.health),
            interfaces: report
                .filtered
                .iter()
                .map(|i| InterfaceSample {
                    name: i.name.clone(),
                    attached: i.mode.is_some(),
                    mode: i.mode.clone(),
                })
                .chain(report.not_attached.iter().map(|i| InterfaceSample {
                    name: i.name.clone(),
                    attached: false,
                    mode: None,
                }))
                .collect(),
            confirmation_deadline: self.pending.as_ref().map(|p| p.deadline),
            service_tags: trusted
                .service_tags_file
                .as_ref()
                .map(|file| ServiceTagsSample {
                    change_number: trusted.change_number,
                    modified: std::fs::metadata(file).and_then(|m| m.modified()).ok(),
                }),
            map_fill: vec![
                MapFill {
                    table: "ip_rules",
                    entries: tables.ip_rules.len() as u64,
                    capacity: u64::from(slots.ip_rules),
                },
                MapFill {
                    table: "virtual_network_rules",
                    entries: tables.vnet_rules.len() as u64,
                    capacity: u64::from(DEFAULT_VNET_CAPACITY),
                },
                MapFill {
                    table: "trusted_services",
                    entries: tables.trusted.len() as u64,
                    capacity: u64::from(DEFAULT_TRUSTED_CAPACITY),
                },
                MapFill {
                    table: "ipv6_ip_rules",
                    entries: tables.ip6_rules.len() as u64,
                    capacity: u64::from(slots.ipv6_rules),
                },
                MapFill {
                    table: "ipv6_virtual_network_rules",
                    entries: tables.vnet6_rules.len() as u64,
                    capacity: u64::from(DEFAULT_VNET_CAPACITY),
                },
                MapFill {
                    table: "ipv6_trusted_services",
                    entries: tables.trusted6.len() as u64,
                    capacity: u64::from(DEFAULT_TRUSTED_CAPACITY),
                },
            ],
        })
    }
}

/// The hit totals of hit slot `slot` (zeros when never hit).
pub(super) fn rule_hits(hits: &BTreeMap<u32, RuleHitTotals>, slot: u32) -> RuleHits {
    hits.get(&slot)
        .map_or_else(RuleHits::default, |h| RuleHits {
            packets: h.packets,
            bytes: h.bytes,
            last_hit: h
                .last_hit
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        })
}

/// Verdict counters by their names.
pub(super) fn verdict_counts(totals: &VerdictTotals) -> VerdictCounts {
    Verdict::ALL
        .iter()
        .map(|v| (v.name().to_owned(), totals[v.index() as usize]))
        .collect()
}

impl From<EventTotals> for EventCounts {
    fn from(totals: EventTotals) -> Self {
        EventCounts::new(totals.sent, totals.rate_limited, totals.ring_full)
    }
}

/// The loop's observability state: counter lines, the access log, the
/// rule names allow events carry, and the durations of the applies.
pub(super) struct Observer {
    stats: StatsReporter,
    access: AccessLog,
    /// Rule names by hit slot, for the generation they were computed for.
    owners: Option<(u64, RuleTable)>,
    apply_durations: DurationHistogram,
}

impl Observer {
    /// Starts with the counter lines' reporter (made from the counters
    /// before the first apply) and the access log opened; `first_apply` is
    /// how long the start-up apply and attach took.
    pub(super) fn new(stats: StatsReporter, access: AccessLog, first_apply: Duration) -> Self {
        let mut apply_durations = DurationHistogram::default();
        apply_durations.observe(first_apply);
        Observer {
            stats,
            access,
            owners: None,
            apply_durations,
        }
    }

    /// Logs the counter lines (an unreadable map is logged, not fatal: the
    /// filter works on without its statistics).
    pub(super) fn report(&mut self, daemon: &Daemon, is_final: bool) {
        match daemon.counter_sample() {
            Ok(sample) => self.stats.report_sample(&sample, is_final),
            Err(error) => tracing::error!(%error, "reading the verdict counters failed"),
        }
        self.access.retry_and_report();
    }

    /// Runs `change` (anything that may apply a new generation), remembers
    /// how long it took when the generation moved, then compares the
    /// policy file with what is served ([`Daemon::refresh_policy_sync`]).
    pub(super) fn timed<T>(
        &mut self,
        daemon: &mut Daemon,
        change: impl FnOnce(&mut Daemon) -> T,
    ) -> T {
        let result = self.timed_only(daemon, change);
        daemon.refresh_policy_sync();
        result
    }

    /// [`Observer::timed`] without the file comparison: for a command,
    /// whose answer goes out before it.
    pub(super) fn timed_only<T>(
        &mut self,
        daemon: &mut Daemon,
        change: impl FnOnce(&mut Daemon) -> T,
    ) -> T {
        let (before, started) = (daemon.generation, Instant::now());
        let result = change(daemon);
        if daemon.generation != before {
            self.apply_durations.observe(started.elapsed());
        }
        result
    }

    /// Writes and keeps the records of `events`.
    pub(super) fn record(&mut self, daemon: &Daemon, events: &[AccessEvent]) {
        if events.is_empty() {
            return;
        }
        if self
            .owners
            .as_ref()
            .is_none_or(|(g, _)| *g != daemon.generation)
        {
            self.owners = Some((daemon.generation, daemon.rule_owners()));
        }
        let owners = &self.owners.as_ref().expect("set just above").1;
        let boot = Some(crate::clock::boot_time());
        let attached = daemon.dataplane().attached();
        for event in events {
            let record = AccessRecord::decode(
                event,
                self.access.next_seq(),
                boot,
                |ifindex| {
                    attached
                        .iter()
                        .find(|a| a.ifindex == ifindex)
                        .map(|a| a.name.clone())
                },
                |slot| owners.get(slot).cloned(),
            );
            let record = public_access_reason(record, &daemon.policy);
            self.access.push(record);
        }
    }

    /// Reopens the access-log file (SIGHUP).
    pub(super) fn reopen(&mut self) {
        self.access.reopen();
    }

    /// What a metrics scrape shows.
    pub(super) fn snapshot(&self, daemon: &Daemon) -> Option<MetricsSnapshot> {
        daemon
            .metrics_snapshot(&self.apply_durations)
            .inspect_err(|error| tracing::error!(%error, "reading metrics from the maps failed"))
            .ok()
    }

    /// Answers `vaultfw logs`.
    pub(super) fn logs(
        &self,
        daemon: &Daemon,
        after: Option<u64>,
        since: Option<&str>,
        limit: Option<usize>,
    ) -> Response {
        let since = match since.map(crate::clock::parse_time).transpose() {
            Ok(since) => since,
            Err(message) => return Response::error(ErrorKind::InvalidInput, message),
        };
        Response::reply(&LogsReply {
            page: self.access.query(after, since, limit),
            events: daemon.dataplane.event_totals().unwrap_or_default().into(),
            event_rate: daemon.options.event_rate,
            log_allowed: daemon.options.log_allowed,
            file: self.access.path().map(Into::into),
            file_health: self.access.file_health(),
        })
    }
}

/// `record` with the reason `public_network_access_disabled` when it was
/// refused (or would be, in audit mode) although an IP rule lists its
/// source: the kernel counts it as unmatched (the rule has no entry while
/// public access is disabled); the policy says why.
fn public_access_reason(mut record: AccessRecord, policy: &crate::policy::Policy) -> AccessRecord {
    let refused = [Verdict::DenyNoMatch, Verdict::AuditWouldDeny]
        .iter()
        .any(|v| record.vaultfw.verdict == v.name());
    if let (true, std::net::IpAddr::V4(source)) = (refused, record.source.ip)
        && policy.refused_for_public_access(source)
    {
        record.event.reason = Some(crate::policy::PUBLIC_ACCESS_DISABLED_REASON.to_owned());
    }
    record
}
