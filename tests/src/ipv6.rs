//! IPv6 on a [`Topology`]: the harness keeps IPv6 off so counters see only
//! test traffic; a test of IPv6 rules turns it on for the veth pair (or a
//! private link) it uses, with documentation addresses (RFC 3849) added
//! `nodad` (no duplicate-address-detection delay) and static neighbours
//! both ways (no neighbour discovery), then makes real IPv6 TCP
//! connections, optionally carrying a Destination Options extension header
//! (RFC 8200 section 4.6) on every segment.
//!
//! ```text
//!   client ns                                  server ns
//!   <client veth> 2001:db8:1::5/128  <------>  <server veth> 2001:db8:f00::1/64
//!                 2001:db8:2::7/128
//! ```

use std::io::{self, Read};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::agent::Agent;
use crate::netns::{NetNs, in_netns};
use crate::probe::PROBE_TIMEOUT;
use crate::topology::{Topology, mac_of};
use crate::traffic::{CONNECT_TIMEOUT, Connect};

/// The protected host's IPv6 address (server veth, /64).
pub const SERVER_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf00, 0, 0, 0, 0, 1);
/// A client source inside 2001:db8:1::/48 (the IPv6 rule tests allow).
pub const ALLOWED_SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 5);
/// A client source no test's IPv6 rule allows.
pub const DENIED_SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 7);

/// Turns IPv6 on for the veth pair `client_veth`/`server_veth` of `topo`:
/// `server_cidr` on the server end, `client_addrs` (/128 each) on the
/// client end, all `nodad`; static neighbours both ways; routes to the
/// server prefix and back.
pub fn enable_ipv6_on(
    topo: &Topology,
    client_veth: &str,
    server_veth: &str,
    server_cidr: &str,
    client_addrs: &[Ipv6Addr],
) {
    for (ns, veth) in [(&topo.client, client_veth), (&topo.server, server_veth)] {
        ns.sysctl(&format!("net.ipv6.conf.{veth}.disable_ipv6"), "0");
        // No router solicitations: the link stays as quiet as it can.
        ns.sysctl(&format!("net.ipv6.conf.{veth}.router_solicitations"), "0");
    }
    let client_mac = mac_of(&topo.client, client_veth);
    let server_mac = mac_of(&topo.server, server_veth);
    topo.server.ip(&[
        "-6",
        "addr",
        "add",
        server_cidr,
        "dev",
        server_veth,
        "nodad",
    ]);
    let server_ip = server_cidr.split('/').next().expect("a CIDR");
    for addr in client_addrs {
        topo.client.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{addr}/128"),
            "dev",
            client_veth,
            "nodad",
        ]);
        topo.server.ip(&[
            "-6",
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            &client_mac,
            "dev",
            server_veth,
            "nud",
            "permanent",
        ]);
        topo.server.ip(&[
            "-6",
            "route",
            "replace",
            &format!("{addr}/128"),
            "dev",
            server_veth,
        ]);
    }
    topo.client.ip(&[
        "-6",
        "neigh",
        "replace",
        server_ip,
        "lladdr",
        &server_mac,
        "dev",
        client_veth,
        "nud",
        "permanent",
    ]);
    topo.client.ip(&[
        "-6",
        "route",
        "replace",
        &format!("{server_ip}/128"),
        "dev",
        client_veth,
    ]);
}

/// [`enable_ipv6_on`] the main veth pair: [`SERVER_IP6`]/64, client
/// sources [`ALLOWED_SRC6`], [`DENIED_SRC6`] and `extra`.
pub fn enable_ipv6(topo: &Topology, extra: &[Ipv6Addr]) {
    let mut addrs = vec![ALLOWED_SRC6, DENIED_SRC6];
    addrs.extend_from_slice(extra);
    enable_ipv6_on(
        topo,
        topo.client_veth(),
        topo.server_veth(),
        &format!("{SERVER_IP6}/64"),
        &addrs,
    );
}

/// `[2001:db8:f00::1]:port`.
pub fn server_addr6(port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(SERVER_IP6, port, 0, 0)
}

/// `IPV6_DSTOPTS` (linux/in6.h): a sticky Destination Options header.
const IPV6_DSTOPTS: libc::c_int = 59;

/// Connects from `src` in `ns` to `dst` within `timeout`; with
/// `dest_options` every segment carries an 8-byte Destination Options
/// header (one PadN option) between the IPv6 and TCP headers.
pub fn connect6(
    ns: &NetNs,
    src: Ipv6Addr,
    dst: SocketAddrV6,
    timeout: Duration,
    dest_options: bool,
) -> Connect {
    in_netns(ns, || {
        let socket = match Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)) {
            Ok(s) => s,
            Err(err) => return Connect::Failed(err),
        };
        if dest_options {
            // Next header (filled in by the kernel), length 0 (8 bytes),
            // then PadN with 4 bytes of padding (RFC 8200 section 4.2).
            let header: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
            // SAFETY: a valid socket and an 8-byte buffer of that length.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IPV6,
                    IPV6_DSTOPTS,
                    header.as_ptr().cast(),
                    header.len() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Connect::Failed(io::Error::last_os_error());
            }
        }
        if let Err(err) = socket.bind(&SocketAddr::from(SocketAddrV6::new(src, 0, 0, 0)).into()) {
            return Connect::Failed(err);
        }
        match socket.connect_timeout(&SocketAddr::from(dst).into(), timeout) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::TimedOut => return Connect::TimedOut,
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => return Connect::Refused,
            Err(err) => return Connect::Failed(err),
        }
        let mut stream: std::net::TcpStream = socket.into();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut greeting = String::new();
        let _ = stream.read_to_string(&mut greeting);
        Connect::Established { greeting }
    })
}

/// Panics unless `src` completes a handshake to `dst`.
pub fn assert_connects6(
    ns: &NetNs,
    agent: &Agent,
    src: Ipv6Addr,
    dst: SocketAddrV6,
    dest_options: bool,
    why: &str,
) {
    match connect6(ns, src, dst, PROBE_TIMEOUT, dest_options) {
        Connect::Established { .. } => {}
        other => panic!(
            "{why}: [{src}] -> {dst} should connect, got {other:?}\nagent output:\n{}",
            agent.output()
        ),
    }
}

/// Panics unless `src`'s SYN to `dst` goes unanswered for
/// [`CONNECT_TIMEOUT`] (one SYN: under the first retransmission).
pub fn assert_dropped6(
    ns: &NetNs,
    agent: &Agent,
    src: Ipv6Addr,
    dst: SocketAddrV6,
    dest_options: bool,
    why: &str,
) {
    match connect6(ns, src, dst, CONNECT_TIMEOUT, dest_options) {
        Connect::TimedOut => {}
        other => panic!(
            "{why}: [{src}] -> {dst} should be dropped, got {other:?}\nagent output:\n{}",
            agent.output()
        ),
    }
}

/// An IPv6 TCP server in a namespace: accepts, writes a greeting, closes;
/// runs until dropped.
pub struct TcpServer6 {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer6 {
    /// Listens on `[::]:port` (IPv6 only) inside `ns`.
    pub fn start(ns: &NetNs, port: u16) -> Self {
        let listener = in_netns(ns, || {
            let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))
                .expect("an IPv6 socket");
            socket.set_only_v6(true).expect("IPV6_V6ONLY");
            socket.set_reuse_address(true).expect("SO_REUSEADDR");
            let addr = SocketAddr::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
            socket
                .bind(&addr.into())
                .unwrap_or_else(|err| panic!("binding [::]:{port}: {err}"));
            socket.listen(64).expect("listen");
            TcpListener::from(socket)
        });
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("tcp6-server-{port}"))
                .spawn(move || {
                    use std::io::Write;
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((mut stream, _)) => {
                                let _ =
                                    stream.write_all(format!("vaultfw-test {port}\n").as_bytes());
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                })
                .expect("spawning a server thread")
        };
        TcpServer6 {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TcpServer6 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An Ethernet frame (802.1Q-tagged with `vlan`) carrying a TCP SYN from
/// `src` to `[dst]:dport` (sport 40000), for paths a kernel without the
/// 802.1Q module cannot send through a socket.
pub fn tcp6_syn(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlan: Option<u16>,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    dport: u16,
) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac);
    let mut frame = Vec::new();
    let payload: [u8; 0] = [];
    match vlan {
        Some(id) => builder
            .single_vlan(etherparse::VlanId::try_new(id).expect("VLAN id 1-4094"))
            .ipv6(src.octets(), dst.octets(), 64)
            .tcp(40000, dport, 1, 64240)
            .syn()
            .write(&mut frame, &payload),
        None => builder
            .ipv6(src.octets(), dst.octets(), 64)
            .tcp(40000, dport, 1, 64240)
            .syn()
            .write(&mut frame, &payload),
    }
    .expect("building a frame");
    frame
}
