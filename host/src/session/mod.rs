//! Sessions: one per client connection (newline, WebSocket) or per `Mcp-Session-Id`
//! (Streamable HTTP). A session answers the protocol itself (initialize, ping, lists) and hands
//! what backends own to the router. This file holds the session's state and its life (in-flight
//! requests, slots, cancellation); `factory.rs` admits and opens sessions, `methods.rs` answers
//! each MCP method, `events.rs` says what the session sends on its own, and `driver.rs` runs it
//! over a message-oriented connection (`outbound.rs`: how its loop writes to the client).

mod cut;
mod driver;
mod events;
mod factory;
mod get_stream;
mod methods;
mod outbound;
mod registry;
mod shared;
mod standing;
#[cfg(test)]
mod tests;
mod wake_gate;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use futures::FutureExt;
use futures::future::{AbortHandle, Abortable, BoxFuture};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

pub use driver::{Ended, Inbound, drive};
pub use events::ServerEvents;
pub use factory::{Refused, SessionFactory};
use get_stream::GetStream;
pub use get_stream::GetStreamClaim;
pub use outbound::{Connection, Outbound};
pub use registry::SessionRegistry;
pub use shared::{SessionRecord, SharedSessions};
pub use standing::Standing;

use crate::access::{Denial, DenialCode, Principal, TransportKind};
use crate::admission::CountGuard;
use crate::lifecycle::SessionCount;
use crate::mcp::{ClientRequests, ClientSink, Related};
use crate::mcp::{Message, Request, Response, RpcError, error_codes};
use crate::plugins::{Caller, Refusal};
use crate::policy::Policy;
use crate::router::Router;

/// What `initialize` and later requests established in a session.
#[derive(Debug, Default)]
struct SessionState {
    /// Negotiated in `initialize`.
    protocol_version: Option<String>,
    /// `clientInfo.name`, for logs.
    client_name: Option<String>,
    /// Client-facing URIs from `resources/subscribe`.
    subscriptions: HashSet<String>,
}

/// One client session.
pub struct Session {
    /// Random id; the `Mcp-Session-Id` for HTTP sessions.
    pub id: String,
    /// How logs name the session ([`Session::tag`]), made when first logged.
    tag: OnceLock<String>,
    /// Which transport the client uses.
    pub transport: TransportKind,
    /// Who the client is.
    pub principal: Principal,
    /// Digest of the token and certificate subject the session authenticated with
    /// ([`crate::access::ConnectInfo::credential_digest`]; `None` when auth is off).
    credential: Option<[u8; 32]>,
    /// How that credential is checked again after a plugin reload (auth on, not stateless).
    standing: Option<Standing>,
    /// When that credential stops being valid; the session refuses requests after it.
    expires_at: Option<SystemTime>,
    /// A 2026-07-28 exchange: no handshake, results stamped with the 2026 result fields.
    stateless: bool,
    /// Where admitted requests go.
    router: Arc<Router>,
    /// What requests pass first.
    policy: Arc<Policy>,
    /// What `initialize` and later requests established (shared with [`ServerEvents`]).
    state: Arc<Mutex<SessionState>>,
    /// Last client activity, for idle expiry of HTTP sessions.
    last_seen: Mutex<Instant>,
    /// Requests in flight by their JSON id, for `notifications/cancelled`; each with the
    /// number it was started under, so a request only ever forgets its own entry. The ids are
    /// the client's, but a session holds at most `max_requests_in_flight` of them: a fast
    /// seeded hasher (SipHash was 2-3% of a call, for this map and the upstream's).
    inflight: Mutex<HashMap<String, (u64, AbortHandle), foldhash::fast::RandomState>>,
    /// Numbers the requests started in this session.
    started: std::sync::atomic::AtomicU64,
    /// One permit per request that may run at once (`limits.max_requests_in_flight`).
    slots: Arc<Semaphore>,
    /// As many requests may wait for a slot as may run (HTTP: each waits with its body read);
    /// one more is refused.
    waiters: Semaphore,
    /// The session's one GET stream (HTTP): whether it is open, and how it learns that the
    /// session ended.
    get_stream: Arc<Mutex<GetStream>>,
    /// Requests the relay sent to this client (on an upstream's behalf) awaiting answers.
    client_requests: Arc<ClientRequests>,
    /// This session as the caller of a tool (built once): who it is, and its policy chain,
    /// which backend calls an adapter plugin makes on its behalf pass too.
    caller: Caller,
    /// When this session's record was last written to the shared kv, and what it said
    /// ([`SharedSessions`]; HTTP sessions only).
    shared_at: Mutex<Option<(Instant, String)>>,
    /// Whether what this session established is not in the shared kv: the last write of its
    /// record failed (written again at its next request).
    shared_unsaved: std::sync::atomic::AtomicBool,
    /// Keep the instance's, the principal's (none for anonymous) and the address's session
    /// counts right for this session's lifetime.
    counts: (SessionCount, Option<CountGuard<String>>, CountGuard<std::net::IpAddr>),
}

impl Session {
    /// How logs name the session: the first 12 hex digits of its id's SHA-256 (an HTTP
    /// session's id is what a client presents to use it, so the id itself is never logged).
    /// Hashed when first shown: a session nothing logs (a quiet log level) hashes nothing.
    pub fn tag(&self) -> Tag<'_> {
        Tag(self)
    }

    /// Handles one decoded message; returns the response for requests. Messages related to a
    /// request (progress, requests from the upstream to the client) go to `stream`.
    pub async fn handle(&self, message: Message, stream: Option<ClientSink>) -> Option<Response> {
        self.touch();
        // Every request is attributed to this session upstream, with a stream or without one.
        let related = Some(Related { sink: stream, client: self.client_requests.clone() });
        match message {
            Message::Request(request) => {
                if let Err(refusal) = self.still_admitted().await {
                    return Some(Response::err(request.id, refusal.into()));
                }
                // Counted while it runs: the drain waits for it.
                let lifecycle = self.counts.0.lifecycle();
                let _running = lifecycle.request_started();
                let (id, method) = (request.id.clone(), crate::metrics::method_label(&request.method));
                // The tool a call names, once read: its record, should the drain cut it off.
                let tool = std::sync::OnceLock::new();
                tokio::select! {
                    biased;
                    response = self.handle_request(request, related.as_ref(), &tool) => Some(response),
                    () = lifecycle.cut_signal().cancelled() => Some(cut::answer(self, id, method, tool.get())),
                }
            }
            Message::Notification(notification) => {
                self.handle_notification(notification);
                None
            }
            Message::Response(response) => {
                // Answered late (the relay's request timed out or was cancelled), or asked by
                // another instance before a switch: dropped. Still accepted (HTTP 202): an
                // error for it would end the Python SDK's whole session.
                if !self.client_requests.resolve(response) {
                    tracing::info!(session = %self.tag(), "answer to no request of the relay's that waits; dropped");
                }
                None
            }
        }
    }

    /// Whether `credential` (a [`crate::access::ConnectInfo::credential_digest`], computed only
    /// when the session has one to compare with) is what this session authenticated with: the
    /// same token and the same certificate subject (always true when auth is off).
    pub fn credential_matches(&self, credential: impl FnOnce() -> [u8; 32]) -> bool {
        use subtle::ConstantTimeEq;
        self.credential.is_none_or(|expected| bool::from(expected.ct_eq(&credential())))
    }

    /// Whether the session may not make requests any more: the credential it authenticated
    /// with expired, or the auth plugin no longer admits it (see `standing`).
    pub fn lapsed(&self) -> bool {
        self.expires_at.is_some_and(|at| at <= SystemTime::now()) || self.revoked()
    }

    /// Whether the auth plugin, asked again after a reload, no longer admits the session.
    pub fn revoked(&self) -> bool {
        self.standing.as_ref().is_some_and(Standing::revoked)
    }

    /// Ok while the session may make requests: its credential has not expired, and after a
    /// plugin reload the auth plugin still admits it as the session's principal (asked once
    /// per reload). An auth plugin that fails refuses this request only; the session ends
    /// ([`Self::lapsed`]) when the credential expired or the plugin refused it.
    pub async fn still_admitted(&self) -> Result<(), Refusal> {
        if self.expires_at.is_some_and(|at| at <= SystemTime::now()) {
            return Err(expired());
        }
        match &self.standing {
            Some(standing) if standing.revoked() => Err(standing::revoked()),
            // Boxed: asked once per reload, and inline it would grow every request's future.
            Some(standing) if !standing.current() => {
                Box::pin(standing.confirm(&self.principal, &self.tag().to_string())).await
            }
            _ => Ok(()),
        }
    }

    /// How long until the session's credential expires (`None`: it does not).
    pub fn expires_in(&self) -> Option<std::time::Duration> {
        self.expires_at.map(|at| at.duration_since(SystemTime::now()).unwrap_or_default())
    }

    /// Cancelled when the relay starts draining (nothing new starts; running requests finish).
    pub fn draining(&self) -> tokio_util::sync::CancellationToken {
        self.counts.0.lifecycle().drain_signal()
    }

    /// Whether this client asked for log messages at `level` (with `logging/setLevel`, or the
    /// stateless envelope's `logLevel`).
    pub fn wants_log(&self, level: &str) -> bool {
        self.client_requests.log_level().wants(level)
    }

    /// When the client last sent something, or was last answered.
    pub fn last_seen(&self) -> Instant {
        *self.last_seen.lock().expect("last_seen lock")
    }

    /// Notes activity now, for the idle expiry of HTTP sessions (the only ones the registry
    /// holds and expires: newline and WebSocket connections time their own idleness), so the
    /// other transports' calls take no lock and read no clock for it.
    fn touch(&self) {
        if self.transport == TransportKind::Http {
            *self.last_seen.lock().expect("last_seen lock") = Instant::now();
        }
    }

    /// Whether requests of this session are running (it is not idle, however long they run).
    fn is_busy(&self) -> bool {
        !self.inflight.lock().expect("inflight lock").is_empty()
    }

    /// Whether the session is in use although its client sends nothing: requests of it run, or
    /// its GET stream is open (a client that only listens for updates; the write deadline ends
    /// the stream of one that stops reading).
    pub fn is_in_use(&self) -> bool {
        self.is_busy() || get_stream::is_open(&self.get_stream)
    }

    /// Server-initiated messages for this session: list changes, resource updates for its
    /// subscriptions, log messages at its level.
    pub fn server_events(&self) -> ServerEvents {
        ServerEvents {
            catalog: self.router.subscribe(),
            router: self.router.clone(),
            principal: self.principal.clone(),
            last: None,
            unsettled: false,
            events: self.router.client_events(),
            state: self.state.clone(),
            client_requests: self.client_requests.clone(),
            queued: VecDeque::new(),
        }
    }

    /// Ends the session here (the client went away, `DELETE`, idle expiry, its credential
    /// expired, the drain): every request still running is aborted and its GET stream closed.
    pub fn end(&self) {
        // First: a request waiting for a slot is refused, and one registering after the
        // in-flight set is emptied below sees it ([`Session::request`]).
        self.slots.close();
        for (_, (_, task)) in self.inflight.lock().expect("inflight lock").drain() {
            task.abort();
        }
        get_stream::end(&self.get_stream);
        self.client_requests.end();
        // Its subscriptions end with it (most clients go away without unsubscribing): the last
        // subscriber of a URI ends the backend's subscription. So does its log level (a
        // stateless exchange's was never held: it has no `logging/setLevel`).
        let subscriptions = std::mem::take(&mut self.state.lock().expect("session lock").subscriptions);
        let level = self.client_requests.log_level().replace(None).filter(|_| !self.stateless);
        if subscriptions.is_empty() && level.is_none() {
            return;
        }
        let router = self.router.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            for uri in subscriptions {
                let request = crate::mcp::Addressed::of_resource(uri);
                if let Err(e) = router.unsubscribe_resource(&request).await {
                    tracing::debug!(error = %e, "a subscription of an ended session was not ended upstream");
                }
            }
            if level.is_some() {
                router.hold_log_level(level, None).await;
            }
        });
    }

    /// Claims the session's one server-to-client stream; `None` while another is open. The
    /// claim ends when the returned guard is dropped (the stream closed); its
    /// [`GetStreamClaim::ended`] fires when the session ends (at once if it has).
    pub fn claim_get_stream(&self) -> Option<GetStreamClaim> {
        GetStreamClaim::claim(&self.get_stream)
    }

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
        if self.slots.is_closed() {
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

/// The answer to anything new (a connection, a session, a request) once the relay drains.
pub fn draining_error() -> RpcError {
    RpcError::new(
        error_codes::SHUTTING_DOWN,
        "the relay is draining (shutting down): nothing new starts here; connect again (a load balancer picks another instance)",
    )
}

/// A session's log name ([`Session::tag`]), for a log field (`session = %tag`).
#[derive(Clone, Copy)]
pub struct Tag<'a>(&'a Session);

impl std::fmt::Display for Tag<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.tag.get_or_init(|| tag_of(&self.0.id)))
    }
}

/// The log name of session `id`: the first 12 hex digits of its SHA-256.
fn tag_of(id: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::digest::hex(&Sha256::digest(id.as_bytes())[..6])
}

/// The refusal of a request on a session whose credential has expired.
fn expired() -> Refusal {
    let message = "the credential this session authenticated with has expired; authenticate again with a fresh one";
    Refusal::Denied(Denial::by_relay(DenialCode::Unauthenticated, message))
}

/// The answer to a request on a session whose credential has expired.
pub fn expired_error() -> RpcError {
    expired().into()
}
