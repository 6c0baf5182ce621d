//! Notices external edits of `backends.yaml`. The parent directory is watched because writers
//! (the relay itself included) replace the file by rename.

use std::path::Path;
use std::time::Duration;

use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer, notify};
use tokio::sync::mpsc;

/// Keeps the watch alive; dropping it stops watching.
pub type WatchGuard = Debouncer<notify::RecommendedWatcher>;

/// Watches `path` and sends `()` (debounced by 200 ms) whenever it may have changed. The
/// receiver decides what a change means: reload, validate, keep the old set on error.
pub fn watch_backends(path: &Path) -> notify::Result<(WatchGuard, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(1);
    let file_name = path.file_name().map(|n| n.to_owned());
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
    let mut debouncer = new_debouncer(Duration::from_millis(200), move |result: DebounceEventResult| {
        let touched = match result {
            Ok(events) => events.iter().any(|e| e.path.file_name() == file_name.as_deref()),
            Err(e) => {
                tracing::warn!(error = %e, "backends file watch error");
                true
            }
        };
        if touched {
            // A full channel already holds a pending reload; one is enough.
            let _ = tx.try_send(());
        }
    })?;
    debouncer.watcher().watch(&dir, notify::RecursiveMode::NonRecursive)?;
    Ok((debouncer, rx))
}
