//! Watching the policy file for edits. Editors replace files (write a
//! temporary, rename it over), so the directory is watched and events are
//! filtered by name; a burst of events (one save) becomes one reload.

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
    /// Watches `path`'s directory for events on `path`.
    pub fn start(path: &Path) -> std::io::Result<Self> {
        let file: PathBuf = path
            .canonicalize()
            .unwrap_or_else(|_| path.to_path_buf());
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let name = file.file_name().map(|n| n.to_owned());
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
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
