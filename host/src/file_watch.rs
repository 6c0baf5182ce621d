//! A debounced watch on a set of files that reports content changes only. Parent directories
//! are watched, not the files, because writers (deploys, builds, the relay itself) replace files
//! by rename; a symlinked file is watched both where the link is and where it points, so edits
//! of the target and re-pointed links are both seen. Any event in a file's directories has its
//! file looked at, whatever the event names: Kubernetes swaps a mounted ConfigMap or Secret by
//! re-pointing a `..data` link beside the file (`f -> ..data/f`), and the file's own name is
//! in no event.
//!
//! Directory events come for reads too (the relay's own reads among them), so every event is
//! checked against the file's last known state: unchanged size, modification and change times
//! and inode skip it without opening the file, and an unchanged content hash skips it after
//! reading. Without this, each reload's read would trigger the next reload, forever. (Size and
//! modification time alone missed a file of the same size installed with its modification
//! time kept: `cp -p`, `rsync -a`, `install -p`, reproducible builds. Its inode or change
//! time moves.)

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
    meta: Meta,
    hash: [u8; 32],
}

/// A file's metadata that moves when its content may have: size, modification time, and the
/// inode and change time (which `touch -r` or a copy keeping times cannot set back).
#[derive(Debug, Clone, PartialEq)]
struct Meta {
    len: u64,
    modified: Option<SystemTime>,
    inode: (u64, u64),
    changed: (i64, i64),
}

fn look(path: &Path) -> Option<Meta> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Meta {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode: (meta.dev(), meta.ino()),
        changed: (meta.ctime(), meta.ctime_nsec()),
    })
}

fn read_seen(path: &Path) -> Option<Seen> {
    let meta = look(path)?;
    let bytes = std::fs::read(path).ok()?;
    Some(Seen { meta, hash: Sha256::digest(&bytes).into() })
}

/// Whether `path` differs from `last` (updating it): metadata first, content only if that moved.
fn changed(path: &Path, last: &mut Option<Seen>) -> bool {
    let now = look(path);
    if now.as_ref() == last.as_ref().map(|s| &s.meta) {
        return false;
    }
    let seen = read_seen(path);
    let differs = seen.as_ref().map(|s| s.hash) != last.as_ref().map(|s| s.hash);
    *last = seen;
    differs
}

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
    // Each path with the resolved directories whose events concern it: the path's and, for a
    // symlink, its target's.
    let dirs_of = |p: &Path| -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::canonicalize(dir_of(p)).ok().into_iter().collect();
        if let Ok(real) = std::fs::canonicalize(p)
            && real != p
        {
            dirs.extend(real.parent().map(Path::to_owned));
        }
        dirs
    };
    let watched: Vec<(PathBuf, Vec<PathBuf>)> = paths.iter().map(|p| (p.clone(), dirs_of(p))).collect();
    let dirs: HashSet<PathBuf> = watched.iter().flat_map(|(p, dirs)| dirs.iter().cloned().chain([dir_of(p)])).collect();
    let state: Mutex<HashMap<PathBuf, Option<Seen>>> =
        Mutex::new(paths.iter().map(|p| (p.clone(), read_seen(p))).collect());
    let check = move |path: &Path| -> bool {
        let mut state = state.lock().expect("watch state lock");
        changed(path, state.entry(path.to_owned()).or_default())
    };
    let mut debouncer = new_debouncer(debounce, move |result: DebounceEventResult| {
        let touched: Vec<&PathBuf> = match &result {
            Ok(events) => {
                let parents: HashSet<&Path> = events.iter().filter_map(|e| e.path.parent()).collect();
                let event_dirs: HashSet<PathBuf> =
                    parents.into_iter().filter_map(|dir| std::fs::canonicalize(dir).ok()).collect();
                watched
                    .iter()
                    .filter(|(_, dirs)| dirs.iter().any(|dir| event_dirs.contains(dir)))
                    .map(|(path, _)| path)
                    .collect()
            }
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

    /// A Kubernetes volume: `f -> ..data/f`, `..data -> ..v1`; an update writes `..v2`, points
    /// `..data` at it (by rename) and removes `..v1`. Each swap is a change, the second too
    /// (the first's target directory is gone by then).
    #[test]
    fn a_kubernetes_style_swap_of_the_data_link_is_a_change() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let (root, file) = (dir.path().to_owned(), dir.path().join("f.yaml"));
        let version = |n: u32, text: &str| {
            let data = root.join(format!("..v{n}"));
            std::fs::create_dir(&data).unwrap();
            std::fs::write(data.join("f.yaml"), text).unwrap();
            symlink(format!("..v{n}"), root.join("..data_tmp")).unwrap();
            std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
            if n > 1 {
                std::fs::remove_dir_all(root.join(format!("..v{}", n - 1))).unwrap();
            }
        };
        version(1, "one");
        symlink("..data/f.yaml", &file).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let _guard = watch_files(vec![file.clone()], Duration::from_millis(50), move |p| {
            let _ = tx.send(std::fs::read_to_string(p).unwrap_or_default());
        })
        .unwrap();
        for (n, text) in [(2, "two"), (3, "three")] {
            version(n, text);
            let seen = rx.recv_timeout(Duration::from_secs(5)).expect("the swap was not seen");
            assert_eq!(seen, text);
        }
    }

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

    /// A file of the same size put in place with its modification time kept (`cp -p`, `rsync
    /// -a`, a reproducible build) is a change.
    #[test]
    fn a_same_size_file_installed_with_its_modification_time_kept_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let (path, next) = (dir.path().join("p.wasm"), dir.path().join("p.wasm.new"));
        std::fs::write(&path, "one").unwrap();
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let mut last = read_seen(&path);
        std::fs::write(&next, "two").unwrap();
        std::fs::File::options().write(true).open(&next).unwrap().set_modified(modified).unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), modified);
        assert!(changed(&path, &mut last), "same size and modification time, new content");
    }
}
