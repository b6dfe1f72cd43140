//! RFC 3339 times for `expires_at`: `2027-01-31T00:00:00Z` or with an
//! offset (`2027-01-31T01:00:00+01:00`). A time zone is required: an expiry
//! read in the wrong zone would open or close a rule hours off.

use std::time::{Duration, SystemTime};

use super::error::{PolicyError, PolicyWarning};

/// The form `expires_at` must have, quoted in errors.
pub const EXPECTED_FORM: &str = "an RFC 3339 time with a time zone, e.g. \
     \"2027-01-31T00:00:00Z\" (UTC) or \"2027-01-31T01:00:00+01:00\"";

/// Parses an RFC 3339 date-time with `Z` or a `±HH:MM` offset (a space may
/// stand for `T`; fractional seconds are allowed). The error is a reason
/// without the expected form.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let upper = text.to_ascii_uppercase();
    let (local, offset_secs) = if let Some(rest) = upper.strip_suffix('Z') {
        (rest.to_string(), 0i64)
    } else if let Some((rest, offset)) = split_offset(&upper) {
        (rest.to_string(), offset)
    } else {
        return Err("it has no time zone (Z or an offset like +01:00)".into());
    };
    // humantime reads a time without zone as UTC; the offset is applied below.
    let as_utc = humantime::parse_rfc3339_weak(&local)
        .map_err(|e| format!("it is not an RFC 3339 date-time ({e})"))?;
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    let utc = if offset_secs >= 0 {
        as_utc.checked_sub(shift)
    } else {
        as_utc.checked_add(shift)
    };
    utc.ok_or_else(|| "it is out of the representable range".to_string())
}

/// `…+HH:MM` / `…-HH:MM` → (the rest, offset in seconds east of UTC).
fn split_offset(text: &str) -> Option<(&str, i64)> {
    let split = text.len().checked_sub(6)?;
    if !text.is_char_boundary(split) {
        return None;
    }
    let (rest, offset) = text.split_at(split);
    let b = offset.as_bytes();
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digit = |i: usize| (b[i] as char).to_digit(10).map(i64::from);
    if b[3] != b':' {
        return None;
    }
    let hours = digit(1)? * 10 + digit(2)?;
    let minutes = digit(4)? * 10 + digit(5)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((rest, sign * (hours * 3600 + minutes * 60)))
}

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
                let minutes = Duration::from_secs(left.as_secs() / 60 * 60);
                warnings.push(PolicyWarning::new(
                    path,
                    format!(
                        "the rule expires in less than 24 h (in {}; at {}) and is then removed",
                        humantime::format_duration(minutes),
                        humantime::format_rfc3339_seconds(t)
                    ),
                ));
            }
            Some(t)
        }
    }
}
