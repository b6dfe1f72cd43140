//! Second stage: [`RawPolicy`] → [`Policy`]. Gives every value its meaning
//! (enum names, limits, addresses, endpoints, ports, expiry times, trusted
//! services), makes the rules canonical, and records every error and
//! warning along the way. A policy comes out only when there is no error.
//! The rule kinds have their own files (`ip_rules`, `vnet`, `trusted`);
//! this one holds the settings, the limits and the data plane.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use super::error::{PolicyError, PolicyWarning};
use super::model::CONTROL_PLANE_TCP_PORTS;
use super::model::{
    Bypass, DataPlane, DefaultAction, Ipv6Action, LimitProfile, Limits, Mode, Policy,
    PublicNetworkAccess,
};
use super::raw::{Key, RawDataPlane, RawLimits, RawPolicy, RawVnetRule};
use super::raw_value::{At, Field};
use super::subnet_id::{self, ArmScope};
use super::{access, ip_rules, trusted, vnet};

/// What validation needs besides the input.
pub struct Context<'a> {
    /// The current time, for `expires_at`.
    pub now: SystemTime,
    /// The directory a relative `service_tags_file` resolves against.
    pub base_dir: &'a Path,
}

/// Validates `raw` in `ctx`. Pushes every error and warning; returns the
/// policy only if no error was found (including errors pushed before the
/// call).
pub fn validate(
    raw: RawPolicy,
    ctx: &Context,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Option<Policy> {
    let keys = &raw.keys;
    let default_action = choice(
        &keys.default_action,
        &raw.default_action,
        &DEFAULT_ACTIONS,
        None,
        errors,
    );
    let bypass = choice(
        &keys.bypass,
        &raw.bypass,
        &BYPASSES,
        Some(keys.bypass_default),
        errors,
    );
    let mode = choice(
        &keys.mode,
        &raw.mode,
        &[
            ("Enforce", Mode::Enforce, "denied packets are dropped"),
            (
                "Audit",
                Mode::Audit,
                "denied packets pass and are counted as audit_would_deny",
            ),
        ],
        Some(Mode::Enforce),
        errors,
    );
    let ipv6 = choice(
        &keys.ipv6,
        &raw.ipv6,
        &[
            (
                "Deny",
                Ipv6Action::Deny,
                "IPv6 to the data plane is dropped",
            ),
            ("Allow", Ipv6Action::Allow, "IPv6 to the data plane passes"),
        ],
        Some(Ipv6Action::Deny),
        errors,
    );
    let public_network_access = choice(
        &keys.public_network_access,
        &raw.public_network_access,
        &[
            (
                PublicNetworkAccess::Enabled.name(),
                PublicNetworkAccess::Enabled,
                "the IP rules apply",
            ),
            (
                PublicNetworkAccess::Disabled.name(),
                PublicNetworkAccess::Disabled,
                "the IP rules do not apply; subnet rules, trusted services and private \
                 endpoints still admit",
            ),
        ],
        Some(PublicNetworkAccess::Enabled),
        errors,
    );
    let private_endpoints = access::validate(&raw.private_endpoints, errors, warnings);
    let defaults = match &raw.defaults {
        Field::Given(scope) => subnet_id::validate_scope(scope, errors),
        Field::Absent => Some(ArmScope::default()),
        Field::Invalid => None,
    };
    let limits = limits(&keys.limits, &raw.limits, errors);
    let ip_rules = ip_rules::validate(&raw.ip_rules, keys.dialect, ctx.now, errors, warnings);
    let ipv6_rules = ip_rules::validate_v6(&raw.ip_rules, keys.dialect, ctx.now, errors, warnings);
    let vnet_rules = vnet::validate(&raw.virtual_network_rules, ctx.now, errors, warnings);
    if let (Some(defaults), Field::Given(rules)) = (&defaults, &raw.virtual_network_rules) {
        same_subnet_through_defaults(rules, defaults, errors);
    }
    if let Some(limits) = &limits {
        check_count(
            LimitedRules::Ip,
            &keys.ip_rules,
            ip_rules.len(),
            limits,
            errors,
        );
        // A private endpoint's entries sit in the virtual-network table.
        check_count(
            LimitedRules::Ipv6,
            &keys.ip_rules,
            ipv6_rules.len(),
            limits,
            errors,
        );
        check_count(
            LimitedRules::Vnet,
            &keys.virtual_network_rules,
            vnet_rules.len() + private_endpoints.len(),
            limits,
            errors,
        );
    }
    let data_plane = data_plane(&keys.data_plane, &raw.data_plane, errors, warnings);
    let trusted = trusted::validate(
        &raw.trusted_services,
        keys,
        bypass,
        ctx.base_dir,
        errors,
        warnings,
    );

    let rules = ip_rules.len() + ipv6_rules.len() + vnet_rules.len();
    if default_action == Some(DefaultAction::Allow) && rules > 0 {
        let mut counted = Vec::new();
        if !ip_rules.is_empty() {
            counted.push(plural(ip_rules.len(), "IP rule"));
        }
        if !ipv6_rules.is_empty() {
            counted.push(plural(ipv6_rules.len(), "IPv6 IP rule"));
        }
        if !vnet_rules.is_empty() {
            counted.push(plural(vnet_rules.len(), "virtual network rule"));
        }
        warnings.push(PolicyWarning::new(
            &keys.default_action.path,
            format!(
                "rules have no effect while {}: every source reaches the data plane ({} {} \
                 kept but not consulted)",
                keys.default_action.assign("Allow"),
                counted.join(" and "),
                if rules == 1 { "is" } else { "are" }
            ),
        ));
    }

    if public_network_access == Some(PublicNetworkAccess::Disabled) && !ip_rules.is_empty() {
        warnings.push(PolicyWarning::new(
            &keys.public_network_access.path,
            format!(
                "the IP rules do not apply while {}: {} kept but admit nothing (reason: {}); \
                 subnet rules, trusted services and private endpoints still admit",
                keys.public_network_access.assign("Disabled"),
                plural(ip_rules.len(), "IP rule"),
                super::model::PUBLIC_ACCESS_DISABLED
            ),
        ));
    }

    if public_network_access == Some(PublicNetworkAccess::Disabled)
        && default_action == Some(DefaultAction::Allow)
    {
        warnings.push(PolicyWarning::new(
            &keys.default_action.path,
            format!(
                "{} does not apply while {}: as Key Vault does, sources that no subnet rule, \
                 private endpoint or trusted service admits are refused; write {} to say so",
                keys.default_action.assign("Allow"),
                keys.public_network_access.assign("Disabled"),
                keys.default_action.assign("Deny"),
            ),
        ));
    }

    if !errors.is_empty() {
        return None;
    }
    Some(Policy {
        default_action: default_action?,
        bypass: bypass?,
        mode: mode?,
        ipv6: ipv6?,
        limits: limits?,
        ip_rules,
        ipv6_rules,
        virtual_network_rules: vnet_rules,
        trusted_services: trusted?,
        data_plane: data_plane?,
        public_network_access: public_network_access?,
        private_endpoints,
        defaults: defaults?,
    })
}

/// A short id and a full id that `[defaults]` makes the same subnet are
/// one subnet written twice (they would export as one ARM id twice): an
/// error at the second. Ids equal as written are reported by `vnet`.
fn same_subnet_through_defaults(
    rules: &[RawVnetRule],
    defaults: &ArmScope,
    errors: &mut Vec<PolicyError>,
) {
    let mut seen: BTreeMap<String, &At<String>> = BTreeMap::new();
    for rule in rules {
        let Field::Given(at) = &rule.id else {
            continue;
        };
        let full = subnet_id::full_id(&at.value, defaults).unwrap_or_else(|| at.value.clone());
        let key = subnet_id::canonical(&full);
        match seen.get(&key) {
            Some(first)
                if subnet_id::canonical(&first.value) != subnet_id::canonical(&at.value) =>
            {
                errors.push(PolicyError::new(
                    &at.path,
                    &at.value,
                    format!(
                        "the same subnet as {} {:?} once [defaults] makes the short id full ({full})",
                        first.path, first.value
                    ),
                    format!("give the subnet one rule: merge it into {}", first.path),
                ));
            }
            Some(_) => {}
            None => {
                seen.insert(key, at);
            }
        }
    }
}

/// `1 IP rule`, `2 IP rules`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The values of `default_action`, with what each means (for the fix).
const DEFAULT_ACTIONS: [(&str, DefaultAction, &str); 2] = [
    (
        DefaultAction::Deny.name(),
        DefaultAction::Deny,
        "only sources matched by a rule reach the data plane",
    ),
    (
        DefaultAction::Allow.name(),
        DefaultAction::Allow,
        "every source reaches the data plane and rules are not consulted",
    ),
];

/// The values of `bypass`, with what each means (for the fix).
const BYPASSES: [(&str, Bypass, &str); 2] = [
    (Bypass::None.name(), Bypass::None, "no bypass"),
    (
        Bypass::AzureServices.name(),
        Bypass::AzureServices,
        "trusted Azure services pass",
    ),
];

/// Checks one `default_action` value given as a command-line flag
/// (`--default-action allow`) as a policy file's is checked: `Allow` or
/// `Deny`, any case. The error names `flag`, the value and the valid ones.
pub fn parse_default_action(flag: &str, text: &str) -> Result<DefaultAction, PolicyError> {
    flag_choice(flag, text, &DEFAULT_ACTIONS)
}

/// Checks one `bypass` value given as a command-line flag (`--bypass
/// AzureServices`) as a policy file's is checked: `AzureServices` or
/// `None`, any case. The error names `flag`, the value and the valid ones.
pub fn parse_bypass(flag: &str, text: &str) -> Result<Bypass, PolicyError> {
    flag_choice(flag, text, &BYPASSES)
}

fn flag_choice<T: Copy>(
    flag: &str,
    text: &str,
    choices: &[(&str, T, &str)],
) -> Result<T, PolicyError> {
    lookup(choices, text)
        .ok_or_else(|| not_one_of(flag, text, choices, |name| format!("{flag} {name}")))
}

/// The choice named `text`, matched case-insensitively (as Azure does).
fn lookup<T: Copy>(choices: &[(&str, T, &str)], text: &str) -> Option<T> {
    choices
        .iter()
        .find(|(name, _, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, v, _)| *v)
}

/// `text` at `path` is none of `choices`; `assign` writes one of them as
/// its input would.
fn not_one_of<T>(
    path: &str,
    text: &str,
    choices: &[(&str, T, &str)],
    assign: impl Fn(&str) -> String,
) -> PolicyError {
    let names: Vec<String> = choices.iter().map(|(n, _, _)| format!("\"{n}\"")).collect();
    PolicyError::new(
        path,
        text,
        format!("not one of {}", names.join(", ")),
        format!("write {}", either(choices, assign)),
    )
}

/// `a = "X" (meaning) or a = "Y" (meaning)`.
fn either<T>(choices: &[(&str, T, &str)], assign: impl Fn(&str) -> String) -> String {
    choices
        .iter()
        .map(|(name, _, meaning)| format!("{} ({meaning})", assign(name)))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// One of a few names, matched case-insensitively (as Azure does).
/// `default: None` makes the key required.
fn choice<T: Copy>(
    key: &Key,
    field: &Field<String>,
    choices: &[(&str, T, &str)],
    default: Option<T>,
    errors: &mut Vec<PolicyError>,
) -> Option<T> {
    let either = either(choices, |name| key.assign(name));
    let name = key.name;
    match field {
        Field::Invalid => None,
        Field::Absent => {
            if default.is_none() {
                errors.push(PolicyError::new(
                    &key.path,
                    "",
                    format!(
                        "`{name}` is missing: it decides whether sources that no rule matches \
                         reach the data plane, so it is never defaulted"
                    ),
                    format!("add {either}"),
                ));
            }
            default
        }
        Field::Given(text) => {
            let found = lookup(choices, text);
            if found.is_none() {
                errors.push(not_one_of(&key.path, text, choices, |name| {
                    key.assign(name)
                }));
            }
            found
        }
    }
}

fn limits(base: &str, field: &Field<RawLimits>, errors: &mut Vec<PolicyError>) -> Option<Limits> {
    let explicit_form = "limits = { ip_rules = N, virtual_network_rules = M }";
    match field {
        Field::Absent => Some(Limits::KV_2020),
        Field::Invalid => None,
        Field::Given(RawLimits::Profile(name)) => {
            if name.eq_ignore_ascii_case(LimitProfile::Kv2020.name()) {
                Some(Limits::KV_2020)
            } else if name.eq_ignore_ascii_case(LimitProfile::KvCurrent.name()) {
                Some(Limits::KV_CURRENT)
            } else {
                errors.push(PolicyError::new(
                    base,
                    name.as_str(),
                    "not a limits profile",
                    format!(
                        "write limits = \"kv-2020\" (127 IP rules, 127 virtual network rules: \
                         the default), limits = \"kv-current\" (1000 and 200), or explicit \
                         numbers {explicit_form}"
                    ),
                ));
                None
            }
        }
        Field::Given(RawLimits::Explicit {
            ip_rules,
            virtual_network_rules,
            ipv6_rules,
        }) => {
            let ip = limit_number(&format!("{base}.ip_rules"), ip_rules, explicit_form, errors);
            let vnet = limit_number(
                &format!("{base}.virtual_network_rules"),
                virtual_network_rules,
                explicit_form,
                errors,
            );
            let ip6 = match ipv6_rules {
                Field::Absent => ip,
                given => limit_number(&format!("{base}.ipv6_rules"), given, explicit_form, errors),
            };
            Some(Limits {
                profile: LimitProfile::Explicit,
                ip_rules: ip?,
                virtual_network_rules: vnet?,
                ipv6_rules: ip6?,
            })
        }
    }
}

fn limit_number(
    path: &str,
    field: &Field<i64>,
    explicit_form: &str,
    errors: &mut Vec<PolicyError>,
) -> Option<usize> {
    let max = Limits::MAX_LOADABLE;
    match field {
        Field::Invalid => None,
        Field::Absent => {
            errors.push(PolicyError::new(
                path,
                "",
                format!("`{path}` is missing: explicit limits set both numbers"),
                format!("write {explicit_form}, or a profile such as limits = \"kv-current\""),
            ));
            None
        }
        Field::Given(n) => match usize::try_from(*n) {
            Ok(v) if (1..=max).contains(&v) => Some(v),
            _ => {
                errors.push(PolicyError::new(
                    path,
                    n.to_string(),
                    format!("{n} is outside 1–{max}"),
                    format!("choose a number from 1 to {max} (the most the agent sizes a map for)"),
                ));
                None
            }
        },
    }
}

/// The two kinds of rules that the limits count.
#[derive(Clone, Copy)]
enum LimitedRules {
    Ip,
    Ipv6,
    Vnet,
}

impl LimitedRules {
    fn noun(self) -> &'static str {
        match self {
            LimitedRules::Ip => "IP rules",
            LimitedRules::Ipv6 => "IPv6 IP rules",
            LimitedRules::Vnet => "virtual network rules",
        }
    }

    fn limit(self, limits: &Limits) -> usize {
        match self {
            LimitedRules::Ip => limits.ip_rules,
            LimitedRules::Ipv6 => limits.ipv6_rules,
            LimitedRules::Vnet => limits.virtual_network_rules,
        }
    }

    fn key(self) -> &'static str {
        match self {
            LimitedRules::Ip => "ip_rules",
            LimitedRules::Ipv6 => "ipv6_rules",
            LimitedRules::Vnet => "virtual_network_rules",
        }
    }
}

/// "128 IP rules exceed the limit of 127 (profile kv-2020)", with the ways
/// to raise the limit that would admit `count`.
fn check_count(
    kind: LimitedRules,
    path: &str,
    count: usize,
    limits: &Limits,
    errors: &mut Vec<PolicyError>,
) {
    let limit = kind.limit(limits);
    if count <= limit {
        return;
    }
    let excess = count - limit;
    let max = Limits::MAX_LOADABLE;
    let explicit = format!(
        "explicit numbers limits = {{ ip_rules = N, virtual_network_rules = M }} (up to {max})"
    );
    let current = kind.limit(&Limits::KV_CURRENT);
    let raise = match limits.profile {
        LimitProfile::Kv2020 if count <= current => format!(
            "limits = \"kv-current\" ({current} {}, Key Vault's current documentation) or \
             {explicit}",
            kind.noun()
        ),
        LimitProfile::Kv2020 | LimitProfile::KvCurrent => explicit,
        LimitProfile::Explicit => format!("a larger limits.{} (up to {max})", kind.key()),
    };
    errors.push(PolicyError::new(
        path,
        "",
        format!(
            "{count} {} exceed the limit of {limit} (profile {})",
            kind.noun(),
            limits.profile.name()
        ),
        format!(
            "remove {excess} rule{} (duplicates are already counted once), or raise the \
             limit with {raise}",
            if excess == 1 { "" } else { "s" }
        ),
    ));
}

fn data_plane(
    base: &str,
    field: &Field<RawDataPlane>,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Option<DataPlane> {
    let dp = match field {
        Field::Absent => return Some(DataPlane::default()),
        Field::Invalid => return None,
        Field::Given(dp) => dp,
    };
    let tcp = port_set(
        &format!("{base}.tcp_ports"),
        &dp.tcp_ports,
        errors,
        warnings,
    );
    let udp = port_set(
        &format!("{base}.udp_ports"),
        &dp.udp_ports,
        errors,
        warnings,
    );
    let written = |f: &Field<Vec<i64>>| match f {
        Field::Absent => Some(0),
        Field::Invalid => None,
        Field::Given(v) => Some(v.len()),
    };
    if let (Some(0), Some(0)) = (written(&dp.tcp_ports), written(&dp.udp_ports)) {
        errors.push(PolicyError::new(
            base,
            "",
            "[data_plane] lists no port at all: nothing would be guarded",
            "list the guarded ports, e.g. tcp_ports = [443], or remove [data_plane] to guard \
             TCP 443 (the default)",
        ));
        return None;
    }
    let guarded = port_set(
        &format!("{base}.guard_control_ports"),
        &dp.guard_control_ports,
        errors,
        warnings,
    );
    let (tcp, udp, guarded) = (tcp?, udp?, guarded?);
    if let Field::Given(listed) = &dp.tcp_ports {
        for (i, n) in listed.iter().enumerate() {
            let port = *n as u16;
            if CONTROL_PLANE_TCP_PORTS.contains(&port) && !guarded.contains(&port) {
                errors.push(PolicyError::new(
                    format!("{base}.tcp_ports[{i}]"),
                    n.to_string(),
                    format!(
                        "port {port} is SSH, the control plane the operators reach this host \
                         through: guarding it puts their own sessions behind the ACL and can \
                         lock them out"
                    ),
                    format!(
                        "remove it, or guard it on purpose with guard_control_ports = [{port}] \
                         in [data_plane] (after adding an IP rule for your own address)"
                    ),
                ));
            }
        }
    }
    Some(DataPlane {
        tcp_ports: tcp,
        udp_ports: udp,
        guard_control_ports: guarded,
    })
}

/// A port list; an absent key in a present `[data_plane]` means no port.
fn port_set(
    path: &str,
    field: &Field<Vec<i64>>,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Option<BTreeSet<u16>> {
    let ports = match field {
        Field::Absent => return Some(BTreeSet::new()),
        Field::Invalid => return None,
        Field::Given(p) => p,
    };
    let mut set = BTreeSet::new();
    let mut first_at: BTreeMap<u16, usize> = BTreeMap::new();
    let mut ok = true;
    for (i, n) in ports.iter().enumerate() {
        let port = match u16::try_from(*n) {
            Ok(p) if p != 0 => p,
            _ => {
                ok = false;
                errors.push(PolicyError::new(
                    format!("{path}[{i}]"),
                    n.to_string(),
                    format!("port {n} is outside 1–65535"),
                    "use a destination port number from 1 to 65535",
                ));
                continue;
            }
        };
        if let Some(first) = first_at.get(&port) {
            warnings.push(PolicyWarning::new(
                format!("{path}[{i}]"),
                format!(
                    "port {port} is listed twice (first at {path}[{first}]); it is guarded once"
                ),
            ));
        } else {
            first_at.insert(port, i);
            set.insert(port);
        }
    }
    ok.then_some(set)
}
