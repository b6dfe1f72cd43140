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
        "the kernel (release {kernel_release}) refused to load the XDP program: {io_error}{privilege_note}\n\
         verifier log (last lines):\n{verifier_tail}"
    )]
    Load {
        /// `uname -r`.
        kernel_release: String,
        /// The errno of BPF_PROG_LOAD.
        io_error: std::io::Error,
        /// The last lines of the verifier log.
        verifier_tail: String,
        /// Empty, or a sentence naming the capabilities the process lacks
        /// (without them the verifier judges the program as unprivileged).
        privilege_note: String,
    },
    /// The process may not do what vaultfw needs: EPERM or EACCES from
    /// bpf(), netlink, bpffs or mount. Never reported as a missing kernel
    /// feature.
    #[error("cannot {operation}: {source}; {}", privilege_fix(lacking))]
    MissingPrivilege {
        /// What was being done.
        operation: String,
        /// The capabilities of [`CAPABILITIES`] this process lacks.
        lacking: Vec<&'static str>,
        /// The OS error (EPERM or EACCES).
        #[source]
        source: std::io::Error,
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
    /// A map is missing from the object or has the wrong shape, or the
    /// kernel refused an operation on it.
    #[error("map {map}: {}", map_error_text(source))]
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
    /// Tables compiled for one IPv4 lookup were offered to a program
    /// loaded for the other (a bug of the caller: the daemon and `check`
    /// take both from one option); nothing was written.
    #[error(
        "the tables were compiled for the {tables} lookup but the program was loaded for the \
         {program} lookup; nothing was written"
    )]
    LookupMismatch {
        /// The lookup the tables' flags name.
        tables: &'static str,
        /// The lookup the program walks.
        program: &'static str,
    },
    /// The set's compiled prefix table could not be built, written or read
    /// back.
    #[error("compiled prefix table of table set {set}: {reason}")]
    CompiledTable {
        /// The table set.
        set: u32,
        /// What failed.
        reason: String,
    },
    /// An apply was asked for while an earlier apply with a fallback
    /// deadline is neither confirmed nor reverted: the kernel may be
    /// serving either table set, so neither may be written.
    #[error(
        "generation {generation} was applied with a fallback deadline and is neither confirmed \
         nor rolled back; confirm or roll it back first (nothing was written)"
    )]
    FallbackPending {
        /// The unconfirmed generation.
        generation: u64,
    },
    /// An apply with a fallback deadline before any generation serves.
    #[error(
        "no policy is in force yet to fall back to; apply one without a deadline first \
         (nothing was written)"
    )]
    NothingToFallBackTo,
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
        "another vaultfw daemon{holder} uses the pin directory {path} ({source}); stop it, or \
         give this one its own --pin-dir (and --socket); if `vaultfw show` cannot reach it, its \
         control socket was removed: restart it (the filter stays in force)",
        holder = holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    PinDirInUse {
        /// The directory.
        path: std::path::PathBuf,
        /// The process holding it, when `/proc/locks` says.
        holder: Option<u32>,
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
    #[error(
        "cannot attach XDP in {mode} mode to {interface} (kernel {}): {reason}",
        kernel_release()
    )]
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
                    privilege_note: String::new(),
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

    /// Reports a refusal for want of privilege (EPERM, or EACCES outside
    /// the verifier) as [`DataplaneError::MissingPrivilege`], naming root
    /// and the capabilities, and adds the lacking capabilities to a
    /// verifier refusal (EACCES) of a process that lacks some. Every other
    /// error is returned as it is.
    pub(crate) fn privilege_aware(self) -> Self {
        let denied = |errno: Option<i32>| matches!(errno, Some(libc::EPERM | libc::EACCES));
        let missing = |operation: String, errno: i32| DataplaneError::MissingPrivilege {
            operation,
            lacking: lacking_capabilities(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        match self {
            DataplaneError::Load { io_error, .. }
                if io_error.raw_os_error() == Some(libc::EPERM) =>
            {
                missing("load the XDP program".to_owned(), libc::EPERM)
            }
            DataplaneError::Load {
                kernel_release,
                io_error,
                verifier_tail,
                privilege_note,
            } if io_error.raw_os_error() == Some(libc::EACCES)
                && !lacking_capabilities().is_empty() =>
            {
                let lacking = lacking_capabilities();
                DataplaneError::Load {
                    kernel_release,
                    io_error,
                    verifier_tail,
                    privilege_note: format!(
                        "{privilege_note}\nthis process lacks {}: without them the verifier \
                         judges the program as an unprivileged one; {}",
                        lacking.join(", "),
                        privilege_fix(&lacking)
                    ),
                }
            }
            DataplaneError::Pins {
                path,
                operation,
                source,
            } if denied(source.raw_os_error()) => DataplaneError::MissingPrivilege {
                operation: format!("{operation} {}", path.display()),
                lacking: lacking_capabilities(),
                source,
            },
            DataplaneError::Attach {
                interface,
                mode,
                errno: Some(errno),
                ..
            } if denied(Some(errno)) => {
                missing(format!("attach XDP in {mode} mode to {interface}"), errno)
            }
            DataplaneError::Object { ref source } if denied(errno_in(source)) => {
                let errno = errno_in(source).expect("matched just above");
                missing("create the BPF maps".to_owned(), errno)
            }
            DataplaneError::Map { map, ref source } if denied(errno_in(source)) => {
                let errno = errno_in(source).expect("matched just above");
                missing(format!("use map {map}"), errno)
            }
            DataplaneError::Program {
                operation,
                ref source,
            } if denied(errno_in(source)) => {
                let errno = errno_in(source).expect("matched just above");
                missing(operation.to_owned(), errno)
            }
            other => other,
        }
    }

    /// Whether the kernel refused the request (exit code 4) rather than the
    /// input or the build being wrong; tables the loaded maps cannot hold
    /// count as the kernel's refusal, as a CLI change refused for them does.
    pub fn is_kernel_refusal(&self) -> bool {
        matches!(
            self,
            DataplaneError::Load { .. }
                | DataplaneError::MissingFeatures { .. }
                | DataplaneError::MissingPrivilege { .. }
                | DataplaneError::Program { .. }
                | DataplaneError::Object { .. }
                | DataplaneError::Map { .. }
                | DataplaneError::Attach { .. }
                | DataplaneError::Pins { .. }
                | DataplaneError::Capacity { .. }
                | DataplaneError::CompiledTable { .. }
        )
    }
}

/// The running kernel's release (`uname -r`), or "unknown".
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The capabilities vaultfw needs when it does not run as root (README
/// "Requirements"), with their numbers (`linux/capability.h`): load BPF
/// programs and maps, read the ring buffer and run the verifier as
/// privileged, attach XDP, mount bpffs.
pub const CAPABILITIES: [(&str, u32); 4] = [
    ("CAP_BPF", 39),
    ("CAP_PERFMON", 38),
    ("CAP_NET_ADMIN", 12),
    ("CAP_SYS_ADMIN", 21),
];

/// The capabilities of [`CAPABILITIES`] missing from this process's
/// effective set (`CapEff` of `/proc/self/status`); all of them when that
/// cannot be read.
pub fn lacking_capabilities() -> Vec<&'static str> {
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        });
    lacking_from(effective.unwrap_or(0))
}

/// The capabilities of [`CAPABILITIES`] not set in the bit mask `effective`.
fn lacking_from(effective: u64) -> Vec<&'static str> {
    CAPABILITIES
        .iter()
        .filter(|(_, bit)| effective & (1u64 << bit) == 0)
        .map(|(name, _)| *name)
        .collect()
}

/// What a refused privilege needs, as the end of an error message.
fn privilege_fix(lacking: &[&'static str]) -> String {
    let names: Vec<&str> = CAPABILITIES.iter().map(|(name, _)| *name).collect();
    let which = if lacking.is_empty() {
        "this process has them all, so a security policy (SELinux, AppArmor, seccomp) or the \
         path's permissions refuse it"
            .to_owned()
    } else {
        format!("this process lacks {}", lacking.join(", "))
    };
    format!(
        "vaultfw needs root, or the capabilities {} ({which}); run it as root (sudo), or grant \
         them (the systemd unit's AmbientCapabilities= line does)",
        names.join(", ")
    )
}

/// The OS error code somewhere in `error`'s source chain (itself included).
fn errno_in(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(code) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(code);
        }
        next = e.source();
    }
    None
}

/// aya's map error with the OS error of a failed syscall (aya's own text
/// names only the call), and what `E2BIG` means for a map write.
fn map_error_text(error: &MapError) -> String {
    match error {
        MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
            format!("{e}: the map is full ({})", e.io_error)
        }
        MapError::SyscallError(e) => format!("{e}: {}", e.io_error),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_map_write_names_the_os_error_and_a_full_map() {
        let refused = |errno| DataplaneError::Map {
            map: "VFW_IP_RULES_0",
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_update_elem",
                io_error: std::io::Error::from_raw_os_error(errno),
            }),
        };
        let full = refused(libc::E2BIG).to_string();
        assert!(
            full.contains("VFW_IP_RULES_0")
                && full.contains("bpf_map_update_elem")
                && full.contains("the map is full"),
            "{full}"
        );
        let denied = refused(libc::EINVAL).to_string();
        assert!(denied.contains("Invalid argument"), "{denied}");
    }

    #[test]
    fn a_refused_bpf_call_is_reported_as_a_missing_privilege_not_an_old_kernel() {
        let error = DataplaneError::Program {
            operation: "load the XDP program",
            source: ProgramError::SyscallError(aya::sys::SyscallError {
                call: "bpf_prog_load",
                io_error: std::io::Error::from_raw_os_error(libc::EPERM),
            }),
        }
        .privilege_aware();
        let message = error.to_string();
        assert!(
            matches!(error, DataplaneError::MissingPrivilege { .. }),
            "{message}"
        );
        assert!(
            message.contains("root")
                && message.contains("CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN"),
            "{message}"
        );
        assert!(!message.to_lowercase().contains("kernel"), "{message}");
    }

    #[test]
    fn the_lacking_capabilities_are_named() {
        let only_net_admin = 1u64 << 12;
        assert_eq!(
            lacking_from(only_net_admin),
            ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"]
        );
        assert!(lacking_from(u64::MAX).is_empty());
    }

    #[test]
    fn other_errors_are_left_as_they_are() {
        let error = DataplaneError::Pins {
            path: "/sys/fs/bpf/x".into(),
            operation: "create the pin directory",
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        }
        .privilege_aware();
        assert!(matches!(error, DataplaneError::Pins { .. }), "{error}");
    }
}
