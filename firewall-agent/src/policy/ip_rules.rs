//! IP rules of a document: each value checked ([`ipv4`](super::ipv4)),
//! expiry checked, then canonical: one rule per network (the first
//! spelling, comment and expiry kept; every repeat reported once), sorted by
//! (address, prefix length), and every rule lying inside a wider one
//! reported as shadowed (allowed: the longest prefix matches).

use std::time::SystemTime;

use ipnet::{Ipv4Net, Ipv6Net};

use super::error::{PolicyError, PolicyWarning};
use super::expiry;
use super::ipv4::{self, Dialect, ValueKind};
use super::ipv6;
use super::model::{IpRule, Ipv6Rule, shown, shown6};
use super::raw::RawIpRule;
use super::raw_value::Field;

/// A rule that passed its own checks, before duplicates are merged; `N`
/// is its network (`Ipv4Net` or `Ipv6Net`).
#[derive(Clone, Copy)]
struct Checked<'a, N> {
    /// The rule's position among the field's values.
    index: usize,
    raw: &'a RawIpRule,
    net: N,
    expires_at: Option<SystemTime>,
}

/// The values of `raw_rules` of one family (IPv6 text or not), each
/// checked by `check` and its expiry checked at `now`; a refused value is an
/// error, and a malformed or past expiry leaves its rule out (with the
/// error or warning `expiry::check` gives).
fn checked<'a, N>(
    raw_rules: &'a [RawIpRule],
    ipv6: bool,
    now: SystemTime,
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<PolicyWarning>,
    check: impl Fn(&RawIpRule) -> Result<N, PolicyError>,
) -> Vec<Checked<'a, N>> {
    let mut checked = Vec::with_capacity(raw_rules.len());
    let values = raw_rules.iter().enumerate();
    for (index, raw) in values.filter(|(_, r)| ipv6::is_ipv6_text(&r.value) == ipv6) {
        let net = check(raw);
        let expires_at = raw
            .expires_at
            .as_ref()
            .map(|at| expiry::check(&at.path, &at.value, now, errors, warnings));
        match (net, expires_at) {
            (Err(e), _) => errors.push(e),
            (Ok(_), Some(None)) => {} // malformed (error) or expired (warning): left out
            (Ok(net), expires_at) => checked.push(Checked {
                index,
                raw,
                net,
                expires_at: expires_at.flatten(),
            }),
        }
    }
    checked
}

/// One rule per network, sorted by `key` (address, prefix length). The sort
/// is stable, so a network's spellings stay in input order: the first is
/// kept unless a later one lasts longer (no expiry, or a later one), so the
/// network is admitted as long as any spelling admits it — and a parse
/// before and after an expiry agree. Each other spelling gets
/// `repeat(kept, other)`, in input order.
fn one_per_network<'a, N: Copy + Eq, K: Ord>(
    mut checked: Vec<Checked<'a, N>>,
    key: impl Fn(&N) -> K,
    repeat: impl Fn(&Checked<'a, N>, &Checked<'a, N>) -> PolicyWarning,
    warnings: &mut Vec<PolicyWarning>,
) -> Vec<Checked<'a, N>> {
    checked.sort_by_key(|c| key(&c.net));
    let mut kept = Vec::with_capacity(checked.len());
    let mut repeats = Vec::new();
    for spellings in checked.chunk_by(|a, b| a.net == b.net) {
        let held = spellings
            .iter()
            .copied()
            .reduce(|held, c| {
                if outlasts(c.expires_at, held.expires_at) {
                    c
                } else {
                    held
                }
            })
            .expect("invariant: chunk_by yields non-empty runs");
        for other in spellings.iter().filter(|c| c.index != held.index) {
            repeats.push((other.index, repeat(&held, other)));
        }
        kept.push(held);
    }
    repeats.sort_by_key(|(index, _)| *index);
    warnings.extend(repeats.into_iter().map(|(_, warning)| warning));
    kept
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
    let checked = checked(raw_rules, false, now, errors, warnings, |raw| {
        ipv4::check_value(ValueKind::IpRule, dialect, &raw.value_path, &raw.value)
    });
    let kept = one_per_network(
        checked,
        |net| (u32::from(net.addr()), net.prefix_len()),
        duplicate_warning,
        warnings,
    );
    // Sorted by (address, prefix length), a prefix comes right before the
    // prefixes it contains: the chain of prefixes containing the current
    // one is a stack (one pass, not one lookup per prefix length).
    let mut chain: Vec<&Checked<Ipv4Net>> = Vec::new();
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
    let checked = checked(raw_rules, true, now, errors, warnings, |raw| {
        ipv6::check_value(ValueKind::IpRule, dialect, &raw.value_path, &raw.value)
    });
    let kept = one_per_network(
        checked,
        |net| (u128::from(net.addr()), net.prefix_len()),
        |held, other| {
            PolicyWarning::new(
                &other.raw.path,
                format!(
                    "{:?} is the same network as {} {:?} ({}); it is one rule, kept once",
                    other.raw.value,
                    held.raw.path,
                    held.raw.value,
                    shown6(other.net)
                ),
            )
        },
        warnings,
    );
    // The containing chain as a stack, as for IPv4.
    let mut chain: Vec<(&RawIpRule, Ipv6Net)> = Vec::new();
    for Checked { raw, net, .. } in &kept {
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
    kept.into_iter()
        .map(|c| Ipv6Rule {
            network: c.net,
            comment: c.raw.comment.clone(),
            expires_at: c.expires_at,
        })
        .collect()
}

/// Whether a rule expiring at `a` (`None`: never) lasts longer than one
/// expiring at `b`.
fn outlasts(a: Option<SystemTime>, b: Option<SystemTime>) -> bool {
    match (a, b) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

fn duplicate_warning(first: &Checked<Ipv4Net>, dup: &Checked<Ipv4Net>) -> PolicyWarning {
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
    if dup.expires_at != first.expires_at {
        message.push_str(
            " (the longest-lasting spelling: the network is admitted while any admits it)",
        );
    }
    PolicyWarning::new(&dup.raw.path, message)
}
