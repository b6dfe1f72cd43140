//! `vaultfw-demo` (run by `cargo xtask demo`, as root): vaultfw doing its main
//! job on real packets. Two namespaces joined by a veth pair, TCP servers on
//! 443 (data plane) and 22 (control plane) in the protected one, `vaultfw run`
//! there with the example policy, and connections from an allowed and a
//! denied source. Then every other allow path of the ACL: a subnet arriving
//! through its service endpoint (a second veth) and the same address spoofed
//! on the public interface, and a trusted service with the bypass on, then
//! off (changed live through the CLI). Prints what got through, the counters
//! and the agent's log; exits 1 if anything differs from what the policy
//! promises. Everything it creates is removed on success, on failure and on
//! Ctrl-C.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use vaultfw_tests::agent::{AgentOptions, xdp_attached};
use vaultfw_tests::netns::leftover_namespaces;
use vaultfw_tests::{
    ALLOWED_SRC, Agent, CONNECT_TIMEOUT, COUNTERS, Connect, DENIED_SRC, SERVER_IP, TcpServer,
    Topology, cleanup, connect,
};

/// Used when the repository has no `examples/policy.toml`.
const FALLBACK_POLICY: &str = r#"default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
"#;

/// Where the agent would leave pins (DESIGN.md section 3).
const PIN_DIR: &str = "/sys/fs/bpf/vaultfw";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    install_ctrl_c_cleanup();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("vaultfw-demo needs root (namespaces, XDP): run `sudo -E cargo xtask demo`");
        return ExitCode::FAILURE;
    }
    let pins_before = Path::new(PIN_DIR).exists();
    // A panic (an agent that never gets ready, a broken topology) unwinds
    // through the guards, which remove what they created.
    let outcome = std::panic::catch_unwind(run);
    let mut ok = matches!(outcome, Ok(true));
    if outcome.is_err() {
        println!("\nthe demo stopped early (see the message above)");
    }
    let leftovers = leftover_namespaces();
    if leftovers.is_empty() {
        println!("cleanup: namespaces, veth pair and policy file removed");
    } else {
        println!("cleanup: namespaces left behind: {leftovers:?}");
        ok = false;
    }
    if !pins_before && Path::new(PIN_DIR).exists() {
        println!("cleanup: the agent left pins in {PIN_DIR}");
        ok = false;
    }
    if ok {
        println!("\ndemo: everything as the policy says");
        ExitCode::SUCCESS
    } else {
        println!("\ndemo: FAILED");
        ExitCode::FAILURE
    }
}

/// What a connection should come to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Connects,
    TimesOut,
}

/// The demo itself; `true` when every outcome matched the expectation.
fn run() -> bool {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.toml");
    let (policy, policy_source) = match std::fs::read_to_string(&example) {
        Ok(text) => (text, "examples/policy.toml".to_owned()),
        Err(_) => (
            FALLBACK_POLICY.to_owned(),
            "built-in (no examples/policy.toml)".to_owned(),
        ),
    };

    println!("== topology");
    let topo = Topology::new();
    println!(
        "  client netns {} ({}: {ALLOWED_SRC}, {DENIED_SRC})",
        topo.client.name(),
        topo.client_veth()
    );
    println!(
        "  server netns {} ({}: {SERVER_IP}/24), TCP servers on 443 (data plane) and 22 (control plane)",
        topo.server.name(),
        topo.server_veth()
    );
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let _ssh = TcpServer::start(&topo.server, topo.server_addr(22));

    println!("\n== policy ({policy_source})");
    for line in policy.lines().filter(|l| !l.trim().is_empty()) {
        println!("  {line}");
    }

    println!(
        "\n== vaultfw run --iface {} (stats every 1 s)",
        topo.server_veth()
    );
    let mut agent = Agent::start_with(
        &topo.server,
        &policy,
        AgentOptions::iface(topo.server_veth()),
    );
    agent.wait_ready();
    println!(
        "  filtering (XDP attached: {})",
        xdp_attached(&topo.server, topo.server_veth())
    );

    println!(
        "\n== connections (timeout {} ms)",
        CONNECT_TIMEOUT.as_millis()
    );
    let mut ok = true;
    let attempts: [(Ipv4Addr, u16, Expect, &str); 4] = [
        (ALLOWED_SRC, 443, Expect::Connects, "allowed by ip_rules"),
        (DENIED_SRC, 443, Expect::TimesOut, "dropped by XDP"),
        (ALLOWED_SRC, 22, Expect::Connects, "control plane"),
        (DENIED_SRC, 22, Expect::Connects, "control plane"),
    ];
    for (src, port, expect, why) in attempts {
        let start = Instant::now();
        let outcome = connect(&topo.client, src, topo.server_addr(port), CONNECT_TIMEOUT);
        let ms = start.elapsed().as_millis();
        let (what, matched) = match &outcome {
            Connect::Established { .. } if expect == Expect::Connects => {
                (format!("connected ({why})"), true)
            }
            Connect::Established { .. } => ("connected".to_owned(), false),
            Connect::TimedOut if expect == Expect::TimesOut => {
                (format!("timed out after {ms} ms ({why})"), true)
            }
            Connect::TimedOut => (format!("timed out after {ms} ms"), false),
            Connect::Refused => ("refused (RST)".to_owned(), false),
            Connect::Failed(err) => (format!("failed: {err}"), false),
        };
        let want = match expect {
            Expect::Connects => "connect",
            Expect::TimesOut => "time out",
        };
        let verdict = if matched {
            "ok".to_owned()
        } else {
            format!("UNEXPECTED (should {want})")
        };
        println!("  {src:<15} -> {SERVER_IP}:{port:<4} {what:<45} {verdict}");
        ok &= matched;
    }

    println!("\n== stopping the agent (SIGTERM)");
    let stats = agent.stop();
    let attached = xdp_attached(&topo.server, topo.server_veth());
    println!("  exited: {}; XDP still attached: {attached}", stats.status);
    ok &= !attached;

    println!("\n== verdict counters (totals)");
    for name in COUNTERS {
        match stats.counters.get(name) {
            Some(n) => println!("  {name:<24} {n}"),
            None => {
                println!("  {name:<24} (not reported)");
                ok = false;
            }
        }
    }
    if stats.counters.get("deny_no_match").copied().unwrap_or(0) != 1 {
        println!("  UNEXPECTED: deny_no_match should be 1 (one dropped SYN)");
        ok = false;
    }

    println!("\n== agent log");
    for line in stats.log().lines() {
        println!("  {line}");
    }
    println!();
    ok & whole_acl()
}

/// A source inside the example subnet rule.
const SUBNET_SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
/// The protected host's address on the private link.
const PRIVATE_SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 1);
/// A source inside the AzureBackup tag of the example service-tags file.
const TRUSTED_SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 130);

/// The other allow paths: a subnet through its endpoint (and spoofed), a
/// trusted service with the bypass on and off.
fn whole_acl() -> bool {
    let tags = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../firewall-agent/tests/fixtures/ServiceTags_test.json");
    println!("== the whole ACL: subnet rules through their endpoint, trusted services");
    let topo = Topology::with_client_addrs(&[TRUSTED_SRC]);
    let (_, private) = topo.add_private_link(&format!("{PRIVATE_SERVER}/24"), &[SUBNET_SRC]);
    let any = |port| std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    let _https = TcpServer::start(&topo.server, any(443));
    let policy = format!(
        r#"default_action = "Deny"
bypass = "AzureServices"
ip_rules = ["203.0.113.0/24"]

[[virtual_network_rules]]
id = "vnet-prod/subnets/app"
address_prefixes = ["10.1.2.0/24"]
endpoint = {{ interface = "{private}" }}

[trusted_services]
service_tags_file = "{}"
enabled = ["AzureBackup"]
"#,
        tags.display()
    );
    for line in policy.lines().filter(|l| !l.trim().is_empty()) {
        println!("  {line}");
    }
    let mut options = AgentOptions::iface(topo.server_veth());
    options.ifaces.push(private.clone());
    let mut agent = Agent::start_with(&topo.server, &policy, options);
    agent.wait_ready();
    println!(
        "  filtering on {} (public) and {private} (the subnet's endpoint)",
        topo.server_veth()
    );

    let mut ok = true;
    let attempt = |src: Ipv4Addr, dst: Ipv4Addr, expect: Expect, why: &str| -> bool {
        let outcome = connect(
            &topo.client,
            src,
            std::net::SocketAddrV4::new(dst, 443),
            CONNECT_TIMEOUT,
        );
        let matched = match expect {
            Expect::Connects => outcome.is_established(),
            Expect::TimesOut => matches!(outcome, Connect::TimedOut),
        };
        let what = if outcome.is_established() {
            "connected"
        } else {
            "timed out (dropped by XDP)"
        };
        let verdict = if matched { "ok" } else { "UNEXPECTED" };
        println!("  {src:<15} -> {dst}:443  {what:<28} {why:<45} {verdict}");
        matched
    };
    ok &= attempt(
        SUBNET_SRC,
        PRIVATE_SERVER,
        Expect::Connects,
        "subnet rule, through its endpoint",
    );
    ok &= attempt(
        SUBNET_SRC,
        SERVER_IP,
        Expect::TimesOut,
        "same address spoofed on the public interface",
    );
    ok &= attempt(
        TRUSTED_SRC,
        SERVER_IP,
        Expect::Connects,
        "trusted service AzureBackup, bypass on",
    );

    println!("  $ vaultfw update --bypass None");
    let out = agent.cli(&["update", "--bypass", "None"]);
    print!(
        "{}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    ok &= out.status.success();
    ok &= attempt(
        TRUSTED_SRC,
        SERVER_IP,
        Expect::TimesOut,
        "trusted service, bypass off",
    );

    let stats = agent.stop();
    println!("\n== verdict counters of the whole-ACL run");
    for name in ["allow_vnet_rule", "allow_trusted_service", "deny_no_match"] {
        println!("  {name:<24} {}", stats.get(name));
    }
    println!();
    ok
}

/// On Ctrl-C: stop the agent (so it detaches), delete the namespaces and the
/// policy file, and exit 130. The guards' `Drop` would not run on that exit,
/// so this goes through the harness's registry.
fn install_ctrl_c_cleanup() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Once cleanup has pulled the namespaces away, the main thread's
        // failures are noise.
        if !INTERRUPTED.load(Ordering::SeqCst) {
            default_hook(info);
        }
    }));
    let result = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            return;
        }
        eprintln!("\ninterrupted: cleaning up");
        for done in cleanup::cleanup_everything() {
            eprintln!("  {done}");
        }
        std::process::exit(130);
    });
    if let Err(err) = result {
        eprintln!("warning: no Ctrl-C handler ({err}); an interrupted demo may leave namespaces");
    }
}
