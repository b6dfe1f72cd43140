//! RFC 3339 times for `expires_at`: `2027-01-31T00:00:00Z` or with an
//! offset (`2027-01-31T01:00:00+01:00`). A time zone is required: an expiry
//! read in the wrong zone would open or close a rule hours off.

use std::time::{Duration, SystemTime};

use super::error::{PolicyError, PolicyWarning};
use crate::clock::parse_rfc3339;

/// The form `expires_at` must have, quoted in errors.
pub const EXPECTED_FORM: &str = "an RFC 3339 time with a time zone, e.g. \
     \"2027-01-31T00:00:00Z\" (UTC) or \"2027-01-31T01:00:00+01:00\"";

/// An expiry closer than this is reported as a warning.
pub const WARNING_WITHIN: Duration = Duration::from_secs(24 * 3600);

/// Checks a rule's `expires_at` (at `path`, written `text`) as of `now`:
/// malformed is an error; past is a warning and the rule is left out (an
/// expired rule must neither stay in force nor stop a restarting daemon from
/// loading the rest of the policy); within [`WARNING_WITHIN`] a warning.
/// `None` when the rule must be left out (an error or a warning says why).
pub fn check(
    path: &str,
    text: &str,
    now: SystemTime,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Option<SystemTime> {
    let t = match parse_rfc3339(text) {
        Ok(t) => t,
        Err(reason) => {
            errors.push(PolicyError::new(
                path,
                text,
                reason,
                format!("write {EXPECTED_FORM}"),
            ));
            return None;
        }
    };
    match t.duration_since(now) {
        Err(_) | Ok(Duration::ZERO) => {
            warnings.push(PolicyWarning::new(
                path,
                format!(
                    "the rule expired at {}: it is left out of the policy (remove it from the \
                     file, or set a later expires_at)",
                    humantime::format_rfc3339_seconds(t)
                ),
            ));
            None
        }
        Ok(left) => {
            if left < WARNING_WITHIN {
                // Whole minutes; whole seconds in the last minute (never "0s").
                let secs = left.as_secs();
                let shown = Duration::from_secs(if secs >= 60 {
                    secs / 60 * 60
                } else {
                    secs.max(1)
                });
                warnings.push(PolicyWarning::new(
                    path,
                    format!(
                        "the rule expires in less than 24 h (in {}; at {}) and is then removed",
                        humantime::format_duration(shown),
                        humantime::format_rfc3339_seconds(t)
                    ),
                ));
            }
            Some(t)
        }
    }
}
