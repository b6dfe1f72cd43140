//! A client that keeps connecting in the background ([`Prober`]): one TCP
//! handshake from a fixed source every `interval`, each with its own
//! timeout, every outcome recorded with its time. The tests that claim "not
//! one connection failed" while something happens to the daemon (a kill, a
//! restart, hundreds of policy swaps) run one across it.
//!
//! A probe only completes the handshake and closes: a completed handshake
//! proves the SYN passed the filter. With a timeout under the kernel's first
//! SYN retransmission (1 s), a dropped SYN is a failed probe, never a slow
//! success.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::NetNs;

/// A probe's timeout when every probe must succeed: one SYN, no
/// retransmission, and ample room for a busy machine.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(900);

/// What one probe came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The handshake completed.
    Established,
    /// No answer within the timeout (the SYN was dropped).
    TimedOut,
    /// RST: nothing listens.
    Refused,
    /// Anything else.
    Failed(String),
}

/// One probe.
#[derive(Clone, Debug)]
pub struct Probe {
    /// When it started.
    pub at: Instant,
    /// How long it took.
    pub took: Duration,
    /// What it came to.
    pub outcome: ProbeOutcome,
}

/// Every probe of a [`Prober`], in order.
#[derive(Debug)]
pub struct ProbeLog {
    /// The probes.
    pub probes: Vec<Probe>,
    src: Ipv4Addr,
    dst: SocketAddrV4,
}

impl ProbeLog {
    /// The probes that did not complete a handshake.
    pub fn failures(&self) -> Vec<&Probe> {
        self.probes
            .iter()
            .filter(|p| p.outcome != ProbeOutcome::Established)
            .collect()
    }

    /// Panics unless every probe completed its handshake, there were at
    /// least `min` of them, and they covered `from..until` (one started
    /// before `from`, one after `until`).
    pub fn assert_all_established(&self, min: usize, from: Instant, until: Instant) {
        let failures = self.failures();
        let start = self.probes.first().map(|p| p.at);
        let describe = |p: &Probe| {
            let offset = |t: Instant| {
                start.map_or(0.0, |s| t.saturating_duration_since(s).as_secs_f64() * 1e3)
            };
            format!(
                "  at +{:.0} ms (took {:?}): {:?}",
                offset(p.at),
                p.took,
                p.outcome
            )
        };
        assert!(
            failures.is_empty(),
            "{} of {} connections {} -> {} failed:\n{}",
            failures.len(),
            self.probes.len(),
            self.src,
            self.dst,
            failures
                .iter()
                .map(|p| describe(p))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            self.probes.len() >= min,
            "only {} probes {} -> {} (wanted at least {min})",
            self.probes.len(),
            self.src,
            self.dst
        );
        assert!(
            self.probes.first().is_some_and(|p| p.at <= from),
            "no probe started before the window began"
        );
        assert!(
            self.probes.last().is_some_and(|p| p.at >= until),
            "no probe started after the window ended"
        );
    }
}

struct Shared {
    stop: AtomicBool,
    count: Mutex<usize>,
    counted: Condvar,
    failed: AtomicUsize,
}

/// Connects from `src` to `dst` in the background until stopped.
pub struct Prober {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Vec<Probe>>>,
    src: Ipv4Addr,
    dst: SocketAddrV4,
}

impl Prober {
    /// Starts probing from `src` (an address of `ns`) to `dst`, one
    /// handshake every `interval` (back to back if one takes longer), each
    /// given `timeout`. Returns once the first probe has finished.
    pub fn start(
        ns: &NetNs,
        src: Ipv4Addr,
        dst: SocketAddrV4,
        interval: Duration,
        timeout: Duration,
    ) -> Self {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            count: Mutex::new(0),
            counted: Condvar::new(),
            failed: AtomicUsize::new(0),
        });
        let thread = {
            let shared = shared.clone();
            let ns_path = ns.path();
            std::thread::Builder::new()
                .name(format!("probe-{src}"))
                .spawn(move || {
                    enter_netns(&ns_path);
                    let mut probes = Vec::new();
                    while !shared.stop.load(Ordering::SeqCst) {
                        let at = Instant::now();
                        let outcome = handshake(src, dst, timeout);
                        if outcome != ProbeOutcome::Established {
                            shared.failed.fetch_add(1, Ordering::SeqCst);
                        }
                        probes.push(Probe {
                            at,
                            took: at.elapsed(),
                            outcome,
                        });
                        *shared.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                        shared.counted.notify_all();
                        // Pacing, not synchronisation.
                        if let Some(rest) = interval.checked_sub(at.elapsed()) {
                            std::thread::sleep(rest);
                        }
                    }
                    probes
                })
                .expect("spawning a prober thread")
        };
        let prober = Prober {
            shared,
            thread: Some(thread),
            src,
            dst,
        };
        prober.wait_probes(1, Duration::from_secs(10));
        prober
    }

    /// Probes finished so far.
    pub fn count(&self) -> usize {
        *self
            .shared
            .count
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Probes that failed so far.
    pub fn failed(&self) -> usize {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` probes have finished (panics after
    /// `timeout`).
    pub fn wait_probes(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut count = self
            .shared
            .count
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *count < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "only {} of {n} probes {} -> {} finished within {timeout:?}",
                *count,
                self.src,
                self.dst
            );
            count = self
                .shared
                .counted
                .wait_timeout(count, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until `n` more probes than now have finished.
    pub fn wait_more(&self, n: usize, timeout: Duration) {
        let now = self.count();
        self.wait_probes(now + n, timeout);
    }

    /// Stops after the probe in flight and returns every outcome.
    pub fn stop(mut self) -> ProbeLog {
        self.shared.stop.store(true, Ordering::SeqCst);
        let probes = match self.thread.take().expect("running").join() {
            Ok(probes) => probes,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        ProbeLog {
            probes,
            src: self.src,
            dst: self.dst,
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn enter_netns(path: &std::path::Path) {
    let file =
        std::fs::File::open(path).unwrap_or_else(|err| panic!("opening {}: {err}", path.display()));
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|err| panic!("setns({}): {err}", path.display()));
}

/// One handshake from `src` to `dst` within `timeout`, then close.
fn handshake(src: Ipv4Addr, dst: SocketAddrV4, timeout: Duration) -> ProbeOutcome {
    let attempt = || -> io::Result<()> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::from(SocketAddrV4::new(src, 0)).into())?;
        socket.connect_timeout(&SocketAddr::from(dst).into(), timeout)
    };
    match attempt() {
        Ok(()) => ProbeOutcome::Established,
        Err(err) if err.kind() == io::ErrorKind::TimedOut => ProbeOutcome::TimedOut,
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => ProbeOutcome::Refused,
        Err(err) => ProbeOutcome::Failed(err.to_string()),
    }
}
