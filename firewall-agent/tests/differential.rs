//! Differential tests (DESIGN.md section 4): the XDP program, run through
//! BPF_PROG_TEST_RUN, against the pure-Rust reference model
//! (`vaultfw::reference`) on generated frames and table sets. Any frame the
//! two judge differently fails the test with the frame as hex, the table
//! set, and both verdicts with the model's steps.
//!
//! Frames and tables come from a seeded xorshift generator, so a run is
//! reproducible from its seed: valid, edge and malformed frames (0–3 VLAN
//! tags, IPv4 options and bad IHL, fragments, bad lengths, IPv6 with 0–8
//! extension headers, random bytes, Ethernet padding) and every truncation
//! of some of them; table sets with random prefixes, ports, endpoints,
//! flags and rule expiries (long past or far ahead, so the verdict does not
//! hang on the moment). `cargo xtask test` runs a bounded number (20,000 frames);
//! `cargo xtask fuzz` runs a long one through the same test, with
//! `VAULTFW_DIFF_FRAMES` and `VAULTFW_DIFF_SEED`.
//!
//! Root only (it loads the program); skipped with a message otherwise.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use firewall_common::{
    FLAG_AUDIT, FLAG_BYPASS_TRUSTED, FLAG_DEFAULT_ALLOW, FLAG_IPV6_ALLOW, FLAG_VALID,
    PORT_PROTO_TCP, PORT_PROTO_UDP, RuleValue, VLAN_ANY, Verdict, port_slot,
};
use vaultfw::clock::kernel_now_ns;
use vaultfw::compile::{CompiledTables, Prefix6Key, PrefixKey, VnetPrefixKey};
use vaultfw::dataplane::{Capacity, Dataplane};
use vaultfw::reference::{self, Judgement};

#[path = "differential/generate.rs"]
mod generate;

use generate::{OTHER_IFINDEX, Rng, TEST_RUN_IFINDEX, random_frame, random_scenario};

/// Frames of the bounded run in `cargo xtask test`.
const DEFAULT_FRAMES: usize = 20_000;
/// Seed of the bounded run.
const DEFAULT_SEED: u64 = 0x005E_ED0F_FA57;
/// Frames judged under one table set before the next is applied.
const FRAMES_PER_TABLE_SET: usize = 400;
/// Disagreements printed in full.
const SHOWN: usize = 5;

fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipping: loading an XDP program needs root (run `cargo xtask test`)");
        false
    }
}

// ------------------------------------------------------------------ runner

/// The kernel's answer for one frame: its return code and the one verdict
/// counter that moved.
fn kernel_judge(dataplane: &Dataplane, frame: &[u8]) -> Result<(u32, Verdict), String> {
    let before = dataplane.verdict_totals().map_err(|e| e.to_string())?;
    let code = dataplane.test_run(frame).map_err(|e| e.to_string())?;
    let after = dataplane.verdict_totals().map_err(|e| e.to_string())?;
    let moved: Vec<(Verdict, u64)> = Verdict::ALL
        .iter()
        .map(|v| (*v, after[v.index() as usize] - before[v.index() as usize]))
        .filter(|(_, d)| *d != 0)
        .collect();
    match moved.as_slice() {
        [(verdict, 1)] => Ok((code, *verdict)),
        _ => Err(format!("counters moved {moved:?}, not exactly one by one")),
    }
}

fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

fn describe_tables(t: &CompiledTables) -> String {
    let mut out = String::new();
    let flags: Vec<&str> = [
        (FLAG_VALID, "VALID"),
        (FLAG_DEFAULT_ALLOW, "DEFAULT_ALLOW"),
        (FLAG_BYPASS_TRUSTED, "BYPASS_TRUSTED"),
        (FLAG_AUDIT, "AUDIT"),
        (FLAG_IPV6_ALLOW, "IPV6_ALLOW"),
    ]
    .into_iter()
    .filter(|(f, _)| t.flags & f != 0)
    .map(|(_, n)| n)
    .collect();
    let ports = |proto| -> Vec<u16> {
        (0..=u16::MAX)
            .filter(|p| {
                let (w, b) = port_slot(0, proto, *p);
                t.port_words[w as usize] & b != 0
            })
            .collect()
    };
    let net = |k: &PrefixKey| format!("{}/{}", Ipv4Addr::from(k.octets), k.prefix_len);
    let entry = |k: &PrefixKey, v: &RuleValue| match v.expires_at_ns() {
        0 => net(k),
        at => format!("{} (expires at monotonic {at} ns)", net(k)),
    };
    let _ = writeln!(out, "  flags: {}", flags.join(" | "));
    let _ = writeln!(
        out,
        "  tcp ports: {:?}, udp ports: {:?}",
        ports(PORT_PROTO_TCP),
        ports(PORT_PROTO_UDP)
    );
    let _ = writeln!(
        out,
        "  ip_rules: {:?}",
        t.ip_rules
            .iter()
            .map(|(k, v)| entry(k, v))
            .collect::<Vec<_>>()
    );
    let _ = writeln!(
        out,
        "  trusted: {:?}",
        t.trusted
            .iter()
            .map(|(k, v)| entry(k, v))
            .collect::<Vec<_>>()
    );
    let vnet: Vec<String> = t
        .vnet_rules
        .iter()
        .map(|(k, v)| {
            format!(
                "{} via {}",
                entry(&k.prefix, v),
                reference::endpoint_words(k.ifindex, k.vlan)
            )
        })
        .collect();
    let _ = writeln!(out, "  vnet_rules: {vnet:?}");
    let net6 = |k: &Prefix6Key, v: &RuleValue| {
        let net = format!("{}/{}", std::net::Ipv6Addr::from(k.octets), k.prefix_len);
        match v.expires_at_ns() {
            0 => net,
            at => format!("{net} (expires at monotonic {at} ns)"),
        }
    };
    let ip6: Vec<String> = t.ip6_rules.iter().map(|(k, v)| net6(k, v)).collect();
    let trusted6: Vec<String> = t.trusted6.iter().map(|(k, v)| net6(k, v)).collect();
    let vnet6: Vec<String> = t
        .vnet6_rules
        .iter()
        .map(|(k, v)| {
            format!(
                "{} via {}",
                net6(&k.prefix, v),
                reference::endpoint_words(k.ifindex, k.vlan)
            )
        })
        .collect();
    let _ = writeln!(out, "  ip6_rules: {ip6:?}");
    let _ = writeln!(out, "  trusted6: {trusted6:?}");
    let _ = writeln!(out, "  vnet6_rules: {vnet6:?}");
    out
}

/// A program bug found by this test and held by a failing test of its own
/// (named `program_bug_<id>_...` and marked as such); disagreements it
/// explains are counted, not failed on, so the differential run keeps
/// catching new ones while the bug is open. Remove the entry once the
/// program is fixed, and keep its test as a regression test.
struct KnownBug {
    id: &'static str,
    test: &'static str,
    explains: fn(&Judgement, Verdict) -> bool,
}

/// None open. An IPv6 extension chain running past the payload length used
/// to pass as control plane; it was fixed in the program, and
/// `an_ipv6_extension_chain_past_the_payload_is_malformed` holds the case.
const KNOWN_BUGS: &[KnownBug] = &[];

struct Disagreement {
    frame: Vec<u8>,
    tables: String,
    kernel: (u32, Verdict),
    model: Judgement,
}

#[derive(Default)]
struct Summary {
    frames: usize,
    truncations: usize,
    table_sets: usize,
    by_verdict: BTreeMap<&'static str, usize>,
    /// Frames an IPv6 entry let through, by table (`ip6`, `trusted`,
    /// `vnet`), and how many of them carried extension headers.
    ipv6_matches: BTreeMap<&'static str, usize>,
    ipv6_matches_after_extensions: usize,
    known: BTreeMap<&'static str, usize>,
    disagreements: Vec<Disagreement>,
    unexplained: usize,
    elapsed: Duration,
    /// Time spent applying table sets (the rest is judging frames).
    applying: Duration,
}

/// Frames run between two reads of the verdict counters. Reading them
/// costs far more than a test run (every interface slot of every verdict,
/// per CPU), so a batch is checked as a whole: each frame's XDP action
/// against the model's, and the batch's counter deltas against the
/// model's verdicts summed. A batch that does not add up is run again
/// frame by frame, reading the counters around each frame, to name the
/// frames that differ.
const BATCH: usize = 32;

/// One frame of a batch: the bytes, the kernel's action, the model's
/// judgement.
struct Pending {
    frame: Vec<u8>,
    code: u32,
    model: Judgement,
}

/// The batch runner: the program, the table set it serves and the counters
/// at the start of the batch.
struct Runner {
    dataplane: Dataplane,
    tables: CompiledTables,
    before: [u64; Verdict::COUNT],
    batch: Vec<Pending>,
}

impl Runner {
    fn totals(&self) -> [u64; Verdict::COUNT] {
        self.dataplane
            .verdict_totals()
            .unwrap_or_else(|e| panic!("read the counters: {e}"))
    }

    fn apply(&mut self, tables: CompiledTables, generation: u64, summary: &mut Summary) {
        self.flush(summary);
        let applying = Instant::now();
        self.dataplane
            .apply(&tables, generation)
            .unwrap_or_else(|e| panic!("apply: {e}"));
        summary.applying += applying.elapsed();
        self.tables = tables;
    }

    fn run(&mut self, frame: &[u8], summary: &mut Summary) {
        let code = self
            .dataplane
            .test_run(frame)
            .unwrap_or_else(|e| panic!("frame {}: {e}", hex(frame)));
        let model = reference::judge(frame, TEST_RUN_IFINDEX, &self.tables, kernel_now_ns());
        self.batch.push(Pending {
            frame: frame.to_vec(),
            code,
            model,
        });
        if self.batch.len() == BATCH {
            self.flush(summary);
        }
    }

    fn flush(&mut self, summary: &mut Summary) {
        if self.batch.is_empty() {
            return;
        }
        let after = self.totals();
        let mut expected = [0u64; Verdict::COUNT];
        for p in &self.batch {
            expected[p.model.verdict.index() as usize] += 1;
        }
        let moved: Vec<u64> = after.iter().zip(&self.before).map(|(a, b)| a - b).collect();
        let adds_up =
            moved == expected && self.batch.iter().all(|p| p.code == p.model.action.code());
        let batch = std::mem::take(&mut self.batch);
        if adds_up {
            for p in &batch {
                *summary
                    .by_verdict
                    .entry(p.model.verdict.name())
                    .or_default() += 1;
                if let Some(m) = p.model.matched.filter(|m| m.prefix.addr().is_ipv6()) {
                    *summary.ipv6_matches.entry(m.kind.name()).or_default() += 1;
                    let extensions = p
                        .model
                        .explanation
                        .iter()
                        .any(|s| s.starts_with("IPv6 extension header"));
                    summary.ipv6_matches_after_extensions += usize::from(extensions);
                }
            }
        } else {
            for p in batch {
                let kernel = kernel_judge(&self.dataplane, &p.frame)
                    .unwrap_or_else(|e| panic!("frame {}: {e}", hex(&p.frame)));
                *summary.by_verdict.entry(kernel.1.name()).or_default() += 1;
                if kernel != (p.model.action.code(), p.model.verdict) {
                    summary.disagree(&p.frame, &self.tables, kernel, p.model);
                }
            }
        }
        self.before = self.totals();
    }
}

impl Summary {
    fn disagree(
        &mut self,
        frame: &[u8],
        tables: &CompiledTables,
        kernel: (u32, Verdict),
        model: Judgement,
    ) {
        match KNOWN_BUGS.iter().find(|b| (b.explains)(&model, kernel.1)) {
            Some(bug) => *self.known.entry(bug.id).or_default() += 1,
            None => self.unexplained += 1,
        }
        if self.disagreements.len() < 50 {
            self.disagreements.push(Disagreement {
                frame: frame.to_vec(),
                tables: describe_tables(tables),
                kernel,
                model,
            });
        }
    }
}

fn run(frames: usize, seed: u64) -> Summary {
    let mut rng = Rng::new(seed);
    let dataplane =
        Dataplane::load(Capacity::for_ip_rule_limit(127)).unwrap_or_else(|e| panic!("load: {e}"));
    let mut runner = Runner {
        dataplane,
        tables: CompiledTables::empty(),
        before: [0; Verdict::COUNT],
        batch: Vec::with_capacity(BATCH),
    };
    runner.before = runner.totals();
    let mut summary = Summary::default();
    let start = Instant::now();
    let mut scenario = random_scenario(&mut rng);
    let mut next_switch = 0usize;
    while summary.frames < frames {
        if summary.frames >= next_switch {
            scenario = random_scenario(&mut rng);
            summary.table_sets += 1;
            runner.apply(
                scenario.tables.clone(),
                summary.table_sets as u64,
                &mut summary,
            );
            next_switch = summary.frames + FRAMES_PER_TABLE_SET;
        }
        let whole = random_frame(&mut rng, &scenario);
        // Every truncation of one frame in 200 (about a quarter of all
        // frames judged).
        let cuts = if rng.below(200) == 0 {
            14..whole.len()
        } else {
            0..0
        };
        for len in std::iter::once(whole.len()).chain(cuts) {
            // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet
            // header (EINVAL), as no NIC delivers one.
            if len < 14 {
                continue;
            }
            runner.run(&whole[..len], &mut summary);
            summary.frames += 1;
            if len != whole.len() {
                summary.truncations += 1;
            }
        }
    }
    runner.flush(&mut summary);
    summary.elapsed = start.elapsed();
    summary
}

fn report(summary: &Summary, seed: u64) -> String {
    let mut out = format!(
        "differential: {} frames ({} truncations) under {} table sets, seed {seed:#x}: {} \
         disagreements ({} unexplained{}) in {:.2}s ({:.2}s applying table sets)\n  verdicts: {:?}\n  \
         allowed by IPv6 entries: {:?} ({} after extension headers)\n",
        summary.frames,
        summary.truncations,
        summary.table_sets,
        summary.unexplained + summary.known.values().sum::<usize>(),
        summary.unexplained,
        summary
            .known
            .iter()
            .map(|(id, n)| format!(", {n} explained by known program bug {id}"))
            .collect::<String>(),
        summary.elapsed.as_secs_f64(),
        summary.applying.as_secs_f64(),
        summary.by_verdict,
        summary.ipv6_matches,
        summary.ipv6_matches_after_extensions,
    );
    for bug in KNOWN_BUGS {
        if let Some(n) = summary.known.get(bug.id) {
            let _ = writeln!(
                out,
                "  known bug {}: {n} frames; held by the failing test {}",
                bug.id, bug.test
            );
        }
    }
    let mut shown = 0;
    for d in &summary.disagreements {
        let known = KNOWN_BUGS
            .iter()
            .any(|b| (b.explains)(&d.model, d.kernel.1));
        if known && shown > 0 {
            continue;
        }
        if shown == SHOWN {
            break;
        }
        shown += 1;
        let _ = write!(
            out,
            "\nDISAGREEMENT{}\n  frame ({} bytes): {}\n  kernel: {} ({})\n  model:  {} ({})\n  table set:\n{}  model steps:\n    {}\n",
            if known { " (known bug)" } else { "" },
            d.frame.len(),
            hex(&d.frame),
            d.kernel.1.name(),
            if d.kernel.0 == 1 {
                "XDP_DROP"
            } else {
                "XDP_PASS"
            },
            d.model.verdict.name(),
            d.model.action.name(),
            d.tables,
            d.model.explanation.join("\n    "),
        );
    }
    out
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.replace('_', "").parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number"))
        }
        Err(_) => default,
    }
}

#[test]
fn kernel_and_model_agree_on_generated_frames() {
    if !require_root() {
        return;
    }
    let frames = env_number("VAULTFW_DIFF_FRAMES", DEFAULT_FRAMES as u64) as usize;
    let seed = env_number("VAULTFW_DIFF_SEED", DEFAULT_SEED);
    let summary = run(frames, seed);
    let text = report(&summary, seed);
    println!("{text}");
    assert!(summary.frames >= frames);
    assert_eq!(
        summary.unexplained, 0,
        "the kernel program and the reference model disagree:\n{text}"
    );
    if frames >= DEFAULT_FRAMES {
        // The run reached every IPv6 table, through extension headers too.
        for kind in ["ip6", "trusted", "vnet"] {
            assert!(
                summary.ipv6_matches.get(kind).copied().unwrap_or(0) > 0,
                "no frame matched an IPv6 {kind} entry:\n{text}"
            );
        }
        assert!(summary.ipv6_matches_after_extensions > 0, "{text}");
    }
}

// ------------------------------------------------------- fixed frames

/// A program loaded with `tables` applied.
fn loaded(tables: &CompiledTables) -> Dataplane {
    let mut dataplane =
        Dataplane::load(Capacity::for_ip_rule_limit(127)).unwrap_or_else(|e| panic!("load: {e}"));
    dataplane
        .apply(tables, 1)
        .unwrap_or_else(|e| panic!("apply: {e}"));
    dataplane
}

/// Deny, TCP 443, no rules.
fn deny_443() -> CompiledTables {
    let mut t = CompiledTables::empty();
    t.flags = FLAG_VALID;
    let (word, bit) = port_slot(0, PORT_PROTO_TCP, 443);
    t.port_words[word as usize] |= bit;
    t
}

/// Asserts the kernel's verdict for each frame, and that the model holds
/// the same expected value.
fn expect_all(dataplane: &Dataplane, tables: &CompiledTables, cases: &[(&str, Vec<u8>, Verdict)]) {
    let mut failures = Vec::new();
    for (name, frame, expected) in cases {
        let model = reference::judge(frame, TEST_RUN_IFINDEX, tables, kernel_now_ns());
        assert_eq!(model.verdict, *expected, "the model's verdict for {name}");
        let (code, got) = kernel_judge(dataplane, frame).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected_code = reference::XdpAction::of(*expected).code();
        if (code, got) != (expected_code, *expected) {
            failures.push(format!(
                "{name}: frame {} expected {} ({}) got {} ({})",
                hex(frame),
                expected.name(),
                reference::XdpAction::of(*expected).name(),
                got.name(),
                reference::XdpAction::from_code(code).map_or("?", |a| a.name()),
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An IPv6 frame (untagged) whose fixed header says `payload_len` and next
/// header `next`, followed by `rest` (which may run past the payload).
fn ipv6_frame_with(next: u8, payload_len: u16, rest: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x0c, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&payload_len.to_be_bytes());
    f.extend_from_slice(&[next, 64]);
    f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(rest);
    f
}

#[test]
fn test_run_judges_frames_as_received_on_loopback() {
    if !require_root() {
        return;
    }
    // A subnet rule bound to ifindex 1 (lo) matches a test-run frame; one
    // bound to another interface does not. `check` and this test rely on it.
    let syn = {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x0c, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 1, 2, 3, 192, 0, 2, 1,
        ]);
        f.extend_from_slice(&[
            0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
        ]);
        f
    };
    for (ifindex, expected) in [
        (TEST_RUN_IFINDEX, Verdict::AllowVnetRule),
        (OTHER_IFINDEX, Verdict::DenyNoMatch),
    ] {
        let mut tables = deny_443();
        tables.vnet_rules.insert(
            VnetPrefixKey {
                ifindex,
                vlan: VLAN_ANY,
                prefix: PrefixKey {
                    prefix_len: 24,
                    octets: [10, 1, 2, 0],
                },
            },
            RuleValue::new(0),
        );
        let dataplane = loaded(&tables);
        expect_all(
            &dataplane,
            &tables,
            &[("SYN from 10.1.2.3", syn.clone(), expected)],
        );
    }
}

/// Found by the differential run (fixed in `firewall-ebpf/src/parse.rs`):
/// the extension-header walk bounded its reads by the end of the frame, not
/// by the end of the IPv6 payload, and read only each header's first bytes.
/// A chain running past the payload length — a truncated header — was then
/// classified from bytes that are not part of the packet (Ethernet padding)
/// or from a header cut short, and passed as `pass_control_plane` /
/// `pass_fragment`. DESIGN.md section 2: a truncated header that could be
/// data plane is malformed; the IPv4 path treats a header overrunning its
/// total length the same way.
#[test]
fn an_ipv6_extension_chain_past_the_payload_is_malformed() {
    if !require_root() {
        return;
    }
    let tables = deny_443();
    let dataplane = loaded(&tables);
    let cases = [
        (
            "hop-by-hop header wholly past a zero-length payload (in the frame's padding)",
            ipv6_frame_with(0, 0, &[58, 0, 0, 0, 0, 0, 0, 0]),
            Verdict::DenyMalformed,
        ),
        (
            "hop-by-hop header claiming 16 bytes in an 8-byte payload",
            ipv6_frame_with(0, 8, &[58, 1, 0, 0, 0, 0, 0, 0]),
            Verdict::DenyMalformed,
        ),
        (
            "non-first fragment header cut to 4 of its 8 bytes",
            ipv6_frame_with(44, 4, &[6, 0, 0, 8]),
            Verdict::DenyMalformed,
        ),
    ];
    expect_all(&dataplane, &tables, &cases);
}
