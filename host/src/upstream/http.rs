//! MCP Streamable HTTP client: each request is a POST answered with JSON or an SSE stream;
//! a GET stream (when the server offers one) carries the server's own notifications.
//!
//! The hot path is a keep-alive connection driven by the call itself ([`super::http_pool`]):
//! the URI and the headers every POST carries are built once per session, the request is
//! written straight from the borrowed params, and a JSON answer is read into one buffer and
//! parsed from it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod get_stream;

use super::UpstreamError;
use super::connection::Connection;
use super::http_body::{capped_events, parse, read_json};
use super::http_client::{error_chain, same_origin_redirect};
use super::http_pool::{HttpPool, PooledBody};
use super::routes::ClientRoutes;
use crate::mcp::{Message, Notification, Payload, Related, request_text};

const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// The configured headers that carry the service's identity, which a call made as its caller
/// does not carry (a backend preferring `Authorization` took every user for the service).
const SERVICE_IDENTITY: [HeaderName; 3] = [header::AUTHORIZATION, header::PROXY_AUTHORIZATION, header::COOKIE];

/// A header a request carries for its caller (name, value), instead of the configured one.
pub type Credential = (http::HeaderName, HeaderValue);
/// What a POST on this session carries besides its body: set once `initialize` is answered.
#[derive(Default, Clone)]
struct SessionHeaders {
    /// Assigned by the server in its `initialize` response.
    session_id: Option<HeaderValue>,
    /// Negotiated in `initialize`; sent on every later request.
    protocol_version: Option<HeaderValue>,
}

/// A Streamable HTTP session with one upstream.
pub struct HttpConnection {
    /// Keep-alive connections reused across requests.
    client: Arc<HttpPool>,
    /// The MCP endpoint, parsed once (moved by a same-origin `307`/`308`).
    uri: RwLock<Uri>,
    /// Configured extra headers.
    headers: HeaderMap,
    /// The session id and protocol version, once known.
    session: RwLock<SessionHeaders>,
    /// Source of relay-assigned request ids.
    next_id: AtomicU64,
    /// Notifications from SSE responses and the GET stream.
    events: mpsc::Sender<Notification>,
    /// Cancelled when the session is unusable (transport failure, session expired).
    closed: CancellationToken,
    /// The client requests this upstream is working for (and where the server's own requests
    /// to the relay go).
    routes: Arc<ClientRoutes>,
    /// Largest JSON body or SSE event accepted from the server.
    max_message_bytes: usize,
    /// Requests sent and not answered yet.
    waiting: AtomicUsize,
}

/// Builds the connection; no request is made until `initialize`.
pub fn connect(
    url: &str,
    headers: &BTreeMap<String, String>,
    timeout: std::time::Duration,
    max_message_bytes: usize,
    routes: Arc<ClientRoutes>,
) -> Result<(Connection, mpsc::Receiver<Notification>), UpstreamError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::try_from(name.as_str()).map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let value = HeaderValue::try_from(value.as_str()).map_err(|e| UpstreamError::Connect(e.to_string()))?;
        map.insert(name, value);
    }
    let uri = Uri::try_from(url).map_err(|e| UpstreamError::Connect(format!("bad URL: {e}")))?;
    let client = HttpPool::start(super::http_client::connector(timeout), &uri)
        .map_err(|e| UpstreamError::Connect(format!("bad URL: {e}")))?;
    let (events, events_rx) = mpsc::channel(64);
    let conn = HttpConnection {
        client,
        uri: RwLock::new(uri),
        headers: map,
        session: RwLock::default(),
        next_id: AtomicU64::new(1),
        events,
        closed: CancellationToken::new(),
        routes,
        max_message_bytes,
        waiting: AtomicUsize::new(0),
    };
    Ok((Connection::Http(Box::new(conn)), events_rx))
}

impl Drop for HttpConnection {
    /// A session nobody holds any more stops its GET stream.
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl HttpConnection {
    /// Cancelled when the session is unusable.
    pub fn closed_token(&self) -> &CancellationToken {
        &self.closed
    }

    /// POSTs a request and reads its response from JSON or from the SSE stream. `credential`
    /// (a caller's own, [`crate::credentials`]) replaces the configured header of its name for
    /// this request only. What the stream carries before the answer (log messages, the
    /// server's own requests) is about the client request behind `related`, and goes to it.
    pub async fn request(
        &self,
        method: &str,
        params: Option<&Payload>,
        credential: Option<&Credential>,
        related: Option<&Related>,
    ) -> Result<Payload, UpstreamError> {
        if self.closed.is_cancelled() {
            return Err(UpstreamError::ConnectionLost);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        // The cancel goes out as the call did: as its caller, when it is called as one.
        let mut unanswered = CancelUnanswered { conn: self, id: Some(id), credential };
        let response = self.post(request_text(id, method, params), credential).await?;
        if method == "initialize"
            && let Some(session) = response.headers().get(SESSION_HEADER)
        {
            self.session.write().expect("session lock").session_id = Some(session.clone());
        }
        let is_sse = content_type(response.headers()).starts_with("text/event-stream");
        let result = if is_sse {
            // Boxed: what reads a stream is 4 KB that a JSON answer's request need not carry.
            Box::pin(self.read_sse(response, id, related, credential)).await
        } else {
            read_json(response, id, self.max_message_bytes).await
        };
        // Answered (even with an error): nothing to cancel.
        unanswered.id = None;
        let result = result?;
        if method == "initialize" {
            let version = result.get("protocolVersion").and_then(Value::as_str);
            self.session.write().expect("session lock").protocol_version =
                version.and_then(|v| HeaderValue::from_str(v).ok());
            self.spawn_get_stream();
        }
        Ok(result)
    }

    /// POSTs a notification (answered with 202).
    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError> {
        self.post(Message::Notification(Notification { method: method.into(), params }).to_text(), None).await.map(drop)
    }

    /// How many requests wait for their answer.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Ends the session politely (DELETE) and marks the connection closed.
    pub async fn close(&self) {
        self.closed.cancel();
        let session = self.session_headers();
        if session.session_id.is_some() {
            let request = self.request_to(Method::DELETE, &session, Full::default(), None);
            let _ = self.client.request(request).await;
        }
    }

    fn session_headers(&self) -> SessionHeaders {
        self.session.read().expect("session lock").clone()
    }

    /// A request to the endpoint: the configured headers, and for a call made as its caller
    /// that caller's `credential` in place of the configured ones that carry an identity
    /// ([`SERVICE_IDENTITY`] and the credential's own: the service's must not travel beside
    /// the user's; a tenant or API-version header goes on), and the session id and protocol
    /// version once known.
    fn request_to(
        &self,
        method: Method,
        session: &SessionHeaders,
        body: Full<Bytes>,
        credential: Option<&Credential>,
    ) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = self.uri.read().expect("uri lock").clone();
        let headers = request.headers_mut();
        headers.clone_from(&self.headers);
        if let Some((name, value)) = credential {
            for service in SERVICE_IDENTITY {
                headers.remove(service);
            }
            headers.insert(name.clone(), value.clone());
        }
        if let Some(session) = &session.session_id {
            headers.insert(SESSION_HEADER, session.clone());
        }
        if let Some(version) = &session.protocol_version {
            headers.insert(VERSION_HEADER, version.clone());
        }
        request
    }

    /// A POST of `body` on this session (as `credential`'s holder, if given), both answer
    /// formats accepted.
    fn post_request(
        &self,
        body: Bytes,
        session: &SessionHeaders,
        credential: Option<&Credential>,
    ) -> http::Request<Full<Bytes>> {
        let mut request = self.request_to(Method::POST, session, Full::new(body), credential);
        let headers = request.headers_mut();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        request
    }

    /// POSTs `text`; a same-origin `307`/`308` (an endpoint that moved, `/mcp` to `/mcp/`) is
    /// followed, a few times at most, and remembered for the requests after.
    async fn post(
        &self,
        text: String,
        credential: Option<&Credential>,
    ) -> Result<http::Response<PooledBody>, UpstreamError> {
        const REDIRECTS: usize = 4;
        let session = self.session_headers();
        let never_connected = session.protocol_version.is_none();
        let body = Bytes::from(text);
        let mut redirects = 0;
        let response = loop {
            let request = self.post_request(body.clone(), &session, credential);
            let response = self.client.request(request).await.map_err(|e| {
                self.closed.cancel();
                if never_connected {
                    // Refused or unreachable before anything was exchanged: say so, not "lost".
                    let why = if e.is_connect() { "connection refused or unreachable" } else { "request failed" };
                    UpstreamError::Connect(format!("{why}: {}", error_chain(&e)))
                } else {
                    tracing::debug!(error = %error_chain(&e), "http upstream unreachable");
                    UpstreamError::ConnectionLost
                }
            })?;
            let moved = matches!(response.status(), StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT);
            let Some(location) = response.headers().get(header::LOCATION).filter(|_| moved) else { break response };
            let from = self.uri.read().expect("uri lock").clone();
            match same_origin_redirect(&from, location) {
                Some(target) if redirects < REDIRECTS => {
                    // Paths only: a URL may carry credentials.
                    tracing::debug!(
                        from = from.path(),
                        to = target.path(),
                        "http upstream moved its endpoint; following"
                    );
                    *self.uri.write().expect("uri lock") = target;
                    redirects += 1;
                }
                _ => {
                    // Where it pointed stays out of the message (status shows it to non-admins)
                    // and out of the log (a URL may carry credentials).
                    tracing::debug!(from = from.path(), "http upstream redirected to another origin; not followed");
                    return Err(UpstreamError::Protocol(format!(
                        "HTTP {}: redirected elsewhere; only redirects to the same origin are followed, {REDIRECTS} at most",
                        response.status()
                    )));
                }
            }
        };
        match response.status() {
            status if status.is_success() => Ok(response),
            StatusCode::NOT_FOUND if session.session_id.is_some() => {
                // The server forgot our session (restart): reconnecting re-initializes.
                self.closed.cancel();
                Err(UpstreamError::ConnectionLost)
            }
            status => {
                let body = Limited::new(response.into_body(), 4096).collect().await;
                let body = body.map(|b| b.to_bytes()).unwrap_or_default();
                let body = String::from_utf8_lossy(&body);
                Err(UpstreamError::Protocol(format!("HTTP {status}: {}", body.chars().take(200).collect::<String>())))
            }
        }
    }

    /// Reads a request's SSE answer stream; what it carries besides the answer goes to the
    /// request's client, and the relay's answers to the backend's own requests on it go out
    /// with the request's `credential` (its caller's, when it is called as one: the answer is
    /// that caller's, not the connection's or another user's).
    async fn read_sse(
        &self,
        response: http::Response<PooledBody>,
        id: u64,
        related: Option<&Related>,
        credential: Option<&Credential>,
    ) -> Result<Payload, UpstreamError> {
        let (body, since_event) = capped_events(response, self.max_message_bytes);
        let mut events = body.eventsource();
        while let Some(event) = events.next().await {
            let event = event.map_err(|_| {
                if since_event.load(Ordering::Relaxed) > self.max_message_bytes {
                    UpstreamError::too_large(self.max_message_bytes)
                } else {
                    // The exchange broke mid-stream: the session is suspect, reconnect.
                    self.closed.cancel();
                    UpstreamError::ConnectionLost
                }
            })?;
            since_event.store(0, Ordering::Relaxed);
            if event.data.trim().is_empty() {
                continue;
            }
            match parse(&event.data)? {
                Message::Response(r) if r.id.as_u64() == Some(id) => return UpstreamError::check_answer(r.outcome),
                other => self.dispatch(other, related, credential).await,
            }
        }
        // The server may end a stream early; without resumption the answer is lost. Saying so
        // at once beats re-sending on the same session (which would run the call again and
        // again) or waiting out the deadline.
        Err(UpstreamError::Protocol("the backend ended the response stream before answering".into()))
    }

    /// What a request's answer stream carried besides the answer: the spec has such messages
    /// relate to that request, so they go to its client (`related`), not to whichever clients
    /// have calls in flight ([`ClientRoutes`]); what is for everyone (list changes) goes out
    /// as the GET stream's does.
    async fn dispatch(&self, message: Message, related: Option<&Related>, credential: Option<&Credential>) {
        match message {
            Message::Notification(n) if self.routes.deliver(&n, related) => {}
            Message::Notification(n) => {
                let _ = self.events.try_send(n);
            }
            Message::Request(request) => {
                let answer = self.routes.answer(request, related).await;
                let _ = self.post(Message::Response(answer).to_text(), credential).await;
            }
            Message::Response(_) => {}
        }
    }
}

/// Counts one request as waiting for its answer until it is dropped (counted when made).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tells the server `notifications/cancelled` for a request whose caller stopped waiting
/// (deadline, client cancellation) before its answer came, as MCP asks of every transport.
struct CancelUnanswered<'a> {
    conn: &'a HttpConnection,
    /// Cleared once the request is answered.
    id: Option<u64>,
    /// The request's own credential (its caller's), which the cancel carries too.
    credential: Option<&'a Credential>,
}

impl Drop for CancelUnanswered<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let conn = self.conn;
        if conn.closed.is_cancelled() {
            return;
        }
        let cancel = Message::Notification(Notification {
            method: "notifications/cancelled".into(),
            params: Some(serde_json::json!({"requestId": id, "reason": "the relay's caller stopped waiting"})),
        });
        let request = conn.post_request(Bytes::from(cancel.to_text()), &conn.session_headers(), self.credential);
        let client = conn.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = client.request(request).await;
            });
        }
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
}
