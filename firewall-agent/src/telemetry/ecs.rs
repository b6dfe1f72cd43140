//! The one record schema every log line of the agent follows: the daemon
//! log, the access log and the audit trail (docs/logging.md lists every
//! field). Field names are the Elastic Common Schema's, written as nested
//! objects (`{"event":{"action":...}}`, what Filebeat's ECS templates
//! emit); the agent's own fields live under `vaultfw`. Lists are JSON
//! arrays.
//!
//! Records with structure beyond flat values (the audit trail's rule
//! lists, the counter lines' tables) reach the daemon log as one tracing
//! field named [`RECORD_FIELD`] holding the record's JSON object; the log
//! layer ([`super::logging`]) merges it into the line.

use serde_json::{Map, Value};
use std::time::SystemTime;

/// The tracing field that carries a JSON object to merge into the record.
pub const RECORD_FIELD: &str = "ecs";

/// `@timestamp`: RFC 3339, UTC, microseconds.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

/// Sets `path` (dot-separated: `event.action`) in `record` to `value`,
/// creating the objects on the way. A value already at a prefix of the
/// path that is not an object is replaced by one.
pub fn insert(record: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut here = record;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            here.insert(part.to_owned(), value);
            return;
        }
        let next = here
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        here = next.as_object_mut().expect("made an object just above");
    }
}

/// Merges `from` into `into`, objects key by key (deep), other values
/// replaced.
pub fn merge(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(here)), Value::Object(there)) => merge(here, there),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// A whole record: `@timestamp` (now), `log.level`, `log.logger`,
/// `message`, then `body`'s fields.
pub fn record(level: &str, logger: &str, message: &str, body: Map<String, Value>) -> Value {
    let mut record = Map::new();
    record.insert("@timestamp".into(), timestamp(SystemTime::now()).into());
    insert(&mut record, "log.level", level.into());
    insert(&mut record, "log.logger", logger.into());
    record.insert("message".into(), message.into());
    merge(&mut record, body);
    Value::Object(record)
}

/// A JSON object from `(dotted path, value)` pairs.
pub fn object<const N: usize>(fields: [(&str, Value); N]) -> Map<String, Value> {
    let mut record = Map::new();
    for (path, value) in fields {
        insert(&mut record, path, value);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_paths_become_nested_objects_and_merge_deeply() {
        let mut record = object([
            ("event.action", json!("reload")),
            ("event.outcome", json!("success")),
            ("source.ip", json!("198.51.100.7")),
        ]);
        merge(
            &mut record,
            object([
                ("event.kind", json!("event")),
                ("vaultfw.generation", json!(3)),
            ]),
        );
        assert_eq!(
            Value::Object(record),
            json!({
                "event": {"action": "reload", "outcome": "success", "kind": "event"},
                "source": {"ip": "198.51.100.7"},
                "vaultfw": {"generation": 3},
            })
        );
    }
}
