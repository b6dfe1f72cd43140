//! Unit tests of the compiler: policy text in, table contents out.

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
        ipv6_rules: 0,
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
fn a_prefix_added_to_an_expiring_subnet_rule_takes_the_deadline_its_held_entries_have() {
    let policy_of = |prefixes: &str| {
        let text = format!(
            "default_action = \"Deny\"\n[[virtual_network_rules]]\nid = \"vnet/subnets/a\"\n\
             address_prefixes = [{prefixes}]\nendpoint = {{ vlan = 120 }}\n\
             expires_at = \"2030-01-01T02:00:00Z\"\n"
        );
        parse_toml_at(
            &text,
            humantime::parse_rfc3339("2029-12-31T00:00:00Z").unwrap(),
        )
        .unwrap()
        .policy
    };
    let before = policy_of("\"10.1.2.0/24\"");
    let after = policy_of("\"10.1.2.0/24\", \"10.9.0.0/16\"");
    let slots = hit_slots_for(&after);
    let none = InterfaceIndex::new();
    let first = compile_next(&before, &none, slots, &CompiledTables::empty(), &clock());
    // The wall clock read again 300 µs later converts the same expiry to
    // another monotonic value.
    let later = MonotonicClock::at(
        humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap(),
        1_000_000_300_000,
    );
    let second = compile_next(&after, &none, slots, &first, &later);
    let deadlines: std::collections::BTreeSet<u64> = second
        .vnet_rules
        .values()
        .map(|v| v.expires_at_ns())
        .collect();
    assert_eq!(
        deadlines.into_iter().collect::<Vec<_>>(),
        [first.vnet_rules.values().next().unwrap().expires_at_ns()],
        "one rule, one deadline"
    );
    cpt::compile_prefix_table(&second).expect("the compiled table takes one expiry per slot");
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
    let tables =
        compiled("default_action = \"Deny\"\n[data_plane]\ntcp_ports = []\nudp_ports = [4433]\n");
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

/// Key Vault: public network access disabled refuses public sources
/// whatever `defaultAction` says, so the program gets no default-allow
/// flag and no IP-rule entries.
#[test]
fn public_network_access_disabled_compiles_default_allow_to_deny_and_no_ip_rules() {
    let disabled = compiled(
        "default_action = \"Allow\"\nipv6 = \"Allow\"\npublic_network_access = \"Disabled\"\nip_rules = [\"203.0.113.0/24\", \"2001:db8::/32\"]\n",
    );
    assert_eq!(disabled.flags & (FLAG_DEFAULT_ALLOW | FLAG_IPV6_ALLOW), 0);
    assert!(disabled.ip6_rules.is_empty());
    assert!(disabled.ip_rules.is_empty());
    let enabled = compiled("default_action = \"Allow\"\nip_rules = [\"203.0.113.0/24\"]\n");
    assert_eq!(enabled.flags & FLAG_DEFAULT_ALLOW, FLAG_DEFAULT_ALLOW);
    assert!(!enabled.ip_rules.is_empty());
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

mod ip_rule_changes {
    use super::*;
    use crate::policy::IpRule;
    use proptest::prelude::*;
    use std::time::Duration;

    /// Networks the changes draw from: nested, adjacent and apart.
    const POOL: [&str; 12] = [
        "203.0.113.0/24",
        "203.0.113.0/25",
        "203.0.113.7/32",
        "198.51.100.0/24",
        "198.51.100.128/25",
        "192.0.2.9/32",
        "192.0.2.0/24",
        "100.64.0.0/10",
        "8.8.8.8/32",
        "1.0.0.0/8",
        "0.0.0.0/0",
        "233.252.0.0/24",
    ];

    /// Pool entry `i` as a rule: expiring (past or future) for some.
    fn rule(i: usize, expiry: u8) -> IpRule {
        let at = humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
        let expires_at = match expiry % 4 {
            0 | 1 => None,
            2 => Some(at + Duration::from_secs(3600 + i as u64)),
            _ => Some(at - Duration::from_secs(60)),
        };
        IpRule {
            network: POOL[i].parse().unwrap(),
            comment: None,
            expires_at,
        }
    }

    fn policy_of(rules: &BTreeMap<usize, u8>) -> Policy {
        let mut policy = parse_toml("default_action = \"Deny\"\n").unwrap().policy;
        policy.ip_rules = rules.iter().map(|(i, e)| rule(*i, *e)).collect();
        policy
            .ip_rules
            .sort_by_key(|r| (u32::from(r.network.network()), r.network.prefix_len()));
        policy
    }

    proptest! {
        /// Every chain of adds and removals compiles as a diff to exactly
        /// the tables a full compile gives: slots, expiries and all, with
        /// fewer slots than networks so freed slots are reused, and with
        /// the wall clock stepped between compiles.
        #[test]
        fn a_diff_compiles_to_the_full_compile(
            start in proptest::collection::btree_map(0..POOL.len(), any::<u8>(), 0..8),
            steps in proptest::collection::vec(
                (proptest::collection::vec(0..POOL.len(), 0..4),
                 proptest::collection::vec((0..POOL.len(), any::<u8>()), 0..4),
                 0u64..3),
                1..6),
        ) {
            let slots = HitSlots { ip_rules: 9, vnet_rules: 1, trusted_services: 10, ipv6_rules: 0 };
            let none = InterfaceIndex::new();
            let mut rules = start;
            let mut previous = compile_next(&policy_of(&rules), &none, slots, &CompiledTables::empty(), &clock());
            for (removed, added, step_s) in steps {
                let mut change = IpRuleChange::default();
                for i in removed {
                    if rules.remove(&i).is_some() {
                        change.removed.push(POOL[i].parse().unwrap());
                    }
                }
                for (i, e) in added {
                    if rules.len() < slots.ip_rules as usize && !rules.contains_key(&i) {
                        rules.insert(i, e);
                        change.added.push(POOL[i].parse().unwrap());
                    }
                }
                let policy = policy_of(&rules);
                // The wall clock stepped by 0, 1 or 2 s: past SAME_DEADLINE.
                let clock = MonotonicClock::at(
                    humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap()
                        + Duration::from_secs(step_s),
                    1_000_000_000_000,
                );
                let full = compile_next(&policy, &none, slots, &previous, &clock);
                let diffed = compile_next_changed(&policy, &none, slots, &previous, &clock, &change);
                prop_assert_eq!(&diffed, &full);
                previous = full;
            }
        }
    }
}
