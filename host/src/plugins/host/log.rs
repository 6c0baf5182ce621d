//! `log`: plugin records go to the relay's log with the plugin's name.

use crate::plugins::bindings::adapter::relay::plugin::log::{Host, Level};
use crate::plugins::sandbox::PluginState;

impl Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
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
