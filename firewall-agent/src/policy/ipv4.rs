//! One IP-rule value, checked on its own: strict IPv4 text (`a.b.c.d` or
//! `a.b.c.d/N`, written by hand here because the standard parsers are either
//! too lenient or too terse to explain themselves), then the rules that
//! concern a single value: IPv4 only, no `/0`, no `/31`, no host bits, and
//! public address space only. [`SPECIAL_RANGES`] is the table of non-public
//! ranges, each with its purpose and the RFC that reserves it.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;

use super::error::PolicyError;

/// The form every IP-rule value must have, quoted in syntax errors.
pub const VALID_FORM: &str = "write a.b.c.d or a.b.c.d/N: four decimal octets 0–255 \
     without leading zeros, and an optional prefix length N in 0–32 \
     (e.g. 203.0.113.7 or 203.0.113.0/24)";

/// A special-purpose IPv4 range that is not public address space, so no IP
/// rule may lie inside it or contain it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialRange {
    /// The range.
    pub network: Ipv4Net,
    /// What it is for, as a noun phrase (`"private range"`).
    pub purpose: &'static str,
    /// The RFC that reserves it (`"RFC 1918"`).
    pub rfc: &'static str,
    /// True for the RFC 1918 private ranges, which virtual network rules
    /// admit instead.
    pub private: bool,
}

const fn special(
    [a, b, c, d]: [u8; 4],
    prefix_len: u8,
    purpose: &'static str,
    rfc: &'static str,
    private: bool,
) -> SpecialRange {
    SpecialRange {
        // Evaluated at compile time: a bad prefix length fails the build.
        network: Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix_len),
        purpose,
        rfc,
        private,
    }
}

/// The non-public IPv4 ranges refused in IP rules, in address order. The
/// documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
/// RFC 5737) are deliberately absent: they are accepted.
pub const SPECIAL_RANGES: [SpecialRange; 10] = [
    special([0, 0, 0, 0], 8, "\"this network\" range", "RFC 1122", false),
    special([10, 0, 0, 0], 8, "private range", "RFC 1918", true),
    special(
        [100, 64, 0, 0],
        10,
        "shared address space (carrier-grade NAT)",
        "RFC 6598",
        false,
    ),
    special([127, 0, 0, 0], 8, "loopback range", "RFC 1122", false),
    special([169, 254, 0, 0], 16, "link-local range", "RFC 3927", false),
    special([172, 16, 0, 0], 12, "private range", "RFC 1918", true),
    special([192, 168, 0, 0], 16, "private range", "RFC 1918", true),
    special([224, 0, 0, 0], 4, "multicast range", "RFC 5771", false),
    special([240, 0, 0, 0], 4, "reserved range", "RFC 1112", false),
    special(
        [255, 255, 255, 255],
        32,
        "limited broadcast address",
        "RFC 919",
        false,
    ),
];

/// How a network meets the special-purpose ranges.
#[derive(Debug, PartialEq, Eq)]
pub enum Conflict {
    /// The network lies inside this range (the most specific one), or is it.
    Inside(&'static SpecialRange),
    /// The network contains these ranges (in address order).
    Contains(Vec<&'static SpecialRange>),
}

/// Whether `net` lies inside or contains non-public space.
pub fn conflict(net: Ipv4Net) -> Option<Conflict> {
    let inside = SPECIAL_RANGES
        .iter()
        .filter(|s| s.network.contains(&net))
        .max_by_key(|s| s.network.prefix_len());
    if let Some(s) = inside {
        return Some(Conflict::Inside(s));
    }
    let contained: Vec<_> = SPECIAL_RANGES
        .iter()
        .filter(|s| net.contains(&s.network))
        .collect();
    (!contained.is_empty()).then_some(Conflict::Contains(contained))
}

/// Strictly parses and checks one IP-rule value; see
/// [`parse_ip_rule`](super::parse_ip_rule).
pub fn check_rule_value(path: &str, text: &str) -> Result<Ipv4Net, PolicyError> {
    let err = |reason: String, fix: String| PolicyError::new(path, text, reason, fix);
    let (addr, prefix_len) = parse_text(text).map_err(|p| match p {
        Problem::Syntax(reason) => err(reason, VALID_FORM.to_string()),
        Problem::Other { reason, fix } => err(reason, fix),
    })?;
    let net = Ipv4Net::new(addr, prefix_len)
        .map_err(|_| {
            err(
                format!("prefix length {prefix_len} is outside 0–32"),
                VALID_FORM.into(),
            )
        })?
        .trunc();

    if prefix_len == 0 {
        return Err(err(
            "a /0 covers every IPv4 address, including non-public space \
             (private, loopback, multicast and reserved ranges)"
                .into(),
            "to let every source reach the data plane, set default_action = \"Allow\" \
             and remove this rule"
                .into(),
        ));
    }
    if prefix_len == 31 {
        if let Some(c) = conflict(net) {
            return Err(conflict_error(path, text, net, &c));
        }
        let first = net.network();
        let second = net.broadcast();
        return Err(err(
            "a /31 is not supported as a range".into(),
            format!("use the two individual addresses {first} and {second} instead"),
        ));
    }
    if net.addr() != addr {
        let host = Ipv4Net::from(addr);
        let Some(net_conflict) = conflict(net) else {
            return Err(err(
                format!("host bits are set: the network of {text} is {net}"),
                format!("write {net} for the whole network, or {addr} if one host was meant"),
            ));
        };
        if conflict(host).is_some() {
            return Err(conflict_error(path, text, net, &net_conflict));
        }
        return Err(err(
            format!("host bits are set: the network of {text} is {net}"),
            format!(
                "write {addr} if one host was meant ({net} would be refused too: {})",
                describe_conflict(net, &net_conflict)
            ),
        ));
    }
    if let Some(c) = conflict(net) {
        return Err(conflict_error(path, text, net, &c));
    }
    Ok(net)
}

/// `net` shown the way rules are: bare address for a /32, CIDR otherwise.
pub fn shown(net: Ipv4Net) -> String {
    if net.prefix_len() == 32 {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// `the private range 10.0.0.0/8 (10.0.0.0–10.255.255.255, RFC 1918)`.
fn describe_range(s: &SpecialRange) -> String {
    if s.network.prefix_len() == 32 {
        format!("the {} {} ({})", s.purpose, s.network.addr(), s.rfc)
    } else {
        format!(
            "the {} {} ({}–{}, {})",
            s.purpose,
            s.network,
            s.network.network(),
            s.network.broadcast(),
            s.rfc
        )
    }
}

fn describe_conflict(net: Ipv4Net, c: &Conflict) -> String {
    match c {
        Conflict::Inside(s) if s.network == net && net.prefix_len() == 32 => {
            format!("{} is the {} ({})", shown(net), s.purpose, s.rfc)
        }
        Conflict::Inside(s) if s.network == net => format!(
            "{net} is the {} {}–{} ({})",
            s.purpose,
            s.network.network(),
            s.network.broadcast(),
            s.rfc
        ),
        Conflict::Inside(s) => format!("{} lies inside {}", shown(net), describe_range(s)),
        Conflict::Contains(ranges) => {
            let listed: Vec<String> = ranges.iter().map(|s| describe_range(s)).collect();
            format!("{} contains {}", shown(net), listed.join(", "))
        }
    }
}

fn conflict_error(path: &str, text: &str, net: Ipv4Net, c: &Conflict) -> PolicyError {
    let reason = format!(
        "{}: IP rules admit public address space only",
        describe_conflict(net, c)
    );
    let fix = match c {
        Conflict::Inside(s) if s.private => "remove it from the IP rules: a private source is \
             admitted by a virtual network rule bound to the interface or VLAN its traffic \
             arrives through ([[virtual_network_rules]], coming in a later version of vaultfw), \
             never by an IP rule"
            .to_string(),
        Conflict::Inside(s) if s.network.prefix_len() == 32 => format!(
            "remove it from the IP rules: no public client has the {}",
            s.purpose
        ),
        Conflict::Inside(s) => format!(
            "remove it from the IP rules: no public client's address lies in the {}",
            s.purpose
        ),
        Conflict::Contains(_) => {
            let parts = public_parts(net);
            if !parts.is_empty() && parts.len() <= 8 {
                let listed: Vec<String> = parts.iter().map(|p| shown(*p)).collect();
                format!(
                    "narrow the range to public space only, e.g. split it into {}",
                    listed.join(", ")
                )
            } else {
                "narrow the range so that it leaves out the non-public ranges named".to_string()
            }
        }
    };
    PolicyError::new(path, text, reason, fix)
}

/// The largest CIDR blocks of `net` that touch no special range.
fn public_parts(net: Ipv4Net) -> Vec<Ipv4Net> {
    match conflict(net) {
        None => vec![net],
        Some(Conflict::Inside(_)) => Vec::new(),
        Some(Conflict::Contains(_)) => net
            .subnets(net.prefix_len().saturating_add(1))
            .map(|halves| halves.flat_map(public_parts).collect())
            .unwrap_or_default(),
    }
}

/// Why a text is not an IP-rule value.
enum Problem {
    /// Not `a.b.c.d` or `a.b.c.d/N`; the fix is [`VALID_FORM`].
    Syntax(String),
    /// Well-formed but another kind of value (IPv6, address with port).
    Other { reason: String, fix: String },
}

/// `a.b.c.d` or `a.b.c.d/N` → address and prefix length (32 when absent).
fn parse_text(text: &str) -> Result<(Ipv4Addr, u8), Problem> {
    if text.is_empty() {
        return Err(Problem::Syntax("the value is empty".into()));
    }
    if text.chars().any(char::is_whitespace) {
        return Err(Problem::Syntax("the value contains whitespace".into()));
    }
    if text.contains(':') {
        return Err(colon_problem(text));
    }
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    if addr_text.is_empty() {
        return Err(Problem::Syntax("there is no address before the '/'".into()));
    }
    let addr = parse_addr(addr_text)?;
    let prefix_len = match prefix_text {
        None => 32,
        Some(p) => parse_prefix_len(p)?,
    };
    Ok((addr, prefix_len))
}

fn parse_addr(text: &str) -> Result<Ipv4Addr, Problem> {
    let octets: Vec<&str> = text.split('.').collect();
    if octets.len() != 4 {
        return Err(Problem::Syntax(format!(
            "{text} has {} octet{} separated by dots; an IPv4 address has exactly 4",
            octets.len(),
            if octets.len() == 1 { "" } else { "s" }
        )));
    }
    let mut out = [0u8; 4];
    for (slot, octet) in out.iter_mut().zip(&octets) {
        if octet.is_empty() {
            return Err(Problem::Syntax(format!("{text} has an empty octet")));
        }
        if !octet.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Problem::Syntax(format!(
                "octet {octet:?} is not a decimal number"
            )));
        }
        if octet.len() > 1 && octet.starts_with('0') {
            let decimal: Vec<&str> = octets
                .iter()
                .map(|o| match o.trim_start_matches('0') {
                    "" => "0",
                    rest => rest,
                })
                .collect();
            return Err(Problem::Other {
                reason: format!(
                    "octet {octet:?} has a leading zero: some tools read it as octal, others \
                     as decimal, so it is never guessed"
                ),
                fix: format!(
                    "write the octets without leading zeros: {} if decimal was meant",
                    decimal.join(".")
                ),
            });
        }
        *slot = octet
            .parse::<u8>()
            .map_err(|_| Problem::Syntax(format!("octet {octet} is above 255")))?;
    }
    Ok(Ipv4Addr::from(out))
}

fn parse_prefix_len(text: &str) -> Result<u8, Problem> {
    if text.is_empty() {
        return Err(Problem::Syntax(
            "the prefix length after the '/' is missing".into(),
        ));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::Syntax(format!(
            "the prefix length {text:?} is not a whole number in 0–32"
        )));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(Problem::Syntax(format!(
            "the prefix length {text:?} has a leading zero"
        )));
    }
    match text.parse::<u8>() {
        Ok(n) if n <= 32 => Ok(n),
        _ => Err(Problem::Syntax(format!(
            "the prefix length {text} is outside 0–32"
        ))),
    }
}

/// A value with a ':' is IPv6, an address with a port, or garbage.
fn colon_problem(text: &str) -> Problem {
    let (addr_part, prefix_part) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    if addr_part.parse::<Ipv6Addr>().is_ok() {
        let kind = if prefix_part.is_some() {
            "an IPv6 range"
        } else {
            "an IPv6 address"
        };
        return Problem::Other {
            reason: format!("{text} is {kind}; IP rules can name only IPv4 addresses and ranges"),
            fix: "remove it: IPv6 to the data plane is allowed or denied as a whole by \
                  ipv6 = \"Allow\" or ipv6 = \"Deny\""
                .into(),
        };
    }
    if let Some((host, port)) = text.rsplit_once(':')
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && parse_addr(host).is_ok()
    {
        return Problem::Other {
            reason: "a port is not part of an IP rule".into(),
            fix: format!(
                "write the address alone ({host}); the guarded ports are set in [data_plane] \
                 tcp_ports and udp_ports"
            ),
        };
    }
    Problem::Syntax("the value contains ':' but is not an IPv6 address".into())
}
