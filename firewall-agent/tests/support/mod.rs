//! Shared pieces of the BPF_PROG_TEST_RUN tests: crafted frames (built
//! with etherparse, then bent where a test needs a malformed one) and a
//! loaded program that reports which single counter a frame incremented.

#![allow(dead_code)] // each test file uses a different subset

use etherparse::{IpNumber, Ipv4Header, PacketBuilder};
use firewall_common::Verdict;
use vaultfw::compile::CompiledTables;
use vaultfw::dataplane::{ApplyReport, AttachKind, Capacity, Dataplane};
use vaultfw::policy::parse_toml;

/// XDP_DROP and XDP_PASS as the kernel returns them.
pub const XDP_DROP: u32 = 1;
/// See [`XDP_DROP`].
pub const XDP_PASS: u32 = 2;

/// The protected host of these tests (192.0.2.1).
pub const HOST: [u8; 4] = [192, 0, 2, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// Whether this process may load BPF programs. The tests need root; `cargo
/// xtask test` runs them as root and refuses to run otherwise.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipping: loading an XDP program needs root (run `cargo xtask test`)");
        false
    }
}

/// A loaded program with a policy applied.
pub struct Program {
    pub dataplane: Dataplane,
    generation: u64,
    /// Endpoint interface names → ifindexes the policies compile against.
    pub interfaces: vaultfw::links::InterfaceIndex,
}

impl Program {
    /// Loads the program and applies the native-format `policy`.
    pub fn with_policy(policy: &str) -> Program {
        let validated = parse_toml(policy).unwrap_or_else(|e| panic!("test policy invalid:\n{e}"));
        let capacity = Capacity::for_ip_rule_limit(validated.policy.limits.ip_rules as u32);
        let dataplane = Dataplane::load(capacity).unwrap_or_else(|e| panic!("load failed: {e}"));
        let mut program = Program {
            dataplane,
            generation: 0,
            interfaces: Default::default(),
        };
        program.apply(policy);
        program
    }

    /// Applies another policy (double-buffered flip).
    pub fn apply(&mut self, policy: &str) -> ApplyReport {
        self.apply_with_events(policy, 0)
    }

    /// Applies a policy with the access log at `events_per_second` per CPU.
    pub fn apply_with_events(&mut self, policy: &str, events_per_second: u32) -> ApplyReport {
        let tables = self
            .compile(policy)
            .with_access_log(events_per_second, false);
        self.apply_tables(&tables)
    }

    /// Compiles the native-format `policy` as the daemon would for the next
    /// generation (hit slots stay with their rules, deadlines converted
    /// now).
    pub fn compile(&self, policy: &str) -> CompiledTables {
        let validated = parse_toml(policy).unwrap_or_else(|e| panic!("test policy invalid:\n{e}"));
        vaultfw::compile::compile_next(
            &validated.policy,
            &self.interfaces,
            self.dataplane.hit_slots(),
            &self.dataplane.active_tables(),
            &vaultfw::clock::MonotonicClock::now(),
        )
    }

    /// Applies `tables` as the next generation.
    pub fn apply_tables(&mut self, tables: &CompiledTables) -> ApplyReport {
        let report = self
            .dataplane
            .apply(tables, self.generation + 1)
            .unwrap_or_else(|e| panic!("apply failed: {e}"));
        if report.changed {
            self.generation = report.generation;
        }
        report
    }

    /// Applies `tables` as the next generation on probation until
    /// `deadline` (see `Dataplane::apply_with_fallback`).
    pub fn apply_with_fallback(
        &mut self,
        tables: &CompiledTables,
        deadline: std::time::SystemTime,
    ) -> ApplyReport {
        let report = self
            .dataplane
            .apply_with_fallback(tables, self.generation + 1, deadline)
            .unwrap_or_else(|e| panic!("apply with a fallback deadline failed: {e}"));
        if report.changed {
            self.generation = report.generation;
        }
        report
    }

    /// The generation the program serves as the agent records it.
    pub fn generation(&self) -> u64 {
        self.dataplane.generation()
    }

    /// Runs `frame` and returns the XDP action and the one verdict whose
    /// counter it incremented; panics unless exactly one counter moved by
    /// exactly one.
    pub fn judge(&self, frame: &[u8]) -> (u32, Verdict) {
        self.judge_with(AttachKind::L2, frame)
    }

    /// [`Program::judge`] through the `kind` entry point (for
    /// [`AttachKind::L3`], `frame` starts at the IP header).
    pub fn judge_with(&self, kind: AttachKind, frame: &[u8]) -> (u32, Verdict) {
        let before = self.dataplane.verdict_totals().expect("read counters");
        let action = self.dataplane.test_run_kind(kind, frame).expect("test run");
        let after = self.dataplane.verdict_totals().expect("read counters");
        let moved: Vec<(Verdict, u64)> = Verdict::ALL
            .iter()
            .map(|v| (*v, after[v.index() as usize] - before[v.index() as usize]))
            .filter(|(_, d)| *d != 0)
            .collect();
        assert!(
            moved.len() == 1 && moved[0].1 == 1,
            "a frame must increment exactly one counter by one, got {moved:?} for frame {}",
            hex(frame)
        );
        (action, moved[0].0)
    }

    /// Asserts the action and verdict of `frame`.
    pub fn expect(&self, frame: &[u8], action: u32, verdict: Verdict) {
        self.expect_with(AttachKind::L2, frame, action, verdict);
    }

    /// [`Program::expect`] through the `kind` entry point.
    pub fn expect_with(&self, kind: AttachKind, frame: &[u8], action: u32, verdict: Verdict) {
        let got = self.judge_with(kind, frame);
        assert_eq!(
            got,
            (action, verdict),
            "frame {} expected ({}, {}) got ({}, {})",
            hex(frame),
            action_name(action),
            verdict.name(),
            action_name(got.0),
            got.1.name()
        );
    }
}

fn action_name(action: u32) -> &'static str {
    match action {
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        _ => "other",
    }
}

/// The IP packet inside an untagged Ethernet frame: what an L3 device
/// (ipip, gre, wireguard, tun) hands the program.
pub fn ip_packet(frame: &[u8]) -> Vec<u8> {
    assert!(
        frame.len() > 14 && matches!(u16::from_be_bytes([frame[12], frame[13]]), 0x0800 | 0x86DD),
        "not an untagged IPv4/IPv6 frame: {}",
        hex(frame)
    );
    frame[14..].to_vec()
}

/// Lower-case hex of a frame, for failure messages.
pub fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tests' standard frame: Ethernet II, IPv4 IHL 5, DF, TTL 64, TCP SYN from
/// port 40000 to `dport`, from `src` to the host.
pub fn tcp_syn(src: [u8; 4], dport: u16) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(CLIENT_MAC, HOST_MAC)
            .ipv4(src, HOST, 64)
            .tcp(40000, dport, 1, 64240)
            .syn(),
        &[],
    )
}

/// A TCP segment with explicit ports and the ACK flag (no SYN).
pub fn tcp_ack(src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(CLIENT_MAC, HOST_MAC)
            .ipv4(src, HOST, 64)
            .tcp(sport, dport, 1, 64240)
            .ack(1),
        &[],
    )
}

/// A UDP datagram from port 40000 with an 8-byte payload.
pub fn udp(src: [u8; 4], dport: u16) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(CLIENT_MAC, HOST_MAC)
            .ipv4(src, HOST, 64)
            .udp(40000, dport),
        &[0u8; 8],
    )
}

/// An ICMP echo request.
pub fn icmp_echo(src: [u8; 4]) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(CLIENT_MAC, HOST_MAC)
            .ipv4(src, HOST, 64)
            .icmpv4_echo_request(1, 1),
        &[0u8; 8],
    )
}

/// A TCP SYN to `dport` behind `tags` VLAN tags (outermost first; 802.1ad
/// for an outer tag of a double stack, 802.1Q otherwise).
pub fn tcp_syn_vlan(src: [u8; 4], dport: u16, tags: &[u16]) -> Vec<u8> {
    let inner = tcp_syn(src, dport);
    with_vlan_tags(&inner, tags)
}

/// Inserts VLAN tags after the MAC addresses of an Ethernet II frame.
pub fn with_vlan_tags(frame: &[u8], tags: &[u16]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for (i, vid) in tags.iter().enumerate() {
        let tpid: u16 = if i == 0 && tags.len() > 1 {
            0x88A8
        } else {
            0x8100
        };
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&vid.to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

/// A TCP SYN whose IPv4 header carries `options` (a multiple of 4 bytes),
/// so IHL = 5 + options.len() / 4.
pub fn tcp_syn_with_options(src: [u8; 4], dport: u16, options: &[u8]) -> Vec<u8> {
    let mut header = Ipv4Header::new(0, 64, IpNumber::TCP, src, HOST).expect("header");
    header.dont_fragment = true;
    header.options = options
        .try_into()
        .expect("options: a multiple of 4 bytes, at most 40");
    build(
        PacketBuilder::ethernet2(CLIENT_MAC, HOST_MAC)
            .ip(etherparse::IpHeaders::Ipv4(header, Default::default()))
            .tcp(40000, dport, 1, 64240)
            .syn(),
        &[],
    )
}

/// An IPv4 fragment of a UDP datagram to `dport`: `offset_units` is the
/// fragment offset in 8-byte units (0 = first fragment), `more` the MF bit.
/// A non-first fragment's payload starts with bytes that look like a UDP
/// header to `dport`, to prove they are not read as one.
pub fn udp_fragment(src: [u8; 4], dport: u16, offset_units: u16, more: bool) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&40000u16.to_be_bytes());
    payload.extend_from_slice(&dport.to_be_bytes());
    payload.extend_from_slice(&[0, 16, 0, 0]);
    payload.extend_from_slice(&[0u8; 8]);
    let mut header =
        Ipv4Header::new(payload.len() as u16, 64, IpNumber::UDP, src, HOST).expect("header");
    header.more_fragments = more;
    header.fragment_offset = etherparse::IpFragOffset::try_new(offset_units).expect("offset");
    header.header_checksum = header.calc_header_checksum();
    let mut frame = Vec::new();
    etherparse::Ethernet2Header {
        source: CLIENT_MAC,
        destination: HOST_MAC,
        ether_type: etherparse::EtherType::IPV4,
    }
    .write(&mut frame)
    .expect("write");
    header.write(&mut frame).expect("write");
    frame.extend_from_slice(&payload);
    frame
}

/// An IPv6 TCP SYN to `dport` from 2001:db8::7 to 2001:db8::1.
pub fn ipv6_tcp_syn(dport: u16) -> Vec<u8> {
    build(
        PacketBuilder::ethernet2(CLIENT_MAC, HOST_MAC)
            .ipv6(ipv6(7), ipv6(1), 64)
            .tcp(40000, dport, 1, 64240)
            .syn(),
        &[],
    )
}

/// An IPv6 TCP SYN to `dport` behind `count` destination-options extension
/// headers (8 bytes each).
pub fn ipv6_tcp_syn_behind_ext_headers(dport: u16, count: usize) -> Vec<u8> {
    let plain = ipv6_tcp_syn(dport);
    let (eth_ip, tcp) = plain.split_at(14 + 40);
    let mut frame = eth_ip.to_vec();
    const DSTOPTS: u8 = 60;
    // Chain: IPv6 next header → DSTOPTS × count → TCP.
    frame[14 + 6] = if count == 0 { 6 } else { DSTOPTS };
    for i in 0..count {
        let next = if i + 1 == count { 6 } else { DSTOPTS };
        // next header, length 0 (= 8 bytes), PadN option filling 6 bytes.
        frame.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    frame.extend_from_slice(tcp);
    let payload_len = (frame.len() - 14 - 40) as u16;
    frame[14 + 4..14 + 6].copy_from_slice(&payload_len.to_be_bytes());
    frame
}

/// An ICMPv6 Neighbor Solicitation for 2001:db8::1 (type 135).
pub fn ipv6_neighbor_solicitation() -> Vec<u8> {
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&ipv6(1));
    build(
        PacketBuilder::ethernet2(CLIENT_MAC, [0x33, 0x33, 0xff, 0, 0, 1])
            .ipv6(ipv6(7), ipv6(1), 255)
            .icmpv6_raw(135, 0, [0, 0, 0, 0]),
        &body[4..],
    )
}

/// An ARP request: who has 192.0.2.1, tell 192.0.2.254.
pub fn arp_request() -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&0x0806u16.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&[192, 0, 2, 254]);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&HOST);
    frame
}

fn ipv6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    a[15] = last;
    a
}

fn build<B: Writable>(builder: B, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(builder.size_of(payload.len()));
    builder.write_to(&mut frame, payload);
    frame
}

/// The final step of an etherparse builder, whatever its header type.
trait Writable {
    fn size_of(&self, payload: usize) -> usize;
    fn write_to(self, out: &mut Vec<u8>, payload: &[u8]);
}

macro_rules! writable {
    ($($t:ty),*) => {$(
        impl Writable for etherparse::PacketBuilderStep<$t> {
            fn size_of(&self, payload: usize) -> usize { self.size(payload) }
            fn write_to(self, out: &mut Vec<u8>, payload: &[u8]) {
                self.write(out, payload).expect("frame fits the builder");
            }
        }
    )*};
}
writable!(
    etherparse::TcpHeader,
    etherparse::UdpHeader,
    etherparse::Icmpv4Header,
    etherparse::Icmpv6Header
);
