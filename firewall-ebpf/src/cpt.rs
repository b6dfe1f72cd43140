//! The compiled IPv4 prefix table's walk over table set `set`'s array
//! (`firewall_common::cpt` defines the layout and the walk; this module
//! only reads cells from the set's map). Every read is an array lookup the
//! verifier inlines; the binary searches are bounded loops.

use firewall_common::RuleValue;
use firewall_common::cpt::{self, Cell, Cells};

use crate::{VFW_CPT_0, VFW_CPT_1};

/// Table set `set`'s compiled table.
struct SetCells(u32);

impl Cells for SetCells {
    #[inline(always)]
    fn cell(&self, index: u32) -> Option<Cell> {
        let hit = if self.0 == 0 {
            VFW_CPT_0.get(index)
        } else {
            VFW_CPT_1.get(index)
        };
        hit.copied()
    }
}

/// Set `set`'s global leaf for the IPv4 source `src` (network byte
/// order): `[trusted-service word, IP-rule word]`, each
/// [`cpt::NO_MATCH`] when nothing matches (plain words, so no register
/// holds an uninitialised `None` payload the verifier would refuse).
#[inline(always)]
pub fn global_words(set: u32, src: [u8; 4]) -> Cell {
    cpt::walk(
        &SetCells(set),
        cpt::GLOBAL_ROOT_CELL,
        u32::from_be_bytes(src),
    )
    .unwrap_or([cpt::NO_MATCH; 2])
}

/// The entry leaf word `word` of set `set` stands for.
#[inline(always)]
pub fn rule(set: u32, word: u32) -> Option<RuleValue> {
    cpt::rule(&SetCells(set), word)
}

/// Set `set`'s virtual-network match for `src` arriving through
/// `(ifindex, vlan)`, in the subnet trie's lookup order.
#[inline(always)]
pub fn vnet_match(set: u32, ifindex: u32, vlan: u32, src: [u8; 4]) -> Option<RuleValue> {
    cpt::vnet_match(&SetCells(set), ifindex, vlan, u32::from_be_bytes(src))
}
