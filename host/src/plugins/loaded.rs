//! One loaded version of a plugin: compiled, type-checked against its world,
//! pre-instantiated, and smoke-tested. Calls hold it by `Arc`, so a call that started on a
//! version finishes on it even if a reload swaps in another.
//!
//! Instances are kept warm: a call takes an idle instance of the version (or instantiates one
//! from the pool), and gives it back when the call succeeds. An instance whose call failed
//! (trap, deadline, memory cap) is dropped, never reused. Guest memory therefore persists
//! between calls of one version and may serve as a cache; state that must survive a reload
//! belongs in `kv`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Value, json};
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};

use super::bindings::{adapter, auth, policy};
use super::cache;
use super::sandbox::{PluginContext, PluginError, PluginState, arm, classify, new_store};

/// Most idle instances kept per version.
const MAX_IDLE: usize = 64;
use crate::config::World;

/// The pre-instantiated component, by world.
pub enum Instantiable {
    /// An `auth` component.
    Auth(auth::AuthPre<PluginState>),
    /// A `policy` component.
    Policy(policy::PolicyPre<PluginState>),
    /// An `adapter` component and the tools it listed when loaded.
    Adapter { pre: adapter::AdapterPre<PluginState>, tools: Arc<Vec<Value>> },
}

/// An instance bound to its world's exports.
pub enum Bound {
    /// An instantiated `auth` component.
    Auth(auth::Auth),
    /// An instantiated `policy` component.
    Policy(policy::Policy),
    /// An instantiated `adapter` component.
    Adapter(adapter::Adapter),
}

/// An instance with its store, ready for a call.
pub struct Warm {
    /// The instance's store (its sandbox).
    pub store: Store<PluginState>,
    /// The instance.
    pub bound: Bound,
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
        let hash = cache::content_hash(&bytes);
        let (engine2, hash2, dir) = (engine.clone(), hash.clone(), cache_dir.map(Path::to_owned));
        let (component, from_cache) =
            tokio::task::spawn_blocking(move || cache::compile(&engine2, &bytes, &hash2, dir.as_deref()))
                .await
                .map_err(|e| fail(e.to_string()))?
                .map_err(|e| fail(format!("not a valid component: {e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| fail(format!("imports do not match the {} world: {e:#}", world.as_str())))?;
        let exports = |e: wasmtime::Error| fail(format!("exports do not match the {} world: {e:#}", world.as_str()));
        let component = match world {
            World::Auth => {
                let pre = auth::AuthPre::new(pre).map_err(exports)?;
                let mut store = new_store(engine, ctx);
                pre.instantiate_async(&mut store).await.map_err(|e| classify(e, &store))?;
                Instantiable::Auth(pre)
            }
            World::Policy => {
                let pre = policy::PolicyPre::new(pre).map_err(exports)?;
                let mut store = new_store(engine, ctx);
                pre.instantiate_async(&mut store).await.map_err(|e| classify(e, &store))?;
                Instantiable::Policy(pre)
            }
            World::Adapter => {
                let pre = adapter::AdapterPre::new(pre).map_err(exports)?;
                let tools = list_tools(engine, ctx, &pre).await?;
                Instantiable::Adapter { pre, tools: Arc::new(tools) }
            }
        };
        Ok(Version { hash, loaded_at: SystemTime::now(), from_cache, component, idle: Mutex::new(Vec::new()) })
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
        };
        match bound {
            Ok(bound) => Ok(Warm { store, bound }),
            Err(e) => Err(classify(e, &store)),
        }
    }

    /// Returns an instance whose call succeeded.
    pub fn checkin(&self, warm: Warm) {
        let mut idle = self.idle.lock().expect("idle lock");
        if idle.len() < MAX_IDLE {
            idle.push(warm);
        }
    }

    /// The adapter's tools as MCP tool definitions (empty for other worlds).
    pub fn tools(&self) -> Arc<Vec<Value>> {
        match &self.component {
            Instantiable::Adapter { tools, .. } => tools.clone(),
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
