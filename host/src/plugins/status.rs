//! What `relay_get_status` shows of each plugin: its version, the one before, its counters and
//! its last error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use serde_json::{Value, json};

use super::registry::Plugins;

impl Plugins {
    /// Status of every plugin for `relay_get_status`; where its file lives only for `admin`
    /// (as a backend's target is): others see its file name alone, in its last error too.
    pub fn status(&self, admin: bool) -> Vec<Value> {
        self.slots
            .iter()
            .map(|slot| {
                let current = slot.current.load();
                let stat = |c: &AtomicU64| c.load(Ordering::Relaxed);
                let path = slot.path.display().to_string();
                let last_error = slot.last_error.lock().expect("last_error lock").clone().map(|error| {
                    if admin {
                        return error;
                    }
                    let name = slot.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    error.replace(&path, &name)
                });
                json!({
                    "name": slot.config.name,
                    "world": slot.config.world.as_str(),
                    "path": admin.then_some(path),
                    "hash": current.hash,
                    "loaded_at": current.loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                    "previous_hash": slot.previous.load().as_ref().map(|p| p.hash.clone()),
                    "calls": stat(&slot.stats.calls),
                    "held": stat(&slot.stats.held),
                    "unread": stat(&slot.stats.unread),
                    "denials": stat(&slot.stats.denials),
                    "traps": stat(&slot.stats.traps),
                    "reloads": stat(&slot.stats.reloads),
                    "reload_failures": stat(&slot.stats.reload_failures),
                    "last_error": last_error,
                    "kv_refusals": slot.ctx.caps.kv_refusals(),
                    "logs_dropped": slot.ctx.caps.logs_dropped(),
                })
            })
            .collect()
    }
}
