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
/// The IPv4 header's fixed part, which the parser checked is in the frame.
const IPV4_HEADER: usize = 20;
/// IPv6 header offset of the source address (the destination follows it).
const IPV6_ADDRS: usize = 8;
/// The IPv6 fixed header's length.
const IPV6_HEADER: usize = 40;
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
    // Each header is read with one bounds check: with two, LLVM may skip
    // the first read on a path only the second check ends, and the
    // verifier, which cannot tell, refuses the uninitialised register.
    if t.ipv4_src.is_some() {
        let Some(header) = read_bytes::<IPV4_HEADER>(ctx, t.l3) else {
            return false;
        };
        let addr = |at: usize| {
            u32::from_ne_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        params.family = AF_INET;
        params.__bindgen_anon_2.tos = header[IPV4_TOS];
        params.__bindgen_anon_3.ipv4_src = addr(IPV4_ADDRS);
        params.__bindgen_anon_4.ipv4_dst = addr(IPV4_ADDRS + 4);
    } else {
        let Some(header) = read_bytes::<IPV6_HEADER>(ctx, t.l3) else {
            return false;
        };
        let mut first = [0u8; 4];
        first.copy_from_slice(&header[..4]);
        let mut addrs = [0u8; 32];
        addrs.copy_from_slice(&header[IPV6_ADDRS..IPV6_HEADER]);
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
