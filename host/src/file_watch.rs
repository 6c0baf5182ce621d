//! A debounced watch on a set of files that reports content changes only. Parent directories
//! are watched, not the files, because writers (deploys, builds, the relay itself) replace files
//! by rename; a symlinked file is watched both where the link is and where it points, so edits
//! of the target and re-pointed links are both seen.
//!
//! Directory events come for reads too (the relay's own reads among them), so every event is
//! checked against the file's last known state: unchanged size and modification time skip it
//! without opening the file, and an unchanged content hash skips it after reading. Without
//! this, each reload's read would trigger the next reload, forever.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer, notify};
use sha2::{Digest, Sha256};

/// Keeps a watch alive; dropping it stops watching.
pub type WatchGuard = Debouncer<notify::RecommendedWatcher>;

/// What a file looked like when last seen (`None`: missing).
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    len: u64,
    modified: Option<SystemTime>,
    hash: [u8; 32],
}

fn look(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

fn read_seen(path: &Path) -> Option<Seen> {
    let (len, modified) = look(path)?;
    let bytes = std::fs::read(path).ok()?;
    Some(Seen { len, modified, hash: Sha256::digest(&bytes).into() })
}

/// Whether `path` differs from `last` (updating it): metadata first, content only if that moved.
fn changed(path: &Path, last: &mut Option<Seen>) -> bool {
    let now = look(path);
    if now == last.as_ref().map(|s| (s.len, s.modified)) {
        return false;
    }
    let seen = read_seen(path);
    let differs = seen.as_ref().map(|s| s.hash) != last.as_ref().map(|s| s.hash);
    *last = seen;
    differs
}

/// A file name in a (resolved) directory: where events about a watched file show up.
type Location = (std::ffi::OsString, Option<PathBuf>);

fn dir_of(p: &Path) -> PathBuf {
    p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned()
}

/// Calls `on_change` with the watched path whenever that file's content changed (once
/// `debounce` has passed quietly). A watch error may hide a change, so every path is checked
/// then.
pub fn watch_files<F>(paths: Vec<PathBuf>, debounce: Duration, on_change: F) -> notify::Result<WatchGuard>
where
    F: Fn(&Path) + Send + 'static,
{
    // Each path with the (file name, resolved directory) pairs whose events concern it: the
    // path itself and, for a symlink, its target.
    let names = |p: &Path| -> Vec<Location> {
        let mut names = vec![(p.file_name().unwrap_or_default().to_owned(), std::fs::canonicalize(dir_of(p)).ok())];
        if let Ok(real) = std::fs::canonicalize(p)
            && real != p
        {
            names.push((real.file_name().unwrap_or_default().to_owned(), real.parent().map(Path::to_owned)));
        }
        names
    };
    let watched: Vec<(PathBuf, Vec<Location>)> = paths.iter().map(|p| (p.clone(), names(p))).collect();
    let dirs: HashSet<PathBuf> = watched
        .iter()
        .flat_map(|(p, names)| names.iter().filter_map(|(_, dir)| dir.clone()).chain([dir_of(p)]))
        .collect();
    let state: Mutex<HashMap<PathBuf, Option<Seen>>> =
        Mutex::new(paths.iter().map(|p| (p.clone(), read_seen(p))).collect());
    let check = move |path: &Path| -> bool {
        let mut state = state.lock().expect("watch state lock");
        changed(path, state.entry(path.to_owned()).or_default())
    };
    let mut debouncer = new_debouncer(debounce, move |result: DebounceEventResult| {
        let touched: Vec<&PathBuf> = match &result {
            Ok(events) => watched
                .iter()
                .filter(|(_, names)| {
                    events.iter().any(|e| {
                        let dir = e.path.parent().and_then(|d| std::fs::canonicalize(d).ok());
                        names.iter().any(|(name, watched_dir)| e.path.file_name() == Some(name) && dir == *watched_dir)
                    })
                })
                .map(|(path, _)| path)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "file watch error; checking every watched file");
                watched.iter().map(|(path, _)| path).collect()
            }
        };
        for path in touched {
            if check(path) {
                on_change(path);
            }
        }
    })?;
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        debouncer.watcher().watch(dir, notify::RecursiveMode::NonRecursive)?;
    }
    Ok(debouncer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_content_changes_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.yaml");
        std::fs::write(&path, "a").unwrap();
        let mut last = read_seen(&path);
        let _ = std::fs::read(&path).unwrap();
        assert!(!changed(&path, &mut last), "a read is no change");
        std::fs::write(&path, "a").unwrap();
        assert!(!changed(&path, &mut last), "the same content written again is no change");
        std::fs::write(&path, "b").unwrap();
        assert!(changed(&path, &mut last));
        std::fs::remove_file(&path).unwrap();
        assert!(changed(&path, &mut last), "removal is a change");
    }
}
