//! The commands: each is a sequence of ordinary `cargo` invocations run from
//! the workspace root, after [`bootstrap::ensure_toolchain`].

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::bootstrap::{self, cargo, run};

/// The agent's package and binary.
const AGENT_PACKAGE: &str = "firewall-agent";
const AGENT_BIN: &str = "vaultfw";
/// The integration-test package and its demo binary.
const TESTS_PACKAGE: &str = "vaultfw-tests";
const DEMO_BIN: &str = "vaultfw-demo";
/// How the harness finds the agent binary.
const VAULTFW_BIN_ENV: &str = "VAULTFW_BIN";

/// The workspace root (xtask lives one level below it).
pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent directory")
}

/// A `cargo` command run from the workspace root.
pub(crate) fn cargo_cmd() -> Command {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(workspace_root());
    cmd
}

/// Bootstrap, then build the agent; returns the absolute path of `vaultfw`.
pub fn build() -> Result<PathBuf> {
    bootstrap::ensure_toolchain()?;
    println!("xtask: building {AGENT_PACKAGE} (the build script compiles the XDP program)");
    let mut child = cargo_cmd()
        .args([
            "build",
            "--package",
            AGENT_PACKAGE,
            "--bins",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo build")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut binary = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        if let Some(path) = agent_executable(&line) {
            binary = Some(path);
        }
    }
    let status = child.wait().context("waiting for cargo build")?;
    if !status.success() {
        bail!("building {AGENT_PACKAGE} failed ({status})");
    }
    let binary = binary.with_context(|| {
        format!("cargo built {AGENT_PACKAGE} but reported no `{AGENT_BIN}` executable")
    })?;
    println!("xtask: {AGENT_BIN} binary: {}", binary.display());
    Ok(binary)
}

/// The `vaultfw` executable named by one line of cargo's JSON messages.
fn agent_executable(line: &str) -> Option<PathBuf> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-artifact" || msg["target"]["name"] != AGENT_BIN {
        return None;
    }
    msg["executable"].as_str().map(PathBuf::from)
}

/// Build, unit tests and the XDP program tests (BPF_PROG_TEST_RUN), then
/// the end-to-end tests in network namespaces — all as root, so no test is
/// skipped for want of privileges. Ends with one `summary: N passed, M
/// failed` line over every test binary.
pub fn test(extra_args: &[String]) -> Result<()> {
    require_root("the tests")?;
    let binary = build()?;
    let mut totals = TestCounts::default();
    println!("xtask: unit tests and XDP program tests (BPF_PROG_TEST_RUN)");
    let unit = run_tests(
        cargo_cmd().args([
            "test",
            "--no-fail-fast",
            "--package",
            "firewall-common",
            "--package",
            AGENT_PACKAGE,
            "--package",
            "xtask",
        ]),
        &mut totals,
    );
    if let Err(err) = &unit {
        eprintln!("xtask: unit tests failed: {err:#}; running the integration tests anyway");
    }
    println!("xtask: end-to-end tests (network namespaces, one test at a time)");
    let integration = run_tests(
        cargo_cmd()
            .args([
                "test",
                "--no-fail-fast",
                "--package",
                TESTS_PACKAGE,
                "--",
                "--test-threads=1",
            ])
            .args(extra_args)
            .env(VAULTFW_BIN_ENV, &binary),
        &mut totals,
    );
    println!(
        "summary: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    match (unit, integration) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(_), Ok(())) => bail!("unit tests failed (integration tests passed)"),
        (Ok(()), Err(err)) => Err(err.context("integration tests failed (unit tests passed)")),
        (Err(_), Err(err)) => Err(err.context("unit tests and integration tests failed")),
    }
}

/// Test counts summed over `test result:` lines.
#[derive(Default, Debug, PartialEq, Eq)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestCounts {
    /// Add the counts of a libtest `test result: ok. 3 passed; 0 failed;
    /// 1 ignored; ...` line; other lines are ignored.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Run a `cargo test` command, echoing its stdout and counting its results.
fn run_tests(cmd: &mut Command, totals: &mut TestCounts) -> Result<()> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the test output")?;
        println!("{line}");
        totals.add_line(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Build, then run the demo as root.
pub fn demo() -> Result<()> {
    let binary = build()?;
    require_root("the demo")?;
    run(cargo_cmd()
        .args([
            "run",
            "--quiet",
            "--package",
            TESTS_PACKAGE,
            "--bin",
            DEMO_BIN,
        ])
        .env(VAULTFW_BIN_ENV, &binary))
    .context("the demo failed")
}

fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "{what} need root (they create network namespaces and attach XDP programs): \
             run `sudo -E cargo xtask ...`"
        );
    }
    Ok(())
}

extern "C" fn ignore_signal(_: nix::libc::c_int) {}

/// Install a no-op SIGINT handler so xtask waits for its child to finish
/// its own cleanup instead of exiting at once.
pub fn keep_running_on_sigint() {
    let action = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    if let Err(err) = unsafe { sigaction(Signal::SIGINT, &action) } {
        eprintln!("xtask: warning: cannot install the SIGINT handler: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_result_lines_are_summed() {
        let mut totals = TestCounts::default();
        totals.add_line("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        totals.add_line(
            "test result: FAILED. 12 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        totals.add_line("test foo ... ok");
        totals.add_line("running 3 tests");
        assert_eq!(
            totals,
            TestCounts {
                passed: 15,
                failed: 2,
                ignored: 1
            }
        );
    }

    #[test]
    fn agent_executable_is_read_from_cargo_artifact_messages() {
        let line = r#"{"reason":"compiler-artifact","target":{"name":"vaultfw","kind":["bin"]},"executable":"/w/target/debug/vaultfw"}"#;
        assert_eq!(
            agent_executable(line),
            Some(PathBuf::from("/w/target/debug/vaultfw"))
        );
        let lib = r#"{"reason":"compiler-artifact","target":{"name":"vaultfw","kind":["lib"]},"executable":null}"#;
        assert_eq!(agent_executable(lib), None);
        let other = r#"{"reason":"compiler-artifact","target":{"name":"xtask"},"executable":"/x"}"#;
        assert_eq!(agent_executable(other), None);
        assert_eq!(agent_executable("not json"), None);
    }
}
