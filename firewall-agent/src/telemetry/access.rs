//! The access log: one JSON record per connection attempt the kernel
//! reported (denied ones; allowed ones too with `--log-allowed`), written
//! as a line to stdout or to `--access-log FILE` (opened for append and
//! reopened on SIGHUP, so logrotate can move it away), and kept in memory —
//! the last [`DEFAULT_MEMORY`] records — for `vaultfw logs`.
//!
//! Records are numbered (`seq`, from 1, per agent run) so a follower can
//! ask for what came after the last one it saw.
//!
//! The file is never opened through a link, is created 0640, and gets
//! whole records only, even on a full disk ([`file`]).

mod file;

use std::collections::VecDeque;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use firewall_common::{AccessEvent, Verdict};
use serde::{Deserialize, Serialize};

use crate::compile::RuleRef;
use file::FileSink;

pub use file::{FILE_MODE, FileHealth, UNWRITTEN_MAX, open_append};

/// Records kept in memory for `vaultfw logs`.
pub const DEFAULT_MEMORY: usize = 10_000;

/// One access-log record, as written and as `vaultfw logs` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// Always `"access"`: tells these lines from the agent's other log
    /// lines when both go to stdout.
    pub log: String,
    /// Position in this agent's access log, from 1.
    pub seq: u64,
    /// When the frame was judged (RFC 3339, UTC, microseconds).
    pub time: String,
    /// Ingress interface name (`null` when the interface is gone).
    pub interface: Option<String>,
    /// Ingress ifindex.
    pub ifindex: u32,
    /// Outer VLAN id; `null` when untagged.
    pub vlan: Option<u32>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// `"tcp"`, `"udp"`, or the IANA protocol number.
    pub proto: String,
    /// What the program did: `"drop"` or `"pass"`.
    pub action: String,
    /// The verdict counter the frame counted in (`deny_no_match`, ...).
    pub reason: String,
    /// The rule that allowed it (allow events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// That rule's kind: `ip`, `ip6`, `vnet` or `trusted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_kind: Option<String>,
}

impl AccessRecord {
    /// Decodes `event`. `boot` is the wall-clock time of CLOCK_MONOTONIC's
    /// zero ([`crate::clock::boot_time`]); `interface` names an ifindex; `rule`
    /// names a hit slot.
    pub fn decode(
        event: &AccessEvent,
        seq: u64,
        boot: Option<SystemTime>,
        interface: impl Fn(u32) -> Option<String>,
        rule: impl Fn(u32) -> Option<RuleRef>,
    ) -> Self {
        let at = boot
            .map(|b| b + Duration::from_nanos(event.ts_ns))
            .unwrap_or_else(SystemTime::now);
        let (src, dst) = addresses(event);
        let verdict = Verdict::from_index(u32::from(event.verdict));
        let owner = (event.rule_slot != u32::MAX)
            .then(|| rule(event.rule_slot))
            .flatten();
        AccessRecord {
            log: "access".to_owned(),
            seq,
            time: humantime::format_rfc3339_micros(at).to_string(),
            interface: interface(event.ifindex),
            ifindex: event.ifindex,
            vlan: (event.vlan != firewall_common::VLAN_UNTAGGED).then_some(event.vlan),
            src,
            dst,
            sport: event.sport,
            dport: event.dport,
            proto: match event.proto {
                6 => "tcp".to_owned(),
                17 => "udp".to_owned(),
                other => other.to_string(),
            },
            action: if verdict.is_some_and(Verdict::drops) {
                "drop"
            } else {
                "pass"
            }
            .to_owned(),
            reason: verdict.map_or_else(
                || format!("verdict {}", event.verdict),
                |v| v.name().to_owned(),
            ),
            rule: owner.as_ref().map(|r| r.name.clone()),
            rule_kind: owner.map(|r| r.kind.name().to_owned()),
        }
    }

    /// The record's time, parsed back.
    pub fn at(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.time).ok()
    }
}

fn addresses(event: &AccessEvent) -> (IpAddr, IpAddr) {
    if event.family == 6 {
        (
            IpAddr::V6(Ipv6Addr::from(event.src)),
            IpAddr::V6(Ipv6Addr::from(event.dst)),
        )
    } else {
        let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
        (v4(&event.src), v4(&event.dst))
    }
}

/// Where records are written.
#[derive(Debug)]
enum Sink {
    Stdout,
    File(FileSink),
}

/// What `vaultfw logs` gets back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsPage {
    /// The matching records, oldest first.
    pub records: Vec<AccessRecord>,
    /// The `seq` to ask after next time (the newest record's, or the one
    /// asked after when nothing newer matched).
    pub cursor: u64,
    /// Records no longer in memory because newer ones replaced them
    /// (over the whole run).
    pub evicted: u64,
    /// Records kept in memory at most.
    pub capacity: usize,
}

/// The access log: sink plus in-memory tail.
#[derive(Debug)]
pub struct AccessLog {
    sink: Sink,
    memory: VecDeque<AccessRecord>,
    capacity: usize,
    next_seq: u64,
    evicted: u64,
}

impl AccessLog {
    /// Writes to `path` (created if needed, appended to), or to stdout
    /// when `None`; keeps the last `capacity` records in memory.
    pub fn open(path: Option<&Path>, capacity: usize) -> std::io::Result<Self> {
        let sink = match path {
            None => Sink::Stdout,
            Some(path) => Sink::File(FileSink::open(path)?),
        };
        Ok(AccessLog {
            sink,
            memory: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
            next_seq: 1,
            evicted: 0,
        })
    }

    /// The `seq` the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The file written to (`None`: stdout).
    pub fn path(&self) -> Option<&Path> {
        match &self.sink {
            Sink::Stdout => None,
            Sink::File(sink) => Some(sink.path()),
        }
    }

    /// How writing the file goes (`None`: stdout).
    pub fn file_health(&self) -> Option<FileHealth> {
        match &self.sink {
            Sink::Stdout => None,
            Sink::File(sink) => Some(sink.health()),
        }
    }

    /// Writes records held back by failed writes, then logs how writing
    /// the file went since the last call if anything failed. Called once
    /// per counter interval.
    pub fn retry_and_report(&mut self) {
        if let Sink::File(sink) = &mut self.sink {
            sink.flush();
            sink.report();
        }
    }

    /// Writes `record` (whose `seq` must be [`AccessLog::next_seq`]) and
    /// keeps it in memory.
    pub fn push(&mut self, record: AccessRecord) {
        debug_assert_eq!(record.seq, self.next_seq);
        self.next_seq = record.seq + 1;
        self.write(&record);
        if self.memory.len() == self.capacity {
            self.memory.pop_front();
            self.evicted += 1;
        }
        self.memory.push_back(record);
    }

    fn write(&mut self, record: &AccessRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(error) => {
                tracing::warn!(%error, "cannot serialize an access-log record");
                return;
            }
        };
        line.push(b'\n');
        // One write per line: lines never interleave with the other log
        // lines on stdout, and a file gets each record whole or not at all.
        match &mut self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                if let Err(error) = out.write_all(&line).and_then(|()| out.flush()) {
                    tracing::debug!(%error, "writing an access-log record to stdout failed");
                }
            }
            Sink::File(sink) => sink.push(line),
        }
    }

    /// Opens the file again at its path (after logrotate moved it away);
    /// the old handle is kept when that fails. Stdout: nothing to do.
    pub fn reopen(&mut self) {
        if let Sink::File(sink) = &mut self.sink {
            sink.reopen();
        }
    }

    /// Records with `seq > after` (all when `None`) and a time at or after
    /// `since`, at most `limit` of them (the oldest first). An `after`
    /// beyond the newest record comes from a follower of a previous agent
    /// run (numbering restarts at 1): it gets everything.
    pub fn query(
        &self,
        after: Option<u64>,
        since: Option<SystemTime>,
        limit: Option<usize>,
    ) -> LogsPage {
        let newest = self.next_seq - 1;
        let after = after.filter(|a| *a <= newest).unwrap_or(0);
        let records: Vec<AccessRecord> = self
            .memory
            .iter()
            .filter(|r| r.seq > after)
            .filter(|r| since.is_none_or(|s| r.at().is_none_or(|t| t >= s)))
            .take(limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        // With nothing new matching, the cursor still moves past records
        // the time filter left out: a follower never gets them later.
        let cursor = records.last().map_or(newest, |r| r.seq);
        LogsPage {
            records,
            cursor,
            evicted: self.evicted,
            capacity: self.capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_events_read_the_first_four_bytes() {
        let mut event = AccessEvent {
            family: 4,
            proto: 6,
            verdict: Verdict::DenyNoMatch.index() as u8,
            rule_slot: u32::MAX,
            ifindex: 7,
            sport: 40000,
            dport: 443,
            ..AccessEvent::default()
        };
        event.src[..4].copy_from_slice(&[198, 51, 100, 7]);
        event.dst[..4].copy_from_slice(&[192, 0, 2, 1]);
        let record = AccessRecord::decode(&event, 1, None, |_| Some("eth0".into()), |_| None);
        assert_eq!(record.src.to_string(), "198.51.100.7");
        assert_eq!(record.dst.to_string(), "192.0.2.1");
        assert_eq!(
            (
                record.proto.as_str(),
                record.action.as_str(),
                record.reason.as_str()
            ),
            ("tcp", "drop", "deny_no_match")
        );
        assert_eq!(record.vlan, None);
        assert_eq!(record.rule, None);
    }
}
