//! The shape of every map of the program, stated once: name, BPF map type,
//! key and value sizes in bytes, entries as the object declares them, map
//! flags, and which load-time setting (if any) resizes it. The XDP program
//! declares its maps with these entry counts, the agent checks pinned maps
//! against these shapes (a map whose shape changed is recreated, and its
//! counters lost) and resizes the maps marked [`Sizing`] before load; a
//! test in the agent parses the object it embeds and compares every map
//! with [`MAPS`].

use core::mem::size_of;

use crate::maps::*;

/// A BPF map type, numbered as the kernel's `enum bpf_map_type`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_ARRAY`.
    Array = 2,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
    PerCpuArray = 6,
    /// `BPF_MAP_TYPE_LRU_HASH`.
    LruHash = 9,
    /// `BPF_MAP_TYPE_LPM_TRIE`.
    LpmTrie = 11,
    /// `BPF_MAP_TYPE_RINGBUF`.
    RingBuf = 27,
}

/// Where a map's number of entries comes from at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizing {
    /// As declared ([`MapSpec::max_entries`]).
    Fixed,
    /// Each IP-rule trie: the policy's `limits.ip_rules`.
    IpRules,
    /// Each IPv6 IP-rule trie: the policy's `limits.ipv6_rules`.
    Ip6Rules,
    /// Each virtual-network trie: the agent's subnet-entry cap.
    VnetEntries,
    /// Each trusted-services trie: the agent's trusted-prefix cap.
    TrustedEntries,
    /// The per-rule hit counters: [`HitSlots::total`].
    HitSlots,
    /// Each compiled prefix table: [`crate::cpt::cells_bound`] of the
    /// agent's capacity.
    CompiledCells,
}

/// `BPF_F_NO_PREALLOC`: entries are allocated when inserted (LPM tries
/// require it).
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// One map's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// The map's name in the object and its pin's file name.
    pub name: &'static str,
    /// Its type.
    pub kind: MapKind,
    /// Key size in bytes (an LPM trie's includes the 4-byte prefix length;
    /// 0 for a ring buffer).
    pub key_size: u32,
    /// Value size in bytes (0 for a ring buffer).
    pub value_size: u32,
    /// Entries as the object declares them (for a ring buffer: its size in
    /// bytes); a map with a [`Sizing`] other than `Fixed` is resized to the
    /// agent's capacity before load.
    pub max_entries: u32,
    /// `BPF_F_*` map flags.
    pub flags: u32,
    /// What sets its entries at load time.
    pub sizing: Sizing,
    /// Whether the map is pinned and carried over to the next program
    /// (rules, counters); `false` for a map each loaded program owns
    /// (the aya-log ring buffer), which is neither pinned, nor part of the
    /// pin-shape check, nor shared in a migration.
    pub pinned: bool,
}

const fn size<T>() -> u32 {
    size_of::<T>() as u32
}

/// An LPM trie key: the prefix length (u32) then the data.
const fn lpm_key<T>() -> u32 {
    size::<u32>() + size::<T>()
}

const fn array(name: &'static str, value_size: u32, max_entries: u32) -> MapSpec {
    MapSpec {
        name,
        kind: MapKind::Array,
        key_size: size::<u32>(),
        value_size,
        max_entries,
        flags: 0,
        sizing: Sizing::Fixed,
        pinned: true,
    }
}

const fn per_cpu_array(
    name: &'static str,
    value_size: u32,
    max_entries: u32,
    sizing: Sizing,
) -> MapSpec {
    MapSpec {
        name,
        kind: MapKind::PerCpuArray,
        key_size: size::<u32>(),
        value_size,
        max_entries,
        flags: 0,
        sizing,
        pinned: true,
    }
}

const fn lpm_trie(name: &'static str, key_size: u32, max_entries: u32, sizing: Sizing) -> MapSpec {
    MapSpec {
        name,
        kind: MapKind::LpmTrie,
        key_size,
        value_size: size::<RuleValue>(),
        max_entries,
        flags: BPF_F_NO_PREALLOC,
        sizing,
        pinned: true,
    }
}

/// [`ACTIVE_SET`]: one u32.
pub const ACTIVE_SET_MAP: MapSpec = array(ACTIVE_SET, size::<u32>(), 1);
/// [`POLICY_CONFIG`]: a [`PolicyConfig`] per table set.
pub const POLICY_CONFIG_MAP: MapSpec = array(POLICY_CONFIG, size::<PolicyConfig>(), TABLE_SETS);
/// [`DATA_PLANE_PORTS`]: the port bitmap words of both sets.
pub const DATA_PLANE_PORTS_MAP: MapSpec = array(DATA_PLANE_PORTS, size::<u32>(), PORT_BITMAP_WORDS);
/// [`IP_RULES_0`] and [`IP_RULES_1`]: [`Ipv4Key`] → [`RuleValue`].
pub const IP_RULES_MAPS: [MapSpec; 2] = [
    lpm_trie(
        IP_RULES_0,
        lpm_key::<Ipv4Key>(),
        DEFAULT_IP_RULE_CAPACITY,
        Sizing::IpRules,
    ),
    lpm_trie(
        IP_RULES_1,
        lpm_key::<Ipv4Key>(),
        DEFAULT_IP_RULE_CAPACITY,
        Sizing::IpRules,
    ),
];
/// [`VNET_RULES_0`] and [`VNET_RULES_1`]: [`VnetKey`] → [`RuleValue`].
pub const VNET_RULES_MAPS: [MapSpec; 2] = [
    lpm_trie(
        VNET_RULES_0,
        lpm_key::<VnetKey>(),
        DEFAULT_VNET_CAPACITY,
        Sizing::VnetEntries,
    ),
    lpm_trie(
        VNET_RULES_1,
        lpm_key::<VnetKey>(),
        DEFAULT_VNET_CAPACITY,
        Sizing::VnetEntries,
    ),
];
/// [`TRUSTED_0`] and [`TRUSTED_1`]: [`Ipv4Key`] → [`RuleValue`].
pub const TRUSTED_MAPS: [MapSpec; 2] = [
    lpm_trie(
        TRUSTED_0,
        lpm_key::<Ipv4Key>(),
        DEFAULT_TRUSTED_CAPACITY,
        Sizing::TrustedEntries,
    ),
    lpm_trie(
        TRUSTED_1,
        lpm_key::<Ipv4Key>(),
        DEFAULT_TRUSTED_CAPACITY,
        Sizing::TrustedEntries,
    ),
];
/// [`IP6_RULES_0`] and [`IP6_RULES_1`]: [`Ipv6Key`] → [`RuleValue`].
pub const IP6_RULES_MAPS: [MapSpec; 2] = [
    lpm_trie(
        IP6_RULES_0,
        lpm_key::<Ipv6Key>(),
        DEFAULT_IP_RULE_CAPACITY,
        Sizing::Ip6Rules,
    ),
    lpm_trie(
        IP6_RULES_1,
        lpm_key::<Ipv6Key>(),
        DEFAULT_IP_RULE_CAPACITY,
        Sizing::Ip6Rules,
    ),
];
/// [`VNET6_RULES_0`] and [`VNET6_RULES_1`]: [`Vnet6Key`] → [`RuleValue`].
pub const VNET6_RULES_MAPS: [MapSpec; 2] = [
    lpm_trie(
        VNET6_RULES_0,
        lpm_key::<Vnet6Key>(),
        DEFAULT_VNET_CAPACITY,
        Sizing::VnetEntries,
    ),
    lpm_trie(
        VNET6_RULES_1,
        lpm_key::<Vnet6Key>(),
        DEFAULT_VNET_CAPACITY,
        Sizing::VnetEntries,
    ),
];
/// [`TRUSTED6_0`] and [`TRUSTED6_1`]: [`Ipv6Key`] → [`RuleValue`].
pub const TRUSTED6_MAPS: [MapSpec; 2] = [
    lpm_trie(
        TRUSTED6_0,
        lpm_key::<Ipv6Key>(),
        DEFAULT_TRUSTED_CAPACITY,
        Sizing::TrustedEntries,
    ),
    lpm_trie(
        TRUSTED6_1,
        lpm_key::<Ipv6Key>(),
        DEFAULT_TRUSTED_CAPACITY,
        Sizing::TrustedEntries,
    ),
];
/// [`crate::cpt::CPT_0`] and [`crate::cpt::CPT_1`]: mmapable arrays of
/// [`crate::cpt::Cell`]; declared with one cell, sized by the agent.
pub const CPT_MAPS: [MapSpec; 2] = [cpt_array(crate::cpt::CPT_0), cpt_array(crate::cpt::CPT_1)];

const fn cpt_array(name: &'static str) -> MapSpec {
    MapSpec {
        name,
        kind: MapKind::Array,
        key_size: size::<u32>(),
        value_size: size::<crate::cpt::Cell>(),
        max_entries: 1,
        flags: crate::cpt::BPF_F_MMAPABLE,
        sizing: Sizing::CompiledCells,
        pinned: true,
    }
}

/// [`VERDICT_COUNTERS`]: a u64 per (interface slot, verdict), per CPU.
pub const VERDICT_COUNTERS_MAP: MapSpec = per_cpu_array(
    VERDICT_COUNTERS,
    size::<u64>(),
    VERDICT_SLOTS,
    Sizing::Fixed,
);
/// [`RULE_HITS`]: a [`RuleHits`] per hit slot, per CPU; declared with one
/// entry, sized by the agent.
pub const RULE_HITS_MAP: MapSpec =
    per_cpu_array(RULE_HITS, size::<RuleHits>(), 1, Sizing::HitSlots);
/// [`EVENTS`]: a ring buffer of [`EVENTS_RING_BYTES`] bytes.
pub const EVENTS_MAP: MapSpec = MapSpec {
    name: EVENTS,
    kind: MapKind::RingBuf,
    key_size: 0,
    value_size: 0,
    max_entries: EVENTS_RING_BYTES,
    flags: 0,
    sizing: Sizing::Fixed,
    pinned: true,
};
/// [`FLOW_SEEN`]: [`FlowKey`] → u64 (monotonic ns).
pub const FLOW_SEEN_MAP: MapSpec = MapSpec {
    name: FLOW_SEEN,
    kind: MapKind::LruHash,
    key_size: size::<FlowKey>(),
    value_size: size::<u64>(),
    max_entries: FLOW_SEEN_ENTRIES,
    flags: 0,
    sizing: Sizing::Fixed,
    pinned: true,
};
/// [`EVENT_BUCKET`]: a [`TokenBucket`] per CPU.
pub const EVENT_BUCKET_MAP: MapSpec =
    per_cpu_array(EVENT_BUCKET, size::<TokenBucket>(), 1, Sizing::Fixed);
/// [`TELEMETRY`]: a u64 per `TELEMETRY_*` slot, per CPU.
pub const TELEMETRY_MAP: MapSpec =
    per_cpu_array(TELEMETRY, size::<u64>(), TELEMETRY_COUNT, Sizing::Fixed);

/// [`BPF_LOGS`]: aya-log's ring buffer of [`BPF_LOGS_RING_BYTES`] bytes,
/// owned by each loaded program.
pub const BPF_LOGS_MAP: MapSpec = MapSpec {
    name: BPF_LOGS,
    kind: MapKind::RingBuf,
    key_size: 0,
    value_size: 0,
    max_entries: BPF_LOGS_RING_BYTES,
    flags: 0,
    sizing: Sizing::Fixed,
    pinned: false,
};

/// Every map of the program.
pub const MAPS: [MapSpec; 24] = [
    ACTIVE_SET_MAP,
    POLICY_CONFIG_MAP,
    DATA_PLANE_PORTS_MAP,
    IP_RULES_MAPS[0],
    IP_RULES_MAPS[1],
    VNET_RULES_MAPS[0],
    VNET_RULES_MAPS[1],
    TRUSTED_MAPS[0],
    TRUSTED_MAPS[1],
    VERDICT_COUNTERS_MAP,
    RULE_HITS_MAP,
    EVENTS_MAP,
    FLOW_SEEN_MAP,
    EVENT_BUCKET_MAP,
    TELEMETRY_MAP,
    IP6_RULES_MAPS[0],
    IP6_RULES_MAPS[1],
    VNET6_RULES_MAPS[0],
    VNET6_RULES_MAPS[1],
    TRUSTED6_MAPS[0],
    TRUSTED6_MAPS[1],
    BPF_LOGS_MAP,
    CPT_MAPS[0],
    CPT_MAPS[1],
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_is_listed_once() {
        for (i, a) in MAPS.iter().enumerate() {
            assert!(
                MAPS[i + 1..].iter().all(|b| b.name != a.name),
                "{} listed twice",
                a.name
            );
        }
    }
}
