//! A plugin instance's sandbox: a `Store` whose data holds the WASI context and `wasi:http`
//! gate built from the grants (see `host/`), a memory cap, and an epoch deadline re-armed for
//! every call. A store lives as long as its warm instance (`loaded.rs` reuses it across calls
//! and drops it after a failure). Failures are classified so the caller can report them.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::engine::{EpochClock, TICK, Ticking};
use super::host::{Capabilities, HttpGrant};
use serde_json::json;

use crate::access::{Denial, Principal, RequestInfo, Route, TransportKind};
use crate::config::{OnError, PluginConfig, PluginLimits};
use crate::mcp::{RpcError, error_codes};

/// Why a plugin call failed. The plugin stays loaded; only this call is lost.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The call ran past its deadline and was interrupted.
    #[error("plugin {plugin} exceeded its {deadline_ms} ms deadline")]
    Timeout { plugin: String, deadline_ms: u64 },
    /// The call never started: every call slot stayed taken until its deadline, or the pool
    /// had no instance slot left. Load, not a fault of the plugin: `fail-open` does not skip
    /// it.
    #[error("plugin {plugin} is busy: no call slot within {deadline_ms} ms")]
    Busy { plugin: String, deadline_ms: u64 },
    /// The call tried to grow memory past the cap.
    #[error("plugin {plugin} ran out of memory (cap {memory_mb} MiB)")]
    OutOfMemory { plugin: String, memory_mb: u64 },
    /// The guest trapped (panic, unreachable, bad access).
    #[error("plugin {plugin} trapped: {message}")]
    Trap { plugin: String, message: String },
    /// The plugin could not be loaded or instantiated.
    #[error("plugin {plugin}: {message}")]
    Load { plugin: String, message: String },
    /// The plugin answered with something the host cannot use.
    #[error("plugin {plugin}: {message}")]
    BadAnswer { plugin: String, message: String },
    /// No adapter of that name is loaded (the catalog changed under the call).
    #[error("no adapter plugin named {0}")]
    NoSuchAdapter(String),
}

/// What every call of one plugin shares: set up once per plugin, not per call.
pub struct PluginContext {
    /// The plugin's name (log field).
    pub name: String,
    /// Per-call bounds.
    pub limits: PluginLimits,
    /// What it may do through each interface it imports.
    pub caps: Capabilities,
    /// The engine's epoch, which must advance while one of this plugin's stores is armed.
    pub epoch: Arc<EpochClock>,
}

/// The client whose request an adapter call serves: backend calls the plugin makes go through
/// the policy chain as this client.
#[derive(Clone)]
pub struct Caller {
    /// Who the client is.
    pub principal: Principal,
    /// The client's session.
    pub session_id: String,
    /// The client's transport.
    pub transport: TransportKind,
    /// The policy chain.
    pub admit: Admission,
    /// The bearer token the caller authenticated with (for `token_exchange` backends).
    pub bearer: Option<crate::access::Bearer>,
}

impl Caller {
    /// A request of `method` by this client, as the policy chain sees it (for a `tools/call`,
    /// the tool the client named and where it goes, when it exists).
    pub fn asking<'a>(&'a self, method: &'a str, tool: Option<&'a str>, route: Option<Route<'a>>) -> RequestInfo<'a> {
        RequestInfo {
            principal: &self.principal,
            session_id: &self.session_id,
            transport: self.transport,
            method,
            tool,
            route,
        }
    }

    /// A `tools/call` of `route` by this client (an adapter's call of a backend's tool).
    pub fn tool_call<'a>(&'a self, route: Route<'a>) -> RequestInfo<'a> {
        self.asking("tools/call", Some(route.tool), Some(route))
    }
}

/// Runs the policy chain on a request (the session hands it in, so plugins need no policy).
pub type Admission = Arc<
    dyn for<'a> Fn(RequestInfo<'a>) -> std::pin::Pin<Box<dyn Future<Output = Result<(), super::Refusal>> + Send + 'a>>
        + Send
        + Sync,
>;

/// The data of one call's `Store`.
pub struct PluginState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_grant: HttpGrant,
    table: ResourceTable,
    limiter: CallLimiter,
    /// The plugin's shared context.
    pub ctx: Arc<PluginContext>,
    /// The client the current call serves (adapters), while it runs.
    pub caller: Option<Caller>,
    /// What the current `authenticate` call said of its credential (auth plugins).
    pub credential: super::host::CredentialNote,
    /// What the current `check` or `on-request` call is told and says about holds.
    pub verdict: super::host::VerdictNote,
    /// Held from [`arm`] until the instance is idle again (`loaded.rs`) or dropped.
    ticking: Option<Ticking>,
}

impl PluginState {
    /// How many host resources (streams, HTTP requests, fields, ...) the store holds.
    pub fn resources(&mut self) -> usize {
        self.table.iter_mut().count()
    }

    /// The instance's linear memory now, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.limiter.current
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_grant }
    }
}

/// Caps linear memory, remembers whether the cap was hit (to name out-of-memory traps) and
/// how large memory is now (to drop instances that grew).
struct CallLimiter {
    max_bytes: usize,
    denied: bool,
    current: usize,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        self.current = self.current.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A new store for an instance of the plugin behind `ctx` (kept warm across calls by `loaded.rs`).
pub fn new_store(engine: &wasmtime::Engine, ctx: &Arc<PluginContext>) -> Store<PluginState> {
    let limiter = CallLimiter { max_bytes: (ctx.limits.memory_mb as usize) << 20, denied: false, current: 0 };
    let http_grant = ctx.caps.http.clone();
    let mut table = ResourceTable::new();
    // Host resources are host memory: one call cannot pile up more than this many.
    table.set_max_capacity(MAX_RESOURCES);
    let state = PluginState {
        wasi: ctx.caps.wasi.build(),
        http: WasiHttpCtx::new(),
        http_grant,
        table,
        limiter,
        ctx: ctx.clone(),
        caller: None,
        credential: Default::default(),
        verdict: Default::default(),
        ticking: None,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    arm(&mut store);
    store
}

/// Most host resources one store may hold.
const MAX_RESOURCES: usize = 4096;

/// Prepares a (new or warm) store for one call: a clean memory-cap flag, the epoch advancing
/// until [`disarm`], and guest code that yields to the runtime at every epoch tick, so a busy
/// guest never holds a worker thread and the call's wall-clock deadline (enforced around the
/// call) can end it.
pub fn arm(store: &mut Store<PluginState>) {
    let state = store.data_mut();
    state.ticking = Some(state.ctx.epoch.ticking());
    state.limiter.denied = false;
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(YIELD_EVERY.as_millis().div_ceil(TICK.as_millis()).max(1) as u64);
}

/// Marks a store whose call is over as idle (the epoch need not advance for it).
pub fn disarm(store: &mut Store<PluginState>) {
    store.data_mut().ticking = None;
}

/// How often running guest code yields to the runtime.
const YIELD_EVERY: std::time::Duration = std::time::Duration::from_millis(2);

/// Names a failed call: timeout, out of memory or another trap.
pub fn classify(error: wasmtime::Error, store: &Store<PluginState>) -> PluginError {
    let ctx = &store.data().ctx;
    let plugin = ctx.name.clone();
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        PluginError::Timeout { plugin, deadline_ms: ctx.limits.deadline_ms }
    } else if error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
        // Every instance slot of the pool is taken: load, not a fault of the plugin.
        PluginError::Busy { plugin, deadline_ms: ctx.limits.deadline_ms }
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

/// Why authentication or policy did not let something through.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// A plugin (or a built-in rule) said no.
    #[error(transparent)]
    Denied(#[from] Denial),
    /// A plugin failed (trap, timeout, out of memory); the request fails, the plugin stays.
    #[error(transparent)]
    Failed(#[from] PluginError),
}

impl From<Refusal> for RpcError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Denied(denial) => denial.into(),
            // A busy plugin is load: the client may try again shortly.
            Refusal::Failed(error @ PluginError::Busy { .. }) => {
                RpcError::new(error_codes::RATE_LIMITED, error.to_string()).with_data(json!({"retry_after_ms": 1000}))
            }
            Refusal::Failed(error) => RpcError::new(error_codes::INTERNAL_ERROR, error.to_string()),
        }
    }
}

/// Whether a failure of a policy or interceptor stops what it was asked about (`on_error:
/// fail-closed`); under `fail-open` the failure is logged and counted here and the plugin is
/// skipped. A busy plugin is load, not a fault: skipping it would let a flood past it.
pub fn fails_closed(config: &PluginConfig, error: &PluginError) -> bool {
    match config.on_error {
        OnError::FailClosed => true,
        OnError::FailOpen if matches!(error, PluginError::Busy { .. }) => true,
        OnError::FailOpen => {
            crate::metrics::metrics().plugins.failed_open(&config.name);
            tracing::warn!(plugin = %config.name, %error, "plugin failed; going on without it (on_error: fail-open)");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(on_error: &str) -> PluginConfig {
        serde_yaml::from_str(&format!("{{name: p, world: policy, path: p.wasm, on_error: {on_error}}}")).unwrap()
    }

    #[test]
    fn fail_open_skips_a_fault_but_never_a_busy_plugin() {
        let busy = PluginError::Busy { plugin: "p".into(), deadline_ms: 100 };
        let trap = PluginError::Trap { plugin: "p".into(), message: "boom".into() };
        assert!(fails_closed(&config("fail-closed"), &trap) && fails_closed(&config("fail-closed"), &busy));
        assert!(!fails_closed(&config("fail-open"), &trap), "a fault is skipped");
        assert!(fails_closed(&config("fail-open"), &busy), "load is not skipped");
        let refused = RpcError::from(Refusal::Failed(busy));
        assert_eq!(refused.code, error_codes::RATE_LIMITED, "busy asks the client to come back");
        assert_eq!(RpcError::from(Refusal::Failed(trap)).code, error_codes::INTERNAL_ERROR);
    }
}
