//! vaultfw's agent: compiles a Key Vault-style network ACL into the maps of
//! an XDP program and runs it.
//!
//! Layout (dependencies point down the list only):
//! - `cli`: clap types for the `vaultfw` binary.
//! - `daemon`: `vaultfw run`, start-up and shutdown order.
//! - `telemetry`: log setup and the verdict-counter lines.
//! - `dataplane`: the only module that touches the kernel (aya).
//! - `compile`: policy → table contents (pure).
//! - `policy`: the policy model, parsing and validation (pure).

pub mod cli;
pub mod compile;
pub mod daemon;
pub mod dataplane;
pub mod policy;
pub mod telemetry;
