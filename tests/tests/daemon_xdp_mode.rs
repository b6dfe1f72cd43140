//! The attach mode is what the kernel says: `--xdp-mode native`
//! on an interface whose driver lacks native XDP fails, naming the
//! interface and suggesting `--xdp-mode generic`; `--xdp-mode auto` on it
//! attaches in generic mode with a warning and `show` reports `generic`,
//! read back from the kernel; native XDP on a veth with MTU 9000 is refused
//! with a message naming the MTU; `show` reports the mode the kernel holds.
//!
//! The interface without native XDP is a dummy (`ip link add X type
//! dummy`); on a kernel built without the dummy driver, an ifb device (no
//! native XDP either) stands in, and the test says so.

use std::time::Duration;

use vaultfw_tests::agent::{LeftPins, run_in_netns, xdp_attached};
use vaultfw_tests::netns::unique_name;
use vaultfw_tests::{Agent, AgentOptions, AgentPaths, CliOutput, NetNs, PolicyFile, Topology};

const POLICY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]
"#;

const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates an interface without native XDP in `ns`, up; returns its name.
fn interface_without_native_xdp(ns: &NetNs) -> String {
    let name = unique_name("d");
    if ns.try_ip(&["link", "add", &name, "type", "dummy"]).is_err() {
        eprintln!("note: this kernel has no dummy driver; an ifb device (no native XDP) stands in");
        ns.ip(&["link", "add", &name, "type", "ifb"]);
    }
    ns.ip(&["link", "set", &name, "up"]);
    name
}

/// `vaultfw run --iface IFACE --xdp-mode MODE` in `ns` with private paths,
/// expected to fail: returns its output once it has exited.
fn failing_run(ns: &NetNs, iface: &str, mode: &str) -> CliOutput {
    let policy = PolicyFile::new(POLICY);
    let paths = AgentPaths::new(&policy);
    let _pins = LeftPins(paths.clone());
    let mut args: Vec<String> = ["run", "--iface", iface, "--xdp-mode", mode, "--policy"]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    args.push(policy.path_str().to_owned());
    args.extend(paths.args());
    args.extend(["--on-exit".to_owned(), "detach".to_owned()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = CliOutput::new(args.clone(), run_in_netns(ns, &refs, RUN_TIMEOUT));
    assert!(
        !out.stdout.contains("\"message\":\"filtering\""),
        "it started filtering: {}",
        out.context()
    );
    out
}

#[test]
fn native_mode_without_driver_support_fails_naming_the_interface_and_generic_mode() {
    let ns = NetNs::new("k");
    let iface = interface_without_native_xdp(&ns);
    let out = failing_run(&ns, &iface, "native");
    assert!(matches!(out.code, Some(c) if c != 0), "{}", out.context());
    assert!(
        out.stderr.contains(&iface),
        "the message does not name {iface}: {}",
        out.context()
    );
    assert!(
        out.stderr.contains("--xdp-mode generic"),
        "the message does not suggest --xdp-mode generic: {}",
        out.context()
    );
    assert!(
        out.stderr.contains("native XDP"),
        "the message does not say the driver lacks native XDP: {}",
        out.context()
    );
    assert!(
        !xdp_attached(&ns, &iface),
        "something was attached to {iface}"
    );
}

#[test]
fn auto_mode_without_driver_support_attaches_generic_with_a_warning() {
    let ns = NetNs::new("k");
    let iface = interface_without_native_xdp(&ns);
    let options = AgentOptions {
        extra_args: vec!["--xdp-mode".to_owned(), "auto".to_owned()],
        ..AgentOptions::iface(&iface)
    };
    let mut agent = Agent::start_with(&ns, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();
    let warned = agent.log_lines().into_iter().any(|l| {
        l["log"]["level"] == "warn"
            && l["vaultfw"]["interface"] == iface.as_str()
            && l["message"].as_str().is_some_and(|m| m.contains("generic"))
    });
    assert!(
        warned,
        "no warning about the generic fallback:\n{}",
        agent.output()
    );
    let show = agent.show();
    assert_eq!(show["interfaces"][0]["name"], iface.as_str(), "{show:#}");
    assert_eq!(show["interfaces"][0]["mode"], "generic", "{show:#}");
    let link = ns.ip(&["-d", "link", "show", "dev", &iface]);
    assert!(
        link.contains("xdpgeneric"),
        "the kernel holds no generic program: {link}"
    );
    agent.stop();
}

#[test]
fn native_mode_on_a_veth_with_mtu_9000_is_refused_naming_the_mtu() {
    let ns = NetNs::new("k");
    let (a, b) = (unique_name("j"), unique_name("j"));
    ns.ip(&[
        "link", "add", &a, "mtu", "9000", "type", "veth", "peer", "name", &b, "mtu", "9000",
    ]);
    for dev in [&a, &b] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    let out = failing_run(&ns, &a, "native");
    assert!(matches!(out.code, Some(c) if c != 0), "{}", out.context());
    assert!(
        out.stderr.contains(&a),
        "the message does not name {a}: {}",
        out.context()
    );
    assert!(
        out.stderr.contains("MTU"),
        "the message does not mention the MTU: {}",
        out.context()
    );
    assert!(
        out.stderr.contains("9000"),
        "the message does not name the MTU (9000): {}",
        out.context()
    );
    assert!(!xdp_attached(&ns, &a), "something was attached to {a}");
}

#[test]
fn show_reports_the_mode_the_kernel_holds_for_a_generic_request_on_a_veth() {
    let topo = Topology::new();
    let options = AgentOptions {
        extra_args: vec!["--xdp-mode".to_owned(), "generic".to_owned()],
        ..AgentOptions::iface(topo.server_veth())
    };
    let mut agent = Agent::start_with(&topo.server, POLICY, options);
    agent.wait_ready();
    agent.wait_serving();
    let show = agent.show();
    assert_eq!(show["interfaces"][0]["mode"], "generic", "{show:#}");
    let link = topo
        .server
        .ip(&["-d", "link", "show", "dev", topo.server_veth()]);
    assert!(link.contains("xdpgeneric"), "{link}");
    agent.stop();
}

/// A restart asking generic mode over a native pinned link keeps the link
/// (never a moment unfiltered) and says so rather than ignoring the request
/// silently.
#[test]
fn a_restart_asking_another_mode_keeps_the_pinned_link_and_says_so() {
    let topo = Topology::new();
    let mut options = AgentOptions::iface(topo.server_veth());
    options.on_exit = "keep";
    let mut agent = Agent::start_with(&topo.server, POLICY, options.clone());
    agent.wait_ready();
    assert_eq!(agent.show()["interfaces"][0]["mode"], "native");
    let (_, policy, paths) = agent.stop_keeping();
    let _pins = LeftPins(paths.clone());
    options.extra_args = vec!["--xdp-mode".into(), "generic".into()];
    let mut restarted = Agent::spawn(&topo.server, policy, paths, options);
    restarted.wait_ready();
    assert_eq!(
        restarted.show()["interfaces"][0]["mode"],
        "native",
        "the link is kept"
    );
    assert!(
        restarted
            .output()
            .contains("differs from the pinned link's mode"),
        "the kept mode is logged:\n{}",
        restarted.output()
    );
    restarted.stop();
}
