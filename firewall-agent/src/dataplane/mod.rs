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

mod attach;
mod error;
pub mod features;
mod netlink;
pub mod pins;
mod tables;

use std::collections::BTreeMap;

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, TestRun, TestRunOptions, Xdp},
};
use firewall_common::{
    DEFAULT_TRUSTED_CAPACITY, DEFAULT_VNET_CAPACITY, EVENTS, HitSlots, IP_RULES_0, IP_RULES_1,
    RULE_HITS, TRUSTED_0, TRUSTED_1, VNET_RULES_0, VNET_RULES_1, Verdict,
};

pub use attach::{AttachKind, AttachOutcome, AttachedInterface, XdpModeRequest};
pub use netlink::{XdpAttachment, xdp_attachment};
pub use error::DataplaneError;
pub use tables::{ApplyReport, EventTotals, RuleHitTotals};

use crate::compile::{CompiledTables, VnetPrefixKey};
use crate::paths::PinDir;
use tables::Tables;

/// The XDP program object, built for the BPF target by `build.rs`.
static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/firewall-ebpf"));

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
}

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
            hit_slots: HitSlots::new(ip_rules, vnet_rules),
        }
    }

    /// [`Capacity::for_limits`] with Key Vault's default of 127 virtual
    /// network rules.
    pub fn for_ip_rule_limit(ip_rules: u32) -> Self {
        Self::for_limits(ip_rules, 127)
    }

    /// Refuses tables that would not fit, before anything is written.
    pub(crate) fn check(&self, compiled: &CompiledTables) -> Result<(), DataplaneError> {
        let checks = [
            ("IP rule", compiled.ip_rules.len(), self.ip_rules),
            ("virtual network", compiled.vnet_rules.len(), self.vnet_entries),
            ("trusted service", compiled.trusted.len(), self.trusted_entries),
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
        Ok(())
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
        require_features()?;
        raise_memlock_limit();
        let mut ebpf = loader(&capacity)
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
        })
    }

    /// Loads the program with its maps pinned under `pin_dir`, reusing every
    /// pinned map whose shape still fits (rules, counters and the active
    /// table set survive a restart or an upgrade) and creating the others.
    /// Mounts bpffs when needed. Nothing is attached yet.
    pub fn open_pinned(capacity: Capacity, pin_dir: PinDir) -> Result<Self, DataplaneError> {
        require_features()?;
        raise_memlock_limit();
        pins::prepare(&pin_dir)?;
        let lock = pins::lock(&pin_dir)?;
        let had_pins = pin_dir.map(firewall_common::ACTIVE_SET).exists();
        let opened = Self::load_over_pins(capacity, &pin_dir, lock);
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
    ) -> Result<Self, DataplaneError> {
        let dropped = pins::drop_incompatible_maps(pin_dir, &pins::expected_shapes(&capacity))?;
        let map_pins: Vec<(&'static str, std::path::PathBuf)> = pins::expected_shapes(&capacity)
            .iter()
            .map(|shape| (shape.name, pin_dir.map(shape.name)))
            .collect();
        let mut loader = loader(&capacity);
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(PROGRAM_OBJECT)
            .map_err(|source| DataplaneError::Object { source })?;
        load_programs(&mut ebpf)?;
        let tables = Tables::adopt(&mut ebpf, capacity)?;
        if tables.generation() > 0 {
            tracing::info!(
                pin_dir = %pin_dir.root().display(),
                generation = tables.generation(),
                recreated_maps = ?dropped,
                "adopted pinned maps: rules and counters carried over"
            );
        }
        Ok(Dataplane {
            ebpf,
            tables,
            attached: Vec::new(),
            pin_dir: Some(pin_dir.clone()),
            _pin_lock: Some(lock),
        })
    }

    /// The generation the kernel serves (0 before the first apply).
    pub fn generation(&self) -> u64 {
        self.tables.generation()
    }

    /// Writes `compiled` as generation `generation` into the inactive table
    /// set and makes it active. When it equals what the active set holds,
    /// nothing is written and the report says so.
    pub fn apply(
        &mut self,
        compiled: &CompiledTables,
        generation: u64,
    ) -> Result<ApplyReport, DataplaneError> {
        self.tables.apply(compiled, generation)
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
        let attached = attach::attach(program, kind, interface, mode, pin.as_deref())?;
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
            .map_err(|source| DataplaneError::Program {
                operation: "run the XDP program on a test frame (BPF_PROG_TEST_RUN)",
                source,
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
            .map_err(|source| DataplaneError::Program {
                operation: "run the XDP program on a test frame (BPF_PROG_TEST_RUN)",
                source,
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

    /// The slot layout of the per-rule hit counters.
    pub fn hit_slots(&self) -> HitSlots {
        self.tables.hit_slots()
    }

    /// What the active table set holds (for slot-stable recompiles).
    pub fn active_tables(&self) -> CompiledTables {
        self.tables.active_contents()
    }

    /// The virtual-network entries of the active set, read back from the
    /// kernel: (endpoint, prefix) → rule id.
    pub fn active_vnet_rules(&self) -> Result<BTreeMap<VnetPrefixKey, u32>, DataplaneError> {
        self.tables.active_vnet_rules()
    }

    /// The trusted-service prefixes of the active set, read back from the
    /// kernel: network → index in the policy's trusted prefixes.
    pub fn active_trusted(&self) -> Result<BTreeMap<ipnet::Ipv4Net, u32>, DataplaneError> {
        self.tables.active_trusted()
    }
}

/// Refuses to go on when the kernel lacks a feature the program needs.
fn require_features() -> Result<(), DataplaneError> {
    match features::missing(features::kernel_has, &error::kernel_release()) {
        Some(message) => Err(DataplaneError::MissingFeatures { message }),
        None => Ok(()),
    }
}

/// The loader with every trie sized by `capacity`.
fn loader<'a>(capacity: &Capacity) -> EbpfLoader<'a> {
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(IP_RULES_0, capacity.ip_rules)
        .map_max_entries(IP_RULES_1, capacity.ip_rules)
        .map_max_entries(VNET_RULES_0, capacity.vnet_entries)
        .map_max_entries(VNET_RULES_1, capacity.vnet_entries)
        .map_max_entries(TRUSTED_0, capacity.trusted_entries)
        .map_max_entries(TRUSTED_1, capacity.trusted_entries)
        .map_max_entries(RULE_HITS, capacity.hit_slots.total());
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
