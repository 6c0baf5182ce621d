//! The credential step of a call to a backend whose `credentials:` mode is per user: which
//! header the call carries for the calling principal, from what that principal stored
//! ([`Vault`]). Asked by the router for each such call; managed by the `relay_auth_*` tools.

mod exchange;
mod vault;

use std::sync::Arc;
use std::time::Duration;

pub use vault::{KEYS_ENV, Vault, VaultError};

use crate::access::Bearer;
use crate::config::CredentialMode;

/// How long before its expiry an exchanged token is exchanged again.
const REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// How long an exchanged token without `expires_in` is kept.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// Why a call could not be given its caller's credential.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The principal has stored nothing for this backend.
    #[error(
        "backend {backend} calls its tools with your own credential, and you have not stored one: call relay_auth_set_secret with {{\"backend\": \"{backend}\", \"secret\": \"...\"}} first"
    )]
    Missing { backend: String },
    /// The store failed or the record does not open.
    #[error("backend {backend}: {source}")]
    Vault { backend: String, source: VaultError },
    /// The stored secret cannot be a header value.
    #[error("backend {backend}: your stored credential cannot be sent in a header (store it again)")]
    NotAHeader { backend: String },
    /// A token exchange was needed, and the caller presented no bearer token to exchange.
    #[error(
        "backend {backend} is called with a token exchanged for yours, and you authenticated without a bearer token"
    )]
    NoBearer { backend: String },
    /// The exchange failed.
    #[error("backend {backend}: token exchange failed: {reason}")]
    Exchange { backend: String, reason: String },
}

/// The credential step, shared by the router (calls) and the relay tools (store, status, revoke).
pub struct Credentials {
    /// Sealed per-principal secrets, and exchanged tokens until they expire.
    pub vault: Vault,
    /// To token endpoints.
    client: crate::upstream::HttpClient,
}

impl Credentials {
    /// The step on `vault`.
    pub fn new(vault: Vault) -> Arc<Self> {
        let client = crate::upstream::build_http_client(Duration::from_secs(5)).expect("an HTTP client builds");
        Arc::new(Self { vault, client })
    }

    /// The header a call to `backend` (in `mode`) carries for `principal` (who authenticated
    /// with `bearer`); `None` for a static backend.
    pub async fn header_for(
        &self,
        backend: &str,
        mode: &CredentialMode,
        principal: &str,
        bearer: Option<&Bearer>,
    ) -> Result<Option<(http::HeaderName, http::HeaderValue)>, CredentialError> {
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
                // expires.
                if let Some(token) = self.vault.get(principal, backend).await.map_err(vault_error)? {
                    token
                } else {
                    let bearer = bearer.ok_or_else(|| CredentialError::NoBearer { backend: backend.to_owned() })?;
                    let exchange = exchange::Exchange {
                        token_endpoint,
                        audience: audience.as_deref(),
                        resource: resource.as_deref(),
                        scope: scope.as_deref(),
                        client_id: client_id.as_deref(),
                        client_secret_env: client_secret_env.as_deref(),
                    };
                    let issued = exchange
                        .run(&self.client, &bearer.0)
                        .await
                        .map_err(|reason| CredentialError::Exchange { backend: backend.to_owned(), reason })?;
                    let lifetime = issued.expires_in.unwrap_or(DEFAULT_LIFETIME).saturating_sub(REFRESH_MARGIN);
                    if !lifetime.is_zero() {
                        self.vault
                            .put_for(principal, backend, &issued.access_token, lifetime)
                            .await
                            .map_err(vault_error)?;
                    }
                    tracing::info!(principal, backend, "token exchanged");
                    issued.access_token
                }
            }
        };
        mode.header_for(&secret).map(Some).ok_or_else(|| CredentialError::NotAHeader { backend: backend.to_owned() })
    }
}
