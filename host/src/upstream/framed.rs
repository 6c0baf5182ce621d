//! JSON-RPC over a message-oriented link (WebSocket frames, stdio lines): correlates responses
//! to requests by id and hands notifications to the supervisor.

use crate::limit_log::OncePerSecond;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::UpstreamError;
use super::routes::{ClientRoutes, SERVER_REQUESTS_AT_ONCE};
use crate::mcp::{Message, Notification, Oversized, Payload, Response, request_text};

/// The requests awaiting their answers, by the relay's own id (keys no client chooses: a fast
/// hasher).
type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Result<Payload, UpstreamError>>, FastHash>>>;
type FastHash = foldhash::fast::RandomState;

/// One unit read from a framed link by its transport: its text in whatever buffer the transport
/// read it into (a WebSocket frame's own bytes, a line), not copied again.
pub enum Incoming<T = String> {
    /// A whole message as text.
    Text(T),
    /// A message over `max_message_bytes`, of which only the ends were kept.
    Oversized(Oversized),
    /// A message that is not UTF-8 text.
    Unreadable(Oversized),
    /// A message too large even to keep the ends of ended the link (`why`): which request it
    /// answered is unknown, so every request in flight on the link fails with it, and none is
    /// sent again (one of them may have run: sent again, it would run twice).
    Overflowed(String),
}

/// The request side of a framed link. The link's reader task owns the incoming half.
pub struct FramedConnection {
    /// Text messages to send; the transport's writer task drains it.
    outgoing: mpsc::Sender<String>,
    /// Requests waiting for their response, by the relay-assigned id.
    pending: Pending,
    /// Source of relay-assigned request ids (unique per connection).
    next_id: AtomicU64,
    /// Cancelled when the link is gone, from either side.
    closed: CancellationToken,
}

impl FramedConnection {
    /// Starts the reader task over `incoming`. Returns the connection and the stream of
    /// notifications the upstream sends; that stream ends when the link closes. What the
    /// upstream sends for its clients (progress, log messages, its own requests) goes through
    /// `routes`.
    pub fn start<S, T>(
        backend: &str,
        incoming: S,
        outgoing: mpsc::Sender<String>,
        closed: CancellationToken,
        routes: Arc<ClientRoutes>,
    ) -> (Self, mpsc::Receiver<Notification>)
    where
        S: Stream<Item = Incoming<T>> + Send + Unpin + 'static,
        T: AsRef<str> + Send + 'static,
    {
        let pending: Pending = Arc::default();
        let (events_tx, events_rx) = mpsc::channel(64);
        tokio::spawn(read_loop(
            backend.to_owned(),
            incoming,
            pending.clone(),
            outgoing.clone(),
            events_tx,
            closed.clone(),
            routes,
        ));
        (Self { outgoing, pending, next_id: AtomicU64::new(1), closed }, events_rx)
    }

    /// Cancelled when the link is closed.
    pub fn closed_token(&self) -> &CancellationToken {
        &self.closed
    }

    /// How many requests wait for their answer.
    pub fn waiting(&self) -> usize {
        self.pending.lock().expect("pending lock").len()
    }

    /// Sends a request and waits for the matching response.
    pub async fn request(&self, method: &str, params: Option<&Payload>) -> Result<Payload, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let _cleanup = RemoveOnDrop { pending: &self.pending, outgoing: &self.outgoing, id };
        let text = request_text(id, method, params);
        if self.outgoing.send(text).await.is_err() {
            return Err(UpstreamError::ConnectionLost);
        }
        // An answer that arrived is taken even when the link closed meanwhile (a retired
        // connection closes once its last answer is read: `connection::retire`).
        tokio::select! {
            biased;
            answer = rx => match answer {
                Ok(outcome) => outcome,
                Err(_) => Err(UpstreamError::ConnectionLost),
            },
            _ = self.closed.cancelled() => Err(UpstreamError::ConnectionLost),
        }
    }

    /// Sends a notification.
    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError> {
        let text = Message::Notification(Notification { method: method.into(), params }).to_text();
        self.outgoing.send(text).await.map_err(|_| UpstreamError::ConnectionLost)
    }
}

impl Drop for FramedConnection {
    /// A link nobody holds any more is closed: its process or socket and its tasks end with it
    /// (a handshake given up by its deadline, say, leaves nothing behind).
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// Forgets a pending request whose caller stopped waiting (deadline, client cancellation) and
/// tells the upstream with `notifications/cancelled`, as MCP asks.
struct RemoveOnDrop<'a> {
    pending: &'a Pending,
    outgoing: &'a mpsc::Sender<String>,
    id: u64,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let unanswered = self.pending.lock().expect("pending lock").remove(&self.id).is_some();
        if unanswered {
            let cancel = Notification {
                method: "notifications/cancelled".into(),
                params: Some(json!({"requestId": self.id, "reason": "the relay's caller stopped waiting"})),
            };
            let _ = self.outgoing.try_send(Message::Notification(cancel).to_text());
        }
    }
}

async fn read_loop<S, T>(
    backend: String,
    mut incoming: S,
    pending: Pending,
    outgoing: mpsc::Sender<String>,
    events: mpsc::Sender<Notification>,
    closed: CancellationToken,
    routes: Arc<ClientRoutes>,
) where
    S: Stream<Item = Incoming<T>> + Unpin,
    T: AsRef<str>,
{
    let requests_at_once = Arc::new(tokio::sync::Semaphore::new(SERVER_REQUESTS_AT_ONCE));
    // What a backend can make the relay say as often as it likes is said once a second.
    let mut said = Said::default();
    loop {
        let next = tokio::select! {
            next = incoming.next() => match next { Some(next) => next, None => break },
            _ = closed.cancelled() => break,
        };
        let read = match next {
            Incoming::Text(text) => text,
            Incoming::Oversized(kept) => {
                let why = format!("its answer ({} bytes) is larger than max_message_bytes", kept.size);
                fail_waiter(&backend, &pending, kept.response_id(), UpstreamError::BadAnswer(why), &mut said.bad);
                continue;
            }
            Incoming::Unreadable(kept) => {
                let why = "its answer is not UTF-8 text".to_owned();
                fail_waiter(&backend, &pending, kept.response_id(), UpstreamError::BadAnswer(why), &mut said.bad);
                continue;
            }
            Incoming::Overflowed(why) => {
                tracing::warn!(backend, "upstream {why}; the requests in flight on the connection fail");
                for (_, waiter) in pending.lock().expect("pending lock").drain() {
                    let _ = waiter.send(Err(UpstreamError::BadAnswer(why.clone())));
                }
                break;
            }
        };
        let text = read.as_ref();
        // A malformed answer still names its request more often than not: fail that call now
        // rather than let it wait out its deadline.
        let malformed = match Message::from_text(text) {
            Ok(Ok(message)) => Ok(message),
            Ok(Err(_)) => {
                Err(serde_json::from_str::<Value>(text).ok().and_then(|v| v.get("id").and_then(Value::as_u64)))
            }
            Err(_) => Err(Oversized::of(text.as_bytes()).response_id()),
        };
        let message = match malformed {
            Ok(message) => message,
            Err(id) => {
                if let Some(also) = said.not_json.admit() {
                    tracing::warn!(backend, sample = %truncate(text, 120), also_since_last_logged = also, "upstream sent something that is not JSON-RPC; ignored");
                }
                let why = "its answer is not a valid JSON-RPC response".to_owned();
                fail_waiter(&backend, &pending, id, UpstreamError::BadAnswer(why), &mut said.bad);
                continue;
            }
        };
        match message {
            Message::Response(Response { id, outcome }) => {
                let waiter = id.as_u64().and_then(|id| pending.lock().expect("pending lock").remove(&id));
                match waiter {
                    Some(waiter) => {
                        let _ = waiter.send(UpstreamError::check_answer(outcome));
                    }
                    None => tracing::debug!(backend, %id, "response for no pending request (late or unknown); dropped"),
                }
            }
            // Progress and log messages of a client request go straight to its stream, so they
            // stay ahead of the response read after them.
            Message::Notification(n) if routes.deliver(&n, None) => {}
            Message::Notification(n) => {
                if events.try_send(n).is_err()
                    && let Some(also) = said.dropped.admit()
                {
                    tracing::warn!(
                        backend,
                        also_dropped_since_last_logged = also,
                        "upstream notification queue full; notification dropped"
                    );
                }
            }
            // At most SERVER_REQUESTS_AT_ONCE of the upstream's requests are handled at once (a
            // flood cannot grow the relay); past that, one is refused at once: reading on would
            // wait for a client's answer, and every other client's answers would wait with it.
            Message::Request(request) => {
                let Ok(slot) = requests_at_once.clone().try_acquire_owned() else {
                    if let Some(also) = said.refused.admit() {
                        tracing::warn!(backend, method = %request.method, also_refused_since_last_logged = also, "upstream request refused: too many at once");
                    }
                    let refusal = Message::Response(ClientRoutes::too_many(request));
                    let _ = outgoing.send(refusal.to_text()).await;
                    continue;
                };
                let (outgoing, routes) = (outgoing.clone(), routes.clone());
                tokio::spawn(async move {
                    let answer = routes.answer(request, None).await;
                    let _ = outgoing.send(Message::Response(answer).to_text()).await;
                    drop(slot);
                });
            }
        }
    }
    closed.cancel();
    // Dropping the waiters wakes every pending request with ConnectionLost.
    pending.lock().expect("pending lock").clear();
}

/// The warnings one backend's reader writes at most once a second each.
#[derive(Default)]
struct Said {
    /// Answers that could not be used.
    bad: OncePerSecond,
    /// Lines that are not JSON-RPC.
    not_json: OncePerSecond,
    /// Notifications dropped on a full queue.
    dropped: OncePerSecond,
    /// The backend's requests refused past SERVER_REQUESTS_AT_ONCE.
    refused: OncePerSecond,
}

/// Fails the request `id` is waiting for (if any) at once, saying why (at most once a second).
fn fail_waiter(backend: &str, pending: &Pending, id: Option<u64>, error: UpstreamError, said: &mut OncePerSecond) {
    if let Some(also) = said.admit() {
        tracing::warn!(backend, request = ?id, also_since_last_logged = also, "upstream {error}");
    }
    if let Some(waiter) = id.and_then(|id| pending.lock().expect("pending lock").remove(&id)) {
        let _ = waiter.send(Err(error));
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}
