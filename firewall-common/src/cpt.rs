//! The compiled IPv4 prefix table ("CPT"): a DXR-style layout that answers
//! the longest-prefix match of every IPv4 table of one table set in one walk
//! per scope, stated once for the writer (the agent's `compile::cpt`) and
//! the reader (the XDP program's `cpt` module, and [`walk`] below, which
//! both use).
//!
//! # Storage
//!
//! One `BPF_MAP_TYPE_ARRAY` per table set ([`CPT_0`], [`CPT_1`]) created
//! with `BPF_F_MMAPABLE`, key `u32`, value one [`Cell`]: two `u32` words in
//! the host's (native) byte order — the agent writes them through an mmap
//! of the map and the program reads them on the same machine. Every offset
//! below is a cell index into that array. Addresses are compared as host
//! order `u32` (`u32::from_be_bytes(octets)`), so `a.b.c.d` sorts by `a`
//! first.
//!
//! # Layout (cell: `[word 0, word 1]`)
//!
//! - cell 0 [`HEADER_CELL`]: `[CPT_MAGIC, scope_count]`; a table whose
//!   magic differs (never written) answers "no match" for every address.
//! - cell 1 [`EXPIRY_BASE_CELL`]: `[expiry_base, entries]`: the expiry of a
//!   slot flagged [`SLOT_EXPIRES`] is cell `expiry_base + slot` as
//!   `[low 32 bits, high 32 bits]` of CLOCK_MONOTONIC ns; `entries` is the
//!   entry list's first cell (below), 0 for none.
//! - cell 2 [`GLOBAL_ROOT_CELL`]: the root of the global table (IP rules and
//!   trusted services).
//! - cells `SCOPES_CELL + 2i` and `+ 2i + 1`, `i < scope_count`: scope `i`
//!   of the virtual-network rules, sorted by `(ifindex, vlan)`: `[ifindex,
//!   vlan]` (host-order numbers, `IFINDEX_ANY` / `VLAN_ANY` as in
//!   `VnetKey`) then its root.
//! - a root: `[k, direct]`: the table's direct array of `2^k` cells
//!   (`0 ≤ k ≤` [`MAX_K`]) starts at cell `direct`; address `a` uses cell
//!   `direct + (a >> (32 - k))` (`direct` itself for `k = 0`).
//! - a direct cell `[x, n]`: `n = 0`: every address of the bucket has leaf
//!   cell `x`; `n ≥ 2`: the bucket's `n` range cells start at cell `x`.
//! - a range cell `[start, leaf]`: addresses from `start` up to the next
//!   range's start (or the bucket's end) have leaf cell `leaf`. A bucket's
//!   ranges are sorted by `start` and the first starts at the bucket's
//!   first address, so a binary search of at most [`SEARCH_STEPS`] steps
//!   finds the last range with `start ≤ a`.
//! - a leaf cell `[first, second]`: in the global table `first` is the
//!   trusted-service match and `second` the IP-rule match; in a scope
//!   table `first` is the virtual-network match and `second` is
//!   [`NO_MATCH`]. A match is the entry's hit slot, [`NO_MATCH`] for none,
//!   with [`SLOT_EXPIRES`] set when the entry has an expiry.
//! - the global leaf's IP-rule word without a match also says whether any
//!   subnet entry (of any scope) covers the address: [`NO_MATCH`] when none
//!   does, so a frame no rule admits is denied after this one walk (a
//!   flood from sources outside every rule never reaches the scope
//!   tables), and [`NO_MATCH_IN_SUBNET`] when one does ([`subnet_may_match`]).
//!
//! Each table's answer for `a` is exactly its LPM trie's: the agent derives
//! the ranges from the same entries it would write to the tries.
//!
//! # Entry list (read by the agent only)
//!
//! The ranges do not say which prefixes made them, so the set also lists
//! its entries for an agent that starts over pins (their slots keep their
//! hit counters) — the program never reads it, and the IPv4 tries of a
//! compiled set stay empty. Cell `entries`: `[group_count, 0]`, then each
//! group: a cell `[kind << 24 | prefix_len << 16 | scope, count]` (kind
//! [`ENTRY_TRUSTED`], [`ENTRY_IP_RULE`] or [`ENTRY_VNET`]; `scope` is the
//! scope index `i` of a virtual-network group, else 0) followed by `count`
//! cells `[address, match word]` (host-order network address as above; the
//! word as in a leaf). A group is one (kind, scope, prefix length), so
//! there are at most 33 per table.
//! `entries = 0` (a table with no entries, or one written by a build
//! before the list): the set's IPv4 entries are those its tries hold.

use crate::RuleValue;

/// The compiled table of table set 0.
pub const CPT_0: &str = "VFW_CPT_0";
/// The compiled table of table set 1.
pub const CPT_1: &str = "VFW_CPT_1";

/// `BPF_F_MMAPABLE`: the array's values can be mapped into user space.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// One array element: two words in native byte order.
pub type Cell = [u32; 2];

/// Word 0 of cell 0 of a written table ("CPT2").
pub const CPT_MAGIC: u32 = 0x4350_5432;
/// Word 0 of cell 0 of a table written by a build before
/// [`NO_MATCH_IN_SUBNET`] ("CPT1"): its entry list reads as this layout's,
/// its leaves do not, so the program never walks it (its magic differs)
/// and an agent that finds one pinned moves the filter to new maps.
pub const CPT_MAGIC_V1: u32 = 0x4350_5431;
/// Cell `[CPT_MAGIC, scope_count]`.
pub const HEADER_CELL: u32 = 0;
/// Cell `[expiry_base, 0]`.
pub const EXPIRY_BASE_CELL: u32 = 1;
/// The global table's root cell.
pub const GLOBAL_ROOT_CELL: u32 = 2;
/// The first scope directory cell.
pub const SCOPES_CELL: u32 = 3;
/// The largest direct-array width in bits (a 2^16-cell direct array, 512 KiB).
pub const MAX_K: u32 = 16;
/// The global table's direct array holds up to `2^GLOBAL_SPREAD_BITS`
/// cells per entry (at most `2^MAX_K` in all): a source outside every
/// prefix then mostly lands in a bucket with no range, answered without a
/// search (a third to a half less per frame at 10 to 10,000 prefixes in
/// `cargo xtask bench`). A scope table's holds at most one per entry.
pub const GLOBAL_SPREAD_BITS: u32 = 4;
/// Binary-search steps that cover any bucket (at most 2^32 ranges).
pub const SEARCH_STEPS: u32 = 32;
/// Steps of the scope-directory search (at most 2^16 scopes).
pub const SCOPE_SEARCH_STEPS: u32 = 16;
/// The most scopes a table may have.
pub const MAX_SCOPES: u32 = 1 << SCOPE_SEARCH_STEPS;
/// A leaf word without a match (in the global leaf's IP-rule word: and no
/// subnet entry covers the address).
pub const NO_MATCH: u32 = u32::MAX;
/// The global leaf's IP-rule word when no IP rule matches and some subnet
/// entry covers the address: the scope tables may match.
pub const NO_MATCH_IN_SUBNET: u32 = u32::MAX - 1;
/// Set in a leaf word whose entry has an expiry.
pub const SLOT_EXPIRES: u32 = 1 << 31;
/// Hit slots stay below this, so no match word is [`NO_MATCH`] or
/// [`NO_MATCH_IN_SUBNET`] (with or without [`SLOT_EXPIRES`]).
pub const SLOT_LIMIT: u32 = NO_MATCH_IN_SUBNET & !SLOT_EXPIRES;
/// Entry-list kind of a trusted-service prefix.
pub const ENTRY_TRUSTED: u32 = 0;
/// Entry-list kind of an IP rule.
pub const ENTRY_IP_RULE: u32 = 1;
/// Entry-list kind of a virtual-network (subnet) entry.
pub const ENTRY_VNET: u32 = 2;

/// Cells a table set needs at most for `prefixes` IPv4 entries in all
/// (IP rules, trusted services and subnet entries), `subnets` of them
/// subnet entries, in `scopes` endpoint scopes, with expiring hit slots
/// below `slots`: the bound the map is sized with.
///
/// A subnet prefix sits in its scope's table and also bounds the global
/// table's ranges (its cover, [`NO_MATCH_IN_SUBNET`]), so the tables hold
/// `e ≤ prefixes + subnets` entries together. A table of `m` entries has at
/// most `2m` range boundaries, at most `m + 1` distinct leaves (a leaf is
/// fixed by the longest prefix covering the range: every covering prefix
/// is an enclosing one of it), and a direct array of `2^k` cells: at most
/// `max(1, m)` for a scope, `max(1, m · 2^GLOBAL_SPREAD_BITS)` for the
/// global table, never more than `2^MAX_K`; with at most one bucket-first
/// range per direct cell. The entry list takes a cell per entry plus at most a group
/// cell per entry and at most 33 groups per kind and scope (none when
/// there are no entries).
pub const fn cells_bound(prefixes: u32, subnets: u32, scopes: u32, slots: u32) -> u64 {
    let n = prefixes as u64;
    let v = if subnets < prefixes {
        subnets
    } else {
        prefixes
    } as u64;
    let tables = 1 + scopes as u64;
    let entries = n + v;
    let groups = 33 * (tables + 1);
    let entry_list = if n == 0 {
        0
    } else if n < groups {
        1 + 2 * n
    } else {
        1 + n + groups
    };
    let spread = n << GLOBAL_SPREAD_BITS;
    let global_direct = if spread < 1 << MAX_K {
        spread
    } else {
        1 << MAX_K
    };
    let direct = global_direct + v + tables;
    let bucket_firsts = direct;
    let boundaries = 2 * entries;
    let leaves = entries + tables;
    SCOPES_CELL as u64
        + 2 * scopes as u64
        + slots as u64
        + direct
        + bucket_firsts
        + boundaries
        + leaves
        + entry_list
}

/// Read access to a table's cells (the program's array map, or a slice).
pub trait Cells {
    /// Cell `index`, or `None` past the end.
    fn cell(&self, index: u32) -> Option<Cell>;
}

impl Cells for [Cell] {
    #[inline(always)]
    fn cell(&self, index: u32) -> Option<Cell> {
        self.get(index as usize).copied()
    }
}

/// The root cell of scope `(ifindex, vlan)`, or `None` when no subnet entry
/// is bound to that endpoint (or the table was never written).
#[inline(always)]
pub fn scope_root<C: Cells + ?Sized>(cells: &C, ifindex: u32, vlan: u32) -> Option<u32> {
    let [magic, count] = cells.cell(HEADER_CELL)?;
    if magic != CPT_MAGIC || count == 0 {
        return None;
    }
    let wanted = (ifindex as u64) << 32 | vlan as u64;
    // Last scope with key ≤ wanted.
    let mut lo = 0u32;
    let mut n = count;
    for _ in 0..SCOPE_SEARCH_STEPS + 1 {
        if n <= 1 {
            break;
        }
        let half = n / 2;
        let [i, v] = cells.cell(SCOPES_CELL + 2 * (lo + half))?;
        if ((i as u64) << 32 | v as u64) <= wanted {
            lo += half;
        }
        n -= half;
    }
    let [i, v] = cells.cell(SCOPES_CELL + 2 * lo)?;
    ((i, v) == (ifindex, vlan)).then_some(SCOPES_CELL + 2 * lo + 1)
}

/// The leaf cell for host-order address `addr` in the table rooted at cell
/// `root`; `None` for a table never written (or corrupt).
#[inline(always)]
pub fn walk<C: Cells + ?Sized>(cells: &C, root: u32, addr: u32) -> Option<Cell> {
    let [magic, _] = cells.cell(HEADER_CELL)?;
    if magic != CPT_MAGIC {
        return None;
    }
    let [k, direct] = cells.cell(root)?;
    let bucket = if k == 0 { 0 } else { addr >> (32 - (k & 31)) };
    let [x, n] = cells.cell(direct.wrapping_add(bucket))?;
    let leaf = if n == 0 {
        x
    } else {
        let mut lo = x;
        let mut n = n;
        for _ in 0..SEARCH_STEPS {
            if n <= 1 {
                break;
            }
            let half = n / 2;
            let [start, _] = cells.cell(lo.wrapping_add(half))?;
            if start <= addr {
                lo += half;
            }
            n -= half;
        }
        cells.cell(lo)?[1]
    };
    cells.cell(leaf)
}

/// The entry a leaf word stands for (`None` for [`NO_MATCH`] and
/// [`NO_MATCH_IN_SUBNET`]): its hit slot and, for a word flagged
/// [`SLOT_EXPIRES`], the expiry read from the expiry cells.
#[inline(always)]
pub fn rule<C: Cells + ?Sized>(cells: &C, word: u32) -> Option<RuleValue> {
    if word >= NO_MATCH_IN_SUBNET {
        return None;
    }
    if word & SLOT_EXPIRES == 0 {
        return Some(RuleValue::new(word));
    }
    let slot = word & !SLOT_EXPIRES;
    let [base, _] = cells.cell(EXPIRY_BASE_CELL)?;
    let [low, high] = cells.cell(base.wrapping_add(slot))?;
    Some(RuleValue::expiring(slot, (high as u64) << 32 | low as u64))
}

/// Whether the scope tables may hold a subnet entry covering an address
/// whose global leaf has IP-rule word `ip_word`: always, unless the word
/// is [`NO_MATCH`] (no IP rule and no subnet entry of any scope covers it).
/// A word holding a match says nothing of the subnets (the match may have
/// expired), so it answers `true`.
#[inline(always)]
pub const fn subnet_may_match(ip_word: u32) -> bool {
    ip_word != NO_MATCH
}

/// The IPv4 tables' matches for host-order `addr` arriving through
/// `(ifindex, vlan)`: `(trusted service, IP rule, virtual network)`, each
/// its trie's longest-prefix entry (the subnet one as [`vnet_match`]
/// finds it) or `None` — the walks the program makes, in one call.
#[inline(always)]
pub fn v4_matches<C: Cells + ?Sized>(
    cells: &C,
    ifindex: u32,
    vlan: u32,
    addr: u32,
) -> [Option<RuleValue>; 3] {
    let Some([trusted, ip]) = walk(cells, GLOBAL_ROOT_CELL, addr) else {
        return [None; 3];
    };
    let vnet = if subnet_may_match(ip) {
        vnet_match(cells, ifindex, vlan, addr)
    } else {
        None
    };
    [rule(cells, trusted), rule(cells, ip), vnet]
}

/// The virtual-network entry covering `addr` for a frame through
/// `(ifindex, vlan)`, in the order of the program's trie lookups: a rule
/// bound to the interface (any VLAN), then — for a tagged frame — to the
/// interface and the VLAN, then to the VLAN on any interface. The first
/// table that matches answers (expired or not).
#[inline(always)]
pub fn vnet_match<C: Cells + ?Sized>(
    cells: &C,
    ifindex: u32,
    vlan: u32,
    addr: u32,
) -> Option<RuleValue> {
    let scoped = |ifindex: u32, vlan: u32| -> Option<RuleValue> {
        let root = scope_root(cells, ifindex, vlan)?;
        let [word, _] = walk(cells, root, addr)?;
        rule(cells, word)
    };
    if let Some(hit) = scoped(ifindex, crate::VLAN_ANY) {
        return Some(hit);
    }
    if vlan == crate::VLAN_UNTAGGED {
        return None;
    }
    scoped(ifindex, vlan).or_else(|| scoped(crate::IFINDEX_ANY, vlan))
}
