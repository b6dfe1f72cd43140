//! Random public IPv4 prefixes (/16–/32) that the policy validator accepts,
//! random addresses inside and outside them, and a deterministic PRNG so a
//! run can be repeated.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// xorshift64*: small, fast, deterministic; good enough to scatter
/// addresses over the trie.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.next_u32()) * u64::from(n)) >> 32) as u32
    }
}

/// Whether the validator accepts `net` as an IP rule (public space only).
fn acceptable(net: &Ipv4Net) -> bool {
    vaultfw::policy::parse_ip_rule("bench", &net.to_string()).is_ok()
}

/// `n` distinct random prefixes of length 16–32 from public space, each one
/// the validator accepts as an IP rule; none in `exclude`.
pub fn random_public_prefixes(n: usize, rng: &mut Rng, exclude: &HashSet<Ipv4Net>) -> Vec<Ipv4Net> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let len = 16 + rng.below(17) as u8;
        let net = Ipv4Net::new(Ipv4Addr::from(rng.next_u32()), len)
            .expect("invariant: 16..=32 is a valid prefix length")
            .trunc();
        if exclude.contains(&net) || seen.contains(&net) || !acceptable(&net) {
            continue;
        }
        seen.insert(net);
        out.push(net);
    }
    out
}

/// Longest-prefix membership over a rule set, in user space: one hash set
/// per prefix length.
pub struct Matcher {
    by_len: Vec<HashSet<u32>>,
}

impl Matcher {
    pub fn new(prefixes: &[Ipv4Net]) -> Matcher {
        let mut by_len = vec![HashSet::new(); 33];
        for p in prefixes {
            by_len[p.prefix_len() as usize].insert(u32::from(p.network()));
        }
        Matcher { by_len }
    }

    /// Whether any prefix covers `addr`.
    pub fn covers(&self, addr: u32) -> bool {
        (0..=32u32).any(|len| {
            let set = &self.by_len[len as usize];
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            !set.is_empty() && set.contains(&(addr & mask))
        })
    }
}

/// A random address inside `net`.
pub fn inside(net: &Ipv4Net, rng: &mut Rng) -> [u8; 4] {
    let host_bits = 32 - u32::from(net.prefix_len());
    let host = if host_bits == 0 {
        0
    } else {
        rng.next_u32() & (u32::MAX >> (32 - host_bits))
    };
    (u32::from(net.network()) | host).to_be_bytes()
}

/// A random public address that no prefix of `matcher` covers.
pub fn outside(matcher: &Matcher, rng: &mut Rng) -> [u8; 4] {
    loop {
        let addr = rng.next_u32();
        let single = Ipv4Net::new(Ipv4Addr::from(addr), 32).expect("invariant: /32");
        if !matcher.covers(addr) && acceptable(&single) {
            return addr.to_be_bytes();
        }
    }
}

/// The prefixes as text, one per line (the veth bench reads these).
pub fn to_lines(prefixes: &[Ipv4Net]) -> String {
    let mut text = String::with_capacity(prefixes.len() * 20);
    for p in prefixes {
        text.push_str(&p.to_string());
        text.push('\n');
    }
    text
}

/// A native-format policy: default Deny, these IP rules, one subnet rule
/// bound to VLAN 120 (so the VLAN path has an endpoint to look up), TCP
/// 443 guarded; limits sized to `capacity` IP rules.
pub fn policy_toml(prefixes: &[Ipv4Net], capacity: usize) -> String {
    let mut text = format!(
        "default_action = \"Deny\"\nbypass = \"None\"\n\
         limits = {{ ip_rules = {capacity}, virtual_network_rules = 1 }}\nip_rules = [\n"
    );
    for p in prefixes {
        text.push_str(&format!("  \"{p}\",\n"));
    }
    text.push_str(
        "]\n\n[data_plane]\ntcp_ports = [443]\n\n[[virtual_network_rules]]\n\
         id = \"vnet-bench/subnets/vlan120\"\naddress_prefixes = [\"10.1.2.0/24\"]\n\
         endpoint = { vlan = 120 }\n",
    );
    text
}
