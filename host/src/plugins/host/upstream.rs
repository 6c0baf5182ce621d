//! `upstream`: adapters call tools of configured MCP backends through the relay, only those in
//! `grants.backends`, and through the policy chain as the client the adapter is serving.

use std::sync::Arc;

use serde_json::Value;
use wasmtime::component::{HasData, Linker};

use crate::plugins::BackendCalls;
use crate::plugins::bindings::adapter::relay::plugin::upstream::{self, Host};
use crate::plugins::sandbox::Caller;

/// The `upstream` capability of one plugin.
pub struct UpstreamGrant {
    plugin: String,
    /// The way to the backends (adapters only; `None` refuses every call).
    door: Option<Arc<dyn BackendCalls>>,
    /// `grants.backends`: `backend` or `backend/tool` patterns.
    backends: Vec<String>,
}

impl UpstreamGrant {
    /// `plugin` may call what `backends` grants, through `door`.
    pub fn new(plugin: &str, door: Option<Arc<dyn BackendCalls>>, backends: Vec<String>) -> Self {
        Self { plugin: plugin.to_owned(), door, backends }
    }
}

/// The view the generated `Host` trait is implemented on: the grant, and the client the
/// current call serves.
pub struct Upstream<'a> {
    /// The plugin's grant.
    pub grant: &'a UpstreamGrant,
    /// The client whose request the call serves, while it runs.
    pub caller: Option<&'a Caller>,
}

struct HasUpstream;

impl HasData for HasUpstream {
    type Data<'a> = Upstream<'a>;
}

/// Adds `upstream` to `linker`; `get` finds the calling plugin's grant and caller.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> Upstream<'_>,
) -> wasmtime::Result<()> {
    upstream::add_to_linker::<T, HasUpstream>(linker, get)
}

impl Host for Upstream<'_> {
    async fn call_tool(&mut self, backend: String, tool: String, arguments: String) -> Result<String, String> {
        let grant = self.grant;
        let door = grant.door.clone().ok_or("this plugin may not call backends")?;
        if !crate::config::backend_granted(&grant.backends, &backend, &tool) {
            tracing::warn!(plugin = %grant.plugin, backend, tool, "upstream call refused: not in grants.backends");
            return Err(format!("{backend}/{tool} is not in this plugin's grants.backends"));
        }
        let caller = self.caller.cloned().ok_or("no client request is being served")?;
        let request = caller.tool_call(crate::access::Route { backend: &backend, tool: &tool });
        (caller.admit)(request).await.map_err(|refusal| format!("refused by policy: {refusal}"))?;
        let arguments: Value = serde_json::from_str(&arguments).map_err(|e| format!("arguments are not JSON: {e}"))?;
        door.call_tool(&backend, &tool, arguments, &caller).await.map(|result| result.text().into_owned())
    }
}
