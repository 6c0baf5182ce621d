//! The host's types as the plugins' WIT interface spells them, and back: one home for each
//! conversion every world shares.

use super::bindings::types;
use crate::access::{Denial, DenialCode, TransportKind};

/// A connection's transport as the WIT interface names it.
pub(super) fn wit_transport(transport: TransportKind) -> types::Transport {
    match transport {
        TransportKind::Line => types::Transport::Line,
        TransportKind::WebSocket => types::Transport::Websocket,
        TransportKind::Http => types::Transport::Http,
    }
}

/// The most of a plugin's denial message that reaches a client or a log.
const PLUGIN_MESSAGE_BYTES: usize = 512;

/// A plugin's denial as the relay answers it, its message cut to [`PLUGIN_MESSAGE_BYTES`].
pub(super) fn from_wit(denial: types::Denial, plugin: &str) -> Denial {
    let code = match denial.code {
        types::DenialCode::Unauthenticated => DenialCode::Unauthenticated,
        types::DenialCode::Forbidden => DenialCode::Forbidden,
        types::DenialCode::RateLimited => DenialCode::RateLimited,
        types::DenialCode::Invalid => DenialCode::Invalid,
    };
    // A plugin may quote its caller's input: its message is cut to a sentence's length.
    let message = crate::mcp::clip_to(&denial.message, PLUGIN_MESSAGE_BYTES).into_owned();
    Denial { code, message, retry_after_ms: denial.retry_after_ms, refused_by: plugin.to_owned() }
}
