//! Strict IPv4 text: `a.b.c.d` or `a.b.c.d/N`, four decimal octets without
//! leading zeros and a prefix length 0–32, with a reason for every refusal
//! (IPv6, an address with a port, octal-looking octets, …).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;

use super::ValueKind;

/// Why a text is not an IP-rule value.
pub(super) enum Problem {
    /// Not `a.b.c.d` or `a.b.c.d/N`; the fix is [`VALID_FORM`](super::VALID_FORM).
    Syntax(String),
    /// Well-formed but another kind of value (IPv6, address with port).
    Other { reason: String, fix: String },
    /// Another way of writing these prefixes (a dash range, a netmask, a
    /// wildcard): the fix is to write them, each as the validator takes it
    /// ([`check_value`](super::check_value) checks them before it says so).
    Rewrite {
        reason: String,
        prefixes: Vec<Ipv4Net>,
    },
}

/// `a.b.c.d` or `a.b.c.d/N` → address and prefix length (32 when absent).
pub(super) fn parse_text(kind: ValueKind, text: &str) -> Result<(Ipv4Addr, u8), Problem> {
    if text.is_empty() {
        return Err(Problem::Syntax("the value is empty".into()));
    }
    if let Some(problem) = range_problem(text) {
        return Err(problem);
    }
    if text.chars().any(char::is_whitespace) {
        return Err(Problem::Syntax("the value contains whitespace".into()));
    }
    if text.contains(':') {
        return Err(colon_problem(kind, text));
    }
    if is_host_name(text) {
        return Err(name_problem(kind, text));
    }
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    if addr_text.is_empty() {
        return Err(Problem::Syntax("there is no address before the '/'".into()));
    }
    if prefix_text.is_none()
        && let Some(problem) = wildcard_problem(addr_text)
    {
        return Err(problem);
    }
    let addr = parse_addr(addr_text)?;
    let prefix_len = match prefix_text {
        None => 32,
        Some(p) if p.contains('.') => return Err(netmask_problem(addr, p)),
        Some(p) => parse_prefix_len(p)?,
    };
    Ok((addr, prefix_len))
}

/// `first-last` (spaces around the dash allowed), as firewall consoles
/// write a range: no rule holds one; the fix is the fewest prefixes that
/// cover exactly those addresses. `None` when `text` is not two addresses
/// around a dash.
fn range_problem(text: &str) -> Option<Problem> {
    let (first, last) = text.split_once('-')?;
    let (first, last) = (
        parse_addr(first.trim()).ok()?,
        parse_addr(last.trim()).ok()?,
    );
    let (low, high) = (first.min(last), first.max(last));
    let order = if first > last {
        " (its first address is after its last: read as the range between them)"
    } else {
        ""
    };
    Some(Problem::Rewrite {
        reason: format!("{text} is a range of addresses {low}–{high}{order}"),
        prefixes: range_cover(u32::from(low), u32::from(high)),
    })
}

/// The fewest prefixes whose union is exactly `low..=high` (host byte
/// order), in address order.
fn range_cover(low: u32, high: u32) -> Vec<Ipv4Net> {
    let mut cover = Vec::new();
    let mut start = u64::from(low);
    let end = u64::from(high) + 1;
    while start < end {
        // The largest block aligned at `start` that ends within the range.
        let mut size = if start == 0 {
            1u64 << 32
        } else {
            start & start.wrapping_neg()
        };
        while start + size > end {
            size /= 2;
        }
        let len = (32 - size.trailing_zeros()) as u8;
        cover.push(Ipv4Net::new(Ipv4Addr::from(start as u32), len).expect("a length in 0–32"));
        start += size;
    }
    cover
}

/// `a.b.c.*` or `a.b.*.*` (no `/N`): the trailing octets as a wildcard,
/// which is the prefix of the octets before them. `None` for any other
/// text.
fn wildcard_problem(text: &str) -> Option<Problem> {
    let octets: Vec<&str> = text.split('.').collect();
    let fixed = octets.iter().take_while(|o| **o != "*").count();
    if octets.len() != 4 || fixed == 4 || octets[fixed..].iter().any(|o| *o != "*") {
        return None;
    }
    let mut network = octets[..fixed].to_vec();
    network.resize(4, "0");
    let network = parse_addr(&network.join(".")).ok()?;
    Some(Problem::Rewrite {
        reason: format!("{text} is a wildcard"),
        prefixes: vec![Ipv4Net::new(network, (fixed * 8) as u8).expect("a length in 0–32")],
    })
}

/// A netmask after the '/' (`a.b.c.d/255.255.255.0`): the prefix it
/// names when the mask is contiguous, with the address's host bits, which
/// [`check_value`](super::check_value) then reports as it reports any.
fn netmask_problem(addr: Ipv4Addr, mask_text: &str) -> Problem {
    let Ok(mask) = parse_addr(mask_text).map(u32::from) else {
        return Problem::Syntax(format!(
            "the prefix length {mask_text:?} is not a whole number in 0–32"
        ));
    };
    let len = mask.leading_ones();
    if mask.checked_shl(len).unwrap_or(0) != 0 {
        return Problem::Syntax(format!(
            "{mask_text} is not a netmask (its one bits are not all leading): it names no \
             prefix length"
        ));
    }
    Problem::Rewrite {
        reason: format!("the prefix length is written as the netmask {mask_text}"),
        prefixes: vec![Ipv4Net::new(addr, len as u8).expect("a length in 0–32")],
    }
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
/// Whether `text` reads as a host name (`vault-client`,
/// `vault.example.com`, `cafe.example.com`): no ':', and its first label
/// starts with a letter and is not all hexadecimal digits, or it has
/// several labels, the first not starting with a digit and the last all
/// letters (a top-level domain). So `fe80`, `0x7f.0.0.1` or `203.0.113.x`
/// keep their own reasons.
pub(crate) fn is_host_name(text: &str) -> bool {
    if text.contains(':') {
        return false;
    }
    let labels: Vec<&str> = text
        .split('/')
        .next()
        .unwrap_or_default()
        .split('.')
        .collect();
    let (first, last) = (labels[0], labels[labels.len() - 1]);
    let word = first.starts_with(|c: char| c.is_ascii_alphabetic())
        && !first.bytes().all(|b| b.is_ascii_hexdigit());
    let domain = labels.len() > 1
        && !first.starts_with(|c: char| c.is_ascii_digit())
        && last.len() >= 2
        && last.bytes().all(|b| b.is_ascii_alphabetic());
    word || domain
}

/// `text` is a host name, not an address. A rule holds
/// addresses only: no name is resolved, as its addresses could change
/// without the policy saying so. Every caller takes IPv6 text too, so the
/// fix names both families.
fn name_problem(kind: ValueKind, text: &str) -> Problem {
    let (holder, v4, v6) = match kind {
        ValueKind::IpRule => (
            "an IP rule",
            "203.0.113.7 or 203.0.113.0/24",
            "2001:db8::7 or 2001:db8::/48",
        ),
        ValueKind::SubnetPrefix => ("a subnet prefix", "10.1.0.0/24", "fd00:1::/64"),
    };
    Problem::Other {
        reason: format!(
            "{text} is a name, not an IP address: {holder} holds addresses, and no name is \
             resolved"
        ),
        fix: format!(
            "write an IPv4 address or range (a.b.c.d or a.b.c.d/N, e.g. {v4}) or an IPv6 one \
             (e.g. {v6})"
        ),
    }
}

fn colon_problem(kind: ValueKind, text: &str) -> Problem {
    let (addr_part, prefix_part) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    if addr_part.parse::<Ipv6Addr>().is_ok() {
        let what = if prefix_part.is_some() {
            "an IPv6 range"
        } else {
            "an IPv6 address"
        };
        return Problem::Other {
            reason: format!(
                "{text} is {what}; {} can name only IPv4 addresses and ranges",
                kind.rules()
            ),
            fix: "remove it: IPv6 to the data plane is allowed or denied as a whole by \
                  ipv6 = \"Allow\" or ipv6 = \"Deny\""
                .into(),
        };
    }
    if let Some((reason, fix)) = port_problem(kind, text) {
        return Problem::Other { reason, fix };
    }
    Problem::Syntax("the value contains ':' but is not an IPv6 address".into())
}

/// `text` is an address with a port (`203.0.113.7:443`,
/// `[2001:db8::7]:443`): the reason and the fix, for either family's
/// parser (a value with a ':' may reach either first).
pub(crate) fn port_problem(kind: ValueKind, text: &str) -> Option<(String, String)> {
    let socket: std::net::SocketAddr = text.parse().ok()?;
    let reason = match kind {
        ValueKind::IpRule => "a port is not part of an IP rule",
        ValueKind::SubnetPrefix => "a port is not part of a subnet prefix",
    };
    Some((
        reason.into(),
        format!(
            "write the address alone ({}); the guarded ports are set in [data_plane] tcp_ports \
             and udp_ports",
            socket.ip()
        ),
    ))
}

/// Parses `a.b.c.d` or `a.b.c.d/N` with the same strictness as a rule
/// value, without the checks on the meaning of the network: the address
/// and prefix length (32 when absent), or why the text is not one.
pub(crate) fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    parse_text(ValueKind::IpRule, text).map_err(|p| match p {
        Problem::Syntax(reason) => reason,
        Problem::Other { reason, .. } | Problem::Rewrite { reason, .. } => reason,
    })
}
