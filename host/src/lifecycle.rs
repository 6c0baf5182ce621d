//! Instance-wide facts every layer may read: colour, uptime, readiness, session count.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::access::TransportKind;

/// Facts about this relay process.
#[derive(Debug)]
pub struct Lifecycle {
    /// Blue/green colour from `RELAY_INSTANCE` (empty when unset).
    pub instance: String,
    /// When the process started serving.
    pub started: Instant,
    /// False until the listener is up, and again once draining begins.
    ready: AtomicBool,
    /// Open client sessions, per transport (in [`TransportKind::ALL`] order).
    sessions: [AtomicUsize; 3],
}

impl Lifecycle {
    /// A not-yet-ready instance.
    pub fn new(instance: String) -> Self {
        Self { instance, started: Instant::now(), ready: AtomicBool::new(false), sessions: Default::default() }
    }

    /// Whether `/readyz` should say yes.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Marks the instance ready (listener up) or not (draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Open sessions now.
    pub fn sessions(&self) -> usize {
        self.sessions.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    /// Open sessions now, per transport.
    pub fn sessions_by_transport(&self) -> Vec<(&'static str, usize)> {
        TransportKind::ALL.iter().zip(&self.sessions).map(|(t, n)| (t.as_str(), n.load(Ordering::Relaxed))).collect()
    }

    /// Counts a session of `transport` in; the returned guard counts it out when dropped.
    pub fn session_opened(self: &std::sync::Arc<Self>, transport: TransportKind) -> SessionCount {
        let slot = TransportKind::ALL.iter().position(|t| *t == transport).expect("every transport has a slot");
        self.sessions[slot].fetch_add(1, Ordering::Relaxed);
        SessionCount(self.clone(), slot)
    }
}

/// Held by a session for its lifetime.
#[derive(Debug)]
pub struct SessionCount(std::sync::Arc<Lifecycle>, usize);

impl Drop for SessionCount {
    fn drop(&mut self) {
        self.0.sessions[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}
