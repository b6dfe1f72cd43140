//! The exit codes of the `vaultfw` binary (README "Exit codes"): one
//! meaning each, the same for every verb. 0 is success; any other failure
//! exits 1 (`ExitCode::FAILURE`).

/// `vaultfw check`: a frame the kernel and the model judge differently.
pub const DISAGREEMENT: u8 = 1;
/// Invalid input (policy, flags, capture), or a rule that does not exist.
pub const INVALID_INPUT: u8 = 2;
/// No daemon listens on the socket.
pub const NOT_RUNNING: u8 = 3;
/// The kernel refused (program load or attach, a map write, a test run).
pub const KERNEL_REFUSED: u8 = 4;
/// `--if-generation` no longer matches, or an apply awaits confirmation.
pub const CONFLICT: u8 = 5;
