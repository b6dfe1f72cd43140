//! A control socket that cannot be starved: idle
//! connections cannot exhaust the agent's file descriptors or its CPU.
//!
//! - 1,500 idle connections to an agent limited to 1,024 descriptors: at
//!   most 64 are held (each until its 5 s read deadline, then answered and
//!   closed); every one beyond the cap is answered at once with a clear
//!   error and closed. The agent stays near idle, and `vaultfw show`
//!   answers within 100 ms once the held ones time out, while the clients
//!   still hold all 1,500 open.
//! - An agent that does run out of descriptors (EMFILE) backs off instead
//!   of spinning, logs the failure at most once per 5 s, and serves again
//!   as soon as descriptors are free.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vaultfw_tests::{Agent, Topology};

const POLICY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]
"#;

/// The cap the daemon enforces (control/server.rs `MAX_CONNECTIONS`).
const CAP: usize = 64;
/// How long the daemon waits for a request (`READ_DEADLINE`).
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// The share of one core the agent may use while it is being held open.
const CPU_BOUND: f64 = 0.20;

/// Sets the descriptor limit (soft and hard) of process `pid`.
fn set_fd_limit(pid: u32, limit: u64) {
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit reads a valid, initialised struct; no old value asked.
    let ret = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &rlimit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(
        ret,
        0,
        "prlimit({pid}, NOFILE, {limit}): {}",
        std::io::Error::last_os_error()
    );
}

/// Descriptors process `pid` holds open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("listing /proc/PID/fd")
        .count()
}

/// CPU time (user + system) process `pid` has used.
fn cpu_time(pid: u32) -> Duration {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/PID/stat");
    // Fields after the command name (which may hold spaces, inside parens):
    // state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// Panics unless `pid` used under [`CPU_BOUND`] of one core over 2 s.
fn assert_near_idle(pid: u32, agent: &Agent, why: &str) {
    let window = Duration::from_secs(2);
    let before = cpu_time(pid);
    std::thread::sleep(window);
    let used = cpu_time(pid).saturating_sub(before);
    let share = used.as_secs_f64() / window.as_secs_f64();
    eprintln!("{why}: the agent used {used:?} of CPU over {window:?}");
    assert!(
        share < CPU_BOUND,
        "{why}: the agent used {:.0} % of a core over {window:?}\n{}",
        share * 100.0,
        agent.output()
    );
}

/// Lets this process hold `n` descriptors and more.
fn raise_own_fd_limit(n: u64) {
    let rlimit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit reads a valid, initialised struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) };
    assert_eq!(
        ret,
        0,
        "raising this test's own descriptor limit: {}",
        std::io::Error::last_os_error()
    );
}

fn connect(socket: &Path) -> UnixStream {
    UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()))
}

/// Everything the daemon sends on `stream` until it closes it (bounded).
fn read_answer(stream: &mut UnixStream, timeout: Duration) -> String {
    stream
        .set_read_timeout(Some(timeout))
        .expect("setting a read timeout");
    let mut answer = String::new();
    match stream.read_to_string(&mut answer) {
        Ok(_) => answer,
        Err(error) => panic!("no answer and no close within {timeout:?} ({error}); got {answer:?}"),
    }
}

/// The fastest of three `vaultfw show` runs (a CLI process each).
fn best_show(agent: &Agent) -> Duration {
    (0..3)
        .map(|_| {
            let asked = Instant::now();
            let out = agent.cli_json(&["show"]);
            let took = asked.elapsed();
            out.expect_code(0);
            took
        })
        .min()
        .expect("three runs")
}

#[test]
fn idle_connections_under_a_1024_fd_limit_leave_show_answering_and_the_agent_idle() {
    raise_own_fd_limit(8192);
    let topo = Topology::new();
    let mut agent = Agent::start(&topo.server, topo.server_veth(), POLICY);
    let pid = agent.pid();
    set_fd_limit(pid, 1024);
    agent.wait_ready();
    agent.wait_serving();
    let socket = agent.paths().socket.clone();
    // What `show` costs here with no load (a CLI process's start included:
    // far more under emulation), so the bound holds on every machine.
    let unloaded = best_show(&agent);
    let bound = Duration::from_millis(100).max(unloaded * 2);

    let mut idle: Vec<UnixStream> = (0..1500).map(|_| connect(&socket)).collect();
    // One beyond the cap is answered at once and closed, not held.
    let answer = read_answer(idle.last_mut().expect("1,500"), Duration::from_secs(2));
    assert!(
        answer.contains(&format!(
            "too many concurrent control connections ({CAP}); retry"
        )),
        "the connection beyond the cap got {answer:?}\n{}",
        agent.output()
    );
    let held = open_fds(pid);
    assert!(
        held < 200,
        "the agent holds {held} descriptors for 1,500 idle connections"
    );
    assert_near_idle(pid, &agent, "1,500 idle connections");

    // The held ones get their read deadline: an error line, then the close.
    let answer = read_answer(&mut idle[0], READ_DEADLINE * 2);
    assert!(
        answer.contains("no complete request within 5s"),
        "{answer:?}"
    );
    // Every slot is free again although the clients keep all 1,500 open.
    let deadline = Instant::now() + READ_DEADLINE * 2;
    while agent.cli_json(&["show"]).code != Some(0) {
        assert!(
            Instant::now() < deadline,
            "show is still refused\n{}",
            agent.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let best = best_show(&agent);
    eprintln!(
        "show: {best:?} at best of three ({unloaded:?} unloaded); the agent holds {held} descriptors"
    );
    assert!(
        best < bound,
        "show took {best:?} at best of three, over {bound:?} ({unloaded:?} unloaded)"
    );
    assert_near_idle(pid, &agent, "1,500 connections open on the client side");
    drop(idle);
    agent.stop();
}

#[test]
fn out_of_descriptors_the_accept_loop_backs_off_logs_once_per_interval_and_recovers() {
    raise_own_fd_limit(8192);
    let topo = Topology::new();
    let mut agent = Agent::start(&topo.server, topo.server_veth(), POLICY);
    let pid = agent.pid();
    agent.wait_ready();
    agent.wait_serving();
    let socket = agent.paths().socket.clone();
    // Room for a few connections only, far below the cap of 64: the next
    // accept fails with EMFILE and the rest wait in the accept queue.
    set_fd_limit(pid, (open_fds(pid) + 4) as u64);
    let mark = agent.log_mark();
    let idle: Vec<UnixStream> = (0..40).map(|_| connect(&socket)).collect();
    let failed = agent.wait_log(mark, "a failed accept", Duration::from_secs(10), |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("accepting a control connection failed"))
    });
    assert!(
        failed["error"]["message"]
            .as_str()
            .is_some_and(|e| e.contains("os error 24")),
        "not EMFILE: {failed}"
    );
    assert_near_idle(pid, &agent, "accepts failing with EMFILE");
    assert!(
        failed["message"]
            .as_str()
            .is_some_and(|m| m.contains("LimitNOFILE")),
        "no hint: {failed}"
    );
    let lines = agent
        .log_lines()
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("accepting a control connection failed"))
        })
        .count();
    assert!(
        lines <= 2,
        "{lines} lines about failed accepts in about 2 s (one per 5 s at most)\n{}",
        agent.output()
    );

    // Closing the idle connections frees the descriptors: the daemon
    // serves again.
    drop(idle);
    agent.wait_serving();
    agent.stop();
}
