//! The loaded plugins, in configuration order, and everything the rest of the relay asks of
//! them: authenticate, check, list and call adapter tools, reload, roll back, report.
//!
//! Each plugin has a current version and the previous good one, both behind `ArcSwap`: a
//! reload builds a complete new version first and then publishes it in one store, so a call
//! either sees the old version or the new one, and finishes on the one it started with.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use serde_json::{Value, json};
use tokio::sync::watch;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};

use super::bindings::{self, types};
use super::kv_store::{KvStore, Quota};
use super::loaded::{Bound, Version};
use super::sandbox::{Caller, PluginContext, PluginError, PluginState, classify};
use super::{engine, host};
use crate::access::{ConnectInfo, Denial, DenialCode, Principal, RequestInfo, TransportKind};
use crate::config::{PluginConfig, World};
use crate::mcp::{RpcError, error_codes};

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
            Refusal::Failed(error) => RpcError::new(error_codes::INTERNAL_ERROR, error.to_string()),
        }
    }
}

/// Counters per plugin, for status (and metrics later).
#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    denials: AtomicU64,
    traps: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

/// One configured plugin.
struct Slot {
    config: PluginConfig,
    /// The resolved `.wasm` path.
    path: PathBuf,
    /// Shared by every call of every version.
    ctx: Arc<PluginContext>,
    current: ArcSwap<Version>,
    /// The previous good version, for `relay_rollback_plugin`.
    previous: ArcSwapOption<Version>,
    stats: Stats,
    /// The last load or call failure, for status.
    last_error: Mutex<Option<String>>,
    /// Hash of the last file that failed to load, so the same bad file is not retried (and
    /// counted) on every file event.
    last_failed_hash: Mutex<Option<String>>,
    /// Serialises reloads and rollbacks of this plugin.
    reloading: tokio::sync::Mutex<()>,
    /// One permit per call that may run at once (`limits.max_concurrent_calls`).
    calls_at_once: Arc<tokio::sync::Semaphore>,
    /// Hash of the version a rollback went away from: not loaded again until the file's
    /// content changes.
    rolled_back: Mutex<Option<String>>,
}

impl Slot {
    /// One call on a warm instance of the current version: counted, the instance given back
    /// when the call succeeds, dropped (and the failure recorded) when it traps.
    async fn invoke<T>(
        &self,
        engine: &Engine,
        caller: Option<Caller>,
        call: impl AsyncFnOnce(&Bound, &mut Store<PluginState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let version = self.current.load_full();
        // The deadline covers waiting for a call slot, running guest code (which yields at
        // every epoch tick) and waiting in the host (an outgoing HTTP request, a clock sleep).
        // A call cut short drops its store.
        let deadline_ms = self.ctx.limits.deadline_ms;
        let run = async {
            let _slot = self.calls_at_once.acquire().await.expect("call slots are never closed");
            let mut warm = version.checkout(engine, &self.ctx).await?;
            warm.store.data_mut().caller = caller;
            let outcome = call(&warm.bound, &mut warm.store).await;
            warm.store.data_mut().caller = None;
            Ok::<_, PluginError>((outcome, warm))
        };
        match tokio::time::timeout(Duration::from_millis(deadline_ms), run).await {
            Ok(Err(error)) => {
                self.record_failure(&error);
                Err(error)
            }
            Ok(Ok((Ok(value), warm))) => {
                version.checkin(warm, &self.ctx);
                Ok(value)
            }
            Ok(Ok((Err(e), warm))) => {
                let error = classify(e, &warm.store);
                self.record_failure(&error);
                Err(error)
            }
            Err(_) => {
                let error = PluginError::Timeout { plugin: self.config.name.clone(), deadline_ms };
                self.record_failure(&error);
                Err(error)
            }
        }
    }

    fn record_failure(&self, error: &PluginError) {
        self.stats.traps.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().expect("last_error lock") = Some(error.to_string());
        tracing::warn!(plugin = %self.config.name, error = %error, "plugin call failed");
    }
}

/// Every loaded plugin.
pub struct Plugins {
    engine: Engine,
    linker: Linker<PluginState>,
    cache_dir: Option<PathBuf>,
    slots: Vec<Arc<Slot>>,
    /// Bumped when an adapter's tools may have changed (reload, rollback).
    changed: watch::Sender<u64>,
}

impl Plugins {
    /// Loads every configured plugin; fails if any does not load (a relay must not start with
    /// half its policy).
    pub async fn load(
        configs: &[PluginConfig],
        relay_yaml: &Path,
        cache_dir: Option<PathBuf>,
        kv: Arc<KvStore>,
        backends: Arc<dyn super::BackendCalls>,
    ) -> Result<Arc<Plugins>, PluginError> {
        let setup = |message: String| PluginError::Load { plugin: "relay".into(), message };
        let engine = engine::build().map_err(|e| setup(format!("wasm engine: {e:#}")))?;
        let linker = host::linker(&engine).map_err(|e| setup(format!("wasm linker: {e:#}")))?;
        let mut slots = Vec::new();
        for config in configs {
            let env = config.grants.env.iter().filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v))).collect();
            let ctx = Arc::new(PluginContext {
                name: config.name.clone(),
                config_json: config.config_json(),
                env,
                clock: config.grants.clock,
                limits: config.limits.clone(),
                kv: kv.clone(),
                backends_door: (config.world == World::Adapter).then(|| backends.clone()),
                http_hosts: config.grants.http.iter().cloned().collect(),
                read_dirs: granted_dirs(config, relay_yaml, false)?,
                write_dirs: granted_dirs(config, relay_yaml, true)?,
                kv_quota: Quota { entries: config.limits.kv_entries, bytes: config.limits.kv_bytes },
                kv_refusals: AtomicU64::new(0),
                outgoing: Arc::new(tokio::sync::Semaphore::new(config.limits.max_outgoing_requests)),
                log_budget: Mutex::new((std::time::Instant::now(), 0)),
                logs_dropped: AtomicU64::new(0),
                backends: config.grants.backends.clone(),
            });
            let path = config.resolved_path(relay_yaml);
            let bytes = Version::read(&ctx, &path).await?;
            let version = Version::load(&engine, &linker, &ctx, config.world, bytes, cache_dir.as_deref()).await?;
            tracing::info!(plugin = %config.name, world = config.world.as_str(), hash = %&version.hash[..12], cached = version.from_cache, "plugin loaded");
            slots.push(Arc::new(Slot {
                config: config.clone(),
                path,
                ctx,
                current: ArcSwap::from_pointee(version),
                previous: ArcSwapOption::empty(),
                stats: Stats::default(),
                last_error: Mutex::new(None),
                last_failed_hash: Mutex::new(None),
                reloading: tokio::sync::Mutex::new(()),
                calls_at_once: Arc::new(tokio::sync::Semaphore::new(config.limits.max_concurrent_calls)),
                rolled_back: Mutex::new(None),
            }));
        }
        Ok(Arc::new(Plugins { engine, linker, cache_dir, slots, changed: watch::Sender::new(0) }))
    }

    /// Whether an auth plugin is configured (without one the relay is open).
    pub fn has_auth(&self) -> bool {
        self.slots.iter().any(|s| s.config.world == World::Auth)
    }

    /// The `.wasm` paths, by plugin name (for the file watch).
    pub fn paths(&self) -> Vec<(String, PathBuf)> {
        self.slots.iter().map(|s| (s.config.name.clone(), s.path.clone())).collect()
    }

    /// Decides who a connection is. Without an auth plugin everyone is admin.
    pub async fn authenticate(&self, info: &ConnectInfo) -> Result<Principal, Refusal> {
        let Some(slot) = self.slots.iter().find(|s| s.config.world == World::Auth) else {
            return Ok(Principal::open_access(false));
        };
        let wit_info = types::ConnectInfo {
            transport: wit_transport(info.transport),
            remote_addr: info.remote_addr.clone(),
            token: info.token.clone(),
        };
        let outcome = slot
            .invoke(&self.engine, None, async |bound, store| {
                let Bound::Auth(auth) = bound else { unreachable!("auth slot holds an auth component") };
                auth.relay_plugin_authenticator().call_authenticate(store, &wit_info).await
            })
            .await?;
        match outcome {
            Ok(principal) => Ok(Principal { id: principal.id, roles: principal.roles }),
            Err(denial) => {
                slot.stats.denials.fetch_add(1, Ordering::Relaxed);
                Err(Refusal::Denied(from_wit(denial, &slot.config.name)))
            }
        }
    }

    /// Runs every policy plugin, in order, on one request.
    pub async fn check(&self, info: &RequestInfo) -> Result<(), Refusal> {
        let mut request = None;
        for slot in self.slots.iter().filter(|s| s.config.world == World::Policy) {
            let request = request.get_or_insert_with(|| types::RequestInfo {
                principal: types::Principal { id: info.principal.id.clone(), roles: info.principal.roles.clone() },
                session_id: info.session_id.clone(),
                transport: wit_transport(info.transport),
                method: info.method.clone(),
                tool: info.tool.clone(),
            });
            let outcome = slot
                .invoke(&self.engine, None, async |bound, store| {
                    let Bound::Policy(policy) = bound else { unreachable!("policy slot holds a policy") };
                    policy.relay_plugin_policy_check().call_check(store, request).await
                })
                .await?;
            if let Err(denial) = outcome {
                slot.stats.denials.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::Denied(from_wit(denial, &slot.config.name)));
            }
        }
        Ok(())
    }

    /// Each adapter's name and current tools, in configuration order.
    pub fn adapter_tools(&self) -> Vec<(String, Arc<Vec<Value>>)> {
        self.slots
            .iter()
            .filter(|s| s.config.world == World::Adapter)
            .map(|s| (s.config.name.clone(), s.current.load().tools()))
            .collect()
    }

    /// Calls `tool` of adapter `name` for `caller` (whose principal and limits apply to the
    /// backend calls the adapter makes); returns an MCP `CallToolResult`.
    pub async fn call_tool(
        &self,
        name: &str,
        tool: &str,
        arguments: &Value,
        caller: Option<Caller>,
    ) -> Result<Value, PluginError> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.config.name == name && s.config.world == World::Adapter)
            .ok_or_else(|| PluginError::NoSuchAdapter(name.to_owned()))?;
        let arguments = arguments.to_string();
        let outcome = slot
            .invoke(&self.engine, caller, async |bound, store| {
                let Bound::Adapter(adapter) = bound else { unreachable!("adapter slot holds an adapter") };
                adapter.relay_plugin_tools().call_call_tool(store, tool, &arguments).await
            })
            .await?;
        use bindings::adapter::exports::relay::plugin::tools::ToolError;
        Ok(match outcome {
            Ok(result) => match serde_json::from_str::<Value>(&result) {
                Ok(value) if value.get("content").is_some_and(Value::is_array) => value,
                _ => json!({"content": [{"type": "text", "text": result}]}),
            },
            Err(error) => {
                let message = match error {
                    ToolError::InvalidArguments(m) => format!("invalid arguments: {m}"),
                    ToolError::UnknownTool(m) => format!("unknown tool: {m}"),
                    ToolError::Failed(m) => m,
                };
                json!({"content": [{"type": "text", "text": message}], "isError": true})
            }
        })
    }

    /// Loads plugin `name` again from its file. A failure keeps the running version.
    pub async fn reload(&self, name: &str) -> Result<String, String> {
        let slot = self.slot(name)?;
        let _guard = slot.reloading.lock().await;
        let started = std::time::Instant::now();
        let failed = |message: String| {
            slot.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
            *slot.last_error.lock().expect("last_error lock") = Some(message.clone());
            tracing::error!(plugin = name, error = %message, running = short(&slot.current.load().hash), "plugin reload failed; keeping the running version");
            Err(message)
        };
        let bytes = match Version::read(&slot.ctx, &slot.path).await {
            Ok(bytes) => bytes,
            Err(error) => return failed(error.to_string()),
        };
        let hash = super::cache::content_hash(&bytes);
        {
            let mut rolled_back = slot.rolled_back.lock().expect("rolled back lock");
            if rolled_back.as_deref() == Some(hash.as_str()) {
                return Ok(format!("{} was rolled back; not loaded again until the file changes", short(&hash)));
            }
            // The file changed since the rollback: the rollback has had its say.
            *rolled_back = None;
        }
        if hash == slot.current.load().hash {
            // The file is the running version again: a reload error it had is history.
            if slot.last_failed_hash.lock().expect("failed hash lock").take().is_some() {
                *slot.last_error.lock().expect("last_error lock") = None;
            }
            return Ok(format!("{} unchanged", short(&hash)));
        }
        if slot.last_failed_hash.lock().expect("failed hash lock").as_deref() == Some(hash.as_str()) {
            let known = slot.last_error.lock().expect("last_error lock").clone().unwrap_or_default();
            return Err(known);
        }
        match Version::load(&self.engine, &self.linker, &slot.ctx, slot.config.world, bytes, self.cache_dir.as_deref())
            .await
        {
            Ok(version) => {
                let old = slot.current.swap(Arc::new(version));
                slot.previous.store(Some(old));
                slot.stats.reloads.fetch_add(1, Ordering::Relaxed);
                *slot.last_error.lock().expect("last_error lock") = None;
                *slot.last_failed_hash.lock().expect("failed hash lock") = None;
                if slot.config.world == World::Adapter {
                    self.changed.send_modify(|n| *n += 1);
                }
                let took_ms = started.elapsed().as_secs_f64() * 1000.0;
                tracing::info!(plugin = name, hash = short(&hash), took_ms, "plugin reloaded");
                Ok(format!("loaded {}", short(&hash)))
            }
            Err(error) => {
                *slot.last_failed_hash.lock().expect("failed hash lock") = Some(hash);
                failed(error.to_string())
            }
        }
    }

    /// Reloads every plugin; returns each outcome.
    pub async fn reload_all(&self) -> Vec<(String, Result<String, String>)> {
        let mut outcomes = Vec::new();
        for slot in &self.slots {
            outcomes.push((slot.config.name.clone(), self.reload(&slot.config.name).await));
        }
        outcomes
    }

    /// Switches plugin `name` back to its previous version at once (and keeps the one it
    /// replaces as the new previous, so a second rollback undoes the first).
    pub async fn rollback(&self, name: &str) -> Result<String, String> {
        let slot = self.slot(name)?;
        let _guard = slot.reloading.lock().await;
        let previous = slot.previous.swap(None).ok_or_else(|| format!("plugin {name} has no previous version"))?;
        let hash = previous.hash.clone();
        let replaced = slot.current.swap(previous);
        *slot.rolled_back.lock().expect("rolled back lock") = Some(replaced.hash.clone());
        slot.previous.store(Some(replaced));
        if slot.config.world == World::Adapter {
            self.changed.send_modify(|n| *n += 1);
        }
        tracing::warn!(plugin = name, hash = short(&hash), "plugin rolled back");
        Ok(format!("rolled back to {}", short(&hash)))
    }

    /// Status of every plugin for `relay_get_status`.
    pub fn status(&self) -> Vec<Value> {
        self.slots
            .iter()
            .map(|slot| {
                let current = slot.current.load();
                let stat = |c: &AtomicU64| c.load(Ordering::Relaxed);
                json!({
                    "name": slot.config.name,
                    "world": slot.config.world.as_str(),
                    "path": slot.path.display().to_string(),
                    "hash": current.hash,
                    "loaded_at": current.loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                    "previous_hash": slot.previous.load().as_ref().map(|p| p.hash.clone()),
                    "calls": stat(&slot.stats.calls),
                    "denials": stat(&slot.stats.denials),
                    "traps": stat(&slot.stats.traps),
                    "reloads": stat(&slot.stats.reloads),
                    "reload_failures": stat(&slot.stats.reload_failures),
                    "last_error": *slot.last_error.lock().expect("last_error lock"),
                    "kv_refusals": stat(&slot.ctx.kv_refusals),
                    "logs_dropped": stat(&slot.ctx.logs_dropped),
                })
            })
            .collect()
    }

    /// A counter that moves whenever adapter tools may have changed.
    pub fn generation(&self) -> u64 {
        *self.changed.borrow()
    }

    /// Changes when adapter tools may have changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn slot(&self, name: &str) -> Result<&Arc<Slot>, String> {
        self.slots.iter().find(|s| s.config.name == name).ok_or_else(|| format!("no plugin named {name}"))
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn wit_transport(transport: TransportKind) -> types::Transport {
    match transport {
        TransportKind::Line => types::Transport::Line,
        TransportKind::WebSocket => types::Transport::Websocket,
        TransportKind::Http => types::Transport::Http,
    }
}

fn from_wit(denial: types::Denial, plugin: &str) -> Denial {
    let code = match denial.code {
        types::DenialCode::Unauthenticated => DenialCode::Unauthenticated,
        types::DenialCode::Forbidden => DenialCode::Forbidden,
        types::DenialCode::RateLimited => DenialCode::RateLimited,
        types::DenialCode::Invalid => DenialCode::Invalid,
    };
    Denial { code, message: denial.message, retry_after_ms: denial.retry_after_ms, refused_by: plugin.to_owned() }
}

/// The directories `config` grants (read-only or writable), made absolute against relay.yaml's
/// directory but not resolved through symlinks: the plugin sees them at the configured paths.
/// Read-only ones must exist; writable ones are created.
fn granted_dirs(config: &PluginConfig, relay_yaml: &Path, writable: bool) -> Result<Vec<PathBuf>, PluginError> {
    let grants = if writable { &config.grants.files.write } else { &config.grants.files.read };
    let base = relay_yaml.parent().unwrap_or(Path::new("."));
    grants
        .iter()
        .map(|dir| {
            let failed = |e: std::io::Error| PluginError::Load {
                plugin: config.name.clone(),
                message: format!("granted directory {}: {e}", dir.display()),
            };
            let dir = std::path::absolute(base.join(dir)).map_err(failed)?;
            if writable {
                std::fs::create_dir_all(&dir).map_err(failed)?;
            }
            if !dir.is_dir() {
                return Err(failed(std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory")));
            }
            Ok(dir)
        })
        .collect()
}
