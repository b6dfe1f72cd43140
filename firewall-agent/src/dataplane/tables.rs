//! The maps of both table sets, what the agent knows each set holds, and
//! the double-buffered apply — with or without a fallback deadline.
//!
//! An apply with a fallback deadline (`apply --confirm-within`) leaves the
//! previous generation intact in the other set: past the deadline the
//! program judges with it by itself. Until the deadline is cleared
//! ([`Tables::confirm`]) or the flip undone ([`Tables::revert`]) the kernel
//! may be serving either set, so nothing may write either: every apply is
//! refused while a deadline is armed.

use std::collections::BTreeMap;

use std::os::fd::{AsFd, AsRawFd, RawFd};

use aya::{
    Ebpf, Pod,
    maps::{Array, IterableMap, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key},
};
use firewall_common::{
    ACTIVE_SET, DATA_PLANE_PORTS, FLAG_LOOKUP_COMPILED, FLAG_VALID, HitSlots, INTERFACE_SLOTS,
    IP_RULES_0, IP_RULES_1, Ipv4Key, POLICY_CONFIG, PORT_WORDS_PER_ROW, PolicyConfig, RULE_HITS,
    RuleHits, RuleValue, TABLE_SETS, TELEMETRY, TELEMETRY_EVENTS_RATE_LIMITED,
    TELEMETRY_EVENTS_RING_FULL, TELEMETRY_EVENTS_SENT, TRUSTED_0, TRUSTED_1, VERDICT_COUNTERS,
    VNET_ENDPOINT_BITS, VNET_RULES_0, VNET_RULES_1, Verdict, VnetKey, remap_verdict_slot,
};
use firewall_common::{
    IP6_RULES_0, IP6_RULES_1, Ipv6Key, TRUSTED6_0, TRUSTED6_1, VNET6_RULES_0, VNET6_RULES_1,
    Vnet6Key,
};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

use super::cpt::CompiledSets;
use super::{Capacity, DataplaneError, VerdictTotals};
use crate::clock::{self, MonotonicClock};
use crate::compile::cpt::ListedEntries;
use crate::compile::{CompiledTables, Prefix6Key, PrefixKey, Vnet6PrefixKey, VnetPrefixKey};
use crate::paths::PinDir;

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// The generation the kernel now serves.
    pub generation: u64,
    /// False when the policy equalled the active one: nothing was written.
    pub changed: bool,
    /// IP rules (IPv4 and IPv6) in the new policy and not in the previous one.
    pub ip_rules_added: usize,
    /// IP rules (IPv4 and IPv6) in the previous policy and not in the new one.
    pub ip_rules_removed: usize,
    /// Map element writes and deletes performed.
    pub map_writes: usize,
}

/// An unconfirmed apply undone: by [`super::Dataplane::revert`], by a
/// confirmation that came too late, or at a start that found one pending in
/// the pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Reverted {
    /// The generation the kernel serves again (the one before the apply).
    pub generation: u64,
    /// The unconfirmed generation that no longer serves.
    pub dropped_generation: u64,
    /// True when the deadline had already passed: the kernel was serving
    /// the previous generation on its own, and the flip made it official.
    pub by_kernel: bool,
}

/// What [`super::Dataplane::confirm`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confirmation {
    /// The deadline is cleared: the new generation stays.
    Confirmed,
    /// No deadline was armed (the apply changed nothing, or it was
    /// confirmed or reverted already): nothing to do.
    NothingPending,
    /// Too late: the deadline has passed and the kernel serves the previous
    /// generation. Nothing was written; [`super::Dataplane::revert`] makes
    /// the rollback official (until then every apply is refused).
    TooLate,
}

/// One rule's hit counters, summed over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RuleHitTotals {
    /// Frames the rule allowed.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The latest hit, wall clock.
    #[serde(serialize_with = "serialize_time")]
    pub last_hit: Option<std::time::SystemTime>,
}

fn serialize_time<S: serde::Serializer>(
    t: &Option<std::time::SystemTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}

/// Access-log accounting, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventTotals {
    /// Events written to the ring buffer.
    pub sent: u64,
    /// Events dropped by the per-CPU rate limit (`events_dropped`).
    pub rate_limited: u64,
    /// Events dropped because the ring buffer was full.
    pub ring_full: u64,
}

/// A trie key the agent computes with and the form the kernel stores.
trait TrieKey: Ord + Copy {
    type Data: Pod;
    fn to_trie(self) -> Key<Self::Data>;
    fn from_trie(key: Key<Self::Data>) -> Self;
}

impl TrieKey for PrefixKey {
    type Data = Ipv4Key;
    fn to_trie(self) -> Key<Ipv4Key> {
        Key::new(self.prefix_len, self.octets)
    }
    fn from_trie(key: Key<Ipv4Key>) -> Self {
        PrefixKey {
            prefix_len: key.prefix_len(),
            octets: key.data(),
        }
    }
}

impl TrieKey for VnetPrefixKey {
    type Data = VnetKey;
    fn to_trie(self) -> Key<VnetKey> {
        Key::new(
            VNET_ENDPOINT_BITS + self.prefix.prefix_len,
            VnetKey::new(self.ifindex, self.vlan, self.prefix.octets),
        )
    }
    fn from_trie(key: Key<VnetKey>) -> Self {
        let data = key.data();
        VnetPrefixKey {
            ifindex: u32::from_be_bytes(data.ifindex),
            vlan: u32::from_be_bytes(data.vlan),
            prefix: PrefixKey {
                prefix_len: key.prefix_len() - VNET_ENDPOINT_BITS,
                octets: data.addr,
            },
        }
    }
}

impl TrieKey for Prefix6Key {
    type Data = Ipv6Key;
    fn to_trie(self) -> Key<Ipv6Key> {
        Key::new(self.prefix_len, self.octets)
    }
    fn from_trie(key: Key<Ipv6Key>) -> Self {
        Prefix6Key {
            prefix_len: key.prefix_len(),
            octets: key.data(),
        }
    }
}

impl TrieKey for Vnet6PrefixKey {
    type Data = Vnet6Key;
    fn to_trie(self) -> Key<Vnet6Key> {
        Key::new(
            VNET_ENDPOINT_BITS + self.prefix.prefix_len,
            Vnet6Key::new(self.ifindex, self.vlan, self.prefix.octets),
        )
    }
    fn from_trie(key: Key<Vnet6Key>) -> Self {
        let data = key.data();
        Vnet6PrefixKey {
            ifindex: u32::from_be_bytes(data.ifindex),
            vlan: u32::from_be_bytes(data.vlan),
            prefix: Prefix6Key {
                prefix_len: key.prefix_len() - VNET_ENDPOINT_BITS,
                octets: data.addr,
            },
        }
    }
}

/// The two tries (one per table set) of one rule kind.
struct TriePair<K: TrieKey> {
    names: [&'static str; TABLE_SETS as usize],
    tries: [LpmTrie<MapData, K::Data, RuleValue>; TABLE_SETS as usize],
}

impl<K: TrieKey> TriePair<K> {
    fn open(maps: &mut MapSource<'_>, names: [&'static str; 2]) -> Result<Self, DataplaneError> {
        Ok(TriePair {
            tries: [maps.open(names[0])?, maps.open(names[1])?],
            names,
        })
    }

    /// Makes set `set`'s trie hold `new`, writing only what differs from
    /// `old` (or, when `old` is unknown, from what the kernel holds).
    /// Removes first, so the trie never holds more than max(old, new).
    /// Both maps are sorted: the difference is one merge pass.
    fn sync(
        &mut self,
        set: u32,
        old: Option<&BTreeMap<K, RuleValue>>,
        new: &BTreeMap<K, RuleValue>,
    ) -> Result<usize, DataplaneError> {
        let name = self.names[set as usize];
        let trie = &mut self.tries[set as usize];
        let read_back;
        let old = match old {
            Some(old) => old,
            None => {
                // Unknown contents: what the kernel holds, values unknown
                // (so every entry of `new` is written).
                read_back = trie
                    .keys()
                    .map(|k| k.map(|k| (K::from_trie(k), None)))
                    .collect::<Result<BTreeMap<K, Option<RuleValue>>, _>>()
                    .map_err(map_err(name))?;
                return Self::write_diff(
                    trie,
                    name,
                    read_back.iter().map(|(k, v)| (k, v.as_ref())),
                    new,
                );
            }
        };
        Self::write_diff(trie, name, old.iter().map(|(k, v)| (k, Some(v))), new)
    }

    /// Writes into `trie` what turns `old` (sorted by key; a `None` value
    /// is unknown) into `new`: removals first, then inserts.
    fn write_diff<'a>(
        trie: &mut LpmTrie<MapData, K::Data, RuleValue>,
        name: &'static str,
        old: impl Iterator<Item = (&'a K, Option<&'a RuleValue>)>,
        new: &'a BTreeMap<K, RuleValue>,
    ) -> Result<usize, DataplaneError>
    where
        K: 'a,
    {
        let (stale, fresh) = sorted_diff(old, new.iter());
        let fd = raw_fd(trie.map());
        let keys: Vec<Key<K::Data>> = stale.iter().map(|k| k.to_trie()).collect();
        let bytes: Vec<u8> = keys.iter().flat_map(|k| pod_bytes(k).to_vec()).collect();
        batched(fd, &bytes, None, keys.len(), |i| {
            trie.remove(&keys[i]).map_err(map_err(name))
        })?;
        let keys: Vec<Key<K::Data>> = fresh.iter().map(|(k, _)| k.to_trie()).collect();
        let bytes: Vec<u8> = keys.iter().flat_map(|k| pod_bytes(k).to_vec()).collect();
        let values: Vec<u8> = fresh
            .iter()
            .flat_map(|(_, v)| pod_bytes(*v).to_vec())
            .collect();
        batched(fd, &bytes, Some(&values), keys.len(), |i| {
            trie.insert(&keys[i], *fresh[i].1, 0).map_err(map_err(name))
        })?;
        Ok(stale.len() + fresh.len())
    }

    fn read(&self, set: u32) -> Result<BTreeMap<K, RuleValue>, DataplaneError> {
        self.tries[set as usize]
            .iter()
            .map(|entry| entry.map(|(k, v)| (K::from_trie(k), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err(self.names[set as usize]))
    }
}

/// The IPv6 tries of both sets.
struct Ip6Tries {
    ip_rules: TriePair<Prefix6Key>,
    vnet_rules: TriePair<Vnet6PrefixKey>,
    trusted: TriePair<Prefix6Key>,
}

impl Ip6Tries {
    fn open(maps: &mut MapSource<'_>) -> Result<Self, DataplaneError> {
        Ok(Ip6Tries {
            ip_rules: TriePair::open(maps, [IP6_RULES_0, IP6_RULES_1])?,
            vnet_rules: TriePair::open(maps, [VNET6_RULES_0, VNET6_RULES_1])?,
            trusted: TriePair::open(maps, [TRUSTED6_0, TRUSTED6_1])?,
        })
    }
}

/// The typed maps plus the agent's record of each set's contents.
pub(super) struct Tables {
    active_index: Array<MapData, u32>,
    config: Array<MapData, PolicyConfig>,
    ports: Array<MapData, u32>,
    ip_rules: TriePair<PrefixKey>,
    vnet_rules: TriePair<VnetPrefixKey>,
    trusted: TriePair<PrefixKey>,
    /// The IPv6 tries: `None` only for pins of a build before IPv6 rules
    /// (read as a migration's predecessor, never written).
    ip6: Option<Ip6Tries>,
    verdicts: PerCpuArray<MapData, u64>,
    rule_hits: PerCpuArray<MapData, RuleHits>,
    telemetry: PerCpuArray<MapData, u64>,
    /// The compiled prefix tables and the double buffer's grace periods.
    compiled: CompiledSets,
    capacity: Capacity,
    /// The set the program reads.
    active: u32,
    /// What each set holds; `None` when unknown (a write failed half-way),
    /// in which case the next apply rewrites that set from what the kernel
    /// holds.
    contents: [Option<CompiledTables>; TABLE_SETS as usize],
    /// Per set: its IPv4 tries are known to be empty. A set served by the
    /// compiled table keeps its IPv4 entries in the table's entry list
    /// only, so its first compiled write empties the tries (a predecessor
    /// or the trie lookup may have filled them).
    ipv4_tries_empty: [bool; TABLE_SETS as usize],
    /// The generation the active set was written for (0: none yet).
    generation: u64,
    /// The highest generation either set was ever written for: a
    /// rolled-back generation's number is never issued again, so
    /// `--if-generation N` always names one policy.
    issued: u64,
    /// The set and generation served before the last flip, while that set
    /// is untouched: what [`Tables::revert`] returns to.
    previous: Option<(u32, u64)>,
    /// Until the first apply after a migration: what the replaced maps'
    /// active set held, slots in this layout, so every rule keeps its slot.
    inherited: Option<CompiledTables>,
    /// The active set's fallback deadline (CLOCK_MONOTONIC ns; 0: none).
    /// While set, the kernel serves either set and neither may be written;
    /// `previous` then names the set it falls back to.
    fallback_at_ns: u64,
    /// An unconfirmed apply this start found in the pins and undid.
    rolled_back_at_start: Option<Reverted>,
    /// The active set read back at the start does not hold what its record
    /// says (a compiled table whose ranges or list were changed outside
    /// vaultfw): the next apply writes the policy even if it equals the
    /// record.
    active_diverged: bool,
}

/// Where the typed maps come from: a loaded object, or the pins a
/// predecessor left (read during a migration to new maps).
enum MapSource<'a> {
    Loaded(&'a mut Ebpf),
    Pinned(&'a PinDir),
}

/// A typed map that can be opened from its pin (the `Map` variant its
/// type wraps).
trait Pinnable: TryFrom<Map, Error = MapError> {
    const VARIANT: fn(MapData) -> Map;
}

impl<V: Pod> Pinnable for Array<MapData, V> {
    const VARIANT: fn(MapData) -> Map = Map::Array;
}

impl<V: Pod> Pinnable for PerCpuArray<MapData, V> {
    const VARIANT: fn(MapData) -> Map = Map::PerCpuArray;
}

impl<K: Pod, V: Pod> Pinnable for LpmTrie<MapData, K, V> {
    const VARIANT: fn(MapData) -> Map = Map::LpmTrie;
}

impl MapSource<'_> {
    /// The compiled-table arrays of both sets (`None`: pins of a build
    /// before them, see [`Tables::open`]).
    fn open_compiled(&mut self) -> Option<[MapData; 2]> {
        let mut one = |name: &'static str| match self {
            MapSource::Loaded(ebpf) => match ebpf.take_map(name)? {
                Map::Array(data) => Some(data),
                _ => None,
            },
            MapSource::Pinned(dir) => MapData::from_pin(dir.map(name)).ok(),
        };
        Some([
            one(firewall_common::cpt::CPT_0)?,
            one(firewall_common::cpt::CPT_1)?,
        ])
    }

    fn open<T: Pinnable>(&mut self, name: &'static str) -> Result<T, DataplaneError> {
        let map = match self {
            MapSource::Loaded(ebpf) => ebpf
                .take_map(name)
                .ok_or(DataplaneError::MissingMap { map: name })?,
            MapSource::Pinned(dir) => {
                let data = MapData::from_pin(dir.map(name))
                    .map_err(|source| DataplaneError::Map { map: name, source })?;
                T::VARIANT(data)
            }
        };
        T::try_from(map).map_err(|source| DataplaneError::Map { map: name, source })
    }
}

/// The verdict counters and the access log's accounting of the maps
/// pinned under `dir`, read while no daemon holds them: per interface slot
/// (`ifindex % INTERFACE_SLOTS`), and the events.
pub(super) fn pinned_counters(
    dir: &PinDir,
) -> Result<(Vec<VerdictTotals>, EventTotals), DataplaneError> {
    let mut maps = MapSource::Pinned(dir);
    let verdicts: PerCpuArray<MapData, u64> = maps.open(VERDICT_COUNTERS)?;
    let telemetry: PerCpuArray<MapData, u64> = maps.open(TELEMETRY)?;
    Ok((verdict_slots(&verdicts)?, event_totals(&telemetry)?))
}

/// Per-CPU verdict counters summed, per interface slot.
fn verdict_slots(
    verdicts: &PerCpuArray<MapData, u64>,
) -> Result<Vec<VerdictTotals>, DataplaneError> {
    let mut slots = vec![[0u64; Verdict::COUNT]; INTERFACE_SLOTS as usize];
    for (index, per_cpu) in verdicts.iter().enumerate() {
        let per_cpu = per_cpu.map_err(map_err(VERDICT_COUNTERS))?;
        let (interface, verdict) = (index / Verdict::COUNT, index % Verdict::COUNT);
        if let Some(row) = slots.get_mut(interface) {
            row[verdict] = per_cpu.iter().sum();
        }
    }
    Ok(slots)
}

/// The totals over every interface slot.
pub(super) fn sum_slots(slots: &[VerdictTotals]) -> VerdictTotals {
    let mut totals = [0u64; Verdict::COUNT];
    for row in slots {
        for (total, value) in totals.iter_mut().zip(row) {
            *total += value;
        }
    }
    totals
}

/// The access log's accounting, per-CPU values summed.
fn event_totals(telemetry: &PerCpuArray<MapData, u64>) -> Result<EventTotals, DataplaneError> {
    let sum = |slot: u32| -> Result<u64, DataplaneError> {
        Ok(telemetry
            .get(&slot, 0)
            .map_err(map_err(TELEMETRY))?
            .iter()
            .sum())
    };
    Ok(EventTotals {
        sent: sum(TELEMETRY_EVENTS_SENT)?,
        rate_limited: sum(TELEMETRY_EVENTS_RATE_LIMITED)?,
        ring_full: sum(TELEMETRY_EVENTS_RING_FULL)?,
    })
}

/// The difference between two maps given as iterators sorted by key
/// (`old`'s values may be unknown: `None`): the keys only `old` has, and
/// the entries of `new` that `old` lacks or holds with another (or an
/// unknown) value. One merge pass, no lookups.
fn sorted_diff<'a, K: Ord + Copy + 'a, V: PartialEq + 'a>(
    old: impl Iterator<Item = (&'a K, Option<&'a V>)>,
    new: impl Iterator<Item = (&'a K, &'a V)>,
) -> (Vec<K>, Vec<(&'a K, &'a V)>) {
    use std::cmp::Ordering;
    let (mut stale, mut fresh) = (Vec::new(), Vec::new());
    let mut old = old.peekable();
    for (key, value) in new {
        loop {
            match old.peek() {
                Some((k, _)) if *k < key => {
                    stale.push(**k);
                    old.next();
                }
                _ => break,
            }
        }
        match old.peek() {
            Some((k, v)) if (*k).cmp(key) == Ordering::Equal => {
                if *v != Some(value) {
                    fresh.push((key, value));
                }
                old.next();
            }
            _ => fresh.push((key, value)),
        }
    }
    stale.extend(old.map(|(k, _)| *k));
    (stale, fresh)
}

/// How many keys of `new` `old` lacks, and how many of `old` `new` lacks
/// (both sorted maps: one merge pass that only counts, as it runs on
/// every apply, at 100,000 rules too).
fn added_removed<K: Ord, V>(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> (usize, usize) {
    let mut old_keys = old.keys().peekable();
    let mut kept = 0;
    for key in new.keys() {
        while old_keys.next_if(|k| *k < key).is_some() {}
        if old_keys.next_if(|k| *k == key).is_some() {
            kept += 1;
        }
    }
    (new.len() - kept, old.len() - kept)
}

static EMPTY_IP: BTreeMap<PrefixKey, RuleValue> = BTreeMap::new();
static EMPTY_VNET: BTreeMap<VnetPrefixKey, RuleValue> = BTreeMap::new();
static EMPTY_IP6: BTreeMap<Prefix6Key, RuleValue> = BTreeMap::new();

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

/// Writes (`values` given) or deletes `count` elements of the map `fd` in
/// one batch (`sys::batch`); whatever the batch leaves undone — on a kernel
/// without batched operations for the map type, or from an element it
/// refuses on — is done one element at a time by `single(i)`, which reports
/// that element's own error.
fn batched(
    fd: RawFd,
    keys: &[u8],
    values: Option<&[u8]>,
    count: usize,
    single: impl FnMut(usize) -> Result<(), DataplaneError>,
) -> Result<(), DataplaneError> {
    let (done, _) = super::sys::batch(fd, keys, values, count);
    (done..count).try_for_each(single)
}

fn raw_fd(map: &MapData) -> RawFd {
    map.fd().as_fd().as_raw_fd()
}

/// The bytes of `value`, as the kernel reads a key or value.
fn pod_bytes<T: Pod>(value: &T) -> &[u8] {
    // SAFETY: aya's `Pod` types are plain data: `size_of::<T>()`
    // initialised bytes with no pointers (keys and values are written to
    // the kernel byte for byte the same way).
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

impl Tables {
    /// Takes the maps out of a freshly loaded object (all zero: no set is
    /// valid, set 0 is active).
    pub(super) fn take(ebpf: &mut Ebpf, capacity: Capacity) -> Result<Self, DataplaneError> {
        Self::open(MapSource::Loaded(ebpf), capacity)
    }

    /// The tables a predecessor pinned under `dir`, read back as
    /// [`Tables::adopt`] reads them, with `capacity` as the pins have it.
    pub(super) fn open_pinned(dir: &PinDir, capacity: Capacity) -> Result<Self, DataplaneError> {
        Self::open(MapSource::Pinned(dir), capacity)?.read_back()
    }

    fn open(mut maps: MapSource<'_>, capacity: Capacity) -> Result<Self, DataplaneError> {
        // Pins of a build before IPv6 rules lack the IPv6 tries: such a
        // set is only read (a migration's predecessor), as holding none.
        let pinned = matches!(maps, MapSource::Pinned(_));
        let ip6 = match Ip6Tries::open(&mut maps) {
            Ok(tries) => Some(tries),
            Err(_) if pinned => None,
            Err(e) => return Err(e),
        };
        let compiled = maps.open_compiled();
        if compiled.is_none() && !pinned {
            return Err(DataplaneError::MissingMap {
                map: firewall_common::cpt::CPT_0,
            });
        }
        Ok(Tables {
            compiled: CompiledSets::new(compiled, capacity.compiled_cells())?,
            ip6,
            active_index: maps.open(ACTIVE_SET)?,
            config: maps.open(POLICY_CONFIG)?,
            ports: maps.open(DATA_PLANE_PORTS)?,
            ip_rules: TriePair::open(&mut maps, [IP_RULES_0, IP_RULES_1])?,
            vnet_rules: TriePair::open(&mut maps, [VNET_RULES_0, VNET_RULES_1])?,
            trusted: TriePair::open(&mut maps, [TRUSTED_0, TRUSTED_1])?,
            verdicts: maps.open(VERDICT_COUNTERS)?,
            rule_hits: maps.open(RULE_HITS)?,
            telemetry: maps.open(TELEMETRY)?,
            capacity,
            active: 0,
            contents: [Some(CompiledTables::empty()), Some(CompiledTables::empty())],
            ipv4_tries_empty: [false; TABLE_SETS as usize],
            generation: 0,
            issued: 0,
            previous: None,
            inherited: None,
            fallback_at_ns: 0,
            rolled_back_at_start: None,
            active_diverged: false,
        })
    }

    /// Takes the maps of a program loaded over pinned maps: whatever a
    /// previous agent left — the active set, its contents and generation —
    /// is read back from the kernel, so the next apply is a diff and the
    /// counters keep counting.
    ///
    /// An unconfirmed apply left pending (its daemon stopped or crashed) is
    /// undone first: the index flips to the previous generation — which the
    /// kernel already serves once the deadline has passed — because nobody
    /// can confirm it any more and the policy file never held it.
    pub(super) fn adopt(ebpf: &mut Ebpf, capacity: Capacity) -> Result<Self, DataplaneError> {
        Self::take(ebpf, capacity)?.read_back()
    }

    /// Reads back the active set, its contents and generation (undoing an
    /// unconfirmed apply left pending, see [`Tables::adopt`]).
    fn read_back(self) -> Result<Self, DataplaneError> {
        let mut tables = self;
        for set in 0..TABLE_SETS {
            let written = tables.config.get(&set, 0).map_err(map_err(POLICY_CONFIG))?;
            tables.issued = tables.issued.max(written.generation);
        }
        let mut active = tables
            .active_index
            .get(&0, 0)
            .map_err(map_err(ACTIVE_SET))?
            & 1;
        let mut config = tables
            .config
            .get(&active, 0)
            .map_err(map_err(POLICY_CONFIG))?;
        if config.flags & FLAG_VALID == 0 {
            // Nothing to adopt. Maps kept from a program whose config map
            // was recreated (an upgrade) may still hold its tables, so both
            // sets' contents are unknown; and the set the index names is
            // the one such a program serves, so the next apply writes the
            // other one.
            tables.active = active;
            tables.contents = [None, None];
            return Ok(tables);
        }
        if config.fallback_at_ns != 0 {
            let previous = active ^ 1;
            let previous_config = tables
                .config
                .get(&previous, 0)
                .map_err(map_err(POLICY_CONFIG))?;
            let by_kernel = config.fallback_due(clock::kernel_now_ns);
            tables
                .active_index
                .set(0, previous, 0)
                .map_err(map_err(ACTIVE_SET))?;
            tables.rolled_back_at_start = Some(Reverted {
                generation: previous_config.generation,
                dropped_generation: config.generation,
                by_kernel,
            });
            (active, config) = (previous, previous_config);
        }
        let mut port_words = Vec::with_capacity(2 * PORT_WORDS_PER_ROW as usize);
        let base = active * 2 * PORT_WORDS_PER_ROW;
        for i in 0..2 * PORT_WORDS_PER_ROW {
            port_words.push(
                tables
                    .ports
                    .get(&(base + i), 0)
                    .map_err(map_err(DATA_PLANE_PORTS))?,
            );
        }
        // A compiled set's list can be corrupt, or disagree with the ranges
        // the program walks: then the set is rewritten at the next apply
        // (its entries, if unreadable, taken as none: every slot they get
        // starts from zero), and the start goes on.
        let compiled_set = config.flags & FLAG_LOOKUP_COMPILED != 0;
        let ListedEntries {
            ip_rules,
            vnet_rules,
            trusted,
        } = match tables.read_ipv4(active, config.flags) {
            Err(error @ DataplaneError::CompiledTable { .. }) if compiled_set => {
                tracing::error!(%error, set = active, "the served compiled table's entry list cannot be read; the set is rewritten from the policy at the next apply, and its rules' hit counters start from zero");
                tables.active_diverged = true;
                ListedEntries::default()
            }
            read => read?,
        };
        let contents = CompiledTables {
            flags: CompiledTables::flags_of_config(config.flags),
            event_cost_ns: config.event_cost_ns,
            port_words,
            ip_rules,
            vnet_rules,
            trusted,
            ip6_rules: match &tables.ip6 {
                Some(t) => t.ip_rules.read(active)?,
                None => BTreeMap::new(),
            },
            vnet6_rules: match &tables.ip6 {
                Some(t) => t.vnet_rules.read(active)?,
                None => BTreeMap::new(),
            },
            trusted6: match &tables.ip6 {
                Some(t) => t.trusted.read(active)?,
                None => BTreeMap::new(),
            },
        };
        // A table of another layout (an upgrade: these maps are being
        // replaced, see `pins`) is not compared with this layout's image.
        if compiled_set
            && !tables.active_diverged
            && tables.compiled.layout_is_current(active)
            && !tables.compiled.serves(active, &contents)?
        {
            tracing::error!(
                set = active,
                "the served compiled table differs from the one its entry list compiles to (changed outside vaultfw?); the set is rewritten from the policy at the next apply"
            );
            tables.active_diverged = true;
        }
        tables.active = active;
        tables.generation = config.generation;
        // The inactive set is unknown: the next apply rewrites it from what
        // the kernel holds.
        tables.contents = [None, None];
        tables.contents[active as usize] = Some(contents);
        Ok(tables)
    }

    /// The IPv4 entries set `set` holds, as the kernel holds them: a set
    /// whose config `flags` select the compiled table lists them in the
    /// table; one written by a build before the list (or with no IPv4
    /// entries) has them in its tries.
    fn read_ipv4(&self, set: u32, flags: u32) -> Result<ListedEntries, DataplaneError> {
        if flags & FLAG_LOOKUP_COMPILED != 0
            && let Some(listed) = self.compiled.listed(set)?
        {
            return Ok(listed);
        }
        Ok(ListedEntries {
            ip_rules: self.ip_rules.read(set)?,
            vnet_rules: self.vnet_rules.read(set)?,
            trusted: self.trusted.read(set)?,
        })
    }

    /// The active set's IPv4 entries, read back from the kernel.
    fn active_ipv4(&self) -> Result<ListedEntries, DataplaneError> {
        let config = self
            .config
            .get(&self.active, 0)
            .map_err(map_err(POLICY_CONFIG))?;
        self.read_ipv4(self.active, config.flags)
    }

    /// The generation the active set was written for (0: none yet).
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// The number the next generation gets: above every generation either
    /// set was written for, including one rolled back.
    pub(super) fn next_generation(&self) -> u64 {
        self.issued.max(self.generation) + 1
    }

    /// An unconfirmed apply this start found in the pins and undid.
    pub(super) fn rolled_back_at_start(&self) -> Option<Reverted> {
        self.rolled_back_at_start
    }

    /// The active set's fallback deadline (CLOCK_MONOTONIC ns), if armed.
    pub(super) fn fallback_at_ns(&self) -> Option<u64> {
        (self.fallback_at_ns != 0).then_some(self.fallback_at_ns)
    }

    /// Writes `compiled` as `generation` into the inactive set and flips to
    /// it. With `fallback_at_ns` (CLOCK_MONOTONIC ns, 0: none) the kernel
    /// judges with the previous generation from that time on, until
    /// [`Tables::confirm`]. Refused while a deadline is armed, and (with a
    /// deadline) when no generation serves yet to fall back to.
    pub(super) fn apply<E: From<DataplaneError>>(
        &mut self,
        compiled: CompiledTables,
        generation: u64,
        fallback_at_ns: u64,
        before_flip: impl FnOnce() -> Result<(), E>,
    ) -> Result<ApplyReport, E> {
        if self.fallback_at_ns != 0 {
            return Err(DataplaneError::FallbackPending {
                generation: self.generation,
            }
            .into());
        }
        // A fallback needs a generation these maps serve to fall back to.
        if fallback_at_ns != 0 && (self.generation == 0 || self.inherited.is_some()) {
            return Err(DataplaneError::NothingToFallBackTo.into());
        }
        self.capacity.check(&compiled)?;
        // After a migration nothing is served from these maps yet: the
        // first apply always writes, and slots compare with what the
        // replaced maps served.
        let migrated = self.inherited.is_some();
        let active = self.active as usize;
        let unchanged =
            !migrated && !self.active_diverged && self.contents[active].as_ref() == Some(&compiled);
        if unchanged {
            // Nothing to flip, but what must precede serving still must
            // succeed (the policy file declaring a change of comments).
            before_flip()?;
            // Nothing changed, so nothing for a revert to undo (it must
            // never return to what an earlier apply replaced).
            self.previous = None;
            return Ok(ApplyReport {
                generation: self.generation,
                changed: false,
                ip_rules_added: 0,
                ip_rules_removed: 0,
                map_writes: 0,
            });
        }
        let target = 1 - self.active;
        // Writing the spare set ends what a revert could return to.
        self.previous = None;
        // Until the write completes the set's contents are unknown.
        let known = self.contents[target as usize].take();
        let map_writes = self.write_set(
            target,
            known.as_ref(),
            &compiled,
            generation,
            fallback_at_ns,
        )?;
        if let Err(error) = before_flip() {
            // Written, not served: the next apply diffs from it.
            self.contents[target as usize] = Some(compiled);
            return Err(error);
        }
        // Counters of slots that change owner start from zero — only once
        // the new set is complete, so a refused write changes no counter.
        // (After a migration the set just left keeps its record: empty.)
        let previous = if migrated {
            self.inherited.take()
        } else {
            self.contents[active].take()
        };
        let reset = match &previous {
            Some(previous) => self.reset_hits(&compiled.fresh_slots(previous)),
            None => Ok(()),
        };
        if let Err(error) = reset.and_then(|()| self.flip(target)) {
            // Nothing changed in what is served: put the record back.
            if migrated {
                self.inherited = previous;
            } else {
                self.contents[active] = previous;
            }
            return Err(error.into());
        }
        let (before, before6) = previous
            .as_ref()
            .map(|p| (&p.ip_rules, &p.ip6_rules))
            .unwrap_or((&EMPTY_IP, &EMPTY_IP6));
        let (added, removed) = added_removed(before, &compiled.ip_rules);
        let (added6, removed6) = added_removed(before6, &compiled.ip6_rules);
        // The set just left still holds `previous`: the next apply's spare.
        if !migrated {
            self.contents[active] = previous;
        }
        self.contents[target as usize] = Some(compiled);
        // A set found diverged at the start is never returned to.
        let served_before = (self.generation > 0 && !migrated && !self.active_diverged)
            .then_some((1 - target, self.generation));
        self.active = target;
        self.active_diverged = false;
        self.generation = generation;
        self.issued = self.issued.max(generation);
        self.previous = served_before;
        self.fallback_at_ns = fallback_at_ns;
        Ok(ApplyReport {
            generation,
            changed: true,
            ip_rules_added: added + added6,
            ip_rules_removed: removed + removed6,
            map_writes: map_writes + 1,
        })
    }

    /// Takes over from `old` (what the maps this program replaces held):
    /// the generation numbering and the rules' hit slots (in this layout),
    /// and every counter — rule hits by kind and index; verdicts (by
    /// interface slot and verdict, as the number of verdicts may differ)
    /// and event accounting when those maps are new too (`copy_verdicts`,
    /// `copy_telemetry`). Nothing reads these maps yet, so the copy is
    /// exact up to this moment.
    pub(super) fn inherit(
        &mut self,
        old: &Predecessor,
        copy_verdicts: bool,
        copy_telemetry: bool,
    ) -> Result<(), DataplaneError> {
        let (old_slots, new_slots) = (old.slots, self.capacity.hit_slots);
        if let Some(contents) = &old.contents {
            let mut inherited = contents.clone();
            let remap = |value: &mut RuleValue| {
                // A slot with no place in this layout is dropped below, with its rule.
                value.slot = new_slots.remap(&old_slots, value.slot).unwrap_or(u32::MAX);
            };
            for value in inherited
                .ip_rules
                .values_mut()
                .chain(inherited.vnet_rules.values_mut())
                .chain(inherited.trusted.values_mut())
                .chain(inherited.ip6_rules.values_mut())
                .chain(inherited.vnet6_rules.values_mut())
                .chain(inherited.trusted6.values_mut())
            {
                remap(value);
            }
            inherited.ip_rules.retain(|_, v| v.slot != u32::MAX);
            inherited.vnet_rules.retain(|_, v| v.slot != u32::MAX);
            inherited.trusted.retain(|_, v| v.slot != u32::MAX);
            inherited.ip6_rules.retain(|_, v| v.slot != u32::MAX);
            inherited.vnet6_rules.retain(|_, v| v.slot != u32::MAX);
            inherited.trusted6.retain(|_, v| v.slot != u32::MAX);
            self.inherited = Some(inherited);
        }
        self.generation = old.generation;
        self.issued = old.issued;
        self.rolled_back_at_start = old.rolled_back_at_start;
        for slot in 0..old_slots.total() {
            let Some(to) = new_slots.remap(&old_slots, slot) else {
                continue;
            };
            let values = old.rule_hits.get(&slot, 0).map_err(map_err(RULE_HITS))?;
            self.rule_hits
                .set(to, values, 0)
                .map_err(map_err(RULE_HITS))?;
        }
        if copy_verdicts {
            copy_verdicts_by_slot(&old.verdicts, &mut self.verdicts)?;
        }
        if copy_telemetry {
            copy_per_cpu(&old.telemetry, &mut self.telemetry, TELEMETRY)?;
        }
        Ok(())
    }

    /// Clears the armed fallback deadline (one config write): the new
    /// generation stays. When the deadline has already passed the kernel
    /// serves the previous generation, and nothing is written.
    pub(super) fn confirm(&mut self) -> Result<Confirmation, DataplaneError> {
        if self.fallback_at_ns == 0 {
            return Ok(Confirmation::NothingPending);
        }
        let mut config = self
            .config
            .get(&self.active, 0)
            .map_err(map_err(POLICY_CONFIG))?;
        if config.fallback_due(clock::kernel_now_ns) {
            return Ok(Confirmation::TooLate);
        }
        config.fallback_at_ns = 0;
        let written = self
            .config
            .set(self.active, config, 0)
            .map_err(map_err(POLICY_CONFIG));
        // The deadline may have passed between the check and the write:
        // programs then read the previous set for a moment. Before that
        // set is written again, its readers are waited out as after a flip.
        self.compiled.flipped();
        written?;
        self.fallback_at_ns = 0;
        Ok(Confirmation::Confirmed)
    }

    /// Makes the set served before the last apply active again, as it was
    /// (nothing is rewritten: the double buffer still holds it — and past
    /// an armed fallback deadline the kernel is serving it already), with
    /// its generation number, and clears the deadline. `None` when there is
    /// nothing to return to: no apply since load over a fresh pin
    /// directory, or the spare set was written since.
    ///
    /// The abandoned set keeps its deadline in its config: it is never
    /// read (the program reads the other set's config only through the
    /// active set's deadline), and the next apply rewrites that config.
    pub(super) fn revert(&mut self) -> Result<Option<Reverted>, DataplaneError> {
        let Some((set, generation)) = self.previous else {
            return Ok(None);
        };
        let deadline = PolicyConfig {
            fallback_at_ns: self.fallback_at_ns,
            ..PolicyConfig::default()
        };
        let by_kernel = deadline.fallback_due(clock::kernel_now_ns);
        self.flip(set)?;
        let reverted = Reverted {
            generation,
            dropped_generation: self.generation,
            by_kernel,
        };
        self.previous = None;
        self.active = set;
        self.generation = generation;
        self.fallback_at_ns = 0;
        Ok(Some(reverted))
    }

    /// Makes `set` the one the program reads: one array write.
    fn flip(&mut self, set: u32) -> Result<(), DataplaneError> {
        let written = self
            .active_index
            .set(0, set, 0)
            .map_err(map_err(ACTIVE_SET));
        // Readers may have seen either index, whether or not the write
        // took: the set flipped away from waits out a grace period.
        self.compiled.flipped();
        written
    }

    /// Makes inactive set `set` hold `new`, writing only what differs from
    /// `old`. The config slot goes last. Returns the writes done.
    fn write_set(
        &mut self,
        set: u32,
        old: Option<&CompiledTables>,
        new: &CompiledTables,
        generation: u64,
        fallback_at_ns: u64,
    ) -> Result<usize, DataplaneError> {
        self.compiled.settle()?;
        let mut writes = self.compiled.write(set, new)?;
        if new.flags & FLAG_LOOKUP_COMPILED != 0 {
            // The table lists the IPv4 entries: the tries hold none.
            let known = std::mem::take(&mut self.ipv4_tries_empty[set as usize]);
            writes += self
                .ip_rules
                .sync(set, known.then_some(&EMPTY_IP), &EMPTY_IP)?;
            writes += self
                .vnet_rules
                .sync(set, known.then_some(&EMPTY_VNET), &EMPTY_VNET)?;
            writes += self
                .trusted
                .sync(set, known.then_some(&EMPTY_IP), &EMPTY_IP)?;
            self.ipv4_tries_empty[set as usize] = true;
        } else {
            self.ipv4_tries_empty[set as usize] = false;
            writes += self
                .ip_rules
                .sync(set, old.map(|o| &o.ip_rules), &new.ip_rules)?;
            writes += self
                .vnet_rules
                .sync(set, old.map(|o| &o.vnet_rules), &new.vnet_rules)?;
            writes += self
                .trusted
                .sync(set, old.map(|o| &o.trusted), &new.trusted)?;
        }
        let ip6 = self
            .ip6
            .as_mut()
            .ok_or(DataplaneError::MissingMap { map: IP6_RULES_0 })?;
        writes += ip6
            .ip_rules
            .sync(set, old.map(|o| &o.ip6_rules), &new.ip6_rules)?;
        writes += ip6
            .vnet_rules
            .sync(set, old.map(|o| &o.vnet6_rules), &new.vnet6_rules)?;
        writes += ip6
            .trusted
            .sync(set, old.map(|o| &o.trusted6), &new.trusted6)?;

        // Every word when the set is unknown (the first apply after a
        // start): one batch, not one syscall per word.
        let base = set * 2 * PORT_WORDS_PER_ROW;
        let (mut keys, mut words) = (Vec::new(), Vec::new());
        for (i, word) in new.port_words.iter().enumerate() {
            if old.map(|o| o.port_words[i]) != Some(*word) {
                keys.push(base + i as u32);
                words.push(*word);
            }
        }
        let key_bytes: Vec<u8> = keys.iter().flat_map(|k| k.to_ne_bytes()).collect();
        let word_bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let fd = raw_fd(self.ports.map());
        batched(fd, &key_bytes, Some(&word_bytes), keys.len(), |i| {
            self.ports
                .set(keys[i], words[i], 0)
                .map_err(map_err(DATA_PLANE_PORTS))
        })?;
        writes += keys.len();

        let config = PolicyConfig {
            flags: new.config_flags(),
            event_cost_ns: new.event_cost_ns,
            generation,
            fallback_at_ns,
        };
        self.config
            .set(set, config, 0)
            .map_err(map_err(POLICY_CONFIG))?;
        Ok(writes + 1)
    }

    /// Verdict totals per interface slot (`ifindex % INTERFACE_SLOTS`),
    /// per-CPU values summed over every possible CPU (not only
    /// the online ones, and not one CPU's slot).
    pub(super) fn verdict_slots(&self) -> Result<Vec<VerdictTotals>, DataplaneError> {
        verdict_slots(&self.verdicts)
    }

    pub(super) fn verdict_totals(&self) -> Result<VerdictTotals, DataplaneError> {
        Ok(sum_slots(&self.verdict_slots()?))
    }

    /// Zeroes hit slots `slots` on every CPU (a slot outside the map is
    /// ignored: its rule simply has no counters), in batches of about 1 MiB
    /// of values: one syscall each, where a full replacement of 100,000
    /// rules would otherwise take 100,000.
    fn reset_hits(&mut self, slots: &[u32]) -> Result<(), DataplaneError> {
        let total = self.capacity.hit_slots.total();
        let slots: Vec<u32> = slots.iter().copied().filter(|s| *s < total).collect();
        if slots.is_empty() {
            return Ok(());
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Pins {
            path: "/sys/devices/system/cpu/possible".into(),
            operation: "read",
            source: e,
        })?;
        // A per-CPU value: one 8-byte-aligned `RuleHits` per possible CPU.
        let value_len = cpus * size_of::<RuleHits>().next_multiple_of(8);
        let per_batch = ((1 << 20) / value_len).max(1);
        let zeros = vec![0u8; per_batch.min(slots.len()) * value_len];
        let fd = raw_fd(self.rule_hits.map());
        for batch in slots.chunks(per_batch) {
            let keys: Vec<u8> = batch.iter().flat_map(|s| s.to_ne_bytes()).collect();
            let values = &zeros[..batch.len() * value_len];
            batched(fd, &keys, Some(values), batch.len(), |i| {
                let zeros = aya::maps::PerCpuValues::try_from(vec![RuleHits::default(); cpus])
                    .map_err(|e| DataplaneError::Map {
                        map: RULE_HITS,
                        source: MapError::from(e),
                    })?;
                self.rule_hits
                    .set(batch[i], zeros, 0)
                    .map_err(map_err(RULE_HITS))
            })?;
        }
        Ok(())
    }

    pub(super) fn rule_hits(&self) -> Result<BTreeMap<u32, RuleHitTotals>, DataplaneError> {
        let clock = MonotonicClock::now();
        let mut totals = BTreeMap::new();
        for slot in 0..self.capacity.hit_slots.total() {
            let per_cpu = self.rule_hits.get(&slot, 0).map_err(map_err(RULE_HITS))?;
            let (mut packets, mut bytes, mut last) = (0u64, 0u64, 0u64);
            for hits in per_cpu.iter() {
                packets += hits.packets;
                bytes += hits.bytes;
                last = last.max(hits.last_hit_ns);
            }
            if packets > 0 {
                let last_hit = (last > 0).then(|| clock.to_wall(last));
                totals.insert(
                    slot,
                    RuleHitTotals {
                        packets,
                        bytes,
                        last_hit,
                    },
                );
            }
        }
        Ok(totals)
    }

    pub(super) fn event_totals(&self) -> Result<EventTotals, DataplaneError> {
        event_totals(&self.telemetry)
    }

    /// Refuses `compiled` when its compiled table (for the lookup it is
    /// compiled for) would not fit the spare set's array. Writes nothing.
    pub(super) fn check_compiled_room(
        &self,
        compiled: &CompiledTables,
    ) -> Result<(), DataplaneError> {
        if self.compiled_room_is_proven(compiled) {
            return Ok(());
        }
        self.compiled.image(1 - self.active, compiled).map(drop)
    }

    /// Whether `compiled` fits the compiled array without building it:
    /// always under the trie lookup; under the compiled lookup when the
    /// bound of its own entries ([`firewall_common::cpt::cells_bound`])
    /// is within the array. `false` says only that the table must be
    /// built to tell (a table near its room).
    fn compiled_room_is_proven(&self, compiled: &CompiledTables) -> bool {
        if compiled.flags & FLAG_LOOKUP_COMPILED == 0 {
            return true;
        }
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let scopes: std::collections::BTreeSet<(u32, u32)> = compiled
            .vnet_rules
            .keys()
            .map(|key| (key.ifindex, key.vlan))
            .collect();
        let bound = firewall_common::cpt::cells_bound(
            count(compiled.ip_rules.len() + compiled.trusted.len() + compiled.vnet_rules.len()),
            count(compiled.vnet_rules.len()),
            count(scopes.len()),
            self.capacity.hit_slots.ip6(0),
        );
        bound <= u64::from(self.capacity.compiled_cells())
    }

    /// Whether [`Tables::apply`] of `compiled` (without a fallback) can be
    /// refused only by the kernel failing a map write: no fallback is
    /// pending, the tables fit the maps, and the compiled table's room is
    /// proven without building it.
    pub(super) fn refusal_is_ruled_out(&self, compiled: &CompiledTables) -> bool {
        self.fallback_at_ns == 0
            && self.capacity.check(compiled).is_ok()
            && self.compiled_room_is_proven(compiled)
    }

    pub(super) fn capacity(&self) -> &Capacity {
        &self.capacity
    }

    pub(super) fn hit_slots(&self) -> HitSlots {
        self.capacity.hit_slots
    }

    /// What the active set holds (empty when unknown); after a migration,
    /// until the first apply, what the replaced maps served (for slots).
    pub(super) fn active_contents(&self) -> std::borrow::Cow<'_, CompiledTables> {
        match self
            .inherited
            .as_ref()
            .or(self.contents[self.active as usize].as_ref())
        {
            Some(contents) => std::borrow::Cow::Borrowed(contents),
            None => std::borrow::Cow::Owned(CompiledTables::empty()),
        }
    }

    /// The active set's IP rules as the kernel holds them: network → id.
    pub(super) fn active_ip_rules(&self) -> Result<BTreeMap<Ipv4Net, u32>, DataplaneError> {
        Ok(self
            .active_ipv4()?
            .ip_rules
            .into_iter()
            .map(|(k, v)| (Ipv4Net::from(k), v.slot))
            .collect())
    }

    /// The active set's virtual-network entries as the kernel holds them.
    pub(super) fn active_vnet_rules(&self) -> Result<BTreeMap<VnetPrefixKey, u32>, DataplaneError> {
        Ok(self
            .active_ipv4()?
            .vnet_rules
            .into_iter()
            .map(|(k, v)| (k, v.slot))
            .collect())
    }

    /// The active set's IPv6 IP rules as the kernel holds them: network →
    /// hit slot.
    pub(super) fn active_ip6_rules(&self) -> Result<BTreeMap<Ipv6Net, u32>, DataplaneError> {
        let Some(ip6) = &self.ip6 else {
            return Ok(BTreeMap::new());
        };
        Ok(ip6
            .ip_rules
            .read(self.active)?
            .into_iter()
            .map(|(k, v)| (Ipv6Net::from(k), v.slot))
            .collect())
    }

    /// The active set's IPv6 virtual-network entries as the kernel holds
    /// them.
    pub(super) fn active_vnet6_rules(
        &self,
    ) -> Result<BTreeMap<Vnet6PrefixKey, u32>, DataplaneError> {
        let Some(ip6) = &self.ip6 else {
            return Ok(BTreeMap::new());
        };
        Ok(ip6
            .vnet_rules
            .read(self.active)?
            .into_iter()
            .map(|(k, v)| (k, v.slot))
            .collect())
    }

    /// The active set's IPv6 trusted-service entries as the kernel holds
    /// them.
    pub(super) fn active_trusted6(&self) -> Result<BTreeMap<Ipv6Net, u32>, DataplaneError> {
        let Some(ip6) = &self.ip6 else {
            return Ok(BTreeMap::new());
        };
        Ok(ip6
            .trusted
            .read(self.active)?
            .into_iter()
            .map(|(k, v)| (Ipv6Net::from(k), v.slot))
            .collect())
    }

    /// The active set's trusted-service entries as the kernel holds them.
    pub(super) fn active_trusted(&self) -> Result<BTreeMap<Ipv4Net, u32>, DataplaneError> {
        Ok(self
            .active_ipv4()?
            .trusted
            .into_iter()
            .map(|(k, v)| (Ipv4Net::from(k), v.slot))
            .collect())
    }
}

/// What the maps a migration replaces held, as far as this build can read
/// them from their pins (see `migrate`).
pub(super) struct Predecessor {
    /// Their hit-slot layout.
    slots: HitSlots,
    /// The generation they served.
    generation: u64,
    /// The highest generation they were ever written for.
    issued: u64,
    /// Their active set's contents, slots in their layout; `None` when
    /// the tries could not be read.
    contents: Option<CompiledTables>,
    /// An unconfirmed apply rolled back while reading them.
    rolled_back_at_start: Option<Reverted>,
    rule_hits: PerCpuArray<MapData, RuleHits>,
    verdicts: PerCpuArray<MapData, u64>,
    telemetry: PerCpuArray<MapData, u64>,
}

/// A table-set config as releases before kernel-enforced deadlines wrote
/// it: `flags: u32, event_cost_ns: u32, generation: u64` (16 bytes).
type LegacyConfig = [u64; 2];

impl Predecessor {
    /// Reads the pinned maps of `capacity` under `dir`: with this build's
    /// types when they fit; else, for an upgrade from a release whose trie
    /// values were bare `u32` hit slots and whose config had no deadline,
    /// with those types — the counters (whose layout did not change) carry
    /// over either way.
    pub(super) fn read(dir: &PinDir, capacity: Capacity) -> Result<Self, DataplaneError> {
        if let Ok(tables) = Tables::open_pinned(dir, capacity) {
            return Ok(Predecessor {
                slots: capacity.hit_slots,
                generation: tables.generation,
                issued: tables.issued,
                contents: Some(tables.active_contents().into_owned()),
                rolled_back_at_start: tables.rolled_back_at_start,
                rule_hits: tables.rule_hits,
                verdicts: tables.verdicts,
                telemetry: tables.telemetry,
            });
        }
        let mut maps = MapSource::Pinned(dir);
        let active = maps
            .open::<Array<MapData, u32>>(ACTIVE_SET)?
            .get(&0, 0)
            .map_err(map_err(ACTIVE_SET))?
            & 1;
        let config = maps
            .open::<Array<MapData, LegacyConfig>>(POLICY_CONFIG)
            .and_then(|c| c.get(&active, 0).map_err(map_err(POLICY_CONFIG)));
        let names = |pair: [&'static str; 2]| pair[active as usize];
        // The rules as slots (only the slots are inherited, so the port
        // bitmap is not read); `None` when any of it cannot be read.
        let mut contents = || -> Option<CompiledTables> {
            let config = config.as_ref().ok()?;
            Some(CompiledTables {
                flags: CompiledTables::flags_of_config(config[0] as u32),
                event_cost_ns: (config[0] >> 32) as u32,
                port_words: vec![0; 2 * PORT_WORDS_PER_ROW as usize],
                ip_rules: legacy_slots(maps.open(names([IP_RULES_0, IP_RULES_1])).ok()?)?,
                vnet_rules: legacy_slots(maps.open(names([VNET_RULES_0, VNET_RULES_1])).ok()?)?,
                trusted: legacy_slots(maps.open(names([TRUSTED_0, TRUSTED_1])).ok()?)?,
                // That release had no IPv6 rules.
                ip6_rules: BTreeMap::new(),
                vnet6_rules: BTreeMap::new(),
                trusted6: BTreeMap::new(),
            })
        };
        let contents = contents();
        Ok(Predecessor {
            slots: capacity.hit_slots,
            generation: config.as_ref().map_or(0, |c| c[1]),
            issued: config.as_ref().map_or(0, |c| c[1]),
            contents,
            rolled_back_at_start: None,
            rule_hits: maps.open(RULE_HITS)?,
            verdicts: maps.open(VERDICT_COUNTERS)?,
            telemetry: maps.open(TELEMETRY)?,
        })
    }

    /// The generation the replaced maps served.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether their rules (and so their hit slots) could be read.
    pub(super) fn has_rules(&self) -> bool {
        self.contents.is_some()
    }
}

/// A trie whose values are bare `u32` hit slots (the release before
/// [`RuleValue`] carried an expiry), as entries of this build.
fn legacy_slots<K: TrieKey>(
    trie: LpmTrie<MapData, K::Data, u32>,
) -> Option<BTreeMap<K, RuleValue>> {
    trie.iter()
        .map(|entry| entry.map(|(key, slot)| (K::from_trie(key), RuleValue::new(slot))))
        .collect::<Result<_, _>>()
        .ok()
}

/// Copies every slot of `from` (per CPU) into the same slot of `to`, as far
/// as both reach.
fn copy_per_cpu(
    from: &PerCpuArray<MapData, u64>,
    to: &mut PerCpuArray<MapData, u64>,
    name: &'static str,
) -> Result<(), DataplaneError> {
    let slots = from.len().min(to.len());
    for slot in 0..slots {
        let values = from.get(&slot, 0).map_err(map_err(name))?;
        to.set(slot, values, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// Copies every verdict counter of `from` (per CPU) — a map of another
/// build, whose rows may hold fewer or more verdicts — into the same
/// (interface slot, verdict) of `to` ([`remap_verdict_slot`]). A counter
/// of a verdict this build does not know is left behind.
fn copy_verdicts_by_slot(
    from: &PerCpuArray<MapData, u64>,
    to: &mut PerCpuArray<MapData, u64>,
) -> Result<(), DataplaneError> {
    let old_len = from.len();
    if !old_len.is_multiple_of(INTERFACE_SLOTS) {
        tracing::warn!(
            entries = old_len,
            "the replaced verdict counters are not laid out per interface slot: they start from zero"
        );
        return Ok(());
    }
    for index in 0..old_len {
        let Some(to_index) = remap_verdict_slot(old_len, index) else {
            continue;
        };
        let values = from.get(&index, 0).map_err(map_err(VERDICT_COUNTERS))?;
        to.set(to_index, values, 0)
            .map_err(map_err(VERDICT_COUNTERS))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apply_counts_the_keys_it_adds_and_removes_whatever_their_values() {
        let map = |keys: &[u32], value: u8| -> BTreeMap<u32, u8> {
            keys.iter().map(|&k| (k, value)).collect()
        };
        let old = map(&[1, 3, 5, 7], 0);
        assert_eq!(added_removed(&old, &map(&[0, 3, 4, 7, 9], 1)), (3, 2));
        assert_eq!(added_removed(&old, &old), (0, 0));
        assert_eq!(added_removed(&old, &BTreeMap::new()), (0, 4));
        assert_eq!(added_removed(&BTreeMap::new(), &old), (4, 0));
    }

    #[test]
    fn what_a_batch_leaves_undone_is_done_one_element_at_a_time() {
        // No such map: the kernel does none of the batch (EBADF), so every
        // element goes through `single`, in order, and its error is the one
        // reported.
        let keys = [1u32, 2, 3].map(u32::to_ne_bytes).concat();
        let mut done = Vec::new();
        batched(-1, &keys, None, 3, |i| {
            done.push(i);
            Ok(())
        })
        .expect("every element done singly");
        assert_eq!(done, [0, 1, 2]);
        let refused = batched(-1, &keys, Some(&keys), 3, |i| match i {
            1 => Err(DataplaneError::MissingMap { map: RULE_HITS }),
            _ => Ok(()),
        });
        assert!(matches!(refused, Err(DataplaneError::MissingMap { .. })));
    }
}
