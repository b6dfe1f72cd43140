//! The CLI verbs as an operator runs them against a daemon: one run of
//! `vaultfw VERB ... --output json`, its exit code, its output, and its JSON
//! document ([`CliOutput`]); [`cli_in_netns`] for verbs that read the kernel
//! themselves when no daemon answers (`show`, `detach`), which must run in
//! the namespace of the interfaces they report on.
//!
//! Exit codes are the README's ([`exit`]).

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{Agent, AgentPaths, READY_TIMEOUT, run_in_netns};
use crate::netns::NetNs;

/// The CLI's exit codes (README "Exit codes").
pub mod exit {
    /// Success (an idempotent no-op included).
    pub const OK: i32 = 0;
    /// Invalid input, or a rule that does not exist.
    pub const INVALID_INPUT: i32 = 2;
    /// No daemon listens on the socket.
    pub const NOT_RUNNING: i32 = 3;
    /// The kernel refused.
    pub const KERNEL_REFUSED: i32 = 4;
    /// `--if-generation` is stale, or an apply awaits confirmation.
    pub const CONFLICT: i32 = 5;
}

/// How long a one-shot CLI command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Verbs that also take `--pin-dir` (they work without a daemon).
const PIN_DIR_VERBS: [&str; 3] = ["show", "stats", "detach"];

/// One run of a CLI verb.
#[derive(Debug)]
pub struct CliOutput {
    /// The arguments, for messages.
    pub args: Vec<String>,
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// Wraps a finished process.
    pub fn new(args: Vec<String>, output: Output) -> Self {
        CliOutput {
            args,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The command, its exit code and its output, for assertion messages.
    pub fn context(&self) -> String {
        format!(
            "vaultfw {}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    /// Stdout parsed as one JSON document; panics with the context when it
    /// is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}); {}", self.context()))
    }

    /// Panics unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code; {}",
            self.context()
        );
        self
    }

    /// Panics unless it exited 0; returns the JSON document.
    pub fn ok(&self) -> Value {
        self.expect_code(exit::OK).json()
    }

    /// The error message of a refused request: `error.message` of the JSON
    /// document when there is one, else stderr.
    pub fn error_message(&self) -> String {
        serde_json::from_str::<Value>(&self.stdout)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| self.stderr.clone())
    }
}

/// `ARGS --output json --socket S` (and `--pin-dir P` for the verbs that
/// take it) for `paths`.
fn with_paths(args: &[&str], paths: &AgentPaths) -> Vec<String> {
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    if !args.contains(&"--output") {
        all.extend(["--output".to_owned(), "json".to_owned()]);
    }
    all.extend(["--socket".to_owned(), paths.socket.display().to_string()]);
    if args
        .first()
        .is_some_and(|verb| PIN_DIR_VERBS.contains(verb))
    {
        all.extend(["--pin-dir".to_owned(), paths.pin_dir.display().to_string()]);
    }
    all
}

/// Runs `vaultfw ARGS --output json` against `paths` inside `ns` (where the
/// interfaces are visible, for `show` and `detach` without a daemon).
pub fn cli_in_netns(ns: &NetNs, paths: &AgentPaths, args: &[&str]) -> CliOutput {
    let all = with_paths(args, paths);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    CliOutput::new(all.clone(), run_in_netns(ns, &refs, CLI_TIMEOUT))
}

impl Agent {
    /// Runs `vaultfw ARGS --output json` against this agent's socket (and
    /// pin directory, for `show`, `stats`, `detach`).
    pub fn cli_json(&self, args: &[&str]) -> CliOutput {
        let all = with_paths(args, self.paths());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        CliOutput::new(all.clone(), crate::agent::vaultfw(&refs))
    }

    /// The packets the kernel counted for IP rule `rule` (as `network-rule
    /// list` shows it: `a.b.c.d/len`, a /32 bare); panics when it is not
    /// listed.
    pub fn rule_packets(&self, rule: &str) -> u64 {
        let list = self.cli_json(&["network-rule", "list"]).ok();
        list["ip_rules"]
            .as_array()
            .and_then(|rules| rules.iter().find(|r| r["rule"] == rule))
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or_else(|| panic!("rule {rule} not listed: {list}"))
    }

    /// `vaultfw show --output json`, which must succeed.
    pub fn show(&self) -> Value {
        self.cli_json(&["show"]).ok()
    }

    /// The generation the daemon says the kernel serves.
    pub fn generation(&self) -> u64 {
        let show = self.show();
        show["generation"]
            .as_u64()
            .unwrap_or_else(|| panic!("show has no generation: {show:#}"))
    }

    /// `vaultfw stats --output json`: counter name → total.
    pub fn counters(&self) -> serde_json::Map<String, Value> {
        let stats = self.cli_json(&["stats"]).ok();
        stats["counters"]
            .as_object()
            .cloned()
            .unwrap_or_else(|| panic!("stats has no counters object: {stats:#}"))
    }

    /// One counter from `vaultfw stats`.
    pub fn counter(&self, name: &str) -> u64 {
        let counters = self.counters();
        counters
            .get(name)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("stats has no counter {name:?}: {counters:?}"))
    }

    /// Waits until the daemon answers `show` on its socket: its command loop
    /// runs (signal handlers, file watch and socket included). Panics after
    /// [`READY_TIMEOUT`].
    pub fn wait_serving(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let show = self.cli_json(&["show"]);
            if show.code == Some(exit::OK) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon does not answer on {} within {READY_TIMEOUT:?}; last try: {}\nagent output:\n{}",
                self.paths().socket.display(),
                show.context(),
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
