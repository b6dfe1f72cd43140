//! The compiled table against the naive longest-prefix reference.

use firewall_common::cpt::cells_bound;
use firewall_common::{IFINDEX_ANY, VLAN_ANY, VLAN_UNTAGGED};
use proptest::prelude::*;

use super::adversarial::{SCOPES, Stream, adversarial, edges, prefix};
use super::*;
use crate::compile::VnetPrefixKey;

/// A hit-slot layout with room for every generated set.
const SLOTS: firewall_common::HitSlots = firewall_common::HitSlots::new(200_000, 127);

/// Endpoints a frame can arrive through: the scopes' own, an interface
/// with no entries, untagged and tagged.
const PROBES: [(u32, u32); 6] = [
    (1, VLAN_UNTAGGED),
    (1, 10),
    (7, 20),
    (7, VLAN_UNTAGGED),
    (9, 10),
    (9, 30),
];

/// Compiles `tables` and compares every probe endpoint at `addrs` plus
/// 500 random sources; returns the image.
fn assert_same(tables: &CompiledTables, addrs: &[u32], seed: u64) -> Vec<Cell> {
    let cells = compile_prefix_table(tables).expect("compiles");
    let mut rng = Stream::new(seed);
    let random: Vec<u32> = (0..500).map(|_| rng.next_u64() as u32).collect();
    for &a in addrs.iter().chain(&random) {
        for (ifindex, vlan) in PROBES {
            let addr = a.to_be_bytes();
            assert_eq!(
                table_matches(&cells, ifindex, vlan, addr),
                trie_matches(tables, ifindex, vlan, addr),
                "source {} through ifindex {ifindex} vlan {vlan}",
                std::net::Ipv4Addr::from(addr),
            );
        }
    }
    let prefixes = tables.ip_rules.len() + tables.trusted.len() + tables.vnet_rules.len();
    let scopes = tables
        .vnet_rules
        .keys()
        .map(|k| (k.ifindex, k.vlan))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let slots = tables
        .ip_rules
        .values()
        .chain(tables.trusted.values())
        .chain(tables.vnet_rules.values())
        .map(|v| v.slot + 1)
        .max()
        .unwrap_or(0);
    assert!(
        cells.len() as u64
            <= cells_bound(
                prefixes as u32,
                tables.vnet_rules.len() as u32,
                scopes as u32,
                slots
            ),
        "{} cells exceed the bound",
        cells.len()
    );
    let listed = listed_entries(&cells).expect("the list reads back");
    let expected = ListedEntries {
        ip_rules: tables.ip_rules.clone(),
        vnet_rules: tables.vnet_rules.clone(),
        trusted: tables.trusted.clone(),
    };
    if prefixes == 0 {
        assert_eq!(listed, None);
    } else {
        assert_eq!(
            listed,
            Some(expected),
            "the entry list reads back the entries"
        );
    }
    cells
}

/// A set of one entry of each kind, one of them expiring.
fn one_of_each() -> CompiledTables {
    let mut tables = CompiledTables::empty();
    tables
        .ip_rules
        .insert(prefix(0xCB00_7100, 24), RuleValue::expiring(3, 77));
    tables
        .trusted
        .insert(prefix(0x1400_0000, 8), RuleValue::new(1));
    tables.vnet_rules.insert(
        VnetPrefixKey {
            ifindex: 7,
            vlan: 20,
            prefix: prefix(0x0A01_0000, 16),
        },
        RuleValue::new(5),
    );
    tables
}

#[test]
fn the_entry_list_reads_back_every_kind_with_its_slot_expiry_and_endpoint() {
    let tables = one_of_each();
    assert_same(&tables, &[0xCB00_7105, 0x1400_0001, 0x0A01_0203], 3);
}

#[test]
fn a_corrupt_entry_list_is_refused_naming_its_cell() {
    let cells = compile_prefix_table(&one_of_each()).expect("compiles");
    let first = cells[EXPIRY_BASE_CELL as usize][1] as usize;
    let corrupt = |edit: &dyn Fn(&mut Vec<Cell>)| {
        let mut cells = cells.clone();
        edit(&mut cells);
        match listed_entries(&cells) {
            Err(CptError::CorruptEntryList { reason }) => reason,
            other => panic!("expected a corrupt list, got {other:?}"),
        }
    };
    // Groups in order: trusted /8, IP rule /24, subnet /16 (scope 0).
    let (trusted, ip, vnet) = (first + 1, first + 3, first + 5);
    let reason = corrupt(&|c| c[ip][1] = 1_000);
    assert!(reason.contains("past the table"), "{reason}");
    let reason = corrupt(&|c| c[trusted][0] = 9 << 24 | 8 << 16);
    assert!(reason.contains("entry kind 9"), "{reason}");
    let reason = corrupt(&|c| c[trusted][0] = 33 << 16);
    assert!(reason.contains("prefix length 33"), "{reason}");
    let reason = corrupt(&|c| c[ip + 1][0] |= 1);
    assert!(reason.contains("host bits"), "{reason}");
    let reason = corrupt(&|c| c[trusted + 1][1] = NO_MATCH);
    assert!(reason.contains("match word"), "{reason}");
    let reason = corrupt(&|c| c[vnet][0] |= 4);
    assert!(reason.contains("scope 4 of 1"), "{reason}");
}

/// The global leaf's IP-rule word of host-order `addr`.
fn ip_word(cells: &[Cell], addr: u32) -> u32 {
    firewall_common::cpt::walk(cells, GLOBAL_ROOT_CELL, addr).expect("a written table")[1]
}

#[test]
fn the_global_leaf_says_which_sources_no_subnet_entry_of_any_scope_covers() {
    let mut tables = one_of_each();
    tables.vnet_rules.insert(
        VnetPrefixKey {
            ifindex: IFINDEX_ANY,
            vlan: 30,
            prefix: prefix(0xC000_0200, 24),
        },
        RuleValue::new(6),
    );
    let cells = assert_same(&tables, &edges(&tables), 12);
    // Inside a subnet (of either scope) and no IP rule: the scopes are walked.
    for inside in [0x0A01_0000, 0x0A01_FFFF, 0xC000_0200, 0xC000_02FF] {
        assert_eq!(ip_word(&cells, inside), NO_MATCH_IN_SUBNET, "{inside:#x}");
    }
    // Just outside them, or in the trusted /8 only: nothing to walk.
    for outside in [
        0x0A00_FFFF,
        0x0A02_0000,
        0xC000_01FF,
        0xC000_0300,
        0x1400_0001,
    ] {
        assert_eq!(ip_word(&cells, outside), NO_MATCH, "{outside:#x}");
    }
    // An IP rule's own word says nothing of subnets.
    assert_eq!(ip_word(&cells, 0xCB00_7105), 3 | SLOT_EXPIRES);
}

#[test]
fn hit_slots_that_would_read_as_a_no_match_word_are_refused() {
    for slot in [SLOT_LIMIT, SLOT_EXPIRES - 1, SLOT_EXPIRES, u32::MAX] {
        let mut tables = CompiledTables::empty();
        tables
            .ip_rules
            .insert(prefix(0x0A00_0000, 8), RuleValue::new(slot));
        assert_eq!(
            compile_prefix_table(&tables),
            Err(CptError::SlotTooLarge { slot })
        );
    }
    let mut tables = CompiledTables::empty();
    tables
        .ip_rules
        .insert(prefix(0x0A00_0000, 8), RuleValue::new(SLOT_LIMIT - 1));
    assert_same(&tables, &edges(&tables), 13);
}

#[test]
fn empty_set_matches_nothing_in_a_few_cells() {
    let tables = CompiledTables::empty();
    let cells = assert_same(&tables, &[0, 1, u32::MAX], 1);
    assert!(cells.len() <= 5, "{} cells", cells.len());
}

#[test]
fn adversarial_sets_match_the_trie_at_every_edge() {
    // Two seeds: every edge of each set is judged through every probe
    // endpoint; `cargo xtask fuzz` runs many more.
    for seed in 0..2 {
        let tables = adversarial(seed, 3000, SLOTS);
        assert_same(&tables, &edges(&tables), seed);
    }
}

#[test]
fn every_prefix_length_alone_matches_the_trie() {
    for len in 0..=32 {
        let mut tables = CompiledTables::empty();
        tables
            .ip_rules
            .insert(prefix(0xC0A8_0101, len), RuleValue::new(len));
        assert_same(&tables, &edges(&tables), u64::from(len));
    }
}

#[test]
fn a_slash_one_beside_slash_32s_and_the_default_route_match_the_trie() {
    let mut tables = CompiledTables::empty();
    tables.trusted.insert(prefix(0, 0), RuleValue::new(100));
    tables
        .ip_rules
        .insert(prefix(0x8000_0000, 1), RuleValue::new(1));
    for (i, a) in [0x7FFF_FFFFu32, 0x8000_0000, 0xFFFF_FFFF, 0]
        .into_iter()
        .enumerate()
    {
        tables
            .ip_rules
            .insert(prefix(a, 32), RuleValue::new(2 + i as u32));
    }
    assert_same(&tables, &edges(&tables), 7);
}

#[test]
fn thousands_of_slash_32s_in_one_slash_16_match_the_trie() {
    let mut tables = CompiledTables::empty();
    tables
        .ip_rules
        .insert(prefix(0x0A14_0000, 16), RuleValue::new(0));
    for i in 0..5000u32 {
        // Every 13th address: single addresses with gaps, and runs.
        let a = 0x0A14_0000 | ((i * 13) & 0xFFFF);
        tables.ip_rules.insert(prefix(a, 32), RuleValue::new(1 + i));
    }
    let cells = assert_same(&tables, &edges(&tables), 8);
    // A 5,001-prefix set: its 2^16 direct cells (512 KiB) and about six
    // cells per prefix, far below 4 MiB.
    assert!(cells.len() < (1 << 16) + 6 * 5001, "{} cells", cells.len());
}

#[test]
fn expiries_reach_the_walk_and_conflicts_are_refused() {
    let mut tables = CompiledTables::empty();
    tables
        .ip_rules
        .insert(prefix(0x0A00_0000, 8), RuleValue::expiring(3, 5 << 32 | 7));
    let cells = assert_same(&tables, &edges(&tables), 9);
    let got = table_matches(&cells, 0, 0, [10, 1, 2, 3])
        .ip
        .expect("matches");
    assert_eq!(got.expires_at_ns(), 5 << 32 | 7);
    tables
        .ip_rules
        .insert(prefix(0x0B00_0000, 8), RuleValue::expiring(3, 9));
    assert_eq!(
        compile_prefix_table(&tables),
        Err(CptError::ExpiryConflict { slot: 3 })
    );
}

#[test]
fn overlapping_subnet_scopes_keep_the_lookup_order() {
    let mut tables = CompiledTables::empty();
    let mut put = |ifindex, vlan, a, len, slot| {
        tables.vnet_rules.insert(
            VnetPrefixKey {
                ifindex,
                vlan,
                prefix: prefix(a, len),
            },
            RuleValue::new(slot),
        );
    };
    // A shorter prefix on the interface wins over a longer one on the VLAN.
    put(1, VLAN_ANY, 0x0A00_0000, 8, 1);
    put(1, 10, 0x0A01_0200, 24, 2);
    put(IFINDEX_ANY, 10, 0x0A01_0203, 32, 3);
    put(IFINDEX_ANY, 10, 0x0B00_0000, 8, 4);
    put(1, 10, 0x0B01_0000, 16, 5);
    let cells = assert_same(&tables, &edges(&tables), 10);
    let vnet = |ifindex, vlan, addr| table_matches(&cells, ifindex, vlan, addr).vnet;
    assert_eq!(vnet(1, 10, [10, 1, 2, 3]), Some(RuleValue::new(1)));
    assert_eq!(vnet(1, 10, [11, 1, 0, 1]), Some(RuleValue::new(5)));
    assert_eq!(vnet(7, 10, [11, 1, 0, 1]), Some(RuleValue::new(4)));
    assert_eq!(vnet(7, VLAN_UNTAGGED, [11, 1, 0, 1]), None);
    assert_eq!(SCOPES.len(), 5);
}

#[test]
fn tiny_policies_are_tiny() {
    let mut tables = CompiledTables::empty();
    for i in 0..10u32 {
        tables
            .ip_rules
            .insert(prefix(0xC633_6400 | i << 4, 28), RuleValue::new(i));
    }
    let cells = assert_same(&tables, &edges(&tables), 11);
    // 2 KiB: a direct array of 2^4 cells per prefix, its ranges and leaves.
    assert!(cells.len() <= 256, "{} cells", cells.len());
}

#[test]
fn one_hundred_thousand_prefixes_walk_four_mib_and_list_eight_bytes_each() {
    let tables = adversarial(42, 100_000, SLOTS);
    let cells = compile_prefix_table(&tables).expect("compiles");
    // What the program walks ends where the entry list begins.
    let list = cells[EXPIRY_BASE_CELL as usize][1] as usize;
    let walked = list * size_of::<Cell>();
    assert!(walked <= 4 << 20, "{walked} bytes walked");
    let entries = tables.ip_rules.len() + tables.trusted.len() + tables.vnet_rules.len();
    let listed = cells.len() - list;
    assert!(
        listed <= 1 + entries + 33 * (2 + SCOPES.len()),
        "{listed} cells listed"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn random_sets_match_the_trie(
        prefixes in proptest::collection::vec((any::<u32>(), 0u32..=32, 0u32..3), 0..200),
        seed in any::<u64>(),
    ) {
        let mut tables = CompiledTables::empty();
        for (i, (a, len, table)) in prefixes.into_iter().enumerate() {
            let value = RuleValue::new(i as u32);
            match table {
                0 => { tables.ip_rules.insert(prefix(a, len), value); }
                1 => { tables.trusted.insert(prefix(a, len), value); }
                _ => {
                    let (ifindex, vlan) = SCOPES[i % SCOPES.len()];
                    tables.vnet_rules.insert(VnetPrefixKey { ifindex, vlan, prefix: prefix(a, len) }, value);
                }
            }
        }
        assert_same(&tables, &edges(&tables), seed);
    }
}
