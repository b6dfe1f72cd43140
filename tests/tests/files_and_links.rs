//! Safe file handling: the policy write-back and
//! the access log never follow a link they did not create, and never leave
//! half a record behind.
//!
//! - A policy file that is a symbolic link (the layout of a Kubernetes
//!   ConfigMap volume) is written through: a CLI change lands in the link's
//!   target, the link stays a link, the kernel serves the change, and a
//!   later swap of the ConfigMap's `..data` link, or a pull into the
//!   checkout a link points into, is still picked up.
//! - Links planted beside the policy file (at the name the write-back used
//!   to choose) are neither followed nor replaced: the root-owned file they
//!   point to keeps its contents and mode. Temporary files an interrupted
//!   write left behind are removed at start; nothing else is.
//! - The access log is created 0640; a link at its path is refused (at
//!   start and on SIGHUP). On a full disk, every line of the file stays a
//!   whole JSON record, and the records held back are written once there is
//!   space again, in order.

use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use vaultfw_tests::raw::{mac, send_frames, tcp_syn};
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{
    Agent, AgentOptions, AgentPaths, DENIED_SRC, PolicyFile, SERVER_IP, TcpServer, Topology,
};

const POLICY: &str = r#"# served from a ConfigMap
default_action = "Deny"
bypass = "None"
ip_rules = ["203.0.113.0/24"]

[data_plane]
tcp_ports = [443]
"#;

const WAIT: Duration = Duration::from_secs(10);

/// A source the CLI adds in the tests.
const ADDED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
/// A source the next ConfigMap version allows.
const NEXT_VERSION: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);

/// A policy file laid out as Kubernetes mounts a ConfigMap key:
/// `policy.toml -> ..data/policy.toml`, `..data -> ..v1`, the file in `..v1/`.
struct ConfigMapPolicy {
    policy: PolicyFile,
    dir: PathBuf,
}

impl ConfigMapPolicy {
    fn new(contents: &str) -> Self {
        let policy = PolicyFile::new(contents);
        let dir = policy.path().parent().expect("a temp dir").to_owned();
        let v1 = dir.join("..v1");
        std::fs::create_dir(&v1).expect("creating ..v1");
        std::fs::rename(policy.path(), v1.join("policy.toml"))
            .expect("moving the policy into ..v1");
        symlink("..v1", dir.join("..data")).expect("linking ..data");
        symlink("..data/policy.toml", policy.path()).expect("linking policy.toml");
        ConfigMapPolicy { policy, dir }
    }

    /// The file the links lead to now.
    fn target(&self) -> PathBuf {
        std::fs::canonicalize(self.policy.path()).expect("resolving the policy link")
    }
}

/// What Kubernetes does on a ConfigMap update in `dir`: the new version in
/// a new directory, then `..data` swapped to it with one rename.
fn publish(dir: &Path, version: &str, contents: &str) {
    let new = dir.join(format!("..{version}"));
    std::fs::create_dir(&new).expect("creating the new version's directory");
    std::fs::write(new.join("policy.toml"), contents).expect("writing the new version");
    let swap = dir.join("..data_tmp");
    symlink(format!("..{version}"), &swap).expect("linking ..data_tmp");
    std::fs::rename(&swap, dir.join("..data")).expect("swapping ..data");
}

fn assert_is_link_to(path: &Path, target: &str) {
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        meta.file_type().is_symlink(),
        "{} is no longer a link: {meta:?}",
        path.display()
    );
    assert_eq!(
        std::fs::read_link(path).expect("reading the link"),
        Path::new(target),
        "{}",
        path.display()
    );
}

fn serving(topo: &Topology, policy: PolicyFile, extra_args: &[&str]) -> Agent {
    let paths = AgentPaths::new(&policy);
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = extra_args.iter().map(|a| (*a).to_owned()).collect();
    let mut agent = Agent::spawn(&topo.server, policy, paths, options);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

#[test]
fn a_symlinked_policy_file_stays_a_link_and_cli_edits_reach_its_target() {
    let topo = Topology::with_client_addrs(&[ADDED, NEXT_VERSION]);
    let configmap = ConfigMapPolicy::new(POLICY);
    let target = configmap.target();
    let link = configmap.policy.path().to_owned();
    let dir = configmap.dir.clone();
    let agent = serving(&topo, configmap.policy, &[]);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    assert_dropped(&topo, &agent, ADDED, 443, "before the rule is added");

    agent
        .cli_json(&["network-rule", "add", "--ip-address", &ADDED.to_string()])
        .ok();
    assert_is_link_to(&link, "..data/policy.toml");
    assert_is_link_to(&dir.join("..data"), "..v1");
    let written = std::fs::read_to_string(&target).expect("reading the link's target");
    assert!(
        written.contains(&format!("\"{ADDED}\"")),
        "the target does not hold the rule:\n{written}"
    );
    assert!(
        written.contains("# served from a ConfigMap"),
        "the comment was lost:\n{written}"
    );
    let names: Vec<String> = std::fs::read_dir(target.parent().expect("..v1"))
        .expect("listing ..v1")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names,
        ["policy.toml"],
        "a temporary file was left beside the target"
    );
    assert_connects(
        &topo,
        &agent,
        ADDED,
        443,
        "the added rule admits its source",
    );
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "a source no rule names");

    // The next ConfigMap version (which the operator also gave the added
    // rule) reaches the daemon through the link the write-back left alone.
    let next = POLICY.replace(
        r#"ip_rules = ["203.0.113.0/24"]"#,
        &format!(r#"ip_rules = ["203.0.113.0/24", "{ADDED}", "{NEXT_VERSION}"]"#),
    );
    let generation = agent.generation();
    publish(&dir, "v2", &next);
    let deadline = Instant::now() + WAIT;
    while agent.generation() == generation {
        assert!(
            Instant::now() < deadline,
            "the ..data swap was not served:\n{}",
            agent.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_connects(
        &topo,
        &agent,
        NEXT_VERSION,
        443,
        "the new ConfigMap version's rule",
    );
    assert_connects(&topo, &agent, ADDED, 443, "a rule both versions hold");
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "a source no version names");
    agent.stop();
}

#[test]
fn a_policy_file_linked_into_a_gitops_checkout_serves_cli_edits_and_later_pulls() {
    let topo = Topology::with_client_addrs(&[ADDED, NEXT_VERSION]);
    // /etc/vaultfw/policy.toml -> /srv/checkout/policy.toml, in two
    // directories.
    let checkout = PolicyFile::named("policy.toml", POLICY);
    let policy = PolicyFile::new(POLICY);
    std::fs::remove_file(policy.path()).expect("removing the file");
    symlink(checkout.path(), policy.path()).expect("linking the policy into the checkout");
    let link = policy.path().to_owned();
    let agent = serving(&topo, policy, &[]);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));

    agent
        .cli_json(&["network-rule", "add", "--ip-address", &ADDED.to_string()])
        .ok();
    assert_is_link_to(&link, checkout.path_str());
    assert_connects(&topo, &agent, ADDED, 443, "the added rule");

    // A pull brings the next version (with the added rule, committed
    // upstream): written beside the file and renamed over it, as git does.
    let next = POLICY.replace(
        r#"ip_rules = ["203.0.113.0/24"]"#,
        &format!(r#"ip_rules = ["203.0.113.0/24", "{ADDED}", "{NEXT_VERSION}"]"#),
    );
    let generation = agent.generation();
    let incoming = checkout.path().with_file_name("policy.toml.lock");
    std::fs::write(&incoming, &next).expect("writing the pulled version");
    std::fs::rename(&incoming, checkout.path()).expect("renaming it over the file");
    let deadline = Instant::now() + WAIT;
    while agent.generation() == generation {
        assert!(
            Instant::now() < deadline,
            "the pull into the link's directory was not served:\n{}",
            agent.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_is_link_to(&link, checkout.path_str());
    assert_connects(
        &topo,
        &agent,
        NEXT_VERSION,
        443,
        "the pulled version's rule",
    );
    assert_connects(&topo, &agent, ADDED, 443, "a rule both versions hold");
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "a source no version names");
    agent.stop();
}

/// A root-owned file that planted links point to, with what it must keep.
struct Victim {
    _dir: PolicyFile,
    path: PathBuf,
}

impl Victim {
    const CONTENTS: &str = "root:secret\n";

    fn new() -> Self {
        let dir = PolicyFile::named("shadow", Self::CONTENTS);
        let path = dir.path().to_owned();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Victim { _dir: dir, path }
    }

    fn assert_untouched(&self, why: &str) {
        let meta = std::fs::metadata(&self.path).expect("the victim exists");
        assert_eq!(
            std::fs::read_to_string(&self.path).expect("reading"),
            Self::CONTENTS,
            "{why}: overwritten"
        );
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "{why}: chmod'ed");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{why}: chown'ed");
    }
}

#[test]
fn links_planted_beside_the_policy_are_never_followed_and_leftover_temp_files_go_at_start() {
    let topo = Topology::with_client_addrs(&[ADDED]);
    let configmap = ConfigMapPolicy::new(POLICY);
    let target = configmap.target();
    let (dir, v1) = (
        configmap.dir.clone(),
        target.parent().expect("..v1").to_owned(),
    );
    let victim = Victim::new();
    // What an interrupted write leaves, in both directories.
    let leftovers = [
        dir.join(".policy.toml.vaultfw-AbCdEf123456.tmp"),
        v1.join(".policy.toml.vaultfw-XyZ987654321.tmp"),
    ];
    for leftover in &leftovers {
        std::fs::write(leftover, "half a poli").expect("writing a leftover");
    }
    // Names the cleanup must leave: a link with a temp file's name, and
    // files that are not vaultfw's.
    let planted_at_start = dir.join(".policy.toml.vaultfw-planted0000.tmp");
    symlink(&victim.path, &planted_at_start).expect("planting a link");
    let others = [
        dir.join("notes.txt"),
        dir.join(".other.toml.vaultfw-AbCdEf123456.tmp"),
    ];
    for other in &others {
        std::fs::write(other, "keep").expect("writing");
    }

    let agent = serving(&topo, configmap.policy, &[]);
    for leftover in &leftovers {
        assert!(
            !leftover.exists(),
            "{} was not removed at start",
            leftover.display()
        );
        assert!(
            agent.output().contains(&leftover.display().to_string()),
            "the removal of {} was not logged:\n{}",
            leftover.display(),
            agent.output()
        );
    }
    for other in &others {
        assert!(other.exists(), "{} was removed", other.display());
    }
    assert_is_link_to(&planted_at_start, victim.path.to_str().expect("UTF-8"));

    // The name the write-back used to choose (`.NAME.vaultfw-PID.tmp`), in
    // the link's directory and in the target's.
    let planted: Vec<PathBuf> = [&dir, &v1]
        .iter()
        .map(|d| d.join(format!(".policy.toml.vaultfw-{}.tmp", agent.pid())))
        .collect();
    for link in &planted {
        symlink(&victim.path, link).expect("planting a link");
    }
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    agent
        .cli_json(&["network-rule", "add", "--ip-address", &ADDED.to_string()])
        .ok();
    agent.cli_json(&["update", "--default-action", "Deny"]).ok();
    agent
        .cli_json(&["network-rule", "remove", "--ip-address", "203.0.113.0/24"])
        .ok();

    victim.assert_untouched("after three write-backs");
    for link in planted.iter().chain([&planted_at_start]) {
        assert_is_link_to(link, victim.path.to_str().expect("UTF-8"));
    }
    assert_is_link_to(agent.policy().path(), "..data/policy.toml");
    let written = std::fs::read_to_string(&target).expect("reading the target");
    assert!(
        written.contains(&format!("\"{ADDED}\"")) && !written.contains("203.0.113.0/24"),
        "{written}"
    );
    assert_connects(&topo, &agent, ADDED, 443, "the added rule");
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "a source no rule names");
    agent.stop();
    victim.assert_untouched("after the stop");
}

/// The lines of `path`, each parsed as one JSON record (panics on a line
/// that is not one: a partial record).
fn file_records(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in the middle of a line:\n{text}",
        path.display()
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "{}: a partial or broken record ({e}): {l:?}\n{text}",
                    path.display()
                )
            })
        })
        .collect()
}

/// `vaultfw logs --output json`: the records the daemon keeps.
fn logs(agent: &Agent) -> Vec<Value> {
    let out = agent.cli_json(&["logs"]);
    out.expect_code(0);
    out.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits until the daemon holds `n` access records; returns them.
fn wait_records(agent: &Agent, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let records = logs(agent);
        if records.len() >= n {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "{} record(s), expected {n}\n{}",
            records.len(),
            agent.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends one denied SYN from each of `sources` to port 443.
fn denied_syns(topo: &Topology, sources: impl IntoIterator<Item = Ipv4Addr>) {
    let (client, server) = (
        mac(&topo.client, topo.client_veth()),
        mac(&topo.server, topo.server_veth()),
    );
    let frames: Vec<Vec<u8>> = sources
        .into_iter()
        .map(|src| tcp_syn(client, server, None, src, SERVER_IP, 443))
        .collect();
    for burst in frames.chunks(16) {
        send_frames(&topo.client, topo.client_veth(), burst);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Denied sources 198.18.0.N (benchmarking space), `range` of them.
fn sources(range: std::ops::Range<u8>) -> impl Iterator<Item = Ipv4Addr> {
    range.map(|n| Ipv4Addr::new(198, 18, 0, n))
}

#[test]
fn the_access_log_is_created_0640_and_a_link_at_its_path_is_refused() {
    let topo = Topology::new();
    let files = PolicyFile::named("unused", "");
    let dir = files.path().parent().expect("a temp dir").to_owned();
    let log = dir.join("access.log");
    let victim = Victim::new();

    // A link at the path: refused at start, with the path and the fix.
    let link = dir.join("linked.log");
    symlink(&victim.path, &link).expect("planting a link");
    let mut options = AgentOptions::iface(topo.server_veth());
    options.extra_args = vec!["--access-log".into(), link.display().to_string()];
    let mut refused = Agent::start_with(&topo.server, POLICY, options);
    let status = refused.wait_exit(WAIT);
    assert!(
        !status.success(),
        "a linked access log was accepted:\n{}",
        refused.output()
    );
    let output = refused.output();
    assert!(
        output.contains(&format!(
            "--access-log {} is a symbolic link",
            link.display()
        )) && output.contains("give --access-log the path of the real file"),
        "the refusal does not name the path and the fix:\n{output}"
    );
    victim.assert_untouched("a refused start");
    drop(refused);

    let agent = serving(
        &topo,
        PolicyFile::new(POLICY),
        &["--access-log", log.to_str().expect("UTF-8")],
    );
    let mode = std::fs::metadata(&log)
        .expect("the access log exists")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o7777,
        0o640,
        "the access log was created {:o}",
        mode & 0o7777
    );
    denied_syns(&topo, sources(1..2));
    wait_records(&agent, 1);
    assert_eq!(file_records(&log).len(), 1);

    // Rotated away and a link planted in its place: the reopen refuses it
    // and the agent keeps writing to the file it has.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotating");
    symlink(&victim.path, &log).expect("planting a link at the rotated path");
    let mark = agent.log_mark();
    agent.signal(Signal::SIGHUP);
    let line = agent.wait_message(
        mark,
        "cannot reopen the access log; still writing to the old file",
        WAIT,
    );
    assert!(line.to_string().contains("symbolic link"), "{line}");
    denied_syns(&topo, sources(2..3));
    wait_records(&agent, 2);
    let deadline = Instant::now() + WAIT;
    while file_records(&rotated).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second record did not reach the open file\n{}",
            agent.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    victim.assert_untouched("a refused reopen");
    agent.stop();
    victim.assert_untouched("after the stop");
}

/// A small tmpfs mounted for one test, unmounted (lazily, so a process
/// still holding a file there cannot keep it) when dropped.
struct SmallTmpfs {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallTmpfs {
    fn new(size: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vaultfw-tmpfs-")
            .tempdir()
            .expect("a temp dir");
        let mount = dir.path().to_owned();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&mount)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs on {}: {status}",
            mount.display()
        );
        SmallTmpfs { _dir: dir, mount }
    }

    fn path(&self) -> &Path {
        &self.mount
    }

    /// Writes a file until the file system is full.
    fn fill(&self, name: &str) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.mount.join(name)).expect("creating the filler");
        let chunk = [b'x'; 512];
        loop {
            match file.write(&chunk) {
                Ok(n) if n == chunk.len() => {}
                Ok(_) | Err(_) => break,
            }
        }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

#[test]
fn the_access_log_on_a_full_disk_never_holds_a_partial_line_and_catches_up_in_order() {
    let topo = Topology::new();
    // Declared before the agent, so it is unmounted after the agent stops.
    let tmpfs = SmallTmpfs::new("64k");
    let log = tmpfs.path().join("access.log");
    let agent = serving(
        &topo,
        PolicyFile::new(POLICY),
        &["--access-log", log.to_str().expect("UTF-8")],
    );

    // A few records, so the file's last page is partly used: a record that
    // crosses into the next page gets a short write once the disk is full.
    denied_syns(&topo, sources(1..6));
    wait_records(&agent, 5);
    assert_eq!(file_records(&log).len(), 5);

    let mark = agent.log_mark();
    tmpfs.fill("filler");
    denied_syns(&topo, sources(6..46));
    wait_records(&agent, 45);
    // The daemon has handled every record: whatever the file holds now is
    // whole lines only.
    let while_full = file_records(&log);
    assert!(
        while_full.len() < 45,
        "the disk never filled: {} records written",
        while_full.len()
    );
    // Counted, in one line per counter interval.
    let line = agent.wait_log(
        mark,
        "a line counting failed access-log writes",
        WAIT,
        |l| {
            l["vaultfw"]["failed_writes"]
                .as_u64()
                .is_some_and(|n| n > 0)
        },
    );
    assert_eq!(line["vaultfw"]["records_lost"], 0, "{line}");
    assert_eq!(line["file"]["path"], log.display().to_string(), "{line}");

    let mark = agent.log_mark();
    std::fs::remove_file(tmpfs.path().join("filler")).expect("freeing space");
    denied_syns(&topo, sources(46..51));
    let all = wait_records(&agent, 50);
    agent.wait_message(
        mark,
        "access log writable again; every held record was written",
        WAIT,
    );
    let written = file_records(&log);
    let seqs = |records: &[Value]| {
        records
            .iter()
            .map(|r| r["event"]["sequence"].as_u64().expect("event.sequence"))
            .collect::<Vec<u64>>()
    };
    assert_eq!(
        seqs(&written),
        seqs(&all),
        "the file holds every record once, in order"
    );
    assert_eq!(written, all, "the file and `vaultfw logs` differ");
    agent.stop();
}

/// A release switch on the way to the policy (`policy.toml ->
/// repo/current/policy.toml`, `current -> releases/v1` swapped to
/// `releases/v2`, as git-sync and release directories do) is a change of
/// the policy: watched and served, and the next switch too.
#[test]
fn a_release_switch_on_the_way_to_the_policy_is_served() {
    let topo = Topology::with_client_addrs(&[NEXT_VERSION]);
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let repo = PolicyFile::named("README", "");
    let root = repo.path().parent().expect("a temp dir").to_owned();
    let release = |version: &str, contents: &str| {
        let dir = root.join("releases").join(version);
        std::fs::create_dir_all(&dir).expect("creating a release");
        std::fs::write(dir.join("policy.toml"), contents).expect("writing a release");
    };
    let switch = |version: &str| {
        let swap = root.join("current.tmp");
        symlink(format!("releases/{version}"), &swap).expect("linking the release");
        std::fs::rename(&swap, root.join("current")).expect("switching the release");
    };
    let next = POLICY.replace(
        r#"ip_rules = ["203.0.113.0/24"]"#,
        &format!(r#"ip_rules = ["203.0.113.0/24", "{NEXT_VERSION}"]"#),
    );
    release("v1", POLICY);
    release("v2", &next);
    release("v3", POLICY);
    switch("v1");
    let policy = PolicyFile::new(POLICY);
    std::fs::remove_file(policy.path()).expect("removing the file");
    symlink(root.join("current/policy.toml"), policy.path()).expect("linking the policy");
    let agent = serving(&topo, policy, &[]);
    assert_dropped(&topo, &agent, NEXT_VERSION, 443, "release v1");

    for (version, admits) in [("v2", true), ("v3", false)] {
        let generation = agent.generation();
        switch(version);
        let deadline = Instant::now() + WAIT;
        while agent.generation() == generation {
            assert!(
                Instant::now() < deadline,
                "release {version} was not served:\n{}",
                agent.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if admits {
            assert_connects(&topo, &agent, NEXT_VERSION, 443, "release v2");
        } else {
            assert_dropped(&topo, &agent, NEXT_VERSION, 443, "release v3");
        }
    }
    agent.stop();
}
