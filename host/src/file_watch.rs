//! A debounced watch on a set of files. Their parent directories are watched, not the files,
//! because writers (deploys, builds, the relay itself) replace files by rename.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer, notify};

/// Keeps a watch alive; dropping it stops watching.
pub type WatchGuard = Debouncer<notify::RecommendedWatcher>;

/// Calls `on_change` with the watched path whenever that file may have changed (once `debounce`
/// has passed quietly). A watch error may hide a change, so it counts as a change of every path.
pub fn watch_files<F>(paths: Vec<PathBuf>, debounce: Duration, on_change: F) -> notify::Result<WatchGuard>
where
    F: Fn(&Path) + Send + 'static,
{
    let dir_of = |p: &Path| p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
    // Each path with its directory, resolved once, to match events against.
    let watched: Vec<(PathBuf, Option<PathBuf>)> =
        paths.iter().map(|p| (p.clone(), std::fs::canonicalize(dir_of(p)).ok())).collect();
    let dirs: std::collections::HashSet<PathBuf> = paths.iter().map(|p| dir_of(p)).collect();
    let mut debouncer = new_debouncer(debounce, move |result: DebounceEventResult| match result {
        Ok(events) => {
            for (path, dir) in &watched {
                let touched = events.iter().any(|e| {
                    e.path.file_name() == path.file_name()
                        && e.path.parent().and_then(|d| std::fs::canonicalize(d).ok()) == *dir
                });
                if touched {
                    on_change(path);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "file watch error; treating every watched file as changed");
            watched.iter().for_each(|(path, _)| on_change(path));
        }
    })?;
    for dir in dirs {
        debouncer.watcher().watch(&dir, notify::RecursiveMode::NonRecursive)?;
    }
    Ok(debouncer)
}
