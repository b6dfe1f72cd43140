//! `vaultfw run`: wiring and ordered start-up and shutdown.
//!
//! Start-up order keeps the host closed-or-unchanged at every step: the
//! policy is validated before anything touches the kernel; the program is
//! loaded and the policy written into its maps *before* it is attached, so
//! it never judges a frame without a policy. Shutdown logs the final
//! counters, then detaches.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::compile::compile;
use crate::dataplane::{Capacity, Dataplane, DataplaneError, XdpModeRequest};
use crate::policy::{self, LoadError, Validated};
use crate::telemetry::StatsReporter;

/// What `vaultfw run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Interfaces to attach to.
    pub interfaces: Vec<String>,
    /// The policy file.
    pub policy_path: PathBuf,
    /// Requested XDP mode.
    pub xdp_mode: XdpModeRequest,
    /// Time between counter lines.
    pub stats_interval: Duration,
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The policy file is unreadable or invalid: nothing was loaded.
    #[error("{0}\nnothing was loaded or attached")]
    Policy(#[from] LoadError),
    /// The kernel side failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs until SIGINT or SIGTERM.
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let Validated { policy, warnings } = policy::load_file(&options.policy_path)?;
    for warning in &warnings {
        tracing::warn!(path = %warning.path, "{}", warning.message);
    }
    let capacity = Capacity::for_ip_rule_limit(
        u32::try_from(policy.limits.ip_rules)
            .expect("invariant: validation caps limits at Limits::MAX_LOADABLE"),
    );
    let mut dataplane = Dataplane::load(capacity)?;
    let mut generation = 1;
    let report = dataplane.apply(&compile(&policy), generation)?;
    tracing::info!(
        generation,
        ip_rules = policy.ip_rules.len(),
        map_writes = report.map_writes,
        "policy applied"
    );

    if let Err(error) = attach_all(&mut dataplane, &options) {
        // Leave no interface half-protected: undo what did attach.
        if let Err(detach_error) = dataplane.detach_all() {
            tracing::error!(%detach_error, "could not detach after a failed attach");
        }
        return Err(error.into());
    }
    let interfaces: Vec<String> = dataplane
        .attached()
        .iter()
        .map(|a| format!("{}({})", a.name, a.mode))
        .collect();
    tracing::info!(
        interfaces = interfaces.join(","),
        generation,
        default_action = ?policy.default_action,
        mode = ?policy.mode,
        "filtering"
    );

    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let mut stats = StatsReporter::new(dataplane.verdict_totals()?);
    let mut ticker = tokio::time::interval(options.stats_interval);
    ticker.tick().await; // the first tick is immediate

    loop {
        tokio::select! {
            _ = ticker.tick() => stats.report(dataplane.verdict_totals()?, false),
            _ = sighup.recv() => {
                if let Some(applied) = reload(&mut dataplane, &options.policy_path, capacity, generation) {
                    generation = applied;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }

    stats.report(dataplane.verdict_totals()?, true);
    dataplane.detach_all()?;
    tracing::info!("detached; vaultfw stopped (the interfaces are no longer filtered)");
    Ok(())
}

fn attach_all(dataplane: &mut Dataplane, options: &RunOptions) -> Result<(), DataplaneError> {
    for interface in &options.interfaces {
        let attached = dataplane.attach(interface, options.xdp_mode)?;
        tracing::info!(interface = %attached.name, mode = attached.mode, "attached");
    }
    Ok(())
}

/// SIGHUP: re-read the policy file. A bad file is refused with its errors
/// and the running policy stays in force. Returns the new generation when a
/// changed policy was applied.
fn reload(dataplane: &mut Dataplane, path: &Path, capacity: Capacity, current: u64) -> Option<u64> {
    let validated = match policy::load_file(path) {
        Ok(v) => v,
        Err(error) => {
            tracing::error!(%error, generation = current, "policy reload refused; the running policy stays");
            return None;
        }
    };
    for warning in &validated.warnings {
        tracing::warn!(path = %warning.path, "{}", warning.message);
    }
    if validated.policy.limits.ip_rules > capacity.ip_rules as usize {
        tracing::warn!(
            limit = validated.policy.limits.ip_rules,
            capacity = capacity.ip_rules,
            "the new limits exceed the maps sized at start; restart vaultfw to use them"
        );
    }
    match dataplane.apply(&compile(&validated.policy), current + 1) {
        Ok(report) if report.changed => {
            tracing::info!(
                generation = report.generation,
                added = report.ip_rules_added,
                removed = report.ip_rules_removed,
                map_writes = report.map_writes,
                "policy applied"
            );
            Some(report.generation)
        }
        Ok(_) => {
            tracing::info!(generation = current, "policy unchanged; nothing written");
            None
        }
        Err(error) => {
            tracing::error!(%error, generation = current, "policy reload failed in the kernel; the running policy stays");
            None
        }
    }
}
