//! The daemon driven through [`super::serve`] as the CLI drives it: a
//! control socket in a temporary directory, a shutdown future and a reload
//! channel the test holds, the real program and maps pinned in a pin
//! directory of the test's own. The daemon runs on a thread moved into a
//! network namespace of its own (`unshare`), where only `lo` exists, so
//! `--iface all` attaches to nothing: these tests check the command
//! handling and the replies; what the kernel enforces is the end-to-end
//! tests' part (tests/).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

use super::{IfaceSelection, OnExit, PolicySource, RunOptions, serve};
use crate::control::protocol::{Command, ErrorKind, Response, RuleSpec};
use crate::control::replies::{
    ChangeReply, ConfirmReply, DetachReply, LogsReply, RuleListReply, ShowReply, StatsReply,
};
use crate::control::{client, server};
use crate::dataplane::{XdpModeRequest, pins};
use crate::paths::PinDir;

/// A temporary directory (policy file, socket) and a pin directory on
/// bpffs, removed even when the test fails.
struct Sandbox {
    dir: tempfile::TempDir,
    pin_dir: PathBuf,
}

impl Sandbox {
    fn new(policy: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("policy.toml"), policy).expect("policy file");
        let name = dir
            .path()
            .file_name()
            .expect("a temporary directory has a name")
            .to_string_lossy()
            .replace('.', ""); // bpffs names have no dots
        let pin_dir = Path::new("/sys/fs/bpf").join(format!("vaultfw-unit-{name}"));
        Sandbox { dir, pin_dir }
    }

    fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    fn options(&self, on_exit: OnExit) -> RunOptions {
        RunOptions {
            interfaces: IfaceSelection::parse(&["all".to_owned()]).expect("--iface all"),
            source: PolicySource::new(self.policy(), None),
            xdp_mode: XdpModeRequest::Generic,
            bpf_log_level: crate::dataplane::BpfLogLevel::Off,
            stats_interval: Duration::from_secs(3600),
            pin_dir: self.pin_dir.clone(),
            socket: self.socket(),
            on_exit,
            watch_policy: false,
            event_rate: 0,
            log_allowed: false,
            pass_forwarded: false,
            lookup: crate::compile::cpt::Lookup::Trie,
            access_log: None,
            audit_log: None,
            metrics_addr: None,
            metrics_allow_remote: false,
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = pins::remove_all(&PinDir::new(&self.pin_dir));
    }
}

/// Runs `scenario` on a thread of its own in a new network namespace, on
/// a current-thread runtime; skips (saying why) when not root.
fn in_own_netns<F>(scenario: impl FnOnce() -> F + Send + 'static)
where
    F: Future<Output = ()>,
{
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: loading the XDP program and a network namespace need root");
        return;
    }
    let thread = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare the network namespace");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(scenario());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// [`serve`], failing the test with its error (a client would only see
/// the socket closed).
async fn serving(
    listener: tokio::net::UnixListener,
    shutdown: impl Future<Output = ()>,
    reloads: mpsc::Receiver<()>,
    options: RunOptions,
) {
    if let Err(error) = serve(listener, shutdown, reloads, options).await {
        panic!("serve failed: {error}");
    }
}

/// Sends `command` as the CLI does (from a blocking thread: the daemon
/// runs on this one).
async fn send(socket: &Path, command: Command) -> Response {
    let socket = socket.to_path_buf();
    tokio::task::spawn_blocking(move || client::send(&socket, command))
        .await
        .expect("client thread")
        .expect("the daemon answers")
}

/// The reply of a success, read as `T`.
#[track_caller]
fn reply<T: DeserializeOwned>(response: &Response) -> T {
    assert!(response.ok, "refused: {:?}", response.error);
    response
        .result_as::<T>()
        .expect("a success has a result")
        .expect("the result has the reply type's shape")
}

/// The error kind and message of a refusal.
#[track_caller]
fn refusal(response: &Response) -> (ErrorKind, String) {
    let error = response.error.clone().expect("refused");
    assert!(!response.ok && response.result.is_none());
    (error.kind, error.message)
}

fn ip(address: &str) -> RuleSpec {
    RuleSpec::Ip {
        address: address.to_owned(),
        more: Vec::new(),
        comment: None,
        expires_at: None,
    }
}

const POLICY: &str = "default_action = \"Deny\"\nip_rules = [\"198.51.100.7\"]\n";

#[test]
fn control_commands_change_the_policy_file_and_answer_in_their_reply_types() {
    let sandbox = Sandbox::new(POLICY);
    let options = sandbox.options(OnExit::Keep);
    let (socket, policy, pin_dir) = (sandbox.socket(), sandbox.policy(), sandbox.pin_dir.clone());
    in_own_netns(move || async move {
        let listener = server::bind(&socket)
            .await
            .expect("bind the control socket");
        let (_reload_tx, reloads) = mpsc::channel(1);
        let never = std::future::pending::<()>();
        let client = async {
            let show: ShowReply = reply(&send(&socket, Command::Show).await);
            assert_eq!(
                (
                    show.default_action.as_str(),
                    show.ip_rules,
                    show.iface.as_str()
                ),
                ("Deny", 1, "all")
            );
            assert_eq!(
                (show.on_exit.as_str(), show.forwarded_traffic.as_str()),
                ("keep", "judged")
            );
            let start = show.generation;

            let add = Command::RuleAdd {
                rule: ip("203.0.113.7"),
                if_generation: Some(start),
            };
            let added: ChangeReply = reply(&send(&socket, add.clone()).await);
            assert!(added.changed && added.generation == start + 1, "{added:?}");
            assert!(added.map_writes.is_some_and(|n| n > 0), "{added:?}");
            let file = std::fs::read_to_string(&policy).unwrap();
            assert!(file.contains("203.0.113.7"), "{file}");

            // The same rule again, without a generation: a no-op success.
            let again = Command::RuleAdd {
                rule: ip("203.0.113.7"),
                if_generation: None,
            };
            let unchanged: ChangeReply = reply(&send(&socket, again).await);
            assert_eq!(
                (
                    unchanged.changed,
                    unchanged.generation,
                    unchanged.map_writes
                ),
                (false, start + 1, None)
            );

            // A generation that is no longer served: refused, nothing changes.
            let (kind, message) = refusal(&send(&socket, add).await);
            assert_eq!(kind, ErrorKind::Conflict);
            assert!(
                message.contains(&format!("--if-generation {start}")),
                "{message}"
            );

            let remove_absent = Command::RuleRemove {
                rule: ip("192.0.2.99"),
                if_generation: None,
            };
            let (kind, message) = refusal(&send(&socket, remove_absent).await);
            assert_eq!(kind, ErrorKind::InvalidInput);
            assert!(message.contains("192.0.2.99") && message.contains("not found"));

            let nothing = Command::Update {
                default_action: None,
                bypass: None,
                if_generation: None,
            };
            let (kind, message) = refusal(&send(&socket, nothing).await);
            assert_eq!(kind, ErrorKind::InvalidInput);
            assert!(message.contains("--default-action"), "{message}");

            // Nothing pending: a success that says so (idempotent).
            let confirm: ConfirmReply = reply(&send(&socket, Command::Confirm).await);
            assert!(!confirm.confirmed, "{confirm:?}");
            assert_eq!(confirm.generation, start + 1);

            // The kernel's maps, read back, hold both rules.
            let list: RuleListReply = reply(&send(&socket, Command::RuleList).await);
            let mut rules: Vec<&str> = list.ip_rules.iter().map(|r| r.rule.as_str()).collect();
            rules.sort_unstable();
            assert_eq!(rules, ["198.51.100.7", "203.0.113.7"]);
            assert_eq!(list.generation, start + 1);
            assert!(list.ip_rules.iter().all(|r| r.hits.packets == 0));

            let stats: StatsReply = reply(&send(&socket, Command::Stats).await);
            assert_eq!(stats.generation, start + 1);
            for verdict in firewall_common::Verdict::ALL {
                assert!(stats.counters.contains_key(verdict.name()), "{verdict:?}");
            }
            // `--iface all` in a new namespace: no interface there carries
            // traffic (a kernel with tunnel modules loaded adds their
            // fallback devices, gre0 and the like, to every namespace).
            for interface in &stats.interfaces {
                assert!(
                    interface.counters.values().all(|&count| count == 0),
                    "{interface:?}"
                );
            }

            let logs = Command::Logs {
                after: None,
                since: None,
                limit: None,
            };
            let logs: LogsReply = reply(&send(&socket, logs).await);
            assert!(logs.page.records.is_empty());
            assert_eq!((logs.event_rate, logs.file), (0, None));
            let (kind, message) = refusal(
                &send(
                    &socket,
                    Command::Logs {
                        after: None,
                        since: Some("yesterday".into()),
                        limit: None,
                    },
                )
                .await,
            );
            assert_eq!(kind, ErrorKind::InvalidInput);
            assert!(message.contains("RFC 3339"), "{message}");

            let remove = Command::RuleRemove {
                rule: ip("203.0.113.7"),
                if_generation: Some(start + 1),
            };
            let removed: ChangeReply = reply(&send(&socket, remove).await);
            assert_eq!((removed.changed, removed.generation), (true, start + 2));
            let file = std::fs::read_to_string(&policy).unwrap();
            assert!(!file.contains("203.0.113.7"), "{file}");

            let detached: DetachReply = reply(&send(&socket, Command::Detach).await);
            assert!(detached.detached);
        };
        let ((), ()) = tokio::join!(serving(listener, never, reloads, options), client);
        assert!(!pin_dir.exists(), "detach removes the pin directory");
    });
}

#[test]
fn a_reload_reads_the_file_and_the_shutdown_future_stops_serve_keeping_the_filter() {
    let sandbox = Sandbox::new(POLICY);
    let options = sandbox.options(OnExit::Keep);
    let (socket, policy, pin_dir) = (sandbox.socket(), sandbox.policy(), sandbox.pin_dir.clone());
    in_own_netns(move || async move {
        let listener = server::bind(&socket)
            .await
            .expect("bind the control socket");
        let (reload_tx, reloads) = mpsc::channel(1);
        let (stop_tx, stop) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stop.await;
        };
        let client = async {
            let before: ShowReply = reply(&send(&socket, Command::Show).await);
            std::fs::write(
                &policy,
                "default_action = \"Deny\"\nip_rules = [\"198.51.100.7\", \"203.0.113.0/24\"]\n",
            )
            .unwrap();
            reload_tx.send(()).await.unwrap();
            // Capacity is back once the loop took the reload, which it
            // handles before it polls for the next request.
            drop(reload_tx.reserve().await.unwrap());
            // The loop handles one event at a time: the reload, then this.
            let after: ShowReply = reply(&send(&socket, Command::Show).await);
            assert_eq!(
                (after.ip_rules, after.generation),
                (2, before.generation + 1)
            );
            stop_tx.send(()).unwrap();
        };
        let ((), ()) = tokio::join!(serving(listener, shutdown, reloads, options), client);
        assert!(
            PinDir::new(&pin_dir)
                .map(firewall_common::ACTIVE_SET)
                .exists(),
            "--on-exit keep leaves the filter pinned"
        );
    });
}

/// `network-rule add` of a rule already present with a new expiry or
/// comment declares it again with them in one change (what it leaves out
/// is kept); the same values again change nothing.
#[test]
fn adding_a_present_rule_with_a_new_expiry_or_comment_renews_it_in_place() {
    let sandbox = Sandbox::new(POLICY);
    let options = sandbox.options(OnExit::Detach);
    let (socket, policy) = (sandbox.socket(), sandbox.policy());
    in_own_netns(move || async move {
        let listener = server::bind(&socket)
            .await
            .expect("bind the control socket");
        let (_reload_tx, reloads) = mpsc::channel(1);
        let (stop_tx, stop) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stop.await;
        };
        let client = async {
            let add = |comment: Option<&str>, expires_at: Option<&str>| Command::RuleAdd {
                rule: RuleSpec::Ip {
                    address: "198.51.100.7".to_owned(),
                    more: Vec::new(),
                    comment: comment.map(str::to_owned),
                    expires_at: expires_at.map(str::to_owned),
                },
                if_generation: None,
            };
            let listed = || async {
                let list: RuleListReply = reply(&send(&socket, Command::RuleList).await);
                let rule = list.ip_rules.into_iter().next().expect("one rule");
                (rule.comment, rule.expires_at)
            };
            let start: ShowReply = reply(&send(&socket, Command::Show).await);

            let renewed: ChangeReply =
                reply(&send(&socket, add(None, Some("2099-01-31T00:00:00Z"))).await);
            assert!(renewed.changed, "{renewed:?}");
            assert_eq!(renewed.generation, start.generation + 1);
            assert!(renewed.message.contains("renewed"), "{renewed:?}");
            assert_eq!(
                listed().await,
                (None, Some("2099-01-31T00:00:00Z".to_owned()))
            );

            // A comment alone keeps the expiry.
            let commented: ChangeReply = reply(&send(&socket, add(Some("on call"), None)).await);
            assert!(commented.changed, "{commented:?}");
            assert_eq!(
                listed().await,
                (
                    Some("on call".to_owned()),
                    Some("2099-01-31T00:00:00Z".to_owned())
                )
            );
            let file = std::fs::read_to_string(&policy).unwrap();
            assert_eq!(file.matches("198.51.100.7").count(), 1, "{file}");

            // The same values again: nothing to do.
            let again: ChangeReply =
                reply(&send(&socket, add(Some("on call"), Some("2099-01-31T00:00:00Z"))).await);
            assert!(!again.changed, "{again:?}");
            stop_tx.send(()).unwrap();
        };
        let ((), ()) = tokio::join!(serving(listener, shutdown, reloads, options), client);
    });
}

#[test]
fn a_policy_raising_a_limit_above_the_loaded_maps_is_refused_naming_the_field_and_the_restart() {
    let sandbox = Sandbox::new(POLICY);
    let options = sandbox.options(OnExit::Detach);
    let (socket, policy) = (sandbox.socket(), sandbox.policy());
    in_own_netns(move || async move {
        let listener = server::bind(&socket)
            .await
            .expect("bind the control socket");
        let (_reload_tx, reloads) = mpsc::channel(1);
        let (stop_tx, stop) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stop.await;
        };
        let client = async {
            let apply = |text: &str| Command::Apply {
                file: "/etc/vaultfw/policy.toml".to_owned(),
                format: crate::policy::PolicyFormat::Native,
                text: text.to_owned(),
                subnet_map: None,
                confirm_within_s: None,
                if_generation: None,
            };
            let start: ShowReply = reply(&send(&socket, Command::Show).await);
            let before = std::fs::read_to_string(&policy).unwrap();
            let raised = format!(
                "limits = {{ ip_rules = {}, virtual_network_rules = 1 }}\n{POLICY}",
                start.limits.ip_rules + 1
            );
            let (kind, message) = refusal(&send(&socket, apply(&raised)).await);
            assert_eq!(kind, ErrorKind::InvalidInput, "{message}");
            assert!(
                message.contains("limits.ip_rules")
                    && message.contains("restart vaultfw")
                    && message.contains("nothing changed"),
                "{message}"
            );
            let after: ShowReply = reply(&send(&socket, Command::Show).await);
            assert_eq!(after.generation, start.generation, "nothing was applied");
            assert_eq!(after.limits.ip_rules, start.limits.ip_rules);
            assert_eq!(std::fs::read_to_string(&policy).unwrap(), before);

            // Lowering a limit needs no other maps.
            let lowered =
                format!("limits = {{ ip_rules = 5, virtual_network_rules = 1 }}\n{POLICY}");
            let applied: ChangeReply = reply(&send(&socket, apply(&lowered)).await);
            assert!(applied.changed, "{applied:?}");
            stop_tx.send(()).unwrap();
        };
        let ((), ()) = tokio::join!(serving(listener, shutdown, reloads, options), client);
    });
}
