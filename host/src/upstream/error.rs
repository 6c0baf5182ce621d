//! Errors of the upstream layer.

use crate::mcp::{Payload, RpcError};

/// Why a request to an upstream failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The connection closed before the answer came; the caller may re-send on a new one.
    #[error("connection to the upstream was lost")]
    ConnectionLost,
    /// The request's deadline passed (waiting for a reconnect counts).
    #[error("backend {backend} did not answer within {secs:.1}s")]
    Timeout { backend: String, secs: f64 },
    /// The connection dropped under the request twice (it was re-sent once already); a call
    /// that keeps taking its backend down is not re-sent again.
    #[error("backend {0} lost its connection during this request twice; not re-sent again")]
    LostTwice(String),
    /// Not sent: the backend is down (its last connection attempt failed, or it did not come
    /// back within `connect_timeout_secs` while the request waited).
    #[error("backend {backend} is down: {reason}")]
    Down { backend: String, reason: String },
    /// The backend was removed (or the relay is shutting down) while the request waited.
    #[error("backend {0} is no longer configured")]
    Gone(String),
    /// Connecting or the MCP handshake failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The upstream broke the protocol (bad HTTP status, a stream that ended unanswered).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The upstream's answer to this request cannot be used (too large, not JSON-RPC, a result
    /// that is not an object): the same on every transport.
    #[error("answer refused: {0}")]
    BadAnswer(String),
    /// The upstream answered with a JSON-RPC error.
    #[error("upstream error: {0}")]
    Rpc(RpcError),
}

impl UpstreamError {
    /// The error of a call whose answer exceeded `limit` bytes.
    pub fn too_large(limit: usize) -> Self {
        Self::BadAnswer(format!("its answer is larger than max_message_bytes ({limit} bytes)"))
    }

    /// A call's outcome as the upstream answered it: a result must be a JSON object, and a
    /// JSON-RPC error is the upstream's own.
    pub fn check_answer(outcome: Result<Payload, RpcError>) -> Result<Payload, Self> {
        match outcome {
            Ok(result) if result.is_object() => Ok(result),
            Ok(_) => Err(Self::BadAnswer("its result is not a JSON object".into())),
            Err(error) => Err(Self::Rpc(error)),
        }
    }
}
