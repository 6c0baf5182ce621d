//! A session's requests in flight: the slots that bound them (`limits.max_requests_in_flight`),
//! and the registration by JSON id that lets the client cancel one, the session's end abort
//! them all, and a request that arrives as the session ends be refused.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::{AbortHandle, Abortable, BoxFuture};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use super::Session;
use crate::mcp::{ClientSink, Message, Request, Response, RpcError, error_codes};

impl Session {
    /// Whether another request may start now without waiting (transports that read many
    /// requests from one connection stop reading while this is false).
    pub fn has_free_slot(&self) -> bool {
        self.slots.available_permits() > 0
    }

    /// Waits for one of the session's in-flight slots (`limits.max_requests_in_flight`). The
    /// transport holds it until the request's response has been handed on, so a client that
    /// does not read its answers cannot make the relay hold more than that many.
    /// One is taken at once when free (a connection reads a request only while one is), and
    /// only a wait is boxed: its future would otherwise be part of every idle connection's.
    /// Refused once the session has ended (a request that waited does not start after it),
    /// and when as many requests wait already as may run (an HTTP client cannot park bodies
    /// without bound behind a full session).
    pub async fn slot(&self) -> Result<OwnedSemaphorePermit, NoSlot> {
        use tokio::sync::TryAcquireError;
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => return Err(NoSlot::Ended),
            Err(TryAcquireError::NoPermits) => {}
        }
        let Ok(_waiting) = self.waiters.try_acquire() else {
            return Err(NoSlot::Busy);
        };
        Box::pin(self.slots.clone().acquire_owned()).await.map_err(|_closed| NoSlot::Ended)
    }

    /// Runs a request on its own task (see [`Session::request`]). Awaiting the handle gives
    /// `None` or an error when the request was cancelled (no response is owed then).
    pub fn spawn_request(
        self: &Arc<Self>,
        request: Request,
        stream: Option<ClientSink>,
    ) -> JoinHandle<Option<Response>> {
        tokio::spawn(self.request(request, stream))
    }

    /// The future that answers `request`, cancellable by the client's
    /// `notifications/cancelled` (it then ends with `None`: MCP wants no answer). The caller
    /// polls it where it likes: inline on the connection's own task (no task, no wake-up of
    /// another thread per call), or spawned. A request whose id is already in flight is
    /// answered `-32600` at once; a request that panics is answered with an internal error.
    pub fn request(self: &Arc<Self>, request: Request, stream: Option<ClientSink>) -> RunningRequest {
        use std::sync::atomic::Ordering;
        let key = request.id.to_string();
        let mut inflight = self.inflight.lock().expect("inflight lock");
        if self.has_ended() {
            // The session ended while this request was on its way in: nothing new starts.
            let refusal = Response::err(request.id, NoSlot::Ended.into());
            return futures::future::ready(Some(refusal)).boxed();
        }
        if inflight.contains_key(&key) {
            // Two requests with one id could not be told apart (answers, cancellation).
            let message = format!("request id {key} is already in flight in this session");
            let refusal = Response::err(request.id, RpcError::new(error_codes::INVALID_REQUEST, message));
            return futures::future::ready(Some(refusal)).boxed();
        }
        let number = self.started.fetch_add(1, Ordering::Relaxed);
        let (abort, registration) = AbortHandle::new_pair();
        inflight.insert(key.clone(), (number, abort));
        drop(inflight);
        let forget = ForgetOnDrop { session: self.clone(), key, number };
        let answer = Abortable::new(self.clone().handle_owned(request, stream), registration);
        async move {
            let outcome = std::panic::AssertUnwindSafe(answer).catch_unwind().await;
            match outcome {
                Ok(Ok(response)) => response,
                // Cancelled by the client: no answer.
                Ok(Err(_aborted)) => None,
                Err(_panic) => {
                    tracing::error!("a request's handler panicked; answered with an internal error");
                    // The id, read back from its key (its JSON text): not kept for this alone.
                    let id = serde_json::from_str(&forget.key).unwrap_or(serde_json::Value::Null);
                    Some(Response::err(id, RpcError::new(error_codes::INTERNAL_ERROR, "internal error")))
                }
            }
        }
        .boxed()
    }

    /// [`Session::handle`] of a request, owning what it needs (so its future is `'static`).
    async fn handle_owned(self: Arc<Self>, request: Request, stream: Option<ClientSink>) -> Option<Response> {
        self.handle(Message::Request(request), stream).await
    }
}

/// Why a request got no slot to run in ([`Session::slot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    /// The session ended (closed, `DELETE`, expired, revoked, drained).
    Ended,
    /// As many of its requests run and wait as may.
    Busy,
}

impl From<NoSlot> for RpcError {
    fn from(refused: NoSlot) -> Self {
        match refused {
            NoSlot::Ended => RpcError::new(error_codes::INVALID_REQUEST, "this session has ended; initialize again"),
            NoSlot::Busy => RpcError::new(
                error_codes::SERVER_BUSY,
                "this session has as many requests running and waiting as it may (limits.max_requests_in_flight each); wait for an answer",
            ),
        }
    }
}

/// A request being answered ([`Session::request`]): `None` once cancelled by the client.
pub type RunningRequest = BoxFuture<'static, Option<Response>>;

/// Takes a finished (or dropped) request out of the session's in-flight set: its own entry
/// only, never a later request's that reused the id.
struct ForgetOnDrop {
    session: Arc<Session>,
    key: String,
    number: u64,
}

impl Drop for ForgetOnDrop {
    fn drop(&mut self) {
        let mut inflight = self.session.inflight.lock().expect("inflight lock");
        if inflight.get(&self.key).is_some_and(|(number, _)| *number == self.number) {
            inflight.remove(&self.key);
        }
        drop(inflight);
        // An answer is activity too: the idle clock of a session whose call ran long starts
        // from its answer, not from its request.
        self.session.touch();
    }
}
