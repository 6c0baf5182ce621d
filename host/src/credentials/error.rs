//! Why a call got no credential, and why an authorization's callback stored nothing: the
//! sentences a caller (or the callback's page) reads.

use super::VaultError;

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
    /// The principal has not authorized the relay at the backend's authorization server yet
    /// (or no longer has a usable grant): `url` is where the user does so.
    #[error(
        "backend {backend} is called as you, with your own authorization: open {url} in a browser to authorize, then call again"
    )]
    AuthorizationRequired { backend: String, url: String, id: String },
    /// The principal's grant needs a refresh, and the token endpoint cannot be used now (the
    /// grant is kept: a later call tries again).
    #[error("backend {backend}: your authorization could not be renewed now ({reason}); try again shortly")]
    Refresh { backend: String, reason: String },
    /// The backend's authorization server cannot be used.
    #[error("backend {backend}: cannot ask for your authorization: {reason}")]
    Discovery { backend: String, reason: String },
    /// The backend's `credentials` plugin refused the caller, saying why.
    #[error("backend {backend}: {reason}")]
    Refused { backend: String, reason: String },
    /// The backend's `credentials` plugin failed (the reason is in the relay's log: it may
    /// name internals the client has no business seeing).
    #[error("backend {backend}: the credential plugin {plugin} failed; the relay's log says why")]
    Plugin { backend: String, plugin: String },
}

/// Why an authorization's callback did not store a grant (its page says so).
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("this authorization link is unknown or was already used; call the tool again for a new one")]
    Unknown,
    #[error("this authorization link has expired; call the tool again for a new one")]
    Expired,
    #[error("the authorization was refused ({0}); nothing was stored")]
    Denied(String),
    #[error("the authorization server did not accept the authorization: {0}")]
    Redeem(String),
    #[error("the credential store failed: {0}")]
    Vault(#[from] VaultError),
}
