//! An OAuth 2.1 authorization server for the end-to-end tests (axum, in process on loopback):
//! RFC 8414 metadata (with or without PKCE `S256`, to test a server the relay must refuse),
//! dynamic client registration (RFC 7591), an authorization endpoint that approves at once and
//! redirects back with a code, and a token endpoint for the code (PKCE verified, `redirect_uri`
//! and `resource` matched) and for refresh tokens. Access tokens are `at-<n>`, refresh tokens
//! `rt-<n>`; every token request's form is recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use serde_json::json;
use sha2::Digest as _;

/// A running server; stopped on drop.
pub struct AuthorizationServer {
    /// Its port.
    pub port: u16,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    /// Codes issued: their challenge, redirect and resource.
    codes: Mutex<HashMap<String, HashMap<String, String>>>,
    /// Refresh tokens still valid, and the resource they are for.
    refresh: Mutex<HashMap<String, String>>,
    /// Token requests' forms, in order.
    forms: Mutex<Vec<HashMap<String, String>>>,
    issued: Mutex<u64>,
    /// While set, the token endpoint answers 503 (an outage).
    down: std::sync::atomic::AtomicBool,
    /// How long the token endpoint takes to answer, in milliseconds.
    delay_ms: std::sync::atomic::AtomicU64,
    expires_in: u64,
    s256: bool,
}

impl AuthorizationServer {
    /// Starts a server whose tokens expire after `expires_in` seconds; `s256`: whether its
    /// metadata offers PKCE S256.
    pub async fn start(expires_in: u64, s256: bool) -> AuthorizationServer {
        let shared = Arc::new(Shared { expires_in, s256, ..Shared::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let app = axum::Router::new()
            .route("/.well-known/oauth-authorization-server", axum::routing::get(metadata))
            .route("/register", axum::routing::post(|| async { axum::Json(json!({"client_id": "relay-client"})) }))
            .route("/authorize", axum::routing::get(authorize))
            .route("/token", axum::routing::post(token))
            .with_state((shared.clone(), port));
        let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        AuthorizationServer { port, shared, server }
    }

    /// Its issuer, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Takes the token endpoint down (503 for every request) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes the token endpoint take `ms` milliseconds to answer.
    pub fn set_delay_ms(&self, ms: u64) {
        self.shared.delay_ms.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// The token requests' forms, in order.
    pub fn forms(&self) -> Vec<HashMap<String, String>> {
        self.shared.forms.lock().expect("forms lock").clone()
    }
}

impl Drop for AuthorizationServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type AppState = (Arc<Shared>, u16);

async fn metadata(State((shared, port)): State<AppState>) -> Response {
    let issuer = format!("http://127.0.0.1:{port}");
    let methods = if shared.s256 { json!(["S256"]) } else { json!(["plain"]) };
    axum::Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "registration_endpoint": format!("{issuer}/register"),
        "code_challenge_methods_supported": methods,
        "grant_types_supported": ["authorization_code", "refresh_token"],
    }))
    .into_response()
}

async fn authorize(State((shared, _)): State<AppState>, Query(query): Query<HashMap<String, String>>) -> Response {
    if query.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return (StatusCode::BAD_REQUEST, "PKCE S256 required").into_response();
    }
    let Some(redirect) = query.get("redirect_uri").cloned() else {
        return (StatusCode::BAD_REQUEST, "no redirect_uri").into_response();
    };
    let code = format!("code-{}", next(&shared));
    shared.codes.lock().expect("codes lock").insert(code.clone(), query.clone());
    let state = query.get("state").cloned().unwrap_or_default();
    let back = url::Url::parse_with_params(&redirect, &[("code", code.as_str()), ("state", state.as_str())]).unwrap();
    Redirect::to(back.as_str()).into_response()
}

async fn token(State((shared, _)): State<AppState>, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    shared.forms.lock().expect("forms lock").push(form.clone());
    let delay = shared.delay_ms.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    if shared.down.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response();
    }
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let resource = match field("grant_type").as_str() {
        "authorization_code" => {
            let Some(asked) = shared.codes.lock().expect("codes lock").remove(&field("code")) else {
                return refuse("invalid_grant");
            };
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(field("code_verifier").as_bytes()));
            let matches = |name: &str| asked.get(name).cloned().unwrap_or_default() == field(name);
            if Some(&challenge) != asked.get("code_challenge") || !matches("redirect_uri") || !matches("resource") {
                return refuse("invalid_grant");
            }
            field("resource")
        }
        "refresh_token" => match shared.refresh.lock().expect("refresh lock").remove(&field("refresh_token")) {
            Some(resource) if resource == field("resource") => resource,
            _ => return refuse("invalid_grant"),
        },
        _ => return refuse("unsupported_grant_type"),
    };
    let n = next(&shared);
    shared.refresh.lock().expect("refresh lock").insert(format!("rt-{n}"), resource);
    axum::Json(json!({
        "access_token": format!("at-{n}"),
        "refresh_token": format!("rt-{n}"),
        "token_type": "Bearer",
        "expires_in": shared.expires_in,
    }))
    .into_response()
}

fn refuse(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": error}))).into_response()
}

fn next(shared: &Shared) -> u64 {
    let mut issued = shared.issued.lock().expect("issued lock");
    *issued += 1;
    *issued
}
