//! Hot reload: a debounced file watch on every plugin's `.wasm` file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::notify;
use tokio::sync::mpsc;

use super::Plugins;
use crate::file_watch::{WatchGuard, watch_files};

/// How long a file must be quiet before it is reloaded.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Starts watching; each change reloads the plugin whose file changed.
pub fn watch(plugins: Arc<Plugins>) -> notify::Result<Option<WatchGuard>> {
    let paths = plugins.paths();
    if paths.is_empty() {
        return Ok(None);
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<PathBuf>();
    let files = paths.iter().map(|(_, path)| path.clone()).collect();
    let guard = watch_files(files, DEBOUNCE, move |changed| {
        let _ = tx.send(changed.to_owned());
    })?;
    tokio::spawn(async move {
        while let Some(changed) = rx.recv().await {
            for (name, _) in paths.iter().filter(|(_, path)| *path == changed) {
                let _ = plugins.reload(name).await;
            }
        }
    });
    Ok(Some(guard))
}
