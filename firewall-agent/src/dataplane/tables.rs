//! The maps of both table sets, what the agent knows each set holds, and
//! the double-buffered apply.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{Array, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key},
};
use firewall_common::{
    ACTIVE_SET, DATA_PLANE_PORTS, IP_RULES_0, IP_RULES_1, Ipv4Key, POLICY_CONFIG, PORT_WORDS_PER_ROW,
    PolicyConfig, RuleValue, TABLE_SETS, VERDICT_COUNTERS, Verdict,
};
use ipnet::Ipv4Net;
use serde::Serialize;

use super::{Capacity, DataplaneError, VerdictTotals};
use crate::compile::{CompiledTables, PrefixKey};

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

/// The typed maps plus the agent's record of each set's contents.
pub(super) struct Tables {
    active_index: Array<MapData, u32>,
    config: Array<MapData, PolicyConfig>,
    ports: Array<MapData, u32>,
    ip_rules: [LpmTrie<MapData, Ipv4Key, RuleValue>; TABLE_SETS as usize],
    verdicts: PerCpuArray<MapData, u64>,
    capacity: Capacity,
    /// The set the program reads.
    active: u32,
    /// What each set holds; `None` when unknown (a write failed half-way),
    /// in which case the next apply rewrites that set from scratch.
    contents: [Option<CompiledTables>; TABLE_SETS as usize],
    /// The generation the active set was written for (0: none yet).
    generation: u64,
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
        let empty = CompiledTables {
            flags: 0,
            port_words: vec![0; 2 * PORT_WORDS_PER_ROW as usize],
            ip_rules: BTreeMap::new(),
        };
        Ok(Tables {
            active_index: take(ebpf, ACTIVE_SET)?,
            config: take(ebpf, POLICY_CONFIG)?,
            ports: take(ebpf, DATA_PLANE_PORTS)?,
            ip_rules: [take(ebpf, IP_RULES_0)?, take(ebpf, IP_RULES_1)?],
            verdicts: take(ebpf, VERDICT_COUNTERS)?,
            capacity,
            active: 0,
            contents: [Some(empty.clone()), Some(empty)],
            generation: 0,
        })
    }

    pub(super) fn apply(
        &mut self,
        compiled: &CompiledTables,
        generation: u64,
    ) -> Result<ApplyReport, DataplaneError> {
        if compiled.ip_rules.len() > self.capacity.ip_rules as usize {
            return Err(DataplaneError::Capacity {
                rules: compiled.ip_rules.len(),
                capacity: self.capacity.ip_rules,
            });
        }
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
        // Until the write completes the set's contents are unknown.
        let known = self.contents[target as usize].take();
        let map_writes = self.write_set(target, known.as_ref(), compiled, generation)?;
        self.active_index
            .set(0, target, 0)
            .map_err(map_err(ACTIVE_SET))?;
        self.contents[target as usize] = Some(compiled.clone());
        self.active = target;
        self.generation = generation;

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

    /// Makes inactive set `set` hold `new`, writing only what differs from
    /// `old` (or everything when `old` is unknown). Returns the writes done.
    fn write_set(
        &mut self,
        set: u32,
        old: Option<&CompiledTables>,
        new: &CompiledTables,
        generation: u64,
    ) -> Result<usize, DataplaneError> {
        let mut writes = 0;
        let trie_name = if set == 0 { IP_RULES_0 } else { IP_RULES_1 };
        let trie = &mut self.ip_rules[set as usize];

        // Remove first: the trie never holds more than max(old, new) entries.
        let stale: Vec<PrefixKey> = match old {
            Some(old) => old
                .ip_rules
                .keys()
                .filter(|k| !new.ip_rules.contains_key(k))
                .copied()
                .collect(),
            None => trie
                .keys()
                .map(|k| k.map(from_trie_key))
                .collect::<Result<Vec<_>, _>>()
                .map_err(map_err(trie_name))?
                .into_iter()
                .filter(|k| !new.ip_rules.contains_key(k))
                .collect(),
        };
        for key in stale {
            trie.remove(&to_trie_key(key)).map_err(map_err(trie_name))?;
            writes += 1;
        }
        for (key, value) in &new.ip_rules {
            if old.and_then(|o| o.ip_rules.get(key)) != Some(value) {
                trie.insert(&to_trie_key(*key), *value, 0)
                    .map_err(map_err(trie_name))?;
                writes += 1;
            }
        }

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
            flags: new.flags,
            _pad: 0,
            generation,
        };
        self.config
            .set(set, config, 0)
            .map_err(map_err(POLICY_CONFIG))?;
        Ok(writes + 1)
    }

    pub(super) fn verdict_totals(&self) -> Result<VerdictTotals, DataplaneError> {
        let mut totals = [0u64; Verdict::COUNT];
        for verdict in Verdict::ALL {
            let per_cpu = self
                .verdicts
                .get(&verdict.index(), 0)
                .map_err(map_err(VERDICT_COUNTERS))?;
            // PerCpuValues holds one value per *possible* CPU (case K4).
            totals[verdict.index() as usize] = per_cpu.iter().sum();
        }
        Ok(totals)
    }

    pub(super) fn active_ip_rules(&self) -> Result<BTreeMap<Ipv4Net, u32>, DataplaneError> {
        let name = if self.active == 0 { IP_RULES_0 } else { IP_RULES_1 };
        self.ip_rules[self.active as usize]
            .iter()
            .map(|entry| entry.map(|(k, v)| (Ipv4Net::from(from_trie_key(k)), v)))
            .collect::<Result<_, _>>()
            .map_err(map_err(name))
    }
}

fn to_trie_key(key: PrefixKey) -> Key<Ipv4Key> {
    Key::new(key.prefix_len, key.octets)
}

fn from_trie_key(key: Key<Ipv4Key>) -> PrefixKey {
    PrefixKey {
        prefix_len: key.prefix_len(),
        octets: key.data(),
    }
}
