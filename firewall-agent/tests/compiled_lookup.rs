//! The compiled prefix table in the kernel (`--lookup compiled`) against
//! the kernel's LPM tries (`--lookup trie`) and the reference model, through
//! BPF_PROG_TEST_RUN: for each size (10, 254, 1,000, 10,000 and 100,000
//! IP rules, adversarial sets from `vaultfw::compile::cpt::adversarial`)
//! the same frames get an XDP action with each lookup, with the
//! trusted-service bypass on and off (so a wrong match in either global
//! table shows), and the reference model's; any frame judged differently
//! fails the test with its source, endpoint and every answer. (Which entry
//! matched is compared exactly, by hit slot and expiry, in the compiler's
//! unit tests, which run the same walk.)
//!
//! `cargo xtask test` runs 20,000 frames per size; `cargo xtask fuzz` runs
//! more with `VAULTFW_CPT_FRAMES` and `VAULTFW_CPT_SEED`.
//!
//! Root only (it loads the program); skipped with a message otherwise.

mod support;

use std::net::Ipv4Addr;

use firewall_common::{FLAG_BYPASS_TRUSTED, FLAG_VALID, PORT_PROTO_TCP, port_slot};
use vaultfw::clock::kernel_now_ns;
use vaultfw::compile::CompiledTables;
use vaultfw::compile::cpt::adversarial::{Stream, adversarial, edges};
use vaultfw::compile::cpt::{Lookup, compile_prefix_table, table_matches, trie_matches};
use vaultfw::dataplane::{Capacity, Dataplane};
use vaultfw::reference;

use support::{require_root, tcp_syn_vlan};

/// Where BPF_PROG_TEST_RUN frames arrive (loopback).
const TEST_RUN_IFINDEX: u32 = 1;
/// Frames per size in `cargo xtask test`.
const DEFAULT_FRAMES: usize = 20_000;
/// Seed of the bounded run.
const DEFAULT_SEED: u64 = 0xC04D_11ED;
/// VLAN stacks the frames carry (the subnet scopes use VLANs 10 and 20).
const TAGS: [&[u16]; 4] = [&[], &[10], &[20], &[30]];
/// Disagreements printed in full.
const SHOWN: usize = 5;

/// The variable `name` parsed, or `default` when unset; a value that does
/// not parse fails the run rather than quietly running the default.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} does not parse as a number")),
        Err(_) => default,
    }
}

/// `VAULTFW_CPT_SEED`, decimal or `0x` hex as `cargo xtask fuzz` passes
/// it; [`DEFAULT_SEED`] when unset. A seed that does not parse fails the
/// run rather than quietly running the default.
fn seed_from_env() -> u64 {
    let Ok(text) = std::env::var("VAULTFW_CPT_SEED") else {
        return DEFAULT_SEED;
    };
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed
        .unwrap_or_else(|e| panic!("VAULTFW_CPT_SEED={text:?}: {e}; give a decimal or 0x-hex u64"))
}

/// Entries the reference model may scan per size and bypass setting: it
/// scans every entry per frame, and the suite also runs in an emulated VM.
const MODEL_SCANS: usize = 5_000_000;

/// Frames of a size the reference model also judges: all of them up to
/// 254 prefixes, the first 5,000 at 1,000, 500 at 10,000 and 50 at 100,000
/// ([`MODEL_SCANS`]; `VAULTFW_CPT_MODEL_FRAMES` overrides). The tries judge
/// every frame.
fn model_frames(size: u32) -> usize {
    let default = MODEL_SCANS / size.max(1) as usize;
    env_or("VAULTFW_CPT_MODEL_FRAMES", default)
}

/// `frames` probes of `tables`: every edge source first (up to half), then
/// random sources, cycling through the VLAN stacks.
fn probes(tables: &CompiledTables, frames: usize, rng: &mut Stream) -> Vec<(u32, &'static [u16])> {
    let edges = edges(tables);
    let step = (edges.len() / (frames / 2).max(1)).max(1);
    let mut out: Vec<u32> = edges.into_iter().step_by(step).take(frames / 2).collect();
    while out.len() < frames {
        out.push(rng.next_u64() as u32);
    }
    out.into_iter()
        .enumerate()
        .map(|(i, a)| (a, TAGS[i % TAGS.len()]))
        .collect()
}

/// The sizes judged, in IP rules.
const SIZES: [u32; 5] = [10, 254, 1000, 10_000, 100_000];

/// Room for the largest size's adversarial set (its IP rules plus the
/// trusted and subnet entries it adds).
fn capacity() -> Capacity {
    Capacity::for_limits(SIZES[SIZES.len() - 1] + 3000, 127)
}

/// One program per lookup (the loader fixes which one a program walks),
/// shared by every size: each size is applied over the last.
struct Programs {
    trie: Dataplane,
    compiled: Dataplane,
    generation: u64,
}

impl Programs {
    fn load() -> Self {
        let load = |lookup| {
            Dataplane::load(capacity().with_lookup(lookup)).unwrap_or_else(|e| panic!("load: {e}"))
        };
        Programs {
            trie: load(Lookup::Trie),
            compiled: load(Lookup::Compiled),
            generation: 0,
        }
    }
}

/// Runs one size; returns the disagreements' descriptions.
fn run_size(programs: &mut Programs, size: u32, frames: usize, seed: u64) -> Vec<String> {
    let mut tables = adversarial(seed, size, capacity().hit_slots);
    let (word, bit) = port_slot(0, PORT_PROTO_TCP, 443);
    tables.port_words[word as usize] |= bit;
    let mut rng = Stream::new(seed ^ u64::from(size));
    let probes = probes(&tables, frames, &mut rng);
    let frames: Vec<Vec<u8>> = probes
        .iter()
        .map(|(a, tags)| tcp_syn_vlan(a.to_be_bytes(), 443, tags))
        .collect();

    let image = compile_prefix_table(&tables).expect("compiles");
    let mut bad = Vec::new();
    // With the trusted-service bypass on and off, so a wrong match in
    // either global table changes some action.
    for bypass in [FLAG_BYPASS_TRUSTED, 0] {
        tables.flags = FLAG_VALID | bypass;
        let mut answers = Vec::new();
        programs.generation += 1;
        let generation = programs.generation;
        for (dataplane, compiled) in [(&mut programs.trie, false), (&mut programs.compiled, true)] {
            let set = tables.clone().with_compiled_lookup(compiled);
            dataplane
                .apply(&set, generation)
                .unwrap_or_else(|e| panic!("apply ({size} prefixes, compiled {compiled}): {e}"));
            let actions: Vec<u32> = frames
                .iter()
                .map(|f| dataplane.test_run(f).expect("test run"))
                .collect();
            answers.push(actions);
        }
        let now = kernel_now_ns();
        for (i, ((addr, tags), frame)) in probes.iter().zip(&frames).enumerate() {
            let (trie, compiled) = (answers[0][i], answers[1][i]);
            // The model scans every entry: it judges a sample at the
            // larger sizes (the tries judge every frame).
            let modelled = i < model_frames(size);
            if trie == compiled && !modelled {
                continue;
            }
            let model = reference::judge(frame, TEST_RUN_IFINDEX, &tables, now);
            let expected = reference::XdpAction::of(model.verdict).code();
            if trie != compiled || (modelled && compiled != expected) {
                let vlan = u32::from(tags.first().copied().unwrap_or(0));
                let src = addr.to_be_bytes();
                bad.push(format!(
                    "{size} prefixes, flags {:#x}: source {} via ifindex {TEST_RUN_IFINDEX} \
                     VLAN {vlan}: XDP action trie {trie}, compiled {compiled}, reference \
                     {expected} ({:?})\n  trie entries {:?}\n  compiled table {:?}",
                    tables.flags,
                    Ipv4Addr::from(src),
                    model.verdict,
                    trie_matches(&tables, TEST_RUN_IFINDEX, vlan, src),
                    table_matches(&image, TEST_RUN_IFINDEX, vlan, src),
                ));
            }
        }
    }
    bad
}

#[test]
fn compiled_table_judges_like_the_tries_and_the_reference_at_every_size() {
    if !require_root() {
        return;
    }
    let frames = env_or("VAULTFW_CPT_FRAMES", DEFAULT_FRAMES);
    let seed = seed_from_env();
    let mut bad = Vec::new();
    let mut programs = Programs::load();
    for size in SIZES {
        let found = run_size(&mut programs, size, frames, seed);
        eprintln!(
            "{size} prefixes: {frames} frames, {} disagreements (seed {seed:#x})",
            found.len()
        );
        bad.extend(found);
    }
    assert!(
        bad.is_empty(),
        "{} disagreements; the first:\n{}",
        bad.len(),
        bad.iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Tables within the limits of 10 IP rules and 5 subnet rules whose
/// 40,000 subnet prefixes (single addresses, none adjacent: every one a
/// range of its own) exceed those limits' compiled table.
fn beyond_room_tables() -> CompiledTables {
    // 40,000 single addresses, none adjacent: every one a range of its own.
    let prefixes: Vec<String> = (0..40_000u32)
        .map(|i| {
            let [_, b, c, d] = (0x0A01_0000 + 2 * i).to_be_bytes();
            format!("\"10.{b}.{c}.{d}\"")
        })
        .collect();
    let text = format!(
        "default_action = \"Deny\"\nlimits = {{ ip_rules = 10, virtual_network_rules = 5 }}\n\
         [[virtual_network_rules]]\nid = \"vnet/subnets/big\"\naddress_prefixes = [{}]\n\
         endpoint = {{ vlan = 10 }}\n",
        prefixes.join(", ")
    );
    let policy = vaultfw::policy::parse_toml(&text)
        .unwrap_or_else(|e| panic!("the policy is valid: {e}"))
        .policy;
    vaultfw::compile::compile(
        &policy,
        &vaultfw::links::InterfaceIndex::new(),
        &vaultfw::clock::MonotonicClock::now(),
    )
    .with_compiled_lookup(true)
}

/// The CLI change of IP rules puts its policy file in place before its
/// table write only when nothing but a failing map write could refuse
/// it: tables beyond the maps' limits, beyond the compiled table's room
/// (which only the build would tell), or any change while a fallback is
/// pending rule it out.
#[test]
fn a_refusal_is_ruled_out_only_for_tables_proven_to_fit_with_no_fallback_pending() {
    if !require_root() {
        return;
    }
    let (_remove, pins) = scratch_pins("cpt-ruled-out");
    let mut dataplane = open_small_compiled(&pins);
    let rules: Vec<([u8; 4], u32, u32)> = (0..11u8)
        .map(|i| ([198, 51, 100, i], 32, i.into()))
        .collect();
    let within = guarded_tables(0, &rules[..10]).with_compiled_lookup(true);
    assert!(dataplane.refusal_is_ruled_out(&within));
    let over_limit = guarded_tables(0, &rules).with_compiled_lookup(true);
    assert!(!dataplane.refusal_is_ruled_out(&over_limit));
    assert!(!dataplane.refusal_is_ruled_out(&beyond_room_tables()));
    assert!(
        !dataplane.refusal_is_ruled_out(&within.clone().with_compiled_lookup(false)),
        "tables for the other lookup are refused"
    );

    dataplane.apply(&within, 1).expect("apply");
    let in_an_hour = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    let narrowed = guarded_tables(0, &rules[..1]).with_compiled_lookup(true);
    dataplane
        .apply_with_fallback(&narrowed, 2, in_an_hour)
        .expect("apply with a fallback");
    assert!(
        !dataplane.refusal_is_ruled_out(&within),
        "a fallback is pending"
    );
    dataplane.confirm().expect("confirm");
    assert!(dataplane.refusal_is_ruled_out(&within));
}

/// A policy within its limits whose subnet prefixes exceed the compiled
/// table's room is refused with the bound and both ways out, and the
/// tables the kernel serves stay as they were.
#[test]
fn a_policy_beyond_the_compiled_tables_room_is_refused_naming_the_bound_and_the_fix() {
    if !require_root() {
        return;
    }
    let tables = beyond_room_tables();
    let capacity = Capacity::for_limits(10, 5).with_lookup(Lookup::Compiled);
    let mut dataplane = Dataplane::load(capacity).unwrap_or_else(|e| panic!("load: {e}"));
    let refused = dataplane
        .apply(&tables, 1)
        .expect_err("40,000 subnet prefixes exceed the compiled table's room");
    let message = refused.to_string();
    assert!(
        message.contains("limits.ip_rules") && message.contains("--lookup trie"),
        "{message}"
    );
    assert_eq!(dataplane.generation(), 0, "nothing was served");
}

/// The program walks only the lookup it was loaded for: tables compiled
/// for the other lookup are refused before anything is written, either
/// way round.
#[test]
fn tables_for_the_other_lookup_are_refused_and_nothing_is_served() {
    if !require_root() {
        return;
    }
    let tables = adversarial(DEFAULT_SEED, 10, Capacity::for_limits(10, 5).hit_slots);
    for (loaded, compiled_for) in [(Lookup::Trie, true), (Lookup::Compiled, false)] {
        let capacity = Capacity::for_limits(3010, 127).with_lookup(loaded);
        let mut dataplane = Dataplane::load(capacity).unwrap_or_else(|e| panic!("load: {e}"));
        let refused = dataplane
            .apply(&tables.clone().with_compiled_lookup(compiled_for), 1)
            .expect_err("tables for the other lookup");
        let message = refused.to_string();
        assert!(
            message.contains(loaded.name()) && message.contains("nothing was written"),
            "{message}"
        );
        assert_eq!(dataplane.generation(), 0, "nothing was served");
    }
}

/// Removes a test's pin directory, even on failure.
struct RemovePins(std::path::PathBuf);

impl Drop for RemovePins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pin directory of this test process, removed when the guard drops.
fn scratch_pins(name: &str) -> (RemovePins, vaultfw::paths::PinDir) {
    let root =
        std::path::PathBuf::from(format!("/sys/fs/bpf/vfwtest-{name}-{}", std::process::id()));
    let pins = vaultfw::paths::PinDir::new(&root);
    (RemovePins(root), pins)
}

/// Entries in the pinned LPM trie `name`.
fn pinned_trie_entries<K: aya::Pod>(pins: &vaultfw::paths::PinDir, name: &str) -> usize {
    use aya::maps::{LpmTrie, Map, MapData};
    let data = MapData::from_pin(pins.map(name)).unwrap_or_else(|e| panic!("open {name}: {e}"));
    let trie: LpmTrie<MapData, K, firewall_common::RuleValue> =
        LpmTrie::try_from(Map::LpmTrie(data)).unwrap_or_else(|e| panic!("{name}: {e}"));
    trie.keys().count()
}

/// A compiled set keeps its IPv4 entries in its table's entry list, not
/// in the tries (one pass, no write per entry): a start over its pins reads
/// every entry back exactly — hit slot and expiry, so the next apply of the
/// same tables writes nothing — and the rules keep their hit counters.
#[test]
fn a_start_over_compiled_pins_reads_every_entry_back_from_the_table_and_the_ipv4_tries_stay_empty()
{
    use firewall_common::{
        IP_RULES_0, IP_RULES_1, Ipv4Key, TRUSTED_0, TRUSTED_1, VNET_RULES_0, VNET_RULES_1, VnetKey,
    };
    use vaultfw::dataplane::BpfLogLevel;
    if !require_root() {
        return;
    }
    let (_remove, pins) = scratch_pins("cpt-list");
    let capacity = Capacity::for_limits(3010, 127).with_lookup(Lookup::Compiled);
    let mut tables = adversarial(DEFAULT_SEED, 1000, capacity.hit_slots);
    tables.flags = FLAG_VALID;
    let (word, bit) = port_slot(0, PORT_PROTO_TCP, 443);
    tables.port_words[word as usize] |= bit;
    let tables = tables.with_compiled_lookup(true);
    assert!(
        !tables.ip_rules.is_empty() && !tables.trusted.is_empty() && !tables.vnet_rules.is_empty()
    );
    let sources: Vec<[u8; 4]> = tables.ip_rules.keys().take(50).map(|k| k.octets).collect();

    let (hits, ip_rules) = {
        let mut dataplane = Dataplane::open_pinned(capacity, pins.clone(), BpfLogLevel::Off)
            .unwrap_or_else(|e| panic!("open pins: {e}"));
        // Both sets, so each is written once.
        let mut fewer = tables.clone();
        fewer.ip_rules.pop_first();
        for (generation, tables) in [(1, &fewer), (2, &tables)] {
            dataplane
                .apply(tables, generation)
                .unwrap_or_else(|e| panic!("apply: {e}"));
        }
        for src in &sources {
            dataplane
                .test_run(&tcp_syn_vlan(*src, 443, &[]))
                .expect("test run");
        }
        let hits = dataplane.rule_hits().expect("hits");
        assert!(!hits.is_empty(), "the frames hit some rule");
        (hits, dataplane.active_ip_rules().expect("rules"))
    };
    for (name, entries) in [
        (
            IP_RULES_0,
            pinned_trie_entries::<Ipv4Key>(&pins, IP_RULES_0),
        ),
        (
            IP_RULES_1,
            pinned_trie_entries::<Ipv4Key>(&pins, IP_RULES_1),
        ),
        (TRUSTED_0, pinned_trie_entries::<Ipv4Key>(&pins, TRUSTED_0)),
        (TRUSTED_1, pinned_trie_entries::<Ipv4Key>(&pins, TRUSTED_1)),
        (
            VNET_RULES_0,
            pinned_trie_entries::<VnetKey>(&pins, VNET_RULES_0),
        ),
        (
            VNET_RULES_1,
            pinned_trie_entries::<VnetKey>(&pins, VNET_RULES_1),
        ),
    ] {
        assert_eq!(entries, 0, "{name} holds entries");
    }

    let mut dataplane = Dataplane::open_pinned(capacity, pins.clone(), BpfLogLevel::Off)
        .unwrap_or_else(|e| panic!("open pins again: {e}"));
    assert_eq!(dataplane.generation(), 2);
    assert!(
        *dataplane.active_tables() == tables,
        "the entries read back differ from those applied"
    );
    assert_eq!(dataplane.active_ip_rules().expect("rules"), ip_rules);
    assert_same_hits(&dataplane, &hits);
    let again = dataplane.apply(&tables, 3).expect("apply again");
    assert!(
        !again.changed,
        "the same tables changed something: {again:?}"
    );
}

/// Asserts that `dataplane`'s rule hit counters are `hits` (packets and
/// bytes by slot): they moved with the rules.
fn assert_same_hits(
    dataplane: &Dataplane,
    hits: &std::collections::BTreeMap<u32, vaultfw::dataplane::RuleHitTotals>,
) {
    let counted = |h: &std::collections::BTreeMap<u32, vaultfw::dataplane::RuleHitTotals>| {
        h.iter()
            .map(|(slot, t)| (*slot, t.packets, t.bytes))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counted(&dataplane.rule_hits().expect("hits")),
        counted(hits),
        "the counters moved with the rules"
    );
}

/// What `f` returns, and the agent's log lines it wrote.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let value = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    (value, text)
}

/// A dataplane over `pins` with room for 10 IP rules and 5 subnet rules,
/// loaded for the compiled lookup.
fn open_small_compiled(pins: &vaultfw::paths::PinDir) -> Dataplane {
    let capacity = Capacity::for_limits(10, 5).with_lookup(Lookup::Compiled);
    Dataplane::open_pinned(capacity, pins.clone(), vaultfw::dataplane::BpfLogLevel::Off)
        .unwrap_or_else(|e| panic!("open pins: {e}"))
}

/// A set guarding TCP port 443 with `flags` (and `FLAG_VALID`) and the IP
/// rules `(octets, prefix length, hit slot)`.
fn guarded_tables(flags: u32, ip_rules: &[([u8; 4], u32, u32)]) -> CompiledTables {
    let mut tables = CompiledTables::empty();
    tables.flags = FLAG_VALID | flags;
    let (word, bit) = port_slot(0, PORT_PROTO_TCP, 443);
    tables.port_words[word as usize] |= bit;
    for &(octets, prefix_len, slot) in ip_rules {
        let key = vaultfw::compile::PrefixKey { prefix_len, octets };
        tables
            .ip_rules
            .insert(key, firewall_common::RuleValue::new(slot));
    }
    tables
}

/// The pinned compiled table of set `set`, mapped writable (as an intruder
/// with root could) for the rest of the test process.
fn map_pinned_table(pins: &vaultfw::paths::PinDir, set: u32) -> &'static mut [[u32; 2]] {
    use std::os::fd::{AsFd, AsRawFd};
    let name = [firewall_common::cpt::CPT_0, firewall_common::cpt::CPT_1][set as usize];
    let map = aya::maps::MapData::from_pin(pins.map(name)).expect("open the pinned table");
    let cells = map.info().expect("map info").max_entries() as usize;
    // SAFETY: a fresh shared mapping of the map's fd, of its whole size.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            cells * 8,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            map.fd().as_fd().as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        ptr,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the mapping holds `cells` cells and is never unmapped (it
    // keeps the map alive until the process exits).
    unsafe { std::slice::from_raw_parts_mut(ptr.cast(), cells) }
}

/// A compiled table changed outside vaultfw is not taken at its list's
/// word: the start finds that the ranges differ from what the list
/// compiles to (or that the list is unreadable) and the next apply writes
/// the policy again, even an unchanged one; the generation numbering goes
/// on either way.
#[test]
fn a_compiled_table_changed_outside_vaultfw_is_rewritten_at_the_next_apply() {
    use firewall_common::VLAN_UNTAGGED;
    use firewall_common::cpt::{EXPIRY_BASE_CELL, GLOBAL_ROOT_CELL, NO_MATCH};
    if !require_root() {
        return;
    }
    let (_remove, pins) = scratch_pins("cpt-drift");
    let tables = guarded_tables(0, &[([198, 51, 100, 8], 29, 0), ([203, 0, 113, 5], 32, 1)])
        .with_compiled_lookup(true);
    // Outside every rule, in a bucket of its own.
    let intruder = [45, 9, 9, 9];
    assert!(
        trie_matches(&tables, TEST_RUN_IFINDEX, VLAN_UNTAGGED, intruder)
            .ip
            .is_none()
    );
    let open = || open_small_compiled(&pins);
    {
        let mut dataplane = open();
        dataplane.apply(&tables, 1).expect("apply");
        assert_eq!(
            dataplane
                .test_run(&tcp_syn_vlan(intruder, 443, &[]))
                .unwrap(),
            support::XDP_DROP
        );
    }
    // The one set written so far serves.
    let written = |set| map_pinned_table(&pins, set)[0][0] == firewall_common::cpt::CPT_MAGIC;
    let served = if written(0) { 0 } else { 1 };
    assert!(written(served) && !written(1 - served));

    // The intruder's bucket made to answer with the /29's leaf.
    let table = map_pinned_table(&pins, served);
    let [k, direct] = table[GLOBAL_ROOT_CELL as usize];
    let bucket = u32::from_be_bytes(intruder) >> (32 - k);
    for rule in [[198, 51, 100, 8], [203, 0, 113, 5]] {
        let shared = u32::from_be_bytes(rule) >> (32 - k) == bucket;
        assert!(!shared, "the intruder shares a bucket with {rule:?}");
    }
    let leaves = table[EXPIRY_BASE_CELL as usize][0] as usize..direct as usize;
    let leaf = leaves
        .clone()
        .find(|&i| table[i] == [NO_MATCH, 0])
        .expect("the /29's leaf");
    table[(direct + bucket) as usize] = [leaf as u32, 0];
    {
        let mut dataplane = open();
        assert_eq!(
            dataplane
                .test_run(&tcp_syn_vlan(intruder, 443, &[]))
                .unwrap(),
            support::XDP_PASS,
            "the changed table is served until the next apply"
        );
        let rewritten = dataplane.apply(&tables, 2).expect("apply the same tables");
        assert!(rewritten.changed, "{rewritten:?}");
        // Nothing to return to: a failed start does not serve it again.
        assert_eq!(dataplane.revert().expect("revert"), None);
        assert_eq!(
            dataplane
                .test_run(&tcp_syn_vlan(intruder, 443, &[]))
                .unwrap(),
            support::XDP_DROP
        );
        assert_eq!(
            dataplane
                .test_run(&tcp_syn_vlan([198, 51, 100, 9], 443, &[]))
                .unwrap(),
            support::XDP_PASS
        );
    }

    // An unreadable list (a group of prefix length 40) does not block the
    // start either, and the numbering goes on.
    let served = 1 - served;
    let table = map_pinned_table(&pins, served);
    let list = table[EXPIRY_BASE_CELL as usize][1] as usize;
    table[list + 1][0] = (table[list + 1][0] & !0x00ff_0000) | 40 << 16;
    let mut dataplane = open();
    assert_eq!(dataplane.generation(), 2);
    let rewritten = dataplane.apply(&tables, 3).expect("apply the same tables");
    assert!(rewritten.changed, "{rewritten:?}");
    assert_eq!(
        dataplane
            .test_run(&tcp_syn_vlan(intruder, 443, &[]))
            .unwrap(),
        support::XDP_DROP
    );
    assert_eq!(
        dataplane
            .test_run(&tcp_syn_vlan([203, 0, 113, 5], 443, &[]))
            .unwrap(),
        support::XDP_PASS
    );
}

/// A compiled table pinned by a build of the layout before the subnet
/// cover (`CPT_MAGIC_V1`) is still walked by the program attached to it,
/// so a start never rewrites it in place: the filter moves to new maps.
/// The rules keep their counters and the numbering goes on; the new maps
/// judge by this layout.
#[test]
fn a_start_over_a_compiled_table_of_the_earlier_layout_moves_the_filter_to_new_maps() {
    use firewall_common::cpt::{CPT_0, CPT_1, CPT_MAGIC, CPT_MAGIC_V1};
    use firewall_common::{RuleValue, VLAN_ANY};
    use vaultfw::compile::{PrefixKey, VnetPrefixKey};
    if !require_root() {
        return;
    }
    let (_remove, pins) = scratch_pins("cpt-layout");
    let mut tables = guarded_tables(
        firewall_common::FLAG_HAS_VNET,
        &[([198, 51, 100, 8], 29, 0)],
    );
    let subnet = VnetPrefixKey {
        ifindex: TEST_RUN_IFINDEX,
        vlan: VLAN_ANY,
        prefix: PrefixKey {
            prefix_len: 24,
            octets: [10, 1, 2, 0],
        },
    };
    tables.vnet_rules.insert(subnet, RuleValue::new(10));
    let tables = tables.with_compiled_lookup(true);
    let open = || open_small_compiled(&pins);
    let map_ids = || {
        [CPT_0, CPT_1].map(|name| {
            aya::maps::MapInfo::from_pin(pins.map(name))
                .expect("the pinned table")
                .id()
        })
    };
    let hits = {
        let mut dataplane = open();
        dataplane.apply(&tables, 1).expect("apply");
        let frame = tcp_syn_vlan([198, 51, 100, 9], 443, &[]);
        assert_eq!(dataplane.test_run(&frame).unwrap(), support::XDP_PASS);
        dataplane.rule_hits().expect("hits")
    };
    assert!(!hits.is_empty());
    let before = map_ids();
    for set in 0..2 {
        let table = map_pinned_table(&pins, set);
        if table[0][0] == CPT_MAGIC {
            table[0][0] = CPT_MAGIC_V1;
        }
    }

    let (mut dataplane, logged) = logged(open);
    assert!(
        dataplane.migrating(),
        "a table of the earlier layout is reused"
    );
    assert!(logged.contains("another layout"), "{logged}");
    assert!(
        !logged.contains("differs from the one its entry list compiles to"),
        "an upgrade is taken for a change outside vaultfw: {logged}"
    );
    assert_eq!(dataplane.generation(), 1);
    dataplane.apply(&tables, 2).expect("apply on the new maps");
    assert_same_hits(&dataplane, &hits);
    dataplane.commit_pins().expect("commit the new pins");
    let after = map_ids();
    assert!(
        before.iter().all(|id| !after.contains(id)),
        "{before:?} → {after:?}"
    );
    let served = (0..2)
        .filter(|&set| map_pinned_table(&pins, set)[0][0] == CPT_MAGIC)
        .count();
    assert_eq!(served, 1, "one new set is written, in this layout");
    for (src, verdict) in [
        ([198, 51, 100, 9], support::XDP_PASS),
        ([10, 1, 2, 3], support::XDP_PASS),
        ([10, 1, 3, 3], support::XDP_DROP),
        ([45, 9, 9, 9], support::XDP_DROP),
    ] {
        let frame = tcp_syn_vlan(src, 443, &[]);
        assert_eq!(
            dataplane.test_run(&frame).expect("test run"),
            verdict,
            "{src:?}"
        );
    }
}
