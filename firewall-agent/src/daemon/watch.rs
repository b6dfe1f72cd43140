//! Watching the policy file for edits. Editors replace files (write a
//! temporary, rename it over) and Kubernetes swaps a ConfigMap's `..data`
//! symlink without touching the file's own name, so the whole directory is
//! watched (as given, not canonicalised: the target of a ConfigMap symlink
//! is deleted on update) and any change in it triggers a reload, which is a
//! no-op when the policy is unchanged. A burst of events (one save) becomes
//! one reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last event before a reload: one save, one reload.
const SETTLE: Duration = Duration::from_millis(150);

/// A running watch of one file.
pub struct PolicyWatch {
    _watcher: RecommendedWatcher,
    events: mpsc::UnboundedReceiver<()>,
}

impl PolicyWatch {
    /// Watches the directory that holds `path`.
    pub fn start(path: &Path) -> std::io::Result<Self> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if !event.kind.is_access() {
                let _ = tx.send(());
            }
        })
        .map_err(std::io::Error::other)?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(std::io::Error::other)?;
        Ok(PolicyWatch {
            _watcher: watcher,
            events,
        })
    }

    /// Waits for the next change, then for the burst to settle.
    pub async fn changed(&mut self) -> Option<()> {
        self.events.recv().await?;
        loop {
            match tokio::time::timeout(SETTLE, self.events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return None,
                Err(_) => return Some(()),
            }
        }
    }
}
