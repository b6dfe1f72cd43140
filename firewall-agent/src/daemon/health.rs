//! What the daemon knows of its own state beyond the kernel's maps: whether
//! the policy file still declares what the kernel serves, how the last
//! reload went, and whether the control socket is still reachable. `show`
//! and the metrics report it, so a refused reload or a file edited under
//! `--no-watch` is visible instead of silent.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::control::replies::{HealthShown, PolicySync, ReloadShown};

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
    /// The health as `show` reports it (times as RFC 3339, seconds).
    pub fn shown(&self) -> HealthShown {
        HealthShown {
            policy: self.policy.clone(),
            last_reload: self.last_reload.as_ref().map(|r| ReloadShown {
                at: humantime::format_rfc3339_seconds(r.at).to_string(),
                cause: r.cause.clone(),
                success: r.success,
                error: r.error.clone(),
            }),
            control_socket_present: self.control_socket_present,
        }
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
