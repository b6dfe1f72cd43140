//! vaultfw's agent: compiles a Key Vault-style network ACL into the maps of
//! an XDP program and runs it.
//!
//! Layout (a module uses only modules below it in this list):
//! - `cli`: clap types and the verbs of the `vaultfw` binary.
//! - `check`: `vaultfw check`, test runs compared with the reference model.
//! - `daemon`: `vaultfw run`, start-up and shutdown order, the command loop.
//! - `control`: the control socket (protocol, server, client).
//! - `persist`: writing accepted changes back to the policy file.
//! - `telemetry`: log setup, the verdict-counter lines, the access log.
//! - `dataplane`: the only module that touches the kernel (aya).
//! - `reference`: the program's decision order as a pure function.
//! - `compile`: policy → table contents (pure).
//! - `links`: interface names → ifindexes, link-change notifications.
//! - `policy`: the policy model, parsing and validation (pure).
//! - `paths`: every pin and socket path (all overridable).
//! - `clock`: wall-clock times ↔ the kernel's CLOCK_MONOTONIC deadlines.
//! - `exit`: the binary's exit codes.

pub mod check;
pub mod cli;
pub mod clock;
pub mod compile;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod exit;
pub mod links;
#[cfg(test)]
mod module_graph;
pub mod paths;
pub mod persist;
pub mod policy;
pub mod reference;
pub mod telemetry;
