//! Network namespaces: the [`NetNs`] guard (unique name, removed on drop),
//! `ip` helpers that panic with iproute2's message, and [`in_netns`], which
//! runs code inside a namespace without external tools.
//!
//! Names are `vfw<pid hex>-<counter hex><role>`: unique among live processes,
//! short enough to double as interface names (at most 15 bytes), and easy to
//! find if something leaks (`ip netns list | grep ^vfw`).

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cleanup;

/// Linux's limit on interface names (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The prefix of every name this process creates.
pub fn name_prefix() -> String {
    format!("vfw{:x}-", std::process::id())
}

/// A fresh name for a namespace or an interface; `role` is a short suffix
/// (`c`, `s`, ...) that tells a reader what it is.
pub fn unique_name(role: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}{n:x}{role}", name_prefix());
    assert!(
        name.len() <= MAX_IFNAME,
        "generated name {name:?} is longer than {MAX_IFNAME} bytes (role {role:?} too long?)"
    );
    name
}

/// Run `ip ARGS`; its stdout, or iproute2's error.
pub fn try_ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|err| format!("cannot run `ip` (is iproute2 installed?): {err}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Run `ip ARGS`; its stdout. Panics with iproute2's message on failure.
pub fn ip(args: &[&str]) -> String {
    try_ip(args).unwrap_or_else(|err| panic!("{err}"))
}

/// Panic unless we are root: namespaces and XDP need it.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the vaultfw integration tests create network namespaces and attach XDP programs: \
         run them as root (`cargo xtask test`)"
    );
}

/// A named network namespace (`ip netns add`), deleted on drop together with
/// its interfaces and any process still running in it.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Create a namespace with a unique name ending in `role`, with its
    /// loopback up.
    pub fn new(role: &str) -> Self {
        require_root();
        cleanup::clean_up_on_interrupt();
        let name = unique_name(role);
        cleanup::register_netns(&name);
        if let Err(err) = try_ip(&["netns", "add", &name]) {
            // Our pid is in the name, so an existing namespace of that name
            // was left by a dead process that had the same pid: replace it.
            if try_ip(&["netns", "delete", &name]).is_err() {
                cleanup::unregister_netns(&name);
                panic!("{err}");
            }
            if let Err(err) = try_ip(&["netns", "add", &name]) {
                cleanup::unregister_netns(&name);
                panic!("{err}");
            }
        }
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (as `ip netns list` shows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`, the file `setns` opens.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS`; panics with iproute2's message on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args).unwrap_or_else(|err| panic!("{err}"))
    }

    /// `ip -n NAME ARGS`; its stdout or iproute2's error.
    pub fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        try_ip(&all)
    }

    /// Write a sysctl inside the namespace (`key` as in `sysctl`, e.g.
    /// `net.ipv6.conf.all.disable_ipv6`).
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        in_netns(self, || {
            std::fs::write(&path, value)
                .unwrap_or_else(|err| panic!("writing {} = {value}: {err}", path.display()))
        });
    }

    /// Read a sysctl inside the namespace.
    pub fn read_sysctl(&self, key: &str) -> String {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        in_netns(self, || {
            std::fs::read_to_string(&path)
                .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
                .trim()
                .to_owned()
        })
    }

    /// Move the calling thread into this namespace (network namespace only;
    /// the thread keeps the process's mounts, so `/sys/fs/bpf` is the host's).
    pub(crate) fn enter_current_thread(&self) {
        let path = self.path();
        let file =
            File::open(&path).unwrap_or_else(|err| panic!("opening {}: {err}", path.display()));
        setns(&file, CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|err| panic!("setns({}): {err}", path.display()));
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        kill_processes_in(&self.name);
        if let Err(err) = try_ip(&["netns", "delete", &self.name]) {
            eprintln!("warning: cleaning up namespace {}: {err}", self.name);
        }
        cleanup::unregister_netns(&self.name);
    }
}

/// SIGKILL every process whose network namespace is `name` (never this one).
pub(crate) fn kill_processes_in(name: &str) {
    let Ok(pids) = try_ip(&["netns", "pids", name]) else {
        return;
    };
    let me = std::process::id() as i32;
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        if pid != me {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Run `f` on a fresh thread inside `ns` and return its result (a panic in
/// `f` is resumed here). Sockets created in `f` stay in `ns` wherever they
/// are used afterwards.
pub fn in_netns<T: Send, F: FnOnce() -> T + Send>(ns: &NetNs, f: F) -> T {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name(format!("in-{}", ns.name))
            .spawn_scoped(scope, || {
                ns.enter_current_thread();
                f()
            })
            .expect("spawning a thread");
        match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Names from `ip netns list` that this process created and still exist.
pub fn leftover_namespaces() -> Vec<String> {
    let prefix = name_prefix();
    ip(&["netns", "list"])
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// Whether an interface of that name exists in the initial namespace of
/// this process (a leaked veth end would show up here).
pub fn host_link_exists(name: &str) -> bool {
    try_ip(&["link", "show", "dev", name]).is_ok()
}
