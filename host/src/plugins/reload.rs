//! New versions of a running plugin: reload from its file (a failure keeps the running
//! version, and the same bad file is not tried again), and rollback to the previous good one.
//! Both publish the new version in one store, so calls in flight finish on theirs.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::loaded::Version;
use super::registry::{Plugins, short};

/// Why a reload or rollback did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReloadError {
    /// No plugin of that name is configured.
    #[error("no plugin named {0}")]
    NoSuchPlugin(String),
    /// The file could not be read, compiled or type-checked; the running version stays.
    #[error("{0}")]
    Failed(String),
    /// A rollback with nothing to go back to.
    #[error("plugin {0} has no previous version")]
    NoPrevious(String),
}

/// What a reload did (the content hash of the file it looked at).
#[derive(Debug, Clone, PartialEq)]
pub enum Reloaded {
    /// A new version runs now.
    Loaded(String),
    /// The file is the running version.
    Unchanged(String),
    /// The file is the version a rollback went away from: not loaded until it changes.
    StillRolledBack(String),
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reloaded::Loaded(hash) => write!(f, "loaded {}", short(hash)),
            Reloaded::Unchanged(hash) => write!(f, "{} unchanged", short(hash)),
            Reloaded::StillRolledBack(hash) => {
                write!(f, "{} was rolled back; not loaded again until the file changes", short(hash))
            }
        }
    }
}

/// The version a rollback switched to (its content hash).
#[derive(Debug, Clone, PartialEq)]
pub struct RolledBack(pub String);

impl std::fmt::Display for RolledBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rolled back to {}", short(&self.0))
    }
}

impl Plugins {
    /// Loads plugin `name` again from its file. A failure keeps the running version. The auth
    /// plugin's remembered successes are forgotten whatever the outcome (see `auth_cache`).
    pub async fn reload(&self, name: &str) -> Result<Reloaded, ReloadError> {
        let slot = self.slot(name)?;
        let _guard = slot.reloading.lock().await;
        self.auth_cache.clear();
        let started = std::time::Instant::now();
        let failed = |message: String| {
            slot.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
            *slot.last_error.lock().expect("last_error lock") = Some(message.clone());
            *slot.reload_failing.lock().expect("reload failing lock") = Some(message.clone());
            tracing::error!(plugin = name, error = %message, running = short(&slot.current.load().hash), "plugin reload failed; keeping the running version");
            slot.metrics.reload(false);
            Err(ReloadError::Failed(message))
        };
        let bytes = match Version::read(&slot.ctx, &slot.path).await {
            Ok(bytes) => bytes,
            Err(error) => return failed(error.to_string()),
        };
        let hash = super::cache::content_hash(&bytes);
        // The file is the running version again, or the version rolled back from (which
        // loaded before): a reload error it had (a version that did not load, or a file that
        // could not be read) is history; a call's failure is not.
        let loads_again = || {
            slot.last_failed_hash.lock().expect("failed hash lock").take();
            if let Some(failed) = slot.reload_failing.lock().expect("reload failing lock").take() {
                let mut last_error = slot.last_error.lock().expect("last_error lock");
                if last_error.as_ref() == Some(&failed) {
                    *last_error = None;
                }
                slot.metrics.file_loads_again();
            }
        };
        {
            let mut rolled_back = slot.rolled_back.lock().expect("rolled back lock");
            if rolled_back.as_deref() == Some(hash.as_str()) {
                loads_again();
                return Ok(Reloaded::StillRolledBack(hash));
            }
            // The file changed since the rollback: the rollback has had its say.
            *rolled_back = None;
        }
        if hash == slot.current.load().hash {
            loads_again();
            return Ok(Reloaded::Unchanged(hash));
        }
        if slot.last_failed_hash.lock().expect("failed hash lock").as_deref() == Some(hash.as_str()) {
            let known = slot.last_error.lock().expect("last_error lock").clone().unwrap_or_default();
            return Err(ReloadError::Failed(known));
        }
        match Version::load(&self.engine, &self.linker, &slot.ctx, slot.config.world, bytes, self.cache_dir.as_deref())
            .await
        {
            Ok(version) => {
                let old = slot.current.swap(Arc::new(version));
                // Again, now the new version answers: what the old one admitted while this one
                // loaded (an open session's check, `session::Standing`) is asked again.
                self.auth_cache.clear();
                old.start_afresh();
                slot.previous.store(Some(old));
                slot.stats.reloads.fetch_add(1, Ordering::Relaxed);
                *slot.last_error.lock().expect("last_error lock") = None;
                *slot.last_failed_hash.lock().expect("failed hash lock") = None;
                *slot.reload_failing.lock().expect("reload failing lock") = None;
                if slot.config.world.shapes_lists() {
                    self.changed.send_modify(|n| *n += 1);
                }
                let took_ms = started.elapsed().as_secs_f64() * 1000.0;
                tracing::info!(plugin = name, hash = short(&hash), took_ms, "plugin reloaded");
                slot.metrics.reload(true);
                Ok(Reloaded::Loaded(hash))
            }
            Err(error) => {
                *slot.last_failed_hash.lock().expect("failed hash lock") = Some(hash);
                failed(error.to_string())
            }
        }
    }

    /// Reloads every plugin; returns each outcome.
    pub async fn reload_all(&self) -> Vec<(String, Result<Reloaded, ReloadError>)> {
        let mut outcomes = Vec::new();
        for slot in &self.slots {
            outcomes.push((slot.config.name.clone(), self.reload(&slot.config.name).await));
        }
        outcomes
    }

    /// Switches plugin `name` back to its previous version at once (and keeps the one it
    /// replaces as the new previous, so a second rollback undoes the first).
    pub async fn rollback(&self, name: &str) -> Result<RolledBack, ReloadError> {
        let slot = self.slot(name)?;
        let _guard = slot.reloading.lock().await;
        let previous = slot.previous.swap(None).ok_or_else(|| ReloadError::NoPrevious(name.to_owned()))?;
        self.auth_cache.clear();
        let hash = previous.hash.clone();
        previous.start_afresh();
        let replaced = slot.current.swap(previous);
        self.auth_cache.clear();
        replaced.start_afresh();
        *slot.rolled_back.lock().expect("rolled back lock") = Some(replaced.hash.clone());
        slot.previous.store(Some(replaced));
        if slot.config.world.shapes_lists() {
            self.changed.send_modify(|n| *n += 1);
        }
        tracing::warn!(plugin = name, hash = short(&hash), "plugin rolled back");
        Ok(RolledBack(hash))
    }
}
