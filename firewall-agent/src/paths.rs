//! Every filesystem path the agent uses, in one place. Each is overridable
//! on the command line: pins are global to the machine (not per network
//! namespace), so two agents — or the tests — need their own.

use std::path::{Path, PathBuf};

/// Where bpffs is mounted on most distributions (the agent mounts it there
/// when it is absent).
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";
/// Default pin directory: program links and maps live here (mode 0700).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/vaultfw";
/// Default control socket (root only, mode 0600).
pub const DEFAULT_SOCKET: &str = "/run/vaultfw/vaultfw.sock";

/// The pin directory's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PinDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/maps`: one pin per map, named as in `firewall-common`.
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// `<root>/maps/<name>`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    /// `<root>/links`: one XDP link pin per interface.
    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// `<root>/links/<interface>`.
    pub fn link(&self, interface: &str) -> PathBuf {
        self.links().join(interface)
    }
}
