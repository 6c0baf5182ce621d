//! What an upstream's health looks like from outside: its state in the supervisor's cycle and
//! the snapshot that status output shows.

use std::sync::Arc;
use std::time::SystemTime;

use crate::upstream::handshake::ServerIdentity;

/// Where the supervisor is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// First connection attempt in progress.
    Connecting,
    /// Connected and initialized; requests flow.
    Ready,
    /// Was connected, lost it; waiting out the backoff before the next attempt.
    Reconnecting,
    /// Never connected: every attempt so far failed (`last_error` says why).
    Down,
    /// Removed from the configuration or the relay is stopping.
    Stopped,
}

impl State {
    /// Lower-case name for status output.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Ready => "ready",
            State::Reconnecting => "reconnecting",
            State::Down => "down",
            State::Stopped => "stopped",
        }
    }
}

/// A snapshot of an upstream's health, for status output.
#[derive(Debug, Clone)]
pub struct Status {
    /// Current state.
    pub state: State,
    /// Since when it is in that state.
    pub since: SystemTime,
    /// The last connect or handshake error, if any.
    pub last_error: Option<String>,
    /// How many times a connection was established.
    pub connects: u64,
    /// When the current connection was established.
    pub connected_since: Option<SystemTime>,
    /// `serverInfo` and version from the upstream's `initialize` answer (shared: every
    /// client's `initialize` and every status reads it, from a copy of this snapshot).
    pub identity: Option<Arc<ServerIdentity>>,
    /// Other workers' own connections to it, for their tool calls ([`crate::upstream::lanes`]).
    pub lanes: usize,
}
