//! `cargo xtask package --test`: the outputs of `cargo xtask package`,
//! used as an operator uses them. Each test prints `test NAME ... ok` or
//! `FAILED` with the reason; a summary line counts them, and any failure
//! fails the command.
//!
//! - the .deb, unpacked into a scratch root (`dpkg -x`): its files are
//!   there (conffiles declared), its binary validates the installed example
//!   policy and judges frames with `check` (the real XDP program, through
//!   BPF_PROG_TEST_RUN);
//! - the image, run with podman (`--network none`): `--version`, its
//!   labels, and `validate` of a mounted policy, among them the Kubernetes
//!   ConfigMaps' policy with the service-tags file where the DaemonSet
//!   mounts it;
//! - the systemd unit as installed: `systemd-analyze security` at most 3.0
//!   and `systemd-analyze verify` clean;
//! - the daemon runs with only the unit's and the DaemonSet's capabilities
//!   (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN) on an existing bpffs, and
//!   attaches;
//! - the Kubernetes manifests: yamllint (strict), kubernetes-validate
//!   (strict; a pinned version in a venv under target/package/), and the
//!   cross-references between them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::{Outputs, output, storage_args};
use crate::bootstrap::{self, run};
use crate::tasks::workspace_root;

/// Debian packages the tests need, and why.
const PACKAGES: &[(&str, &str)] = &[
    ("systemd", "systemd-analyze security and verify"),
    (
        "man-db",
        "systemd-analyze verify checks the unit's man: links",
    ),
    ("procps", "/bin/kill, the unit's ExecReload"),
    (
        "runc",
        "podman's runtime (works with cgroup v1, hybrid and v2)",
    ),
    ("yamllint", "lints the Kubernetes manifests"),
    ("python3-venv", "a venv for kubernetes-validate"),
    ("python3-yaml", "reads the manifests for the cross-checks"),
    ("util-linux", "setpriv: the daemon with fewer capabilities"),
    ("iproute2", "the network namespace of the capability test"),
];
/// kubernetes-validate from PyPI: the Kubernetes schemas, offline.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
/// The highest `systemd-analyze security` exposure the unit may have.
const MAX_EXPOSURE: f64 = 3.0;
/// Custom resources kubernetes-validate has no schema for; the
/// cross-checks cover them.
const CUSTOM_KINDS: &[&str] = &["PodMonitor"];

/// Runs every package test.
pub fn test(outputs: &Outputs) -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the package tests need root (podman, XDP): run `sudo -E cargo xtask package --test`"
    );
    bootstrap::ensure_debian_packages("package --test", PACKAGES)?;
    let root = install_scratch_root(outputs)?;
    let tests: [(&str, &dyn Fn() -> Result<()>); 5] = [
        (
            "deb_installs_into_a_scratch_root_and_its_binary_validates_and_checks",
            &|| deb_installs(outputs, &root),
        ),
        (
            "image_runs_without_network_and_validates_a_mounted_policy",
            &|| image_runs(outputs),
        ),
        (
            "systemd_unit_scores_at_most_3_0_and_verifies_clean",
            &|| systemd_unit(&root),
        ),
        (
            "daemon_attaches_with_only_bpf_perfmon_and_net_admin",
            &|| daemon_with_fewer_capabilities(&root),
        ),
        ("kubernetes_manifests_validate_strictly_and_agree", &|| {
            manifests(outputs)
        }),
    ];
    let total = tests.len();
    let mut failed = Vec::new();
    for (name, test) in tests {
        match test() {
            Ok(()) => println!("test package::{name} ... ok"),
            Err(err) => {
                println!("test package::{name} ... FAILED\n  {err:#}");
                failed.push(name);
            }
        }
    }
    println!(
        "package tests: {} passed, {} failed",
        total - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!("package tests failed: {}", failed.join(", "));
    }
    Ok(())
}

/// `dpkg -x` of the .deb into `target/package/scratch-root`, fresh.
fn install_scratch_root(outputs: &Outputs) -> Result<PathBuf> {
    let root = outputs.dir.join("scratch-root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::create_dir_all(&root)?;
    run(Command::new("dpkg").arg("-x").arg(&outputs.deb).arg(&root)).context("dpkg -x")?;
    Ok(root)
}

fn deb_installs(outputs: &Outputs, root: &Path) -> Result<()> {
    for file in [
        "usr/sbin/vaultfw",
        "lib/systemd/system/vaultfw.service",
        "etc/default/vaultfw",
        "etc/vaultfw/policy.toml",
        "usr/share/man/man8/vaultfw.8.gz",
        "usr/share/man/man8/vaultfw-run.8.gz",
        "usr/share/man/man8/vaultfw-network-rule-add.8.gz",
        "usr/share/man/man5/vaultfw-policy.5.gz",
        "usr/share/bash-completion/completions/vaultfw",
        "usr/share/zsh/vendor-completions/_vaultfw",
        "usr/share/fish/vendor_completions.d/vaultfw.fish",
        "usr/share/doc/vaultfw/copyright",
    ] {
        ensure!(root.join(file).is_file(), "the .deb has no /{file}");
    }
    let conffiles = output(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&outputs.deb)
            .arg("conffiles"),
    )?;
    for conffile in ["/etc/vaultfw/policy.toml", "/etc/default/vaultfw"] {
        ensure!(
            conffiles.lines().any(|l| l.trim() == conffile),
            "{conffile} is not a conffile: {conffiles:?}"
        );
    }
    let postinst = output(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&outputs.deb)
            .arg("postinst"),
    )?;
    let code: Vec<&str> = postinst
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    ensure!(
        !code
            .iter()
            .any(|l| l.contains("start") || l.contains("enable")),
        "the postinst starts or enables something:\n{postinst}"
    );

    let binary = root.join("usr/sbin/vaultfw");
    let policy = root.join("etc/vaultfw/policy.toml");
    run(Command::new(&binary).arg("validate").arg(&policy))
        .context("the installed binary's validate of the installed policy")?;
    // The example policy lets 203.0.113.0/24 in and nothing else.
    for (source, verdict) in [("203.0.113.5", "XDP_PASS"), ("198.51.100.7", "XDP_DROP")] {
        let json = output(
            Command::new(&binary)
                .args(["check", "--policy"])
                .arg(&policy)
                .args(["--src", source, "--dst", "192.0.2.10", "--proto", "tcp"])
                .args(["--dport", "443", "--output", "json"]),
        )?;
        let line: Value = serde_json::from_str(json.trim())
            .with_context(|| format!("`vaultfw check --output json` printed {json:?}"))?;
        ensure!(
            line["verdict"] == verdict,
            "check from {source}: {line}, expected {verdict}"
        );
    }
    Ok(())
}

/// A podman command on xtask's own storage. runc, and limits within the
/// caller's: podman's defaults raise nofile/nproc, which a CI container
/// may forbid, and crun refuses hybrid cgroup hierarchies.
fn podman(outputs: &Outputs) -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(storage_args(&outputs.dir))
        .args(["--runtime", "runc"]);
    cmd
}

/// `podman run --rm --network none` of the image with `args`.
fn podman_run(
    outputs: &Outputs,
    image: &str,
    volumes: &[(PathBuf, &str)],
    args: &[&str],
) -> Result<String> {
    let mut cmd = podman(outputs);
    cmd.args(["run", "--rm", "--network", "none", "--read-only"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
    for (host, container) in volumes {
        cmd.arg("--volume")
            .arg(format!("{}:{container}:ro", host.display()));
    }
    output(cmd.arg(image).args(args))
}

fn image_runs(outputs: &Outputs) -> Result<()> {
    let loaded = output(
        podman(outputs)
            .args(["load", "--quiet", "--input"])
            .arg(&outputs.image),
    )?;
    let image = loaded
        .trim()
        .strip_prefix("Loaded image: ")
        .with_context(|| format!("podman load printed {loaded:?}"))?
        .to_owned();
    let version = podman_run(outputs, &image, &[], &["--version"])?;
    ensure!(
        version.trim() == format!("vaultfw {}", outputs.version),
        "--version in the image: {version:?}"
    );
    let inspect = output(podman(outputs).args(["image", "inspect", &image]))?;
    let config: Value = serde_json::from_str(&inspect)?;
    let config = &config[0]["Config"];
    ensure!(
        config["Entrypoint"] == serde_json::json!(["/usr/sbin/vaultfw"]),
        "entry point: {}",
        config["Entrypoint"]
    );
    for label in ["title", "version", "source", "licenses", "revision"] {
        let key = format!("org.opencontainers.image.{label}");
        ensure!(
            config["Labels"][&key]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "label {key} missing: {}",
            config["Labels"]
        );
    }
    let policy = workspace_root().join("examples/policy.toml");
    let valid = podman_run(
        outputs,
        &image,
        &[(policy, "/etc/vaultfw/policy.toml")],
        &["validate", "/etc/vaultfw/policy.toml"],
    )?;
    ensure!(
        valid.contains("valid"),
        "validate in the image printed {valid:?}"
    );
    Ok(())
}

fn systemd_unit(root: &Path) -> Result<()> {
    // verify resolves the unit's dependencies and commands inside the
    // root: give it systemd's own units and the ExecReload's kill (the
    // package depends on procps).
    let units = root.join("usr/lib/systemd");
    fs::create_dir_all(&units)?;
    run(Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(&units))?;
    fs::create_dir_all(root.join("bin"))?;
    fs::copy("/bin/kill", root.join("bin/kill")).context("copying /bin/kill")?;

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg("vaultfw.service")
        .output()?;
    let text = String::from_utf8_lossy(&security.stdout);
    let exposure = exposure(&text).with_context(|| {
        format!(
            "no exposure in systemd-analyze security's output: {text}{}",
            String::from_utf8_lossy(&security.stderr)
        )
    })?;
    println!("  systemd-analyze security: exposure {exposure:.1}");
    ensure!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} > {MAX_EXPOSURE}:\n{text}"
    );

    let verify = Command::new("systemd-analyze")
        .args(["verify", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg("vaultfw.service")
        // The Documentation= man pages, as installed.
        .env("MANPATH", root.join("usr/share/man"))
        .output()?;
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    ensure!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify ({}):\n{complaints}",
        verify.status
    );
    Ok(())
}

/// `→ Overall exposure level for vaultfw.service: 2.0 OK 🙂` → 2.0.
fn exposure(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    line.rsplit_once(": ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The daemon, in a network namespace of its own holding a veth pair,
/// started with the capability bounding set the unit and the DaemonSet
/// give it; `show` must report the interface filtered.
fn daemon_with_fewer_capabilities(root: &Path) -> Result<()> {
    let id = std::process::id();
    let namespace = format!("vfwpkg{id}");
    let pins = PathBuf::from(format!("/sys/fs/bpf/vaultfw-pkgtest-{id}"));
    let socket = PathBuf::from(format!("/run/vaultfw-pkgtest-{id}.sock"));
    // systemd mounts bpffs at boot, and the kubelet's hosts have it; a
    // bare CI machine may not: mount it as systemd would, since the daemon
    // without CAP_SYS_ADMIN cannot.
    let fs_type = output(Command::new("stat").args(["-f", "-c", "%T", "/sys/fs/bpf"]))?;
    if fs_type.trim() != "bpf_fs" {
        run(Command::new("mount").args(["-t", "bpf", "bpffs", "/sys/fs/bpf"]))
            .context("mounting bpffs at /sys/fs/bpf")?;
    }
    run(Command::new("ip").args(["netns", "add", &namespace]))?;
    let result = (|| -> Result<()> {
        let ip = |args: &[&str]| run(Command::new("ip").args(["-n", &namespace]).args(args));
        ip(&[
            "link", "add", "vfw0", "type", "veth", "peer", "name", "vfw1",
        ])?;
        ip(&["link", "set", "vfw0", "up"])?;
        ip(&["link", "set", "vfw1", "up"])?;
        let binary = root.join("usr/sbin/vaultfw");
        let mut daemon = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{namespace}"))
            .args([
                "setpriv",
                "--bounding-set=-all,+bpf,+perfmon,+net_admin",
                "--",
            ])
            .arg(&binary)
            .args([
                "run",
                "--iface",
                "vfw0",
                "--no-watch",
                "--on-exit",
                "detach",
            ])
            .arg("--policy")
            .arg(root.join("etc/vaultfw/policy.toml"))
            .arg("--pin-dir")
            .arg(&pins)
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the daemon")?;
        let shown = wait_for_show(&binary, &socket, &mut daemon);
        let capabilities = fs::read_to_string(format!("/proc/{}/status", daemon.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .map(|c| c.trim().to_owned())
            });
        stop(&mut daemon);
        let shown = shown?;
        // nsenter execs setpriv, which execs vaultfw: the child is the
        // daemon. CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
        let expected = format!("{:016x}", (1u64 << 12) | (1 << 38) | (1 << 39));
        ensure!(
            capabilities.as_deref() == Some(expected.as_str()),
            "the daemon's effective capabilities were {capabilities:?}, expected {expected}"
        );
        ensure!(
            shown.contains("vfw0"),
            "`vaultfw show` does not name vfw0:\n{shown}"
        );
        Ok(())
    })();
    let _ = Command::new("ip")
        .args(["netns", "delete", &namespace])
        .status();
    let _ = fs::remove_dir_all(&pins);
    let _ = fs::remove_file(&socket);
    result
}

/// Polls `vaultfw show` until the daemon answers (at most 30 s, a bound
/// for a hung start, not a timing assertion).
fn wait_for_show(binary: &Path, socket: &Path, daemon: &mut Child) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = daemon.try_wait()? {
            bail!("the daemon exited ({status}) before it served `show`");
        }
        let out = Command::new(binary)
            .arg("show")
            .arg("--socket")
            .arg(socket)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && text.contains("vfw0") {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon did not serve `show` within 30 s: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SIGTERM, then wait (`--on-exit detach` removes the filter and pins).
fn stop(daemon: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(daemon.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = daemon.wait();
}

fn manifests(outputs: &Outputs) -> Result<()> {
    let dir = workspace_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|f| f.extension().is_some_and(|e| e == "yaml") && !is_dotfile(f));
    files.sort();
    ensure!(!files.is_empty(), "no manifests in {}", dir.display());

    run(Command::new("yamllint")
        .args(["--strict", "--config-file"])
        .arg(dir.join(".yamllint.yaml"))
        .args(&files))
    .context("yamllint")?;

    let validator = kubernetes_validate(outputs)?;
    let out = Command::new(&validator)
        .args(["--strict", "--quiet"])
        .args(&files)
        .output()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let unexpected: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !CUSTOM_KINDS
                .iter()
                .any(|k| l.contains(&format!("schema for kind {k} ")))
        })
        .collect();
    ensure!(
        out.status.success() && unexpected.is_empty(),
        "kubernetes-validate --strict ({}):\n{report}",
        out.status
    );

    let documents: Vec<Value> = files
        .iter()
        .map(|f| yaml_documents(f))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    cross_check(outputs, &documents)
}

fn is_dotfile(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// `kubernetes-validate` in a venv under target/package/, installed once.
fn kubernetes_validate(outputs: &Outputs) -> Result<PathBuf> {
    let venv = outputs.dir.join("venv");
    let validator = venv.join("bin/kubernetes-validate");
    let installed = venv.join(format!(".{KUBERNETES_VALIDATE}"));
    if !installed.exists() {
        println!(
            "xtask: package --test: installing {KUBERNETES_VALIDATE} (PyPI) in {}",
            venv.display()
        );
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", KUBERNETES_VALIDATE]))?;
        fs::write(&installed, "")?;
    }
    Ok(validator)
}

/// The documents of a YAML file, as JSON values (python3-yaml reads it).
fn yaml_documents(file: &Path) -> Result<Vec<Value>> {
    let json = output(
        Command::new("python3")
            .args([
                "-c",
                "import json, sys, yaml; \
                 print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
            ])
            .arg(file),
    )?;
    Ok(serde_json::from_str(&json)?)
}

/// The manifests agree with each other and with the agent: the PodMonitor
/// selects the DaemonSet's pods and scrapes a port they declare; the
/// DaemonSet mounts the ConfigMaps; the policy ConfigMap validates in the
/// image with the service-tags ConfigMap where the DaemonSet mounts it;
/// the agent container holds no capability beyond BPF, PERFMON, NET_ADMIN.
fn cross_check(outputs: &Outputs, documents: &[Value]) -> Result<()> {
    let find = |kind: &str, name: &str| {
        documents
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .with_context(|| format!("no {kind} {name} in deploy/kubernetes"))
    };
    let daemonset = find("DaemonSet", "vaultfw")?;
    let pod = &daemonset["spec"]["template"];
    let monitor = find("PodMonitor", "vaultfw")?;
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("PodMonitor without matchLabels")?;
    for (key, value) in selector {
        ensure!(
            pod["metadata"]["labels"][key] == *value,
            "the PodMonitor selects {key}={value}, which the DaemonSet's pods lack"
        );
    }
    let containers = pod["spec"]["containers"]
        .as_array()
        .context("no containers")?;
    let ports: Vec<&Value> = containers
        .iter()
        .filter_map(|c| c["ports"].as_array())
        .flatten()
        .map(|p| &p["name"])
        .collect();
    for endpoint in monitor["spec"]["podMetricsEndpoints"]
        .as_array()
        .into_iter()
        .flatten()
    {
        ensure!(
            ports.contains(&&endpoint["port"]),
            "the PodMonitor scrapes port {}, which no container declares",
            endpoint["port"]
        );
    }
    let agent = containers
        .iter()
        .find(|c| c["name"] == "vaultfw")
        .context("no vaultfw container")?;
    let added = &agent["securityContext"]["capabilities"]["add"];
    ensure!(
        *added == serde_json::json!(["BPF", "PERFMON", "NET_ADMIN"])
            && agent["securityContext"]["capabilities"]["drop"] == serde_json::json!(["ALL"])
            && agent["securityContext"]["privileged"] != true,
        "the agent's capabilities: {}",
        agent["securityContext"]
    );

    // Each ConfigMap volume's mount point, and the files the ConfigMap
    // holds there.
    let mut volumes = Vec::new();
    let tmp = outputs.dir.join("manifest-files");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let Some(map) = volume["configMap"]["name"].as_str() else {
            continue;
        };
        let mount = agent["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == volume["name"])
            .and_then(|m| m["mountPath"].as_str())
            .with_context(|| format!("ConfigMap {map} is not mounted in the agent"))?;
        let data = find("ConfigMap", map)?["data"]
            .as_object()
            .with_context(|| format!("ConfigMap {map} has no data"))?;
        for (key, text) in data {
            let host = tmp.join(map).join(key);
            fs::create_dir_all(host.parent().unwrap())?;
            fs::write(&host, text.as_str().unwrap_or_default())?;
            volumes.push((host, format!("{mount}/{key}")));
        }
    }
    let policy = "/etc/vaultfw/policy.toml";
    ensure!(
        volumes.iter().any(|(_, c)| c == policy),
        "no ConfigMap mounted at {policy}"
    );
    let loaded = output(
        podman(outputs)
            .args(["load", "--quiet", "--input"])
            .arg(&outputs.image),
    )?;
    let image = loaded
        .trim()
        .trim_start_matches("Loaded image: ")
        .to_owned();
    let mounts: Vec<(PathBuf, &str)> = volumes
        .iter()
        .map(|(h, c)| (h.clone(), c.as_str()))
        .collect();
    let valid = podman_run(outputs, &image, &mounts, &["validate", policy])
        .context("the ConfigMaps' policy in the image, mounted as the DaemonSet mounts it")?;
    ensure!(valid.contains("valid"), "validate printed {valid:?}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_is_read_from_systemd_analyze_security_output() {
        let text = "  NAME  DESCRIPTION  EXPOSURE\n\
                    ✗ PrivateNetwork=  Service has access to the host's network  0.5\n\n\
                    → Overall exposure level for vaultfw.service: 2.0 OK 🙂\n";
        assert_eq!(exposure(text), Some(2.0));
        assert_eq!(
            exposure("→ Overall exposure level for x.service: 9.6 UNSAFE 😨"),
            Some(9.6)
        );
        assert_eq!(exposure("nothing"), None);
    }
}
