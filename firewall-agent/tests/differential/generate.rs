//! The generator of the differential tests: a seeded xorshift, random
//! table sets (flags, ports, prefixes, endpoints) and random frames aimed at
//! them — valid, edge and malformed.

use firewall_common::{
    FLAG_AUDIT, FLAG_BYPASS_TRUSTED, FLAG_DEFAULT_ALLOW, FLAG_IPV6_ALLOW, FLAG_VALID, IFINDEX_ANY,
    PORT_PROTO_TCP, PORT_PROTO_UDP, RuleValue, VLAN_ANY, port_slot,
};
use vaultfw::compile::{CompiledTables, Prefix6Key, PrefixKey, Vnet6PrefixKey, VnetPrefixKey};

/// BPF_PROG_TEST_RUN judges frames as received on the loopback device.
pub const TEST_RUN_IFINDEX: u32 = 1;
/// Another ifindex that endpoint-bound entries can name.
pub const OTHER_IFINDEX: u32 = 7;
/// The longest frame the test run hands over in one buffer (see
/// `vaultfw::check::MAX_TEST_RUN_FRAME`).
pub const MAX_TEST_RUN_FRAME: usize = vaultfw::check::MAX_TEST_RUN_FRAME;

/// xorshift64*: small, fast and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.below(hi_inclusive - lo + 1)
    }
    /// True with probability `percent` %.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    fn u8(&mut self) -> u8 {
        self.next() as u8
    }
    fn u16(&mut self) -> u16 {
        self.next() as u16
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// A table set and what frames should aim at to exercise it.
pub struct Scenario {
    /// The table set.
    pub tables: CompiledTables,
    tcp_ports: Vec<u16>,
    udp_ports: Vec<u16>,
    /// Every prefix of every trie: sources are drawn inside them.
    prefixes: Vec<PrefixKey>,
    /// Every prefix of every IPv6 trie: IPv6 sources are drawn inside them.
    prefixes6: Vec<Prefix6Key>,
    /// VLAN ids the endpoints name.
    vlans: Vec<u16>,
}

fn random_prefix6(rng: &mut Rng) -> Prefix6Key {
    let prefix_len = match rng.below(20) {
        0 => 0,
        1 => 128,
        2..=5 => rng.range(100, 127) as u32,
        _ => rng.range(8, 64) as u32,
    };
    let addr = (u128::from(rng.next()) << 64) | u128::from(rng.next());
    let mask = if prefix_len == 0 {
        0
    } else {
        u128::MAX << (128 - prefix_len)
    };
    Prefix6Key {
        prefix_len,
        octets: (addr & mask).to_be_bytes(),
    }
}

/// An IPv6 source: inside one of the scenario's IPv6 prefixes, or random.
fn source6(rng: &mut Rng, s: &Scenario) -> [u8; 16] {
    let random = (u128::from(rng.next()) << 64) | u128::from(rng.next());
    if s.prefixes6.is_empty() || rng.chance(35) {
        return random.to_be_bytes();
    }
    let key = rng.pick(&s.prefixes6);
    let host_bits = 128 - key.prefix_len.min(128);
    let host = if host_bits == 0 {
        0
    } else {
        random & (u128::MAX >> (128 - host_bits))
    };
    (u128::from_be_bytes(key.octets) | host).to_be_bytes()
}

fn random_prefix(rng: &mut Rng) -> PrefixKey {
    let prefix_len = match rng.below(20) {
        0 => 0,
        1 => 32,
        2..=5 => rng.range(24, 31) as u32,
        _ => rng.range(8, 30) as u32,
    };
    let addr = rng.next() as u32;
    let mask = if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - prefix_len)
    };
    PrefixKey {
        prefix_len,
        octets: (addr & mask).to_be_bytes(),
    }
}

/// An entry for hit slot `slot`: mostly without expiry, else one that
/// expired long ago (monotonic 1 ns) or expires far ahead.
fn random_value(rng: &mut Rng, slot: u32) -> RuleValue {
    match rng.below(10) {
        0 => RuleValue::expiring(slot, 1),
        1 => RuleValue::expiring(slot, u64::MAX),
        _ => RuleValue::new(slot),
    }
}

pub fn random_scenario(rng: &mut Rng) -> Scenario {
    let mut tables = CompiledTables::empty();
    tables.flags = FLAG_VALID;
    for (flag, percent) in [
        (FLAG_DEFAULT_ALLOW, 15),
        (FLAG_BYPASS_TRUSTED, 50),
        (FLAG_AUDIT, 20),
        (FLAG_IPV6_ALLOW, 30),
    ] {
        if rng.chance(percent) {
            tables.flags |= flag;
        }
    }
    let mut tcp_ports = Vec::new();
    if rng.chance(85) {
        tcp_ports.push(443);
    }
    for _ in 0..rng.below(4) {
        tcp_ports.push(if rng.chance(50) {
            rng.pick(&[22, 80, 8443, 0, 65535])
        } else {
            rng.u16()
        });
    }
    let mut udp_ports = Vec::new();
    if rng.chance(50) {
        for _ in 0..rng.range(1, 3) {
            udp_ports.push(if rng.chance(50) {
                rng.pick(&[443, 4433, 53])
            } else {
                rng.u16()
            });
        }
    }
    for (proto, ports) in [(PORT_PROTO_TCP, &tcp_ports), (PORT_PROTO_UDP, &udp_ports)] {
        for &port in ports {
            let (word, bit) = port_slot(0, proto, port);
            tables.port_words[word as usize] |= bit;
        }
    }
    let vlans: Vec<u16> = (0..3).map(|_| rng.range(1, 4094) as u16).collect();
    let mut prefixes = Vec::new();
    for id in 0..rng.below(16) {
        let key = random_prefix(rng);
        tables.ip_rules.insert(key, random_value(rng, id as u32));
        prefixes.push(key);
    }
    for id in 0..rng.below(10) {
        let key = random_prefix(rng);
        tables.trusted.insert(key, random_value(rng, id as u32));
        prefixes.push(key);
    }
    for id in 0..rng.below(10) {
        let ifindex = rng.pick(&[
            TEST_RUN_IFINDEX,
            TEST_RUN_IFINDEX,
            OTHER_IFINDEX,
            IFINDEX_ANY,
        ]);
        let vlan = if rng.chance(40) {
            VLAN_ANY
        } else {
            u32::from(rng.pick(&vlans))
        };
        let prefix = random_prefix(rng);
        tables.vnet_rules.insert(
            VnetPrefixKey {
                ifindex,
                vlan,
                prefix,
            },
            random_value(rng, id as u32),
        );
        prefixes.push(prefix);
    }
    let mut prefixes6 = Vec::new();
    for id in 0..rng.below(12) {
        let key = random_prefix6(rng);
        tables.ip6_rules.insert(key, random_value(rng, id as u32));
        prefixes6.push(key);
    }
    for id in 0..rng.below(8) {
        let key = random_prefix6(rng);
        tables.trusted6.insert(key, random_value(rng, id as u32));
        prefixes6.push(key);
    }
    for id in 0..rng.below(8) {
        let ifindex = rng.pick(&[
            TEST_RUN_IFINDEX,
            TEST_RUN_IFINDEX,
            OTHER_IFINDEX,
            IFINDEX_ANY,
        ]);
        let vlan = if rng.chance(40) {
            VLAN_ANY
        } else {
            u32::from(rng.pick(&vlans))
        };
        let prefix = random_prefix6(rng);
        tables.vnet6_rules.insert(
            Vnet6PrefixKey {
                ifindex,
                vlan,
                prefix,
            },
            random_value(rng, id as u32),
        );
        prefixes6.push(prefix);
    }
    Scenario {
        tables,
        tcp_ports,
        udp_ports,
        prefixes,
        prefixes6,
        vlans,
    }
}

fn source(rng: &mut Rng, s: &Scenario) -> [u8; 4] {
    if s.prefixes.is_empty() || rng.chance(35) {
        return (rng.next() as u32).to_be_bytes();
    }
    let key = rng.pick(&s.prefixes);
    let host_bits = 32 - key.prefix_len.min(32);
    let host = if host_bits == 0 {
        0
    } else {
        (rng.next() as u32) & (u32::MAX >> (32 - host_bits))
    };
    (u32::from_be_bytes(key.octets) | host).to_be_bytes()
}

fn dport(rng: &mut Rng, s: &Scenario, tcp: bool) -> u16 {
    let ports = if tcp { &s.tcp_ports } else { &s.udp_ports };
    if !ports.is_empty() && rng.chance(60) {
        rng.pick(ports)
    } else if rng.chance(30) {
        rng.pick(&[22, 443, 80, 53, 4433])
    } else {
        rng.u16()
    }
}

fn ethernet(rng: &mut Rng, s: &Scenario, ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x0c];
    let tags = match rng.below(20) {
        0..=9 => 0,
        10..=14 => 1,
        15..=17 => 2,
        _ => 3,
    };
    for _ in 0..tags {
        let tpid: u16 = rng.pick(&[0x8100, 0x88A8]);
        let vid = match rng.below(10) {
            0 => 0,
            1 => rng.u16() & 0x0FFF,
            _ => rng.pick(&s.vlans),
        };
        // Priority bits above the VID are not part of it.
        let tci = (u16::from(rng.u8() & 0xF0) << 8) | vid;
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A TCP or UDP header to `dport` with a short payload, or a cut one.
fn transport(rng: &mut Rng, tcp: bool, dport: u16) -> Vec<u8> {
    let mut l4 = rng.u16().to_be_bytes().to_vec();
    l4.extend_from_slice(&dport.to_be_bytes());
    if tcp {
        l4.extend_from_slice(&rng.bytes(8));
        let doff = if rng.chance(80) {
            5
        } else {
            rng.range(0, 15) as u8
        };
        l4.push(doff << 4);
        l4.push(0x02);
        l4.extend_from_slice(&rng.bytes(6));
    } else {
        l4.extend_from_slice(&[0, 8]);
        l4.extend_from_slice(&rng.bytes(2));
    }
    let payload = rng.below(24) as usize;
    l4.extend_from_slice(&rng.bytes(payload));
    if rng.chance(10) {
        l4.truncate(rng.below(l4.len() as u64) as usize);
    }
    l4
}

fn ipv4_frame(rng: &mut Rng, s: &Scenario) -> Vec<u8> {
    let mut f = ethernet(rng, s, 0x0800);
    let proto = match rng.below(20) {
        0..=8 => 6,
        9..=15 => 17,
        16..=17 => 1,
        _ => rng.u8(),
    };
    let ihl: u8 = match rng.below(20) {
        0..=11 => 5,
        12..=18 => rng.range(6, 15) as u8,
        _ => rng.range(0, 4) as u8,
    };
    let version = if rng.chance(97) { 4 } else { rng.u8() >> 4 };
    let options = usize::from(ihl.max(5) - 5) * 4;
    let payload = if proto == 6 || proto == 17 {
        let d = dport(rng, s, proto == 6);
        transport(rng, proto == 6, d)
    } else {
        let n = rng.below(40) as usize;
        rng.bytes(n)
    };
    let mut total = 20 + options + payload.len();
    match rng.below(20) {
        0 => total = usize::from(rng.u16()),
        1 => total = total.saturating_sub(rng.range(1, 30) as usize),
        2 => total += rng.range(1, 30) as usize,
        _ => {}
    }
    let frag: u16 = match rng.below(10) {
        0..=5 => 0,
        6 => 0x4000,
        7 => 0x2000,
        8 => 0x2000 | (rng.u16() & 0x1FFF),
        _ => rng.u16() & 0x1FFF,
    };
    f.push((version << 4) | ihl);
    f.push(rng.u8());
    f.extend_from_slice(&(total as u16).to_be_bytes());
    f.extend_from_slice(&rng.u16().to_be_bytes());
    f.extend_from_slice(&frag.to_be_bytes());
    f.push(rng.u8());
    f.push(proto);
    f.extend_from_slice(&rng.u16().to_be_bytes());
    f.extend_from_slice(&source(rng, s));
    f.extend_from_slice(&[192, 0, 2, 1]);
    let opts = rng.bytes(options);
    f.extend_from_slice(&opts);
    f.extend_from_slice(&payload);
    f
}

fn ipv6_frame(rng: &mut Rng, s: &Scenario) -> Vec<u8> {
    let mut f = ethernet(rng, s, 0x86DD);
    let count = match rng.below(10) {
        0..=3 => 0,
        4..=6 => rng.range(1, 3),
        _ => rng.range(4, 8),
    } as usize;
    let last: u8 = match rng.below(10) {
        0..=4 => 6,
        5..=7 => 17,
        8 => rng.pick(&[58, 59, 50]),
        _ => rng.u8(),
    };
    let kinds: Vec<u8> = (0..count).map(|_| rng.pick(&[0, 43, 60, 51, 44])).collect();
    let mut payload = Vec::new();
    for (i, &kind) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).copied().unwrap_or(last);
        match kind {
            44 => {
                let offset: u16 = if rng.chance(70) {
                    0
                } else {
                    rng.u16() & 0xFFF8
                };
                let m = u16::from(rng.chance(50));
                payload.push(next);
                payload.push(0);
                payload.extend_from_slice(&(offset | m).to_be_bytes());
                payload.extend_from_slice(&rng.bytes(4));
            }
            51 => {
                let len = if rng.chance(90) {
                    rng.range(1, 4)
                } else {
                    rng.u8().into()
                } as usize;
                payload.push(next);
                payload.push(len as u8);
                payload.extend_from_slice(&rng.bytes((len + 2) * 4 - 2));
            }
            _ => {
                let len = if rng.chance(90) {
                    rng.range(0, 2)
                } else {
                    rng.range(20, 70)
                } as usize;
                payload.push(next);
                payload.push(len as u8);
                payload.extend_from_slice(&rng.bytes((len + 1) * 8 - 2));
            }
        }
    }
    if last == 6 || last == 17 {
        let d = dport(rng, s, last == 6);
        payload.extend(transport(rng, last == 6, d));
    } else {
        let n = rng.below(16) as usize;
        payload.extend(rng.bytes(n));
    }
    let mut payload_len = payload.len();
    match rng.below(20) {
        0 => payload_len = usize::from(rng.u16()),
        1 => payload_len = payload_len.saturating_sub(rng.range(1, 40) as usize),
        2 => payload_len += rng.range(1, 16) as usize,
        _ => {}
    }
    let version = if rng.chance(97) { 6 } else { rng.u8() >> 4 };
    f.push(version << 4);
    f.extend_from_slice(&rng.bytes(3));
    f.extend_from_slice(&(payload_len as u16).to_be_bytes());
    f.push(kinds.first().copied().unwrap_or(last));
    f.push(64);
    f.extend_from_slice(&source6(rng, s));
    f.extend_from_slice(&rng.bytes(16));
    f.extend_from_slice(&payload);
    f
}

fn other_frame(rng: &mut Rng, s: &Scenario) -> Vec<u8> {
    let ethertype = match rng.below(6) {
        0 => 0x0806,
        1 => 0x88CC,
        2 => rng.range(0, 0x05FF) as u16,
        3 => rng.pick(&[0x0800, 0x86DD, 0x8100, 0x88A8]),
        _ => rng.u16(),
    };
    let mut f = ethernet(rng, s, ethertype);
    let n = rng.below(80) as usize;
    f.extend(rng.bytes(n));
    f
}

/// One generated frame: IPv4 most often, then IPv6, other EtherTypes and
/// random bytes; sometimes padded, bit-flipped or cut.
pub fn random_frame(rng: &mut Rng, s: &Scenario) -> Vec<u8> {
    let mut f = match rng.below(20) {
        0..=11 => ipv4_frame(rng, s),
        12..=16 => ipv6_frame(rng, s),
        17..=18 => other_frame(rng, s),
        _ => {
            let n = rng.range(14, 120) as usize;
            rng.bytes(n)
        }
    };
    if rng.chance(20) {
        // Ethernet padding / trailing bytes that are not part of the packet.
        let n = rng.range(1, 16) as usize;
        f.extend(rng.bytes(n));
    }
    if rng.chance(5) && f.len() > 14 {
        let at = rng.range(12, f.len() as u64 - 1) as usize;
        f[at] ^= 1 << rng.below(8);
    }
    if rng.chance(8) && f.len() > 14 {
        f.truncate(rng.range(14, f.len() as u64 - 1) as usize);
    }
    // BPF_PROG_TEST_RUN hands the program at most this much in one buffer
    // (a page less headroom and skb_shared_info); the rest would be
    // fragments the program never sees.
    f.truncate(MAX_TEST_RUN_FRAME);
    f
}
