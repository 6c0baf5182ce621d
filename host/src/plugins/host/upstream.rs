//! `upstream`: adapters call tools of configured MCP backends through the relay.

use serde_json::Value;

use crate::plugins::bindings::adapter::relay::plugin::upstream::Host;
use crate::plugins::sandbox::PluginState;

impl Host for PluginState {
    async fn call_tool(&mut self, backend: String, tool: String, arguments: String) -> Result<String, String> {
        let door = self.ctx.backends_door.clone().ok_or("this plugin may not call backends")?;
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
        let arguments: Value = serde_json::from_str(&arguments).map_err(|e| format!("arguments are not JSON: {e}"))?;
        door.call_tool(&backend, &tool, arguments).await.map(|result| result.to_string())
    }
}
