//! What the daemon knows of its own state beyond the kernel's maps: whether
//! the policy file still declares what the kernel serves, how the last
//! reload went, and whether the control socket is still reachable. `show`
//! and the metrics report it, so a refused reload or a file edited under
//! `--no-watch` is visible instead of silent.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::control::replies::{HealthShown, PolicySync, Readiness, ReloadShown};

use super::interfaces::InterfaceReport;
use super::state::Daemon;

/// The outcome of the latest reload (SIGHUP, an edit of the file).
#[derive(Clone, Debug)]
pub struct ReloadOutcome {
    /// When it ran.
    pub at: SystemTime,
    /// What caused it.
    pub cause: String,
    /// Whether the file was accepted (served, or already served).
    pub success: bool,
    /// Why it was refused.
    pub error: Option<String>,
}

/// The daemon's health beyond the kernel.
#[derive(Clone, Debug)]
pub struct Health {
    /// The policy file against the served policy (as of the last change,
    /// reload or `show`).
    pub policy: PolicySync,
    /// The latest reload; `None` before the first.
    pub last_reload: Option<ReloadOutcome>,
    /// Whether the control socket file is still the one the daemon bound
    /// (removed by hand, the CLI cannot reach the daemon).
    pub control_socket_present: bool,
}

impl Health {
    /// The health as `show` reports it (times as RFC 3339, seconds), with
    /// the daemon's `readiness`.
    pub fn shown(&self, readiness: Readiness) -> HealthShown {
        HealthShown {
            policy: self.policy.clone(),
            last_reload: self.last_reload.as_ref().map(|r| ReloadShown {
                at: humantime::format_rfc3339_seconds(r.at).to_string(),
                cause: r.cause.clone(),
                success: r.success,
                error: r.error.clone(),
            }),
            control_socket_present: self.control_socket_present,
            readiness,
        }
    }
}

/// Whether the filter is in force as declared — the one definition of
/// "ready". Ready when all of these hold, else not, with one reason each:
/// - every interface the daemon must filter is attached, at least one is,
///   and every `--iface` name exists (`show`'s `protected`);
/// - the policy file declares the served policy, or an apply awaits
///   `vaultfw confirm` (the file then holds the previous policy by design);
/// - the latest reload, if any, was accepted, or the file has declared
///   the served policy again since (a refusal of what is no longer there
///   is history).
pub fn readiness(interfaces: &InterfaceReport, health: &Health) -> Readiness {
    let mut reasons = Vec::new();
    for i in &interfaces.not_attached {
        reasons.push(format!(
            "interface {} must be filtered and is not attached",
            i.name
        ));
    }
    for name in &interfaces.missing {
        reasons.push(format!("--iface {name} does not exist"));
    }
    if !interfaces.protected && reasons.is_empty() {
        reasons.push("no interface is filtered".to_owned());
    }
    match &health.policy {
        PolicySync::InSync | PolicySync::AwaitingConfirmation => {}
        PolicySync::Differs => reasons.push(
            "the policy file declares another policy than the kernel serves (reload it)".to_owned(),
        ),
        PolicySync::Invalid { error } => reasons.push(invalid_file_reason(error)),
    }
    // A refused reload matters while the file still declares something
    // else than the kernel serves: once it is in sync again (the edit
    // reverted, or rewritten by a CLI change) the refusal is history, and
    // an invalid file already says why above.
    let refusal_stands = matches!(health.policy, PolicySync::Differs);
    if let Some(reload) = health
        .last_reload
        .as_ref()
        .filter(|r| !r.success && refusal_stands)
    {
        reasons.push(format!(
            "the last reload ({}) was refused: {}",
            reload.cause,
            one_line(reload.error.as_deref().unwrap_or("no error recorded"))
        ));
    }
    reasons.dedup();
    Readiness {
        ready: reasons.is_empty(),
        reasons,
    }
}

/// The reason for an invalid policy file: its first error, and how many
/// more `show` lists under `health.policy.error` (a reason is one line of
/// `STATUS=`; the loader's error opens with its own "… is invalid:" line).
fn invalid_file_reason(error: &str) -> String {
    let lines: Vec<&str> = error
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let errors = match lines.split_first() {
        Some((header, rest)) if header.ends_with("is invalid:") => rest,
        _ => &lines[..],
    };
    match errors {
        [] => "the policy file is invalid".to_owned(),
        [only] => format!("the policy file is invalid: {only}"),
        [first, more @ ..] => format!(
            "the policy file is invalid: {first} (and {} more: `vaultfw show` lists them)",
            more.len()
        ),
    }
}

/// A multi-line error as one line (a reason is one line of `STATUS=`).
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Daemon {
    /// Whether the filter is in force as declared, now (see [`readiness`]).
    pub(super) fn readiness(&self) -> Readiness {
        readiness(&self.interface_report(), &self.health)
    }

    /// The interfaces the daemon's program is attached to, by name.
    pub(super) fn attached_names(&self) -> Vec<String> {
        self.dataplane
            .attached()
            .iter()
            .map(|a| a.name.clone())
            .collect()
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            policy: PolicySync::InSync,
            last_reload: None,
            control_socket_present: true,
        }
    }
}

/// The control socket the daemon bound: its path and inode, to notice when
/// the file is removed or replaced.
#[derive(Clone, Debug)]
pub struct SocketIdentity {
    path: PathBuf,
    inode: Option<u64>,
}

impl SocketIdentity {
    /// The socket at `path` as it is now (just bound).
    pub fn of(path: &Path) -> Self {
        SocketIdentity {
            path: path.to_owned(),
            inode: std::fs::symlink_metadata(path).ok().map(|m| m.ino()),
        }
    }

    /// Whether `path` still is the socket that was bound.
    pub fn present(&self) -> bool {
        self.inode.is_some()
            && std::fs::symlink_metadata(&self.path).ok().map(|m| m.ino()) == self.inode
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::replies::{FilterReason, UnattachedInterface};

    fn interfaces(protected: bool) -> InterfaceReport {
        InterfaceReport {
            filtered: Vec::new(),
            not_attached: Vec::new(),
            unfiltered: Vec::new(),
            missing: Vec::new(),
            unmanaged_links: Vec::new(),
            protected,
        }
    }

    #[test]
    fn ready_when_filtered_in_sync_and_the_last_reload_accepted() {
        let mut health = Health::default();
        assert!(readiness(&interfaces(true), &health).ready);
        health.policy = PolicySync::AwaitingConfirmation;
        assert!(readiness(&interfaces(true), &health).ready);
        health.last_reload = Some(ReloadOutcome {
            at: SystemTime::now(),
            cause: "SIGHUP".into(),
            success: true,
            error: None,
        });
        assert_eq!(
            readiness(&interfaces(true), &health),
            Readiness {
                ready: true,
                reasons: vec![]
            }
        );
    }

    #[test]
    fn each_broken_condition_gives_its_own_reason() {
        let mut report = interfaces(false);
        report.not_attached.push(UnattachedInterface {
            name: "eth1".into(),
            reason: FilterReason::Iface,
            link_type: 1,
        });
        report.missing.push("eth9".into());
        let health = Health {
            policy: PolicySync::Invalid {
                error: "line 1: default_action\nmore".into(),
            },
            last_reload: Some(ReloadOutcome {
                at: SystemTime::now(),
                cause: "SIGHUP".into(),
                success: false,
                error: Some("line 1: default_action".into()),
            }),
            control_socket_present: true,
        };
        let r = readiness(&report, &health);
        assert!(!r.ready);
        assert_eq!(
            r.reasons,
            [
                "interface eth1 must be filtered and is not attached",
                "--iface eth9 does not exist",
                "the policy file is invalid: line 1: default_action (and 1 more: `vaultfw show` \
                 lists them)",
            ]
        );
        // The same long error from the file and the refused reload: once.
        let long = "line 3: ip_rules[0] = \"x\": not an address; fix: give an IPv4 address";
        let same = Health {
            policy: PolicySync::Invalid { error: long.into() },
            last_reload: Some(ReloadOutcome {
                at: SystemTime::now(),
                cause: "file change".into(),
                success: false,
                error: Some(format!("{long}\nnothing was loaded")),
            }),
            control_socket_present: true,
        };
        let r = readiness(&interfaces(true), &same);
        assert_eq!(r.reasons, [format!("the policy file is invalid: {long}")]);
        assert_eq!(r.reasons.iter().filter(|r| r.contains(long)).count(), 1);
        // The loader's error: its header line is not repeated, the first
        // error is said and the rest counted.
        let loader = Health {
            policy: PolicySync::Invalid {
                error: "policy file /etc/vaultfw/p.toml is invalid:\nfrob: unknown key\n\
                        ip_rules[1]: \"vault-client\" is refused"
                    .into(),
            },
            ..Health::default()
        };
        assert_eq!(
            readiness(&interfaces(true), &loader).reasons,
            [
                "the policy file is invalid: frob: unknown key (and 1 more: `vaultfw show` lists them)"
            ]
        );
        let nothing = readiness(&interfaces(false), &Health::default());
        assert_eq!(nothing.reasons, ["no interface is filtered"]);
        let differs = Health {
            policy: PolicySync::Differs,
            ..Health::default()
        };
        assert!(!readiness(&interfaces(true), &differs).ready);
    }

    /// An edit refused and then reverted (or rewritten by a CLI change)
    /// leaves the file declaring the served policy: ready again, though the
    /// last reload was refused; while the file differs, the refusal is a
    /// reason of its own.
    #[test]
    fn a_refused_reload_counts_only_while_the_file_still_differs() {
        let refused = Some(ReloadOutcome {
            at: SystemTime::now(),
            cause: "policy file changed".into(),
            success: false,
            error: Some("private endpoint interface eth9 does not exist".into()),
        });
        let reverted = Health {
            policy: PolicySync::InSync,
            last_reload: refused.clone(),
            control_socket_present: true,
        };
        assert!(readiness(&interfaces(true), &reverted).ready);
        let differs = Health {
            policy: PolicySync::Differs,
            last_reload: refused,
            control_socket_present: true,
        };
        assert_eq!(
            readiness(&interfaces(true), &differs).reasons,
            [
                "the policy file declares another policy than the kernel serves (reload it)",
                "the last reload (policy file changed) was refused: private endpoint interface \
                 eth9 does not exist",
            ]
        );
    }
}
