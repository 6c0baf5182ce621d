//! The credential step of a call to a backend whose `credentials:` mode is per user: which
//! header the call carries for the calling principal, from what that principal stored
//! ([`Vault`]), from an exchange, an authorization, or a `credentials` plugin. Asked by the
//! router for each such call; managed by the `relay_auth_*` tools; the `oauth` mode's
//! authorizations are completed by the relay's `/oauth/callback`.

mod error;
mod exchange;
mod oauth;
mod vault;
mod wire;

use std::sync::Arc;
use std::time::Duration;

pub use error::{CallbackError, CredentialError};
pub use vault::{KEYS_ENV, Vault, VaultError};

use crate::access::{Bearer, Principal};
use crate::config::{Backend, CredentialMode};
use crate::plugins::{CredentialAsk, IssueError, Plugins};

/// How long before its expiry an exchanged token (or a plugin's secret) is obtained again.
const REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// How long an exchanged token without `expires_in` is kept.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// An authorization the callback completed.
#[derive(Debug)]
pub struct Authorized {
    /// Who authorized.
    pub principal: String,
    /// Which backend.
    pub backend: String,
    /// The `elicitationId` the caller's URL elicitation (`-32042`) named.
    pub elicitation_id: String,
}

/// What the authorization server's redirect to `/oauth/callback` carries.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Callback {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
}

/// The credential step, shared by the router (calls) and the relay tools (store, status, revoke).
pub struct Credentials {
    /// Sealed per-principal secrets, and exchanged tokens until they expire.
    pub vault: Vault,
    /// To token endpoints.
    client: crate::upstream::HttpClient,
    /// `oauth` backends' authorization servers and the relay's clients there.
    servers: oauth::Servers,
    /// The `credentials` plugins of `plugin` backends (`None`: the relay runs without plugins).
    plugins: Option<Arc<Plugins>>,
    /// Whose grant is being refreshed here (one refresh at a time per principal and backend).
    refreshes: Turns,
}

impl Credentials {
    /// The step on `vault`, asking `plugins`' `credentials` plugins for `plugin` backends.
    pub fn new(vault: Vault, plugins: Option<Arc<Plugins>>) -> Arc<Self> {
        let client = crate::upstream::build_http_client(Duration::from_secs(5)).expect("an HTTP client builds");
        Arc::new(Self { vault, client, servers: oauth::Servers::default(), plugins, refreshes: Turns::default() })
    }

    /// The header a call to `backend` carries for `principal` (who authenticated with
    /// `bearer`); `None` for a static backend.
    pub async fn header_for(
        &self,
        backend: &Backend,
        caller: &Principal,
        bearer: Option<&Bearer>,
    ) -> Result<Option<(http::HeaderName, http::HeaderValue)>, CredentialError> {
        if matches!(backend.credentials, CredentialMode::Static) {
            return Ok(None);
        }
        // Boxed: every call's future would otherwise be as large as this one (4 KB, the token
        // exchange and the plugin's call), most of them to static backends.
        Box::pin(self.per_user_header(backend, caller, bearer)).await
    }

    /// [`Credentials::header_for`] a backend whose callers each have their own credential.
    async fn per_user_header(
        &self,
        backend: &Backend,
        caller: &Principal,
        bearer: Option<&Bearer>,
    ) -> Result<Option<(http::HeaderName, http::HeaderValue)>, CredentialError> {
        let (mode, url) = (&backend.credentials, backend.transport.url().unwrap_or_default());
        let backend = backend.name.as_str();
        let principal = caller.id.as_str();
        let slot = mode.slot(backend);
        let vault_error = |source| CredentialError::Vault { backend: backend.to_owned(), source };
        let secret = match mode {
            CredentialMode::Static => return Ok(None),
            CredentialMode::PerUserSecret { .. } => self
                .vault
                .get(principal, backend)
                .await
                .map_err(vault_error)?
                .ok_or_else(|| CredentialError::Missing { backend: backend.to_owned() })?,
            CredentialMode::TokenExchange {
                token_endpoint,
                audience,
                resource,
                scope,
                client_id,
                client_secret_env,
            } => {
                // Cached per principal (sealed, shared by instances) until shortly before it
                // expires, for the token it was exchanged for and the exchange's settings: a
                // narrower token of the same principal, or a changed audience, is exchanged anew.
                let bearer = bearer.ok_or_else(|| CredentialError::NoBearer { backend: backend.to_owned() })?;
                let exchange = exchange::Exchange {
                    token_endpoint,
                    audience: audience.as_deref(),
                    resource: resource.as_deref(),
                    scope: scope.as_deref(),
                    client_id: client_id.as_deref(),
                    client_secret_env: client_secret_env.as_deref(),
                };
                // The backend's URL too: a name re-pointed elsewhere is not sent what was
                // exchanged for the old address.
                let inputs = kept_for(&[
                    &bearer.0,
                    url,
                    token_endpoint,
                    audience.as_deref().unwrap_or(""),
                    resource.as_deref().unwrap_or(""),
                    scope.as_deref().unwrap_or(""),
                    client_id.as_deref().unwrap_or(""),
                ]);
                if let Some(token) = self.kept(principal, &slot, &inputs).await.map_err(vault_error)? {
                    token
                } else {
                    let issued = exchange
                        .run(&self.client, &bearer.0)
                        .await
                        .map_err(|reason| CredentialError::Exchange { backend: backend.to_owned(), reason })?;
                    let expires_in = issued.expires_in.unwrap_or(DEFAULT_LIFETIME);
                    self.keep(principal, (&slot, &inputs), &issued.access_token, expires_in)
                        .await
                        .map_err(vault_error)?;
                    tracing::info!(principal, backend, "token exchanged");
                    issued.access_token
                }
            }
            CredentialMode::Oauth {
                redirect_uri, client_id, client_secret_env, scope, authorization_server, ..
            } => {
                let settings = oauth::Settings {
                    redirect_uri,
                    client_id: client_id.as_deref(),
                    client_secret_env: client_secret_env.as_deref(),
                    scope: scope.as_deref(),
                    authorization_server: authorization_server.as_deref(),
                };
                self.oauth_token(backend, url, &settings, principal).await?
            }
            CredentialMode::Plugin { plugin, .. } => {
                // What the plugin was given: another token of the caller's, or other roles (the
                // operator changed them), may get another secret.
                let mut roles = caller.roles.clone();
                roles.sort_unstable();
                let inputs = kept_for(&[bearer.map_or("", |b| &b.0), url, &roles.join("\n")]);
                match self.kept(principal, &slot, &inputs).await.map_err(vault_error)? {
                    Some(secret) => secret,
                    None => self.issued_by(plugin, (backend, &slot, &inputs), url, caller, bearer).await?,
                }
            }
        };
        mode.header_for(&secret).map(Some).ok_or_else(|| CredentialError::NotAHeader { backend: backend.to_owned() })
    }

    /// What the `credentials` plugin `plugin` issues for `caller`'s call to `backend`, kept
    /// (sealed, shared by instances, at the mode's `slot`) until shortly before the expiry it
    /// gives.
    async fn issued_by(
        &self,
        plugin: &str,
        (backend, slot, inputs): (&str, &str, &str),
        url: &str,
        caller: &Principal,
        bearer: Option<&Bearer>,
    ) -> Result<String, CredentialError> {
        let failed = || CredentialError::Plugin { backend: backend.to_owned(), plugin: plugin.to_owned() };
        let Some(plugins) = &self.plugins else { return Err(failed()) };
        let ask = CredentialAsk { principal: caller, backend, resource: url, subject_token: bearer.map(|b| &*b.0) };
        let issued = match plugins.issue_credential(plugin, ask).await {
            Ok(issued) => issued,
            Err(IssueError::Refused(reason)) => {
                tracing::info!(principal = %caller.id, backend, plugin, reason, "credential refused by its plugin");
                return Err(CredentialError::Refused { backend: backend.to_owned(), reason });
            }
            Err(error) => {
                tracing::warn!(principal = %caller.id, backend, plugin, error = %error, "credential plugin failed");
                return Err(failed());
            }
        };
        if let Some(expires_in) = issued.expires_in {
            self.keep(&caller.id, (slot, inputs), &issued.secret, expires_in)
                .await
                .map_err(|source| CredentialError::Vault { backend: backend.to_owned(), source })?;
        }
        tracing::info!(principal = %caller.id, backend, plugin, "credential issued by its plugin");
        Ok(issued.secret)
    }

    /// Keeps a token the relay obtained for `principal` from `inputs` ([`kept_for`]; sealed at
    /// `slot`) until [`REFRESH_MARGIN`] before it expires `expires_in` from now; not at all
    /// when that is sooner.
    async fn keep(
        &self,
        principal: &str,
        (slot, inputs): (&str, &str),
        token: &str,
        expires_in: Duration,
    ) -> Result<(), VaultError> {
        let lifetime = expires_in.saturating_sub(REFRESH_MARGIN);
        if lifetime.is_zero() {
            return Ok(());
        }
        let record = serde_json::json!({"for": inputs, "token": token}).to_string();
        self.vault.put_for(principal, slot, &record, lifetime).await
    }

    /// The token [`Self::keep`] kept for `principal` at `slot`, if it was obtained from the
    /// same `inputs`.
    async fn kept(&self, principal: &str, slot: &str, inputs: &str) -> Result<Option<String>, VaultError> {
        let Some(record) = self.vault.get(principal, slot).await? else { return Ok(None) };
        let record: serde_json::Value = serde_json::from_str(&record).unwrap_or_default();
        let same = record["for"].as_str() == Some(inputs);
        Ok(record["token"].as_str().filter(|_| same).map(str::to_owned))
    }

    /// `principal`'s access token for an `oauth` backend: the stored one while it is fresh,
    /// refreshed when it is about to expire; otherwise a new authorization is started and the
    /// call is answered with its URL.
    async fn oauth_token(
        &self,
        backend: &str,
        url: &str,
        settings: &oauth::Settings<'_>,
        principal: &str,
    ) -> Result<String, CredentialError> {
        if let Some(token) = self.stored_oauth_token(backend, url, principal).await? {
            return Ok(token);
        }
        let vault_error = |source| CredentialError::Vault { backend: backend.to_owned(), source };
        let started = self
            .servers
            .start(&self.client, backend, url, settings, principal)
            .await
            .map_err(|reason| CredentialError::Discovery { backend: backend.to_owned(), reason })?;
        let record = serde_json::to_string(&started.attempt).expect("an attempt serialises");
        let place = crate::digest::sha256_hex(started.state.as_bytes());
        self.vault.put_for(oauth::ATTEMPTS, &place, &record, oauth::ATTEMPT_LIFETIME).await.map_err(vault_error)?;
        tracing::info!(principal, backend, "authorization asked of the user");
        Err(CredentialError::AuthorizationRequired {
            backend: backend.to_owned(),
            url: started.url,
            id: elicitation_id(&place),
        })
    }

    /// `principal`'s stored access token for the `oauth` backend at `url`, refreshed when it is
    /// about to expire; `None` when there is none (or it was refused a refresh, and forgotten).
    /// One refresh at a time per principal and backend on this instance (a server that rotates
    /// refresh tokens refuses the second use of one): the others wait and take what it stored.
    /// A token endpoint that cannot be used now fails the call and keeps the grant; a refresh
    /// stores its result only over the grant it refreshed (not over a revoke, or another
    /// refresh's result), and forgets only that grant.
    async fn stored_oauth_token(
        &self,
        backend: &str,
        url: &str,
        principal: &str,
    ) -> Result<Option<String>, CredentialError> {
        let vault_error = |source| CredentialError::Vault { backend: backend.to_owned(), source };
        let slot = CredentialMode::oauth_slot(backend);
        let read = async || -> Result<Option<(String, oauth::Grant)>, CredentialError> {
            let Some(text) = self.vault.get(principal, &slot).await.map_err(vault_error)? else { return Ok(None) };
            let grant: oauth::Grant = serde_json::from_str(&text)
                .map_err(|_| CredentialError::Vault { backend: backend.to_owned(), source: VaultError::Unreadable })?;
            // A grant for where the backend was before it was re-pointed is not sent here.
            Ok(grant.is_for(url).then_some((text, grant)))
        };
        let Some((_, grant)) = read().await? else {
            // A grant kept where per-user secrets are, before grants had their own place: never
            // sent as a secret should the mode change, and gone once its user calls here.
            let legacy = self.vault.get(principal, backend).await.map_err(vault_error)?;
            if legacy.is_some_and(|text| serde_json::from_str::<oauth::Grant>(&text).is_ok()) {
                self.vault.delete(principal, backend).await.map_err(vault_error)?;
            }
            return Ok(None);
        };
        if let Some(token) = grant.usable() {
            return Ok(Some(token.to_owned()));
        }
        let turn = self.refreshes.turn(principal, backend);
        let _turn = turn.lock().await;
        // Read again: a refresh that held the turn may have stored a fresh grant.
        let Some((text, grant)) = read().await? else { return Ok(None) };
        if let Some(token) = grant.usable() {
            return Ok(Some(token.to_owned()));
        }
        let outcome = grant.clone().refresh(&self.client).await;
        let unchanged = self.vault.get(principal, &slot).await.map_err(vault_error)?.is_some_and(|now| now == text);
        match outcome {
            // Revoked, or replaced by another instance's refresh, while this one ran (its
            // refusal then only says that refresh spent the token): what is stored now stands.
            Ok(_) | Err(wire::TokenError::Refused(_)) if !unchanged => {
                Ok(read().await?.and_then(|(_, grant)| grant.usable().map(str::to_owned)))
            }
            Ok(renewed) => {
                self.store_grant(principal, &slot, &renewed).await.map_err(vault_error)?;
                tracing::info!(principal, backend, "token refreshed");
                // A token issued for less than the refresh margin is still sent while it lasts.
                Ok(renewed.usable().or_else(|| renewed.unexpired()).map(str::to_owned))
            }
            Err(wire::TokenError::Refused(reason)) => {
                // Spent: the user authorizes again.
                tracing::info!(principal, backend, reason, "token refresh refused; authorization needed");
                self.vault.delete(principal, &slot).await.map_err(vault_error)?;
                Ok(None)
            }
            // The access token still works for a while: used while the endpoint is away.
            Err(wire::TokenError::Unavailable(reason)) => match grant.unexpired() {
                Some(token) => Ok(Some(token.to_owned())),
                None => {
                    tracing::warn!(principal, backend, reason, "token could not be refreshed now; the grant is kept");
                    Err(CredentialError::Refresh { backend: backend.to_owned(), reason })
                }
            },
        }
    }

    async fn store_grant(&self, principal: &str, slot: &str, grant: &oauth::Grant) -> Result<(), VaultError> {
        let record = serde_json::to_string(grant).expect("a grant serialises");
        match grant.keep_for() {
            Some(lifetime) => self.vault.put_for(principal, slot, &record, lifetime).await,
            None => self.vault.put(principal, slot, &record).await,
        }
    }

    /// Who is being authorized for which backend by the attempt `callback.state` names (read,
    /// not taken): what the callback's page asks the user to confirm before anything is stored.
    pub async fn pending(&self, callback: &Callback) -> Result<(String, String), CallbackError> {
        let state = callback.state.as_deref().ok_or(CallbackError::Unknown)?;
        let place = crate::digest::sha256_hex(state.as_bytes());
        let record = self.vault.get(oauth::ATTEMPTS, &place).await?.ok_or(CallbackError::Unknown)?;
        let attempt: oauth::Attempt = serde_json::from_str(&record).map_err(|_| VaultError::Unreadable)?;
        if attempt.expired() {
            return Err(CallbackError::Expired);
        }
        Ok((attempt.principal, attempt.backend))
    }

    /// Completes an authorization at the callback: the attempt named by `state` is taken (once:
    /// a replayed state finds nothing), its code redeemed, and the grant stored for the
    /// principal who started it.
    pub async fn complete(&self, callback: &Callback) -> Result<Authorized, CallbackError> {
        let state = callback.state.as_deref().ok_or(CallbackError::Unknown)?;
        let place = crate::digest::sha256_hex(state.as_bytes());
        // A state the relay never issued writes nothing (anyone may call this route).
        let record = self.vault.get(oauth::ATTEMPTS, &place).await?.ok_or(CallbackError::Unknown)?;
        // One use, on every instance: only the first to count the state goes on.
        let marker = format!("relay.oauth-used:{place}");
        let lifetime = u64::try_from(oauth::ATTEMPT_LIFETIME.as_millis()).unwrap_or(u64::MAX);
        if self.vault.kv().increment(&marker, 1, Some(lifetime), None).await.map_err(VaultError::from)? != 1 {
            return Err(CallbackError::Unknown);
        }
        self.vault.delete(oauth::ATTEMPTS, &place).await?;
        let attempt: oauth::Attempt = serde_json::from_str(&record).map_err(|_| VaultError::Unreadable)?;
        if attempt.expired() {
            return Err(CallbackError::Expired);
        }
        if let Some(error) = &callback.error {
            tracing::info!(principal = %attempt.principal, backend = %attempt.backend, error = %crate::mcp::clip(error), "authorization refused");
            return Err(CallbackError::Denied(crate::mcp::clip(error).into_owned()));
        }
        let code = callback.code.as_deref().ok_or_else(|| CallbackError::Redeem("no code came back".into()))?;
        let (principal, backend) = (attempt.principal.clone(), attempt.backend.clone());
        let grant = attempt.redeem(&self.client, code).await.map_err(CallbackError::Redeem)?;
        self.store_grant(&principal, &CredentialMode::oauth_slot(&backend), &grant).await?;
        // The first principal to authorize a backend is the one a `first_user` catalog is
        // listed as (kept until that principal's grant is gone).
        let catalog = catalog_key(&backend);
        if self.vault.kv().compare_and_swap(&catalog, None, &principal, None, None).await.unwrap_or(false) {
            tracing::info!(principal, backend, "catalog user of the backend");
        }
        tracing::info!(principal, backend, "authorized");
        Ok(Authorized { principal, backend, elicitation_id: elicitation_id(&place) })
    }
}

/// What a kept token was obtained from (the caller's token, the settings it was obtained
/// with), as a digest: the token is used again only for the same.
fn kept_for(inputs: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for input in inputs {
        digest.update((input.len() as u64).to_be_bytes());
        digest.update(input.as_bytes());
    }
    crate::digest::hex(&digest.finalize())
}

/// The `elicitationId` of the authorization attempt stored at `place`: what the client's URL
/// elicitation names, and what `notifications/elicitation/complete` names when it is done.
fn elicitation_id(place: &str) -> String {
    place[..16].to_owned()
}

/// One async lock per key while anyone holds or waits for it: what makes concurrent refreshes of
/// one grant take turns.
#[derive(Default)]
struct Turns(std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>);

impl Turns {
    /// The lock of `principal`'s grant for `backend` (the same one for everyone asking now).
    fn turn(&self, principal: &str, backend: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.0.lock().expect("turns lock");
        turns.retain(|_, turn| turn.strong_count() > 0);
        let key = format!("{principal}\n{backend}");
        if let Some(turn) = turns.get(&key).and_then(std::sync::Weak::upgrade) {
            return turn;
        }
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        turns.insert(key, Arc::downgrade(&turn));
        turn
    }
}

/// The kv key naming the principal a backend's `first_user` catalog is listed as.
fn catalog_key(backend: &str) -> String {
    format!("relay.oauth-catalog:{backend}")
}

impl crate::upstream::CatalogCredential for Credentials {
    fn catalog_header<'a>(
        &'a self,
        backend: &'a Backend,
    ) -> futures::future::BoxFuture<'a, Result<Option<crate::upstream::Credential>, String>> {
        Box::pin(async move {
            let key = catalog_key(&backend.name);
            let Some(principal) = self.vault.kv().get(&key).await.map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            let url = backend.transport.url().unwrap_or_default();
            match self.stored_oauth_token(&backend.name, url, &principal).await.map_err(|e| e.to_string())? {
                Some(token) => Ok(backend.credentials.header_for(&token)),
                None => {
                    // That user's grant is gone: the next user to authorize lists it.
                    let _ = self.vault.kv().delete(&key).await;
                    Ok(None)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[tokio::test]
    async fn a_late_callback_stores_nothing_and_cannot_be_replayed() {
        let vault = Vault::with_keys(Arc::default(), KEYS).unwrap();
        let credentials = Credentials::new(vault, None);
        let attempt = serde_json::json!({
            "principal": "alice", "backend": "docs", "verifier": "v", "expires_at": 1,
            "redirect_uri": "http://127.0.0.1:9/oauth/callback",
            "server": {"authorization_endpoint": "http://127.0.0.1:9/authorize", "token_endpoint": "http://127.0.0.1:9/token",
                       "resource": "http://127.0.0.1:9/mcp", "client_id": "relay", "client_secret": null},
        });
        let place = crate::digest::sha256_hex(b"the-state");
        credentials
            .vault
            .put_for(oauth::ATTEMPTS, &place, &attempt.to_string(), oauth::ATTEMPT_LIFETIME)
            .await
            .unwrap();
        let callback = Callback { state: Some("the-state".into()), code: Some("c".into()), error: None };
        assert!(matches!(credentials.complete(&callback).await, Err(CallbackError::Expired)));
        assert_eq!(credentials.vault.get("alice", "docs").await.unwrap(), None, "no half-stored grant");
        assert!(matches!(credentials.complete(&callback).await, Err(CallbackError::Unknown)), "one use");
        let forged = Callback { state: Some("never-issued".into()), ..callback };
        assert!(matches!(credentials.complete(&forged).await, Err(CallbackError::Unknown)));
    }
}
