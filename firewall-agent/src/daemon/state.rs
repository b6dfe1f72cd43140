//! The running daemon's state and its lifecycle: start, stop, reloads,
//! deadlines (an unconfirmed apply's rollback, rule expiry) and interface
//! events. Every change of the served policy goes through
//! [`Daemon::reconcile`] (`reconcile.rs`): resolve, declare, enforce; a
//! failure leaves the running policy in force.

use std::time::{Duration, SystemTime};

use crate::compile::{CompiledTables, EndpointOwner, compile_next, missing_endpoints};
use crate::dataplane::{ApplyReport, Dataplane, DataplaneError};
pub(super) use crate::links::endpoint_interfaces;
use crate::links::{self, InterfaceIndex};
use crate::persist::{self, Edit};
use crate::policy::{self, Policy, PolicyFormat, PolicyWarning, Validated, WriteBack};

use super::audit::Request;
use super::health::{Health, ReloadOutcome, SocketIdentity};
use super::reconcile::{Change, ChangeError};
use super::{OnExit, RunError, RunOptions};
use crate::control::replies::PolicySync;
use crate::telemetry::audit::{AuditLog, Caller, Entry, Outcome, Snapshot};

/// The cause of a reload the policy file's watch asked for.
pub const FILE_CHANGED: &str = "policy file changed";

/// How long after a refused removal of expired rules it is tried again.
const EXPIRY_RETRY: Duration = Duration::from_secs(5);

/// Where the policy comes from (defined with the loader; kept here for the
/// daemon's callers).
pub use crate::policy::PolicySource;

/// Loads the policy and checks its endpoints exist (or may wait).
pub fn load_checked(source: &PolicySource) -> Result<(Policy, InterfaceIndex), RunError> {
    let Validated { policy, warnings } = source.load()?;
    log_warnings(&warnings);
    let interfaces = endpoint_interfaces(&policy);
    refuse_missing_endpoints(&policy, &interfaces).map_err(RunError::MissingEndpoint)?;
    Ok((policy, interfaces))
}

/// An `apply --confirm-within` waiting for `confirm`.
pub struct PendingApply {
    /// The policy to return to if no confirmation arrives.
    pub previous: Policy,
    /// The endpoints it was compiled with.
    pub previous_interfaces: InterfaceIndex,
    /// When to roll back.
    pub deadline: SystemTime,
    /// What the policy files get once confirmed.
    pub files: WriteBack,
    /// The policy file as it was when the apply began: a reload that finds
    /// it unchanged has nothing to say and must not cancel the apply.
    pub file_before: Option<String>,
}

/// The last unconfirmed apply that was rolled back (and no apply since):
/// a `confirm` that comes after it is refused, not taken for a no-op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolledBack {
    /// The generation the apply served while it awaited confirmation.
    pub generation: u64,
    /// When it was rolled back (its deadline, when the kernel did it then).
    pub at: SystemTime,
}

/// The running daemon.
pub struct Daemon {
    pub(super) dataplane: Dataplane,
    pub(super) options: RunOptions,
    /// The policy the kernel serves.
    pub(super) policy: Policy,
    /// Endpoint interfaces of `policy` that exist, as last resolved.
    pub(super) interfaces: InterfaceIndex,
    /// The generation the kernel serves.
    pub(super) generation: u64,
    /// An unconfirmed apply.
    pub(super) pending: Option<PendingApply>,
    /// The last unconfirmed apply rolled back, until the next apply.
    pub(super) rolled_back: Option<RolledBack>,
    /// Set once `vaultfw detach` removed the filter.
    pub(super) detached: bool,
    /// What `show` and the metrics say beyond the kernel's maps.
    pub(super) health: Health,
    /// The control socket as bound, to notice its removal.
    socket: SocketIdentity,
    /// After the kernel refused removing expired rules: not before then
    /// again (the kernel keeps them from matching meanwhile).
    expiry_retry_at: Option<SystemTime>,
    /// Where audit records go.
    pub(super) audit: AuditLog,
    /// The policy file's text as the daemon last wrote it: the watch's
    /// event for that write is not a reload.
    pub(super) written_back: Option<String>,
    /// The native policy file as the daemon last wrote it, parsed: the
    /// next CLI change edits it (see `edit.rs`).
    pub(super) native_file: Option<super::edit::NativeFile>,
    /// A change freed memory since the last trim (`memory.rs`).
    pub(super) heap_to_trim: bool,
}

impl Daemon {
    /// Writes the policy, then attaches (adopting pinned links), then
    /// detaches the pinned links of interfaces this run no longer names.
    /// A start that fails changes nothing that was in force: the previous
    /// generation is served again (one flip back), links this run created
    /// are removed, and a pin directory this run created is removed whole.
    pub fn start(
        mut dataplane: Dataplane,
        options: RunOptions,
        policy: Policy,
        interfaces: InterfaceIndex,
    ) -> Result<Self, RunError> {
        // Nothing was pinned before this run: a failed start leaves nothing.
        let fresh = dataplane.generation() == 0 && !dataplane.migrating();
        // What the pins served before this run, to log a `--lookup` switch.
        let previous_lookup = (dataplane.generation() != 0).then(|| dataplane.served_lookup());
        let started = (|| {
            let tables = compile_for(&dataplane, &options, &policy, &interfaces, None);
            let report = dataplane.apply(&tables, dataplane.next_generation())?;
            super::interfaces::attach_at_start(
                &mut dataplane,
                &options.interfaces,
                &policy,
                options.xdp_mode,
            )?;
            dataplane.commit_pins()?;
            Ok::<_, DataplaneError>(report)
        })();
        let report = match started {
            Ok(report) => report,
            Err(error) => {
                if fresh {
                    let _ = dataplane.detach_all();
                } else {
                    dataplane.abandon_start();
                }
                return Err(error.into());
            }
        };
        log_applied(&report, "start");
        let lookup = dataplane.served_lookup();
        if let Some(from) = previous_lookup.filter(|from| *from != lookup) {
            tracing::info!(
                from = from.name(),
                to = lookup.name(),
                generation = report.generation,
                "lookup switched"
            );
        }
        detach_unmanaged_at_start(&mut dataplane, &options.interfaces, &policy);
        // A list is a JSON array in the record (docs/logging.md).
        let attached: Vec<serde_json::Value> = dataplane
            .attached()
            .iter()
            .map(|a| serde_json::json!({ "name": a.name, "mode": a.mode, "entry": a.program }))
            .collect();
        let record = serde_json::json!({ "vaultfw": { "interfaces": attached } });
        tracing::info!(
            ecs = %record,
            generation = report.generation,
            default_action = policy.default_action.name(),
            mode = policy.mode.name(),
            on_exit = options.on_exit.name(),
            lookup = lookup.name(),
            "filtering"
        );
        let socket = SocketIdentity::of(&options.socket);
        Ok(Daemon {
            dataplane,
            options,
            policy,
            interfaces,
            generation: report.generation,
            pending: None,
            rolled_back: None,
            detached: false,
            health: Health::default(),
            socket,
            expiry_retry_at: None,
            audit: AuditLog::default(),
            written_back: None,
            native_file: None,
            heap_to_trim: true,
        })
    }

    /// Records the audit trail to `audit` (the daemon log only until then).
    pub fn with_audit_log(mut self, audit: AuditLog) -> Self {
        self.audit = audit;
        self
    }

    /// Records the rollback of an unconfirmed apply that the start found
    /// in the pins ([`Dataplane::rolled_back_at_start`]): done by the
    /// kernel at its deadline while no daemon ran (`event.reason`
    /// `timer`), or by this start because the daemon that could confirm it
    /// is gone (`shutdown`). Call once, after [`Daemon::with_audit_log`].
    pub fn audit_start_rollback(&mut self) {
        let Some(reverted) = self.dataplane.rolled_back_at_start() else {
            return;
        };
        let now = SystemTime::now();
        self.rolled_back = Some(RolledBack {
            generation: reverted.dropped_generation,
            at: now,
        });
        let served = self.audit_snapshot();
        // The dropped generation's rules are not known here: only its
        // number; the policy shown is the one that serves again.
        let before = Snapshot {
            generation: reverted.dropped_generation,
            ..served.clone()
        };
        let after = Snapshot {
            generation: reverted.generation,
            ..served
        };
        let cause = if reverted.by_kernel {
            "timer"
        } else {
            "shutdown"
        };
        self.audit.record(&Entry {
            action: "rollback",
            caller: &Caller::Daemon,
            cause: Some(cause),
            request: None,
            before: &before,
            after: &after,
            outcome: Outcome::Applied,
        });
    }

    /// Where audit records go.
    pub fn audit_log(&mut self) -> &mut AuditLog {
        &mut self.audit
    }

    /// The options the daemon runs with.
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    /// The kernel side.
    pub fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    /// Re-reads the policy file (SIGHUP, an edit). A bad file is refused
    /// with its errors and the running policy stays in force; either way
    /// the outcome is kept for `show` and the metrics, and audited. The
    /// watch's event for the daemon's own write of the file (a CLI
    /// change's write-back) is not a reload: nothing is recorded for it.
    pub fn reload(&mut self, cause: &str) {
        if cause == FILE_CHANGED && self.is_own_write_back() {
            tracing::info!(
                cause,
                "the policy file holds what the daemon wrote; not a reload"
            );
            return;
        }
        let before = self.audit_snapshot();
        let outcome = self.reload_file(cause);
        let request = Request {
            action: "reload",
            caller: &Caller::File,
            cause: Some(cause),
            request: None,
        };
        self.audit(
            request,
            &before,
            outcome.clone().err().map(Outcome::Refused),
        );
        if let Err(error) = &outcome {
            tracing::error!(%error, cause, generation = self.generation, "policy reload refused; the running policy stays");
        }
        self.health.last_reload = Some(ReloadOutcome {
            at: SystemTime::now(),
            cause: cause.to_owned(),
            success: outcome.is_ok(),
            error: outcome.err(),
        });
    }

    /// Whether the policy file holds exactly what the daemon last wrote,
    /// declaring what it serves.
    fn is_own_write_back(&self) -> bool {
        if self.holds_own_write() {
            return true;
        }
        self.pending.is_none()
            && self.written_back.is_some()
            && self.options.source.file_text().ok() == self.written_back
            && self
                .options
                .source
                .load()
                .is_ok_and(|file| file.policy == self.policy)
    }

    fn reload_file(&mut self, cause: &str) -> Result<(), String> {
        if let Some(pending) = &self.pending {
            let now = self.options.source.file_text().ok();
            if now.is_some() && now == pending.file_before {
                tracing::info!(
                    cause,
                    "policy file unchanged during an unconfirmed apply; nothing to reload"
                );
                return Ok(());
            }
        }
        let Validated { policy, warnings } =
            self.options.source.load().map_err(|e| e.to_string())?;
        log_warnings(&warnings);
        let interfaces = endpoint_interfaces(&policy);
        refuse_missing_endpoints(&policy, &interfaces)?;
        if self.pending.is_some() {
            tracing::warn!(
                cause,
                "policy file changed during an unconfirmed apply; the apply is superseded"
            );
            self.roll_back_pending("the policy file changed: it is applied instead");
        }
        self.reconcile(Change::declared(policy, interfaces, cause))
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Compares the policy file with the served policy, for `show` and the
    /// metrics (after every change, reload and `show`).
    pub(super) fn refresh_policy_sync(&mut self) {
        self.health.policy = if self.pending.is_some() {
            PolicySync::AwaitingConfirmation
        } else if self.holds_own_write() {
            // The file holds the daemon's own write of what it serves.
            PolicySync::InSync
        } else {
            match self.options.source.load() {
                Ok(file) if file.policy == self.policy => PolicySync::InSync,
                Ok(_) => PolicySync::Differs,
                Err(error) => PolicySync::Invalid {
                    error: error.to_string(),
                },
            }
        };
    }

    /// Notices a control socket removed or replaced behind the daemon's
    /// back (logged once: the CLI cannot reach the daemon until a restart;
    /// the filter stays in force).
    pub(super) fn check_socket(&mut self) {
        let present = self.socket.present();
        if !present && self.health.control_socket_present {
            tracing::error!(
                socket = %self.socket.path().display(),
                "the control socket was removed or replaced: the CLI cannot reach this daemon; restart it (the filter stays in force)"
            );
        }
        self.health.control_socket_present = present;
    }

    /// A link appeared, vanished or changed: attach what appeared or came
    /// back, detach what vanished, and follow endpoint interfaces.
    pub fn refresh_links(&mut self) {
        self.reconcile_links();
        if endpoint_interfaces(&self.policy) != self.interfaces {
            // Re-applying must not write the previous generation's set.
            self.roll_back_pending(
                "an endpoint interface changed: the policy must be applied again",
            );
        }
        let interfaces = endpoint_interfaces(&self.policy);
        if interfaces == self.interfaces {
            return;
        }
        for name in self
            .interfaces
            .keys()
            .filter(|n| !interfaces.contains_key(*n))
        {
            tracing::warn!(interface = %name, "endpoint interface vanished: its subnet rules match nothing until it returns");
        }
        for (name, index) in interfaces
            .iter()
            .filter(|(n, i)| self.interfaces.get(*n) != Some(i))
        {
            tracing::info!(interface = %name, ifindex = index, "endpoint interface present: its subnet rules match again");
        }
        let policy = self.policy.clone();
        let _ = self.reconcile(Change::declared(policy, interfaces, "link change"));
    }

    /// The next time something must happen by itself: a rule expiry or the
    /// rollback of an unconfirmed apply.
    pub fn next_deadline(&self) -> Option<SystemTime> {
        let expiry = next_expiry(&self.policy)
            .map(|at| self.expiry_retry_at.map_or(at, |retry| at.max(retry)));
        let rollback = self.pending.as_ref().map(|p| p.deadline);
        expiry.into_iter().chain(rollback).min()
    }

    /// Rolls back an unconfirmed apply whose time is up, and removes
    /// expired rules (from the file too, so a reload agrees).
    pub fn on_deadline(&mut self, now: SystemTime) {
        let timer = |action| Request {
            action,
            caller: &Caller::Timer,
            cause: None,
            request: None,
        };
        if self.pending.as_ref().is_some_and(|p| p.deadline <= now) {
            let before = self.audit_snapshot();
            self.roll_back_pending("not confirmed in time");
            let failed = self.pending.is_some().then(|| {
                Outcome::Refused(
                    "the kernel refused the rollback; it falls back by itself at the deadline"
                        .to_owned(),
                )
            });
            self.audit(timer("rollback"), &before, failed);
        }
        if expired_rules(&self.policy, now).is_empty()
            || self.expiry_retry_at.is_some_and(|at| now < at)
        {
            return;
        }
        let before = self.audit_snapshot();
        let outcome = self.expire(now);
        self.audit(
            timer("expiry"),
            &before,
            outcome.err().map(Outcome::Refused),
        );
    }

    /// Removes the rules of the served policy that expired by `now`.
    fn expire(&mut self, now: SystemTime) -> Result<(), String> {
        // Re-applying must not write the previous generation's set.
        self.roll_back_pending("a rule expired: the policy must be applied again");
        let expired = expired_rules(&self.policy, now);
        if expired.is_empty() {
            return Ok(());
        }
        let mut policy = self.policy.clone();
        remove_expired(&mut policy, now);
        let interfaces = self.interfaces.clone();
        // Declared first: the file loses the expired rules (it would read
        // as the served policy anyway: a rule past its expiry is left out
        // when parsed), then the kernel. The kernel already stopped them
        // matching at their time.
        let files = if self
            .options
            .source
            .format()
            .is_ok_and(|f| f == PolicyFormat::Native)
        {
            let edits: Vec<Edit> = expired.iter().map(|(_, edit)| edit.clone()).collect();
            self.edited_from(&edits, &policy)
                .map(|edited| WriteBack { policy: edited.text, subnet_map: None })
                .inspect_err(|error| tracing::error!(%error, "could not remove the expired rules from the policy file"))
                .ok()
        } else {
            None
        };
        let change = Change {
            declare: files.as_ref(),
            ..Change::declared(policy.clone(), interfaces.clone(), "rule expiry")
        };
        let removed = match self.reconcile(change) {
            // The file reads without the expired rules anyway (they are
            // left out when parsed): a file that cannot be written (a full
            // disk, a read-only ConfigMap) does not keep them in the kernel.
            Err(ChangeError::File { path, error }) => {
                tracing::warn!(path = %path.display(), %error, "the expired rules stay in the policy file (it cannot be written); they are left out whenever it is read");
                self.reconcile(Change::declared(policy, interfaces, "rule expiry"))
            }
            other => other,
        };
        if let Err(error) = removed {
            self.expiry_retry_at = Some(now + EXPIRY_RETRY);
            tracing::error!(%error, retry_in_s = EXPIRY_RETRY.as_secs(), "removing the expired rules failed; the kernel keeps them from matching");
            return Err(error.to_string());
        }
        self.expiry_retry_at = None;
        for (what, _) in &expired {
            tracing::info!(rule = %what, "rule expired and was removed");
        }
        Ok(())
    }

    /// [`Daemon::edited`] of a file that must hold `served` (the policy
    /// the file reads as now: for an expiry, without the expired rules).
    pub(super) fn edited_from(
        &self,
        edits: &[Edit],
        served: &Policy,
    ) -> Result<super::edit::Edited, EditRefused> {
        let source = &self.options.source;
        let path = &source.path;
        let files = source
            .read()
            .map_err(|e| EditRefused::Said(e.to_string()))?;
        if files.format() != PolicyFormat::Native {
            return Err(EditRefused::Said(azure_json_refusal(source)));
        }
        // The edit goes on top of the file: it must hold the policy being
        // served, or the change would also apply edits nobody reloaded.
        if !files.validate().is_ok_and(|v| v.policy == *served) {
            return Err(EditRefused::Said(format!(
                "{} no longer holds the policy being served (it was edited and not reloaded, \
                 or its reload was refused); reload it (SIGHUP) or restore it, then retry; \
                 nothing changed",
                path.display()
            )));
        }
        let mut doc = persist::NativeDocument::parse(files.text())
            .map_err(|e| EditRefused::Said(e.to_string()))?;
        doc.edit(edits)
            .map_err(|e| EditRefused::Said(e.to_string()))?;
        let edited = doc.text();
        let validated = files
            .with_text(edited.clone())
            .validate()
            .map_err(|e| match e {
                policy::LoadError::Invalid { errors, .. } => EditRefused::Invalid(errors),
                other => EditRefused::Said(other.to_string()),
            })?;
        let split = persist::SplitFile::of(doc, &edited);
        Ok(super::edit::Edited {
            text: edited,
            validated,
            split,
            ip_change: None,
            file_before: None,
        })
    }

    /// Rolls back an unconfirmed apply, if one is pending, logging `why`:
    /// the kernel serves the previous generation again (one flip of the
    /// active index — no table is rewritten, as past the deadline the
    /// kernel already serves that set) and the previous policy runs. If
    /// the kernel refuses the flip the apply stays pending: the kernel
    /// falls back by itself at the deadline.
    pub(super) fn roll_back_pending(&mut self, why: &str) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let applied_generation = self.generation;
        match self.dataplane.revert() {
            Ok(reverted) => {
                self.rolled_back = Some(RolledBack {
                    generation: applied_generation,
                    at: SystemTime::now().min(pending.deadline),
                });
                self.policy = pending.previous;
                self.interfaces = pending.previous_interfaces;
                self.native_file = None;
                self.generation = self.dataplane.generation();
                // The interfaces follow the policy back: what it names is
                // filtered again, what only the dropped apply named is not.
                self.reconcile_links();
                tracing::warn!(
                    cause = "rollback of an unconfirmed apply",
                    why,
                    generation = self.generation,
                    dropped_generation = reverted.map(|r| r.dropped_generation),
                    by_kernel = reverted.is_some_and(|r| r.by_kernel),
                    "unconfirmed apply rolled back"
                );
            }
            Err(error) => {
                tracing::error!(%error, why, "rolling back the unconfirmed apply failed; the kernel falls back by itself at its deadline");
                self.pending = Some(pending);
            }
        }
    }

    /// Stops: keeps or removes the filter as `--on-exit` says. An
    /// unconfirmed apply is rolled back first: nobody could confirm it
    /// after the stop, and the policy file never held it.
    pub fn stop(mut self) -> Result<(), RunError> {
        if self.detached {
            return Ok(());
        }
        if self.pending.is_some() {
            let before = self.audit_snapshot();
            self.roll_back_pending("vaultfw is stopping");
            let outcome = match self.pending {
                None => Outcome::Applied,
                Some(_) => Outcome::Refused(
                    "the kernel refused the rollback; it falls back by itself at the deadline"
                        .to_owned(),
                ),
            };
            let request = Request {
                action: "rollback",
                caller: &Caller::Daemon,
                cause: Some("shutdown"),
                request: None,
            };
            self.audit(request, &before, Some(outcome));
        }
        match self.options.on_exit {
            OnExit::Keep => {
                tracing::info!(
                    pin_dir = %self.options.pin_dir.display(),
                    generation = self.generation,
                    "vaultfw stopped; the filter stays in force (pinned). `vaultfw detach` removes it"
                );
                Ok(())
            }
            OnExit::Detach => self.detach(),
        }
    }

    /// Detaches from every interface and removes every pin.
    pub(super) fn detach(&mut self) -> Result<(), RunError> {
        self.dataplane.detach_all()?;
        self.detached = true;
        tracing::info!("detached; vaultfw stopped (the interfaces are no longer filtered)");
        Ok(())
    }
}

/// Detaches the pinned links of interfaces a start no longer filters (a
/// restart without an `--iface`, a subnet endpoint the policy dropped).
fn detach_unmanaged_at_start(
    dataplane: &mut Dataplane,
    selection: &super::interfaces::IfaceSelection,
    policy: &Policy,
) {
    let keep: std::collections::BTreeSet<String> = match links::list() {
        Ok(links) => super::interfaces::desired(selection, policy, &links)
            .into_keys()
            .collect(),
        Err(error) => {
            tracing::error!(%error, "cannot list the interfaces; pinned links of interfaces no longer named are left");
            return;
        }
    };
    match dataplane.detach_unmanaged(&keep) {
        Ok(detached) => {
            for interface in detached {
                tracing::warn!(interface = %interface, "interface no longer named by --iface or the policy: its pinned filter was detached");
            }
        }
        Err(error) => {
            tracing::error!(%error, "could not detach the pinned links of interfaces no longer named")
        }
    }
}

/// Compiles `policy` for the loaded maps: hit slots stay with their rules
/// (relative to what the kernel serves), and the access log is set as the
/// daemon was told. With `ip_change`, `policy` is the served one changed
/// only in its IPv4 IP rules, and those are compiled as a diff.
pub(super) fn compile_for(
    dataplane: &Dataplane,
    options: &RunOptions,
    policy: &Policy,
    interfaces: &InterfaceIndex,
    ip_change: Option<&crate::compile::IpRuleChange>,
) -> CompiledTables {
    let clock = crate::clock::MonotonicClock::now();
    let served = dataplane.active_tables();
    let slots = dataplane.hit_slots();
    let tables = match ip_change {
        Some(change) => {
            crate::compile::compile_next_changed(policy, interfaces, slots, &served, &clock, change)
        }
        None => compile_next(policy, interfaces, slots, &served, &clock),
    };
    // The tests run debug builds: every diff is checked against a full
    // compile.
    #[cfg(debug_assertions)]
    if ip_change.is_some() {
        let full = compile_next(policy, interfaces, slots, &served, &clock);
        assert!(
            tables == full,
            "the IP rules compiled as a diff differ from a full compile"
        );
    }
    tables
        .with_access_log(options.event_rate, options.log_allowed)
        .with_pass_forwarded(options.pass_forwarded)
        .with_compiled_lookup(options.lookup == crate::compile::cpt::Lookup::Compiled)
}

/// Refuses a policy whose subnet rule names a missing interface without
/// `ignore_missing_endpoint`; logs the ones that may wait for it.
pub(super) fn refuse_missing_endpoints(
    policy: &Policy,
    interfaces: &InterfaceIndex,
) -> Result<(), String> {
    let refusals = crate::compile::start_refusals(policy, interfaces);
    for (id, interface) in missing_endpoints(policy, interfaces) {
        if !refusals.contains(&(EndpointOwner::SubnetRule(id), interface)) {
            tracing::warn!(
                rule = id,
                interface,
                "endpoint interface missing: the rule matches nothing until it appears (ignore_missing_endpoint = true)"
            );
        }
    }
    let refused: Vec<String> = refusals
        .into_iter()
        .map(|refusal| match refusal {
            (EndpointOwner::SubnetRule(id), interface) => format!(
                "virtual_network_rules {id:?}: endpoint interface {interface:?} does not exist; \
                 create it, fix the endpoint, or set ignore_missing_endpoint = true \
                 (`network-rule add`: --ignore-missing-vnet-service-endpoint)"
            ),
            (EndpointOwner::PrivateEndpoint, interface) => format!(
                "private_endpoints {interface:?}: interface {interface:?} does not exist; create \
                 it or fix the interface name"
            ),
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused.join("\n"))
    }
}

/// Why a CLI change to an Azure JSON policy is refused, with the exact
/// command that converts it. The daemon does not edit ARM documents: the
/// JSON is the vault's (exported with `az keyvault show`, perhaps applied
/// back with `az`), and a change made here would be lost or fought over
/// on its next export; a converted native policy is vaultfw's own.
pub(super) fn azure_json_refusal(source: &PolicySource) -> String {
    let path = &source.path;
    let native = path.with_extension("toml");
    let map = source
        .subnet_map
        .as_ref()
        .map(|m| format!(" --subnet-map {}", m.display()))
        .unwrap_or_default();
    format!(
        "{} is an Azure JSON policy: vaultfw does not edit the vault's JSON; nothing changed. \
         Convert it once with `vaultfw convert {}{map} --out {}`, then run the daemon with \
         --policy {} (or edit the JSON or the subnet map and send SIGHUP)",
        path.display(),
        path.display(),
        native.display(),
        native.display()
    )
}

/// The rules of `policy` whose `expires_at` has passed, described, with
/// the file edit that removes each.
fn expired_rules(policy: &Policy, now: SystemTime) -> Vec<(String, Edit)> {
    let ip = policy
        .ip_rules
        .iter()
        .filter(|r| r.expires_at.is_some_and(|t| t <= now))
        .map(|r| (format!("ip rule {r}"), Edit::RemoveIpRule(r.network.into())));
    let ip6 = policy
        .ipv6_rules
        .iter()
        .filter(|r| r.expires_at.is_some_and(|t| t <= now))
        .map(|r| (format!("ip rule {r}"), Edit::RemoveIpRule(r.network.into())));
    let vnet = policy
        .virtual_network_rules
        .iter()
        .filter(|r| r.expires_at.is_some_and(|t| t <= now))
        .map(|r| {
            (
                format!("virtual network rule {}", r.id),
                Edit::RemoveVnetRule(r.id.clone()),
            )
        });
    ip.chain(ip6).chain(vnet).collect()
}

/// Removes expired IP and subnet rules from `policy`.
fn remove_expired(policy: &mut Policy, now: SystemTime) {
    policy
        .ip_rules
        .retain(|r| r.expires_at.is_none_or(|t| t > now));
    policy
        .ipv6_rules
        .retain(|r| r.expires_at.is_none_or(|t| t > now));
    policy
        .virtual_network_rules
        .retain(|r| r.expires_at.is_none_or(|t| t > now));
}

/// The earliest `expires_at` among `policy`'s rules.
fn next_expiry(policy: &Policy) -> Option<SystemTime> {
    let ip = policy
        .ip_rules
        .iter()
        .filter_map(|r| r.expires_at)
        .chain(policy.ipv6_rules.iter().filter_map(|r| r.expires_at));
    let vnet = policy
        .virtual_network_rules
        .iter()
        .filter_map(|r| r.expires_at);
    ip.chain(vnet).min()
}

fn log_warnings(warnings: &[PolicyWarning]) {
    for warning in warnings {
        tracing::warn!(path = %warning.path, "{}", warning.message);
    }
}

pub(super) fn log_applied(report: &ApplyReport, cause: &str) {
    if report.changed {
        tracing::info!(
            generation = report.generation,
            cause,
            ip_rules_added = report.ip_rules_added,
            ip_rules_removed = report.ip_rules_removed,
            map_writes = report.map_writes,
            "policy applied"
        );
    } else {
        tracing::info!(
            generation = report.generation,
            cause,
            "policy unchanged; nothing written"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn expired_rules_are_removed_and_the_rest_stay() {
        let mut policy = policy::parse_toml(
            r#"
default_action = "Deny"
ip_rules = ["203.0.113.0/24", { value = "198.51.100.7", expires_at = "2099-01-01T00:00:00Z" }]
"#,
        )
        .expect("valid")
        .policy;
        let expiry = humantime::parse_rfc3339("2099-01-01T00:00:00Z").unwrap();
        assert_eq!(next_expiry(&policy), Some(expiry));
        assert!(expired_rules(&policy, expiry - Duration::from_secs(1)).is_empty());
        let expired = expired_rules(&policy, expiry);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0, "ip rule 198.51.100.7");
        assert_eq!(
            expired[0].1,
            Edit::RemoveIpRule("198.51.100.7/32".parse().unwrap())
        );
        remove_expired(&mut policy, expiry);
        assert_eq!(policy.ip_rules.len(), 1);
        assert_eq!(next_expiry(&policy), None);
    }

    #[test]
    fn expired_ipv6_rules_are_due_and_removed_too() {
        let mut policy = policy::parse_toml(
            r#"
default_action = "Deny"
ip_rules = ["2001:db8:1::/48", { value = "2001:db8::7", expires_at = "2099-01-01T00:00:00Z" }]
"#,
        )
        .expect("valid")
        .policy;
        let expiry = humantime::parse_rfc3339("2099-01-01T00:00:00Z").unwrap();
        assert_eq!(next_expiry(&policy), Some(expiry));
        let expired = expired_rules(&policy, expiry);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0, "ip rule 2001:db8::7");
        assert_eq!(
            expired[0].1,
            Edit::RemoveIpRule("2001:db8::7/128".parse().unwrap())
        );
        remove_expired(&mut policy, expiry);
        assert_eq!(policy.ipv6_rules.len(), 1);
        assert_eq!(next_expiry(&policy), None);
    }
}

/// Why an edit of the policy file is refused.
#[derive(Debug)]
pub(super) enum EditRefused {
    /// The file cannot be edited (unreadable, Azure JSON, not the policy
    /// served): a sentence with the fix.
    Said(String),
    /// The edited policy is invalid: the validator's errors.
    Invalid(policy::PolicyErrors),
}

impl std::fmt::Display for EditRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EditRefused::Said(text) => f.write_str(text),
            EditRefused::Invalid(errors) => write!(f, "{errors}"),
        }
    }
}
