//! A plugin instance's sandbox: a `Store` with its own WASI context (only the granted
//! environment variables and clocks, no filesystem, no network), a memory cap, and an epoch
//! deadline re-armed for every call. Failures are classified so the caller can report them
//! clearly.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::engine::TICK;
use super::kv::KvStore;
use crate::config::PluginLimits;
use crate::upstream::Upstreams;

/// Why a plugin call failed. The plugin stays loaded; only this call is lost.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The call ran past its deadline and was interrupted.
    #[error("plugin {plugin} exceeded its {deadline_ms} ms deadline")]
    Timeout { plugin: String, deadline_ms: u64 },
    /// The call tried to grow memory past the cap.
    #[error("plugin {plugin} ran out of memory (cap {memory_mb} MiB)")]
    OutOfMemory { plugin: String, memory_mb: u64 },
    /// The guest trapped (panic, unreachable, bad access).
    #[error("plugin {plugin} trapped: {message}")]
    Trap { plugin: String, message: String },
    /// The plugin could not be loaded or instantiated.
    #[error("plugin {plugin}: {message}")]
    Load { plugin: String, message: String },
}

/// What every call of one plugin shares: set up once per plugin, not per call.
pub struct PluginContext {
    /// The plugin's name (log field, kv prefix).
    pub name: String,
    /// Its configuration as JSON.
    pub config_json: String,
    /// Granted environment variables with their values at start-up.
    pub env: Vec<(String, String)>,
    /// Whether the clocks are granted.
    pub clock: bool,
    /// Per-call bounds.
    pub limits: PluginLimits,
    /// The shared store behind `kv`.
    pub kv: Arc<KvStore>,
    /// The backends, for adapters' `upstream` import.
    pub upstreams: Option<Arc<Upstreams>>,
}

impl PluginContext {
    /// `key` in this plugin's namespace.
    pub fn kv_key(&self, key: &str) -> String {
        format!("{}:{key}", self.name)
    }
}

/// The data of one call's `Store`.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: CallLimiter,
    /// The plugin's shared context.
    pub ctx: Arc<PluginContext>,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Caps linear memory and remembers whether the cap was hit (to name out-of-memory traps).
struct CallLimiter {
    max_bytes: usize,
    denied: bool,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A clock that never moves, for plugins without the clock grant.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A fresh store for one call of the plugin behind `ctx`.
pub fn new_store(engine: &wasmtime::Engine, ctx: &Arc<PluginContext>) -> Store<PluginState> {
    let mut wasi = WasiCtxBuilder::new();
    for (name, value) in &ctx.env {
        wasi.env(name, value);
    }
    if !ctx.clock {
        wasi.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
    }
    wasi.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    let limiter = CallLimiter { max_bytes: (ctx.limits.memory_mb as usize) << 20, denied: false };
    let state = PluginState { wasi: wasi.build(), table: ResourceTable::new(), limiter, ctx: ctx.clone() };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    arm(&mut store);
    store
}

/// Prepares a (new or warm) store for one call: a fresh deadline and a clean memory-cap flag.
pub fn arm(store: &mut Store<PluginState>) {
    store.data_mut().limiter.denied = false;
    let ticks = store.data().ctx.limits.deadline_ms.div_ceil(TICK.as_millis() as u64).max(1);
    store.set_epoch_deadline(ticks);
}

/// Names a failed call: timeout, out of memory or another trap.
pub fn classify(error: wasmtime::Error, store: &Store<PluginState>) -> PluginError {
    let ctx = &store.data().ctx;
    let plugin = ctx.name.clone();
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        PluginError::Timeout { plugin, deadline_ms: ctx.limits.deadline_ms }
    } else if store.data().limiter.denied {
        PluginError::OutOfMemory { plugin, memory_mb: ctx.limits.memory_mb }
    } else {
        let message = match error.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => error.root_cause().to_string(),
        };
        PluginError::Trap { plugin, message }
    }
}
