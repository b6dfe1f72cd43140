//! What the guest runs, built on the host: `vaultfw` (as `cargo xtask build`
//! builds it) and the test executables of the packages `cargo xtask test`
//! runs, found in cargo's JSON messages (`cargo test --no-run`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::bootstrap::cargo;

/// The packages whose tests run in the guest, in the order they run (unit
/// and BPF_PROG_TEST_RUN tests first, then end to end, as on the host).
const PACKAGES: &[&str] = &["firewall-common", "firewall-agent", "vaultfw-tests"];
/// The same `cargo test` package sets as `cargo xtask test` (tasks.rs), so
/// features unify the same way and the host suite's build is reused as is.
/// xtask's own tests are host tooling: built with its set, never run.
const BUILDS: &[&[&str]] = &[
    &["firewall-common", "firewall-agent", "xtask"],
    &["vaultfw-tests"],
];

/// One test executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBinary {
    /// `<package>/<kind>/<target>`, e.g. `vaultfw-tests/test/harness`.
    pub name: String,
    /// The package's directory: cargo runs tests there, so the guest does too.
    pub package_dir: PathBuf,
    /// The executable on the host.
    pub path: PathBuf,
}

/// Everything built for the guest.
#[derive(Debug)]
pub struct Payload {
    pub vaultfw: PathBuf,
    pub tests: Vec<TestBinary>,
    /// The workspace's binaries as the tests' builds left them: integration
    /// tests reach them through `CARGO_BIN_EXE_<name>`, a host path.
    pub bins: Vec<PathBuf>,
}

/// Build `vaultfw` and the test executables.
pub fn build(root: &Path) -> Result<Payload> {
    let vaultfw = crate::tasks::build()?;
    println!(
        "xtask: vm-test: building the test binaries ({})",
        PACKAGES.join(", ")
    );
    let (mut tests, mut bins) = (Vec::new(), Vec::new());
    for packages in BUILDS {
        let (t, b) = build_tests(root, packages)?;
        tests.extend(t);
        bins.extend(b);
    }
    bins.sort();
    bins.dedup();
    tests.retain(|t| {
        PACKAGES
            .iter()
            .any(|p| t.name.starts_with(&format!("{p}/")))
    });
    tests.sort_by_key(|t| run_order(&t.name));
    tests.dedup_by(|a, b| a.name == b.name);
    if tests.is_empty() {
        bail!("cargo built no test executable for {}", PACKAGES.join(", "));
    }
    Ok(Payload {
        vaultfw,
        tests,
        bins,
    })
}

/// `cargo test --no-run` for `packages`; the test executables and the
/// binaries it reports.
fn build_tests(root: &Path, packages: &[&str]) -> Result<(Vec<TestBinary>, Vec<PathBuf>)> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root).args([
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    for package in packages {
        cmd.args(["--package", package]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (mut tests, mut bins) = (Vec::new(), Vec::new());
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        if let Some(test) = test_executable(&line) {
            tests.push(test);
        } else if let Some(bin) = bin_executable(&line) {
            bins.push(bin);
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!(
            "building the test binaries of {} failed ({status})",
            packages.join(", ")
        );
    }
    Ok((tests, bins))
}

/// Packages in [`PACKAGES`] order; in a package the library, then the
/// binaries, then the integration tests, each by name.
fn run_order(name: &str) -> (usize, usize, String) {
    let mut parts = name.splitn(3, '/');
    let package = parts.next().unwrap_or_default();
    let kind = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let package_rank = PACKAGES
        .iter()
        .position(|p| *p == package)
        .unwrap_or(PACKAGES.len());
    let kind_rank = ["lib", "bin", "test"]
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(3);
    (package_rank, kind_rank, target.to_owned())
}

/// The test executable named by one line of cargo's JSON messages.
fn test_executable(line: &str) -> Option<TestBinary> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != true {
        return None;
    }
    let path = PathBuf::from(msg["executable"].as_str()?);
    let package = package_name(msg["package_id"].as_str()?)?;
    let kind = msg["target"]["kind"][0].as_str()?;
    let target = msg["target"]["name"].as_str()?;
    let package_dir = Path::new(msg["manifest_path"].as_str()?)
        .parent()?
        .to_owned();
    Some(TestBinary {
        name: format!("{package}/{kind}/{target}"),
        package_dir,
        path,
    })
}

/// The (non-test) binary executable named by one line of cargo's messages.
fn bin_executable(line: &str) -> Option<PathBuf> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    let is_bin = msg["target"]["kind"].as_array()?.iter().any(|k| k == "bin");
    if msg["reason"] != "compiler-artifact" || msg["profile"]["test"] != false || !is_bin {
        return None;
    }
    msg["executable"].as_str().map(PathBuf::from)
}

/// A package's name from its id: `path+file:///w/tests#vaultfw-tests@0.1.0`
/// (`…/firewall-agent#0.1.0` when the name is the directory's), or the
/// older `name 0.1.0 (path+file:///…)`.
fn package_name(id: &str) -> Option<String> {
    if let Some((url, fragment)) = id.rsplit_once('#') {
        return match fragment.split_once('@') {
            Some((name, _)) => Some(name.to_owned()),
            None => url.rsplit('/').next().map(str::to_owned),
        };
    }
    id.split_whitespace().next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_executables_are_read_from_cargo_artifact_messages() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#vaultfw-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"name":"harness"},"profile":{"test":true},"executable":"/w/target/debug/deps/harness-1f"}"#;
        assert_eq!(
            test_executable(line),
            Some(TestBinary {
                name: "vaultfw-tests/test/harness".into(),
                package_dir: "/w/tests".into(),
                path: "/w/target/debug/deps/harness-1f".into(),
            })
        );
        let not_test = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/firewall-agent#vaultfw@0.1.0","manifest_path":"/w/firewall-agent/Cargo.toml","target":{"kind":["bin"],"name":"vaultfw"},"profile":{"test":false},"executable":"/w/target/debug/vaultfw"}"#;
        assert_eq!(test_executable(not_test), None);
        assert_eq!(
            bin_executable(not_test),
            Some(PathBuf::from("/w/target/debug/vaultfw"))
        );
        assert_eq!(bin_executable(line), None);
        assert_eq!(test_executable(r#"{"reason":"build-finished"}"#), None);
    }

    #[test]
    fn package_names_come_from_both_package_id_forms() {
        assert_eq!(
            package_name("path+file:///w/tests#vaultfw-tests@0.1.0").as_deref(),
            Some("vaultfw-tests")
        );
        assert_eq!(
            package_name("path+file:///w/firewall-common#0.1.0").as_deref(),
            Some("firewall-common")
        );
        assert_eq!(
            package_name("firewall-common 0.1.0 (path+file:///w/firewall-common)").as_deref(),
            Some("firewall-common")
        );
    }

    #[test]
    fn unit_tests_run_before_end_to_end_tests() {
        let mut names = vec![
            "vaultfw-tests/test/harness",
            "firewall-agent/test/xdp_program",
            "firewall-agent/lib/vaultfw",
            "firewall-common/lib/firewall_common",
            "firewall-agent/bin/vaultfw",
        ];
        names.sort_by_key(|n| run_order(n));
        assert_eq!(
            names,
            [
                "firewall-common/lib/firewall_common",
                "firewall-agent/lib/vaultfw",
                "firewall-agent/bin/vaultfw",
                "firewall-agent/test/xdp_program",
                "vaultfw-tests/test/harness",
            ]
        );
    }
}
