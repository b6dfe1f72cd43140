//! The kernel's own routing decision for a frame the policy would drop:
//! one `bpf_fib_lookup` (an input lookup from the ingress device, as the
//! receive path makes it) says whether the host would forward the frame —
//! then it is not addressed to this host's data plane and passes as
//! `pass_forwarded` — or keep it (local, broadcast, multicast), refuse it
//! (blackhole, unreachable, prohibit, forwarding off on the ingress device)
//! or could not tell (an error): then the drop stands. Only frames about
//! to be dropped pay for the lookup.

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup as FibParams,
    },
    helpers::generated::bpf_fib_lookup,
    programs::XdpContext,
};

use crate::parse::{Transport, read_bytes};

/// `AF_INET` and `AF_INET6` (linux/socket.h), the lookup's `family`.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// IPv4 header offsets of the TOS byte and of the source address (the
/// destination follows it).
const IPV4_TOS: usize = 1;
const IPV4_ADDRS: usize = 12;
/// IPv6 header offset of the source address (the destination follows it).
const IPV6_ADDRS: usize = 8;
/// The flow label and traffic class bits of the IPv6 header's first word
/// (network byte order), the lookup's `flowinfo` (as `ip6_flowinfo()`).
const IPV6_FLOWINFO_MASK: u32 = 0x0FFF_FFFF_u32.to_be();

/// Whether the kernel would forward this frame out of the host: the lookup
/// found a unicast route through a device other than the host itself, so
/// the frame is not for this host's data plane.
///
/// `SUCCESS` and `NO_NEIGH` (the next hop's MAC is not resolved yet) are
/// forwards; so is `FRAG_NEEDED`, which the kernel returns only after it
/// chose a unicast forwarding route, when the packet exceeds that route's
/// MTU (the forward path then fragments it or answers "too big"). Every
/// other answer keeps the drop: `NOT_FWDED` (local, broadcast, multicast),
/// `FWD_DISABLED` (forwarding off on the ingress device), `BLACKHOLE`,
/// `UNREACHABLE`, `PROHIBIT`, `UNSUPP_LWT`, and any error.
#[inline(always)]
pub fn is_forwarded(ctx: &XdpContext, t: &Transport) -> bool {
    // Zeroed in full: the helper reads the whole struct, and the verifier
    // refuses uninitialised stack.
    // SAFETY: a plain C struct of integers and unions of integers.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.l4_protocol = t.proto;
    params.sport = t.sport.to_be();
    params.dport = t.dport.to_be();
    params.ifindex = ctx.ingress_ifindex() as u32;
    // The IP packet's length, headers included: what the MTU check needs.
    params.__bindgen_anon_1.tot_len = (t.end - t.l3) as u16;
    if t.ipv4_src.is_some() {
        let (Some(tos), Some(addrs)) = (
            read_bytes::<1>(ctx, t.l3 + IPV4_TOS),
            read_bytes::<8>(ctx, t.l3 + IPV4_ADDRS),
        ) else {
            return false;
        };
        params.family = AF_INET;
        params.__bindgen_anon_2.tos = tos[0];
        params.__bindgen_anon_3.ipv4_src =
            u32::from_ne_bytes([addrs[0], addrs[1], addrs[2], addrs[3]]);
        params.__bindgen_anon_4.ipv4_dst =
            u32::from_ne_bytes([addrs[4], addrs[5], addrs[6], addrs[7]]);
    } else {
        let (Some(first), Some(addrs)) = (
            read_bytes::<4>(ctx, t.l3),
            read_bytes::<32>(ctx, t.l3 + IPV6_ADDRS),
        ) else {
            return false;
        };
        params.family = AF_INET6;
        params.__bindgen_anon_2.flowinfo = u32::from_ne_bytes(first) & IPV6_FLOWINFO_MASK;
        // SAFETY: [u8; 32] and two [u32; 4] have the same size; the words
        // keep the bytes in network order, as the struct wants them.
        let words: [[u32; 4]; 2] = unsafe { core::mem::transmute(addrs) };
        params.__bindgen_anon_3.ipv6_src = words[0];
        params.__bindgen_anon_4.ipv6_dst = words[1];
    }
    // SAFETY: `params` is a live, fully initialised bpf_fib_lookup of the
    // size passed; the context is the program's own.
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    matches!(
        u32::try_from(ret),
        Ok(BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH | BPF_FIB_LKUP_RET_FRAG_NEEDED)
    )
}
