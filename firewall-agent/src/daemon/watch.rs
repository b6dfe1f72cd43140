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
    /// Watches the directory that holds `path`, and the directory of every
    /// link met on the way to the file (the file a link, or any directory
    /// on its path: a `current -> releases/v2` swap) and of the final file.
    pub fn start(path: &Path) -> std::io::Result<Self> {
        let watched = watched_entries(path);
        let mut names: Vec<std::ffi::OsString> =
            watched.iter().map(|(_, name)| name.clone()).collect();
        names.dedup();
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                // The policy file itself (written, or renamed over), or a
                // Kubernetes `..data` swap; not logs or other files beside it.
                let ours = event.paths.iter().any(|p| match p.file_name() {
                    Some(f) => {
                        names.iter().any(|n| n == f) || f.to_string_lossy().starts_with("..")
                    }
                    None => false,
                });
                if ours && !event.kind.is_access() {
                    let _ = tx.send(());
                }
            })
            .map_err(std::io::Error::other)?;
        let mut dirs: Vec<&PathBuf> = watched.iter().map(|(dir, _)| dir).collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
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

/// The entries whose change can change what `path` reads as, each as
/// (its directory, its name): `path` itself, every symbolic link met while
/// resolving it (the file, or a directory on its way), and the file it
/// finally names. Directories are as given (not canonicalised), since a
/// ConfigMap's link target is deleted on update. At most 40 links are
/// followed (the kernel's own limit).
pub(crate) fn watched_entries(path: &Path) -> Vec<(PathBuf, std::ffi::OsString)> {
    let split = |p: &Path| {
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        p.file_name().map(|name| (dir, name.to_owned()))
    };
    let mut entries: Vec<(PathBuf, std::ffi::OsString)> = split(path).into_iter().collect();
    let mut current = path.to_path_buf();
    'resolve: for _ in 0..40 {
        // The first link among `current`'s prefixes, shortest first.
        let mut prefix = PathBuf::new();
        for component in current.components() {
            prefix.push(component);
            let Ok(meta) = std::fs::symlink_metadata(&prefix) else {
                break 'resolve;
            };
            if meta.file_type().is_symlink() {
                let Ok(target) = std::fs::read_link(&prefix) else {
                    break 'resolve;
                };
                entries.extend(split(&prefix));
                let rest = current
                    .strip_prefix(&prefix)
                    .unwrap_or(Path::new(""))
                    .to_path_buf();
                let base = prefix.parent().map(Path::to_path_buf).unwrap_or_default();
                current = base.join(target).join(rest);
                continue 'resolve;
            }
        }
        break;
    }
    if let Ok(file) = std::fs::canonicalize(path) {
        entries.extend(split(&file));
    }
    entries
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

#[cfg(test)]
mod tests {
    use super::watched_entries;

    #[test]
    fn every_link_on_the_way_to_the_policy_is_watched() {
        let root = tempfile::tempdir().expect("a temp dir");
        let base = root.path();
        std::fs::create_dir_all(base.join("repo/releases/v1")).unwrap();
        std::fs::write(base.join("repo/releases/v1/policy.toml"), "").unwrap();
        std::os::unix::fs::symlink("releases/v1", base.join("repo/current")).unwrap();
        std::fs::create_dir(base.join("etc")).unwrap();
        std::os::unix::fs::symlink(
            base.join("repo/current/policy.toml"),
            base.join("etc/policy.toml"),
        )
        .unwrap();
        let entries = watched_entries(&base.join("etc/policy.toml"));
        let has = |dir: &str, name: &str| {
            entries
                .iter()
                .any(|(d, n)| *d == base.join(dir) && n == name)
        };
        assert!(has("etc", "policy.toml"), "{entries:?}");
        assert!(
            has("repo", "current"),
            "the release switch is watched: {entries:?}"
        );
        let real = std::fs::canonicalize(base.join("repo/releases/v1")).unwrap();
        assert!(
            entries
                .iter()
                .any(|(d, n)| *d == real && n == "policy.toml"),
            "{entries:?}"
        );
    }
}
