//! The only module that touches the kernel: loads the embedded XDP program,
//! sizes and fills its maps, attaches it to interfaces, flips table sets and
//! reads the verdict counters.
//!
//! The object holds two entry points over the same maps: one for Ethernet
//! devices, one for L3 devices whose frames start at the IP header
//! ([`AttachKind`]). Both are loaded; each interface runs the one its
//! framing needs.
//!
//! Apply is double-buffered (DESIGN.md section 2): a new policy is written
//! into the inactive table set, then one write to `VFW_ACTIVE` makes it
//! live. The program reads that index once per frame, so a frame is judged
//! wholly by the old policy or wholly by the new one.
//!
//! Deadlines are the kernel's to keep, so they hold with no daemon running
//! ([`crate::clock`] converts them): an apply with a fallback deadline
//! ([`Dataplane::apply_with_fallback`]) is served until that time and then,
//! by the program itself, the previous generation — still intact in the
//! other set — until [`Dataplane::confirm`] clears the deadline or
//! [`Dataplane::revert`] flips back. A rule's `expires_at` is in its trie
//! entries ([`firewall_common::RuleValue`]).

mod attach;
pub mod bpf_log;
mod cpt;
mod error;
pub mod features;
mod link;
mod migrate;
mod netlink;
pub mod pins;
mod sys;
mod tables;

use std::collections::BTreeMap;

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, TestRun, TestRunOptions, Xdp},
};
use firewall_common::{
    DEFAULT_TRUSTED_CAPACITY, DEFAULT_VNET_CAPACITY, EVENTS, HitSlots, MAPS, MapSpec, Sizing,
    TELEMETRY, VERDICT_COUNTERS, Verdict,
};

pub use attach::{AttachKind, AttachOutcome, AttachedInterface, XdpModeRequest};
pub use bpf_log::{BpfLogLevel, BpfLogReader};
pub use error::DataplaneError;
pub use netlink::{XdpAttachment, xdp_attachment};
pub use tables::{ApplyReport, Confirmation, EventTotals, Reverted, RuleHitTotals};

use crate::clock::MonotonicClock;
use crate::compile::{CompiledTables, VnetPrefixKey};
use crate::paths::PinDir;
use tables::{Predecessor, Tables};

/// The XDP program object, built for the BPF target by `build.rs`.
static PROGRAM_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/firewall-ebpf"));

/// Verdict counter totals, summed over every possible CPU, indexed by
/// [`Verdict::index`].
pub type VerdictTotals = [u64; Verdict::COUNT];

/// The loaded program, its maps and its attachments.
pub struct Dataplane {
    ebpf: Ebpf,
    tables: Tables,
    attached: Vec<AttachedInterface>,
    /// Where maps and links are pinned; `None` for an unpinned instance
    /// (`check`, tests, benchmarks).
    pin_dir: Option<PinDir>,
    /// Held while this instance uses `pin_dir`.
    _pin_lock: Option<pins::PinDirLock>,
    /// Maps a migration created, staged beside the pins they replace until
    /// [`Dataplane::commit_pins`] (see `migrate`).
    staged: Vec<&'static str>,
    /// The aya-log level the program was loaded with.
    bpf_log_level: BpfLogLevel,
}

/// Trusted-service and subnet prefixes a compiled table has room for
/// beyond the IP rules.
pub const COMPILED_EXTRA_PREFIXES: u32 = 16_384;
/// Virtual-network endpoints a compiled table has room for.
pub const COMPILED_SCOPES: u32 = 256;

/// Map capacities fixed at load time (entries per trie).
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    /// Entries in each IP-rule trie: the policy's `limits.ip_rules`.
    pub ip_rules: u32,
    /// Entries in each virtual-network trie (rules × prefixes × endpoints).
    pub vnet_entries: u32,
    /// Entries in each trusted-services trie.
    pub trusted_entries: u32,
    /// The per-rule hit counter layout (sizes `VFW_RULE_HITS`).
    pub hit_slots: HitSlots,
    /// Whether the program walks the compiled prefix tables for IPv4
    /// (`--lookup compiled`, fixed at load through
    /// `firewall_common::LOOKUP_COMPILED_GLOBAL`) and they get room for the
    /// policy; else they hold only an empty table, as the program never
    /// reads them.
    pub compiled_lookup: bool,
}

impl Capacity {
    /// Capacity for a policy's limits: `ip_rules` IP rules and
    /// `vnet_rules` virtual network rules. The subnet and trusted tries get
    /// fixed caps (they allocate per entry, so a cap is free until used).
    pub fn for_limits(ip_rules: u32, vnet_rules: u32) -> Self {
        Capacity {
            ip_rules,
            vnet_entries: DEFAULT_VNET_CAPACITY,
            trusted_entries: DEFAULT_TRUSTED_CAPACITY,
            hit_slots: HitSlots::new(ip_rules, vnet_rules).with_ipv6(ip_rules),
            compiled_lookup: false,
        }
    }

    /// This capacity for `lookup`: the compiled prefix tables get room for
    /// the policy only when the program reads them.
    pub fn with_lookup(mut self, lookup: crate::compile::cpt::Lookup) -> Self {
        self.compiled_lookup = lookup == crate::compile::cpt::Lookup::Compiled;
        self
    }

    /// This capacity with room for `ipv6_rules` IPv6 IP rules
    /// ([`Capacity::for_limits`] gives as many as IPv4 ones).
    pub fn with_ipv6_rules(mut self, ipv6_rules: u32) -> Self {
        self.hit_slots = self.hit_slots.with_ipv6(ipv6_rules);
        self
    }

    /// [`Capacity::for_limits`] with Key Vault's default of 127 virtual
    /// network rules.
    pub fn for_ip_rule_limit(ip_rules: u32) -> Self {
        Self::for_limits(ip_rules, 127)
    }

    /// The entries `spec` gets at load time: its declared entries, or
    /// this capacity's for a map with a load-time [`Sizing`].
    pub fn entries(&self, spec: &MapSpec) -> u32 {
        match spec.sizing {
            Sizing::Fixed => spec.max_entries,
            Sizing::IpRules => self.ip_rules,
            // An LPM trie needs at least one entry.
            Sizing::Ip6Rules => self.hit_slots.ipv6_rules.max(1),
            Sizing::VnetEntries => self.vnet_entries,
            Sizing::TrustedEntries => self.trusted_entries,
            Sizing::HitSlots => self.hit_slots.total(),
            Sizing::CompiledCells => self.compiled_cells(),
        }
    }

    /// Cells of each compiled prefix table: with the compiled lookup, room
    /// for every IP rule plus [`COMPILED_EXTRA_PREFIXES`] trusted-service
    /// and subnet prefixes in [`COMPILED_SCOPES`] endpoints
    /// (`firewall_common::cpt::cells_bound`); with the tries, an empty
    /// table's (so `--lookup trie` preallocates no table it never reads;
    /// switching the lookup moves the filter to new maps).
    pub fn compiled_cells(&self) -> u32 {
        let bound = if self.compiled_lookup {
            firewall_common::cpt::cells_bound(
                self.ip_rules.saturating_add(COMPILED_EXTRA_PREFIXES),
                COMPILED_EXTRA_PREFIXES.min(self.vnet_entries),
                COMPILED_SCOPES,
                // Only IPv4 entries live in the table: the slots below the
                // first IPv6 one.
                self.hit_slots.ip6(0),
            )
        } else {
            firewall_common::cpt::cells_bound(0, 0, 0, 0)
        };
        u32::try_from(bound).unwrap_or(u32::MAX)
    }

    /// Refuses tables that would not fit, before anything is written.
    pub(crate) fn check(&self, compiled: &CompiledTables) -> Result<(), DataplaneError> {
        let checks = [
            ("IP rule", compiled.ip_rules.len(), self.ip_rules),
            (
                "virtual network",
                compiled.vnet_rules.len(),
                self.vnet_entries,
            ),
            (
                "trusted service",
                compiled.trusted.len(),
                self.trusted_entries,
            ),
            (
                "IPv6 IP rule",
                compiled.ip6_rules.len(),
                self.hit_slots.ipv6_rules,
            ),
            (
                "IPv6 virtual network",
                compiled.vnet6_rules.len(),
                self.vnet_entries,
            ),
            (
                "IPv6 trusted service",
                compiled.trusted6.len(),
                self.trusted_entries,
            ),
        ];
        for (kind, entries, capacity) in checks {
            if entries > capacity as usize {
                return Err(DataplaneError::Capacity {
                    kind,
                    entries,
                    capacity,
                });
            }
        }
        // The program walks only the lookup it was loaded for: a set
        // compiled for the other would be served by tables never written.
        let lookup = crate::compile::cpt::Lookup::from_flags(compiled.flags);
        if lookup.is_compiled() != self.compiled_lookup {
            return Err(DataplaneError::LookupMismatch {
                tables: lookup.name(),
                program: self.lookup().name(),
            });
        }
        Ok(())
    }

    /// The IPv4 lookup the program is loaded for.
    pub fn lookup(&self) -> crate::compile::cpt::Lookup {
        if self.compiled_lookup {
            crate::compile::cpt::Lookup::Compiled
        } else {
            crate::compile::cpt::Lookup::Trie
        }
    }
}

impl Dataplane {
    /// Loads the program and creates its own, unpinned maps, sized by
    /// `capacity`. Nothing is attached: `check`, tests and benchmarks run it
    /// with BPF_PROG_TEST_RUN; the daemon uses [`Dataplane::open_pinned`].
    ///
    /// Errors: [`DataplaneError::Load`] with the kernel release and the
    /// tail of the verifier log when the kernel refuses the program.
    pub fn load(capacity: Capacity) -> Result<Self, DataplaneError> {
        Self::load_logging(capacity, BpfLogLevel::Off)
    }

    /// [`Dataplane::load`] with the program's cold-path records at `level`
    /// and above (read them with [`Dataplane::take_bpf_log`]).
    pub fn load_logging(capacity: Capacity, level: BpfLogLevel) -> Result<Self, DataplaneError> {
        Self::load_unpinned(capacity, level, &0).map_err(DataplaneError::privilege_aware)
    }

    /// Bench only (`bench-program`'s fixed-cost rows; neither the daemon
    /// nor any CLI command calls it): [`Dataplane::load`] with the
    /// per-frame recording pieces named by `omit` (a bitwise OR of
    /// `firewall_common::BENCH_OMIT_*`) left out of the program, so the
    /// bench can tell what each costs. Such a program does not count what
    /// it judges: never attach it to a real interface.
    pub fn load_omitting(capacity: Capacity, omit: &u32) -> Result<Self, DataplaneError> {
        Self::load_unpinned(capacity, BpfLogLevel::Off, omit)
            .map_err(DataplaneError::privilege_aware)
    }

    fn load_unpinned(
        capacity: Capacity,
        level: BpfLogLevel,
        omit: &u32,
    ) -> Result<Self, DataplaneError> {
        require_features()?;
        raise_memlock_limit();
        let mut ebpf = loader(&capacity, &level, omit)
            .load(PROGRAM_OBJECT)
            .map_err(|source| DataplaneError::Object { source })?;
        load_programs(&mut ebpf)?;
        let tables = Tables::take(&mut ebpf, capacity)?;
        Ok(Dataplane {
            ebpf,
            tables,
            attached: Vec::new(),
            pin_dir: None,
            _pin_lock: None,
            staged: Vec::new(),
            bpf_log_level: level,
        })
    }

    /// Loads the program with its maps pinned under `pin_dir`, reusing every
    /// pinned map whose shape still fits (rules, counters and the active
    /// table set survive a restart or an upgrade) and creating the others.
    /// Mounts bpffs when needed. Nothing is attached yet. The program
    /// records its cold paths at `level` and above ([`BpfLogLevel::Off`]:
    /// none); a pinned link is adopted only by a program that does not log.
    pub fn open_pinned(
        capacity: Capacity,
        pin_dir: PinDir,
        level: BpfLogLevel,
    ) -> Result<Self, DataplaneError> {
        Self::open_pinned_unchecked(capacity, pin_dir, level)
            .map_err(DataplaneError::privilege_aware)
    }

    fn open_pinned_unchecked(
        capacity: Capacity,
        pin_dir: PinDir,
        level: BpfLogLevel,
    ) -> Result<Self, DataplaneError> {
        require_features()?;
        raise_memlock_limit();
        pins::prepare(&pin_dir)?;
        let lock = pins::lock(&pin_dir)?;
        let had_pins = pin_dir.map(firewall_common::ACTIVE_SET).exists();
        let opened = Self::load_over_pins(capacity, &pin_dir, lock, level);
        if opened.is_err() && !had_pins {
            // Leave nothing behind from a run that never filtered.
            let _ = pins::remove_all(&pin_dir);
        }
        opened
    }

    fn load_over_pins(
        capacity: Capacity,
        pin_dir: &PinDir,
        lock: pins::PinDirLock,
        level: BpfLogLevel,
    ) -> Result<Self, DataplaneError> {
        pins::remove_staged(pin_dir)?;
        let plan = pins::PinPlan::read(pin_dir, pins::expected_shapes(&capacity));
        let fresh = migrate::fresh_maps(&plan);
        let map_pins: Vec<(&'static str, std::path::PathBuf)> = plan
            .maps
            .iter()
            .filter(|(shape, _)| !fresh.contains(&shape.name))
            .map(|(shape, _)| (shape.name, pin_dir.map(shape.name)))
            .collect();
        let mut loader = loader(&capacity, &level, &0);
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(PROGRAM_OBJECT)
            .map_err(|source| DataplaneError::Object { source })?;
        load_programs(&mut ebpf)?;
        if !fresh.is_empty() {
            pins::prepare_staging(pin_dir)?;
        }
        for name in &fresh {
            let path = pins::staged_map(pin_dir, name);
            let map = ebpf
                .map(name)
                .ok_or(DataplaneError::MissingMap { map: name })?;
            map.pin(&path).map_err(|e| DataplaneError::Pins {
                path: path.clone(),
                operation: "stage the new map at",
                source: std::io::Error::other(error_chain(&e)),
            })?;
        }
        let tables = if fresh.is_empty() {
            let tables = Tables::adopt(&mut ebpf, capacity)?;
            if tables.generation() > 0 {
                tracing::info!(
                    pin_dir = %pin_dir.root().display(),
                    generation = tables.generation(),
                    "adopted pinned maps: rules and counters carried over"
                );
            }
            tables
        } else {
            let mut tables = Tables::take(&mut ebpf, capacity)?;
            let inherited = migrate::pinned_capacity(pin_dir)
                .ok_or(DataplaneError::MissingMap {
                    map: firewall_common::RULE_HITS,
                })
                .and_then(|old| Predecessor::read(pin_dir, old))
                .and_then(|old| {
                    tables.inherit(
                        &old,
                        fresh.contains(&VERDICT_COUNTERS),
                        fresh.contains(&TELEMETRY),
                    )?;
                    Ok(old)
                });
            migrate::log_inherited(pin_dir, &fresh, &inherited);
            tables
        };
        if let Some(reverted) = tables.rolled_back_at_start() {
            log_start_rollback(pin_dir, reverted);
        }
        Ok(Dataplane {
            ebpf,
            tables,
            attached: Vec::new(),
            pin_dir: Some(pin_dir.clone()),
            _pin_lock: Some(lock),
            staged: fresh,
            bpf_log_level: level,
        })
    }

    /// Whether this start moves the filter to new maps (see `migrate`).
    pub fn migrating(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Makes this start's state the one a restart finds: maps created by a
    /// migration replace the old pins (one rename each). Call once every
    /// interface runs this program.
    pub fn commit_pins(&mut self) -> Result<(), DataplaneError> {
        if let Some(dir) = &self.pin_dir {
            pins::swap_staged(dir, &self.staged)?;
        }
        self.staged.clear();
        Ok(())
    }

    /// Undoes a start that failed before [`Dataplane::commit_pins`]: links
    /// moved to this program go back to the one they ran, links this run
    /// created are removed, and the staged maps are dropped. When no map
    /// was replaced, the previous generation is served again (one flip).
    /// The pins are then as the previous run left them.
    pub fn abandon_start(&mut self) {
        for attached in std::mem::take(&mut self.attached) {
            let name = attached.name.clone();
            let undone = match attached.outcome {
                AttachOutcome::Attached => xdp_program(&mut self.ebpf, attached.program)
                    .and_then(|program| attach::detach(program, attached)),
                AttachOutcome::Replaced => attach::restore_replaced(attached),
                AttachOutcome::Adopted => Ok(()),
            };
            if let Err(error) = undone {
                tracing::error!(interface = %name, %error, "undoing the failed start on this interface failed");
            }
        }
        if let Some(dir) = &self.pin_dir
            && !self.staged.is_empty()
        {
            if let Err(error) = pins::remove_staged(dir) {
                tracing::error!(%error, "removing the maps staged by the failed start failed");
            }
            self.staged.clear();
            return;
        }
        match self.tables.revert() {
            Ok(Some(reverted)) => tracing::warn!(
                generation = reverted.generation,
                "start failed: the previous generation is served again"
            ),
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, "start failed and the previous generation could not be restored")
            }
        }
    }

    /// The generation the kernel serves (0 before the first apply).
    pub fn generation(&self) -> u64 {
        self.tables.generation()
    }

    /// How the table set the kernel serves looks up IPv4 sources: read
    /// from the pinned `PolicyConfig` (what the program reads); for an
    /// unpinned instance, or unreadable pins, from the flags last written
    /// to the active set.
    pub fn served_lookup(&self) -> crate::compile::cpt::Lookup {
        let flags = self
            .pin_dir
            .as_ref()
            .and_then(pins::served_config)
            .map_or_else(|| self.tables.active_contents().flags, |c| c.flags);
        crate::compile::cpt::Lookup::from_flags(flags)
    }

    /// The number to give the next generation: above every generation
    /// ever written to these maps, a rolled-back one included, so a
    /// generation number always names one policy (`--if-generation`).
    pub fn next_generation(&self) -> u64 {
        self.tables.next_generation()
    }

    /// Refuses tables that would not fit the loaded maps, before anything
    /// is written ([`DataplaneError::Capacity`]).
    pub fn check_capacity(&self, compiled: &CompiledTables) -> Result<(), DataplaneError> {
        self.tables.capacity().check(compiled)
    }

    /// [`Dataplane::check_capacity`], and for the compiled lookup whether
    /// the compiled table fits its array: the table is built, so this
    /// costs what the write's build does (milliseconds at 100,000 rules).
    /// For a change whose files must not be written unless it can be
    /// served ([`DataplaneError::CompiledTable`] otherwise).
    pub fn check_fits(&self, compiled: &CompiledTables) -> Result<(), DataplaneError> {
        self.check_capacity(compiled)?;
        self.tables.check_compiled_room(compiled)
    }

    /// Whether an apply of `compiled` without a fallback can be refused
    /// only by the kernel failing a map write (no [`DataplaneError`] of
    /// [`Dataplane::check_fits`] nor [`DataplaneError::FallbackPending`]),
    /// told without building the compiled table. `false` when that needs
    /// the build (a table near its room) or a refusal is certain.
    pub fn refusal_is_ruled_out(&self, compiled: &CompiledTables) -> bool {
        self.tables.refusal_is_ruled_out(compiled)
    }

    /// Writes `compiled` as generation `generation` into the inactive table
    /// set and makes it active. When it equals what the active set holds,
    /// nothing is written and the report says so.
    ///
    /// Errors: [`DataplaneError::FallbackPending`] while an apply with a
    /// fallback deadline is neither confirmed nor reverted (the kernel may
    /// be serving either set); nothing is written then.
    pub fn apply(
        &mut self,
        compiled: &CompiledTables,
        generation: u64,
    ) -> Result<ApplyReport, DataplaneError> {
        self.tables
            .apply(compiled.clone(), generation, 0, || Ok(()))
    }

    /// [`Dataplane::apply`] that flips only once `before_flip` returns
    /// `Ok`: it is called after the inactive set is written (or, when
    /// `compiled` equals what is served, before reporting that), so work
    /// that must precede serving (the daemon's write of the policy file)
    /// can run beside that write. When it returns `Err` nothing changes in
    /// what is served and the error is returned as is (the written set is
    /// only the next apply's starting point).
    ///
    /// It takes `compiled` (kept as the set's record, not copied).
    ///
    /// Errors: those of [`Dataplane::apply`], converted; `before_flip`'s.
    pub fn apply_after<E: From<DataplaneError>>(
        &mut self,
        compiled: CompiledTables,
        generation: u64,
        before_flip: impl FnOnce() -> Result<(), E>,
    ) -> Result<ApplyReport, E> {
        self.tables.apply(compiled, generation, 0, before_flip)
    }

    /// [`Dataplane::apply`] on probation: the new generation serves until
    /// `deadline` (wall clock, converted to CLOCK_MONOTONIC once, here: it
    /// does not advance while the host is suspended), and from then on the
    /// program itself judges with the previous generation, which stays
    /// intact in the other set — whether or not a daemon runs. Then
    /// [`Dataplane::confirm`] keeps the new generation, [`Dataplane::revert`]
    /// returns to the previous one. A `compiled` equal to what is served
    /// writes nothing and arms no deadline.
    ///
    /// Errors: [`DataplaneError::FallbackPending`] as for `apply`;
    /// [`DataplaneError::NothingToFallBackTo`] before the first apply.
    pub fn apply_with_fallback(
        &mut self,
        compiled: &CompiledTables,
        generation: u64,
        deadline: std::time::SystemTime,
    ) -> Result<ApplyReport, DataplaneError> {
        let fallback_at_ns = MonotonicClock::now().to_monotonic_ns(deadline);
        self.tables
            .apply(compiled.clone(), generation, fallback_at_ns, || Ok(()))
    }

    /// Keeps the generation applied with a fallback deadline: clears the
    /// deadline (one config write). If the deadline has already passed the
    /// kernel serves the previous generation: nothing is written and
    /// [`Confirmation::TooLate`] says so (call [`Dataplane::revert`]).
    /// Without an armed deadline: [`Confirmation::NothingPending`].
    pub fn confirm(&mut self) -> Result<Confirmation, DataplaneError> {
        self.tables.confirm()
    }

    /// Serves again the generation that was served before the last
    /// [`Dataplane::apply`] or [`Dataplane::apply_with_fallback`]: one
    /// write of the active index back to the previous set, whose tables
    /// were never touched (past a fallback deadline the kernel is already
    /// serving them), with its generation number; an armed deadline is
    /// cleared. Nothing else is written — a set the kernel may be serving
    /// is never rewritten. `None` when there is nothing to return to (the
    /// last apply changed nothing, or none happened since the load). This
    /// is the rollback of an unconfirmed apply, on time or early (a stop, a
    /// change that must re-apply first), and of a start that failed.
    pub fn revert(&mut self) -> Result<Option<Reverted>, DataplaneError> {
        self.tables.revert()
    }

    /// The armed fallback deadline as wall-clock time, if any.
    pub fn fallback_deadline(&self) -> Option<std::time::SystemTime> {
        self.tables
            .fallback_at_ns()
            .map(|ns| MonotonicClock::now().to_wall(ns))
    }

    /// An unconfirmed apply that [`Dataplane::open_pinned`] found pending in
    /// the pins and rolled back (logged there): `by_kernel` when its
    /// deadline had passed and the kernel was already serving the previous
    /// generation.
    pub fn rolled_back_at_start(&self) -> Option<Reverted> {
        self.tables.rolled_back_at_start()
    }

    /// Detaches every pinned link of an interface not in `keep` (a restart
    /// that no longer names it): its pin is removed, which detaches it.
    /// Returns the interfaces detached.
    pub fn detach_unmanaged(
        &mut self,
        keep: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<String>, DataplaneError> {
        let Some(dir) = &self.pin_dir else {
            return Ok(Vec::new());
        };
        let held: std::collections::BTreeSet<&str> =
            self.attached.iter().map(|a| a.name.as_str()).collect();
        let mut detached = Vec::new();
        for interface in pins::pinned_link_names(dir)? {
            if keep.contains(&interface) || held.contains(interface.as_str()) {
                continue;
            }
            pins::unpin_link(dir, &interface)?;
            detached.push(interface);
        }
        Ok(detached)
    }

    /// Attaches the `kind` program to `interface` in the requested mode (a
    /// link pinned there by a previous run is adopted when it runs this
    /// very program, else moved to it with one link update).
    pub fn attach(
        &mut self,
        interface: &str,
        kind: AttachKind,
        mode: XdpModeRequest,
    ) -> Result<&AttachedInterface, DataplaneError> {
        let pin = self.pin_dir.as_ref().map(|dir| dir.link(interface));
        let program = xdp_program(&mut self.ebpf, kind)?;
        let attached = attach::attach(
            program,
            kind,
            interface,
            mode,
            pin.as_deref(),
            self.bpf_log_level == BpfLogLevel::Off,
        )
        .map_err(DataplaneError::privilege_aware)?;
        self.attached.push(attached);
        Ok(self.attached.last().expect("invariant: just pushed"))
    }

    /// Detaches the program from every interface it is attached to and, for
    /// a pinned instance, removes the pin directory: nothing stays behind.
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        let mut first_error = None;
        for attached in std::mem::take(&mut self.attached) {
            let detached = xdp_program(&mut self.ebpf, attached.program)
                .and_then(|program| attach::detach(program, attached));
            if let Err(e) = detached {
                first_error.get_or_insert(e);
            }
        }
        if let Some(dir) = &self.pin_dir
            && let Err(e) = pins::remove_all(dir)
        {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Detaches from one interface (removing its link pin).
    pub fn detach(&mut self, interface: &str) -> Result<bool, DataplaneError> {
        let Some(position) = self.attached.iter().position(|a| a.name == interface) else {
            return Ok(false);
        };
        let attached = self.attached.remove(position);
        let program = xdp_program(&mut self.ebpf, attached.program)?;
        attach::detach(program, attached).map(|()| true)
    }

    /// The interfaces the program is attached to.
    pub fn attached(&self) -> &[AttachedInterface] {
        &self.attached
    }

    /// Runs the loaded program once on `frame` (an Ethernet frame, as the
    /// NIC would hand it over) with BPF_PROG_TEST_RUN, without attaching
    /// anything, and returns the XDP action (`XDP_DROP` = 1, `XDP_PASS` =
    /// 2). The verdict counters count the frame like a received one. Runs
    /// on the calling thread's CPU; the ingress ifindex is the loopback's.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, DataplaneError> {
        self.test_run_repeated(frame, 1).map(|(action, _)| action)
    }

    /// [`Dataplane::test_run`] with the `kind` entry point: for
    /// [`AttachKind::L3`], `frame` is an IP packet as an L3 device (ipip,
    /// gre, wireguard, tun) hands it over, starting at the IP header.
    pub fn test_run_kind(&self, kind: AttachKind, frame: &[u8]) -> Result<u32, DataplaneError> {
        let options = TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..TestRunOptions::default()
        };
        self.program(kind)?
            .test_run(options)
            .map(|result| result.return_value)
            .map_err(|source| DataplaneError::Program {
                operation: "run the XDP program on a test frame (BPF_PROG_TEST_RUN)",
                source,
            })
    }

    /// [`Dataplane::test_run`] as if `frame` arrived on `ingress_ifindex`
    /// (an existing interface: the kernel resolves it), for subnet rules
    /// bound to an interface. Returns the XDP action.
    pub fn test_run_on(&self, frame: &[u8], ingress_ifindex: u32) -> Result<u32, DataplaneError> {
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex }: the kernel wants data_end to be
        // the frame's length and the rest of the offsets zero.
        let fields = [0u32, frame.len() as u32, 0, ingress_ifindex, 0, 0];
        let ctx: Vec<u8> = fields.iter().flat_map(|f| f.to_ne_bytes()).collect();
        let options = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..TestRunOptions::default()
        };
        self.program(AttachKind::L2)?
            .test_run(options)
            .map(|result| result.return_value)
            .map_err(|source| {
                DataplaneError::Program {
                    operation: "run the XDP program on a test frame (BPF_PROG_TEST_RUN)",
                    source,
                }
                .privilege_aware()
            })
    }

    fn program(&self, kind: AttachKind) -> Result<&Xdp, DataplaneError> {
        let name = kind.program_name();
        self.ebpf
            .program(name)
            .ok_or(DataplaneError::MissingProgram { name })?
            .try_into()
            .map_err(|source: ProgramError| DataplaneError::Program {
                operation: "access the XDP program",
                source,
            })
    }

    /// Runs the program `repeat` times on `frame` in the kernel and returns
    /// the XDP action and the kernel's mean time per run (for benchmarks:
    /// every run counts in the verdict counters).
    pub fn test_run_repeated(
        &self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration), DataplaneError> {
        let options = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        };
        self.program(AttachKind::L2)?
            .test_run(options)
            .map(|result| (result.return_value, result.duration))
            .map_err(|source| {
                DataplaneError::Program {
                    operation: "run the XDP program on a test frame (BPF_PROG_TEST_RUN)",
                    source,
                }
                .privilege_aware()
            })
    }

    /// Verdict counters of the frames that arrived on `ifindex` (per-CPU
    /// values summed). Interfaces whose ifindexes are 64 apart share a slot.
    pub fn verdict_totals_for(&self, ifindex: u32) -> Result<VerdictTotals, DataplaneError> {
        let slots = self.tables.verdict_slots()?;
        Ok(slots[(ifindex % firewall_common::INTERFACE_SLOTS) as usize])
    }

    /// Verdict counter totals (per-CPU values summed over all possible CPUs).
    pub fn verdict_totals(&self) -> Result<VerdictTotals, DataplaneError> {
        self.tables.verdict_totals()
    }

    /// The IP rules the active table set holds, read back from the kernel:
    /// network → rule id.
    pub fn active_ip_rules(&self) -> Result<BTreeMap<ipnet::Ipv4Net, u32>, DataplaneError> {
        self.tables.active_ip_rules()
    }

    /// Per-rule hit totals by hit slot (only slots ever hit), summed over
    /// CPUs, with the latest hit as wall-clock time.
    pub fn rule_hits(&self) -> Result<BTreeMap<u32, RuleHitTotals>, DataplaneError> {
        self.tables.rule_hits()
    }

    /// Access-log accounting, summed over CPUs: (events sent, dropped by
    /// the rate limit, dropped because the ring buffer was full).
    pub fn event_totals(&self) -> Result<EventTotals, DataplaneError> {
        self.tables.event_totals()
    }

    /// Hands out the access log's ring buffer (once) to its reader.
    pub fn take_event_ring(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        let map = self.ebpf.take_map(EVENTS)?;
        aya::maps::RingBuf::try_from(map).ok()
    }

    /// Hands out (once) the reader of the program's aya-log records, which
    /// forwards them into the daemon log; `None` when the program was
    /// loaded with logging off (it writes nothing then).
    pub fn take_bpf_log(&mut self) -> Result<Option<BpfLogReader>, DataplaneError> {
        if self.bpf_log_level == BpfLogLevel::Off {
            return Ok(None);
        }
        BpfLogReader::take(&mut self.ebpf).map(Some)
    }

    /// The slot layout of the per-rule hit counters.
    pub fn hit_slots(&self) -> HitSlots {
        self.tables.hit_slots()
    }

    /// What the active table set holds (for slot-stable recompiles),
    /// borrowed when the agent knows it (no copy of 100,000 entries).
    pub fn active_tables(&self) -> std::borrow::Cow<'_, CompiledTables> {
        self.tables.active_contents()
    }

    /// The virtual-network entries of the active set, read back from the
    /// kernel: (endpoint, prefix) → rule id.
    pub fn active_vnet_rules(&self) -> Result<BTreeMap<VnetPrefixKey, u32>, DataplaneError> {
        self.tables.active_vnet_rules()
    }

    /// The IPv6 IP rules the active table set holds, read back from the
    /// kernel: network → hit slot.
    pub fn active_ip6_rules(&self) -> Result<BTreeMap<ipnet::Ipv6Net, u32>, DataplaneError> {
        self.tables.active_ip6_rules()
    }

    /// The IPv6 virtual-network entries of the active set, read back from
    /// the kernel: (endpoint, prefix) → hit slot.
    pub fn active_vnet6_rules(
        &self,
    ) -> Result<BTreeMap<crate::compile::Vnet6PrefixKey, u32>, DataplaneError> {
        self.tables.active_vnet6_rules()
    }

    /// The IPv6 trusted-service prefixes of the active set, read back from
    /// the kernel: network → hit slot.
    pub fn active_trusted6(&self) -> Result<BTreeMap<ipnet::Ipv6Net, u32>, DataplaneError> {
        self.tables.active_trusted6()
    }

    /// The trusted-service prefixes of the active set, read back from the
    /// kernel: network → index in the policy's trusted prefixes.
    pub fn active_trusted(&self) -> Result<BTreeMap<ipnet::Ipv4Net, u32>, DataplaneError> {
        self.tables.active_trusted()
    }
}

/// Says that a start found an unconfirmed apply pending in the pins and
/// rolled it back (or found the kernel had already, at its deadline).
fn log_start_rollback(pin_dir: &PinDir, reverted: Reverted) {
    let how = if reverted.by_kernel {
        "the kernel rolled back an unconfirmed apply at its deadline (no daemon ran to do it); \
         the pins now record the generation it serves"
    } else {
        "an unconfirmed apply was pending when the previous daemon stopped; nobody can confirm \
         it now, so it was rolled back before its deadline"
    };
    tracing::warn!(
        pin_dir = %pin_dir.root().display(),
        generation = reverted.generation,
        dropped_generation = reverted.dropped_generation,
        by_kernel = reverted.by_kernel,
        "{how}"
    );
}

/// An error with its sources, for errors whose `Display` drops the OS error.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Refuses to go on when the kernel lacks a feature the program needs.
fn require_features() -> Result<(), DataplaneError> {
    features::require(&error::kernel_release())
}

/// The loader with every map that has a load-time [`Sizing`] sized by
/// `capacity`, the IPv4 lookup `capacity` allocates for, the program's
/// aya-log level set to `level`, and the
/// recording pieces `omit` names left out (0 outside the bench).
fn loader<'a>(capacity: &Capacity, level: &'a BpfLogLevel, omit: &'a u32) -> EbpfLoader<'a> {
    let mut loader = EbpfLoader::new();
    loader.override_global(firewall_common::BPF_LOG_LEVEL_GLOBAL, level.global(), true);
    loader.override_global(firewall_common::BENCH_OMIT_GLOBAL, omit, true);
    let compiled = if capacity.compiled_lookup {
        &1u32
    } else {
        &0u32
    };
    loader.override_global(firewall_common::LOOKUP_COMPILED_GLOBAL, compiled, true);
    for spec in MAPS.iter().filter(|m| m.sizing != Sizing::Fixed) {
        loader.map_max_entries(spec.name, capacity.entries(spec));
    }
    loader
}

/// Loads both entry points into the kernel (they share the object's maps).
fn load_programs(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    for kind in [AttachKind::L2, AttachKind::L3] {
        xdp_program(ebpf, kind)?
            .load()
            .map_err(DataplaneError::from_load)?;
    }
    Ok(())
}

fn xdp_program(ebpf: &mut Ebpf, kind: AttachKind) -> Result<&mut Xdp, DataplaneError> {
    let name = kind.program_name();
    ebpf.program_mut(name)
        .ok_or(DataplaneError::MissingProgram { name })?
        .try_into()
        .map_err(|source: ProgramError| DataplaneError::Program {
            operation: "access the XDP program",
            source,
        })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it so map
/// creation does not fail there. Newer kernels ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if ret != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; relying on memcg accounting");
    }
}
