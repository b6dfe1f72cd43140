//! The validated policy: what the rest of the agent works with. Every value
//! in here has passed validation (see `validate`); nothing downstream
//! re-checks it. Field names and meanings follow Key Vault's `networkAcls`
//! (DESIGN.md section 1).

use std::collections::BTreeSet;
use std::fmt;
use std::time::SystemTime;

use ipnet::Ipv4Net;
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

/// Enforce verdicts, or only count what would be denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// Denied frames are dropped (default).
    Enforce,
    /// Denied frames pass and count as `audit_would_deny`.
    Audit,
}

/// IPv6 to the data plane (rules name only IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Ipv6Action {
    /// Dropped and counted as `deny_ipv6` (default).
    Deny,
    /// Passed and counted as `pass_ipv6`.
    Allow,
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
}

/// Where a [`Limits`] value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LimitProfile {
    /// 127 IP rules and 127 virtual network rules: Key Vault's documented
    /// limits (the default).
    Kv2020,
    /// 1000 IP rules and 200 virtual network rules: Key Vault's later
    /// documentation.
    KvCurrent,
    /// Numbers set explicitly in the policy.
    Explicit,
}

impl LimitProfile {
    /// The name used in the policy file (`"kv-2020"`, `"kv-current"`,
    /// `"explicit"`).
    pub fn name(self) -> &'static str {
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
    };
    /// Key Vault's later documentation: 1000 + 200.
    pub const KV_CURRENT: Limits = Limits {
        profile: LimitProfile::KvCurrent,
        ip_rules: 1000,
        virtual_network_rules: 200,
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
}

impl Default for DataPlane {
    fn default() -> Self {
        DataPlane {
            tcp_ports: BTreeSet::from([443]),
            udp_ports: BTreeSet::new(),
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
        fmt_ipv4_rule(&self.network, f)
    }
}

/// Writes `net` the way rules are shown: `a.b.c.d` for a `/32`, else CIDR.
pub fn fmt_ipv4_rule(net: &Ipv4Net, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if net.prefix_len() == 32 {
        write!(f, "{}", net.addr())
    } else {
        write!(f, "{net}")
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
    /// See [`DataPlane`].
    pub data_plane: DataPlane,
}

fn serialize_display<S: serde::Serializer>(net: &Ipv4Net, s: S) -> Result<S::Ok, S::Error> {
    struct Shown<'a>(&'a Ipv4Net);
    impl fmt::Display for Shown<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt_ipv4_rule(self.0, f)
        }
    }
    s.collect_str(&Shown(net))
}

fn serialize_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&humantime::format_rfc3339_seconds(*t)),
        None => s.serialize_none(),
    }
}
