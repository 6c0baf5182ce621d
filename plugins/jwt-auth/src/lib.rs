//! `jwt-auth`: the relay as an OAuth 2.1 resource server. Clients present bearer JWTs issued by
//! an authorization server; this plugin verifies them (RS256, ES256, EdDSA) against the
//! issuer's keys, from a JWKS file it is granted or a JWKS URL it fetches over `wasi:http`
//! (cached, refetched when a token names an unknown `kid`, at most once per
//! `jwks_refresh_secs`), checks `iss`, `aud` (the relay's canonical resource URL, RFC 8707),
//! `exp` and `nbf`, refuses any `crit` extension, and maps `sub` to the principal. Roles come
//! from the claim the operator names in `roles_claim`; without one, the token's scopes become
//! roles except `admin`, which is granted only by a named `roles_claim` or by `admin_subjects`
//! (so whoever can get an `admin` scope from the authorization server does not administer the
//! relay by default). A token without every `required_scopes` (in its `scope` claim) is refused
//! as `insufficient_scope` (403).
//!
//! The host is told when each token expires (`credential.expires-at`): sessions opened with
//! it end then, and the host remembers the decision (in its own memory) until then. Nothing
//! about a token is kept in `kv`, where whoever can write the store could forge a decision; the
//! JWKS fetched from a URL is kept in this instance's memory, never in `kv`, for the same
//! reason. No token is ever logged or stored in the clear.

mod jwks;
mod jwt;

use std::sync::{Mutex, OnceLock};

use serde::Deserialize;
use serde_json::Value;

use relay::plugin::types::{ConnectInfo, Denial, DenialCode, Principal};
use relay::plugin::{clock, config, credential, log};

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
    /// The claim roles come from (a space-separated string or a list), `admin` included.
    /// Unset: the `scope` claim's values, without `admin`.
    #[serde(default)]
    roles_claim: Option<String>,
    /// Subjects (`sub`) given the `admin` role.
    #[serde(default)]
    admin_subjects: Vec<String>,
    #[serde(default)]
    required_scopes: Vec<String>,
    #[serde(default = "default_refresh")]
    jwks_refresh_secs: u64,
}

fn default_leeway() -> u64 {
    30
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
        let now = clock::now_ms() / 1000;
        let verified = verify(settings, token, now).map_err(|rejection| {
            log::log(log::Level::Info, &format!("denied {}: {rejection}", info.remote_addr));
            deny(DenialCode::Unauthenticated, &format!("invalid token: {rejection}"))
        })?;
        let scopes = roles_of(&verified.claims, "scope");
        if let Some(missing) = settings.required_scopes.iter().find(|s| !scopes.contains(s)) {
            log::log(log::Level::Info, &format!("denied {}: scope {missing} missing", info.remote_addr));
            return Err(deny(DenialCode::Forbidden, &format!("insufficient_scope: the token lacks scope {missing}")));
        }
        let subject = verified.claims["sub"].as_str().unwrap_or_default().to_owned();
        let roles = roles_for(settings, &verified.claims, &subject);
        credential::expires_at(verified.expires.saturating_add(settings.leeway_secs).saturating_mul(1000));
        log::log(log::Level::Info, &format!("authenticated {} as {subject}", info.remote_addr));
        Ok(Principal { id: subject, roles })
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

/// How long a fetched JWKS document is used before it is fetched again.
const JWKS_MAX_AGE_MS: u64 = 3_600_000;

/// The key set: the granted file (read each time, so a rotated file is seen at once), or the
/// URL's document from this instance's memory (fetched when missing, older than an hour, or
/// when `refresh`). Never from `kv`: a key set there could be replaced by whoever writes it.
fn key_set(settings: &Settings, refresh: bool) -> jwks::KeySet {
    static FETCHED: Mutex<Option<(u64, String)>> = Mutex::new(None);
    let loaded = match (&settings.jwks_file, &settings.jwks_url) {
        (Some(file), _) => std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}")),
        (None, Some(url)) => {
            let now = clock::now_ms();
            let mut fetched = FETCHED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match fetched.as_ref().filter(|(at, _)| !refresh && now.saturating_sub(*at) < JWKS_MAX_AGE_MS) {
                Some((_, document)) => Ok(document.clone()),
                None => fetch(url).inspect(|document| *fetched = Some((now, document.clone()))),
            }
        }
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

/// At most one refetch per `jwks_refresh_secs` by this instance, however many unknown `kid`s
/// arrive. Counted here, beside the document it refreshes: each instance (and each relay)
/// holds its own, so a budget shared through `kv` let one instance's refetch leave the others
/// refusing a rotated-in key until their document was an hour old.
fn may_refresh(settings: &Settings) -> bool {
    static LAST: Mutex<Option<u64>> = Mutex::new(None);
    let now = clock::now_ms();
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if last.is_some_and(|at| now.saturating_sub(at) < settings.jwks_refresh_secs.max(1) * 1000) {
        return false;
    }
    *last = Some(now);
    true
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

/// The principal's roles: the named `roles_claim` as it is, or the scopes without `admin`;
/// plus `admin` for an `admin_subjects` subject.
fn roles_for(settings: &Settings, claims: &Value, subject: &str) -> Vec<String> {
    let mut roles = match &settings.roles_claim {
        Some(claim) => roles_of(claims, claim),
        None => roles_of(claims, "scope").into_iter().filter(|r| r != ADMIN).collect(),
    };
    if settings.admin_subjects.iter().any(|s| s == subject) && !roles.iter().any(|r| r == ADMIN) {
        roles.push(ADMIN.to_owned());
    }
    roles
}

/// The role that administers the relay.
const ADMIN: &str = "admin";

/// The roles a claim grants: a space-separated string (`scope`) or a list of strings.
fn roles_of(claims: &Value, claim: &str) -> Vec<String> {
    match claims.get(claim) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn deny(code: DenialCode, message: &str) -> Denial {
    Denial { code, message: message.to_owned(), retry_after_ms: None }
}

export!(JwtAuth);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(extra: Value) -> Settings {
        let mut base = json!({"issuer": "https://as", "audience": "https://relay/mcp", "jwks_file": "/k"});
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn admin_is_never_granted_by_scope_unless_the_operator_says_so() {
        let claims = json!({"sub": "mallory", "scope": "mcp admin", "roles": ["admin", "ops"]});
        assert_eq!(roles_for(&settings(json!({})), &claims, "mallory"), ["mcp"], "scope's admin is dropped");
        let named = settings(json!({"roles_claim": "roles"}));
        assert_eq!(roles_for(&named, &claims, "mallory"), ["admin", "ops"], "a named claim is taken as it is");
        let listed = settings(json!({"admin_subjects": ["ops-bot"]}));
        assert_eq!(roles_for(&listed, &json!({"scope": "mcp"}), "ops-bot"), ["mcp", "admin"]);
        assert_eq!(roles_for(&listed, &claims, "mallory"), ["mcp"]);
    }
}
