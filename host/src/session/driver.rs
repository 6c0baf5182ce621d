//! Drives a session over a message-oriented connection (newline JSON-RPC, WebSocket): takes
//! the messages its transport decoded, answers each request concurrently with the others (on
//! the connection's own task) so a slow call never blocks a ping, and interleaves
//! server-initiated notifications. The transport encodes what goes out; nothing here sees
//! bytes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::outbound::{Connection, deliver};
use super::wake_gate::WakeGate;
use super::{RunningRequest, Session, draining_error};
use crate::mcp::{DecodeError, Limits, Message, Response, client_channel};

/// How long a draining connection with nothing in flight must have been quiet before it is
/// closed (a client's next request, sent as its last answer arrived, is read and answered with
/// the retryable drain error instead of meeting a closed socket).
const DRAIN_QUIET: Duration = Duration::from_millis(250);

/// One message as a transport decoded it, or why it was refused (answered with an error).
pub type Inbound = Result<Message, DecodeError>;

/// Why [`drive`] stopped serving a session: the transport says so to its client in its own
/// way (a WebSocket close code and reason, a last JSON-RPC error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The client went away, stayed idle, or its outbound side closed.
    Closed,
    /// The relay drains.
    Drained,
    /// The credential the session authenticated with expired.
    CredentialExpired,
    /// The auth plugin, asked again after a reload, no longer admits the session's credential.
    CredentialRevoked,
}

/// Serves `session` over `conn` until the client's messages end, the client stays silent past
/// the idle timeout, a write to it fails, or the relay drains (then requests read are refused with
/// the retryable drain error, the running ones are answered, and it returns once nothing is in
/// flight and the client has been quiet for [`DRAIN_QUIET`], or at once after the drain's
/// grace). Requests still running when it returns are aborted.
/// While the session has `limits.max_requests_in_flight` requests running, nothing more is
/// read from the client (backpressure: the connection's buffers fill, not the relay's memory).
/// A session whose credential expires is ended then ([`Ended::CredentialExpired`]); one whose
/// credential the auth plugin no longer admits, once a request of it, or an event for it, found
/// so ([`Ended::CredentialRevoked`]).
/// Everything goes out from this loop: answers as they finish, with what their requests
/// queued on their own before them ([`super::outbound`]).
pub async fn drive<C: Connection>(session: Arc<Session>, conn: &mut C, limits: &Limits) -> Ended {
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    // A stream that keeps its pending `next()` between polls: re-created on every turn of the
    // loop, it would register and drop its wakers (catalog watch, broadcast) once per message.
    // Fused: should the events end (their senders live in the router, which the session
    // holds), the loop's next turn gets `None` again rather than the panic of an `unfold`
    // polled after its end.
    let events = futures::stream::unfold(session.server_events(), |mut events| async move {
        events.next().await.map(|message| (message, events))
    })
    .fuse();
    // The server events and the drain signal are rare: polled only when they woke the loop,
    // not on each of its two turns per call.
    let rare = WakeGate::default();
    let events = std::pin::pin!(events);
    let mut events = rare.gate(events);
    // What a running request sends on its own (progress, logs, its backend's requests to the
    // client): rare, so gated too; whatever it holds goes out before the loop's next write.
    let (related, queue) = client_channel();
    let mut queue = rare.gate(queue);
    // Requests running, polled here on the connection's task (no task spawned per call).
    let mut running = FuturesUnordered::new();
    // One timer for the connection's life, moved only when it fires: arming a new one for
    // every message would cost a timer-wheel insert and removal each. Anything that travels
    // (a message read, an answer or notification sent) is activity. The same timer wakes the
    // loop when the session's credential expires: a second one would grow every idle
    // connection's task by its size.
    let mut last_activity = Instant::now();
    let expires_at = session.expires_in().map(|left| last_activity + left);
    let wake_at = |at: Instant| expires_at.map_or(at, |expiry| expiry.min(at));
    let idle_timer = tokio::time::sleep_until(wake_at(last_activity + idle));
    tokio::pin!(idle_timer);
    let drain = session.draining();
    let drain_started = drain.cancelled();
    tokio::pin!(drain_started);
    let mut drain_started = rare.gate(drain_started);
    // The client's side, too, is read only when it woke the loop (or has just yielded a
    // message): the loop turns three or four times per call, and a read that finds nothing
    // still costs the WebSocket a zeroed read buffer and two waker registrations.
    let input = WakeGate::default();
    let mut conn = input.gate(conn);
    let mut draining = false;
    let mut ended = Ended::Closed;
    loop {
        // Draining with nothing in flight: the connection closes once it has been quiet a
        // moment (or the grace has passed), so a request the client sent just after its last
        // answer is read (and refused as draining) rather than lost in a closing socket. The
        // idle timer wakes the loop for it.
        if draining && running.is_empty() {
            if last_activity.elapsed() >= DRAIN_QUIET || session.counts.0.lifecycle().cut_signal().is_cancelled() {
                tracing::debug!(session = %session.tag(), "drained: closing the connection");
                ended = Ended::Drained;
                break;
            }
            idle_timer.as_mut().reset(wake_at(last_activity + DRAIN_QUIET));
        }
        tokio::select! {
            next = conn.next(), if session.has_free_slot() => {
                last_activity = Instant::now();
                let Some(message) = next else { break };
                match message {
                    Ok(Message::Request(request)) if draining => {
                        let refusal = Message::Response(Response::err(request.id, draining_error()));
                        if deliver(&mut **conn.get_mut(), queue.get_mut(), Some(refusal)).await.is_err() {
                            break;
                        }
                    }
                    Ok(Message::Request(request)) => {
                        // Free now (the read waited for one); held until the answer is handed on.
                        let Ok(slot) = session.slot().await else { break };
                        running.push(answer(session.request(request, Some(related.clone())), slot));
                    }
                    Ok(other) => {
                        // Boxed: the handler's future is large, and inline it would make every idle
                        // connection's task as large.
                        Box::pin(session.handle(other, None)).await;
                    }
                    Err(refused) => {
                        tracing::debug!(session = %session.tag(), error = %refused, "refused client input");
                        let refusal = Message::Response(refused.into_response());
                        if deliver(&mut **conn.get_mut(), queue.get_mut(), Some(refusal)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            Some(response) = running.next(), if !running.is_empty() => {
                last_activity = Instant::now();
                // A cancelled request owes no answer, but may have queued messages before it.
                if deliver(&mut **conn.get_mut(), queue.get_mut(), response.map(Message::Response)).await.is_err() {
                    break;
                }
                if session.revoked() {
                    // Its request was refused (and answered so); so is the connection.
                    ended = closing_revoked(&session);
                    break;
                }
            }
            Some(message) = queue.next() => {
                last_activity = Instant::now();
                if deliver(&mut **conn.get_mut(), queue.get_mut(), Some(message)).await.is_err() {
                    break;
                }
            }
            Some(message) = events.next() => {
                last_activity = Instant::now();
                // Its credential expired meanwhile: the idle timer, due now, closes the connection.
                if !session.may_hear().await && session.revoked() {
                    ended = closing_revoked(&session);
                    break;
                }
                if deliver(&mut **conn.get_mut(), queue.get_mut(), Some(message)).await.is_err() {
                    break;
                }
            }
            () = &mut drain_started, if !draining => draining = true,
            () = &mut idle_timer => {
                if expires_at.is_some_and(|expiry| expiry <= Instant::now()) {
                    tracing::info!(session = %session.tag(), principal = %session.principal.id, "credential expired: closing the connection");
                    ended = Ended::CredentialExpired;
                    break;
                }
                if draining && running.is_empty() {
                    // The drain's quiet moment is up: the loop's top closes the connection.
                    continue;
                }
                // A call still running is activity: its answer must not be lost.
                let since = if running.is_empty() { last_activity } else { Instant::now() };
                if since.elapsed() >= idle {
                    tracing::info!(session = %session.tag(), "closing idle connection");
                    break;
                }
                idle_timer.as_mut().reset(wake_at(since + idle));
            }
        }
    }
    session.end();
    // What the requests queued before they ended still goes out, ahead of the transport's
    // last word.
    drop(running);
    let _ = deliver(&mut **conn.get_mut(), queue.get_mut(), None).await;
    ended
}

/// Logs why a connection closes whose session's credential the auth plugin no longer admits.
fn closing_revoked(session: &Session) -> Ended {
    tracing::info!(session = %session.tag(), principal = %session.principal.id, "credential no longer admitted: closing the connection");
    Ended::CredentialRevoked
}

/// The response of one running request (`None`: it was cancelled, and MCP wants no answer),
/// holding its in-flight slot until then. Polled on the connection's own task, beside the
/// others: a slow call never blocks the rest, and no task is spawned per call.
async fn answer(running: RunningRequest, slot: OwnedSemaphorePermit) -> Option<Response> {
    let response = running.await;
    drop(slot);
    response
}
