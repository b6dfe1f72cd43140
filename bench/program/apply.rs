//! Policy apply latency through `Dataplane::apply`, and the allowed-flow
//! loss while it runs.
//!
//! `apply` writes the inactive table set (diffing against what that set
//! holds, which is the policy *before* the active one) and then flips the
//! active index; the kernel serves the new generation from the next frame
//! on. So, at each rule count:
//!
//! - `first`: a policy into an empty set (every rule inserted);
//! - `full`: a steady-state replacement where all but 16 "stable" rules
//!   change (the inactive set holds an unrelated policy: every old rule
//!   removed, every new one inserted);
//! - `one_rule`: a steady-state one-rule addition (the inactive set is one
//!   change behind: two inserts).
//!
//! During each apply a second thread runs frames from the 16 stable rules
//! (allowed before, during and after) through the same program with
//! BPF_PROG_TEST_RUN; every one judged DROP is a lost allowed frame. The
//! verdict counters count them exactly. After each apply a frame allowed
//! only by the new policy must pass at once.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use firewall_common::Verdict;
use ipnet::Ipv4Net;
use serde::Serialize;
use vaultfw::compile::compile_next;
use vaultfw::compile::cpt::Lookup;
use vaultfw::dataplane::{Capacity, Dataplane};
use vaultfw::links::InterfaceIndex;
use vaultfw::policy::parse_toml;

use crate::frames::{DATA_PORT, tcp_syn};
use crate::prefixes::{self, Matcher, Rng};
use crate::scratch::Scratch;
use crate::stats::Summary;
use crate::testrun;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const STABLE: usize = 16;
/// Repetitions per probe test run (each ~2 µs).
const PROBE_REPEAT: u32 = 16;

/// What kind of change an apply made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    First,
    Full,
    OneRule,
}

/// One (lookup, rule count, change) row; times in milliseconds.
#[derive(Debug, Serialize)]
pub struct ApplyRow {
    /// `--lookup`: `"trie"` or `"compiled"`.
    pub lookup: &'static str,
    pub rules: usize,
    pub change: Change,
    /// `parse_toml`: TOML parse and validation.
    pub parse_ms: Summary,
    /// `compile`: policy to table contents.
    pub compile_ms: Summary,
    /// `Dataplane::apply`: diff, map writes, flip. The kernel serves the
    /// new generation when it returns.
    pub apply_ms: Summary,
    /// parse + compile + apply: policy text to the kernel serving it.
    pub total_ms: Summary,
    /// Map element writes per apply.
    pub map_writes: Summary,
    /// Allowed frames judged while the applies ran (all runs).
    pub allowed_frames_during_apply: u64,
    /// Of those, dropped (must be 0).
    pub allowed_frames_lost: u64,
}

/// Runs the apply bench at each count, with each lookup.
pub fn run(counts: &[usize], runs: usize) -> Result<Vec<ApplyRow>> {
    let mut rows = Vec::new();
    for lookup in [Lookup::Trie, Lookup::Compiled] {
        for &count in counts {
            rows.extend(at_count(count, runs, lookup)?);
        }
    }
    Ok(rows)
}

struct Measured {
    parse: f64,
    compile: f64,
    apply: f64,
    writes: f64,
    frames: u64,
    lost: u64,
}

struct Bench {
    dataplane: Dataplane,
    lookup: Lookup,
    generation: u64,
    stable_frames: Vec<Vec<u8>>,
}

fn at_count(count: usize, runs: usize, lookup: Lookup) -> Result<Vec<ApplyRow>> {
    let mut rng = Rng::new(0xA991 ^ count as u64);
    let mut used = HashSet::new();
    let stable = prefixes::random_public_prefixes(STABLE, &mut rng, &used);
    used.extend(stable.iter().copied());
    // Four unrelated policies for full replacements (A B C D A B ...).
    let policies = runs.max(2) + 2;
    eprintln!("bench-apply: {count} rules: generating {policies} policies");
    let mut sets: Vec<Vec<Ipv4Net>> = Vec::new();
    for _ in 0..policies.min(4) {
        let changing = prefixes::random_public_prefixes(count - STABLE, &mut rng, &used);
        used.extend(changing.iter().copied());
        sets.push(changing);
    }
    let capacity = count + 8;
    let text = |changing: &[Ipv4Net], extra: &[Ipv4Net]| {
        let all: Vec<Ipv4Net> = stable
            .iter()
            .chain(changing)
            .chain(extra)
            .copied()
            .collect();
        prefixes::policy_toml(&all, capacity)
    };
    let dataplane =
        Dataplane::load(Capacity::for_ip_rule_limit(capacity as u32).with_lookup(lookup))?;
    let mut bench = Bench {
        dataplane,
        lookup,
        generation: (rng.next_u64() >> 16) | 1,
        stable_frames: stable
            .iter()
            .map(|p| tcp_syn(prefixes::inside(p, &mut rng), DATA_PORT))
            .collect(),
    };
    let fd = {
        // Load something so the program can be found by its generation.
        bench.apply(&text(&sets[0], &[]), None)?;
        let (fd, _) = testrun::find_vaultfw(bench.generation)?;
        fd
    };
    let probe_fd = fd.as_fd();
    let mut scratch = Scratch::new("apply", 1)?;
    let _link = scratch.attach(probe_fd)?;

    let mut first = vec![];
    let mut full = vec![];
    let mut one = vec![];
    // The other empty set.
    first.push(bench.apply(&text(&sets[1], &[]), Some(probe_fd))?);
    bench.expect(probe_fd, &sets[1], None, XDP_PASS, &mut rng)?;
    let with_stable = |s: &[Ipv4Net]| stable.iter().chain(s).copied().collect::<Vec<_>>();
    bench.expect(
        probe_fd,
        &sets[0],
        Some(&with_stable(&sets[1])),
        XDP_DROP,
        &mut rng,
    )?;
    for i in 0..runs {
        let next = &sets[(i + 2) % sets.len()];
        let previous = &sets[(i + 1) % sets.len()];
        full.push(bench.apply(&text(next, &[]), Some(probe_fd))?);
        bench.expect(probe_fd, next, None, XDP_PASS, &mut rng)?;
        bench.expect(
            probe_fd,
            previous,
            Some(&with_stable(next)),
            XDP_DROP,
            &mut rng,
        )?;
    }
    let base = &sets[(runs + 1) % sets.len()];
    let added = prefixes::random_public_prefixes(runs + 1, &mut rng, &used);
    // Warm-up: brings the inactive set to one change behind.
    bench.apply(&text(base, &added[..1]), Some(probe_fd))?;
    for i in 1..=runs {
        one.push(bench.apply(&text(base, &added[..=i]), Some(probe_fd))?);
        bench.expect(probe_fd, &added[i..=i], None, XDP_PASS, &mut rng)?;
    }
    let rows = [(Change::First, first), (Change::Full, full), (Change::OneRule, one)]
        .into_iter()
        .map(|(change, ms)| {
            let pick = |f: fn(&Measured) -> f64| Summary::of(&ms.iter().map(f).collect::<Vec<_>>());
            let row = ApplyRow {
                lookup: lookup.name(),
                rules: count,
                change,
                parse_ms: pick(|m| m.parse),
                compile_ms: pick(|m| m.compile),
                apply_ms: pick(|m| m.apply),
                total_ms: pick(|m| m.parse + m.compile + m.apply),
                map_writes: pick(|m| m.writes),
                allowed_frames_during_apply: ms.iter().map(|m| m.frames).sum(),
                allowed_frames_lost: ms.iter().map(|m| m.lost).sum(),
            };
            eprintln!(
                "bench-apply: {} {count:>6} {change:?}: parse {:.1} ms, compile {:.1} ms, apply {:.1} ms, {} writes, {} of {} allowed frames lost",
                lookup.name(),
                row.parse_ms.median,
                row.compile_ms.median,
                row.apply_ms.median,
                row.map_writes.median,
                row.allowed_frames_lost,
                row.allowed_frames_during_apply
            );
            row
        })
        .collect();
    Ok(rows)
}

impl Bench {
    /// Parses, compiles and applies `text` as the next generation; with
    /// `probe`, runs allowed frames through it from another thread during
    /// the apply.
    fn apply(&mut self, text: &str, probe: Option<BorrowedFd<'_>>) -> Result<Measured> {
        let t0 = Instant::now();
        let validated =
            parse_toml(text).map_err(|e| anyhow::anyhow!("bench policy refused:\n{e}"))?;
        let t1 = Instant::now();
        // Exactly as the daemon compiles a change: hit slots stay with their
        // rules, the access log at its default rate.
        let compiled = compile_next(
            &validated.policy,
            &InterfaceIndex::new(),
            self.dataplane.hit_slots(),
            &self.dataplane.active_tables(),
            &vaultfw::clock::MonotonicClock::now(),
        )
        .with_access_log(crate::EVENT_RATE, false)
        .with_compiled_lookup(self.lookup.is_compiled());
        let t2 = Instant::now();
        self.generation += 1;
        let before = self.dataplane.verdict_totals()?;
        let running = AtomicBool::new(true);
        let started = AtomicBool::new(false);
        let judged = AtomicU64::new(0); // for a sanity check below
        let (report, t3, t4) = std::thread::scope(|scope| -> Result<_> {
            let worker = probe.map(|fd| {
                let frames = &self.stable_frames;
                let (running, started, judged) = (&running, &started, &judged);
                scope.spawn(move || -> Result<()> {
                    let mut i = 0;
                    started.store(true, Ordering::Release);
                    while running.load(Ordering::Relaxed) {
                        testrun::test_run(fd, &frames[i % frames.len()], PROBE_REPEAT)?;
                        judged.fetch_add(u64::from(PROBE_REPEAT), Ordering::Relaxed);
                        i += 1;
                    }
                    Ok(())
                })
            });
            if worker.is_some() {
                while !started.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
            }
            let t3 = Instant::now();
            let report = self.dataplane.apply(&compiled, self.generation);
            let t4 = Instant::now();
            running.store(false, Ordering::Relaxed);
            if let Some(worker) = worker {
                worker.join().expect("probe thread panicked")?;
            }
            Ok((report, t3, t4))
        })?;
        let report = report.context("Dataplane::apply")?;
        if !report.changed || report.generation != self.generation {
            bail!(
                "apply reported {report:?}, expected generation {}",
                self.generation
            );
        }
        let after = self.dataplane.verdict_totals()?;
        let delta = |v: Verdict| after[v.index() as usize] - before[v.index() as usize];
        let lost: u64 = Verdict::ALL
            .iter()
            .filter(|v| v.drops())
            .map(|v| delta(*v))
            .sum();
        let frames: u64 = Verdict::ALL.iter().map(|v| delta(*v)).sum();
        // (A stray frame on the scratch interface may add to the counters.)
        if probe.is_some() && frames < judged.load(Ordering::Relaxed) {
            bail!(
                "the verdict counters moved by {frames} but the probe thread ran {} frames",
                judged.load(Ordering::Relaxed)
            );
        }
        Ok(Measured {
            parse: testrun::ns(t1 - t0) / 1e6,
            compile: testrun::ns(t2 - t1) / 1e6,
            apply: testrun::ns(t4 - t3) / 1e6,
            writes: report.map_writes as f64,
            frames,
            lost,
        })
    }

    /// A frame from inside one of `prefixes` (and, when given, outside
    /// every prefix of `not_in`) gets `action` right now.
    fn expect(
        &self,
        fd: BorrowedFd<'_>,
        prefixes: &[Ipv4Net],
        not_in: Option<&[Ipv4Net]>,
        action: u32,
        rng: &mut Rng,
    ) -> Result<()> {
        let avoid = not_in.map(Matcher::new);
        let (p, src) = (0..1000)
            .map(|_| {
                let p = prefixes[rng.below(prefixes.len() as u32) as usize];
                (p, prefixes::inside(&p, rng))
            })
            .find(|(_, src)| {
                avoid
                    .as_ref()
                    .is_none_or(|m| !m.covers(u32::from_be_bytes(*src)))
            })
            .context("no probe address outside the new policy")?;
        let frame = tcp_syn(src, DATA_PORT);
        let (got, _) = testrun::test_run(fd, &frame, 1)?;
        if got != action {
            bail!("a frame from {p} got XDP action {got} right after the apply, expected {action}");
        }
        Ok(())
    }
}
