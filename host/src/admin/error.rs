//! Why a built-in tool failed. Every failure reaches the client the same way: a tool result
//! with `isError` and this error's text (MCP's tool errors, which the caller can act on).

use crate::config::StoreError;
use crate::plugins::ReloadError;

/// Why a `relay_*` tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No built-in tool of that name.
    #[error("no built-in tool {0}")]
    NoSuchTool(String),
    /// The arguments do not describe what the tool needs.
    #[error("{0}")]
    BadArguments(String),
    /// `relay_add_server` with a command outside `access.add_server_commands`.
    #[error(
        "the command line {0:?} (with its arguments and environment names) is not allowed by access.add_server_commands in relay.yaml; stdio backends with other commands are added by editing backends.yaml"
    )]
    CommandNotAllowed(String),
    /// No backend of that name runs.
    #[error("no backend named {0}")]
    NoSuchBackend(String),
    /// The backends file could not be changed (the change is refused, or I/O failed).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file change was cut short (the relay is shutting down).
    #[error("the change was interrupted: {0}")]
    Interrupted(String),
    /// A plugin reload or rollback did not happen.
    #[error(transparent)]
    Plugin(#[from] ReloadError),
}
