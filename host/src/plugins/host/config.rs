//! `config`: the plugin's own `config` mapping from relay.yaml, as JSON.

use wasmtime::component::{HasData, Linker};

use crate::plugins::bindings::adapter::relay::plugin::config::{self, Host};

/// The `config` capability of one plugin: its configuration, serialized once.
pub struct ConfigGrant {
    /// The `config` mapping as JSON.
    pub json: String,
}

/// The view the generated `Host` trait is implemented on.
pub struct Config<'a>(pub &'a ConfigGrant);

struct HasConfig;

impl HasData for HasConfig {
    type Data<'a> = Config<'a>;
}

/// Adds `config` to `linker`; `get` finds the calling plugin's grant in the store data.
pub fn add_to_linker<T: Send + 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> Config<'_>) -> wasmtime::Result<()> {
    config::add_to_linker::<T, HasConfig>(linker, get)
}

impl Host for Config<'_> {
    fn get_json(&mut self) -> String {
        self.0.json.clone()
    }
}
