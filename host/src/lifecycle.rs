//! Instance-wide facts every layer may read: colour, uptime, readiness, session count.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

/// Facts about this relay process.
#[derive(Debug)]
pub struct Lifecycle {
    /// Blue/green colour from `RELAY_INSTANCE` (empty when unset).
    pub instance: String,
    /// When the process started serving.
    pub started: Instant,
    /// False until the listener is up, and again once draining begins.
    ready: AtomicBool,
    /// Open client sessions across all transports.
    sessions: AtomicUsize,
}

impl Lifecycle {
    /// A not-yet-ready instance.
    pub fn new(instance: String) -> Self {
        Self { instance, started: Instant::now(), ready: AtomicBool::new(false), sessions: AtomicUsize::new(0) }
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
        self.sessions.load(Ordering::Relaxed)
    }

    /// Counts a session in; the returned guard counts it out when dropped.
    pub fn session_opened(self: &std::sync::Arc<Self>) -> SessionCount {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        SessionCount(self.clone())
    }
}

/// Held by a session for its lifetime.
#[derive(Debug)]
pub struct SessionCount(std::sync::Arc<Lifecycle>);

impl Drop for SessionCount {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}
