//! What a Streamable HTTP session established, as another instance needs it to go on serving
//! the session: the record [`super::SharedSessions`] keeps in the shared `kv`.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::SessionState;

/// What a session established, as another instance needs it to go on serving the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Who the session is (the principal id); the credential must still authenticate as it.
    pub principal: String,
    /// Hex SHA-256 digest of the credential the session was opened with (`None`: auth off).
    pub credential: Option<String>,
    /// When that credential expires (ms since the epoch).
    pub expires_at_ms: Option<u64>,
    /// Negotiated in `initialize`.
    pub protocol_version: Option<String>,
    /// `clientInfo.name`, for logs.
    pub client_name: Option<String>,
    /// From `logging/setLevel`.
    pub log_level: Option<u8>,
    /// Client-facing URIs from `resources/subscribe`.
    pub subscriptions: Vec<String>,
    /// What the client declared it can answer (`initialize`'s `capabilities`).
    pub capabilities: Value,
}

impl SessionRecord {
    /// The credential digest as the session keeps it.
    pub fn credential_digest(&self) -> Option<[u8; 32]> {
        crate::digest::parse_hex32(self.credential.as_deref()?)
    }

    /// When the credential expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }

    pub(super) fn state(&self) -> SessionState {
        SessionState {
            protocol_version: self.protocol_version.clone(),
            client_name: self.client_name.clone(),
            subscriptions: self.subscriptions.iter().cloned().collect::<HashSet<_>>(),
        }
    }
}
