//! `config`: the plugin's own `config` mapping from relay.yaml, as JSON.

use crate::plugins::bindings::adapter::relay::plugin::config::Host;
use crate::plugins::sandbox::PluginState;

impl Host for PluginState {
    fn get_json(&mut self) -> String {
        self.ctx.config_json.clone()
    }
}
