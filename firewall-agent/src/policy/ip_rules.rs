//! IP rules of a document: each value checked ([`ipv4`](super::ipv4)),
//! expiry checked, then canonical: one rule per network (the first
//! spelling, comment and expiry kept; every repeat reported once), sorted by
//! (address, prefix length), and every rule lying inside a wider one
//! reported as shadowed (allowed: the longest prefix matches).

use std::collections::BTreeMap;
use std::time::SystemTime;

use ipnet::{Ipv4Net, Ipv6Net};

use super::error::{PolicyError, PolicyWarning};
use super::expiry;
use super::ipv4::{self, Dialect, ValueKind};
use super::ipv6;
use super::model::{IpRule, Ipv6Rule, shown, shown6};
use super::raw::RawIpRule;
use super::raw_value::Field;

/// A rule that passed its own checks, before duplicates are merged.
struct Checked<'a> {
    /// The rule's position among the field's values.
    index: usize,
    raw: &'a RawIpRule,
    net: Ipv4Net,
    expires_at: Option<SystemTime>,
}

/// Validates and canonicalises the IP rules of `field`; fixes are worded
/// for `dialect`.
pub fn validate(
    field: &Field<Vec<RawIpRule>>,
    dialect: Dialect,
    now: SystemTime,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Vec<IpRule> {
    let Field::Given(raw_rules) = field else {
        return Vec::new();
    };
    let mut checked = Vec::with_capacity(raw_rules.len());
    let values = raw_rules.iter().enumerate();
    for (index, raw) in values.filter(|(_, r)| !ipv6::is_ipv6_text(&r.value)) {
        let net = ipv4::check_value(ValueKind::IpRule, dialect, &raw.value_path, &raw.value);
        let expires_at = raw
            .expires_at
            .as_ref()
            .map(|at| expiry::check(&at.path, &at.value, now, errors, warnings));
        match (net, expires_at) {
            (Err(e), _) => errors.push(e),
            (Ok(net), None) => checked.push(Checked {
                index,
                raw,
                net,
                expires_at: None,
            }),
            (Ok(net), Some(Some(t))) => checked.push(Checked {
                index,
                raw,
                net,
                expires_at: Some(t),
            }),
            (Ok(_), Some(None)) => {} // malformed (error) or expired (warning): left out
        }
    }

    // One rule per network, the first spelling kept; sorted by (address,
    // prefix length). The sort is stable, so each network's first spelling
    // comes first; repeats are reported in input order.
    checked.sort_by_key(|c| (u32::from(c.net.addr()), c.net.prefix_len()));
    let mut kept: Vec<Checked> = Vec::with_capacity(checked.len());
    let mut repeats = Vec::new();
    for rule in checked {
        match kept.last() {
            Some(first) if first.net == rule.net => {
                repeats.push((rule.index, duplicate_warning(first, &rule)));
            }
            _ => kept.push(rule),
        }
    }
    repeats.sort_by_key(|(index, _)| *index);
    warnings.extend(repeats.into_iter().map(|(_, warning)| warning));
    // Sorted by (address, prefix length), a prefix comes right before the
    // prefixes it contains: the chain of prefixes containing the current
    // one is a stack (one pass, not one lookup per prefix length).
    let mut chain: Vec<&Checked> = Vec::new();
    for rule in &kept {
        while chain.last().is_some_and(|top| !top.net.contains(&rule.net)) {
            chain.pop();
        }
        let wider = chain.last().copied();
        chain.push(rule);
        if let Some(wider) = wider {
            warnings.push(PolicyWarning::new(
                &rule.raw.path,
                format!(
                    "{} lies inside {} {}: the wider rule already admits it (overlaps are \
                     allowed; the longest prefix matches and counts the hit)",
                    shown(rule.net),
                    wider.raw.path,
                    shown(wider.net)
                ),
            ));
        }
    }
    kept.into_iter()
        .map(|c| IpRule {
            network: c.net,
            comment: c.raw.comment.clone(),
            expires_at: c.expires_at,
        })
        .collect()
}

/// Validates and canonicalises the IPv6 values of `field` (those with a
/// `:`; [`validate`] takes the others) the same way: each checked
/// ([`ipv6`]), expiry checked, one rule per network (repeats reported),
/// sorted by (address, prefix length).
pub fn validate_v6(
    field: &Field<Vec<RawIpRule>>,
    dialect: Dialect,
    now: SystemTime,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
) -> Vec<Ipv6Rule> {
    let Field::Given(raw_rules) = field else {
        return Vec::new();
    };
    let mut kept: BTreeMap<(u128, u8), (&RawIpRule, Ipv6Net, Option<SystemTime>)> = BTreeMap::new();
    for raw in raw_rules.iter().filter(|r| ipv6::is_ipv6_text(&r.value)) {
        let net = ipv6::check_value(ValueKind::IpRule, dialect, &raw.value_path, &raw.value);
        let expires_at = raw
            .expires_at
            .as_ref()
            .map(|at| expiry::check(&at.path, &at.value, now, errors, warnings));
        let (net, expires_at) = match (net, expires_at) {
            (Err(e), _) => {
                errors.push(e);
                continue;
            }
            (Ok(net), None) => (net, None),
            (Ok(net), Some(Some(t))) => (net, Some(t)),
            (Ok(_), Some(None)) => continue,
        };
        let key = (u128::from(net.addr()), net.prefix_len());
        match kept.get(&key) {
            Some((first, _, _)) => warnings.push(PolicyWarning::new(
                &raw.path,
                format!(
                    "{:?} is the same network as {} {:?} ({}); it is one rule, kept once",
                    raw.value,
                    first.path,
                    first.value,
                    shown6(net)
                ),
            )),
            None => {
                kept.insert(key, (raw, net, expires_at));
            }
        }
    }
    // The containing chain as a stack, as for IPv4.
    let mut chain: Vec<(&RawIpRule, Ipv6Net)> = Vec::new();
    for (raw, net, _) in kept.values() {
        while chain.last().is_some_and(|(_, top)| !top.contains(net)) {
            chain.pop();
        }
        let wider = chain.last().copied();
        chain.push((raw, *net));
        if let Some((wider_raw, wider)) = wider {
            warnings.push(PolicyWarning::new(
                &raw.path,
                format!(
                    "{} lies inside {} {}: the wider rule already admits it (overlaps are \
                     allowed; the longest prefix matches and counts the hit)",
                    shown6(*net),
                    wider_raw.path,
                    shown6(wider)
                ),
            ));
        }
    }
    kept.into_values()
        .map(|(raw, network, expires_at)| Ipv6Rule {
            network,
            comment: raw.comment.clone(),
            expires_at,
        })
        .collect()
}

fn duplicate_warning(first: &Checked, dup: &Checked) -> PolicyWarning {
    let mut message = format!(
        "{:?} is the same network as {} {:?}; it is one rule, kept once",
        dup.raw.value, first.raw.path, first.raw.value,
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
            first.raw.path
        )),
        _ => message.push_str(&format!(
            "; its {} differ and those of {} are kept",
            differ.join(" and "),
            first.raw.path
        )),
    }
    PolicyWarning::new(&dup.raw.path, message)
}
