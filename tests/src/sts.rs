//! A company security token service (STS) for the end-to-end tests of the `sts-credentials`
//! plugin (axum, in process on loopback). `POST /issue` with `Authorization: Bearer
//! relay-sts-key` and a JSON body naming the principal: `alice` and `bob` get a new token
//! (`sts-<principal>-<n>`), `carol` is refused (403, `access_denied`), a wrong key gets 401. It
//! records every body it was sent.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The key the relay's plugin must present.
pub const KEY: &str = "relay-sts-key";

/// A running STS; stopped on drop.
pub struct Sts {
    /// Its port.
    pub port: u16,
    requests: Arc<Mutex<Vec<Value>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Sts {
    /// Starts the STS; issued tokens say they expire after `expires_in` seconds.
    pub async fn start(expires_in: u64) -> Sts {
        let requests: Arc<Mutex<Vec<Value>>> = Arc::default();
        let recorded = requests.clone();
        let app = axum::Router::new().route(
            "/issue",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let recorded = recorded.clone();
                async move { issue(&headers, &body, &recorded, expires_in) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        Sts { port, requests, server }
    }

    /// `http://127.0.0.1:PORT/issue`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/issue", self.port)
    }

    /// The bodies it was sent, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().expect("requests lock").clone()
    }
}

impl Drop for Sts {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn issue(headers: &HeaderMap, body: &str, recorded: &Mutex<Vec<Value>>, expires_in: u64) -> Response {
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let mut recorded = recorded.lock().expect("requests lock");
    recorded.push(body.clone());
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {KEY}")) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client"}))).into_response();
    }
    let principal = body["principal"].as_str().unwrap_or_default();
    if !matches!(principal, "alice" | "bob") {
        let description = format!("{principal} is not in the group allowed to reach {}", body["audience"]);
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": "access_denied", "error_description": description})),
        )
            .into_response();
    }
    axum::Json(json!({"access_token": format!("sts-{principal}-{}", recorded.len()), "expires_in": expires_in}))
        .into_response()
}
