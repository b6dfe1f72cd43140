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
use ipnet::Ipv4Net;

use crate::clock::{MonotonicClock, SAME_DEADLINE};
use crate::links::InterfaceIndex;
use crate::policy::{Bypass, DefaultAction, Endpoint, Ipv6Action, Mode, Policy};

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
        if !self.vnet_rules.is_empty() {
            word |= FLAG_HAS_VNET;
        }
        if self.vnet_rules.keys().any(|k| k.vlan != VLAN_ANY) {
            word |= FLAG_HAS_VLAN_VNET;
        }
        word
    }

    /// [`CompiledTables::flags`] of a set whose `PolicyConfig` holds
    /// `config_flags` (the inverse of [`CompiledTables::config_flags`]).
    pub fn flags_of_config(config_flags: u32) -> u32 {
        config_flags & !LOOKUP_HINTS
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
        let mut fresh = Vec::new();
        let owners = |m: &BTreeMap<PrefixKey, RuleValue>| -> BTreeMap<u32, PrefixKey> {
            m.iter().map(|(k, v)| (v.slot, *k)).collect()
        };
        let (before, now) = (owners(&previous.ip_rules), owners(&self.ip_rules));
        fresh.extend(
            now.iter()
                .filter(|(s, k)| before.get(s) != Some(k))
                .map(|(s, _)| *s),
        );
        let vnet_owner =
            |m: &BTreeMap<VnetPrefixKey, RuleValue>| -> BTreeMap<u32, Vec<VnetPrefixKey>> {
                let mut owners: BTreeMap<u32, Vec<VnetPrefixKey>> = BTreeMap::new();
                for (k, v) in m {
                    owners.entry(v.slot).or_default().push(*k);
                }
                owners
            };
        let (before, now) = (
            vnet_owner(&previous.vnet_rules),
            vnet_owner(&self.vnet_rules),
        );
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

/// The hit-slot layout for `policy`'s limits.
pub fn hit_slots_for(policy: &Policy) -> HitSlots {
    HitSlots::new(
        policy.limits.ip_rules as u32,
        policy.limits.virtual_network_rules as u32,
    )
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
    if policy.default_action == DefaultAction::Allow {
        flags |= FLAG_DEFAULT_ALLOW;
    }
    if policy.bypass == Bypass::AzureServices {
        flags |= FLAG_BYPASS_TRUSTED;
    }
    if policy.mode == Mode::Audit {
        flags |= FLAG_AUDIT;
    }
    if policy.ipv6 == Ipv6Action::Allow {
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

    let ip_keys: Vec<PrefixKey> = policy
        .ip_rules
        .iter()
        .map(|r| PrefixKey::from(r.network))
        .collect();
    let ip_slots = assign_slots(
        ip_keys
            .iter()
            .map(|k| previous.ip_rules.get(k).map(|v| v.slot)),
        previous.ip_rules.values().map(|v| v.slot),
        slots.ip_rules,
    );
    let ip_rules = ip_keys
        .into_iter()
        .zip(ip_slots)
        .zip(&policy.ip_rules)
        .map(|((key, slot), rule)| {
            let expires = deadline(rule.expires_at, previous.ip_rules.get(&key));
            (key, RuleValue::expiring(slots.ip(slot), expires))
        })
        .collect();

    let vnet_keys: Vec<Vec<VnetPrefixKey>> = policy
        .virtual_network_rules
        .iter()
        .map(|rule| match endpoint_key(&rule.endpoint, interfaces) {
            None => Vec::new(),
            Some((ifindex, vlan)) => rule
                .address_prefixes
                .iter()
                .map(|prefix| VnetPrefixKey {
                    ifindex,
                    vlan,
                    prefix: PrefixKey::from(*prefix),
                })
                .collect(),
        })
        .collect();
    let vnet_base = slots.vnet(0);
    let vnet_slots = assign_slots(
        vnet_keys.iter().map(|keys| {
            keys.iter()
                .find_map(|k| previous.vnet_rules.get(k))
                .and_then(|v| v.slot.checked_sub(vnet_base))
        }),
        previous
            .vnet_rules
            .values()
            .filter_map(|v| v.slot.checked_sub(vnet_base)),
        slots.vnet_rules,
    );
    let mut vnet_rules = BTreeMap::new();
    for ((keys, slot), rule) in vnet_keys
        .into_iter()
        .zip(vnet_slots)
        .zip(&policy.virtual_network_rules)
    {
        for key in keys {
            // The same prefix under the same endpoint in two rules: the
            // entry is the first rule's (in policy order) — its slot, so
            // [`rule_table`] names it, and its expiry.
            let expires = deadline(rule.expires_at, previous.vnet_rules.get(&key));
            vnet_rules
                .entry(key)
                .or_insert(RuleValue::expiring(slots.vnet(slot), expires));
        }
    }

    let catalogue = crate::policy::catalogue();
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
    let previous: Vec<Option<u32>> = previous.collect();
    let mut taken = std::collections::BTreeSet::new();
    let mut slots: Vec<Option<u32>> = previous
        .iter()
        .map(|p| p.filter(|s| *s < capacity && taken.insert(*s)))
        .collect();
    let held_before: std::collections::BTreeSet<u32> = held_before.collect();
    let mut never_used = (0..capacity).filter(|s| !held_before.contains(s) && !taken.contains(s));
    let mut reusable: Vec<u32> = held_before
        .iter()
        .copied()
        .filter(|s| *s < capacity && !taken.contains(s))
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
mod tests {
    use super::*;
    use crate::policy::{parse_toml, parse_toml_at};

    fn compiled(text: &str) -> CompiledTables {
        compiled_with(text, &InterfaceIndex::new())
    }

    fn compiled_with(text: &str, interfaces: &InterfaceIndex) -> CompiledTables {
        compile(
            &parse_toml(text).expect("valid test policy").policy,
            interfaces,
            &clock(),
        )
    }

    /// A fixed clock reading: monotonic 1000 s at 2030-01-01T00:00:00Z.
    fn clock() -> MonotonicClock {
        MonotonicClock::at(
            humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap(),
            1_000_000_000_000,
        )
    }

    const SUBNETS: &str = r#"
default_action = "Deny"
[[virtual_network_rules]]
id = "vnet/subnets/a"
address_prefixes = ["10.1.2.0/24", "10.9.0.0/16"]
endpoint = { interface = "eth1" }
[[virtual_network_rules]]
id = "vnet/subnets/b"
address_prefixes = ["10.3.0.0/16"]
endpoint = { vlan = 120 }
[[virtual_network_rules]]
id = "vnet/subnets/c"
address_prefixes = ["10.4.0.0/16"]
endpoint = { interface = "eth1", vlan = 7 }
"#;

    #[test]
    fn subnet_rules_compile_to_endpoint_keyed_entries() {
        let interfaces = InterfaceIndex::from([("eth1".to_owned(), 7)]);
        let tables = compiled_with(SUBNETS, &interfaces);
        let base = tables_vnet_base(SUBNETS);
        let entries: Vec<(u32, u32, String, u32)> = tables
            .vnet_rules
            .iter()
            .map(|(k, v)| {
                (
                    k.ifindex,
                    k.vlan,
                    Ipv4Net::from(k.prefix).to_string(),
                    v.slot - base,
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                (IFINDEX_ANY, 120, "10.3.0.0/16".to_owned(), 1),
                (7, 7, "10.4.0.0/16".to_owned(), 2),
                // Keys order by prefix length before address.
                (7, VLAN_ANY, "10.9.0.0/16".to_owned(), 0),
                (7, VLAN_ANY, "10.1.2.0/24".to_owned(), 0),
            ]
        );
    }

    fn tables_vnet_base(text: &str) -> u32 {
        hit_slots_for(&parse_toml(text).unwrap().policy).vnet(0)
    }

    #[test]
    fn a_subnet_rule_on_a_missing_interface_compiles_to_nothing() {
        let policy = parse_toml(SUBNETS).unwrap().policy;
        let tables = compile(&policy, &InterfaceIndex::new(), &clock());
        let ifindexes: Vec<u32> = tables.vnet_rules.keys().map(|k| k.ifindex).collect();
        assert_eq!(ifindexes, vec![IFINDEX_ANY]);
        assert_eq!(
            missing_endpoints(&policy, &InterfaceIndex::new()),
            vec![("vnet/subnets/a", "eth1"), ("vnet/subnets/c", "eth1")]
        );
    }

    #[test]
    fn hit_slots_stay_with_their_rule_and_new_rules_avoid_freed_slots() {
        let policy = |rules: &str| {
            parse_toml(&format!(
                "default_action = \"Deny\"\nip_rules = [{rules}]\n"
            ))
            .unwrap()
            .policy
        };
        let slots = HitSlots {
            ip_rules: 4,
            vnet_rules: 2,
            trusted_services: 10,
        };
        let none = InterfaceIndex::new();
        let first = compile_next(
            &policy(r#""203.0.113.0/24", "198.51.100.7""#),
            &none,
            slots,
            &CompiledTables::empty(),
            &clock(),
        );
        let slot_of = |t: &CompiledTables, net: &str| {
            t.ip_rules[&PrefixKey::from(net.parse::<Ipv4Net>().unwrap())].slot
        };
        assert_eq!(
            (
                slot_of(&first, "198.51.100.7/32"),
                slot_of(&first, "203.0.113.0/24")
            ),
            (0, 1)
        );
        // Remove 198.51.100.7 and add 192.0.2.9: the kept rule keeps slot 1,
        // the new one takes a never-used slot, not the freed slot 0.
        let second = compile_next(
            &policy(r#""203.0.113.0/24", "192.0.2.9""#),
            &none,
            slots,
            &first,
            &clock(),
        );
        assert_eq!(slot_of(&second, "203.0.113.0/24"), 1);
        assert_eq!(slot_of(&second, "192.0.2.9/32"), 2);
        assert_eq!(second.fresh_slots(&first), vec![2]);
    }

    #[test]
    fn expires_at_becomes_a_monotonic_deadline_in_every_entry_of_its_rule() {
        let text = r#"
default_action = "Deny"
ip_rules = ["203.0.113.0/24", { value = "198.51.100.7", expires_at = "2030-01-01T00:00:30Z" }]
[[virtual_network_rules]]
id = "vnet/subnets/a"
address_prefixes = ["10.1.2.0/24", "10.9.0.0/16"]
endpoint = { vlan = 120 }
expires_at = "2030-01-01T00:01:00Z"
"#;
        let policy = parse_toml_at(
            text,
            humantime::parse_rfc3339("2029-12-31T00:00:00Z").unwrap(),
        )
        .unwrap()
        .policy;
        let tables = compile(&policy, &InterfaceIndex::new(), &clock());
        let expiry = |net: &str| {
            tables.ip_rules[&PrefixKey::from(net.parse::<Ipv4Net>().unwrap())].expires_at_ns()
        };
        assert_eq!(
            expiry("203.0.113.0/24"),
            0,
            "a rule without expires_at never expires"
        );
        assert_eq!(expiry("198.51.100.7/32"), 1_030_000_000_000);
        let vnet: Vec<u64> = tables
            .vnet_rules
            .values()
            .map(|v| v.expires_at_ns())
            .collect();
        assert_eq!(vnet, [1_060_000_000_000, 1_060_000_000_000]);
    }

    #[test]
    fn a_deadline_recomputed_within_a_millisecond_keeps_the_value_the_kernel_holds() {
        let text = r#"
default_action = "Deny"
ip_rules = [{ value = "198.51.100.7", expires_at = "2030-01-01T00:00:30Z" }]
"#;
        let policy = parse_toml_at(
            text,
            humantime::parse_rfc3339("2029-12-31T00:00:00Z").unwrap(),
        )
        .unwrap()
        .policy;
        let slots = hit_slots_for(&policy);
        let none = InterfaceIndex::new();
        let first = compile_next(&policy, &none, slots, &CompiledTables::empty(), &clock());
        // The same wall-clock time read 300 µs apart: same tables.
        let jitter = MonotonicClock::at(
            humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap(),
            1_000_000_300_000,
        );
        assert_eq!(compile_next(&policy, &none, slots, &first, &jitter), first);
        // The wall clock was stepped by a second: the deadline follows it.
        let stepped = MonotonicClock::at(
            humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap(),
            1_001_000_000_000,
        );
        let second = compile_next(&policy, &none, slots, &first, &stepped);
        assert_eq!(
            second.ip_rules.values().next().unwrap().expires_at_ns(),
            1_031_000_000_000
        );
    }

    #[test]
    fn keys_hold_octets_in_network_byte_order() {
        // A key in host byte order would match the byte-reversed twin.
        let tables = compiled("default_action = \"Deny\"\nip_rules = [\"203.0.113.10\"]\n");
        let key = *tables.ip_rules.keys().next().expect("one rule");
        assert_eq!(key.octets, [203, 0, 113, 10]);
        assert_eq!(key.prefix_len, 32);
    }

    #[test]
    fn default_data_plane_is_tcp_443_only() {
        let tables = compiled("default_action = \"Deny\"\n");
        let set_bits: Vec<(usize, u32)> = tables
            .port_words
            .iter()
            .enumerate()
            .filter(|(_, w)| **w != 0)
            .map(|(i, w)| (i, *w))
            .collect();
        assert_eq!(set_bits, vec![(443 / 32, 1 << (443 % 32))]);
    }

    #[test]
    fn udp_ports_land_in_the_udp_row() {
        let tables = compiled(
            "default_action = \"Deny\"\n[data_plane]\ntcp_ports = []\nudp_ports = [4433]\n",
        );
        let word = PORT_WORDS_PER_ROW as usize + 4433 / 32;
        assert_eq!(tables.port_words[word], 1 << (4433 % 32));
        assert_eq!(tables.port_words.iter().filter(|w| **w != 0).count(), 1);
    }

    #[test]
    fn flags_follow_the_policy_settings() {
        let deny = compiled("default_action = \"Deny\"\n");
        assert_eq!(deny.flags, FLAG_VALID);
        let all = compiled(
            "default_action = \"Allow\"\nbypass = \"AzureServices\"\nmode = \"Audit\"\nipv6 = \"Allow\"\n",
        );
        assert_eq!(
            all.flags,
            FLAG_VALID | FLAG_DEFAULT_ALLOW | FLAG_BYPASS_TRUSTED | FLAG_AUDIT | FLAG_IPV6_ALLOW
        );
    }

    #[test]
    fn the_config_word_adds_lookup_hints_only_for_the_subnet_entries_a_set_holds() {
        let none = compiled("default_action = \"Deny\"\n");
        assert_eq!(none.config_flags(), FLAG_VALID);
        let interfaces = InterfaceIndex::from([("eth1".to_owned(), 7)]);
        let subnets = compiled_with(SUBNETS, &interfaces);
        assert_eq!(
            subnets.config_flags(),
            FLAG_VALID | FLAG_HAS_VNET | FLAG_HAS_VLAN_VNET
        );
        assert_eq!(
            CompiledTables::flags_of_config(subnets.config_flags()),
            subnets.flags
        );
        let untagged = compiled_with(
            "default_action = \"Deny\"\n[[virtual_network_rules]]\nid = \"a\"\naddress_prefixes = [\"10.1.2.0/24\"]\nendpoint = { interface = \"eth1\" }\n",
            &interfaces,
        );
        assert_eq!(untagged.config_flags(), FLAG_VALID | FLAG_HAS_VNET);
    }

    #[test]
    fn prefix_key_round_trips_every_prefix_length() {
        // /0 and /32 are the edges where mask arithmetic breaks.
        for len in 0..=32u8 {
            let net = Ipv4Net::new([203, 0, 113, 10].into(), len).unwrap().trunc();
            let key = PrefixKey::from(net);
            assert_eq!(key.prefix_len, u32::from(len));
            assert_eq!(Ipv4Net::from(key), net);
        }
    }
}
