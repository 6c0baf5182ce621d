//! Hot reload: a debounced file watch on every plugin's `.wasm` file. The parent directories
//! are watched because builds and deploys replace files by rename.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::{DebounceEventResult, new_debouncer, notify};
use tokio::sync::mpsc;

use super::Plugins;

/// Keeps the watch alive; dropping it stops watching.
pub type WatchGuard = notify_debouncer_mini::Debouncer<notify::RecommendedWatcher>;

/// How long a file must be quiet before it is reloaded.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Starts watching; each change reloads the plugin whose file changed.
pub fn watch(plugins: Arc<Plugins>) -> notify::Result<Option<WatchGuard>> {
    let paths = plugins.paths();
    if paths.is_empty() {
        return Ok(None);
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
        Ok(events) => {
            for event in events {
                let _ = tx.send(event.path);
            }
        }
        Err(e) => tracing::warn!(error = %e, "plugin watch error"),
    })?;
    let dirs: HashSet<PathBuf> = paths.iter().filter_map(|(_, p)| p.parent().map(PathBuf::from)).collect();
    for dir in dirs {
        debouncer.watcher().watch(&dir, notify::RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while let Some(changed) = rx.recv().await {
            for (name, path) in &paths {
                if same_file(path, &changed) {
                    let _ = plugins.reload(name).await;
                }
            }
        }
    });
    Ok(Some(debouncer))
}

fn same_file(configured: &Path, changed: &Path) -> bool {
    configured.file_name() == changed.file_name()
        && std::fs::canonicalize(configured.parent().unwrap_or(configured)).ok()
            == std::fs::canonicalize(changed.parent().unwrap_or(changed)).ok()
}
