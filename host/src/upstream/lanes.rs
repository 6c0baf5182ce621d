//! A WebSocket backend's tool calls, each on a connection of the worker that serves its caller,
//! for a backend that asked for it (`session_per_worker`: each lane is a backend session).
//!
//! The supervisor's connection lives on worker 0 ([`crate::workers`]): a call from a client
//! on another worker would cross threads twice (to the writer, back from the reader). So each
//! other worker keeps a lane: a connection of its own to the same backend, opened on its own
//! runtime while the supervisor's is up, and opened again when that one is replaced (the old
//! lane retired: its calls in flight finish on it). Only `tools/call` takes a lane. Listing,
//! subscriptions and the relay's own requests stay on the supervisor's connection, where the
//! relay keeps the state they set; the log level is set on each lane too (its calls' log
//! messages come at its session's level). What a lane's backend session sends that is not for
//! a call (list changes, resource updates) goes to the supervisor, as if its own connection had
//! sent it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::ExponentialBackoff;
use tokio::sync::{mpsc, watch};

use super::connection::Connection;
use super::replay::SessionReplay;
use super::supervisor::{STABLE_AFTER, Upstream};
use crate::mcp::Notification;

/// The method that takes a lane: the hot path, and one that leaves no state on the backend
/// session that the relay tracks.
const LANE_METHOD: &str = "tools/call";

/// Each worker's connection (none for worker 0, whose calls use the supervisor's).
pub struct Lanes {
    slots: Box<[watch::Sender<Option<Arc<Connection>>>]>,
}

impl Lanes {
    /// A slot per worker, all empty until [`keep`] fills them; none at all for a backend that
    /// did not ask for lanes, whose calls then look no further.
    pub fn new(session_per_worker: bool) -> Self {
        let workers = if session_per_worker { crate::workers::count() } else { 0 };
        Self { slots: (0..workers).map(|_| watch::Sender::new(None)).collect() }
    }

    /// The live lane of the worker running this code, for `method`; `None` sends it on the
    /// supervisor's connection.
    pub fn for_call(&self, method: &str) -> Option<Arc<Connection>> {
        if method != LANE_METHOD {
            return None;
        }
        let index = crate::workers::current();
        if index == 0 {
            return None;
        }
        self.slots.get(index)?.borrow().clone().filter(|conn| !conn.is_closed())
    }

    /// Sets every connected lane's backend session to the level `replay` holds (just set on
    /// the supervisor's), as a new lane's is when it opens.
    pub async fn set_log_level(&self, replay: &SessionReplay, backend: &str) {
        let live: Vec<_> = self.live().collect();
        futures::future::join_all(live.iter().map(|lane| replay.replay_level(lane, backend))).await;
    }

    /// How many lanes are connected (for status).
    pub fn connected(&self) -> usize {
        self.live().count()
    }

    /// The lanes connected now.
    fn live(&self) -> impl Iterator<Item = Arc<Connection>> + '_ {
        self.slots.iter().filter_map(|slot| slot.borrow().clone()).filter(|conn| !conn.is_closed())
    }
}

/// Starts a lane on every worker but 0 (none when there is one worker), for a WebSocket backend
/// with `session_per_worker`.
pub fn start(upstream: &Arc<Upstream>, to_supervisor: &mpsc::Sender<Notification>) {
    for index in 1..crate::workers::count() {
        crate::workers::spawn_on(index, keep(upstream.clone(), index, to_supervisor.clone()));
    }
}

/// Keeps worker `index`'s lane connected while the supervisor's connection is up, until the
/// upstream stops.
async fn keep(upstream: Arc<Upstream>, index: usize, to_supervisor: mpsc::Sender<Notification>) {
    let Some(slot) = upstream.lanes.slots.get(index) else { return };
    let mut primary = upstream.connection.subscribe();
    let mut backoff = upstream.reconnect_delays();
    let mut failing = false;
    loop {
        // The supervisor's connection first: a backend it cannot reach is not tried N times.
        let following = loop {
            if let Some(conn) = primary.borrow_and_update().clone() {
                break conn;
            }
            tokio::select! {
                changed = primary.changed() => if changed.is_err() { return },
                () = upstream.stop.cancelled() => return,
            }
        };
        let opened = tokio::select! {
            opened = open(&upstream) => opened,
            () = upstream.stop.cancelled() => return,
        };
        let (conn, mut events) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                // Tried only while the supervisor's connection is up, so this backend refuses
                // a second session: worth one warning per run of failures, not one per retry.
                if failing {
                    tracing::debug!(backend = upstream.name(), worker = index, %error, "session_per_worker: still no session of its own");
                } else {
                    tracing::warn!(backend = upstream.name(), worker = index, %error, "session_per_worker: a worker's own session did not open; its calls use the shared one until it does");
                    failing = true;
                }
                if !wait_out(&upstream, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        failing = false;
        upstream.replay.replay_level(&conn, upstream.name()).await;
        let connected = Instant::now();
        slot.send_replace(Some(conn.clone()));
        let followed = loop {
            tokio::select! {
                () = upstream.stop.cancelled() => break upstream.is_retiring(),
                () = conn.closed() => break false,
                // The supervisor reconnected (or lost its connection): so does the lane.
                changed = primary.changed() => if changed.is_err()
                    || !primary.borrow().as_ref().is_some_and(|now| Arc::ptr_eq(now, &following)) { break true },
                event = events.recv() => match event {
                    Some(notification) => { let _ = to_supervisor.send(notification).await; }
                    None => break false,
                },
            }
        };
        slot.send_replace(None);
        if followed {
            // Its calls in flight finish on it while the next lane opens.
            tokio::spawn(super::connection::retire(conn, events, upstream.call_timeout()));
        } else {
            conn.close().await;
        }
        if upstream.stop.is_cancelled() {
            return;
        }
        if connected.elapsed() >= STABLE_AFTER {
            backoff = upstream.reconnect_delays();
        }
        // A lane the backend closed under a live supervisor's connection waits before the next
        // one, so a backend that drops each at once is not reconnected to in a loop; one that
        // follows the supervisor's reconnect goes at once (the supervisor waited already).
        if !followed && !wait_out(&upstream, &mut backoff).await {
            return;
        }
    }
}

/// Waits out the next delay of `backoff`; false when the upstream stops meanwhile.
async fn wait_out(upstream: &Upstream, backoff: &mut ExponentialBackoff) -> bool {
    let delay = backoff.next().unwrap_or(Duration::from_secs(1));
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = upstream.stop.cancelled() => false,
    }
}

/// A lane's connection, initialized within the connect timeout, or why it is not.
async fn open(upstream: &Upstream) -> Result<(Arc<Connection>, mpsc::Receiver<Notification>), String> {
    match upstream.within_connect_timeout(upstream.open_initialized()).await {
        Ok((conn, events, _identity)) => Ok((conn, events)),
        Err(e) => Err(upstream.backend.redact(&e.to_string())),
    }
}
