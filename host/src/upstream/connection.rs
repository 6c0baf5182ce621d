//! One live connection to an upstream, whatever its transport.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::UpstreamError;
use super::framed::FramedConnection;
use super::http::HttpConnection;
use crate::mcp::{Notification, Payload, Related};

/// A connected upstream. Message-oriented transports (WebSocket, stdio) share one
/// implementation; Streamable HTTP has its own because every request is an HTTP exchange.
pub enum Connection {
    /// WebSocket or stdio.
    Framed(FramedConnection),
    /// Streamable HTTP.
    Http(Box<HttpConnection>),
}

impl Connection {
    /// Sends a request and waits for its response.
    pub async fn request(&self, method: &str, params: Option<Value>) -> Result<Payload, UpstreamError> {
        self.request_as(method, params.map(Payload::from).as_ref(), None, None).await
    }

    /// Sends a request carrying `credential` (a caller's own; HTTP only: configuration refuses
    /// per-user credentials for the other transports) for the client request behind `related`
    /// (HTTP only: what the server sends on the request's own answer stream is about it alone;
    /// the other transports carry nothing that says which request a message is about).
    pub async fn request_as(
        &self,
        method: &str,
        params: Option<&Payload>,
        credential: Option<&super::http::Credential>,
        related: Option<&Related>,
    ) -> Result<Payload, UpstreamError> {
        match self {
            Connection::Framed(c) => c.request(method, params).await,
            // Boxed: an HTTP exchange is a 2 KB future, which every call's future (a WebSocket
            // or stdio backend's too) would otherwise carry and copy into its box.
            Connection::Http(c) => Box::pin(c.request(method, params, credential, related)).await,
        }
    }

    /// Sends a notification.
    pub async fn notify(&self, method: &str, params: Option<Value>) -> Result<(), UpstreamError> {
        match self {
            Connection::Framed(c) => c.notify(method, params).await,
            Connection::Http(c) => c.notify(method, params).await,
        }
    }

    /// True once the connection can carry no more requests.
    pub fn is_closed(&self) -> bool {
        match self {
            Connection::Framed(c) => c.closed_token().is_cancelled(),
            Connection::Http(c) => c.closed_token().is_cancelled(),
        }
    }

    /// Resolves when the connection closes.
    pub async fn closed(&self) {
        match self {
            Connection::Framed(c) => c.closed_token().cancelled().await,
            Connection::Http(c) => c.closed_token().cancelled().await,
        }
    }

    /// Closes the connection; pending requests fail with [`UpstreamError::ConnectionLost`].
    pub async fn close(&self) {
        match self {
            Connection::Framed(c) => c.closed_token().cancel(),
            Connection::Http(c) => c.close().await,
        }
    }

    /// How many requests wait for their answer on it.
    pub fn waiting(&self) -> usize {
        match self {
            Connection::Framed(c) => c.waiting(),
            Connection::Http(c) => c.waiting(),
        }
    }
}

/// How often a retiring connection looks whether its requests are answered.
const RETIRE_POLL: Duration = Duration::from_millis(25);

/// Retires `conn`, replaced by a new connection while requests were in flight on it (a
/// reconnect asked for, a lane following its supervisor's): no new request takes it, and those
/// in flight finish there instead of being cut and sent again on the new one (where a tool
/// would run twice). Closed once none waits, or after `within` (the call deadline); what it
/// sends meanwhile that is not about those requests (list changes, resource updates: the new
/// connection's session has its own) is dropped.
pub async fn retire(conn: Arc<Connection>, mut events: mpsc::Receiver<Notification>, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let mut poll = tokio::time::interval(RETIRE_POLL);
    // The first look is after one poll: a request that took the connection just before it was
    // replaced may not have been sent yet. Closed after two looks in a row find none waiting:
    // an answer just read is on its way to its request, which takes it before the close.
    poll.tick().await;
    let mut idle_looks = 0;
    loop {
        tokio::select! {
            _ = poll.tick() => {
                idle_looks = if conn.waiting() == 0 { idle_looks + 1 } else { 0 };
                if idle_looks == 2 || tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
            () = conn.closed() => return,
            Some(_) = events.recv() => {}
        }
    }
    conn.close().await;
}
