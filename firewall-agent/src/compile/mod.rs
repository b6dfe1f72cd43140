//! Policy → kernel table contents. Pure: no I/O, no aya. The result is what
//! one table set must hold for the XDP program to judge frames as the
//! policy says; `dataplane` diffs it against what a set holds and writes it.
//! A rule's `expires_at` becomes a CLOCK_MONOTONIC deadline in its entries,
//! converted with the clock reading the caller passes in.

use std::collections::BTreeMap;
use std::time::SystemTime;

use firewall_common::{
    FLAG_AUDIT, FLAG_BYPASS_TRUSTED, FLAG_DEFAULT_ALLOW, FLAG_HAS_VLAN_VNET, FLAG_HAS_VNET,
    FLAG_IPV6_ALLOW, FLAG_LOG_ALLOWED, FLAG_PASS_FORWARDED, FLAG_VALID, HitSlots, IFINDEX_ANY,
    PORT_PROTO_TCP, PORT_PROTO_UDP, PORT_WORDS_PER_ROW, RuleValue, VLAN_ANY, port_slot,
};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::clock::{MonotonicClock, SAME_DEADLINE};
use crate::links::InterfaceIndex;
use crate::policy::{Bypass, DefaultAction, Endpoint, Ipv6Action, Mode, Policy};

pub mod cpt;
mod rules;

pub use rules::{RuleKind, RuleRef, RuleTable, rule_table};

/// An IPv4 LPM-trie key as the kernel stores it: the prefix length in bits
/// (0–32) and the network address's octets in network byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PrefixKey {
    /// Prefix length in bits, 0–32.
    pub prefix_len: u32,
    /// Network address octets, network byte order (`[203, 0, 113, 0]`).
    pub octets: [u8; 4],
}

impl From<Ipv4Net> for PrefixKey {
    fn from(net: Ipv4Net) -> Self {
        PrefixKey {
            prefix_len: u32::from(net.prefix_len()),
            octets: net.network().octets(),
        }
    }
}

impl From<PrefixKey> for Ipv4Net {
    fn from(key: PrefixKey) -> Self {
        // A PrefixKey only ever holds prefix lengths 0–32 (built from an
        // Ipv4Net or read back from a trie keyed the same way).
        Ipv4Net::new(key.octets.into(), key.prefix_len as u8)
            .expect("invariant: PrefixKey prefix_len is 0..=32")
    }
}

/// An IPv6 LPM-trie key as the kernel stores it: the prefix length in bits
/// (0–128) and the network address's 16 octets in network byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix6Key {
    /// Prefix length in bits, 0–128.
    pub prefix_len: u32,
    /// Network address octets, network byte order.
    pub octets: [u8; 16],
}

impl From<Ipv6Net> for Prefix6Key {
    fn from(net: Ipv6Net) -> Self {
        Prefix6Key {
            prefix_len: u32::from(net.prefix_len()),
            octets: net.network().octets(),
        }
    }
}

impl From<Prefix6Key> for Ipv6Net {
    fn from(key: Prefix6Key) -> Self {
        // A Prefix6Key only ever holds prefix lengths 0–128 (built from an
        // Ipv6Net or read back from a trie keyed the same way).
        Ipv6Net::new(key.octets.into(), key.prefix_len as u8)
            .expect("invariant: Prefix6Key prefix_len is 0..=128")
    }
}

/// An IPv6 virtual-network trie key: the endpoint as in [`VnetPrefixKey`]
/// and the subnet's IPv6 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vnet6PrefixKey {
    /// Ingress ifindex, or `firewall_common::IFINDEX_ANY`.
    pub ifindex: u32,
    /// VLAN id, or `firewall_common::VLAN_ANY`.
    pub vlan: u32,
    /// The subnet prefix.
    pub prefix: Prefix6Key,
}

/// A virtual-network trie key: the service endpoint (ingress ifindex and
/// VLAN, host-order numbers; `IFINDEX_ANY` / `VLAN_ANY` as wildcards) and
/// the subnet prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VnetPrefixKey {
    /// Ingress ifindex, or `firewall_common::IFINDEX_ANY`.
    pub ifindex: u32,
    /// VLAN id, or `firewall_common::VLAN_ANY`.
    pub vlan: u32,
    /// The subnet prefix.
    pub prefix: PrefixKey,
}

/// What one table set holds for a policy: every entry of its tries and
/// port bitmap, and its config word ([`CompiledTables::config_flags`]) —
/// the data plane writes exactly this and reads it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledTables {
    /// The policy's `FLAG_*` bits (always with `FLAG_VALID`); the set's
    /// `PolicyConfig` holds these plus the lookup hints derived from the
    /// entries, see [`CompiledTables::config_flags`].
    pub flags: u32,
    /// The access log's per-CPU event cost in ns (0: no events); see
    /// [`CompiledTables::with_access_log`].
    pub event_cost_ns: u32,
    /// The set's port bitmap, in row order TCP then UDP:
    /// `2 × PORT_WORDS_PER_ROW` words; bit `p % 32` of word `p / 32` of a row
    /// is set when port `p` (host byte order) is data plane.
    pub port_words: Vec<u32>,
    /// IP-rule trie entries: key → the rule's hit slot (stable while the
    /// rule exists, see [`compile_next`]) and expiry.
    pub ip_rules: BTreeMap<PrefixKey, RuleValue>,
    /// Virtual-network trie entries: (endpoint, prefix) → the rule's hit
    /// slot and expiry (every prefix of a rule shares them).
    pub vnet_rules: BTreeMap<VnetPrefixKey, RuleValue>,
    /// Trusted-service trie entries: prefix → the service's hit slot (they
    /// never expire).
    pub trusted: BTreeMap<PrefixKey, RuleValue>,
    /// IPv6 IP-rule trie entries, as `ip_rules`.
    pub ip6_rules: BTreeMap<Prefix6Key, RuleValue>,
    /// IPv6 virtual-network trie entries: a rule's IPv6 prefixes carry the
    /// same slot as its IPv4 ones.
    pub vnet6_rules: BTreeMap<Vnet6PrefixKey, RuleValue>,
    /// IPv6 trusted-service trie entries: a service's IPv6 prefixes carry
    /// the same slot as its IPv4 ones.
    pub trusted6: BTreeMap<Prefix6Key, RuleValue>,
}

/// The `FLAG_*` bits that only let the program skip lookups that cannot
/// match (`FLAG_HAS_VNET`: some subnet entry exists; `FLAG_HAS_VLAN_VNET`:
/// some subnet entry is bound to a VLAN). They are a function of the
/// entries, never stored apart from them, so they cannot disagree with what
/// a set holds — tables built or edited entry by entry included.
pub const LOOKUP_HINTS: u32 = FLAG_HAS_VNET | FLAG_HAS_VLAN_VNET;

impl CompiledTables {
    /// The `flags` word of the set's `PolicyConfig`: [`CompiledTables::flags`]
    /// plus the [`LOOKUP_HINTS`] these entries call for.
    pub fn config_flags(&self) -> u32 {
        let mut word = self.flags & !LOOKUP_HINTS;
        if !self.vnet_rules.is_empty() || !self.vnet6_rules.is_empty() {
            word |= FLAG_HAS_VNET;
        }
        if self.vnet_rules.keys().any(|k| k.vlan != VLAN_ANY)
            || self.vnet6_rules.keys().any(|k| k.vlan != VLAN_ANY)
        {
            word |= FLAG_HAS_VLAN_VNET;
        }
        word
    }

    /// [`CompiledTables::flags`] of a set whose `PolicyConfig` holds
    /// `config_flags` (the inverse of [`CompiledTables::config_flags`]).
    pub fn flags_of_config(config_flags: u32) -> u32 {
        config_flags & !LOOKUP_HINTS
    }

    /// Makes the set's IPv4 lookups walk its compiled prefix table
    /// (`FLAG_LOOKUP_COMPILED`, `vaultfw run --lookup compiled`) when
    /// `compiled`, its tries otherwise.
    pub fn with_compiled_lookup(mut self, compiled: bool) -> Self {
        if compiled {
            self.flags |= firewall_common::FLAG_LOOKUP_COMPILED;
        } else {
            self.flags &= !firewall_common::FLAG_LOOKUP_COMPILED;
        }
        self
    }

    /// Turns the access log on at `events_per_second` per CPU (0: off),
    /// with allowed attempts too when `log_allowed`.
    pub fn with_access_log(mut self, events_per_second: u32, log_allowed: bool) -> Self {
        self.event_cost_ns = 1_000_000_000u32
            .checked_div(events_per_second)
            .map_or(0, |cost| cost.max(1));
        if log_allowed {
            self.flags |= FLAG_LOG_ALLOWED;
        }
        self
    }

    /// Lets data-plane frames the policy would drop pass when the kernel
    /// would forward them out of the host (`FLAG_PASS_FORWARDED`): they are
    /// not addressed to this host's data plane. The daemon's choice (on
    /// with `--pass-forwarded`); `check` and the reference model leave it
    /// off, as they judge the policy, not the host's routes.
    pub fn with_pass_forwarded(mut self, pass_forwarded: bool) -> Self {
        if pass_forwarded {
            self.flags |= FLAG_PASS_FORWARDED;
        }
        self
    }

    /// The hit slots whose owner differs from `previous`'s (new rules, or a
    /// slot handed to another rule): their counters must start from zero.
    pub fn fresh_slots(&self, previous: &CompiledTables) -> Vec<u32> {
        // An IP rule owns one slot: its slot is fresh unless `previous`
        // gave the same key the same slot (one merge pass over the sorted
        // maps: this runs on every apply, at 100,000 rules too).
        fn moved<'a, K: Ord + 'a>(
            before: impl Iterator<Item = (&'a K, &'a RuleValue)>,
            now: impl Iterator<Item = (&'a K, &'a RuleValue)>,
            fresh: &mut Vec<u32>,
        ) {
            let mut before = before.peekable();
            for (key, value) in now {
                while before.next_if(|(k, _)| *k < key).is_some() {}
                let kept = before
                    .next_if(|(k, _)| *k == key)
                    .is_some_and(|(_, v)| v.slot == value.slot);
                if !kept {
                    fresh.push(value.slot);
                }
            }
        }
        let mut fresh = Vec::new();
        moved(previous.ip_rules.iter(), self.ip_rules.iter(), &mut fresh);
        moved(previous.ip6_rules.iter(), self.ip6_rules.iter(), &mut fresh);
        // A subnet rule owns its IPv4 and IPv6 entries under one slot.
        let vnet_owner = |t: &CompiledTables| -> BTreeMap<u32, Vec<AnyVnetKey>> {
            let mut owners: BTreeMap<u32, Vec<AnyVnetKey>> = BTreeMap::new();
            for (k, v) in &t.vnet_rules {
                owners.entry(v.slot).or_default().push(AnyVnetKey::V4(*k));
            }
            for (k, v) in &t.vnet6_rules {
                owners.entry(v.slot).or_default().push(AnyVnetKey::V6(*k));
            }
            owners
        };
        let (before, now) = (vnet_owner(previous), vnet_owner(self));
        for (slot, keys) in &now {
            let kept = before
                .get(slot)
                .is_some_and(|old| old.iter().any(|k| keys.contains(k)));
            if !kept {
                fresh.push(*slot);
            }
        }
        fresh
    }
}

/// A subnet entry of either family, for slot ownership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnyVnetKey {
    V4(VnetPrefixKey),
    V6(Vnet6PrefixKey),
}

/// The hit-slot layout for `policy`'s limits.
pub fn hit_slots_for(policy: &Policy) -> HitSlots {
    HitSlots::new(
        policy.limits.ip_rules as u32,
        policy.limits.virtual_network_rules as u32,
    )
    .with_ipv6(policy.limits.ipv6_rules as u32)
}

impl CompiledTables {
    /// The contents of a table set nobody has written: all zero, not valid.
    pub fn empty() -> Self {
        CompiledTables {
            flags: 0,
            event_cost_ns: 0,
            port_words: vec![0; 2 * PORT_WORDS_PER_ROW as usize],
            ip_rules: BTreeMap::new(),
            vnet_rules: BTreeMap::new(),
            trusted: BTreeMap::new(),
            ip6_rules: BTreeMap::new(),
            vnet6_rules: BTreeMap::new(),
            trusted6: BTreeMap::new(),
        }
    }
}

/// The trie endpoint of `endpoint`: (ifindex or `IFINDEX_ANY`, VLAN id or
/// `VLAN_ANY`). `None` when it names an interface absent from `interfaces`:
/// such a rule matches nothing until the interface appears.
pub fn endpoint_key(endpoint: &Endpoint, interfaces: &InterfaceIndex) -> Option<(u32, u32)> {
    let ifindex = match &endpoint.interface {
        Some(name) => *interfaces.get(name)?,
        None => IFINDEX_ANY,
    };
    let vlan = endpoint.vlan.map_or(VLAN_ANY, u32::from);
    Some((ifindex, vlan))
}

/// Virtual network rules whose endpoint interface does not exist now, as
/// (rule id, interface name).
pub fn missing_endpoints<'p>(
    policy: &'p Policy,
    interfaces: &InterfaceIndex,
) -> Vec<(&'p str, &'p str)> {
    policy
        .virtual_network_rules
        .iter()
        .filter_map(|rule| {
            let name = rule.endpoint.interface.as_deref()?;
            (!interfaces.contains_key(name)).then_some((rule.id.as_str(), name))
        })
        .collect()
}

/// What names an endpoint interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointOwner<'p> {
    /// The subnet rule with this id.
    SubnetRule(&'p str),
    /// A private endpoint.
    PrivateEndpoint,
}

/// The endpoint interfaces missing from `interfaces` for which a start
/// refuses `policy`, each with what names it: a private endpoint's, and a
/// subnet rule's unless the rule sets `ignore_missing_endpoint` (such a
/// rule matches nothing until its interface appears).
pub fn start_refusals<'p>(
    policy: &'p Policy,
    interfaces: &InterfaceIndex,
) -> Vec<(EndpointOwner<'p>, &'p str)> {
    let subnet = missing_endpoints(policy, interfaces)
        .into_iter()
        .filter(|(id, _)| {
            !policy
                .virtual_network_rules
                .iter()
                .any(|r| r.id == *id && r.ignore_missing_endpoint)
        })
        .map(|(id, name)| (EndpointOwner::SubnetRule(id), name));
    let private = policy
        .private_endpoints
        .iter()
        .filter(|p| !interfaces.contains_key(&p.interface))
        .map(|p| (EndpointOwner::PrivateEndpoint, p.interface.as_str()));
    subnet.chain(private).collect()
}

/// The endpoint interfaces `policy` names (of subnet rules and private
/// endpoints) that do not exist in this network namespace now (see
/// [`missing_endpoint_note`]).
pub fn missing_endpoint_interfaces(policy: &Policy) -> Vec<String> {
    let present = crate::links::endpoint_interfaces(policy);
    policy
        .endpoint_interfaces()
        .into_iter()
        .filter(|name| !present.contains_key(*name))
        .map(str::to_owned)
        .collect()
}

/// What `validate` and `check` say of endpoint interface `name`, missing
/// in this network namespace ([`missing_endpoint_interfaces`]): what its
/// rules match here and what `vaultfw run` here does with `policy` — it
/// refuses it as [`start_refusals`] says.
pub fn missing_endpoint_note(policy: &Policy, name: &str) -> String {
    let missing = format!("endpoint interface {name:?} does not exist in this network namespace");
    let refusals = start_refusals(policy, &crate::links::endpoint_interfaces(policy));
    let owners = refusals
        .iter()
        .filter(|(_, interface)| *interface == name)
        .map(|(owner, _)| *owner);
    if owners.clone().any(|o| o == EndpointOwner::PrivateEndpoint) {
        return format!(
            "{missing}: `vaultfw run` here refuses the policy (a private endpoint needs it)"
        );
    }
    let blocking: Vec<&str> = owners
        .filter_map(|owner| match owner {
            EndpointOwner::SubnetRule(id) => Some(id),
            EndpointOwner::PrivateEndpoint => None,
        })
        .collect();
    if blocking.is_empty() {
        return format!(
            "{missing}: its subnet rules match nothing here until it appears (they set \
             ignore_missing_endpoint = true)"
        );
    }
    format!(
        "{missing}: its subnet rules match nothing here, and `vaultfw run` here refuses the \
         policy unless {} set{} ignore_missing_endpoint = true",
        blocking.join(", "),
        if blocking.len() == 1 { "s" } else { "" }
    )
}

/// Compiles `policy` into the contents of one table set, hit slots laid
/// out for its own limits (for a fresh program: `check`, tests). See
/// [`compile_next`].
pub fn compile(
    policy: &Policy,
    interfaces: &InterfaceIndex,
    clock: &MonotonicClock,
) -> CompiledTables {
    compile_next(
        policy,
        interfaces,
        hit_slots_for(policy),
        &CompiledTables::empty(),
        clock,
    )
}

/// Compiles `policy` into the contents of one table set. `interfaces`
/// resolves the interface names of service endpoints (see
/// [`crate::links::resolve`]); a rule whose interface is absent compiles to
/// no entry. Hit slots follow `slots` (the layout the loaded maps were sized
/// for) and stay with their rule across generations: a rule found in
/// `previous` (the tables the kernel serves) keeps its slot, so its
/// counters keep counting; new rules take free slots. A rule's `expires_at`
/// becomes its entries' CLOCK_MONOTONIC deadline through `clock` (a reading
/// taken now); a deadline within [`SAME_DEADLINE`] of the one `previous`
/// holds for the entry keeps that value, so an unchanged policy compiles to
/// unchanged tables.
pub fn compile_next(
    policy: &Policy,
    interfaces: &InterfaceIndex,
    slots: HitSlots,
    previous: &CompiledTables,
    clock: &MonotonicClock,
) -> CompiledTables {
    compile_with(policy, interfaces, slots, previous, clock, None)
}

/// What a change did to the IPv4 IP rules when it changed nothing else in
/// the policy (`vaultfw network-rule add/remove --ip-address`): the IP-rule
/// entries are then derived from the served ones, not compiled again from
/// every rule (a one-rule change at 100,000 rules compiled 100,000).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpRuleChange {
    /// Networks the change removed from the policy.
    pub removed: Vec<Ipv4Net>,
    /// Networks the change added (the policy holds their rules, unless a
    /// rule was already past its expiry and so dropped).
    pub added: Vec<Ipv4Net>,
}

/// [`compile_next`] for a `policy` that differs from the one `previous`
/// was compiled from only by `change` to its IPv4 IP rules: the same
/// tables (the debug builds check each against [`compile_next`]), with the
/// IP-rule entries derived from `previous` — the changed networks, and the
/// rules with an expiry, are computed as `compile_next` computes them;
/// every other entry is kept as served.
pub fn compile_next_changed(
    policy: &Policy,
    interfaces: &InterfaceIndex,
    slots: HitSlots,
    previous: &CompiledTables,
    clock: &MonotonicClock,
    change: &IpRuleChange,
) -> CompiledTables {
    compile_with(policy, interfaces, slots, previous, clock, Some(change))
}

fn compile_with(
    policy: &Policy,
    interfaces: &InterfaceIndex,
    slots: HitSlots,
    previous: &CompiledTables,
    clock: &MonotonicClock,
    ip_change: Option<&IpRuleChange>,
) -> CompiledTables {
    let deadline = |expires_at: Option<SystemTime>, held: Option<&RuleValue>| -> u64 {
        let Some(at) = expires_at else { return 0 };
        let ns = clock.to_monotonic_ns(at);
        match held {
            Some(held)
                if held.expires_at_ns() != 0
                    && u128::from(held.expires_at_ns().abs_diff(ns))
                        <= SAME_DEADLINE.as_nanos() =>
            {
                held.expires_at_ns()
            }
            _ => ns,
        }
    };
    let mut flags = FLAG_VALID;
    if policy.effective_default_action() == DefaultAction::Allow {
        flags |= FLAG_DEFAULT_ALLOW;
    }
    if policy.bypass == Bypass::AzureServices {
        flags |= FLAG_BYPASS_TRUSTED;
    }
    if policy.mode == Mode::Audit {
        flags |= FLAG_AUDIT;
    }
    // Like `default_action = "Allow"`, `ipv6 = "Allow"` opens the data
    // plane to public sources: not while public network access is disabled.
    if policy.ipv6 == Ipv6Action::Allow && policy.ip_rules_apply() {
        flags |= FLAG_IPV6_ALLOW;
    }

    let mut port_words = vec![0u32; 2 * PORT_WORDS_PER_ROW as usize];
    let rows = [
        (PORT_PROTO_TCP, &policy.data_plane.tcp_ports),
        (PORT_PROTO_UDP, &policy.data_plane.udp_ports),
    ];
    for (proto, ports) in rows {
        for &port in ports {
            // Set 0's slot numbering is the row-relative numbering.
            let (word, bit) = port_slot(0, proto, port);
            port_words[word as usize] |= bit;
        }
    }

    // publicNetworkAccess = Disabled: the IP rules admit nothing, so they
    // get no entries (the program is unchanged; `check` and the access log
    // name the reason from the policy).
    let applied_ip_rules: &[crate::policy::IpRule] = if policy.ip_rules_apply() {
        &policy.ip_rules
    } else {
        &[]
    };
    let ip_rules = match ip_change {
        // `previous` holds the IP-rule entries of the policy before the
        // change only while the IP rules apply (else it holds none).
        Some(change) if policy.ip_rules_apply() => ip_entries_changed(
            applied_ip_rules,
            &previous.ip_rules,
            change,
            slots,
            &deadline,
        ),
        _ => ip_entries(applied_ip_rules, &previous.ip_rules, slots, &deadline),
    };

    // IPv6 IP rules are IP rules: none apply while public network access
    // is disabled.
    let applied_ip6_rules: &[crate::policy::Ipv6Rule] = if policy.ip_rules_apply() {
        &policy.ipv6_rules
    } else {
        &[]
    };
    let ip6_keys: Vec<Prefix6Key> = applied_ip6_rules
        .iter()
        .map(|r| Prefix6Key::from(r.network))
        .collect();
    let ip6_base = slots.ip6(0);
    let ip6_slots = assign_slots(
        ip6_keys.iter().map(|k| {
            previous
                .ip6_rules
                .get(k)
                .and_then(|v| v.slot.checked_sub(ip6_base))
        }),
        previous
            .ip6_rules
            .values()
            .filter_map(|v| v.slot.checked_sub(ip6_base)),
        slots.ipv6_rules,
    );
    let ip6_rules = ip6_keys
        .into_iter()
        .zip(ip6_slots)
        .zip(applied_ip6_rules)
        .map(|((key, slot), rule)| {
            let expires = deadline(rule.expires_at, previous.ip6_rules.get(&key));
            (key, RuleValue::expiring(slots.ip6(slot), expires))
        })
        .collect();

    // Subnet rules, then private endpoints (entries of the same table, each
    // endpoint with its own slot after the rules'; they never expire).
    let mut vnet_keys: Vec<Vec<VnetPrefixKey>> = policy
        .virtual_network_rules
        .iter()
        .map(|rule| vnet_entry_keys(&rule.endpoint, &rule.address_prefixes, interfaces))
        .collect();
    let expiries: Vec<Option<SystemTime>> = policy
        .virtual_network_rules
        .iter()
        .map(|r| r.expires_at)
        .chain(policy.private_endpoints.iter().map(|_| None))
        .collect();
    vnet_keys.extend(policy.private_endpoints.iter().map(|p| {
        let endpoint = Endpoint {
            interface: Some(p.interface.clone()),
            vlan: None,
        };
        vnet_entry_keys(&endpoint, &p.allowed_prefixes, interfaces)
    }));
    let mut vnet6_keys: Vec<Vec<Vnet6PrefixKey>> = policy
        .virtual_network_rules
        .iter()
        .map(|rule| match endpoint_key(&rule.endpoint, interfaces) {
            None => Vec::new(),
            Some((ifindex, vlan)) => rule
                .address_prefixes_v6
                .iter()
                .map(|prefix| Vnet6PrefixKey {
                    ifindex,
                    vlan,
                    prefix: Prefix6Key::from(*prefix),
                })
                .collect(),
        })
        .collect();
    // Private endpoints hold IPv4 prefixes only: no IPv6 entries.
    vnet6_keys.extend(policy.private_endpoints.iter().map(|_| Vec::new()));
    let vnet_base = slots.vnet(0);
    let vnet_slots = assign_slots(
        vnet_keys.iter().zip(&vnet6_keys).map(|(keys, keys6)| {
            keys.iter()
                .find_map(|k| previous.vnet_rules.get(k))
                .or_else(|| keys6.iter().find_map(|k| previous.vnet6_rules.get(k)))
                .and_then(|v| v.slot.checked_sub(vnet_base))
        }),
        previous
            .vnet_rules
            .values()
            .chain(previous.vnet6_rules.values())
            .filter_map(|v| v.slot.checked_sub(vnet_base)),
        slots.vnet_rules,
    );
    // One deadline per rule, as one hit slot: a prefix added to an
    // expiring rule takes the deadline its held entries have (converted
    // again it would differ by nanoseconds, and the compiled table keeps
    // one expiry per slot).
    let rule_deadlines: Vec<u64> = vnet_keys
        .iter()
        .zip(&vnet6_keys)
        .zip(&expiries)
        .map(|((keys, keys6), expires_at)| {
            let held = keys
                .iter()
                .find_map(|k| previous.vnet_rules.get(k))
                .or_else(|| keys6.iter().find_map(|k| previous.vnet6_rules.get(k)));
            deadline(*expires_at, held)
        })
        .collect();
    let mut vnet6_rules = BTreeMap::new();
    for ((keys, slot), expires) in vnet6_keys
        .into_iter()
        .zip(&vnet_slots)
        .zip(&rule_deadlines)
        .take(policy.virtual_network_rules.len())
    {
        for key in keys {
            vnet6_rules
                .entry(key)
                .or_insert(RuleValue::expiring(slots.vnet(*slot), *expires));
        }
    }
    let mut vnet_rules = BTreeMap::new();
    for ((keys, slot), expires) in vnet_keys.into_iter().zip(vnet_slots).zip(rule_deadlines) {
        for key in keys {
            // The same prefix under the same endpoint in two rules: the
            // entry is the first rule's (in policy order) — its slot, so
            // [`rule_table`] names it, and its expiry.
            vnet_rules
                .entry(key)
                .or_insert(RuleValue::expiring(slots.vnet(slot), expires));
        }
    }

    let catalogue = crate::policy::catalogue();
    let service_slot = |name: &str| {
        let service = catalogue.iter().position(|s| s.name == name).unwrap_or(0);
        RuleValue::new(slots.trusted(service as u32))
    };
    let trusted6 = policy
        .trusted_services
        .prefixes_v6
        .iter()
        .map(|p| (Prefix6Key::from(p.network), service_slot(p.service)))
        .collect();
    let trusted = policy
        .trusted_services
        .prefixes
        .iter()
        .map(|p| {
            let service = catalogue
                .iter()
                .position(|s| s.name == p.service)
                .unwrap_or(0);
            (
                PrefixKey::from(p.network),
                RuleValue::new(slots.trusted(service as u32)),
            )
        })
        .collect();

    CompiledTables {
        flags,
        event_cost_ns: 0,
        port_words,
        ip_rules,
        vnet_rules,
        trusted,
        ip6_rules,
        vnet6_rules,
        trusted6,
    }
}

/// The IP-rule entries of `rules`: slots assigned against `previous` (see
/// [`assign_slots`]), expiries converted by `deadline`.
fn ip_entries(
    rules: &[crate::policy::IpRule],
    previous: &BTreeMap<PrefixKey, RuleValue>,
    slots: HitSlots,
    deadline: &impl Fn(Option<SystemTime>, Option<&RuleValue>) -> u64,
) -> BTreeMap<PrefixKey, RuleValue> {
    let keys: Vec<PrefixKey> = rules.iter().map(|r| PrefixKey::from(r.network)).collect();
    let rule_slots = assign_slots(
        keys.iter().map(|k| previous.get(k).map(|v| v.slot)),
        previous.values().map(|v| v.slot),
        slots.ip_rules,
    );
    keys.into_iter()
        .zip(rule_slots)
        .zip(rules)
        .map(|((key, slot), rule)| {
            let expires = deadline(rule.expires_at, previous.get(&key));
            (key, RuleValue::expiring(slots.ip(slot), expires))
        })
        .collect()
}

/// [`ip_entries`] of `rules` (sorted by address and prefix length, one per
/// network, as [`Policy::ip_rules`]) when they are the rules `previous`
/// was compiled from with `change` applied: the same entries, computed
/// only for the changed networks and the rules with an expiry. As
/// [`assign_slots`] does, a network `previous` holds keeps its slot and a
/// new one takes the lowest slot no entry of `previous` held, then the
/// lowest one a removed entry freed, in policy order.
fn ip_entries_changed(
    rules: &[crate::policy::IpRule],
    previous: &BTreeMap<PrefixKey, RuleValue>,
    change: &IpRuleChange,
    slots: HitSlots,
    deadline: &impl Fn(Option<SystemTime>, Option<&RuleValue>) -> u64,
) -> BTreeMap<PrefixKey, RuleValue> {
    let policy_order = |net: &Ipv4Net| (u32::from(net.network()), net.prefix_len());
    let rule_of = |net: &Ipv4Net| {
        rules
            .binary_search_by_key(&policy_order(net), |r| policy_order(&r.network))
            .ok()
            .map(|i| &rules[i])
    };
    let mut entries = previous.clone();
    for net in &change.removed {
        entries.remove(&PrefixKey::from(*net));
    }
    let cap = slots.ip_rules as usize;
    let mut held = vec![false; cap];
    for v in previous.values().filter(|v| (v.slot as usize) < cap) {
        held[v.slot as usize] = true;
    }
    let mut taken = vec![false; cap];
    for v in entries.values().filter(|v| (v.slot as usize) < cap) {
        taken[v.slot as usize] = true;
    }
    let mut added: Vec<&crate::policy::IpRule> = change.added.iter().filter_map(rule_of).collect();
    added.sort_by_key(|r| policy_order(&r.network));
    added.dedup_by_key(|r| policy_order(&r.network));
    let mut never_used = (0..cap).filter(|s| !held[*s]);
    let mut fresh = Vec::new();
    for rule in added {
        let key = PrefixKey::from(rule.network);
        let held_slot = previous.get(&key).map(|v| v.slot);
        let slot = match held_slot {
            Some(slot) => slot,
            None => {
                fresh.push(key);
                continue;
            }
        };
        if (slot as usize) < cap {
            taken[slot as usize] = true;
        }
        let expires = deadline(rule.expires_at, previous.get(&key));
        entries.insert(key, RuleValue::expiring(slots.ip(slot), expires));
    }
    // New networks after every held one claimed its slot, as in
    // `assign_slots`.
    let mut reusable = (0..cap).filter(|s| held[*s] && !taken[*s]);
    for key in fresh {
        let slot = never_used
            .next()
            .or_else(|| reusable.next())
            .map_or(u32::MAX, |s| s as u32);
        let rule = rule_of(&Ipv4Net::from(key)).expect("an added rule the policy holds");
        entries.insert(
            key,
            RuleValue::expiring(slots.ip(slot), deadline(rule.expires_at, None)),
        );
    }
    // A kept entry with an expiry is converted again, as `compile_next`
    // converts every rule's (it keeps the held value within SAME_DEADLINE).
    for (key, held) in previous.iter().filter(|(_, v)| v.expires_at_ns() != 0) {
        if let (Some(entry), Some(rule)) = (entries.get_mut(key), rule_of(&Ipv4Net::from(*key))) {
            *entry = RuleValue::expiring(entry.slot, deadline(rule.expires_at, Some(held)));
        }
    }
    entries
}

/// The virtual-network trie keys of `prefixes` under `endpoint`; none
/// while its interface is absent from `interfaces`.
fn vnet_entry_keys(
    endpoint: &Endpoint,
    prefixes: &[Ipv4Net],
    interfaces: &InterfaceIndex,
) -> Vec<VnetPrefixKey> {
    match endpoint_key(endpoint, interfaces) {
        None => Vec::new(),
        Some((ifindex, vlan)) => prefixes
            .iter()
            .map(|prefix| VnetPrefixKey {
                ifindex,
                vlan,
                prefix: PrefixKey::from(*prefix),
            })
            .collect(),
    }
}

/// Gives each rule a slot in `0..capacity`: its previous slot when it had
/// one (and nobody before it claimed it), else the lowest slot nobody holds
/// — preferring slots that no rule held before (`held_before`), so a new
/// rule does not inherit a removed rule's counters while a never-used slot
/// exists (a reused slot is zeroed on apply anyway).
fn assign_slots(
    previous: impl Iterator<Item = Option<u32>>,
    held_before: impl Iterator<Item = u32>,
    capacity: u32,
) -> Vec<u32> {
    // Bitmaps over 0..capacity (not sets): this runs for every rule of
    // every apply.
    let cap = capacity as usize;
    let mut taken = vec![false; cap];
    let mut slots: Vec<Option<u32>> = previous
        .map(|p| {
            p.filter(|s| (*s as usize) < cap && !std::mem::replace(&mut taken[*s as usize], true))
        })
        .collect();
    let mut held = vec![false; cap];
    for s in held_before.filter(|s| (*s as usize) < cap) {
        held[s as usize] = true;
    }
    let mut never_used = (0..capacity).filter(|s| !held[*s as usize] && !taken[*s as usize]);
    let mut reusable: Vec<u32> = (0..capacity)
        .filter(|s| held[*s as usize] && !taken[*s as usize])
        .collect();
    reusable.reverse();
    for slot in slots.iter_mut().filter(|s| s.is_none()) {
        // Validation keeps the rule count within the capacity, so a slot is
        // always left; u32::MAX would only ever miss the hit counters.
        *slot = Some(
            never_used
                .next()
                .or_else(|| reusable.pop())
                .unwrap_or(u32::MAX),
        );
    }
    slots.into_iter().map(|s| s.unwrap_or(u32::MAX)).collect()
}

#[cfg(test)]
mod tests;
