//! The XDP program's own diagnostics: aya-log records its cold paths write
//! (a malformed frame denied, a map lookup that cannot fail but did) into
//! the ring buffer `firewall_common::BPF_LOGS`, at the level the agent
//! loads it with ([`BpfLogLevel`], off by default), forwarded here into the
//! daemon log as tracing records with target [`BPF_LOG_TARGET`].
//!
//! "Off" costs the hot path nothing it can measure: the level is a
//! constant in the program's read-only data, so the verifier knows every
//! log branch is dead and the frames run the instructions they ran before
//! (`cargo xtask bench` compares off with debug).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use aya::Ebpf;
use aya_log::EbpfLogger;

use super::DataplaneError;

/// The tracing target of every forwarded program record.
pub const BPF_LOG_TARGET: &str = "vaultfw::bpf";

/// The log filter directive that lets every forwarded record through: the
/// program already drops records below the level it was loaded with, so
/// the daemon's own level (default `info`) must not drop them again.
pub const BPF_LOG_DIRECTIVE: &str = "vaultfw::bpf=trace";

/// The most detailed record the program writes (`vaultfw run
/// --bpf-log-level`). Numbered as aya-log's levels; each level includes
/// the ones before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum BpfLogLevel {
    /// Nothing (the default): the log branches are dead code.
    #[default]
    Off = 0,
    /// Lookups that cannot fail but did.
    Error = 1,
    /// Nothing more today (reserved).
    Warn = 2,
    /// Nothing more today (reserved).
    Info = 3,
    /// Also every malformed frame denied (one record per frame: for
    /// diagnosis, not for a production flood).
    Debug = 4,
}

/// The program's global's value for each level, in a static so the loader
/// can borrow it for as long as it likes.
const GLOBAL_VALUES: [u8; 5] = [0, 1, 2, 3, 4];

impl BpfLogLevel {
    /// The bytes `firewall_common::BPF_LOG_LEVEL_GLOBAL` is set to.
    pub(super) fn global(&self) -> &'static u8 {
        &GLOBAL_VALUES[*self as usize]
    }
}

/// Reads the program's records and writes each into the daemon log. Poll
/// its descriptor for readability, then call [`BpfLogReader::flush`].
pub struct BpfLogReader {
    logger: EbpfLogger<Forwarder>,
}

impl BpfLogReader {
    /// Takes the ring buffer out of `ebpf`.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let map = firewall_common::BPF_LOGS;
        let logger = EbpfLogger::init_with_logger(ebpf, Forwarder).map_err(|e| match e {
            aya_log::Error::MapError(source) => DataplaneError::Map { map, source },
            _ => DataplaneError::MissingMap { map },
        })?;
        Ok(BpfLogReader { logger })
    }

    /// Forwards every record waiting in the ring buffer.
    pub fn flush(&mut self) {
        self.logger.flush();
    }

    /// Forwards records as the kernel writes them, until the runtime stops
    /// (spawn it; call inside the tokio runtime).
    pub async fn forward(self) {
        use tokio::io::{Interest, unix::AsyncFd};
        // SAFETY: the fd is the ring map's, owned by `self`, which the
        // AsyncFd owns from here on: it stays open and the same for the
        // AsyncFd's whole life.
        let mut fd = match unsafe { AsyncFd::register_with_interest(self, Interest::READABLE) } {
            Ok(fd) => fd,
            Err(error) => {
                let error = std::io::Error::from(error);
                tracing::error!(%error, "cannot watch the XDP program's log ring buffer: no program records this run");
                return;
            }
        };
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(guard) => guard,
                Err(error) => {
                    tracing::error!(%error, "watching the XDP program's log ring buffer failed: no program records from now on");
                    return;
                }
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
            // A record committed between the drain and `clear_ready` woke
            // nobody: take it now.
            guard.get_inner_mut().flush();
        }
    }
}

impl AsFd for BpfLogReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.logger.as_fd()
    }
}

impl AsRawFd for BpfLogReader {
    fn as_raw_fd(&self) -> RawFd {
        self.logger.as_raw_fd()
    }
}

/// aya-log decodes records into the `log` crate's shape; this writes them
/// as tracing records, the daemon log's.
struct Forwarder;

impl log::Log for Forwarder {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        // Where in the program: its module and source line.
        let module = record.target();
        let line = record.line().unwrap_or(0);
        macro_rules! forward {
            ($level:expr) => {
                tracing::event!(
                    target: BPF_LOG_TARGET,
                    $level,
                    bpf_module = module,
                    bpf_line = line,
                    "{message}"
                )
            };
        }
        match record.level() {
            log::Level::Error => forward!(tracing::Level::ERROR),
            log::Level::Warn => forward!(tracing::Level::WARN),
            log::Level::Info => forward!(tracing::Level::INFO),
            log::Level::Debug => forward!(tracing::Level::DEBUG),
            log::Level::Trace => forward!(tracing::Level::TRACE),
        }
    }

    fn flush(&self) {}
}
