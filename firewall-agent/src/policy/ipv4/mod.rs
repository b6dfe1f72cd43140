//! One IPv4 value, checked on its own: an IP rule or a virtual network
//! rule's address prefix. Strict IPv4 text (`a.b.c.d` or `a.b.c.d/N`,
//! written by hand here because the standard parsers are either too lenient
//! or too terse to explain themselves), then the rules that concern a single
//! value: IPv4 only, no `/0`, no `/31`, no host bits, and the address space
//! the kind of value may name ([`ValueKind`]). [`SPECIAL_RANGES`] is the
//! table of non-public ranges, each with its purpose, the RFC that reserves
//! it, and whether a subnet prefix may lie in it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::error::PolicyError;
use super::model::shown;

mod text;
use text::{Problem, parse_text};
pub(crate) use text::{is_host_name, parse_cidr, port_problem};

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
    /// True where a virtual network rule's prefix may lie: the RFC 1918
    /// private ranges and the shared address space (RFC 6598), which are
    /// what subnets are numbered from. The others are never the source of a
    /// packet from a subnet: `0/8` is not a source address, loopback never
    /// arrives through a network interface, link-local is not routed (and
    /// Azure refuses 169.254.0.0/16, 127.0.0.0/8, 224.0.0.0/4 and
    /// 255.255.255.255 as virtual network address space), multicast and the
    /// limited broadcast are destinations only, and 240.0.0.0/4 is not
    /// assigned.
    pub subnet_ok: bool,
}

/// Who may name a special range: nobody, or virtual network rules only.
#[derive(Clone, Copy)]
enum Use {
    Nobody,
    Private,
    Subnet,
}

const fn special(
    [a, b, c, d]: [u8; 4],
    prefix_len: u8,
    purpose: &'static str,
    rfc: &'static str,
    use_: Use,
) -> SpecialRange {
    SpecialRange {
        // Evaluated at compile time: a bad prefix length fails the build.
        network: Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix_len),
        purpose,
        rfc,
        private: matches!(use_, Use::Private),
        subnet_ok: matches!(use_, Use::Private | Use::Subnet),
    }
}

/// The non-public IPv4 ranges refused in IP rules, in address order. The
/// documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
/// RFC 5737) are deliberately absent: they are accepted.
pub const SPECIAL_RANGES: [SpecialRange; 10] = [
    special(
        [0, 0, 0, 0],
        8,
        "\"this network\" range",
        "RFC 1122",
        Use::Nobody,
    ),
    special([10, 0, 0, 0], 8, "private range", "RFC 1918", Use::Private),
    special(
        [100, 64, 0, 0],
        10,
        "shared address space (carrier-grade NAT)",
        "RFC 6598",
        Use::Subnet,
    ),
    special([127, 0, 0, 0], 8, "loopback range", "RFC 1122", Use::Nobody),
    special(
        [169, 254, 0, 0],
        16,
        "link-local range",
        "RFC 3927",
        Use::Nobody,
    ),
    special(
        [172, 16, 0, 0],
        12,
        "private range",
        "RFC 1918",
        Use::Private,
    ),
    special(
        [192, 168, 0, 0],
        16,
        "private range",
        "RFC 1918",
        Use::Private,
    ),
    special(
        [224, 0, 0, 0],
        4,
        "multicast range",
        "RFC 5771",
        Use::Nobody,
    ),
    special([240, 0, 0, 0], 4, "reserved range", "RFC 1112", Use::Nobody),
    special(
        [255, 255, 255, 255],
        32,
        "limited broadcast address",
        "RFC 919",
        Use::Nobody,
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

/// What a checked value is; decides the address space it may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// An IP rule: public address space only (DESIGN.md section 1).
    IpRule,
    /// A virtual network rule's address prefix: public space, the RFC 1918
    /// private ranges and the shared address space (RFC 6598); see
    /// [`SpecialRange::subnet_ok`].
    SubnetPrefix,
}

impl ValueKind {
    /// Whether a value of this kind may not meet `range`.
    fn refuses(self, range: &SpecialRange) -> bool {
        match self {
            ValueKind::IpRule => true,
            ValueKind::SubnetPrefix => !range.subnet_ok,
        }
    }

    /// `IP rules` / `virtual network rules`, for messages.
    fn rules(self) -> &'static str {
        match self {
            ValueKind::IpRule => "IP rules",
            ValueKind::SubnetPrefix => "virtual network rules",
        }
    }
}

/// Which input's names a fix uses: the native TOML keys, or the Azure JSON
/// fields (`defaultAction`, `virtualNetworkRules`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// The native TOML format.
    Native,
    /// Azure's `networkAcls` JSON (with its subnet map).
    AzureJson,
}

impl Dialect {
    /// How to say "let everyone in" in this dialect.
    fn allow_all(self) -> &'static str {
        match self {
            Dialect::Native => "set default_action = \"Allow\"",
            Dialect::AzureJson => "set \"defaultAction\": \"Allow\"",
        }
    }

    /// Where a private range goes instead of an IP rule.
    fn vnet_rule_hint(self) -> &'static str {
        match self {
            Dialect::Native => {
                "add the range to the address_prefixes of a [[virtual_network_rules]] entry \
                 with that endpoint"
            }
            Dialect::AzureJson => {
                "add the subnet to virtualNetworkRules, and its address prefix and endpoint \
                 to its [[subnet]] entry in the subnet map"
            }
        }
    }
}

/// Whether `net` lies inside or contains non-public space (the IP-rule
/// view: every [`SPECIAL_RANGES`] entry counts).
pub fn conflict(net: Ipv4Net) -> Option<Conflict> {
    conflict_for(ValueKind::IpRule, net)
}

/// Whether `net` lies inside or contains a range that `kind` may not name.
pub fn conflict_for(kind: ValueKind, net: Ipv4Net) -> Option<Conflict> {
    let refused = || SPECIAL_RANGES.iter().filter(move |s| kind.refuses(s));
    let inside = refused()
        .filter(|s| s.network.contains(&net))
        .max_by_key(|s| s.network.prefix_len());
    if let Some(s) = inside {
        return Some(Conflict::Inside(s));
    }
    let contained: Vec<_> = refused().filter(|s| net.contains(&s.network)).collect();
    (!contained.is_empty()).then_some(Conflict::Contains(contained))
}

/// Strictly parses and checks one IP-rule value; see
/// [`parse_ip_rule`](super::parse_ip_rule).
pub fn check_rule_value(path: &str, text: &str) -> Result<Ipv4Net, PolicyError> {
    check_value(ValueKind::IpRule, Dialect::Native, path, text)
}

/// Strictly parses and checks one virtual network rule prefix; see
/// [`parse_subnet_prefix`](super::parse_subnet_prefix).
pub fn check_subnet_prefix(path: &str, text: &str) -> Result<Ipv4Net, PolicyError> {
    check_value(ValueKind::SubnetPrefix, Dialect::Native, path, text)
}

/// The refusal of `text`, which writes `prefixes` in a form no value takes
/// (`reason`: a dash range, a netmask, a wildcard). The fix writes them as
/// values, each checked by [`check_value`] first (a /31 as its two
/// addresses, as the check asks): the values it refuses are left out of
/// the fix and named with its reason, and when it refuses every one the
/// fix is its own.
fn rewrite_error(
    kind: ValueKind,
    dialect: Dialect,
    path: &str,
    text: &str,
    reason: &str,
    prefixes: &[Ipv4Net],
) -> PolicyError {
    let values = prefixes.iter().flat_map(|p| match p.prefix_len() {
        31 => vec![p.network().to_string(), p.broadcast().to_string()],
        32 => vec![p.addr().to_string()],
        _ => vec![p.to_string()],
    });
    let (mut kept, mut refused) = (Vec::new(), Vec::new());
    for value in values {
        match check_value(kind, dialect, path, &value) {
            Ok(_) => kept.push(value),
            Err(e) => refused.push((value, e)),
        }
    }
    let holds = "a value holds one address or one prefix (a.b.c.d or a.b.c.d/N)";
    let left_out: Vec<String> = refused
        .iter()
        .map(|(value, e)| format!("{value} ({})", e.reason))
        .collect();
    match (kept.as_slice(), refused.first()) {
        ([], Some((value, e))) if refused.len() == 1 => PolicyError::new(
            path,
            text,
            format!(
                "{reason}; {holds}, and written as one, {value} is refused too: {}",
                e.reason
            ),
            e.fix.clone(),
        ),
        ([], Some((_, e))) => PolicyError::new(
            path,
            text,
            format!(
                "{reason}; {holds}, and every prefix that covers it is refused too: {}",
                left_out.join("; ")
            ),
            e.fix.clone(),
        ),
        ([one], None) => PolicyError::new(
            path,
            text,
            format!("{reason}; {holds}"),
            format!("write {one}"),
        ),
        (_, None) => PolicyError::new(
            path,
            text,
            format!("{reason}; {holds}"),
            format!(
                "write the {} prefixes that cover it exactly, one value each: {}",
                kept.len(),
                kept.join(", ")
            ),
        ),
        (_, Some(_)) => PolicyError::new(
            path,
            text,
            format!("{reason}; {holds}, and some of the prefixes that cover it are refused"),
            format!(
                "write the {} prefixes of it that can be held, one value each: {}; left out: {}",
                kept.len(),
                kept.join(", "),
                left_out.join("; ")
            ),
        ),
    }
}

/// Strictly parses `text` as a value of `kind` and applies every check that
/// concerns one value; errors carry `path`, `text` as written, the reason and
/// a fix worded for `dialect`. The result is canonical (a single address is
/// a `/32`).
pub fn check_value(
    kind: ValueKind,
    dialect: Dialect,
    path: &str,
    text: &str,
) -> Result<Ipv4Net, PolicyError> {
    let err = |reason: String, fix: String| PolicyError::new(path, text, reason, fix);
    let (addr, prefix_len) = parse_text(kind, text).map_err(|p| match p {
        Problem::Syntax(reason) => err(reason, VALID_FORM.to_string()),
        Problem::Other { reason, fix } => err(reason, fix),
        Problem::Rewrite { reason, prefixes } => {
            rewrite_error(kind, dialect, path, text, &reason, &prefixes)
        }
    })?;
    let net = Ipv4Net::new(addr, prefix_len)
        .map_err(|_| {
            err(
                format!("prefix length {prefix_len} is outside 0–32"),
                VALID_FORM.into(),
            )
        })?
        .trunc();
    let conflict_error =
        |net: Ipv4Net, c: &Conflict| conflict_error(kind, dialect, path, text, net, c);

    if prefix_len == 0 {
        return Err(match kind {
            ValueKind::IpRule => err(
                "a /0 covers every IPv4 address, including non-public space \
                 (private, loopback, multicast and reserved ranges)"
                    .into(),
                format!(
                    "to let every source reach the data plane, {} and remove this rule",
                    dialect.allow_all()
                ),
            ),
            ValueKind::SubnetPrefix => err(
                "a /0 covers every IPv4 address, including ranges no subnet holds \
                 (loopback, link-local, multicast and reserved ranges)"
                    .into(),
                format!(
                    "write the subnet's own prefix (e.g. 10.1.2.0/24); to let every source \
                     reach the data plane, {}",
                    dialect.allow_all()
                ),
            ),
        });
    }
    if prefix_len == 31 {
        if let Some(c) = conflict_for(kind, net) {
            return Err(conflict_error(net, &c));
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
        let Some(net_conflict) = conflict_for(kind, net) else {
            return Err(err(
                format!("host bits are set: the network of {text} is {net}"),
                format!("write {net} for the whole network, or {addr} if one host was meant"),
            ));
        };
        if conflict_for(kind, host).is_some() {
            return Err(conflict_error(net, &net_conflict));
        }
        return Err(err(
            format!("host bits are set: the network of {text} is {net}"),
            format!(
                "write {addr} if one host was meant ({net} would be refused too: {})",
                describe_conflict(net, &net_conflict)
            ),
        ));
    }
    if let Some(c) = conflict_for(kind, net) {
        return Err(conflict_error(net, &c));
    }
    Ok(net)
}

/// `the private range 10.0.0.0/8 (10.0.0.0–10.255.255.255, RFC 1918)`.
fn describe_range(s: &SpecialRange) -> String {
    let span = if s.network.prefix_len() == 32 {
        String::new()
    } else {
        format!("{}–{}, ", s.network.network(), s.network.broadcast())
    };
    format!("the {} {} ({span}{})", s.purpose, shown(s.network), s.rfc)
}

/// How `net` meets the ranges of `c`, as a clause for a message
/// (`10.0.0.0/24 lies inside the private range 10.0.0.0/8 (…)`).
pub fn describe_conflict(net: Ipv4Net, c: &Conflict) -> String {
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

fn conflict_error(
    kind: ValueKind,
    dialect: Dialect,
    path: &str,
    text: &str,
    net: Ipv4Net,
    c: &Conflict,
) -> PolicyError {
    let (reason, from) = match kind {
        ValueKind::IpRule => (
            format!(
                "{}: IP rules admit public address space only",
                describe_conflict(net, c)
            ),
            "remove it from the IP rules",
        ),
        ValueKind::SubnetPrefix => (
            format!(
                "{}: virtual network rules admit private (RFC 1918), shared (RFC 6598) and \
                 public address space only; no subnet's traffic comes from this range",
                describe_conflict(net, c)
            ),
            "remove it from address_prefixes",
        ),
    };
    let fix = match c {
        Conflict::Inside(s) if s.private => format!(
            "{from}: a private source is admitted by a virtual network rule bound to the \
             interface or VLAN its traffic arrives through ({}), never by an IP rule",
            dialect.vnet_rule_hint()
        ),
        Conflict::Inside(s) if kind == ValueKind::SubnetPrefix => format!(
            "{from} and write the subnet's own address range instead: no subnet is numbered \
             from the {}",
            s.purpose
        ),
        Conflict::Inside(s) if s.network.prefix_len() == 32 => {
            format!("{from}: no public client has the {}", s.purpose)
        }
        Conflict::Inside(s) => format!(
            "{from}: no public client's address lies in the {}",
            s.purpose
        ),
        Conflict::Contains(_) => {
            let parts = allowed_parts(kind, net);
            if !parts.is_empty() && parts.len() <= 8 {
                let listed: Vec<String> = parts.iter().map(|p| shown(*p)).collect();
                let space = match kind {
                    ValueKind::IpRule => "public space only",
                    ValueKind::SubnetPrefix => "the space a subnet may hold",
                };
                format!(
                    "narrow the range to {space}, e.g. split it into {}",
                    listed.join(", ")
                )
            } else {
                match kind {
                    ValueKind::IpRule => "narrow the range so that it leaves out the non-public \
                                          ranges named"
                        .to_string(),
                    ValueKind::SubnetPrefix => {
                        "narrow the range so that it leaves out the ranges named".to_string()
                    }
                }
            }
        }
    };
    PolicyError::new(path, text, reason, fix)
}

/// The largest CIDR blocks of `net` that meet no range `kind` refuses.
fn allowed_parts(kind: ValueKind, net: Ipv4Net) -> Vec<Ipv4Net> {
    match conflict_for(kind, net) {
        None => vec![net],
        Some(Conflict::Inside(_)) => Vec::new(),
        Some(Conflict::Contains(_)) => net
            .subnets(net.prefix_len().saturating_add(1))
            .map(|halves| halves.flat_map(|h| allowed_parts(kind, h)).collect())
            .unwrap_or_default(),
    }
}
