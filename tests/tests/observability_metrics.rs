//! What monitoring reads as it is: a running agent's `/metrics` passes
//! `promtool check metrics` and carries build info, the lookup in use, attach state and XDP
//! mode, rule counts by kind, readiness, the service-tags file's change
//! number and age, a pending confirmation's deadline and the apply-duration
//! histogram, each equal to what the daemon and the kernel hold; the
//! shipped alert rules pass `promtool check rules`, and every metric they
//! and the shipped Grafana dashboard query is one the agent exports. The
//! listener outlasts clients that hold connections open without a request
//! (a cap, no thread each, a read deadline) and running out of descriptors.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, DENIED_SRC, PolicyFile, TcpServer, Topology, http_get,
    in_netns,
};

const METRICS_ADDR: &str = "127.0.0.1:9464";
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// AzureBackup holds 192.0.2.128/29; Sql holds 198.51.100.64/27.
const SERVICE_TAGS: &str = r#"{
  "changeNumber": 42,
  "cloud": "Public",
  "values": [
    { "name": "AzureBackup", "id": "AzureBackup",
      "properties": { "changeNumber": 1, "region": "", "platform": "Azure", "systemService": "AzureBackup",
                      "addressPrefixes": ["192.0.2.128/29"] } },
    { "name": "Sql", "id": "Sql",
      "properties": { "changeNumber": 1, "region": "", "platform": "Azure", "systemService": "AzureSQL",
                      "addressPrefixes": ["198.51.100.64/27"] } }
  ]
}"#;

/// Two IP rules, the two trusted services above; the office is in.
fn policy(tags: &PolicyFile) -> String {
    format!(
        r#"
default_action = "Deny"
bypass = "AzureServices"
ip_rules = ["203.0.113.0/24", "198.51.100.200"]

[data_plane]
tcp_ports = [443]

[trusted_services]
service_tags_file = "{}"
enabled = ["AzureBackup", "Sql"]
"#,
        tags.path_str()
    )
}

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// The body of `GET /metrics`.
fn scrape(topo: &Topology, agent: &Agent) -> String {
    let answer = http_get(&topo.server, METRICS_ADDR, "/metrics");
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}\n{}",
        agent.output()
    );
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The samples of the text format (labels unescaped enough for ours).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|e| panic!("{line}: {e}")),
            };
            (name.to_owned(), labels, value)
        })
        .collect()
}

/// The one sample of `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)], text: &str) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?} in\n{text}");
    found[0].2
}

/// `promtool ARGS` with `stdin`; panics with its output unless it succeeds.
fn promtool(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "running promtool: {e} (Debian's `prometheus` package has it; .ci/run installs it)"
            )
        });
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?}: {text}\ninput:\n{stdin}"
    );
    text
}

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// An agent serving [`policy`] with metrics, after traffic both ways.
fn serving(topo: &Topology, tags: &PolicyFile) -> Agent {
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec!["--metrics-addr".into(), METRICS_ADDR.into()];
    let mut agent = Agent::start_with(&topo.server, &policy(tags), options);
    agent.wait_ready();
    agent.wait_serving();
    assert_connects(topo, &agent, ALLOWED_SRC, 443, "the office is let in");
    assert_dropped(topo, &agent, DENIED_SRC, 443, "others are dropped");
    agent
}

#[test]
fn metrics_pass_promtool_and_say_what_the_daemon_and_the_kernel_hold() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let tags = PolicyFile::named("ServiceTags_Public.json", SERVICE_TAGS);
    let agent = serving(&topo, &tags);
    let text = scrape(&topo, &agent);
    promtool(&["check", "metrics"], &text);
    let s = samples(&text);
    let veth = topo.server_veth();

    let build = s
        .iter()
        .find(|(n, ..)| n == "vaultfw_build_info")
        .unwrap_or_else(|| panic!("vaultfw_build_info in\n{text}"));
    let kernel = nix::sys::utsname::uname().expect("uname");
    assert_eq!(build.2, 1.0);
    assert_eq!(build.1["kernel"], kernel.release().to_string_lossy());
    assert_eq!(build.1["version"], env!("CARGO_PKG_VERSION"));
    assert!(!build.1["commit"].is_empty(), "{text}");
    // The daemon runs with the default `--lookup compiled`.
    assert_eq!(
        value(&s, "vaultfw_lookup_info", &[("lookup", "compiled")], &text),
        1.0
    );

    assert_eq!(value(&s, "vaultfw_ready", &[], &text), 1.0);
    assert_eq!(
        value(
            &s,
            "vaultfw_interface_attached",
            &[("interface", veth)],
            &text
        ),
        1.0
    );
    let mode = s
        .iter()
        .find(|(n, l, _)| n == "vaultfw_interface_xdp_mode" && l["interface"] == veth)
        .unwrap_or_else(|| panic!("the XDP mode of {veth} in\n{text}"));
    let shown = agent.show();
    assert_eq!(
        Some(mode.1["mode"].as_str()),
        shown["interfaces"][0]["mode"].as_str(),
        "the mode the kernel reports: {shown}"
    );
    for (kind, count) in [("ip", 2.0), ("vnet", 0.0), ("trusted", 2.0)] {
        assert_eq!(
            value(&s, "vaultfw_rules", &[("kind", kind)], &text),
            count,
            "{kind}"
        );
    }
    assert_eq!(
        value(&s, "vaultfw_service_tags_change_number", &[], &text),
        42.0
    );
    let age = value(&s, "vaultfw_service_tags_file_age_seconds", &[], &text);
    assert!((0.0..3600.0).contains(&age), "written by this test: {age}");
    assert_eq!(
        value(
            &s,
            "vaultfw_confirmation_deadline_timestamp_seconds",
            &[],
            &text
        ),
        0.0
    );
    let applies = value(&s, "vaultfw_apply_duration_seconds_count", &[], &text);
    assert_eq!(applies, 1.0, "the start-up apply");
    assert_eq!(
        value(
            &s,
            "vaultfw_apply_duration_seconds_bucket",
            &[("le", "+Inf")],
            &text
        ),
        applies
    );

    // An apply waiting for confirmation: its deadline, then none.
    let new = PolicyFile::named(
        "new.toml",
        &policy(&tags).replace("198.51.100.200", "198.51.100.201"),
    );
    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let out = agent.cli(&["apply", new.path_str(), "--confirm-within", "60s"]);
    assert!(out.status.success(), "{out:?}");
    let text = scrape(&topo, &agent);
    let s = samples(&text);
    let deadline = value(
        &s,
        "vaultfw_confirmation_deadline_timestamp_seconds",
        &[],
        &text,
    );
    assert!(
        (before + 55.0..before + 65.0).contains(&deadline),
        "deadline {deadline}, applied at {before}"
    );
    assert_eq!(
        value(&s, "vaultfw_apply_duration_seconds_count", &[], &text),
        2.0
    );
    let out = agent.cli(&["confirm"]);
    assert!(out.status.success(), "{out:?}");
    let text = scrape(&topo, &agent);
    assert_eq!(
        value(
            &samples(&text),
            "vaultfw_confirmation_deadline_timestamp_seconds",
            &[],
            &text
        ),
        0.0
    );
    promtool(&["check", "metrics"], &text);
}

/// Every `vaultfw_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.match_indices("vaultfw_")
        .filter(|(i, _)| {
            !text[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn shipped_alert_rules_and_dashboard_query_only_metrics_the_agent_exports() {
    let rules = deploy("prometheus/vaultfw-alerts.yaml");
    promtool(&["check", "rules", rules.to_str().expect("UTF-8")], "");

    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let tags = PolicyFile::named("ServiceTags_Public.json", SERVICE_TAGS);
    let agent = serving(&topo, &tags);
    // A reload, so the reload metrics exist.
    agent.signal(Signal::SIGHUP);
    let deadline = Instant::now() + LOG_TIMEOUT;
    let text = loop {
        let text = scrape(&topo, &agent);
        if text.contains("vaultfw_last_reload_success 1") {
            break text;
        }
        assert!(Instant::now() < deadline, "no reload in\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let exported: BTreeSet<String> = samples(&text).into_iter().map(|(n, ..)| n).collect();

    let dashboard_text =
        std::fs::read_to_string(deploy("grafana/vaultfw-dashboard.json")).expect("the dashboard");
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("a PromQL expr").to_owned());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules_text = std::fs::read_to_string(&rules).expect("the rules");
    for (what, text_used) in [("dashboard", exprs.join("\n")), ("alert rules", rules_text)] {
        let used = metric_names(&text_used);
        assert!(!used.is_empty(), "{what} query vaultfw metrics");
        let missing: Vec<&String> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "the {what} query metrics the agent does not export: {missing:?}\nexported: {exported:?}"
        );
    }
}

/// The metrics listener's connection cap (`MAX_CONNECTIONS`).
const METRICS_CAP: usize = 64;
/// How long the listener waits for a request (`READ_DEADLINE`).
const METRICS_READ_DEADLINE: Duration = Duration::from_secs(5);

/// Threads and open descriptors of process `pid`.
fn usage(pid: u32) -> (usize, usize) {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/PID/status");
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads: in /proc/PID/status");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("listing /proc/PID/fd")
        .count();
    (threads, fds)
}

/// Sets the soft descriptor limit of process `pid` (the hard one stays:
/// raising it back takes a privilege a container may lack); returns the
/// soft limit it had.
fn set_soft_fd_limit(pid: u32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit writes the old value into a valid struct; no new one.
    let ret = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(
        ret,
        0,
        "prlimit({pid}): {}",
        std::io::Error::last_os_error()
    );
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit reads a valid, initialised struct; no old value asked.
    let ret = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(
        ret,
        0,
        "prlimit({pid}, NOFILE, {soft}): {}",
        std::io::Error::last_os_error()
    );
    old.rlim_cur
}

/// `n` connections to the metrics port that never send anything.
fn idle_connections(topo: &Topology, n: usize) -> Vec<TcpStream> {
    in_netns(&topo.server, move || {
        (0..n)
            .map(|_| TcpStream::connect(METRICS_ADDR).expect("connecting to the metrics port"))
            .collect()
    })
}

/// `GET path` from a fresh connection, retried until it answers 200 or
/// `within` passes (a connection over the cap is closed unanswered);
/// panics with the last answer.
fn answers_200(topo: &Topology, agent: &Agent, path: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let path_owned = path.to_owned();
        let answer = in_netns(&topo.server, move || -> std::io::Result<String> {
            let mut stream = TcpStream::connect(METRICS_ADDR)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(stream, "GET {path_owned} HTTP/1.0\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        });
        if answer
            .as_ref()
            .is_ok_and(|a| a.starts_with("HTTP/1.1 200") || a.starts_with("HTTP/1.0 200"))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} did not answer 200 within {within:?}: {answer:?}\n{}",
            agent.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn idle_connections_beyond_the_cap_take_no_thread_each_and_leave_the_probes_answering() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let tags = PolicyFile::named("ServiceTags_Public.json", SERVICE_TAGS);
    let agent = serving(&topo, &tags);
    let pid = agent.pid();
    answers_200(&topo, &agent, "/healthz", LOG_TIMEOUT);
    let (threads, fds) = usage(pid);

    let mut idle = idle_connections(&topo, METRICS_CAP + 50);
    // The backlog is first in, first out: once the last one is closed (over
    // the cap, at once), the agent has taken all before it. Its descriptors
    // are sampled then (an upper bound holds whatever the timing).
    let last = idle.last_mut().expect("connections");
    last.set_read_timeout(Some(METRICS_READ_DEADLINE))
        .expect("read timeout");
    let _ = last.read(&mut [0; 1]);
    let (held_threads, held_fds) = usage(pid);
    assert!(
        held_threads <= threads + 4,
        "{held_threads} threads with {} idle connections (from {threads})",
        METRICS_CAP + 50
    );
    assert!(
        held_fds <= fds + METRICS_CAP + 4,
        "{held_fds} descriptors with {} idle connections (from {fds}; the cap is {METRICS_CAP})",
        METRICS_CAP + 50
    );
    // The held ones are closed at their read deadline: the probes answer
    // from fresh connections though the clients keep theirs open.
    answers_200(&topo, &agent, "/healthz", METRICS_READ_DEADLINE * 4);
    answers_200(&topo, &agent, "/readyz", METRICS_READ_DEADLINE * 4);
    assert!(usage(pid).0 <= threads + 4, "threads grew");

    drop(idle);
    // Still listening once the clients are gone.
    answers_200(&topo, &agent, "/healthz", LOG_TIMEOUT);
    answers_200(&topo, &agent, "/metrics", LOG_TIMEOUT);
}

#[test]
fn a_metrics_connection_that_sends_no_request_is_closed_after_the_read_deadline() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let tags = PolicyFile::named("ServiceTags_Public.json", SERVICE_TAGS);
    let agent = serving(&topo, &tags);
    let mut idle = idle_connections(&topo, 1).pop().expect("one");
    // Generous: the deadline, plus time for a loaded machine.
    let within = METRICS_READ_DEADLINE * 4;
    idle.set_read_timeout(Some(within)).expect("read timeout");
    let mut got = Vec::new();
    match idle.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "an idle metrics connection is still open after {within:?} ({e})\n{}",
            agent.output()
        ),
    }
    answers_200(&topo, &agent, "/healthz", LOG_TIMEOUT);
}

#[test]
fn out_of_descriptors_the_metrics_listener_keeps_listening_and_answers_again() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let tags = PolicyFile::named("ServiceTags_Public.json", SERVICE_TAGS);
    let agent = serving(&topo, &tags);
    let pid = agent.pid();
    answers_200(&topo, &agent, "/healthz", LOG_TIMEOUT);
    // Room for a few connections only, far below the cap: the next accept
    // fails with EMFILE and the rest wait in the accept queue.
    let limit = set_soft_fd_limit(pid, (usage(pid).1 + 4) as u64);
    let mark = agent.log_mark();
    let idle = idle_connections(&topo, 40);
    let failed = agent.wait_log(mark, "a failed accept", LOG_TIMEOUT, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("accepting a metrics connection failed"))
    });
    assert!(
        failed["error"]["message"]
            .as_str()
            .is_some_and(|e| e.contains("os error 24")),
        "not EMFILE: {failed}"
    );
    drop(idle);
    // The listener outlasted it: a fresh connection is answered.
    answers_200(&topo, &agent, "/healthz", METRICS_READ_DEADLINE * 4);
    answers_200(&topo, &agent, "/readyz", LOG_TIMEOUT);
    set_soft_fd_limit(pid, limit);
}
