//! Streamable HTTP sessions by `Mcp-Session-Id`, with idle expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Session;

/// Live HTTP sessions.
#[derive(Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl SessionRegistry {
    /// Registers a new session.
    pub fn insert(&self, session: Arc<Session>) {
        self.sessions.lock().expect("sessions lock").insert(session.id.clone(), session);
    }

    /// The session with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().expect("sessions lock").get(id).cloned()
    }

    /// Ends a session and its requests still running; false if there was none.
    pub fn remove(&self, id: &str) -> bool {
        let removed = self.sessions.lock().expect("sessions lock").remove(id);
        removed.inspect(|session| session.cancel_all()).is_some()
    }

    /// Drops sessions silent for longer than `idle`; returns how many.
    pub fn expire_idle(&self, idle: Duration) -> usize {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let before = sessions.len();
        sessions.retain(|_, s| {
            let live = s.last_seen().elapsed() < idle;
            if !live {
                s.cancel_all();
            }
            live
        });
        before - sessions.len()
    }

    /// Ends every session (the drain's last step); their requests are cancelled.
    pub fn clear(&self) -> usize {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        for session in sessions.values() {
            session.cancel_all();
        }
        let ended = sessions.len();
        sessions.clear();
        ended
    }
}
