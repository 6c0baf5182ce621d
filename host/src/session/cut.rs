//! A request still running when the drain's grace has passed is cut off, not dropped: its
//! client gets an error answer saying so (on whatever transport it came), and the cut is
//! logged as the request's last record (for a tool call, its "Tool call finished" record), so
//! nobody is left waiting and no call disappears from the logs.

use serde_json::Value;

use super::Session;
use crate::mcp::{Response, RpcError, error_codes};

/// The answer to a request cut off by the drain, after logging its record (of `method`, as
/// the metrics name it, and for a tool call whose params were read, its `tool`, cut short).
/// Not the retryable drain error: the request was running, so it may have taken effect.
pub(super) fn answer(session: &Session, id: Value, method: &'static str, tool: Option<&String>) -> Response {
    let (tag, principal) = (session.tag(), session.principal.id.as_str());
    let short = session.counts.0.lifecycle().cut_short();
    let (error, message, reason) = if short {
        (
            "cut off: the relay was told to stop at once during its drain (a second shutdown signal)",
            "the relay was told to stop at once (a second shutdown signal during its drain) before this request finished; it may have taken effect",
            "drain_cut_short",
        )
    } else {
        (
            "cut off: the relay shut down before it finished (shutdown.grace_secs passed)",
            "the relay shut down before this request finished (its drain grace, shutdown.grace_secs, passed); it may have taken effect",
            "drain_grace_passed",
        )
    };
    match tool {
        Some(tool) => {
            tracing::warn!(target: "relay::call", session = %tag, principal, tool = %tool, outcome = "cut", error, "Tool call finished")
        }
        None => tracing::warn!(session = %tag, principal, method, error, "request cut off by the drain"),
    }
    crate::metrics::metrics().clients.request(method, "error", Some("cancelled"), std::time::Duration::ZERO);
    Response::err(
        id,
        RpcError::new(error_codes::REQUEST_CANCELLED, message).with_data(serde_json::json!({"reason": reason})),
    )
}
