//! The access log: one JSON record per connection attempt the kernel
//! reported (denied ones; allowed ones too with `--log-allowed`), written
//! as a line to stdout or to `--access-log FILE` (opened for append and
//! reopened on SIGHUP, so logrotate can move it away), and kept in memory —
//! the last [`DEFAULT_MEMORY`] records — for `vaultfw logs`.
//!
//! Records are numbered (`event.sequence`) so a follower can ask for what
//! came after the last one it saw. The numbering continues across agent
//! restarts: it counts on from the kernel's count of events sent, kept in
//! the pinned maps ([`AccessLog::continue_after`]); it restarts at 1 only
//! with new maps (after `vaultfw detach`).
//!
//! The file is never opened through a link, is created 0640, and gets
//! whole records only, even on a full disk ([`super::file`]).

use std::collections::VecDeque;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use firewall_common::{AccessEvent, Verdict};
use serde::{Deserialize, Serialize};

use super::file::{ACCESS_LOG, FileSink};
use crate::compile::RuleRef;

pub use super::file::{FILE_MODE, FileHealth, UNWRITTEN_MAX};

/// Records kept in memory for `vaultfw logs`.
pub const DEFAULT_MEMORY: usize = 10_000;

/// One access-log record, as written and as `vaultfw logs` shows it: an
/// ECS record ([`super::ecs`]; docs/logging.md lists every field).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// When the frame was judged (RFC 3339, UTC, microseconds).
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    /// `log.level` (`info`) and `log.logger` ([`TARGET`]).
    pub log: LogFields,
    /// `connection denied` or `connection allowed`.
    pub message: String,
    /// What happened.
    pub event: EventFields,
    /// Where the attempt came from.
    pub source: Address,
    /// Where it went.
    pub destination: Address,
    /// Protocol and VLAN.
    pub network: NetworkFields,
    /// The interface it arrived on.
    pub observer: ObserverFields,
    /// The rule that allowed it (allow events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleFields>,
    /// The agent's own fields.
    pub vaultfw: AccessVaultfw,
}

/// The tracing target / `log.logger` of access-log records.
pub const TARGET: &str = "vaultfw::access";

/// `log.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFields {
    /// Always `info`.
    pub level: String,
    /// Always [`TARGET`].
    pub logger: String,
}

/// `event.*` of an access record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFields {
    /// Always `event`.
    pub kind: String,
    /// Always `["network"]`.
    pub category: Vec<String>,
    /// `["connection", "denied"]` or `["connection", "allowed"]`.
    #[serde(rename = "type")]
    pub kind_of: Vec<String>,
    /// What the program did: `drop` or `pass`.
    pub action: String,
    /// Always `success`: the filter did what its policy says (whether the
    /// attempt got through is `event.type` and `event.action`).
    pub outcome: String,
    /// Always `vaultfw.access`.
    pub dataset: String,
    /// Why, where the verdict alone does not say it:
    /// `public_network_access_disabled` for a source an IP rule lists
    /// while the policy disables public network access. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Position in the access log. It continues across agent restarts
    /// while the pinned maps live (it counts from the kernel's count of
    /// events sent); numbers of events lost on the way are skipped.
    pub sequence: u64,
}

/// `source.*` / `destination.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// The address.
    pub ip: IpAddr,
    /// The port.
    pub port: u16,
}

/// `network.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkFields {
    /// `tcp`, `udp`, or the IANA protocol number.
    pub transport: String,
    /// The IANA protocol number.
    pub iana_number: String,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "type")]
    pub family: String,
    /// The outer VLAN; absent when untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<VlanFields>,
}

/// `network.vlan.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanFields {
    /// The VLAN id (ECS keeps it a string).
    pub id: String,
}

/// `observer.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObserverFields {
    /// `observer.ingress.*`.
    pub ingress: IngressFields,
}

/// `observer.ingress.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressFields {
    /// `observer.ingress.interface.*`.
    pub interface: InterfaceFields,
}

/// `observer.ingress.interface.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceFields {
    /// Its name (`null` when the interface is gone).
    pub name: Option<String>,
    /// Its ifindex (a string, as ECS keeps ids).
    pub id: String,
}

/// `rule.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFields {
    /// The rule (an IP rule's value, a subnet rule's id, a trusted
    /// service).
    pub name: String,
    /// Its kind: `ip`, `ip6`, `vnet`, `private_endpoint` or `trusted`.
    pub category: String,
}

/// `vaultfw.*` of an access record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessVaultfw {
    /// The verdict counter the frame counted in (`deny_no_match`, ...).
    pub verdict: String,
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
        let drops = verdict.is_some_and(Verdict::drops);
        let s = |v: &str| v.to_owned();
        AccessRecord {
            timestamp: super::ecs::timestamp(at),
            log: LogFields {
                level: s("info"),
                logger: s(TARGET),
            },
            message: s(if drops {
                "connection denied"
            } else {
                "connection allowed"
            }),
            event: EventFields {
                kind: s("event"),
                category: vec![s("network")],
                kind_of: vec![s("connection"), s(if drops { "denied" } else { "allowed" })],
                action: s(if drops { "drop" } else { "pass" }),
                outcome: s("success"),
                dataset: s("vaultfw.access"),
                reason: None,
                sequence: seq,
            },
            source: Address {
                ip: src,
                port: event.sport,
            },
            destination: Address {
                ip: dst,
                port: event.dport,
            },
            network: NetworkFields {
                transport: match event.proto {
                    6 => s("tcp"),
                    17 => s("udp"),
                    other => other.to_string(),
                },
                iana_number: event.proto.to_string(),
                family: s(if src.is_ipv6() { "ipv6" } else { "ipv4" }),
                vlan: (event.vlan != firewall_common::VLAN_UNTAGGED).then(|| VlanFields {
                    id: event.vlan.to_string(),
                }),
            },
            observer: ObserverFields {
                ingress: IngressFields {
                    interface: InterfaceFields {
                        name: interface(event.ifindex),
                        id: event.ifindex.to_string(),
                    },
                },
            },
            rule: owner.map(|r| RuleFields {
                name: r.name.clone(),
                category: r.kind.name().to_owned(),
            }),
            vaultfw: AccessVaultfw {
                verdict: verdict.map_or_else(
                    || format!("verdict {}", event.verdict),
                    |v| v.name().to_owned(),
                ),
            },
        }
    }

    /// Its position in the access log (`event.sequence`).
    pub fn seq(&self) -> u64 {
        self.event.sequence
    }

    /// The record's time, parsed back.
    pub fn at(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.timestamp).ok()
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
            Some(path) => Sink::File(FileSink::open(ACCESS_LOG, path)?),
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

    /// Numbers the records from `sent + 1` on: `sent` is the kernel's
    /// count of events sent when this agent started, which survives
    /// restarts with the pinned maps, so a record's number never repeats
    /// one a previous run gave. Called before the first record.
    pub fn continue_after(&mut self, sent: u64) {
        debug_assert!(self.memory.is_empty());
        self.next_seq = sent + 1;
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
        debug_assert_eq!(record.seq(), self.next_seq);
        self.next_seq = record.seq() + 1;
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
    /// beyond the newest record comes from a follower of maps that were
    /// since replaced (numbering restarted after a detach): it gets
    /// everything.
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
            .filter(|r| r.seq() > after)
            .filter(|r| since.is_none_or(|s| r.at().is_none_or(|t| t >= s)))
            .take(limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        // With nothing new matching, the cursor still moves past records
        // the time filter left out: a follower never gets them later.
        let cursor = records.last().map_or(newest, AccessRecord::seq);
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
        assert_eq!(record.source.ip.to_string(), "198.51.100.7");
        assert_eq!(record.destination.ip.to_string(), "192.0.2.1");
        assert_eq!(
            (
                record.network.transport.as_str(),
                record.event.action.as_str(),
                record.vaultfw.verdict.as_str()
            ),
            ("tcp", "drop", "deny_no_match")
        );
        assert_eq!(record.network.vlan, None);
        assert_eq!(record.rule, None);
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["observer"]["ingress"]["interface"]["name"], "eth0");
        assert_eq!(
            json["event"]["type"],
            serde_json::json!(["connection", "denied"])
        );
        assert_eq!(json["source"]["port"], 40000);
    }
}
