//! Deterministic adversarial IPv4 prefix sets for the compiled table's
//! differential checks (unit tests, the program tests and `cargo xtask
//! fuzz`): every prefix length 0–32, deeply nested chains, thousands of
//! /32s in one /16, a /1 beside /32s and 0.0.0.0/0, and subnet entries in
//! overlapping endpoint scopes, filled up with random prefixes to a size.

use firewall_common::{HitSlots, IFINDEX_ANY, RuleValue, VLAN_ANY};

use super::super::{CompiledTables, PrefixKey, VnetPrefixKey};

/// SplitMix64: a seeded, reproducible stream (the sets must be the same on
/// every run, so a failure can be replayed from its seed).
#[derive(Clone, Debug)]
pub struct Stream(u64);

impl Stream {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Self {
        Stream(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `bound` (> 0).
    pub fn below(&mut self, bound: u32) -> u32 {
        (self.next_u64() % u64::from(bound)) as u32
    }
}

/// The prefix of length `len` containing host-order `addr`.
pub fn prefix(addr: u32, len: u32) -> PrefixKey {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    PrefixKey {
        prefix_len: len,
        octets: (addr & mask).to_be_bytes(),
    }
}

/// Endpoints of the subnet entries: interfaces 1 (where BPF_PROG_TEST_RUN
/// frames arrive: loopback) and 7, VLANs 10 and 20, and the wildcards, so
/// every lookup order case occurs.
pub const SCOPES: [(u32, u32); 5] = [
    (1, VLAN_ANY),
    (7, VLAN_ANY),
    (1, 10),
    (IFINDEX_ANY, 10),
    (IFINDEX_ANY, 20),
];

/// Host-order sources worth probing for `tables`: each prefix's first and
/// last address and their neighbours, 0 and 255.255.255.255.
pub fn edges(tables: &CompiledTables) -> Vec<u32> {
    let keys = tables
        .ip_rules
        .keys()
        .chain(tables.trusted.keys())
        .chain(tables.vnet_rules.keys().map(|k| &k.prefix));
    let mut out = vec![0, u32::MAX];
    for key in keys {
        let start = u32::from_be_bytes(key.octets);
        let end = start | (u32::MAX.checked_shr(key.prefix_len).unwrap_or(0));
        for a in [
            start.wrapping_sub(1),
            start,
            start.wrapping_add(1),
            end.wrapping_sub(1),
            end,
            end.wrapping_add(1),
        ] {
            out.push(a);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// An adversarial set of `size` IP rules (at least the fixed cases: about
/// 2,200 from a `size` of 3,000 on, about 110 below) from `seed`, in the
/// hit-slot layout `slots` (which must hold the IP rules, and 40
/// virtual network rules): IP rules with distinct hit slots (one in seven
/// with an expiry, long past or centuries ahead, so no verdict depends on
/// the moment), trusted-service prefixes, and subnet entries in
/// [`SCOPES`].
pub fn adversarial(seed: u64, size: u32, slots: HitSlots) -> CompiledTables {
    let mut rng = Stream::new(seed);
    let mut t = CompiledTables::empty();
    let full = size >= 3000;
    let mut slot = 0u32;
    let mut ip = |t: &mut CompiledTables, key: PrefixKey, rng: &mut Stream| {
        if t.ip_rules.contains_key(&key) {
            return;
        }
        let at = slots.ip(slot);
        slot += 1;
        let value = match rng.below(14) {
            0 => RuleValue::expiring(at, 1000 + u64::from(rng.below(1000))),
            1 => RuleValue::expiring(at, 1 << 62),
            _ => RuleValue::new(at),
        };
        t.ip_rules.insert(key, value);
    };
    // Every length, nested around one address and scattered elsewhere.
    let anchor = rng.next_u64() as u32;
    for len in 0..=32 {
        ip(&mut t, prefix(anchor, len), &mut rng);
        ip(&mut t, prefix(rng.next_u64() as u32, len), &mut rng);
    }
    // Deep chains: every other length down to /32, a few anchors.
    for _ in 0..if full { 8 } else { 1 } {
        let a = rng.next_u64() as u32;
        for len in (rng.below(4)..=32).step_by(2) {
            ip(&mut t, prefix(a, len), &mut rng);
        }
    }
    // Thousands of /32s in one /16, with the /16 and some /24s.
    let dense = 0x0A14_0000; // 10.20.0.0/16
    ip(&mut t, prefix(dense, 16), &mut rng);
    for _ in 0..if full { 2000 } else { 20 } {
        ip(&mut t, prefix(dense | rng.below(1 << 16), 32), &mut rng);
    }
    for _ in 0..16 {
        ip(&mut t, prefix(dense | rng.below(1 << 16), 24), &mut rng);
    }
    // A /1 beside /32s at its edges, and the default route.
    ip(&mut t, prefix(0x8000_0000, 1), &mut rng);
    for a in [0x7FFF_FFFF, 0x8000_0000, 0x8000_0001, 0xFFFF_FFFF, 0] {
        ip(&mut t, prefix(a, 32), &mut rng);
    }
    // Trusted services: the default route, overlapping the IP rules.
    let trusted = |t: &mut CompiledTables, key: PrefixKey, n: u32| {
        t.trusted.insert(key, RuleValue::new(slots.trusted(n % 16)));
    };
    trusted(&mut t, prefix(0, 0), 0);
    trusted(&mut t, prefix(dense, 20), 1);
    for n in 2..if full { 200 } else { 12 } {
        let len = 8 + rng.below(25);
        trusted(&mut t, prefix(rng.next_u64() as u32, len), n % 16);
    }
    // Subnet entries in overlapping scopes, same prefixes in several.
    for n in 0..if full { 300u32 } else { 20 } {
        let len = rng.below(33);
        let a = if n % 3 == 0 {
            dense | rng.below(1 << 16)
        } else {
            rng.next_u64() as u32
        };
        let key = prefix(a, len);
        let rule = n % 40;
        for (i, &(ifindex, vlan)) in SCOPES.iter().enumerate() {
            if !(n as usize + i).is_multiple_of(3) {
                t.vnet_rules.insert(
                    VnetPrefixKey {
                        ifindex,
                        vlan,
                        prefix: key,
                    },
                    RuleValue::new(slots.vnet(rule)),
                );
            }
        }
    }
    // Fill up with random prefixes, mostly long as real rule sets are.
    while (t.ip_rules.len() as u32) < size {
        let len = match rng.below(4) {
            0 => 16 + rng.below(9),
            1 => 24,
            _ => 25 + rng.below(8),
        };
        ip(&mut t, prefix(rng.next_u64() as u32, len), &mut rng);
    }
    t
}
