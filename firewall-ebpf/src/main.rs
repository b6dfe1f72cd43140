//! vaultfw's XDP program: judges every frame on an attached interface as
//! DESIGN.md section 2 says and counts exactly one verdict per frame.
//!
//! This file owns the two entry points (Ethernet devices and L3 devices,
//! which differ only in where the IP header starts) and the maps; `parse`
//! reads headers with bounds checks, `verdict` applies the policy. The map names and layouts
//! come from `firewall-common`, the only place they are defined.
#![no_std]
#![no_main]

mod cpt;
mod parse;
mod route;
mod stats;
mod verdict;

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use firewall_common::{
    ACTIVE_SET_MAP, AccessEvent, CPT_MAPS, DATA_PLANE_PORTS_MAP, EVENT_BUCKET_MAP, EVENTS_MAP,
    FLOW_SEEN_MAP, FlowKey, IP_RULES_MAPS, IP6_RULES_MAPS, Ipv4Key, Ipv6Key, POLICY_CONFIG_MAP,
    PolicyConfig, RULE_HITS_MAP, RuleHits, RuleValue, TELEMETRY_MAP, TRUSTED_MAPS, TRUSTED6_MAPS,
    TokenBucket, VERDICT_COUNTERS_MAP, VNET_RULES_MAPS, VNET6_RULES_MAPS, Verdict, Vnet6Key,
    VnetKey, cpt::Cell,
};

// Each map's entries come from its `firewall_common` layout entry (the
// static's name is the map's name); a test in the agent parses this
// object and checks every map against that layout.

/// Slot 0: the active table set (firewall_common::ACTIVE_SET).
#[btf_map]
static VFW_ACTIVE: Array<u32, { ACTIVE_SET_MAP.max_entries as usize }> = Array::new();

/// One [`PolicyConfig`] per table set (firewall_common::POLICY_CONFIG).
#[btf_map]
static VFW_CONFIG: Array<PolicyConfig, { POLICY_CONFIG_MAP.max_entries as usize }> = Array::new();

/// Data-plane destination ports (firewall_common::DATA_PLANE_PORTS).
#[btf_map]
static VFW_PORTS: Array<u32, { DATA_PLANE_PORTS_MAP.max_entries as usize }> = Array::new();

/// Table set 0's compiled IPv4 prefix table (`firewall_common::cpt`);
/// the agent resizes both before load and writes them through mmap.
#[btf_map]
static VFW_CPT_0: Array<
    Cell,
    { CPT_MAPS[0].max_entries as usize },
    { CPT_MAPS[0].flags as usize },
> = Array::new();

/// Table set 1's compiled IPv4 prefix table.
#[btf_map]
static VFW_CPT_1: Array<
    Cell,
    { CPT_MAPS[1].max_entries as usize },
    { CPT_MAPS[1].flags as usize },
> = Array::new();

/// Table set 0's IP rules; the agent resizes both tries before load.
#[btf_map]
static VFW_IP_RULES_0: LpmTrie<
    Ipv4Key,
    RuleValue,
    { IP_RULES_MAPS[0].max_entries as usize },
    { IP_RULES_MAPS[0].flags as usize },
> = LpmTrie::new();

/// Table set 1's IP rules.
#[btf_map]
static VFW_IP_RULES_1: LpmTrie<
    Ipv4Key,
    RuleValue,
    { IP_RULES_MAPS[1].max_entries as usize },
    { IP_RULES_MAPS[1].flags as usize },
> = LpmTrie::new();

/// Table set 0's virtual network rules, keyed by (endpoint, source).
#[btf_map]
static VFW_VNET_RULES_0: LpmTrie<
    VnetKey,
    RuleValue,
    { VNET_RULES_MAPS[0].max_entries as usize },
    { VNET_RULES_MAPS[0].flags as usize },
> = LpmTrie::new();

/// Table set 1's virtual network rules.
#[btf_map]
static VFW_VNET_RULES_1: LpmTrie<
    VnetKey,
    RuleValue,
    { VNET_RULES_MAPS[1].max_entries as usize },
    { VNET_RULES_MAPS[1].flags as usize },
> = LpmTrie::new();

/// Table set 0's trusted-service prefixes.
#[btf_map]
static VFW_TRUSTED_0: LpmTrie<
    Ipv4Key,
    RuleValue,
    { TRUSTED_MAPS[0].max_entries as usize },
    { TRUSTED_MAPS[0].flags as usize },
> = LpmTrie::new();

/// Table set 1's trusted-service prefixes.
#[btf_map]
static VFW_TRUSTED_1: LpmTrie<
    Ipv4Key,
    RuleValue,
    { TRUSTED_MAPS[1].max_entries as usize },
    { TRUSTED_MAPS[1].flags as usize },
> = LpmTrie::new();

/// Table set 0's IPv6 IP rules; the agent resizes both tries before load.
#[btf_map]
static VFW_IP6_RULES_0: LpmTrie<
    Ipv6Key,
    RuleValue,
    { IP6_RULES_MAPS[0].max_entries as usize },
    { IP6_RULES_MAPS[0].flags as usize },
> = LpmTrie::new();

/// Table set 1's IPv6 IP rules.
#[btf_map]
static VFW_IP6_RULES_1: LpmTrie<
    Ipv6Key,
    RuleValue,
    { IP6_RULES_MAPS[1].max_entries as usize },
    { IP6_RULES_MAPS[1].flags as usize },
> = LpmTrie::new();

/// Table set 0's virtual network rules' IPv6 prefixes, keyed by
/// (endpoint, source).
#[btf_map]
static VFW_VNET6_RULES_0: LpmTrie<
    Vnet6Key,
    RuleValue,
    { VNET6_RULES_MAPS[0].max_entries as usize },
    { VNET6_RULES_MAPS[0].flags as usize },
> = LpmTrie::new();

/// Table set 1's virtual network rules' IPv6 prefixes.
#[btf_map]
static VFW_VNET6_RULES_1: LpmTrie<
    Vnet6Key,
    RuleValue,
    { VNET6_RULES_MAPS[1].max_entries as usize },
    { VNET6_RULES_MAPS[1].flags as usize },
> = LpmTrie::new();

/// Table set 0's trusted-service IPv6 prefixes.
#[btf_map]
static VFW_TRUSTED6_0: LpmTrie<
    Ipv6Key,
    RuleValue,
    { TRUSTED6_MAPS[0].max_entries as usize },
    { TRUSTED6_MAPS[0].flags as usize },
> = LpmTrie::new();

/// Table set 1's trusted-service IPv6 prefixes.
#[btf_map]
static VFW_TRUSTED6_1: LpmTrie<
    Ipv6Key,
    RuleValue,
    { TRUSTED6_MAPS[1].max_entries as usize },
    { TRUSTED6_MAPS[1].flags as usize },
> = LpmTrie::new();

/// Frames per (interface slot, verdict), per CPU
/// (firewall_common::VERDICT_COUNTERS).
#[btf_map]
static VFW_VERDICTS: PerCpuArray<u64, { VERDICT_COUNTERS_MAP.max_entries as usize }> =
    PerCpuArray::new();

/// Per-rule hits, per CPU; the agent sizes it from the limits.
#[btf_map]
static VFW_RULE_HITS: PerCpuArray<RuleHits, { RULE_HITS_MAP.max_entries as usize }> =
    PerCpuArray::new();

/// The access log.
#[btf_map]
static VFW_EVENTS: RingBuf<AccessEvent, { EVENTS_MAP.max_entries as usize }> = RingBuf::new();

/// When each UDP flow last logged.
#[btf_map]
static VFW_FLOW_SEEN: LruHashMap<FlowKey, u64, { FLOW_SEEN_MAP.max_entries as usize }> =
    LruHashMap::new();

/// The access log's per-CPU rate limiter.
#[btf_map]
static VFW_EVENT_BUCKET: PerCpuArray<TokenBucket, { EVENT_BUCKET_MAP.max_entries as usize }> =
    PerCpuArray::new();

/// Event accounting (sent, rate-limited, ring full), per CPU.
#[btf_map]
static VFW_TELEMETRY: PerCpuArray<u64, { TELEMETRY_MAP.max_entries as usize }> = PerCpuArray::new();

/// Entry point of Ethernet devices (firewall_common::PROGRAM_NAME): the
/// frame starts with an Ethernet header, maybe VLAN tags.
#[xdp]
pub fn vaultfw(ctx: XdpContext) -> u32 {
    act(&ctx, parse::parse_ethernet(&ctx))
}

/// Entry point of L3 devices (firewall_common::PROGRAM_NAME_L3: ipip, gre,
/// sit, wireguard, tun): the frame starts at the IP header.
#[xdp]
pub fn vaultfw_l3(ctx: XdpContext) -> u32 {
    act(&ctx, parse::parse_ip_packet(&ctx))
}

/// Judge, record at the one exit point (xdp-filter's habit: every frame
/// increments exactly one verdict counter), act.
#[inline(always)]
fn act(ctx: &XdpContext, parsed: (parse::Packet, u16)) -> u32 {
    let judged = verdict::judge(ctx, parsed);
    if judged.verdict == Verdict::DenyMalformed {
        // One log site for every way a frame is malformed: the verifier
        // checks it once per entry point, not once per parser exit. At
        // `--bpf-log-level off` the verifier drops the dead call: this
        // compare and the level's load are all that is left of it.
        debug!(
            ctx,
            "malformed frame denied: headers invalid or cut short (ifindex {})",
            ctx.ingress_ifindex()
        );
    }
    stats::record(ctx, &judged);
    if judged.verdict.drops() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// The kernel lets a program call a GPL-only helper only when its license
// string is GPL-compatible. This program calls one: `bpf_fib_lookup`
// (route.rs, the routing lookup behind --pass-forwarded; its XDP prototype
// is `gpl_only`), so the object declares "Dual MIT/GPL", which the kernel
// accepts as GPL-compatible. The source stays under the workspace's
// `MIT OR Apache-2.0` (LICENSE-MIT, LICENSE-APACHE); the other helpers it
// calls (map lookups, `bpf_ringbuf_output`, `bpf_ktime_get_coarse_ns`) are
// not GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
