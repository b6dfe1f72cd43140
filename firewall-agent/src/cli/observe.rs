//! `vaultfw stats [--watch]` and `vaultfw logs [--follow] [--since]`: what
//! the daemon counted and whom it refused, read through the control socket.
//! `--watch` and `--follow` poll (a `Stats` request per interval, a `Logs`
//! request with the previous answer's cursor) until Ctrl-C.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use firewall_common::Verdict;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::OutputFormat;
use super::remote::{ShowArgs, SocketArgs, client_error, print_response, request};
use crate::control::client;
use crate::control::protocol::{Command, Response};
use crate::control::replies::{LogsReply, StatsReply, VerdictCounts};
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

/// Runs `vaultfw stats`.
pub fn stats(args: &StatsArgs) -> ExitCode {
    if !args.watch {
        return request(&args.show.socket, Command::Stats);
    }
    let socket = &args.show.socket;
    let interval = Duration::from_secs_f64(args.interval);
    let mut previous: Option<(Instant, StatsReply)> = None;
    let mut shown = 0u64;
    loop {
        let response = match client::send(&socket.socket, Command::Stats) {
            Ok(response) => response,
            Err(error) => return client_error(&error),
        };
        let now: StatsReply = match reply(&response) {
            Ok(now) => now,
            Err(exit) => return exit.unwrap_or_else(|| print_response(socket.output, &response)),
        };
        let at = Instant::now();
        match &previous {
            Some((then, before)) => {
                let rates = Rates::between(before, &now, at.duration_since(*then));
                match socket.output {
                    OutputFormat::Json => println!("{}", rates.json(&now)),
                    OutputFormat::Table => print_rates(&rates, &now, args.interval),
                }
                shown += 1;
            }
            None if socket.output == OutputFormat::Table => {
                println!(
                    "vaultfw stats: first sample taken; rates follow every {} s (Ctrl-C stops)",
                    args.interval
                );
            }
            None => {}
        }
        let _ = std::io::stdout().flush();
        if args.count.is_some_and(|n| shown >= n) {
            return ExitCode::SUCCESS;
        }
        previous = Some((at, now));
        std::thread::sleep(interval);
    }
}

/// The reply of a successful response; `Err(None)` for a failure (to
/// print), `Err(Some(exit))` for a reply of another shape (said here).
fn reply<T: DeserializeOwned>(response: &Response) -> Result<T, Option<ExitCode>> {
    match response.result_as::<T>() {
        Some(Ok(reply)) => Ok(reply),
        Some(Err(error)) => {
            eprintln!(
                "vaultfw: unreadable answer from the daemon ({error}); use the vaultfw binary of \
                 the daemon's release"
            );
            Err(Some(ExitCode::FAILURE))
        }
        None => Err(None),
    }
}

/// Counter growth per second between two `Stats` answers.
struct Rates {
    seconds: f64,
    totals: Vec<(String, u64, f64)>,
    interfaces: Vec<(String, Vec<f64>)>,
    events_sent: f64,
    events_dropped: f64,
}

impl Rates {
    fn between(before: &StatsReply, now: &StatsReply, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-6);
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / seconds;
        let count =
            |counters: &VerdictCounts, v: &Verdict| counters.get(v.name()).copied().unwrap_or(0);
        let totals = Verdict::ALL
            .iter()
            .map(|v| {
                let (a, b) = (count(&before.counters, v), count(&now.counters, v));
                (v.name().to_owned(), b, rate(a, b))
            })
            .collect();
        let interfaces = now
            .interfaces
            .iter()
            .map(|i| {
                let old = before
                    .interfaces
                    .iter()
                    .find(|o| o.name == i.name && o.ifindex == i.ifindex);
                let rates = Verdict::ALL
                    .iter()
                    .map(|v| match old {
                        Some(old) => rate(count(&old.counters, v), count(&i.counters, v)),
                        None => 0.0,
                    })
                    .collect();
                (i.name.clone(), rates)
            })
            .collect();
        Rates {
            seconds,
            totals,
            interfaces,
            events_sent: rate(before.events.sent, now.events.sent),
            events_dropped: rate(before.events.dropped, now.events.dropped),
        }
    }

    fn json(&self, now: &StatsReply) -> Value {
        let rates: serde_json::Map<String, Value> = self
            .totals
            .iter()
            .map(|(n, _, r)| (n.clone(), json!(round2(*r))))
            .collect();
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|(name, rates)| {
                let rates: serde_json::Map<String, Value> = Verdict::ALL
                    .iter()
                    .zip(rates)
                    .map(|(v, r)| (v.name().to_owned(), json!(round2(*r))))
                    .collect();
                json!({ "name": name, "rates": rates })
            })
            .collect();
        json!({
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "interval_s": round2(self.seconds),
            "generation": now.generation,
            "packets_per_s": round2(self.totals.iter().map(|(_, _, r)| r).sum()),
            "rates": rates,
            "totals": now.counters,
            "interfaces": interfaces,
            "events": {
                "sent_per_s": round2(self.events_sent),
                "dropped_per_s": round2(self.events_dropped),
                "sent": now.events.sent,
                "dropped": now.events.dropped,
            },
        })
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn print_rates(rates: &Rates, now: &StatsReply, interval: f64) {
    let mut out = String::new();
    if std::io::stdout().is_terminal() {
        out.push_str("\x1b[2J\x1b[H"); // clear the screen, cursor home
    }
    out.push_str(&format!(
        "vaultfw stats — generation {} — {} — every {interval} s (Ctrl-C stops)\n\n",
        now.generation,
        humantime::format_rfc3339_seconds(SystemTime::now()),
    ));
    out.push_str(&format!("{:<24}{:>14}{:>12}", "verdict", "total", "per s"));
    for (name, _) in &rates.interfaces {
        out.push_str(&format!("{:>16}", format!("{name} /s")));
    }
    out.push('\n');
    for (i, (name, total, rate)) in rates.totals.iter().enumerate() {
        out.push_str(&format!("{name:<24}{total:>14}{rate:>12.1}"));
        for (_, per) in &rates.interfaces {
            out.push_str(&format!("{:>16.1}", per[i]));
        }
        out.push('\n');
    }
    let all: f64 = rates.totals.iter().map(|(_, _, r)| r).sum();
    let frames: u64 = rates.totals.iter().map(|(_, t, _)| t).sum();
    out.push_str(&format!("{:<24}{frames:>14}{all:>12.1}\n\n", "all frames"));
    out.push_str(&format!(
        "access-log events: sent {} ({:.1}/s), dropped {} ({:.1}/s)\n",
        now.events.sent, rates.events_sent, now.events.dropped, rates.events_dropped
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
            Err(error) => return client_error(&error),
        };
        let page: LogsReply = match reply(&response) {
            Ok(page) => page,
            Err(exit) => {
                return exit.unwrap_or_else(|| print_response(args.socket.output, &response));
            }
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
    use crate::control::replies::{EventCounts, InterfaceStats};

    fn sample(passed: u64, on_eth0: u64, sent: u64) -> StatsReply {
        let counters = |n: u64| VerdictCounts::from([(Verdict::ALL[0].name().to_owned(), n)]);
        StatsReply {
            generation: 7,
            counters: counters(passed),
            interfaces: vec![InterfaceStats {
                name: "eth0".into(),
                ifindex: 2,
                counters: counters(on_eth0),
            }],
            events: EventCounts::new(sent, 0, 0),
        }
    }

    #[test]
    fn watch_rates_are_counter_growth_per_second_in_total_and_per_interface() {
        let rates = Rates::between(
            &sample(10, 4, 1),
            &sample(30, 14, 5),
            Duration::from_secs(2),
        );
        let first = Verdict::ALL[0].name();
        assert_eq!(rates.totals[0], (first.to_owned(), 30, 10.0));
        assert_eq!(
            rates.interfaces,
            [("eth0".to_owned(), {
                let mut per = vec![0.0; Verdict::ALL.len()];
                per[0] = 5.0;
                per
            })]
        );
        assert_eq!(rates.events_sent, 2.0);
        let json = rates.json(&sample(30, 14, 5));
        assert_eq!(json["generation"], 7);
        assert_eq!(json["rates"][first], 10.0);
        assert_eq!(json["totals"][first], 30);
        assert_eq!(json["events"]["sent_per_s"], 2.0);
    }

    #[test]
    fn an_interface_new_since_the_last_sample_has_no_rate_yet() {
        let mut before = sample(10, 4, 0);
        before.interfaces[0].ifindex = 9; // same name, another interface
        let rates = Rates::between(&before, &sample(30, 14, 0), Duration::from_secs(1));
        assert!(rates.interfaces[0].1.iter().all(|r| *r == 0.0));
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
