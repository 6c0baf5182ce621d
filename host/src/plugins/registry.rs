//! The loaded plugins, in configuration order, and everything the rest of the relay asks of
//! them: authenticate, check, list and call adapter tools, reload, roll back, report.
//!
//! Each plugin has a current version and the previous good one, both behind `ArcSwap`: a
//! reload builds a complete new version first and then publishes it in one store, so a call
//! either sees the old version or the new one, and finishes on the one it started with.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde_json::{Value, json};
use tokio::sync::watch;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};

use super::bindings::{self, types};
use super::host::Capabilities;
use super::kv_store::KvStore;
use super::loaded::{Bound, Version};
use super::reload::ReloadError;
use super::sandbox::{Caller, PluginContext, PluginError, PluginState, Refusal, classify};
use super::v0_1;
use super::wit_types::{from_wit, wit_transport};
use super::{engine, host};
use crate::access::{Authenticated, ConnectInfo, Denial, DenialCode, Principal};
use crate::config::{Hook, PluginConfig, World};
use crate::mcp::Payload;
use crate::metrics::{PluginMetrics, metrics};

/// Counters per plugin, for status (and metrics later).
#[derive(Default)]
pub(super) struct Stats {
    pub(super) calls: AtomicU64,
    /// Requests a standing decision answered without a call (`verdict.hold`: a policy's `ok`,
    /// an interceptor's `proceed`).
    pub(super) held: AtomicU64,
    /// Results passed without a call: they hold none of the literals the result hook named
    /// (`verdict.pass-results-without`).
    pub(super) unread: AtomicU64,
    pub(super) denials: AtomicU64,
    pub(super) traps: AtomicU64,
    pub(super) reloads: AtomicU64,
    pub(super) reload_failures: AtomicU64,
}

/// One configured plugin.
pub(super) struct Slot {
    pub(super) config: PluginConfig,
    /// The resolved `.wasm` path.
    pub(super) path: PathBuf,
    /// Shared by every call of every version.
    pub(super) ctx: Arc<PluginContext>,
    pub(super) current: ArcSwap<Version>,
    /// The previous good version, for `relay_rollback_plugin`.
    pub(super) previous: ArcSwapOption<Version>,
    pub(super) stats: Stats,
    /// The last load or call failure, for status.
    pub(super) last_error: Mutex<Option<String>>,
    /// Hash of the last file that failed to load, so the same bad file is not retried (and
    /// counted) on every file event.
    pub(super) last_failed_hash: Mutex<Option<String>>,
    /// The failed reload's error while its file does not load (cleared once it does, and from
    /// `last_error` if a call's failure has not replaced it there).
    pub(super) reload_failing: Mutex<Option<String>>,
    /// Serialises reloads and rollbacks of this plugin.
    pub(super) reloading: tokio::sync::Mutex<()>,
    /// One permit per call that may run at once (`limits.max_concurrent_calls`).
    pub(super) calls_at_once: Arc<tokio::sync::Semaphore>,
    /// Hash of the version a rollback went away from: not loaded again until the file's
    /// content changes.
    pub(super) rolled_back: Mutex<Option<String>>,
    /// Its series in the metrics.
    pub(super) metrics: PluginMetrics,
    /// The calls an interceptor is bound to (`bind`), compiled.
    pub(super) binding: crate::config::BindingMatcher,
}

impl Slot {
    /// One call on a warm instance of the current version: counted, the instance given back
    /// when the call succeeds, dropped (and the failure recorded) when it traps.
    pub(super) async fn invoke<T>(
        &self,
        engine: &Engine,
        caller: Option<Caller>,
        call: impl AsyncFnOnce(&Bound, &mut Store<PluginState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        self.invoke_on(self.current.load_full(), engine, caller, call).await
    }

    /// [`Self::invoke`] on `version` (one the caller has loaded already).
    pub(super) async fn invoke_on<T>(
        &self,
        version: Arc<Version>,
        engine: &Engine,
        caller: Option<Caller>,
        call: impl AsyncFnOnce(&Bound, &mut Store<PluginState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        // The deadline covers waiting for a call slot, running guest code (which yields at
        // every epoch tick) and waiting in the host (an outgoing HTTP request, a clock sleep).
        // A call cut short drops its store.
        let deadline_ms = self.ctx.limits.deadline_ms;
        let running = std::sync::atomic::AtomicBool::new(false);
        let run = async {
            let _slot = self.calls_at_once.acquire().await.expect("call slots are never closed");
            let mut warm = version.checkout(engine, &self.ctx).await?;
            running.store(true, Ordering::Relaxed);
            warm.store.data_mut().caller = caller;
            let outcome = call(&warm.bound, &mut warm.store).await;
            warm.store.data_mut().caller = None;
            if let Some(literals) = warm.store.data_mut().verdict.results_without.take()
                && outcome.is_ok()
            {
                self.pass_results_without(&version, literals);
            }
            Ok::<_, PluginError>((outcome, warm))
        };
        // Boxed: a plugin's call is a 3.6 KB future, and whatever awaits one (every request's
        // future, through the policy chain, interceptors and adapters) would otherwise carry and
        // copy that size whether or not a plugin is bound.
        let finished = Box::pin(crate::deadline::within_from(started, Duration::from_millis(deadline_ms), run)).await;
        self.metrics.duration(started.elapsed());
        match finished {
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
                let plugin = self.config.name.clone();
                let error = if running.load(Ordering::Relaxed) {
                    PluginError::Timeout { plugin, deadline_ms }
                } else {
                    PluginError::Busy { plugin, deadline_ms }
                };
                self.record_failure(&error);
                Err(error)
            }
        }
    }

    /// Whether this plugin is an interceptor whose `hook` runs (`bind.hooks`).
    pub(super) fn intercepts(&self, hook: Hook) -> bool {
        self.config.world == World::Interceptor && self.binding.runs(hook)
    }
}

/// Every loaded plugin.
pub struct Plugins {
    pub(super) engine: Engine,
    pub(super) linker: Linker<PluginState>,
    pub(super) cache_dir: Option<PathBuf>,
    pub(super) slots: Vec<Arc<Slot>>,
    /// Bumped when what clients see listed may have changed (an adapter or interceptor was
    /// reloaded or rolled back).
    pub(super) changed: watch::Sender<u64>,
    /// The auth plugin's recent successes.
    pub(super) auth_cache: super::auth_cache::AuthCache,
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
        let (engine, epoch) = engine::build().map_err(|e| setup(format!("wasm engine: {e:#}")))?;
        let linker = host::linker(&engine).map_err(|e| setup(format!("wasm linker: {e:#}")))?;
        let mut slots = Vec::new();
        for config in configs {
            let ctx = Arc::new(PluginContext {
                name: config.name.clone(),
                limits: config.limits.clone(),
                caps: Capabilities::new(config, relay_yaml, kv.clone(), backends.clone())?,
                epoch: epoch.clone(),
            });
            let path = config.resolved_path(relay_yaml);
            let bytes = Version::read(&ctx, &path).await?;
            let version = Version::load(&engine, &linker, &ctx, config.world, bytes, cache_dir.as_deref()).await?;
            tracing::info!(plugin = %config.name, world = config.world.as_str(), hash = %&version.hash[..12], cached = version.from_cache, "plugin loaded");
            let binding =
                config.bind.matcher().map_err(|message| PluginError::Load { plugin: config.name.clone(), message })?;
            slots.push(Arc::new(Slot {
                binding,
                config: config.clone(),
                path,
                ctx,
                current: ArcSwap::from_pointee(version),
                previous: ArcSwapOption::empty(),
                stats: Stats::default(),
                last_error: Mutex::new(None),
                last_failed_hash: Mutex::new(None),
                reload_failing: Default::default(),
                reloading: tokio::sync::Mutex::new(()),
                calls_at_once: Arc::new(tokio::sync::Semaphore::new(config.limits.max_concurrent_calls)),
                rolled_back: Mutex::new(None),
                metrics: metrics().plugins.series(&config.name),
            }));
        }
        Ok(Arc::new(Plugins {
            engine,
            linker,
            cache_dir,
            slots,
            changed: watch::Sender::new(0),
            auth_cache: Default::default(),
        }))
    }

    /// Whether an auth plugin is configured (without one the relay is open).
    pub fn has_auth(&self) -> bool {
        self.slots.iter().any(|s| s.config.world == World::Auth)
    }

    /// The `.wasm` paths, by plugin name (for the file watch).
    pub fn paths(&self) -> Vec<(String, PathBuf)> {
        self.slots.iter().map(|s| (s.config.name.clone(), s.path.clone())).collect()
    }

    /// Moves on with every reload (and rollback): what the auth plugin admitted before one is
    /// asked again (`auth_cache`; an open session's `Standing`).
    pub fn auth_generation(&self) -> u64 {
        self.auth_cache.generation()
    }

    /// A success the auth plugin's current version gave for this credential recently (see
    /// `auth_cache`), without asking it again.
    pub fn remembered(&self, info: &ConnectInfo) -> Option<Authenticated> {
        let slot = self.slots.iter().find(|s| s.config.world == World::Auth)?;
        self.auth_cache.get(&info.credential_digest(), &slot.current.load().hash)
    }

    /// Asks the auth plugin who a connection is, and remembers a success (see [`Self::remembered`],
    /// which the caller asks first). Without an auth plugin everyone is anonymous.
    pub async fn authenticate(&self, info: &ConnectInfo) -> Result<Authenticated, Refusal> {
        let Some(slot) = self.slots.iter().find(|s| s.config.world == World::Auth) else {
            return Ok(Authenticated::lasting(Principal::open_access(false)));
        };
        let credential = info.credential_digest();
        let version = slot.current.load().hash.clone();
        let generation = self.auth_cache.generation();
        let wit_info = types::ConnectInfo {
            transport: wit_transport(info.transport),
            remote_addr: info.remote_addr.to_string(),
            token: info.token.clone(),
            client_cert_subject: info.client_cert_subject.clone(),
        };
        let (outcome, note) = slot
            .invoke(&self.engine, None, async |bound, store| {
                store.data_mut().credential = Default::default();
                let outcome = match bound {
                    Bound::Auth(auth) => {
                        auth.relay_plugin_authenticator().call_authenticate(&mut *store, &wit_info).await?
                    }
                    Bound::AuthV01(auth) => {
                        let answer = auth
                            .relay_plugin_authenticator()
                            .call_authenticate(&mut *store, &v0_1::connect_info(&wit_info))
                            .await?;
                        answer.map(v0_1::principal).map_err(v0_1::denial)
                    }
                    _ => unreachable!("auth slot holds an auth component"),
                };
                Ok((outcome, std::mem::take(&mut store.data_mut().credential)))
            })
            .await?;
        slot.settled(outcome.is_err());
        match outcome {
            Ok(principal) => {
                let expires_at = note.expires_at_ms.map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms));
                let authenticated = Authenticated {
                    principal: Principal { id: principal.id, roles: principal.roles },
                    expires_at,
                    bearer: None,
                };
                if expires_at.is_some_and(|at| at <= std::time::SystemTime::now()) {
                    let message = "the credential has expired".to_owned();
                    let denial = Denial {
                        code: DenialCode::Unauthenticated,
                        message,
                        retry_after_ms: None,
                        refused_by: slot.config.name.clone(),
                    };
                    return Err(Refusal::Denied(denial));
                }
                self.auth_cache.put(credential, &version, generation, &authenticated);
                Ok(authenticated)
            }
            Err(denial) => Err(Refusal::Denied(from_wit(denial, &slot.config.name))),
        }
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
    /// backend calls the adapter makes); returns an MCP `CallToolResult`. The arguments reach
    /// the guest as JSON text: the client's own when nothing read them.
    pub async fn call_tool(
        &self,
        name: &str,
        tool: &str,
        arguments: &Payload,
        caller: Option<Caller>,
    ) -> Result<Payload, PluginError> {
        let slot = self
            .slots
            .iter()
            .find(|s| s.config.name == name && s.config.world == World::Adapter)
            .ok_or_else(|| PluginError::NoSuchAdapter(name.to_owned()))?;
        let arguments = arguments.text();
        let outcome = slot
            .invoke(&self.engine, caller, async |bound, store| match bound {
                Bound::Adapter(adapter) => adapter.relay_plugin_tools().call_call_tool(store, tool, &arguments).await,
                Bound::AdapterV01(adapter) => {
                    let answer = adapter.relay_plugin_tools().call_call_tool(store, tool, &arguments).await?;
                    Ok(answer.map_err(v0_1::tool_error))
                }
                _ => unreachable!("adapter slot holds an adapter"),
            })
            .await?;
        slot.settled(false);
        use bindings::adapter::exports::relay::plugin::tools::ToolError;
        Ok(match outcome {
            // A result in shape is passed on as the text the adapter wrote; anything else is
            // the text of one.
            Ok(result) => Payload::tool_result(result)
                .unwrap_or_else(|text| json!({"content": [{"type": "text", "text": text}]}).into()),
            Err(error) => {
                let message = match error {
                    ToolError::InvalidArguments(m) => format!("invalid arguments: {m}"),
                    ToolError::UnknownTool(m) => format!("unknown tool: {m}"),
                    ToolError::Failed(m) => m,
                };
                json!({"content": [{"type": "text", "text": message}], "isError": true}).into()
            }
        })
    }

    /// A counter that moves whenever what clients see listed may have changed.
    pub fn generation(&self) -> u64 {
        *self.changed.borrow()
    }

    /// Changes when what clients see listed may have changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(super) fn slot(&self, name: &str) -> Result<&Arc<Slot>, ReloadError> {
        self.slots.iter().find(|s| s.config.name == name).ok_or_else(|| ReloadError::NoSuchPlugin(name.to_owned()))
    }
}

/// The first 12 hex digits of a content hash, as logs and outcomes show it.
pub(super) fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
