//! The control socket's messages. A request is one line of JSON
//! `{"version":1,"command":{...}}`; a response is one line
//! `{"ok":true,"result":...}` or `{"ok":false,"error":{"kind":...,"message":...}}`.
//! New commands and fields are added, never renamed; `version` changes only
//! for an incompatible change, and the daemon refuses versions it does not
//! speak.

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

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
    /// Applies the policy file at `path` (read by the daemon). With
    /// `confirm_within_s`, rolls back unless [`Command::Confirm`] arrives in
    /// time; the policy file is written only once confirmed.
    Apply {
        /// Absolute path of the new policy file.
        path: String,
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

/// A rule as the CLI names it (the `az keyvault network-rule` options).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleSpec {
    /// `--ip-address 203.0.113.7` or a CIDR range.
    Ip {
        /// As typed.
        address: String,
    },
    /// `--vnet-rule ID [--subnet PREFIX] [--endpoint IFACE|vlan:N]`.
    Vnet {
        /// The subnet rule's id.
        id: String,
        /// One prefix of it (add: required; remove: absent = the whole rule).
        subnet: Option<String>,
        /// The endpoint (add: required for a new rule).
        endpoint: Option<String>,
    },
}

/// One response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the command succeeded (an idempotent no-op succeeds).
    pub ok: bool,
    /// The command's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// A failure, classified for the CLI's exit code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The class.
    pub kind: ErrorKind,
    /// What went wrong, the value, and the fix.
    pub message: String,
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

    /// A failure.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(ErrorBody {
                kind,
                message: message.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let request = Request {
            version: PROTOCOL_VERSION,
            command: Command::RuleAdd {
                rule: RuleSpec::Ip {
                    address: "203.0.113.7".into(),
                },
                if_generation: Some(3),
            },
        };
        let line = serde_json::to_string(&request).unwrap();
        assert_eq!(
            line,
            r#"{"version":1,"command":{"verb":"rule_add","rule":{"kind":"ip","address":"203.0.113.7"},"if_generation":3}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), request);
    }

    #[test]
    fn logs_requests_leave_out_what_is_not_asked() {
        let follow = Command::Logs { after: Some(41), since: None, limit: None };
        let line = serde_json::to_string(&follow).unwrap();
        assert_eq!(line, r#"{"verb":"logs","after":41}"#);
        let bare: Command = serde_json::from_str(r#"{"verb":"logs"}"#).unwrap();
        assert_eq!(bare, Command::Logs { after: None, since: None, limit: None });
    }
}
