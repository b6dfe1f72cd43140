//! What the program's aya-log records cost (`vaultfw run
//! --bpf-log-level`): the same object loaded twice in one run, once with
//! logging off (the default) and once at `debug`, judging the same frames
//! with BPF_PROG_TEST_RUN, interleaved within each run. Allowed and denied
//! frames never reach a log call, so their ratio (debug / off) shows what
//! the level check costs the hot path; a malformed frame reaches one, so
//! its ratio is the cost of a record (nobody drains the ring here: once it
//! is full, a record costs a failed reservation).

use std::collections::HashSet;
use std::os::fd::AsFd;

use anyhow::{Result, bail};
use serde::Serialize;
use vaultfw::compile::compile_next;
use vaultfw::dataplane::{BpfLogLevel, Capacity, Dataplane};
use vaultfw::links::InterfaceIndex;
use vaultfw::policy::parse_toml;

use crate::frames::{self, DATA_PORT};
use crate::prefixes::{self, Matcher, Rng};
use crate::scratch::Scratch;
use crate::stats::Summary;
use crate::testrun::{self, ProgramSize};

/// The prefix count of the comparison (a vault at its 254-rule limit
/// without raised limits).
const PREFIXES: usize = 254;

/// One frame kind: ns per frame with logging off and at debug.
#[derive(Debug, Serialize)]
pub struct LogCostRow {
    /// `allowed`, `denied` or `malformed`.
    pub frame: &'static str,
    /// ns per frame, `--bpf-log-level off`.
    pub off: Summary,
    /// ns per frame, `--bpf-log-level debug`.
    pub debug: Summary,
    /// debug / off (medians).
    pub ratio: f64,
}

/// The comparison at [`PREFIXES`] prefixes.
#[derive(Debug, Serialize)]
pub struct LogCostReport {
    pub prefixes: usize,
    pub runs: usize,
    pub repetitions: u32,
    pub rows: Vec<LogCostRow>,
    /// The program's sizes as loaded at each level (the verifier removes
    /// the dead log branches when the level is off).
    pub programs: Vec<(String, ProgramSize)>,
}

/// Loads the program at both levels and measures each frame kind `runs`
/// times, `total` repetitions of one frame each (the kernel's mean).
pub fn run(runs: usize, total: u32) -> Result<LogCostReport> {
    let mut rng = Rng::new(0x106);
    let prefixes = prefixes::random_public_prefixes(PREFIXES, &mut rng, &HashSet::new());
    let matcher = Matcher::new(&prefixes);
    let validated = parse_toml(&prefixes::policy_toml(&prefixes, PREFIXES))
        .map_err(|e| anyhow::anyhow!("bench policy refused:\n{e}"))?;
    let mut scratch = Scratch::new("logcost", 2)?;
    let mut loaded = Vec::new();
    let mut programs = Vec::new();
    for level in [BpfLogLevel::Off, BpfLogLevel::Debug] {
        let mut dataplane =
            Dataplane::load_logging(Capacity::for_ip_rule_limit(PREFIXES as u32), level)?;
        let generation = (rng.next_u64() >> 16) | 1;
        let compiled = compile_next(
            &validated.policy,
            &InterfaceIndex::new(),
            dataplane.hit_slots(),
            &dataplane.active_tables(),
            &vaultfw::clock::MonotonicClock::now(),
        )
        .with_access_log(crate::EVENT_RATE, false);
        dataplane.apply(&compiled, generation)?;
        let (fd, info) = testrun::find_vaultfw(generation)?;
        let size = testrun::program_size(&info);
        eprintln!("bench-program: bpf log {level:?}: {size:?}");
        programs.push((format!("{level:?}").to_lowercase(), size));
        let link = scratch.attach(fd.as_fd())?;
        loaded.push((dataplane, fd, link));
    }
    let allowed = frames::tcp_syn(prefixes::inside(&prefixes[0], &mut rng), DATA_PORT);
    let denied = frames::tcp_syn(prefixes::outside(&matcher, &mut rng), DATA_PORT);
    // IHL 4 (16 bytes), below the minimum: `deny_malformed`.
    let mut malformed = denied.clone();
    malformed[14] = 0x44;
    let kinds: [(&'static str, &[u8], u32); 3] = [
        ("allowed", &allowed, 2),
        ("denied", &denied, 1),
        ("malformed", &malformed, 1),
    ];
    let mut rows = Vec::new();
    for (name, frame, want) in kinds {
        let mut samples = [Vec::new(), Vec::new()];
        for _ in 0..runs {
            for (i, (_, fd, _)) in loaded.iter().enumerate() {
                let (action, ns) = testrun::test_run(fd.as_fd(), frame, total)?;
                if action != want {
                    bail!(
                        "vaultfw returned XDP action {action} for the {name} frame, expected {want}"
                    );
                }
                samples[i].push(f64::from(ns));
            }
        }
        let [off, debug] = samples.map(|s| Summary::of(&s));
        let ratio = debug.median / off.median;
        eprintln!(
            "bench-program: bpf log {name}: off {:.1} ns, debug {:.1} ns (x{ratio:.3})",
            off.median, debug.median
        );
        rows.push(LogCostRow {
            frame: name,
            off,
            debug,
            ratio,
        });
    }
    Ok(LogCostReport {
        prefixes: PREFIXES,
        runs,
        repetitions: total,
        rows,
        programs,
    })
}
