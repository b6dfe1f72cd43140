//! The XDP program's own diagnostics end to end: with `--bpf-log-level
//! debug` a malformed frame the program denies (an IPv4 header claiming 16
//! bytes, below the minimum of 20) appears in the daemon log as a record of
//! target `vaultfw::bpf`, forwarded from the program's aya-log ring
//! buffer; with the default (off) the same frame is denied and counted but
//! the program writes nothing.

use std::time::Duration;

use vaultfw_tests::raw::{mac, send_frames, tcp_syn};
use vaultfw_tests::{Agent, AgentOptions, DENIED_SRC, OFFICE_POLICY, SERVER_IP, Topology};

const WAIT: Duration = Duration::from_secs(10);
const BPF_TARGET: &str = "vaultfw::bpf";

/// A SYN to the server whose IPv4 header length field says 4 words (16
/// bytes): the program judges it `deny_malformed`.
fn malformed_frame(topo: &Topology) -> Vec<u8> {
    let mut frame = tcp_syn(
        mac(&topo.client, topo.client_veth()),
        mac(&topo.server, topo.server_veth()),
        None,
        DENIED_SRC,
        SERVER_IP,
        443,
    );
    // Byte 14: version 4, IHL 4 (the Ethernet header is 14 bytes).
    frame[14] = 0x44;
    frame
}

/// A daemon-log record (docs/logging.md) whose `log.logger` is the
/// program's.
fn is_bpf_record(line: &serde_json::Value) -> bool {
    line["log"]["logger"] == BPF_TARGET
}

#[test]
fn with_bpf_log_level_debug_a_malformed_frame_is_a_bpf_record_in_the_daemon_log() {
    let topo = Topology::new();
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec!["--bpf-log-level".into(), "debug".into()];
    let mut agent = Agent::start_with(&topo.server, OFFICE_POLICY, options);
    agent.wait_ready();
    let mark = agent.log_mark();

    send_frames(&topo.client, topo.client_veth(), &[malformed_frame(&topo)]);

    let record = agent.wait_log(mark, "a vaultfw::bpf record", WAIT, is_bpf_record);
    let message = record["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("malformed frame denied"),
        "the record names the malformed frame: {record}"
    );
    assert_eq!(record["log"]["level"], "debug", "{record}");
    let stats = agent.stop();
    assert_eq!(stats.get("deny_malformed"), 1, "{}", stats.log());
}

#[test]
fn by_default_the_program_logs_nothing_for_a_malformed_frame() {
    let topo = Topology::new();
    let mut agent = Agent::start(&topo.server, topo.server_veth(), OFFICE_POLICY);
    agent.wait_ready();

    send_frames(&topo.client, topo.client_veth(), &[malformed_frame(&topo)]);

    // The final counter line comes after the frame was judged: the
    // kernel denied it, and no program record was written for it.
    let lines = agent.log_lines();
    let stats = agent.stop();
    assert_eq!(stats.get("deny_malformed"), 1, "{}", stats.log());
    let bpf_lines: Vec<_> = stats
        .stdout_lines()
        .filter(|l| l.contains(BPF_TARGET))
        .collect();
    assert!(
        bpf_lines.is_empty() && !lines.iter().any(is_bpf_record),
        "no program record with logging off: {bpf_lines:?}"
    );
}
