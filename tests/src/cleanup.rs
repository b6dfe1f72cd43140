//! A process-wide registry of what the harness has created and not yet
//! removed (namespaces, agent processes, temp directories), so a Ctrl-C
//! handler can remove it all: the guards' `Drop` does not run when the process
//! exits from a signal handler. Guards register on creation and deregister
//! when they have cleaned up after themselves.
//!
//! Once [`cleanup_everything`] has started, a thread that tries to register
//! something new parks forever instead of creating it: the process is about
//! to exit, and nothing may be created behind the cleanup's back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

#[derive(Default)]
struct Registry {
    shutting_down: bool,
    namespaces: Vec<String>,
    pids: Vec<i32>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    shutting_down: false,
    namespaces: Vec::new(),
    pids: Vec::new(),
    dirs: Vec::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lock the registry for a registration; parks the thread forever if the
/// process is shutting down.
fn registering() -> MutexGuard<'static, Registry> {
    let reg = registry();
    if reg.shutting_down {
        drop(reg);
        loop {
            std::thread::park();
        }
    }
    reg
}

pub(crate) fn register_netns(name: &str) {
    registering().namespaces.push(name.to_owned());
}

pub(crate) fn unregister_netns(name: &str) {
    registry().namespaces.retain(|n| n != name);
}

pub(crate) fn register_pid(pid: i32) {
    registering().pids.push(pid);
}

pub(crate) fn unregister_pid(pid: i32) {
    registry().pids.retain(|p| *p != pid);
}

pub(crate) fn register_dir(dir: &Path) {
    registering().dirs.push(dir.to_owned());
}

pub(crate) fn unregister_dir(dir: &Path) {
    registry().dirs.retain(|d| d != dir);
}

/// Stop every registered agent (SIGTERM, so it detaches its program; SIGKILL
/// after 5 s), delete every registered namespace and temp directory. For a
/// signal handler that exits the process right after; returns what it did.
pub fn cleanup_everything() -> Vec<String> {
    let mut reg = registry();
    reg.shutting_down = true;
    let mut done = Vec::new();
    for &pid in &reg.pids {
        done.push(stop_process(pid));
    }
    reg.pids.clear();
    for name in &reg.namespaces {
        crate::netns::kill_processes_in(name);
        let out = Command::new("ip").args(["netns", "delete", name]).output();
        match out {
            Ok(o) if o.status.success() => done.push(format!("deleted namespace {name}")),
            Ok(o) => done.push(format!(
                "deleting namespace {name} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(err) => done.push(format!("deleting namespace {name} failed: {err}")),
        }
    }
    reg.namespaces.clear();
    for dir in &reg.dirs {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => done.push(format!("removed {}", dir.display())),
            Err(err) => done.push(format!("removing {} failed: {err}", dir.display())),
        }
    }
    reg.dirs.clear();
    done
}

/// SIGTERM, wait up to 5 s (reaping it: it is our child), then SIGKILL.
fn stop_process(pid: i32) -> String {
    let pid = Pid::from_raw(pid);
    if kill(pid, Signal::SIGTERM).is_err() {
        return format!("agent {pid} had already exited");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(20)),
            Ok(status) => return format!("stopped agent {pid}: {status:?}"),
            // Not our child (or already reaped elsewhere): it is gone when
            // signal 0 fails.
            Err(_) if kill(pid, None).is_err() => return format!("stopped agent {pid}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
    format!("killed agent {pid} (no exit 5 s after SIGTERM)")
}

/// Makes Ctrl-C (SIGINT) or SIGTERM of a test binary remove everything the
/// harness created before the process exits: a killed test process runs no
/// `Drop`. Installed once, on the first namespace; a process that set its
/// own handler (the demo) keeps it.
pub fn clean_up_on_interrupt() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = ctrlc::try_set_handler(|| {
            for line in cleanup_everything() {
                eprintln!("interrupted: {line}");
            }
            std::process::exit(130);
        });
    });
}
