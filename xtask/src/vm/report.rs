//! A kernel's report, read from its serial console: the `VAULTFW-VM ...`
//! lines `vm/init` prints (their format is described at the top of that
//! script), plus what libtest printed in between — the tests that failed,
//! with their output, and the tests that skipped themselves
//! (`skipping: <feature> needs <version>`).

use std::collections::BTreeMap;

/// The marker `vm/init` starts its lines with.
const MARK: &str = "VAULTFW-VM ";
/// How many output lines of a failed test the report repeats.
const FAILURE_LINES: usize = 40;

/// Test counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

/// One `result` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryResult {
    pub name: String,
    pub exit: String,
    pub counts: Counts,
    pub seconds: u64,
}

impl BinaryResult {
    fn ok(&self) -> bool {
        self.exit == "0"
    }
}

/// A `module` or `check` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub ok: bool,
    pub error: Option<String>,
}

/// A test that printed `skipping: ...`, or one that failed with its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestNote {
    pub binary: String,
    pub test: String,
    pub lines: Vec<String>,
}

/// What one kernel's run showed.
#[derive(Debug, Default)]
pub struct KernelReport {
    expected: Vec<String>,
    kernel: BTreeMap<String, String>,
    modules: Vec<Status>,
    checks: Vec<Status>,
    results: Vec<BinaryResult>,
    summary: Option<BTreeMap<String, String>>,
    skips: Vec<TestNote>,
    failures: Vec<TestNote>,
}

impl KernelReport {
    /// Read the console `lines` of a run that should have run `expected`
    /// (test binary names, in order).
    pub fn parse(lines: &[String], expected: &[String]) -> KernelReport {
        let mut report = KernelReport {
            expected: expected.to_vec(),
            ..KernelReport::default()
        };
        let mut binary = String::new();
        // The test whose captured output is being printed, if any.
        let mut section: Option<String> = None;
        let mut outputs: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut failed_tests: Vec<(String, String)> = Vec::new();
        for line in lines {
            if let Some((kind, fields)) = marked(line) {
                section = None;
                match kind {
                    "kernel" => report.kernel = fields,
                    "module" => report.modules.push(status(&fields)),
                    "check" => report.checks.push(status(&fields)),
                    "begin" => binary = field(&fields, "binary"),
                    "result" => report.results.push(BinaryResult {
                        name: field(&fields, "binary"),
                        exit: field(&fields, "exit"),
                        counts: Counts {
                            passed: number(&fields, "passed"),
                            failed: number(&fields, "failed"),
                            ignored: number(&fields, "ignored"),
                        },
                        seconds: number(&fields, "seconds"),
                    }),
                    "summary" => report.summary = Some(fields),
                    _ => {}
                }
                continue;
            }
            let trimmed = line.trim();
            if let Some(test) = trimmed
                .strip_prefix("---- ")
                .and_then(|rest| rest.strip_suffix(" stdout ----"))
            {
                section = Some(test.to_owned());
                continue;
            }
            if matches!(trimmed, "successes:" | "failures:") || trimmed.starts_with("test result:")
            {
                section = None;
            }
            if let Some(test) = trimmed
                .strip_prefix("test ")
                .and_then(|rest| rest.strip_suffix(" ... FAILED"))
            {
                failed_tests.push((binary.clone(), test.to_owned()));
            }
            let test = section.clone().unwrap_or_default();
            if let Some(at) = line.find("skipping:") {
                report.skips.push(TestNote {
                    binary: binary.clone(),
                    test: test.clone(),
                    lines: vec![line[at..].to_owned()],
                });
            }
            if section.is_some() {
                outputs
                    .entry((binary.clone(), test))
                    .or_default()
                    .push(line.clone());
            }
        }
        for (binary, test) in failed_tests {
            let lines = outputs
                .remove(&(binary.clone(), test.clone()))
                .unwrap_or_default();
            report.failures.push(TestNote {
                binary,
                test,
                lines,
            });
        }
        report
    }

    /// One kernel's report from the reports of its guests, which ran
    /// disjoint shares of the binaries: results, skips and failures
    /// together; the kernel facts, modules and checks of the first guest
    /// that printed them (every guest boots the same kernel), with any
    /// module or check another guest saw fail; a summary only when every
    /// guest reached its own.
    pub fn merged(parts: Vec<KernelReport>) -> KernelReport {
        let mut merged = KernelReport::default();
        let mut summaries = 0;
        let guests = parts.len();
        for part in parts {
            merged.expected.extend(part.expected);
            if merged.kernel.is_empty() {
                merged.kernel = part.kernel;
            }
            for (all, seen) in [
                (&mut merged.modules, part.modules),
                (&mut merged.checks, part.checks),
            ] {
                if all.is_empty() {
                    *all = seen;
                } else {
                    all.extend(seen.into_iter().filter(|s| !s.ok));
                }
            }
            merged.results.extend(part.results);
            if part.summary.is_some() {
                summaries += 1;
                merged.summary = part.summary;
            }
            merged.skips.extend(part.skips);
            merged.failures.extend(part.failures);
        }
        if summaries != guests {
            merged.summary = None;
        }
        merged
    }

    /// The binaries' timings as [`super::timings`] reads them: a line per
    /// binary that reported, `<name>\t<tests>\t<seconds>`.
    pub fn timings(&self) -> String {
        self.results
            .iter()
            .map(|r| {
                let tests = r.counts.passed + r.counts.failed + r.counts.ignored;
                format!("{}\t{tests}\t{}\n", r.name, r.seconds)
            })
            .collect()
    }

    /// The guest's kernel release, if it got that far.
    pub fn release(&self) -> Option<&str> {
        self.kernel.get("release").map(String::as_str)
    }

    /// Counts summed over the binaries that reported.
    pub fn counts(&self) -> Counts {
        let mut total = Counts::default();
        for result in &self.results {
            total.passed += result.counts.passed;
            total.failed += result.counts.failed;
            total.ignored += result.counts.ignored;
        }
        total
    }

    /// Tests that printed `skipping: ...` (libtest counts them as passed).
    pub fn self_skipped(&self) -> usize {
        self.skips.len()
    }

    /// Binaries that were to run but printed no result line.
    fn unfinished(&self) -> Vec<&str> {
        self.expected
            .iter()
            .filter(|name| !self.results.iter().any(|r| &r.name == *name))
            .map(String::as_str)
            .collect()
    }

    /// Every binary reported exit 0 and the guest reached its summary.
    pub fn ok(&self) -> bool {
        self.summary.is_some()
            && self.unfinished().is_empty()
            && self.results.iter().all(BinaryResult::ok)
    }

    /// `9/9 test binaries ok`, or which failed and which never finished.
    pub fn binaries_line(&self) -> String {
        let ok = self.results.iter().filter(|r| r.ok()).count();
        let mut line = format!("{ok}/{} test binaries ok", self.expected.len());
        let failed: Vec<String> = self
            .results
            .iter()
            .filter(|r| !r.ok())
            .map(|r| format!("{} (exit {})", r.name, r.exit))
            .collect();
        if !failed.is_empty() {
            line.push_str(&format!("; failed: {}", failed.join(", ")));
        }
        let unfinished = self.unfinished();
        if !unfinished.is_empty() {
            line.push_str(&format!("; did not finish: {}", unfinished.join(", ")));
        }
        if self.summary.is_none() {
            line.push_str("; no summary line (the guest stopped early)");
        }
        line
    }

    /// The report's body: kernel facts, modules, checks, a line per binary,
    /// the tests that skipped themselves, and each failed test's output.
    pub fn print_details(&self) {
        let fact = |key: &str| self.kernel.get(key).map_or("?", String::as_str);
        println!(
            "  release {}, {} CPUs, BTF {}",
            fact("release"),
            fact("cpus"),
            fact("btf")
        );
        for status in self
            .modules
            .iter()
            .map(|m| ("module", m))
            .chain(self.checks.iter().map(|c| ("check", c)))
        {
            let (kind, s) = status;
            match &s.error {
                None if s.ok => println!("  {kind} {}: ok", s.name),
                error => println!(
                    "  {kind} {}: FAILED: {}",
                    s.name,
                    error.as_deref().unwrap_or("(no message)")
                ),
            }
        }
        for r in &self.results {
            println!(
                "  {:<44} exit {:>3}: {} passed, {} failed, {} ignored ({} s)",
                r.name, r.exit, r.counts.passed, r.counts.failed, r.counts.ignored, r.seconds
            );
        }
        for name in self.unfinished() {
            println!("  {name:<44} did not finish");
        }
        for skip in &self.skips {
            println!(
                "  skipped inside {} {}: {}",
                skip.binary,
                skip.test,
                skip.lines.join(" ")
            );
        }
        for failure in &self.failures {
            println!("  FAILED {} {}:", failure.binary, failure.test);
            let start = failure.lines.len().saturating_sub(FAILURE_LINES);
            if start > 0 {
                println!("    | ... ({start} earlier lines in the console log)");
            }
            for line in &failure.lines[start..] {
                println!("    | {line}");
            }
        }
    }
}

/// `VAULTFW-VM <kind> k=v ...` anywhere in a line (a kernel message may
/// precede it): the kind and the fields. `error=` takes the rest of the line.
fn marked(line: &str) -> Option<(&str, BTreeMap<String, String>)> {
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let (kind, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut fields = BTreeMap::new();
    while let Some((key, after)) = rest.trim_start().split_once('=') {
        if key == "error" {
            fields.insert(key.to_owned(), after.trim().to_owned());
            break;
        }
        let (value, next) = after.split_once(' ').unwrap_or((after, ""));
        fields.insert(key.to_owned(), value.to_owned());
        rest = next;
    }
    Some((kind.trim(), fields))
}

fn field(fields: &BTreeMap<String, String>, key: &str) -> String {
    fields.get(key).cloned().unwrap_or_default()
}

fn number(fields: &BTreeMap<String, String>, key: &str) -> u64 {
    fields.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn status(fields: &BTreeMap<String, String>) -> Status {
    Status {
        name: field(fields, "name"),
        ok: fields.get("status").is_some_and(|s| s == "ok"),
        error: fields.get("error").cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    const RUN: &str = "\
VAULTFW-VM kernel release=6.1.0-57-cloud-amd64 cpus=2 btf=yes
VAULTFW-VM module name=veth status=ok
VAULTFW-VM module name=8021q status=failed error=insmod: can't insert '8021q.ko': unknown symbol
VAULTFW-VM check name=vlan status=ok
VAULTFW-VM begin binary=a/lib/a
running 2 tests
test one ... ok
test two ... ok

successes:

---- two stdout ----
skipping: ring buffer needs 5.8

successes:
    one
    two

test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s
VAULTFW-VM result binary=a/lib/a exit=0 passed=2 failed=0 ignored=0 seconds=1
VAULTFW-VM begin binary=b/test/b
running 1 test
test loads_on_this_kernel ... FAILED

failures:

---- loads_on_this_kernel stdout ----
thread 'loads_on_this_kernel' panicked at tests/x.rs:1:1:
load failed: the kernel (6.1.0-57-cloud-amd64) refused the program: verifier log tail

failures:
    loads_on_this_kernel

test result: FAILED. 0 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.10s
[   12.000000] some kernel message VAULTFW-VM result binary=b/test/b exit=101 passed=0 failed=1 ignored=1 seconds=2
VAULTFW-VM summary release=6.1.0-57-cloud-amd64 binaries=2 failed_binaries=1 passed=2 failed=1 ignored=1 seconds=3
";

    #[test]
    fn result_lines_give_counts_per_binary_and_in_total() {
        let report = KernelReport::parse(&lines(RUN), &["a/lib/a".into(), "b/test/b".into()]);
        assert_eq!(report.release(), Some("6.1.0-57-cloud-amd64"));
        assert_eq!(report.results.len(), 2);
        assert_eq!(report.results[1].exit, "101");
        assert_eq!(
            report.counts(),
            Counts {
                passed: 2,
                failed: 1,
                ignored: 1
            }
        );
        assert!(!report.ok());
        assert_eq!(
            report.binaries_line(),
            "1/2 test binaries ok; failed: b/test/b (exit 101)"
        );
    }

    #[test]
    fn module_errors_keep_their_whole_message() {
        let report = KernelReport::parse(&lines(RUN), &[]);
        assert_eq!(report.modules.len(), 2);
        assert!(report.modules[0].ok);
        assert_eq!(
            report.modules[1].error.as_deref(),
            Some("insmod: can't insert '8021q.ko': unknown symbol")
        );
        assert_eq!(report.checks[0].name, "vlan");
        assert!(report.checks[0].ok);
    }

    #[test]
    fn skips_and_failures_are_attributed_to_their_test() {
        let report = KernelReport::parse(&lines(RUN), &[]);
        assert_eq!(
            report.skips,
            [TestNote {
                binary: "a/lib/a".into(),
                test: "two".into(),
                lines: vec!["skipping: ring buffer needs 5.8".into()],
            }]
        );
        assert_eq!(report.failures.len(), 1);
        let failure = &report.failures[0];
        assert_eq!(
            (failure.binary.as_str(), failure.test.as_str()),
            ("b/test/b", "loads_on_this_kernel")
        );
        assert!(
            failure
                .lines
                .iter()
                .any(|l| l.contains("verifier log tail")),
            "{failure:?}"
        );
    }

    #[test]
    fn a_binary_without_result_line_did_not_finish() {
        let cut: String = RUN.lines().take(22).map(|l| format!("{l}\n")).collect();
        let report = KernelReport::parse(&lines(&cut), &["a/lib/a".into(), "b/test/b".into()]);
        assert!(!report.ok());
        assert_eq!(
            report.binaries_line(),
            "1/2 test binaries ok; did not finish: b/test/b; no summary line (the guest stopped early)"
        );
    }

    #[test]
    fn a_clean_run_is_ok() {
        let text: String = RUN
            .lines()
            .take(20)
            .chain(["VAULTFW-VM summary release=r binaries=1 failed_binaries=0 passed=2 failed=0 ignored=0 seconds=1"])
            .map(|l| format!("{l}\n"))
            .collect();
        let report = KernelReport::parse(&lines(&text), &["a/lib/a".into()]);
        assert!(report.ok(), "{}", report.binaries_line());
    }

    #[test]
    fn guests_merge_into_one_report_that_is_ok_only_if_every_guest_finished() {
        let first = KernelReport::parse(
            &lines(
                "VAULTFW-VM kernel release=6.1 cpus=2 btf=yes\n\
                 VAULTFW-VM begin binary=a\n\
                 VAULTFW-VM result binary=a exit=0 passed=2 failed=0 ignored=0 seconds=1\n\
                 VAULTFW-VM summary release=6.1 binaries=1 failed_binaries=0 passed=2 failed=0 ignored=0 seconds=1",
            ),
            &["a".to_owned()],
        );
        let second = |finished: bool| {
            let mut text = String::from(
                "VAULTFW-VM kernel release=6.1 cpus=2 btf=yes\n\
                 VAULTFW-VM begin binary=b\n\
                 VAULTFW-VM result binary=b exit=0 passed=3 failed=0 ignored=1 seconds=2\n",
            );
            if finished {
                text.push_str("VAULTFW-VM summary release=6.1 binaries=1 failed_binaries=0 passed=3 failed=0 ignored=1 seconds=2\n");
            }
            KernelReport::parse(&lines(&text), &["b".to_owned()])
        };
        let both = KernelReport::merged(vec![first, second(true)]);
        assert!(both.ok());
        assert_eq!(both.release(), Some("6.1"));
        assert_eq!(
            both.counts(),
            Counts {
                passed: 5,
                failed: 0,
                ignored: 1
            }
        );
        assert_eq!(both.binaries_line(), "2/2 test binaries ok");
        let cut = KernelReport::merged(vec![
            second(false),
            KernelReport::parse(&lines("VAULTFW-VM summary release=6.1"), &[]),
        ]);
        assert!(!cut.ok(), "a guest without its summary fails the kernel");
        let modules = KernelReport::merged(vec![
            KernelReport::parse(&lines("VAULTFW-VM module name=veth status=ok"), &[]),
            KernelReport::parse(
                &lines(
                    "VAULTFW-VM module name=veth status=ok\n\
                     VAULTFW-VM module name=8021q status=failed error=no such file",
                ),
                &[],
            ),
        ]);
        let named: Vec<(&str, bool)> = modules
            .modules
            .iter()
            .map(|m| (m.name.as_str(), m.ok))
            .collect();
        assert_eq!(
            named,
            [("veth", true), ("8021q", false)],
            "a second guest's failure is kept"
        );
    }
}
