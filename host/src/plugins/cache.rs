//! Compiled components cached on disk, keyed by the content hash of the `.wasm` file and the
//! engine's compatibility hash, so a restart (or a reload of an unchanged file) does not
//! recompile. The cache directory must be writable only by the relay: cached artifacts are
//! native code and are loaded without re-validation. It keeps the [`KEPT`] artifacts used
//! last (a hit marks its file used), so a plugin rebuilt and reloaded all day does not fill
//! the disk; an artifact let go of is only compiled again if that version is loaded again.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use wasmtime::Engine;
use wasmtime::component::Component;

/// How many compiled artifacts the cache directory keeps: every plugin of a relay (or of two
/// colours sharing the directory) with its previous version, and room to spare.
pub const KEPT: usize = 32;

/// The SHA-256 of a component file, hex.
pub fn content_hash(bytes: &[u8]) -> String {
    crate::digest::sha256_hex(bytes)
}

/// The default cache directory: `$XDG_CACHE_HOME/relay` or `~/.cache/relay`.
pub fn default_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("relay").join("plugins"))
}

/// Compiles `bytes` or loads the cached artifact. Returns the component and whether the cache
/// served it. Blocking and CPU-heavy: call it off the async runtime.
pub fn compile(engine: &Engine, bytes: &[u8], hash: &str, dir: Option<&Path>) -> wasmtime::Result<(Component, bool)> {
    let Some(dir) = dir else { return Ok((Component::new(engine, bytes)?, false)) };
    let mut engine_key = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut engine_key);
    env!("CARGO_PKG_VERSION").hash(&mut engine_key);
    let path = dir.join(format!("{hash}-{:016x}.cwasm", engine_key.finish()));
    if path.exists() {
        // SAFETY: the file was written by `precompile_component` of an engine with the same
        // compatibility hash into a directory only the relay writes (see the module docs).
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                // Used now: the pruning keeps what was used last.
                let _ =
                    std::fs::File::options().append(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
                return Ok((component, true));
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cached plugin unusable; recompiling"),
        }
    }
    let artifact = engine.precompile_component(bytes)?;
    if let Err(e) = store(dir, &path, &artifact) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the plugin cache; continuing without it");
    }
    prune(dir, KEPT);
    // SAFETY: `artifact` was produced by this engine a moment ago.
    let component = unsafe { Component::deserialize(engine, &artifact)? };
    Ok((component, false))
}

/// Removes the artifacts of `dir` beyond the `keep` used last. Only files named as this module
/// names them are touched (the directory may be shared with other files); a relay running an
/// artifact removed here keeps it (it is mapped), and compiles it again if it loads it again.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut artifacts: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_str().is_some_and(is_artifact_name))
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .collect();
    if artifacts.len() <= keep {
        return;
    }
    artifacts.sort_unstable_by_key(|(used, _)| std::cmp::Reverse(*used));
    for (_, path) in &artifacts[keep..] {
        match std::fs::remove_file(path) {
            Ok(()) => tracing::debug!(path = %path.display(), "plugin cache: removed an artifact not used lately"),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "plugin cache: cannot remove an old artifact")
            }
        }
    }
}

/// `<sha256 hex>-<engine key hex>.cwasm`, as [`compile`] names an artifact.
fn is_artifact_name(name: &str) -> bool {
    let Some((hash, rest)) = name.split_once('-') else { return false };
    let Some(key) = rest.strip_suffix(".cwasm") else { return false };
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    hex(hash, 64) && hex(key, 16)
}

fn store(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(artifact)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(dir: &Path, n: u8, age_secs: u64) -> PathBuf {
        let path = dir.join(format!("{}-{:016x}.cwasm", format!("{n:02x}").repeat(32), 7));
        std::fs::write(&path, b"x").unwrap();
        let when = SystemTime::now() - std::time::Duration::from_secs(age_secs);
        std::fs::File::options().append(true).open(&path).unwrap().set_modified(when).unwrap();
        path
    }

    #[test]
    fn the_cache_keeps_the_artifacts_used_last_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let old = artifact(dir.path(), 1, 3_000);
        let used = artifact(dir.path(), 2, 10);
        let newer = artifact(dir.path(), 3, 100);
        let older = artifact(dir.path(), 4, 2_000);
        let other = dir.path().join("notes.cwasm");
        std::fs::write(&other, b"mine").unwrap();
        prune(dir.path(), 2);
        assert!(used.exists() && newer.exists(), "the two used last stay");
        assert!(!old.exists() && !older.exists(), "the rest go");
        assert!(other.exists(), "a file the cache did not name is left alone");
        prune(dir.path(), 2);
        assert!(used.exists() && newer.exists());
    }

    #[test]
    fn artifact_names_are_recognised_exactly() {
        let hash = "ab".repeat(32);
        assert!(is_artifact_name(&format!("{hash}-0123456789abcdef.cwasm")));
        assert!(!is_artifact_name(&format!("{hash}-0123456789abcdef.cwasm.tmp")));
        assert!(!is_artifact_name(&format!("{hash}-0123456789abcde.cwasm")));
        assert!(!is_artifact_name("plugin.cwasm"));
    }
}
