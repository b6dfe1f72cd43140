//! The output contract of `--output json` (docs/output.md), the same for
//! every verb:
//!
//! - success: the verb's document with two keys in front,
//!   `{"ok":true,"verb":"show",...}` ([`print_success`]);
//! - failure: `{"ok":false,"verb":"show","error":{...},"errors":[...],"exit_code":N}`
//!   ([`ErrorDoc`]), whether the CLI, the daemon or the policy validator
//!   refused; `error` is the first of `errors` (`validate` may list
//!   several).
//!
//! Streams (`logs`, `stats --watch`, `check`) print JSON lines, one record
//! a line; their failures are the same error document. With `--output
//! table` a failure is `vaultfw: MESSAGE` on stderr.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::OutputFormat;
use crate::control::protocol::{ErrorBody, ErrorKind};
use crate::exit::Failure;
use crate::policy::{LoadError, PolicyError};

/// One error: its class, what went wrong, and where known the offending
/// field, its value and the fix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The class; says the exit code (`"invalid_input"`: 2, ...).
    pub code: Failure,
    /// What went wrong (with the value and the fix when they are not
    /// given apart).
    pub message: String,
    /// The offending field: a policy path (`ip_rules[2]`) or a flag
    /// (`--iface`); `null` when the error names none.
    pub field: Option<String>,
    /// The offending value as given; `null` when the error names none.
    pub value: Option<Value>,
    /// How to fix it; `null` when `message` says it.
    pub fix: Option<String>,
}

impl ErrorDetail {
    /// An error that is one sentence.
    pub fn new(code: Failure, message: impl Into<String>) -> Self {
        ErrorDetail {
            code,
            message: message.into(),
            field: None,
            value: None,
            fix: None,
        }
    }

    /// One error of policy validation (its `reason` becomes `message`).
    pub fn field(error: &PolicyError) -> Self {
        ErrorDetail {
            code: Failure::InvalidInput,
            message: error.reason.clone(),
            field: Some(error.path.clone()),
            // An error about a whole field (a count over its limit) has no value.
            value: (!error.value.is_empty()).then(|| Value::String(error.value.clone())),
            fix: Some(error.fix.clone()),
        }
    }

    /// Why a policy file could not be loaded: one error per refused value,
    /// or the unreadable file.
    pub fn load(error: &LoadError) -> Vec<Self> {
        match error {
            LoadError::Invalid { errors, .. } => errors.0.iter().map(ErrorDetail::field).collect(),
            LoadError::Io { path, source } => vec![ErrorDetail {
                code: Failure::InvalidInput,
                message: format!("cannot read the policy file: {source}"),
                field: Some("file".to_owned()),
                value: Some(Value::String(path.display().to_string())),
                fix: Some("give the path of a readable policy file".to_owned()),
            }],
        }
    }

    /// The daemon's refusal (with its field, value and fix when it gave
    /// them).
    pub fn daemon(error: &ErrorBody) -> Self {
        ErrorDetail {
            code: failure_of(error.kind),
            message: error.message.clone(),
            field: error.field.clone(),
            value: error.value.clone().map(Value::String),
            fix: error.fix.clone(),
        }
    }
}

/// The failure class of a daemon's error kind.
pub fn failure_of(kind: ErrorKind) -> Failure {
    match kind {
        ErrorKind::InvalidInput => Failure::InvalidInput,
        ErrorKind::Conflict => Failure::Conflict,
        ErrorKind::KernelRefused => Failure::KernelRefused,
        ErrorKind::Internal => Failure::Internal,
    }
}

/// The error document of `--output json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDoc {
    /// Always false.
    pub ok: bool,
    /// The verb (`"network-rule add"`, `"show"`, ...).
    pub verb: String,
    /// The first (often the only) error.
    pub error: ErrorDetail,
    /// Every error, the first included.
    pub errors: Vec<ErrorDetail>,
    /// The process's exit code (the first error's class).
    pub exit_code: u8,
}

impl ErrorDoc {
    /// The document for `errors` (at least one).
    pub fn new(verb: &str, errors: Vec<ErrorDetail>) -> Self {
        let error = errors
            .first()
            .cloned()
            .unwrap_or_else(|| ErrorDetail::new(Failure::Internal, "unknown error"));
        ErrorDoc {
            ok: false,
            verb: verb.to_owned(),
            exit_code: error.code.exit_code(),
            error,
            errors,
        }
    }

    /// As JSON.
    pub fn to_value(&self) -> Value {
        // Invariant: a struct of strings, numbers and options.
        serde_json::to_value(self).expect("invariant: the error document serializes")
    }
}

/// The success document: `ok`, `verb`, then the verb's own keys.
#[derive(Serialize)]
struct Success<'a, T: Serialize> {
    ok: bool,
    verb: &'a str,
    #[serde(flatten)]
    document: &'a T,
}

/// `document` (a JSON object) with `"ok":true` and `"verb"` in front.
pub fn success_value(verb: &str, document: &impl Serialize) -> Value {
    // Invariant: the documents are structs or objects with string keys.
    serde_json::to_value(Success {
        ok: true,
        verb,
        document,
    })
    .expect("invariant: documents serialize to JSON objects")
}

/// `document` with `"ok":true` and `"verb"` in front, as one line (for
/// the JSON lines of `stats --watch`).
pub fn success_line(verb: &str, document: &impl Serialize) -> String {
    // serde_json keeps a struct's field order only when it writes the
    // struct itself (a `Value` sorts its keys).
    serde_json::to_string(&Success {
        ok: true,
        verb,
        document,
    })
    .expect("invariant: documents serialize to JSON objects")
}

/// Prints a success: the JSON document, or `table` for people. Exit 0.
pub fn print_success(
    output: OutputFormat,
    verb: &str,
    document: &impl Serialize,
    table: impl FnOnce(),
) -> ExitCode {
    match output {
        OutputFormat::Json => {
            let pretty = serde_json::to_string_pretty(&Success {
                ok: true,
                verb,
                document,
            })
            .expect("invariant: documents serialize to JSON objects");
            println!("{pretty}");
        }
        OutputFormat::Table => table(),
    }
    ExitCode::SUCCESS
}

/// Prints a failure (the error document on stdout, or `vaultfw: MESSAGE`
/// lines on stderr) and returns its exit code.
pub fn print_failure(output: OutputFormat, verb: &str, errors: Vec<ErrorDetail>) -> ExitCode {
    let doc = ErrorDoc::new(verb, errors);
    match output {
        OutputFormat::Json => {
            // Written from the struct: `ok` first, as in a success.
            let pretty = serde_json::to_string_pretty(&doc)
                .expect("invariant: the error document serializes");
            println!("{pretty}");
        }
        OutputFormat::Table => {
            for error in &doc.errors {
                eprintln!("vaultfw: {}", human(error));
            }
        }
    }
    ExitCode::from(doc.exit_code)
}

/// One failure (see [`print_failure`]).
pub fn fail(output: OutputFormat, verb: &str, error: ErrorDetail) -> ExitCode {
    print_failure(output, verb, vec![error])
}

/// An error as one line for people: the field, value and fix spelled out.
fn human(error: &ErrorDetail) -> String {
    let mut line = String::new();
    if let Some(field) = &error.field {
        line.push_str(field);
        if let Some(value) = &error.value {
            let shown = value
                .as_str()
                .map_or_else(|| value.to_string(), |s| format!("{s:?}"));
            line.push_str(&format!(" = {shown}"));
        }
        line.push_str(": ");
    }
    line.push_str(&error.message);
    if let Some(fix) = &error.fix {
        line.push_str(&format!("; fix: {fix}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_puts_ok_and_verb_before_the_documents_own_keys() {
        let line = success_line("show", &serde_json::json!({ "generation": 3 }));
        assert_eq!(line, r#"{"ok":true,"verb":"show","generation":3}"#);
        assert_eq!(
            success_value("show", &serde_json::json!({ "generation": 3 }))["generation"],
            3
        );
    }

    #[test]
    fn an_error_document_has_every_key_and_the_first_errors_exit_code() {
        let doc = ErrorDoc::new(
            "update",
            vec![
                ErrorDetail::new(Failure::Conflict, "stale"),
                ErrorDetail::new(Failure::InvalidInput, "also"),
            ],
        );
        let detail = |code: &str, message: &str| serde_json::json!({ "code": code, "message": message, "field": null, "value": null, "fix": null });
        assert_eq!(
            doc.to_value(),
            serde_json::json!({
                "ok": false, "verb": "update",
                "error": detail("conflict", "stale"),
                "errors": [detail("conflict", "stale"), detail("invalid_input", "also")],
                "exit_code": 5,
            })
        );
    }

    #[test]
    fn a_field_error_reads_as_field_value_message_and_fix_for_people() {
        let mut error = ErrorDetail::new(Failure::InvalidInput, "not an address");
        error.field = Some("ip_rules[0]".into());
        error.value = Some(Value::String("x".into()));
        error.fix = Some("give an IPv4 address".into());
        assert_eq!(
            human(&error),
            "ip_rules[0] = \"x\": not an address; fix: give an IPv4 address"
        );
    }

    #[test]
    fn a_field_error_without_a_value_shows_no_empty_value() {
        let error = ErrorDetail::field(&PolicyError::new(
            "ip_rules",
            "",
            "200 IP rules exceed the limit of 127",
            "remove 73 rules",
        ));
        assert_eq!(
            human(&error),
            "ip_rules: 200 IP rules exceed the limit of 127; fix: remove 73 rules"
        );
    }
}
