//! Program cost per frame with BPF_PROG_TEST_RUN: vaultfw against the
//! one-lookup floor and the no-lookup control, at each prefix count, for
//! four kinds of frame, measured three ways:
//!
//! - `pool`: 1024 frames with random sources, each run `repeat` times so
//!   the total is at least `total` (the kernel's mean per call, averaged);
//! - `rotating`: one run of `total` repetitions through bench/xdp/rotate.c,
//!   which writes the next of 65,536 random sources into the frame before
//!   every repetition, so the trie path changes every time (the rotator's
//!   own cost, measured as rotate -> pass, is subtracted);
//! - `fixed`: one frame, `total` repetitions (the optimistic figure a
//!   single fixed frame gives, for comparison).

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Context, Result, bail};
use aya::programs::ProgramFd;
use ipnet::Ipv4Net;
use serde::Serialize;
use vaultfw::compile::compile_next;
use vaultfw::compile::cpt::Lookup;
use vaultfw::dataplane::{Capacity, Dataplane};
use vaultfw::links::InterfaceIndex;
use vaultfw::policy::parse_toml;

use crate::frames::{self, CONTROL_PORT, DATA_PORT, SRC_OFFSET, SRC_OFFSET_VLAN, VLAN};
use crate::peers::{self, ROTATE_SOURCES, Rotator};
use crate::prefixes::{self, Matcher, Rng};
use crate::scratch::Scratch;
use crate::stats::Summary;
use crate::testrun::{self, ProgramSize};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// Frames in the `pool` method.
const POOL: usize = 1024;

/// The kinds of frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// A data-plane SYN from a source inside a random rule.
    Allowed,
    /// A data-plane SYN from a source no rule covers.
    Denied,
    /// A SYN to port 22 from a random source.
    ControlPlane,
    /// A denied data-plane SYN behind an 802.1Q tag of the policy's subnet
    /// VLAN (the longest path: IP rules, then three endpoint lookups).
    VlanDenied,
}

impl FrameKind {
    const ALL: [FrameKind; 4] = [
        FrameKind::Allowed,
        FrameKind::Denied,
        FrameKind::ControlPlane,
        FrameKind::VlanDenied,
    ];

    fn vaultfw_action(self) -> u32 {
        match self {
            FrameKind::Allowed | FrameKind::ControlPlane => XDP_PASS,
            FrameKind::Denied | FrameKind::VlanDenied => XDP_DROP,
        }
    }

    fn frame(self, src: [u8; 4]) -> Vec<u8> {
        match self {
            FrameKind::Allowed | FrameKind::Denied => frames::tcp_syn(src, DATA_PORT),
            FrameKind::ControlPlane => frames::tcp_syn(src, CONTROL_PORT),
            FrameKind::VlanDenied => frames::tcp_syn_vlan(src, DATA_PORT, VLAN),
        }
    }

    fn src_offset(self) -> u32 {
        if self == FrameKind::VlanDenied {
            SRC_OFFSET_VLAN
        } else {
            SRC_OFFSET
        }
    }

    fn source(self, prefixes: &[Ipv4Net], matcher: &Matcher, rng: &mut Rng) -> [u8; 4] {
        match self {
            FrameKind::Allowed => {
                let rule = &prefixes[rng.below(prefixes.len() as u32) as usize];
                prefixes::inside(rule, rng)
            }
            _ => prefixes::outside(matcher, rng),
        }
    }
}

/// How a figure was measured (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Pool,
    Rotating,
    Fixed,
}

/// One (prefix count, frame kind, method) row.
#[derive(Debug, Serialize)]
pub struct CostRow {
    pub prefixes: usize,
    pub frame: FrameKind,
    pub method: Method,
    /// ns per frame as the kernel reports it (rotating: including the
    /// rotator).
    pub vaultfw: Summary,
    pub one_lookup: Summary,
    pub pass: Summary,
    /// Above the no-lookup control of the same method.
    pub vaultfw_above_floor: Summary,
    pub one_lookup_above_floor: Summary,
    /// vaultfw_above_floor / one_lookup_above_floor (medians).
    pub ratio_to_one_lookup: f64,
    /// Repetitions per figure and run.
    pub repetitions: u64,
    /// The same program judging with `--lookup compiled` (the compiled
    /// prefix table instead of the IPv4 tries), same policy and frames.
    pub vaultfw_compiled: Summary,
    pub vaultfw_compiled_above_floor: Summary,
    /// vaultfw_compiled_above_floor / one_lookup_above_floor (medians).
    pub compiled_ratio_to_one_lookup: f64,
}

/// Everything the program-cost part reports.
#[derive(Debug, Serialize)]
pub struct CostReport {
    pub rows: Vec<CostRow>,
    /// bpftool-style sizes of each program, at the largest prefix count.
    pub programs: Vec<(String, ProgramSize)>,
    pub runs: usize,
    pub total_repetitions: u32,
    /// Per prefix count: bytes of one table set's compiled prefix table
    /// (the image written) and of its array as sized at load.
    pub compiled_table: Vec<CompiledTableSize>,
}

/// Memory of one table set's compiled prefix table.
#[derive(Debug, Serialize)]
pub struct CompiledTableSize {
    pub prefixes: usize,
    /// Bytes the policy's table uses (cells × 8).
    pub image_bytes: usize,
    /// Bytes of the set's array as the agent sizes it for the limits.
    pub array_bytes: u64,
}

struct Programs<'a> {
    vaultfw: &'a ProgramFd,
    vaultfw_compiled: &'a ProgramFd,
    one_lookup: &'a ProgramFd,
    pass: &'a ProgramFd,
}

/// Runs the program-cost bench at each count in `counts`.
pub fn run(
    objects: &Path,
    prefix_dir: &Path,
    counts: &[usize],
    runs: usize,
    total: u32,
) -> Result<CostReport> {
    let mut rows = Vec::new();
    let mut sizes = Vec::new();
    let mut compiled_table = Vec::new();
    let pass = peers::pass(objects)?;
    let mut rotator = Rotator::load(objects)?;
    let mut scratch = Scratch::new("cost", 1 + 2 * counts.len())?;
    let _pass_link = scratch.attach(pass.fd().as_fd())?;
    let _rotate_link = scratch.attach(rotator.fd())?;
    for &count in counts {
        let mut rng = Rng::new(count as u64);
        let prefixes = prefixes::random_public_prefixes(count, &mut rng, &HashSet::new());
        std::fs::write(
            prefix_dir.join(format!("prefixes-{count}.txt")),
            prefixes::to_lines(&prefixes),
        )
        .context("writing the prefix list")?;
        let matcher = Matcher::new(&prefixes);
        eprintln!("bench-program: {count} prefixes: loading vaultfw and one_lookup");
        let validated = parse_toml(&prefixes::policy_toml(&prefixes, count))
            .map_err(|e| anyhow::anyhow!("bench policy refused:\n{e}"))?;
        let mut dataplane = Dataplane::load(Capacity::for_ip_rule_limit(count as u32))?;
        let generation = (rng.next_u64() >> 16) | 1;
        let compiled = compile_next(
            &validated.policy,
            &InterfaceIndex::new(),
            dataplane.hit_slots(),
            &dataplane.active_tables(),
            &vaultfw::clock::MonotonicClock::now(),
        )
        .with_access_log(crate::EVENT_RATE, false);
        // A second instance serves the same tables through the compiled
        // prefix table (`--lookup compiled`), told apart by generation.
        let compiled_capacity =
            Capacity::for_ip_rule_limit(count as u32).with_lookup(Lookup::Compiled);
        let mut compiled_dataplane = Dataplane::load(compiled_capacity)?;
        compiled_dataplane.apply(&compiled.clone().with_compiled_lookup(true), generation + 1)?;
        dataplane.apply(&compiled, generation)?;
        let (vaultfw_fd, vaultfw_info) = testrun::find_vaultfw(generation)?;
        let (compiled_fd, _) = testrun::find_vaultfw(generation + 1)?;
        let image = vaultfw::compile::cpt::compile_prefix_table(&compiled)?;
        compiled_table.push(CompiledTableSize {
            prefixes: count,
            image_bytes: std::mem::size_of_val(image.as_slice()),
            array_bytes: u64::from(compiled_capacity.compiled_cells()) * 8,
        });
        eprintln!(
            "bench-program: {count} prefixes: compiled table {} bytes (array {} bytes)",
            std::mem::size_of_val(image.as_slice()),
            u64::from(compiled_capacity.compiled_cells()) * 8
        );
        let one = peers::one_lookup(objects, &prefixes)?;
        let links = [
            scratch.attach(vaultfw_fd.as_fd())?,
            scratch.attach(one.fd().as_fd())?,
            scratch.attach(compiled_fd.as_fd())?,
        ];
        if count == *counts.iter().max().expect("counts not empty") {
            sizes = vec![
                ("vaultfw".to_owned(), testrun::program_size(&vaultfw_info)),
                ("one_lookup".to_owned(), testrun::program_size(&one.info()?)),
                ("pass".to_owned(), testrun::program_size(&pass.info()?)),
                (
                    "rotate".to_owned(),
                    testrun::program_size(&rotator.loaded.info()?),
                ),
            ];
        }
        let programs = Programs {
            vaultfw: &vaultfw_fd,
            vaultfw_compiled: &compiled_fd,
            one_lookup: one.fd(),
            pass: pass.fd(),
        };
        for kind in FrameKind::ALL {
            let sources: Vec<[u8; 4]> = (0..ROTATE_SOURCES)
                .map(|_| kind.source(&prefixes, &matcher, &mut rng))
                .collect();
            let pool: Vec<Vec<u8>> = sources[..POOL].iter().map(|s| kind.frame(*s)).collect();
            rotator.set_sources(&sources, kind.src_offset())?;
            rows.extend(measure_kind(
                count,
                kind,
                &programs,
                &mut rotator,
                &pool,
                runs,
                total,
            )?);
        }
        drop(links);
        drop(dataplane);
        drop(compiled_dataplane);
    }
    Ok(CostReport {
        rows,
        programs: sizes,
        runs,
        total_repetitions: total,
        compiled_table,
    })
}

/// Per program: (pool, rotating, fixed) ns for each run.
#[derive(Default)]
struct Samples {
    pool: Vec<f64>,
    rotating: Vec<f64>,
    fixed: Vec<f64>,
}

fn measure_kind(
    count: usize,
    kind: FrameKind,
    programs: &Programs<'_>,
    rotator: &mut Rotator,
    pool: &[Vec<u8>],
    runs: usize,
    total: u32,
) -> Result<Vec<CostRow>> {
    let per_frame = total.div_ceil(pool.len() as u32);
    let targets = [
        ("vaultfw", programs.vaultfw),
        ("one_lookup", programs.one_lookup),
        ("pass", programs.pass),
        ("vaultfw_compiled", programs.vaultfw_compiled),
    ];
    let mut samples: [Samples; 4] = Default::default();
    for _ in 0..runs {
        // Interleave the programs within a run so a noisy moment hits all.
        for (i, (name, fd)) in targets.iter().enumerate() {
            let expect = name.starts_with("vaultfw").then(|| kind.vaultfw_action());

            let mut sum = 0f64;
            for frame in pool {
                let (action, ns) = testrun::test_run(fd.as_fd(), frame, per_frame)?;
                check(name, kind, expect, action)?;
                sum += f64::from(ns);
            }
            samples[i].pool.push(sum / pool.len() as f64);

            rotator.set_target(fd)?;
            let (action, ns) = testrun::test_run(rotator.fd(), &pool[0], total)?;
            check(name, kind, expect, action)?;
            samples[i].rotating.push(f64::from(ns));

            let (action, ns) = testrun::test_run(fd.as_fd(), &pool[0], total)?;
            check(name, kind, expect, action)?;
            samples[i].fixed.push(f64::from(ns));
        }
    }
    let row = |method: Method, pick: fn(&Samples) -> &Vec<f64>, reps: u64| {
        let [v, o, p, c] = samples.each_ref().map(|s| Summary::of(pick(s)));
        let va = v.minus(&p);
        let oa = o.minus(&p);
        let ca = c.minus(&p);
        CostRow {
            compiled_ratio_to_one_lookup: ca.median / oa.median,
            vaultfw_compiled: c,
            vaultfw_compiled_above_floor: ca,
            prefixes: count,
            frame: kind,
            method,
            ratio_to_one_lookup: va.median / oa.median,
            vaultfw: v,
            one_lookup: o,
            pass: p,
            vaultfw_above_floor: va,
            one_lookup_above_floor: oa,
            repetitions: reps,
        }
    };
    let pool_reps = u64::from(per_frame) * pool.len() as u64;
    let rows = vec![
        row(Method::Pool, |s| &s.pool, pool_reps),
        row(Method::Rotating, |s| &s.rotating, u64::from(total)),
        row(Method::Fixed, |s| &s.fixed, u64::from(total)),
    ];
    for r in &rows {
        eprintln!(
            "bench-program: {count:>6} {kind:?} {:?}: vaultfw {:.1} ns, compiled {:.1} ns, one_lookup {:.1} ns, pass {:.1} ns (above floor {:.1} / compiled {:.1} vs {:.1}, x{:.2} / compiled x{:.2})",
            r.method,
            r.vaultfw.median,
            r.vaultfw_compiled.median,
            r.one_lookup.median,
            r.pass.median,
            r.vaultfw_above_floor.median,
            r.vaultfw_compiled_above_floor.median,
            r.one_lookup_above_floor.median,
            r.ratio_to_one_lookup,
            r.compiled_ratio_to_one_lookup
        );
    }
    Ok(rows)
}

fn check(name: &str, kind: FrameKind, expect: Option<u32>, action: u32) -> Result<()> {
    if let Some(want) = expect
        && want != action
    {
        bail!("{name} returned XDP action {action} for a {kind:?} frame, expected {want}");
    }
    Ok(())
}
