//! `upstream`: adapters call tools of configured MCP backends through the relay.

use serde_json::{Value, json};

use crate::mcp::Related;
use crate::plugins::bindings::adapter::relay::plugin::upstream::Host;
use crate::plugins::sandbox::PluginState;

impl Host for PluginState {
    async fn call_tool(&mut self, backend: String, tool: String, arguments: String) -> Result<String, String> {
        let upstreams = self.ctx.upstreams.clone().ok_or("this plugin may not call backends")?;
        // Reaching a backend is a grant, and goes through the policy chain as the client the
        // adapter is serving (its principal, its limits).
        if !crate::config::backend_granted(&self.ctx.backends, &backend, &tool) {
            tracing::warn!(plugin = %self.ctx.name, backend, tool, "upstream call refused: not in grants.backends");
            return Err(format!("{backend}/{tool} is not in this plugin's grants.backends"));
        }
        let caller = self.caller.clone().ok_or("no client request is being served")?;
        let mut request = caller.request.clone();
        request.tool = Some(tool.clone());
        (caller.admit)(request).await.map_err(|refusal| format!("refused by policy: {refusal}"))?;
        let upstream = upstreams.get(&backend).ok_or_else(|| format!("no backend named {backend}"))?;
        let arguments: Value = serde_json::from_str(&arguments).map_err(|e| format!("arguments are not JSON: {e}"))?;
        // The plugin's call is a caller of its own on that backend: nothing the backend sends
        // about it (log messages, elicitation) can reach some other client.
        let params = Some(json!({"name": tool, "arguments": arguments}));
        upstream
            .request_for("tools/call", params, upstream.call_timeout(), Some(&Related::detached()))
            .await
            .map(|result| result.to_string())
            .map_err(|e| e.to_string())
    }
}
