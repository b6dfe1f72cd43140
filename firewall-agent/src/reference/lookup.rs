//! Longest-prefix matches over the compiled tables, the way the kernel's
//! LPM tries answer them: of the entries whose first `prefix_len` bits equal
//! the address's, the longest wins. Written as a scan, not a trie: slow and
//! obviously right is what a reference wants.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use firewall_common::RuleValue;

use crate::compile::{Prefix6Key, PrefixKey, Vnet6PrefixKey, VnetPrefixKey};

/// Whether the first `key.prefix_len` bits of `addr` equal the key's.
/// A key longer than 32 bits matches nothing (the kernel refuses it).
pub fn covers(key: &PrefixKey, addr: Ipv4Addr) -> bool {
    let len = key.prefix_len;
    if len > 32 {
        return false;
    }
    if len == 0 {
        return true;
    }
    let network = u32::from_be_bytes(key.octets);
    let address = u32::from(addr);
    let ignored = 32 - len;
    // len is 1..=32, so the shift is 0..=31.
    (network >> ignored) == (address >> ignored)
}

/// Whether the first `key.prefix_len` bits of `addr` equal the key's
/// (IPv6: 128 bits). A key longer than 128 bits matches nothing.
pub fn covers6(key: &Prefix6Key, addr: Ipv6Addr) -> bool {
    let len = key.prefix_len;
    if len > 128 {
        return false;
    }
    if len == 0 {
        return true;
    }
    let network = u128::from_be_bytes(key.octets);
    let address = u128::from(addr);
    let ignored = 128 - len;
    // len is 1..=128, so the shift is 0..=127.
    (network >> ignored) == (address >> ignored)
}

/// [`longest`] over IPv6 entries.
pub fn longest6(
    entries: &BTreeMap<Prefix6Key, RuleValue>,
    addr: Ipv6Addr,
) -> Option<(Prefix6Key, RuleValue)> {
    entries
        .iter()
        .filter(|(key, _)| covers6(key, addr))
        .max_by_key(|(key, _)| key.prefix_len)
        .map(|(key, value)| (*key, *value))
}

/// [`longest_at_endpoint`] over IPv6 entries.
pub fn longest6_at_endpoint(
    entries: &BTreeMap<Vnet6PrefixKey, RuleValue>,
    ifindex: u32,
    vlan: u32,
    addr: Ipv6Addr,
) -> Option<(Vnet6PrefixKey, RuleValue)> {
    entries
        .iter()
        .filter(|(key, _)| key.ifindex == ifindex && key.vlan == vlan && covers6(&key.prefix, addr))
        .max_by_key(|(key, _)| key.prefix.prefix_len)
        .map(|(key, value)| (*key, *value))
}

/// The longest prefix of `entries` that covers `addr`, with its value.
pub fn longest(
    entries: &BTreeMap<PrefixKey, RuleValue>,
    addr: Ipv4Addr,
) -> Option<(PrefixKey, RuleValue)> {
    entries
        .iter()
        .filter(|(key, _)| covers(key, addr))
        .max_by_key(|(key, _)| key.prefix_len)
        .map(|(key, value)| (*key, *value))
}

/// The longest virtual-network prefix covering `addr` among the entries
/// bound to exactly the endpoint (`ifindex`, `vlan`).
pub fn longest_at_endpoint(
    entries: &BTreeMap<VnetPrefixKey, RuleValue>,
    ifindex: u32,
    vlan: u32,
    addr: Ipv4Addr,
) -> Option<(VnetPrefixKey, RuleValue)> {
    entries
        .iter()
        .filter(|(key, _)| key.ifindex == ifindex && key.vlan == vlan && covers(&key.prefix, addr))
        .max_by_key(|(key, _)| key.prefix.prefix_len)
        .map(|(key, value)| (*key, *value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(octets: [u8; 4], prefix_len: u32) -> PrefixKey {
        PrefixKey { prefix_len, octets }
    }

    #[test]
    fn prefix_edges_at_0_23_29_and_32() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(covers(&key([0, 0, 0, 0], 0), a("255.255.255.255")));
        assert!(covers(&key([203, 0, 113, 10], 32), a("203.0.113.10")));
        assert!(!covers(&key([203, 0, 113, 10], 32), a("203.0.113.11")));
        assert!(covers(&key([203, 0, 113, 8], 29), a("203.0.113.15")));
        assert!(!covers(&key([203, 0, 113, 8], 29), a("203.0.113.16")));
        assert!(covers(&key([198, 51, 100, 0], 23), a("198.51.101.255")));
        assert!(!covers(&key([198, 51, 100, 0], 23), a("198.51.102.0")));
        // The byte-reversed twin is another address.
        assert!(!covers(&key([203, 0, 113, 10], 32), a("10.113.0.203")));
        assert!(!covers(&key([1, 2, 3, 4], 33), a("1.2.3.4")));
    }

    #[test]
    fn the_longest_covering_prefix_wins() {
        let entries = BTreeMap::from([
            (key([203, 0, 113, 0], 24), RuleValue::new(0)),
            (key([203, 0, 113, 0], 28), RuleValue::new(1)),
            (key([203, 0, 0, 0], 16), RuleValue::new(2)),
        ]);
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            longest(&entries, a("203.0.113.5")).map(|m| m.1.slot),
            Some(1)
        );
        assert_eq!(
            longest(&entries, a("203.0.113.200")).map(|m| m.1.slot),
            Some(0)
        );
        assert_eq!(longest(&entries, a("203.0.9.9")).map(|m| m.1.slot), Some(2));
        assert_eq!(longest(&entries, a("198.51.100.7")), None);
    }
}
