//! The `oauth` credential mode: the relay as each principal's OAuth 2.1 client of a backend's
//! authorization server (the MCP authorization spec, client side).
//!
//! - **Discovery**: the backend's protected resource metadata (RFC 9728), named by its 401
//!   challenge or at its well-known URL, names the authorization server; that server's metadata
//!   (RFC 8414, or OpenID discovery) names its endpoints and must offer PKCE `S256`.
//! - **The client**: a configured `client_id` (secret from the environment), or one the relay
//!   registers (RFC 7591), once per backend and instance.
//! - **Authorization**: code flow with PKCE S256, the `resource` parameter (RFC 8707) and a
//!   one-use `state`. What the callback needs (principal, verifier, client, endpoints) is sealed
//!   in the kv under the state's digest for ten minutes, so any instance can complete it.
//! - **Tokens**: a [`Grant`] per principal and backend, sealed in the vault; refreshed before it
//!   expires; a refused refresh forgets it, and the user is asked to authorize again.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::wire::{self, ClientAuth};
use crate::oauth_url::{same_origin, well_known};
use crate::upstream::HttpClient;

/// How long a user has to authorize after the relay asked.
pub const ATTEMPT_LIFETIME: Duration = Duration::from_secs(600);
/// How long before its expiry a token is refreshed.
const REFRESH_MARGIN: u64 = 60;
/// The vault's "principal" for authorization attempts (their places are state digests).
pub const ATTEMPTS: &str = "relay:oauth-attempt";

/// What a backend's `oauth` settings say (borrowed from its `credentials:`).
pub struct Settings<'a> {
    pub redirect_uri: &'a str,
    pub client_id: Option<&'a str>,
    pub client_secret_env: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub authorization_server: Option<&'a str>,
}

/// Where a backend's users authorize and tokens come from, and the relay's client there. (No
/// `Debug`, here or on the records below: they hold secrets and tokens.)
#[derive(Clone, Serialize, Deserialize)]
pub struct Server {
    authorization_endpoint: String,
    token_endpoint: String,
    /// The backend as the authorization server knows it (RFC 8707 `resource`).
    resource: String,
    client_id: String,
    client_secret: Option<String>,
}

impl Server {
    fn auth(&self) -> ClientAuth<'_> {
        ClientAuth { client_id: &self.client_id, secret: self.client_secret.as_deref() }
    }
}

/// A principal's tokens for a backend, with what refreshing them needs.
#[derive(Clone, Serialize, Deserialize)]
pub struct Grant {
    access_token: String,
    refresh_token: Option<String>,
    /// Unix seconds; `None`: the server did not say.
    expires_at: Option<u64>,
    server: Server,
}

impl Grant {
    fn from_answer(answer: wire::TokenAnswer, server: Server, previous_refresh: Option<String>) -> Self {
        Grant {
            access_token: answer.access_token,
            // A server that does not rotate refresh tokens keeps the old one valid.
            refresh_token: answer.refresh_token.or(previous_refresh),
            expires_at: answer.expires_in.map(|secs| now() + secs),
            server,
        }
    }

    /// The token to send now, unless it expires within the margin.
    pub fn usable(&self) -> Option<&str> {
        let fresh = self.expires_at.is_none_or(|at| now() + REFRESH_MARGIN < at);
        fresh.then_some(self.access_token.as_str())
    }

    /// The access token while it has not expired at all (used when a refresh cannot be made
    /// now).
    pub fn unexpired(&self) -> Option<&str> {
        self.expires_at.is_some_and(|at| now() < at).then_some(self.access_token.as_str())
    }

    /// How long the record is worth keeping: for ever with a refresh token, otherwise until
    /// the access token expires.
    pub fn keep_for(&self) -> Option<Duration> {
        match (&self.refresh_token, self.expires_at) {
            (None, Some(at)) => Some(Duration::from_secs(at.saturating_sub(now()).max(1))),
            _ => None,
        }
    }

    /// Whether the grant was issued for the backend at `url` (its `resource`, as discovery
    /// found it, is that URL's origin): a backend re-pointed elsewhere is not sent it.
    pub fn is_for(&self, url: &str) -> bool {
        same_origin(&self.server.resource, url)
    }

    /// Refreshes the grant (RFC 6749 section 6, with `resource`), at a token endpoint that is
    /// still one the relay would use.
    pub async fn refresh(self, client: &HttpClient) -> Result<Grant, wire::TokenError> {
        let refresh_token = self.refresh_token.ok_or(wire::TokenError::Refused("no refresh token".into()))?;
        secure(&self.server.token_endpoint, "the token endpoint").map_err(wire::TokenError::Refused)?;
        let form =
            [("grant_type", "refresh_token"), ("refresh_token", &refresh_token), ("resource", &self.server.resource)];
        let answer =
            wire::token_request(client, &self.server.token_endpoint, &form, Some(self.server.auth()), "refresh")
                .await?;
        Ok(Grant::from_answer(answer, self.server, Some(refresh_token)))
    }
}

/// An authorization the relay asked a user for, waiting for its callback.
#[derive(Serialize, Deserialize)]
pub struct Attempt {
    pub principal: String,
    pub backend: String,
    verifier: String,
    redirect_uri: String,
    /// Unix seconds.
    expires_at: u64,
    server: Server,
}

impl Attempt {
    /// Whether the user came back too late.
    pub fn expired(&self) -> bool {
        now() >= self.expires_at
    }

    /// Redeems the authorization code (RFC 6749 section 4.1.3, with the PKCE verifier and
    /// `resource`).
    pub async fn redeem(self, client: &HttpClient, code: &str) -> Result<Grant, String> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", &self.verifier),
            ("resource", &self.server.resource),
        ];
        let answer = wire::token_request(client, &self.server.token_endpoint, &form, Some(self.server.auth()), "code")
            .await
            .map_err(String::from)?;
        Ok(Grant::from_answer(answer, self.server, None))
    }
}

/// A new authorization: the URL the user opens, its state (the attempt's key) and the record
/// to keep under it.
pub struct Started {
    pub url: String,
    pub state: String,
    pub attempt: Attempt,
}

/// Discovery and registration results per backend and URL (per instance: an attempt carries
/// its own copy, so any instance can complete it).
#[derive(Default)]
pub struct Servers(std::sync::Mutex<HashMap<String, Server>>);

impl Servers {
    /// Starts an authorization of `backend` (at `url`) for `principal`.
    pub async fn start(
        &self,
        client: &HttpClient,
        backend: &str,
        url: &str,
        settings: &Settings<'_>,
        principal: &str,
    ) -> Result<Started, String> {
        // Not held while discovering: one slow server delays no other backend's users (two
        // first calls may both discover; the second result wins, both work).
        // By name and URL: a backend re-pointed elsewhere is discovered again.
        let key = format!("{backend}\n{url}");
        let known = self.0.lock().expect("servers lock").get(&key).cloned();
        let server = match known {
            Some(server) => server,
            None => {
                let server = discover(client, url, settings).await?;
                self.0.lock().expect("servers lock").insert(key, server.clone());
                server
            }
        };
        let random = SystemRandom::new();
        let token = |bytes: usize| {
            let mut buffer = vec![0u8; bytes];
            random.fill(&mut buffer).map(|()| B64URL.encode(&buffer)).map_err(|_| "no randomness".to_owned())
        };
        let (verifier, state) = (token(32)?, token(32)?);
        let challenge = B64URL.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("response_type", "code");
        query.append_pair("client_id", &server.client_id);
        query.append_pair("redirect_uri", settings.redirect_uri);
        query.append_pair("code_challenge", &challenge);
        query.append_pair("code_challenge_method", "S256");
        query.append_pair("state", &state);
        query.append_pair("resource", &server.resource);
        if let Some(scope) = settings.scope {
            query.append_pair("scope", scope);
        }
        let separator = if server.authorization_endpoint.contains('?') { '&' } else { '?' };
        let url = format!("{}{separator}{}", server.authorization_endpoint, query.finish());
        let attempt = Attempt {
            principal: principal.to_owned(),
            backend: backend.to_owned(),
            verifier,
            redirect_uri: settings.redirect_uri.to_owned(),
            expires_at: now() + ATTEMPT_LIFETIME.as_secs(),
            server,
        };
        Ok(Started { url, state, attempt })
    }
}

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Finds the backend's authorization server and the relay's client there.
async fn discover(client: &HttpClient, url: &str, settings: &Settings<'_>) -> Result<Server, String> {
    let metadata_url = match wire::challenge_metadata(client, url).await {
        Some(named) => named,
        None => well_known(url, "oauth-protected-resource"),
    };
    let resource_metadata = wire::get_json(client, &metadata_url, "the backend's protected resource metadata").await?;
    let named = |key: &str| resource_metadata.as_ref().and_then(|m| m.get(key));
    let issuer = settings
        .authorization_server
        .map(str::to_owned)
        .or_else(|| named("authorization_servers")?.get(0)?.as_str().map(str::to_owned))
        .ok_or("the backend names no authorization server (RFC 9728 metadata), and credentials.authorization_server is not set")?;
    let resource = named("resource").and_then(Value::as_str).unwrap_or(url).to_owned();
    // RFC 9728 section 3.3: the metadata is for this backend, not another resource (whose
    // tokens the relay would then ask for and send here).
    if !same_origin(&resource, url) {
        return Err(format!("the backend's metadata names another resource ({})", crate::mcp::clip(&resource)));
    }
    secure(&issuer, "the authorization server")?;
    let metadata = server_metadata(client, &issuer).await?;
    let field = |key: &str| metadata.get(key).and_then(Value::as_str).map(str::to_owned);
    let s256 = metadata
        .get("code_challenge_methods_supported")
        .and_then(Value::as_array)
        .is_some_and(|methods| methods.iter().any(|m| m == "S256"));
    if !s256 {
        return Err(format!(
            "authorization server {issuer} does not offer PKCE S256 (code_challenge_methods_supported)"
        ));
    }
    let authorization_endpoint =
        field("authorization_endpoint").ok_or_else(|| format!("{issuer} names no authorization_endpoint"))?;
    let token_endpoint = field("token_endpoint").ok_or_else(|| format!("{issuer} names no token_endpoint"))?;
    // Codes, tokens and users' browsers go there: never in the clear across a network.
    secure(&authorization_endpoint, "its authorization_endpoint")?;
    secure(&token_endpoint, "its token_endpoint")?;
    let (client_id, client_secret) = match settings.client_id {
        Some(id) => (id.to_owned(), settings.client_secret_env.and_then(|name| std::env::var(name).ok())),
        None => {
            let endpoint = field("registration_endpoint").ok_or_else(|| {
                format!("{issuer} offers no client registration (RFC 7591): set credentials.client_id")
            })?;
            secure(&endpoint, "its registration_endpoint")?;
            register(client, &endpoint, settings.redirect_uri).await?
        }
    };
    Ok(Server { authorization_endpoint, token_endpoint, resource, client_id, client_secret })
}

/// The authorization server's metadata: RFC 8414 first, then OpenID discovery (both with the
/// well-known segment inserted before the issuer's path, then OpenID's appended form).
async fn server_metadata(client: &HttpClient, issuer: &str) -> Result<Value, String> {
    let issuer = issuer.trim_end_matches('/');
    let candidates = [
        well_known(issuer, "oauth-authorization-server"),
        well_known(issuer, "openid-configuration"),
        format!("{issuer}/.well-known/openid-configuration"),
    ];
    for candidate in candidates {
        if let Some(metadata) = wire::get_json(client, &candidate, "the authorization server's metadata").await? {
            return Ok(metadata);
        }
    }
    Err(format!("authorization server {issuer} publishes no metadata (RFC 8414 or OpenID discovery)"))
}

/// Registers the relay as a public client (RFC 7591); its id and secret, if one was issued.
async fn register(client: &HttpClient, endpoint: &str, redirect_uri: &str) -> Result<(String, Option<String>), String> {
    let document = serde_json::json!({
        "client_name": "relay (MCP gateway)",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    let registered = wire::post_json(client, endpoint, &document, "client registration").await?;
    let id = registered.get("client_id").and_then(Value::as_str).ok_or("client registration issued no client_id")?;
    let secret = registered.get("client_secret").and_then(Value::as_str).map(str::to_owned);
    Ok((id.to_owned(), secret))
}

/// Refuses a URL that is neither `https://` nor `http://` on loopback.
fn secure(url: &str, what: &str) -> Result<(), String> {
    if crate::oauth_url::secure_or_loopback(url) {
        return Ok(());
    }
    Err(format!("{what} ({}) is not https:// (http:// only on loopback)", crate::mcp::clip(url)))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_endpoints_are_named() {
        assert!(secure("https://as.example/token", "t").is_ok() && secure("http://127.0.0.1:9/t", "t").is_ok());
        assert!(secure("http://as.example/token", "t").unwrap_err().contains("not https://"));
    }

    #[test]
    fn a_grant_is_used_until_shortly_before_it_expires_and_kept_while_it_can_be_refreshed() {
        let server = Server {
            authorization_endpoint: "a".into(),
            token_endpoint: "t".into(),
            resource: "r".into(),
            client_id: "c".into(),
            client_secret: None,
        };
        let grant = |expires_in, refresh: Option<&str>| {
            let answer = wire::TokenAnswer {
                access_token: "at".into(),
                expires_in,
                refresh_token: refresh.map(str::to_owned),
                issued_token_type: None,
            };
            Grant::from_answer(answer, server.clone(), None)
        };
        assert_eq!(grant(Some(3600), None).usable(), Some("at"));
        assert_eq!(grant(Some(30), Some("rt")).usable(), None, "within the margin: refresh first");
        assert_eq!(grant(None, None).usable(), Some("at"));
        assert!(grant(Some(3600), Some("rt")).keep_for().is_none());
        assert!(grant(Some(3600), None).keep_for().is_some_and(|d| d <= Duration::from_secs(3600)));
    }
}
