//! Watching the policy file for edits. Editors replace files (write a
//! temporary, rename it over) and Kubernetes swaps a ConfigMap's `..data`
//! symlink without touching the file's own name, so the directory is
//! watched (as given, not canonicalised: the target of a ConfigMap symlink
//! is deleted on update) and a change of the policy file's name or of a
//! `..`-named entry triggers a reload, a no-op when the policy is
//! unchanged. Other files beside it (a log, a temporary) do not. A burst of
//! events (one save) becomes one reload. When the policy file is a link
//! into another directory (a GitOps checkout), that directory is watched
//! too, for the target's name: a `git pull` there is a change as well.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last event before a reload: one save, one reload.
const SETTLE: Duration = Duration::from_millis(150);

/// A running watch of one file.
pub struct PolicyWatch {
    _watcher: RecommendedWatcher,
    /// One message per settled burst of changes.
    settled: mpsc::Receiver<()>,
}

impl PolicyWatch {
    /// Watches the directory that holds `path` (and its link target's).
    pub fn start(path: &Path) -> std::io::Result<Self> {
        let dir_of = |p: &Path| {
            p.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        };
        let dir = dir_of(path);
        let mut names: Vec<std::ffi::OsString> =
            path.file_name().map(|n| n.to_owned()).into_iter().collect();
        // A link into another directory: its target's directory too.
        let target = std::fs::canonicalize(path)
            .ok()
            .filter(|t| std::fs::canonicalize(&dir).is_ok_and(|d| t.parent() != Some(d.as_path())));
        if let Some(name) = target.as_deref().and_then(Path::file_name) {
            names.push(name.to_owned());
        }
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // The policy file itself (written, or renamed over), or a
            // Kubernetes `..data` swap; not logs or other files beside it.
            let ours = event.paths.iter().any(|p| match p.file_name() {
                Some(f) => names.iter().any(|n| n == f) || f.to_string_lossy().starts_with(".."),
                None => false,
            });
            if ours && !event.kind.is_access() {
                let _ = tx.send(());
            }
        })
        .map_err(std::io::Error::other)?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(std::io::Error::other)?;
        if let Some(target) = &target {
            watcher
                .watch(&dir_of(target), RecursiveMode::NonRecursive)
                .map_err(std::io::Error::other)?;
        }
        // Debounce in a task of its own, so that waiting on `changed` is
        // cancellation-safe: the daemon's select loop drops that future
        // whenever another event wins, and no change may be lost then.
        let (settled_tx, settled) = mpsc::channel(1);
        tokio::spawn(settle(events, settled_tx));
        Ok(PolicyWatch {
            _watcher: watcher,
            settled,
        })
    }

    /// Waits for the next settled change (cancellation-safe).
    pub async fn changed(&mut self) -> Option<()> {
        self.settled.recv().await
    }
}

/// Turns each burst of raw events into one message, sent once the burst
/// has been quiet for [`SETTLE`]; a change during a pending message is
/// covered by it (the reload reads the file as it is then).
async fn settle(mut events: mpsc::UnboundedReceiver<()>, settled: mpsc::Sender<()>) {
    while events.recv().await.is_some() {
        loop {
            match tokio::time::timeout(SETTLE, events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if let Err(mpsc::error::TrySendError::Closed(())) = settled.try_send(()) {
            return;
        }
    }
}
