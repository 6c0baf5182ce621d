//! Plugins built against relay:plugin 0.1: its records converted to and from the current ones
//! at the call boundary, so the registry speaks one version.

use super::bindings::types as now;
use super::bindings::v0_1::auth::relay::plugin::types as old;

/// `connect-info` as 0.1 knew it (no client certificate subject: 0.1 plugins never see one).
pub fn connect_info(info: &now::ConnectInfo) -> old::ConnectInfo {
    old::ConnectInfo {
        transport: transport(info.transport),
        remote_addr: info.remote_addr.clone(),
        token: info.token.clone(),
    }
}

/// `request-info` as 0.1 knew it (unchanged but for its package).
pub fn request_info(info: &now::RequestInfo) -> old::RequestInfo {
    old::RequestInfo {
        principal: old::Principal { id: info.principal.id.clone(), roles: info.principal.roles.clone() },
        session_id: info.session_id.clone(),
        transport: transport(info.transport),
        method: info.method.clone(),
        tool: info.tool.clone(),
    }
}

fn transport(transport: now::Transport) -> old::Transport {
    match transport {
        now::Transport::Line => old::Transport::Line,
        now::Transport::Websocket => old::Transport::Websocket,
        now::Transport::Http => old::Transport::Http,
    }
}

/// A 0.1 principal.
pub fn principal(principal: old::Principal) -> now::Principal {
    now::Principal { id: principal.id, roles: principal.roles }
}

/// A 0.1 denial.
pub fn denial(denial: old::Denial) -> now::Denial {
    let code = match denial.code {
        old::DenialCode::Unauthenticated => now::DenialCode::Unauthenticated,
        old::DenialCode::Forbidden => now::DenialCode::Forbidden,
        old::DenialCode::RateLimited => now::DenialCode::RateLimited,
        old::DenialCode::Invalid => now::DenialCode::Invalid,
    };
    now::Denial { code, message: denial.message, retry_after_ms: denial.retry_after_ms }
}

/// A 0.1 adapter's tool error.
pub fn tool_error(
    error: super::bindings::v0_1::adapter::exports::relay::plugin::tools::ToolError,
) -> super::bindings::adapter::exports::relay::plugin::tools::ToolError {
    use super::bindings::adapter::exports::relay::plugin::tools::ToolError as Now;
    use super::bindings::v0_1::adapter::exports::relay::plugin::tools::ToolError as Old;
    match error {
        Old::InvalidArguments(m) => Now::InvalidArguments(m),
        Old::UnknownTool(m) => Now::UnknownTool(m),
        Old::Failed(m) => Now::Failed(m),
    }
}
