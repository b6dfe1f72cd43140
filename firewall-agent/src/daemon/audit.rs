//! The daemon's side of the audit trail: which requests are recorded, and
//! the record of each, made from what was served before and after it
//! (`telemetry::audit` writes it). Exactly one record per request: the
//! steps a request takes inside (a rollback that a late `confirm`
//! triggers, the daemon's own write-back of the policy file) add none.

use serde_json::Value;

use crate::control::protocol::{Command, ErrorKind, Response};
use crate::telemetry::audit::{Caller, Entry, Outcome, Snapshot};

use super::state::Daemon;

/// The `event.action` of a control-socket command that asks for a change,
/// and the request as recorded (an `apply`'s policy text left out: the
/// rules it adds and removes are recorded instead). `None` for commands
/// that only read.
pub(super) fn change_request(command: &Command) -> Option<(&'static str, Value)> {
    let action = match command {
        Command::RuleAdd { .. } => "network-rule-add",
        Command::RuleRemove { .. } => "network-rule-remove",
        Command::Update { .. } => "update",
        Command::Apply { .. } => "apply",
        Command::Confirm => "confirm",
        Command::Detach => "detach",
        Command::Show | Command::Stats | Command::RuleList | Command::Logs { .. } => return None,
    };
    let mut request = serde_json::to_value(command).unwrap_or(Value::Null);
    if let Some(fields) = request.as_object_mut() {
        fields.remove("text");
        if let Some(Value::Object(map)) = fields.get_mut("subnet_map") {
            map.remove("text");
        }
    }
    Some((action, request))
}

/// How a control-socket command ended, from its answer.
pub(super) fn outcome_of(response: &Response) -> Outcome {
    match &response.error {
        Some(error) if error.kind == ErrorKind::Conflict => {
            Outcome::Conflict(error.message.clone())
        }
        Some(error) => Outcome::Refused(error.sentence()),
        None if response
            .result
            .as_ref()
            .and_then(|r| r.get("changed"))
            .and_then(Value::as_bool)
            == Some(false) =>
        {
            Outcome::Unchanged
        }
        None => Outcome::Applied,
    }
}

/// What one audited request was.
pub(super) struct Request<'a> {
    /// `event.action`.
    pub action: &'a str,
    /// Who asked.
    pub caller: &'a Caller,
    /// `event.reason`, when the action does not say it.
    pub cause: Option<&'a str>,
    /// The request as received.
    pub request: Option<Value>,
}

impl Daemon {
    /// What is served now, as an audit record tells it.
    pub(super) fn audit_snapshot(&self) -> Snapshot {
        Snapshot::of(&self.policy, self.generation)
    }

    /// Records `request`, which began when `before` was served and ended
    /// with `outcome`; `None` means it did not fail: applied when what is
    /// served changed, unchanged otherwise.
    pub(super) fn audit(
        &mut self,
        request: Request<'_>,
        before: &Snapshot,
        outcome: Option<Outcome>,
    ) {
        let after = self.audit_snapshot();
        let outcome = outcome.unwrap_or(if after == *before {
            Outcome::Unchanged
        } else {
            Outcome::Applied
        });
        self.audit.record(&Entry {
            action: request.action,
            caller: request.caller,
            cause: request.cause,
            request: request.request,
            before,
            after: &after,
            outcome,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apply_is_recorded_without_its_policy_text_and_reads_are_not_recorded() {
        let apply = Command::Apply {
            file: "/etc/vaultfw/new.toml".into(),
            format: crate::policy::PolicyFormat::Native,
            text: "default_action = \"Deny\"\n".into(),
            subnet_map: None,
            confirm_within_s: Some(60),
            if_generation: None,
        };
        let (action, request) = change_request(&apply).expect("a change");
        assert_eq!(action, "apply");
        assert_eq!(request["file"], "/etc/vaultfw/new.toml");
        assert_eq!(request["confirm_within_s"], 60);
        assert!(request.get("text").is_none(), "{request}");
        assert!(change_request(&Command::Show).is_none());
        assert!(change_request(&Command::RuleList).is_none());
    }

    #[test]
    fn a_conflict_is_told_from_a_refusal_and_an_unchanged_reply_from_an_applied_one() {
        let conflict = Response::error(ErrorKind::Conflict, "moved on");
        assert_eq!(outcome_of(&conflict), Outcome::Conflict("moved on".into()));
        let invalid = Response::error(ErrorKind::InvalidInput, "bad");
        assert_eq!(outcome_of(&invalid), Outcome::Refused("bad".into()));
        let same = Response::ok(serde_json::json!({"changed": false, "generation": 3}));
        assert_eq!(outcome_of(&same), Outcome::Unchanged);
        let done = Response::ok(serde_json::json!({"changed": true, "generation": 4}));
        assert_eq!(outcome_of(&done), Outcome::Applied);
    }
}
