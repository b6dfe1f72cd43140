//! Where the daemon log goes, and in what form (`vaultfw run
//! --log-format`):
//!
//! - `json` (the default, unless stderr is the journal): one [`super::ecs`]
//!   record per line on stdout — `@timestamp`, `log.level`, `log.logger`,
//!   `message`, then the event's fields: names with a dot are ECS names
//!   and nest (`event.action`), `error` is `error.message`, every other
//!   field is the agent's own and goes under `vaultfw` (`vaultfw.cause`); a
//!   field named [`RECORD_FIELD`] holds a JSON object merged in whole.
//! - `journald` (the default when stderr is the journal: `JOURNAL_STREAM`
//!   names stderr's device and inode, as systemd sets it for a unit):
//!   native journal entries, `PRIORITY` from the level
//!   ([`journald_priorities`]), fields as `VAULTFW_<NAME>`.
//! - `text`: human-readable lines on stdout.
//!
//! `RUST_LOG` overrides the `info` default level in every form.

use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::ecs::{self, RECORD_FIELD};

/// The form of the daemon log (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// ECS JSON lines on stdout.
    Json,
    /// Human-readable lines on stdout.
    Text,
    /// Native journal entries.
    Journald,
}

impl LogFormat {
    /// What to write when `--log-format` is not given: journal entries
    /// when stderr is the journal, JSON lines otherwise.
    pub fn detect() -> Self {
        if stderr_is_journal() {
            LogFormat::Journald
        } else {
            LogFormat::Json
        }
    }
}

/// Whether stderr is connected to the journal: `JOURNAL_STREAM` (`DEV:INO`)
/// names stderr's device and inode.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    journal_stream_is(&stream, stderr.dev(), stderr.ino())
}

/// Whether a `JOURNAL_STREAM` value names device `dev`, inode `ino`.
fn journal_stream_is(value: &str, dev: u64, ino: u64) -> bool {
    value
        .split_once(':')
        .is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

/// Journal priorities of the levels: error 3, warn 4, info 6, debug 7,
/// trace 7 (`journalctl -p err` shows the errors, `-p info` everything
/// but debugging).
pub fn journald_priorities() -> PriorityMappings {
    PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// Installs the daemon log's subscriber in `format`. A journal that
/// cannot be reached falls back to JSON lines (and says so).
pub fn init(format: LogFormat) {
    // `info`, and every XDP program record: the program itself filters
    // those by `--bpf-log-level`. `RUST_LOG` overrides both.
    let filter = || {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            EnvFilter::new(format!(
                "info,{}",
                crate::dataplane::bpf_log::BPF_LOG_DIRECTIVE
            ))
        })
    };
    let registry = tracing_subscriber::registry();
    match format {
        LogFormat::Json => registry
            .with(EcsJsonLayer::stdout().with_filter(filter()))
            .init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stdout)
                    // Colours for a terminal only: a file or pipe gets
                    // plain text, no escape codes.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                    .with_filter(filter()),
            )
            .init(),
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(journal) => registry
                .with(
                    journal
                        .with_priority_mappings(journald_priorities())
                        .with_field_prefix(Some("VAULTFW".into()))
                        .with_syslog_identifier("vaultfw".into())
                        .with_filter(filter()),
                )
                .init(),
            Err(error) => {
                registry
                    .with(EcsJsonLayer::stdout().with_filter(filter()))
                    .init();
                tracing::warn!(%error, "cannot reach the journal; logging JSON lines to stdout");
            }
        },
    }
}

/// Writes each event as one ECS JSON line to what `W` makes (stdout for
/// the daemon).
pub struct EcsJsonLayer<W = fn() -> std::io::Stdout> {
    make_writer: W,
}

impl EcsJsonLayer {
    /// Lines on stdout.
    pub fn stdout() -> Self {
        EcsJsonLayer {
            make_writer: std::io::stdout,
        }
    }
}

impl<W: for<'a> MakeWriter<'a> + 'static> EcsJsonLayer<W> {
    /// Lines to the writers `make_writer` makes (tests capture them).
    pub fn new(make_writer: W) -> Self {
        EcsJsonLayer { make_writer }
    }
}

impl<S: Subscriber, W: for<'a> MakeWriter<'a> + 'static> Layer<S> for EcsJsonLayer<W> {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = match serde_json::to_vec(&to_record(event)) {
            Ok(line) => line,
            Err(_) => return,
        };
        line.push(b'\n');
        // One write per line: lines never interleave with access-log
        // records on stdout.
        let mut out = self.make_writer.make_writer();
        let _ = out.write_all(&line).and_then(|()| out.flush());
    }
}

/// The record of `event`.
fn to_record(event: &Event<'_>) -> Value {
    let mut fields = Fields::default();
    event.record(&mut fields);
    let meta = event.metadata();
    let mut body = fields.body;
    if let Some(merged) = fields.merged {
        ecs::merge(&mut body, merged);
    }
    ecs::record(
        level_name(*meta.level()),
        meta.target(),
        &fields.message,
        body,
    )
}

/// `log.level` of a tracing level.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// An event's fields, placed by name.
#[derive(Default)]
struct Fields {
    message: String,
    body: Map<String, Value>,
    merged: Option<Map<String, Value>>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => {
                self.message = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                }
            }
            RECORD_FIELD => match value {
                Value::String(text) => match serde_json::from_str(&text) {
                    Ok(Value::Object(object)) => self.merged = Some(object),
                    _ => ecs::insert(&mut self.body, "vaultfw.ecs", Value::String(text)),
                },
                other => ecs::insert(&mut self.body, "vaultfw.ecs", other),
            },
            "error" => ecs::insert(&mut self.body, "error.message", value),
            name if name.contains('.') => ecs::insert(&mut self.body, name, value),
            name => ecs::insert(&mut self.body, &format!("vaultfw.{name}"), value),
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn levels_map_to_journal_priorities_error_3_warn_4_info_6_debug_7() {
        let m = journald_priorities();
        let digit = |p: Priority| char::from(p as u8);
        assert_eq!(
            [
                digit(m.error),
                digit(m.warn),
                digit(m.info),
                digit(m.debug),
                digit(m.trace)
            ],
            ['3', '4', '6', '7', '7']
        );
    }

    #[test]
    fn journal_stream_must_name_stderrs_device_and_inode() {
        assert!(journal_stream_is("8:12345", 8, 12345));
        assert!(!journal_stream_is("8:12345", 8, 12346));
        assert!(!journal_stream_is("garbage", 8, 12345));
        assert!(!journal_stream_is("", 0, 0));
    }

    /// Records events into a vector instead of stdout.
    struct Capture(Arc<Mutex<Vec<Value>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            self.0.lock().unwrap().push(to_record(event));
        }
    }

    #[test]
    fn fields_nest_by_their_ecs_names_and_the_agents_own_go_under_vaultfw() {
        let records = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&records)));
        tracing::subscriber::with_default(subscriber, || {
            let body = serde_json::json!({"event": {"action": "reload"}, "vaultfw": {"rules": ["a", "b"]}});
            tracing::warn!(
                target: "vaultfw::test",
                cause = "SIGHUP",
                generation = 7u64,
                source.ip = "198.51.100.7",
                error = "bad",
                ecs = %body,
                "policy {} refused",
                "reload"
            );
        });
        let records = records.lock().unwrap();
        let r = &records[0];
        assert_eq!(r["message"], "policy reload refused");
        assert_eq!(r["log"]["level"], "warn");
        assert_eq!(r["log"]["logger"], "vaultfw::test");
        assert!(r["@timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(r["vaultfw"]["cause"], "SIGHUP");
        assert_eq!(r["vaultfw"]["generation"], 7);
        assert_eq!(r["vaultfw"]["rules"], serde_json::json!(["a", "b"]));
        assert_eq!(r["source"]["ip"], "198.51.100.7");
        assert_eq!(r["error"]["message"], "bad");
        assert_eq!(r["event"]["action"], "reload");
    }
}
