//! Map names and the layout of every key and value the program and the
//! agent share.
//!
//! Policy changes are double-buffered (DESIGN.md section 2): there are two
//! *table sets*, 0 and 1, each with its own config slot, port bitmap and
//! rule tries. The program reads [`ACTIVE_SET`] once per frame and judges the
//! whole frame with that set; the agent fills the inactive set and then
//! flips the index with one array write, so no frame sees half a policy.
//!
//! Deadlines are judged by the program, so they hold with no daemon
//! running: an unconfirmed apply carries [`PolicyConfig::fallback_at_ns`]
//! (past it, the frame is judged with the other set: the previous
//! generation), and an expiring rule's entries carry
//! [`RuleValue::expires_at_ns`].
//! Both are CLOCK_MONOTONIC nanoseconds, the clock
//! `bpf_ktime_get_coarse_ns` reads (a few ms resolution; it does not
//! advance while the host is suspended, so a deadline falls that much later
//! in wall-clock time after a suspend).

/// Array<u32, 1>: slot 0 holds the active table set, 0 or 1.
pub const ACTIVE_SET: &str = "VFW_ACTIVE";
/// Array<[`PolicyConfig`], 2>: slot N is table set N's settings.
pub const POLICY_CONFIG: &str = "VFW_CONFIG";
/// Array<u32, [`PORT_BITMAP_WORDS`]>: data-plane destination ports.
pub const DATA_PLANE_PORTS: &str = "VFW_PORTS";
/// LpmTrie<[`Ipv4Key`], [`RuleValue`]> of table set 0's IP rules.
pub const IP_RULES_0: &str = "VFW_IP_RULES_0";
/// LpmTrie<[`Ipv4Key`], [`RuleValue`]> of table set 1's IP rules.
pub const IP_RULES_1: &str = "VFW_IP_RULES_1";
/// LpmTrie<[`VnetKey`], [`RuleValue`]> of table set 0's virtual network
/// rules.
pub const VNET_RULES_0: &str = "VFW_VNET_RULES_0";
/// LpmTrie<[`VnetKey`], [`RuleValue`]> of table set 1's virtual network
/// rules.
pub const VNET_RULES_1: &str = "VFW_VNET_RULES_1";
/// LpmTrie<[`Ipv4Key`], [`RuleValue`]> of table set 0's trusted-service
/// prefixes (consulted only with [`FLAG_BYPASS_TRUSTED`]).
pub const TRUSTED_0: &str = "VFW_TRUSTED_0";
/// LpmTrie<[`Ipv4Key`], [`RuleValue`]> of table set 1's trusted-service
/// prefixes.
pub const TRUSTED_1: &str = "VFW_TRUSTED_1";
/// LpmTrie<[`Ipv6Key`], [`RuleValue`]> of table set 0's IPv6 IP rules.
pub const IP6_RULES_0: &str = "VFW_IP6_RULES_0";
/// LpmTrie<[`Ipv6Key`], [`RuleValue`]> of table set 1's IPv6 IP rules.
pub const IP6_RULES_1: &str = "VFW_IP6_RULES_1";
/// LpmTrie<[`Vnet6Key`], [`RuleValue`]> of table set 0's virtual network
/// rules' IPv6 prefixes.
pub const VNET6_RULES_0: &str = "VFW_VNET6_RULES_0";
/// LpmTrie<[`Vnet6Key`], [`RuleValue`]> of table set 1's virtual network
/// rules' IPv6 prefixes.
pub const VNET6_RULES_1: &str = "VFW_VNET6_RULES_1";
/// LpmTrie<[`Ipv6Key`], [`RuleValue`]> of table set 0's trusted-service
/// IPv6 prefixes (consulted only with [`FLAG_BYPASS_TRUSTED`]).
pub const TRUSTED6_0: &str = "VFW_TRUSTED6_0";
/// LpmTrie<[`Ipv6Key`], [`RuleValue`]> of table set 1's trusted-service
/// IPv6 prefixes.
pub const TRUSTED6_1: &str = "VFW_TRUSTED6_1";
/// PerCpuArray<u64, [`VERDICT_SLOTS`]>: frames per (interface slot,
/// verdict), at index [`verdict_slot`]. Totals sum every interface slot.
pub const VERDICT_COUNTERS: &str = "VFW_VERDICTS";

/// Interface slots of the verdict counters: an interface counts in slot
/// `ifindex % INTERFACE_SLOTS` (the agent reports per interface when its
/// interfaces' slots differ, which they do unless 64 ifindexes apart).
pub const INTERFACE_SLOTS: u32 = 64;
/// Entries of [`VERDICT_COUNTERS`].
pub const VERDICT_SLOTS: u32 = INTERFACE_SLOTS * crate::Verdict::COUNT as u32;

/// The [`VERDICT_COUNTERS`] index of `verdict` for ingress `ifindex`.
#[inline(always)]
pub const fn verdict_slot(ifindex: u32, verdict: crate::Verdict) -> u32 {
    (ifindex % INTERFACE_SLOTS) * crate::Verdict::COUNT as u32 + verdict as u32
}

/// The index in this build's [`VERDICT_COUNTERS`] of counter `index` of a
/// verdict-counter map of `old_len` entries — one a build with another
/// number of verdicts pinned: the same interface slot and the same verdict.
/// Verdicts are only ever appended, so a verdict index keeps its meaning
/// across builds, while the row length (the verdict count) changes.
/// `None` when `old_len` is not [`INTERFACE_SLOTS`] rows, or the counter
/// is of a verdict this build does not know (a downgrade), or `index` lies
/// outside the old map.
pub const fn remap_verdict_slot(old_len: u32, index: u32) -> Option<u32> {
    if old_len == 0 || !old_len.is_multiple_of(INTERFACE_SLOTS) || index >= old_len {
        return None;
    }
    let old_count = old_len / INTERFACE_SLOTS;
    let (interface, verdict) = (index / old_count, index % old_count);
    match crate::Verdict::from_index(verdict) {
        Some(verdict) => Some(verdict_slot(interface, verdict)),
        None => None,
    }
}

/// PerCpuArray<[`RuleHits`]>: per-rule hit counters, indexed by the hit
/// slot the tries' values carry ([`RuleValue::slot`], see [`HitSlots`]);
/// sized by the agent.
pub const RULE_HITS: &str = "VFW_RULE_HITS";
/// RingBuf of [`AccessEvent`]s: the deny access log (and, on request,
/// allow events), rate-limited per CPU in the kernel.
pub const EVENTS: &str = "VFW_EVENTS";
/// LruHashMap<[`FlowKey`], u64>: when a UDP flow to the data plane last
/// produced an event (monotonic ns), so a flow logs once per window.
pub const FLOW_SEEN: &str = "VFW_FLOW_SEEN";
/// PerCpuArray<[`TokenBucket`], 1>: the event rate limiter of each CPU.
pub const EVENT_BUCKET: &str = "VFW_EVENT_BUCKET";
/// PerCpuArray<u64, [`TELEMETRY_COUNT`]>: event accounting, indexed by
/// `TELEMETRY_*`.
pub const TELEMETRY: &str = "VFW_TELEMETRY";
/// RingBuf of aya-log records: the program's cold-path diagnostics
/// (malformed frames, map lookups that cannot fail but did), written only
/// at or above the level the agent loads the program with
/// ([`BPF_LOG_LEVEL_GLOBAL`]). Declared by `aya-log-ebpf` under this name;
/// each loaded program has its own (never pinned).
pub const BPF_LOGS: &str = "AYA_LOGS";
/// The program's global (in `.rodata`, fixed at load) holding the highest
/// aya-log level it records: 0 off, 1 error, 2 warn, 3 info, 4 debug,
/// 5 trace.
pub const BPF_LOG_LEVEL_GLOBAL: &str = "AYA_LOG_LEVEL";
/// The program's global (in `.rodata`, fixed at load) naming the per-frame
/// recording pieces it leaves out, a bitwise OR of `BENCH_OMIT_*`: always 0
/// (everything recorded) in every program the daemon and the CLI load; only
/// `bench-program` sets it, to measure what each piece costs. With the
/// global a frozen constant, the verifier removes an omitted piece's code.
pub const BENCH_OMIT_GLOBAL: &str = "VFW_BENCH_OMIT";
/// The program's global (in `.rodata`, fixed at load): `u32` 1 when its
/// IPv4 lookups walk the compiled prefix table ([`crate::cpt`], `vaultfw
/// run --lookup compiled`), 0 when they walk the IPv4 tries. The loader
/// sets it from the same option as [`FLAG_LOOKUP_COMPILED`]; as a frozen
/// constant it lets the verifier drop the other lookup's code, so a
/// program is verified for one lookup, not both (half the work; the
/// compiled walk's bounded loops dominate it under emulation).
pub const LOOKUP_COMPILED_GLOBAL: &str = "VFW_LOOKUP_COMPILED";
/// [`BENCH_OMIT_GLOBAL`] bit: no verdict counter.
pub const BENCH_OMIT_VERDICT_COUNTER: u32 = 1;
/// [`BENCH_OMIT_GLOBAL`] bit: no per-rule hit counter.
pub const BENCH_OMIT_RULE_HITS: u32 = 2;
/// [`BENCH_OMIT_GLOBAL`] bit: no access-log work (no SYN check, clock,
/// rate limiter, flow window or ring buffer).
pub const BENCH_OMIT_ACCESS_LOG: u32 = 4;
/// [`BPF_LOGS`]'s size in bytes, as `aya-log-ebpf` 0.2 declares it.
pub const BPF_LOGS_RING_BYTES: u32 = 1 << 17;

/// [`TELEMETRY`] slot: events written to the ring buffer.
pub const TELEMETRY_EVENTS_SENT: u32 = 0;
/// [`TELEMETRY`] slot: events not written because the CPU's rate budget
/// was spent (the `events_dropped` of the logs).
pub const TELEMETRY_EVENTS_RATE_LIMITED: u32 = 1;
/// [`TELEMETRY`] slot: events not written because the ring buffer was full
/// (the agent fell behind).
pub const TELEMETRY_EVENTS_RING_FULL: u32 = 2;
/// [`TELEMETRY`] slot, not a counter: the program's clock cache, the
/// `jiffies` value at its last read of the coarse clock (the agent never
/// reads it).
pub const TELEMETRY_CLOCK_JIFFIES: u32 = 3;
/// [`TELEMETRY`] slot, not a counter: the coarse clock read at
/// [`TELEMETRY_CLOCK_JIFFIES`] (monotonic ns; 0 = never read). The coarse
/// clock only moves on a tick, so a frame in the same jiffy reuses it
/// instead of calling the helper.
pub const TELEMETRY_CLOCK_NS: u32 = 4;
/// Slots in [`TELEMETRY`].
pub const TELEMETRY_COUNT: u32 = 5;

/// Ring buffer size in bytes (a power of two, a multiple of the page).
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;
/// Entries of [`FLOW_SEEN`].
pub const FLOW_SEEN_ENTRIES: u32 = 65_536;
/// A UDP flow produces at most one event per this window.
pub const FLOW_EVENT_WINDOW_NS: u64 = 1_000_000_000;

/// Number of table sets (double buffering).
pub const TABLE_SETS: u32 = 2;

/// The name of the XDP program in the object file that judges frames of
/// Ethernet devices (an Ethernet header, then up to two VLAN tags).
pub const PROGRAM_NAME: &str = "vaultfw";

/// The name of the XDP program that judges packets of L3 devices (ipip,
/// gre, sit, wireguard, tun: the frame starts at the IP header). Same maps,
/// same decision order; frames count as untagged.
pub const PROGRAM_NAME_L3: &str = "vaultfw_l3";

/// Entries in each IP-rule trie when the agent does not resize it. The
/// agent sizes the tries from the policy's limits before load.
pub const DEFAULT_IP_RULE_CAPACITY: u32 = 127;

/// Entries in each virtual-network trie (one per rule × prefix). LPM tries
/// allocate per entry (`BPF_F_NO_PREALLOC`), so the cap costs nothing.
pub const DEFAULT_VNET_CAPACITY: u32 = 65_536;

/// Entries in each trusted-services trie. Real service-tag catalogues hold
/// thousands of IPv4 prefixes; the cap costs nothing until used.
pub const DEFAULT_TRUSTED_CAPACITY: u32 = 262_144;

/// [`PolicyConfig::flags`]: `default_action = "Allow"`.
pub const FLAG_DEFAULT_ALLOW: u32 = 1 << 0;
/// [`PolicyConfig::flags`]: `bypass = "AzureServices"`.
pub const FLAG_BYPASS_TRUSTED: u32 = 1 << 1;
/// [`PolicyConfig::flags`]: `mode = "Audit"`.
pub const FLAG_AUDIT: u32 = 1 << 2;
/// [`PolicyConfig::flags`]: `ipv6 = "Allow"`.
pub const FLAG_IPV6_ALLOW: u32 = 1 << 3;
/// [`PolicyConfig::flags`]: set once the agent has written this slot. A
/// slot without it (a freshly loaded program before the first apply) judges
/// data-plane frames as `default_action = "Deny"` with no rules: closed.
pub const FLAG_VALID: u32 = 1 << 31;

/// [`PolicyConfig::flags`]: the set has virtual-network entries (without
/// it the program skips the subnet lookups).
pub const FLAG_HAS_VNET: u32 = 1 << 5;
/// [`PolicyConfig::flags`]: some virtual-network entry is bound to a VLAN
/// (without it a tagged frame does not look up VLAN endpoints).
pub const FLAG_HAS_VLAN_VNET: u32 = 1 << 6;

/// [`PolicyConfig::flags`]: also log allowed data-plane connection
/// attempts (`--log-allowed`), under the same rate limit.
pub const FLAG_LOG_ALLOWED: u32 = 1 << 4;

/// [`PolicyConfig::flags`]: a data-plane frame the policy would drop (or,
/// in audit mode, would deny) is first looked up in the kernel's routing
/// table (`bpf_fib_lookup`, from the ingress device); when the host would
/// forward it out of itself it is not addressed to this host's data plane
/// and passes as `pass_forwarded`. Set by the daemon with
/// `--pass-forwarded`, never by `check` or the reference model, which
/// judge the policy, not the host's routes.
pub const FLAG_PASS_FORWARDED: u32 = 1 << 7;
/// The set was compiled for a program whose IPv4 lookups walk the compiled
/// prefix table ([`crate::cpt`], `vaultfw run --lookup compiled`) instead
/// of the IPv4 tries; both hold the same entries' answers, and IPv6 always
/// uses the tries. The program itself follows [`LOOKUP_COMPILED_GLOBAL`],
/// fixed at load from the same option; this flag tells the agent (`show`,
/// which tables a write fills) what the set serves.
pub const FLAG_LOOKUP_COMPILED: u32 = 1 << 16;

/// The settings of one table set. 24 bytes, no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// The access log's per-CPU rate limit, as the cost of one event in
    /// nanoseconds of budget (1e9 / events per second); 0 turns events off.
    pub event_cost_ns: u32,
    /// Policy generation this set was written for (1, 2, ...).
    pub generation: u64,
    /// An unconfirmed apply's deadline (`apply --confirm-within`): from this
    /// CLOCK_MONOTONIC time in ns (as `bpf_ktime_get_coarse_ns` reads it;
    /// it does not advance while the host is suspended) the program judges
    /// frames with the *other* table set, which still holds the previous
    /// generation — so the rollback happens on time whether or not a daemon
    /// runs. 0 = no deadline. Only the active set's value is read.
    pub fallback_at_ns: u64,
}

impl PolicyConfig {
    /// Whether this (active) set's fallback deadline has passed: the
    /// program then serves the other set. `now_ns` is called only when a
    /// deadline is set, so a set without one never reads the clock.
    #[inline(always)]
    pub fn fallback_due(&self, now_ns: impl FnOnce() -> u64) -> bool {
        self.fallback_at_ns != 0 && now_ns() >= self.fallback_at_ns
    }
}

/// Per-rule counters of one CPU (the agent sums packets and bytes, and
/// takes the latest hit time, over CPUs). 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleHits {
    /// Frames the rule allowed.
    pub packets: u64,
    /// Their bytes (whole frames, as XDP sees them).
    pub bytes: u64,
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE, a few ms
    /// resolution) of the latest hit; 0 = never.
    pub last_hit_ns: u64,
}

/// The layout of [`RULE_HITS`]: IP rules first, then virtual network
/// rules, then trusted services, then IPv6 IP rules (last, so a layout
/// without them is a prefix of one with them); each trie value is a slot
/// here. Trusted services share their slot between IPv4 and IPv6 prefixes,
/// and a virtual network rule between its IPv4 and IPv6 prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HitSlots {
    /// Slots for IP rules (`limits.ip_rules`).
    pub ip_rules: u32,
    /// Slots for virtual network rules (`limits.virtual_network_rules`).
    pub vnet_rules: u32,
    /// Slots for trusted services (the catalogue's size).
    pub trusted_services: u32,
    /// Slots for IPv6 IP rules (`limits.ipv6_rules`).
    pub ipv6_rules: u32,
}

/// Hit slots reserved for trusted services (the catalogue has ten).
pub const TRUSTED_SERVICE_SLOTS: u32 = 16;

impl HitSlots {
    /// The layout for `ip_rules` IP rules and `vnet_rules` virtual network
    /// rules (the policy's limits).
    pub const fn new(ip_rules: u32, vnet_rules: u32) -> Self {
        HitSlots {
            ip_rules,
            vnet_rules,
            trusted_services: TRUSTED_SERVICE_SLOTS,
            ipv6_rules: 0,
        }
    }

    /// This layout with `ipv6_rules` IPv6 IP-rule slots.
    pub const fn with_ipv6(mut self, ipv6_rules: u32) -> Self {
        self.ipv6_rules = ipv6_rules;
        self
    }

    /// The slot of IP rule slot `i`.
    pub const fn ip(&self, i: u32) -> u32 {
        i
    }
    /// The slot of virtual network rule slot `i`.
    pub const fn vnet(&self, i: u32) -> u32 {
        self.ip_rules + i
    }
    /// The slot of trusted service `i`.
    pub const fn trusted(&self, i: u32) -> u32 {
        self.ip_rules + self.vnet_rules + i
    }
    /// The slot of IPv6 IP rule slot `i`.
    pub const fn ip6(&self, i: u32) -> u32 {
        self.ip_rules + self.vnet_rules + self.trusted_services + i
    }
    /// Entries of [`RULE_HITS`].
    pub const fn total(&self) -> u32 {
        self.ip_rules + self.vnet_rules + self.trusted_services + self.ipv6_rules
    }

    /// The slot of this layout that holds what `slot` of `old` held: the
    /// same kind and the same index within the kind (IP rule `i`, subnet
    /// rule `i`, trusted service `i`); `None` when the kind has no such
    /// index here (a smaller limit) or `slot` lies outside `old`.
    pub const fn remap(&self, old: &HitSlots, slot: u32) -> Option<u32> {
        let (index, room, base) = if slot < old.ip_rules {
            (slot, self.ip_rules, self.ip(0))
        } else if slot < old.ip_rules + old.vnet_rules {
            (slot - old.ip_rules, self.vnet_rules, self.vnet(0))
        } else if slot < old.ip6(0) {
            (
                slot - old.ip_rules - old.vnet_rules,
                self.trusted_services,
                self.trusted(0),
            )
        } else if slot < old.total() {
            (slot - old.ip6(0), self.ipv6_rules, self.ip6(0))
        } else {
            return None;
        };
        if index < room {
            Some(base + index)
        } else {
            None
        }
    }
}

/// The rate limiter of one CPU: a token bucket holding up to one second of
/// budget in nanoseconds. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Budget left, in ns (at most 1e9).
    pub credit_ns: u64,
    /// `bpf_ktime_get_coarse_ns` of the last refill.
    pub last_ns: u64,
}

/// A UDP flow for the once-per-window event rule: source address (IPv4 in
/// the first 4 bytes, rest zero; or IPv6), ports in network byte order,
/// protocol. 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    /// Source address octets, network byte order.
    pub src: [u8; 16],
    /// Source port, network byte order.
    pub sport: [u8; 2],
    /// Destination port, network byte order.
    pub dport: [u8; 2],
    /// IANA protocol number.
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// Explicit padding; always 0.
    pub _pad: [u8; 2],
}

/// One access-log record: a denied (or, with `--log-allowed`, allowed)
/// connection attempt to the data plane. 64 bytes, no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessEvent {
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE, a few ms
    /// resolution) when the frame was judged.
    pub ts_ns: u64,
    /// Ingress ifindex.
    pub ifindex: u32,
    /// Outer VLAN id; 0 when untagged.
    pub vlan: u32,
    /// Source address octets, network byte order (IPv4: first 4 bytes).
    pub src: [u8; 16],
    /// Destination address octets, network byte order.
    pub dst: [u8; 16],
    /// Source port, host byte order.
    pub sport: u16,
    /// Destination port, host byte order.
    pub dport: u16,
    /// 4 or 6.
    pub family: u8,
    /// IANA protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// The [`crate::Verdict`] index.
    pub verdict: u8,
    /// Explicit padding; always 0.
    pub _pad: u8,
    /// The hit slot of the matching rule (allow events); `u32::MAX` for
    /// none.
    pub rule_slot: u32,
    /// Explicit padding; always 0.
    pub _pad2: u32,
}

/// Transport protocols the data plane can guard, as port-bitmap rows.
pub const PORT_PROTO_TCP: u32 = 0;
/// See [`PORT_PROTO_TCP`].
pub const PORT_PROTO_UDP: u32 = 1;
/// u32 words per (table set, protocol) row: 65536 ports / 32 bits.
pub const PORT_WORDS_PER_ROW: u32 = 65536 / 32;
/// Total words in the [`DATA_PLANE_PORTS`] array: 2 sets × 2 protocols.
pub const PORT_BITMAP_WORDS: u32 = TABLE_SETS * 2 * PORT_WORDS_PER_ROW;

/// The [`DATA_PLANE_PORTS`] slot and bit for `port` (host byte order) of
/// protocol row `proto` in table set `set`: bit `port % 32` of word
/// `set * 4096 + proto * 2048 + port / 32`.
#[inline(always)]
pub const fn port_slot(set: u32, proto: u32, port: u16) -> (u32, u32) {
    let word = (set * 2 + proto) * PORT_WORDS_PER_ROW + (port as u32 >> 5);
    (word, 1u32 << (port as u32 & 31))
}

/// The data of an IPv4 LPM-trie key: the address octets in network byte
/// order. The kernel matches the first `prefix_len` bits of these bytes,
/// most significant bit of byte 0 first — which is why the octets must be
/// in network byte order: in host order on a little-endian machine a /24
/// rule would match on the address's last three octets instead of its first.
pub type Ipv4Key = [u8; 4];

/// The data of a virtual-network trie key: the service endpoint a frame
/// arrived through, then its IPv4 source. Every field is big-endian bytes,
/// because the trie matches bits from byte 0 on: a rule key has prefix
/// length `VNET_ENDPOINT_BITS + prefix`, so the endpoint always matches in
/// full and the address by its prefix. 12 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VnetKey {
    /// Ingress ifindex, big-endian; [`IFINDEX_ANY`] for a VLAN-only endpoint.
    pub ifindex: [u8; 4],
    /// Outer 802.1Q/802.1ad VLAN id, big-endian; [`VLAN_ANY`] for an
    /// interface-only endpoint, [`VLAN_UNTAGGED`] for an untagged frame.
    pub vlan: [u8; 4],
    /// IPv4 address octets, network byte order.
    pub addr: [u8; 4],
}

/// The data of an IPv6 LPM-trie key: the 16 address octets in network
/// byte order (most significant bit of byte 0 first, as the trie matches).
pub type Ipv6Key = [u8; 16];

/// The data of an IPv6 virtual-network trie key: the endpoint as in
/// [`VnetKey`], then the 16 octets of the IPv6 source in network byte
/// order. A rule key has prefix length `VNET_ENDPOINT_BITS + prefix`.
/// 24 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vnet6Key {
    /// Ingress ifindex, big-endian; [`IFINDEX_ANY`] for a VLAN-only endpoint.
    pub ifindex: [u8; 4],
    /// VLAN id, big-endian, as in [`VnetKey::vlan`].
    pub vlan: [u8; 4],
    /// IPv6 address octets, network byte order.
    pub addr: [u8; 16],
}

impl Vnet6Key {
    /// The key for `ifindex`, `vlan` (host-order numbers) and `addr`
    /// (octets in network byte order).
    #[inline(always)]
    pub const fn new(ifindex: u32, vlan: u32, addr: [u8; 16]) -> Self {
        Vnet6Key {
            ifindex: ifindex.to_be_bytes(),
            vlan: vlan.to_be_bytes(),
            addr,
        }
    }
}

/// Bits of a [`VnetKey`] before the address: the endpoint.
pub const VNET_ENDPOINT_BITS: u32 = 64;
/// [`VnetKey::ifindex`] of an endpoint bound to a VLAN on any interface.
pub const IFINDEX_ANY: u32 = 0;
/// [`VnetKey::vlan`] of an endpoint bound to an interface, any VLAN.
pub const VLAN_ANY: u32 = 0xFFFF_FFFF;
/// The VLAN id the program reports for an untagged frame (VID 0 means
/// "priority tag only" in 802.1Q, so no rule can name it).
pub const VLAN_UNTAGGED: u32 = 0;

impl VnetKey {
    /// The key for `ifindex`, `vlan` (host-order numbers) and `addr`
    /// (octets in network byte order).
    #[inline(always)]
    pub const fn new(ifindex: u32, vlan: u32, addr: [u8; 4]) -> Self {
        VnetKey {
            ifindex: ifindex.to_be_bytes(),
            vlan: vlan.to_be_bytes(),
            addr,
        }
    }
}

/// The value of every rule-trie entry (IP rules, virtual network rules,
/// trusted services): the rule's hit slot and its expiry. 12 bytes, no
/// padding.
///
/// The expiry lives in the entry rather than in a map of deadlines of its
/// own: the program reads it from the value the lookup already returned
/// (no second lookup, and no clock read for a rule without one), it is
/// written in the same update as its entry (a hit slot handed to another
/// rule can never inherit a stale deadline), and no further map has to be
/// sized, pinned and kept in step. The cost is 8 bytes per trie entry.
///
/// The kernel stores an LPM trie's value right after its key (4 bytes of
/// data for IPv4), so a value can only be 4-byte aligned: the 64-bit
/// deadline is kept as two 32-bit halves, read through
/// [`RuleValue::expires_at_ns`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    /// The rule's slot in [`RULE_HITS`] (see [`HitSlots`]).
    pub slot: u32,
    /// [`RuleValue::expires_at_ns`], low then high 32 bits.
    expires_at: [u32; 2],
}

impl RuleValue {
    /// An entry for hit slot `slot` that never expires.
    #[inline(always)]
    pub const fn new(slot: u32) -> Self {
        Self::expiring(slot, 0)
    }

    /// An entry for hit slot `slot` that stops matching at
    /// `expires_at_ns` (see [`RuleValue::expires_at_ns`]; 0 = never).
    #[inline(always)]
    pub const fn expiring(slot: u32, expires_at_ns: u64) -> Self {
        RuleValue {
            slot,
            expires_at: [expires_at_ns as u32, (expires_at_ns >> 32) as u32],
        }
    }

    /// The rule's `expires_at` as CLOCK_MONOTONIC ns (as
    /// `bpf_ktime_get_coarse_ns` reads it): from then on the entry no
    /// longer matches. 0 = never expires.
    ///
    /// An expired entry makes its table not match the frame, and the
    /// decision goes on to the next table: a shorter prefix of the same
    /// table that also covers the source is *not* consulted (the trie
    /// answers only its longest match). So an expired rule never admits
    /// more than the policy without it would; it may admit less until the
    /// agent removes the entry (fails closed).
    #[inline(always)]
    pub const fn expires_at_ns(&self) -> u64 {
        (self.expires_at[1] as u64) << 32 | self.expires_at[0] as u64
    }

    /// Whether the entry has expired. `now_ns` (CLOCK_MONOTONIC ns) is
    /// called only when the entry has a deadline, so a rule without one
    /// never reads the clock.
    #[inline(always)]
    pub fn expired(&self, now_ns: impl FnOnce() -> u64) -> bool {
        let at = self.expires_at_ns();
        at != 0 && now_ns() >= at
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), only integer fields, no implicit padding.
    unsafe impl aya::Pod for super::PolicyConfig {}
    // SAFETY: repr(C), only u32 fields (12 bytes, no padding).
    unsafe impl aya::Pod for super::RuleValue {}
    // SAFETY: repr(C), byte arrays only, no padding.
    unsafe impl aya::Pod for super::VnetKey {}
    // SAFETY: repr(C), byte arrays only, no padding.
    unsafe impl aya::Pod for super::Vnet6Key {}
    // SAFETY: repr(C), only u64 fields.
    unsafe impl aya::Pod for super::RuleHits {}
    // SAFETY: repr(C), only u64 fields.
    unsafe impl aya::Pod for super::TokenBucket {}
    // SAFETY: repr(C), byte fields with explicit padding.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: repr(C), integer fields with explicit padding (64 bytes).
    unsafe impl aya::Pod for super::AccessEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_slot_rows_do_not_overlap() {
        assert_eq!(port_slot(0, PORT_PROTO_TCP, 0), (0, 1));
        assert_eq!(port_slot(0, PORT_PROTO_TCP, 443), (13, 1 << 27));
        assert_eq!(port_slot(0, PORT_PROTO_UDP, 0).0, 2048);
        assert_eq!(port_slot(1, PORT_PROTO_TCP, 0).0, 4096);
        assert_eq!(
            port_slot(1, PORT_PROTO_UDP, 65535),
            (PORT_BITMAP_WORDS - 1, 1 << 31)
        );
    }

    #[test]
    fn verdict_counters_move_by_interface_slot_and_verdict() {
        use crate::Verdict;
        // A build with the first 12 verdicts (before pass_forwarded).
        let old_len = INTERFACE_SLOTS * 12;
        let deny_on_7 = 7 * 12 + Verdict::DenyNoMatch.index();
        assert_eq!(
            remap_verdict_slot(old_len, deny_on_7),
            Some(verdict_slot(7, Verdict::DenyNoMatch))
        );
        assert_ne!(
            remap_verdict_slot(old_len, deny_on_7),
            Some(deny_on_7),
            "not by flat index"
        );
        let last = old_len - 1;
        assert_eq!(
            remap_verdict_slot(old_len, last),
            Some(verdict_slot(INTERFACE_SLOTS - 1, Verdict::DenyMalformed))
        );
        // The same layout maps onto itself.
        for index in [0, 5, VERDICT_SLOTS - 1] {
            assert_eq!(remap_verdict_slot(VERDICT_SLOTS, index), Some(index));
        }
        // Every old counter lands on a distinct new one.
        let mut seen = [false; VERDICT_SLOTS as usize];
        for index in 0..old_len {
            let to = remap_verdict_slot(old_len, index).unwrap() as usize;
            assert!(!seen[to], "two old counters land on slot {to}");
            seen[to] = true;
        }
        // A verdict this build does not know (a downgrade), a length that
        // is not whole rows, an index outside the old map.
        let newer_len = INTERFACE_SLOTS * (Verdict::COUNT as u32 + 2);
        assert_eq!(remap_verdict_slot(newer_len, Verdict::COUNT as u32), None);
        assert_eq!(
            remap_verdict_slot(newer_len, 3),
            Some(verdict_slot(0, Verdict::PassIpv6))
        );
        assert_eq!(remap_verdict_slot(12, 3), None);
        assert_eq!(remap_verdict_slot(old_len, old_len), None);
        assert_eq!(remap_verdict_slot(0, 0), None);
    }

    #[test]
    fn vnet_key_is_big_endian_and_unpadded() {
        let key = VnetKey::new(7, 120, [10, 1, 2, 3]);
        assert_eq!(key.ifindex, [0, 0, 0, 7]);
        assert_eq!(key.vlan, [0, 0, 0, 120]);
        assert_eq!(core::mem::size_of::<VnetKey>(), 12);
    }

    #[test]
    fn shared_records_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<RuleHits>(), 24);
        assert_eq!(core::mem::size_of::<TokenBucket>(), 16);
        assert_eq!(core::mem::size_of::<FlowKey>(), 24);
        assert_eq!(core::mem::size_of::<AccessEvent>(), 64);
    }

    #[test]
    fn hit_slots_are_laid_out_ip_vnet_trusted() {
        let slots = HitSlots {
            ip_rules: 127,
            vnet_rules: 127,
            trusted_services: 10,
            ipv6_rules: 5,
        };
        assert_eq!(
            (slots.ip(3), slots.vnet(0), slots.trusted(9), slots.total()),
            (3, 127, 263, 269)
        );
        assert_eq!(slots.ip6(0), 264);
    }

    #[test]
    fn remapped_slots_keep_their_kind_and_index() {
        let old = HitSlots::new(127, 127);
        let new = HitSlots::new(1000, 200).with_ipv6(50);
        assert_eq!(new.remap(&old, old.ip(5)), Some(new.ip(5)));
        assert_eq!(new.remap(&old, old.vnet(3)), Some(new.vnet(3)));
        assert_eq!(new.remap(&old, old.trusted(9)), Some(new.trusted(9)));
        assert_eq!(new.remap(&old, old.total()), None);
        let old6 = HitSlots::new(127, 127).with_ipv6(10);
        assert_eq!(new.remap(&old6, old6.ip6(9)), Some(new.ip6(9)));
        assert_eq!(old.remap(&old6, old6.ip6(0)), None, "no IPv6 slots left");
        let smaller = HitSlots::new(10, 2);
        assert_eq!(smaller.remap(&old, old.ip(10)), None);
        assert_eq!(smaller.remap(&old, old.vnet(1)), Some(smaller.vnet(1)));
        assert_eq!(smaller.remap(&old, old.vnet(2)), None);
    }

    #[test]
    fn policy_config_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<PolicyConfig>(), 24);
        assert_eq!(core::mem::size_of::<RuleValue>(), 12);
        assert_eq!(
            core::mem::align_of::<RuleValue>(),
            4,
            "LPM trie values follow 4-byte keys"
        );
    }

    #[test]
    fn deadlines_read_the_clock_only_when_set_and_hold_from_their_instant() {
        let never = RuleValue::new(3);
        assert!(!never.expired(|| panic!("a rule without a deadline read the clock")));
        let at = RuleValue::expiring(3, 1_000);
        assert!(!at.expired(|| 999));
        assert!(at.expired(|| 1_000));
        let far = RuleValue::expiring(3, 0x1234_5678_9abc_def0);
        assert_eq!((far.slot, far.expires_at_ns()), (3, 0x1234_5678_9abc_def0));
        let config = PolicyConfig::default();
        assert!(!config.fallback_due(|| panic!("a set without a deadline read the clock")));
        let config = PolicyConfig {
            fallback_at_ns: 50,
            ..config
        };
        assert!(!config.fallback_due(|| 49));
        assert!(config.fallback_due(|| 50));
    }
}
