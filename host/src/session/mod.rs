//! Sessions: one per client connection (newline, WebSocket) or per `Mcp-Session-Id`
//! (Streamable HTTP). A session answers the protocol itself (initialize, ping, lists) and hands
//! tool calls to the router. Every tools/call is logged here as one structured record.

mod driver;
mod factory;
mod registry;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};

pub use driver::{Inbound, drive};
pub use factory::{Refused, SessionFactory};
pub use registry::SessionRegistry;

use sha2::{Digest, Sha256};

use crate::access::{Principal, RequestInfo, TransportKind};
use crate::admission::CountGuard;
use crate::lifecycle::SessionCount;
use crate::mcp::envelope;
use crate::mcp::{ClientRequests, Related};
use crate::mcp::{Message, Notification, Request, Response, RpcError, error_codes, version};
use crate::plugins::{Caller, Refusal};
use crate::policy::Policy;
use crate::router::{Catalog, ClientEvent, Router};
use crate::upstream::ListKind;

#[derive(Debug, Default)]
struct SessionState {
    /// Negotiated in `initialize`.
    protocol_version: Option<String>,
    /// `clientInfo.name`, for logs.
    client_name: Option<String>,
    /// From `logging/setLevel`: log notifications at or above it are sent.
    log_level: Option<u8>,
    /// Client-facing URIs from `resources/subscribe`.
    subscriptions: HashSet<String>,
}

/// RFC 5424 severities as MCP names them, least severe first.
const LOG_LEVELS: [&str; 8] = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

fn log_rank(level: &str) -> Option<u8> {
    LOG_LEVELS.iter().position(|l| *l == level).map(|i| i as u8)
}

/// Whether a log message at `level` meets a client's `wanted` level (none wanted: no messages).
fn meets(wanted: Option<u8>, level: &str) -> bool {
    matches!((wanted, log_rank(level)), (Some(wanted), Some(rank)) if rank >= wanted)
}

/// One client session.
pub struct Session {
    /// Random id; the `Mcp-Session-Id` for HTTP sessions.
    pub id: String,
    /// Which transport the client uses.
    pub transport: TransportKind,
    /// Who the client is.
    pub principal: Principal,
    /// SHA-256 of the token the session authenticated with (`None` when auth is off).
    credential: Option<[u8; 32]>,
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
    /// Requests in flight by their JSON id, for `notifications/cancelled`.
    inflight: Mutex<HashMap<String, AbortHandle>>,
    /// One permit per request that may run at once (`limits.max_requests_in_flight`).
    slots: Arc<Semaphore>,
    /// Whether the session's one GET stream (HTTP) is open.
    get_stream: Arc<std::sync::atomic::AtomicBool>,
    /// Requests the relay sent to this client (on an upstream's behalf) awaiting answers.
    client_requests: Arc<ClientRequests>,
    /// This session as the caller of a tool (built once): who it is, and its policy chain,
    /// which backend calls an adapter plugin makes on its behalf pass too.
    caller: Caller,
    /// Keep the instance's, the principal's and the address's session counts right for this
    /// session's lifetime.
    _counts: (SessionCount, CountGuard<String>, CountGuard<std::net::IpAddr>),
}

impl Session {
    /// Handles one decoded message; returns the response for requests. Messages related to a
    /// request (progress, requests from the upstream to the client) go to `stream`.
    pub async fn handle(&self, message: Message, stream: Option<mpsc::Sender<Message>>) -> Option<Response> {
        *self.last_seen.lock().expect("last_seen lock") = Instant::now();
        // Every request is attributed to this session upstream, with a stream or without one.
        let related = Some(Related { sink: stream, client: self.client_requests.clone() });
        match message {
            Message::Request(request) => Some(self.handle_request(request, related.as_ref()).await),
            Message::Notification(notification) => {
                self.handle_notification(notification);
                None
            }
            Message::Response(response) => {
                if !self.client_requests.resolve(response) {
                    tracing::debug!(session = %self.id, "response to no pending request; dropped");
                }
                None
            }
        }
    }

    /// Whether `token` is the credential this session authenticated with (always true when
    /// auth is off).
    pub fn credential_matches(&self, token: Option<&str>) -> bool {
        self.credential.is_none_or(|expected| digest(token.unwrap_or("")) == expected)
    }

    /// Whether this client asked for log messages at `level` (with `logging/setLevel`, or the
    /// stateless envelope's `logLevel`).
    pub fn wants_log(&self, level: &str) -> bool {
        meets(self.state.lock().expect("session lock").log_level, level)
    }

    /// When the client last sent something.
    pub fn last_seen(&self) -> Instant {
        *self.last_seen.lock().expect("last_seen lock")
    }

    /// Server-initiated messages for this session: list changes, resource updates for its
    /// subscriptions, log messages at its level.
    pub fn server_events(&self) -> ServerEvents {
        let mut catalog = self.router.subscribe();
        let last = catalog.borrow_and_update().clone();
        ServerEvents {
            catalog,
            last,
            events: self.router.client_events(),
            state: self.state.clone(),
            queued: VecDeque::new(),
        }
    }

    /// Aborts every request still running (the client went away).
    pub fn cancel_all(&self) {
        for (_, task) in self.inflight.lock().expect("inflight lock").drain() {
            task.abort();
        }
    }

    /// Claims the session's one server-to-client stream; `None` while another is open. The
    /// claim ends when the returned guard is dropped (the stream closed).
    pub fn claim_get_stream(&self) -> Option<GetStreamClaim> {
        use std::sync::atomic::Ordering;
        let free = self.get_stream.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok();
        free.then(|| GetStreamClaim(self.get_stream.clone()))
    }

    /// Whether another request may start now without waiting (transports that read many
    /// requests from one connection stop reading while this is false).
    pub fn has_free_slot(&self) -> bool {
        self.slots.available_permits() > 0
    }

    /// Waits for one of the session's in-flight slots (`limits.max_requests_in_flight`). The
    /// transport holds it until the request's response has been handed on, so a client that
    /// does not read its answers cannot make the relay hold more than that many.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        self.slots.clone().acquire_owned().await.expect("session slots are never closed")
    }

    /// Runs a request on its own task, cancellable by the client's `notifications/cancelled`.
    /// Awaiting the handle gives an error when the request was cancelled (no response is owed
    /// then). A request whose id is already in flight is answered `-32600` at once.
    pub fn spawn_request(
        self: &Arc<Self>,
        request: Request,
        stream: Option<mpsc::Sender<Message>>,
    ) -> JoinHandle<Option<Response>> {
        let key = request.id.to_string();
        let session = self.clone();
        // Holding the lock while spawning makes the task's own removal wait for the insert.
        let mut inflight = self.inflight.lock().expect("inflight lock");
        if inflight.contains_key(&key) {
            // Two requests with one id could not be told apart (answers, cancellation).
            let message = format!("request id {key} is already in flight in this session");
            let refusal = Response::err(request.id, RpcError::new(error_codes::INVALID_REQUEST, message));
            return tokio::spawn(async move { Some(refusal) });
        }
        let task = tokio::spawn({
            let key = key.clone();
            async move {
                let response = session.handle(Message::Request(request), stream).await;
                session.inflight.lock().expect("inflight lock").remove(&key);
                response
            }
        });
        inflight.insert(key, task.abort_handle());
        task
    }

    async fn handle_request(&self, request: Request, related: Option<&Related>) -> Response {
        let Request { id, method, mut params } = request;
        // The client's credential is for the relay alone: never passed on (no token passthrough).
        envelope::strip_credentials(&mut params);
        if self.stateless && STATELESS_REMOVED.contains(&method.as_str()) {
            let message = format!("Method not found: {method} is not part of protocol version {}", self.version());
            return Response::err(id, RpcError::new(error_codes::METHOD_NOT_FOUND, message).with_data(json!(method)));
        }
        if let Err(refusal) = self.admit(&method, params.as_ref()).await {
            return Response::err(id, refusal.into());
        }
        let mut outcome = match method.as_str() {
            "initialize" => Ok(self.initialize(params.as_ref())),
            "server/discover" if self.stateless => Ok(self.discover()),
            "ping" => Ok(json!({})),
            "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list"
                if params.as_ref().and_then(|p| p.get("cursor")).is_some_and(|c| !c.is_null()) =>
            {
                // The relay answers every list in one page and hands out no cursors.
                Err(RpcError::new(
                    error_codes::INVALID_PARAMS,
                    "invalid cursor: the relay lists everything in one page",
                ))
            }
            "tools/list" => Ok(self.list_tools()),
            "tools/call" => self.call_tool(params, related).await,
            "prompts/list" => {
                Ok(self.list(|c| c.prompts().entries().iter().map(|e| &e.definition).collect(), "prompts"))
            }
            "resources/list" => {
                Ok(self.list(|c| c.resources().entries().iter().map(|e| &e.definition).collect(), "resources"))
            }
            "resources/templates/list" => {
                Ok(self.list(|c| c.templates().iter().map(|t| &t.definition).collect(), "resourceTemplates"))
            }
            "prompts/get" => self.routed(params, "name", |router, p| Box::pin(router.get_prompt(p, related))).await,
            "resources/read" => {
                self.routed(params, "uri", |router, p| Box::pin(router.read_resource(p, related))).await
            }
            "completion/complete" => {
                self.routed(params, "ref", |router, p| Box::pin(router.complete(p, related))).await
            }
            "resources/subscribe" => {
                let uri = params.as_ref().and_then(|p| p.get("uri")).and_then(Value::as_str).map(str::to_owned);
                let result = self.routed(params, "uri", |router, p| Box::pin(router.subscribe_resource(p))).await;
                if let (Ok(_), Some(uri)) = (&result, uri) {
                    self.state.lock().expect("session lock").subscriptions.insert(uri);
                }
                result
            }
            "resources/unsubscribe" => {
                let uri = params.as_ref().and_then(|p| p.get("uri")).and_then(Value::as_str).map(str::to_owned);
                let subscribed =
                    uri.as_ref().is_some_and(|uri| self.state.lock().expect("session lock").subscriptions.remove(uri));
                if subscribed {
                    self.routed(params, "uri", |router, p| Box::pin(router.unsubscribe_resource(p))).await
                } else {
                    Ok(json!({}))
                }
            }
            "logging/setLevel" => self.set_log_level(params).await,
            _ => Err(RpcError::new(error_codes::METHOD_NOT_FOUND, format!("Method not found: {method}"))),
        };
        if self.stateless
            && let Ok(result) = &mut outcome
        {
            envelope::stamp(&method, result, &envelope::server_info());
        }
        Response { id, outcome }
    }

    /// The protocol version this session speaks (negotiated, or from the stateless envelope).
    fn version(&self) -> String {
        self.state.lock().expect("session lock").protocol_version.clone().unwrap_or_default()
    }

    /// `server/discover`: what `initialize` would have said, for stateless clients.
    fn discover(&self) -> Value {
        let versions: Vec<&str> = version::STATELESS.iter().chain(version::SUPPORTED).copied().collect();
        let mut capabilities = self.router.capabilities();
        if let Some(resources) = capabilities.get_mut("resources") {
            // Stateless clients have no standing subscriptions.
            resources["subscribe"] = json!(false);
        }
        json!({
            "supportedVersions": versions,
            "capabilities": capabilities,
            "instructions": INSTRUCTIONS,
        })
    }

    /// Runs the policy chain on a request.
    async fn admit(&self, method: &str, params: Option<&Value>) -> Result<(), Refusal> {
        let tool = (method == "tools/call")
            .then(|| params.and_then(|p| p.get("name")).and_then(Value::as_str).map(str::to_owned))
            .flatten();
        let info = RequestInfo {
            principal: self.principal.clone(),
            session_id: self.id.clone(),
            transport: self.transport,
            method: method.to_owned(),
            tool,
        };
        let outcome = self.policy.check(&info).await;
        if let Err(refusal) = &outcome {
            tracing::info!(target: "relay::policy", session = %self.id, principal = %self.principal.id, method, tool = info.tool.as_deref().unwrap_or("-"), reason = %refusal, "request refused");
        }
        outcome
    }

    fn handle_notification(&self, notification: Notification) {
        match notification.method.as_str() {
            "notifications/initialized" => tracing::debug!(session = %self.id, "client initialized"),
            "notifications/cancelled" => {
                let id = notification.params.as_ref().and_then(|p| p.get("requestId")).map(Value::to_string);
                let task = id.as_ref().and_then(|id| self.inflight.lock().expect("inflight lock").remove(id));
                if let Some(task) = task {
                    // Dropping the request's future tells its upstream (notifications/cancelled).
                    task.abort();
                    tracing::info!(session = %self.id, request = id.as_deref().unwrap_or("-"), "request cancelled by the client");
                }
            }
            method => tracing::debug!(session = %self.id, method, "client notification ignored"),
        }
    }

    fn initialize(&self, params: Option<&Value>) -> Value {
        let requested = params.and_then(|p| p.get("protocolVersion")).and_then(Value::as_str);
        let client = params.and_then(|p| p.pointer("/clientInfo/name")).and_then(Value::as_str).map(str::to_owned);
        let negotiated = version::negotiate(requested);
        let capabilities = params.and_then(|p| p.get("capabilities")).cloned().unwrap_or(Value::Null);
        self.client_requests.declare(capabilities, false);
        tracing::info!(session = %self.id, transport = self.transport.as_str(), principal = %self.principal.id, client = client.as_deref().unwrap_or("-"), requested, negotiated, "session initialized");
        let mut state = self.state.lock().expect("session lock");
        state.protocol_version = Some(negotiated.to_owned());
        state.client_name = client;
        json!({
            "protocolVersion": negotiated,
            "capabilities": self.router.capabilities(),
            "serverInfo": envelope::server_info(),
            "instructions": INSTRUCTIONS,
        })
    }

    fn list_tools(&self) -> Value {
        let catalog = self.router.catalog();
        let tools: Vec<&Value> = catalog.tools().iter().map(|e| &e.definition).collect();
        json!({"tools": tools})
    }

    fn list(&self, pick: impl for<'a> Fn(&'a Catalog) -> Vec<&'a Value>, field: &str) -> Value {
        let catalog = self.router.catalog();
        json!({ field: pick(&catalog) })
    }

    /// Checks that `params` is an object with `required`, then hands it to the router.
    async fn routed<'a>(
        &'a self,
        params: Option<Value>,
        required: &str,
        route: impl FnOnce(
            &'a Router,
            Value,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Value, crate::router::RouterError>> + Send + 'a>,
        >,
    ) -> Result<Value, RpcError> {
        match params {
            Some(Value::Object(mut params)) if params.get(required).is_some() => {
                if let Some(meta) = envelope::strip(params.remove("_meta")) {
                    params.insert("_meta".into(), meta);
                }
                route(&self.router, Value::Object(params)).await.map_err(RpcError::from)
            }
            _ => Err(RpcError::new(error_codes::INVALID_PARAMS, format!("params need \"{required}\""))),
        }
    }

    async fn set_log_level(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let level = params.as_ref().and_then(|p| p.get("level")).and_then(Value::as_str).unwrap_or("");
        let rank = log_rank(level).ok_or_else(|| {
            RpcError::new(error_codes::INVALID_PARAMS, format!("level must be one of {}", LOG_LEVELS.join(", ")))
        })?;
        self.state.lock().expect("session lock").log_level = Some(rank);
        self.router.set_log_level(json!({"level": level})).await;
        Ok(json!({}))
    }

    async fn call_tool(&self, params: Option<Value>, related: Option<&Related>) -> Result<Value, RpcError> {
        let invalid = |message: &str| RpcError::new(error_codes::INVALID_PARAMS, message);
        let Some(Value::Object(mut params)) = params else {
            return Err(invalid("tools/call needs params {name, arguments}"));
        };
        let Some(Value::String(name)) = params.remove("name") else {
            return Err(invalid("tools/call needs \"name\" (string)"));
        };
        let arguments = match params.remove("arguments") {
            None | Some(Value::Null) => None,
            Some(arguments @ Value::Object(_)) => Some(arguments),
            Some(_) => return Err(invalid("\"arguments\" must be an object")),
        };
        let started = Instant::now();
        let meta = envelope::strip(params.remove("_meta"));
        let routed = self.router.call_tool(&name, arguments, meta, related, &self.caller).await;
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let backend = routed.backend.as_deref().unwrap_or("-");
        match &routed.result {
            Ok(result) => {
                let outcome =
                    if result.get("isError").and_then(Value::as_bool) == Some(true) { "tool_error" } else { "ok" };
                tracing::info!(target: "relay::call", session = %self.id, tool = %name, backend, duration_ms, outcome, "tools/call");
            }
            Err(error) => {
                tracing::info!(target: "relay::call", session = %self.id, tool = %name, backend, duration_ms, outcome = "error", %error, "tools/call");
            }
        }
        routed.result.map_err(RpcError::from)
    }
}

/// Methods of the handshake era that 2026-07-28 removed (the envelope replaces the handshake
/// and the per-request log level replaces `logging/setLevel`; there are no standing
/// subscriptions without a session).
const STATELESS_REMOVED: &[&str] =
    &["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"];

const INSTRUCTIONS: &str = "Tools from every backend behind this relay. Colliding names are prefixed `<backend>__`; relay_* tools manage the relay.";

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Holds a session's GET stream open; released on drop.
pub struct GetStreamClaim(Arc<std::sync::atomic::AtomicBool>);

impl Drop for GetStreamClaim {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Messages the relay sends to a client on its own initiative.
pub struct ServerEvents {
    catalog: watch::Receiver<Arc<Catalog>>,
    /// The catalog as this session last heard of it.
    last: Arc<Catalog>,
    events: broadcast::Receiver<ClientEvent>,
    state: Arc<Mutex<SessionState>>,
    /// Notifications decided but not yet handed out.
    queued: VecDeque<Message>,
}

impl ServerEvents {
    /// Waits for the next server-initiated message; `None` when the relay is shutting down.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.queued.pop_front() {
                return Some(message);
            }
            tokio::select! {
                changed = self.catalog.changed() => {
                    changed.ok()?;
                    let next = self.catalog.borrow_and_update().clone();
                    for (kind, method) in [
                        (ListKind::Tools, "notifications/tools/list_changed"),
                        (ListKind::Prompts, "notifications/prompts/list_changed"),
                        (ListKind::Resources, "notifications/resources/list_changed"),
                    ] {
                        let templates = kind == ListKind::Resources && next.differs(&self.last, ListKind::ResourceTemplates);
                        if next.differs(&self.last, kind) || templates {
                            self.queued.push_back(notification(method, None));
                        }
                    }
                    self.last = next;
                }
                event = self.events.recv() => match event {
                    Ok(ClientEvent::ResourceUpdated(uri)) => {
                        if self.state.lock().expect("session lock").subscriptions.contains(&uri) {
                            self.queued.push_back(notification("notifications/resources/updated", Some(json!({"uri": uri}))));
                        }
                    }
                    Ok(ClientEvent::Log(params)) => {
                        let wanted = self.state.lock().expect("session lock").log_level;
                        if meets(wanted, params.get("level").and_then(Value::as_str).unwrap_or("")) {
                            self.queued.push_back(notification("notifications/message", Some(params)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

fn notification(method: &str, params: Option<Value>) -> Message {
    Message::Notification(Notification { method: method.into(), params })
}
