//! The frames the program-cost bench feeds the programs: 64-byte TCP SYNs
//! (Ethernet II, IPv4 without options), optionally behind one 802.1Q tag.

use etherparse::PacketBuilder;

/// The protected host.
pub const HOST: [u8; 4] = [192, 0, 2, 1];
/// The data-plane port of the bench policy, and a control-plane one.
pub const DATA_PORT: u16 = 443;
pub const CONTROL_PORT: u16 = 22;
/// The VLAN of the bench policy's subnet rule.
pub const VLAN: u16 = 120;
/// Byte offset of the IPv4 source address in an untagged frame.
pub const SRC_OFFSET: u32 = 14 + 12;
/// The same behind one VLAN tag.
pub const SRC_OFFSET_VLAN: u32 = SRC_OFFSET + 4;

/// A TCP SYN from `src` to the host's `dport`, padded to 60 bytes (64 on
/// the wire with the FCS).
pub fn tcp_syn(src: [u8; 4], dport: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x0c], [2, 0, 0, 0, 0, 1])
        .ipv4(src, HOST, 64)
        .tcp(40000, dport, 1, 64240)
        .syn();
    let mut frame = Vec::with_capacity(64);
    builder
        .write(&mut frame, &[])
        .expect("invariant: a SYN fits the builder");
    frame.resize(60, 0);
    frame
}

/// The same behind an 802.1Q tag with VLAN id `vid`.
pub fn tcp_syn_vlan(src: [u8; 4], dport: u16, vid: u16) -> Vec<u8> {
    let plain = tcp_syn(src, dport);
    let mut frame = plain[..12].to_vec();
    frame.extend_from_slice(&0x8100u16.to_be_bytes());
    frame.extend_from_slice(&vid.to_be_bytes());
    frame.extend_from_slice(&plain[12..]);
    frame
}
