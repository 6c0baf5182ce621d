//! The set of upstreams, reconciled against the configured backends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{broadcast, watch};

use super::replay::SessionReplay;
use super::{Upstream, UpstreamEvent};
use crate::config::{Backend, UpstreamConfig};

/// All running upstreams by name. Reconciling is idempotent: applying the same backend list
/// twice changes nothing, so the file watch and the admin tools may both apply a change.
pub struct Upstreams {
    /// Running upstreams by backend name (sorted, so listings are stable).
    map: RwLock<BTreeMap<String, Arc<Upstream>>>,
    /// Bumped whenever the set or any tool list changes.
    changed: watch::Sender<u64>,
    /// Notifications from every upstream (other than list changes), for the router.
    notifications: broadcast::Sender<UpstreamEvent>,
    /// Timing handed to every supervisor.
    timing: UpstreamConfig,
    /// Largest message accepted from an upstream.
    max_message_bytes: usize,
    /// The credential step, for backends listed as their first authorized user.
    catalog: super::CatalogCredentialSlot,
    /// The log level the relay's sessions hold, which every upstream's new connection is set to.
    log_level: super::replay::HeldLevel,
    /// The session state of backends removed, by name: one added again under its name (a
    /// file briefly emptied, `relay_remove_server` then `relay_add_server`) is subscribed
    /// again to what its clients still subscribe to, as a replaced one is.
    removed: Mutex<BTreeMap<String, Arc<SessionReplay>>>,
}

/// Removed backends whose session state is kept at most (beyond it, the store starts over).
const MAX_REMOVED: usize = 256;

impl Upstreams {
    /// An empty set.
    pub fn new(timing: UpstreamConfig, max_message_bytes: usize) -> Self {
        Self {
            map: RwLock::default(),
            changed: watch::Sender::new(0),
            notifications: broadcast::Sender::new(1024),
            timing,
            max_message_bytes,
            catalog: super::CatalogCredentialSlot::default(),
            log_level: Default::default(),
            removed: Mutex::default(),
        }
    }

    /// The log level the relay's sessions hold now: each upstream's next connection (a
    /// reconnect, a backend added later) is set to it.
    pub fn hold_log_level(&self, level: &'static str) {
        *self.log_level.lock().expect("held level lock") = Some(level);
    }

    /// Hands every upstream (now and later) the credential step, once it exists.
    pub fn set_catalog_credential(&self, source: std::sync::Arc<dyn super::CatalogCredential>) {
        let _ = self.catalog.set(source);
    }

    /// Starts upstreams that are new, stops those that are gone, replaces those whose
    /// configuration changed (the new one makes its subscriptions again); the calls in flight
    /// on one stopped or replaced finish on it. Returns the names started and stopped.
    pub fn reconcile(&self, backends: &[Backend]) -> (Vec<String>, Vec<String>) {
        let mut map = self.map.write().expect("upstreams lock");
        let mut stopped = Vec::new();
        let mut replaced = BTreeMap::new();
        map.retain(|name, upstream| {
            let keep = backends.iter().any(|b| b == &upstream.backend);
            if !keep {
                if backends.iter().any(|b| b.name == *name) {
                    upstream.replace();
                    replaced.insert(name.clone(), upstream.replay.clone());
                } else {
                    upstream.remove();
                    let mut removed = self.removed.lock().expect("removed lock");
                    if removed.len() >= MAX_REMOVED {
                        removed.clear();
                    }
                    removed.insert(name.clone(), upstream.replay.clone());
                }
                stopped.push(name.clone());
            }
            keep
        });
        let mut started = Vec::new();
        for backend in backends {
            if !map.contains_key(&backend.name) {
                let kept = self.removed.lock().expect("removed lock").remove(&backend.name);
                let replay = replaced
                    .remove(&backend.name)
                    .or(kept)
                    .unwrap_or_else(|| Arc::new(SessionReplay::new(self.log_level.clone())));
                let upstream = Upstream::spawn(
                    backend.clone(),
                    self.timing.clone(),
                    self.max_message_bytes,
                    self.changed.clone(),
                    self.notifications.clone(),
                    self.catalog.clone(),
                    replay,
                );
                map.insert(backend.name.clone(), upstream);
                started.push(backend.name.clone());
            }
        }
        drop(map);
        if !started.is_empty() || !stopped.is_empty() {
            tracing::info!(?started, ?stopped, "backends reconciled");
            self.changed.send_modify(|generation| *generation += 1);
        }
        (started, stopped)
    }

    /// Forgets `uri` from the subscriptions kept for `name`, a backend removed since: its last
    /// subscriber left, and a backend added again under the name is not to be subscribed to it.
    pub fn forget_kept_subscription(&self, name: &str, uri: &str) {
        if let Some(replay) = self.removed.lock().expect("removed lock").get(name) {
            replay.forget(uri);
        }
    }

    /// The upstream called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.map.read().expect("upstreams lock").get(name).cloned()
    }

    /// Every upstream, sorted by name.
    pub fn list(&self) -> Vec<Arc<Upstream>> {
        self.map.read().expect("upstreams lock").values().cloned().collect()
    }

    /// A counter that moves whenever the set of upstreams or any tool list changes.
    pub fn generation(&self) -> u64 {
        *self.changed.borrow()
    }

    /// Changes whenever the set of upstreams or any tool list changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Notifications from every upstream (resource updates, log messages, progress).
    pub fn notifications(&self) -> broadcast::Receiver<UpstreamEvent> {
        self.notifications.subscribe()
    }

    /// Stops every upstream (relay shutdown).
    pub fn stop_all(&self) {
        for upstream in self.map.write().expect("upstreams lock").values() {
            upstream.stop();
        }
    }
}
