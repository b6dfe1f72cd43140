//! [`CompiledTables`] → the compiled IPv4 prefix table of one table set,
//! laid out as `firewall_common::cpt` states (read that first). Pure: the
//! image is a `Vec<Cell>` the data plane copies into the set's mmapped
//! array in one pass.
//!
//! Per table: every prefix becomes the interval of addresses it covers; a
//! sweep over the prefixes sorted by (start, length) with a stack of the
//! enclosing prefixes yields the elementary ranges and each one's longest
//! match (a longer prefix always starts at or after its enclosing one and
//! ends at or before it). The global table merges two such columns (trusted
//! services, IP rules) so one walk answers both; the IP-rule column's gaps
//! also say whether a subnet entry covers them (`NO_MATCH_IN_SUBNET`), so
//! a denied frame needs no scope walk. The direct array's width
//! `k` grows with the table (`2^k ≤` entries for a scope, `≤ 2^4 ·` entries
//! for the global table: `GLOBAL_SPREAD_BITS`; at most `2^MAX_K`), so a
//! tiny policy is a few hundred cells.

use std::collections::BTreeMap;

use firewall_common::RuleValue;
use firewall_common::cpt::{
    CPT_MAGIC, CPT_MAGIC_V1, Cell, ENTRY_IP_RULE, ENTRY_TRUSTED, ENTRY_VNET, EXPIRY_BASE_CELL,
    GLOBAL_ROOT_CELL, GLOBAL_SPREAD_BITS, HEADER_CELL, MAX_K, MAX_SCOPES, NO_MATCH,
    NO_MATCH_IN_SUBNET, SCOPES_CELL, SLOT_EXPIRES, SLOT_LIMIT,
};

use super::{CompiledTables, PrefixKey, VnetPrefixKey};

pub mod adversarial;

/// How the data plane finds an IPv4 source's rules (`vaultfw run --lookup`,
/// `vaultfw check --lookup`); on the wire and in logs and metrics
/// `"trie"` or `"compiled"`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Lookup {
    /// The kernel's LPM tries.
    Trie,
    /// The compiled prefix table (`firewall_common::cpt`).
    Compiled,
}

impl Lookup {
    /// What `run --lookup` and `check --lookup` are unless given: the
    /// compiled table, faster per frame than the tries at every size and
    /// applied in one write (docs/performance.md).
    pub const DEFAULT: Lookup = Lookup::Compiled;

    /// What a reply from a daemon that predates the `lookup` field
    /// served: it had only the tries.
    pub const fn before_the_field() -> Self {
        Lookup::Trie
    }

    /// The lookup a table set's `PolicyConfig::flags` select
    /// ([`firewall_common::FLAG_LOOKUP_COMPILED`]).
    pub const fn from_flags(flags: u32) -> Self {
        if flags & firewall_common::FLAG_LOOKUP_COMPILED != 0 {
            Lookup::Compiled
        } else {
            Lookup::Trie
        }
    }

    /// Whether this is the compiled prefix table.
    pub const fn is_compiled(self) -> bool {
        matches!(self, Lookup::Compiled)
    }

    /// The value as the CLI, `show`, the logs and the metrics spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Lookup::Trie => "trie",
            Lookup::Compiled => "compiled",
        }
    }
}

impl Default for Lookup {
    fn default() -> Self {
        Lookup::DEFAULT
    }
}

/// Why a set's entries cannot be compiled into a prefix table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CptError {
    /// A hit slot collides with the expiry flag bit or a no-match word.
    #[error(
        "hit slot {slot} is too large for the compiled table (slots must be below {SLOT_LIMIT})"
    )]
    SlotTooLarge {
        /// The slot.
        slot: u32,
    },
    /// More endpoint scopes than the scope search covers.
    #[error(
        "{count} virtual-network endpoints exceed the compiled table's {MAX_SCOPES}; use --lookup trie"
    )]
    TooManyScopes {
        /// Distinct (ifindex, VLAN) endpoints.
        count: usize,
    },
    /// Two entries share a hit slot but not an expiry.
    #[error("hit slot {slot} has two different expiries in one table set")]
    ExpiryConflict {
        /// The slot.
        slot: u32,
    },
    /// A written table's entry list cannot be read back.
    #[error("the entry list is corrupt: {reason}")]
    CorruptEntryList {
        /// What is wrong, with the cell.
        reason: String,
    },
}

/// One table's cells before placement: direct cells hold a leaf id
/// (`n = 0`) or an index into `ranges` (`n ≥ 2`); ranges hold leaf ids.
struct Table {
    k: u32,
    direct: Vec<Cell>,
    ranges: Vec<Cell>,
}

/// Leaves shared by every table of the image, deduplicated; ids in the
/// order leaves are first met.
struct Leaves {
    ids: foldhash::HashMap<Cell, u32>,
    /// The id of leaf `[NO_MATCH, word]` by the slot of `word` (`u32::MAX`
    /// while none): an IP rule's own leaf, most leaves of a large table,
    /// found without hashing.
    by_slot: Vec<u32>,
    /// The id of `[NO_MATCH, NO_MATCH]`, the leaf between rules.
    no_match: Option<u32>,
    cells: Vec<Cell>,
}

impl Leaves {
    /// Room for about `ranges` leaves without rehashing, and IP-rule
    /// leaves of slots below `slots` found without hashing.
    fn with_capacity(ranges: usize, slots: usize) -> Self {
        Leaves {
            ids: foldhash::HashMap::with_capacity_and_hasher(ranges, Default::default()),
            by_slot: vec![u32::MAX; slots],
            no_match: None,
            cells: Vec::with_capacity(ranges),
        }
    }

    fn id(&mut self, leaf: Cell) -> u32 {
        if leaf == [NO_MATCH, NO_MATCH] {
            return *self.no_match.get_or_insert_with(|| {
                self.cells.push(leaf);
                (self.cells.len() - 1) as u32
            });
        }
        if leaf[0] == NO_MATCH
            && let Some(id) = self.by_slot.get_mut((leaf[1] & !SLOT_EXPIRES) as usize)
        {
            match self.cells.get(*id as usize) {
                Some(known) if *known == leaf => return *id,
                // The slot's other word (never within one image): hashed.
                Some(_) => {}
                None => {
                    self.cells.push(leaf);
                    *id = (self.cells.len() - 1) as u32;
                    return *id;
                }
            }
        }
        *self.ids.entry(leaf).or_insert_with(|| {
            self.cells.push(leaf);
            (self.cells.len() - 1) as u32
        })
    }
}

/// The leaf word of an entry, recording its expiry.
fn word(value: &RuleValue, expiries: &mut BTreeMap<u32, u64>) -> Result<u32, CptError> {
    let slot = value.slot;
    if slot >= SLOT_LIMIT {
        return Err(CptError::SlotTooLarge { slot });
    }
    let at = value.expires_at_ns();
    if at == 0 {
        return Ok(slot);
    }
    match expiries.insert(slot, at) {
        Some(previous) if previous != at => Err(CptError::ExpiryConflict { slot }),
        _ => Ok(slot | SLOT_EXPIRES),
    }
}

/// The elementary ranges of one column: `(start, word)` sorted by start,
/// the first at 0, each holding the longest match of every address from
/// its start to the next one's.
fn column(prefixes: &[(PrefixKey, u32)]) -> Vec<(u64, u32)> {
    // (start << 6 | length, word): sorted by start, an enclosing prefix
    // before the ones it holds (keys are distinct: the order is total).
    let mut prefixes: Vec<(u64, u32)> = prefixes
        .iter()
        .map(|(key, word)| {
            let start = u64::from(u32::from_be_bytes(key.octets));
            (start << 6 | u64::from(key.prefix_len), *word)
        })
        .collect();
    // A stable sort: it merges the runs the (length, address) order of
    // the input already holds.
    prefixes.sort_by_key(|&(key, _)| key);
    let span = |key: u64| {
        let start = key >> 6;
        (start, start + (1u64 << (32 - (key & 63))))
    };
    let mut out: Vec<(u64, u32)> = vec![(0, NO_MATCH)];
    let emit = |out: &mut Vec<(u64, u32)>, at: u64, word: u32| {
        if at >= 1 << 32 {
            return;
        }
        match out.last_mut() {
            Some(last) if last.0 == at => last.1 = word,
            _ => out.push((at, word)),
        }
    };
    // Enclosing prefixes still open: (end, word), innermost last.
    let mut open: Vec<(u64, u32)> = Vec::new();
    let close_until = |out: &mut Vec<(u64, u32)>, open: &mut Vec<(u64, u32)>, at: u64| {
        while let Some(&(end, _)) = open.last() {
            if end > at {
                break;
            }
            open.pop();
            let outer = open.last().map_or(NO_MATCH, |&(_, w)| w);
            emit(out, end, outer);
        }
    };
    for &(key, w) in &prefixes {
        let (start, end) = span(key);
        close_until(&mut out, &mut open, start);
        emit(&mut out, start, w);
        open.push((end, w));
    }
    close_until(&mut out, &mut open, u64::MAX);
    out
}

/// The IP-rule column with its gaps marked where `subnets` (every scope's
/// subnet prefixes) cover them: [`NO_MATCH_IN_SUBNET`] there, [`NO_MATCH`]
/// where nothing does; consecutive equal words joined.
fn with_subnet_cover(ip: &[(u64, u32)], subnets: &[(u64, u32)]) -> Vec<(u64, u32)> {
    let mut out: Vec<(u64, u32)> = Vec::with_capacity(ip.len() + subnets.len());
    for (at, [ip, cover]) in merge(ip, subnets) {
        let word = if ip == NO_MATCH && cover != NO_MATCH {
            NO_MATCH_IN_SUBNET
        } else {
            ip
        };
        if out.last().is_none_or(|last| last.1 != word) {
            out.push((at, word));
        }
    }
    out
}

/// Two columns merged into ranges of leaf pairs, consecutive equal leaves
/// joined.
fn merge(a: &[(u64, u32)], b: &[(u64, u32)]) -> Vec<(u64, Cell)> {
    let mut out: Vec<(u64, Cell)> = Vec::with_capacity(a.len() + b.len());
    // A column of one range (an empty table, the usual trusted-service
    // one) pairs with each of the other's: no merge walk.
    if let [(_, only)] = a {
        for &(at, word) in b {
            let leaf = [*only, word];
            if out.last().is_none_or(|last| last.1 != leaf) {
                out.push((at, leaf));
            }
        }
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let at = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.0.min(y.0),
            (Some(x), None) => x.0,
            (None, Some(y)) => y.0,
            (None, None) => unreachable!("loop condition"),
        };
        if a.get(i).is_some_and(|x| x.0 == at) {
            i += 1;
        }
        if b.get(j).is_some_and(|y| y.0 == at) {
            j += 1;
        }
        // Both columns start at 0, so i, j ≥ 1 here.
        let leaf = [a[i - 1].1, b[j - 1].1];
        if out.last().is_none_or(|last| last.1 != leaf) {
            out.push((at, leaf));
        }
    }
    out
}

/// The direct width for a table of `entries` prefixes with `spread` bits
/// more: `2^k ≤ entries · 2^spread`, at most [`MAX_K`]; 0 when empty.
fn width(entries: usize, spread: u32) -> u32 {
    if entries == 0 {
        0
    } else {
        (usize::BITS - 1 - entries.leading_zeros() + spread).min(MAX_K)
    }
}

/// One table from its ranges (first at 0), its direct array `2^k` cells.
fn table(ranges: &[(u64, Cell)], k: u32, leaves: &mut Leaves) -> Table {
    let bucket_span = 1u64 << (32 - k);
    let mut direct = Vec::with_capacity(1 << k);
    let mut out = Vec::new();
    // ranges[i]: the last range starting at or before the bucket's start.
    let mut i = 0;
    for bucket in 0..(1u64 << k) {
        let start = bucket * bucket_span;
        let end = start + bucket_span;
        while i + 1 < ranges.len() && ranges[i + 1].0 <= start {
            i += 1;
        }
        let mut last = i;
        while last + 1 < ranges.len() && ranges[last + 1].0 < end {
            last += 1;
        }
        if last == i {
            direct.push([leaves.id(ranges[i].1), 0]);
        } else {
            direct.push([out.len() as u32, (last - i + 1) as u32]);
            out.push([start as u32, leaves.id(ranges[i].1)]);
            for r in &ranges[i + 1..=last] {
                out.push([r.0 as u32, leaves.id(r.1)]);
            }
        }
        i = last;
    }
    Table {
        k,
        direct,
        ranges: out,
    }
}

/// The compiled prefix table of the IPv4 entries of `tables` (IP rules,
/// trusted services, subnet entries by endpoint), as the cells of one
/// table set's array, cell 0 first.
pub fn compile_prefix_table(tables: &CompiledTables) -> Result<Vec<Cell>, CptError> {
    let mut expiries = BTreeMap::new();
    let mut entries = |map: &BTreeMap<PrefixKey, RuleValue>| -> Result<_, CptError> {
        map.iter()
            .map(|(key, value)| Ok((*key, word(value, &mut expiries)?)))
            .collect::<Result<Vec<_>, _>>()
    };
    let trusted = entries(&tables.trusted)?;
    let ip = entries(&tables.ip_rules)?;

    let mut scoped: BTreeMap<(u32, u32), Vec<(PrefixKey, u32)>> = BTreeMap::new();
    for (key, value) in &tables.vnet_rules {
        scoped
            .entry((key.ifindex, key.vlan))
            .or_default()
            .push((key.prefix, word(value, &mut expiries)?));
    }
    // Every scope's subnet prefixes once, in the (length, address) order
    // the column's sort expects; the word only marks coverage.
    let subnets: Vec<(PrefixKey, u32)> = tables
        .vnet_rules
        .keys()
        .map(|key| key.prefix)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|prefix| (prefix, 0))
        .collect();
    let global_entries = trusted.len() + ip.len() + subnets.len();
    let ip_column = if subnets.is_empty() {
        column(&ip)
    } else {
        with_subnet_cover(&column(&ip), &column(&subnets))
    };
    let global = merge(&column(&trusted), &ip_column);

    if scoped.len() > MAX_SCOPES as usize {
        return Err(CptError::TooManyScopes {
            count: scoped.len(),
        });
    }
    let none = [(0, NO_MATCH)];
    let scoped_ranges: usize = scoped.values().map(|p| 2 * p.len() + 1).sum();
    let slots = ip
        .iter()
        .map(|(_, w)| (w & !SLOT_EXPIRES) as usize + 1)
        .max();
    let mut leaves = Leaves::with_capacity(global.len() + scoped_ranges, slots.unwrap_or(0));
    let global_k = width(global_entries, GLOBAL_SPREAD_BITS);
    let mut built = vec![table(&global, global_k, &mut leaves)];
    for prefixes in scoped.values() {
        let k = width(prefixes.len(), 0);
        built.push(table(&merge(&column(prefixes), &none), k, &mut leaves));
    }

    let scopes = scoped.len() as u32;
    let expiry_base = SCOPES_CELL + 2 * scopes;
    let expiry_cells = expiries.keys().next_back().map_or(0, |s| s + 1);
    let leaf_base = expiry_base + expiry_cells;
    let listed = !trusted.is_empty() || !ip.is_empty() || !scoped.is_empty();
    let groups = [&trusted, &ip]
        .into_iter()
        .chain(scoped.values())
        .map(|entries| by_length(entries).len())
        .sum::<usize>();
    let entries = trusted.len() + ip.len() + scoped.values().map(Vec::len).sum::<usize>();
    let list_cells = if listed { 1 + groups + entries } else { 0 };
    let table_cells: usize = built.iter().map(|t| t.direct.len() + t.ranges.len()).sum();
    // Sized once: growing a multi-MiB image copies it.
    let mut cells: Vec<Cell> =
        Vec::with_capacity(leaf_base as usize + leaves.cells.len() + table_cells + list_cells);
    cells.resize(leaf_base as usize, [0, 0]);
    cells[HEADER_CELL as usize] = [CPT_MAGIC, scopes];
    cells[EXPIRY_BASE_CELL as usize] = [expiry_base, 0];
    for (slot, at) in &expiries {
        cells[(expiry_base + slot) as usize] = [*at as u32, (at >> 32) as u32];
    }
    cells.extend_from_slice(&leaves.cells);
    let mut roots = Vec::with_capacity(built.len());
    for t in &built {
        let direct = cells.len() as u32;
        let ranges = direct + t.direct.len() as u32;
        roots.push([t.k, direct]);
        cells.extend(t.direct.iter().map(|&[x, n]| {
            if n == 0 {
                [leaf_base + x, 0]
            } else {
                [ranges + x, n]
            }
        }));
        cells.extend(t.ranges.iter().map(|&[s, leaf]| [s, leaf_base + leaf]));
    }
    cells[GLOBAL_ROOT_CELL as usize] = roots[0];
    for (i, ((ifindex, vlan), root)) in scoped.keys().zip(&roots[1..]).enumerate() {
        let at = (SCOPES_CELL as usize) + 2 * i;
        cells[at] = [*ifindex, *vlan];
        cells[at + 1] = *root;
    }
    if listed {
        cells[EXPIRY_BASE_CELL as usize][1] = cells.len() as u32;
        cells.push([groups as u32, 0]);
        list_groups(&mut cells, ENTRY_TRUSTED, 0, &trusted);
        list_groups(&mut cells, ENTRY_IP_RULE, 0, &ip);
        for (scope, prefixes) in scoped.values().enumerate() {
            list_groups(&mut cells, ENTRY_VNET, scope as u32, prefixes);
        }
    }
    debug_assert_eq!(cells.len(), cells.capacity(), "the image was sized exactly");
    Ok(cells)
}

/// `entries` by prefix length, shortest first (input order within a
/// length).
fn by_length(entries: &[(PrefixKey, u32)]) -> Vec<&[(PrefixKey, u32)]> {
    let sorted = entries
        .windows(2)
        .all(|w| w[0].0.prefix_len <= w[1].0.prefix_len);
    debug_assert!(sorted, "entries come in key order: by prefix length first");
    entries
        .chunk_by(|a, b| a.0.prefix_len == b.0.prefix_len)
        .collect()
}

/// Appends the entry-list groups of one kind and scope: one per prefix
/// length, each a header cell then its `[address, word]` cells.
fn list_groups(cells: &mut Vec<Cell>, kind: u32, scope: u32, entries: &[(PrefixKey, u32)]) {
    for group in by_length(entries) {
        let prefix_len = group[0].0.prefix_len;
        cells.push([kind << 24 | prefix_len << 16 | scope, group.len() as u32]);
        cells.extend(
            group
                .iter()
                .map(|(key, word)| [u32::from_be_bytes(key.octets), *word]),
        );
    }
}

/// The IPv4 entries a compiled table lists (see "Entry list" in
/// `firewall_common::cpt`), as [`CompiledTables`] holds them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListedEntries {
    /// [`CompiledTables::ip_rules`].
    pub ip_rules: BTreeMap<PrefixKey, RuleValue>,
    /// [`CompiledTables::vnet_rules`].
    pub vnet_rules: BTreeMap<VnetPrefixKey, RuleValue>,
    /// [`CompiledTables::trusted`].
    pub trusted: BTreeMap<PrefixKey, RuleValue>,
}

/// Reads back the entries `cells` (a table set's whole array) lists:
/// `None` when the table lists none (never written, no entries, or
/// written by a build before the list: the set's tries hold its entries).
///
/// # Errors
///
/// [`CptError::CorruptEntryList`] naming the first cell that is out of
/// the array, of an unknown kind, not a network address, or whose match
/// or scope the table does not hold.
pub fn listed_entries(cells: &[Cell]) -> Result<Option<ListedEntries>, CptError> {
    let corrupt = |reason: String| CptError::CorruptEntryList { reason };
    let cell = |at: u64| {
        usize::try_from(at)
            .ok()
            .and_then(|at| cells.get(at).copied())
            .ok_or_else(|| {
                corrupt(format!(
                    "cell {at} is past the table's {} cells",
                    cells.len()
                ))
            })
    };
    let [magic, scopes] = cell(u64::from(HEADER_CELL))?;
    let [_, first] = cell(u64::from(EXPIRY_BASE_CELL))?;
    // A table of the layout before this one lists its entries alike.
    if ![CPT_MAGIC, CPT_MAGIC_V1].contains(&magic) || first == 0 {
        return Ok(None);
    }
    let [groups, _] = cell(u64::from(first))?;
    let mut listed = ListedEntries::default();
    let mut at = u64::from(first) + 1;
    for _ in 0..groups {
        let [header, count] = cell(at)?;
        let (kind, prefix_len, scope) = (header >> 24, header >> 16 & 0xff, header & 0xffff);
        let mask = match prefix_len {
            0 => 0,
            1..=32 => u32::MAX << (32 - prefix_len),
            _ => return Err(corrupt(format!("cell {at}: prefix length {prefix_len}"))),
        };
        // The (ifindex, vlan) of a virtual-network group.
        let endpoint = match kind {
            ENTRY_TRUSTED | ENTRY_IP_RULE => None,
            ENTRY_VNET if scope < scopes => {
                Some(cell(u64::from(SCOPES_CELL) + 2 * u64::from(scope))?)
            }
            ENTRY_VNET => return Err(corrupt(format!("cell {at}: scope {scope} of {scopes}"))),
            _ => return Err(corrupt(format!("cell {at}: entry kind {kind}"))),
        };
        for _ in 0..count {
            at += 1;
            let [addr, word] = cell(at)?;
            if addr & mask != addr {
                return Err(corrupt(format!(
                    "cell {at}: {addr:#010x}/{prefix_len} has host bits set"
                )));
            }
            let value = firewall_common::cpt::rule(cells, word)
                .ok_or_else(|| corrupt(format!("cell {at}: match word {word:#x}")))?;
            let prefix = PrefixKey {
                prefix_len,
                octets: addr.to_be_bytes(),
            };
            match endpoint {
                Some([ifindex, vlan]) => {
                    let key = VnetPrefixKey {
                        ifindex,
                        vlan,
                        prefix,
                    };
                    listed.vnet_rules.insert(key, value);
                }
                None if kind == ENTRY_TRUSTED => {
                    listed.trusted.insert(prefix, value);
                }
                None => {
                    listed.ip_rules.insert(prefix, value);
                }
            }
        }
        at += 1;
    }
    Ok(Some(listed))
}

/// What the IPv4 tables of one set answer for one source: each table's
/// longest-prefix entry (`vnet` in the order of the program's subnet
/// lookups), before any expiry is judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V4Matches {
    /// The trusted-service match.
    pub trusted: Option<RuleValue>,
    /// The IP-rule match.
    pub ip: Option<RuleValue>,
    /// The virtual-network match for the frame's endpoint.
    pub vnet: Option<RuleValue>,
}

/// The answers of the LPM tries holding `tables` for source `addr`
/// (octets in network byte order) through `(ifindex, vlan)`: the reference
/// the compiled table must equal, computed the naive way (every prefix
/// length, longest first).
pub fn trie_matches(tables: &CompiledTables, ifindex: u32, vlan: u32, addr: [u8; 4]) -> V4Matches {
    let a = u32::from_be_bytes(addr);
    let key = |len: u32| PrefixKey {
        prefix_len: len,
        octets: (if len == 0 {
            0
        } else {
            a & (u32::MAX << (32 - len))
        })
        .to_be_bytes(),
    };
    let lpm = |map: &BTreeMap<PrefixKey, RuleValue>| {
        (0..=32).rev().find_map(|len| map.get(&key(len)).copied())
    };
    let scoped = |ifindex: u32, vlan: u32| {
        (0..=32).rev().find_map(|len| {
            tables
                .vnet_rules
                .get(&super::VnetPrefixKey {
                    ifindex,
                    vlan,
                    prefix: key(len),
                })
                .copied()
        })
    };
    let vnet = scoped(ifindex, firewall_common::VLAN_ANY).or_else(|| {
        if vlan == firewall_common::VLAN_UNTAGGED {
            None
        } else {
            scoped(ifindex, vlan).or_else(|| scoped(firewall_common::IFINDEX_ANY, vlan))
        }
    });
    V4Matches {
        trusted: lpm(&tables.trusted),
        ip: lpm(&tables.ip_rules),
        vnet,
    }
}

/// What the compiled table `cells` answers for the same question as
/// [`trie_matches`] (the program's walk, run over a slice).
pub fn table_matches(cells: &[Cell], ifindex: u32, vlan: u32, addr: [u8; 4]) -> V4Matches {
    let [trusted, ip, vnet] =
        firewall_common::cpt::v4_matches(cells, ifindex, vlan, u32::from_be_bytes(addr));
    V4Matches { trusted, ip, vnet }
}

#[cfg(test)]
mod tests;
