//! Which policy rule owns each per-rule hit slot (`VFW_RULE_HITS`),
//! resolved once from the policy and the table contents compiled from it.
//! Telemetry (hit counts, access-log events), the daemon (`rules list`) and
//! `check` (the matched rule in the policy's words) all read this table
//! instead of working ownership out again.
//!
//! The slots (firewall-common `HitSlots`): an IP rule's slot is its trie
//! value; every prefix of one virtual network rule shares that rule's slot;
//! trusted service `i` of the catalogue has slot `trusted(i)`.

use std::collections::BTreeMap;

use firewall_common::{HitSlots, Verdict};
use serde::Serialize;

use super::{CompiledTables, Prefix6Key, PrefixKey, Vnet6PrefixKey, VnetPrefixKey, endpoint_key};
use crate::links::InterfaceIndex;
use crate::policy::{Policy, catalogue};

/// The kinds of rule that count hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// An IP rule (`ip_rules`; the IP-rule trie).
    Ip,
    /// A virtual network rule (`virtual_network_rules`; the virtual-network
    /// trie).
    Vnet,
    /// A trusted service of the catalogue (the trusted-services tries).
    Trusted,
    /// A private endpoint (`private_endpoints`; entries of the
    /// virtual-network trie, so the kernel's verdict is the subnet rules'
    /// `allow_vnet_rule`; the endpoint has its own hit slot).
    PrivateEndpoint,
    /// An IPv6 IP rule (`ip_rules`, a value with a `:`; `policy.ipv6_rules`,
    /// the IPv6 IP-rule trie).
    Ip6,
}

impl RuleKind {
    /// The label used in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            RuleKind::Ip => "ip",
            RuleKind::Vnet => "vnet",
            RuleKind::Trusted => "trusted",
            RuleKind::PrivateEndpoint => "private_endpoint",
            RuleKind::Ip6 => "ip6",
        }
    }

    /// The verdict a match in this kind's trie leads to.
    pub const fn verdict(self) -> Verdict {
        match self {
            RuleKind::Trusted => Verdict::AllowTrustedService,
            RuleKind::Ip | RuleKind::Ip6 => Verdict::AllowIpRule,
            RuleKind::Vnet | RuleKind::PrivateEndpoint => Verdict::AllowVnetRule,
        }
    }
}

/// A rule as operators name it, and where it sits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RuleRef {
    /// Its kind.
    pub kind: RuleKind,
    /// `203.0.113.0/24` (a /32 as the bare address), the subnet rule's id,
    /// or the trusted service's catalogue name.
    pub name: String,
    /// Its position: in `policy.ip_rules`, in
    /// `policy.virtual_network_rules`, or in the trusted-service catalogue
    /// ([`catalogue`]), by `kind`. Not part of the rule's shown identity.
    #[serde(skip)]
    pub index: usize,
}

/// Hit slot → the rule that owns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleTable(BTreeMap<u32, RuleRef>);

impl RuleTable {
    /// The rule that owns hit slot `slot`, if any.
    pub fn get(&self, slot: u32) -> Option<&RuleRef> {
        self.0.get(&slot)
    }

    /// The position of the rule of `kind` that owns `slot` (in
    /// `policy.ip_rules`, `policy.virtual_network_rules` or the catalogue, by
    /// `kind`); `None` when no rule of that kind owns it.
    pub fn owner_index(&self, slot: u32, kind: RuleKind) -> Option<usize> {
        self.get(slot).filter(|r| r.kind == kind).map(|r| r.index)
    }

    /// (slot, owner) in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &RuleRef)> {
        self.0.iter().map(|(slot, r)| (*slot, r))
    }
}

impl IntoIterator for RuleTable {
    type Item = (u32, RuleRef);
    type IntoIter = std::collections::btree_map::IntoIter<u32, RuleRef>;

    /// (slot, owner) in slot order.
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Hit slot → rule, for the rules `tables` (compiled from `policy` against
/// `interfaces`, slots laid out by `slots`) holds: every IP rule with an
/// entry, every virtual network rule with at least one entry (a rule waiting
/// for its interface has none, and no slot), and every enabled trusted
/// service.
///
/// A prefix two virtual network rules hold under the same endpoint compiles
/// to one entry carrying the first rule's slot (in policy order, see
/// [`super::compile_next`]); walking the policy in order and keeping the
/// first owner of a slot gives that same rule.
pub fn rule_table(
    policy: &Policy,
    interfaces: &InterfaceIndex,
    tables: &CompiledTables,
    slots: HitSlots,
) -> RuleTable {
    let mut owners = BTreeMap::new();
    for (index, rule) in policy.ip_rules.iter().enumerate() {
        if let Some(value) = tables.ip_rules.get(&PrefixKey::from(rule.network)) {
            owners.entry(value.slot).or_insert(RuleRef {
                kind: RuleKind::Ip,
                name: rule.to_string(),
                index,
            });
        }
    }
    for (index, rule) in policy.ipv6_rules.iter().enumerate() {
        if let Some(value) = tables.ip6_rules.get(&Prefix6Key::from(rule.network)) {
            owners.entry(value.slot).or_insert(RuleRef {
                kind: RuleKind::Ip6,
                name: rule.to_string(),
                index,
            });
        }
    }
    for (index, rule) in policy.virtual_network_rules.iter().enumerate() {
        let Some((ifindex, vlan)) = endpoint_key(&rule.endpoint, interfaces) else {
            continue;
        };
        let slot = rule
            .address_prefixes
            .iter()
            .find_map(|prefix| {
                let key = VnetPrefixKey {
                    ifindex,
                    vlan,
                    prefix: (*prefix).into(),
                };
                tables.vnet_rules.get(&key).map(|v| v.slot)
            })
            .or_else(|| {
                rule.address_prefixes_v6.iter().find_map(|prefix| {
                    let key = Vnet6PrefixKey {
                        ifindex,
                        vlan,
                        prefix: (*prefix).into(),
                    };
                    tables.vnet6_rules.get(&key).map(|v| v.slot)
                })
            });
        if let Some(slot) = slot {
            owners.entry(slot).or_insert(RuleRef {
                kind: RuleKind::Vnet,
                name: rule.id.clone(),
                index,
            });
        }
    }
    for (index, endpoint) in policy.private_endpoints.iter().enumerate() {
        let Some(&ifindex) = interfaces.get(&endpoint.interface) else {
            continue;
        };
        let slot = endpoint.allowed_prefixes.iter().find_map(|prefix| {
            let key = VnetPrefixKey {
                ifindex,
                vlan: firewall_common::VLAN_ANY,
                prefix: (*prefix).into(),
            };
            tables.vnet_rules.get(&key).map(|v| v.slot)
        });
        if let Some(slot) = slot {
            owners.entry(slot).or_insert(RuleRef {
                kind: RuleKind::PrivateEndpoint,
                name: endpoint.interface.clone(),
                index,
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
                    index,
                },
            );
        }
    }
    RuleTable(owners)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile, hit_slots_for};
    use crate::policy::parse_toml;

    #[test]
    fn every_rule_kind_finds_its_slot_and_its_place_in_the_policy() {
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
        let slots = hit_slots_for(&policy);
        let owners = rule_table(&policy, &interfaces, &tables, slots);
        let names: Vec<(u32, &str, &str, usize)> = owners
            .iter()
            .map(|(slot, r)| (slot, r.kind.name(), r.name.as_str(), r.index))
            .collect();
        let backup = catalogue()
            .iter()
            .position(|s| s.name == "AzureBackup")
            .unwrap();
        assert_eq!(
            names,
            vec![
                // Validation sorts IP rules by address.
                (0, "ip", "198.51.100.7", 0),
                (1, "ip", "203.0.113.0/24", 1),
                (slots.vnet(0), "vnet", "vnet/subnets/a", 0),
                (
                    slots.trusted(backup as u32),
                    "trusted",
                    "AzureBackup",
                    backup
                ),
            ]
        );
    }

    #[test]
    fn a_prefix_two_subnet_rules_share_under_one_endpoint_belongs_to_the_first() {
        let policy = parse_toml(
            r#"
default_action = "Deny"
[[virtual_network_rules]]
id = "vnet/subnets/first"
address_prefixes = ["10.1.2.0/24"]
endpoint = { vlan = 120 }
[[virtual_network_rules]]
id = "vnet/subnets/second"
address_prefixes = ["10.1.2.0/24"]
endpoint = { vlan = 120 }
"#,
        )
        .expect("valid")
        .policy;
        let interfaces = InterfaceIndex::new();
        let tables = compile(&policy, &interfaces, &crate::clock::MonotonicClock::now());
        let owners = rule_table(&policy, &interfaces, &tables, hit_slots_for(&policy));
        let entry_slot = tables.vnet_rules.values().next().expect("one entry").slot;
        assert_eq!(tables.vnet_rules.len(), 1);
        let owner = owners
            .get(entry_slot)
            .expect("the entry's slot has an owner");
        assert_eq!(owner.name, "vnet/subnets/first");
        assert_eq!(owner.index, 0);
    }
}
