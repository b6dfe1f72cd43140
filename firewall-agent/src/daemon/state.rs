//! The running daemon's state and every way the served policy changes. All
//! changes funnel through [`Daemon::apply`]: compile, write the inactive
//! table set, flip; a failure leaves the running policy in force.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::compile::{CompiledTables, compile_next, missing_endpoints};
use crate::dataplane::{ApplyReport, AttachOutcome, Dataplane, DataplaneError};
use crate::links::{self, InterfaceIndex};
use crate::persist::{self, Edit};
use crate::policy::{self, LoadError, Policy, PolicyWarning, Validated};

use super::{OnExit, RunError, RunOptions};

/// Where the policy comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySource {
    /// The policy file: native TOML, or a vault's Azure JSON.
    pub path: PathBuf,
    /// For Azure JSON: the subnet map giving prefixes and endpoints.
    pub subnet_map: Option<PathBuf>,
}

impl PolicySource {
    /// Reads and validates the policy.
    pub fn load(&self) -> Result<Validated, LoadError> {
        policy::load_policy(&self.path, self.subnet_map.as_deref())
    }

    /// Whether the file is the native format (changes are written back
    /// only to native files), as the loader decides it.
    pub fn is_native(&self) -> bool {
        self.read()
            .is_ok_and(|text| policy::PolicyFormat::detect(&self.path, &text) == policy::PolicyFormat::Native)
    }

    /// The policy file's text (bounded, regular files only).
    fn read(&self) -> std::io::Result<String> {
        policy::input::read_text_file(&self.path, policy::input::MAX_POLICY_BYTES)
    }

    fn base_dir(&self) -> &Path {
        self.path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }
}

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
    /// The new policy's file text, written once confirmed.
    pub text: String,
    /// The policy file as it was when the apply began: a reload that finds
    /// it unchanged has nothing to say and must not cancel the apply.
    pub file_before: Option<String>,
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
    /// Set once `vaultfw detach` removed the filter.
    pub(super) detached: bool,
}

impl Daemon {
    /// Writes the policy, then attaches (adopting pinned links).
    pub fn start(
        mut dataplane: Dataplane,
        options: RunOptions,
        policy: Policy,
        interfaces: InterfaceIndex,
    ) -> Result<Self, RunError> {
        // Nothing was pinned before this run: a failed start leaves nothing.
        let fresh = dataplane.generation() == 0;
        let started = (|| {
            let tables = compile_for(&dataplane, &options, &policy, &interfaces);
            let report = dataplane.apply(&tables, dataplane.generation() + 1)?;
            log_applied(&report, "start");
            super::interfaces::attach_at_start(
                &mut dataplane,
                &options.interfaces,
                &policy,
                options.xdp_mode,
            )?;
            Ok::<_, DataplaneError>(report)
        })();
        let report = match started {
            Ok(report) => report,
            Err(error) => {
                if fresh {
                    let _ = dataplane.detach_all();
                } else {
                    // Undo what this run attached; adopted links were in
                    // force before and stay.
                    for name in fresh_attachments(&dataplane) {
                        let _ = dataplane.detach(&name);
                    }
                }
                return Err(error.into());
            }
        };
        let attached: Vec<String> = dataplane
            .attached()
            .iter()
            .map(|a| format!("{}({},{})", a.name, a.mode, a.program))
            .collect();
        tracing::info!(
            interfaces = attached.join(","),
            generation = report.generation,
            default_action = ?policy.default_action,
            mode = ?policy.mode,
            on_exit = ?options.on_exit,
            "filtering"
        );
        Ok(Daemon {
            dataplane,
            options,
            policy,
            interfaces,
            generation: report.generation,
            pending: None,
            detached: false,
        })
    }

    /// The options the daemon runs with.
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    /// The kernel side.
    pub fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    /// Applies `policy` compiled against `interfaces` as the next
    /// generation. On success it becomes the running policy. The
    /// interfaces it names are attached before it serves; the ones no
    /// longer named are detached after.
    pub(super) fn apply(
        &mut self,
        policy: Policy,
        interfaces: InterfaceIndex,
        cause: &str,
    ) -> Result<ApplyReport, DataplaneError> {
        let attached = self.attach_for(&policy).inspect_err(|error| {
            tracing::error!(%error, cause, generation = self.generation, "an interface the policy names cannot be filtered; the running policy stays");
        })?;
        let tables = compile_for(&self.dataplane, &self.options, &policy, &interfaces);
        let report = match self.dataplane.apply(&tables, self.generation + 1) {
            Ok(report) => report,
            Err(error) => {
                tracing::error!(%error, cause, generation = self.generation, "applying the policy failed in the kernel; the running policy stays");
                self.detach_attached(&attached);
                return Err(error);
            }
        };
        log_applied(&report, cause);
        self.generation = report.generation;
        self.policy = policy;
        self.interfaces = interfaces;
        self.detach_unwanted();
        Ok(report)
    }

    /// Re-reads the policy file (SIGHUP, an edit). A bad file is refused
    /// with its errors and the running policy stays in force.
    pub fn reload(&mut self, cause: &str) {
        if let Some(pending) = &self.pending {
            let now = policy::input::read_text_file(&self.options.source.path, policy::input::MAX_POLICY_BYTES).ok();
            if now.is_some() && now == pending.file_before {
                tracing::info!(cause, "policy file unchanged during an unconfirmed apply; nothing to reload");
                return;
            }
        }
        let loaded = self
            .options
            .source
            .load()
            .map_err(|e| e.to_string())
            .and_then(|Validated { policy, warnings }| {
                log_warnings(&warnings);
                let interfaces = endpoint_interfaces(&policy);
                refuse_missing_endpoints(&policy, &interfaces)?;
                Ok((policy, interfaces))
            });
        match loaded {
            Ok((policy, interfaces)) => {
                if self.pending.is_some() {
                    tracing::warn!(cause, "policy file changed during an unconfirmed apply; the apply is superseded");
                    self.pending = None;
                }
                let _ = self.apply(policy, interfaces, cause);
            }
            Err(error) => tracing::error!(
                %error,
                cause,
                generation = self.generation,
                "policy reload refused; the running policy stays"
            ),
        }
    }

    /// A link appeared, vanished or changed: attach what appeared or came
    /// back, detach what vanished, and follow endpoint interfaces.
    pub fn refresh_links(&mut self) {
        self.reconcile_links();
        let interfaces = endpoint_interfaces(&self.policy);
        if interfaces == self.interfaces {
            return;
        }
        for name in self.interfaces.keys().filter(|n| !interfaces.contains_key(*n)) {
            tracing::warn!(interface = %name, "endpoint interface vanished: its subnet rules match nothing until it returns");
        }
        for (name, index) in interfaces.iter().filter(|(n, i)| self.interfaces.get(*n) != Some(i)) {
            tracing::info!(interface = %name, ifindex = index, "endpoint interface present: its subnet rules match again");
        }
        let policy = self.policy.clone();
        let _ = self.apply(policy, interfaces, "link change");
    }

    /// The next time something must happen by itself: a rule expiry or the
    /// rollback of an unconfirmed apply.
    pub fn next_deadline(&self) -> Option<SystemTime> {
        let expiry = next_expiry(&self.policy);
        let rollback = self.pending.as_ref().map(|p| p.deadline);
        expiry.into_iter().chain(rollback).min()
    }

    /// Rolls back an unconfirmed apply whose time is up, and removes
    /// expired rules (from the file too, so a reload agrees).
    pub fn on_deadline(&mut self, now: SystemTime) {
        if self.pending.as_ref().is_some_and(|p| p.deadline <= now) {
            let pending = self.pending.take().expect("checked just above");
            tracing::warn!("apply not confirmed in time: rolling back to the previous policy");
            let _ = self.apply(pending.previous, pending.previous_interfaces, "rollback of an unconfirmed apply");
        }
        let expired = expired_rules(&self.policy, now);
        if expired.is_empty() {
            return;
        }
        let mut policy = self.policy.clone();
        remove_expired(&mut policy, now);
        let interfaces = self.interfaces.clone();
        if self.apply(policy, interfaces, "rule expiry").is_err() {
            return;
        }
        for (what, _) in &expired {
            tracing::info!(rule = %what, "rule expired and was removed");
        }
        // Then the file, which now reads as the served policy (a rule past
        // its expiry is left out when parsed).
        if self.options.source.is_native() {
            let edits: Vec<Edit> = expired.into_iter().map(|(_, edit)| edit).collect();
            if let Err(error) = self.write_back(&edits) {
                tracing::error!(%error, "could not remove the expired rules from the policy file");
            }
        }
    }

    /// Edits the native policy file in place (keeping comments) and
    /// validates the result; returns the new text and policy without
    /// writing anything.
    pub(super) fn edited(&self, edits: &[Edit]) -> Result<(String, Validated), String> {
        let path = &self.options.source.path;
        let text = self
            .options
            .source
            .read()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if policy::PolicyFormat::detect(path, &text) != policy::PolicyFormat::Native {
            return Err(format!(
                "{} is an Azure JSON policy: edit it (or the subnet map) and send SIGHUP, or \
                 switch to the native format",
                path.display()
            ));
        }
        // The edit goes on top of the file: it must hold the policy being
        // served, or the change would also apply edits nobody reloaded.
        let on_disk = policy::parse_toml_with_base(&text, self.options.source.base_dir());
        if !on_disk.is_ok_and(|v| v.policy == self.policy) {
            return Err(format!(
                "{} no longer holds the policy being served (it was edited and not reloaded, \
                 or its reload was refused); reload it (SIGHUP) or restore it, then retry; \
                 nothing changed",
                path.display()
            ));
        }
        let edited = persist::edit_native(&text, edits).map_err(|e| e.to_string())?;
        let validated = policy::parse_toml_with_base(&edited, self.options.source.base_dir())
            .map_err(|errors| errors.to_string())?;
        Ok((edited, validated))
    }

    /// Writes `edits` to the policy file.
    fn write_back(&self, edits: &[Edit]) -> Result<(), String> {
        let (text, _) = self.edited(edits)?;
        persist::write_atomically(&self.options.source.path, &text).map_err(|e| e.to_string())
    }

    /// Stops: keeps or removes the filter as `--on-exit` says.
    pub fn stop(mut self) -> Result<(), RunError> {
        if self.detached {
            return Ok(());
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

/// Compiles `policy` for the loaded maps: hit slots stay with their rules
/// (relative to what the kernel serves), and the access log is set as the
/// daemon was told.
fn compile_for(
    dataplane: &Dataplane,
    options: &RunOptions,
    policy: &Policy,
    interfaces: &InterfaceIndex,
) -> CompiledTables {
    compile_next(policy, interfaces, dataplane.hit_slots(), &dataplane.active_tables())
        .with_access_log(options.event_rate, options.log_allowed)
}

fn fresh_attachments(dataplane: &Dataplane) -> Vec<String> {
    dataplane
        .attached()
        .iter()
        .filter(|a| a.outcome == AttachOutcome::Attached)
        .map(|a| a.name.clone())
        .collect()
}

/// The endpoint interfaces `policy` names, resolved now.
pub(super) fn endpoint_interfaces(policy: &Policy) -> InterfaceIndex {
    links::resolve(
        policy
            .virtual_network_rules
            .iter()
            .filter_map(|r| r.endpoint.interface.as_deref()),
    )
}

/// Refuses a policy whose subnet rule names a missing interface without
/// `ignore_missing_endpoint`; logs the ones that may wait for it.
pub(super) fn refuse_missing_endpoints(
    policy: &Policy,
    interfaces: &InterfaceIndex,
) -> Result<(), String> {
    let mut refused = Vec::new();
    for (id, interface) in missing_endpoints(policy, interfaces) {
        let ignore = policy
            .virtual_network_rules
            .iter()
            .any(|r| r.id == id && r.ignore_missing_endpoint);
        if ignore {
            tracing::warn!(rule = id, interface, "endpoint interface missing: the rule matches nothing until it appears (ignore_missing_endpoint = true)");
        } else {
            refused.push(format!(
                "virtual_network_rules {id:?}: endpoint interface {interface:?} does not exist; \
                 create it, fix the endpoint, or set ignore_missing_endpoint = true"
            ));
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused.join("\n"))
    }
}

/// The rules of `policy` whose `expires_at` has passed, described, with
/// the file edit that removes each.
fn expired_rules(policy: &Policy, now: SystemTime) -> Vec<(String, Edit)> {
    let ip = policy
        .ip_rules
        .iter()
        .filter(|r| r.expires_at.is_some_and(|t| t <= now))
        .map(|r| (format!("ip rule {r}"), Edit::RemoveIpRule(r.network)));
    let vnet = policy
        .virtual_network_rules
        .iter()
        .filter(|r| r.expires_at.is_some_and(|t| t <= now))
        .map(|r| (format!("virtual network rule {}", r.id), Edit::RemoveVnetRule(r.id.clone())));
    ip.chain(vnet).collect()
}

/// Removes expired IP and subnet rules from `policy`.
fn remove_expired(policy: &mut Policy, now: SystemTime) {
    policy.ip_rules.retain(|r| r.expires_at.is_none_or(|t| t > now));
    policy
        .virtual_network_rules
        .retain(|r| r.expires_at.is_none_or(|t| t > now));
}

/// The earliest `expires_at` among `policy`'s rules.
fn next_expiry(policy: &Policy) -> Option<SystemTime> {
    let ip = policy.ip_rules.iter().filter_map(|r| r.expires_at);
    let vnet = policy.virtual_network_rules.iter().filter_map(|r| r.expires_at);
    ip.chain(vnet).min()
}

fn log_warnings(warnings: &[PolicyWarning]) {
    for warning in warnings {
        tracing::warn!(path = %warning.path, "{}", warning.message);
    }
}

fn log_applied(report: &ApplyReport, cause: &str) {
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
        tracing::info!(generation = report.generation, cause, "policy unchanged; nothing written");
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
        assert_eq!(expired[0].1, Edit::RemoveIpRule("198.51.100.7/32".parse().unwrap()));
        remove_expired(&mut policy, expiry);
        assert_eq!(policy.ip_rules.len(), 1);
        assert_eq!(next_expiry(&policy), None);
    }
}
