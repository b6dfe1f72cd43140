//! The audit trail: one record per request to change the served policy —
//! a CLI `network-rule add|remove`, `update`, `apply`, `confirm`, a reload
//! of the policy file, the rollback of an unconfirmed apply at its
//! deadline, a rule's expiry — whether it was applied, changed nothing,
//! was refused or lost a race (`--if-generation`).
//!
//! A record says who asked ([`Caller`]: the peer credentials of the control
//! socket's client, or `file` / `timer`), what ([`Snapshot`]s before and
//! after: the IP rules and subnet-rule prefixes added and removed, the
//! default action and bypass before and after, every other setting that
//! changed, the generations), and how
//! it ended ([`Outcome`]). It goes to the daemon log and, with
//! `--audit-log FILE`, to that file too (as [`super::file`] writes it:
//! never through a link, 0640, whole records, reopened on SIGHUP). The
//! record's fields are in docs/logging.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value, json};

use super::ecs;
use super::file::{AUDIT_LOG, FileHealth, FileSink};
use ipnet::Ipv4Net;

use crate::policy::{Policy, shown};

/// The tracing target (`log.logger`) of audit records in the daemon log.
pub const TARGET: &str = "vaultfw::audit";

/// Who asked for a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A client of the control socket, by its credentials (`SO_PEERCRED`,
    /// taken when the connection was accepted).
    Peer {
        /// Its user id.
        uid: u32,
        /// Its group id.
        gid: u32,
        /// Its process id (as this daemon's pid namespace sees it).
        pid: Option<i32>,
        /// Its command name (`/proc/PID/comm`), when still readable.
        command: Option<String>,
    },
    /// A control-socket client whose credentials could not be read.
    UnknownPeer,
    /// The policy file (an edit, SIGHUP).
    File,
    /// A deadline: an apply not confirmed in time, a rule's `expires_at`.
    Timer,
    /// The daemon itself, at its start or stop: the rollback of an apply
    /// nobody can confirm any more (`event.reason` says which).
    Daemon,
}

impl Caller {
    /// A control-socket client with these credentials (`SO_PEERCRED`);
    /// its command name is read from `/proc/PID/comm` now, while it runs.
    pub fn peer(uid: u32, gid: u32, pid: Option<i32>) -> Self {
        let pid = pid.filter(|p| *p > 0);
        let command = pid
            .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
            .map(|c| c.trim_end().to_owned());
        Caller::Peer {
            uid,
            gid,
            pid,
            command,
        }
    }

    /// `vaultfw.caller`: `socket`, `file`, `timer` or `daemon`.
    pub fn kind(&self) -> &'static str {
        match self {
            Caller::Peer { .. } | Caller::UnknownPeer => "socket",
            Caller::File => "file",
            Caller::Timer => "timer",
            Caller::Daemon => "daemon",
        }
    }

    fn fields(&self, record: &mut Map<String, Value>) {
        ecs::insert(record, "vaultfw.caller", self.kind().into());
        if let Caller::Peer {
            uid,
            gid,
            pid,
            command,
        } = self
        {
            // ECS keeps ids as strings (keyword).
            ecs::insert(record, "user.id", uid.to_string().into());
            ecs::insert(record, "user.group.id", gid.to_string().into());
            if let Some(pid) = pid {
                ecs::insert(record, "process.pid", (*pid).into());
            }
            if let Some(command) = command {
                ecs::insert(record, "process.name", command.clone().into());
            }
        }
    }
}

/// What the daemon served at one moment, as far as an audit record tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The generation the kernel served.
    pub generation: u64,
    /// IP rules, sorted (as the policy holds them: a snapshot of 100,000
    /// rules is one copy, and only the rules a change adds or removes are
    /// written out, as `198.51.100.7`, `203.0.113.0/24`).
    pub ip_rules: Vec<Ipv4Net>,
    /// Subnet-rule prefixes: (rule id, prefix, endpoint).
    pub subnet_prefixes: BTreeSet<(String, String, String)>,
    /// `Allow` or `Deny`.
    pub default_action: &'static str,
    /// `AzureServices` or `None`.
    pub bypass: &'static str,
    /// Every other top-level setting of the policy (`mode`, `ipv6`,
    /// `public_network_access`, `private_endpoints`, `data_plane`,
    /// `limits`, `trusted_services`, ...) as the policy serializes it, the
    /// service-tags prefixes by their count: a change of any of them is
    /// listed in the record, so no change that opens the data plane goes
    /// unrecorded.
    pub settings: BTreeMap<String, Value>,
}

/// The keys of the serialized policy that [`Snapshot`] records in fields
/// of their own.
const OWN_FIELDS: [&str; 4] = [
    "ip_rules",
    "virtual_network_rules",
    "default_action",
    "bypass",
];

/// The rules of sorted `a` that sorted `b` lacks, as written, in text
/// order (one merge pass).
fn only_in(a: &[Ipv4Net], b: &[Ipv4Net]) -> Vec<String> {
    let key = |n: &Ipv4Net| (u32::from(n.addr()), n.prefix_len());
    let mut b = b.iter().peekable();
    let mut out: Vec<String> = Vec::new();
    for net in a {
        while b.next_if(|x| key(x) < key(net)).is_some() {}
        if b.next_if(|x| key(x) == key(net)).is_none() {
            out.push(shown(*net));
        }
    }
    out.sort();
    out
}

/// [`Snapshot::settings`] of `policy`.
fn settings(policy: &Policy) -> BTreeMap<String, Value> {
    // Serialized without the rules recorded in fields of their own (at
    // 100,000 IP rules, serializing them is most of a CLI change's time).
    // Every field is named, so a new setting cannot be left out.
    let Policy {
        default_action,
        bypass,
        mode,
        ipv6,
        limits,
        ip_rules: _,
        ipv6_rules,
        virtual_network_rules: _,
        trusted_services,
        data_plane,
        public_network_access,
        private_endpoints,
        defaults,
    } = policy;
    let view = Policy {
        default_action: *default_action,
        bypass: *bypass,
        mode: *mode,
        ipv6: *ipv6,
        limits: limits.clone(),
        ip_rules: Vec::new(),
        ipv6_rules: ipv6_rules.clone(),
        virtual_network_rules: Vec::new(),
        trusted_services: trusted_services.clone(),
        data_plane: data_plane.clone(),
        public_network_access: *public_network_access,
        private_endpoints: private_endpoints.clone(),
        defaults: defaults.clone(),
    };
    let Ok(Value::Object(mut map)) = serde_json::to_value(&view) else {
        return BTreeMap::new();
    };
    map.retain(|key, _| !OWN_FIELDS.contains(&key.as_str()));
    if let Some(Value::Object(trusted)) = map.get_mut("trusted_services")
        && let Some(Value::Array(prefixes)) = trusted.get("prefixes")
    {
        let count = prefixes.len();
        trusted.insert("prefixes".to_owned(), json!(count));
    }
    map.into_iter().collect()
}

impl Snapshot {
    /// `policy` served as `generation`.
    pub fn of(policy: &Policy, generation: u64) -> Self {
        Snapshot {
            generation,
            ip_rules: policy.ip_rules.iter().map(|r| r.network).collect(),
            subnet_prefixes: policy
                .virtual_network_rules
                .iter()
                .flat_map(|r| {
                    r.address_prefixes
                        .iter()
                        .map(|p| (r.id.clone(), shown(*p), r.endpoint.to_string()))
                })
                .collect(),
            default_action: policy.default_action.name(),
            bypass: policy.bypass.name(),
            settings: settings(policy),
        }
    }
}

/// How a change request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel serves the change.
    Applied,
    /// Nothing needed changing (already so).
    Unchanged,
    /// Refused (invalid, over capacity, the disk or the kernel refused):
    /// nothing changed. The error as the caller got it.
    Refused(String),
    /// Refused because the daemon had moved on (`--if-generation`, an
    /// apply awaiting confirmation): nothing changed.
    Conflict(String),
}

impl Outcome {
    /// `vaultfw.outcome`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Refused(_) => "refused",
            Outcome::Conflict(_) => "conflict",
        }
    }

    fn error(&self) -> Option<&str> {
        match self {
            Outcome::Refused(e) | Outcome::Conflict(e) => Some(e),
            Outcome::Applied | Outcome::Unchanged => None,
        }
    }
}

/// One change request, as recorded.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    /// `event.action`: `network-rule-add`, `network-rule-remove`,
    /// `update`, `apply`, `confirm`, `reload`, `rollback`, `expiry`.
    pub action: &'a str,
    /// Who asked.
    pub caller: &'a Caller,
    /// What caused it, when the action alone does not say (`SIGHUP`,
    /// `policy file changed`).
    pub cause: Option<&'a str>,
    /// The request as received (control-socket requests; an `apply`'s
    /// policy text left out).
    pub request: Option<Value>,
    /// Served before.
    pub before: &'a Snapshot,
    /// Served after.
    pub after: &'a Snapshot,
    /// How it ended.
    pub outcome: Outcome,
}

impl Entry<'_> {
    /// The record's fields beyond `@timestamp`, `log.*` and `message`.
    pub fn body(&self) -> Map<String, Value> {
        let (before, after) = (self.before, self.after);
        let success = matches!(self.outcome, Outcome::Applied | Outcome::Unchanged);
        let mut record = ecs::object([
            ("event.kind", json!("event")),
            ("event.category", json!(["configuration"])),
            ("event.type", json!(["change"])),
            ("event.action", json!(self.action)),
            (
                "event.outcome",
                json!(if success { "success" } else { "failure" }),
            ),
            ("event.dataset", json!("vaultfw.audit")),
            ("vaultfw.outcome", json!(self.outcome.name())),
            ("vaultfw.generation.before", json!(before.generation)),
            ("vaultfw.generation.after", json!(after.generation)),
            (
                "vaultfw.ip_rules.added",
                json!(only_in(&after.ip_rules, &before.ip_rules)),
            ),
            (
                "vaultfw.ip_rules.removed",
                json!(only_in(&before.ip_rules, &after.ip_rules)),
            ),
            (
                "vaultfw.subnet_rules.added",
                prefixes(after.subnet_prefixes.difference(&before.subnet_prefixes)),
            ),
            (
                "vaultfw.subnet_rules.removed",
                prefixes(before.subnet_prefixes.difference(&after.subnet_prefixes)),
            ),
            (
                "vaultfw.default_action.before",
                json!(before.default_action),
            ),
            ("vaultfw.default_action.after", json!(after.default_action)),
            ("vaultfw.bypass.before", json!(before.bypass)),
            ("vaultfw.bypass.after", json!(after.bypass)),
            ("vaultfw.settings_changed", settings_changed(before, after)),
        ]);
        self.caller.fields(&mut record);
        if let Some(cause) = self.cause {
            ecs::insert(&mut record, "event.reason", cause.into());
        }
        if let Some(request) = &self.request {
            ecs::insert(&mut record, "vaultfw.request", request.clone());
        }
        if let Some(error) = self.outcome.error() {
            ecs::insert(&mut record, "error.message", error.into());
        }
        record
    }

    /// The record's `message`.
    pub fn message(&self) -> String {
        format!("{} {}", self.action, self.outcome.name())
    }
}

fn prefixes<'a>(set: impl Iterator<Item = &'a (String, String, String)>) -> Value {
    set.map(|(id, prefix, endpoint)| json!({"id": id, "subnet": prefix, "endpoint": endpoint}))
        .collect::<Vec<_>>()
        .into()
}

/// Where audit records go: always the daemon log, and the `--audit-log`
/// file when given.
#[derive(Debug, Default)]
pub struct AuditLog {
    file: Option<FileSink>,
}

impl AuditLog {
    /// Records to the daemon log, and to `path` when given (opened now:
    /// a link or a directory at the path refuses the start).
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        Ok(AuditLog {
            file: path.map(|p| FileSink::open(AUDIT_LOG, p)).transpose()?,
        })
    }

    /// Records `entry`: one line in the file (when there is one) and one
    /// record in the daemon log. Refusals log at `warn`, the rest at
    /// `info`.
    pub fn record(&mut self, entry: &Entry<'_>) {
        let body = entry.body();
        let message = entry.message();
        let refused = entry.outcome.error().is_some();
        if let Some(file) = &mut self.file {
            let level = if refused { "warn" } else { "info" };
            let record = ecs::record(level, TARGET, &message, body.clone());
            match serde_json::to_vec(&record) {
                Ok(mut line) => {
                    line.push(b'\n');
                    file.push(line);
                }
                Err(error) => tracing::error!(%error, "cannot serialize an audit record"),
            }
        }
        let body = Value::Object(body);
        if refused {
            tracing::warn!(target: TARGET, ecs = %body, "{message}");
        } else {
            tracing::info!(target: TARGET, ecs = %body, "{message}");
        }
    }

    /// Opens the file again at its path (after logrotate moved it away).
    pub fn reopen(&mut self) {
        if let Some(file) = &mut self.file {
            file.reopen();
        }
    }

    /// Writes records held back by failed writes and logs how writing the
    /// file went (once per counter interval).
    pub fn retry_and_report(&mut self) {
        if let Some(file) = &mut self.file {
            file.flush();
            file.report();
        }
    }

    /// How writing the file goes (`None`: no file).
    pub fn file_health(&self) -> Option<FileHealth> {
        self.file.as_ref().map(FileSink::health)
    }
}

/// The settings whose value differs between `before` and `after`, as
/// `[{"name", "before", "after"}]` (`null` where one side lacks it).
fn settings_changed(before: &Snapshot, after: &Snapshot) -> Value {
    let names: BTreeSet<&String> = before
        .settings
        .keys()
        .chain(after.settings.keys())
        .collect();
    names
        .into_iter()
        .filter(|name| before.settings.get(*name) != after.settings.get(*name))
        .map(|name| {
            json!({
                "name": name,
                "before": before.settings.get(name),
                "after": after.settings.get(name),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        crate::policy::parse_toml(text).expect("valid").policy
    }

    /// A change that opens the data plane without touching a rule (audit
    /// mode, IPv6 allowed, a wider private endpoint) is named in the record.
    #[test]
    fn a_record_lists_every_other_setting_that_changed_with_both_values() {
        let before = Snapshot::of(&policy("default_action = \"Deny\"\n"), 1);
        let after = Snapshot::of(
            &policy(
                "default_action = \"Deny\"\nmode = \"Audit\"\nipv6 = \"Allow\"\n\
                 [[private_endpoints]]\ninterface = \"eth1\"\nallowed_prefixes = [\"10.0.0.0/8\"]\n",
            ),
            2,
        );
        let entry = Entry {
            action: "apply",
            caller: &Caller::File,
            cause: None,
            request: None,
            before: &before,
            after: &after,
            outcome: Outcome::Applied,
        };
        let body = Value::Object(entry.body());
        let changed = body["vaultfw"]["settings_changed"]
            .as_array()
            .expect("a list of changed settings");
        let names: Vec<&str> = changed.iter().filter_map(|c| c["name"].as_str()).collect();
        assert_eq!(names, ["ipv6", "mode", "private_endpoints"], "{body:#}");
        assert_eq!(changed[1]["before"], "Enforce");
        assert_eq!(changed[1]["after"], "Audit");
        assert!(changed[2]["after"].to_string().contains("10.0.0.0/8"));
        let same = Entry {
            after: &before,
            ..entry
        };
        assert_eq!(
            Value::Object(same.body())["vaultfw"]["settings_changed"],
            json!([])
        );
    }

    #[test]
    fn a_record_lists_the_rules_added_and_removed_and_the_caller() {
        let before = Snapshot::of(
            &policy(
                "default_action = \"Deny\"\nip_rules = [\"198.51.100.7\", \"203.0.113.0/24\"]\n",
            ),
            4,
        );
        let after = Snapshot::of(
            &policy("default_action = \"Allow\"\nip_rules = [\"198.51.100.7\", \"192.0.2.9\"]\n"),
            5,
        );
        let caller = Caller::Peer {
            uid: 1000,
            gid: 100,
            pid: Some(42),
            command: Some("vaultfw".into()),
        };
        let entry = Entry {
            action: "update",
            caller: &caller,
            cause: None,
            request: Some(json!({"verb": "update"})),
            before: &before,
            after: &after,
            outcome: Outcome::Applied,
        };
        let body = Value::Object(entry.body());
        assert_eq!(body["user"]["id"], "1000");
        assert_eq!(body["user"]["group"]["id"], "100");
        assert_eq!(body["process"]["pid"], 42);
        assert_eq!(body["process"]["name"], "vaultfw");
        assert_eq!(body["vaultfw"]["ip_rules"]["added"], json!(["192.0.2.9"]));
        assert_eq!(
            body["vaultfw"]["ip_rules"]["removed"],
            json!(["203.0.113.0/24"])
        );
        assert_eq!(
            body["vaultfw"]["default_action"],
            json!({"before": "Deny", "after": "Allow"})
        );
        assert_eq!(
            body["vaultfw"]["generation"],
            json!({"before": 4, "after": 5})
        );
        assert_eq!(body["event"]["outcome"], "success");
        assert!(body.get("error").is_none());

        let refused = Entry {
            outcome: Outcome::Refused("no".into()),
            caller: &Caller::Timer,
            ..entry
        };
        let body = Value::Object(refused.body());
        assert_eq!(body["event"]["outcome"], "failure");
        assert_eq!(body["vaultfw"]["outcome"], "refused");
        assert_eq!(body["vaultfw"]["caller"], "timer");
        assert_eq!(body["error"]["message"], "no");
        assert!(body.get("user").is_none());
    }
}
