//! `bench-program`: the in-kernel half of `cargo xtask bench` (root).
//!
//! 1. Program cost per frame with BPF_PROG_TEST_RUN ([`cost`]): vaultfw
//!    beside the one-lookup floor and the no-lookup control from `bench/xdp/`.
//! 2. Policy apply latency and allowed-flow loss ([`apply`]).
//! 3. The cost of the program's aya-log level, off against debug
//!    ([`log_cost`]).
//! 4. What each per-frame recording piece costs (verdict counter, rule
//!    hits, access log), each left out in turn ([`fixed_cost`]).
//!
//! Writes one JSON document (`--out`) and the random prefix lists it used
//! (`--prefix-dir`, `prefixes-N.txt`) for the veth bench; progress goes to
//! stderr. Run it through `cargo xtask bench`, which builds the C objects
//! first; by hand:
//!
//! ```sh
//! cargo run --release -p firewall-agent --example bench-program -- \
//!     --objects target/bench/obj --prefix-dir target/bench --out target/bench/program.json
//! ```

mod apply;
mod cost;
mod fixed_cost;
mod frames;
mod log_cost;
mod peers;
mod prefixes;
mod scratch;
mod stats;
mod testrun;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The access log's rate `vaultfw run` uses by default (`--event-rate`):
/// the bench judges frames with the logging path as it runs in production.
pub const EVENT_RATE: u32 = 100;

struct Args {
    objects: PathBuf,
    prefix_dir: PathBuf,
    out: PathBuf,
    runs: usize,
    total: u32,
    cost_counts: Vec<usize>,
    apply_counts: Vec<usize>,
    fixed_counts: Vec<usize>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        objects: PathBuf::from("target/bench/obj"),
        prefix_dir: PathBuf::from("target/bench"),
        out: PathBuf::from("target/bench/program.json"),
        runs: 5,
        total: 1_000_000,
        cost_counts: vec![10, 254, 1_000, 10_000, 100_000],
        apply_counts: vec![254, 10_000, 100_000],
        fixed_counts: vec![10, 10_000, 100_000],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        let counts = |v: String| -> Result<Vec<usize>> {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<usize>()
                        .with_context(|| format!("bad count {s:?}"))
                })
                .collect()
        };
        match flag.as_str() {
            "--objects" => args.objects = value()?.into(),
            "--prefix-dir" => args.prefix_dir = value()?.into(),
            "--out" => args.out = value()?.into(),
            "--runs" => args.runs = value()?.parse()?,
            "--total" => args.total = value()?.parse()?,
            "--cost-counts" => args.cost_counts = counts(value()?)?,
            "--apply-counts" => args.apply_counts = counts(value()?)?,
            "--fixed-counts" => args.fixed_counts = counts(value()?)?,
            other => bail!(
                "unknown argument {other:?}; flags: --objects DIR --prefix-dir DIR --out FILE \
                 --runs N --total N --cost-counts A,B --apply-counts A,B --fixed-counts A,B"
            ),
        }
    }
    if args.runs == 0 || args.total == 0 {
        bail!("--runs and --total must be at least 1");
    }
    Ok(args)
}

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("bench-program loads XDP programs: run it as root (`cargo xtask bench` does)");
    }
    let args = parse_args()?;
    std::fs::create_dir_all(&args.prefix_dir)?;
    let started = Instant::now();
    let cost = if args.cost_counts.is_empty() {
        None
    } else {
        Some(cost::run(
            &args.objects,
            &args.prefix_dir,
            &args.cost_counts,
            args.runs,
            args.total,
        )?)
    };
    let cost_s = started.elapsed().as_secs_f64();
    let bpf_log_cost = log_cost::run(args.runs, args.total)?;
    let fixed_cost = if args.fixed_counts.is_empty() {
        None
    } else {
        Some(fixed_cost::run(
            &args.objects,
            &args.fixed_counts,
            args.runs,
            args.total,
        )?)
    };
    let apply = apply::run(&args.apply_counts, args.runs.clamp(1, 3))?;
    let doc = serde_json::json!({
        "program_cost": cost,
        "bpf_log_cost": bpf_log_cost,
        "fixed_cost": fixed_cost,
        "apply": apply,
        "seconds": { "program_cost": cost_s, "total": started.elapsed().as_secs_f64() },
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "bench-program: wrote {} in {:.0} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
