//! One fault-injection test ([`Run`]): one `vaultfw run --on-exit keep`
//! at a time on one pin directory and one policy file for the whole test
//! (each kill leaves the pins, each restart adopts them), the probes that
//! run under all of it, and the schedule of the kills.
//!
//! [`Run::verify`] is the invariant after every kill + restart, with real
//! connections: what the policy file declares is what the kernel enforces
//! on both interfaces, the daemon says so (`show`, and the generation the
//! pins hold), and nothing of a killed start or write-back is left behind
//! (staged maps, temp files).
//! [`Run::verify_without_agent`] checks the pinned filter alone, between a
//! kill and the restart. Probers run through the whole test: a source every
//! policy allows must never fail a connection, a source none allows must
//! never complete one.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use vaultfw_tests::agent::LeftPins;
use vaultfw_tests::cli::exit;
use vaultfw_tests::probe::ProbeOutcome;
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentPaths, CliOutput, DENIED_SRC, PROBE_TIMEOUT, PolicyFile, Prober,
    cli_in_netns, vaultfw_bin,
};

use super::host::{Declared, Host, SUBNET_SRC, SWITCHED, Spec, failed_checks};
use super::schedule::{Rng, seed};

/// Background probes: one handshake every 20 ms.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// A denied probe's timeout (one SYN; shorter, so more of them are sent).
const DENIED_PROBE_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the daemon may take to act on a deadline it reports.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);
/// How long a one-shot CLI command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Which background probes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probes {
    /// Through both interfaces (the private link stays).
    BothInterfaces,
    /// Through the public veth only (the private link comes and goes).
    PublicOnly,
}

/// One fault-injection test: the host, the agent of the moment, the
/// background probes and the schedule.
pub struct Run {
    // Fields drop in this order: the agent (killed, pins removed) before
    // the probers, the pins' guard and, last, the namespaces.
    agent: Option<Agent>,
    idle_policy: Option<PolicyFile>,
    /// Each prober, what it probes, and whether its source is allowed.
    probers: Vec<(Prober, &'static str, bool)>,
    paths: AgentPaths,
    policy_path: PathBuf,
    _pins: LeftPins,
    /// The host.
    pub host: Host,
    /// This path's schedule.
    pub rng: Rng,
    path: &'static str,
    seed: u64,
    began: Instant,
    kills: usize,
    label: String,
    /// When each fault was announced, and its label: a failed probe is
    /// reported with the fault it fell in.
    faults: Vec<(Instant, String)>,
}

impl Run {
    /// Builds the host, starts the first agent on the base policy, checks
    /// it, then starts the background probes.
    pub fn new(path: &'static str, probes: Probes) -> Self {
        let seed = seed();
        println!(
            "fault injection, path {path:?}: seed {seed:#x} (replay with {}={seed:#x})",
            super::schedule::SEED_ENV
        );
        let host = Host::new();
        let policy = PolicyFile::new(&host.policy(&Spec::BASE));
        let paths = AgentPaths::new(&policy);
        let mut run = Run {
            agent: None,
            policy_path: policy.path().to_owned(),
            idle_policy: Some(policy),
            probers: Vec::new(),
            _pins: LeftPins(paths.clone()),
            paths,
            host,
            rng: Rng::for_path(seed, path),
            path,
            seed,
            began: Instant::now(),
            kills: 0,
            label: "first start".to_owned(),
            faults: Vec::new(),
        };
        run.restart();
        run.verify();
        let client = &run.host.topo.client;
        let mut probed = vec![
            (
                "the office, public veth",
                ALLOWED_SRC,
                run.host.public(),
                true,
            ),
            (
                "a source no policy allows, public veth",
                DENIED_SRC,
                run.host.public(),
                false,
            ),
        ];
        if probes == Probes::BothInterfaces {
            probed.extend([
                (
                    "the lab subnet through its endpoint",
                    SUBNET_SRC,
                    run.host.private(),
                    true,
                ),
                (
                    "a source no policy allows, private link",
                    DENIED_SRC,
                    run.host.private(),
                    false,
                ),
            ]);
        }
        let probers = probed
            .into_iter()
            .map(|(what, src, dst, allowed)| {
                let timeout = if allowed {
                    PROBE_TIMEOUT
                } else {
                    DENIED_PROBE_TIMEOUT
                };
                let prober = Prober::start(client, src, dst, PROBE_INTERVAL, timeout);
                (prober, what, allowed)
            })
            .collect();
        run.probers = probers;
        run.began = Instant::now();
        run
    }

    /// Announces the fault about to be injected (printed, and named in
    /// every failure until the next one).
    pub fn fault(&mut self, iteration: usize, what: &str, delay: Duration, origin: &str) {
        self.label = format!(
            "path {:?}, iteration {iteration}, {what}: SIGKILL {:.1} ms after {origin} (seed {:#x})",
            self.path,
            delay.as_secs_f64() * 1e3,
            self.seed
        );
        println!("{}", self.label);
        self.faults.push((Instant::now(), self.label.clone()));
    }

    /// The fault a probe started at `at` fell in.
    fn fault_at(&self, at: Instant) -> &str {
        self.faults
            .iter()
            .rev()
            .find(|(announced, _)| *announced <= at)
            .map_or("before the first fault", |(_, label)| label.as_str())
    }

    /// The fault of the moment, for failure messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The running agent.
    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("an agent runs")
    }

    /// What the policy file declares now.
    pub fn declared(&self) -> Declared {
        Declared::read(&self.policy_path)
    }

    /// Replaces the policy file (an operator's edit).
    pub fn write_policy(&self, spec: &Spec) {
        std::fs::write(&self.policy_path, self.host.policy(spec))
            .unwrap_or_else(|err| panic!("writing {}: {err}", self.policy_path.display()));
    }

    /// Writes `spec` and has the running agent reload it (SIGHUP); returns
    /// once the reload is in force.
    pub fn reload(&self, spec: &Spec) {
        let agent = self.agent();
        let mark = agent.log_mark();
        self.write_policy(spec);
        agent.signal(nix::sys::signal::Signal::SIGHUP);
        agent.wait_log(mark, "the SIGHUP reload", Duration::from_secs(20), |line| {
            line["vaultfw"]["cause"] == "SIGHUP"
                && matches!(
                    line["message"].as_str(),
                    Some("policy applied" | "policy unchanged; nothing written")
                )
        });
    }

    /// Spawns `vaultfw ARGS --output json --socket S` without waiting.
    pub fn spawn_cli(&self, args: &[&str]) -> (Vec<String>, Child) {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend(["--output".into(), "json".into(), "--socket".into()]);
        all.push(self.paths.socket.display().to_string());
        let child = Command::new(vaultfw_bin())
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("running vaultfw {all:?}: {err}"));
        (all, child)
    }

    /// Waits (bounded) for a CLI command [`Run::spawn_cli`] started.
    pub fn finish_cli(&self, (args, mut child): (Vec<String>, Child)) -> CliOutput {
        let deadline = Instant::now() + CLI_TIMEOUT;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{}: vaultfw {args:?} still running after {CLI_TIMEOUT:?}",
                    self.label
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let output = child
            .wait_with_output()
            .unwrap_or_else(|err| panic!("collecting vaultfw {args:?}: {err}"));
        CliOutput::new(args, output)
    }

    /// Runs a CLI command to completion; it must succeed.
    pub fn cli_ok(&self, args: &[&str]) -> serde_json::Value {
        let out = self.finish_cli(self.spawn_cli(args));
        assert_eq!(
            out.code,
            Some(exit::OK),
            "{}: {}\nagent output:\n{}",
            self.label,
            out.context(),
            self.agent().output()
        );
        out.json()
    }

    /// SIGKILLs the running agent (a crash: no cleanup of its own); `fault`
    /// counts it as an injected fault.
    pub fn kill(&mut self, fault: bool) {
        let agent = self.agent.take().expect("an agent runs");
        let (policy, _paths) = agent.kill();
        self.idle_policy = Some(policy);
        if fault {
            self.kills += 1;
        }
    }

    /// Spawns `vaultfw run` on the pins and policy file (not waiting).
    pub fn spawn(&mut self) {
        let policy = self.idle_policy.take().expect("no agent runs");
        self.agent = Some(Agent::spawn(
            &self.host.topo.server,
            policy,
            self.paths.clone(),
            self.host.options(),
        ));
    }

    /// Starts an agent on the pins and policy file and waits until it
    /// filters and answers.
    pub fn restart(&mut self) {
        self.spawn();
        let agent = self.agent.as_mut().expect("just spawned");
        agent.wait_ready();
        agent.wait_serving();
    }

    /// Waits (bounded) until the agent serves a policy without an IP rule
    /// for [`SWITCHED`] (`show` counts one IP rule), after `after`.
    pub fn wait_switched_gone(&self, after: SystemTime) {
        if let Ok(left) = after.duration_since(SystemTime::now()) {
            std::thread::sleep(left);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let show = self.agent().show();
            if show["ip_rules"] == 1 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the expired rule is still served 20 s after its time: {show:#}\nagent output:\n{}",
                self.label,
                self.agent().output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Checks, with no daemon running, what the pinned filter alone
    /// enforces on the public veth: the office connects, and [`SWITCHED`]
    /// connects exactly when `switched` says (`None`: either policy may be
    /// served). The denied sources are the probers' to watch meanwhile.
    pub fn verify_without_agent(&self, switched: Option<bool>, when: &str) {
        assert!(self.agent.is_none(), "an agent runs");
        let mut checks = vec![self.host.office()];
        checks.extend(switched.map(|allowed| self.host.switched(allowed)));
        let failed = failed_checks(&self.host.topo.client, &checks);
        assert!(
            failed.is_empty(),
            "{}: with no daemon, {when}, the kernel does not enforce what is declared:\n{}",
            self.label,
            failed.join("\n")
        );
    }

    /// The invariant after a kill + restart: the running agent enforces,
    /// on both interfaces, what the policy file declares, says so, and the
    /// pins hold exactly that.
    pub fn verify(&self) {
        let agent = self.agent();
        let mut show = agent.show();
        // An apply awaiting confirmation is declared until its deadline:
        // what must hold is what holds after it.
        if let Some(until) = show["awaiting_confirmation_until"].as_str() {
            let until = humantime::parse_rfc3339(until)
                .unwrap_or_else(|err| panic!("awaiting_confirmation_until {until:?}: {err}"));
            let wait = until.duration_since(SystemTime::now()).unwrap_or_default();
            std::thread::sleep(wait + DEADLINE_SLACK);
            show = agent.show();
            assert!(
                show["awaiting_confirmation_until"].is_null(),
                "{}: still awaiting confirmation {DEADLINE_SLACK:?} past its deadline: {show:#}",
                self.label
            );
        }
        let declared = self.declared();
        let checks = self.host.policy_checks(declared.allows(SWITCHED));
        let failed = failed_checks(&self.host.topo.client, &checks);
        assert!(
            failed.is_empty(),
            "{}: after the restart the kernel does not enforce what the policy file declares:\n{}\n\
             declared: {}\nagent output:\n{}",
            self.label,
            failed.join("\n"),
            declared.policy,
            agent.output()
        );

        // The daemon's policy is the declared one.
        for key in ["default_action", "limits"] {
            assert_eq!(
                show[key], declared.policy[key],
                "{}: show's {key} is not the declared one: {show:#}",
                self.label
            );
        }
        assert_eq!(
            show["ip_rules"].as_u64(),
            declared.policy["ip_rules"]
                .as_array()
                .map(|r| r.len() as u64),
            "{}: show's IP rules are not the declared ones: {show:#}\ndeclared: {}",
            self.label,
            declared.policy
        );
        assert_eq!(show["protected"], true, "{}: {show:#}", self.label);
        // Reported by daemons that list them: none here.
        for key in ["unfiltered_interfaces", "unmanaged_links"] {
            if let Some(list) = show[key].as_array() {
                assert!(list.is_empty(), "{}: {key} in {show:#}", self.label);
            }
        }
        let mut shown: Vec<String> = show["interfaces"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|i| i["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        shown.sort();
        assert_eq!(shown, self.host.filtered(), "{}: {show:#}", self.label);

        // The generation the daemon reports is the one the pins hold (read
        // between two equal answers of the daemon: nothing changed between).
        let mut tries = 0;
        loop {
            let before = agent.generation();
            let pinned = self.pinned_generation();
            if agent.generation() == before {
                assert_eq!(
                    pinned,
                    Some(before),
                    "{}: the daemon serves generation {before}, the pins hold {pinned:?}",
                    self.label
                );
                break;
            }
            tries += 1;
            assert!(tries < 5, "{}: the generation keeps changing", self.label);
        }

        // Nothing of an unfinished migration or write-back is left.
        let staged = self.paths.pin_dir.join("staged");
        assert!(
            !staged.exists(),
            "{}: {} is left after the restart",
            self.label,
            staged.display()
        );
        let mut links: Vec<String> = std::fs::read_dir(self.paths.pin_dir.join("links"))
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        links.sort();
        assert_eq!(links, self.host.filtered(), "{}: pinned links", self.label);
        self.check_leftover_files();
    }

    /// The generation the pinned maps hold, read without the daemon
    /// (`vaultfw show` on a socket nobody listens on reads the pins).
    pub fn pinned_generation(&self) -> Option<u64> {
        let offline = AgentPaths {
            pin_dir: self.paths.pin_dir.clone(),
            socket: self.paths.socket.with_file_name("nobody-listens.sock"),
        };
        let out = cli_in_netns(&self.host.topo.server, &offline, &["show"]);
        out.expect_code(exit::NOT_RUNNING);
        out.json()["generation"].as_u64()
    }

    /// Panics if a file other than the policy and the socket lies beside
    /// the policy (a temp file of a write-back the kill cut short must be
    /// gone once a daemon started).
    fn check_leftover_files(&self) {
        let dir = self.policy_path.parent().expect("a directory");
        let known = [
            self.policy_path.file_name().expect("a file name"),
            self.paths.socket.file_name().expect("a file name"),
        ];
        let left: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|err| panic!("listing {}: {err}", dir.display()))
            .flatten()
            .map(|e| e.file_name())
            .filter(|name| !known.contains(&name.as_os_str()))
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        assert!(
            left.is_empty(),
            "{}: left beside the policy after the restart: {left:?}",
            self.label
        );
    }

    /// Stops the probes and checks them: no allowed connection failed at
    /// any moment of the test, no denied source ever connected; `kills`
    /// faults were injected.
    pub fn finish(mut self, kills: usize) {
        let ended = Instant::now();
        let mut summary = Vec::new();
        for (prober, _, _) in &self.probers {
            // Two more probes: one of them started after `ended`.
            prober.wait_more(2, Duration::from_secs(10));
        }
        for (prober, what, allowed) in std::mem::take(&mut self.probers) {
            let log = prober.stop();
            let describe = |probe: &vaultfw_tests::probe::Probe| {
                format!(
                    "  {:?} (took {:?}) during {}",
                    probe.outcome,
                    probe.took,
                    self.fault_at(probe.at)
                )
            };
            // The first 20 are enough to see where they fell.
            let listed = |lines: &[String]| {
                let more = lines.len().saturating_sub(20);
                let mut text = lines[..lines.len() - more].join("\n");
                if more > 0 {
                    text.push_str(&format!("\n  ... and {more} more"));
                }
                text
            };
            assert!(!log.probes.is_empty(), "{what}: no probe ran");
            if allowed {
                let failed: Vec<String> = log.failures().into_iter().map(describe).collect();
                assert!(
                    failed.is_empty(),
                    "path {:?}: {what}: {} of {} connections failed:\n{}",
                    self.path,
                    failed.len(),
                    log.probes.len(),
                    listed(&failed)
                );
                // At least one probe a second: the machine is busy, not idle.
                let min = (ended - self.began).as_secs() as usize;
                log.assert_all_established(min, self.began, ended);
                summary.push(format!(
                    "{what}: {} probes, all connected",
                    log.probes.len()
                ));
            } else {
                let got_in: Vec<String> = log
                    .probes
                    .iter()
                    .filter(|p| p.outcome == ProbeOutcome::Established)
                    .map(describe)
                    .collect();
                assert!(
                    got_in.is_empty(),
                    "path {:?}: {what} connected {} times of {}:\n{}",
                    self.path,
                    got_in.len(),
                    log.probes.len(),
                    listed(&got_in)
                );
                summary.push(format!(
                    "{what}: {} probes, none connected",
                    log.probes.len()
                ));
            }
        }
        assert_eq!(self.kills, kills, "faults injected");
        println!(
            "fault injection, path {:?}: {} kills in {:.1} s\n  {}",
            self.path,
            self.kills,
            (ended - self.began).as_secs_f64(),
            summary.join("\n  ")
        );
    }
}
