//! Errors of the routing layer, and their one conversion into JSON-RPC errors.

use serde_json::json;

use crate::mcp::{RpcError, error_codes};
use crate::plugins::PluginError;
use crate::upstream::UpstreamError;

/// Why a routed request failed.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// No tool of that name is in the catalog.
    #[error("Unknown tool: {0}")]
    UnknownTool(String),
    /// The owning upstream failed.
    #[error("backend {backend}: {source}")]
    Upstream { backend: String, source: UpstreamError },
    /// The owning adapter plugin failed (trap, timeout, out of memory).
    #[error("{source}")]
    Adapter { adapter: String, source: PluginError },
}

impl From<RouterError> for RpcError {
    fn from(error: RouterError) -> Self {
        match error {
            RouterError::UnknownTool(name) => {
                RpcError::new(error_codes::INVALID_PARAMS, format!("Unknown tool: {name}"))
                    .with_data(json!({"tool": name}))
            }
            // An upstream's own JSON-RPC error passes through unchanged.
            RouterError::Upstream { source: UpstreamError::Rpc(e), .. } => e,
            RouterError::Adapter { adapter, source } => {
                RpcError::new(error_codes::INTERNAL_ERROR, source.to_string()).with_data(json!({"adapter": adapter}))
            }
            RouterError::Upstream { backend, source } => {
                let code = match source {
                    UpstreamError::Timeout { .. } => error_codes::REQUEST_TIMEOUT,
                    _ => error_codes::UPSTREAM_UNAVAILABLE,
                };
                RpcError::new(code, format!("backend {backend}: {source}")).with_data(json!({"backend": backend}))
            }
        }
    }
}
