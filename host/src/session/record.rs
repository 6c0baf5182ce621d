//! What a Streamable HTTP session established, as another instance needs it to go on serving
//! the session: the record [`super::SharedSessions`] keeps in the shared `kv`.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Session, SessionState};

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

impl Session {
    /// What this session established, for [`super::SharedSessions`].
    pub fn record(&self) -> SessionRecord {
        let state = self.state.lock().expect("session lock");
        let mut subscriptions: Vec<String> = state.subscriptions.iter().cloned().collect();
        subscriptions.sort();
        SessionRecord {
            principal: self.principal.id.clone(),
            credential: self.credential.as_ref().map(|digest| crate::digest::hex(digest)),
            expires_at_ms: self
                .expires_at
                .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            protocol_version: state.protocol_version.clone(),
            client_name: state.client_name.clone(),
            log_level: self.client_requests.log_level().get(),
            subscriptions,
            capabilities: self.client_requests.declared(),
        }
    }

    /// What another instance changed in this session's record since this one last saw it: its
    /// log level (held with this instance's router too) and what the client declared
    /// (subscriptions stay as this instance made them).
    pub(super) async fn take_over(&self, record: &SessionRecord) {
        let previous = self.client_requests.log_level().replace(record.log_level);
        if previous != record.log_level {
            self.router.hold_log_level(previous, record.log_level).await;
        }
        let mut state = self.state.lock().expect("session lock");
        state.protocol_version.clone_from(&record.protocol_version);
        state.client_name.clone_from(&record.client_name);
        drop(state);
        self.client_requests.declare(record.capabilities.clone(), false);
    }

    /// Takes up, on this instance, what a session established elsewhere and the backends must
    /// know: its resource subscriptions and its log level. A subscription that cannot be made
    /// here is the session's no more (it hears no updates of it, and its end or unsubscribe
    /// does not release a count it never added, which would end another session's).
    pub async fn resume_upstream(&self) {
        let subscriptions = self.state.lock().expect("session lock").subscriptions.clone();
        for uri in subscriptions {
            let request = crate::mcp::Addressed::of_resource(uri);
            if let Err(e) = self.router.subscribe_resource(&request, &self.principal).await {
                tracing::warn!(session = %self.tag(), error = %e, "a moved session's resource subscription could not be made again; it ends");
                self.state.lock().expect("session lock").subscriptions.remove(&request.target);
            }
        }
        let level = self.client_requests.log_level().get();
        if level.is_some() {
            self.router.hold_log_level(None, level).await;
        }
    }
}
