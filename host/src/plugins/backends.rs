//! How adapter plugins reach MCP backends (the WIT `upstream` import): a narrow door that
//! `server.rs` hands in, so the plugin runtime knows nothing of the upstream layer and the
//! upstream layer nothing of plugins.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use super::Caller;
use crate::mcp::Payload;

/// Calls tools of configured backends for adapter plugins.
pub trait BackendCalls: Send + Sync {
    /// Calls `tool` on `backend` with `arguments` for `caller`, the client the adapter serves
    /// (whose own credential a backend called as each user gets); the `CallToolResult`, or why
    /// not. Grants and the policy chain are checked before this is reached.
    fn call_tool<'a>(
        &'a self,
        backend: &'a str,
        tool: &'a str,
        arguments: Value,
        caller: &'a Caller,
    ) -> Pin<Box<dyn Future<Output = Result<Payload, String>> + Send + 'a>>;
}

/// No backends at all (tools and benchmarks that load plugins without a relay around them).
pub struct NoBackends;

impl BackendCalls for NoBackends {
    fn call_tool<'a>(
        &'a self,
        backend: &'a str,
        _tool: &'a str,
        _arguments: Value,
        _caller: &'a Caller,
    ) -> Pin<Box<dyn Future<Output = Result<Payload, String>> + Send + 'a>> {
        Box::pin(async move { Err(format!("no backend named {backend}")) })
    }
}
