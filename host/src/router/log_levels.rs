//! `logging/setLevel` across sessions: a backend has one level for all the relay's clients, so
//! it is asked for the most verbose level any live session asked for, and each session hears
//! only what meets its own (the filter is [`crate::mcp::ClientLogLevel`]'s). One client asking
//! for `emergency` no longer silences the backend for another that asked for `debug`, and one
//! asking for `debug` no longer floods with debug messages the calls of another that asked for
//! a level (one that asked for none hears what the backend sends about its calls, as before).

use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::Router;
use crate::mcp::{LOG_LEVELS, level_name};

/// How long a backend gets to answer `logging/setLevel`: one hung backend delays nobody long.
const SET_LEVEL_DEADLINE: Duration = Duration::from_secs(2);

/// The levels live sessions hold, and the one the backends were last asked for.
#[derive(Debug, Default)]
pub(super) struct LogLevels {
    /// How many sessions hold each level, by rank.
    held: Mutex<[usize; LOG_LEVELS.len()]>,
    /// The level last asked of the backends. Held while asking, so concurrent changes ask in
    /// the order they were counted and the last one asked is the one that holds.
    asked: tokio::sync::Mutex<Option<u8>>,
}

impl LogLevels {
    /// Moves one session's level from `from` to `to` (either `None`: it held none, or holds
    /// none now).
    fn change(&self, from: Option<u8>, to: Option<u8>) {
        let mut held = self.held.lock().expect("log levels lock");
        if let Some(slot) = from.and_then(|rank| held.get_mut(usize::from(rank))) {
            *slot = slot.saturating_sub(1);
        }
        if let Some(slot) = to.and_then(|rank| held.get_mut(usize::from(rank))) {
            *slot += 1;
        }
    }

    /// The most verbose level a live session holds.
    fn wanted(&self) -> Option<u8> {
        let held = self.held.lock().expect("log levels lock");
        held.iter().position(|&count| count > 0).map(|rank| rank as u8)
    }
}

impl Router {
    /// One session's log level moved from `from` to `to` (`to: None` when the session ended);
    /// the backends that offer logging are asked for the most verbose level now held, if it
    /// changed (each within a short deadline, best effort). With no level held any more, they
    /// keep the last one asked: MCP has no way to unset it.
    pub async fn hold_log_level(&self, from: Option<u8>, to: Option<u8>) {
        self.log_levels.change(from, to);
        let mut asked = self.log_levels.asked.lock().await;
        let wanted = self.log_levels.wanted();
        let Some(level) = wanted.filter(|&rank| Some(rank) != *asked).and_then(level_name) else { return };
        // Each upstream's next connection is set to it (a reconnect, a backend added later).
        self.upstreams.hold_log_level(level);
        // Unknown until every backend was asked: this future is the client's request's, and a
        // request cancelled halfway must not leave the next change taken for a no-op.
        *asked = None;
        let params = json!({"level": level});
        let upstreams = self.upstreams.list();
        let asks = upstreams.iter().filter(|u| u.status().identity.is_some_and(|i| i.has("logging"))).map(|upstream| {
            let params = params.clone();
            async move {
                if let Err(e) = upstream.request("logging/setLevel", Some(params), SET_LEVEL_DEADLINE).await {
                    tracing::debug!(backend = upstream.name(), error = %e, "logging/setLevel not applied");
                }
            }
        });
        futures::future::join_all(asks).await;
        *asked = wanted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::log_rank;

    #[test]
    fn the_most_verbose_level_held_is_wanted_until_its_last_holder_lets_go() {
        let levels = LogLevels::default();
        assert_eq!(levels.wanted(), None);
        let (debug, error) = (log_rank("debug"), log_rank("error"));
        levels.change(None, error);
        levels.change(None, debug);
        levels.change(None, debug);
        assert_eq!(levels.wanted(), debug);
        levels.change(debug, None);
        assert_eq!(levels.wanted(), debug, "one debug session left");
        levels.change(debug, error);
        assert_eq!(levels.wanted(), error);
        levels.change(error, None);
        levels.change(error, None);
        levels.change(error, None);
        assert_eq!(levels.wanted(), None, "and never below zero");
        levels.change(None, log_rank("info"));
        assert_eq!(levels.wanted(), log_rank("info"));
    }
}
