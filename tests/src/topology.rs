//! The test network: a "client" namespace and a "server" namespace (the
//! protected host) joined by one veth pair.
//!
//! ```text
//!   client ns                                   server ns
//!   <client veth> 203.0.113.5/32   <-------->   <server veth> 192.0.2.1/24
//!                 198.51.100.7/32               (vaultfw attaches here)
//!                 + what the test asks for
//! ```
//!
//! The link is kept quiet so verdict counters see only what a test sends:
//! IPv6 is disabled everywhere (no router/neighbour solicitations, no MLD),
//! neighbours are static permanent entries both ways (no ARP), routes are
//! on-link defaults, and the veth has one queue each way so frames reach the
//! XDP program in the order they were sent (a later frame that arrives proves
//! the earlier ones were judged). A test that wants ARP calls
//! [`Topology::flush_neighbours`].

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::netns::{NetNs, unique_name};

/// The protected host's address (server veth, /24).
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// A source the example policy allows (inside 203.0.113.0/24).
pub const ALLOWED_SRC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
/// A source no test policy allows.
pub const DENIED_SRC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// The policy most tests serve: deny by default, one IP rule admitting
/// the office range 203.0.113.0/24 ([`ALLOWED_SRC`], not [`DENIED_SRC`]),
/// TCP 443 as the data plane.
pub const OFFICE_POLICY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
"#;

/// Two namespaces joined by a veth pair; everything is removed on drop.
pub struct Topology {
    /// The namespace clients send from.
    pub client: NetNs,
    /// The protected host: the agent and the servers run here.
    pub server: NetNs,
    client_veth: String,
    server_veth: String,
    client_mac: String,
    client_addrs: Vec<Ipv4Addr>,
}

impl Topology {
    /// Client sources 203.0.113.5 and 198.51.100.7.
    pub fn new() -> Self {
        Self::with_client_addrs(&[])
    }

    /// Client sources 203.0.113.5, 198.51.100.7 and `extra`.
    pub fn with_client_addrs(extra: &[Ipv4Addr]) -> Self {
        let client = NetNs::new("c");
        let server = NetNs::new("s");
        for ns in [&client, &server] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        }
        let mut topo = Topology {
            client,
            server,
            client_veth: unique_name("c"),
            server_veth: unique_name("s"),
            client_mac: String::new(),
            client_addrs: Vec::new(),
        };
        topo.create_veth();
        for addr in [ALLOWED_SRC, DENIED_SRC].iter().chain(extra) {
            topo.add_client_addr(*addr);
        }
        topo
    }

    /// Creates the veth pair (with this topology's names) directly inside
    /// the namespaces and configures it: IPv6 off, the server address,
    /// both ends up, on-link default routes, static neighbours.
    fn create_veth(&mut self) {
        // Created directly inside the namespaces: never visible on the host.
        crate::netns::ip(&[
            "link",
            "add",
            &self.client_veth,
            "netns",
            self.client.name(),
            "numtxqueues",
            "1",
            "numrxqueues",
            "1",
            "type",
            "veth",
            "peer",
            "name",
            &self.server_veth,
            "netns",
            self.server.name(),
            "numtxqueues",
            "1",
            "numrxqueues",
            "1",
        ]);
        for (ns, veth) in [
            (&self.client, &self.client_veth),
            (&self.server, &self.server_veth),
        ] {
            ns.sysctl(&format!("net.ipv6.conf.{veth}.disable_ipv6"), "1");
        }
        self.client_mac = mac_of(&self.client, &self.client_veth);
        let server_mac = mac_of(&self.server, &self.server_veth);

        let sv = self.server_veth.clone();
        let cv = self.client_veth.clone();
        self.server
            .ip(&["addr", "add", &format!("{SERVER_IP}/24"), "dev", &sv]);
        self.server.ip(&["link", "set", &sv, "up"]);
        self.server.ip(&["route", "add", "default", "dev", &sv]);
        self.client.ip(&["link", "set", &cv, "up"]);
        self.client.ip(&["route", "add", "default", "dev", &cv]);
        self.client.ip(&[
            "neigh",
            "replace",
            &SERVER_IP.to_string(),
            "lladdr",
            &server_mac,
            "dev",
            &cv,
            "nud",
            "permanent",
        ]);
    }

    /// Deletes the veth pair (unless [`Topology::delete_veth`] already
    /// did) and creates it again with the same names, addresses, routes and
    /// neighbours (new ifindexes and MACs): an interface that goes away and
    /// comes back.
    pub fn recreate_veth(&mut self) {
        if self
            .server
            .try_ip(&["link", "show", "dev", &self.server_veth])
            .is_ok()
        {
            self.delete_veth();
        }
        self.create_veth();
        for addr in std::mem::take(&mut self.client_addrs) {
            self.add_client_addr(addr);
        }
    }

    /// Deletes the veth pair (both ends); [`Topology::create_veth`] or
    /// [`Topology::recreate_veth`] brings it back.
    pub fn delete_veth(&self) {
        self.server.ip(&["link", "del", &self.server_veth]);
    }

    /// Add a source address to the client veth (and its static neighbour
    /// entry on the server).
    pub fn add_client_addr(&mut self, addr: Ipv4Addr) {
        if self.client_addrs.contains(&addr) {
            return;
        }
        let cv = self.client_veth.clone();
        let sv = self.server_veth.clone();
        self.client
            .ip(&["addr", "add", &format!("{addr}/32"), "dev", &cv]);
        self.server.ip(&[
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            &self.client_mac,
            "dev",
            &sv,
            "nud",
            "permanent",
        ]);
        self.client_addrs.push(addr);
    }

    /// The client's source addresses.
    pub fn client_addrs(&self) -> &[Ipv4Addr] {
        &self.client_addrs
    }

    /// The server end of the veth pair: where the agent attaches.
    pub fn server_veth(&self) -> &str {
        &self.server_veth
    }

    /// The client end of the veth pair.
    pub fn client_veth(&self) -> &str {
        &self.client_veth
    }

    /// `192.0.2.1:port`.
    pub fn server_addr(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(SERVER_IP, port)
    }

    /// Remove the static neighbour entries both ways and flush both tables,
    /// so the next packet needs ARP.
    pub fn flush_neighbours(&self) {
        let _ = self.client.try_ip(&[
            "neigh",
            "del",
            &SERVER_IP.to_string(),
            "dev",
            &self.client_veth,
        ]);
        for addr in &self.client_addrs {
            let _ =
                self.server
                    .try_ip(&["neigh", "del", &addr.to_string(), "dev", &self.server_veth]);
        }
        self.client
            .ip(&["neigh", "flush", "dev", &self.client_veth]);
        self.server
            .ip(&["neigh", "flush", "dev", &self.server_veth]);
    }

    /// A second veth pair between the same namespaces: the "private" link
    /// a subnet's traffic arrives through (its service endpoint). The
    /// server end gets `server_cidr` (e.g. `10.1.2.1/24`, whose subnet is
    /// routed there), the client end `client_addrs` (/32 each). ARP runs on
    /// this link (no static entries). Returns (client veth, server veth);
    /// both go away with the namespaces.
    pub fn add_private_link(
        &self,
        server_cidr: &str,
        client_addrs: &[Ipv4Addr],
    ) -> (String, String) {
        let cv = unique_name("cp");
        let sv = unique_name("sp");
        self.add_private_link_named(&cv, &sv, server_cidr, client_addrs);
        (cv, sv)
    }

    /// [`Topology::add_private_link`] with the given names: after the link
    /// was deleted (`ip link del` of either end), this brings it back with
    /// the same names, addresses and route (new ifindexes and MACs), as an
    /// interface that goes away and returns.
    pub fn add_private_link_named(
        &self,
        client_veth: &str,
        server_veth: &str,
        server_cidr: &str,
        client_addrs: &[Ipv4Addr],
    ) {
        let (cv, sv) = (client_veth, server_veth);
        crate::netns::ip(&[
            "link",
            "add",
            cv,
            "netns",
            self.client.name(),
            "type",
            "veth",
            "peer",
            "name",
            sv,
            "netns",
            self.server.name(),
        ]);
        for (ns, veth) in [(&self.client, cv), (&self.server, sv)] {
            ns.sysctl(&format!("net.ipv6.conf.{veth}.disable_ipv6"), "1");
            ns.ip(&["link", "set", veth, "up"]);
        }
        self.server.ip(&["addr", "add", server_cidr, "dev", sv]);
        for addr in client_addrs {
            self.client
                .ip(&["addr", "add", &format!("{addr}/32"), "dev", cv]);
        }
        let server_ip = server_cidr.split('/').next().expect("a CIDR");
        self.client
            .ip(&["route", "add", &format!("{server_ip}/32"), "dev", cv]);
    }

    /// The neighbour table of the server veth, as `ip neigh show` prints it.
    pub fn server_neighbours(&self) -> String {
        self.server.ip(&["neigh", "show", "dev", &self.server_veth])
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; the namespaces (dropped next,
        // client first) would take it with them, but a thread still holding
        // a namespace open would keep it alive.
        if let Err(err) = self.server.try_ip(&["link", "del", &self.server_veth]) {
            eprintln!("warning: deleting veth {}: {err}", self.server_veth);
        }
    }
}

/// The MAC address of `dev` in `ns`.
/// The MAC address of `dev` in `ns`, as `ip` prints it.
pub(crate) fn mac_of(ns: &NetNs, dev: &str) -> String {
    let json = ns.ip(&["-j", "link", "show", "dev", dev]);
    let links: serde_json::Value = serde_json::from_str(&json)
        .unwrap_or_else(|err| panic!("parsing `ip -j link show dev {dev}`: {err}: {json}"));
    links[0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address for {dev} in {json}"))
        .to_owned()
}
