//! Which rule owns each per-rule hit slot (`VFW_RULE_HITS`), so hits can be
//! shown next to their rule and allow events can name it. Pure: computed
//! from the policy and the table contents the kernel serves.
//!
//! The slots (firewall-common `HitSlots`): an IP rule's slot is its trie
//! value; every prefix of one virtual network rule shares that rule's slot;
//! trusted service `i` of the catalogue has slot `trusted(i)`.

use std::collections::BTreeMap;

use firewall_common::HitSlots;
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::compile::{CompiledTables, VnetPrefixKey, endpoint_key};
use crate::links::InterfaceIndex;
use crate::policy::{Policy, catalogue, shown};

/// The three kinds of rule that count hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// An IP rule (`ip_rules`).
    Ip,
    /// A virtual network rule (`virtual_network_rules`).
    Vnet,
    /// A trusted service of the catalogue.
    Trusted,
}

impl RuleKind {
    /// The label used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            RuleKind::Ip => "ip",
            RuleKind::Vnet => "vnet",
            RuleKind::Trusted => "trusted",
        }
    }
}

/// A rule as operators name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RuleRef {
    /// Its kind.
    pub kind: RuleKind,
    /// `203.0.113.0/24` (a /32 as the bare address), the subnet rule's id,
    /// or the trusted service's catalogue name.
    pub name: String,
}

/// Hit slot → rule, for the rules `tables` (what the kernel serves,
/// compiled from `policy` against `interfaces`) holds: every IP rule,
/// every virtual network rule with at least one entry (a rule waiting for
/// its interface has none, and no slot), and every enabled trusted service.
pub fn rule_slots(
    policy: &Policy,
    interfaces: &InterfaceIndex,
    tables: &CompiledTables,
    slots: HitSlots,
) -> BTreeMap<u32, RuleRef> {
    let mut owners = BTreeMap::new();
    for (key, value) in &tables.ip_rules {
        owners.insert(
            value.slot,
            RuleRef {
                kind: RuleKind::Ip,
                name: shown(Ipv4Net::from(*key)),
            },
        );
    }
    for rule in &policy.virtual_network_rules {
        let Some((ifindex, vlan)) = endpoint_key(&rule.endpoint, interfaces) else {
            continue;
        };
        let slot = rule.address_prefixes.iter().find_map(|prefix| {
            let key = VnetPrefixKey {
                ifindex,
                vlan,
                prefix: (*prefix).into(),
            };
            tables.vnet_rules.get(&key).map(|v| v.slot)
        });
        if let Some(slot) = slot {
            // A prefix another rule already holds under the same endpoint
            // counts for that rule (compile keeps the first in policy
            // order); `or_insert` keeps that first owner.
            owners.entry(slot).or_insert(RuleRef {
                kind: RuleKind::Vnet,
                name: rule.id.clone(),
            });
        }
    }
    for (index, service) in catalogue().iter().enumerate() {
        if policy
            .trusted_services
            .enabled
            .iter()
            .any(|s| s.name == service.name)
        {
            owners.insert(
                slots.trusted(index as u32),
                RuleRef {
                    kind: RuleKind::Trusted,
                    name: service.name.to_owned(),
                },
            );
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::policy::parse_toml;

    #[test]
    fn every_rule_kind_finds_its_slot() {
        let policy = parse_toml(
            r#"
default_action = "Deny"
ip_rules = ["203.0.113.0/24", "198.51.100.7"]
[[virtual_network_rules]]
id = "vnet/subnets/a"
address_prefixes = ["10.1.2.0/24", "10.9.0.0/16"]
endpoint = { vlan = 120 }
[trusted_services]
enabled = ["AzureBackup"]
"#,
        )
        .expect("valid")
        .policy;
        let interfaces = InterfaceIndex::new();
        let tables = compile(&policy, &interfaces, &crate::clock::MonotonicClock::now());
        let slots = crate::compile::hit_slots_for(&policy);
        let owners = rule_slots(&policy, &interfaces, &tables, slots);
        let names: Vec<(u32, &str, &str)> = owners
            .iter()
            .map(|(slot, r)| (*slot, r.kind.name(), r.name.as_str()))
            .collect();
        let backup = catalogue()
            .iter()
            .position(|s| s.name == "AzureBackup")
            .unwrap() as u32;
        assert_eq!(
            names,
            vec![
                (0, "ip", "198.51.100.7"),
                (1, "ip", "203.0.113.0/24"),
                (slots.vnet(0), "vnet", "vnet/subnets/a"),
                (slots.trusted(backup), "trusted", "AzureBackup"),
            ]
        );
    }
}
