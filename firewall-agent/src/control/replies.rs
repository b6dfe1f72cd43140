//! The `result` of each successful control command: one type per verb,
//! built by the daemon and read by the CLI, so a field renamed on one side
//! fails to compile on the other (and the golden tests in `replies/tests.rs`
//! fix the wire form operators' scripts read with `--output json`).
//!
//! | command | reply |
//! |---|---|
//! | `show` | [`ShowReply`] (the CLI prints it as a [`ShowView`]) |
//! | `stats` | [`StatsReply`] (the CLI prints it as a [`StatsView`]) |
//! | `rule_list` | [`RuleListReply`] |
//! | `rule_add`, `rule_remove`, `update`, `apply` | [`ChangeReply`] |
//! | `confirm` | [`ConfirmReply`] |
//! | `detach` | [`DetachReply`] |
//! | `logs` | [`LogsReply`] |
//!
//! Fields are added, never renamed (see [`super::protocol`]). Times are
//! RFC 3339 strings, UTC.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::dataplane::{AttachKind, AttachOutcome};
use crate::telemetry::access::{FileHealth, LogsPage};

/// `show`: the policy in force, its generation, and the interfaces as the
/// kernel holds them. (`Default` only gives [`ShowView`] the key set.)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShowReply {
    /// The generation the kernel serves.
    pub generation: u64,
    /// Every interface the daemon must filter is attached (at least one),
    /// and every `--iface` name exists.
    pub protected: bool,
    /// `--iface` as given (`all`, or the names joined).
    pub iface: String,
    /// Each filtered interface and the program the kernel runs there.
    pub interfaces: Vec<FilteredInterface>,
    /// Interfaces that must be filtered and are not (failed attaches).
    pub interfaces_not_attached: Vec<UnattachedInterface>,
    /// Interfaces with an address that nothing filters.
    pub unfiltered_interfaces: Vec<UnfilteredInterface>,
    /// `--iface` names that do not exist now.
    pub missing_interfaces: Vec<String>,
    /// Pinned links in the pin directory this daemon does not hold.
    pub unmanaged_links: Vec<UnmanagedLink>,
    /// `--on-exit`: `"keep"` or `"detach"`.
    pub on_exit: String,
    /// The pin directory.
    pub pin_dir: PathBuf,
    /// The policy file.
    pub policy_file: PathBuf,
    /// `"Allow"` or `"Deny"`.
    pub default_action: String,
    /// `"AzureServices"` or `"None"`.
    pub bypass: String,
    /// `"Enforce"` or `"Audit"`.
    pub mode: String,
    /// What IPv6 to the data plane gets: `"Deny"` or `"Allow"`.
    pub ipv6: String,
    /// `"Enabled"` or `"Disabled"` (then the IP rules admit nothing; a
    /// warning says so).
    pub public_network_access: String,
    /// Number of private endpoints (`[[private_endpoints]]`).
    pub private_endpoints: usize,
    /// The rule-count limits the policy was validated against.
    pub limits: LimitsShown,
    /// The guarded ports.
    pub data_plane: DataPlaneShown,
    /// Number of IP rules, IPv4 and IPv6.
    pub ip_rules: usize,
    /// Number of virtual network (subnet) rules.
    pub virtual_network_rules: usize,
    /// Number of trusted-service prefixes in the catalogue in use.
    pub trusted_service_prefixes: usize,
    /// The deadline of an unconfirmed `apply --confirm-within`.
    pub awaiting_confirmation_until: Option<String>,
    /// The daemon's health beyond the kernel (policy file in sync, the last
    /// reload, the control socket).
    pub health: HealthShown,
    /// `"passed"` (`--pass-forwarded`) or `"judged"`.
    pub forwarded_traffic: String,
    /// How the served table set looks up IPv4 sources (`--lookup`), as
    /// its `PolicyConfig` flags in the kernel say. `"trie"` from a daemon
    /// that predates the field (it had only the tries).
    #[serde(default = "crate::compile::cpt::Lookup::before_the_field")]
    pub lookup: crate::compile::cpt::Lookup,
    /// Sentences an operator should read.
    pub warnings: Vec<String>,
}

/// Where `vaultfw show` read what it shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShowSource {
    /// The daemon answered on its socket.
    Daemon,
    /// No daemon answered: the pin directory and the kernel were read.
    Pins,
}

/// `vaultfw show`'s document: one schema whether the daemon answered or
/// only the pins were read. Every key is always present; what only a
/// daemon knows (the policy, its health) is `null` from the pins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShowView {
    /// Where this was read.
    pub source: ShowSource,
    /// Whether a daemon answered.
    pub daemon_running: bool,
    /// Whether some interface runs a vaultfw program now (`None`: read
    /// from the pins, and no pinned interface is visible from here).
    pub filtering: Option<bool>,
    /// The generation the kernel serves (`None`: the pinned tables are
    /// unreadable or absent).
    pub generation: Option<u64>,
    /// How the served table set looks up IPv4 sources, `"trie"` or
    /// `"compiled"` (`None`: the pinned tables are unreadable or absent).
    pub lookup: Option<crate::compile::cpt::Lookup>,
    /// The pin directory.
    pub pin_dir: PathBuf,
    /// From the pins: the process holding the pin directory's lock (a
    /// daemon that did not answer on this socket); `None` otherwise.
    pub held_by_pid: Option<u32>,
    /// Each filtered (daemon) or pinned (pins) interface.
    pub interfaces: Vec<ShownInterface>,
    /// The other keys of [`ShowReply`], each `null` from the pins.
    #[serde(flatten)]
    pub served: serde_json::Map<String, serde_json::Value>,
}

/// An interface as `show` reports it, daemon or pins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownInterface {
    /// Its name.
    pub name: String,
    /// Its ifindex (`None`: not visible from this network namespace).
    pub ifindex: Option<u32>,
    /// The XDP mode the kernel reports (`"native"`, `"generic"`, ...;
    /// `None`: no XDP program attached).
    pub mode: Option<String>,
    /// The id of the program the kernel runs there.
    pub prog_id: Option<u32>,
    /// Whether vaultfw's program is what the interface runs (`None`: not
    /// visible from here).
    pub live: Option<bool>,
    /// The entry point the daemon attached (`None` from the pins).
    pub program: Option<AttachKind>,
    /// How the attachment came about (`None` from the pins).
    pub attach: Option<AttachOutcome>,
    /// Why it is filtered (`None` from the pins, or attached and no
    /// longer wanted).
    pub reason: Option<FilterReason>,
}

/// The keys [`ShowView`] takes from [`ShowReply`] as typed fields.
const VIEW_KEYS: [&str; 4] = ["generation", "lookup", "pin_dir", "interfaces"];

/// `reply` as a JSON object without [`VIEW_KEYS`].
fn served_keys(reply: &ShowReply) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(reply) {
        Ok(serde_json::Value::Object(mut map)) => {
            for key in VIEW_KEYS {
                map.remove(key);
            }
            map
        }
        // Invariant: a struct serializes to an object.
        _ => unreachable!("invariant: ShowReply serializes to a JSON object"),
    }
}

impl ShowView {
    /// What the daemon answered.
    pub fn from_daemon(reply: &ShowReply) -> Self {
        let interfaces: Vec<ShownInterface> = reply
            .interfaces
            .iter()
            .map(|i| ShownInterface {
                name: i.name.clone(),
                ifindex: Some(i.ifindex),
                mode: i.mode.clone(),
                prog_id: i.prog_id,
                live: Some(i.prog_id.is_some()),
                program: Some(i.program),
                attach: Some(i.attach),
                reason: i.reason,
            })
            .collect();
        ShowView {
            source: ShowSource::Daemon,
            daemon_running: true,
            filtering: Some(interfaces.iter().any(|i| i.live == Some(true))),
            generation: Some(reply.generation),
            lookup: Some(reply.lookup),
            pin_dir: reply.pin_dir.clone(),
            held_by_pid: None,
            interfaces,
            served: served_keys(reply),
        }
    }

    /// What the pins and the kernel say when no daemon answered.
    pub fn from_pins(state: crate::dataplane::pins::PinnedState) -> Self {
        let mut served = served_keys(&ShowReply::default());
        served
            .values_mut()
            .for_each(|v| *v = serde_json::Value::Null);
        ShowView {
            source: ShowSource::Pins,
            daemon_running: false,
            filtering: state.filtering,
            generation: state.generation,
            lookup: state.lookup,
            pin_dir: state.pin_dir,
            held_by_pid: state.held_by_pid,
            interfaces: state
                .interfaces
                .into_iter()
                .map(|i| ShownInterface {
                    name: i.interface,
                    ifindex: i.ifindex,
                    mode: i.mode.map(str::to_owned),
                    prog_id: i.prog_id,
                    live: i.live,
                    program: None,
                    attach: None,
                    reason: None,
                })
                .collect(),
            served,
        }
    }
}

/// Why an interface is filtered (the first that applies). Serialized in
/// snake case: `"iface"`, `"endpoint"`, `"all"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterReason {
    /// Named with `--iface`.
    Iface,
    /// A subnet rule of the policy names it as its endpoint.
    Endpoint,
    /// Selected by `--iface all`.
    All,
}

impl FilterReason {
    /// The value as `show` and the logs spell it (`"iface"`,
    /// `"endpoint"`, `"all"`).
    pub const fn name(self) -> &'static str {
        match self {
            FilterReason::Iface => "iface",
            FilterReason::Endpoint => "endpoint",
            FilterReason::All => "all",
        }
    }
}

/// An interface the daemon filters, as the kernel holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilteredInterface {
    /// Its name.
    pub name: String,
    /// Its ifindex.
    pub ifindex: u32,
    /// The XDP mode the kernel reports now (`"native"`, `"generic"`, ...;
    /// `None`: no XDP program attached).
    pub mode: Option<String>,
    /// The id of the program the kernel runs there (`bpftool prog show id N`).
    pub prog_id: Option<u32>,
    /// The entry point the daemon attached (`"l2"` or `"l3"`).
    pub program: AttachKind,
    /// How the attachment came about.
    pub attach: AttachOutcome,
    /// Why it is filtered (`None`: attached, no longer wanted).
    pub reason: Option<FilterReason>,
}

/// An interface the daemon must filter and does not (its attach failed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnattachedInterface {
    /// Its name.
    pub name: String,
    /// Why it must be filtered.
    pub reason: FilterReason,
    /// Its `ARPHRD_*` link type.
    pub link_type: u16,
}

/// An interface with an address that nothing filters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnfilteredInterface {
    /// Its name.
    pub name: String,
    /// Its ifindex.
    pub ifindex: u32,
    /// Its `ARPHRD_*` link type.
    pub link_type: u16,
}

/// A pinned vaultfw link in the pin directory that this daemon does not hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmanagedLink {
    /// The interface (the pin's file name).
    pub interface: String,
    /// Its ifindex now, if it exists.
    pub ifindex: Option<u32>,
    /// The XDP mode the kernel reports for it.
    pub mode: Option<String>,
    /// Whether the pinned link's program is what the interface runs
    /// (`None`: the interface is not visible from the daemon's namespace).
    pub live: Option<bool>,
}

/// The daemon's health beyond the kernel, as `show` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthShown {
    /// The policy file against the served policy (as of the last change,
    /// reload or `show`).
    pub policy: PolicySync,
    /// The latest reload; `None` before the first.
    pub last_reload: Option<ReloadShown>,
    /// Whether the control socket file is still the one the daemon bound
    /// (removed by hand, the CLI cannot reach the daemon).
    pub control_socket_present: bool,
    /// Whether the filter is in force as declared (what `/readyz`,
    /// systemd's `READY=1` and `show --check` report).
    pub readiness: Readiness,
}

/// Whether the filter is in force as declared (defined with the `/readyz`
/// answer it also is).
pub use crate::telemetry::Readiness;

/// How the policy file relates to the policy the kernel serves. On the
/// wire an object whose `state` is the variant in snake case.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PolicySync {
    /// The file declares exactly the served policy.
    #[default]
    InSync,
    /// An `apply --confirm-within` is served; the file holds the previous
    /// policy until `confirm`.
    AwaitingConfirmation,
    /// The file declares another policy (edited and not reloaded, or its
    /// reload was refused).
    Differs,
    /// The file cannot be read or is invalid.
    Invalid {
        /// Why.
        error: String,
    },
}

impl PolicySync {
    /// Whether the file declares what is served.
    pub fn in_sync(&self) -> bool {
        *self == PolicySync::InSync
    }
}

/// The outcome of the latest reload (SIGHUP, an edit of the file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadShown {
    /// When it ran (RFC 3339, seconds).
    pub at: String,
    /// What caused it.
    pub cause: String,
    /// Whether the file was accepted (served, or already served).
    pub success: bool,
    /// Why it was refused.
    pub error: Option<String>,
}

/// A policy's `limits` as `show` reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsShown {
    /// `"kv-2020"`, `"kv-current"` or `"explicit"`.
    pub profile: String,
    /// Maximum IP rules.
    pub ip_rules: usize,
    /// Maximum virtual network rules.
    pub virtual_network_rules: usize,
    /// Maximum IPv6 IP rules (0 from a daemon before IPv6 rules).
    #[serde(default)]
    pub ipv6_rules: usize,
}

/// A policy's `data_plane` ports as `show` reports them (host byte order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPlaneShown {
    /// Guarded TCP destination ports.
    pub tcp_ports: BTreeSet<u16>,
    /// Guarded UDP destination ports.
    pub udp_ports: BTreeSet<u16>,
    /// Control-plane TCP ports guarded on purpose.
    pub guard_control_ports: BTreeSet<u16>,
}

/// Verdict counters by counter name (`firewall_common::Verdict::name`):
/// frames counted since the counters were created.
pub type VerdictCounts = BTreeMap<String, u64>;

/// `stats`: the verdict counters in total and per attached interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReply {
    /// The generation the kernel serves.
    pub generation: u64,
    /// Over every interface.
    pub counters: VerdictCounts,
    /// Per attached interface.
    pub interfaces: Vec<InterfaceStats>,
    /// The access log's kernel-side accounting.
    pub events: EventCounts,
}

/// One attached interface's counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStats {
    /// Its name.
    pub name: String,
    /// Its ifindex.
    pub ifindex: u32,
    /// Its counters.
    pub counters: VerdictCounts,
}

/// Access-log events the kernel sent and dropped, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Written to the ring buffer.
    pub sent: u64,
    /// Not written: `rate_limited + ring_full`.
    pub dropped: u64,
    /// Dropped by the per-CPU rate limit (`--event-rate`).
    pub rate_limited: u64,
    /// Dropped because the ring buffer was full.
    pub ring_full: u64,
}

impl EventCounts {
    /// The counts, with `dropped` their sum.
    pub fn new(sent: u64, rate_limited: u64, ring_full: u64) -> Self {
        EventCounts {
            sent,
            dropped: rate_limited + ring_full,
            rate_limited,
            ring_full,
        }
    }
}

/// Frames per second by counter name (`firewall_common::Verdict::name`).
pub type VerdictRates = BTreeMap<String, f64>;

/// `vaultfw stats`'s document, and each JSON line of `stats --watch`: one
/// schema whether the daemon answered or the pinned counters were read,
/// and whether rates were measured. The rate keys (`time`, `interval_s`,
/// `packets_per_s`, `rates`, an interface's `rates`, `events.*_per_s`) are
/// `null` in a single sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    /// Where the counters were read.
    pub source: ShowSource,
    /// The generation the kernel serves (`None`: unreadable from the pins).
    pub generation: Option<u64>,
    /// Frames counted since the counters were created, over every
    /// interface.
    pub counters: VerdictCounts,
    /// Per filtered (daemon) or pinned (pins) interface.
    pub interfaces: Vec<InterfaceStatsView>,
    /// The access log's kernel-side accounting.
    pub events: EventStatsView,
    /// `--watch`: when the later sample was taken (RFC 3339, ms).
    pub time: Option<String>,
    /// `--watch`: seconds between the two samples.
    pub interval_s: Option<f64>,
    /// `--watch`: frames per second over every counter.
    pub packets_per_s: Option<f64>,
    /// `--watch`: each counter's growth per second.
    pub rates: Option<VerdictRates>,
}

/// One interface's counters in [`StatsView`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatsView {
    /// Its name.
    pub name: String,
    /// Its ifindex.
    pub ifindex: u32,
    /// Its counters.
    pub counters: VerdictCounts,
    /// `--watch`: each counter's growth per second (zeros for an interface
    /// new since the previous sample).
    pub rates: Option<VerdictRates>,
}

/// The access log's accounting in [`StatsView`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventStatsView {
    /// The counts.
    #[serde(flatten)]
    pub counts: EventCounts,
    /// `--watch`: events sent per second.
    pub sent_per_s: Option<f64>,
    /// `--watch`: events dropped per second.
    pub dropped_per_s: Option<f64>,
}

impl StatsView {
    /// A single sample the daemon answered.
    pub fn from_daemon(reply: &StatsReply) -> Self {
        StatsView {
            source: ShowSource::Daemon,
            generation: Some(reply.generation),
            counters: reply.counters.clone(),
            interfaces: reply
                .interfaces
                .iter()
                .map(|i| InterfaceStatsView {
                    name: i.name.clone(),
                    ifindex: i.ifindex,
                    counters: i.counters.clone(),
                    rates: None,
                })
                .collect(),
            events: EventStatsView {
                counts: reply.events,
                sent_per_s: None,
                dropped_per_s: None,
            },
            time: None,
            interval_s: None,
            packets_per_s: None,
            rates: None,
        }
    }
}

/// `rule_list`: the rules the kernel serves, read back from its maps and
/// described from the policy, each with its hits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleListReply {
    /// The generation the kernel serves.
    pub generation: u64,
    /// IP rules.
    pub ip_rules: Vec<IpRuleShown>,
    /// Subnet rules, one entry per prefix and endpoint key.
    pub virtual_network_rules: Vec<VnetPrefixShown>,
    /// Subnet rules whose endpoint interface does not exist now.
    pub virtual_network_rules_waiting: Vec<WaitingRule>,
    /// Trusted-service prefixes in the kernel's table.
    pub trusted_service_prefixes: usize,
    /// The trusted services the policy enables.
    pub trusted_services: Vec<TrustedServiceShown>,
}

/// The frames a rule allowed (zeros when never hit).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHits {
    /// Frames.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The latest hit (RFC 3339 with milliseconds).
    pub last_hit: Option<String>,
}

/// One IP rule the kernel serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRuleShown {
    /// The address or range (a /32 shown bare).
    pub rule: String,
    /// The policy's comment on it.
    pub comment: Option<String>,
    /// When it expires (RFC 3339, seconds).
    pub expires_at: Option<String>,
    /// Its hits.
    #[serde(flatten)]
    pub hits: RuleHits,
}

/// One prefix of a subnet rule the kernel serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnetPrefixShown {
    /// The rule's id (`None`: no rule of the policy owns the key).
    pub id: Option<String>,
    /// The prefix (a /32 shown bare).
    pub subnet: String,
    /// The rule's endpoint as written.
    pub endpoint: Option<String>,
    /// The key's ifindex (`firewall_common::IFINDEX_ANY` for VLAN only).
    pub ifindex: u32,
    /// The key's VLAN id (`None`: any VLAN).
    pub vlan: Option<u32>,
    /// The rule's `ignore_missing_endpoint` (Azure's
    /// `ignoreMissingVnetServiceEndpoint`).
    #[serde(default)]
    pub ignore_missing_endpoint: bool,
    /// The whole rule's hits (its prefixes share them).
    #[serde(flatten)]
    pub hits: RuleHits,
}

/// A subnet rule whose endpoint interface is missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingRule {
    /// Its id.
    pub id: String,
    /// Its endpoint as written.
    pub endpoint: String,
    /// Why it matches nothing.
    pub state: String,
}

/// One trusted service the policy enables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedServiceShown {
    /// Its catalogue name.
    pub service: String,
    /// Its prefixes in the catalogue in use.
    pub prefixes: usize,
    /// Whether `bypass = AzureServices` makes it pass.
    pub active: bool,
    /// Its hits.
    #[serde(flatten)]
    pub hits: RuleHits,
}

/// `rule_add`, `rule_remove`, `update`, `apply`: what a change did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeReply {
    /// False when the policy already said so (nothing was written).
    pub changed: bool,
    /// The generation served after the change.
    pub generation: u64,
    /// One sentence for the operator.
    pub message: String,
    /// Map element writes and deletes (absent when nothing was tried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_writes: Option<usize>,
    /// For `apply --confirm-within`: the rollback deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_confirmation_until: Option<String>,
    /// What is worth knowing about the change, one line each: for
    /// `network-rule add`, where the added IP rules overlap the ones
    /// already held (absent when there is nothing to say, and from an
    /// older daemon).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// `confirm`: the pending apply is now the declared policy, or nothing
/// awaited confirmation (a success too: `confirm` is idempotent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmReply {
    /// The generation served.
    pub generation: u64,
    /// True when a pending apply was confirmed; false when nothing awaited
    /// confirmation. (Absent from an older daemon, which answered only a
    /// real confirmation with success.)
    #[serde(default = "confirmed_by_default")]
    pub confirmed: bool,
    /// One sentence for the operator.
    pub message: String,
}

fn confirmed_by_default() -> bool {
    true
}

/// `detach` (and the CLI's own detach when no daemon runs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachReply {
    /// Always true in a success.
    pub detached: bool,
    /// `Some(false)` when the CLI unpinned by itself (no daemon ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_running: Option<bool>,
    /// The pins the CLI removed by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpinned: Option<Vec<String>>,
}

/// `logs`: a page of the in-memory access log and its accounting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsReply {
    /// The records, the cursor to follow with, and the memory's use.
    #[serde(flatten)]
    pub page: LogsPage,
    /// The kernel's event accounting.
    pub events: EventCounts,
    /// `--event-rate`: events per second per CPU (0: off).
    pub event_rate: u32,
    /// `--log-allowed`.
    pub log_allowed: bool,
    /// The `--access-log` file (`None`: stdout).
    pub file: Option<PathBuf>,
    /// How writing that file goes (`None`: stdout).
    pub file_health: Option<FileHealth>,
}

#[cfg(test)]
mod tests;
