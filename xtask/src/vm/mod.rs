//! `cargo xtask vm-test`: the test binaries of `cargo xtask test`, run as
//! root inside QEMU virtual machines booted on the Debian kernels operators
//! run, so a kernel's verifier or a missing feature shows up before an
//! operator finds it.
//!
//! One module per step:
//! - [`host`]: the Debian packages the host needs (QEMU, busybox, cpio, ...),
//!   installed with apt-get when missing.
//! - [`kernel`]: which package is each series' current kernel; download and
//!   extract it once into `target/vm/cache/`; the modules the guest loads,
//!   in dependency order.
//! - [`payload`]: `vaultfw` and the test binaries, built on the host.
//! - [`initramfs`]: the guest's root filesystem (`vm/init` is its PID 1).
//! - [`qemu`]: KVM if it works, TCG otherwise; one boot, with a timeout,
//!   the serial console captured.
//! - [`report`]: the console's result lines, as a report per kernel.
//!
//! Everything it writes lives under `target/vm/`: `cache/` (kernel packages,
//! kept), `stage/` (rebuilt every run) and `<series>/console-<guest>.log`.

mod host;
mod initramfs;
mod kernel;
mod payload;
mod qemu;
mod report;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use kernel::{SERIES, Series};
use qemu::Accel;
use report::KernelReport;

/// How long one test binary may run in the guest before it is killed.
const BINARY_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// `cargo xtask vm-test` arguments.
#[derive(clap::Args, Debug)]
pub struct VmTestArgs {
    /// The kernel series to boot.
    #[arg(long, value_enum, default_value_t = KernelChoice::All)]
    kernel: KernelChoice,
    /// How QEMU runs the guest: `auto` tries KVM for a few seconds (nested
    /// KVM can hang at boot) and falls back to TCG emulation.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Minutes one VM may run before it is killed and counted as failed.
    #[arg(long, default_value_t = 45)]
    timeout_min: u64,
    /// Guests per kernel, booted side by side, each running its share of
    /// the test binaries (whole binaries, one test at a time in each
    /// guest). The suite's tests stay one at a time per guest; guests share
    /// nothing, so two of them use the host's second core, which one TCG
    /// guest running one test at a time leaves mostly idle.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=8))]
    guests: u64,
    /// Passed to every test binary in the guest (e.g. a test name filter).
    #[arg(last = true)]
    args: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KernelChoice {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    All,
}

impl KernelChoice {
    fn series(self) -> Vec<&'static Series> {
        let name = match self {
            KernelChoice::V6_1 => "6.1",
            KernelChoice::V6_12 => "6.12",
            KernelChoice::All => return SERIES.iter().collect(),
        };
        SERIES.iter().filter(|s| s.name == name).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent directory")
}

/// Run the suite in a VM per kernel; an error if any kernel's run failed.
pub fn vm_test(args: VmTestArgs) -> Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    let vm_dir = root.join("target/vm");
    let cache = vm_dir.join("cache");
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;

    host::ensure_packages()?;
    // Kernels before the build: a package that cannot be had fails fast.
    let kernels = args
        .kernel
        .series()
        .into_iter()
        .map(|series| kernel::prepare(series, &cache))
        .collect::<Result<Vec<_>>>()?;
    let payload = payload::build(root)?;
    let stage = vm_dir.join("stage");
    let common = initramfs::build_common(&stage, root, &payload, &args.args, BINARY_TIMEOUT)?;
    let accel = qemu::choose_accel(args.accel, &kernels[0], &initramfs::build_probe(&stage)?)?;
    let timeout = Duration::from_secs(args.timeout_min * 60);

    let recorded =
        timings(&std::fs::read_to_string(root.join(RECORDED_TIMINGS)).unwrap_or_default());
    let shards = shards(&payload.tests, args.guests as usize, &args.args, &recorded);
    let mut reports = Vec::new();
    for kernel in &kernels {
        let modules = initramfs::modules(&stage, kernel)?;
        let name = kernel.series.name;
        println!(
            "xtask: vm-test: booting {name} ({} from {} {}) on {accel}, {} guest{}",
            kernel.release,
            kernel.package,
            kernel.version,
            shards.len(),
            if shards.len() == 1 { "" } else { "s" }
        );
        let boot_started = Instant::now();
        let side_by_side = shards.len() > 1;
        let guests: Vec<Result<(KernelReport, bool)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = shards
                .iter()
                .enumerate()
                .map(|(index, tests)| {
                    let (stage, common, modules) = (&stage, &common, &modules);
                    let log = vm_dir.join(name).join(format!("console-{}.log", index + 1));
                    scope.spawn(move || -> Result<(KernelReport, bool)> {
                        let label = format!("{name}-{}", index + 1);
                        let initrd = initramfs::for_guest(stage, common, modules, &label, tests)?;
                        println!(
                            "xtask: vm-test: guest {label}: console log: {}",
                            log.display()
                        );
                        let prefix = if side_by_side {
                            format!("[{label}] ")
                        } else {
                            String::new()
                        };
                        let console = qemu::boot(kernel, &initrd, accel, timeout, &log, &prefix)?;
                        let names: Vec<String> = tests.iter().map(|t| t.name.clone()).collect();
                        Ok((
                            KernelReport::parse(&console.lines, &names),
                            console.timed_out,
                        ))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a guest's thread does not panic"))
                .collect()
        });
        let mut parts = Vec::new();
        let mut timed_out = false;
        for guest in guests {
            let (report, guest_timed_out) = guest?;
            parts.push(report);
            timed_out |= guest_timed_out;
        }
        let report = KernelReport::merged(parts);
        let timings_file = vm_dir.join(name).join("timings");
        std::fs::write(&timings_file, report.timings())
            .with_context(|| format!("writing {}", timings_file.display()))?;
        reports.push(KernelRun {
            kernel: name,
            package: format!("{} {}", kernel.package, kernel.version),
            report,
            timed_out,
            elapsed: boot_started.elapsed(),
        });
    }
    finish(&reports, accel, started.elapsed())
}

/// Seconds per test each binary took in a recorded guest run (6.1, TCG,
/// CI's filters), relative to the workspace root: what [`shards`] expects
/// of a binary. Refresh it from a run's `target/vm/<kernel>/timings`.
const RECORDED_TIMINGS: &str = "vm/timings";
/// Expected guest seconds per test of a binary the recording lacks, by
/// kind: a unit test (`lib`, `bin`) runs in user space, a test of `tests/`
/// loads the XDP program or starts the daemon.
const UNIT_TEST_SECONDS: f64 = 0.35;
const KERNEL_TEST_SECONDS: f64 = 10.0;

/// Seconds per test by binary name, from [`KernelReport::timings`] text;
/// lines that do not read are left out (the recording is only a hint).
fn timings(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let name = fields.next()?;
            let tests: f64 = fields.next()?.parse().ok()?;
            let seconds: f64 = fields.next()?.parse().ok()?;
            (tests > 0.0).then(|| (name.to_owned(), seconds / tests))
        })
        .collect()
}

/// The test binaries split among `guests` guests, balanced by expected
/// time: the longest first, each to the guest with the least expected time
/// so far; each guest then runs its share in run order (unit tests first).
/// A binary's expected time is its count of tests left by `args` (its own
/// `--list`) times its seconds per test: as recorded, else its kind's.
fn shards<'a>(
    tests: &'a [payload::TestBinary],
    guests: usize,
    args: &[String],
    recorded: &HashMap<String, f64>,
) -> Vec<Vec<&'a payload::TestBinary>> {
    let mut costed: Vec<(f64, usize)> = tests
        .iter()
        .enumerate()
        .map(|(index, test)| {
            (
                listed_tests(test, args) as f64 * seconds_per_test(test, recorded),
                index,
            )
        })
        .collect();
    costed.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut shards: Vec<(f64, Vec<usize>)> = vec![(0.0, Vec::new()); guests.max(1)];
    for (seconds, index) in costed {
        let lightest = shards
            .iter_mut()
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .expect("at least one guest");
        lightest.0 += seconds;
        lightest.1.push(index);
    }
    shards
        .into_iter()
        .filter(|(_, share)| !share.is_empty())
        .map(|(_, mut share)| {
            share.sort_unstable();
            share.into_iter().map(|index| &tests[index]).collect()
        })
        .collect()
}

/// How many tests `test` runs under `args`, from its own `--list` (one if
/// it cannot say).
fn listed_tests(test: &payload::TestBinary, args: &[String]) -> usize {
    std::process::Command::new(&test.path)
        .args(["--list", "--format", "terse"])
        .args(args)
        .current_dir(&test.package_dir)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map_or(1, |out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|line| line.ends_with(": test"))
                .count()
        })
}

/// Guest seconds per test of `test`: as recorded, else its kind's.
fn seconds_per_test(test: &payload::TestBinary, recorded: &HashMap<String, f64>) -> f64 {
    if let Some(seconds) = recorded.get(&test.name) {
        return *seconds;
    }
    if test.name.split('/').nth(1) == Some("test") {
        KERNEL_TEST_SECONDS
    } else {
        UNIT_TEST_SECONDS
    }
}

/// One kernel's outcome, for the closing summary.
struct KernelRun {
    kernel: &'static str,
    package: String,
    report: KernelReport,
    timed_out: bool,
    elapsed: Duration,
}

impl KernelRun {
    fn ok(&self) -> bool {
        !self.timed_out && self.report.ok()
    }
}

/// Print each kernel's report and summary line, then the totals; an error
/// naming the kernels that failed.
fn finish(runs: &[KernelRun], accel: Accel, elapsed: Duration) -> Result<()> {
    println!();
    for run in runs {
        println!("xtask: vm-test: kernel {} ({})", run.kernel, run.package);
        run.report.print_details();
        if run.timed_out {
            println!("  the VM was killed: it did not power off within the timeout");
        }
    }
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    for run in runs {
        let counts = run.report.counts();
        passed += counts.passed;
        failed += counts.failed;
        ignored += counts.ignored;
        println!(
            "vm-test {}: {} ({}, {accel}): {} passed ({} skipped themselves), {} failed, {} \
             ignored; {}; {} s",
            run.kernel,
            run.report.release().unwrap_or("release unknown"),
            if run.ok() { "ok" } else { "FAILED" },
            counts.passed,
            run.report.self_skipped(),
            counts.failed,
            counts.ignored,
            run.report.binaries_line(),
            run.elapsed.as_secs()
        );
    }
    println!("xtask: vm-test took {} s", elapsed.as_secs());
    println!("summary: {passed} passed, {failed} failed, {ignored} skipped");
    let failed_kernels: Vec<&str> = runs.iter().filter(|r| !r.ok()).map(|r| r.kernel).collect();
    if !failed_kernels.is_empty() {
        bail!("the suite failed on kernel {}", failed_kernels.join(", "));
    }
    Ok(())
}

/// Create `dir` empty (removing what was there).
fn fresh_dir(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(name: &str) -> payload::TestBinary {
        payload::TestBinary {
            name: name.to_owned(),
            package_dir: PathBuf::from("/nonexistent"),
            path: PathBuf::from("/nonexistent").join(name),
        }
    }

    #[test]
    fn guests_get_balanced_shares_each_in_run_order_every_binary_once() {
        let tests: Vec<_> = ["p/lib/p", "t/test/a", "t/test/b", "t/test/c"]
            .into_iter()
            .map(binary)
            .collect();
        let names = |share: &Vec<&payload::TestBinary>| -> Vec<String> {
            share.iter().map(|t| t.name.clone()).collect()
        };
        let none = HashMap::new();
        let two: Vec<Vec<String>> = shards(&tests, 2, &[], &none).iter().map(names).collect();
        assert_eq!(
            two,
            [vec!["t/test/a", "t/test/c"], vec!["p/lib/p", "t/test/b"]]
        );
        let one: Vec<Vec<String>> = shards(&tests, 1, &[], &none).iter().map(names).collect();
        assert_eq!(one, [vec!["p/lib/p", "t/test/a", "t/test/b", "t/test/c"]]);
        // More guests than binaries: no guest boots without work.
        assert_eq!(shards(&tests, 8, &[], &none).len(), 4);
        // A recorded slow binary gets a guest of its own.
        let recorded = timings("t/test/b\t2\t300\nbroken line\nt/test/c\t0\t5\n");
        assert_eq!(
            recorded.len(),
            1,
            "lines that do not read, or with no tests, are left out"
        );
        let two: Vec<Vec<String>> = shards(&tests, 2, &[], &recorded)
            .iter()
            .map(names)
            .collect();
        assert_eq!(
            two,
            [vec!["t/test/b"], vec!["p/lib/p", "t/test/a", "t/test/c"]]
        );
    }
}
