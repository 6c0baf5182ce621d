//! `log`: plugin records go to the relay's log with the plugin's name.

use crate::plugins::bindings::adapter::relay::plugin::log::{Host, Level};
use crate::plugins::sandbox::PluginState;

/// Longest message logged; the rest is cut.
const MAX_MESSAGE: usize = 4096;

impl Host for PluginState {
    /// Records are rate-limited per plugin (`limits.logs_per_sec`, the dropped ones counted),
    /// cut at [`MAX_MESSAGE`] bytes, and written with control characters escaped (the log
    /// formatter's job), so a plugin can neither flood nor forge the relay's log.
    fn log(&mut self, level: Level, mut message: String) {
        if !self.ctx.may_log() {
            return;
        }
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("…[cut]");
        }
        let plugin = self.ctx.name.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "relay::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "relay::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "relay::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "relay::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "relay::plugin", plugin, "{message}"),
        }
    }
}
