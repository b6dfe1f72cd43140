//! Fault injection: the daemon is killed with
//! SIGKILL at random points of each way the served policy changes — a
//! start (maps migrating to new `limits` included), an `apply`, an `apply
//! --confirm-within` and its confirm or its rollback, a rule expiry, an
//! interface deleted or re-created, a `network-rule` add or remove — 230
//! times in all (35 per path, and 10 each for the two deadline tests),
//! under traffic.
//!
//! After each kill, with no daemon, the pinned filter alone must serve
//! what was declared: a change reaches the kernel only once the policy
//! file holds it (the pins hold the previous generation or the next one,
//! the next one only if the file declares it), and a deadline falls due
//! on time (an unconfirmed apply rolls back, an expired rule stops
//! admitting). Then a new daemon starts on the same pins and policy file,
//! and real connections prove that the kernel enforces what the file
//! declares on both filtered interfaces (see `run::Run::verify`). Probes
//! running through the whole test prove that no allowed connection failed
//! and no denied source got in, at any moment, daemon or not.
//!
//! The kill points are drawn from a seeded schedule (see `schedule`; the
//! seed is printed, `VAULTFW_FAULT_SEED` replays it), uniformly over a
//! window that covers the whole operation: 1.5 times what it takes in a
//! debug build on a 2-core machine (measured: a start 160–320 ms, a CLI
//! change 5–25 ms from the command's launch, an expiry 5 ms from its time,
//! a link deleted and created again 60–90 ms). The outcome must not depend
//! on where a kill lands: each invariant holds at every point.
//!
//! What is declared: the policy file, as the loader reads it now; for an
//! apply awaiting confirmation, the applied policy until its deadline and
//! the previous one after it. After a restart no apply can be confirmed any
//! more, so the file is what must be served (once the deadline passed, if
//! the daemon still reports one).

mod fault_injection {
    pub mod host;
    pub mod run;
    pub mod schedule;
}

use std::time::{Duration, Instant, SystemTime};

use fault_injection::host::{Declared, LIMITS, SWITCHED, Spec, Switched};
use fault_injection::run::{Probes, Run};
use vaultfw_tests::PolicyFile;
use vaultfw_tests::cli::exit;

/// Kills per path: 6 paths × 35, and the deadline tests' 2 × 10: 230.
const KILLS_PER_PATH: usize = 35;
/// Kills per path of the tests that wait for deadlines with no daemon.
const DEADLINE_KILLS: usize = 10;

/// A start (spawn to answering on the socket; a migration included).
const START_TAKES: Duration = Duration::from_millis(250);
/// A CLI change, from launching the command to its answer.
const CLI_TAKES: Duration = Duration::from_millis(20);
/// The daemon's expiry (file, then kernel) from the rule's time.
const EXPIRY_TAKES: Duration = Duration::from_millis(20);
/// The private link deleted, and the daemon following.
const DELETE_TAKES: Duration = Duration::from_millis(30);
/// The private link deleted and created again, and the daemon following.
const RECREATE_TAKES: Duration = Duration::from_millis(90);
/// How far ahead of its time an expiring rule is put in force.
const EXPIRY_LEAD: Duration = Duration::from_millis(700);
/// `--confirm-within` of the applies that must roll back.
const CONFIRM_WITHIN: Duration = Duration::from_secs(1);
/// How long after its deadline the kernel alone must have rolled back (or
/// expired a rule): the clock conversion, a busy machine.
const KERNEL_DEADLINE_SLACK: Duration = Duration::from_millis(500);

/// The window a kill is drawn from: 1.5 times the operation.
fn window(takes: Duration) -> Duration {
    takes * 3 / 2
}

/// The policy files an apply sends: the base and the alternate policy.
struct Applied {
    base: PolicyFile,
    alternate: PolicyFile,
}

impl Applied {
    fn new(run: &Run) -> Self {
        Applied {
            base: PolicyFile::named("base.toml", &run.host.policy(&Spec::BASE)),
            alternate: PolicyFile::named("alternate.toml", &run.host.policy(&Spec::ALTERNATE)),
        }
    }

    /// The one of the two the policy file does not declare now.
    fn other(&self, declared: &Declared) -> &PolicyFile {
        if declared.allows(SWITCHED) {
            &self.base
        } else {
            &self.alternate
        }
    }
}

/// Sleeps until `at` (at once if it passed).
fn sleep_until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

/// `at` (wall clock) as an instant of the monotonic clock.
fn instant_of(at: SystemTime) -> Instant {
    let now = (Instant::now(), SystemTime::now());
    match at.duration_since(now.1) {
        Ok(ahead) => now.0 + ahead,
        Err(behind) => now.0 - behind.duration(),
    }
}

/// After a kill during a change that toggles the rule for [`SWITCHED`]
/// (allowed `before` it, from `generation`): the pins hold that generation
/// or the next one — the next one only once the policy file declares the
/// change (declared first, then enforced) — and the kernel, with no
/// daemon, enforces the one they hold.
fn check_declared_first(run: &Run, generation: u64, before: bool) {
    let pinned = run.pinned_generation().expect("the pins hold a generation");
    let served = if pinned == generation {
        before
    } else {
        assert_eq!(
            pinned,
            generation + 1,
            "{}: the pinned generation after one change",
            run.label()
        );
        assert_eq!(
            run.declared().allows(SWITCHED),
            !before,
            "{}: the kernel serves generation {pinned}, which the policy file does not declare",
            run.label()
        );
        !before
    };
    run.verify_without_agent(Some(served), &format!("the pins at generation {pinned}"));
}

/// Panics unless the policy file declares what `wanted` does (after a
/// change the daemon acknowledged, or one it must not have written).
fn assert_declares(run: &Run, wanted: &Declared, why: &str) {
    let declared = run.declared();
    assert_eq!(
        declared.policy,
        wanted.policy,
        "{}: {why}: the policy file does not declare it",
        run.label()
    );
}

#[test]
fn killed_starts_and_map_migrations_restart_into_the_declared_policy() {
    let mut run = Run::new("start", Probes::BothInterfaces);
    for i in 0..KILLS_PER_PATH {
        // The file changes while no daemon runs (or not), then a start is
        // killed part-way.
        let generation = run.agent().generation();
        run.kill(false);
        let old = Spec::of(&run.declared());
        let mut spec = old;
        let what = match run.rng.below(3) {
            0 => "start on an unchanged policy (pins adopted)",
            1 => {
                spec.switched = toggled(spec.switched);
                "start on a changed policy (a new generation)"
            }
            _ => {
                spec.limits = LIMITS[usize::from(spec.limits == LIMITS[0])];
                if run.rng.one_in(2) {
                    spec.switched = toggled(spec.switched);
                }
                "start on new limits (every map migrates)"
            }
        };
        run.write_policy(&spec);
        let delay = run.rng.up_to(window(START_TAKES));
        run.fault(i, what, delay, "`vaultfw run` was spawned");
        run.spawn();
        std::thread::sleep(delay);
        run.kill(true);
        let (was, now) = (allows(old.switched), allows(spec.switched));
        let served = if was == now {
            Some(now)
        } else if spec.limits == old.limits {
            // The generation the pins hold says which: a start flips once.
            let pinned = run.pinned_generation().expect("the pins hold a generation");
            assert!(
                pinned == generation || pinned == generation + 1,
                "{}: the pins hold generation {pinned} after one start from {generation}",
                run.label()
            );
            Some(if pinned == generation { was } else { now })
        } else {
            // A killed migration may have moved some links to new maps
            // only: either policy, per interface, until the restart.
            None
        };
        run.verify_without_agent(served, "after a killed start");
        run.restart();
        run.verify();
    }
    run.finish(KILLS_PER_PATH);
}

/// Whether a policy with this rule allows [`SWITCHED`] (now).
fn allows(switched: Switched) -> bool {
    !matches!(switched, Switched::Absent)
}

fn toggled(switched: Switched) -> Switched {
    match switched {
        Switched::Absent => Switched::Present,
        Switched::Present | Switched::Until(_) => Switched::Absent,
    }
}

#[test]
fn killed_applies_restart_into_the_declared_policy() {
    let mut run = Run::new("apply", Probes::BothInterfaces);
    let applied = Applied::new(&run);
    for i in 0..KILLS_PER_PATH {
        let before = run.declared();
        let target = applied.other(&before);
        let generation = run.agent().generation();
        let delay = run.rng.up_to(window(CLI_TAKES));
        run.fault(i, "`vaultfw apply`", delay, "the command was launched");
        let cli = run.spawn_cli(&["apply", target.path_str()]);
        std::thread::sleep(delay);
        run.kill(true);
        let out = run.finish_cli(cli);
        if out.code == Some(exit::OK) {
            assert_declares(
                &run,
                &Declared::read(target.path()),
                "an acknowledged apply",
            );
        }
        check_declared_first(&run, generation, before.allows(SWITCHED));
        run.restart();
        run.verify();
    }
    run.finish(KILLS_PER_PATH);
}

#[test]
fn killed_confirms_and_rollbacks_restart_into_the_declared_policy() {
    let mut run = Run::new("confirm-rollback", Probes::BothInterfaces);
    let applied = Applied::new(&run);
    let within = format!("{}s", CONFIRM_WITHIN.as_secs());
    for i in 0..KILLS_PER_PATH {
        let before = run.declared();
        let target = applied.other(&before);
        let outcome = match run.rng.below(3) {
            0 => {
                let delay = run.rng.up_to(window(CLI_TAKES));
                run.fault(
                    i,
                    "`vaultfw apply --confirm-within`",
                    delay,
                    "the command was launched",
                );
                let cli = run.spawn_cli(&["apply", target.path_str(), "--confirm-within", &within]);
                std::thread::sleep(delay);
                run.kill(true);
                run.finish_cli(cli);
                Confirmation::Never
            }
            1 => {
                run.cli_ok(&["apply", target.path_str(), "--confirm-within", "5s"]);
                let delay = run.rng.up_to(window(CLI_TAKES));
                run.fault(i, "`vaultfw confirm`", delay, "the command was launched");
                let cli = run.spawn_cli(&["confirm"]);
                std::thread::sleep(delay);
                run.kill(true);
                let out = run.finish_cli(cli);
                // Confirmed or not, the apply is declared until its deadline.
                run.verify_without_agent(
                    Some(!before.allows(SWITCHED)),
                    "before the deadline of the apply being confirmed",
                );
                if out.code == Some(exit::OK) {
                    Confirmation::Acknowledged
                } else {
                    // Killed before its answer: the file may hold either.
                    Confirmation::Unknown
                }
            }
            _ => {
                run.cli_ok(&["apply", target.path_str(), "--confirm-within", &within]);
                // The deadline is set before the answer: at most this.
                let deadline = Instant::now() + CONFIRM_WITHIN;
                let lead = CLI_TAKES;
                let delay = run.rng.up_to(lead + window(CLI_TAKES));
                run.fault(
                    i,
                    "the rollback at the deadline",
                    delay,
                    "the deadline minus 20 ms",
                );
                sleep_until(deadline - lead + delay);
                run.kill(true);
                Confirmation::Never
            }
        };
        match outcome {
            Confirmation::Acknowledged => assert_declares(
                &run,
                &Declared::read(target.path()),
                "an acknowledged confirm",
            ),
            Confirmation::Never => assert_declares(&run, &before, "an apply never confirmed"),
            Confirmation::Unknown => {}
        }
        run.restart();
        run.verify();
    }
    run.finish(KILLS_PER_PATH);
}

/// What became of an apply awaiting confirmation when the daemon died.
enum Confirmation {
    /// `vaultfw confirm` answered that it was confirmed.
    Acknowledged,
    /// No confirm was sent: the policy file must not hold it.
    Never,
    /// A confirm was sent but not answered.
    Unknown,
}

#[test]
fn killed_rule_expiries_restart_into_the_declared_policy() {
    let mut run = Run::new("expiry", Probes::BothInterfaces);
    for i in 0..KILLS_PER_PATH {
        let expires = SystemTime::now() + EXPIRY_LEAD;
        run.reload(&Spec {
            switched: Switched::Until(expires),
            ..Spec::BASE
        });
        // Half the kills land on the expiry itself, half before it (the
        // rule then expires while no daemon runs, or under the new one).
        let (what, lead, delay) = if run.rng.one_in(2) {
            let lead = Duration::from_millis(10);
            (
                "the expiry",
                lead,
                run.rng.up_to(lead + window(EXPIRY_TAKES)),
            )
        } else {
            let lead = Duration::from_millis(400);
            ("the time before the expiry", lead, run.rng.up_to(lead))
        };
        run.fault(
            i,
            what,
            delay,
            &format!("{} ms before the rule's time", lead.as_millis()),
        );
        sleep_until(instant_of(expires) - lead + delay);
        run.kill(true);
        run.restart();
        run.wait_switched_gone(expires);
        assert!(
            !run.declared().allows(SWITCHED),
            "{}: the expired rule is still declared",
            run.label()
        );
        run.verify();
    }
    run.finish(KILLS_PER_PATH);
}

#[test]
fn killed_interface_refreshes_restart_into_the_declared_policy() {
    let mut run = Run::new("interface", Probes::PublicOnly);
    for i in 0..KILLS_PER_PATH {
        let recreate = run.rng.one_in(2);
        let (what, takes) = if recreate {
            (
                "the private link (filtered, an endpoint) deleted and created again",
                RECREATE_TAKES,
            )
        } else {
            (
                "the private link (filtered, an endpoint) deleted",
                DELETE_TAKES,
            )
        };
        let delay = run.rng.up_to(window(takes));
        run.fault(i, what, delay, "the link was deleted");
        let pid = nix::unistd::Pid::from_raw(run.agent().pid() as i32);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(delay);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            });
            run.host.delete_private_link();
            if recreate {
                run.host.create_private_link();
            }
        });
        run.kill(true);
        let switched = run.declared().allows(SWITCHED);
        run.verify_without_agent(Some(switched), "after a killed interface refresh");
        // `--iface` names it: a start needs it.
        if !run.host.private_link_exists() {
            run.host.create_private_link();
        }
        run.restart();
        run.verify();
    }
    run.finish(KILLS_PER_PATH);
}

#[test]
fn killed_network_rule_edits_restart_into_the_declared_policy() {
    let mut run = Run::new("network-rule", Probes::BothInterfaces);
    for i in 0..KILLS_PER_PATH {
        network_rule_fault(&mut run, i);
    }
    run.finish(KILLS_PER_PATH);
}

/// Adds the rule for [`SWITCHED`] if the file does not declare it, else
/// removes it, and kills the daemon part-way; then restarts and verifies.
fn network_rule_fault(run: &mut Run, i: usize) {
    let mut wanted = Spec::of(&run.declared());
    let generation = run.agent().generation();
    let verb = match wanted.switched {
        Switched::Absent => "add",
        Switched::Present | Switched::Until(_) => "remove",
    };
    wanted.switched = toggled(wanted.switched);
    let delay = run.rng.up_to(window(CLI_TAKES));
    run.fault(
        i,
        &format!("`vaultfw network-rule {verb}`"),
        delay,
        "the command was launched",
    );
    let switched = SWITCHED.to_string();
    let cli = run.spawn_cli(&["network-rule", verb, "--ip-address", &switched]);
    std::thread::sleep(delay);
    run.kill(true);
    let out = run.finish_cli(cli);
    if out.code == Some(exit::OK) {
        let allows = run.declared().allows(SWITCHED);
        assert_eq!(
            allows,
            matches!(wanted.switched, Switched::Present),
            "{}: an acknowledged network-rule {verb}: the policy file does not declare it",
            run.label()
        );
    }
    check_declared_first(run, generation, !allows(wanted.switched));
    run.restart();
    run.verify();
}

#[test]
fn an_unconfirmed_apply_of_a_killed_daemon_rolls_back_at_its_deadline() {
    let mut run = Run::new("unconfirmed-apply-no-daemon", Probes::BothInterfaces);
    let applied = Applied::new(&run);
    let within = format!("{}s", CONFIRM_WITHIN.as_secs());
    for i in 0..DEADLINE_KILLS {
        let before = run.declared();
        let target = applied.other(&before);
        // Anywhere from the apply to just before its deadline.
        let delay = run.rng.up_to(CONFIRM_WITHIN - Duration::from_millis(100));
        run.fault(
            i,
            "an apply awaiting confirmation",
            delay,
            "`vaultfw apply --confirm-within 1s` was launched",
        );
        let cli = run.spawn_cli(&["apply", target.path_str(), "--confirm-within", &within]);
        std::thread::sleep(delay);
        let killed = Instant::now();
        run.kill(true);
        run.finish_cli(cli);
        // The apply was made before the kill, if at all: its deadline is
        // at most a second after it.
        sleep_until(killed + CONFIRM_WITHIN + KERNEL_DEADLINE_SLACK);
        run.verify_without_agent(
            Some(before.allows(SWITCHED)),
            "past the deadline of an unconfirmed apply",
        );
        assert_declares(&run, &before, "an apply never confirmed");
        run.restart();
        run.verify();
    }
    run.finish(DEADLINE_KILLS);
}

#[test]
fn a_rule_of_a_killed_daemon_stops_admitting_at_its_expiry() {
    let mut run = Run::new("expiry-no-daemon", Probes::BothInterfaces);
    for i in 0..DEADLINE_KILLS {
        let expires = SystemTime::now() + EXPIRY_LEAD;
        run.reload(&Spec {
            switched: Switched::Until(expires),
            ..Spec::BASE
        });
        let lead = Duration::from_millis(400);
        let delay = run.rng.up_to(lead);
        run.fault(
            i,
            "the time before the expiry",
            delay,
            "400 ms before the rule's time",
        );
        sleep_until(instant_of(expires) - lead + delay);
        run.kill(true);
        sleep_until(instant_of(expires) + KERNEL_DEADLINE_SLACK);
        run.verify_without_agent(Some(false), "past the expiry of the rule");
        run.restart();
        run.wait_switched_gone(expires);
        run.verify();
    }
    run.finish(DEADLINE_KILLS);
}
