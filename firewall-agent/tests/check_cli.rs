//! `vaultfw check` as an operator runs it: the built binary, a policy file,
//! frames from flags or from a capture (written here with pcap-file, and
//! one written by tcpdump on a veth pair between two namespaces this test
//! creates), table and JSON output, and the refusals of a bad capture.
//!
//! Tests that load the XDP program need root (`cargo xtask test`); the
//! refusals of bad input happen before anything is loaded and run anywhere.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use serde_json::Value;

#[path = "check_cli/capture.rs"]
mod capture;

use capture::{Tcpdump, Veth, connect_from};

const VAULTFW: &str = env!("CARGO_BIN_EXE_vaultfw");

fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipping: loading an XDP program needs root (run `cargo xtask test`)");
        false
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("vaultfw-check-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }
    fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check(args: &[&str]) -> Output {
    Command::new(VAULTFW)
        .arg("check")
        .args(args)
        .output()
        .expect("run vaultfw check")
}

/// `vaultfw validate ARGS… FILE`.
fn validate(args: &[&str], file: &Path) -> Output {
    Command::new(VAULTFW)
        .arg("validate")
        .args(args)
        .arg(file)
        .output()
        .expect("run vaultfw validate")
}

fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// The JSON lines of a successful `--output json` run.
fn json_lines(out: &Output) -> Vec<Value> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn flow<'a>(policy: &'a str, src: &'a str, proto: &'a str, dport: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec![
        "--policy",
        policy,
        "--src",
        src,
        "--dst",
        "192.0.2.1",
        "--proto",
        proto,
    ];
    if let Some(port) = dport {
        args.extend(["--dport", port]);
    }
    args
}

/// The JSON line of a one-frame run.
fn judged_line(
    policy: &Path,
    src: &str,
    proto: &str,
    dport: Option<&str>,
    extra: &[&str],
) -> Value {
    let policy = policy.to_str().expect("UTF-8 path");
    let mut args = flow(policy, src, proto, dport);
    args.extend(["--output", "json"]);
    args.extend(extra);
    let mut lines = json_lines(&check(&args));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["index"], 0);
    lines.remove(0)
}

/// `(verdict, reason, rule)` of a one-frame JSON run.
fn judged(
    policy: &Path,
    src: &str,
    proto: &str,
    dport: Option<&str>,
    extra: &[&str],
) -> (String, String, Value) {
    let l = judged_line(policy, src, proto, dport, extra);
    (
        l["verdict"].as_str().expect("verdict").to_owned(),
        l["reason"].as_str().expect("reason").to_owned(),
        l["rule"].clone(),
    )
}

const K1_POLICY: &str = r#"
default_action = "Deny"
ip_rules = ["203.0.113.10", { value = "198.51.100.0/24", comment = "office" }]

[[virtual_network_rules]]
id = "vnet-test/subnets/app"
address_prefixes = ["10.20.0.0/16"]
# BPF_PROG_TEST_RUN judges frames as received on lo: the endpoint the
# frames "arrive through".
endpoint = { interface = "lo" }
"#;

#[test]
fn flags_mode_names_verdict_reason_and_rule_through_either_lookup() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("k1");
    let policy = dir.file("policy.toml", K1_POLICY);
    let cases = [
        (
            "203.0.113.10",
            "XDP_PASS",
            "allow_ip_rule",
            Value::from("ip rule 203.0.113.10"),
        ),
        ("10.113.0.203", "XDP_DROP", "deny_no_match", Value::Null),
        (
            "10.20.30.40",
            "XDP_PASS",
            "allow_vnet_rule",
            Value::from(
                "virtual network rule vnet-test/subnets/app: 10.20.0.0/16 via interface lo",
            ),
        ),
        ("10.21.0.1", "XDP_DROP", "deny_no_match", Value::Null),
        (
            "198.51.100.7",
            "XDP_PASS",
            "allow_ip_rule",
            Value::from("ip rule 198.51.100.0/24 (\"office\")"),
        ),
    ];
    // `--lookup trie` and the default (compiled): the program's compiled
    // table judges as its tries do, and each line says which judged it.
    for (name, lookup) in [("trie", &["--lookup", "trie"][..]), ("compiled", &[])] {
        let line = judged_line(&policy, "203.0.113.10", "tcp", Some("443"), lookup);
        assert_eq!(line["lookup"], name, "{line}");
        for (src, verdict, reason, rule) in &cases {
            let got = judged(&policy, src, "tcp", Some("443"), lookup);
            assert_eq!(
                got,
                ((*verdict).to_owned(), (*reason).to_owned(), rule.clone()),
                "from {src} with {lookup:?}"
            );
        }
    }
}

/// A subnet rule whose endpoint is a VLAN: frames judged without that tag
/// arrive off its endpoint.
const VLAN_ENDPOINT_POLICY: &str = r#"
default_action = "Deny"

[[virtual_network_rules]]
id = "vnet-test/subnets/tagged"
address_prefixes = ["10.30.0.0/16"]
endpoint = { vlan = 120 }
"#;

/// A refused source that a subnet rule lists gets a note: judged off the
/// rule's endpoint (on the loopback device unless `--iface` names one),
/// with the flags that judge it there; judged on the endpoint it is
/// admitted, and a refused source no subnet rule lists gets no such note.
#[test]
fn a_refused_source_a_subnet_rule_lists_is_said_to_be_judged_off_its_endpoint() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("off-endpoint");
    let policy = dir.file("policy.toml", VLAN_ENDPOINT_POLICY);
    let judged = |src: &str, extra: &[&str]| judged_line(&policy, src, "tcp", Some("443"), extra);
    let off = judged("10.30.1.2", &[]);
    assert_eq!(off["reason"], "deny_no_match", "{off}");
    let notes = off["notes"].to_string();
    for said in [
        "source 10.30.1.2 is in subnet rule vnet-test/subnets/tagged (10.30.0.0/16)",
        "its endpoint (VLAN 120)",
        "the loopback device (no --iface)",
        "--vlan",
    ] {
        assert!(notes.contains(said), "{said:?} in {notes}");
    }
    let on = judged("10.30.1.2", &["--vlan", "120"]);
    assert_eq!(on["reason"], "allow_vnet_rule", "{on}");
    assert!(on.get("notes").is_none(), "{on}");
    let unlisted = judged("10.31.1.2", &[]);
    assert_eq!(unlisted["reason"], "deny_no_match", "{unlisted}");
    assert!(unlisted.get("notes").is_none(), "{unlisted}");
}

/// A subnet rule bound to an interface this host lacks.
const MISSING_ENDPOINT_POLICY: &str = r#"
default_action = "Deny"

[[virtual_network_rules]]
id = "vnet-test/subnets/gone"
address_prefixes = ["10.40.0.0/16"]
endpoint = { interface = "vfwnosuch9" }
"#;

/// `validate` lists an endpoint interface missing on this host (and says
/// what `run` would do); `check`'s note for a source its rule lists says
/// the interface is missing, instead of asking for an --iface that cannot
/// be given.
#[test]
fn an_endpoint_interface_missing_on_this_host_is_said_by_validate_and_check() {
    let dir = TempDir::new("gone");
    let policy = dir.file("policy.toml", MISSING_ENDPOINT_POLICY);
    let validated = validate(&["--output", "json"], &policy);
    assert!(validated.status.success(), "{}", text(&validated.stderr));
    let doc: Value = serde_json::from_slice(&validated.stdout).expect("one JSON document");
    assert_eq!(doc["missing_interfaces"], serde_json::json!(["vfwnosuch9"]));
    let human = validate(&[], &policy);
    let human = text(&human.stdout).into_owned();
    assert!(
        human.contains(
            "note: endpoint interface \"vfwnosuch9\" does not exist in this network namespace"
        ) && human.contains("ignore_missing_endpoint = true"),
        "{human}"
    );
    // Each note says what `run` would do: refuse for a rule without
    // ignore_missing_endpoint (named) or for a private endpoint; serve for
    // a rule with it.
    assert!(
        human.contains("unless vnet-test/subnets/gone sets"),
        "{human}"
    );
    let note = |policy_text: &str| {
        let out = validate(&[], &dir.file("other.toml", policy_text));
        text(&out.stdout).into_owned()
    };
    let ignored = note(
        &MISSING_ENDPOINT_POLICY
            .replace("endpoint = ", "ignore_missing_endpoint = true\nendpoint = "),
    );
    assert!(
        ignored.contains("match nothing here until it appears") && !ignored.contains("refuses"),
        "{ignored}"
    );
    let private = note(
        "default_action = \"Deny\"\n\n[[private_endpoints]]\ninterface = \"vfwnosuch8\"\n\
         allowed_prefixes = [\"10.9.0.0/24\"]\n",
    );
    assert!(
        private.contains("\"vfwnosuch8\" does not exist")
            && private.contains("refuses the policy (a private endpoint needs it)"),
        "{private}"
    );
    if !require_root() {
        return;
    }
    let line = judged_line(&policy, "10.40.1.1", "tcp", Some("443"), &[]);
    assert_eq!(line["reason"], "deny_no_match", "{line}");
    let note = line["notes"][0].as_str().expect("a note");
    assert!(
        note.contains("endpoint interface \"vfwnosuch9\" does not exist in this network namespace")
            && !note.contains("give the endpoint's --iface"),
        "{note}"
    );
}

#[test]
fn control_plane_and_non_data_plane_protocols_pass() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("k3");
    let policy = dir.file("policy.toml", "default_action = \"Deny\"\n");
    let pass = |reason: &str| ("XDP_PASS".to_owned(), reason.to_owned(), Value::Null);
    assert_eq!(
        judged(&policy, "198.51.100.7", "tcp", Some("22"), &[]),
        pass("pass_control_plane")
    );
    assert_eq!(
        judged(&policy, "198.51.100.7", "icmp", None, &[]),
        pass("pass_control_plane")
    );
    assert_eq!(
        judged(&policy, "198.51.100.7", "udp", Some("443"), &[]),
        pass("pass_control_plane")
    );
    assert_eq!(
        judged(
            &policy,
            "198.51.100.7",
            "tcp",
            Some("51000"),
            &["--sport", "443"]
        ),
        pass("pass_control_plane")
    );
    assert_eq!(
        judged(&policy, "198.51.100.7", "tcp", Some("443"), &[]),
        (
            "XDP_DROP".to_owned(),
            "deny_no_match".to_owned(),
            Value::Null
        )
    );
    let ipv6 = |dport| {
        let args = [
            "--policy",
            policy.to_str().unwrap(),
            "--src",
            "2001:db8::7",
            "--dst",
            "2001:db8::1",
            "--proto",
            "tcp",
            "--dport",
            dport,
            "--output",
            "json",
        ];
        let lines = json_lines(&check(&args));
        lines[0]["reason"].as_str().unwrap().to_owned()
    };
    assert_eq!(ipv6("443"), "deny_ipv6");
    assert_eq!(ipv6("22"), "pass_control_plane");
}

#[test]
fn ipv6_sources_are_judged_by_ipv6_rules_then_the_ipv6_setting() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("k6");
    let policy = dir.file(
        "policy.toml",
        r#"
default_action = "Deny"
ip_rules = ["203.0.113.10", { value = "2001:db8:1::/48", comment = "v6 office" }]

[[virtual_network_rules]]
id = "vnet-test/subnets/app6"
address_prefixes = ["fd00:20::/32"]
endpoint = { interface = "lo" }
"#,
    );
    let run = |src: &str| {
        let args = [
            "--policy",
            policy.to_str().expect("UTF-8 path"),
            "--src",
            src,
            "--dst",
            "2001:db8::1",
            "--proto",
            "tcp",
            "--dport",
            "443",
            "--output",
            "json",
        ];
        let lines = json_lines(&check(&args));
        assert_eq!(lines.len(), 1, "{lines:?}");
        (
            lines[0]["verdict"].as_str().expect("verdict").to_owned(),
            lines[0]["reason"].as_str().expect("reason").to_owned(),
            lines[0]["rule"].clone(),
        )
    };
    assert_eq!(
        run("2001:db8:1::5"),
        (
            "XDP_PASS".to_owned(),
            "allow_ip_rule".to_owned(),
            Value::from("ip rule 2001:db8:1::/48 (\"v6 office\")")
        )
    );
    assert_eq!(
        run("fd00:20::9"),
        (
            "XDP_PASS".to_owned(),
            "allow_vnet_rule".to_owned(),
            Value::from(
                "virtual network rule vnet-test/subnets/app6: fd00:20::/32 via interface lo"
            )
        )
    );
    assert_eq!(
        run("2001:db8:2::5"),
        ("XDP_DROP".to_owned(), "deny_ipv6".to_owned(), Value::Null)
    );
}

#[test]
fn a_trusted_service_match_names_the_service_and_tag() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("k5");
    let tags = dir.file(
        "ServiceTags_Public_test.json",
        r#"{"changeNumber": 1, "cloud": "Public", "values": [
            {"name": "AzureBackup", "id": "AzureBackup",
             "properties": {"addressPrefixes": ["192.0.2.128/29"]}}]}"#,
    );
    let policy_text = |bypass: &str| {
        format!(
            "default_action = \"Deny\"\nbypass = \"{bypass}\"\n[trusted_services]\n\
             service_tags_file = {:?}\n",
            tags.display().to_string()
        )
    };
    let on = dir.file("on.toml", policy_text("AzureServices"));
    let off = dir.file("off.toml", policy_text("None"));
    assert_eq!(
        judged(&on, "192.0.2.130", "tcp", Some("443"), &[]),
        (
            "XDP_PASS".to_owned(),
            "allow_trusted_service".to_owned(),
            Value::from("trusted service AzureBackup (tag AzureBackup): 192.0.2.128/29")
        )
    );
    let denied = (
        "XDP_DROP".to_owned(),
        "deny_no_match".to_owned(),
        Value::Null,
    );
    assert_eq!(judged(&off, "192.0.2.130", "tcp", Some("443"), &[]), denied);
    assert_eq!(judged(&on, "192.0.2.140", "tcp", Some("443"), &[]), denied);
}

#[test]
fn table_output_and_explain_show_each_step() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("table");
    let policy = dir.file("policy.toml", K1_POLICY);
    let mut args = flow(policy.to_str().unwrap(), "203.0.113.10", "tcp", Some("443"));
    args.extend(["--vlan", "120", "--explain"]);
    let out = check(&args);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["#", "VERDICT", "REASON", "RULE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        [
            "0",
            "XDP_PASS",
            "allow_ip_rule",
            "ip",
            "rule",
            "203.0.113.10"
        ]
    );
    for step in [
        "802.1Q tag VLAN 120",
        "IPv4 IHL 5",
        "TCP dport 443 is data plane",
        "source 203.0.113.10 in ip_rules 203.0.113.10/32",
        "verdict allow_ip_rule (XDP_PASS)",
    ] {
        assert!(stdout.contains(step), "missing {step:?}:\n{stdout}");
    }
    // Last, the lookup that judged (the default).
    assert_eq!(stdout.lines().last(), Some("lookup: compiled"), "{stdout}");
}

#[test]
fn json_output_is_one_object_per_frame_with_the_documented_fields() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("json");
    let policy = dir.file("policy.toml", K1_POLICY);
    let mut args = flow(policy.to_str().unwrap(), "10.20.30.40", "tcp", Some("443"));
    args.extend(["--output", "json", "--explain"]);
    let lines = json_lines(&check(&args));
    let object = lines[0].as_object().expect("an object");
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    for key in [
        "index",
        "verdict",
        "reason",
        "rule",
        "lookup",
        "explanation",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    let steps = object["explanation"]
        .as_array()
        .expect("explanation is an array");
    assert!(steps.iter().any(|s| {
        s.as_str()
            .unwrap()
            .contains("in virtual network rule 10.20.0.0/16")
    }));
}

// ------------------------------------------------------------------ captures

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fn syn(src: [u8; 4], dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, HOST_MAC)
        .ipv4(src, [192, 0, 2, 1], 64)
        .tcp(40000, dport, 1, 64240)
        .syn()
        .write(&mut frame, &[])
        .expect("build a SYN");
    frame
}

fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[192, 0, 2, 254, 0, 0, 0, 0, 0, 0, 192, 0, 2, 1]);
    f
}

/// The frames of the capture tests and what each must get.
fn capture_frames() -> Vec<(Vec<u8>, &'static str)> {
    let mut three_tags = syn([203, 0, 113, 10], 22);
    for _ in 0..3 {
        three_tags.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    }
    vec![
        (arp(), "pass_non_ip"),
        (syn([203, 0, 113, 10], 443), "allow_ip_rule"),
        (syn([198, 18, 0, 1], 443), "deny_no_match"),
        (syn([198, 18, 0, 1], 22), "pass_control_plane"),
        (three_tags, "deny_malformed"),
    ]
}

fn write_pcap(path: &Path, frames: &[Vec<u8>], link: DataLink) {
    let file = std::fs::File::create(path).expect("create the pcap");
    let header = PcapHeader {
        datalink: link,
        ..Default::default()
    };
    let mut writer = PcapWriter::with_header(file, header).expect("pcap header");
    for (i, frame) in frames.iter().enumerate() {
        let packet = PcapPacket::new(Duration::from_millis(i as u64), frame.len() as u32, frame);
        writer.write_packet(&packet).expect("write a packet");
    }
}

fn write_pcapng(path: &Path, frames: &[Vec<u8>]) {
    let file = std::fs::File::create(path).expect("create the pcapng");
    let mut writer = PcapNgWriter::new(file).expect("pcapng section");
    writer
        .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 65535))
        .expect("interface block");
    for (i, frame) in frames.iter().enumerate() {
        let block = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_millis(i as u64),
            original_len: frame.len() as u32,
            data: Cow::Borrowed(frame),
            options: vec![],
        };
        writer.write_pcapng_block(block).expect("packet block");
    }
}

fn reasons(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["reason"].as_str().unwrap_or("null").to_owned())
        .collect()
}

#[test]
fn pcap_and_pcapng_captures_are_judged_frame_by_frame() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("pcap");
    let policy = dir.file("policy.toml", K1_POLICY);
    let (frames, expected): (Vec<Vec<u8>>, Vec<&str>) = capture_frames().into_iter().unzip();
    let pcap = dir.0.join("frames.pcap");
    write_pcap(&pcap, &frames, DataLink::ETHERNET);
    let pcapng = dir.0.join("frames.pcapng");
    write_pcapng(&pcapng, &frames);
    for capture in [&pcap, &pcapng] {
        let out = check(&[
            "--policy",
            policy.to_str().unwrap(),
            "--pcap",
            capture.to_str().unwrap(),
            "--output",
            "json",
        ]);
        let lines = json_lines(&out);
        assert_eq!(reasons(&lines), expected, "{}", capture.display());
        let indexes: Vec<u64> = lines.iter().map(|l| l["index"].as_u64().unwrap()).collect();
        assert_eq!(indexes, [0, 1, 2, 3, 4]);
        assert_eq!(lines[1]["rule"], "ip rule 203.0.113.10");
        assert_eq!(lines[1]["verdict"], "XDP_PASS");
        assert_eq!(lines[2]["verdict"], "XDP_DROP");
    }
}

#[test]
fn a_frame_cut_by_the_capture_snaplen_is_judged_as_cut_and_said_so() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("snaplen");
    let policy = dir.file("policy.toml", K1_POLICY);
    let frame = syn([203, 0, 113, 10], 443);
    let path = dir.0.join("cut.pcap");
    {
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = PcapWriter::with_header(
            file,
            PcapHeader {
                snaplen: 40,
                ..Default::default()
            },
        )
        .unwrap();
        let packet = PcapPacket::new(Duration::ZERO, frame.len() as u32, &frame[..40]);
        writer.write_packet(&packet).unwrap();
    }
    let lines = json_lines(&check(&[
        "--policy",
        policy.to_str().unwrap(),
        "--pcap",
        path.to_str().unwrap(),
        "--output",
        "json",
    ]));
    assert_eq!(lines[0]["reason"], "deny_malformed");
    let notes = lines[0]["notes"].to_string();
    assert!(notes.contains("kept 40 of 54 bytes"), "{notes}");
}

/// Refusals happen before the program is loaded: no root needed.
fn refused(args: &[&str]) -> String {
    let out = check(args);
    let stderr = text(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(i32::from(vaultfw::exit::INVALID_INPUT)),
        "stdout:\n{}\nstderr:\n{stderr}",
        text(&out.stdout)
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&out.stdout)
    );
    stderr
}

#[test]
fn a_truncated_capture_is_refused_naming_the_file_and_the_fix() {
    let dir = TempDir::new("truncated");
    let policy = dir.file("policy.toml", K1_POLICY);
    let (frames, _): (Vec<Vec<u8>>, Vec<&str>) = capture_frames().into_iter().unzip();
    for (name, writer) in [("cut.pcap", false), ("cut.pcapng", true)] {
        let path = dir.0.join(name);
        if writer {
            write_pcapng(&path, &frames);
        } else {
            write_pcap(&path, &frames, DataLink::ETHERNET);
        }
        let bytes = std::fs::read(&path).unwrap();
        // Cut in the middle of the last record, and in the file header.
        for len in [bytes.len() - 7, 10] {
            std::fs::write(&path, &bytes[..len]).unwrap();
            let stderr = refused(&[
                "--policy",
                policy.to_str().unwrap(),
                "--pcap",
                path.to_str().unwrap(),
            ]);
            assert!(
                stderr.contains(path.to_str().unwrap()),
                "names the file: {stderr}"
            );
            assert!(stderr.contains("truncated"), "says truncated: {stderr}");
            assert!(stderr.contains("capture again"), "gives the fix: {stderr}");
        }
    }
}

#[test]
fn a_file_that_is_not_a_capture_is_refused() {
    let dir = TempDir::new("notpcap");
    let policy = dir.file("policy.toml", K1_POLICY);
    for (name, contents) in [
        ("policy-by-mistake.pcap", K1_POLICY.as_bytes()),
        ("empty.pcap", b"".as_slice()),
    ] {
        let path = dir.file(name, contents);
        let stderr = refused(&[
            "--policy",
            policy.to_str().unwrap(),
            "--pcap",
            path.to_str().unwrap(),
        ]);
        assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
        assert!(stderr.contains("tcpdump -i IFACE -w FILE"), "{stderr}");
    }
    let missing = dir.0.join("missing.pcap");
    let stderr = refused(&[
        "--policy",
        policy.to_str().unwrap(),
        "--pcap",
        missing.to_str().unwrap(),
    ]);
    assert!(stderr.contains("missing.pcap"), "{stderr}");
}

#[test]
fn a_capture_of_another_link_type_is_refused() {
    let dir = TempDir::new("linktype");
    let policy = dir.file("policy.toml", K1_POLICY);
    let path = dir.0.join("any.pcap");
    write_pcap(&path, &[vec![0u8; 60]], DataLink::LINUX_SLL);
    let stderr = refused(&[
        "--policy",
        policy.to_str().unwrap(),
        "--pcap",
        path.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("LINUX_SLL") && stderr.contains("not Ethernet"),
        "{stderr}"
    );
    assert!(
        stderr.contains("capture on one Ethernet interface"),
        "{stderr}"
    );
}

#[test]
fn invalid_flags_and_policies_exit_2() {
    let dir = TempDir::new("flags");
    let policy = dir.file("policy.toml", K1_POLICY);
    let p = policy.to_str().unwrap();
    // IP versions mixed.
    let stderr = refused(&[
        "--policy",
        p,
        "--src",
        "2001:db8::7",
        "--dst",
        "192.0.2.1",
        "--proto",
        "tcp",
        "--dport",
        "443",
    ]);
    assert!(stderr.contains("different IP versions"), "{stderr}");
    // TCP without a port.
    let stderr = refused(&[
        "--policy",
        p,
        "--src",
        "192.0.2.7",
        "--dst",
        "192.0.2.1",
        "--proto",
        "tcp",
    ]);
    assert!(stderr.contains("--dport"), "{stderr}");
    // Neither flags nor a capture (clap's usage error, the same exit code).
    let out = check(&["--policy", p]);
    assert_eq!(
        out.status.code(),
        Some(i32::from(vaultfw::exit::INVALID_INPUT))
    );
    // An invalid policy is refused as `validate` refuses it: the field,
    // the value, why and the fix.
    let bad = dir.file("bad.toml", "default_action = \"Maybe\"\n");
    let stderr = refused(&[
        "--policy",
        bad.to_str().unwrap(),
        "--src",
        "192.0.2.7",
        "--dst",
        "192.0.2.1",
        "--proto",
        "tcp",
        "--dport",
        "443",
    ]);
    let validated = validate(&[], &bad);
    assert_eq!(stderr, text(&validated.stderr));
    assert!(
        stderr.starts_with("vaultfw: default_action = \"Maybe\": "),
        "{stderr}"
    );
    assert!(stderr.contains("; fix: "), "{stderr}");
    // An interface that does not exist.
    let stderr = refused(&[
        "--policy",
        p,
        "--src",
        "192.0.2.7",
        "--dst",
        "192.0.2.1",
        "--proto",
        "tcp",
        "--dport",
        "443",
        "--iface",
        "vfwnosuch0",
    ]);
    assert!(
        stderr.contains("vfwnosuch0") && stderr.contains("no such interface"),
        "{stderr}"
    );
}

#[test]
fn a_frame_address_that_is_not_one_address_is_refused_saying_what_it_is() {
    let dir = TempDir::new("addr");
    let policy = dir.file("policy.toml", K1_POLICY);
    let p = policy.to_str().unwrap();
    for (flag, value, says) in [
        ("--src", "vault.example.com", "a name, not an IP address"),
        ("--dst", "vault-client", "a name, not an IP address"),
        ("--src", "cafe.example.com", "a name, not an IP address"),
        ("--src", "203.0.113.0/24", "a range, not an address"),
        ("--src", "fe80::/10", "a range, not an address"),
        (
            "--dst",
            "203.0.113.1-203.0.113.9",
            "a range, not an address",
        ),
        (
            "--src",
            "fe80::1%eth0",
            "a zone id (%eth0) is not part of an address",
        ),
        ("--src", "203.0.113.7:443", "an address with a port"),
        ("--src", "[2001:db8::1]:443", "an address with a port"),
        ("--src", "203.0.113", "not an IPv4 or IPv6 address"),
    ] {
        let (src, dst) = match flag {
            "--src" => (value, "192.0.2.1"),
            _ => ("192.0.2.7", value),
        };
        let stderr = refused(&[
            "--policy", p, "--src", src, "--dst", dst, "--proto", "tcp", "--dport", "443",
        ]);
        assert!(stderr.contains(flag) && stderr.contains(value), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(stderr.contains("fix: "), "{stderr}");
    }
}

// ------------------------------------------------------ tcpdump on a veth

#[test]
fn a_capture_written_by_tcpdump_on_a_veth_is_judged() {
    if !require_root() {
        return;
    }
    if Command::new("tcpdump").arg("--version").output().is_err() {
        eprintln!("skipping: tcpdump is not installed (apt-get install tcpdump)");
        return;
    }
    let dir = TempDir::new("tcpdump");
    let policy = dir.file(
        "policy.toml",
        "default_action = \"Deny\"\nip_rules = [\"203.0.113.10\"]\n",
    );
    let capture = dir.0.join("veth.pcap");
    let veth = Veth::new();
    let dump = Tcpdump::start(&veth.host, &veth.host_if, &capture);
    let host = [203, 0, 113, 1];
    connect_from(&veth.client, [203, 0, 113, 10], host, 443);
    connect_from(&veth.client, [203, 0, 113, 20], host, 443);
    connect_from(&veth.client, [203, 0, 113, 20], host, 22);
    dump.stop();
    drop(veth);

    let out = check(&[
        "--policy",
        policy.to_str().unwrap(),
        "--pcap",
        capture.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let lines = json_lines(&out);
    // Expected per frame, read from the capture independently of vaultfw.
    let data = std::fs::read(&capture).expect("read the capture");
    let (mut rest, parser) = pcap_file::pcap::PcapParser::new(&data).expect("tcpdump wrote a pcap");
    assert_eq!(parser.header().datalink, DataLink::ETHERNET);
    let mut expected = Vec::new();
    while !rest.is_empty() {
        let (next, packet) = parser.next_packet(rest).expect("a whole record");
        expected.push(expected_reason(&packet.data));
        rest = next;
    }
    assert_eq!(lines.len(), expected.len(), "one result per captured frame");
    let got = reasons(&lines);
    for (i, (got, want)) in got.iter().zip(&expected).enumerate() {
        if let Some(want) = want {
            assert_eq!(got, want, "frame {i}: {}", lines[i]);
        }
    }
    for reason in [
        "allow_ip_rule",
        "deny_no_match",
        "pass_control_plane",
        "pass_non_ip",
    ] {
        assert!(
            got.iter().any(|r| r == reason),
            "no {reason} frame in {got:?}"
        );
    }
}

/// What a frame of the veth capture must get, when the test knows: ARP
/// passes; a TCP SYN to 443 from .10 is allowed by the rule, from .20
/// denied; to 22 control plane. Anything else (IPv6 neighbour discovery
/// the kernel sends on its own) is left to the model check in `vaultfw`.
fn expected_reason(frame: &[u8]) -> Option<String> {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype == 0x0806 {
        return Some("pass_non_ip".into());
    }
    if ethertype != 0x0800 || frame[23] != 6 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let dport = u16::from_be_bytes([frame[14 + ihl + 2], frame[14 + ihl + 3]]);
    let src = &frame[26..30];
    Some(
        match (dport, src) {
            (22, _) => "pass_control_plane",
            (443, [203, 0, 113, 10]) => "allow_ip_rule",
            (443, _) => "deny_no_match",
            _ => return None,
        }
        .into(),
    )
}

#[test]
fn frames_no_nic_hands_to_xdp_are_noted_and_not_run() {
    if !require_root() {
        return;
    }
    let dir = TempDir::new("sizes");
    let policy = dir.file("policy.toml", K1_POLICY);
    let mut big = syn([203, 0, 113, 10], 443);
    big.resize(9000, 0);
    let frames = vec![vec![0u8; 10], big, syn([203, 0, 113, 10], 443)];
    let path = dir.0.join("sizes.pcap");
    write_pcap(&path, &frames, DataLink::ETHERNET);
    let lines = json_lines(&check(&[
        "--policy",
        policy.to_str().unwrap(),
        "--pcap",
        path.to_str().unwrap(),
        "--output",
        "json",
    ]));
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["verdict"], Value::Null);
    assert!(
        lines[0]["notes"]
            .to_string()
            .contains("shorter than an Ethernet header")
    );
    assert_eq!(lines[1]["verdict"], Value::Null);
    assert!(lines[1]["notes"].to_string().contains("GRO/TSO"));
    assert_eq!(lines[2]["reason"], "allow_ip_rule");
}

#[test]
fn an_unknown_lookup_is_refused_naming_the_values() {
    let out = check(&[
        "--lookup",
        "hash",
        "--policy",
        "/nonexistent/policy.toml",
        "--src",
        "198.51.100.7",
        "--dst",
        "192.0.2.1",
        "--proto",
        "tcp",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--lookup") && stderr.contains("hash") && stderr.contains("compiled"),
        "{stderr}"
    );
}
