//! Streamable HTTP sessions by `Mcp-Session-Id`, with idle expiry: the ones this instance
//! serves, in memory, and (with a shared `kv`) the records every instance can take a session
//! up from ([`SharedSessions`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Session, SharedSessions};

/// Live HTTP sessions.
pub struct SessionRegistry {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    shared: SharedSessions,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        Self::new(SharedSessions::local())
    }
}

impl SessionRegistry {
    /// A registry whose sessions are also kept in `shared`.
    pub fn new(shared: SharedSessions) -> Self {
        Self { sessions: Mutex::default(), shared }
    }

    /// The sessions every instance sharing the kv can serve.
    pub fn shared(&self) -> &SharedSessions {
        &self.shared
    }

    /// Registers a new session.
    pub fn insert(&self, session: Arc<Session>) {
        self.sessions.lock().expect("sessions lock").insert(session.id.clone(), session);
    }

    /// Registers a session taken up from another instance, unless a concurrent request already
    /// did: gives the one registered, and whether it is `session`.
    pub fn adopt(&self, session: Arc<Session>) -> (Arc<Session>, bool) {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        match sessions.get(&session.id) {
            Some(existing) => (existing.clone(), false),
            None => {
                sessions.insert(session.id.clone(), session.clone());
                (session, true)
            }
        }
    }

    /// Registers a session `initialize` opened, and records it for the other instances.
    pub async fn open(&self, session: Arc<Session>) {
        self.insert(session.clone());
        self.shared.save(&session).await;
    }

    /// Ends session `id` on every instance (the client's `DELETE`, its credential's expiry).
    pub async fn end(&self, id: &str) {
        self.remove(id);
        self.shared.forget(id).await;
    }

    /// The session with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().expect("sessions lock").get(id).cloned()
    }

    /// Ends a session here (not for other instances) and its requests still running; false if
    /// there was none.
    pub fn remove(&self, id: &str) -> bool {
        let removed = self.sessions.lock().expect("sessions lock").remove(id);
        removed.inspect(|session| session.end()).is_some()
    }

    /// Drops sessions silent for longer than `idle` with no request running; returns how many.
    pub fn expire_idle(&self, idle: Duration) -> usize {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let before = sessions.len();
        sessions.retain(|_, s| {
            let live = s.last_seen().elapsed() < idle || s.is_busy();
            if !live {
                s.end();
            }
            live
        });
        before - sessions.len()
    }

    /// Keeps the shared records of the sessions with a request running from expiring under it
    /// ([`SharedSessions::keep_alive`]).
    pub async fn keep_busy_alive(&self) {
        if !self.shared.enabled() {
            return;
        }
        let busy: Vec<_> =
            self.sessions.lock().expect("sessions lock").values().filter(|s| s.is_busy()).cloned().collect();
        for session in busy {
            self.shared.keep_alive(&session).await;
        }
    }

    /// Ends every session here (the drain's last step; their records stay, for the instances
    /// that go on serving them); their requests are cancelled.
    pub fn clear(&self) -> usize {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        for session in sessions.values() {
            session.end();
        }
        let ended = sessions.len();
        sessions.clear();
        ended
    }
}
