//! Without root, `vaultfw check` and `vaultfw run` say that a privilege is
//! missing — root, or the capabilities the README lists — never that the
//! kernel is too old (before this was fixed they said "the running kernel
//! lacks XDP ... run a newer kernel").
//!
//! Both run as uid/gid 65534 with no capabilities at all (`setpriv`), on a
//! throwaway pin directory and socket; nothing may be attached or pinned.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vaultfw_tests::agent::{LeftPins, run_program_in_netns, xdp_attached};
use vaultfw_tests::cli::exit;
use vaultfw_tests::{AgentPaths, CliOutput, PolicyFile, Topology, vaultfw_bin};

const POLICY: &str = r#"
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]
"#;

const NOBODY: [&str; 5] = [
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
    "--",
];
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// A copy of the binary, the policy and a socket directory that uid 65534
/// can use (the test's own temp directories are private to root).
struct ForNobody {
    _dir: tempfile::TempDir,
    binary: PathBuf,
    policy: PathBuf,
    socket: PathBuf,
}

impl ForNobody {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vaultfw-nobody-")
            .tempdir()
            .expect("a temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let binary = dir.path().join("vaultfw");
        std::fs::copy(vaultfw_bin(), &binary).expect("copying vaultfw");
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, POLICY).expect("writing the policy");
        std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let sockets = dir.path().join("run");
        std::fs::create_dir(&sockets).expect("creating the socket directory");
        std::os::unix::fs::chown(&sockets, Some(65534), Some(65534)).expect("chown");
        ForNobody {
            binary,
            policy,
            socket: sockets.join("vaultfw.sock"),
            _dir: dir,
        }
    }
}

fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 paths")
}

/// Panics unless `out` failed with a message that names root and the
/// capabilities and says nothing of the kernel.
fn assert_names_the_missing_privilege(out: &CliOutput) {
    assert!(
        out.code.is_some_and(|c| c != 0),
        "it succeeded without privileges: {}",
        out.context()
    );
    let message = out.stderr.trim();
    for needed in [
        "root",
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_NET_ADMIN",
        "CAP_SYS_ADMIN",
    ] {
        assert!(
            message.contains(needed),
            "the message does not name {needed}: {}",
            out.context()
        );
    }
    for output in [&out.stderr, &out.stdout] {
        assert!(
            !output.to_lowercase().contains("kernel"),
            "a missing privilege is reported as a kernel matter: {}",
            out.context()
        );
    }
}

#[test]
fn without_privileges_check_and_run_name_root_and_the_capabilities_not_the_kernel() {
    let topo = Topology::new();
    let files = ForNobody::new();

    let mut check: Vec<&str> = NOBODY.to_vec();
    check.extend([
        text(&files.binary),
        "check",
        "--policy",
        text(&files.policy),
    ]);
    check.extend([
        "--src",
        "203.0.113.7",
        "--dst",
        "192.0.2.1",
        "--proto",
        "tcp",
        "--dport",
        "443",
    ]);
    let output = Command::new("setpriv")
        .args(&check)
        .output()
        .expect("running setpriv");
    let out = CliOutput::new(check.iter().map(|a| (*a).to_owned()).collect(), output);
    assert_names_the_missing_privilege(&out);

    let unused = PolicyFile::new("");
    let mut paths = AgentPaths::new(&unused);
    paths.socket = files.socket.clone();
    let _pins = LeftPins(paths.clone());
    let mut run: Vec<String> = NOBODY.iter().map(|a| (*a).to_owned()).collect();
    run.extend(
        [
            text(&files.binary),
            "run",
            "--iface",
            topo.server_veth(),
            "--policy",
            text(&files.policy),
        ]
        .map(str::to_owned),
    );
    run.extend(paths.args());
    run.extend(["--on-exit".to_owned(), "detach".to_owned()]);
    // Runs `args` as nobody: refused, naming the privilege, exit 4.
    let refused = |args: &[String]| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = CliOutput::new(
            args.to_vec(),
            run_program_in_netns(&topo.server, Path::new("setpriv"), &refs, RUN_TIMEOUT),
        );
        assert_names_the_missing_privilege(&out);
        assert_eq!(
            out.code,
            Some(exit::KERNEL_REFUSED),
            "a missing privilege exits 4: {}",
            out.context()
        );
    };
    refused(&run);
    assert!(
        !xdp_attached(&topo.server, topo.server_veth()),
        "something was attached"
    );

    // The same start with a socket in a directory only root may write (the
    // default /run/vaultfw is one): refused on the socket, naming the same.
    let root_only = tempfile::tempdir().expect("a temp dir");
    let socket = root_only.path().join("vaultfw.sock");
    let at = run
        .iter()
        .position(|a| a == "--socket")
        .expect("--socket given")
        + 1;
    run[at] = text(&socket).to_owned();
    refused(&run);
    assert!(
        !paths.pin_dir.exists(),
        "{} was created",
        paths.pin_dir.display()
    );
}
