//! Errors of the routing layer, and their one conversion into JSON-RPC errors.

use serde_json::{Value, json};

use crate::mcp::{RpcError, clip, error_codes};
use crate::plugins::{PluginError, Refusal};
use crate::upstream::UpstreamError;

/// Why a routed request failed.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// No tool of that name is in the catalog.
    #[error("Unknown tool: {0}")]
    UnknownTool(String),
    /// No prompt of that name is in the catalog.
    #[error("Unknown prompt: {0}")]
    UnknownPrompt(String),
    /// No resource or template covers the URI.
    #[error("Resource not found: {0}")]
    UnknownResource(String),
    /// The request names nothing the relay can route (e.g. a completion ref of unknown type).
    #[error("{0}")]
    Unroutable(String),
    /// The owning upstream failed.
    #[error("{}", upstream_message(backend, source))]
    Upstream { backend: String, source: UpstreamError },
    /// The owning adapter plugin failed (trap, timeout, out of memory).
    #[error("{source}")]
    Adapter { adapter: String, source: PluginError },
    /// An interceptor denied the call, or failed with `on_error: fail-closed`.
    #[error("{0}")]
    Intercepted(Refusal),
    /// The caller has no usable credential of its own for a per-user backend.
    #[error("{0}")]
    Credential(crate::credentials::CredentialError),
}

/// An upstream failure as clients read it, naming the backend once (some upstream errors name
/// it already: "backend a did not answer within 1s").
fn upstream_message(backend: &str, source: &UpstreamError) -> String {
    match source {
        UpstreamError::Timeout { .. }
        | UpstreamError::Down { .. }
        | UpstreamError::Gone(_)
        | UpstreamError::LostTwice(_) => source.to_string(),
        other => format!("backend {backend}: {other}"),
    }
}

impl From<RouterError> for RpcError {
    fn from(error: RouterError) -> Self {
        match error {
            // The client's own text comes back cut short (`clip`): a megabyte of tool name is
            // not echoed.
            RouterError::UnknownTool(name) => {
                let name = clip(&name);
                RpcError::new(error_codes::INVALID_PARAMS, format!("Unknown tool: {name}"))
                    .with_data(json!({"tool": name}))
            }
            RouterError::UnknownPrompt(name) => {
                let name = clip(&name);
                RpcError::new(error_codes::INVALID_PARAMS, format!("Unknown prompt: {name}"))
                    .with_data(json!({"prompt": name}))
            }
            RouterError::UnknownResource(uri) => {
                let uri = clip(&uri);
                RpcError::new(error_codes::RESOURCE_NOT_FOUND, format!("Resource not found: {uri}"))
                    .with_data(json!({"uri": uri}))
            }
            RouterError::Unroutable(message) => RpcError::new(error_codes::INVALID_PARAMS, message),
            // An upstream's own JSON-RPC error passes through unchanged, but for the backend a
            // URL elicitation's `data.backend` names (its own, whatever it said): the one whose
            // completion of it the client hears, as of the relay's own authorization links.
            RouterError::Upstream { backend, source: UpstreamError::Rpc(mut e) } => {
                if e.code == error_codes::URL_ELICITATION_REQUIRED
                    && let Some(Value::Object(data)) = &mut e.data
                {
                    data.insert("backend".into(), backend.into());
                }
                e
            }
            RouterError::Intercepted(refusal) => refusal.into(),
            RouterError::Credential(error) => {
                let (code, data) = match &error {
                    crate::credentials::CredentialError::Missing { backend } => (
                        error_codes::UNAUTHENTICATED,
                        json!({"backend": backend, "store_with": "relay_auth_set_secret"}),
                    ),
                    // URL-mode elicitation (MCP 2025-11-25): the client shows the user the URL.
                    // The session answers clients that did not declare it with -32011 instead.
                    crate::credentials::CredentialError::AuthorizationRequired { backend, url, id } => (
                        error_codes::URL_ELICITATION_REQUIRED,
                        json!({
                            "backend": backend,
                            "authorize_url": url,
                            "elicitations": [{
                                "mode": "url",
                                "elicitationId": id,
                                "url": url,
                                "message": format!("Authorize the relay to call {backend} as you"),
                            }],
                        }),
                    ),
                    crate::credentials::CredentialError::Refused { backend, .. } => {
                        (error_codes::FORBIDDEN, json!({"backend": backend}))
                    }
                    _ => (error_codes::UPSTREAM_UNAVAILABLE, json!({})),
                };
                RpcError::new(code, error.to_string()).with_data(data)
            }
            RouterError::Adapter { adapter, source } => {
                RpcError::new(error_codes::INTERNAL_ERROR, source.to_string()).with_data(json!({"adapter": adapter}))
            }
            RouterError::Upstream { backend, source } => {
                let code = match source {
                    UpstreamError::Timeout { .. } => error_codes::REQUEST_TIMEOUT,
                    // The backend answered, but not usably: the same code on every transport.
                    UpstreamError::BadAnswer(_) => error_codes::INTERNAL_ERROR,
                    _ => error_codes::UPSTREAM_UNAVAILABLE,
                };
                RpcError::new(code, upstream_message(&backend, &source)).with_data(json!({"backend": backend}))
            }
        }
    }
}
