//! Tunnels between the two namespaces of a [`Topology`], over its veth:
//! the host decapsulates, and the inner packet arrives on the tunnel
//! device, where the firewall must judge it too.
//!
//! ```text
//!   client ns                                         server ns
//!   <tunnel dev> inner sources (/32 each)   ====>     <tunnel dev> 10.200.0.1/32
//!        outer: 203.0.113.5  ---- veth ---->  192.0.2.1
//! ```
//!
//! [`Tunnel::over`] builds a kernel tunnel (vxlan, ipip, gre, wireguard)
//! or says why this kernel cannot (the module is missing, or the tool that
//! configures it). [`TunRelay`] builds an L3 tunnel that every kernel with
//! `/dev/net/tun` has: a tun device in each namespace and a relay thread
//! copying IP packets between them (the role wireguard's crypto plays).
//! Everything lives inside the namespaces and goes with them; the relay
//! stops and closes its devices on drop.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::netns::{NetNs, in_netns, unique_name};
use crate::topology::{ALLOWED_SRC, SERVER_IP, Topology};

/// The protected host's address inside every tunnel.
pub const TUNNEL_SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);

/// A kernel tunnel type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelKind {
    /// VXLAN (UDP 4789): Ethernet inside, an Ethernet device.
    Vxlan,
    /// IP in IP: an L3 device (ARPHRD_TUNNEL).
    Ipip,
    /// GRE: an L3 device (ARPHRD_IPGRE).
    Gre,
    /// WireGuard (UDP 51820): an L3 device (ARPHRD_NONE).
    Wireguard,
}

/// A kernel tunnel between the client and the server namespace.
#[derive(Debug)]
pub struct Tunnel {
    /// The tunnel device in the client namespace.
    pub client_dev: String,
    /// The tunnel device in the server namespace (where the inner packets
    /// arrive).
    pub server_dev: String,
}

impl Tunnel {
    /// Builds a `kind` tunnel over `topo`'s veth, gives the client end the
    /// `inner_sources` and the server end [`TUNNEL_SERVER_IP`], with routes
    /// both ways through it. `Err(reason)` when this kernel (or machine)
    /// cannot create or configure that tunnel type.
    pub fn over(
        topo: &Topology,
        kind: TunnelKind,
        inner_sources: &[Ipv4Addr],
    ) -> Result<Tunnel, String> {
        let client_dev = unique_name("tc");
        let server_dev = unique_name("ts");
        let (client_outer, server_outer) = (ALLOWED_SRC.to_string(), SERVER_IP.to_string());
        let spec = |local: &str, remote: &str, underlay: &str| -> Vec<String> {
            let words: Vec<&str> = match kind {
                TunnelKind::Vxlan => vec![
                    "vxlan", "id", "42", "dstport", "4789", "local", local, "remote", remote,
                    "dev", underlay,
                ],
                TunnelKind::Ipip => vec!["ipip", "local", local, "remote", remote],
                TunnelKind::Gre => vec!["gre", "local", local, "remote", remote],
                TunnelKind::Wireguard => vec!["wireguard"],
            };
            words.into_iter().map(str::to_owned).collect()
        };
        if kind == TunnelKind::Wireguard && Command::new("wg").arg("--version").output().is_err() {
            return Err(
                "wireguard: the `wg` tool (wireguard-tools) that configures it is not installed"
                    .to_owned(),
            );
        }
        for (ns, dev, local, remote, underlay) in [
            (
                &topo.client,
                &client_dev,
                &client_outer,
                &server_outer,
                topo.client_veth(),
            ),
            (
                &topo.server,
                &server_dev,
                &server_outer,
                &client_outer,
                topo.server_veth(),
            ),
        ] {
            let mut args = vec![
                "link".to_owned(),
                "add".to_owned(),
                dev.clone(),
                "type".to_owned(),
            ];
            args.extend(spec(local, remote, underlay));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ns.try_ip(&args)
                .map_err(|e| format!("{kind:?}: this kernel cannot create the device: {e}"))?;
            ns.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "1");
        }
        let tunnel = Tunnel {
            client_dev,
            server_dev,
        };
        if kind == TunnelKind::Wireguard {
            tunnel.configure_wireguard(topo, inner_sources)?;
        }
        configure_inner(topo, &tunnel.client_dev, &tunnel.server_dev, inner_sources);
        Ok(tunnel)
    }

    /// Keys, peers and allowed IPs of both ends (wireguard only).
    fn configure_wireguard(
        &self,
        topo: &Topology,
        inner_sources: &[Ipv4Addr],
    ) -> Result<(), String> {
        let key = || -> Result<(String, String), String> {
            let private = run_wg(&["genkey"], None)?;
            let public = run_wg(&["pubkey"], Some(&private))?;
            Ok((private, public))
        };
        let (client_key, client_pub) = key()?;
        let (server_key, server_pub) = key()?;
        let client_allowed = format!("{TUNNEL_SERVER_IP}/32");
        let server_allowed: Vec<String> = inner_sources.iter().map(|a| format!("{a}/32")).collect();
        let server_allowed = server_allowed.join(",");
        for (ns, dev, key, port, peer, allowed, endpoint) in [
            (
                &topo.client,
                &self.client_dev,
                &client_key,
                "51820",
                &server_pub,
                &client_allowed,
                Some(SocketAddrV4::new(SERVER_IP, 51821)),
            ),
            (
                &topo.server,
                &self.server_dev,
                &server_key,
                "51821",
                &client_pub,
                &server_allowed,
                None,
            ),
        ] {
            let key_file =
                tempfile::NamedTempFile::new().map_err(|e| format!("wireguard key file: {e}"))?;
            std::fs::write(key_file.path(), key).map_err(|e| format!("wireguard key file: {e}"))?;
            let key_path = key_file.path().display().to_string();
            let mut args = vec![
                "set",
                dev.as_str(),
                "listen-port",
                port,
                "private-key",
                key_path.as_str(),
                "peer",
                peer.as_str(),
                "allowed-ips",
                allowed.as_str(),
            ];
            let endpoint = endpoint.map(|e| e.to_string());
            if let Some(endpoint) = &endpoint {
                args.extend(["endpoint", endpoint.as_str()]);
            }
            in_netns(ns, || run_wg(&args, None))?;
        }
        Ok(())
    }
}

fn run_wg(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new("wg")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running wg: {e}"))?;
    if let Some(input) = stdin {
        let _ = child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes());
    }
    drop(child.stdin.take());
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running wg: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "wg {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Both ends up, the inner addresses and the routes through the tunnel.
fn configure_inner(
    topo: &Topology,
    client_dev: &str,
    server_dev: &str,
    inner_sources: &[Ipv4Addr],
) {
    topo.client.ip(&["link", "set", client_dev, "up"]);
    topo.server.ip(&["link", "set", server_dev, "up"]);
    topo.server.ip(&[
        "addr",
        "add",
        &format!("{TUNNEL_SERVER_IP}/32"),
        "dev",
        server_dev,
    ]);
    for source in inner_sources {
        topo.client
            .ip(&["addr", "add", &format!("{source}/32"), "dev", client_dev]);
        topo.server
            .ip(&["route", "add", &format!("{source}/32"), "dev", server_dev]);
    }
    topo.client.ip(&[
        "route",
        "add",
        &format!("{TUNNEL_SERVER_IP}/32"),
        "dev",
        client_dev,
    ]);
}

/// An L3 tunnel made of two tun devices (ARPHRD_NONE, like wireguard) and
/// a relay thread: what the client's kernel routes into its tun device,
/// the relay writes into the server's, whose kernel receives it as if a
/// tunnel had decapsulated it — and back.
pub struct TunRelay {
    /// The tun device in the client namespace.
    pub client_dev: String,
    /// The tun device in the server namespace.
    pub server_dev: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl TunRelay {
    /// Creates both tun devices (removed when the relay drops), starts the
    /// relay, and configures the inner addresses and routes like
    /// [`Tunnel::over`]. `Err(reason)` without `/dev/net/tun`.
    pub fn new(topo: &Topology, inner_sources: &[Ipv4Addr]) -> Result<TunRelay, String> {
        let client_dev = unique_name("uc");
        let server_dev = unique_name("us");
        let client = open_tun(&topo.client, &client_dev)?;
        let server = open_tun(&topo.server, &server_dev)?;
        topo.client
            .sysctl(&format!("net.ipv6.conf.{client_dev}.disable_ipv6"), "1");
        topo.server
            .sysctl(&format!("net.ipv6.conf.{server_dev}.disable_ipv6"), "1");
        let (client, server) = (Arc::new(client), Arc::new(server));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = [(client.clone(), server.clone()), (server, client)]
            .into_iter()
            .map(|(from, to)| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name("tun-relay".to_owned())
                    .spawn(move || relay(&from, &to, &stop))
                    .expect("spawning the tun relay")
            })
            .collect();
        let tunnel = TunRelay {
            client_dev,
            server_dev,
            stop,
            threads,
        };
        configure_inner(topo, &tunnel.client_dev, &tunnel.server_dev, inner_sources);
        Ok(tunnel)
    }
}

impl Drop for TunRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // The last fd of each device closes with the threads' Arcs: the
        // (non-persistent) devices go away.
    }
}

/// `TUNSETIFF` (linux/if_tun.h): `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates tun device `name` (IP packets, no packet-info header) in `ns`.
fn open_tun(ns: &NetNs, name: &str) -> Result<OwnedFd, String> {
    in_netns(ns, || {
        // SAFETY: a plain open(2) of a path literal.
        let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "cannot open /dev/net/tun: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `fd` was just opened and is owned here alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut request = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI,
            _pad: [0; 22],
        };
        request.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads a struct ifreq, which IfReq lays out.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut request) } < 0 {
            return Err(format!(
                "TUNSETIFF {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(fd)
    })
}

/// Copies packets from `from` to `to` until `stop` is set (checked every
/// 50 ms).
fn relay(from: &OwnedFd, to: &OwnedFd, stop: &AtomicBool) {
    let mut buffer = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let mut poll = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut poll, 1, 50) } <= 0 {
            continue;
        }
        // SAFETY: reads into a buffer of its stated length.
        let n = unsafe { libc::read(from.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
        if n <= 0 {
            continue;
        }
        // SAFETY: writes `n` bytes the read just filled.
        let _ = unsafe { libc::write(to.as_raw_fd(), buffer.as_ptr().cast(), n as usize) };
    }
}
