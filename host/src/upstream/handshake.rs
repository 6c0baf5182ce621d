//! The MCP client handshake the relay performs with each upstream, and tool listing.

use serde_json::{Value, json};

use super::UpstreamError;
use super::connection::Connection;
use crate::mcp::{error_codes, version};

/// Most pages of `tools/list` followed before the relay stops (a guard against a server that
/// keeps returning cursors).
const MAX_PAGES: usize = 1000;

/// What the upstream said about itself in `initialize`.
#[derive(Debug, Clone, Default)]
pub struct ServerIdentity {
    /// `serverInfo` as sent.
    pub server_info: Value,
    /// The protocol version the upstream agreed to.
    pub protocol_version: String,
    /// Whether it advertised the `tools` capability.
    pub has_tools: bool,
}

/// `initialize` then `notifications/initialized`.
pub async fn initialize(conn: &Connection) -> Result<ServerIdentity, UpstreamError> {
    let result = conn
        .request(
            "initialize",
            Some(json!({
                "protocolVersion": version::UPSTREAM_REQUEST,
                "capabilities": {},
                "clientInfo": {"name": "relay", "version": env!("CARGO_PKG_VERSION")},
            })),
        )
        .await?;
    let protocol_version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| UpstreamError::Protocol("initialize result has no protocolVersion".into()))?
        .to_owned();
    let has_tools = result.pointer("/capabilities/tools").is_some();
    conn.notify("notifications/initialized", None).await?;
    Ok(ServerIdentity {
        server_info: result.get("serverInfo").cloned().unwrap_or(Value::Null),
        protocol_version,
        has_tools,
    })
}

/// Every tool the upstream offers, following `nextCursor`. A server without tools support
/// (`-32601`) has none.
pub async fn list_tools(conn: &Connection) -> Result<Vec<Value>, UpstreamError> {
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let params = cursor.as_ref().map(|c| json!({"cursor": c}));
        let page = match conn.request("tools/list", params).await {
            Err(UpstreamError::Rpc(e)) if e.code == error_codes::METHOD_NOT_FOUND => return Ok(tools),
            other => other?,
        };
        let items = page
            .get("tools")
            .and_then(Value::as_array)
            .ok_or_else(|| UpstreamError::Protocol("tools/list result has no tools array".into()))?;
        tools.extend(items.iter().filter(|t| t.get("name").and_then(Value::as_str).is_some()).cloned());
        match page.get("nextCursor").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
            _ => return Ok(tools),
        }
    }
    Err(UpstreamError::Protocol(format!("tools/list returned more than {MAX_PAGES} pages")))
}
