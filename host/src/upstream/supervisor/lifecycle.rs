//! The task that keeps one upstream connected: connect, serve its notifications (re-listing on
//! `list_changed`), and on loss reconnect with capped backoff and jitter.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};

use super::{STABLE_AFTER, State, Upstream, UpstreamEvent};
use crate::mcp::{ListKind, Notification};
use crate::upstream::connection::Connection;
use crate::upstream::handshake;

/// Why a connection ended when `relay_reconnect_server` asked for a new one: it still works,
/// so it is retired, not closed under its calls.
const RECONNECT_REQUESTED: &str = "reconnect requested";

/// Least time between the end of one re-list of a backend and the start of the next. A
/// backend announcing changes many times a second is listed again once per gap, for
/// everything it announced meanwhile, not once per notice: a storm of notices over a large
/// list took the relay's CPU from every other backend's calls. The first notice after a quiet
/// gap is followed at once.
const RELIST_GAP: Duration = Duration::from_secs(1);

/// The supervisor loop: connect, serve, and on loss reconnect with capped backoff and jitter.
pub(super) async fn supervise(
    upstream: Arc<Upstream>,
    changed: watch::Sender<u64>,
    mut lane_events: mpsc::Receiver<Notification>,
) {
    let name = upstream.name().to_owned();
    let mut backoff = upstream.reconnect_delays();
    loop {
        let established = tokio::select! {
            result = upstream.establish() => result,
            _ = upstream.stop.cancelled() => break,
        };
        match established {
            Ok((conn, mut events, identity, listing)) => {
                let connected = Instant::now();
                tracing::info!(backend = %name, tools = listing.tools.len(), prompts = listing.prompts.len(), resources = listing.resources.len(), server = %identity.server_info, version = %identity.protocol_version, "upstream ready");
                // Lists and connection first: once the status says ready, calls route.
                upstream.publish(listing, &changed);
                upstream.connection.send_replace(Some(conn.clone()));
                upstream.down.store(false, std::sync::atomic::Ordering::Release);
                upstream.set_status(|s| {
                    s.state = State::Ready;
                    s.last_error = None;
                    s.connects += 1;
                    s.connected_since = Some(SystemTime::now());
                    s.identity = Some(std::sync::Arc::new(identity));
                });
                let reason = serve(&upstream, &conn, [&mut events, &mut lane_events], &changed).await;
                upstream.connection.send_replace(None);
                if reason == RECONNECT_REQUESTED || upstream.is_retiring() {
                    // Its calls in flight finish on it while the next connection opens.
                    tokio::spawn(crate::upstream::connection::retire(conn, events, upstream.call_timeout()));
                } else {
                    conn.close().await;
                }
                // Only a connection that stayed up a while earns a quick reconnect: a backend
                // that dies right after its handshake keeps backing off.
                if connected.elapsed() >= STABLE_AFTER {
                    backoff = upstream.reconnect_delays();
                }
                if upstream.stop.is_cancelled() {
                    break;
                }
                tracing::warn!(backend = %name, reason, "upstream connection ended; reconnecting");
                upstream.metrics.reconnect();
                upstream.set_status(|s| {
                    s.state = State::Reconnecting;
                    s.connected_since = None;
                    s.last_error = Some(reason.to_owned());
                });
            }
            Err(e) => {
                // URLs in the error lose their user info and query values, like everywhere
                // else the relay shows a backend.
                let error = upstream.backend.redact(&e.to_string());
                tracing::warn!(backend = %name, %error, "upstream connect failed");
                upstream.set_status(|s| {
                    s.state = if s.connects > 0 { State::Reconnecting } else { State::Down };
                    s.last_error = Some(error);
                });
                // Requests waiting for a connection learn it is not coming soon.
                upstream.down.store(true, std::sync::atomic::Ordering::Release);
                upstream.connection.send_replace(None);
            }
        }
        let delay = backoff.next().unwrap_or(Duration::from_millis(upstream.timing.backoff_max_ms));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = upstream.reconnect.notified() => {}
            _ = upstream.stop.cancelled() => break,
        }
    }
    upstream.set_status(|s| s.state = State::Stopped);
    tracing::info!(backend = %name, "upstream stopped");
}

/// Lists again the `kinds` `list_changed` notifications said changed, each list within the
/// connect timeout, and publishes the result when a list did change: a backend that says so
/// without changing anything (a flood of them) does not make the relay rebuild every caller's
/// catalog.
async fn relist(upstream: &Upstream, conn: &Connection, kinds: &[ListKind], changed: &watch::Sender<u64>) {
    let deadline = upstream.connect_timeout();
    let mut listing = upstream.listing();
    let mut altered = false;
    for &kind in kinds {
        match tokio::time::timeout(deadline, handshake::list(conn, kind)).await {
            Ok(Ok(items)) if **listing.get(kind) == items => {
                tracing::debug!(backend = upstream.name(), list = kind.method(), "upstream list unchanged");
            }
            Ok(Ok(items)) => {
                altered = true;
                tracing::info!(
                    backend = upstream.name(),
                    list = kind.method(),
                    items = items.len(),
                    "upstream list changed"
                );
                listing.set(kind, items);
            }
            Ok(Err(e)) => {
                tracing::warn!(backend = upstream.name(), list = kind.method(), error = %upstream.backend.redact(&e.to_string()), "re-listing failed")
            }
            Err(_) => tracing::warn!(
                backend = upstream.name(),
                list = kind.method(),
                secs = deadline.as_secs_f64(),
                "re-listing got no answer in time; the last list stays"
            ),
        }
    }
    if altered {
        upstream.publish(listing, changed);
    }
}

/// Serves one connection until it ends; returns why. `events` are its notifications and those
/// of the lanes ([`super::lanes`]). Lists announced changed are listed again at most once per
/// [`RELIST_GAP`].
async fn serve(
    upstream: &Upstream,
    conn: &Connection,
    events: [&mut mpsc::Receiver<Notification>; 2],
    changed: &watch::Sender<u64>,
) -> &'static str {
    let started = Instant::now();
    let [own, lanes] = events;
    let mut announced: Vec<ListKind> = Vec::new();
    let mut next_relist = tokio::time::Instant::now();
    loop {
        let notification = tokio::select! {
            _ = upstream.stop.cancelled() => return "stopped",
            _ = upstream.reconnect.notified() => return RECONNECT_REQUESTED,
            _ = conn.closed() => return "connection closed",
            _ = tokio::time::sleep_until(next_relist), if !announced.is_empty() => None,
            event = own.recv() => match event {
                None => return "connection closed",
                Some(n) => Some(n),
            },
            Some(n) = lanes.recv() => Some(n),
        };
        if let Some(notification) = notification {
            let kinds = ListKind::changed_by(&notification.method);
            if kinds.is_empty() {
                tracing::trace!(backend = upstream.name(), method = %notification.method, up_secs = started.elapsed().as_secs(), "upstream notification");
                let _ =
                    upstream.notifications.send(UpstreamEvent { backend: upstream.name().to_owned(), notification });
                continue;
            }
            for kind in kinds {
                if !announced.contains(kind) {
                    announced.push(*kind);
                }
            }
        }
        if announced.is_empty() || tokio::time::Instant::now() < next_relist {
            continue;
        }
        let kinds = std::mem::take(&mut announced);
        let relisting_since = tokio::time::Instant::now();
        // The re-list has a deadline and gives way to stop, reconnect and close: a backend
        // that never answers it cannot freeze its supervisor.
        tokio::select! {
            _ = relist(upstream, conn, &kinds, changed) => {}
            _ = upstream.stop.cancelled() => return "stopped",
            _ = upstream.reconnect.notified() => return RECONNECT_REQUESTED,
            _ = conn.closed() => return "connection closed",
        }
        // The gap after it at least as long as it took: a list that takes seconds to list
        // and publish is not listed again back to back.
        next_relist = tokio::time::Instant::now() + RELIST_GAP.max(relisting_since.elapsed());
    }
}
