//! The validated policy: what the rest of the agent works with. Every value
//! in here has passed validation (see `validate`); nothing downstream
//! re-checks it. Field names and meanings follow Key Vault's `networkAcls`
//! (DESIGN.md section 1).

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

/// What happens to data-plane traffic that no rule matches. Required in
/// every policy: the setting that decides open or closed is never defaulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DefaultAction {
    /// Everyone reaches the data plane; rules are not consulted.
    Allow,
    /// Only sources matched by a rule (or a trusted service) reach it.
    Deny,
}

/// Whether Key Vault's trusted services bypass the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Bypass {
    /// Sources in the trusted-services catalogue pass.
    AzureServices,
    /// No bypass (the native format's default).
    None,
}

impl DefaultAction {
    /// The value as a policy file and Key Vault write it (`"Allow"`, `"Deny"`).
    pub const fn name(self) -> &'static str {
        match self {
            DefaultAction::Allow => "Allow",
            DefaultAction::Deny => "Deny",
        }
    }
}

impl Bypass {
    /// The value as a policy file and Key Vault write it (`"AzureServices"`,
    /// `"None"`).
    pub const fn name(self) -> &'static str {
        match self {
            Bypass::AzureServices => "AzureServices",
            Bypass::None => "None",
        }
    }
}

/// Key Vault's `publicNetworkAccess`: whether sources reach the data plane
/// through the public network rules at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PublicNetworkAccess {
    /// The IP rules apply (default).
    Enabled,
    /// The IP rules do not apply: a public source is refused even when a
    /// rule lists it. Subnet rules through their endpoints, trusted
    /// services (with the bypass) and private endpoints still admit.
    Disabled,
}

impl PublicNetworkAccess {
    /// The value as a policy file and Key Vault write it (`"Enabled"`,
    /// `"Disabled"`).
    pub const fn name(self) -> &'static str {
        match self {
            PublicNetworkAccess::Enabled => "Enabled",
            PublicNetworkAccess::Disabled => "Disabled",
        }
    }
}

/// Why a source that an IP rule lists is refused while
/// `public_network_access = "Disabled"`: the words `show`, `check
/// --explain` and warnings use.
pub const PUBLIC_ACCESS_DISABLED: &str = "public network access disabled";

/// [`PUBLIC_ACCESS_DISABLED`] as the access log's `reason` writes it (its
/// reasons are snake_case names, like the verdict counters').
pub const PUBLIC_ACCESS_DISABLED_REASON: &str = "public_network_access_disabled";

/// A private endpoint (`[[private_endpoints]]`): the sources of
/// `allowed_prefixes` arriving on `interface` reach the data plane whatever
/// the IP rules and `public_network_access` say (Key Vault's private
/// endpoint connections are not subject to its firewall).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrivateEndpoint {
    /// The interface private traffic arrives on (a valid Linux interface
    /// name; filtered like a subnet rule's endpoint interface).
    pub interface: String,
    /// The admitted sources: canonical, sorted, each once, never empty;
    /// private space allowed.
    #[serde(serialize_with = "serialize_nets")]
    pub allowed_prefixes: Vec<Ipv4Net>,
}

/// Enforce verdicts, or only count what would be denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// Denied frames are dropped (default).
    Enforce,
    /// Denied frames pass and count as `audit_would_deny`.
    Audit,
}

impl Mode {
    /// The value as a policy file writes it (`"Enforce"`, `"Audit"`).
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "Enforce",
            Mode::Audit => "Audit",
        }
    }
}

/// IPv6 sources no rule matches (IPv6 IP rules, IPv6 subnet prefixes and
/// trusted services' IPv6 prefixes are judged first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Ipv6Action {
    /// Dropped and counted as `deny_ipv6` (default).
    Deny,
    /// Passed and counted as `pass_ipv6`.
    Allow,
}

impl Ipv6Action {
    /// The value as a policy file writes it (`"Deny"`, `"Allow"`).
    pub const fn name(self) -> &'static str {
        match self {
            Ipv6Action::Deny => "Deny",
            Ipv6Action::Allow => "Allow",
        }
    }
}

/// The rule-count limits a policy is validated against; the agent sizes the
/// kernel maps from them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Which profile these numbers come from, for messages.
    pub profile: LimitProfile,
    /// Maximum IP rules.
    pub ip_rules: usize,
    /// Maximum virtual network rules.
    pub virtual_network_rules: usize,
    /// Maximum IPv6 IP rules (counted apart from IPv4 ones; Key Vault has
    /// no IPv6 rules, so each profile allows as many as IPv4 rules).
    pub ipv6_rules: usize,
}

/// Where a [`Limits`] value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LimitProfile {
    /// 127 IP rules and 127 virtual network rules: Key Vault's documented
    /// limits (the default).
    #[serde(rename = "kv-2020")]
    Kv2020,
    /// 1000 IP rules and 200 virtual network rules: Key Vault's later
    /// documentation.
    #[serde(rename = "kv-current")]
    KvCurrent,
    /// Numbers set explicitly in the policy.
    #[serde(rename = "explicit")]
    Explicit,
}

impl LimitProfile {
    /// The name used in the policy file (`"kv-2020"`, `"kv-current"`,
    /// `"explicit"`).
    pub const fn name(self) -> &'static str {
        match self {
            LimitProfile::Kv2020 => "kv-2020",
            LimitProfile::KvCurrent => "kv-current",
            LimitProfile::Explicit => "explicit",
        }
    }
}

impl Limits {
    /// Key Vault's documented default: 127 + 127.
    pub const KV_2020: Limits = Limits {
        profile: LimitProfile::Kv2020,
        ip_rules: 127,
        virtual_network_rules: 127,
        ipv6_rules: 127,
    };
    /// Key Vault's later documentation: 1000 + 200.
    pub const KV_CURRENT: Limits = Limits {
        profile: LimitProfile::KvCurrent,
        ip_rules: 1000,
        virtual_network_rules: 200,
        ipv6_rules: 1000,
    };
    /// The most IP rules (per kind) the agent will size a map for.
    pub const MAX_LOADABLE: usize = 1_000_000;
}

/// Which destination ports are the data plane; all other traffic is control
/// plane and passes untouched. Ports are host byte order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DataPlane {
    /// Guarded TCP destination ports (default: 443).
    pub tcp_ports: BTreeSet<u16>,
    /// Guarded UDP destination ports (default: none).
    pub udp_ports: BTreeSet<u16>,
    /// Control-plane TCP ports (SSH, 22) the operator guards on purpose:
    /// without this, listing one in `tcp_ports` is refused, since it would
    /// put the operators' own sessions behind the ACL.
    pub guard_control_ports: BTreeSet<u16>,
}

/// TCP ports that are the host's control plane (SSH): a data-plane port
/// list may name one only with `guard_control_ports`.
pub const CONTROL_PLANE_TCP_PORTS: [u16; 1] = [22];

impl Default for DataPlane {
    fn default() -> Self {
        DataPlane {
            tcp_ports: BTreeSet::from([443]),
            udp_ports: BTreeSet::new(),
            guard_control_ports: BTreeSet::new(),
        }
    }
}

/// One IP rule: a public IPv4 address or CIDR range. Canonical: the network
/// has no host bits set, and a `/32` is the single address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IpRule {
    /// The network (a `/32` for a single address).
    #[serde(serialize_with = "serialize_display")]
    pub network: Ipv4Net,
    /// Free text from the operator.
    pub comment: Option<String>,
    /// When the agent removes the rule by itself.
    #[serde(serialize_with = "serialize_time")]
    pub expires_at: Option<SystemTime>,
}

impl IpRule {
    /// A rule for `network` without comment or expiry.
    pub fn new(network: Ipv4Net) -> Self {
        IpRule {
            network,
            comment: None,
            expires_at: None,
        }
    }
}

impl fmt::Display for IpRule {
    /// `a.b.c.d` for a single address (Key Vault's `/32`), CIDR otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shown(self.network))
    }
}

/// `net` shown the way rules are: the bare address for a /32 (how Key
/// Vault writes a single address), CIDR otherwise.
pub fn shown(net: Ipv4Net) -> String {
    if net.prefix_len() == 32 {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// The ARM scope of short subnet ids: which subscription and resource group
/// their virtual networks are in. Either may be unknown; a full id needs
/// both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ArmScope {
    /// The subscription id, a GUID (`00000000-0000-0000-0000-000000000000`).
    pub subscription: Option<String>,
    /// The resource group name (1–90 characters: letters, digits, `_`,
    /// `-`, `.`, `(`, `)`; not ending in `.`).
    pub resource_group: Option<String>,
}

impl ArmScope {
    /// True when neither part is known.
    pub fn is_empty(&self) -> bool {
        self.subscription.is_none() && self.resource_group.is_none()
    }

    /// `self`'s parts, each falling back to `defaults`'s.
    pub fn or(&self, defaults: &ArmScope) -> ArmScope {
        ArmScope {
            subscription: self
                .subscription
                .clone()
                .or_else(|| defaults.subscription.clone()),
            resource_group: self
                .resource_group
                .clone()
                .or_else(|| defaults.resource_group.clone()),
        }
    }
}

/// One IPv6 IP rule: a global unicast (2000::/3) address or prefix.
/// Canonical: no host bits set, a `/128` is the single address, shown in
/// RFC 5952 text form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ipv6Rule {
    /// The network (a `/128` for a single address).
    #[serde(serialize_with = "serialize_display6")]
    pub network: Ipv6Net,
    /// Free text from the operator.
    pub comment: Option<String>,
    /// When the agent removes the rule by itself.
    #[serde(serialize_with = "serialize_time")]
    pub expires_at: Option<SystemTime>,
}

impl Ipv6Rule {
    /// A rule for `network` without comment or expiry.
    pub fn new(network: Ipv6Net) -> Self {
        Ipv6Rule {
            network,
            comment: None,
            expires_at: None,
        }
    }
}

impl fmt::Display for Ipv6Rule {
    /// The bare address for a /128, CIDR otherwise (RFC 5952 text).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shown6(self.network))
    }
}

/// `net` shown the way rules are: the bare address for a /128, CIDR
/// otherwise; the address in RFC 5952 form (std's `Ipv6Addr` display).
pub fn shown6(net: Ipv6Net) -> String {
    if net.prefix_len() == 128 {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// See [`DefaultAction`].
    pub default_action: DefaultAction,
    /// See [`Bypass`].
    pub bypass: Bypass,
    /// See [`Mode`].
    pub mode: Mode,
    /// See [`Ipv6Action`].
    pub ipv6: Ipv6Action,
    /// See [`Limits`].
    pub limits: Limits,
    /// IP rules, one per distinct network, sorted by (address, prefix length).
    pub ip_rules: Vec<IpRule>,
    /// IPv6 IP rules (written in `ip_rules` beside IPv4 ones), one per
    /// distinct network, sorted by (address, prefix length).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ipv6_rules: Vec<Ipv6Rule>,
    /// Virtual network rules, one per id (ids compare case-insensitively),
    /// sorted by lower-cased id.
    pub virtual_network_rules: Vec<VnetRule>,
    /// The trusted-services catalogue as configured, with its prefixes.
    pub trusted_services: TrustedServices,
    /// See [`DataPlane`].
    pub data_plane: DataPlane,
    /// See [`PublicNetworkAccess`].
    pub public_network_access: PublicNetworkAccess,
    /// Private endpoints, one per interface, sorted by interface name.
    pub private_endpoints: Vec<PrivateEndpoint>,
    /// `[defaults]`: the ARM scope of short subnet ids, for writing full
    /// ARM ids on export (see [`super::subnet_id`]).
    pub defaults: ArmScope,
}

impl Policy {
    /// The endpoint interface names the virtual network rules and the
    /// private endpoints give, each once, sorted.
    pub fn endpoint_interfaces(&self) -> BTreeSet<&str> {
        self.virtual_network_rules
            .iter()
            .filter_map(|r| r.endpoint.interface.as_deref())
            .chain(self.private_endpoints.iter().map(|p| p.interface.as_str()))
            .collect()
    }

    /// Whether the IP rules admit anything (`public_network_access` is
    /// not `Disabled`).
    pub fn ip_rules_apply(&self) -> bool {
        self.public_network_access == PublicNetworkAccess::Enabled
    }

    /// The default action the data plane applies: `default_action`, except
    /// that `public_network_access = "Disabled"` makes it `Deny`: Key Vault
    /// refuses public access when it is disabled whatever `defaultAction`
    /// says, and only subnet rules, private endpoints and (with the bypass)
    /// trusted services admit.
    pub fn effective_default_action(&self) -> DefaultAction {
        if self.ip_rules_apply() {
            self.default_action
        } else {
            DefaultAction::Deny
        }
    }

    /// Whether a refused frame from `source` was refused because public
    /// network access is disabled: an IP rule lists it
    /// ([`Policy::refused_by_public_access`]), or `default_action = "Allow"`
    /// would have admitted it.
    pub fn refused_for_public_access(&self, source: std::net::Ipv4Addr) -> bool {
        !self.ip_rules_apply()
            && (self.default_action == DefaultAction::Allow
                || self.refused_by_public_access(source).is_some())
    }

    /// The IP rule that lists `source` but does not apply because
    /// `public_network_access` is `Disabled` (the longest prefix); `None`
    /// when public access is enabled or no IP rule lists it. A refused
    /// frame from such a source was refused for [`PUBLIC_ACCESS_DISABLED`].
    pub fn refused_by_public_access(&self, source: std::net::Ipv4Addr) -> Option<&IpRule> {
        if self.ip_rules_apply() {
            return None;
        }
        self.ip_rules
            .iter()
            .filter(|r| r.network.contains(&source))
            .max_by_key(|r| r.network.prefix_len())
    }
}

/// A virtual network rule: a named subnet whose sources reach the data
/// plane when they arrive through the rule's service endpoint (Key Vault's
/// `virtualNetworkRules[]`, with the prefixes and endpoint that an ARM
/// subnet id stands for). Native form:
///
/// ```toml
/// [[virtual_network_rules]]
/// id = "vnet-prod/subnets/app"
/// address_prefixes = ["10.1.2.0/24"]
/// endpoint = { interface = "eth1" }   # and/or vlan = 120
/// ignore_missing_endpoint = false
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VnetRule {
    /// The subnet's id as written (`vnet-prod/subnets/app`, or a full ARM
    /// subnet id `/subscriptions/<guid>/resourceGroups/<rg>/providers/
    /// Microsoft.Network/virtualNetworks/<vnet>/subnets/<subnet>`). Ids
    /// compare case-insensitively, as Azure's do.
    pub id: String,
    /// The subnet's IPv4 prefixes: canonical (no host bits; a `/32` is one
    /// address), sorted by (address, prefix length), each once. Private
    /// (RFC 1918) and shared (RFC 6598) space are allowed. This and
    /// `address_prefixes_v6` are never both empty.
    pub address_prefixes: Vec<Ipv4Net>,
    /// The subnet's IPv6 prefixes (written in `address_prefixes` beside
    /// IPv4 ones): canonical, sorted, each once. Unique-local (fc00::/7)
    /// space is allowed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub address_prefixes_v6: Vec<Ipv6Net>,
    /// Where the subnet's traffic arrives.
    pub endpoint: Endpoint,
    /// Azure's `ignoreMissingVnetServiceEndpoint`: the rule is accepted
    /// while its interface does not exist, and matches nothing until it
    /// appears. Checked by the agent, not here (no I/O in validation).
    pub ignore_missing_endpoint: bool,
    /// Free text from the operator.
    pub comment: Option<String>,
    /// When the agent removes the rule by itself.
    #[serde(serialize_with = "serialize_time")]
    pub expires_at: Option<SystemTime>,
}

/// A service endpoint: the host interface and/or 802.1Q VLAN through which
/// a subnet's traffic arrives. At least one is set; with both, a frame must
/// match both.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Endpoint {
    /// A Linux interface name (1–15 bytes, no `/`, `:` or whitespace, not
    /// `.` or `..`); `None` means any interface.
    pub interface: Option<String>,
    /// An 802.1Q VLAN id, 1–4094 (0 and 4095 are reserved); `None` means
    /// any: tagged or untagged (a tag the NIC strips before XDP is not seen;
    /// README, "What the filter does not see").
    pub vlan: Option<u16>,
}

impl fmt::Display for Endpoint {
    /// `interface eth1`, `VLAN 120`, or `interface eth1, VLAN 120`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.interface, self.vlan) {
            (Some(i), Some(v)) => write!(f, "interface {i}, VLAN {v}"),
            (Some(i), None) => write!(f, "interface {i}"),
            (None, Some(v)) => write!(f, "VLAN {v}"),
            (None, None) => write!(f, "no endpoint"),
        }
    }
}

/// One entry of the built-in trusted-services catalogue (see
/// [`catalogue`](super::catalogue)).
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct TrustedService {
    /// The stable name used in policies (`"AzureBackup"`, `"Sql"`).
    pub name: &'static str,
    /// The service as Key Vault's documentation names it, and what it uses
    /// the vault for.
    pub description: &'static str,
    /// The Azure service tags (`values[].name` in `ServiceTags_*.json`)
    /// whose IPv4 prefixes stand for its sources; may be empty when no tag
    /// carries them.
    pub tags: &'static [&'static str],
}

/// The trusted-services bypass as configured: which catalogue entries are
/// enabled and the source prefixes their tags hold. Consulted only while
/// [`Bypass::AzureServices`] is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustedServices {
    /// The service-tags file the prefixes were read from, made absolute
    /// (a relative path resolves against the policy file's directory);
    /// `None` when none is configured (then there are no prefixes).
    pub service_tags_file: Option<PathBuf>,
    /// The enabled catalogue entries, in catalogue order (default: all).
    #[serde(serialize_with = "serialize_service_names")]
    pub enabled: Vec<&'static TrustedService>,
    /// The IPv4 prefixes of the enabled services' tags: one entry per
    /// distinct network, sorted by (address, prefix length). A network in
    /// several tags or services is attributed to the first enabled service
    /// in catalogue order (and that service's first tag holding it).
    pub prefixes: Vec<TrustedPrefix>,
    /// The IPv6 prefixes of the enabled services' tags, attributed as
    /// `prefixes` are.
    pub prefixes_v6: Vec<TrustedPrefix6>,
    /// IPv6 prefixes in the tags used, skipped (each tag counted once):
    /// always 0 now that IPv6 prefixes are used; kept for the output.
    pub ipv6_skipped: usize,
    /// The file's top-level `changeNumber`, if it has one.
    pub change_number: Option<u64>,
}

/// One trusted source prefix and where it comes from (for `check` and
/// per-entry hit counts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustedPrefix {
    /// The source network, canonical.
    pub network: Ipv4Net,
    /// The catalogue name of the service it is attributed to.
    pub service: &'static str,
    /// The service tag that holds it (`values[].name` in the file).
    pub tag: String,
}

/// One trusted IPv6 source prefix and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustedPrefix6 {
    /// The source network, canonical.
    #[serde(serialize_with = "serialize_display6")]
    pub network: Ipv6Net,
    /// The catalogue name of the service it is attributed to.
    pub service: &'static str,
    /// The service tag that holds it.
    pub tag: String,
}

fn serialize_display6<S: serde::Serializer>(net: &Ipv6Net, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&shown6(*net))
}

fn serialize_display<S: serde::Serializer>(net: &Ipv4Net, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&shown(*net))
}

fn serialize_nets<S: serde::Serializer>(nets: &[Ipv4Net], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(|n| shown(*n)))
}

fn serialize_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&humantime::format_rfc3339_seconds(*t)),
        None => s.serialize_none(),
    }
}

fn serialize_service_names<S: serde::Serializer>(
    services: &[&'static TrustedService],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(services.iter().map(|t| t.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name()` and serde must spell a value alike: `show` and the exporter
    /// use `name()`, JSON output uses serde.
    fn assert_serde_name(value: impl Serialize, name: &str) {
        assert_eq!(serde_json::to_value(value).unwrap(), name);
    }

    #[test]
    fn every_policy_enum_name_matches_its_serde_name() {
        for v in [DefaultAction::Allow, DefaultAction::Deny] {
            assert_serde_name(v, v.name());
        }
        for v in [Bypass::AzureServices, Bypass::None] {
            assert_serde_name(v, v.name());
        }
        for v in [PublicNetworkAccess::Enabled, PublicNetworkAccess::Disabled] {
            assert_serde_name(v, v.name());
        }
        for v in [Mode::Enforce, Mode::Audit] {
            assert_serde_name(v, v.name());
        }
        for v in [Ipv6Action::Deny, Ipv6Action::Allow] {
            assert_serde_name(v, v.name());
        }
        for v in [
            LimitProfile::Kv2020,
            LimitProfile::KvCurrent,
            LimitProfile::Explicit,
        ] {
            assert_serde_name(v, v.name());
        }
    }
}
