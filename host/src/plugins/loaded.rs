//! One loaded version of a plugin: compiled, type-checked against its world,
//! pre-instantiated, and smoke-tested. Calls hold it by `Arc`, so a call that started on a
//! version finishes on it even if a reload swaps in another.
//!
//! Instances are kept warm: a call takes an idle instance of the version (or instantiates one
//! from the pool), and gives it back when the call succeeds. An instance whose call failed
//! (trap, deadline, memory cap) is dropped, never reused; so is one whose call left host
//! resources behind (an unfinished HTTP request, streams, fields) or grew its memory by more
//! than [`MAX_GROWTH`]: nothing a call creates outlives it. Guest memory therefore persists
//! between calls of one version (across sessions and principals) and may serve as a cache of
//! what is the same for everyone; state that must survive a reload belongs in `kv`.
//!
//! Loading is bounded too: instantiation and `list-tools` run under a load deadline, and an
//! adapter's catalog is capped ([`MAX_TOOLS`], [`MAX_DESCRIPTION`], [`MAX_SCHEMA`]).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;

use serde_json::{Value, json};
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};

use super::bindings::{adapter, auth, credentials, interceptor, policy, v0_1};
use super::cache;
use super::result_filter::ResultFilter;
use super::sandbox::{PluginContext, PluginError, PluginState, arm, classify, disarm, new_store};

use crate::config::World;

/// How much an instance's memory may grow beyond its size after instantiation before the
/// instance is dropped rather than kept warm.
pub const MAX_GROWTH: usize = 8 << 20;
/// Most tools one adapter may list.
pub const MAX_TOOLS: usize = 1000;
/// Longest tool description, in bytes.
pub const MAX_DESCRIPTION: usize = 8 * 1024;
/// Largest input schema, in bytes of JSON.
pub const MAX_SCHEMA: usize = 64 * 1024;
/// Longest a load (instantiation, `list-tools`) may take, whatever the plugin's deadline.
const MAX_LOAD: std::time::Duration = std::time::Duration::from_secs(10);

/// The pre-instantiated component, by world.
pub enum Instantiable {
    /// An `auth` component.
    Auth(auth::AuthPre<PluginState>),
    /// A `policy` component.
    Policy(policy::PolicyPre<PluginState>),
    /// An `adapter` component and the tools it listed when loaded.
    Adapter { pre: adapter::AdapterPre<PluginState>, tools: Arc<Vec<Value>> },
    /// An `interceptor` component.
    Interceptor(interceptor::InterceptorPre<PluginState>),
    /// A `credentials` component.
    Credentials(credentials::CredentialsPre<PluginState>),
    /// An `auth` component built against relay:plugin 0.1.
    AuthV01(v0_1::auth::AuthPre<PluginState>),
    /// A `policy` component built against relay:plugin 0.1.
    PolicyV01(v0_1::policy::PolicyPre<PluginState>),
    /// An `adapter` component built against relay:plugin 0.1, and its tools.
    AdapterV01 { pre: v0_1::adapter::AdapterPre<PluginState>, tools: Arc<Vec<Value>> },
}

/// An instance bound to its world's exports.
pub enum Bound {
    /// An instantiated `auth` component.
    Auth(auth::Auth),
    /// An instantiated `policy` component.
    Policy(policy::Policy),
    /// An instantiated `adapter` component.
    Adapter(adapter::Adapter),
    /// An instantiated `interceptor` component.
    Interceptor(interceptor::Interceptor),
    /// An instantiated `credentials` component.
    Credentials(credentials::Credentials),
    /// An instantiated 0.1 `auth` component.
    AuthV01(v0_1::auth::Auth),
    /// An instantiated 0.1 `policy` component.
    PolicyV01(v0_1::policy::Policy),
    /// An instantiated 0.1 `adapter` component.
    AdapterV01(v0_1::adapter::Adapter),
}

/// An instance with its store, ready for a call.
pub struct Warm {
    /// The instance's store (its sandbox).
    pub store: Store<PluginState>,
    /// The instance.
    pub bound: Bound,
    /// Host resources and memory bytes right after instantiation.
    baseline: (usize, usize),
}

/// One version of a plugin.
pub struct Version {
    /// SHA-256 of the `.wasm` file.
    pub hash: String,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Whether the compiled artifact came from the disk cache.
    pub from_cache: bool,
    /// Ready to instantiate.
    pub component: Instantiable,
    /// Idle instances of this version.
    idle: Mutex<Vec<Warm>>,
    /// The decisions of this version that stand for more requests (policy and interceptor
    /// plugins, `verdict.hold`).
    pub holds: super::holds::Holds,
    /// The rate-limited denials of this version that stand until their `retry-after-ms`
    /// (policy plugins).
    pub refusals: super::refusals::Refusals,
    /// The results this version's `on-result` need not see (`verdict.pass-results-without`).
    pub results: ArcSwapOption<ResultFilter>,
}

impl Version {
    /// Reads the component file at `path`.
    pub async fn read(ctx: &PluginContext, path: &Path) -> Result<Vec<u8>, PluginError> {
        tokio::fs::read(path).await.map_err(|e| PluginError::Load {
            plugin: ctx.name.clone(),
            message: format!("cannot read {}: {e}", path.display()),
        })
    }

    /// Compiles (or loads from cache), type-checks and smoke-instantiates `bytes` as `world`.
    pub async fn load(
        engine: &Engine,
        linker: &Linker<PluginState>,
        ctx: &Arc<PluginContext>,
        world: World,
        bytes: Vec<u8>,
        cache_dir: Option<&Path>,
    ) -> Result<Version, PluginError> {
        let fail = |message: String| PluginError::Load { plugin: ctx.name.clone(), message };
        let load_deadline =
            std::time::Duration::from_millis(ctx.limits.deadline_ms).clamp(std::time::Duration::from_secs(1), MAX_LOAD);
        let hash = cache::content_hash(&bytes);
        let (engine2, hash2, dir) = (engine.clone(), hash.clone(), cache_dir.map(Path::to_owned));
        let (component, from_cache) =
            tokio::task::spawn_blocking(move || cache::compile(&engine2, &bytes, &hash2, dir.as_deref()))
                .await
                .map_err(|e| fail(e.to_string()))?
                .map_err(|e| fail(format!("not a valid component: {e:#}")))?;
        // A contract this relay does not speak is named as such, not as a type mismatch (looked
        // for only when the component does not fit).
        let mismatch = |what: &str, e: wasmtime::Error| match unknown_contract(engine, &component) {
            Some(version) => fail(format!(
                "built against relay:plugin@{version}; this relay speaks relay:plugin 0.1 and 0.2 (build it against the wit/ of this relay's release)"
            )),
            None => fail(format!("{what} do not match the {} world: {e:#}", world.as_str())),
        };
        let pre = linker.instantiate_pre(&component).map_err(|e| mismatch("imports", e))?;
        let exports = |e: wasmtime::Error| mismatch("exports", e);
        let instantiate = async {
            Ok::<_, PluginError>(match world {
                // Each world in its current version, else as relay:plugin 0.1 built it.
                World::Auth => match auth::AuthPre::new(pre.clone()) {
                    Ok(pre) => {
                        let mut store = new_store(engine, ctx);
                        pre.instantiate_async(&mut store).await.map_err(|e| classify(e, &store))?;
                        Instantiable::Auth(pre)
                    }
                    Err(current) => {
                        let pre = v0_1::auth::AuthPre::new(pre).map_err(|_| exports(current))?;
                        let mut store = new_store(engine, ctx);
                        pre.instantiate_async(&mut store).await.map_err(|e| classify(e, &store))?;
                        Instantiable::AuthV01(pre)
                    }
                },
                World::Policy => match policy::PolicyPre::new(pre.clone()) {
                    Ok(pre) => {
                        let mut store = new_store(engine, ctx);
                        pre.instantiate_async(&mut store).await.map_err(|e| classify(e, &store))?;
                        Instantiable::Policy(pre)
                    }
                    Err(current) => {
                        let pre = v0_1::policy::PolicyPre::new(pre).map_err(|_| exports(current))?;
                        let mut store = new_store(engine, ctx);
                        pre.instantiate_async(&mut store).await.map_err(|e| classify(e, &store))?;
                        Instantiable::PolicyV01(pre)
                    }
                },
                World::Interceptor => {
                    let pre = interceptor::InterceptorPre::new(pre).map_err(exports)?;
                    let mut store = new_store(engine, ctx);
                    pre.instantiate_async(&mut store).await.map_err(|e| classify(e, &store))?;
                    Instantiable::Interceptor(pre)
                }
                World::Credentials => {
                    let pre = credentials::CredentialsPre::new(pre).map_err(exports)?;
                    let mut store = new_store(engine, ctx);
                    pre.instantiate_async(&mut store).await.map_err(|e| classify(e, &store))?;
                    Instantiable::Credentials(pre)
                }
                World::Adapter => match adapter::AdapterPre::new(pre.clone()) {
                    Ok(pre) => {
                        let tools = list_tools(engine, ctx, &pre).await?;
                        Instantiable::Adapter { pre, tools: Arc::new(tools) }
                    }
                    Err(current) => {
                        let pre = v0_1::adapter::AdapterPre::new(pre).map_err(|_| exports(current))?;
                        let tools = list_tools_v01(engine, ctx, &pre).await?;
                        Instantiable::AdapterV01 { pre, tools: Arc::new(tools) }
                    }
                },
            })
        };
        // A guest that loops or waits in `list-tools` or its start-up cannot hold start-up or a
        // reload (and the plugin's reload lock) hostage.
        let component = tokio::time::timeout(load_deadline, instantiate).await.map_err(|_| {
            fail(format!("instantiation and listing took longer than {} ms", load_deadline.as_millis()))
        })??;
        Ok(Version {
            hash,
            loaded_at: SystemTime::now(),
            from_cache,
            component,
            idle: Mutex::new(Vec::new()),
            holds: Default::default(),
            refusals: Default::default(),
            results: Default::default(),
        })
    }

    /// Drops what this version built up while it ran: its holds and its idle instances (and
    /// their guest memory). A version replaced keeps nothing it would not need, and one a
    /// rollback switches back to starts afresh, as a reload's would: holds given before it was
    /// replaced do not stand again.
    pub fn start_afresh(&self) {
        self.holds.clear();
        self.refusals.clear();
        self.idle.lock().expect("idle lock").clear();
    }

    /// An instance for one call: an idle one, or a new one from the pool.
    pub async fn checkout(&self, engine: &Engine, ctx: &Arc<PluginContext>) -> Result<Warm, PluginError> {
        let idle = self.idle.lock().expect("idle lock").pop();
        if let Some(mut warm) = idle {
            arm(&mut warm.store);
            return Ok(warm);
        }
        let mut store = new_store(engine, ctx);
        let bound = match &self.component {
            Instantiable::Auth(pre) => pre.instantiate_async(&mut store).await.map(Bound::Auth),
            Instantiable::Policy(pre) => pre.instantiate_async(&mut store).await.map(Bound::Policy),
            Instantiable::Adapter { pre, .. } => pre.instantiate_async(&mut store).await.map(Bound::Adapter),
            Instantiable::Interceptor(pre) => pre.instantiate_async(&mut store).await.map(Bound::Interceptor),
            Instantiable::Credentials(pre) => pre.instantiate_async(&mut store).await.map(Bound::Credentials),
            Instantiable::AuthV01(pre) => pre.instantiate_async(&mut store).await.map(Bound::AuthV01),
            Instantiable::PolicyV01(pre) => pre.instantiate_async(&mut store).await.map(Bound::PolicyV01),
            Instantiable::AdapterV01 { pre, .. } => pre.instantiate_async(&mut store).await.map(Bound::AdapterV01),
        };
        match bound {
            Ok(bound) => {
                let baseline = (store.data_mut().resources(), store.data().memory_bytes());
                Ok(Warm { store, bound, baseline })
            }
            Err(e) => Err(classify(e, &store)),
        }
    }

    /// Returns an instance whose call succeeded: kept warm unless the call left resources
    /// behind, its memory grew too much, or `limits.max_idle_instances` are already idle.
    pub fn checkin(&self, mut warm: Warm, ctx: &PluginContext) {
        let resources = warm.store.data_mut().resources();
        let memory = warm.store.data().memory_bytes();
        if resources > warm.baseline.0 {
            tracing::debug!(plugin = %ctx.name, left = resources - warm.baseline.0, "instance dropped: its call left host resources behind");
            return;
        }
        if memory > warm.baseline.1 + MAX_GROWTH {
            tracing::debug!(plugin = %ctx.name, grown_mb = (memory - warm.baseline.1) >> 20, "instance dropped: its memory grew");
            return;
        }
        disarm(&mut warm.store);
        let mut idle = self.idle.lock().expect("idle lock");
        if idle.len() < ctx.limits.max_idle_instances {
            idle.push(warm);
        }
    }

    /// The adapter's tools as MCP tool definitions (empty for other worlds).
    pub fn tools(&self) -> Arc<Vec<Value>> {
        match &self.component {
            Instantiable::Adapter { tools, .. } | Instantiable::AdapterV01 { tools, .. } => tools.clone(),
            _ => Arc::default(),
        }
    }
}

async fn list_tools(
    engine: &Engine,
    ctx: &Arc<PluginContext>,
    pre: &adapter::AdapterPre<PluginState>,
) -> Result<Vec<Value>, PluginError> {
    let mut store = new_store(engine, ctx);
    let listed = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.relay_plugin_tools().call_list_tools(&mut store).await
    }
    .await;
    let listed = listed.map_err(|e| classify(e, &store))?;
    checked_tools(ctx, listed)
}

/// [`list_tools`] for an adapter built against relay:plugin 0.1.
async fn list_tools_v01(
    engine: &Engine,
    ctx: &Arc<PluginContext>,
    pre: &v0_1::adapter::AdapterPre<PluginState>,
) -> Result<Vec<Value>, PluginError> {
    let mut store = new_store(engine, ctx);
    let listed = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance.relay_plugin_tools().call_list_tools(&mut store).await
    }
    .await;
    let listed = listed.map_err(|e| classify(e, &store))?;
    let listed = listed
        .into_iter()
        .map(|t| adapter::exports::relay::plugin::tools::Tool {
            name: t.name,
            description: t.description,
            input_schema: t.input_schema,
        })
        .collect();
    checked_tools(ctx, listed)
}

/// An adapter's listing held to the catalog caps, as MCP tool definitions.
fn checked_tools(
    ctx: &Arc<PluginContext>,
    listed: Vec<adapter::exports::relay::plugin::tools::Tool>,
) -> Result<Vec<Value>, PluginError> {
    let refuse = |message: String| PluginError::Load { plugin: ctx.name.clone(), message };
    if listed.len() > MAX_TOOLS {
        return Err(refuse(format!("lists {} tools; at most {MAX_TOOLS} are accepted", listed.len())));
    }
    if let Some(tool) = listed.iter().find(|t| t.description.len() > MAX_DESCRIPTION) {
        return Err(refuse(format!("tool {}: description over {MAX_DESCRIPTION} bytes", tool.name)));
    }
    if let Some(tool) = listed.iter().find(|t| t.input_schema.len() > MAX_SCHEMA) {
        return Err(refuse(format!("tool {}: input-schema over {MAX_SCHEMA} bytes", tool.name)));
    }
    // Listed all the same (the catalog makes such a name fit, or leaves out an empty one or a
    // second of one name), but said: the WIT asks for names that fit.
    let mut seen = std::collections::HashSet::new();
    let unfit: Vec<&str> = listed
        .iter()
        .filter(|t| !crate::mcp::names::fits(&t.name) || !seen.insert(t.name.as_str()))
        .map(|t| t.name.as_str())
        .collect();
    if !unfit.is_empty() {
        let first: Vec<_> = unfit.iter().take(5).map(|name| crate::mcp::clip(name)).collect();
        tracing::warn!(plugin = %ctx.name, count = unfit.len(), first = ?first, "adapter lists tool names that are not [A-Za-z0-9_.-]{{1,128}} or are listed twice: the catalog shows them changed (other characters as _, cut to 128), or leaves them out (empty, or a second of one name)");
    }
    listed
        .into_iter()
        .map(|tool| {
            let schema: Value = serde_json::from_str(&tool.input_schema).map_err(|e| PluginError::Load {
                plugin: ctx.name.clone(),
                message: format!("tool {}: input-schema is not JSON: {e}", tool.name),
            })?;
            Ok(json!({"name": tool.name, "description": tool.description, "inputSchema": schema}))
        })
        .collect()
}

/// A `relay:plugin` version `component` imports or exports that this relay does not speak (it
/// speaks 0.1.x and 0.2.x), if any.
fn unknown_contract(engine: &Engine, component: &wasmtime::component::Component) -> Option<String> {
    let ty = component.component_type();
    ty.imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name))
        .filter_map(|name| name.strip_prefix("relay:plugin/")?.split_once('@').map(|(_, version)| version))
        .find(|version| !(version.starts_with("0.1.") || version.starts_with("0.2.")))
        .map(str::to_owned)
}
