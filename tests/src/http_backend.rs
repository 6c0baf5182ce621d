//! A Streamable HTTP MCP backend for the end-to-end tests, in process on loopback: it records
//! every message it receives and misbehaves on demand.
//!
//! Tools: `ok` answers "fine"; `slow` answers after 3 s (unless the session is ended with
//! `DELETE` meanwhile: then `404`, as a server ends the requests of a session it ended); `early_close` answers with an SSE
//! stream that ends before the response; `big` and `big_sse` answer with `big_bytes` of text as
//! JSON or as one SSE event; `logs` answers with an SSE stream whose first event is a log
//! message holding the call's arguments; `ping_on_get` sends a `ping` request on the GET stream
//! and answers `answered` once the relay's answer to it came (`unanswered` after 3 s).

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A running backend; stopped on drop.
pub struct HttpBackend {
    /// Its port.
    pub port: u16,
    received: Arc<Mutex<Vec<Value>>>,
    notified_as: Arc<Mutex<Vec<(String, String)>>>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Value>>>,
    /// Each notification's method and the `Authorization` it came with.
    notified_as: Arc<Mutex<Vec<(String, String)>>>,
    big_bytes: usize,
    /// The open GET stream's sender (the latest one opened).
    get_stream: Arc<Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>>,
    /// Told of each `DELETE` (the session ended).
    ended: Arc<tokio::sync::Notify>,
}

impl HttpBackend {
    /// Starts the backend; `big` and `big_sse` answer with `big_bytes` bytes of text.
    pub async fn start(big_bytes: usize) -> HttpBackend {
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let notified_as: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let shared = Shared {
            received: received.clone(),
            notified_as: notified_as.clone(),
            big_bytes,
            get_stream: Arc::default(),
            ended: Arc::default(),
        };
        let end = |axum::extract::State(shared): axum::extract::State<Shared>| async move {
            shared.ended.notify_waiters();
            StatusCode::OK
        };
        let app = axum::Router::new()
            .route("/mcp", axum::routing::post(handle).get(get_stream).delete(end))
            // An endpoint that moved, as some frameworks answer `/mcp` when they serve `/mcp/`.
            .route("/moved", axum::routing::any(|| async { moved("/mcp") }))
            // A redirect to another origin, which would receive the configured credentials.
            .route("/elsewhere", axum::routing::any(|| async { moved("http://127.0.0.2:9/mcp") }))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        HttpBackend { port, received, notified_as, server }
    }

    /// `http://127.0.0.1:PORT/PATH` (`moved` redirects to `/mcp`, `elsewhere` to another
    /// origin).
    pub fn url_at(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().expect("received lock").clone()
    }

    /// Each notification received, by method, with the `Authorization` header it came with.
    pub fn notified_as(&self) -> Vec<(String, String)> {
        self.notified_as.lock().expect("notified lock").clone()
    }

    /// How many `tools/call` of `tool` arrived.
    pub fn calls_of(&self, tool: &str) -> usize {
        self.received().iter().filter(|m| m["method"] == "tools/call" && m["params"]["name"] == tool).count()
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(
    axum::extract::State(shared): axum::extract::State<Shared>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let message: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    shared.received.lock().expect("received lock").push(message.clone());
    let id = message["id"].clone();
    if id.is_null() {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
        let method = message["method"].as_str().unwrap_or("").to_owned();
        shared.notified_as.lock().expect("notified lock").push((method, auth));
        return StatusCode::ACCEPTED.into_response();
    }
    let tool = message["params"]["name"].as_str().unwrap_or("");
    let result = match message["method"].as_str().unwrap_or("") {
        "initialize" => {
            let result = json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "http-backend", "version": "1"}});
            let reply = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
            return ([("content-type", "application/json"), ("mcp-session-id", "backend-session")], reply)
                .into_response();
        }
        "tools/list" => {
            let tools: Vec<Value> =
                ["ok", "slow", "early_close", "big", "big_sse", "whoami", "verbatim", "pretty", "logs", "ping_on_get"]
                    .iter()
                    .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
                    .collect();
            json!({"tools": tools})
        }
        "tools/call" => match tool {
            // Results written by hand, to be passed on as they are (or, on many lines, made one).
            "verbatim" | "pretty" => {
                let result = if tool == "verbatim" { VERBATIM.to_owned() } else { pretty(VERBATIM) };
                let reply = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#);
                return ([("content-type", "application/json")], reply).into_response();
            }
            "early_close" => return ([("content-type", "text/event-stream")], ": nothing to say\n\n").into_response(),
            // A log message about this call on its own stream, then the answer.
            "logs" => {
                let log = json!({"jsonrpc": "2.0", "method": "notifications/message",
                    "params": {"level": "info", "data": message["params"]["arguments"]}});
                let reply =
                    json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": "logged"}]}});
                let stream = format!("event: message\ndata: {log}\n\nevent: message\ndata: {reply}\n\n");
                return ([("content-type", "text/event-stream")], stream).into_response();
            }
            "ping_on_get" => {
                let ping = json!({"jsonrpc": "2.0", "id": "get-ping", "method": "ping"}).to_string();
                let sent =
                    shared.get_stream.lock().expect("get stream lock").as_ref().is_some_and(|tx| tx.send(ping).is_ok());
                let answered = || {
                    shared
                        .received
                        .lock()
                        .expect("received lock")
                        .iter()
                        .any(|m| m["id"] == "get-ping" && m.get("result").is_some())
                };
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
                while sent && !answered() && std::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                let said = if !sent {
                    "no GET stream"
                } else if answered() {
                    "answered"
                } else {
                    "unanswered"
                };
                json!({"content": [{"type": "text", "text": said}]})
            }
            "slow" => {
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(3)) => {}
                    () = shared.ended.notified() => return StatusCode::NOT_FOUND.into_response(),
                }
                json!({"content": [{"type": "text", "text": "slow done"}]})
            }
            "big" | "big_sse" => json!({"content": [{"type": "text", "text": "x".repeat(shared.big_bytes)}]}),
            // The credential this call came with, as the backend sees it.
            "whoami" => {
                let seen = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("-");
                json!({"content": [{"type": "text", "text": seen}]})
            }
            _ => json!({"content": [{"type": "text", "text": "fine"}]}),
        },
        _ => json!({}),
    };
    let reply = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
    if tool == "big_sse" {
        ([("content-type", "text/event-stream")], format!("event: message\ndata: {reply}\n\n")).into_response()
    } else {
        ([("content-type", "application/json")], reply).into_response()
    }
}

/// GET /mcp: the server-to-client stream, carrying what `ping_on_get` sends.
async fn get_stream(axum::extract::State(shared): axum::extract::State<Shared>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    *shared.get_stream.lock().expect("get stream lock") = Some(tx);
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let message = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(format!("event: message\ndata: {message}\n\n")), rx))
    });
    ([("content-type", "text/event-stream")], axum::body::Body::from_stream(events)).into_response()
}

/// The result of the `verbatim` tool, as the backend writes it: members not in sorted order,
/// spaces between tokens, a number written as the backend chose, an escaped character.
pub const VERBATIM: &str =
    r#"{"structuredContent": {"z": 1.50e0, "a": "caf\u00e9"}, "content": [{"type": "text", "text": "as written"}]}"#;

/// `text` (JSON) spread over lines, as a pretty-printing backend writes it.
fn pretty(text: &str) -> String {
    serde_json::to_string_pretty(&serde_json::from_str::<Value>(text).expect("JSON"))
        .expect("JSON")
        .replace('\n', "\r\n")
}

/// A `307 Temporary Redirect` to `location`.
fn moved(location: &'static str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, location)]).into_response()
}
