//! The policy chain between session and router: the relay's own rule (built-in tools marked
//! admin in their definitions need the `admin` role), then every `policy` plugin in
//! configuration order.

use std::sync::Arc;

use crate::access::{Denial, DenialCode, Principal, RequestInfo};
use crate::plugins::{Plugins, Refusal};

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
    pub async fn check(&self, request: &RequestInfo<'_>) -> Result<(), Refusal> {
        if let Some(tool) = request.tool
            && crate::admin::needs_admin(tool)
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
