//! The MCP client handshake the relay performs with each upstream, and the listings it keeps.

use std::sync::Arc;

use serde_json::{Value, json};

use super::UpstreamError;
use super::connection::Connection;
use crate::mcp::{ListKind, error_codes, version};

/// Most pages of one list followed before the relay stops (a guard against a server that keeps
/// returning cursors).
const MAX_PAGES: usize = 1000;

/// Most JSON text of one list, all its pages together: what a backend lists is held in memory
/// for as long as it is connected, and re-listed on every reconnect and `list_changed`; a
/// hostile one sending page after page of `max_message_bytes` would otherwise grow the relay
/// by gigabytes. A large real catalog (a thousand tools with long schemas) is a few MiB.
const MAX_LIST_BYTES: usize = 16 << 20;

/// Most items of one list: each costs the relay far more held than its text (parsed, indexed,
/// copied into the views of principals an interceptor edits lists for, offered to list hooks);
/// 200,000 minimal tools within [`MAX_LIST_BYTES`] held 600 MB. Real servers list tens of
/// tools and prompts (more is refused); resources may be many files (more are left out).
fn max_items(kind: ListKind) -> usize {
    match kind {
        ListKind::Tools | ListKind::Prompts => 10_000,
        ListKind::Resources | ListKind::ResourceTemplates => 100_000,
    }
}

/// What the upstream said about itself in `initialize`.
#[derive(Debug, Clone, Default)]
pub struct ServerIdentity {
    /// `serverInfo`'s name, title and version ([`described`]).
    pub server_info: Value,
    /// The protocol version the upstream agreed to.
    pub protocol_version: String,
    /// `capabilities` as sent.
    pub capabilities: Value,
}

impl ServerIdentity {
    /// Whether the upstream advertised capability `name` (`tools`, `prompts`, ...).
    pub fn has(&self, name: &str) -> bool {
        self.capabilities.get(name).is_some_and(|c| !c.is_null())
    }
}

/// An upstream's last known lists.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Tool definitions.
    pub tools: Arc<Vec<Value>>,
    /// Prompt definitions.
    pub prompts: Arc<Vec<Value>>,
    /// Concrete resources.
    pub resources: Arc<Vec<Value>>,
    /// Resource templates.
    pub templates: Arc<Vec<Value>>,
}

impl Listing {
    /// The list of `kind`.
    pub fn get(&self, kind: ListKind) -> &Arc<Vec<Value>> {
        match kind {
            ListKind::Tools => &self.tools,
            ListKind::Prompts => &self.prompts,
            ListKind::Resources => &self.resources,
            ListKind::ResourceTemplates => &self.templates,
        }
    }

    /// Replaces the list of `kind`.
    pub fn set(&mut self, kind: ListKind, items: Vec<Value>) {
        let slot = match kind {
            ListKind::Tools => &mut self.tools,
            ListKind::Prompts => &mut self.prompts,
            ListKind::Resources => &mut self.resources,
            ListKind::ResourceTemplates => &mut self.templates,
        };
        *slot = Arc::new(items);
    }
}

/// The requests of its own a server may send the relay, as the relay's `initialize` declares
/// them (besides `ping`): each goes on to the client whose request the server is serving.
pub(super) const OFFERED_TO_UPSTREAMS: [&str; 2] = ["sampling/createMessage", "elicitation/create"];

/// `initialize` then `notifications/initialized`.
pub async fn initialize(conn: &Connection) -> Result<ServerIdentity, UpstreamError> {
    let result = conn
        .request(
            "initialize",
            Some(json!({
                "protocolVersion": version::UPSTREAM_REQUEST,
                // Requests the upstream sends back are forwarded to the client it works for.
                // Both elicitation modes (MCP 2025-11-25): a URL one reaches the clients that
                // declared it; the others get its URL in an error (`-32011`) they can show.
                "capabilities": {"sampling": {}, "elicitation": {"form": {}, "url": {}}},
                "clientInfo": {"name": "relay", "version": env!("CARGO_PKG_VERSION")},
            })),
        )
        .await?;
    let protocol_version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| UpstreamError::Protocol("initialize result has no protocolVersion".into()))?
        .to_owned();
    conn.notify("notifications/initialized", None).await?;
    Ok(ServerIdentity {
        server_info: described(result.get("serverInfo")),
        protocol_version,
        capabilities: result.get("capabilities").cloned().unwrap_or(Value::Null),
    })
}

/// What the relay keeps and shows of an upstream's `serverInfo` (in its log at each connect,
/// and to every caller of `relay_get_status`): its name, title and version, each cut to 128
/// bytes. The rest (a hostile one's megabytes) is not kept.
fn described(server_info: Option<&Value>) -> Value {
    let Some(info) = server_info.and_then(Value::as_object) else { return Value::Null };
    let kept = ["name", "title", "version"].into_iter().filter_map(|key| {
        let value = info.get(key)?.as_str()?;
        Some((key.to_owned(), Value::String(crate::mcp::clip(value).into_owned())))
    });
    Value::Object(kept.collect())
}

/// Every list the upstream's capabilities promise.
pub async fn list_everything(conn: &Connection, identity: &ServerIdentity) -> Result<Listing, UpstreamError> {
    let mut listing = Listing::default();
    for kind in ListKind::ALL {
        if identity.has(kind.capability()) {
            listing.set(kind, list(conn, kind).await?);
        }
    }
    Ok(listing)
}

/// Every item of one list, following `nextCursor`. A server without the method (`-32601`)
/// has none.
pub async fn list(conn: &Connection, kind: ListKind) -> Result<Vec<Value>, UpstreamError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut listed_bytes = 0;
    for _ in 0..MAX_PAGES {
        let params = cursor.as_ref().map(|c| json!({"cursor": c}));
        let page = match conn.request(kind.method(), params).await {
            Err(UpstreamError::Rpc(e)) if e.code == error_codes::METHOD_NOT_FOUND => return Ok(items),
            other => other?,
        };
        listed_bytes += page.text().len();
        if listed_bytes > MAX_LIST_BYTES {
            return Err(UpstreamError::Protocol(format!(
                "{} returned more than {} MiB (all pages together); the relay holds at most that",
                kind.method(),
                MAX_LIST_BYTES >> 20
            )));
        }
        let page_items = page.get(kind.field()).and_then(Value::as_array).ok_or_else(|| {
            UpstreamError::Protocol(format!("{} result has no {} array", kind.method(), kind.field()))
        })?;
        items.extend(page_items.iter().filter(|t| t.get(kind.key()).and_then(Value::as_str).is_some()).cloned());
        let most = max_items(kind);
        if items.len() > most {
            if !matches!(kind, ListKind::Resources | ListKind::ResourceTemplates) {
                return Err(UpstreamError::Protocol(format!(
                    "{} returned more than {most} items (all pages together); the relay holds at most that",
                    kind.method(),
                )));
            }
            // Still readable through a template or by URI; only not listed.
            tracing::warn!(
                list = kind.method(),
                kept = most,
                "a backend listed more items than the relay holds; the rest are left out"
            );
            items.truncate(most);
            return Ok(items);
        }
        match page.get("nextCursor").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
            _ => return Ok(items),
        }
    }
    Err(UpstreamError::Protocol(format!("{} returned more than {MAX_PAGES} pages", kind.method())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_name_title_and_version_of_server_info_are_kept_and_cut() {
        let info = json!({"name": "n".repeat(3_000_000), "version": "1.2", "pad": "x".repeat(1000), "title": 7});
        let kept = described(Some(&info));
        assert_eq!(kept.as_object().unwrap().len(), 2, "{kept:.200}");
        assert_eq!(kept["version"], "1.2");
        assert!(kept["name"].as_str().unwrap().len() < 200);
        assert_eq!(described(Some(&json!("not an object"))), Value::Null);
    }
}
