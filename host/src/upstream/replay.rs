//! What a backend's MCP session holds for the relay beyond its handshake: the resource
//! subscriptions the relay made and the log level the relay's sessions hold. A new connection
//! is a new session on the backend, which knows none of it; the supervisor makes it again after
//! each handshake ([`SessionReplay::replay`]), so a restart, a dropped connection or
//! `relay_reconnect_server` does not silently end every client's `resources/updated` or reset
//! the level, and a backend added while the relay runs starts at the level held.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::connection::Connection;
use crate::mcp::Payload;

/// How long each replayed request may take: a backend that does not answer one must not fail
/// the handshake it is part of (and so every reconnect after it).
const REPLAY_DEADLINE: Duration = Duration::from_secs(2);

/// The log level the relay's sessions hold (the router's to set), one for every upstream.
pub type HeldLevel = Arc<Mutex<Option<&'static str>>>;

/// The session state of one upstream: its subscriptions as the requests that made them
/// succeeded, and the level every upstream is to be at.
#[derive(Debug, Default)]
pub struct SessionReplay {
    /// The URIs subscribed to (the backend's own), in the order replayed.
    subscriptions: Mutex<BTreeSet<String>>,
    level: HeldLevel,
}

impl SessionReplay {
    /// Nothing noted yet; the level is `level`, shared by every upstream.
    pub fn new(level: HeldLevel) -> Self {
        Self { subscriptions: Mutex::default(), level }
    }

    /// Notes what a request of `method` with `params`, which the backend accepted, set.
    /// Any other method is passed over by its length and first bytes (every call comes here).
    pub fn note(&self, method: &str, params: Option<&Payload>) {
        let field = |name: &str| params.and_then(|p| p.get(name)).cloned();
        match method {
            "resources/subscribe" | "resources/unsubscribe" => {
                let Some(Value::String(uri)) = field("uri") else { return };
                if method == "resources/subscribe" {
                    self.subscriptions.lock().expect("replay lock").insert(uri);
                } else {
                    self.forget(&uri);
                }
            }
            _ => {}
        }
    }

    /// Forgets the subscription to `uri`: it is not made again on the next connection.
    pub fn forget(&self, uri: &str) {
        self.subscriptions.lock().expect("replay lock").remove(uri);
    }

    /// Makes the noted state again on `conn`, a new connection to `backend`, each request
    /// within [`REPLAY_DEADLINE`]. What the backend refuses now (a resource gone) is logged and
    /// forgotten, what it does not answer is logged and kept for the next connection; neither
    /// is fatal: the connection serves everything else.
    pub async fn replay(&self, conn: &Connection, backend: &str) {
        let subscriptions = self.subscriptions.lock().expect("replay lock").iter().cloned().collect::<Vec<_>>();
        self.replay_level(conn, backend).await;
        for uri in subscriptions {
            match ask(conn, "resources/subscribe", json!({"uri": uri})).await {
                Ok(()) => {}
                Err(None) => {
                    tracing::warn!(
                        backend,
                        "a resource subscription was not answered after reconnecting; tried again on the next connection"
                    );
                }
                Err(Some(e)) => {
                    tracing::warn!(backend, error = %e, "a resource subscription could not be made again after reconnecting; its subscribers hear no more updates");
                    self.subscriptions.lock().expect("replay lock").remove(&uri);
                }
            }
        }
    }

    /// Sets the level the relay's sessions hold on `conn`: a new connection's (in
    /// [`SessionReplay::replay`]), or a `session_per_worker` lane's, whose backend session
    /// carries tool calls only, and whose calls' log messages the backend sends at the level
    /// its session was asked for.
    pub async fn replay_level(&self, conn: &Connection, backend: &str) {
        let level = *self.level.lock().expect("held level lock");
        if let Some(level) = level
            && let Err(e) = ask(conn, "logging/setLevel", json!({"level": level})).await
        {
            tracing::debug!(backend, error = ?e, "logging/setLevel not applied to a new connection");
        }
    }
}

/// One request of the replay on `conn`, within [`REPLAY_DEADLINE`]: `Err(None)` when it was not
/// answered in time.
async fn ask(conn: &Connection, method: &str, params: Value) -> Result<(), Option<super::UpstreamError>> {
    match tokio::time::timeout(REPLAY_DEADLINE, conn.request(method, Some(params))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_noted_as_made_and_ended() {
        let replay = SessionReplay::default();
        let params = |value: Value| Some(Payload::from(value));
        replay.note("resources/subscribe", params(json!({"uri": "file:///a"})).as_ref());
        replay.note("resources/subscribe", params(json!({"uri": "file:///b"})).as_ref());
        replay.note("resources/unsubscribe", params(json!({"uri": "file:///a"})).as_ref());
        replay.note("tools/call", params(json!({"uri": "file:///c"})).as_ref());
        assert_eq!(replay.subscriptions.lock().unwrap().iter().collect::<Vec<_>>(), ["file:///b"]);
    }
}
