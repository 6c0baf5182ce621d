//! `relay:plugin@0.1.0`'s imports, served by the 0.2 implementations: a plugin built against
//! 0.1 gets the same log, clock, config, kv and upstream (same grants, same limits), through
//! its own generated types.

use wasmtime::component::{HasData, Linker};

use super::PluginState;
use super::clock::Clock;
use super::config::Config;
use super::kv::Kv;
use super::log::Log;
use super::upstream::Upstream;
use crate::plugins::bindings::adapter::relay::plugin as now;
use crate::plugins::bindings::v0_1::adapter::relay::plugin as old;

struct HasLog;
impl HasData for HasLog {
    type Data<'a> = Log<'a>;
}
struct HasClock;
impl HasData for HasClock {
    type Data<'a> = Clock<'a>;
}
struct HasConfig;
impl HasData for HasConfig {
    type Data<'a> = Config<'a>;
}
struct HasKv;
impl HasData for HasKv {
    type Data<'a> = Kv<'a>;
}
struct HasUpstream;
impl HasData for HasUpstream {
    type Data<'a> = Upstream<'a>;
}

/// Adds the 0.1 interfaces to `linker`, beside the 0.2 ones.
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    old::log::add_to_linker::<_, HasLog>(linker, |state| Log(&state.ctx.caps.log))?;
    old::clock::add_to_linker::<_, HasClock>(linker, |state| Clock(&state.ctx.caps.clock))?;
    old::config::add_to_linker::<_, HasConfig>(linker, |state| Config(&state.ctx.caps.config))?;
    old::kv::add_to_linker::<_, HasKv>(linker, |state| Kv(&state.ctx.caps.kv))?;
    old::upstream::add_to_linker::<_, HasUpstream>(linker, |state| Upstream {
        grant: &state.ctx.caps.upstream,
        caller: state.caller.as_ref(),
    })
}

impl old::log::Host for Log<'_> {
    fn log(&mut self, level: old::log::Level, message: String) {
        use old::log::Level as L;
        let level = match level {
            L::Trace => now::log::Level::Trace,
            L::Debug => now::log::Level::Debug,
            L::Info => now::log::Level::Info,
            L::Warn => now::log::Level::Warn,
            L::Error => now::log::Level::Error,
        };
        now::log::Host::log(self, level, message)
    }
}

impl old::clock::Host for Clock<'_> {
    fn now_ms(&mut self) -> u64 {
        now::clock::Host::now_ms(self)
    }

    fn monotonic_ns(&mut self) -> u64 {
        now::clock::Host::monotonic_ns(self)
    }
}

impl old::config::Host for Config<'_> {
    fn get_json(&mut self) -> String {
        now::config::Host::get_json(self)
    }
}

fn old_kv_error(error: now::kv::KvError) -> old::kv::KvError {
    match error {
        now::kv::KvError::Unavailable(message) => old::kv::KvError::Unavailable(message),
        now::kv::KvError::Invalid(message) => old::kv::KvError::Invalid(message),
    }
}

impl old::kv::Host for Kv<'_> {
    async fn get(&mut self, key: String) -> Result<Option<String>, old::kv::KvError> {
        now::kv::Host::get(self, key).await.map_err(old_kv_error)
    }

    async fn set(&mut self, key: String, value: String, ttl_ms: Option<u64>) -> Result<(), old::kv::KvError> {
        now::kv::Host::set(self, key, value, ttl_ms).await.map_err(old_kv_error)
    }

    async fn delete(&mut self, key: String) -> Result<(), old::kv::KvError> {
        now::kv::Host::delete(self, key).await.map_err(old_kv_error)
    }

    async fn increment(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> Result<i64, old::kv::KvError> {
        now::kv::Host::increment(self, key, delta, ttl_ms).await.map_err(old_kv_error)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        new: String,
        ttl_ms: Option<u64>,
    ) -> Result<bool, old::kv::KvError> {
        now::kv::Host::compare_and_swap(self, key, expected, new, ttl_ms).await.map_err(old_kv_error)
    }
}

impl old::upstream::Host for Upstream<'_> {
    async fn call_tool(&mut self, backend: String, tool: String, arguments: String) -> Result<String, String> {
        now::upstream::Host::call_tool(self, backend, tool, arguments).await
    }
}
