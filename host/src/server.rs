//! `relay serve`: builds the layers from configuration, binds the port and runs until a
//! shutdown signal.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::RelayTools;
use crate::config::{RelayConfig, watch_backends};
use crate::lifecycle::Lifecycle;
use crate::plugins::{self, KvStore, Plugins};
use crate::policy::Policy;
use crate::router::Router;
use crate::session::{SessionFactory, SessionRegistry, SharedSessions};
use crate::transport::{self, BrowserRules, TransportState};
use crate::upstream::Upstreams;

/// Runs the relay with the configuration at `config_path` until SIGINT/SIGTERM.
pub async fn run(
    config_path: &Path,
    config: RelayConfig,
    forwarder: Option<crate::log_forward::Forwarder>,
) -> anyhow::Result<()> {
    // First: SIGHUP's default action ends the process, and `systemctl reload` may come while
    // the plugins still compile (the unit is active at once). One that comes before the
    // plugins are loaded reloads them once they are.
    let mut hangups =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("cannot handle SIGHUP")?;
    if let Some(forwarder) = forwarder {
        tokio::spawn(forwarder.run());
    }
    // What plugins are granted from the environment is the relay's to hold: no stdio backend
    // inherits it.
    crate::upstream::protect_env(config.plugins.iter().flat_map(|p| p.grants.env.iter().cloned()));
    // Before the upstreams: each keeps idle HTTP connections per worker.
    crate::workers::start(config.listen.worker_count()).context("cannot start the worker threads")?;
    let store = config.backend_store(config_path);
    let (_, backends) = store.load().with_context(|| "cannot start with this backends file")?;
    for file in ["relay", "backends"] {
        crate::metrics::metrics().process.config_file(file, true);
    }
    let lifecycle = Arc::new(Lifecycle::new(std::env::var("RELAY_INSTANCE").unwrap_or_default()));
    let limits = Arc::new(config.limits.clone());

    let upstreams = Arc::new(Upstreams::new(config.upstream.clone(), limits.max_message_bytes));
    upstreams.reconcile(&backends);

    let kv = kv_store(&config)?;
    let credential_step = CredentialStep::default();
    let plugins = load_plugins(&config, config_path, upstreams.clone(), credential_step.clone(), kv.clone()).await?;
    for warning in config_warnings(&config).into_iter().chain(store.missing()) {
        tracing::warn!("{warning}");
    }
    for problem in crate::config::unknown_credential_plugins(&backends, &config.plugins) {
        tracing::warn!("{problem}: its calls will fail");
    }
    for shared in crate::config::shared_per_user_backends(&backends, &config.plugins) {
        tracing::warn!("{shared}");
    }
    if !plugins.has_auth() {
        if config.access.admin_without_auth {
            tracing::warn!(
                "no auth plugin configured and access.admin_without_auth is true: the relay is OPEN and EVERY CLIENT IS ADMIN (may add, remove and reconnect backends, reload plugins)"
            );
        } else {
            tracing::warn!(
                "no auth plugin configured: the relay is open (anyone who reaches the port may call tools); the relay_* tools that change it are refused"
            );
        }
    }
    let _plugin_watch = plugins::watch(plugins.clone()).context("cannot watch plugin files")?;
    let sighup_plugins = plugins.clone();
    let (running_entries, relay_yaml) = (config.plugins.clone(), config_path.to_owned());
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading plugins");
            warn_of_plugin_entry_changes(&relay_yaml, &running_entries);
            sighup_plugins.reload_all().await;
        }
    });

    let crate::preflight::Preflight { addr, metrics_listen, tls, proxies, allowed_commands } =
        crate::preflight::preflight(&config, config_path)?;
    let _tls_watch = tls.as_ref().map(|tls| tls.watch()).transpose().context("cannot watch the TLS files")?;
    let relay_tools = Arc::new(RelayTools::new(
        upstreams.clone(),
        store.clone(),
        lifecycle.clone(),
        plugins.clone(),
        allowed_commands,
        kv.clone(),
        crate::credentials::Credentials::new(crate::credentials::Vault::from_env(kv.clone()), Some(plugins.clone())),
    ));
    if let Some(problem) = relay_tools.credentials().vault.problem()
        && backends.iter().any(|b| b.credentials.is_per_user())
    {
        tracing::warn!("backends call with each user's own credential, but {problem}: their calls will fail");
    }
    upstreams.set_catalog_credential(relay_tools.credentials().clone());
    let _ = credential_step.set(relay_tools.credentials().clone());
    let router = Router::new(upstreams.clone(), relay_tools.clone(), plugins.clone());
    let policy = Arc::new(Policy::new(plugins.clone()));
    let state = Arc::new(TransportState {
        sessions_factory: SessionFactory {
            router,
            policy,
            plugins,
            lifecycle: lifecycle.clone(),
            limits: limits.clone(),
            open_admin: config.access.admin_without_auth,
            per_principal: Arc::default(),
            per_address: Arc::default(),
            auth_throttle: Arc::new(crate::auth_throttle::AuthThrottle::new(
                limits.auth_failures,
                Duration::from_secs(limits.auth_failure_window_secs),
            )),
        },
        sessions: SessionRegistry::new(SharedSessions::new(kv, Duration::from_secs(limits.idle_timeout_secs))),
        parked: Default::default(),
        lifecycle: lifecycle.clone(),
        browser: Arc::new(BrowserRules::new(
            config.allowed_origins.clone(),
            config.allowed_hosts.clone(),
            &config.listen.host,
        )),
        pending: Arc::default(),
        relay_tools: relay_tools.clone(),
        tls: tls.clone(),
        oauth: config.oauth.as_ref().map(|oauth| Arc::new(transport::ProtectedResource::new(oauth))),
        proxies: transport::TrustedProxies::new(proxies),
        resumable: Arc::default(),
    });

    let (_watch_guard, mut file_changes) =
        watch_backends(store.path()).with_context(|| format!("cannot watch {}", store.path().display()))?;
    let reload_upstreams = upstreams.clone();
    let reload_store = store.clone();
    tokio::spawn(async move {
        while file_changes.recv().await.is_some() {
            let store = reload_store.clone();
            let upstreams = reload_upstreams.clone();
            let reload = move || {
                store.reload_then(|backends| {
                    upstreams.reconcile(backends);
                })
            };
            match tokio::task::spawn_blocking(reload).await {
                Ok(Ok(_)) => crate::metrics::metrics().process.config_file("backends", true),
                Ok(Err(e)) => {
                    crate::metrics::metrics().process.config_file("backends", false);
                    let restart = e.on_restart();
                    tracing::error!(error = %e, "backends file rejected; the running set stays ({restart})");
                }
                Err(e) => tracing::error!(error = %e, "backends reload task failed"),
            }
        }
    });

    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let sweeper_state = state.clone();
    tokio::spawn(async move {
        // Often enough to keep a busy session's shared record (TTL: the idle timeout) alive.
        let mut tick = tokio::time::interval((idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(30)));
        loop {
            tick.tick().await;
            let expired = sweeper_state.sessions.expire_idle(idle);
            if expired > 0 {
                tracing::info!(expired, "idle HTTP sessions expired");
            }
            sweeper_state.sessions.look_after_records().await;
            sweeper_state.sessions.forget_ended().await;
        }
    });

    let shutdown = CancellationToken::new();
    crate::metrics::metrics().process.attach(lifecycle.clone());
    if let Some(listen) = &metrics_listen {
        let listener =
            TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen} (metrics.listen)"))?;
        let bound = listener.local_addr()?;
        let host = listen.rsplit_once(':').map_or(listen.as_str(), |(host, _)| host);
        let browser = Arc::new(BrowserRules::new(config.allowed_origins.clone(), config.allowed_hosts.clone(), host));
        tracing::info!(%bound, "metrics listening");
        println!("metrics listening on {bound}");
        tokio::spawn(transport::serve_metrics(listener, browser, relay_tools.clone(), shutdown.clone()));
    }
    let listener = listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, instance = %lifecycle.instance, backends = backends.len(), config = %config_path.display(), "relay listening");
    // Machine-readable line on stdout for scripts and tests that start the relay on port 0.
    let scheme = match &tls {
        Some(tls) if tls.required() => "TLS only",
        Some(_) => "TLS and plaintext",
        None => "plaintext",
    };
    println!("relay listening on {bound} ({scheme})");

    lifecycle.set_ready(true);
    crate::workers::serve(listener, |listener| transport::serve(listener, state.clone(), shutdown.clone()))
        .context("cannot serve on the worker threads")?;
    tracing::info!(workers = crate::workers::count(), "serving");
    let drain_signal = lifecycle.drain_signal();
    let by_signal = tokio::select! {
        signal = shutdown_signal() => { tracing::info!(signal, "shutdown signal"); true }
        () = drain_signal.cancelled() => { tracing::info!("relay_drain called"); false }
    };
    // A second signal is an operator who will not wait out the grace. A signal after
    // `relay_drain` is a first one (a deploy drains, then stops the unit): the drain goes on.
    let cut_short = async move {
        if !by_signal {
            std::future::pending::<()>().await;
        }
        let signal = shutdown_signal().await;
        tracing::warn!(signal, "a second shutdown signal: the drain's grace is cut short");
    };
    drain(&state, Duration::from_secs(config.shutdown.grace_secs), cut_short).await;
    shutdown.cancel();
    upstreams.stop_all();
    crate::upstream::children_stopped(Duration::from_secs(5)).await;
    tracing::info!("stopped");
    Ok(())
}

/// The drain (SIGTERM, SIGINT or `relay_drain`): `/readyz` says no and nothing new starts
/// (connections, sessions, requests are refused with 503 / `-32004`, which clients retry
/// elsewhere); running requests get `grace` to finish, and persistent connections close as
/// soon as nothing of theirs runs (WebSocket with 1001 Going Away). The relay stops as soon as
/// that is done, or when `grace` passes: then what still runs is cut off, each request
/// answered with an error and logged, and the rest closes; the same when `cut_short` ends
/// before `grace` passes.
async fn drain(state: &TransportState, grace: Duration, cut_short: impl std::future::Future<Output = ()>) {
    let lifecycle = &state.lifecycle;
    lifecycle.start_drain();
    // Their clients' retries reach the instance that serves now (which starts them again).
    let parked = state.parked.end_all();
    tracing::info!(
        running = lifecycle.running_requests(),
        sessions = lifecycle.sessions(),
        parked_calls_ended = parked,
        grace_secs = grace.as_secs(),
        "draining: new connections, sessions and requests are refused; running requests finish"
    );
    // Persistent connections close by themselves once nothing of theirs is in flight and they
    // are quiet; HTTP sessions have nothing to close (other instances take them up).
    let settled = async {
        lifecycle.requests_answered().await;
        while lifecycle.sessions_by_transport().iter().any(|(t, n)| *t != "http" && *n > 0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (waited, short) = tokio::select! {
        waited = tokio::time::timeout(grace, settled) => (waited.is_ok(), false),
        () = cut_short => (false, true),
    };
    if !waited && lifecycle.running_requests() > 0 {
        let why = if short { "drain cut short" } else { "drain grace passed" };
        tracing::warn!(
            running = lifecycle.running_requests(),
            "{why}; requests still running are cut off (each answered with an error)"
        );
    }
    lifecycle.cut_off(short);
    // The cut requests' answers are handed to their transports before HTTP sessions end.
    let _ = tokio::time::timeout(Duration::from_secs(1), lifecycle.requests_answered()).await;
    // What only this instance knows of its sessions goes to the kv first (bounded: the kv's
    // own timeout makes each try short, and a kv that does not answer is given up on).
    if tokio::time::timeout(Duration::from_secs(5), state.sessions.hand_over()).await.is_err() {
        tracing::error!(
            "the sessions' hand-over to the kv did not finish within 5 s; some may not be served elsewhere"
        );
    }
    let http_sessions = state.sessions.clear();
    // Newline and WebSocket sessions close themselves once their requests are answered; their
    // last answers get a moment to be written.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while lifecycle.sessions() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!(http_sessions, left_open = lifecycle.sessions(), "drained");
}

/// How many connections may wait to be accepted (the kernel caps it at `net.core.somaxconn`).
/// Tokio's default of 1024 drops SYNs when a thousand clients connect at once, and each
/// dropped one waits a second for its retransmission.
const ACCEPT_BACKLOG: u32 = 8192;

/// The main listener, with [`ACCEPT_BACKLOG`], and `TCP_NODELAY`, which the connections it
/// accepts inherit on Linux (one `setsockopt` fewer per connection; elsewhere the listener sets
/// it on each).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Loads the configured plugins as `serve` does (compiled, type-checked, smoke-instantiated);
/// `check-config` runs the same, so it refuses what `serve` would. Adapters reach `upstreams`
/// with the credentials of `credentials` once it is set.
pub async fn load_plugins(
    config: &RelayConfig,
    config_path: &Path,
    upstreams: Arc<Upstreams>,
    credentials: CredentialStep,
    kv: Arc<KvStore>,
) -> anyhow::Result<Arc<Plugins>> {
    let cache_dir = config.plugin_cache_dir.clone().map(|d| config_path.parent().unwrap_or(Path::new(".")).join(d));
    Plugins::load(
        &config.plugins,
        config_path,
        cache_dir.or_else(plugins::default_cache_dir),
        kv,
        Arc::new(UpstreamBackends { upstreams, credentials }),
    )
    .await
    .context("cannot load plugins")
}

/// The one kv store of the process (`kv`): plugins' state, and the HTTP sessions every
/// instance sharing it can serve.
pub fn kv_store(config: &RelayConfig) -> anyhow::Result<Arc<KvStore>> {
    Ok(Arc::new(KvStore::from_config(&config.kv).context("cannot use the kv store (kv)")?))
}

/// The credential step as the adapters' door reaches it: set once it exists (it is built after
/// the plugins, since `credentials` plugins are among them); `check-config` never sets it.
pub type CredentialStep = Arc<std::sync::OnceLock<Arc<crate::credentials::Credentials>>>;

/// Adapter plugins' door to the backends: each call is a caller of its own on the backend, so
/// nothing the backend sends about it (log messages, elicitation) can reach another client, and
/// carries the credential the served client's own call would (a backend called as each user
/// never sees the connection's).
struct UpstreamBackends {
    upstreams: Arc<Upstreams>,
    credentials: CredentialStep,
}

impl plugins::BackendCalls for UpstreamBackends {
    fn call_tool<'a>(
        &'a self,
        backend: &'a str,
        tool: &'a str,
        arguments: serde_json::Value,
        caller: &'a plugins::Caller,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<crate::mcp::Payload, String>> + Send + 'a>> {
        Box::pin(async move {
            let upstream = self.upstreams.get(backend).ok_or_else(|| format!("no backend named {backend}"))?;
            let credential = match self.credentials.get() {
                Some(step) => step
                    .header_for(&upstream.backend, &caller.principal, caller.bearer.as_ref())
                    .await
                    .map_err(|e| e.to_string())?,
                None if upstream.backend.credentials.is_per_user() => {
                    return Err(format!("{backend} is called as each user, and the credential step is not ready"));
                }
                None => None,
            };
            let params = Some(serde_json::json!({"name": tool, "arguments": arguments}).into());
            let detached = crate::mcp::Related::detached();
            upstream
                .request_as("tools/call", params, upstream.call_timeout(), Some(&detached), credential.as_ref())
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// What in the configuration is legal but probably not meant: environment variables granted to
/// plugins that are not set (an auth plugin's secret missing means every client using it is
/// refused).
pub fn config_warnings(config: &RelayConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    for plugin in &config.plugins {
        if config.kv.backend == crate::config::KvBackend::Redis && plugin.limits.deadline_ms <= config.kv.timeout_ms {
            warnings.push(format!(
                "plugin {} has a deadline of {} ms, not above kv.timeout_ms ({} ms): a slow Redis would trap it instead of letting it decide",
                plugin.name, plugin.limits.deadline_ms, config.kv.timeout_ms
            ));
        }
        for name in plugin.grants.env.iter().filter(|name| std::env::var_os(name).is_none()) {
            let consequence = if plugin.world == crate::config::World::Auth {
                " (clients whose credentials it holds will be refused)"
            } else {
                ""
            };
            warnings.push(format!(
                "plugin {} is granted the environment variable {name}, which is not set{consequence}",
                plugin.name
            ));
        }
    }
    let limits = &config.limits;
    for (name, cap) in [
        ("max_sessions_per_principal", limits.max_sessions_per_principal),
        ("max_sessions_per_address", limits.max_sessions_per_address),
    ] {
        if cap >= limits.max_sessions {
            warnings.push(format!(
                "limits.{name} ({cap}) is not below limits.max_sessions ({}): one caller can take every session; set it lower",
                limits.max_sessions
            ));
        }
    }
    if config.tls.as_ref().is_some_and(|tls| tls.required) && !config.listen.trusted_proxies.is_empty() {
        warnings.push(
            "tls.required with listen.trusted_proxies: the proxy in front must speak TLS to this port (HAProxy: `ssl verify required ...` on its server lines), or every request it forwards is refused while its plaintext /readyz checks pass".to_owned(),
        );
    }
    warnings
}

/// Plugin files reload while the relay runs, plugin *entries* do not: says so when relay.yaml's
/// entries (config, grants, limits, new or removed plugins) differ from the running ones, and
/// when relay.yaml no longer loads at all (a restart would fail: `relay_config_file_rejected`).
fn warn_of_plugin_entry_changes(relay_yaml: &Path, running: &[crate::config::PluginConfig]) {
    let on_disk = match RelayConfig::load(relay_yaml) {
        Ok(on_disk) => on_disk,
        Err(e) => {
            crate::metrics::metrics().process.config_file("relay", false);
            tracing::error!(
                error = format!("{e:#}"),
                "relay.yaml no longer loads: the running configuration stays, and a restart would fail"
            );
            return;
        }
    };
    crate::metrics::metrics().process.config_file("relay", true);
    let changed: Vec<&str> = on_disk
        .plugins
        .iter()
        .filter(|entry| !running.contains(entry))
        .map(|entry| entry.name.as_str())
        .chain(running.iter().filter(|r| !on_disk.plugins.iter().any(|e| e.name == r.name)).map(|r| r.name.as_str()))
        .collect();
    if !changed.is_empty() {
        tracing::warn!(
            plugins = ?changed,
            "relay.yaml's entries for these plugins differ from the running ones (config, grants, limits, added or removed); a restart applies them, a reload loads plugin files only"
        );
    }
}

/// Waits for SIGINT or SIGTERM; says which.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    /// Answers go out as they are written (no Nagle delay) without a `setsockopt` per connection.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_connections_inherit_no_delay_from_the_listener() {
        let listener = super::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
