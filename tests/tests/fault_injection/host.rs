//! The host the faults are injected on and its policies: two namespaces,
//! the public veth of the [`Topology`] and a private link that is both
//! filtered and the service endpoint of a subnet rule (so an interface
//! event re-resolves the rule as well as re-attaching); the base and the
//! alternate policy, which differ in one source ([`SWITCHED`]); what a
//! policy file declares ([`Declared`], read back with `vaultfw validate`);
//! and the connections that show what the kernel enforces.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, SystemTime};

use vaultfw_tests::traffic::connect;
use vaultfw_tests::{
    ALLOWED_SRC, AgentOptions, CliOutput, DENIED_SRC, NetNs, PROBE_TIMEOUT, SERVER_IP, TcpServer,
    Topology, vaultfw,
};

/// Allowed by the alternate policy only: whether it connects says which
/// policy the kernel serves.
pub const SWITCHED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);
/// On the private link; every policy allows it (203.0.113.0/24).
const ALLOWED_PRIVATE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 77);
/// On the private link; allowed there by the subnet rule, and nowhere else.
pub(super) const SUBNET_SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
/// The server's address on the private link.
const PRIVATE_SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 1);
const PRIVATE_CIDR: &str = "10.1.2.1/24";
/// The filtered port.
const PORT: u16 = 443;
/// How long a dropped SYN is waited for: one SYN (under the 1 s
/// retransmission). A SYN that passes is answered within a millisecond or
/// so here; waiting longer only slows the test (a late answer could only
/// hide a failure, never make one).
const DROP_TIMEOUT: Duration = Duration::from_millis(300);

/// The `limits` of a policy: a change recreates the maps at the next start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    ip_rules: u32,
    virtual_network_rules: u32,
}

/// The two `limits` the start path alternates between.
pub const LIMITS: [Limits; 2] = [
    Limits {
        ip_rules: 200,
        virtual_network_rules: 10,
    },
    Limits {
        ip_rules: 300,
        virtual_network_rules: 20,
    },
];

/// Whether (and until when) a policy allows [`SWITCHED`].
#[derive(Clone, Copy, Debug)]
pub enum Switched {
    /// Not allowed: the base policy.
    Absent,
    /// Allowed: the alternate policy.
    Present,
    /// Allowed until then (`expires_at`).
    Until(SystemTime),
}

/// The policies of these tests: the base one, or the alternate one.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Its `limits`.
    pub limits: Limits,
    /// Its rule for [`SWITCHED`].
    pub switched: Switched,
}

impl Spec {
    /// The base policy with the first limits.
    pub const BASE: Spec = Spec {
        limits: LIMITS[0],
        switched: Switched::Absent,
    };
    /// The alternate policy with the first limits.
    pub const ALTERNATE: Spec = Spec {
        limits: LIMITS[0],
        switched: Switched::Present,
    };

    /// The limits and the [`SWITCHED`] rule of `declared` (an expiring rule
    /// counts as present: it is declared until its time).
    pub fn of(declared: &Declared) -> Spec {
        let limits = &declared.policy["limits"];
        let number = |key: &str| {
            limits[key]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_else(|| panic!("no limits.{key} in {limits}"))
        };
        Spec {
            limits: Limits {
                ip_rules: number("ip_rules"),
                virtual_network_rules: number("virtual_network_rules"),
            },
            switched: if declared.allows(SWITCHED) {
                Switched::Present
            } else {
                Switched::Absent
            },
        }
    }
}

/// The protected host: two namespaces, the public veth and the private
/// link (an endpoint), a server on port 443 of every address.
pub struct Host {
    /// The namespaces and the public veth.
    pub topo: Topology,
    private_client: String,
    private_server: String,
    _server: TcpServer,
}

impl Host {
    pub(super) fn new() -> Self {
        let topo = Topology::with_client_addrs(&[SWITCHED]);
        let (private_client, private_server) =
            topo.add_private_link(PRIVATE_CIDR, &[ALLOWED_PRIVATE, SUBNET_SRC]);
        let server = TcpServer::start(&topo.server, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT));
        Host {
            topo,
            private_client,
            private_server,
            _server: server,
        }
    }

    /// The policy `spec` as a native policy file.
    pub fn policy(&self, spec: &Spec) -> String {
        let switched = match spec.switched {
            Switched::Absent => String::new(),
            Switched::Present => format!(", \"{SWITCHED}\""),
            Switched::Until(at) => format!(
                ", {{ value = \"{SWITCHED}\", expires_at = \"{}\" }}",
                humantime::format_rfc3339_millis(at)
            ),
        };
        let Limits {
            ip_rules,
            virtual_network_rules,
        } = spec.limits;
        format!(
            r#"# the office everywhere, the lab subnet through its endpoint only
default_action = "Deny"
bypass = "None"
limits = {{ ip_rules = {ip_rules}, virtual_network_rules = {virtual_network_rules} }}
ip_rules = ["203.0.113.0/24"{switched}]

[[virtual_network_rules]]
id = "lab"
address_prefixes = ["10.1.2.0/24"]
endpoint = {{ interface = "{}" }}
ignore_missing_endpoint = true

[data_plane]
tcp_ports = [{PORT}]
"#,
            self.private_server
        )
    }

    /// `vaultfw run --iface <public> --iface <private> --on-exit keep`.
    pub(super) fn options(&self) -> AgentOptions {
        AgentOptions {
            ifaces: vec![
                self.topo.server_veth().to_owned(),
                self.private_server.clone(),
            ],
            on_exit: "keep",
            ..AgentOptions::iface(self.topo.server_veth())
        }
    }

    /// Deletes the private link (both ends).
    pub fn delete_private_link(&self) {
        self.topo
            .server
            .ip(&["link", "del", self.private_server.as_str()]);
    }

    /// Creates the private link again: same names, new ifindexes.
    pub fn create_private_link(&self) {
        self.topo.add_private_link_named(
            &self.private_client,
            &self.private_server,
            PRIVATE_CIDR,
            &[ALLOWED_PRIVATE, SUBNET_SRC],
        );
    }

    /// Whether the private link exists now.
    pub fn private_link_exists(&self) -> bool {
        self.topo
            .server
            .try_ip(&["link", "show", "dev", self.private_server.as_str()])
            .is_ok()
    }

    pub(super) fn public(&self) -> SocketAddrV4 {
        SocketAddrV4::new(SERVER_IP, PORT)
    }

    pub(super) fn private(&self) -> SocketAddrV4 {
        SocketAddrV4::new(PRIVATE_SERVER, PORT)
    }

    /// The interfaces every agent filters, sorted.
    pub(super) fn filtered(&self) -> Vec<String> {
        let mut names = vec![
            self.topo.server_veth().to_owned(),
            self.private_server.clone(),
        ];
        names.sort();
        names
    }
}

/// The policy a file declares, as the loader reads it now (`vaultfw
/// validate --output json`: an expired rule is left out).
#[derive(Debug)]
pub struct Declared {
    /// The validated policy document.
    pub policy: serde_json::Value,
}

impl Declared {
    /// Reads and validates `path`; panics unless it is valid.
    pub fn read(path: &Path) -> Self {
        let path = path.to_str().expect("temp paths are UTF-8");
        let out = CliOutput::new(
            vec!["validate".into(), path.into()],
            vaultfw(&["validate", path, "--output", "json"]),
        );
        let doc = out.ok();
        assert_eq!(
            doc["valid"],
            true,
            "the policy file is not valid: {}",
            out.context()
        );
        Declared {
            policy: doc["policy"].clone(),
        }
    }

    /// Whether the policy admits `src` (default action, or an IP rule).
    pub fn allows(&self, src: Ipv4Addr) -> bool {
        if self.policy["default_action"] == "Allow" {
            return true;
        }
        let rules = self.policy["ip_rules"]
            .as_array()
            .unwrap_or_else(|| panic!("no ip_rules in {}", self.policy));
        rules
            .iter()
            .filter_map(|rule| rule["network"].as_str())
            .any(|network| contains(network, src))
    }
}

/// Whether `network` (`a.b.c.d` or `a.b.c.d/len`) contains `addr`.
fn contains(network: &str, addr: Ipv4Addr) -> bool {
    let (base, len) = network.split_once('/').unwrap_or((network, "32"));
    let base: Ipv4Addr = base
        .parse()
        .unwrap_or_else(|_| panic!("not an IPv4 network: {network}"));
    let len: u32 = len
        .parse()
        .unwrap_or_else(|_| panic!("not a prefix length: {network}"));
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(base) & mask == u32::from(addr) & mask
}

/// One connection the kernel must let through, or drop.
pub(super) struct Check {
    what: &'static str,
    src: Ipv4Addr,
    dst: SocketAddrV4,
    connects: bool,
}

impl Host {
    /// The office on the public veth: every policy allows it.
    pub(super) fn office(&self) -> Check {
        Check {
            what: "the office (every policy allows it), public veth",
            src: ALLOWED_SRC,
            dst: self.public(),
            connects: true,
        }
    }

    /// [`SWITCHED`] on the public veth: admitted exactly when `allowed`.
    pub(super) fn switched(&self, allowed: bool) -> Check {
        Check {
            what: "the source only the alternate policy allows, public veth",
            src: SWITCHED,
            dst: self.public(),
            connects: allowed,
        }
    }

    /// What a policy that allows [`SWITCHED`] or not (`switched`) admits
    /// and drops on both interfaces.
    pub(super) fn policy_checks(&self, switched: bool) -> Vec<Check> {
        let check = |what, src, dst, connects| Check {
            what,
            src,
            dst,
            connects,
        };
        let (public, private) = (self.public(), self.private());
        vec![
            self.office(),
            self.switched(switched),
            check(
                "a source no policy allows, public veth",
                DENIED_SRC,
                public,
                false,
            ),
            check(
                "the lab subnet spoofed on the public veth",
                SUBNET_SRC,
                public,
                false,
            ),
            check(
                "the lab subnet through its endpoint",
                SUBNET_SRC,
                private,
                true,
            ),
            check("the office, private link", ALLOWED_PRIVATE, private, true),
            check(
                "a source no policy allows, private link",
                DENIED_SRC,
                private,
                false,
            ),
        ]
    }
}

/// Makes every check at once (each is one TCP handshake, or one SYN
/// dropped); returns the failed ones, described.
pub(super) fn failed_checks(client: &NetNs, checks: &[Check]) -> Vec<String> {
    std::thread::scope(|scope| {
        let running: Vec<_> = checks
            .iter()
            .map(|check| {
                scope.spawn(move || {
                    let timeout = if check.connects {
                        PROBE_TIMEOUT
                    } else {
                        DROP_TIMEOUT
                    };
                    (check, connect(client, check.src, check.dst, timeout))
                })
            })
            .collect();
        running
            .into_iter()
            .map(|thread| thread.join().expect("a check thread panicked"))
            .filter(|(check, outcome)| outcome.is_established() != check.connects)
            .map(|(check, outcome)| {
                let wanted = if check.connects {
                    "connect"
                } else {
                    "be dropped"
                };
                format!(
                    "  {}: {} -> {} should {wanted}, got {outcome:?}",
                    check.what, check.src, check.dst
                )
            })
            .collect()
    })
}
