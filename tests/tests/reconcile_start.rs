//! A start that fails changes nothing that was in force, and a restart
//! reconciles every pin with what it was told: the kernel keeps serving
//! the previous policy when `vaultfw run` is refused — before the kernel is
//! touched (a missing `--iface`, the metrics port in use) or after (an
//! interface another XDP program holds) — and an interface a restart no
//! longer names is detached instead of staying filtered, unreported.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::time::Duration;

use vaultfw_tests::agent::{LeftPins, xdp_attached};
use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::{
    assert_connects, assert_connects_without_agent, assert_dropped, assert_dropped_without_agent,
};
use vaultfw_tests::traffic::{Connect, connect};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, AgentPaths, DENIED_SRC, PROBE_TIMEOUT, PolicyFile, TcpServer,
    Topology, cli_in_netns, in_netns,
};

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

/// What the failed starts try to serve: everyone in.
const OPEN_POLICY: &str = r#"
default_action = "Allow"
bypass = "None"

[data_plane]
tcp_ports = [443]
"#;

const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

fn keep(ifaces: &[&str]) -> AgentOptions {
    AgentOptions {
        ifaces: ifaces.iter().map(|i| (*i).to_owned()).collect(),
        on_exit: "keep",
        ..AgentOptions::iface(ifaces[0])
    }
}

/// An agent serving [`POLICY`] with `--on-exit keep`, stopped: its pins
/// stay in force. Returns the generation it served, its policy file and
/// its paths.
fn previous_run(topo: &Topology, ifaces: &[&str]) -> (u64, PolicyFile, AgentPaths) {
    let mut agent = Agent::start_with(&topo.server, POLICY, keep(ifaces));
    agent.wait_ready();
    agent.wait_serving();
    assert_dropped(topo, &agent, DENIED_SRC, 443, "the previous run");
    let generation = agent.generation();
    let (_, policy, paths) = agent.stop_keeping();
    (generation, policy, paths)
}

/// Runs `vaultfw run` over `paths` with [`OPEN_POLICY`] and the extra
/// arguments; it must exit with an error. Returns its exit code and output.
fn failed_start(
    topo: &Topology,
    policy: PolicyFile,
    paths: &AgentPaths,
    ifaces: &[&str],
    extra_args: &[&str],
) -> (Option<i32>, String) {
    policy.write(OPEN_POLICY);
    let mut options = keep(ifaces);
    options.extra_args = extra_args.iter().map(|a| (*a).to_owned()).collect();
    let mut failed = Agent::spawn(&topo.server, policy, paths.clone(), options);
    let status = failed.wait_exit(EXIT_TIMEOUT);
    let output = failed.output();
    assert!(
        !status.success(),
        "the start should fail; output:\n{output}"
    );
    // The pins belong to the caller's guard from here on.
    let _ = failed.kill();
    (status.code(), output)
}

/// The kernel still serves the previous run's policy and generation.
fn assert_previous_policy_in_force(
    topo: &Topology,
    paths: &AgentPaths,
    generation: u64,
    output: &str,
) {
    assert_dropped_without_agent(topo, DENIED_SRC, 443, "after the failed start");
    assert_connects_without_agent(topo, ALLOWED_SRC, 443, "after the failed start");
    let show = cli_in_netns(&topo.server, paths, &["show"]);
    show.expect_code(exit::NOT_RUNNING);
    assert_eq!(
        show.json()["generation"],
        generation,
        "the previous generation is served\n{}\nfailed start's output:\n{output}",
        show.context()
    );
    assert_eq!(show.json()["filtering"], true, "{}", show.context());
}

#[test]
fn start_naming_a_missing_interface_changes_nothing_in_force() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let veth = topo.server_veth();
    let (generation, policy, paths) = previous_run(&topo, &[veth]);
    let _pins = LeftPins(paths.clone());

    let (code, output) = failed_start(&topo, policy, &paths, &[veth, "vfwnosuch0"], &[]);
    assert_eq!(
        code,
        Some(exit::INVALID_INPUT),
        "invalid arguments exit 2; output:\n{output}"
    );
    assert!(
        output.contains("vfwnosuch0") && output.contains("no such interface"),
        "{output}"
    );
    assert_previous_policy_in_force(&topo, &paths, generation, &output);
}

#[test]
fn start_with_the_metrics_port_in_use_changes_nothing_in_force() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let veth = topo.server_veth();
    let (generation, policy, paths) = previous_run(&topo, &[veth]);
    let _pins = LeftPins(paths.clone());
    // Something else already serves on the port, in the agent's namespace.
    let taken = in_netns(&topo.server, || {
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("binding a port")
    });
    let addr = taken.local_addr().expect("bound").to_string();

    let (_, output) = failed_start(&topo, policy, &paths, &[veth], &["--metrics-addr", &addr]);
    assert!(
        output.contains("metrics"),
        "the error names the metrics listener:\n{output}"
    );
    assert_previous_policy_in_force(&topo, &paths, generation, &output);
}

#[test]
fn start_refused_by_the_kernel_after_the_policy_was_written_serves_the_previous_generation_again() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let veth = topo.server_veth();
    let (_, busy) = topo.add_private_link("10.1.2.1/24", &[]);
    let (generation, policy, paths) = previous_run(&topo, &[veth]);
    let _pins = LeftPins(paths.clone());
    // Another XDP program holds the second interface: attaching there fails
    // only after the new policy was written and flipped.
    let mut holder = Agent::start_with(&topo.server, POLICY, AgentOptions::iface(&busy));
    holder.wait_ready();

    let (_, output) = failed_start(&topo, policy, &paths, &[veth, &busy], &[]);
    assert!(output.contains(&busy), "the error names {busy}:\n{output}");
    assert_previous_policy_in_force(&topo, &paths, generation, &output);
    holder.stop();
}

#[test]
fn restart_without_an_interface_detaches_its_pinned_filter() {
    let topo = Topology::with_client_addrs(&[]);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let private_src = Ipv4Addr::new(10, 1, 2, 5);
    let (_, second) = topo.add_private_link("10.1.2.1/24", &[private_src]);
    let second_addr = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 1), 443);
    let _private_https = TcpServer::start(&topo.server, second_addr);
    let veth = topo.server_veth();

    let mut agent = Agent::start_with(&topo.server, POLICY, keep(&[veth, &second]));
    agent.wait_ready();
    agent.wait_serving();
    assert!(
        matches!(
            connect(
                &topo.client,
                private_src,
                second_addr,
                Duration::from_millis(800)
            ),
            Connect::TimedOut
        ),
        "{private_src} is denied through {second} while it is filtered"
    );
    let (_, policy, paths) = agent.stop_keeping();
    let _pins = LeftPins(paths.clone());

    let mut restarted = Agent::spawn(&topo.server, policy, paths, keep(&[veth]));
    restarted.wait_ready();
    restarted.wait_serving();
    assert!(
        !xdp_attached(&topo.server, &second),
        "{second} is still filtered after a restart without it"
    );
    assert!(
        !restarted
            .paths()
            .pin_dir
            .join("links")
            .join(&second)
            .exists(),
        "the link pin of {second} is left behind"
    );
    assert!(
        restarted.output().contains(&second) && restarted.output().contains("no longer named"),
        "the detach is logged:\n{}",
        restarted.output()
    );
    assert!(
        matches!(
            connect(&topo.client, private_src, second_addr, PROBE_TIMEOUT),
            Connect::Established { .. }
        ),
        "{second} is no longer filtered, as the restart declared"
    );
    assert_dropped(
        &topo,
        &restarted,
        DENIED_SRC,
        443,
        "the named interface stays filtered",
    );
    assert_connects(
        &topo,
        &restarted,
        ALLOWED_SRC,
        443,
        "the named interface stays filtered",
    );
    restarted.stop();
}

#[test]
fn start_in_a_mount_namespace_of_its_own_is_refused_before_anything_is_loaded() {
    let topo = Topology::new();
    let veth = topo.server_veth();
    let policy = PolicyFile::new(POLICY);
    let paths = AgentPaths::new(&policy);
    // `ip netns exec` also gives the command a private mount namespace
    // with a fresh /sys: a bpffs mounted there vanishes with the process.
    let binary = vaultfw_tests::vaultfw_bin();
    let mut args = vec![
        "netns".to_owned(),
        "exec".to_owned(),
        topo.server.name().to_owned(),
        binary.display().to_string(),
        "run".to_owned(),
        "--iface".to_owned(),
        veth.to_owned(),
        "--policy".to_owned(),
        policy.path_str().to_owned(),
        "--on-exit".to_owned(),
        "keep".to_owned(),
    ];
    args.extend(paths.args());
    // iproute2's `ip` itself (a `timeout` wrapper may be busybox, whose
    // own `ip` applet has no `netns exec`), bounded here.
    let mut child = std::process::Command::new("ip")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running ip netns exec");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child
        .try_wait()
        .expect("waiting for ip netns exec")
        .is_none()
    {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("collecting its output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the start must be refused:\n{stderr}"
    );
    assert!(
        stderr.contains("mount namespace of its own") && stderr.contains("nsenter --net="),
        "the refusal says why and what to do:\n{stderr}"
    );
    assert!(!xdp_attached(&topo.server, veth), "nothing is attached");
    assert!(!paths.pin_dir.exists(), "nothing is pinned on the host");
}
