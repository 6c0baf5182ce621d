//! An RFC 8693 token exchange endpoint for the end-to-end tests (axum, in process on loopback):
//! it authenticates its client (`relay` / `relay-secret`, HTTP Basic), takes the subject tokens
//! it knows (`ALICE-T`, `BOB-T`) and issues a new access token per exchange
//! (`xchg-<principal>-<n>`), refusing anything else the way RFC 6749 says (`invalid_grant`,
//! `invalid_client`, `unsupported_grant_type`). It records each exchange's form.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;

/// A running endpoint; stopped on drop.
pub struct TokenEndpoint {
    /// Its port.
    pub port: u16,
    exchanges: Arc<Mutex<Vec<HashMap<String, String>>>>,
    server: tokio::task::JoinHandle<()>,
}

impl TokenEndpoint {
    /// Starts the endpoint; issued tokens say they expire after `expires_in` seconds.
    pub async fn start(expires_in: u64) -> TokenEndpoint {
        let exchanges: Arc<Mutex<Vec<HashMap<String, String>>>> = Arc::default();
        let recorded = exchanges.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let recorded = recorded.clone();
                let form = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                async move { exchange(&headers, form, &recorded, expires_in) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        TokenEndpoint { port, exchanges, server }
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The forms of the exchanges it granted or refused, in order.
    pub fn exchanges(&self) -> Vec<HashMap<String, String>> {
        self.exchanges.lock().expect("exchanges lock").clone()
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn refuse(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({"error": error, "error_description": "refused by the test endpoint"}))).into_response()
}

fn exchange(
    headers: &HeaderMap,
    form: HashMap<String, String>,
    recorded: &Mutex<Vec<HashMap<String, String>>>,
    expires_in: u64,
) -> Response {
    let mut recorded = recorded.lock().expect("exchanges lock");
    recorded.push(form.clone());
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("relay:relay-secret"));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
        return refuse(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:token-exchange") {
        return refuse(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    if form.get("subject_token_type").map(String::as_str) != Some("urn:ietf:params:oauth:token-type:access_token") {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let principal = match form.get("subject_token").map(String::as_str) {
        Some("ALICE-T") => "alice",
        Some("BOB-T") => "bob",
        _ => return refuse(StatusCode::BAD_REQUEST, "invalid_grant"),
    };
    let token = format!("xchg-{principal}-{}", recorded.len());
    axum::Json(json!({
        "access_token": token,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": expires_in,
    }))
    .into_response()
}
