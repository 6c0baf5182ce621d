//! The policy chain between session and router: the relay's own rule (management tools need
//! the `admin` role), then every `policy` plugin in configuration order.

use std::sync::Arc;

use crate::access::{Denial, DenialCode, Principal, RequestInfo};
use crate::plugins::{Plugins, Refusal};

/// Built-in tools that change the relay; only principals with the `admin` role may call them.
pub const ADMIN_TOOLS: &[&str] =
    &["relay_add_server", "relay_remove_server", "relay_reload_plugins", "relay_rollback_plugin"];

/// Decides whether a request may be routed.
pub struct Policy {
    plugins: Arc<Plugins>,
}

impl Policy {
    /// The chain over the loaded plugins.
    pub fn new(plugins: Arc<Plugins>) -> Self {
        Self { plugins }
    }

    /// Ok when every rule lets `request` through.
    pub async fn check(&self, request: &RequestInfo) -> Result<(), Refusal> {
        if let Some(tool) = request.tool.as_deref()
            && ADMIN_TOOLS.contains(&tool)
            && !request.principal.has_role(Principal::ADMIN)
        {
            return Err(Refusal::Denied(Denial::by_relay(
                DenialCode::Forbidden,
                format!("{tool} needs the admin role; {} does not have it", request.principal.id),
            )));
        }
        self.plugins.check(request).await
    }
}
