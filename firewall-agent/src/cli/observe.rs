//! `vaultfw stats [--watch]` and `vaultfw logs [--follow] [--since]`: what
//! the daemon counted and whom it refused, read through the control socket.
//! `--watch` and `--follow` poll (a `Stats` request per interval, a `Logs`
//! request with the previous answer's cursor) until Ctrl-C.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use firewall_common::Verdict;

use comfy_table::{CellAlignment, Table};

use super::OutputFormat;
use super::output::{ErrorDetail, fail, print_success, success_line};
use super::remote::{ShowArgs, SocketArgs, client_error, daemon_reply};
use crate::control::client::{self, ClientError};
use crate::control::protocol::Command;
use crate::control::replies::{
    EventCounts, EventStatsView, InterfaceStatsView, LogsReply, ShowSource, StatsReply, StatsView,
    VerdictCounts, VerdictRates,
};
use crate::dataplane::pins;
use crate::exit::{self, Failure};
use crate::paths::PinDir;
use crate::telemetry::access::AccessRecord;

/// `vaultfw stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub show: ShowArgs,
    /// Keep polling and show each counter's rate per second (Ctrl-C stops).
    #[arg(long)]
    pub watch: bool,
    /// Seconds between two samples of --watch.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, requires = "watch", value_parser = positive_seconds)]
    pub interval: f64,
    /// Stop --watch after this many samples (default: until Ctrl-C).
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<u64>,
}

/// `vaultfw logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Keep printing records as they arrive (Ctrl-C stops).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only records since then: a duration ago (`30s`, `10m`, `2h`) or an
    /// RFC 3339 time (`2026-01-31T12:00:00Z`).
    #[arg(long, value_name = "DURATION|TIME", value_parser = crate::clock::parse_since)]
    pub since: Option<SystemTime>,
}

/// How often `logs --follow` asks for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.05..=86_400.0).contains(&s) => Ok(s),
        _ => Err(format!(
            "{text:?}: give seconds between 0.05 and 86400 (e.g. 1 or 0.5)"
        )),
    }
}

/// Runs `vaultfw stats`: one sample, or with `--watch` the rates between
/// samples. From the daemon, or, when none runs, from the pinned counters
/// (which keep counting); then the exit code is [`exit::NOT_RUNNING`].
pub fn stats(args: &StatsArgs) -> ExitCode {
    let output = args.show.socket.output;
    if !args.watch {
        return match sample(args) {
            Ok((view, code)) => {
                print_success(output, "stats", &view, || print_counters(&view));
                code
            }
            Err(code) => code,
        };
    }
    let interval = Duration::from_secs_f64(args.interval);
    let mut previous: Option<(Instant, StatsView)> = None;
    let mut shown = 0u64;
    loop {
        let (now, code) = match sample(args) {
            Ok(sampled) => sampled,
            Err(code) => return code,
        };
        let at = Instant::now();
        match &previous {
            Some((then, before)) => {
                let rated = with_rates(before, now.clone(), at.duration_since(*then));
                match output {
                    OutputFormat::Json => println!("{}", success_line("stats", &rated)),
                    OutputFormat::Table => print_rates(&rated, args.interval),
                }
                shown += 1;
            }
            None if output == OutputFormat::Table => {
                println!(
                    "vaultfw stats: first sample taken; rates follow every {} s (Ctrl-C stops)",
                    args.interval
                );
            }
            None => {}
        }
        let _ = std::io::stdout().flush();
        if args.count.is_some_and(|n| shown >= n) {
            return code;
        }
        previous = Some((at, now));
        std::thread::sleep(interval);
    }
}

/// One sample and the exit code it implies (0 from the daemon,
/// [`exit::NOT_RUNNING`] from the pins); `Err`: the failure, printed.
fn sample(args: &StatsArgs) -> Result<(StatsView, ExitCode), ExitCode> {
    let socket = &args.show.socket;
    match client::send(&socket.socket, Command::Stats) {
        Ok(response) => match daemon_reply::<StatsReply>(&response, socket.output, "stats") {
            Ok(reply) => Ok((StatsView::from_daemon(&reply), ExitCode::SUCCESS)),
            Err(code) => Err(code),
        },
        Err(not_running @ ClientError::NotRunning { .. }) => {
            let dir = PinDir::new(&args.show.pin_dir);
            match pinned_stats(&dir) {
                Ok(view) => Ok((view, ExitCode::from(exit::NOT_RUNNING))),
                Err(error) => Err(fail(
                    socket.output,
                    "stats",
                    ErrorDetail::new(
                        Failure::NotRunning,
                        format!(
                            "{not_running}; and no pinned counters in {} to read ({error})",
                            args.show.pin_dir.display()
                        ),
                    ),
                )),
            }
        }
        Err(error) => Err(client_error(socket.output, "stats", &error)),
    }
}

/// The counters pinned under `dir`, per pinned interface that exists here.
fn pinned_stats(dir: &PinDir) -> Result<StatsView, crate::dataplane::DataplaneError> {
    let counters = pins::counters(dir)?;
    let state = pins::inspect(dir);
    let interfaces = state
        .interfaces
        .iter()
        .filter_map(|link| {
            let ifindex = link.ifindex?;
            let slot = counters
                .slots
                .get((ifindex % firewall_common::INTERFACE_SLOTS) as usize)?;
            Some(InterfaceStatsView {
                name: link.interface.clone(),
                ifindex,
                counters: verdict_counts(slot),
                rates: None,
            })
        })
        .collect();
    let events = counters.events;
    Ok(StatsView {
        source: ShowSource::Pins,
        generation: state.generation,
        counters: verdict_counts(&counters.totals),
        interfaces,
        events: EventStatsView {
            counts: EventCounts::new(events.sent, events.rate_limited, events.ring_full),
            sent_per_s: None,
            dropped_per_s: None,
        },
        time: None,
        interval_s: None,
        packets_per_s: None,
        rates: None,
    })
}

/// Counter totals by counter name.
fn verdict_counts(totals: &crate::dataplane::VerdictTotals) -> VerdictCounts {
    Verdict::ALL
        .iter()
        .map(|v| (v.name().to_owned(), totals[v.index() as usize]))
        .collect()
}

/// `now` with the rates of its counters since `before`, `elapsed` earlier.
fn with_rates(before: &StatsView, mut now: StatsView, elapsed: Duration) -> StatsView {
    let seconds = elapsed.as_secs_f64().max(1e-6);
    let rate = |a: u64, b: u64| round2(b.saturating_sub(a) as f64 / seconds);
    let rates = |old: Option<&VerdictCounts>, new: &VerdictCounts| -> VerdictRates {
        Verdict::ALL
            .iter()
            .map(|v| {
                let name = v.name();
                let count = |c: &VerdictCounts| c.get(name).copied().unwrap_or(0);
                let per_s = old.map_or(0.0, |old| rate(count(old), count(new)));
                (name.to_owned(), per_s)
            })
            .collect()
    };
    let totals = rates(Some(&before.counters), &now.counters);
    for interface in &mut now.interfaces {
        let old = before
            .interfaces
            .iter()
            .find(|o| o.name == interface.name && o.ifindex == interface.ifindex);
        interface.rates = Some(rates(old.map(|o| &o.counters), &interface.counters));
    }
    now.packets_per_s = Some(round2(totals.values().sum()));
    now.rates = Some(totals);
    now.events.sent_per_s = Some(rate(before.events.counts.sent, now.events.counts.sent));
    now.events.dropped_per_s = Some(rate(
        before.events.counts.dropped,
        now.events.counts.dropped,
    ));
    now.interval_s = Some(round2(seconds));
    now.time = Some(humantime::format_rfc3339_millis(SystemTime::now()).to_string());
    now
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A table with the given header, right-aligned but for the first column.
fn table(header: Vec<String>) -> Table {
    let mut table = Table::new();
    table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    let columns = header.len();
    table.set_header(header);
    for index in 1..columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// One sample for people: a verdict per row, the total and each
/// interface's count per column; then the access log's accounting.
fn print_counters(view: &StatsView) {
    let mut header = vec!["verdict".to_owned(), "total".to_owned()];
    header.extend(view.interfaces.iter().map(|i| i.name.clone()));
    let mut rows = table(header);
    let count = |c: &VerdictCounts, name: &str| c.get(name).copied().unwrap_or(0);
    for verdict in Verdict::ALL {
        let name = verdict.name();
        let mut row = vec![name.to_owned(), count(&view.counters, name).to_string()];
        row.extend(
            view.interfaces
                .iter()
                .map(|i| count(&i.counters, name).to_string()),
        );
        rows.add_row(row);
    }
    let source = match view.source {
        ShowSource::Daemon => "the daemon",
        ShowSource::Pins => "the pinned counters (no daemon answered)",
    };
    let generation = view
        .generation
        .map_or_else(|| "unknown".to_owned(), |g| g.to_string());
    println!("vaultfw stats — generation {generation} — from {source}");
    println!("{rows}");
    let e = &view.events.counts;
    println!(
        "access-log events: sent {}, dropped {} (rate limit {}, ring full {})",
        e.sent, e.dropped, e.rate_limited, e.ring_full
    );
}

/// `--watch` for people: each verdict's rate per second (in total and
/// per interface) beside its total.
fn print_rates(view: &StatsView, interval: f64) {
    let mut out = String::new();
    if std::io::stdout().is_terminal() {
        out.push_str("\x1b[2J\x1b[H"); // clear the screen, cursor home
    }
    let generation = view
        .generation
        .map_or_else(|| "unknown".to_owned(), |g| g.to_string());
    out.push_str(&format!(
        "vaultfw stats — generation {generation} — {} — every {interval} s (Ctrl-C stops)\n",
        humantime::format_rfc3339_seconds(SystemTime::now()),
    ));
    let mut header = vec!["verdict".to_owned(), "per s".to_owned(), "total".to_owned()];
    header.extend(view.interfaces.iter().map(|i| format!("{} /s", i.name)));
    let mut rows = table(header);
    let rate = |r: &Option<VerdictRates>, name: &str| {
        format!(
            "{:.1}",
            r.as_ref().and_then(|r| r.get(name)).copied().unwrap_or(0.0)
        )
    };
    for verdict in Verdict::ALL {
        let name = verdict.name();
        let total = view.counters.get(name).copied().unwrap_or(0);
        let mut row = vec![name.to_owned(), rate(&view.rates, name), total.to_string()];
        row.extend(view.interfaces.iter().map(|i| rate(&i.rates, name)));
        rows.add_row(row);
    }
    let frames: u64 = view.counters.values().sum();
    let mut all = vec![
        "all frames".to_owned(),
        format!("{:.1}", view.packets_per_s.unwrap_or(0.0)),
        frames.to_string(),
    ];
    all.extend(view.interfaces.iter().map(|i| {
        let sum: f64 = i.rates.as_ref().map_or(0.0, |r| r.values().sum());
        format!("{sum:.1}")
    }));
    rows.add_row(all);
    out.push_str(&format!("{rows}\n"));
    let e = &view.events;
    out.push_str(&format!(
        "access-log events: sent {} ({:.1}/s), dropped {} ({:.1}/s)\n",
        e.counts.sent,
        e.sent_per_s.unwrap_or(0.0),
        e.counts.dropped,
        e.dropped_per_s.unwrap_or(0.0)
    ));
    print!("{out}");
}

/// Runs `vaultfw logs`.
pub fn logs(args: &LogsArgs) -> ExitCode {
    let since = args
        .since
        .map(|t| humantime::format_rfc3339_micros(t).to_string());
    let mut after = None;
    loop {
        let command = Command::Logs {
            after,
            since: since.clone(),
            limit: None,
        };
        let response = match client::send(&args.socket.socket, command) {
            Ok(response) => response,
            Err(error) => return client_error(args.socket.output, "logs", &error),
        };
        let page: LogsReply = match daemon_reply(&response, args.socket.output, "logs") {
            Ok(page) => page,
            Err(exit) => return exit,
        };
        let records = &page.page.records;
        let mut out = std::io::stdout().lock();
        for record in records {
            let line = match args.socket.output {
                // As the JSON value the daemon sent (key order included).
                OutputFormat::Json => serde_json::to_value(record)
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                OutputFormat::Table => record_line(record),
            };
            if writeln!(out, "{line}").is_err() {
                return ExitCode::SUCCESS; // the reader went away
            }
        }
        let _ = out.flush();
        drop(out);
        if !args.follow {
            if args.socket.output == OutputFormat::Table {
                eprintln!(
                    "{} record(s); kernel events sent {}, dropped {} (rate limit {}/s per CPU)",
                    records.len(),
                    page.events.sent,
                    page.events.dropped,
                    page.event_rate,
                );
            }
            return ExitCode::SUCCESS;
        }
        after = Some(page.page.cursor);
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// One record for people: time, interface, reason, flow, VLAN, rule.
/// Endpoints are written as socket addresses (IPv6 bracketed).
fn record_line(r: &AccessRecord) -> String {
    let interface = &r.observer.ingress.interface;
    let mut line = format!(
        "{}  {}  {}  {} {} -> {}",
        r.timestamp,
        interface
            .name
            .clone()
            .unwrap_or_else(|| format!("ifindex {}", interface.id)),
        r.vaultfw.verdict,
        r.network.transport,
        // `a.b.c.d:port`, and `[v6]:port` (RFC 3986 section 3.2.2).
        std::net::SocketAddr::new(r.source.ip, r.source.port),
        std::net::SocketAddr::new(r.destination.ip, r.destination.port),
    );
    if let Some(vlan) = &r.network.vlan {
        line.push_str(&format!("  vlan {}", vlan.id));
    }
    if let Some(rule) = &r.rule {
        line.push_str(&format!("  rule {} {}", rule.category, rule.name));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::replies::InterfaceStats;

    fn sample(passed: u64, on_eth0: u64, sent: u64) -> StatsView {
        let counters = |n: u64| VerdictCounts::from([(Verdict::ALL[0].name().to_owned(), n)]);
        StatsView::from_daemon(&StatsReply {
            generation: 7,
            counters: counters(passed),
            interfaces: vec![InterfaceStats {
                name: "eth0".into(),
                ifindex: 2,
                counters: counters(on_eth0),
            }],
            events: EventCounts::new(sent, 0, 0),
        })
    }

    #[test]
    fn watch_rates_are_counter_growth_per_second_in_total_and_per_interface() {
        let rated = with_rates(&sample(10, 4, 1), sample(30, 14, 5), Duration::from_secs(2));
        let first = Verdict::ALL[0].name();
        let rates = rated.rates.as_ref().unwrap();
        assert_eq!(rates[first], 10.0);
        assert_eq!(rates[Verdict::ALL[1].name()], 0.0);
        assert_eq!(rated.packets_per_s, Some(10.0));
        assert_eq!(rated.interfaces[0].rates.as_ref().unwrap()[first], 5.0);
        assert_eq!(rated.events.sent_per_s, Some(2.0));
        assert_eq!(rated.interval_s, Some(2.0));
        // The same names as a single sample: the counters stay `counters`.
        let json = serde_json::to_value(&rated).unwrap();
        assert_eq!(json["generation"], 7);
        assert_eq!(json["counters"][first], 30);
        assert_eq!(json["rates"][first], 10.0);
        assert_eq!(json["events"]["sent"], 5);
        assert_eq!(json["events"]["sent_per_s"], 2.0);
        let single = serde_json::to_value(sample(30, 14, 5)).unwrap();
        let keys =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&json), keys(&single));
        assert!(single["rates"].is_null() && single["events"]["sent_per_s"].is_null());
    }

    #[test]
    fn an_interface_new_since_the_last_sample_has_no_rate_yet() {
        let mut before = sample(10, 4, 0);
        before.interfaces[0].ifindex = 9; // same name, another interface
        let rated = with_rates(&before, sample(30, 14, 0), Duration::from_secs(1));
        let rates = rated.interfaces[0].rates.as_ref().unwrap();
        assert!(rates.values().all(|r| *r == 0.0));
    }

    #[test]
    fn a_log_record_line_names_the_flow_vlan_and_rule() {
        let mut event = firewall_common::AccessEvent {
            family: 4,
            proto: 6,
            verdict: firewall_common::Verdict::AllowIpRule.index() as u8,
            rule_slot: 3,
            ifindex: 4,
            sport: 40000,
            dport: 443,
            vlan: 120,
            ..Default::default()
        };
        event.src[..4].copy_from_slice(&[198, 51, 100, 7]);
        event.dst[..4].copy_from_slice(&[203, 0, 113, 10]);
        let boot = humantime::parse_rfc3339("2026-01-31T12:00:00Z").ok();
        let rule = |_| {
            Some(crate::compile::RuleRef {
                kind: crate::compile::RuleKind::Ip,
                name: "198.51.100.7".into(),
                index: 0,
            })
        };
        let record = AccessRecord::decode(&event, 1, boot, |_| None, rule);
        assert_eq!(
            record_line(&record),
            "2026-01-31T12:00:00.000000Z  ifindex 4  allow_ip_rule  tcp 198.51.100.7:40000 -> \
             203.0.113.10:443  vlan 120  rule ip 198.51.100.7"
        );
        // IPv6 endpoints are bracketed.
        event.family = 6;
        event.vlan = firewall_common::VLAN_UNTAGGED;
        event.src = "2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        event.dst = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let record = AccessRecord::decode(&event, 2, boot, |_| Some("eth0".into()), |_| None);
        assert!(
            record_line(&record).contains("tcp [2001:db8::7]:40000 -> [2001:db8::1]:443"),
            "{}",
            record_line(&record)
        );
    }
}
