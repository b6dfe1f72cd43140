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
//! kept), `stage/` (rebuilt every run) and `<series>/console.log`.

mod host;
mod initramfs;
mod kernel;
mod payload;
mod qemu;
mod report;

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

    let mut reports = Vec::new();
    for kernel in &kernels {
        let initrd = initramfs::for_kernel(&stage, &common, kernel)?;
        let log = vm_dir.join(kernel.series.name).join("console.log");
        println!(
            "xtask: vm-test: booting {} ({} from {} {}) on {accel}; console log: {}",
            kernel.series.name,
            kernel.release,
            kernel.package,
            kernel.version,
            log.display()
        );
        let boot_started = Instant::now();
        let console = qemu::boot(kernel, &initrd, accel, timeout, &log)?;
        let report = KernelReport::parse(&console.lines, &payload.names());
        reports.push(KernelRun {
            kernel: kernel.series.name,
            package: format!("{} {}", kernel.package, kernel.version),
            report,
            timed_out: console.timed_out,
            elapsed: boot_started.elapsed(),
        });
    }
    finish(&reports, accel, started.elapsed())
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
