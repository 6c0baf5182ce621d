//! One loaded version of a plugin: compiled, type-checked against its world,
//! pre-instantiated, and smoke-tested. Immutable once built; calls hold it by `Arc`, so a call
//! that started on a version finishes on it even if a reload swaps in another.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};
use wasmtime::Engine;
use wasmtime::component::Linker;

use super::bindings::{adapter, auth, policy};
use super::cache;
use super::sandbox::{PluginContext, PluginError, PluginState, classify, new_store};
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
        Ok(Version { hash, loaded_at: SystemTime::now(), from_cache, component })
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
