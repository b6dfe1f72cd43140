//! The exit codes of the `vaultfw` binary (README "Exit codes",
//! docs/output.md): one meaning each, the same for every verb. 0 is
//! success (an idempotent no-op included); every failure is one
//! [`Failure`] class, which names both the exit code and the `error.code`
//! of the `--output json` error document.

/// `vaultfw check`: a frame the kernel and the model judge differently.
pub const DISAGREEMENT: u8 = 1;
/// Invalid input (policy, flags, capture), or a rule that does not exist.
pub const INVALID_INPUT: u8 = 2;
/// No daemon listens on the socket.
pub const NOT_RUNNING: u8 = 3;
/// The kernel refused (program load or attach, a map write, a test run),
/// or a privilege is missing.
pub const KERNEL_REFUSED: u8 = 4;
/// Someone else holds what the request needs: `--if-generation` no longer
/// matches, an apply awaits confirmation, or another daemon holds the pin
/// directory.
pub const CONFLICT: u8 = 5;

/// A failure's class: its exit code and its `error.code` in JSON
/// (serialized in snake case: `"invalid_input"`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// [`INVALID_INPUT`].
    InvalidInput,
    /// [`NOT_RUNNING`].
    NotRunning,
    /// [`KERNEL_REFUSED`].
    KernelRefused,
    /// [`CONFLICT`].
    Conflict,
    /// [`DISAGREEMENT`] (`check` only).
    Disagreement,
    /// Anything else: exit 1.
    Internal,
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::InvalidInput => INVALID_INPUT,
            Failure::NotRunning => NOT_RUNNING,
            Failure::KernelRefused => KERNEL_REFUSED,
            Failure::Conflict => CONFLICT,
            Failure::Disagreement => DISAGREEMENT,
            Failure::Internal => 1,
        }
    }
}
