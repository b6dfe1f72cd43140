//! vaultfw's end-to-end test harness: hosts are network namespaces joined by
//! veth pairs, traffic is real TCP and UDP sent by the kernel, and the
//! firewall is the real `vaultfw` binary, driven the way an operator drives it.
//!
//! Layout:
//! - [`netns`]: the namespace guard ([`NetNs`]), `ip` helpers, and
//!   [`in_netns`], which runs a closure inside a namespace.
//! - [`topology`]: a client and a protected server joined by a veth pair,
//!   with static neighbours and no IPv6, so counters see only test traffic.
//! - [`traffic`]: TCP servers and clients, UDP senders and receivers.
//! - [`raw`]: raw Ethernet frames through AF_PACKET (VLAN tags, spoofing).
//! - [`agent`]: the `vaultfw` process guard, policy files, one-shot commands.
//! - [`cli`]: CLI verbs against a daemon's socket, exit codes, JSON output.
//! - [`probe`]: a client that keeps connecting in the background.
//! - [`reach`]: assertions that a source connects, or that its SYN is dropped.
//! - [`stats`]: counter names, log-line parsing, [`FinalStats`].
//! - [`tunnel`]: vxlan, ipip, gre, wireguard and tun-relay tunnels between
//!   the two namespaces of a topology.
//! - [`cleanup`]: a registry of what exists right now, for Ctrl-C.
//!
//! Every guard cleans up on drop and never panics while dropping; the tests
//! panic rather than return `Result`. Everything needs root.

pub mod agent;
pub mod cleanup;
pub mod cli;
pub mod ipv6;
pub mod netns;
pub mod probe;
pub mod raw;
pub mod reach;
pub mod stats;
pub mod topology;
pub mod traffic;
pub mod tunnel;

pub use agent::{
    Agent, AgentOptions, AgentPaths, DEADLINE_LEAD, LogMark, PolicyFile, confirm_within_lead,
    vaultfw, vaultfw_bin,
};
pub use cli::{CliOutput, cli_in_netns};
pub use netns::{NetNs, in_netns};
pub use probe::{PROBE_TIMEOUT, ProbeLog, Prober};
pub use stats::{COUNTERS, FinalStats};
pub use topology::{ALLOWED_SRC, DENIED_SRC, OFFICE_POLICY, SERVER_IP, Topology};
pub use traffic::{
    CONNECT_TIMEOUT, Connect, TcpServer, UdpReceiver, connect, connect_from, http_get, send_udp,
};
