//! Streamable HTTP sessions by `Mcp-Session-Id`, with idle expiry: the ones this instance
//! serves, in memory, and (with a shared `kv`) the records every instance can take a session
//! up from ([`SharedSessions`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::shared::RecordState;
use super::{Session, SharedSessions};

/// How many sessions ended while the kv was away are remembered until their records go.
const MAX_UNFORGOTTEN: usize = 65_536;

/// Live HTTP sessions.
pub struct SessionRegistry {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    shared: SharedSessions,
    /// Sessions ended here whose shared record could not be removed (the kv was away): not
    /// taken up again here, and their records removed as soon as the kv answers.
    unforgotten: Mutex<HashSet<String>>,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        Self::new(SharedSessions::local())
    }
}

impl SessionRegistry {
    /// A registry whose sessions are also kept in `shared`.
    pub fn new(shared: SharedSessions) -> Self {
        Self { sessions: Mutex::default(), shared, unforgotten: Mutex::default() }
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
    /// While the kv is away it is ended here at once and for the others once the kv answers
    /// ([`SessionRegistry::forget_ended`]).
    pub async fn end(&self, id: &str) {
        self.remove(id);
        if !self.shared.forget(id).await {
            let mut unforgotten = self.unforgotten.lock().expect("unforgotten lock");
            // Bounded: a client opening and ending sessions through a long outage cannot grow
            // it without end (past it, a session ended here may be taken up again elsewhere).
            if unforgotten.len() < MAX_UNFORGOTTEN {
                unforgotten.insert(id.to_owned());
            }
        }
    }

    /// Whether session `id` was ended here and its record may still be in the kv: it is not
    /// taken up again.
    pub fn was_ended(&self, id: &str) -> bool {
        self.unforgotten.lock().expect("unforgotten lock").contains(id)
    }

    /// Removes the records of the sessions ended here while the kv was away, now that it may
    /// answer.
    pub async fn forget_ended(&self) {
        let ended: Vec<String> = self.unforgotten.lock().expect("unforgotten lock").iter().cloned().collect();
        for id in ended {
            if !self.shared.forget(&id).await {
                return;
            }
            self.unforgotten.lock().expect("unforgotten lock").remove(&id);
        }
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

    /// Drops sessions silent for longer than `idle` and not in use (no request running, no GET
    /// stream open); returns how many.
    pub fn expire_idle(&self, idle: Duration) -> usize {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let before = sessions.len();
        sessions.retain(|_, s| {
            let live = s.last_seen().elapsed() < idle || s.is_in_use();
            if !live {
                s.end();
            }
            live
        });
        before - sessions.len()
    }

    /// Looks after the shared records of this instance's sessions
    /// ([`SharedSessions::look_after`]): those in use do not expire under them, those the kv
    /// lost are written again, and those ended on another instance end here.
    pub async fn look_after_records(&self) {
        if !self.shared.enabled() {
            return;
        }
        let sessions: Vec<_> = self.sessions.lock().expect("sessions lock").values().cloned().collect();
        for session in sessions {
            match self.shared.look_after(&session).await {
                RecordState::Open => {}
                RecordState::Ended => {
                    self.remove(&session.id);
                    tracing::debug!(session = %session.tag(), "session ended on another instance; ended here");
                }
                // While the kv is away, one try a sweep: each waits its timeout.
                RecordState::Unreachable => return,
            }
        }
    }

    /// Before the drain ends the sessions here: writes what other instances will need of them
    /// and the kv does not hold (records never written or lost, ends not yet recorded), so the
    /// instance that takes a session up next serves it, or refuses it when it ended here. What
    /// the kv does not take now is logged: it is lost with this process.
    pub async fn hand_over(&self) {
        if !self.shared.enabled() {
            return;
        }
        // Twice: the first command after Redis came back may meet the connection it broke.
        for _ in 0..2 {
            self.forget_ended().await;
        }
        let sessions: Vec<_> = self.sessions.lock().expect("sessions lock").values().cloned().collect();
        let sessions: Vec<_> = sessions.into_iter().filter(|s| !self.was_ended(&s.id)).collect();
        let (mut unwritten, mut retried) = (0, false);
        for (done, session) in sessions.iter().enumerate() {
            let mut state = self.shared.hand_over(session).await;
            if state == RecordState::Unreachable && !retried {
                retried = true;
                state = self.shared.hand_over(session).await;
            }
            // While the kv is away each try waits its timeout: the rest are given up on.
            if state == RecordState::Unreachable {
                unwritten = sessions.len() - done;
                break;
            }
        }
        // Ends made meanwhile (a DELETE is taken while draining), over any record written above.
        self.forget_ended().await;
        let unrecorded = self.unforgotten.lock().expect("unforgotten lock").len();
        if unwritten > 0 || unrecorded > 0 {
            tracing::error!(
                unwritten,
                unrecorded,
                "the kv did not take what the other instances need of this one's sessions: those not written must initialize again elsewhere, those ended here could be taken up again"
            );
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
