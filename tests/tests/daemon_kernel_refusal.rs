//! Failing closed and saying so: when the kernel refuses the XDP
//! program, `vaultfw run` exits non-zero (4, kernel refusal) with the kernel
//! release and the tail of the verifier log — not a bare errno — attaches
//! nothing, and `show` does not claim the host is protected.
//!
//! The refusal is real, not mocked: the agent runs without CAP_PERFMON and
//! CAP_SYS_ADMIN (dropped from its bounding and inheritable sets by
//! `setpriv`), keeping CAP_BPF and CAP_NET_ADMIN. The maps load, but the
//! verifier then treats the program as unprivileged and rejects its packet
//! pointer arithmetic ("pointer arithmetic with it prohibited for !root").

use std::path::Path;
use std::time::Duration;

use vaultfw_tests::agent::{LeftPins, run_program_in_netns, xdp_attached};
use vaultfw_tests::cli::exit;
use vaultfw_tests::{AgentPaths, CliOutput, PolicyFile, Topology, cli_in_netns, vaultfw_bin};

const POLICY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]
"#;

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .expect("uname")
        .release()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_program_the_kernel_refuses_fails_the_run_with_the_release_and_verifier_log() {
    let topo = Topology::new();
    let policy = PolicyFile::new(POLICY);
    let paths = AgentPaths::new(&policy);
    let _pins = LeftPins(paths.clone());
    let vaultfw = vaultfw_bin().display().to_string();
    let mut args: Vec<String> = [
        "--inh-caps=-perfmon,-sys_admin",
        "--bounding-set=-perfmon,-sys_admin",
        "--",
        vaultfw.as_str(),
        "run",
        "--iface",
        topo.server_veth(),
        "--policy",
        policy.path_str(),
        "--on-exit",
        "detach",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    args.extend(paths.args());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = CliOutput::new(
        args.clone(),
        run_program_in_netns(&topo.server, Path::new("setpriv"), &refs, RUN_TIMEOUT),
    );

    assert_eq!(out.code, Some(exit::KERNEL_REFUSED), "{}", out.context());
    assert!(
        !out.stdout.contains("\"message\":\"filtering\""),
        "it claimed to filter: {}",
        out.context()
    );
    let release = kernel_release();
    assert!(
        out.stderr.contains(&release),
        "the message lacks the kernel release {release:?}: {}",
        out.context()
    );
    assert!(
        out.stderr.contains("verifier log"),
        "the message has no verifier log: {}",
        out.context()
    );
    // The tail of the log: the verifier's own last lines, not just an errno.
    assert!(
        out.stderr.contains("processed") && out.stderr.contains("insns"),
        "the verifier log's tail is missing: {}",
        out.context()
    );
    assert!(
        out.stderr.lines().count() > 3,
        "a bare errno, not the verifier's reasons: {}",
        out.context()
    );
    assert!(
        !xdp_attached(&topo.server, topo.server_veth()),
        "something was attached"
    );

    // No daemon: `show` reads the pins and must not claim protection.
    let show = cli_in_netns(&topo.server, &paths, &["show"]);
    show.expect_code(exit::NOT_RUNNING);
    let doc = show.json();
    assert_eq!(doc["daemon_running"], false, "{}", show.context());
    assert_ne!(
        doc["filtering"],
        true,
        "show claims the host is filtered: {}",
        show.context()
    );
    let live = doc["interfaces"]
        .as_array()
        .map(|a| a.iter().any(|i| i["live"] == true))
        .unwrap_or(false);
    assert!(!live, "show reports a live pinned link: {}", show.context());
}
