//! Everything the program records besides its verdict: the verdict
//! counter, the matched rule's hit counter, and the access-log event —
//! rate-limited per CPU with a token bucket, one per TCP connection attempt
//! (SYN) or per UDP flow and window, so a flood cannot swamp the agent.

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    programs::XdpContext,
};
use firewall_common::{
    AccessEvent, BENCH_OMIT_ACCESS_LOG, BENCH_OMIT_RULE_HITS, BENCH_OMIT_VERDICT_COUNTER,
    FLOW_EVENT_WINDOW_NS, FlowKey, TELEMETRY_CLOCK_JIFFIES, TELEMETRY_CLOCK_NS,
    TELEMETRY_EVENTS_RATE_LIMITED, TELEMETRY_EVENTS_RING_FULL, TELEMETRY_EVENTS_SENT, verdict_slot,
};

use crate::parse::{IPPROTO_TCP, read_bytes};
use crate::verdict::{Judged, Loggable, NO_SLOT};
use crate::{
    VFW_EVENT_BUCKET, VFW_EVENTS, VFW_FLOW_SEEN, VFW_RULE_HITS, VFW_TELEMETRY, VFW_VERDICTS,
};

/// One second of event budget: the bucket's size (burst = rate).
const BUCKET_NS: u64 = 1_000_000_000;

/// The pieces of [`record`] left out (firewall_common::BENCH_OMIT_GLOBAL):
/// 0 except in `bench-program`'s measurements. The loader sets it in
/// `.rodata`, so the verifier sees a constant and drops the dead pieces.
#[unsafe(no_mangle)]
static VFW_BENCH_OMIT: u32 = 0;

/// Whether `piece` (a `BENCH_OMIT_*` bit) is left out.
#[inline(always)]
fn omitted(piece: u32) -> bool {
    // SAFETY: a plain read of a static; volatile so the compiler does not
    // fold the 0 it was compiled with (the loader replaces it).
    unsafe { core::ptr::read_volatile(&VFW_BENCH_OMIT) & piece != 0 }
}

/// Records `judged`: exactly one verdict counter, the rule's hits, and
/// maybe an access-log event.
#[inline(always)]
pub fn record(ctx: &XdpContext, judged: &Judged) {
    // The hit and the event each read the clock (a per-jiffy cached load):
    // a per-frame "already read" value shared by the two doubled the paths
    // 6.1's verifier walks, and with `--bpf-log-level debug` the program no
    // longer loaded within 30 s in an emulated 6.1 guest.
    let counter = verdict_slot(ctx.ingress_ifindex() as u32, judged.verdict);
    // No aya-log record when this lookup fails (it cannot): a log call
    // here, before the rest of the recording, made the verifier walk ~6x
    // more instructions with logging on (470k of its 1M limit).
    if !omitted(BENCH_OMIT_VERDICT_COUNTER)
        && let Some(slot) = VFW_VERDICTS.get_ptr_mut(counter)
    {
        // SAFETY: a per-CPU slot is only written by the CPU running us.
        unsafe { *slot += 1 };
    }
    if judged.rule_slot != NO_SLOT
        && !omitted(BENCH_OMIT_RULE_HITS)
        && let Some(hits) = VFW_RULE_HITS.get_ptr_mut(judged.rule_slot)
    {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe {
            (*hits).packets += 1;
            (*hits).bytes += judged.bytes;
            (*hits).last_hit_ns = now();
        }
    }
    if let Some(loggable) = &judged.loggable
        && !omitted(BENCH_OMIT_ACCESS_LOG)
    {
        log_event(ctx, judged, loggable);
    }
}

/// The coarse monotonic clock: a few ms resolution at a fraction of
/// `bpf_ktime_get_ns`'s cost (measured ~30 ns per call in a VM), enough for
/// last-hit times, the rate limiter, log timestamps and deadlines.
///
/// The coarse clock only moves when the tick updates the timekeeper, which
/// advances `jiffies` on the same path: so the value read is kept per CPU
/// with the jiffies it was read in (two `VFW_TELEMETRY` slots) and reused
/// while jiffies stays the same. `bpf_jiffies64` is inlined into one load
/// and per-CPU array lookups into a few instructions, where the clock is a
/// helper call. A read racing the tick (jiffies already advanced, the
/// timekeeper not yet) keeps the older value for at most one more tick:
/// within the clock's resolution.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helpers without arguments.
    let jiffies = unsafe { bpf_jiffies64() };
    let (Some(cached_jiffies), Some(cached_ns)) = (
        VFW_TELEMETRY.get_ptr_mut(TELEMETRY_CLOCK_JIFFIES),
        VFW_TELEMETRY.get_ptr_mut(TELEMETRY_CLOCK_NS),
    ) else {
        // SAFETY: a helper without arguments.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: per-CPU slots, only this CPU writes them (XDP runs with
    // migration disabled).
    unsafe {
        if *cached_jiffies != jiffies || *cached_ns == 0 {
            *cached_ns = bpf_ktime_get_coarse_ns();
            *cached_jiffies = jiffies;
        }
        *cached_ns
    }
}

#[inline(always)]
fn log_event(ctx: &XdpContext, judged: &Judged, l: &Loggable) {
    let t = &l.transport;
    let family = if t.ipv4_src.is_some() { 4u8 } else { 6 };
    if t.proto == IPPROTO_TCP && !t.is_tcp_syn(ctx) {
        return; // one event per connection attempt
    }
    let now = now();
    let (src, dst) = if t.proto == IPPROTO_TCP {
        // Under a SYN flood the budget is spent: count and leave before
        // reading addresses or building the record.
        if !take_token(l.event_cost_ns, now) {
            telemetry(TELEMETRY_EVENTS_RATE_LIMITED);
            return;
        }
        addresses(ctx, t.l3, family)
    } else {
        let (src, dst) = addresses(ctx, t.l3, family);
        if !first_in_window(src, t.sport, t.dport, t.proto, family, now) {
            return;
        }
        if !take_token(l.event_cost_ns, now) {
            telemetry(TELEMETRY_EVENTS_RATE_LIMITED);
            return;
        }
        (src, dst)
    };
    let event = AccessEvent {
        ts_ns: now,
        ifindex: ctx.ingress_ifindex() as u32,
        vlan: u32::from(l.vlan),
        src,
        dst,
        sport: t.sport,
        dport: t.dport,
        family,
        proto: t.proto,
        verdict: judged.verdict.index() as u8,
        _pad: 0,
        rule_slot: judged.rule_slot,
        _pad2: 0,
    };
    if VFW_EVENTS.output(&event, 0).is_ok() {
        telemetry(TELEMETRY_EVENTS_SENT);
    } else {
        telemetry(TELEMETRY_EVENTS_RING_FULL);
    }
}

/// Source and destination addresses (IPv4 in the first 4 bytes).
#[inline(always)]
fn addresses(ctx: &XdpContext, l3: usize, family: u8) -> ([u8; 16], [u8; 16]) {
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    if family == 4 {
        if let Some(a) = read_bytes::<8>(ctx, l3 + 12) {
            src[..4].copy_from_slice(&a[..4]);
            dst[..4].copy_from_slice(&a[4..]);
        }
    } else if let Some(a) = read_bytes::<32>(ctx, l3 + 8) {
        src.copy_from_slice(&a[..16]);
        dst.copy_from_slice(&a[16..]);
    }
    (src, dst)
}

/// Whether this UDP flow has not logged within the window (and marks it).
#[inline(always)]
fn first_in_window(src: [u8; 16], sport: u16, dport: u16, proto: u8, family: u8, now: u64) -> bool {
    let key = FlowKey {
        src,
        sport: sport.to_be_bytes(),
        dport: dport.to_be_bytes(),
        proto,
        family,
        _pad: [0; 2],
    };
    if let Some(last) = VFW_FLOW_SEEN.get_ptr_mut(&key) {
        // SAFETY: a value pointer from the map; a racing CPU at worst logs
        // the flow twice.
        let last = unsafe { &mut *last };
        if now.wrapping_sub(*last) < FLOW_EVENT_WINDOW_NS {
            return false;
        }
        *last = now;
        return true;
    }
    let _ = VFW_FLOW_SEEN.insert(&key, &now, 0);
    true
}

/// Spends `cost_ns` of this CPU's budget, refilled at 1 ns per ns up to one
/// second's worth.
#[inline(always)]
fn take_token(cost_ns: u32, now: u64) -> bool {
    let Some(bucket) = VFW_EVENT_BUCKET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU slot, only this CPU writes it.
    let bucket = unsafe { &mut *bucket };
    let refill = now.wrapping_sub(bucket.last_ns);
    bucket.last_ns = now;
    bucket.credit_ns = bucket.credit_ns.saturating_add(refill).min(BUCKET_NS);
    let cost = u64::from(cost_ns);
    if bucket.credit_ns >= cost {
        bucket.credit_ns -= cost;
        true
    } else {
        false
    }
}

#[inline(always)]
fn telemetry(slot: u32) {
    if let Some(counter) = VFW_TELEMETRY.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *counter += 1 };
    }
}
