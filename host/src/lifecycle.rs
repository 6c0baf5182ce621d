//! Instance-wide facts every layer may read: colour, uptime, readiness, session count, and the
//! drain: once it starts, nothing new begins (connections, sessions, requests are refused) and
//! what runs is awaited; past its grace, what still runs is cut off (answered with an error).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
    /// Cancelled when the drain starts (SIGTERM, or the `relay_drain` tool).
    drain: CancellationToken,
    /// When the drain started.
    drain_started: std::sync::OnceLock<std::time::SystemTime>,
    /// Cancelled when the drain's grace has passed: requests still running are cut off (each
    /// answered with an error, and logged).
    cut: CancellationToken,
    /// Whether the cut came before the grace passed (a second shutdown signal).
    cut_short: AtomicBool,
    /// Client requests being answered now.
    running: AtomicUsize,
    /// Woken when `running` drops to zero.
    all_answered: Notify,
}

impl Lifecycle {
    /// A not-yet-ready instance.
    pub fn new(instance: String) -> Self {
        Self {
            instance,
            started: Instant::now(),
            ready: AtomicBool::new(false),
            sessions: Default::default(),
            drain: CancellationToken::new(),
            drain_started: std::sync::OnceLock::new(),
            cut: CancellationToken::new(),
            cut_short: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            all_answered: Notify::new(),
        }
    }

    /// Starts the drain: `/readyz` says no from now on, and new connections, sessions and
    /// requests are refused. Returns false when it had already started.
    pub fn start_drain(&self) -> bool {
        self.set_ready(false);
        let first = !self.drain.is_cancelled();
        let _ = self.drain_started.set(std::time::SystemTime::now());
        self.drain.cancel();
        first
    }

    /// When the drain started, once it has.
    pub fn drain_started(&self) -> Option<std::time::SystemTime> {
        self.drain_started.get().copied()
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// Cancelled when the drain starts (a clone: waiting on it costs the waiter, not others).
    pub fn drain_signal(&self) -> CancellationToken {
        self.drain.clone()
    }

    /// Cuts off the requests still running once the drain's grace has passed, or before
    /// (`short`: the operator's second shutdown signal).
    pub fn cut_off(&self, short: bool) {
        self.cut_short.store(short, Ordering::Release);
        self.cut.cancel();
    }

    /// Whether the requests were cut off before the grace passed ([`Lifecycle::cut_off`]).
    pub fn cut_short(&self) -> bool {
        self.cut_short.load(Ordering::Acquire)
    }

    /// Cancelled when requests still running are cut off ([`Lifecycle::cut_off`]).
    pub fn cut_signal(&self) -> &CancellationToken {
        &self.cut
    }

    /// Counts a client request in while it is answered; the guard counts it out.
    pub fn request_started(self: &std::sync::Arc<Self>) -> RunningRequest {
        self.running.fetch_add(1, Ordering::AcqRel);
        RunningRequest(self.clone())
    }

    /// Client requests being answered now.
    pub fn running_requests(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Returns once no client request is running.
    pub async fn requests_answered(&self) {
        loop {
            let woken = self.all_answered.notified();
            if self.running_requests() == 0 {
                return;
            }
            woken.await;
        }
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

/// Held by a running client request.
#[derive(Debug)]
pub struct RunningRequest(std::sync::Arc<Lifecycle>);

impl Drop for RunningRequest {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_answered.notify_waiters();
        }
    }
}

/// Held by a session for its lifetime.
#[derive(Debug)]
pub struct SessionCount(std::sync::Arc<Lifecycle>, usize);

impl SessionCount {
    /// The instance the session belongs to.
    pub fn lifecycle(&self) -> &std::sync::Arc<Lifecycle> {
        &self.0
    }
}

impl Drop for SessionCount {
    fn drop(&mut self) {
        self.0.sessions[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}
