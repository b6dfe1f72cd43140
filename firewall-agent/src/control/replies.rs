//! The `result` of each successful control command: one type per verb,
//! built by the daemon and read by the CLI, so a field renamed on one side
//! fails to compile on the other (and the golden tests in `replies/tests.rs`
//! fix the wire form operators' scripts read with `--output json`).
//!
//! | command | reply |
//! |---|---|
//! | `show` | [`ShowReply`] |
//! | `stats` | [`StatsReply`] |
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
/// kernel holds them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Number of IP rules.
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
    /// Sentences an operator should read.
    pub warnings: Vec<String>,
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthShown {
    /// The policy file against the served policy (as of the last change,
    /// reload or `show`).
    pub policy: PolicySync,
    /// The latest reload; `None` before the first.
    pub last_reload: Option<ReloadShown>,
    /// Whether the control socket file is still the one the daemon bound
    /// (removed by hand, the CLI cannot reach the daemon).
    pub control_socket_present: bool,
}

/// How the policy file relates to the policy the kernel serves. On the
/// wire an object whose `state` is the variant in snake case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PolicySync {
    /// The file declares exactly the served policy.
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsShown {
    /// `"kv-2020"`, `"kv-current"` or `"explicit"`.
    pub profile: String,
    /// Maximum IP rules.
    pub ip_rules: usize,
    /// Maximum virtual network rules.
    pub virtual_network_rules: usize,
}

/// A policy's `data_plane` ports as `show` reports them (host byte order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// `confirm`: the pending apply is now the declared policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmReply {
    /// The generation served.
    pub generation: u64,
    /// One sentence for the operator.
    pub message: String,
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
