//! One IPv6 value, checked on its own: an IP rule or a virtual network
//! rule's address prefix, written beside IPv4 ones in the same list (a
//! value with a `:` is IPv6). The text is read by std's `Ipv6Addr` parser
//! (RFC 4291 section 2.2 forms; `2001:db8:0:0::1` is accepted and shown
//! canonical, RFC 5952, `2001:db8::1::2` is refused), then the address
//! space is checked against [`SPECIAL_RANGES`] (RFC 4291 address
//! architecture, the IANA IPv6 special-purpose registry of RFC 6890): an
//! IP rule must lie in global unicast 2000::/3; a subnet prefix may also
//! lie in unique-local fc00::/7.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::error::PolicyError;
use super::ipv4::{Dialect, ValueKind, port_problem};
use super::model::shown6;

/// The form every IPv6 value must have, quoted in syntax errors.
pub const VALID_FORM: &str = "write an IPv6 address or prefix as RFC 4291 section 2.2 \
     spells it, without a zone id: eight groups of 1–4 hex digits, one `::` at most, \
     and an optional prefix length N in 0–128 (e.g. 2001:db8::7 or 2001:db8::/48)";

/// What a special-purpose IPv6 range is refused for, and what to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Advice {
    /// Write the IPv4 address it stands for as an IPv4 rule.
    Ipv4Rule,
    /// Put it in a virtual network rule's prefixes (unique-local space).
    SubnetRule,
    /// No source can have it.
    Never,
}

/// A special-purpose IPv6 range (RFC 6890 registry, RFC 4291).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialRange6 {
    /// The range.
    pub network: Ipv6Net,
    /// What it is, as a noun phrase.
    pub purpose: &'static str,
    /// The RFC that defines it, with the section.
    pub rfc: &'static str,
    /// Why no rule of this kind may name it.
    pub why: &'static str,
    advice: Advice,
}

const fn range(
    segments: [u16; 8],
    prefix_len: u8,
    purpose: &'static str,
    rfc: &'static str,
    why: &'static str,
    advice: Advice,
) -> SpecialRange6 {
    let [a, b, c, d, e, f, g, h] = segments;
    SpecialRange6 {
        network: Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix_len),
        purpose,
        rfc,
        why,
        advice,
    }
}

/// The special-purpose IPv6 ranges refused in IP rules, most specific
/// first. Only unique-local space may be a subnet prefix. The documentation
/// prefix 2001:db8::/32 (RFC 3849) is deliberately absent: it is accepted,
/// as IPv4's documentation ranges are.
pub const SPECIAL_RANGES: [SpecialRange6; 11] = [
    range(
        [0; 8],
        128,
        "unspecified address",
        "RFC 4291 section 2.5.2",
        "it is never the source of a packet that reaches the data plane",
        Advice::Never,
    ),
    range(
        [0, 0, 0, 0, 0, 0, 0, 1],
        128,
        "loopback address",
        "RFC 4291 section 2.5.3",
        "loopback traffic never arrives through a network interface",
        Advice::Never,
    ),
    range(
        [0, 0, 0, 0, 0, 0xffff, 0, 0],
        96,
        "IPv4-mapped range",
        "RFC 4291 section 2.5.5.2",
        "it stands for an IPv4 address, and IPv4 packets are judged by IPv4 rules",
        Advice::Ipv4Rule,
    ),
    range(
        [0x64, 0xff9b, 0, 0, 0, 0, 0, 0],
        96,
        "NAT64 well-known prefix",
        "RFC 6052 section 2.1",
        "it embeds an IPv4 address in its last 32 bits; the source behind the translator is \
         the IPv4 host, which reaches Key Vault-style ACLs as IPv4",
        Advice::Ipv4Rule,
    ),
    range(
        [0; 8],
        96,
        "IPv4-compatible range (deprecated)",
        "RFC 4291 section 2.5.5.1",
        "it stands for an IPv4 address, and IPv4 packets are judged by IPv4 rules",
        Advice::Ipv4Rule,
    ),
    range(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        32,
        "Teredo range",
        "RFC 4380 section 4",
        "a Teredo address is made from the client's NAT's public IPv4 address and a relay's \
         (RFC 4380 section 4): it names a tunnel, not a host, and changes when the NAT mapping does",
        Advice::Ipv4Rule,
    ),
    range(
        [0x2002, 0, 0, 0, 0, 0, 0, 0],
        16,
        "6to4 range",
        "RFC 3056 section 2",
        "a 6to4 prefix embeds its site's IPv4 address in bits 16–47 (RFC 3056 section 2); \
         the site is an IPv4 host, and 6to4 relays are deprecated (RFC 7526)",
        Advice::Ipv4Rule,
    ),
    range(
        [0xfc00, 0, 0, 0, 0, 0, 0, 0],
        7,
        "unique-local range",
        "RFC 4193 section 3",
        "unique-local addresses are IPv6's private ranges: they are not routed on the \
         Internet, so such a source is a subnet of yours",
        Advice::SubnetRule,
    ),
    range(
        [0xfe80, 0, 0, 0, 0, 0, 0, 0],
        10,
        "link-local range",
        "RFC 4291 section 2.5.6",
        "link-local addresses are not routed: they are valid only on one link",
        Advice::Never,
    ),
    range(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "site-local range (deprecated)",
        "RFC 3879 section 4",
        "site-local addresses were deprecated for being ambiguous across sites",
        Advice::Never,
    ),
    range(
        [0xff00, 0, 0, 0, 0, 0, 0, 0],
        8,
        "multicast range",
        "RFC 4291 section 2.7",
        "multicast addresses are destinations only, never sources",
        Advice::Never,
    ),
];

/// Global unicast space (RFC 4291 section 2.4; IANA IPv6 address space).
const GLOBAL_UNICAST: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);

/// Whether `text` is written as IPv6 (has a `:`; IPv4 text never does).
pub fn is_ipv6_text(text: &str) -> bool {
    text.contains(':')
}

/// Strictly parses `text` as an IPv6 value of `kind` and applies every
/// check that concerns one value; errors carry `path`, `text` as written,
/// the reason with its RFC, and a fix worded for `dialect`. The result is
/// canonical (a single address is a `/128`).
pub fn check_value(
    kind: ValueKind,
    dialect: Dialect,
    path: &str,
    text: &str,
) -> Result<Ipv6Net, PolicyError> {
    let err = |reason: String, fix: String| PolicyError::new(path, text, reason, fix);
    if let Some((_, zone)) = text.split_once('%') {
        let bare = text.split('%').next().unwrap_or_default();
        return Err(err(
            format!(
                "zone id %{zone}: a zone id names a local link (RFC 4007 section 11), \
                 which a rule cannot"
            ),
            format!("write the address without it ({bare})"),
        ));
    }
    if let Some((reason, fix)) = port_problem(kind, text) {
        return Err(err(reason, fix));
    }
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: Ipv6Addr = addr_text.parse().map_err(|_| {
        err(
            format!("{addr_text:?} is not an IPv6 address"),
            VALID_FORM.into(),
        )
    })?;
    let prefix_len = match len_text {
        None => 128,
        Some(l) => {
            let digits = !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit());
            let number = digits && (l == "0" || !l.starts_with('0'));
            match l.parse::<u16>() {
                Ok(n) if number && n <= 128 => n as u8,
                Ok(n) if number => {
                    return Err(err(
                        format!(
                            "prefix length {n} is longer than an IPv6 address's 128 bits \
                             (RFC 4291 section 2.3)"
                        ),
                        format!("write a prefix length in 0–128, e.g. {addr}/64"),
                    ));
                }
                _ => {
                    return Err(err(
                        format!("prefix length {l:?} is not a decimal number"),
                        VALID_FORM.into(),
                    ));
                }
            }
        }
    };
    let net = Ipv6Net::new_assert(addr, prefix_len).trunc();
    if net.addr() != addr {
        return Err(err(
            format!("host bits are set: the network of {text} is {net} (RFC 4291 section 2.3)"),
            format!(
                "write {net} for the whole network, or {} if one host was meant",
                shown6(Ipv6Net::from(addr))
            ),
        ));
    }
    let refused = |r: &SpecialRange6| kind == ValueKind::IpRule || r.advice != Advice::SubnetRule;
    let inside = SPECIAL_RANGES
        .iter()
        .find(|r| r.network.contains(&net) && refused(r));
    if let Some(r) = inside {
        return Err(err(
            format!(
                "{} lies in the {} {} ({}): {}",
                shown6(net),
                r.purpose,
                r.network,
                r.rfc,
                r.why
            ),
            advice_fix(r, net, dialect),
        ));
    }
    let unique_local_ok =
        kind == ValueKind::SubnetPrefix && SPECIAL_RANGES[7].network.contains(&net);
    if !GLOBAL_UNICAST.contains(&net) && !unique_local_ok {
        let allowed = match kind {
            ValueKind::IpRule => "global unicast space 2000::/3",
            ValueKind::SubnetPrefix => {
                "global unicast space 2000::/3 or unique-local space fc00::/7"
            }
        };
        return Err(err(
            format!(
                "{} is not inside {allowed} (RFC 4291 section 2.4): {} may name only \
                 addresses a remote host can send from",
                shown6(net),
                rules(kind)
            ),
            "write the global unicast address or prefix of the sources (2xxx: or 3xxx:); \
             to let every IPv6 source reach the data plane, set ipv6 = \"Allow\""
                .into(),
        ));
    }
    let contained: Vec<String> = SPECIAL_RANGES
        .iter()
        .filter(|r| net.contains(&r.network) && refused(r))
        .map(|r| format!("the {} {} ({})", r.purpose, r.network, r.rfc))
        .collect();
    if !contained.is_empty() {
        return Err(err(
            format!("{} contains {}", shown6(net), contained.join(" and ")),
            "write narrower prefixes that leave those ranges out".into(),
        ));
    }
    Ok(net)
}

/// `IP rules` / `virtual network rules`, for messages.
fn rules(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::IpRule => "IP rules",
        ValueKind::SubnetPrefix => "virtual network rules",
    }
}

/// The fix for a value inside `r`.
fn advice_fix(r: &SpecialRange6, net: Ipv6Net, dialect: Dialect) -> String {
    match r.advice {
        Advice::Never => "remove the rule: no remote source has such an address".into(),
        Advice::SubnetRule => match dialect {
            Dialect::Native => "add the prefix to the address_prefixes of a \
                [[virtual_network_rules]] entry with the endpoint it arrives through"
                .into(),
            Dialect::AzureJson => "add the subnet to virtualNetworkRules, and this prefix and \
                its endpoint to its [[subnet]] entry in the subnet map"
                .into(),
        },
        Advice::Ipv4Rule => match embedded_ipv4(r, net) {
            Some(v4) => format!("write the IPv4 rule {v4} instead"),
            None => "write an IPv4 rule for the IPv4 address it carries".into(),
        },
    }
}

/// The IPv4 rule a mapped, compatible, NAT64 or 6to4 value stands for
/// (Teredo's is obfuscated and names a NAT, not a host: none).
fn embedded_ipv4(r: &SpecialRange6, net: Ipv6Net) -> Option<String> {
    let o = net.addr().octets();
    let (v4, bits) = match r.network.prefix_len() {
        96 => (
            [o[12], o[13], o[14], o[15]],
            net.prefix_len().checked_sub(96)?,
        ),
        16 => (
            [o[2], o[3], o[4], o[5]],
            net.prefix_len().checked_sub(16)?.min(32),
        ),
        _ => return None,
    };
    let v4 = ipnet::Ipv4Net::new(v4.into(), bits).ok()?.trunc();
    Some(super::model::shown(v4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: ValueKind, text: &str) -> Result<Ipv6Net, PolicyError> {
        check_value(kind, Dialect::Native, "ip_rules[0]", text)
    }

    fn refused(text: &str) -> PolicyError {
        check(ValueKind::IpRule, text).expect_err(text)
    }

    #[test]
    fn global_unicast_is_accepted_and_canonical() {
        let net = check(ValueKind::IpRule, "2001:db8:0:0::1").expect("valid");
        assert_eq!(shown6(net), "2001:db8::1");
        let net = check(ValueKind::IpRule, "2001:DB8::/48").expect("valid");
        assert_eq!(shown6(net), "2001:db8::/48");
        assert!(check(ValueKind::IpRule, "2606:4700::/32").is_ok());
    }

    #[test]
    fn every_special_class_is_refused_with_its_rfc_and_fix() {
        let cases: [(&str, &str, &str); 13] = [
            ("::", "RFC 4291 section 2.5.2", "remove the rule"),
            ("::1", "RFC 4291 section 2.5.3", "remove the rule"),
            (
                "::ffff:203.0.113.7",
                "RFC 4291 section 2.5.5.2",
                "IPv4 rule 203.0.113.7",
            ),
            (
                "::203.0.113.7",
                "RFC 4291 section 2.5.5.1",
                "IPv4 rule 203.0.113.7",
            ),
            (
                "64:ff9b::cb00:7100/120",
                "RFC 6052",
                "IPv4 rule 203.0.113.0/24",
            ),
            ("2002:cb00:7107::/48", "RFC 3056", "IPv4 rule 203.0.113.7"),
            ("2001:0:4136:e378::/64", "RFC 4380", "IPv4 rule"),
            ("fd12:3456::/48", "RFC 4193", "virtual_network_rules"),
            ("fe80::1", "RFC 4291 section 2.5.6", "remove the rule"),
            ("fec0::/10", "RFC 3879", "remove the rule"),
            ("ff02::1", "RFC 4291 section 2.7", "remove the rule"),
            ("4000::/2", "RFC 4291 section 2.4", "global unicast"),
            ("::/0", "RFC 4291 section 2.5.2", "remove"),
        ];
        for (text, rfc, fix) in cases {
            let e = refused(text);
            assert_eq!((e.path.as_str(), e.value.as_str()), ("ip_rules[0]", text));
            let shown = e.to_string();
            assert!(shown.contains(rfc) || text == "::/0", "{text}: {shown}");
            assert!(shown.contains(fix) || text == "::/0", "{text}: {shown}");
        }
    }

    #[test]
    fn malformed_long_prefixes_host_bits_and_zones_are_refused() {
        assert!(
            refused("2001:db8::1::2")
                .reason
                .contains("not an IPv6 address")
        );
        assert!(refused("2001:db8::/129").reason.contains("longer than"));
        assert!(refused("2001:db8::/064").reason.contains("not a decimal"));
        let e = refused("2001:db8::1/64");
        assert!(e.reason.contains("host bits"), "{e}");
        assert!(e.fix.contains("2001:db8::/64"), "{e}");
        let e = refused("fe80::1%eth0");
        assert!(e.reason.contains("zone id %eth0"), "{e}");
        assert!(refused("4000::/3").reason.contains("global unicast"));
        let e = refused("2000::/3");
        assert!(e.reason.contains("contains"), "{e}");
    }

    #[test]
    fn subnet_prefixes_may_be_unique_local() {
        assert!(check(ValueKind::SubnetPrefix, "fd12:3456:789a::/48").is_ok());
        assert!(check(ValueKind::SubnetPrefix, "2001:db8:1::/48").is_ok());
        assert!(check(ValueKind::SubnetPrefix, "fe80::/64").is_err());
    }
}
