//! Command-line types (clap). Parsing only; `main.rs` dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::dataplane::XdpModeRequest;

/// vaultfw: Azure Key Vault's network firewall for any Linux service host,
/// enforced by an XDP program on the host's NIC.
#[derive(Debug, Parser)]
#[command(name = "vaultfw", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the firewall daemon: load the XDP program, apply the policy,
    /// attach to the interfaces, log verdict counters.
    ///
    /// Example: vaultfw run --iface eth0 --policy /etc/vaultfw/policy.toml
    Run(RunArgs),
    /// Check a policy file without touching the kernel. Exit 0 when valid,
    /// 2 when not (each error names the value's path, the value, the reason
    /// and the fix).
    ///
    /// Example: vaultfw validate /etc/vaultfw/policy.toml
    Validate(ValidateArgs),
}

/// `vaultfw run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Interface whose ingress traffic is filtered (repeat for several).
    #[arg(long = "iface", value_name = "IFACE", required = true)]
    pub interfaces: Vec<String>,
    /// Policy file (native TOML format).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// XDP attach mode: auto tries native and falls back to generic with a
    /// warning.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: XdpModeRequest,
    /// Seconds between verdict-counter log lines.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub stats_interval: u64,
}

/// `vaultfw validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Policy file to check.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Table,
    /// One JSON document.
    Json,
}
