//! `jwt-auth`: the relay as an OAuth 2.1 resource server. Clients present bearer JWTs issued by
//! an authorization server; this plugin verifies them (RS256, ES256, EdDSA) against the
//! issuer's keys, from a JWKS file it is granted or a JWKS URL it fetches over `wasi:http`
//! (cached, refetched when a token names an unknown `kid`, at most once per
//! `jwks_refresh_secs`), checks `iss`, `aud` (the relay's canonical resource URL, RFC 8707),
//! `exp` and `nbf`, and maps `sub` to the principal and `roles_claim` to its roles. A token
//! without every `required_scopes` is refused as `insufficient_scope` (403).
//!
//! Verified tokens are remembered in the host's `kv` by their SHA-256 until they expire, so
//! clients that authenticate on every request (stateless 2026-07-28) do not pay a signature
//! check each time. No token is ever logged or stored in the clear.

mod jwks;
mod jwt;

use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use relay::plugin::types::{ConnectInfo, Denial, DenialCode, Principal};
use relay::plugin::{clock, config, kv, log};

wit_bindgen::generate!({ path: "../../wit", world: "auth" });

/// The plugin's configuration (`config:` in relay.yaml).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    issuer: String,
    audience: String,
    #[serde(default)]
    jwks_file: Option<String>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default = "default_leeway")]
    leeway_secs: u64,
    #[serde(default = "default_roles_claim")]
    roles_claim: String,
    #[serde(default)]
    required_scopes: Vec<String>,
    #[serde(default = "default_refresh")]
    jwks_refresh_secs: u64,
}

fn default_leeway() -> u64 {
    30
}
fn default_roles_claim() -> String {
    "scope".into()
}
fn default_refresh() -> u64 {
    30
}

fn settings() -> &'static Result<Settings, String> {
    static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let settings: Settings = serde_json::from_str(&config::get_json()).map_err(|e| e.to_string())?;
        if settings.jwks_file.is_some() == settings.jwks_url.is_some() {
            return Err("set exactly one of jwks_file or jwks_url".into());
        }
        Ok(settings)
    })
}

struct JwtAuth;

impl exports::relay::plugin::authenticator::Guest for JwtAuth {
    fn authenticate(info: ConnectInfo) -> Result<Principal, Denial> {
        let settings = settings().as_ref().map_err(|problem| {
            log::log(log::Level::Error, &format!("jwt-auth configuration: {problem}"));
            deny(DenialCode::Unauthenticated, "authentication is misconfigured")
        })?;
        let Some(token) = info.token.as_deref().filter(|t| !t.is_empty()) else {
            return Err(deny(DenialCode::Unauthenticated, "a bearer token is required"));
        };
        let digest = hex(&Sha256::digest(token.as_bytes()));
        let now = clock::now_ms() / 1000;
        if let Ok(Some(cached)) = kv::get(&format!("ok:{digest}"))
            && let Ok(principal) = serde_json::from_str::<Value>(&cached)
        {
            return Ok(principal_of(&principal));
        }
        let verified = verify(settings, token, now).map_err(|rejection| {
            log::log(log::Level::Info, &format!("denied {}: {rejection}", info.remote_addr));
            deny(DenialCode::Unauthenticated, &format!("invalid token: {rejection}"))
        })?;
        let roles = roles_of(&verified.claims, &settings.roles_claim);
        if let Some(missing) = settings.required_scopes.iter().find(|s| !roles.contains(s)) {
            log::log(log::Level::Info, &format!("denied {}: scope {missing} missing", info.remote_addr));
            return Err(deny(DenialCode::Forbidden, &format!("insufficient_scope: the token lacks scope {missing}")));
        }
        let subject = verified.claims["sub"].as_str().unwrap_or_default().to_owned();
        let principal = json!({"id": subject, "roles": roles});
        let ttl_ms = verified.expires.saturating_sub(now).max(1) * 1000;
        let _ = kv::set(&format!("ok:{digest}"), &principal.to_string(), Some(ttl_ms));
        log::log(log::Level::Info, &format!("authenticated {} as {subject}", info.remote_addr));
        Ok(principal_of(&principal))
    }
}

/// Verifies against the current keys; an unknown `kid` refreshes a JWKS URL's keys once.
fn verify(settings: &Settings, token: &str, now: u64) -> Result<jwt::Verified, jwt::Rejection> {
    let expect = jwt::Expect {
        issuer: settings.issuer.clone(),
        audience: settings.audience.clone(),
        leeway_secs: settings.leeway_secs,
    };
    let keys = key_set(settings, false);
    match jwt::verify(token, &keys, &expect, now) {
        Err(jwt::Rejection::UnknownKey(_)) if settings.jwks_url.is_some() && may_refresh(settings) => {
            jwt::verify(token, &key_set(settings, true), &expect, now)
        }
        outcome => outcome,
    }
}

/// The key set: the granted file (read each time, so a rotated file is seen at once), or the
/// URL's document from `kv` (fetched when missing or when `refresh`).
fn key_set(settings: &Settings, refresh: bool) -> jwks::KeySet {
    let loaded = match (&settings.jwks_file, &settings.jwks_url) {
        (Some(file), _) => std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}")),
        (None, Some(url)) => match kv::get("jwks").ok().flatten().filter(|_| !refresh) {
            Some(document) => Ok(document),
            None => fetch(url).inspect(|document| {
                let _ = kv::set("jwks", document, Some(3_600_000));
            }),
        },
        (None, None) => Err("no key source".into()),
    };
    match loaded.and_then(|document| jwks::KeySet::parse(&document)) {
        Ok(keys) => keys,
        Err(problem) => {
            log::log(log::Level::Error, &format!("jwt-auth keys: {problem}"));
            jwks::KeySet::default()
        }
    }
}

/// At most one refetch per `jwks_refresh_secs`, however many unknown `kid`s arrive.
fn may_refresh(settings: &Settings) -> bool {
    matches!(kv::increment("jwks-refresh", 1, Some(settings.jwks_refresh_secs.max(1) * 1000)), Ok(1))
}

#[cfg(target_arch = "wasm32")]
fn fetch(url: &str) -> Result<String, String> {
    use wstd::http::{Body, Client, Request};
    wstd::runtime::block_on(async {
        let request = Request::get(url).body(Body::empty()).map_err(|e| format!("{url}: {e}"))?;
        let response = Client::new().send(request).await.map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let mut body = response.into_body();
        body.str_contents().await.map(str::to_owned).map_err(|e| format!("{url}: {e}"))
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn fetch(url: &str) -> Result<String, String> {
    Err(format!("{url}: fetching needs wasi:http"))
}

/// The roles a claim grants: a space-separated string (`scope`) or a list of strings.
fn roles_of(claims: &Value, claim: &str) -> Vec<String> {
    match claims.get(claim) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn principal_of(principal: &Value) -> Principal {
    Principal { id: principal["id"].as_str().unwrap_or_default().to_owned(), roles: roles_of(principal, "roles") }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn deny(code: DenialCode, message: &str) -> Denial {
    Denial { code, message: message.to_owned(), retry_after_ms: None }
}

export!(JwtAuth);
