//! The control socket's messages. A request is one line of JSON
//! `{"version":2,"command":{...}}`; a response is one line
//! `{"ok":true,"result":...}` or `{"ok":false,"error":{"kind":...,"message":...}}`.
//! New commands and fields are added, never renamed; `version` changes only
//! for an incompatible change, and the daemon refuses versions it does not
//! speak ([`parse_request`]).
//!
//! Versions: 1 is the first release's. 2 changed only `apply`: it carries
//! the policy's content ([`Command::Apply`]) instead of a path the daemon
//! read itself, which a daemon in its own mount namespace (a systemd unit's
//! PrivateTmp, ProtectHome) could not. A daemon speaks both; a version-1
//! `apply` is refused with a message saying so. A client sends each command
//! with the oldest version that has it in its current shape
//! ([`Command::version`]), so a new CLI still reads an older daemon (`show`
//! during an upgrade), and an older daemon refuses a new `apply` by its
//! version instead of half-reading it.

use serde::{Deserialize, Serialize};

use crate::policy::PolicyFormat;
use crate::policy::input::MAX_POLICY_BYTES;

/// The protocol version this build speaks (the newest).
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest protocol version this build still speaks.
pub const OLDEST_PROTOCOL_VERSION: u32 = 1;

/// Largest request line accepted, in bytes: an `apply` carries a policy
/// and a subnet map of up to [`MAX_POLICY_BYTES`] each, which JSON
/// escaping (quotes, newlines) makes longer; the CLI refuses a larger
/// request before sending it.
pub const MAX_REQUEST_BYTES: u64 = 3 * MAX_POLICY_BYTES;

/// One request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// [`PROTOCOL_VERSION`] of the client.
    pub version: u32,
    /// What to do.
    pub command: Command,
}

/// What the CLI can ask of the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum Command {
    /// The policy in force, its generation, the attachments as the kernel
    /// holds them.
    Show,
    /// Verdict counter totals.
    Stats,
    /// The rules the kernel serves, read back from the maps.
    RuleList,
    /// Adds a rule.
    RuleAdd {
        /// The rule.
        rule: RuleSpec,
        /// Refuse unless the daemon serves this generation.
        if_generation: Option<u64>,
    },
    /// Removes a rule.
    RuleRemove {
        /// The rule.
        rule: RuleSpec,
        /// Refuse unless the daemon serves this generation.
        if_generation: Option<u64>,
    },
    /// Changes `default_action` and/or `bypass`.
    Update {
        /// `"Allow"` or `"Deny"`.
        default_action: Option<String>,
        /// `"AzureServices"` or `"None"`.
        bypass: Option<String>,
        /// Refuse unless the daemon serves this generation.
        if_generation: Option<u64>,
    },
    /// Applies a whole policy, sent as its content (protocol version 2).
    /// The daemon validates it, checks that it can read every file it
    /// names, and works out what its own policy files will hold before the
    /// kernel serves it. With `confirm_within_s`, rolls back unless
    /// [`Command::Confirm`] arrives in time; the policy files are written
    /// only once confirmed.
    Apply {
        /// The policy file's path as the operator gave it, made absolute:
        /// for messages only (the daemon never opens it).
        file: String,
        /// Its format (`"native"` or `"azure_json"`), as the CLI detected it.
        format: PolicyFormat,
        /// Its text, with relative file references (`service_tags_file`)
        /// made absolute against its directory.
        text: String,
        /// For Azure JSON: the subnet map (its relative references made
        /// absolute the same way).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subnet_map: Option<SentFile>,
        /// Seconds to wait for a confirmation.
        confirm_within_s: Option<u64>,
        /// Refuse unless the daemon serves this generation.
        if_generation: Option<u64>,
    },
    /// Confirms a pending `apply --confirm-within`.
    Confirm,
    /// Removes the filter from every interface, unpins everything, and
    /// stops the daemon.
    Detach,
    /// The access log kept in memory (`vaultfw logs`): records numbered
    /// after `after` (a follower's cursor), at or after `since`.
    Logs {
        /// Only records with a larger `seq` (the previous answer's
        /// `cursor`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        /// Only records at or after this time (RFC 3339).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
        /// At most this many records (the oldest first).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
}

/// A file sent with a command: its path (for messages) and its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentFile {
    /// The path as the operator gave it, made absolute.
    pub file: String,
    /// The contents.
    pub text: String,
}

impl Command {
    /// The oldest protocol version that has this command in its current
    /// shape: what a client sends it with.
    pub fn version(&self) -> u32 {
        match self {
            Command::Apply { .. } => 2,
            _ => 1,
        }
    }
}

/// Reads one request line: a version this build speaks, and a command
/// that version has. Errors are the response to send, saying what is
/// wrong and what to do; an `apply` from a version-1 CLI (which sent a
/// path) is named as such.
pub fn parse_request(line: &str) -> Result<Request, Response> {
    let speak = |version: u32| {
        Response::error(
            ErrorKind::InvalidInput,
            format!(
                "protocol version {version} is not spoken by this daemon (it speaks \
                 {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}); use the vaultfw binary of the \
                 same release"
            ),
        )
    };
    match serde_json::from_str::<Request>(line) {
        Ok(request) if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&request.version) => {
            Err(speak(request.version))
        }
        Ok(request) if request.version < request.command.version() => Err(old_apply()),
        Ok(request) => Ok(request),
        Err(error) => {
            /// The parts of a request every version shares.
            #[derive(Deserialize)]
            struct Envelope {
                version: u32,
                command: Verb,
            }
            #[derive(Deserialize)]
            struct Verb {
                verb: String,
            }
            match serde_json::from_str::<Envelope>(line) {
                Ok(e) if e.version == 1 && e.command.verb == "apply" => Err(old_apply()),
                Ok(e) if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&e.version) => {
                    Err(speak(e.version))
                }
                _ => Err(Response::error(
                    ErrorKind::InvalidInput,
                    format!("unreadable request: {error}"),
                )),
            }
        }
    }
}

/// The answer to a version-1 `apply`.
fn old_apply() -> Response {
    Response::error(
        ErrorKind::InvalidInput,
        format!(
            "this `vaultfw apply` speaks control protocol version 1, which sent the policy \
             file's path; this daemon (version {PROTOCOL_VERSION}) takes the policy's content, \
             because it may not see your files (a systemd unit's PrivateTmp or ProtectHome). \
             Run `apply` with the vaultfw binary of the daemon's release; nothing changed"
        ),
    )
}

/// A rule as the CLI names it (the `az keyvault network-rule` options).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleSpec {
    /// `--ip-address 203.0.113.7` or a CIDR range; with several
    /// addresses, one atomic change.
    Ip {
        /// As typed (the first address).
        address: String,
        /// The other addresses, as typed (absent: none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        more: Vec<String>,
        /// `--comment` (add only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        /// `--expires-at`, RFC 3339 (the CLI turns a duration into a time;
        /// add only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<String>,
    },
    /// `--vnet-rule ID [--subnet-prefix PREFIX] [--endpoint IFACE|vlan:N]`.
    Vnet {
        /// The subnet rule's id.
        id: String,
        /// One prefix of it (add: required; remove: absent = the whole rule).
        subnet: Option<String>,
        /// The endpoint (add: required for a new rule).
        endpoint: Option<String>,
        /// `--ignore-missing-vnet-service-endpoint`: a new rule gets
        /// `ignore_missing_endpoint = true`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ignore_missing_endpoint: bool,
    },
}

/// One response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the command succeeded (an idempotent no-op succeeds).
    pub ok: bool,
    /// The command's output: the command's reply type
    /// ([`super::replies`]) as JSON ([`Response::reply`],
    /// [`Response::result_as`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why it failed (boxed: a `Response` is the `Err` of many results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<ErrorBody>>,
}

/// A failure, classified for the CLI's exit code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The class.
    pub kind: ErrorKind,
    /// What went wrong (with the value and the fix when `field`, `value`
    /// and `fix` do not give them apart).
    pub message: String,
    /// The offending flag or policy path (`--ip-address`); absent when the
    /// error names none, and from daemons before this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The offending value as given; absent when the error names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// How to fix it; absent when `message` says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl ErrorBody {
    /// The error as one sentence: `FIELD = "VALUE": MESSAGE; fix: FIX`
    /// (the parts it has), for logs and audit records.
    pub fn sentence(&self) -> String {
        let mut line = String::new();
        if let Some(field) = &self.field {
            line.push_str(field);
            if let Some(value) = &self.value {
                line.push_str(&format!(" = {value:?}"));
            }
            line.push_str(": ");
        }
        line.push_str(&self.message);
        if let Some(fix) = &self.fix {
            line.push_str(&format!("; fix: {fix}"));
        }
        line
    }
}

/// Failure classes; each maps to one exit code of the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request's values are invalid, or name a rule that does not
    /// exist (exit 2).
    InvalidInput,
    /// `--if-generation` no longer matches (exit 5).
    Conflict,
    /// The kernel refused the change (exit 4).
    KernelRefused,
    /// Anything else (exit 1).
    Internal,
}

impl Response {
    /// A success with `result`.
    pub fn ok(result: serde_json::Value) -> Self {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A success answered with `reply`, one of the [`super::replies`]
    /// types.
    pub fn reply(reply: &impl Serialize) -> Self {
        // Invariant: the reply types are plain structs with string keys,
        // which always serialize to JSON.
        Response::ok(serde_json::to_value(reply).expect("invariant: replies serialize to JSON"))
    }

    /// The result of a success read as reply type `T`: `None` for a
    /// failure, an error when the result does not have `T`'s shape (a
    /// daemon of another release).
    pub fn result_as<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Option<Result<T, serde_json::Error>> {
        let result = self.result.as_ref().filter(|_| self.ok)?;
        Some(T::deserialize(result))
    }

    /// A failure.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(Box::new(ErrorBody {
                kind,
                message: message.into(),
                field: None,
                value: None,
                fix: None,
            })),
        }
    }

    /// A refused value (`invalid_input`): the validator's field, value
    /// and fix apart, its reason as the message with `note` after it.
    pub fn refused(error: &crate::policy::PolicyError, note: &str) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(Box::new(ErrorBody {
                kind: ErrorKind::InvalidInput,
                message: format!("{}{note}", error.reason),
                field: Some(error.path.clone()),
                value: Some(error.value.clone()).filter(|v| !v.is_empty()),
                fix: Some(error.fix.clone()),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_value_carries_its_field_value_and_fix_and_old_bodies_still_read() {
        let error = crate::policy::PolicyError::new(
            "--ip-address",
            "10.1.2.3/8",
            "host bits are set",
            "give 10.0.0.0/8",
        );
        let body = Response::refused(&error, "; nothing changed")
            .error
            .expect("an error");
        assert_eq!(body.message, "host bits are set; nothing changed");
        assert_eq!(body.field.as_deref(), Some("--ip-address"));
        assert_eq!(body.value.as_deref(), Some("10.1.2.3/8"));
        assert_eq!(body.fix.as_deref(), Some("give 10.0.0.0/8"));
        // A daemon before these fields sent kind and message only.
        let old: ErrorBody =
            serde_json::from_str(r#"{"kind":"invalid_input","message":"m"}"#).expect("reads");
        assert_eq!((old.field, old.value, old.fix), (None, None, None));
        // And an error without them is written as before.
        let plain = Response::error(ErrorKind::Conflict, "stale");
        assert_eq!(
            serde_json::to_value(plain.error).expect("serializes"),
            serde_json::json!({ "kind": "conflict", "message": "stale" })
        );
    }

    #[test]
    fn requests_have_a_stable_wire_form() {
        // Unchanged since version 1: sent as version 1.
        let command = Command::RuleAdd {
            rule: RuleSpec::Ip {
                address: "203.0.113.7".into(),
                more: Vec::new(),
                comment: None,
                expires_at: None,
            },
            if_generation: Some(3),
        };
        let request = Request {
            version: command.version(),
            command,
        };
        let line = serde_json::to_string(&request).unwrap();
        assert_eq!(
            line,
            r#"{"version":1,"command":{"verb":"rule_add","rule":{"kind":"ip","address":"203.0.113.7"},"if_generation":3}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), request);
    }

    #[test]
    fn apply_carries_the_policy_content_with_version_2() {
        let command = Command::Apply {
            file: "/tmp/new.json".into(),
            format: PolicyFormat::AzureJson,
            text: "{}".into(),
            subnet_map: Some(SentFile {
                file: "/tmp/map.toml".into(),
                text: "mode = \"Audit\"\n".into(),
            }),
            confirm_within_s: None,
            if_generation: None,
        };
        let request = Request {
            version: command.version(),
            command,
        };
        let line = serde_json::to_string(&request).unwrap();
        assert_eq!(
            line,
            r#"{"version":2,"command":{"verb":"apply","file":"/tmp/new.json","format":"azure_json","text":"{}","subnet_map":{"file":"/tmp/map.toml","text":"mode = \"Audit\"\n"},"confirm_within_s":null,"if_generation":null}}"#
        );
        assert_eq!(parse_request(&line).unwrap(), request);
    }

    #[test]
    fn a_version_1_apply_of_a_path_is_refused_by_name_and_other_version_1_commands_work() {
        let old = r#"{"version":1,"command":{"verb":"apply","path":"/home/op/new.toml","confirm_within_s":null,"if_generation":null}}"#;
        let refused = parse_request(old).unwrap_err();
        let message = refused.error.unwrap().message;
        assert!(
            message.contains("protocol version 1") && message.contains("content"),
            "{message}"
        );
        // The new shape under the old version is refused the same way.
        let new_shape = r#"{"version":1,"command":{"verb":"apply","file":"/x","format":"native","text":"","confirm_within_s":null,"if_generation":null}}"#;
        assert!(
            parse_request(new_shape)
                .unwrap_err()
                .error
                .unwrap()
                .message
                .contains("protocol version 1")
        );
        assert_eq!(
            parse_request(r#"{"version":1,"command":{"verb":"show"}}"#)
                .unwrap()
                .command,
            Command::Show
        );
        let future = parse_request(r#"{"version":3,"command":{"verb":"show"}}"#).unwrap_err();
        assert!(
            future
                .error
                .unwrap()
                .message
                .contains("protocol version 3 is not spoken")
        );
        let junk = parse_request("{").unwrap_err();
        assert!(
            junk.error
                .unwrap()
                .message
                .starts_with("unreadable request")
        );
    }

    #[test]
    fn logs_requests_leave_out_what_is_not_asked() {
        let follow = Command::Logs {
            after: Some(41),
            since: None,
            limit: None,
        };
        let line = serde_json::to_string(&follow).unwrap();
        assert_eq!(line, r#"{"verb":"logs","after":41}"#);
        let bare: Command = serde_json::from_str(r#"{"verb":"logs"}"#).unwrap();
        assert_eq!(
            bare,
            Command::Logs {
                after: None,
                since: None,
                limit: None
            }
        );
    }
}
