//! `vaultfw run`: wiring and ordered start-up and shutdown.
//!
//! Start-up order keeps the host closed-or-unchanged at every step: the
//! control socket is claimed (so two daemons never fight over one pin
//! directory); the policy is validated (endpoints included) before anything
//! touches the kernel; the program is loaded over the pinned maps and the
//! policy written into them *before* any link is created or moved, so no
//! frame is ever judged without a policy. A pinned link from a previous run
//! is adopted (same program) or switched to the new program with one link
//! update, so a restart or an upgrade leaves no gap.
//!
//! While running, every change — SIGHUP, an edit of the policy file, a CLI
//! command, a link appearing or vanishing, a rule expiring, an unconfirmed
//! apply timing out — goes through [`state::Daemon`], one at a time, as a
//! new generation of the double-buffered tables; a refused change leaves
//! the running policy in force.
//!
//! What a stop does is explicit (`--on-exit`): `keep` leaves the pinned
//! filter in force (a crash, a stop or an upgrade never opens the vault);
//! `detach` removes it.

mod audit;
mod commands;
mod edit;
mod health;
mod interfaces;
mod memory;
mod notify;
mod observe;
mod reconcile;
mod state;
#[cfg(test)]
mod tests;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::control::protocol::Command;
use crate::control::server;
use crate::dataplane::{Capacity, Dataplane, DataplaneError, XdpModeRequest};
use crate::paths::PinDir;
use crate::policy::LoadError;
use crate::telemetry::{
    AccessLog, EventRing, MetricsServer, SnapshotRequest, StatsReporter, access::DEFAULT_MEMORY,
    audit::AuditLog,
};

pub use interfaces::IfaceSelection;
use notify::Notifier;
use state::Daemon;
pub use state::PolicySource;

/// What a stop of the daemon does to the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExit {
    /// Leave the pinned program and policy in force (default).
    Keep,
    /// Detach and remove every pin.
    Detach,
}

impl OnExit {
    /// The value as `--on-exit` and `show` spell it (`"keep"`, `"detach"`).
    pub const fn name(self) -> &'static str {
        match self {
            OnExit::Keep => "keep",
            OnExit::Detach => "detach",
        }
    }
}

/// What `vaultfw run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The interfaces `--iface` selects (the policy's endpoint interfaces
    /// are filtered too).
    pub interfaces: IfaceSelection,
    /// The policy file and its format.
    pub source: PolicySource,
    /// Requested XDP mode.
    pub xdp_mode: XdpModeRequest,
    /// The XDP program's aya-log level (`--bpf-log-level`).
    pub bpf_log_level: crate::dataplane::BpfLogLevel,
    /// Time between counter lines.
    pub stats_interval: Duration,
    /// Where program links and maps are pinned.
    pub pin_dir: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// What a stop does.
    pub on_exit: OnExit,
    /// Whether to watch the policy file for edits.
    pub watch_policy: bool,
    /// Access-log events per second per CPU (0: off).
    pub event_rate: u32,
    /// Log allowed connection attempts too.
    pub log_allowed: bool,
    /// Let frames the host forwards pass as `pass_forwarded` instead of
    /// judging them like frames addressed to it (the default).
    pub pass_forwarded: bool,
    /// The IPv4 lookup the data plane uses (`--lookup`).
    pub lookup: crate::compile::cpt::Lookup,
    /// The access log's file (`None`: stdout).
    pub access_log: Option<PathBuf>,
    /// The audit trail's own file (`None`: the daemon log only).
    pub audit_log: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`None`: nowhere).
    pub metrics_addr: Option<SocketAddr>,
    /// Serve metrics on a non-loopback address.
    pub metrics_allow_remote: bool,
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The policy file is unreadable or invalid: nothing was loaded.
    #[error("{0}\nnothing was loaded or attached")]
    Policy(#[from] LoadError),
    /// A virtual network rule names an interface that does not exist.
    #[error(
        "{0}\nnothing was loaded or attached; create the interface, fix the endpoint, or set \
         ignore_missing_endpoint = true on the rule"
    )]
    MissingEndpoint(String),
    /// The kernel side failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// The command line contradicts itself.
    #[error("{0}")]
    InvalidArguments(String),
    /// The control socket could not be claimed.
    #[error(transparent)]
    Socket(#[from] server::ServerError),
    /// A file the operator named (`--access-log`, `--audit-log`) cannot be
    /// opened; the error names the flag, the path and the fix.
    #[error("cannot open {flag}: {source}")]
    UnusablePath {
        /// The flag that gave the path.
        flag: &'static str,
        /// The open error (its text names the path).
        source: std::io::Error,
    },
    /// Signal handlers, the netlink subscription or the file watcher could
    /// not be set up.
    #[error("cannot {what}: {source}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs until SIGINT, SIGTERM or `vaultfw detach`: installs the signal
/// handlers, claims the control socket, then [`serve`]s.
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let setup = |what| move |source| RunError::Setup { what, source };
    if let Some(addr) = options
        .metrics_addr
        .filter(|a| !a.ip().is_loopback() && !options.metrics_allow_remote)
    {
        return Err(RunError::InvalidArguments(format!(
            "--metrics-addr {addr} is not a loopback address: anyone who reaches it reads the \
             counters and rules; use 127.0.0.1:PORT, or add --metrics-allow-remote"
        )));
    }
    // Signals first: a stop that arrives at any moment after this is a
    // clean stop, never the default action (death without cleanup).
    let mut sigint = signal(SignalKind::interrupt()).map_err(setup("handle SIGINT"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(setup("handle SIGTERM"))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(setup("handle SIGHUP"))?;
    let listener = server::bind(&options.socket).await?;
    // However `run` ends from here on, the socket file goes with it.
    let _socket_file = server::SocketFile(options.socket.clone());
    let shutdown = async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };
    let (reload_tx, reloads) = mpsc::channel(1);
    // A SIGHUP while a reload is queued already is the same reload.
    let forward_sighup = tokio::spawn(async move {
        while sighup.recv().await.is_some() {
            let _ = reload_tx.try_send(());
        }
    });
    let served = serve(listener, shutdown, reloads, options).await;
    forward_sighup.abort();
    served
}

/// Serves `options` with the control socket `listener` until `shutdown`
/// resolves or `vaultfw detach` arrives; each message on `reloads` reloads
/// the policy file and reopens the access log (what SIGHUP does). Loads the
/// policy, the program and the maps, attaches, then runs the event loop;
/// on the way out the filter stays or goes as `options.on_exit` says.
///
/// The seam for tests: [`run`] passes the signals; a test passes a channel
/// and a socket in a temporary directory.
pub async fn serve(
    listener: tokio::net::UnixListener,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<()>,
    options: RunOptions,
) -> Result<(), RunError> {
    let setup = |what| move |source| RunError::Setup { what, source };
    // Subscribe before resolving, so no link change falls between the two.
    let mut link_events =
        crate::links::LinkEvents::subscribe().map_err(setup("subscribe to link events"))?;
    crate::persist::remove_leftover_temp_files(&options.source.path);
    // Everything that can refuse the start is resolved before the kernel is
    // touched: a start that fails changes nothing that was in force.
    let (policy, interfaces) = state::load_checked(&options.source)?;
    let links = crate::links::list().map_err(setup("list the interfaces (netlink)"))?;
    interfaces::preflight(&options.interfaces, &policy, &links)?;
    let unusable = |flag| move |source| RunError::UnusablePath { flag, source };
    let mut access = AccessLog::open(options.access_log.as_deref(), DEFAULT_MEMORY)
        .map_err(unusable("--access-log"))?;
    let audit = AuditLog::open(options.audit_log.as_deref()).map_err(unusable("--audit-log"))?;
    let (snapshots_tx, mut snapshots) = mpsc::channel(4);
    let metrics = match options.metrics_addr {
        Some(addr) => Some(
            MetricsServer::start(addr, snapshots_tx.clone())
                .map_err(setup("serve metrics (--metrics-addr)"))?,
        ),
        None => None,
    };

    if !options.pass_forwarded && host_forwards() {
        tracing::warn!(
            "this host forwards traffic (ip_forward is on): forwarded connections to data-plane \
             ports are judged by the policy like connections to the host; if pods or containers \
             routed by this host need them, run with --pass-forwarded"
        );
    }

    let capacity = Capacity::for_limits(
        u32::try_from(policy.limits.ip_rules)
            .expect("invariant: validation caps limits at Limits::MAX_LOADABLE"),
        u32::try_from(policy.limits.virtual_network_rules)
            .expect("invariant: validation caps limits at Limits::MAX_LOADABLE"),
    )
    .with_ipv6_rules(
        u32::try_from(policy.limits.ipv6_rules)
            .expect("invariant: validation caps limits at Limits::MAX_LOADABLE"),
    )
    .with_lookup(options.lookup);
    let mut dataplane = Dataplane::open_pinned(
        capacity,
        PinDir::new(&options.pin_dir),
        options.bpf_log_level,
    )?;
    // The counters as a predecessor left them (or zero): deltas count from
    // here, so frames counted before this start are never counted again.
    let to_filter = interfaces::desired(&options.interfaces, &policy, &links);
    let baseline = observe::sample(
        &dataplane,
        to_filter.into_iter().map(|(name, w)| (name, w.ifindex)),
    )?;
    let stats = StatsReporter::from_sample(&baseline);
    access.continue_after(baseline.events.sent);
    let mut ring = match dataplane.take_event_ring() {
        Some(ring) => {
            Some(EventRing::new(ring).map_err(setup("watch the access-log ring buffer"))?)
        }
        None => {
            tracing::warn!("the access-log ring buffer is unavailable: no access log this run");
            None
        }
    };
    if let Some(reader) = dataplane.take_bpf_log()? {
        tokio::spawn(reader.forward());
    }
    let started = Instant::now();
    let mut daemon = Daemon::start(dataplane, options, policy, interfaces)?.with_audit_log(audit);
    daemon.audit_start_rollback();
    let mut observer = observe::Observer::new(stats, access, started.elapsed());

    let (requests_tx, mut requests) = mpsc::channel(16);
    tokio::spawn(server::serve(listener, requests_tx));
    let mut file_events = if daemon.options().watch_policy {
        Some(
            watch::PolicyWatch::start(&daemon.options().source.path)
                .map_err(setup("watch the policy file"))?,
        )
    } else {
        None
    };
    let mut ticker = tokio::time::interval(daemon.options().stats_interval);
    ticker.tick().await; // the first tick is immediate
    let mut shutdown = std::pin::pin!(shutdown);
    // Everything is attached, the first generation served, the control
    // socket and the metrics listener answer: systemd may hear READY=1.
    let mut notifier = Notifier::from_env();
    notify_state(&mut notifier, &daemon);
    let mut watchdog = notifier.watchdog_interval().map(tokio::time::interval);
    // Once the start's parse and compile are freed (and their log lines
    // written), give their pages back; then on every stats tick.
    let mut settled = std::pin::pin!(tokio::time::sleep(memory::SETTLE_AFTER_START));
    let mut settled_done = false;

    loop {
        let deadline = sleep_until(daemon.next_deadline());
        tokio::select! {
            _ = ticker.tick() => {
                daemon.check_socket();
                daemon.audit_log().retry_and_report();
                daemon.retry_unattached();
                daemon.release_idle_memory();
                observer.report(&daemon, false);
                notify_state(&mut notifier, &daemon);
            }
            () = next_tick(&mut watchdog) => notifier.ping(),
            () = &mut settled, if !settled_done => {
                settled_done = true;
                daemon.release_idle_memory();
            }
            Some(pending) = requests.recv() => {
                let (outcome, handled) = match pending.command {
                    Command::Logs { after, since, limit } => (
                        commands::Outcome {
                            response: observer.logs(&daemon, after, since.as_deref(), limit),
                            stop: false,
                        },
                        false,
                    ),
                    command => (
                        observer.timed_only(&mut daemon, |d| d.handle(command, &pending.caller)),
                        true,
                    ),
                };
                let _ = pending.reply.send(outcome.response);
                if handled {
                    // The answer goes out first: comparing the policy file
                    // with the served policy reads the whole file.
                    tokio::task::yield_now().await;
                    daemon.refresh_policy_sync();
                    notify_state(&mut notifier, &daemon);
                }
                if outcome.stop {
                    // Let the client read its answer before the process ends.
                    let _ = tokio::time::timeout(Duration::from_secs(2), pending.delivered).await;
                    break;
                }
            }
            Some(()) = reloads.recv() => {
                notifier.reloading();
                observer.reopen();
                daemon.audit_log().reopen();
                observer.timed(&mut daemon, |d| d.reload("SIGHUP"));
                notify_reloaded(&mut notifier, &daemon);
            }
            Some(()) = next_file_event(&mut file_events) => {
                // A link on the way may point elsewhere now: watch where,
                // before reading, so that a change made during the reload
                // is an event of the new watch (the old one's are dropped
                // with it, and the reload reads what they announced).
                match watch::PolicyWatch::start(&daemon.options().source.path) {
                    Ok(renewed) => file_events = Some(renewed),
                    Err(error) => tracing::error!(%error, "renewing the policy file's watch failed; the previous watch stays"),
                }
                notifier.reloading();
                observer.timed(&mut daemon, |d| d.reload(state::FILE_CHANGED));
                notify_reloaded(&mut notifier, &daemon);
            }
            changed = link_events.changed() => match changed {
                Ok(()) => {
                    observer.timed(&mut daemon, Daemon::refresh_links);
                    notify_state(&mut notifier, &daemon);
                }
                Err(error) => tracing::error!(%error, "reading link events failed"),
            },
            () = deadline => {
                observer.timed(&mut daemon, |d| d.on_deadline(SystemTime::now()));
                notify_state(&mut notifier, &daemon);
            }
            batch = next_events(&mut ring) => match batch {
                Ok(events) => observer.record(&daemon, &events),
                Err(error) => {
                    tracing::error!(%error, "reading the access-log ring buffer failed; no access log from now on");
                    ring = None;
                }
            },
            Some(request) = snapshots.recv() => match request {
                SnapshotRequest::Metrics(reply) => {
                    daemon.refresh_policy_sync();
                    if let Some(snapshot) = observer.snapshot(&daemon) {
                        let _ = reply.send(snapshot);
                    }
                }
                SnapshotRequest::Readiness(reply) => {
                    // As `show` does (and a scrape, above): the file as it
                    // is now, not at the last change (an edit reverted
                    // counts at once).
                    daemon.refresh_policy_sync();
                    let _ = reply.send(daemon.readiness());
                }
            },
            () = &mut shutdown => break,
        }
    }
    notifier.stopping();

    // Dropping the receiver first fails a scrape in flight at once instead
    // of leaving it waiting for an answer that never comes.
    drop(snapshots);
    if let Some(metrics) = metrics {
        metrics.stop();
    }
    // Events the kernel wrote before the stop are still logged.
    if let Some(ring) = ring.as_mut()
        && let Ok(Ok(events)) =
            tokio::time::timeout(Duration::from_millis(1), ring.next_batch()).await
    {
        observer.record(&daemon, &events);
    }
    observer.report(&daemon, true);
    daemon.stop()
}

/// Tells systemd the daemon's state (nothing when it does not listen).
fn notify_state(notifier: &mut Notifier, daemon: &Daemon) {
    if notifier.enabled() {
        notifier.update(
            daemon.generation,
            &daemon.attached_names(),
            &daemon.readiness(),
        );
    }
}

/// Tells systemd a reload of the policy file is over.
fn notify_reloaded(notifier: &mut Notifier, daemon: &Daemon) {
    if notifier.enabled() {
        notifier.reloaded(
            daemon.generation,
            &daemon.attached_names(),
            &daemon.readiness(),
        );
    }
}

/// The next watchdog tick; never, without a watchdog.
async fn next_tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Whether this network namespace forwards IPv4 or IPv6 traffic.
fn host_forwards() -> bool {
    [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ]
    .iter()
    .any(|path| std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1"))
}

/// The next batch of access-log events; never, without a ring buffer.
async fn next_events(
    ring: &mut Option<EventRing>,
) -> std::io::Result<Vec<firewall_common::AccessEvent>> {
    match ring {
        Some(ring) => ring.next_batch().await,
        None => std::future::pending().await,
    }
}

async fn next_file_event(watch: &mut Option<watch::PolicyWatch>) -> Option<()> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at` (wall clock), forever when `None`.
async fn sleep_until(at: Option<SystemTime>) {
    match at {
        Some(at) => {
            let wait = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
        }
        None => std::future::pending().await,
    }
}
