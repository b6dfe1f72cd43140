//! What the per-frame recording pieces cost (issue 12, "cheaper fixed
//! costs"): the same policy judged by vaultfw loaded five ways — whole, and
//! with the verdict counter, the rule hit counter, the access log, or all
//! three left out (`Dataplane::load_omitting`, a bench-only load-time
//! constant the verifier folds, so an omitted piece's instructions are
//! gone) — beside the one-lookup C floor and the no-lookup control, in the
//! same run, rotating sources (bench/xdp/rotate.c, as [`crate::cost`]).
//!
//! A piece's cost is the whole program minus the program without it,
//! run by run (median of the differences). The denied frames repeat
//! millions of times a second, so the access log's token bucket is spent
//! after the first events: the denied rows measure the log's path under a
//! flood (rate-limited), which is the path that matters for the floor.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Result, bail};
use aya::programs::ProgramFd;
use firewall_common::{BENCH_OMIT_ACCESS_LOG, BENCH_OMIT_RULE_HITS, BENCH_OMIT_VERDICT_COUNTER};
use serde::Serialize;
use vaultfw::compile::compile_next;
use vaultfw::dataplane::{Capacity, Dataplane};
use vaultfw::links::InterfaceIndex;
use vaultfw::policy::parse_toml;

use crate::frames::{self, DATA_PORT, SRC_OFFSET};
use crate::peers::{self, ROTATE_SOURCES, Rotator};
use crate::prefixes::{self, Matcher, Rng};
use crate::scratch::Scratch;
use crate::stats::Summary;
use crate::testrun;

/// The program variants: name and the pieces left out.
const VARIANTS: [(&str, u32); 5] = [
    ("whole", 0),
    ("without_verdict_counter", BENCH_OMIT_VERDICT_COUNTER),
    ("without_rule_hits", BENCH_OMIT_RULE_HITS),
    ("without_access_log", BENCH_OMIT_ACCESS_LOG),
    (
        "without_all_three",
        BENCH_OMIT_VERDICT_COUNTER | BENCH_OMIT_RULE_HITS | BENCH_OMIT_ACCESS_LOG,
    ),
];

/// One (prefix count, frame) row: ns per frame above the no-lookup
/// control, rotating sources.
#[derive(Debug, Serialize)]
pub struct FixedCostRow {
    pub prefixes: usize,
    /// `allowed` (a SYN a random rule admits: verdict counter, hits) or
    /// `denied` (a SYN no rule covers: verdict counter, access log).
    pub frame: &'static str,
    /// Each variant's cost above the control, by [`VARIANTS`] name.
    pub above_control: Vec<(String, Summary)>,
    /// The one-lookup C floor above the control.
    pub one_lookup_above_control: Summary,
    /// The no-lookup control itself (rotator included).
    pub control: Summary,
    /// Whole minus each variant, run by run: what the left-out pieces
    /// cost (`verdict_counter`, `rule_hits`, `access_log`, `all_three`).
    pub piece_cost: Vec<(String, Summary)>,
    /// whole above control / one-lookup above control (medians).
    pub ratio_to_one_lookup: f64,
}

/// Everything the fixed-cost part reports.
#[derive(Debug, Serialize)]
pub struct FixedCostReport {
    pub runs: usize,
    pub repetitions: u32,
    pub rows: Vec<FixedCostRow>,
}

/// Measures the pieces at each count in `counts`, `runs` interleaved runs
/// of `total` rotating repetitions per program.
pub fn run(objects: &Path, counts: &[usize], runs: usize, total: u32) -> Result<FixedCostReport> {
    let pass = peers::pass(objects)?;
    let mut rotator = Rotator::load(objects)?;
    let mut scratch = Scratch::new("fixed", 1 + VARIANTS.len() * counts.len())?;
    let _pass_link = scratch.attach(pass.fd().as_fd())?;
    let _rotate_link = scratch.attach(rotator.fd())?;
    let mut rows = Vec::new();
    for &count in counts {
        let mut rng = Rng::new(0xf1ed ^ count as u64);
        let prefixes = prefixes::random_public_prefixes(count, &mut rng, &HashSet::new());
        let matcher = Matcher::new(&prefixes);
        let validated = parse_toml(&prefixes::policy_toml(&prefixes, count))
            .map_err(|e| anyhow::anyhow!("bench policy refused:\n{e}"))?;
        eprintln!("bench-program: fixed costs: {count} prefixes: loading the variants");
        let mut loaded = Vec::new();
        for (name, omit) in &VARIANTS {
            let mut dataplane =
                Dataplane::load_omitting(Capacity::for_ip_rule_limit(count as u32), omit)?;
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
            let (fd, _) = testrun::find_vaultfw(generation)?;
            let link = scratch.attach(fd.as_fd())?;
            loaded.push((*name, dataplane, fd, link));
        }
        let one = peers::one_lookup(objects, &prefixes)?;
        let _one_link = scratch.attach(one.fd().as_fd())?;
        for (frame, allowed) in [("allowed", true), ("denied", false)] {
            let sources: Vec<[u8; 4]> = (0..ROTATE_SOURCES)
                .map(|_| {
                    if allowed {
                        let rule = &prefixes[rng.below(prefixes.len() as u32) as usize];
                        prefixes::inside(rule, &mut rng)
                    } else {
                        prefixes::outside(&matcher, &mut rng)
                    }
                })
                .collect();
            rotator.set_sources(&sources, SRC_OFFSET)?;
            let syn = frames::tcp_syn(sources[0], DATA_PORT);
            let want = if allowed { 2 } else { 1 };
            let mut targets: Vec<(&str, &ProgramFd, Option<u32>)> = loaded
                .iter()
                .map(|(name, _, fd, _)| (*name, fd, Some(want)))
                .collect();
            targets.push(("one_lookup", one.fd(), None));
            targets.push(("control", pass.fd(), None));
            let mut samples = vec![Vec::new(); targets.len()];
            for _ in 0..runs {
                // Interleaved within a run so a noisy moment hits all.
                for (i, (name, fd, expect)) in targets.iter().enumerate() {
                    rotator.set_target(fd)?;
                    let (action, ns) = testrun::test_run(rotator.fd(), &syn, total)?;
                    if let Some(want) = expect
                        && *want != action
                    {
                        bail!("{name} returned XDP action {action} for a {frame} SYN");
                    }
                    samples[i].push(f64::from(ns));
                }
            }
            let summaries: Vec<Summary> = samples.iter().map(|s| Summary::of(s)).collect();
            let control = summaries[summaries.len() - 1].clone();
            let whole = &summaries[0];
            let one_lookup_above_control = summaries[summaries.len() - 2].minus(&control);
            let above_control: Vec<(String, Summary)> = VARIANTS
                .iter()
                .zip(&summaries)
                .map(|((name, _), s)| ((*name).to_owned(), s.minus(&control)))
                .collect();
            let piece_cost: Vec<(String, Summary)> = VARIANTS[1..]
                .iter()
                .zip(&summaries[1..])
                .map(|((name, _), s)| {
                    let piece = name.trim_start_matches("without_");
                    (piece.to_owned(), whole.minus(s))
                })
                .collect();
            let ratio = above_control[0].1.median / one_lookup_above_control.median;
            eprintln!(
                "bench-program: fixed costs: {count:>6} {frame}: whole {:.1} ns above control, one_lookup {:.1} (x{ratio:.2}); pieces: {}",
                above_control[0].1.median,
                one_lookup_above_control.median,
                piece_cost
                    .iter()
                    .map(|(n, s)| format!("{n} {:.1}", s.median))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            rows.push(FixedCostRow {
                prefixes: count,
                frame,
                above_control,
                one_lookup_above_control,
                control,
                piece_cost,
                ratio_to_one_lookup: ratio,
            });
        }
    }
    Ok(FixedCostReport {
        runs,
        repetitions: total,
        rows,
    })
}
