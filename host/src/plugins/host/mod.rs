//! The host side of the interfaces plugins import, one capability module each: its state built
//! from the plugin's grants, its `Host` impl on a view of that state, and its own
//! `add_to_linker` (the way wasmtime's `wasmtime-wasi-config` does it). Adding an interface
//! touches the WIT, one new module, a field of [`Capabilities`] and one line in [`linker`].

mod clock;
mod config;
mod credential;
mod http;
mod kv;
mod log;
mod upstream;
mod v0_1;
mod verdict;
mod wasi;

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::Linker;

pub use credential::CredentialNote;
pub use http::HttpGrant;
pub use verdict::VerdictNote;
pub use wasi::WasiGrant;

use super::kv_store::{KvStore, Quota};
use super::sandbox::PluginState;
use super::{BackendCalls, PluginError};
use crate::config::{PluginConfig, World};

/// What one plugin may do through each interface it imports, built once from its grants and
/// shared by all its calls.
pub struct Capabilities {
    /// WASI: environment, clocks, directories.
    pub wasi: WasiGrant,
    /// `wasi:http` outgoing requests.
    pub http: HttpGrant,
    /// `relay:plugin/log`.
    pub log: log::LogGrant,
    /// `relay:plugin/clock`.
    pub clock: clock::ClockGrant,
    /// `relay:plugin/config`.
    pub config: config::ConfigGrant,
    /// `relay:plugin/kv`.
    pub kv: kv::KvGrant,
    /// `relay:plugin/upstream` (adapters).
    pub upstream: upstream::UpstreamGrant,
}

impl Capabilities {
    /// The capabilities `config` grants; `kv` is the shared store, `backends` the way to the
    /// backends (handed only to adapters).
    pub fn new(
        config: &PluginConfig,
        relay_yaml: &Path,
        kv: Arc<KvStore>,
        backends: Arc<dyn BackendCalls>,
    ) -> Result<Self, PluginError> {
        let name = config.name.as_str();
        let limits = &config.limits;
        Ok(Self {
            wasi: WasiGrant::new(config, relay_yaml)?,
            http: HttpGrant::new(name, &config.grants.http, limits.max_outgoing_requests),
            log: log::LogGrant::new(name, limits.logs_per_sec),
            clock: clock::ClockGrant { granted: config.grants.clock },
            config: config::ConfigGrant { json: config.config_json() },
            kv: kv::KvGrant::new(name, kv, Quota { entries: limits.kv_entries, bytes: limits.kv_bytes }),
            upstream: upstream::UpstreamGrant::new(
                name,
                (config.world == World::Adapter).then_some(backends),
                config.grants.backends.clone(),
            ),
        })
    }

    /// `log` records dropped by the budget, for status.
    pub fn logs_dropped(&self) -> u64 {
        self.log.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `kv` writes refused by the quota, for status.
    pub fn kv_refusals(&self) -> u64 {
        self.kv.refusals.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A linker with WASI and every relay host interface. The adapter world imports them all, and
/// the auth and policy worlds import a subset, so one linker serves every plugin.
pub fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::<PluginState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // Every plugin may import wasi:http; the store's grant decides where requests may go.
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    log::add_to_linker(&mut linker, |state| log::Log(&state.ctx.caps.log))?;
    clock::add_to_linker(&mut linker, |state| clock::Clock(&state.ctx.caps.clock))?;
    config::add_to_linker(&mut linker, |state| config::Config(&state.ctx.caps.config))?;
    credential::add_to_linker(&mut linker, |state| credential::Credential(&mut state.credential))?;
    verdict::add_to_linker(&mut linker, |state| verdict::Verdict(&mut state.verdict))?;
    kv::add_to_linker(&mut linker, |state| kv::Kv(&state.ctx.caps.kv))?;
    upstream::add_to_linker(&mut linker, |state| upstream::Upstream {
        grant: &state.ctx.caps.upstream,
        caller: state.caller.as_ref(),
    })?;
    // Plugins built against relay:plugin 0.1.0 import these.
    v0_1::add_to_linker(&mut linker)?;
    Ok(linker)
}
