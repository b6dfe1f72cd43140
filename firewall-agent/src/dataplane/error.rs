//! Errors of the kernel side: each names the operation, the interface or
//! map, and what the kernel said.

use aya::{EbpfError, maps::MapError, programs::ProgramError};

/// A failure to load, attach, or write the XDP program and its maps.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The kernel lacks a feature the program needs.
    #[error("{message}")]
    MissingFeatures {
        /// Each missing feature, the release that brought it, the kernel's.
        message: String,
    },
    /// The embedded object could not be parsed or its maps created.
    #[error("cannot load the BPF object (maps): {source}")]
    Object {
        /// aya's error.
        #[source]
        source: EbpfError,
    },
    /// The object lacks one of its XDP programs: a build problem.
    #[error("the embedded BPF object has no XDP program named {name:?} (a broken build)")]
    MissingProgram {
        /// The program's name.
        name: &'static str,
    },
    /// The kernel's verifier refused the program.
    #[error(
        "the kernel (release {kernel_release}) refused to load the XDP program: {io_error}\n\
         verifier log (last lines):\n{verifier_tail}"
    )]
    Load {
        /// `uname -r`.
        kernel_release: String,
        /// The errno of BPF_PROG_LOAD.
        io_error: std::io::Error,
        /// The last lines of the verifier log.
        verifier_tail: String,
    },
    /// Another program operation failed.
    #[error("cannot {operation}: {source}")]
    Program {
        /// What was being done.
        operation: &'static str,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
    /// A map is missing from the object or has the wrong shape.
    #[error("map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// aya's error.
        #[source]
        source: MapError,
    },
    /// The object lacks a map: a build problem.
    #[error("the embedded BPF object has no map {map} (a broken build)")]
    MissingMap {
        /// The map's name.
        map: &'static str,
    },
    /// A policy needs more trie entries than the maps were sized for at load.
    #[error(
        "the policy needs {entries} {kind} entries but the loaded tries hold at most \
         {capacity}; restart vaultfw to size the maps for the new limits"
    )]
    Capacity {
        /// Which trie.
        kind: &'static str,
        /// Entries the policy needs.
        entries: usize,
        /// Entries per trie.
        capacity: u32,
    },
    /// A pin-directory operation failed.
    #[error("cannot {operation} {path}: {source}")]
    Pins {
        /// The path.
        path: std::path::PathBuf,
        /// What was being done.
        operation: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon holds the pin directory.
    #[error(
        "another vaultfw daemon uses the pin directory {path} ({source}); stop it, or give this \
         one its own --pin-dir (and --socket)"
    )]
    PinDirInUse {
        /// The directory.
        path: std::path::PathBuf,
        /// What flock said.
        source: std::io::Error,
    },
    /// An interface named in the command line does not exist.
    #[error("interface {interface:?} does not exist (check `ip link`)")]
    NoSuchInterface {
        /// The name given.
        interface: String,
    },
    /// The kernel refused to attach the program to an interface.
    #[error("cannot attach XDP in {mode} mode to {interface} (kernel {}): {reason}", kernel_release())]
    Attach {
        /// The interface.
        interface: String,
        /// The mode that was tried.
        mode: &'static str,
        /// What went wrong and what to do.
        reason: String,
        /// The OS error code, when the kernel gave one.
        errno: Option<i32>,
    },
}

impl DataplaneError {
    /// Wraps a program load failure with the kernel release and the tail of
    /// the verifier log, so the operator sees why, not a bare errno.
    pub(crate) fn from_load(error: ProgramError) -> Self {
        match error {
            ProgramError::LoadError {
                io_error,
                verifier_log,
            } => {
                let log = verifier_log.to_string();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                DataplaneError::Load {
                    kernel_release: kernel_release(),
                    io_error,
                    verifier_tail: tail,
                }
            }
            source => DataplaneError::Program {
                operation: "load the XDP program",
                source,
            },
        }
    }

    /// Whether the driver lacks what native XDP needs (no native XDP, or an
    /// MTU too large for it): `--xdp-mode auto` then falls back to generic.
    pub fn native_unsupported(&self) -> bool {
        matches!(
            self,
            DataplaneError::Attach {
                errno: Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ERANGE),
                ..
            }
        )
    }

    /// Whether the kernel refused the request (exit code 4) rather than the
    /// input or the build being wrong.
    pub fn is_kernel_refusal(&self) -> bool {
        matches!(
            self,
            DataplaneError::Load { .. }
                | DataplaneError::MissingFeatures { .. }
                | DataplaneError::Program { .. }
                | DataplaneError::Object { .. }
                | DataplaneError::Map { .. }
                | DataplaneError::Attach { .. }
                | DataplaneError::Pins { .. }
        )
    }
}

/// The running kernel's release (`uname -r`), or "unknown".
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
