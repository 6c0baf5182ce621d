//! The credential step of a call to a backend whose `credentials:` mode is per user: which
//! header the call carries for the calling principal, from what that principal stored
//! ([`Vault`]). Asked by the router for each such call; managed by the `relay_auth_*` tools.

mod vault;

use std::sync::Arc;

pub use vault::{KEYS_ENV, Vault, VaultError};

use crate::config::CredentialMode;

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
}

/// The credential step, shared by the router (calls) and the relay tools (store, status, revoke).
pub struct Credentials {
    /// Sealed per-principal secrets.
    pub vault: Vault,
}

impl Credentials {
    /// The step on `vault`.
    pub fn new(vault: Vault) -> Arc<Self> {
        Arc::new(Self { vault })
    }

    /// The header a call to `backend` (in `mode`) carries for `principal`; `None` for a
    /// static backend.
    pub async fn header_for(
        &self,
        backend: &str,
        mode: &CredentialMode,
        principal: &str,
    ) -> Result<Option<(http::HeaderName, http::HeaderValue)>, CredentialError> {
        if !mode.is_per_user() {
            return Ok(None);
        }
        let secret = self
            .vault
            .get(principal, backend)
            .await
            .map_err(|source| CredentialError::Vault { backend: backend.to_owned(), source })?
            .ok_or_else(|| CredentialError::Missing { backend: backend.to_owned() })?;
        mode.header_for(&secret).map(Some).ok_or_else(|| CredentialError::NotAHeader { backend: backend.to_owned() })
    }
}
