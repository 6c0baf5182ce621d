//! A mock OpenAI-compatible chat-completions server on loopback, for the Fiedler tests. The
//! model id in each request picks its behaviour, so one server serves every case:
//!
//! - any plain id: answers at once with realistic JSON (`chatcmpl` object, usage);
//! - `slow-<ms>`: answers after `<ms>` milliseconds;
//! - `status-<code>`: always answers that HTTP status with an OpenAI-style error body (a 401
//!   echoes the `Authorization` header it got, as a careless provider might);
//! - `flaky-<n>`: answers 429 (with `Retry-After: 0`) to its first `n` requests, then succeeds;
//! - `leaky`: answers 401 with a plain-text body that echoes the `Authorization` header 170
//!   characters in, where an excerpt of the body would cut it;
//! - `garbage`: answers 200 with a body that is not JSON;
//! - `hang`: never answers.
//!
//! Every request is recorded (model, `Authorization`, prompt length) and the most requests in
//! flight at once is kept, so tests can check what the plugin sent and that it sent in parallel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The `model` field.
    pub model: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Characters of the user message.
    pub content_chars: usize,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    attempts: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// The running mock; stops with the test's runtime.
pub struct MockOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl MockOpenAi {
    /// Starts the mock on an ephemeral loopback port.
    pub async fn start() -> MockOpenAi {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/v1/chat/completions", post(complete)).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("mock serves") });
        MockOpenAi { addr, shared }
    }

    /// The base URL to configure (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `127.0.0.1:PORT`, for `grants.http`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }
}

/// Decrements the in-flight count when a request ends (also when the client gives up).
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn complete(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(shared.clone());
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "request body is not JSON");
    };
    let model = request["model"].as_str().unwrap_or("").to_owned();
    let content = request.pointer("/messages/0/content").and_then(Value::as_str).unwrap_or("").to_owned();
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    shared.seen.lock().unwrap().push(Seen {
        model: model.clone(),
        authorization: authorization.clone(),
        content_chars: content.chars().count(),
    });
    let attempt = {
        let mut attempts = shared.attempts.lock().unwrap();
        let count = attempts.entry(model.clone()).or_default();
        *count += 1;
        *count
    };

    if let Some(ms) = model.strip_prefix("slow-").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = model.strip_prefix("status-").and_then(|c| c.parse::<u16>().ok()) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &authorization {
            Some(auth) if code == 401 => format!("Incorrect API key provided: {auth}"),
            _ => format!("mock failure {code}"),
        };
        return error(status, &message);
    }
    if let Some(n) = model.strip_prefix("flaky-").and_then(|n| n.parse::<usize>().ok())
        && attempt <= n
    {
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "Rate limit reached, slow down");
        response.headers_mut().insert("retry-after", "0".parse().unwrap());
        return response;
    }
    match model.as_str() {
        "leaky" => {
            let echoed = format!("{}{}", "x".repeat(170), authorization.unwrap_or_default());
            return (StatusCode::UNAUTHORIZED, echoed).into_response();
        }
        "garbage" => return (StatusCode::OK, "{\"choices\": [oops").into_response(),
        "hang" => tokio::time::sleep(Duration::from_secs(3600)).await,
        _ => {}
    }
    let chars = content.chars().count();
    let start: String = content.chars().take(60).collect();
    let answer = format!("[{model}] read {chars} characters starting with: {start}");
    axum::Json(json!({
        "id": format!("chatcmpl-mock-{attempt}"),
        "object": "chat.completion",
        "created": 1_790_000_000u64,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": chars / 4, "completion_tokens": 12, "total_tokens": chars / 4 + 12},
    }))
    .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "mock_error", "code": status.as_u16()}});
    (status, axum::Json(body)).into_response()
}
