//! systemd's readiness protocol (`sd_notify`, for `Type=notify` and
//! `Type=notify-reload` units): `READY=1` once the filter is in force as
//! declared (every interface attached, the first generation served: see
//! [`super::health::readiness`]), `STATUS=` with the generation and the
//! interfaces, `RELOADING=1` around a reload of the policy file,
//! `STOPPING=1` on the way out, and watchdog pings from the daemon loop (so
//! a stuck loop stops pinging). Without `NOTIFY_SOCKET` every call does
//! nothing.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::control::replies::Readiness;

/// The daemon's side of the notify socket.
pub(super) struct Notifier {
    /// `NOTIFY_SOCKET` is set.
    enabled: bool,
    /// `READY=1` was sent.
    ready_sent: bool,
    /// The last `STATUS=` sent, to send only changes.
    status: String,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` from the environment.
    pub(super) fn from_env() -> Self {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            ready_sent: false,
            status: String::new(),
        }
    }

    /// Whether a service manager listens (callers skip computing what
    /// [`update`](Self::update) needs when none does).
    pub(super) fn enabled(&self) -> bool {
        self.enabled
    }

    /// The interval of watchdog pings: half of `WATCHDOG_USEC` (systemd's
    /// advice), when the service manager asks this process for pings.
    pub(super) fn watchdog_interval(&self) -> Option<Duration> {
        sd_notify::watchdog_enabled()
            .filter(|d| self.enabled && !d.is_zero())
            .map(|d| d / 2)
    }

    /// Reports the state after a start, a change or a tick: `STATUS=` when
    /// it changed, and `READY=1` the first time `readiness` holds (never
    /// before: a start that never gets every interface attached is never
    /// reported ready, and systemd's start timeout sees it).
    pub(super) fn update(&mut self, generation: u64, interfaces: &[String], readiness: &Readiness) {
        let status = status(generation, interfaces, readiness);
        let mut states = Vec::new();
        if status != self.status {
            states.push(NotifyState::Status(&status));
        }
        let becomes_ready = readiness.ready && !self.ready_sent;
        if becomes_ready {
            states.push(NotifyState::Ready);
        }
        if !states.is_empty() && self.send(&states) {
            self.ready_sent |= becomes_ready;
            self.status = status;
        }
    }

    /// `RELOADING=1` with `MONOTONIC_USEC` (which `Type=notify-reload`
    /// wants): a reload of the policy file begins; [`reloaded`](Self::reloaded)
    /// ends it.
    pub(super) fn reloading(&mut self) {
        if !self.enabled {
            return;
        }
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        self.send(&states);
    }

    /// Ends a reload. Once the daemon had been ready: `READY=1` whether the
    /// file was accepted or refused (the reload is over; `STATUS=` says how
    /// it went, and `/readyz` and `show --check` say whether the filter is
    /// in force as declared). Before that: as [`update`](Self::update).
    pub(super) fn reloaded(
        &mut self,
        generation: u64,
        interfaces: &[String],
        readiness: &Readiness,
    ) {
        if !self.enabled {
            return;
        }
        if self.ready_sent {
            let status = status(generation, interfaces, readiness);
            if self.send(&[NotifyState::Ready, NotifyState::Status(&status)]) {
                self.status = status;
            }
        } else {
            self.update(generation, interfaces, readiness);
        }
    }

    /// `STOPPING=1`.
    pub(super) fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// `WATCHDOG=1`: the daemon loop is turning.
    pub(super) fn ping(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// Sends `states`; a failure is logged (the service manager may be
    /// restarting) and the filter goes on.
    fn send(&self, states: &[NotifyState]) -> bool {
        if !self.enabled {
            return false;
        }
        match sd_notify::notify(states) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "telling the service manager the daemon's state failed");
                false
            }
        }
    }
}

/// The `STATUS=` line: `generation N, filtering a, b (2 interfaces)`, then
/// `; not ready: ...` with the reasons when not ready.
fn status(generation: u64, interfaces: &[String], readiness: &Readiness) -> String {
    let mut status = format!(
        "generation {generation}, filtering {} ({} interface{})",
        if interfaces.is_empty() {
            "nothing".to_owned()
        } else {
            interfaces.join(", ")
        },
        interfaces.len(),
        if interfaces.len() == 1 { "" } else { "s" }
    );
    if !readiness.ready {
        status.push_str("; not ready: ");
        status.push_str(&readiness.reasons.join("; "));
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_the_generation_the_interfaces_and_why_not_ready() {
        let ready = Readiness {
            ready: true,
            reasons: vec![],
        };
        assert_eq!(
            status(3, &["eth0".into(), "eth1".into()], &ready),
            "generation 3, filtering eth0, eth1 (2 interfaces)"
        );
        let unready = Readiness {
            ready: false,
            reasons: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            status(1, &["eth0".into()], &unready),
            "generation 1, filtering eth0 (1 interface); not ready: a; b"
        );
    }
}
