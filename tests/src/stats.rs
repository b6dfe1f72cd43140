//! What the agent reports: the verdict-counter names of DESIGN.md section 2,
//! its JSON log lines (ECS records: `message`, nested fields, the agent's
//! own under `vaultfw`; docs/logging.md), and [`FinalStats`], the
//! totals of the last `"verdict counters"` line it logged before exiting.

use std::collections::BTreeMap;
use std::process::ExitStatus;

/// The verdict counters of DESIGN.md section 2, in counter-slot order.
pub const COUNTERS: [&str; 13] = [
    "pass_non_ip",
    "pass_control_plane",
    "pass_fragment",
    "pass_ipv6",
    "allow_default",
    "allow_ip_rule",
    "allow_vnet_rule",
    "allow_trusted_service",
    "audit_would_deny",
    "deny_no_match",
    "deny_ipv6",
    "deny_malformed",
    "pass_forwarded",
];

/// The log message of a verdict-counter line.
pub const COUNTERS_MESSAGE: &str = "verdict counters";
/// Which stream a captured line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

pub(crate) fn render(lines: &[(Stream, String)]) -> String {
    let mut out = String::new();
    for (stream, line) in lines {
        if *stream == Stream::Stderr {
            out.push_str("[stderr] ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// What the agent reported at shutdown.
#[derive(Debug)]
pub struct FinalStats {
    /// Counter name → total, from the last `"verdict counters"` line.
    pub counters: BTreeMap<String, u64>,
    /// Whether that line carried `"final":true`.
    pub is_final: bool,
    /// The exit status (always success: `stop` checks it).
    pub status: ExitStatus,
    lines: Vec<(Stream, String)>,
}

impl FinalStats {
    pub(crate) fn new(
        counters: BTreeMap<String, u64>,
        is_final: bool,
        status: ExitStatus,
        lines: Vec<(Stream, String)>,
    ) -> Self {
        FinalStats {
            counters,
            is_final,
            status,
            lines,
        }
    }

    /// The total of counter `name`; panics if the agent did not report it.
    pub fn get(&self, name: &str) -> u64 {
        *self.counters.get(name).unwrap_or_else(|| {
            panic!(
                "the agent reported no counter {name:?}; counters: {:?}",
                self.counters
            )
        })
    }

    /// Assert that each counter of [`COUNTERS`] has the value `expected`
    /// gives it, and every counter not named there is 0.
    pub fn assert_counters(&self, expected: &[(&str, u64)]) {
        for (name, _) in expected {
            assert!(COUNTERS.contains(name), "{name:?} is not a verdict counter");
        }
        let mut wrong = Vec::new();
        for name in COUNTERS {
            let want = expected
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, v)| *v);
            match self.counters.get(name) {
                Some(&got) if got == want => {}
                Some(&got) => wrong.push(format!("{name}: got {got}, expected {want}")),
                None => wrong.push(format!("{name}: not reported, expected {want}")),
            }
        }
        assert!(
            wrong.is_empty(),
            "verdict counters differ:\n  {}\nall counters: {:?}\nagent log:\n{}",
            wrong.join("\n  "),
            self.counters,
            self.log()
        );
    }

    /// The agent's log, stderr lines marked `[stderr]`.
    pub fn log(&self) -> String {
        render(&self.lines)
    }

    /// The agent's stdout lines.
    pub fn stdout_lines(&self) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .filter(|(s, _)| *s == Stream::Stdout)
            .map(|(_, l)| l.as_str())
    }
}

/// A log line's `message` field (top level, or under `fields` when the
/// formatter does not flatten them).
pub fn log_message(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    field(&value, "message")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
}

fn field<'a>(value: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    value
        .get(name)
        .or_else(|| value.get("fields").and_then(|f| f.get(name)))
}

/// The totals of a `"verdict counters"` line, and whether it is the final
/// one: each counter of `vaultfw.counters.totals`, and the access-log
/// accounting of `vaultfw.events` as `events_<name>` (deltas left out).
pub fn parse_counters(line: &str) -> Option<(BTreeMap<String, u64>, bool)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if field(&value, "message")?.as_str()? != COUNTERS_MESSAGE {
        return None;
    }
    let own = &value["vaultfw"];
    let is_final = own["final"].as_bool().unwrap_or(false);
    let mut counters = BTreeMap::new();
    for (key, v) in own["counters"]["totals"].as_object()? {
        if let Some(n) = v.as_u64() {
            counters.insert(key.clone(), n);
        }
    }
    for (key, v) in own["events"].as_object().into_iter().flatten() {
        if let Some(n) = v.as_u64().filter(|_| !key.ends_with("_delta")) {
            counters.insert(format!("events_{key}"), n);
        }
    }
    Some((counters, is_final))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_an_ecs_line() {
        let line = r#"{"@timestamp":"2026-01-01T00:00:00Z","log":{"level":"info","logger":"vaultfw::stats"},"message":"verdict counters","vaultfw":{"interval_s":1,"final":true,"counters":{"totals":{"pass_non_ip":2,"deny_no_match":7},"deltas":{"pass_non_ip":0,"deny_no_match":3}},"events":{"sent":5,"sent_delta":1}}}"#;
        let (counters, is_final) = parse_counters(line).expect("a counters line");
        assert!(is_final);
        assert_eq!(counters.get("pass_non_ip"), Some(&2));
        assert_eq!(counters.get("deny_no_match"), Some(&7));
        assert_eq!(counters.get("events_sent"), Some(&5));
        assert!(!counters.contains_key("interval_s"));
        assert!(!counters.contains_key("events_sent_delta"));
    }

    #[test]
    fn other_lines_are_not_counters() {
        assert!(parse_counters(r#"{"message":"filtering","iface":"x"}"#).is_none());
        assert!(parse_counters("not json").is_none());
        assert_eq!(
            log_message(r#"{"message":"filtering"}"#).as_deref(),
            Some("filtering")
        );
    }
}
