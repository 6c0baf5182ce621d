//! MCP's log levels (RFC 5424 severities) and the one rule for which log message a client
//! hears: the ranking every layer uses, so the session's level, the levels the backends are
//! asked for and the filter on each message agree.

use std::sync::atomic::{AtomicU8, Ordering};

/// RFC 5424 severities as MCP names them, least severe first.
pub const LOG_LEVELS: [&str; 8] = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

/// The rank of a log level name (`debug` lowest); `None` for a name MCP does not have.
pub fn log_rank(level: &str) -> Option<u8> {
    LOG_LEVELS.iter().position(|l| *l == level).map(|i| i as u8)
}

/// The name of a rank.
pub fn level_name(rank: u8) -> Option<&'static str> {
    LOG_LEVELS.get(usize::from(rank)).copied()
}

/// Whether a log message at `level` meets a client's `wanted` level (none wanted: no messages).
pub fn meets(wanted: Option<u8>, level: &str) -> bool {
    matches!((wanted, log_rank(level)), (Some(wanted), Some(rank)) if rank >= wanted)
}

/// The level one client session asked for (`logging/setLevel`, a stateless request's
/// `logLevel`), where every path that hands it a log message reads it.
#[derive(Debug, Default)]
pub struct ClientLogLevel {
    /// The rank plus one; 0 while none was asked for.
    rank: AtomicU8,
}

impl ClientLogLevel {
    /// The rank asked for, if any.
    pub fn get(&self) -> Option<u8> {
        self.rank.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Sets the rank asked for; returns the one before.
    pub fn replace(&self, rank: Option<u8>) -> Option<u8> {
        self.rank.swap(rank.map_or(0, |rank| rank.saturating_add(1)), Ordering::Relaxed).checked_sub(1)
    }

    /// Whether a message the backend sent on its own initiative (about no request of this
    /// client's) is sent to the client: only at or above a level it asked for.
    pub fn wants(&self, level: &str) -> bool {
        meets(self.get(), level)
    }

    /// Whether a message about one of this client's own requests is sent to it: below a level
    /// it asked for, not (the backend logs at the most verbose level any client asked for);
    /// with none asked for, as the backend chose to send it.
    pub fn wants_about_own_request(&self, level: &str) -> bool {
        self.get().is_none_or(|_| self.wants(level))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_meets_the_wanted_one_and_above() {
        assert!(meets(log_rank("warning"), "error"));
        assert!(meets(log_rank("warning"), "warning"));
        assert!(!meets(log_rank("warning"), "info"));
        assert!(!meets(None, "emergency"), "no level asked: no messages");
        assert!(!meets(log_rank("debug"), "loud"), "an unknown level is not sent");
    }

    #[test]
    fn a_clients_level_filters_its_own_requests_messages_once_it_asked_for_one() {
        let level = ClientLogLevel::default();
        assert_eq!(level.get(), None);
        assert!(level.wants_about_own_request("debug"), "none asked: as the backend sent it");
        assert!(!level.wants("emergency"), "none asked: nothing unasked for");
        assert_eq!(level.replace(log_rank("error")), None);
        assert!(!level.wants_about_own_request("info"));
        assert!(level.wants_about_own_request("error") && level.wants("critical"));
        assert_eq!(level.replace(log_rank("debug")), log_rank("error"));
        assert_eq!(level.replace(None), Some(0));
        assert_eq!(level.get(), None);
    }
}
