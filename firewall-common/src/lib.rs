//! The contract between the XDP program (`firewall-ebpf`) and the agent
//! (`firewall-agent`): map names, the layout of every key and value, verdict
//! indices and policy flag bits. Nothing else may define these; both sides
//! import them from here (as xdp-filter keeps them in `common_kern_user.h`).
//!
//! Byte order: every IPv4 address in a key or value is stored as its four
//! octets in network byte order (`[a, b, c, d]` for `a.b.c.d`), exactly as
//! they appear in the packet. No field here is ever byte-swapped by the
//! program. Ports in the port bitmap are indexed by their host-order value.
#![no_std]

pub mod cpt;
pub mod layout;
pub mod maps;
pub mod verdict;

pub use layout::*;
pub use maps::*;
pub use verdict::Verdict;

/// VLAN tags (802.1Q `0x8100`, 802.1ad `0x88A8`) the parser walks. A frame
/// with more tags is dropped as `deny_malformed`, never passed unread.
pub const MAX_VLAN_TAGS: usize = 2;

/// IPv6 extension headers the parser walks to find the transport header.
/// A chain that is longer still is dropped as `deny_malformed`.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// The furthest byte offset (from the start of the IPv6 header) at which the
/// parser looks for a transport header; a longer extension chain is
/// `deny_malformed`. Bounds every read for the verifier.
pub const MAX_IPV6_TRANSPORT_OFFSET: usize = 512;
