//! Persistence of `backends.yaml`: read-modify-write under an exclusive lock, written to a temp
//! file, fsynced and renamed into place, so concurrent relays lose no update and a reader never
//! sees half a file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Backend, BackendsFile};

/// How long the backends file must read the same before a reload takes it (after the watch's
/// own quiet period): longer than a writer's pause between two writes of one file.
const SETTLED_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// Reads a reload makes before it gives up on a file that keeps changing.
const SETTLE_LOOKS: usize = 10;

/// Why the backends file could not be read or updated.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, locking or writing failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file on disk (or the requested change) is invalid; nothing was written.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// The file on disk is empty or missing (an editor's truncate-then-write passes through
    /// that): on reload the running set stays, but a restart would start with no backends.
    #[error("{path}: the file is {state} (write `backends: []` to remove every backend)")]
    Emptied { path: PathBuf, state: &'static str },
}

impl StoreError {
    /// What a restart would do with the file as it is: start with no backends, or fail.
    pub fn on_restart(&self) -> &'static str {
        match self {
            Self::Emptied { .. } => "a restart would start with no backends",
            _ => "a restart would fail",
        }
    }
}

/// The backends file and its lock file. The lock is a separate file because the data file is
/// replaced by rename on every write, which would make a lock held on it meaningless.
#[derive(Debug, Clone)]
pub struct BackendStore {
    /// As configured: read (following links) and watched there.
    path: PathBuf,
    /// Names no backend may take: the adapter plugins' (relay.yaml). A backend and an adapter
    /// share one namespace: tool prefixes, plugin bindings, `grants.backends`, filter rules.
    reserved: Vec<String>,
}

impl BackendStore {
    /// A store for `path`; the lock file is beside the file, `.lock` added to its name. A
    /// symlinked file is resolved to its target at each lock and write (not once: a link may
    /// be re-pointed, as Kubernetes swaps a mounted ConfigMap), so locking and the atomic rename
    /// act on the file every relay sharing it reads (the link itself stays).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), reserved: Vec::new() }
    }

    /// Where the file really is now (its link resolved).
    fn real_path(&self) -> PathBuf {
        std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone())
    }

    /// This store, refusing backends named as one of `names` (the adapter plugins').
    pub fn reserving(mut self, names: Vec<String>) -> Self {
        self.reserved = names;
        self
    }

    /// The data file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again after a change was noticed, once it reads the same twice
    /// [`SETTLED_AFTER`] apart: a file written in place is read as its writer left it, not as
    /// the part written so far (which may parse: the backends before the pause, the rest
    /// stopped). An empty or missing file is refused (an editor's truncate-then-write or a
    /// deploy's remove-then-copy passes through that state); only an explicit `backends: []`
    /// empties the set. Then `apply` gets the backends under the file's lock, so a reload and
    /// an admin tool's change are applied in the order they were written. Blocking: call it
    /// from `spawn_blocking`.
    pub fn reload_then<A>(&self, apply: A) -> Result<Vec<Backend>, StoreError>
    where
        A: FnOnce(&[Backend]),
    {
        let mut text = self.read()?;
        let mut looks = 1;
        loop {
            std::thread::sleep(SETTLED_AFTER);
            let again = self.read()?;
            if again == text {
                break;
            }
            if looks == SETTLE_LOOKS {
                return Err(self.invalid(format!(
                    "the file was still changing after {looks} reads; read again at its next change"
                )));
            }
            (text, looks) = (again, looks + 1);
        }
        let (_, backends) = match &text {
            Some(text) if !BackendsFile::holds_nothing(text) => self.parse(text)?,
            Some(_) => return Err(StoreError::Emptied { path: self.path.clone(), state: "empty" }),
            None => return Err(StoreError::Emptied { path: self.path.clone(), state: "missing" }),
        };
        let _lock = self.lock()?;
        if self.read()? == text {
            apply(&backends);
        }
        // Else it changed again (an admin tool's write, under the lock): that change is read
        // and applied in its turn.
        Ok(backends)
    }

    /// What to tell the operator when the file does not exist: the relay starts with no
    /// backends (a typo in `backends_file` looks exactly like that).
    pub fn missing(&self) -> Option<String> {
        (!self.path.exists()).then(|| {
            format!(
                "backends file {} does not exist: no backends until it is written (relay_add_server writes it)",
                self.path.display()
            )
        })
    }

    /// Reads and validates the file. A missing file means "no backends".
    pub fn load(&self) -> Result<(BackendsFile, Vec<Backend>), StoreError> {
        self.parse(&self.read()?.unwrap_or_default())
    }

    /// The file's text; `None` when it does not exist.
    fn read(&self) -> Result<Option<String>, StoreError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path: self.path.clone(), source }),
        }
    }

    fn parse(&self, text: &str) -> Result<(BackendsFile, Vec<Backend>), StoreError> {
        let file = BackendsFile::parse(text).map_err(|message| self.invalid(message))?;
        let backends = self.validate(&file)?;
        Ok((file, backends))
    }

    /// `file`'s backends, each checked, and none named as an adapter plugin.
    fn validate(&self, file: &BackendsFile) -> Result<Vec<Backend>, StoreError> {
        let backends = file.validate().map_err(|message| self.invalid(message))?;
        if let Some(taken) = backends.iter().find(|b| self.reserved.contains(&b.name)) {
            return Err(self.invalid(format!(
                "backend {}: an adapter plugin of relay.yaml has that name (backends and adapters share tool prefixes, bindings and grants); name the backend otherwise",
                taken.name
            )));
        }
        Ok(backends)
    }

    /// Applies `change` to the current file contents under the exclusive lock and writes the
    /// result atomically. Blocking: call it from `spawn_blocking`.
    pub fn update<F>(&self, change: F) -> Result<Vec<Backend>, StoreError>
    where
        F: FnOnce(&mut BackendsFile) -> Result<(), String>,
    {
        self.update_then(change, |_| {})
    }

    /// [`BackendStore::update`], then `apply` with the backends written, still under the lock:
    /// two changes at once are applied in the order they were written (applied after the lock,
    /// the earlier one could undo the later one until the file watch noticed).
    pub fn update_then<F, A>(&self, change: F, apply: A) -> Result<Vec<Backend>, StoreError>
    where
        F: FnOnce(&mut BackendsFile) -> Result<(), String>,
        A: FnOnce(&[Backend]),
    {
        let _lock = self.lock()?;
        let (mut file, _) = self.load()?;
        change(&mut file).map_err(|message| self.invalid(message))?;
        let backends = self.validate(&file)?;
        self.write_atomically(&file)?;
        apply(&backends);
        // Dropping `_lock` releases it.
        Ok(backends)
    }

    /// The exclusive lock every writer of the file (and every reload, to apply) holds.
    fn lock(&self) -> Result<File, StoreError> {
        let mut lock_path = self.real_path().into_os_string();
        lock_path.push(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| self.io(source))?;
        lock.lock().map_err(|source| self.io(source))?;
        Ok(lock)
    }

    fn write_atomically(&self, file: &BackendsFile) -> Result<(), StoreError> {
        let text = serde_yaml::to_string(file).map_err(|e| self.invalid(e.to_string()))?;
        let real = self.real_path();
        let dir = real.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".backends.")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|source| self.io(source))?;
        tmp.write_all(text.as_bytes()).map_err(|source| self.io(source))?;
        tmp.as_file().sync_all().map_err(|source| self.io(source))?;
        tmp.persist(&real).map_err(|e| self.io(e.error))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|source| self.io(source))?;
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io { path: self.path.clone(), source }
    }

    fn invalid(&self, message: String) -> StoreError {
        StoreError::Invalid { path: self.path.clone(), message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendSpec;

    fn spec(name: &str) -> BackendSpec {
        serde_yaml::from_str(&format!("{{name: {name}, url: 'ws://127.0.0.1:1'}}")).unwrap()
    }

    #[test]
    fn a_file_written_in_two_goes_is_reloaded_as_written_in_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = BackendStore::new(dir.path().join("backends.yaml"));
        let (first, second) =
            ("backends:\n  - {name: a, url: 'ws://127.0.0.1:1'}\n", "  - {name: b, url: 'ws://127.0.0.1:2'}\n");
        std::fs::write(store.path(), first).unwrap();
        let writer = std::thread::spawn({
            let path = store.path().to_owned();
            move || {
                std::thread::sleep(SETTLED_AFTER / 2);
                let mut file = OpenOptions::new().append(true).open(path).unwrap();
                file.write_all(second.as_bytes()).unwrap();
            }
        });
        let backends = store.reload_then(|_| {}).unwrap();
        writer.join().unwrap();
        let names: Vec<_> = backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["a", "b"], "the half written first is not taken for the file");
    }

    #[test]
    fn concurrent_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BackendStore::new(dir.path().join("backends.yaml"));
        std::thread::scope(|s| {
            for t in 0..4 {
                let store = store.clone();
                s.spawn(move || {
                    for i in 0..10 {
                        store
                            .update(|f| {
                                f.backends.push(spec(&format!("b{t}_{i}")));
                                Ok(())
                            })
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(store.load().unwrap().1.len(), 40);
    }

    #[test]
    fn an_invalid_change_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BackendStore::new(dir.path().join("backends.yaml"));
        let add_a = |f: &mut crate::config::BackendsFile| {
            f.backends.push(spec("a"));
            Ok(())
        };
        store.update(add_a).unwrap();
        let err = store.update(add_a).unwrap_err();
        assert!(err.to_string().contains("twice"));
        assert_eq!(store.load().unwrap().1.len(), 1);
    }

    #[test]
    fn a_file_of_comments_alone_is_emptied_not_a_list_of_no_backends() {
        let dir = tempfile::tempdir().unwrap();
        let store = BackendStore::new(dir.path().join("backends.yaml"));
        std::fs::write(store.path(), "# backends go here\n---\n  # none yet\n").unwrap();
        let err = store.reload_then(|_| {}).unwrap_err();
        assert!(matches!(err, StoreError::Emptied { .. }), "{err}");
        std::fs::write(store.path(), "# none\nbackends: []\n").unwrap();
        assert!(store.reload_then(|_| {}).unwrap().is_empty());
    }
}
