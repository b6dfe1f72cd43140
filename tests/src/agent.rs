//! The `vaultfw` process, as the tests drive it: [`Agent`] runs `vaultfw run`
//! inside a namespace and captures its JSON log; [`FinalStats`] is what it
//! reported at shutdown; [`PolicyFile`] writes a policy to a private temp
//! directory; [`vaultfw`] runs one-shot commands such as `validate`.
//!
//! The agent enters the namespace with `setns` on the network namespace only
//! (in `pre_exec`), not with `ip netns exec`, which would also give it a
//! private mount namespace and a remounted `/sys` (DESIGN.md section 5).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cleanup;
use crate::netns::NetNs;
use crate::stats::{FinalStats, Stream, log_message, parse_counters, render};

pub use crate::stats::{COUNTERS, COUNTERS_MESSAGE};

/// The log message that says the program is attached and the policy applied.
pub const READY_MESSAGE: &str = "filtering";
/// How long the agent may take to start filtering.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How far ahead a test sets an expiry or a `--confirm-within` deadline
/// when it checks what holds before it. The checks in between (a start, a
/// CLI round trip, a probe, a kill) take seconds on a `vm-test` guest
/// emulated without KVM; a deadline that passes first would fail the test
/// for the machine's speed, not for the daemon. Set it once the agent
/// serves, never before the start.
pub const DEADLINE_LEAD: Duration = Duration::from_secs(10);

/// [`DEADLINE_LEAD`] as a `--confirm-within` value.
pub fn confirm_within_lead() -> String {
    format!("{}s", DEADLINE_LEAD.as_secs())
}

/// The `vaultfw` binary: `$VAULTFW_BIN`, else `<workspace>/target/debug/vaultfw`.
pub fn vaultfw_bin() -> PathBuf {
    let path = std::env::var_os("VAULTFW_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/vaultfw"));
    assert!(
        path.is_file(),
        "vaultfw binary not found at {}: build it with `cargo xtask build`, or set VAULTFW_BIN \
         (`cargo xtask test` does both)",
        path.display()
    );
    path
}

/// Run `vaultfw ARGS` in this process's namespace (for commands that do not
/// touch the kernel, such as `validate`) and collect its output.
pub fn vaultfw(args: &[&str]) -> Output {
    Command::new(vaultfw_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("running vaultfw {args:?}: {err}"))
}

/// A policy file in a private temp directory, removed on drop.
pub struct PolicyFile {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    /// A tmpfs is mounted on `dir` (unmounted on drop).
    mounted: bool,
}

impl PolicyFile {
    /// Write `contents` to `<tempdir>/policy.toml`.
    pub fn new(contents: &str) -> Self {
        Self::named("policy.toml", contents)
    }

    /// Write `contents` to `<tempdir>/<file_name>`.
    pub fn named(file_name: &str, contents: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vaultfw-test-")
            .tempdir()
            .expect("creating a temp dir");
        cleanup::register_dir(dir.path());
        let path = dir.path().join(file_name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
        PolicyFile {
            dir: Some(dir),
            path,
            mounted: false,
        }
    }

    /// [`PolicyFile::new`] on a tmpfs of `size_kib` KiB mounted on its own
    /// directory (unmounted on drop), so a test can fill the file system
    /// that holds the policy (and the socket beside it).
    pub fn on_small_tmpfs(contents: &str, size_kib: u32) -> Self {
        let mut file = Self::new("");
        let dir = file.path.parent().expect("a directory").to_owned();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_kib}k,mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        file.mounted = true;
        file.write(contents);
        file
    }

    /// Fills the file system that holds the policy: writes a filler file
    /// beside it until the disk is full (ENOSPC).
    pub fn fill_disk(&self) {
        use std::io::Write;
        let filler = self.path.with_file_name("filler");
        let mut out = File::create(&filler).expect("creating the filler file");
        let block = vec![0u8; 4096];
        loop {
            match out.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", filler.display()),
            }
        }
        // Partial blocks too: not one byte is left.
        while out.write(&[0u8]).is_ok_and(|n| n == 1) {}
    }

    /// A placeholder that owns nothing (for moving a real one out).
    fn empty() -> Self {
        PolicyFile {
            dir: None,
            path: PathBuf::new(),
            mounted: false,
        }
    }

    /// Replaces the file's contents.
    pub fn write(&self, contents: &str) {
        std::fs::write(&self.path, contents)
            .unwrap_or_else(|err| panic!("writing {}: {err}", self.path.display()));
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's path as a string, for command lines.
    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for PolicyFile {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_owned();
            if self.mounted {
                // Lazily: a socket or file the agent still holds must not
                // keep the mount alive.
                let _ = Command::new("umount").arg("-l").arg(&path).status();
            }
            if let Err(err) = dir.close() {
                eprintln!("warning: removing {}: {err}", path.display());
            }
            cleanup::unregister_dir(&path);
        }
    }
}

/// How to run the agent beyond the policy.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// `--iface` values.
    pub ifaces: Vec<String>,
    /// `--stats-interval` in seconds.
    pub stats_interval_s: u64,
    /// Anything else (e.g. `--xdp-mode generic`).
    pub extra_args: Vec<String>,
    /// Run this program instead of [`vaultfw_bin`] (the harness's own tests
    /// use a stand-in).
    pub binary: Option<PathBuf>,
    /// `--on-exit`: tests say what a stop does (default `detach`).
    pub on_exit: &'static str,
    /// Directories the agent must not see: it runs in a mount namespace of
    /// its own with an empty tmpfs over each, as a systemd unit's
    /// PrivateTmp and ProtectHome hide `/tmp` and `/home` from the daemon
    /// (default none: the host's mounts).
    pub hidden_dirs: Vec<PathBuf>,
    /// Environment variables set for the agent (e.g. `NOTIFY_SOCKET`), on
    /// top of the test's own.
    pub env: Vec<(String, String)>,
}

impl AgentOptions {
    /// Attach to `iface`, counters every second.
    pub fn iface(iface: &str) -> Self {
        AgentOptions {
            ifaces: vec![iface.to_owned()],
            stats_interval_s: 1,
            extra_args: Vec::new(),
            binary: None,
            on_exit: "detach",
            hidden_dirs: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// The private paths of one agent: pins are global to the machine, so each
/// test's agent gets its own pin directory and control socket.
#[derive(Clone, Debug)]
pub struct AgentPaths {
    /// `--pin-dir`: `/sys/fs/bpf/<unique>`.
    pub pin_dir: PathBuf,
    /// `--socket`: inside the policy's temp directory.
    pub socket: PathBuf,
}

impl AgentPaths {
    /// Fresh paths; the socket lives beside `policy`.
    pub fn new(policy: &PolicyFile) -> Self {
        let pin_dir = Path::new("/sys/fs/bpf").join(crate::netns::unique_name("p"));
        cleanup::register_dir(&pin_dir);
        AgentPaths {
            pin_dir,
            socket: policy.path().with_file_name("control.sock"),
        }
    }

    /// `--pin-dir DIR --socket PATH`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--pin-dir".to_owned(),
            self.pin_dir.display().to_string(),
            "--socket".to_owned(),
            self.socket.display().to_string(),
        ]
    }

    /// Removes whatever is left of the pin directory (a test that kept the
    /// filter, or a killed agent): links first, which detaches.
    pub fn remove_pins(&self) {
        for sub in ["links", "maps"] {
            if let Ok(entries) = std::fs::read_dir(self.pin_dir.join(sub)) {
                for entry in entries.flatten() {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        cleanup::unregister_dir(&self.pin_dir);
    }
}

/// Pins a stopped agent left in force (after [`Agent::kill`] or
/// [`Agent::stop_keeping`]), removed when this guard drops — also when the
/// test panics before a new agent takes them over.
#[derive(Debug)]
pub struct LeftPins(pub AgentPaths);

impl Drop for LeftPins {
    fn drop(&mut self) {
        self.0.remove_pins();
    }
}

#[derive(Default)]
struct Captured {
    lines: Vec<(Stream, String)>,
    closed_streams: usize,
}

/// Output captured by the reader threads.
#[derive(Default)]
struct Capture {
    state: Mutex<Captured>,
    changed: Condvar,
}

impl Capture {
    fn lock(&self) -> MutexGuard<'_, Captured> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_stream(
        self: Arc<Self>,
        stream: Stream,
        pipe: impl Read + Send + 'static,
    ) -> JoinHandle<()> {
        std::thread::Builder::new()
            .name(format!("vaultfw-{stream:?}").to_lowercase())
            .spawn(move || {
                let reader = BufReader::new(pipe);
                for line in reader.split(b'\n') {
                    let Ok(line) = line else { break };
                    let line = String::from_utf8_lossy(&line).into_owned();
                    self.lock().lines.push((stream, line));
                    self.changed.notify_all();
                }
                self.lock().closed_streams += 1;
                self.changed.notify_all();
            })
            .expect("spawning an output reader")
    }

    /// Everything captured so far, interleaved, stderr lines marked.
    fn text(&self) -> String {
        let state = self.lock();
        render(&state.lines)
    }
}

/// `vaultfw run` inside a namespace. Killed on drop if still running.
pub struct Agent {
    child: Option<Child>,
    capture: Arc<Capture>,
    readers: Vec<JoinHandle<()>>,
    command_line: String,
    paths: AgentPaths,
    policy: PolicyFile,
}

impl Agent {
    /// `vaultfw run --iface IFACE --policy <policy> --stats-interval 1` in `ns`.
    pub fn start(ns: &NetNs, iface: &str, policy: &str) -> Self {
        Self::start_with(ns, policy, AgentOptions::iface(iface))
    }

    /// `vaultfw run` in `ns` with the given options.
    pub fn start_with(ns: &NetNs, policy: &str, options: AgentOptions) -> Self {
        let policy = PolicyFile::new(policy);
        let paths = AgentPaths::new(&policy);
        Self::spawn(ns, policy, paths, options)
    }

    /// `vaultfw run` in `ns` with an existing policy file and paths (a
    /// restart that adopts a previous agent's pins).
    pub fn spawn(ns: &NetNs, policy: PolicyFile, paths: AgentPaths, options: AgentOptions) -> Self {
        let mut args = vec!["run".to_owned()];
        for iface in &options.ifaces {
            args.extend(["--iface".to_owned(), iface.clone()]);
        }
        args.extend([
            "--policy".to_owned(),
            policy.path_str().to_owned(),
            "--stats-interval".to_owned(),
            options.stats_interval_s.to_string(),
        ]);
        args.extend(paths.args());
        args.extend(["--on-exit".to_owned(), options.on_exit.to_owned()]);
        args.extend(options.extra_args.iter().cloned());
        let binary = options.binary.clone().unwrap_or_else(vaultfw_bin);
        let mut cmd = agent_command(&binary, &args);
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        let command_line = format!(
            "{} {} (in netns {})",
            binary.display(),
            args.join(" "),
            ns.name()
        );
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn_in_namespaces(ns, cmd, &options.hidden_dirs)
            .unwrap_or_else(|err| panic!("starting {command_line}: {err}"));
        cleanup::register_pid(child.id() as i32);
        let capture = Arc::new(Capture::default());
        let readers = vec![
            capture
                .clone()
                .read_stream(Stream::Stdout, child.stdout.take().expect("piped")),
            capture
                .clone()
                .read_stream(Stream::Stderr, child.stderr.take().expect("piped")),
        ];
        Agent {
            child: Some(child),
            capture,
            readers,
            command_line,
            paths,
            policy,
        }
    }

    /// This agent's pin directory and socket.
    pub fn paths(&self) -> &AgentPaths {
        &self.paths
    }

    /// The policy file the agent runs with.
    pub fn policy(&self) -> &PolicyFile {
        &self.policy
    }

    /// Runs `vaultfw ARGS --socket <this agent's socket>` (a CLI verb
    /// talking to this daemon) and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        let socket = self.paths.socket.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--socket", socket.as_str()]);
        vaultfw(&all)
    }

    /// Stops the process with SIGKILL (no cleanup of its own: a crash) and
    /// hands back the policy file and paths, so a test can start another
    /// agent on the same pins or check what the crash left.
    pub fn kill(mut self) -> (PolicyFile, AgentPaths) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            cleanup::unregister_pid(child.id() as i32);
        }
        self.join_readers();
        self.into_parts()
    }

    /// SIGTERM, wait, and hand back the policy and paths (for an agent run
    /// with `on_exit = "keep"` whose pins a later agent adopts).
    pub fn stop_keeping(self) -> (FinalStats, PolicyFile, AgentPaths) {
        let (stats, rest) = self.stop_inner();
        let (policy, paths) = rest.into_parts();
        (stats, policy, paths)
    }

    fn into_parts(mut self) -> (PolicyFile, AgentPaths) {
        let policy = std::mem::replace(&mut self.policy, PolicyFile::empty());
        let paths = self.paths.clone();
        // The caller owns the pins now.
        self.paths.pin_dir = PathBuf::new();
        (policy, paths)
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Everything it printed so far (stderr lines marked `[stderr]`).
    pub fn output(&self) -> String {
        self.capture.text()
    }

    /// Wait until a stdout line says `"message":"filtering"`. Panics with the
    /// captured output if the agent exits first or takes longer than
    /// [`READY_TIMEOUT`].
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            {
                let state = self.capture.lock();
                if state.lines.iter().any(|(s, l)| {
                    *s == Stream::Stdout && log_message(l).as_deref() == Some(READY_MESSAGE)
                }) {
                    return;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    drop(state);
                    panic!(
                        "{} did not log \"message\":\"{READY_MESSAGE}\" within {READY_TIMEOUT:?}; \
                         output:\n{}",
                        self.command_line,
                        self.output()
                    );
                }
                let _ = self
                    .capture
                    .changed
                    .wait_timeout(state, left.min(Duration::from_millis(100)))
                    .unwrap_or_else(PoisonError::into_inner);
            }
            let child = self.child.as_mut().expect("agent is running");
            if let Ok(Some(status)) = child.try_wait() {
                cleanup::unregister_pid(child.id() as i32);
                self.join_readers();
                panic!(
                    "{} exited ({status}) before it was ready; output:\n{}",
                    self.command_line,
                    self.output()
                );
            }
        }
    }

    /// SIGTERM, wait for the exit, and return the counters of the last
    /// `"verdict counters"` line. Panics if it does not exit within
    /// [`STOP_TIMEOUT`], exits non-zero, or reported no counters.
    pub fn stop(self) -> FinalStats {
        self.stop_inner().0
    }

    fn stop_inner(mut self) -> (FinalStats, Agent) {
        let mut child = self.child.take().expect("agent is running");
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    cleanup::unregister_pid(pid.as_raw());
                    panic!(
                        "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM; output:\n{}",
                        self.command_line,
                        self.output()
                    );
                }
            }
        };
        cleanup::unregister_pid(pid.as_raw());
        self.join_readers();
        let output = self.output();
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM (expected 0); output:\n{output}",
            self.command_line
        );
        let lines = self.capture.lock().lines.clone();
        let stats = lines
            .iter()
            .rev()
            .filter(|(s, _)| *s == Stream::Stdout)
            .find_map(|(_, l)| parse_counters(l))
            .unwrap_or_else(|| {
                panic!(
                    "{} logged no \"{COUNTERS_MESSAGE}\" line; output:\n{output}",
                    self.command_line
                )
            });
        (FinalStats::new(stats.0, stats.1, status, lines), self)
    }

    /// Wait (bounded) until both output streams are closed.
    fn join_readers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut state = self.capture.lock();
        while state.closed_streams < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // A grandchild still holds the pipes; leave the readers be.
                return;
            }
            state = self
                .capture
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(state);
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// A position in an agent's output: [`Agent::wait_log`] looks only at what
/// the agent printed after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogMark(usize);

impl Agent {
    /// The current end of the captured output.
    pub fn log_mark(&self) -> LogMark {
        LogMark(self.capture.lock().lines.len())
    }

    /// Every stdout line that is a JSON object (the agent's log), parsed.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        json_lines(&self.capture.lock().lines, 0)
    }

    /// Waits until a JSON log line printed after `since` satisfies `pred`
    /// and returns it. Panics with `what` and the whole output when the
    /// agent's output ends (it exited) or `timeout` passes first.
    pub fn wait_log(
        &self,
        since: LogMark,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let mut state = self.capture.lock();
        loop {
            if let Some(found) = json_lines(&state.lines, since.0).into_iter().find(&pred) {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || state.closed_streams == 2 {
                let ended = if left.is_zero() {
                    format!("within {timeout:?}")
                } else {
                    "before its output ended".to_owned()
                };
                drop(state);
                panic!(
                    "{} did not log {what} {ended}; output:\n{}",
                    self.command_line,
                    self.output()
                );
            }
            state = self
                .capture
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// [`Agent::wait_log`] for a line whose `message` is `message`.
    pub fn wait_message(
        &self,
        since: LogMark,
        message: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        self.wait_log(
            since,
            &format!("\"message\":{message:?}"),
            timeout,
            |line| line["message"].as_str() == Some(message),
        )
    }

    /// Sends `signal` to the agent process.
    pub fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("agent is running");
        kill(Pid::from_raw(child.id() as i32), signal)
            .unwrap_or_else(|err| panic!("sending {signal} to {}: {err}", self.command_line));
    }

    /// Waits (bounded) for the agent to exit by itself — after `vaultfw
    /// detach`, or a failed start — and returns its status. Panics with the
    /// output if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("agent is running");
        let pid = child.id() as i32;
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => panic!(
                    "{} still running {timeout:?} later; output:\n{}",
                    self.command_line,
                    self.output()
                ),
                Err(err) => panic!("waiting for {}: {err}", self.command_line),
            }
        };
        self.child = None;
        cleanup::unregister_pid(pid);
        self.join_readers();
        status
    }
}

/// The JSON objects among the stdout lines from index `from` on.
fn json_lines(lines: &[(Stream, String)], from: usize) -> Vec<serde_json::Value> {
    lines
        .iter()
        .skip(from)
        .filter(|(s, _)| *s == Stream::Stdout)
        .filter_map(|(_, l)| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(serde_json::Value::is_object)
        .collect()
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            cleanup::unregister_pid(child.id() as i32);
        }
        if !self.paths.pin_dir.as_os_str().is_empty() {
            self.paths.remove_pins();
        }
    }
}

/// `BINARY ARGS` with stdin null, in its own process group: a Ctrl-C meant
/// for the test reaches the agent only through the harness's cleanup, which
/// stops it with SIGTERM so it detaches its program.
fn agent_command(binary: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(args).stdin(Stdio::null()).process_group(0);
    cmd
}

/// Spawn `cmd` in `ns`'s network namespace: `setns(CLONE_NEWNET)` in the
/// child before exec, so it keeps the host's mount namespace (and bpffs).
pub fn spawn_in_netns(ns: &NetNs, cmd: Command) -> std::io::Result<Child> {
    spawn_in_namespaces(ns, cmd, &[])
}

/// [`spawn_in_netns`], and when `hidden` names directories, in a mount
/// namespace of its own (private propagation, so nothing leaks to the
/// host's) with an empty tmpfs mounted over each: the child cannot see
/// what they hold, the way a systemd unit's PrivateTmp/ProtectHome hide
/// directories. Everything else (bpffs, the socket's directory) is the
/// host's. The namespace and its mounts go when the child exits.
pub fn spawn_in_namespaces(
    ns: &NetNs,
    mut cmd: Command,
    hidden: &[PathBuf],
) -> std::io::Result<Child> {
    let ns_file = File::open(ns.path())?;
    let fd = ns_file.as_raw_fd();
    // Built before the fork: the child may not allocate.
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL in a literal");
    let (root, tmpfs, options) = (c("/"), c("tmpfs"), c("mode=0700"));
    let hidden: Vec<std::ffi::CString> = hidden
        .iter()
        .map(|dir| {
            std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                .expect("hidden directory paths hold no NUL")
        })
        .collect();
    // SAFETY: between fork and exec the closure makes only syscalls
    // (async-signal-safe) on a descriptor the parent keeps open until spawn
    // returns (close-on-exec, so the agent does not inherit it) and on
    // C strings built before the fork, which outlive the spawn.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::setns(fd, libc::CLONE_NEWNET))?;
            if hidden.is_empty() {
                return Ok(());
            }
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for dir in &hidden {
                check(libc::mount(
                    tmpfs.as_ptr(),
                    dir.as_ptr(),
                    tmpfs.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    options.as_ptr().cast(),
                ))?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(ns_file);
    child
}

/// Run `vaultfw ARGS` inside `ns` to completion (bounded by `timeout`; a
/// process still running then is killed and this panics).
pub fn run_in_netns(ns: &NetNs, args: &[&str], timeout: Duration) -> Output {
    run_program_in_netns(ns, &vaultfw_bin(), args, timeout)
}

/// Run `PROGRAM ARGS` inside `ns` to completion, like [`run_in_netns`] (for
/// a wrapper such as `setpriv ... vaultfw run`).
pub fn run_program_in_netns(
    ns: &NetNs,
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let mut cmd = agent_command(program, &args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let command_line = format!(
        "{} {} (in netns {})",
        program.display(),
        args.join(" "),
        ns.name()
    );
    let mut child =
        spawn_in_netns(ns, cmd).unwrap_or_else(|err| panic!("starting {command_line}: {err}"));
    cleanup::register_pid(child.id() as i32);
    let capture = Arc::new(Capture::default());
    let readers = [
        capture
            .clone()
            .read_stream(Stream::Stdout, child.stdout.take().expect("piped")),
        capture
            .clone()
            .read_stream(Stream::Stderr, child.stderr.take().expect("piped")),
    ];
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                cleanup::unregister_pid(child.id() as i32);
                panic!(
                    "{command_line} still running after {timeout:?}; output:\n{}",
                    capture.text()
                );
            }
        }
    };
    cleanup::unregister_pid(child.id() as i32);
    for reader in readers {
        let _ = reader.join();
    }
    let state = capture.lock();
    let collect = |stream| {
        state
            .lines
            .iter()
            .filter(|(s, _)| *s == stream)
            .flat_map(|(_, l)| [l.as_bytes(), b"\n"].concat())
            .collect::<Vec<u8>>()
    };
    Output {
        status,
        stdout: collect(Stream::Stdout),
        stderr: collect(Stream::Stderr),
    }
}

/// Whether `ip -d link show dev IFACE` in `ns` shows an XDP program.
pub fn xdp_attached(ns: &NetNs, iface: &str) -> bool {
    ns.ip(&["-d", "link", "show", "dev", iface]).contains("xdp")
}
