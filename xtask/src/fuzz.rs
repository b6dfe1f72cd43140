//! `cargo xtask fuzz`: the long runs that do not fit in `cargo xtask test`.
//!
//! - Differential (default): the kernel XDP program against the reference
//!   model on generated frames, through the `differential` test of
//!   `firewall-agent` with a larger frame count and a fresh seed (root).
//! - Compiled table (default, after the differential run): the compiled
//!   prefix table against the LPM tries and the reference model through
//!   the `compiled_lookup` test of `firewall-agent`, `--compiled-frames`
//!   frames per size (1,000,000 by default) on adversarial prefix sets.
//! - `--policy-parser`: cargo-fuzz (libFuzzer) on the native policy parser
//!   (`fuzz/fuzz_targets/policy_toml.rs`), installing cargo-fuzz when it is
//!   missing, like bootstrap does for bpf-linker.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::bootstrap::{self, NIGHTLY, cargo, run};

/// Frames of a differential run when `--frames` is not given.
pub const DEFAULT_FRAMES: u64 = 100_000;
/// Frames per size of the compiled-table run when `--compiled-frames` is
/// not given.
pub const DEFAULT_COMPILED_FRAMES: u64 = 1_000_000;
/// Frames per size the reference model judges in the compiled-table run
/// (it scans every entry per frame; the tries judge every frame).
const COMPILED_MODEL_FRAMES: u64 = 20_000;
const COMPILED_TEST: &str = "compiled_lookup";
const COMPILED_CASE: &str = "compiled_table_judges_like_the_tries_and_the_reference_at_every_size";
/// Seconds of policy-parser fuzzing when `--seconds` is not given.
pub const DEFAULT_SECONDS: u64 = 60;

const AGENT_PACKAGE: &str = "firewall-agent";
const DIFFERENTIAL_TEST: &str = "differential";
const DIFFERENTIAL_CASE: &str = "kernel_and_model_agree_on_generated_frames";
const FUZZ_TARGET: &str = "policy_toml";

/// `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Frames of the differential run.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_FRAMES, conflicts_with = "policy_parser")]
    pub frames: u64,
    /// Seed of the differential run (decimal or 0x-hex); a fresh one,
    /// printed, when not given.
    #[arg(long, value_name = "S", value_parser = parse_seed, conflicts_with = "policy_parser")]
    pub seed: Option<u64>,
    /// Frames per size of the compiled-table run (sizes 10, 254, 1,000,
    /// 10,000 and 100,000 prefixes; 0 skips it).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_COMPILED_FRAMES, conflicts_with = "policy_parser")]
    pub compiled_frames: u64,
    /// Fuzz the policy parser with cargo-fuzz instead.
    #[arg(long)]
    pub policy_parser: bool,
    /// Seconds of policy-parser fuzzing.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SECONDS, requires = "policy_parser")]
    pub seconds: u64,
}

fn parse_seed(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("{text:?} is not a seed (decimal or 0x-hex): {e}"))
}

/// Runs what `args` asks for.
pub fn fuzz(args: FuzzArgs) -> Result<()> {
    if args.policy_parser {
        policy_parser(args.seconds)
    } else {
        let seed = args.seed.unwrap_or_else(fresh_seed);
        differential(args.frames, Some(seed))?;
        if args.compiled_frames > 0 {
            compiled(args.compiled_frames, seed)?;
        }
        Ok(())
    }
}

/// The compiled table against the tries and the model: `frames` frames per
/// size from `seed`, through the `compiled_lookup` test (release build:
/// the debug build's model is too slow for a million frames).
pub fn compiled(frames: u64, seed: u64) -> Result<()> {
    println!(
        "xtask: compiled-table run: {frames} frames per size, seed {seed:#x} (repeat it with \
         --seed {seed:#x})"
    );
    let start = Instant::now();
    let status = Command::new(cargo())
        .current_dir(workspace_root())
        .args([
            "test",
            "--release",
            "--package",
            AGENT_PACKAGE,
            "--test",
            COMPILED_TEST,
            "--",
        ])
        .args(["--exact", COMPILED_CASE, "--nocapture"])
        .env("VAULTFW_CPT_FRAMES", frames.to_string())
        .env("VAULTFW_CPT_SEED", format!("{seed:#x}"))
        .env(
            "VAULTFW_CPT_MODEL_FRAMES",
            COMPILED_MODEL_FRAMES.to_string(),
        )
        .status()
        .context("starting cargo test")?;
    println!(
        "xtask: compiled-table run ended after {:.1}s (with the build)",
        start.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("the compiled-table run failed ({status}): see the disagreements above");
    }
    Ok(())
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent directory")
}

/// The long differential run: `frames` frames from `seed` (a fresh one,
/// printed, when `None`). Prints the count, the disagreements and the time.
pub fn differential(frames: u64, seed: Option<u64>) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the differential run loads the XDP program: run `sudo -E cargo xtask fuzz`");
    }
    bootstrap::ensure_toolchain()?;
    let seed = seed.unwrap_or_else(fresh_seed);
    println!(
        "xtask: differential run: {frames} frames, seed {seed:#x} (repeat it with --seed {seed:#x})"
    );
    let start = Instant::now();
    let mut child = Command::new(cargo())
        .current_dir(workspace_root())
        .args([
            "test",
            "--package",
            AGENT_PACKAGE,
            "--test",
            DIFFERENTIAL_TEST,
            "--",
        ])
        .args(["--exact", DIFFERENTIAL_CASE, "--nocapture"])
        .env("VAULTFW_DIFF_FRAMES", frames.to_string())
        .env("VAULTFW_DIFF_SEED", format!("{seed:#x}"))
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut summary = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the test output")?;
        println!("{line}");
        if line.starts_with("differential: ") {
            summary = Some(line);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    let elapsed = start.elapsed();
    match summary {
        Some(line) => println!(
            "xtask: fuzz: {} (wall time with the build: {:.1}s)",
            line.trim_start_matches("differential: "),
            elapsed.as_secs_f64()
        ),
        None => println!("xtask: fuzz: the test printed no summary"),
    }
    if !status.success() {
        bail!("the differential run failed ({status}): see the disagreements above");
    }
    Ok(())
}

fn fresh_seed() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

/// cargo-fuzz on the policy parser for `seconds` seconds.
pub fn policy_parser(seconds: u64) -> Result<()> {
    bootstrap::ensure_toolchain()?;
    ensure_cargo_fuzz()?;
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    // New inputs go to a corpus under fuzz/target (ignored by git); the
    // seeds in fuzz/seeds are read, never written.
    let corpus = fuzz_dir.join("target").join("corpus").join(FUZZ_TARGET);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = fuzz_dir.join("seeds").join(FUZZ_TARGET);
    println!("xtask: fuzzing the policy parser for {seconds}s (cargo fuzz run {FUZZ_TARGET})");
    let start = Instant::now();
    let result = run(Command::new("rustup")
        .current_dir(root)
        .args(["run", NIGHTLY, "cargo", "fuzz", "run", "--fuzz-dir"])
        .arg(&fuzz_dir)
        .arg(FUZZ_TARGET)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=10")
        .arg(format!(
            "-artifact_prefix={}/",
            artifacts(&fuzz_dir).display()
        )));
    println!(
        "xtask: policy-parser fuzzing ended after {:.0}s; corpus: {}",
        start.elapsed().as_secs_f64(),
        corpus.display()
    );
    result.context("the policy parser fuzzer found a failing input (see the artifact above)")
}

fn artifacts(fuzz_dir: &Path) -> PathBuf {
    let dir = fuzz_dir.join("artifacts").join(FUZZ_TARGET);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new(cargo())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        println!("xtask: cargo-fuzz: present");
        return Ok(());
    }
    println!(
        "xtask: installing: cargo-fuzz (not found; `cargo install cargo-fuzz --locked` takes a \
         few minutes)"
    );
    run(Command::new(cargo()).args(["install", "cargo-fuzz", "--locked"]))
        .context("installing cargo-fuzz")
}
