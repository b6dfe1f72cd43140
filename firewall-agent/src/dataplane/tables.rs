//! The maps of both table sets, what the agent knows each set holds, and
//! the double-buffered apply.

use std::collections::BTreeMap;

use aya::{
    Ebpf, Pod,
    maps::{Array, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key},
};
use firewall_common::{
    ACTIVE_SET, DATA_PLANE_PORTS, FLAG_HAS_VLAN_VNET, FLAG_HAS_VNET, FLAG_VALID, HitSlots, IP_RULES_0, IP_RULES_1, Ipv4Key,
    POLICY_CONFIG, PORT_WORDS_PER_ROW, PolicyConfig, RULE_HITS, RuleHits, RuleValue, TABLE_SETS,
    TELEMETRY, TELEMETRY_EVENTS_RATE_LIMITED, TELEMETRY_EVENTS_RING_FULL, TELEMETRY_EVENTS_SENT,
    TRUSTED_0, TRUSTED_1, VERDICT_COUNTERS, VNET_ENDPOINT_BITS, VNET_RULES_0, VNET_RULES_1,
    Verdict, VnetKey, INTERFACE_SLOTS,
};
use ipnet::Ipv4Net;
use serde::Serialize;

use super::{Capacity, DataplaneError, VerdictTotals};
use crate::compile::{CompiledTables, PrefixKey, VnetPrefixKey};

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// The generation the kernel now serves.
    pub generation: u64,
    /// False when the policy equalled the active one: nothing was written.
    pub changed: bool,
    /// IP rules in the new policy and not in the previous one.
    pub ip_rules_added: usize,
    /// IP rules in the previous policy and not in the new one.
    pub ip_rules_removed: usize,
    /// Map element writes and deletes performed.
    pub map_writes: usize,
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

fn serialize_time<S: serde::Serializer>(t: &Option<std::time::SystemTime>, s: S) -> Result<S::Ok, S::Error> {
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

/// The two tries (one per table set) of one rule kind.
struct TriePair<K: TrieKey> {
    names: [&'static str; TABLE_SETS as usize],
    tries: [LpmTrie<MapData, K::Data, RuleValue>; TABLE_SETS as usize],
}

impl<K: TrieKey> TriePair<K> {
    fn take(ebpf: &mut Ebpf, names: [&'static str; 2]) -> Result<Self, DataplaneError> {
        Ok(TriePair {
            tries: [take(ebpf, names[0])?, take(ebpf, names[1])?],
            names,
        })
    }

    /// Makes set `set`'s trie hold `new`, writing only what differs from
    /// `old` (or, when `old` is unknown, from what the kernel holds).
    /// Removes first, so the trie never holds more than max(old, new).
    fn sync(
        &mut self,
        set: u32,
        old: Option<&BTreeMap<K, RuleValue>>,
        new: &BTreeMap<K, RuleValue>,
    ) -> Result<usize, DataplaneError> {
        let name = self.names[set as usize];
        let trie = &mut self.tries[set as usize];
        let stale: Vec<K> = match old {
            Some(old) => old.keys().filter(|k| !new.contains_key(k)).copied().collect(),
            None => trie
                .keys()
                .map(|k| k.map(K::from_trie))
                .collect::<Result<Vec<K>, _>>()
                .map_err(map_err(name))?
                .into_iter()
                .filter(|k| !new.contains_key(k))
                .collect(),
        };
        let mut writes = 0;
        for key in stale {
            trie.remove(&key.to_trie()).map_err(map_err(name))?;
            writes += 1;
        }
        for (key, value) in new {
            if old.and_then(|o| o.get(key)) != Some(value) {
                trie.insert(&key.to_trie(), *value, 0).map_err(map_err(name))?;
                writes += 1;
            }
        }
        Ok(writes)
    }

    fn read(&self, set: u32) -> Result<BTreeMap<K, RuleValue>, DataplaneError> {
        self.tries[set as usize]
            .iter()
            .map(|entry| entry.map(|(k, v)| (K::from_trie(k), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err(self.names[set as usize]))
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
    verdicts: PerCpuArray<MapData, u64>,
    rule_hits: PerCpuArray<MapData, RuleHits>,
    telemetry: PerCpuArray<MapData, u64>,
    capacity: Capacity,
    /// The set the program reads.
    active: u32,
    /// What each set holds; `None` when unknown (a write failed half-way),
    /// in which case the next apply rewrites that set from what the kernel
    /// holds.
    contents: [Option<CompiledTables>; TABLE_SETS as usize],
    /// The generation the active set was written for (0: none yet).
    generation: u64,
    /// The set and generation served before the last flip, while that set
    /// is untouched: what [`Tables::revert`] returns to.
    previous: Option<(u32, u64)>,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DataplaneError::MissingMap { map: name })?;
    T::try_from(map).map_err(|source| DataplaneError::Map { map: name, source })
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

impl Tables {
    /// Takes the maps out of a freshly loaded object (all zero: no set is
    /// valid, set 0 is active).
    pub(super) fn take(ebpf: &mut Ebpf, capacity: Capacity) -> Result<Self, DataplaneError> {
        Ok(Tables {
            active_index: take(ebpf, ACTIVE_SET)?,
            config: take(ebpf, POLICY_CONFIG)?,
            ports: take(ebpf, DATA_PLANE_PORTS)?,
            ip_rules: TriePair::take(ebpf, [IP_RULES_0, IP_RULES_1])?,
            vnet_rules: TriePair::take(ebpf, [VNET_RULES_0, VNET_RULES_1])?,
            trusted: TriePair::take(ebpf, [TRUSTED_0, TRUSTED_1])?,
            verdicts: take(ebpf, VERDICT_COUNTERS)?,
            rule_hits: take(ebpf, RULE_HITS)?,
            telemetry: take(ebpf, TELEMETRY)?,
            capacity,
            active: 0,
            contents: [Some(CompiledTables::empty()), Some(CompiledTables::empty())],
            generation: 0,
            previous: None,
        })
    }

    /// Takes the maps of a program loaded over pinned maps: whatever a
    /// previous agent left — the active set, its contents and generation —
    /// is read back from the kernel, so the next apply is a diff and the
    /// counters keep counting.
    pub(super) fn adopt(ebpf: &mut Ebpf, capacity: Capacity) -> Result<Self, DataplaneError> {
        let mut tables = Self::take(ebpf, capacity)?;
        let active = tables.active_index.get(&0, 0).map_err(map_err(ACTIVE_SET))? & 1;
        let config = tables.config.get(&active, 0).map_err(map_err(POLICY_CONFIG))?;
        if config.flags & FLAG_VALID == 0 {
            return Ok(tables); // fresh maps: nothing to adopt
        }
        let mut port_words = Vec::with_capacity(2 * PORT_WORDS_PER_ROW as usize);
        let base = active * 2 * PORT_WORDS_PER_ROW;
        for i in 0..2 * PORT_WORDS_PER_ROW {
            port_words.push(tables.ports.get(&(base + i), 0).map_err(map_err(DATA_PLANE_PORTS))?);
        }
        let contents = CompiledTables {
            flags: config.flags & !(FLAG_HAS_VNET | FLAG_HAS_VLAN_VNET),
            event_cost_ns: config.event_cost_ns,
            port_words,
            ip_rules: tables.ip_rules.read(active)?,
            vnet_rules: tables.vnet_rules.read(active)?,
            trusted: tables.trusted.read(active)?,
        };
        tables.active = active;
        tables.generation = config.generation;
        // The inactive set is unknown: the next apply rewrites it from what
        // the kernel holds.
        tables.contents = [None, None];
        tables.contents[active as usize] = Some(contents);
        Ok(tables)
    }

    /// The generation the active set was written for (0: none yet).
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    pub(super) fn apply(
        &mut self,
        compiled: &CompiledTables,
        generation: u64,
    ) -> Result<ApplyReport, DataplaneError> {
        self.capacity.check(compiled)?;
        let previous = self.contents[self.active as usize].clone();
        if previous.as_ref() == Some(compiled) {
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
        let map_writes = self.write_set(target, known.as_ref(), compiled, generation)?;
        // Counters of slots that change owner start from zero — only once
        // the new set is complete, so a refused write changes no counter.
        if let Some(previous) = &previous {
            for slot in compiled.fresh_slots(previous) {
                self.reset_hits(slot)?;
            }
        }
        self.flip(target)?;
        self.contents[target as usize] = Some(compiled.clone());
        let served_before = (self.generation > 0).then_some((1 - target, self.generation));
        self.active = target;
        self.generation = generation;
        self.previous = served_before;

        let before = previous.map(|p| p.ip_rules).unwrap_or_default();
        Ok(ApplyReport {
            generation,
            changed: true,
            ip_rules_added: compiled
                .ip_rules
                .keys()
                .filter(|k| !before.contains_key(k))
                .count(),
            ip_rules_removed: before
                .keys()
                .filter(|k| !compiled.ip_rules.contains_key(k))
                .count(),
            map_writes: map_writes + 1,
        })
    }

    /// Makes the set served before the last apply active again, as it was
    /// (nothing is rewritten: the double buffer still holds it), and
    /// returns its generation. `None` when there is nothing to return to:
    /// no apply since load over a fresh pin directory, or the spare set
    /// was written since.
    pub(super) fn revert(&mut self) -> Result<Option<u64>, DataplaneError> {
        let Some((set, generation)) = self.previous else {
            return Ok(None);
        };
        self.flip(set)?;
        self.previous = None;
        self.active = set;
        self.generation = generation;
        Ok(Some(generation))
    }

    /// Makes `set` the one the program reads: one array write.
    fn flip(&mut self, set: u32) -> Result<(), DataplaneError> {
        self.active_index.set(0, set, 0).map_err(map_err(ACTIVE_SET))
    }

    /// Makes inactive set `set` hold `new`, writing only what differs from
    /// `old`. The config slot goes last. Returns the writes done.
    fn write_set(
        &mut self,
        set: u32,
        old: Option<&CompiledTables>,
        new: &CompiledTables,
        generation: u64,
    ) -> Result<usize, DataplaneError> {
        let mut writes = 0;
        writes += self.ip_rules.sync(set, old.map(|o| &o.ip_rules), &new.ip_rules)?;
        writes += self.vnet_rules.sync(set, old.map(|o| &o.vnet_rules), &new.vnet_rules)?;
        writes += self.trusted.sync(set, old.map(|o| &o.trusted), &new.trusted)?;

        let base = set * 2 * PORT_WORDS_PER_ROW;
        for (i, word) in new.port_words.iter().enumerate() {
            if old.map(|o| o.port_words[i]) != Some(*word) {
                self.ports
                    .set(base + i as u32, *word, 0)
                    .map_err(map_err(DATA_PLANE_PORTS))?;
                writes += 1;
            }
        }

        let config = PolicyConfig {
            flags: new.flags | lookup_hints(new),
            event_cost_ns: new.event_cost_ns,
            generation,
        };
        self.config
            .set(set, config, 0)
            .map_err(map_err(POLICY_CONFIG))?;
        Ok(writes + 1)
    }

    /// Verdict totals per interface slot (`ifindex % INTERFACE_SLOTS`),
    /// per-CPU values summed over every possible CPU (case K4).
    pub(super) fn verdict_slots(&self) -> Result<Vec<VerdictTotals>, DataplaneError> {
        let mut slots = vec![[0u64; Verdict::COUNT]; INTERFACE_SLOTS as usize];
        for (index, per_cpu) in self.verdicts.iter().enumerate() {
            let per_cpu = per_cpu.map_err(map_err(VERDICT_COUNTERS))?;
            let (interface, verdict) = (index / Verdict::COUNT, index % Verdict::COUNT);
            if let Some(row) = slots.get_mut(interface) {
                row[verdict] = per_cpu.iter().sum();
            }
        }
        Ok(slots)
    }

    pub(super) fn verdict_totals(&self) -> Result<VerdictTotals, DataplaneError> {
        let mut totals = [0u64; Verdict::COUNT];
        for row in self.verdict_slots()? {
            for (total, value) in totals.iter_mut().zip(row) {
                *total += value;
            }
        }
        Ok(totals)
    }

    /// Zeroes one hit slot on every CPU (a slot outside the map is ignored:
    /// its rule simply has no counters).
    fn reset_hits(&mut self, slot: u32) -> Result<(), DataplaneError> {
        if slot >= self.capacity.hit_slots.total() {
            return Ok(());
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Pins {
            path: "/sys/devices/system/cpu/possible".into(),
            operation: "read",
            source: e,
        })?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![RuleHits::default(); cpus])
            .map_err(|e| DataplaneError::Map { map: RULE_HITS, source: aya::maps::MapError::from(e) })?;
        self.rule_hits.set(slot, zeros, 0).map_err(map_err(RULE_HITS))
    }

    pub(super) fn rule_hits(&self) -> Result<BTreeMap<u32, RuleHitTotals>, DataplaneError> {
        let boot_offset = monotonic_to_wall();
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
                let last_hit = (last > 0)
                    .then(|| boot_offset.map(|o| o + std::time::Duration::from_nanos(last)))
                    .flatten();
                totals.insert(slot, RuleHitTotals { packets, bytes, last_hit });
            }
        }
        Ok(totals)
    }

    pub(super) fn event_totals(&self) -> Result<EventTotals, DataplaneError> {
        let sum = |slot: u32| -> Result<u64, DataplaneError> {
            Ok(self
                .telemetry
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

    pub(super) fn capacity(&self) -> &Capacity {
        &self.capacity
    }

    pub(super) fn hit_slots(&self) -> HitSlots {
        self.capacity.hit_slots
    }

    /// What the active set holds (empty when unknown).
    pub(super) fn active_contents(&self) -> CompiledTables {
        self.contents[self.active as usize]
            .clone()
            .unwrap_or_else(CompiledTables::empty)
    }

    /// The active set's IP rules as the kernel holds them: network → id.
    pub(super) fn active_ip_rules(&self) -> Result<BTreeMap<Ipv4Net, u32>, DataplaneError> {
        Ok(self
            .ip_rules
            .read(self.active)?
            .into_iter()
            .map(|(k, v)| (Ipv4Net::from(k), v))
            .collect())
    }

    /// The active set's virtual-network entries as the kernel holds them.
    pub(super) fn active_vnet_rules(&self) -> Result<BTreeMap<VnetPrefixKey, u32>, DataplaneError> {
        self.vnet_rules.read(self.active)
    }

    /// The active set's trusted-service entries as the kernel holds them.
    pub(super) fn active_trusted(&self) -> Result<BTreeMap<Ipv4Net, u32>, DataplaneError> {
        Ok(self
            .trusted
            .read(self.active)?
            .into_iter()
            .map(|(k, v)| (Ipv4Net::from(k), v))
            .collect())
    }
}

/// Flags that only let the program skip lookups that cannot match: no
/// subnet entry at all, or none bound to a VLAN. Derived from the contents
/// written, so they can never disagree with them.
fn lookup_hints(tables: &CompiledTables) -> u32 {
    let mut hints = 0;
    if !tables.vnet_rules.is_empty() {
        hints |= FLAG_HAS_VNET;
    }
    if tables.vnet_rules.keys().any(|k| k.vlan != firewall_common::VLAN_ANY) {
        hints |= FLAG_HAS_VLAN_VNET;
    }
    hints
}

/// The wall-clock time of CLOCK_MONOTONIC's zero (what `bpf_ktime_get_ns`
/// counts from), so kernel timestamps can be shown as dates.
pub(crate) fn monotonic_to_wall() -> Option<std::time::SystemTime> {
    let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let mono = std::time::Duration::new(mono.tv_sec() as u64, mono.tv_nsec() as u32);
    std::time::SystemTime::now().checked_sub(mono)
}
