//! MCP Streamable HTTP client: each request is a POST answered with JSON or an SSE stream;
//! a GET stream (when the server offers one) carries the server's own notifications.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::Value;
use tokio::sync::{RwLock, mpsc};
use tokio_util::sync::CancellationToken;

use super::UpstreamError;
use super::connection::Connection;
use super::routes::ClientRoutes;
use crate::mcp::{Message, Notification, Request};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// A Streamable HTTP session with one upstream.
pub struct HttpConnection {
    /// Shared HTTP client (connection pooling across requests).
    client: reqwest::Client,
    /// The MCP endpoint.
    url: String,
    /// Configured extra headers.
    headers: HeaderMap,
    /// Assigned by the server in its `initialize` response.
    session_id: RwLock<Option<String>>,
    /// Negotiated in `initialize`; sent on every later request.
    protocol_version: RwLock<Option<String>>,
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
    let client = reqwest::Client::builder()
        .connect_timeout(timeout)
        .build()
        .map_err(|e| UpstreamError::Connect(e.to_string()))?;
    let (events, events_rx) = mpsc::channel(64);
    let conn = HttpConnection {
        client,
        url: url.to_owned(),
        headers: map,
        session_id: RwLock::new(None),
        protocol_version: RwLock::new(None),
        next_id: AtomicU64::new(1),
        events,
        closed: CancellationToken::new(),
        routes,
        max_message_bytes,
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

    /// POSTs a request and reads its response from JSON or from the SSE stream.
    pub async fn request(&self, method: &str, params: Option<Value>) -> Result<Value, UpstreamError> {
        if self.closed.is_cancelled() {
            return Err(UpstreamError::ConnectionLost);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = Message::Request(Request { id: id.into(), method: method.into(), params });
        let mut unanswered = CancelUnanswered { conn: self, id: Some(id) };
        let response = self.post(&message).await?;
        if method == "initialize"
            && let Some(session) = response.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok())
        {
            *self.session_id.write().await = Some(session.to_owned());
        }
        let is_sse = content_type(response.headers()).starts_with("text/event-stream");
        let result = if is_sse {
            self.read_sse(response, id).await
        } else {
            read_json(response, id, self.max_message_bytes).await
        };
        // Answered (even with an error): nothing to cancel.
        unanswered.id = None;
        let result = result?;
        if method == "initialize" {
            let version = result.get("protocolVersion").and_then(Value::as_str).map(str::to_owned);
            *self.protocol_version.write().await = version;
            self.spawn_get_stream();
        }
        Ok(result)
    }

    /// POSTs a notification (answered with 202).
    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError> {
        self.post(&Message::Notification(Notification { method: method.into(), params })).await.map(drop)
    }

    /// Ends the session politely (DELETE) and marks the connection closed.
    pub async fn close(&self) {
        self.closed.cancel();
        if let Some(session) = self.session_id.read().await.clone() {
            let _ = self
                .client
                .delete(&self.url)
                .headers(self.headers.clone())
                .header(SESSION_HEADER, session)
                .send()
                .await;
        }
    }

    /// A POST of `message` on this session: configured headers, both answer formats accepted,
    /// the session id and protocol version once known.
    fn post_request(&self, message: &Message, session: Option<&str>, version: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header(header::CONTENT_TYPE, "application/json")
            .body(message.to_text());
        if let Some(session) = session {
            request = request.header(SESSION_HEADER, session);
        }
        if let Some(version) = version {
            request = request.header(VERSION_HEADER, version);
        }
        request
    }

    async fn post(&self, message: &Message) -> Result<reqwest::Response, UpstreamError> {
        let (session, version) = (self.session_id.read().await.clone(), self.protocol_version.read().await.clone());
        let request = self.post_request(message, session.as_deref(), version.as_deref());
        let never_connected = version.is_none();
        let response = request.send().await.map_err(|e| {
            self.closed.cancel();
            let e = e.without_url();
            if never_connected {
                // Refused or unreachable before anything was exchanged: say so, not "lost".
                let why = if e.is_connect() { "connection refused or unreachable" } else { "request failed" };
                UpstreamError::Connect(format!("{why}: {}", error_chain(&e)))
            } else {
                tracing::debug!(error = %e, "http upstream unreachable");
                UpstreamError::ConnectionLost
            }
        })?;
        match response.status() {
            status if status.is_success() => Ok(response),
            StatusCode::NOT_FOUND if self.session_id.read().await.is_some() => {
                // The server forgot our session (restart): reconnecting re-initializes.
                self.closed.cancel();
                Err(UpstreamError::ConnectionLost)
            }
            status => {
                let body = response.text().await.unwrap_or_default();
                Err(UpstreamError::Protocol(format!("HTTP {status}: {}", body.chars().take(200).collect::<String>())))
            }
        }
    }

    async fn read_sse(&self, response: reqwest::Response, id: u64) -> Result<Value, UpstreamError> {
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
                other => self.dispatch(other).await,
            }
        }
        // The server may end a stream early; without resumption the answer is lost. Saying so
        // at once beats re-sending on the same session (which would run the call again and
        // again) or waiting out the deadline.
        Err(UpstreamError::Protocol("the backend ended the response stream before answering".into()))
    }

    async fn dispatch(&self, message: Message) {
        match message {
            Message::Notification(n) if self.routes.deliver(&n) => {}
            Message::Notification(n) => {
                let _ = self.events.try_send(n);
            }
            Message::Request(request) => {
                let answer = self.routes.answer(request).await;
                let _ = self.post(&Message::Response(answer)).await;
            }
            Message::Response(_) => {}
        }
    }

    /// Opens the server-to-client stream; a server without one answers 405 and that is fine.
    fn spawn_get_stream(&self) {
        let client = self.client.clone();
        let url = self.url.clone();
        let headers = self.headers.clone();
        let events = self.events.clone();
        let closed = self.closed.clone();
        let session = self.session_id.try_read().ok().and_then(|s| s.clone());
        let version = self.protocol_version.try_read().ok().and_then(|s| s.clone());
        let max_message_bytes = self.max_message_bytes;
        tokio::spawn(async move {
            let mut request = client.get(&url).headers(headers).header(header::ACCEPT, "text/event-stream");
            if let Some(session) = session {
                request = request.header(SESSION_HEADER, session);
            }
            if let Some(version) = version {
                request = request.header(VERSION_HEADER, version);
            }
            let stream = async {
                let Ok(response) = request.send().await else { return };
                if !response.status().is_success() {
                    return;
                }
                let (body, since_event) = capped_events(response, max_message_bytes);
                let mut sse = body.eventsource();
                while let Some(Ok(event)) = sse.next().await {
                    since_event.store(0, Ordering::Relaxed);
                    if let Ok(Message::Notification(n)) = parse(&event.data) {
                        let _ = events.try_send(n);
                    }
                }
            };
            tokio::select! { _ = stream => {}, _ = closed.cancelled() => {} }
        });
    }
}

/// Tells the server `notifications/cancelled` for a request whose caller stopped waiting
/// (deadline, client cancellation) before its answer came, as MCP asks of every transport.
struct CancelUnanswered<'a> {
    conn: &'a HttpConnection,
    /// Cleared once the request is answered.
    id: Option<u64>,
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
        let session = conn.session_id.try_read().ok().and_then(|s| s.clone());
        let version = conn.protocol_version.try_read().ok().and_then(|v| v.clone());
        let request = conn.post_request(&cancel, session.as_deref(), version.as_deref());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = request.send().await;
            });
        }
    }
}

/// An error and its causes in one line (reqwest's own message names only the outermost).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn content_type(headers: &HeaderMap) -> &str {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn parse(text: &str) -> Result<Message, UpstreamError> {
    let value: Value = serde_json::from_str(text).map_err(|e| UpstreamError::BadAnswer(format!("bad JSON: {e}")))?;
    Message::from_value(value)
        .map_err(|_| UpstreamError::BadAnswer("its answer is not a valid JSON-RPC message".into()))
}

/// The body of an SSE response as a byte stream that fails once more than `limit` bytes arrive
/// without an event being taken from it (the reader resets the returned counter per event),
/// so one event can never grow past the limit in memory.
fn capped_events(
    response: reqwest::Response,
    limit: usize,
) -> (impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>>, Arc<AtomicUsize>) {
    let since_event = Arc::new(AtomicUsize::new(0));
    let counter = since_event.clone();
    // Some slack for the `data:` framing and keep-alive comments around one message.
    let cap = limit.saturating_add(64 * 1024);
    let body = response.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        if counter.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len() > cap {
            counter.store(usize::MAX / 2, Ordering::Relaxed);
            return Err(std::io::Error::other("SSE event over the size limit"));
        }
        Ok(chunk)
    });
    (body, since_event)
}

/// A JSON response body, read chunk by chunk up to `limit` bytes.
async fn read_json(response: reqwest::Response, id: u64, limit: usize) -> Result<Value, UpstreamError> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(UpstreamError::too_large(limit));
    }
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| UpstreamError::ConnectionLost)?;
        if body.len() + chunk.len() > limit {
            return Err(UpstreamError::too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).map_err(|_| UpstreamError::BadAnswer("its answer is not UTF-8 text".into()))?;
    match parse(&text)? {
        Message::Response(r) if r.id.as_u64() == Some(id) => UpstreamError::check_answer(r.outcome),
        _ => Err(UpstreamError::Protocol("HTTP response did not answer the request".into())),
    }
}
