//! Compiled components cached on disk, keyed by the content hash of the `.wasm` file and the
//! engine's compatibility hash, so a restart (or a reload of an unchanged file) does not
//! recompile. The cache directory must be writable only by the relay: cached artifacts are
//! native code and are loaded without re-validation.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

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
            Ok(component) => return Ok((component, true)),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cached plugin unusable; recompiling"),
        }
    }
    let artifact = engine.precompile_component(bytes)?;
    if let Err(e) = store(dir, &path, &artifact) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the plugin cache; continuing without it");
    }
    // SAFETY: `artifact` was produced by this engine a moment ago.
    let component = unsafe { Component::deserialize(engine, &artifact)? };
    Ok((component, false))
}

fn store(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(artifact)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
