//! Notices external edits of `backends.yaml`.

use std::path::Path;
use std::time::Duration;

use notify_debouncer_mini::notify;
use tokio::sync::mpsc;

use crate::file_watch::{WatchGuard, watch_files};

/// Watches `path` and sends `()` (debounced by 200 ms) whenever it may have changed. The
/// receiver decides what a change means: reload, validate, keep the old set on error.
pub fn watch_backends(path: &Path) -> notify::Result<(WatchGuard, mpsc::Receiver<()>)> {
    let (tx, rx) = mpsc::channel(1);
    let guard = watch_files(vec![path.to_owned()], Duration::from_millis(200), move |_| {
        // A full channel already holds a pending reload; one is enough.
        let _ = tx.try_send(());
    })?;
    Ok((guard, rx))
}
