//! Sessions: one per client connection (newline, WebSocket) or per `Mcp-Session-Id`
//! (Streamable HTTP). A session answers the protocol itself (initialize, ping, lists) and hands
//! what backends own to the router. This file holds the session's state and its life (opening
//! to end); `factory.rs` admits and opens sessions, `methods.rs` answers each MCP method,
//! `requests.rs` runs and bounds its requests, `standing.rs` keeps its credential checked,
//! `events.rs` says what the session sends on its own, and `driver.rs` runs it over a
//! message-oriented connection (`outbound.rs`: how its loop writes to the client).

mod cut;
mod driver;
mod events;
mod factory;
mod get_stream;
mod methods;
mod outbound;
mod record;
mod registry;
mod requests;
mod shared;
mod standing;
#[cfg(test)]
mod tests;
mod wake_gate;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use futures::future::AbortHandle;
use tokio::sync::Semaphore;

pub use driver::{Ended, Inbound, drive};
pub use events::ServerEvents;
pub use factory::{Refused, SessionFactory};
use get_stream::GetStream;
pub use get_stream::GetStreamClaim;
pub use outbound::{Connection, Outbound};
pub use record::SessionRecord;
pub use registry::SessionRegistry;
pub use requests::{NoSlot, RunningRequest};
pub use shared::SharedSessions;
pub use standing::Standing;

use crate::access::{Denial, DenialCode, Principal, TransportKind};
use crate::admission::CountGuard;
use crate::lifecycle::SessionCount;
use crate::mcp::{ClientRequests, ClientSink, Related};
use crate::mcp::{Message, Response, RpcError, error_codes};
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
    /// Whether this instance took the session up from another ([`SharedSessions::take_up`]):
    /// it keeps the session marked held while it refreshes the record.
    taken_up: std::sync::atomic::AtomicBool,
    /// Keep the instance's, the principal's (none for anonymous) and the address's session
    /// counts right for this session's lifetime.
    counts: (SessionCount, Option<CountGuard<String>>, CountGuard<crate::admission::AddressKey>),
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
        self.expired() || self.revoked()
    }

    /// Whether the credential the session authenticated with has expired.
    fn expired(&self) -> bool {
        self.expires_at.is_some_and(|at| at <= SystemTime::now())
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
        if self.expired() {
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

    /// Whether a server event (a list change, an update, a backend's request) may go out to the
    /// client now. After a plugin reload the session's credential is confirmed first, as its
    /// next request would (once per reload), so a session the reload revoked hears nothing more
    /// however quiet it is: `false` once the session lapsed ([`Self::lapsed`]). An auth plugin
    /// that cannot say now (busy, failing) lets the event go out: it is asked again at the next
    /// request or event, and a list change lost would leave the client's lists stale.
    pub async fn may_hear(&self) -> bool {
        match &self.standing {
            Some(standing) if standing.revoked() || !standing.current() => {
                let _ = Box::pin(self.still_admitted()).await;
                !self.lapsed()
            }
            _ => !self.expired(),
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

    /// Whether the session has ended here ([`Session::end`]).
    pub fn has_ended(&self) -> bool {
        self.slots.is_closed()
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

/// Why the relay ends a session it ends for its credential (expired, or no longer admitted),
/// as a transport without close frames tells its client last; `None` for the other ends.
pub fn ended_error(ended: Ended) -> Option<RpcError> {
    match ended {
        Ended::CredentialExpired => Some(expired().into()),
        Ended::CredentialRevoked => Some(standing::revoked().into()),
        Ended::Closed | Ended::Drained => None,
    }
}
