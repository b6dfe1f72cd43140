//! The one step every change of the served policy goes through once the
//! daemon runs — a reload, a CLI change, an `apply`, an expiry, an
//! interface event — in the order `docs/reconciler.md` describes:
//!
//! 1. resolve: compile the policy for the loaded maps and check it fits
//!    (the caller has validated it and resolved its endpoints);
//! 2. declare: write the files that declare it, when the change is not
//!    already in them (a CLI change, an `apply`), once the tables are
//!    known to fit; for a CLI change of IP rules, staged beside steps 1
//!    and 3 and put in place just before the flip;
//! 3. enforce: attach the interfaces it names anew, write the spare table
//!    set, flip (on probation until a deadline for an unconfirmed apply),
//!    then detach the interfaces no longer named.
//!
//! A refusal at step 1 or 2 never reaches the kernel: no generation, no
//! counter changes. A refusal at step 3 puts the files back and leaves the
//! previous generation serving. Returning to the previous generation (an
//! unconfirmed apply's rollback) is the other way the served policy
//! changes: one flip back, in `state.rs` (`roll_back_pending`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::dataplane::{ApplyReport, DataplaneError};
use crate::links::InterfaceIndex;
use crate::persist;
use crate::policy::{self, Policy, PolicySource, WriteBack};

use super::state::{Daemon, compile_for, log_applied};

/// One change of what the daemon serves.
pub(super) struct Change<'a> {
    /// The validated policy to serve next.
    pub policy: Policy,
    /// Its endpoint interfaces, as resolved (name → ifindex).
    pub interfaces: InterfaceIndex,
    /// The policy files that declare it, written before the kernel serves
    /// it; `None` when the files already declare it (a reload, a link
    /// change) or must not yet (an unconfirmed apply: written on confirm).
    pub declare: Option<&'a WriteBack>,
    /// For an unconfirmed apply: from this time on the kernel itself
    /// serves the previous generation again unless it is confirmed.
    pub fallback: Option<SystemTime>,
    /// What asked for it (logged).
    pub cause: &'a str,
    /// What it does to the served policy's IPv4 IP rules, when it changes
    /// nothing else (a CLI change of IP rules): compiled as a diff.
    pub ip_change: Option<crate::compile::IpRuleChange>,
    /// What the policy file held when `declare` was edited from it, when
    /// known without reading it again (a CLI change of the kept file):
    /// what a refused change puts back.
    pub file_before: Option<String>,
}

impl<'a> Change<'a> {
    /// A change the policy file already declares.
    pub(super) fn declared(policy: Policy, interfaces: InterfaceIndex, cause: &'a str) -> Self {
        Change {
            policy,
            interfaces,
            declare: None,
            fallback: None,
            cause,
            ip_change: None,
            file_before: None,
        }
    }
}

/// Why a change was refused. Either way the kernel serves what it served.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// A policy file could not be read or written: nothing changed.
    #[error("cannot write the policy file {path}: {error}; nothing changed (the kernel serves the previous generation)", path = path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: String,
    },
    /// The maps or the kernel refused the tables (or an interface the
    /// policy names could not be attached); the files were put back.
    #[error("{0}; nothing changed (the kernel serves the previous generation)")]
    Kernel(DataplaneError),
    /// The policy raises a limit above what the running filter's maps were
    /// sized for at start: only a start sizes them.
    #[error(
        "{field} = {declared} is above the {loaded} the running filter's maps were sized for at \
         start; put this policy in the policy file and restart vaultfw to size them (the filter \
         moves to new maps and keeps its rules and counters); nothing changed (the kernel serves \
         the previous generation)"
    )]
    Limits {
        /// The policy field.
        field: &'static str,
        /// What the policy declares.
        declared: usize,
        /// What the maps hold.
        loaded: u32,
    },
}

impl From<DataplaneError> for ChangeError {
    fn from(error: DataplaneError) -> Self {
        ChangeError::Kernel(error)
    }
}

/// Writes the policy files of `source`: the subnet map first (when
/// `files` has one), then the policy file; a policy file that cannot be
/// written puts the map back.
fn write_policy_files(source: &PolicySource, files: &WriteBack) -> Result<(), ChangeError> {
    let write = |path: &Path, text: &str| {
        persist::write_atomically(path, text).map_err(|error| file_error(path, error))
    };
    let Some((map, map_text)) = source.subnet_map.as_ref().zip(files.subnet_map.as_ref()) else {
        return write(&source.path, &files.policy);
    };
    let map_before = policy::input::read_text_file(map, policy::input::MAX_POLICY_BYTES).ok();
    write(map, map_text)?;
    write(&source.path, &files.policy).inspect_err(|_| {
        if let Some(before) = &map_before {
            let _ = persist::write_atomically(map, before);
        }
    })
}

/// The refusal of a change whose policy file `path` could not be written.
fn file_error(path: &Path, error: persist::PersistError) -> ChangeError {
    ChangeError::File {
        path: path.to_path_buf(),
        error: error.to_string(),
    }
}

/// The first limit of `policy` above what maps laid out as `loaded` hold.
fn limit_above_maps(policy: &Policy, loaded: firewall_common::HitSlots) -> Option<ChangeError> {
    let limits = &policy.limits;
    [
        ("limits.ip_rules", limits.ip_rules, loaded.ip_rules),
        (
            "limits.virtual_network_rules",
            limits.virtual_network_rules,
            loaded.vnet_rules,
        ),
        ("limits.ipv6_rules", limits.ipv6_rules, loaded.ipv6_rules),
    ]
    .into_iter()
    .find(|(_, declared, loaded)| *declared > *loaded as usize)
    .map(|(field, declared, loaded)| ChangeError::Limits {
        field,
        declared,
        loaded,
    })
}

impl Daemon {
    /// Makes `change` the served policy: resolve, declare, enforce (see
    /// the module's documentation). On success it is the running policy.
    pub(super) fn reconcile(&mut self, change: Change<'_>) -> Result<ApplyReport, ChangeError> {
        if let Some(refused) = limit_above_maps(&change.policy, self.dataplane.hit_slots()) {
            return Err(refused);
        }
        let Some(files) = change.declare else {
            let tables = self.resolve(&change)?;
            return self.enforce(tables, change, || Ok(()));
        };
        if change.ip_change.is_some() && change.fallback.is_none() && files.subnet_map.is_none() {
            return self.reconcile_staged(change, files);
        }
        let before = self.files_now(files)?;
        let tables = self.resolve(&change)?;
        // The file goes first: the tables must be known to fit before.
        self.dataplane
            .check_fits(&tables)
            .map_err(ChangeError::Kernel)?;
        self.write_files(files)?;
        let enforced = self.enforce(tables, change, || Ok(()));
        self.put_back_if_refused(&enforced, &before);
        enforced
    }

    /// [`Daemon::reconcile`] of a CLI change of IP rules. It names the
    /// interfaces the served policy names, so the only thing it enforces
    /// is its flip: its policy file (`files.policy`) is staged (written
    /// and synced under a temporary name) on a thread beside the compile
    /// and the table write. It is put in place there as soon as the
    /// compiled change is known to be refusable only by a failing map
    /// write (then put back if that happens), and otherwise just before
    /// the flip. Either way it is in place before the flip, and a change
    /// refused before its table write never touches the file, whenever
    /// the process dies.
    fn reconcile_staged(
        &mut self,
        mut change: Change<'_>,
        files: &WriteBack,
    ) -> Result<ApplyReport, ChangeError> {
        let path = &self.options.source.path.clone();
        let text = &files.policy;
        let before = match change.file_before.take() {
            Some(policy) => WriteBack {
                policy,
                subnet_map: None,
            },
            None => self.files_now(files)?,
        };
        self.written_back = Some(text.clone());
        let committed = std::sync::atomic::AtomicBool::new(false);
        let commit = |staged: persist::StagedWrite| {
            staged.commit()?;
            committed.store(true, std::sync::atomic::Ordering::Release);
            Ok(())
        };
        let enforced = std::thread::scope(|scope| {
            let (decided, decision) = std::sync::mpsc::channel::<bool>();
            // Ok(None): in place; Ok(Some): staged, for the flip to put in
            // place. Dropped unjoined (refused first), it removes the file.
            let staging = scope.spawn(move || {
                let staged = persist::stage(path, text)?;
                if decision.recv() == Ok(true) {
                    return commit(staged).map(|()| None);
                }
                Ok(Some(staged))
            });
            let put_in_place = || {
                let staged = staging
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                match staged {
                    Ok(Some(staged)) => commit(staged),
                    Ok(None) => Ok(()),
                    Err(error) => Err(error),
                }
                .map_err(|error| file_error(path, error))
            };
            let tables = self.resolve(&change)?;
            // A send fails only when staging failed: the flip reports it.
            let _ = decided.send(self.dataplane.refusal_is_ruled_out(&tables));
            self.enforce(tables, change, put_in_place)
        });
        if committed.load(std::sync::atomic::Ordering::Acquire) {
            self.put_back_if_refused(&enforced, &before);
        }
        enforced
    }

    /// Puts the policy files back as `before` when the kernel refused the
    /// change they declare.
    fn put_back_if_refused(
        &mut self,
        enforced: &Result<ApplyReport, ChangeError>,
        before: &WriteBack,
    ) {
        if let Err(ChangeError::Kernel(_)) = enforced
            && let Err(restore) = self.write_files(before)
        {
            tracing::error!(%restore, "the kernel refused the change and the policy file could not be put back: it holds a policy that is not served");
        }
    }

    /// Step 1: `change` compiled for the loaded maps, refused when it does
    /// not fit them.
    fn resolve(&self, change: &Change<'_>) -> Result<crate::compile::CompiledTables, ChangeError> {
        let tables = compile_for(
            &self.dataplane,
            &self.options,
            &change.policy,
            &change.interfaces,
            change.ip_change.as_ref(),
        );
        self.dataplane
            .check_capacity(&tables)
            .map_err(ChangeError::Kernel)?;
        Ok(tables)
    }

    /// What the policy files hold now, of those `files` would replace.
    pub(super) fn files_now(&self, files: &WriteBack) -> Result<WriteBack, ChangeError> {
        let read = |path: &Path| {
            policy::input::read_text_file(path, policy::input::MAX_POLICY_BYTES).map_err(|error| {
                ChangeError::File {
                    path: path.to_path_buf(),
                    error: error.to_string(),
                }
            })
        };
        let source = &self.options.source;
        let subnet_map = match (&source.subnet_map, &files.subnet_map) {
            (Some(map), Some(_)) => Some(read(map)?),
            _ => None,
        };
        Ok(WriteBack {
            policy: read(&source.path)?,
            subnet_map,
        })
    }

    /// Writes the policy files ([`write_policy_files`]). The text written
    /// is remembered: the watch's event for it is no reload.
    pub(super) fn write_files(&mut self, files: &WriteBack) -> Result<(), ChangeError> {
        self.written_back = Some(files.policy.clone());
        write_policy_files(&self.options.source, files)
    }

    /// Step 3: attaches what `change` names anew, serves `tables` as the
    /// next generation (on probation until `change.fallback`) once
    /// `before_flip` returns `Ok`, then detaches what is no longer named.
    /// Every change attaches what must be filtered and is not, a change of
    /// IP rules too: an interface whose attach failed earlier is filtered
    /// before the change is answered, not at the next tick.
    fn enforce(
        &mut self,
        tables: crate::compile::CompiledTables,
        change: Change<'_>,
        before_flip: impl FnOnce() -> Result<(), ChangeError>,
    ) -> Result<ApplyReport, ChangeError> {
        let Change {
            policy,
            interfaces,
            fallback,
            cause,
            ..
        } = change;
        let attached = self.attach_for(&policy).map_err(|error| {
            tracing::error!(%error, cause, generation = self.generation, "an interface the policy names cannot be filtered; the running policy stays");
            ChangeError::Kernel(error)
        })?;
        let next = self.dataplane.next_generation();
        let report = match fallback {
            Some(deadline) => before_flip().and_then(|()| {
                self.dataplane
                    .apply_with_fallback(&tables, next, deadline)
                    .map_err(ChangeError::Kernel)
            }),
            None => self.dataplane.apply_after(tables, next, before_flip),
        };
        let report = match report {
            Ok(report) => report,
            Err(error) => {
                if let ChangeError::Kernel(error) = &error {
                    tracing::error!(%error, cause, generation = self.generation, "applying the policy failed in the kernel; the running policy stays");
                }
                self.detach_attached(&attached);
                return Err(error);
            }
        };
        log_applied(&report, cause);
        self.generation = report.generation;
        self.policy = policy;
        self.interfaces = interfaces;
        // The kept file described the policy served until now; a reload
        // whose tables come out the same keeps the generation, so the
        // generation alone cannot tell it is stale. The CLI change that
        // wrote the file keeps it again once this returns.
        self.native_file = None;
        self.heap_to_trim = true;
        // On probation the previous generation may serve again (by the
        // kernel, with no daemon): what it filters stays attached until
        // the change is confirmed (see `wanted_now`).
        if fallback.is_none() {
            self.detach_unwanted();
        }
        Ok(report)
    }
}
