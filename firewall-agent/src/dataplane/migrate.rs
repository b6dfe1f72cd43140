//! Moving a pinned filter onto maps of another shape — new `limits`, or an
//! upgrade that changed a map — without a moment where an interface is
//! judged by a stale or an empty table set, and without losing a counter.
//!
//! A program still attached reads the maps it was loaded with. Sharing some
//! maps with a new program and not others would let a flip made for the new
//! program change what the old one serves (its spare tries hold an older
//! generation). So a migration creates every table-set map and the per-rule
//! counters anew, together, and shares only maps whose meaning does not
//! depend on the set (verdict counters, event accounting, the ring buffer)
//! when their shape still fits. Step by step:
//!
//! 1. The new maps are created unpinned and staged beside the old pins
//!    (`NAME.next`); the old pins stay as they are.
//! 2. The replaced maps are read back: their generation numbering, each
//!    rule's hit slot (moved to the new layout by kind and index) and every
//!    counter are copied in. No program reads the new maps yet.
//! 3. The policy is written into the new maps and flipped there.
//! 4. Every interface's pinned link is moved to the new program with one
//!    link update; new interfaces are attached.
//! 5. The staged maps are renamed over the old pins; the old program and
//!    maps go with their last reference.
//!
//! A start that fails before step 5 moves the links back to the program
//! they ran (its descriptor is held) and drops the staged maps: the old
//! pins never changed. A process killed before step 5 leaves the old pins
//! in place; the next start removes the staged maps and migrates again.

use firewall_common::{
    EVENT_BUCKET, EVENTS, FLOW_SEEN, HitSlots, IP_RULES_0, IP6_RULES_0, RULE_HITS, TELEMETRY,
    TRUSTED_0, TRUSTED_SERVICE_SLOTS, VERDICT_COUNTERS, VNET_RULES_0,
};

use super::pins::{MapPin, PinPlan};
use super::tables::Predecessor;
use super::{Capacity, DataplaneError};
use crate::paths::PinDir;

/// Maps a migration may share with the program it replaces when their
/// shape still fits: what they hold does not depend on the table set.
const SHAREABLE: [&str; 5] = [VERDICT_COUNTERS, TELEMETRY, EVENTS, FLOW_SEEN, EVENT_BUCKET];

/// The maps this start creates anew and stages (empty unless migrating).
pub(super) fn fresh_maps(plan: &PinPlan) -> Vec<&'static str> {
    if !plan.migrating() {
        return Vec::new();
    }
    plan.maps
        .iter()
        .filter(|(shape, pin)| *pin != MapPin::Reuse || !SHAREABLE.contains(&shape.name))
        .map(|(shape, _)| shape.name)
        .collect()
}

/// The capacity the replaced maps were created with, from their pins: the
/// tries' sizes, and the hit-slot layout (IP rules as many as the IP trie
/// holds, trusted services [`TRUSTED_SERVICE_SLOTS`], IPv6 IP rules as
/// many as the IPv6 trie holds — none for pins of a build before IPv6
/// rules, which lack that trie — and subnet rules the rest).
pub(super) fn pinned_capacity(dir: &PinDir) -> Option<Capacity> {
    let entries = |name| PinPlan::pinned_max_entries(dir, name);
    let ip_rules = entries(IP_RULES_0)?;
    let ipv6_rules = entries(IP6_RULES_0).unwrap_or(0);
    let vnet_rules =
        entries(RULE_HITS)?.checked_sub(ip_rules + TRUSTED_SERVICE_SLOTS + ipv6_rules)?;
    Some(Capacity {
        ip_rules,
        vnet_entries: entries(VNET_RULES_0)?,
        trusted_entries: entries(TRUSTED_0)?,
        hit_slots: HitSlots::new(ip_rules, vnet_rules).with_ipv6(ipv6_rules),
        // Read for their rules and counters only: the compiled table is
        // written again from the policy.
        compiled_lookup: false,
    })
}

/// Logs what a migration carried over (or could not).
pub(super) fn log_inherited(
    dir: &PinDir,
    fresh: &[&'static str],
    outcome: &Result<Predecessor, DataplaneError>,
) {
    match outcome {
        Ok(old) if old.has_rules() => tracing::info!(
            pin_dir = %dir.root().display(),
            generation = old.generation(),
            ecs = %serde_json::json!({ "vaultfw": { "new_maps": fresh } }),
            "moving the filter to new maps: rules, their hit slots and every counter carried over"
        ),
        Ok(old) => tracing::warn!(
            pin_dir = %dir.root().display(),
            generation = old.generation(),
            ecs = %serde_json::json!({ "vaultfw": { "new_maps": fresh } }),
            "moving the filter to new maps: counters carried over, but the replaced rules could not be read, so rules may get other hit slots"
        ),
        Err(error) => tracing::warn!(
            pin_dir = %dir.root().display(),
            %error,
            ecs = %serde_json::json!({ "vaultfw": { "new_maps": fresh } }),
            "moving the filter to new maps: the replaced maps could not be read, so counters start from zero"
        ),
    }
}
