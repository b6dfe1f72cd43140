//! What policy loading reports: [`PolicyError`] (a value refused, with its
//! input path, the value, why and the fix), [`PolicyErrors`] (every error of
//! one input, never just the first), [`PolicyWarning`] (accepted, but worth an
//! operator's attention) and [`LoadError`] (reading a policy file).

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One refused value. Every field is meant for the operator:
///
/// - `path`: where the value is in the input: `ip_rules[3]`,
///   `ip_rules[3].value`, `data_plane.tcp_ports[0]`, a CLI flag such as
///   `--ip-address`, or `line:column` for a TOML syntax error;
/// - `value`: the value as written (empty when nothing was written, e.g. a
///   missing key, or when the problem is a count rather than one value);
/// - `reason`: why it is refused (for a special-purpose range: the range, its
///   purpose and its RFC), without a trailing period;
/// - `fix`: what to write instead.
///
/// Displays on one line: `{path}: {value:?} is refused: {reason}. Fix: {fix}`
/// (`{path}: {reason}. Fix: {fix}` when `value` is empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyError {
    /// Where the value is in the input.
    pub path: String,
    /// The value as written; empty if there is none.
    pub value: String,
    /// Why it is refused.
    pub reason: String,
    /// What to do instead.
    pub fix: String,
}

impl PolicyError {
    /// Builds an error from its four parts.
    pub fn new(
        path: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        PolicyError {
            path: path.into(),
            value: value.into(),
            reason: reason.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}. Fix: {}", self.path, self.reason, self.fix)
        } else {
            write!(
                f,
                "{}: {:?} is refused: {}. Fix: {}",
                self.path, self.value, self.reason, self.fix
            )
        }
    }
}

impl std::error::Error for PolicyError {}

/// Every error found in one input, in input order as far as the format
/// allows. Never empty when returned as an `Err`. Displays one error per
/// line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    /// The errors, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.0.iter()
    }

    /// How many errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no error (never the case for a returned `Err`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<PolicyError> for PolicyErrors {
    fn from(e: PolicyError) -> Self {
        PolicyErrors(vec![e])
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// Something accepted that the operator should know about: a duplicate
/// rule, a rule shadowed by a wider one, a setting without effect, an expiry
/// close at hand. Displays as `{path}: {message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyWarning {
    /// Where in the input (same form as [`PolicyError::path`]).
    pub path: String,
    /// What is worth knowing, one line.
    pub message: String,
}

impl PolicyWarning {
    /// Builds a warning.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyWarning {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (missing, permissions, not UTF-8).
    #[error("cannot read policy file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file was read but its policy is refused.
    #[error("policy file {path} is invalid:\n{errors}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every error found in it.
        errors: PolicyErrors,
    },
}
