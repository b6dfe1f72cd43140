//! Second stage: [`RawPolicy`] → [`Policy`]. Gives every value its meaning
//! (enum names, limits, addresses, ports, expiry times), makes the IP rules
//! canonical (one rule per network, sorted), and records every error and
//! warning along the way. A policy comes out only when there is no error.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;

use super::error::{PolicyError, PolicyWarning};
use super::expiry;
use super::ipv4::{self, shown};
use super::model::{
    Bypass, DataPlane, DefaultAction, IpRule, Ipv6Action, LimitProfile, Limits, Mode, Policy,
};
use super::raw::{Field, RawDataPlane, RawIpRule, RawLimits, RawPolicy};

/// An expiry closer than this is reported as a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(24 * 3600);

/// Validates `raw` as of `now` (for `expires_at`). Pushes every error and
/// warning; returns the policy only if no error was found (including errors
/// pushed before the call).
pub fn validate(
    raw: RawPolicy,
    now: SystemTime,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Option<Policy> {
    let default_action = choice(
        "default_action",
        &raw.default_action,
        &[
            (
                "Deny",
                DefaultAction::Deny,
                "only sources matched by a rule reach the data plane",
            ),
            (
                "Allow",
                DefaultAction::Allow,
                "every source reaches the data plane and rules are not consulted",
            ),
        ],
        None,
        errors,
    );
    let bypass = choice(
        "bypass",
        &raw.bypass,
        &[
            ("None", Bypass::None, "no bypass"),
            (
                "AzureServices",
                Bypass::AzureServices,
                "trusted Azure services pass",
            ),
        ],
        Some(Bypass::None),
        errors,
    );
    let mode = choice(
        "mode",
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
        "ipv6",
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
    let limits = limits(&raw.limits, errors);
    let ip_rules = ip_rules(&raw.ip_rules, now, errors, warnings);
    if let Some(limits) = &limits {
        check_count(ip_rules.len(), limits, errors);
    }
    let data_plane = data_plane(&raw.data_plane, errors, warnings);

    if default_action == Some(DefaultAction::Allow) && !ip_rules.is_empty() {
        warnings.push(PolicyWarning::new(
            "default_action",
            format!(
                "rules have no effect while default_action = \"Allow\": every source reaches \
                 the data plane ({} IP rule{} kept but not consulted)",
                ip_rules.len(),
                if ip_rules.len() == 1 { " is" } else { "s are" }
            ),
        ));
    }
    if bypass == Some(Bypass::AzureServices) {
        warnings.push(PolicyWarning::new(
            "bypass",
            "the trusted-services catalogue is not configured in this version of vaultfw: \
             no source matches AzureServices, so the bypass admits nothing",
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
        data_plane: data_plane?,
    })
}

/// One of a few names, matched case-insensitively (as Azure does).
/// `default: None` makes the key required.
fn choice<T: Copy>(
    key: &str,
    field: &Field<String>,
    choices: &[(&str, T, &str)],
    default: Option<T>,
    errors: &mut Vec<PolicyError>,
) -> Option<T> {
    let either = choices
        .iter()
        .map(|(name, _, meaning)| format!("{key} = \"{name}\" ({meaning})"))
        .collect::<Vec<_>>()
        .join(" or ");
    match field {
        Field::Invalid => None,
        Field::Absent => {
            if default.is_none() {
                errors.push(PolicyError::new(
                    key,
                    "",
                    format!(
                        "`{key}` is missing: it decides whether sources that no rule matches \
                         reach the data plane, so it is never defaulted"
                    ),
                    format!("add {either}"),
                ));
            }
            default
        }
        Field::Given(text) => {
            let found = choices
                .iter()
                .find(|(name, _, _)| name.eq_ignore_ascii_case(text))
                .map(|(_, v, _)| *v);
            if found.is_none() {
                let names: Vec<String> =
                    choices.iter().map(|(n, _, _)| format!("\"{n}\"")).collect();
                errors.push(PolicyError::new(
                    key,
                    text.as_str(),
                    format!("not one of {}", names.join(", ")),
                    format!("write {either}"),
                ));
            }
            found
        }
    }
}

fn limits(field: &Field<RawLimits>, errors: &mut Vec<PolicyError>) -> Option<Limits> {
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
                    "limits",
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
        }) => {
            let ip = limit_number("limits.ip_rules", ip_rules, explicit_form, errors);
            let vnet = limit_number(
                "limits.virtual_network_rules",
                virtual_network_rules,
                explicit_form,
                errors,
            );
            Some(Limits {
                profile: LimitProfile::Explicit,
                ip_rules: ip?,
                virtual_network_rules: vnet?,
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

/// A rule that passed its own checks, before duplicates are merged.
struct Checked<'a> {
    raw: &'a RawIpRule,
    net: Ipv4Net,
    expires_at: Option<SystemTime>,
}

fn ip_rules(
    field: &Field<Vec<RawIpRule>>,
    now: SystemTime,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Vec<IpRule> {
    let Field::Given(raw_rules) = field else {
        return Vec::new();
    };
    let mut checked = Vec::with_capacity(raw_rules.len());
    for raw in raw_rules {
        let net = ipv4::check_rule_value(&raw.value_path(), &raw.value);
        let expires_at = raw
            .expires_at
            .as_deref()
            .map(|text| expiry_time(raw, text, now, errors, warnings));
        match (net, expires_at) {
            (Err(e), _) => errors.push(e),
            (Ok(net), None) => checked.push(Checked {
                raw,
                net,
                expires_at: None,
            }),
            (Ok(net), Some(Some(t))) => checked.push(Checked {
                raw,
                net,
                expires_at: Some(t),
            }),
            (Ok(_), Some(None)) => {} // the expiry error is recorded
        }
    }

    // One rule per network, the first spelling kept; sorted by (address,
    // prefix length) through the map's key.
    let mut kept: BTreeMap<(u32, u8), Checked> = BTreeMap::new();
    for rule in checked {
        let key = (u32::from(rule.net.addr()), rule.net.prefix_len());
        match kept.get(&key) {
            Some(first) => warnings.push(duplicate_warning(first, &rule)),
            None => {
                kept.insert(key, rule);
            }
        }
    }
    for rule in kept.values() {
        if let Some(wider) = innermost_container(rule.net, &kept) {
            warnings.push(PolicyWarning::new(
                rule.raw.path(),
                format!(
                    "{} lies inside {} {}: the wider rule already admits it (overlaps are \
                     allowed; the longest prefix matches and counts the hit)",
                    shown(rule.net),
                    wider.raw.path(),
                    shown(wider.net)
                ),
            ));
        }
    }
    kept.into_values()
        .map(|c| IpRule {
            network: c.net,
            comment: c.raw.comment.clone(),
            expires_at: c.expires_at,
        })
        .collect()
}

/// The longest-prefix rule in `kept` that strictly contains `net`.
fn innermost_container<'m, 'a>(
    net: Ipv4Net,
    kept: &'m BTreeMap<(u32, u8), Checked<'a>>,
) -> Option<&'m Checked<'a>> {
    (0..net.prefix_len()).rev().find_map(|len| {
        let wider = Ipv4Net::new(net.addr(), len).ok()?.trunc();
        kept.get(&(u32::from(wider.addr()), len))
    })
}

fn duplicate_warning(first: &Checked, dup: &Checked) -> PolicyWarning {
    let mut message = format!(
        "{:?} is the same network as {} {:?}; it is one rule, kept once",
        dup.raw.value,
        first.raw.path(),
        first.raw.value,
    );
    let mut differ = Vec::new();
    if dup.raw.comment != first.raw.comment {
        differ.push("comment");
    }
    if dup.expires_at != first.expires_at {
        differ.push("expires_at");
    }
    match differ.as_slice() {
        [] => {}
        [one] => message.push_str(&format!(
            "; its {one} differs and the one of {} is kept",
            first.raw.path()
        )),
        _ => message.push_str(&format!(
            "; its {} differ and those of {} are kept",
            differ.join(" and "),
            first.raw.path()
        )),
    }
    PolicyWarning::new(dup.raw.path(), message)
}

/// Parses `expires_at`; `None` when an error was recorded.
fn expiry_time(
    raw: &RawIpRule,
    text: &str,
    now: SystemTime,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Option<SystemTime> {
    let path = format!("{}.expires_at", raw.path());
    let t = match expiry::parse_rfc3339(text) {
        Ok(t) => t,
        Err(reason) => {
            errors.push(PolicyError::new(
                path,
                text,
                reason,
                format!("write {}", expiry::EXPECTED_FORM),
            ));
            return None;
        }
    };
    match t.duration_since(now) {
        Err(_) | Ok(Duration::ZERO) => {
            errors.push(PolicyError::new(
                path,
                text,
                "this time is already past, so the rule would be expired on arrival",
                "remove the rule, or set a later expires_at",
            ));
            None
        }
        Ok(left) => {
            if left < EXPIRY_WARNING {
                let minutes = Duration::from_secs(left.as_secs() / 60 * 60);
                warnings.push(PolicyWarning::new(
                    path,
                    format!(
                        "the rule expires in less than 24 h (in {}; at {}) and is then removed",
                        humantime::format_duration(minutes),
                        humantime::format_rfc3339_seconds(t)
                    ),
                ));
            }
            Some(t)
        }
    }
}

fn check_count(count: usize, limits: &Limits, errors: &mut Vec<PolicyError>) {
    let limit = limits.ip_rules;
    if count <= limit {
        return;
    }
    let excess = count - limit;
    let max = Limits::MAX_LOADABLE;
    let explicit = format!(
        "explicit numbers limits = {{ ip_rules = N, virtual_network_rules = M }} (up to {max})"
    );
    let raise = match limits.profile {
        LimitProfile::Kv2020 if count <= Limits::KV_CURRENT.ip_rules => format!(
            "limits = \"kv-current\" ({} IP rules, Key Vault's current documentation) or {explicit}",
            Limits::KV_CURRENT.ip_rules
        ),
        LimitProfile::Kv2020 | LimitProfile::KvCurrent => explicit,
        LimitProfile::Explicit => format!("a larger limits.ip_rules (up to {max})"),
    };
    errors.push(PolicyError::new(
        "ip_rules",
        "",
        format!(
            "{count} IP rules exceed the limit of {limit} (profile {})",
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
    field: &Field<RawDataPlane>,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Option<DataPlane> {
    let dp = match field {
        Field::Absent => return Some(DataPlane::default()),
        Field::Invalid => return None,
        Field::Given(dp) => dp,
    };
    let tcp = port_set("data_plane.tcp_ports", &dp.tcp_ports, errors, warnings);
    let udp = port_set("data_plane.udp_ports", &dp.udp_ports, errors, warnings);
    let written = |f: &Field<Vec<i64>>| match f {
        Field::Absent => Some(0),
        Field::Invalid => None,
        Field::Given(v) => Some(v.len()),
    };
    if let (Some(0), Some(0)) = (written(&dp.tcp_ports), written(&dp.udp_ports)) {
        errors.push(PolicyError::new(
            "data_plane",
            "",
            "[data_plane] lists no port at all: nothing would be guarded",
            "list the guarded ports, e.g. tcp_ports = [443], or remove [data_plane] to guard \
             TCP 443 (the default)",
        ));
        return None;
    }
    Some(DataPlane {
        tcp_ports: tcp?,
        udp_ports: udp?,
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
