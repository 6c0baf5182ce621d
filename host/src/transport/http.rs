//! HTTP on the shared port: Streamable HTTP (`POST`/`GET`/`DELETE /mcp`), WebSocket upgrades on
//! `/` and `/ws`, and the `/healthz` and `/readyz` probes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::to_bytes;
use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::TransportState;
use super::http_session::{find_session, vouched_for};
use super::listener::Unvouched;
use super::stateless;
use super::{get_stream, media, oauth, sse};
use crate::access::{Peer, TransportKind};
use crate::mcp::{self, DecodeError, Message, RpcError, error_codes};
use crate::session::{NoSlot, Refused};

pub(super) const SESSION_HEADER: &str = "mcp-session-id";
pub(super) const VERSION_HEADER: &str = "mcp-protocol-version";

/// What a WebSocket session's read buffer starts at (and the most one read takes): an idle
/// session holds this much; a larger message grows it.
const WS_READ_BUFFER: usize = 2048;

/// The HTTP routes as one `axum::Router`, served per connection by the listener (behind
/// [`super::gate`], which every request passes first).
pub fn app(state: Arc<TransportState>) -> Router {
    Router::new()
        // POST /mcp is answered before this router is asked ([`respond`]).
        .route("/mcp", get(mcp_get).delete(mcp_delete))
        .route("/", get(websocket_or_info))
        .route("/ws", get(websocket_or_info))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/oauth/callback", get(super::oauth_callback::callback))
        .route("/metrics", get(super::observe::main_port_metrics))
        .route("/status", get(super::observe::status_page))
        .route("/status.json", get(super::observe::status_json))
        .merge(
            Router::new()
                .route("/.well-known/oauth-protected-resource", get(oauth::metadata))
                .route("/.well-known/oauth-protected-resource/mcp", get(oauth::metadata))
                .with_state(state.oauth.clone()),
        )
        .with_state(state)
}

/// With `tls.required`, all a plaintext HTTP connection may reach: the probes (load balancers'
/// health checks, HAProxy's among them, often speak plain HTTP, and they carry nothing secret);
/// anything else is refused as needing TLS.
pub fn plaintext_probes(state: Arc<TransportState>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).fallback(needs_tls).with_state(state)
}

async fn needs_tls() -> Response {
    crate::metrics::metrics().access.tls_refused("plaintext");
    (StatusCode::BAD_REQUEST, "this port requires TLS\n").into_response()
}

async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<Arc<TransportState>>) -> Response {
    let ready = state.lifecycle.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(json!({"ready": ready, "instance": state.lifecycle.instance}))).into_response()
}

async fn websocket_or_info(
    State(state): State<Arc<TransportState>>,
    axum::Extension(peer): axum::Extension<Peer>,
    unvouched: Option<axum::Extension<Unvouched>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => {
            let factory = state.sessions_factory.clone();
            // Admitted (or refused with an HTTP status) before the upgrade.
            let session = match factory.admit(TransportKind::WebSocket, &peer, bearer(&headers)).await {
                Ok(session) => session,
                Err(refusal) => return refused(refusal, Value::Null),
            };
            unvouched.inspect(|unvouched| unvouched.vouch());
            // Frames a little over the message limit are read and refused with a JSON-RPC
            // error; far larger ones close the socket (1009) before being buffered.
            let hard_cap = factory.limits.max_message_bytes.saturating_mul(2);
            upgrade
                .protocols(["mcp"])
                // tungstenite reserves 128 KiB per socket for reading by default; an idle
                // session needs little, and the buffer grows for a large message.
                .read_buffer_size(WS_READ_BUFFER)
                .write_buffer_size(0)
                .max_message_size(hard_cap)
                .max_frame_size(hard_cap)
                .on_upgrade(move |socket| super::websocket::serve(socket, factory, session))
        }
        Err(_) => axum::Json(json!({
            "name": "relay",
            "version": env!("CARGO_PKG_VERSION"),
            "endpoints": {"streamable_http": "/mcp", "websocket": ["/", "/ws"], "health": "/healthz", "ready": "/readyz"},
        }))
        .into_response(),
    }
}

/// Answers one HTTP request of a connection. `main`: the connection is served the relay's
/// routes ([`app`]): through [`super::gate`] first, then `POST /mcp` (every call a client
/// makes, the hot path) directly, and anything else by `router`; the router's per-request
/// machinery (its boxed services and futures, the path parameters, the extractors' copies of
/// the headers) is a dozen allocations a call does not need. Otherwise (the plaintext probes
/// of a TLS-only port) `router` answers everything, `POST /mcp` included.
pub(super) async fn respond(
    state: Arc<TransportState>,
    router: Router,
    main: bool,
    peer: Peer,
    mut request: axum::extract::Request,
) -> Response {
    if main && let Some(refusal) = super::gate::refusal(&state, &request) {
        return refusal;
    }
    let hot = main && request.method() == axum::http::Method::POST && request.uri().path() == "/mcp";
    let response = if hot {
        mcp_post(&state, peer, request).await
    } else {
        // The other handlers read the peer through an extension.
        request.extensions_mut().insert(peer);
        match tower::ServiceExt::oneshot(router, request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        }
    };
    if main { super::gate::finish(&state, response) } else { response }
}

/// POST /mcp: one JSON-RPC message per request.
async fn mcp_post(state: &Arc<TransportState>, peer: Peer, request: axum::extract::Request) -> Response {
    let state = state.clone();
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    // The transport spec: a POST accepts both JSON and SSE answers (no Accept header: anything).
    let accept = media::Accept::of(header_str(&headers, header::ACCEPT));
    if !(accept.json && accept.event_stream) {
        return plain(StatusCode::NOT_ACCEPTABLE, "Accept must include application/json and text/event-stream");
    }
    if !media::is(header_str(&headers, header::CONTENT_TYPE), "application/json") {
        return plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json");
    }
    let vouched = match vouched_for(&state, &peer, &headers).await {
        Ok(vouched) => vouched,
        Err(refusal) => return refusal,
    };
    if let Some(unvouched) = parts.extensions.get::<Unvouched>() {
        unvouched.vouch();
    }
    let limits = state.sessions_factory.limits.clone();
    let body_deadline = Duration::from_secs(limits.body_timeout_secs);
    let bytes = match crate::deadline::within(body_deadline, to_bytes(body, limits.max_message_bytes)).await {
        Ok(Ok(bytes)) => bytes,
        Err(_) => {
            tracing::info!(remote = %peer.addr, secs = limits.body_timeout_secs, "request body too slow; refused");
            return plain(StatusCode::REQUEST_TIMEOUT, "request body did not arrive in time");
        }
        Ok(Err(_)) => {
            let error = DecodeError::TooLarge { size: limits.max_message_bytes + 1, limit: limits.max_message_bytes };
            return rpc_error(StatusCode::PAYLOAD_TOO_LARGE, error.into_response());
        }
    };
    let mut message = match mcp::decode(&bytes, &limits) {
        Ok(message) => message,
        Err(refused) => return rpc_error(StatusCode::BAD_REQUEST, refused.into_response()),
    };
    adopt_traceparent(&headers, &mut message);
    // The rare branches are boxed: their futures are kilobytes, and inline they would make
    // every request's future as large (hyper moves it whole into its slot).
    if stateless::is_stateless(&headers) {
        return Box::pin(stateless::post(&state, &peer, &headers, accept, message)).await;
    }
    if let Message::Request(request) = &message
        && request.method == "initialize"
    {
        return Box::pin(initialize(&state, &peer, &headers, message)).await;
    }

    let session = match find_session(&state, &headers, &peer, vouched).await {
        Ok(session) => session,
        Err(refusal) => return refusal,
    };
    match message {
        Message::Request(request) if state.lifecycle.is_draining() => refused(Refused::draining(), request.id),
        Message::Request(request) => {
            // Requests that travel to a backend may stream (progress, the backend's own requests)
            // before their answer: those go out on an SSE stream, when the client takes one.
            let forwarded = matches!(
                request.method.as_str(),
                "tools/call" | "prompts/get" | "resources/read" | "completion/complete"
            );
            // What these change, the other instances must know to serve the session.
            let changes_session =
                matches!(request.method.as_str(), "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe");
            // Waits while the session has max_requests_in_flight requests running.
            let slot = match session.slot().await {
                Ok(slot) => slot,
                // Ended by the drain while it waited: other instances serve the session.
                Err(NoSlot::Ended) if state.lifecycle.is_draining() => {
                    return refused(Refused::draining(), request.id);
                }
                Err(NoSlot::Ended) => return super::http_session::unknown_session(),
                Err(busy @ NoSlot::Busy) => return refused(Refused::Busy(busy.into()), request.id),
            };
            if state.lifecycle.is_draining() {
                // The drain began while it waited.
                return refused(Refused::draining(), request.id);
            }
            if forwarded && accept.names_event_stream {
                super::http_answer::answer_or_stream(&state, &session, request, slot).await
            } else {
                // Dropped with this exchange when the client goes away: the request is cancelled.
                let id = request.id.clone();
                let response = session.request(request, None).await;
                let response = response.unwrap_or_else(|| {
                    mcp::Response::err(id, RpcError::new(error_codes::REQUEST_CANCELLED, "request cancelled"))
                });
                if changes_session {
                    state.sessions.shared().save(&session).await;
                }
                super::held_answer::json_holding(StatusCode::OK, &Message::Response(response), slot)
            }
        }
        other => {
            Box::pin(session.handle(other, None)).await;
            StatusCode::ACCEPTED.into_response()
        }
    }
}

/// POST /mcp of `initialize` (`message`): a new session, its id in `Mcp-Session-Id`.
async fn initialize(state: &TransportState, peer: &Peer, headers: &HeaderMap, message: Message) -> Response {
    let session = match state.sessions_factory.admit(TransportKind::Http, peer, bearer(headers)).await {
        Ok(session) => session,
        Err(refusal) => {
            let id = match message {
                Message::Request(request) => request.id,
                _ => Value::Null,
            };
            return refused(refusal, id);
        }
    };
    let Some(response) = session.handle(message, None).await else { unreachable!("a request has a response") };
    if let Err(refusal) = &response.outcome {
        // Refused by policy: no session is kept.
        let status = if refusal.code == error_codes::RATE_LIMITED {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::FORBIDDEN
        };
        return rpc_error(status, response);
    }
    state.sessions.open(session.clone()).await;
    let mut reply = json_response(&Message::Response(response));
    reply.headers_mut().insert(SESSION_HEADER, HeaderValue::from_str(&session.id).expect("hex id"));
    reply
}

/// GET /mcp: the server-to-client stream of a session.
async fn mcp_get(
    State(state): State<Arc<TransportState>>,
    axum::Extension(peer): axum::Extension<Peer>,
    unvouched: Option<axum::Extension<Unvouched>>,
    headers: HeaderMap,
) -> Response {
    if stateless::is_stateless(&headers) {
        return stateless::method_not_allowed();
    }
    if !media::Accept::of(header_str(&headers, header::ACCEPT)).event_stream {
        return plain(StatusCode::NOT_ACCEPTABLE, "GET /mcp needs Accept: text/event-stream");
    }
    let session = match find_session(&state, &headers, &peer, None).await {
        Ok(session) => session,
        Err(refusal) => return refusal,
    };
    unvouched.inspect(|unvouched| unvouched.vouch());
    // A broken answer stream resumed: what the client missed, then the rest (even while
    // draining: the request runs here until answered).
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok())
        && let Some((stream, replay, from)) = state.resumable.find(&session.id, last)
    {
        tracing::debug!(session = %session.tag(), stream, from, "answer stream resumed");
        return sse::respond_events(replay.read_from(stream, from));
    }
    if state.lifecycle.is_draining() {
        return refused(Refused::draining(), Value::Null);
    }
    // One GET stream per session: MCP forbids broadcasting a message on several streams, and
    // a second stream would get every notification again.
    let Some(claim) = session.claim_get_stream() else {
        return plain(StatusCode::CONFLICT, "this session already has a GET stream open");
    };
    get_stream::respond(state, session, claim)
}

/// DELETE /mcp: the client ends its session.
async fn mcp_delete(
    State(state): State<Arc<TransportState>>,
    axum::Extension(peer): axum::Extension<Peer>,
    unvouched: Option<axum::Extension<Unvouched>>,
    headers: HeaderMap,
) -> Response {
    if stateless::is_stateless(&headers) {
        return stateless::method_not_allowed();
    }
    match find_session(&state, &headers, &peer, None).await {
        Ok(session) => {
            unvouched.inspect(|unvouched| unvouched.vouch());
            state.sessions.end(&session.id).await;
            tracing::debug!(session = %session.tag(), "session ended by client");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(refusal) => refusal,
    }
}

/// A W3C `traceparent` header travels on as the request's `_meta.traceparent` (where the
/// session reads it), unless the body names one itself.
fn adopt_traceparent(headers: &HeaderMap, message: &mut Message) {
    let Some(header) = headers.get("traceparent").and_then(|v| v.to_str().ok()) else { return };
    let Message::Request(request) = message else { return };
    let Some(Value::Object(params)) = request.params.as_deref_mut() else { return };
    let meta = params.entry("_meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.entry("traceparent").or_insert_with(|| header.into());
    }
}

/// The token of an `Authorization: Bearer` header.
pub(super) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

/// The response to a refused connection or session: the refusal's HTTP status (401 with
/// `WWW-Authenticate` for missing credentials) and its JSON-RPC error.
pub(super) fn refused(refusal: Refused, id: Value) -> Response {
    let status = StatusCode::from_u16(refusal.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    let retry_after = refusal.retry_after_secs();
    let auth_denial = matches!(refusal, Refused::Auth(crate::plugins::Refusal::Denied(_)));
    let mut response = rpc_error(status, mcp::Response::err(id, refusal.into()));
    // Bearer challenges (RFC 6750); `gate::finish` adds the metadata URL and scopes.
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    } else if status == StatusCode::FORBIDDEN && auth_denial {
        let challenge = HeaderValue::from_static(r#"Bearer error="insufficient_scope""#);
        response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    if let Some(secs) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn plain(status: StatusCode, message: &'static str) -> Response {
    (status, message).into_response()
}

/// `message` as an `application/json` body with `status`: every JSON answer of the transport.
pub(super) fn json_with_status(status: StatusCode, message: &Message) -> Response {
    (status, [(header::CONTENT_TYPE, media::APPLICATION_JSON)], message.to_text()).into_response()
}

pub(super) fn json_response(message: &Message) -> Response {
    json_with_status(StatusCode::OK, message)
}

pub(super) fn rpc_error(status: StatusCode, response: mcp::Response) -> Response {
    json_with_status(status, &Message::Response(response))
}
