//! Raw Ethernet frames sent through an AF_PACKET socket on a namespace's
//! interface: how tests deliver what no socket API sends (VLAN tags on a
//! kernel without 802.1Q, spoofed sources). Frames are built with
//! etherparse; they reach the peer's XDP program exactly as written.

use std::net::Ipv4Addr;

use crate::netns::{NetNs, in_netns};

/// A TCP SYN from `src`:40000 to `dst`:`dport`, Ethernet II from
/// `src_mac` to `dst_mac`, behind `vlan` (802.1Q) when given.
pub fn tcp_syn(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlan: Option<u16>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dport: u16,
) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac);
    let mut frame = Vec::new();
    match vlan {
        Some(id) => builder
            .single_vlan(etherparse::VlanId::try_new(id).expect("VLAN id 1-4094"))
            .ipv4(src.octets(), dst.octets(), 64)
            .tcp(40000, dport, 1, 64240)
            .syn()
            .write(&mut frame, &[]),
        None => builder
            .ipv4(src.octets(), dst.octets(), 64)
            .tcp(40000, dport, 1, 64240)
            .syn()
            .write(&mut frame, &[]),
    }
    .expect("building a frame");
    frame
}

/// The MAC address of `iface` in `ns`, as bytes.
pub fn mac(ns: &NetNs, iface: &str) -> [u8; 6] {
    let text = crate::topology::mac_of(ns, iface);
    let mut mac = [0u8; 6];
    for (i, part) in text.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16).expect("a MAC address");
    }
    mac
}

/// Sends each of `frames` once, out of `iface` in `ns`.
pub fn send_frames(ns: &NetNs, iface: &str, frames: &[Vec<u8>]) {
    let iface = iface.to_owned();
    in_netns(ns, || {
        let ifindex = nix::net::if_::if_nametoindex(iface.as_str())
            .unwrap_or_else(|e| panic!("interface {iface}: {e}"));
        // SAFETY: plain socket(2); the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        for frame in frames {
            // SAFETY: frame and addr are valid for the lengths given.
            let sent = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(
                sent,
                frame.len() as isize,
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
    });
}
