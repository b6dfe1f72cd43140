//! vaultfw's agent: compiles a Key Vault-style network ACL into the maps of
//! an XDP program and runs it.
//!
//! Layout (dependencies point down the list only):
//! - `cli`: clap types for the `vaultfw` binary.
//! - `exit`: the binary's exit codes.
//! - `daemon`: `vaultfw run`, start-up and shutdown order, the command loop.
//! - `control`: the control socket (protocol, server, client).
//! - `persist`: writing accepted changes back to the policy file.
//! - `telemetry`: log setup and the verdict-counter lines.
//! - `dataplane`: the only module that touches the kernel (aya).
//! - `paths`: every pin and socket path (all overridable).
//! - `links`: interface names → ifindexes, link-change notifications.
//! - `compile`: policy → table contents (pure).
//! - `clock`: wall-clock times ↔ the kernel's CLOCK_MONOTONIC deadlines.
//! - `policy`: the policy model, parsing and validation (pure).

pub mod check;
pub mod cli;
pub mod clock;
pub mod compile;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod exit;
pub mod links;
pub mod paths;
pub mod persist;
pub mod policy;
pub mod reference;
pub mod telemetry;
