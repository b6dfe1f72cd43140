//! Virtual network rules: each rule's id, prefixes, endpoint and expiry
//! checked, then the rules compared with each other (ids are unique
//! case-insensitively; the same or a nested prefix under the same endpoint
//! in another rule is reported). Whether an interface exists is not checked
//! here: that is I/O, done by the agent, which honours
//! `ignore_missing_endpoint`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use ipnet::{Ipv4Net, Ipv6Net};

use super::error::{PolicyError, PolicyWarning};
use super::expiry;
use super::ipv4;
use super::model::{Endpoint, VnetRule, shown};
use super::raw::{RawEndpoint, RawVnetRule};
use super::raw_value::{At, Field};
use super::subnet_id;

/// Linux's `IFNAMSIZ` less the terminating NUL: the longest interface name.
pub const MAX_INTERFACE_NAME: usize = 15;

/// A VLAN id usable in a rule: 802.1Q VIDs 1–4094 (0 means "priority tag,
/// no VLAN" and 4095 is reserved).
pub const VLAN_IDS: std::ops::RangeInclusive<u16> = 1..=4094;

/// Checks an interface name as the Linux kernel does (`dev_valid_name`):
/// 1–15 bytes, not `.` or `..`, no `/`, `:` or whitespace; control
/// characters are refused too. The name is not looked up.
pub fn check_interface_name(path: &str, name: &str) -> Result<(), PolicyError> {
    let fix = "write the interface name as `ip link` shows it, e.g. \"eth1\" or \"ens5\"";
    let refuse = |reason: String| Err(PolicyError::new(path, name, reason, fix));
    if name.is_empty() {
        return refuse("the interface name is empty".into());
    }
    if name.len() > MAX_INTERFACE_NAME {
        return refuse(format!(
            "the name is {} bytes long; Linux interface names have at most {MAX_INTERFACE_NAME}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return refuse(format!("{name:?} cannot name an interface"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return refuse(format!(
            "the name contains {c:?}; Linux interface names contain no '/', ':', whitespace \
             or control characters"
        ));
    }
    Ok(())
}

/// Checks a VLAN id as 802.1Q allows it in a rule: 1–4094 (see
/// [`VLAN_IDS`]). `path` names the value in the error.
pub fn check_vlan_id(path: &str, value: i64) -> Result<u16, PolicyError> {
    match u16::try_from(value) {
        Ok(v) if VLAN_IDS.contains(&v) => Ok(v),
        _ => {
            let reason = match value {
                0 => "VLAN id 0 is reserved: in 802.1Q it marks a priority tag without a VLAN"
                    .to_string(),
                4095 => "VLAN id 4095 is reserved by 802.1Q".to_string(),
                n => format!("VLAN id {n} is outside 1–4094"),
            };
            Err(PolicyError::new(
                path,
                value.to_string(),
                reason,
                "use the 802.1Q VLAN id the subnet's frames carry (1–4094), or leave vlan \
                 out to match by interface only",
            ))
        }
    }
}

/// Parses an endpoint written on the command line: `IFACE`, `vlan:N` or
/// `IFACE,vlan:N`, each part checked as in a policy file
/// ([`check_interface_name`], [`check_vlan_id`]). `path` names the value
/// in the error (`--endpoint`).
pub fn parse_endpoint(path: &str, text: &str) -> Result<Endpoint, PolicyError> {
    let mut endpoint = Endpoint {
        interface: None,
        vlan: None,
    };
    for part in text.split(',').map(str::trim) {
        if let Some(vlan) = part.strip_prefix("vlan:") {
            let id = vlan.parse::<i64>().map_err(|_| {
                PolicyError::new(
                    path,
                    text,
                    format!("VLAN id {vlan:?} is not a number"),
                    "write the 802.1Q VLAN id as a number, 1–4094, e.g. vlan:120",
                )
            })?;
            endpoint.vlan = Some(check_vlan_id(path, id)?);
        } else {
            check_interface_name(path, part)?;
            endpoint.interface = Some(part.to_owned());
        }
    }
    Ok(endpoint)
}

/// A rule that passed its own checks, with where its parts were written.
struct Checked<'a> {
    raw: &'a RawVnetRule,
    rule: VnetRule,
    /// Each canonical prefix with the first place it was written.
    prefixes: Vec<(Ipv4Net, &'a At<String>)>,
}

/// Validates the virtual network rules of `field`; the result is sorted by
/// canonical id ([`subnet_id::canonical`]), unique by it.
pub fn validate(
    field: &Field<Vec<RawVnetRule>>,
    now: SystemTime,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Vec<VnetRule> {
    let Field::Given(raw_rules) = field else {
        return Vec::new();
    };
    let mut ids: BTreeMap<String, (&RawVnetRule, &At<String>)> = BTreeMap::new();
    let mut checked = Vec::with_capacity(raw_rules.len());
    for raw in raw_rules {
        let id = id(raw, errors);
        if let Some(at) = id {
            let key = subnet_id::canonical(&at.value);
            if let Some((first_rule, first)) = ids.get(&key) {
                errors.push(PolicyError::new(
                    &at.path,
                    &at.value,
                    format!(
                        "the same subnet id as {} {:?} (subnet ids compare case-insensitively)",
                        first.path, first.value
                    ),
                    format!(
                        "give each subnet one rule: merge the address_prefixes into {}, or \
                         correct the id",
                        first_rule.path
                    ),
                ));
            } else {
                ids.insert(key, (raw, at));
            }
        }
        let prefixes = prefixes(raw, errors, warnings);
        let (prefixes, prefixes_v6) = match prefixes {
            Some((v4, v6)) => (Some(v4), v6),
            None => (None, Vec::new()),
        };
        let endpoint = endpoint(raw, errors);
        let expires_at = match &raw.expires_at {
            None => Some(None),
            Some(at) => expiry::check(&at.path, &at.value, now, errors, warnings).map(Some),
        };
        if let Some(Endpoint {
            interface: None, ..
        }) = &endpoint
            && raw.ignore_missing_endpoint
        {
            warnings.push(PolicyWarning::new(
                &raw.path,
                "ignore_missing_endpoint has no effect on an endpoint without an interface",
            ));
        }
        if let (Some(id), Some(prefixes), Some(endpoint), Some(expires_at)) =
            (id, prefixes, endpoint, expires_at)
        {
            checked.push(Checked {
                raw,
                rule: VnetRule {
                    id: id.value.clone(),
                    address_prefixes: prefixes.iter().map(|(net, _)| *net).collect(),
                    address_prefixes_v6: prefixes_v6,
                    endpoint,
                    ignore_missing_endpoint: raw.ignore_missing_endpoint,
                    comment: raw.comment.clone(),
                    expires_at,
                },
                prefixes,
            });
        }
    }
    overlaps(&checked, warnings);
    let mut rules: Vec<VnetRule> = checked.into_iter().map(|c| c.rule).collect();
    rules.sort_by_cached_key(|r| subnet_id::canonical(&r.id));
    rules
}

fn id<'a>(raw: &'a RawVnetRule, errors: &mut Vec<PolicyError>) -> Option<&'a At<String>> {
    let fix = "write the subnet's id, e.g. id = \"vnet-prod/subnets/app\" (or its full ARM \
               subnet id)";
    let at = match &raw.id {
        Field::Invalid => return None,
        Field::Absent => {
            errors.push(PolicyError::new(&raw.path, "", "the rule has no `id`", fix));
            return None;
        }
        Field::Given(at) => at,
    };
    let reason = if at.value.trim().is_empty() {
        Some("the id is empty".to_string())
    } else if at.value.trim() != at.value {
        Some("the id starts or ends with whitespace".to_string())
    } else if at.value.chars().any(char::is_control) {
        Some("the id contains a control character".to_string())
    } else {
        None
    };
    match reason {
        Some(reason) => {
            errors.push(PolicyError::new(&at.path, &at.value, reason, fix));
            None
        }
        None => Some(at),
    }
}

/// IPv4 prefixes with where each was first written.
type Prefixes4<'a> = Vec<(Ipv4Net, &'a At<String>)>;

/// The rule's prefixes, canonical and each once: IPv4 ones with where each
/// was first written, then IPv6 ones (a value with a `:`, see
/// [`ipv6`](super::ipv6)); a repeat within the rule is a warning.
fn prefixes<'a>(
    raw: &'a RawVnetRule,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Option<(Prefixes4<'a>, Vec<Ipv6Net>)> {
    let list = match &raw.address_prefixes {
        Field::Invalid => return None,
        Field::Absent => {
            errors.push(PolicyError::new(
                &raw.prefixes_path,
                "",
                "the rule has no address_prefixes: a subnet rule admits the sources of its \
                 prefixes",
                "add address_prefixes = [\"10.1.2.0/24\"] (the subnet's address range)",
            ));
            return None;
        }
        Field::Given(list) => list,
    };
    if list.is_empty() {
        errors.push(PolicyError::new(
            &raw.prefixes_path,
            "",
            "address_prefixes is empty: the rule would admit nothing",
            "list the subnet's address range, e.g. address_prefixes = [\"10.1.2.0/24\"], or \
             remove the rule",
        ));
        return None;
    }
    distinct_prefixes(list, errors, warnings)
}

/// Subnet prefixes (private ranges allowed), canonical and each once:
/// IPv4 ones with where each was first written, then IPv6 ones (a value
/// with a `:`); a repeat within the list is a warning. `None` when any is
/// invalid (each error pushed). Shared by subnet rules' `address_prefixes`
/// and private endpoints' `allowed_prefixes`.
pub(super) fn distinct_prefixes<'a>(
    list: &'a [At<String>],
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Option<(Prefixes4<'a>, Vec<Ipv6Net>)> {
    let mut kept: BTreeMap<(u32, u8), (Ipv4Net, &At<String>)> = BTreeMap::new();
    let mut kept6: BTreeMap<(u128, u8), (Ipv6Net, &At<String>)> = BTreeMap::new();
    let mut ok = true;
    for at in list {
        if super::ipv6::is_ipv6_text(&at.value) {
            let checked = super::ipv6::check_value(
                ipv4::ValueKind::SubnetPrefix,
                ipv4::Dialect::Native,
                &at.path,
                &at.value,
            );
            match checked {
                Err(e) => {
                    ok = false;
                    errors.push(e);
                }
                Ok(net) => {
                    let key = (u128::from(net.addr()), net.prefix_len());
                    if let Some((_, first)) = kept6.get(&key) {
                        warnings.push(PolicyWarning::new(
                            &at.path,
                            format!(
                                "{:?} is the same network as {} {:?}; it is kept once",
                                at.value, first.path, first.value
                            ),
                        ));
                    } else {
                        kept6.insert(key, (net, at));
                    }
                }
            }
            continue;
        }
        match ipv4::check_subnet_prefix(&at.path, &at.value) {
            Err(e) => {
                ok = false;
                errors.push(e);
            }
            Ok(net) => {
                let key = (u32::from(net.addr()), net.prefix_len());
                if let Some((_, first)) = kept.get(&key) {
                    warnings.push(PolicyWarning::new(
                        &at.path,
                        format!(
                            "{:?} is the same network as {} {:?}; it is kept once",
                            at.value, first.path, first.value
                        ),
                    ));
                } else {
                    kept.insert(key, (net, at));
                }
            }
        }
    }
    ok.then(|| {
        (
            kept.into_values().collect(),
            kept6.into_values().map(|(net, _)| net).collect(),
        )
    })
}

fn endpoint(raw: &RawVnetRule, errors: &mut Vec<PolicyError>) -> Option<Endpoint> {
    let form = "endpoint = { interface = \"eth1\" }, endpoint = { vlan = 120 } or both";
    let ep: &RawEndpoint = match &raw.endpoint {
        Field::Invalid => return None,
        Field::Absent => {
            errors.push(PolicyError::new(
                &raw.endpoint_path,
                "",
                "the rule has no endpoint: a subnet rule matches only traffic that arrives \
                 through its service endpoint (host interface and/or VLAN)",
                format!("add {form}"),
            ));
            return None;
        }
        Field::Given(ep) => ep,
    };
    if ep.interface.is_none() && ep.vlan.is_none() {
        errors.push(PolicyError::new(
            &raw.endpoint_path,
            "",
            "the endpoint names neither an interface nor a VLAN",
            format!("write {form}"),
        ));
        return None;
    }
    let interface = match &ep.interface {
        None => Some(None),
        Some(at) => match check_interface_name(&at.path, &at.value) {
            Ok(()) => Some(Some(at.value.clone())),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    let vlan = match &ep.vlan {
        None => Some(None),
        Some(at) => match check_vlan_id(&at.path, at.value) {
            Ok(v) => Some(Some(v)),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    Some(Endpoint {
        interface: interface?,
        vlan: vlan?,
    })
}

/// Warns about a prefix that another rule with the same endpoint already
/// admits: the same network, or one inside a wider prefix. Both rules are
/// kept (each counts its own hits; the longest prefix matches).
fn overlaps(checked: &[Checked], warnings: &mut Vec<PolicyWarning>) {
    type Seen<'c, 'a> = BTreeMap<(&'c Endpoint, u32, u8), (&'c Checked<'a>, &'a At<String>)>;
    let mut seen: Seen = BTreeMap::new();
    for c in checked {
        for (net, at) in &c.prefixes {
            let key = (&c.rule.endpoint, u32::from(net.addr()), net.prefix_len());
            match seen.get(&key) {
                Some((first, first_at)) => warnings.push(PolicyWarning::new(
                    &at.path,
                    format!(
                        "{} under {} is already admitted by {} ({} {:?}); both rules are kept",
                        shown(*net),
                        c.rule.endpoint,
                        first.raw.path,
                        first_at.path,
                        first_at.value
                    ),
                )),
                None => {
                    seen.insert(key, (c, at));
                }
            }
        }
    }
    for c in checked {
        for (net, at) in &c.prefixes {
            let wider = (0..net.prefix_len()).rev().find_map(|len| {
                let w = Ipv4Net::new(net.addr(), len).ok()?.trunc();
                seen.get(&(&c.rule.endpoint, u32::from(w.addr()), len))
                    .map(|found| (w, found))
            });
            if let Some((w, (other, other_at))) = wider {
                let whose = if std::ptr::eq(*other, c) {
                    "this rule's".to_string()
                } else {
                    other.raw.path.clone()
                };
                warnings.push(PolicyWarning::new(
                    &at.path,
                    format!(
                        "{} lies inside {} {} ({}) under the same endpoint ({}): the wider \
                         prefix already admits it",
                        shown(*net),
                        whose,
                        shown(w),
                        other_at.path,
                        c.rule.endpoint
                    ),
                ));
            }
        }
    }
}
