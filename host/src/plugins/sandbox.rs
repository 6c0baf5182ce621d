//! A plugin instance's sandbox: a `Store` with its own WASI context (only the granted
//! environment variables, clocks and directories; no sockets; `wasi:http` only to granted
//! hosts), a memory cap, and an epoch deadline re-armed for every call. Failures are
//! classified so the caller can report them clearly.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::engine::TICK;
use super::kv_store::{KvStore, Quota};
use crate::access::RequestInfo;
use crate::config::PluginLimits;

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
    /// No adapter of that name is loaded (the catalog changed under the call).
    #[error("no adapter plugin named {0}")]
    NoSuchAdapter(String),
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
    pub backends_door: Option<Arc<dyn super::BackendCalls>>,
    /// Hosts `wasi:http` requests may go to.
    pub http_hosts: Arc<[String]>,
    /// Directories the plugin may read (host path = guest path).
    pub read_dirs: Vec<std::path::PathBuf>,
    /// Directories the plugin may read and write.
    pub write_dirs: Vec<std::path::PathBuf>,
    /// What the plugin may hold in `kv`.
    pub kv_quota: Quota,
    /// `kv` writes refused by the quota.
    pub kv_refusals: AtomicU64,
    /// Outgoing `wasi:http` requests in flight (one permit each).
    pub outgoing: Arc<Semaphore>,
    /// `log` records allowed in the current second.
    pub log_budget: Mutex<(Instant, u32)>,
    /// `log` records dropped by the rate limit.
    pub logs_dropped: AtomicU64,
    /// Backends the plugin may call (`grants.backends`).
    pub backends: Vec<String>,
}

impl PluginContext {
    /// `key` in this plugin's namespace.
    pub fn kv_key(&self, key: &str) -> String {
        format!("{}:{key}", self.name)
    }

    /// Whether another `log` record fits this second's budget (`limits.logs_per_sec`).
    pub fn may_log(&self) -> bool {
        let mut budget = self.log_budget.lock().expect("log budget lock");
        if budget.0.elapsed() >= std::time::Duration::from_secs(1) {
            *budget = (Instant::now(), 0);
        }
        budget.1 += 1;
        let allowed = budget.1 <= self.limits.logs_per_sec;
        if !allowed {
            self.logs_dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        allowed
    }
}

/// The client whose request an adapter call serves: backend calls the plugin makes go through
/// the policy chain as this client.
#[derive(Clone)]
pub struct Caller {
    /// Who the client is, and where from.
    pub request: RequestInfo,
    /// The policy chain.
    pub admit: Admission,
}

/// Runs the policy chain on a request (the session hands it in, so plugins need no policy).
pub type Admission = Arc<
    dyn Fn(RequestInfo) -> std::pin::Pin<Box<dyn Future<Output = Result<(), super::Refusal>> + Send>> + Send + Sync,
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

/// The `wasi:http` gate: requests leave the relay only for hosts in the plugin's grant, and at
/// most `limits.max_outgoing_requests` at once.
struct HttpGrant {
    plugin: String,
    hosts: Arc<[String]>,
    outgoing: Arc<Semaphore>,
}

impl HttpGrant {
    /// Whether a request to `uri` is granted: an entry names the host (any port) or the exact
    /// `host:port` (the scheme's default port counts). Authorities with user info are refused.
    fn allows(&self, uri: &hyper::Uri) -> bool {
        let Some(authority) = uri.authority() else { return false };
        if authority.as_str().contains('@') {
            return false;
        }
        let host = authority.host();
        let default_port = if uri.scheme_str() == Some("https") { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        self.hosts.iter().any(|granted| match granted.rsplit_once(':') {
            Some((granted_host, granted_port)) if granted_port.parse::<u16>().is_ok() => {
                granted_host.eq_ignore_ascii_case(host) && granted_port.parse::<u16>() == Ok(port)
            }
            _ => granted.eq_ignore_ascii_case(host),
        })
    }
}

impl WasiHttpHooks for HttpGrant {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    hyper::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        let authority = request.uri().authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
        if !self.allows(request.uri()) {
            tracing::warn!(plugin = %self.plugin, host = %authority, "outgoing HTTP refused: host not in grants.http");
            // Answered as a 403 from the relay rather than a transport error, which guests'
            // HTTP clients tend to report as a bare "connection reset".
            // The body is read and dropped frame by frame, so the guest's writes of it succeed.
            return Box::new(async move {
                use http_body_util::BodyExt;
                let mut body = request.into_body();
                while let Some(Ok(_)) = body.frame().await {}
                let why = "the host is not in this plugin's grants.http";
                Ok((refusal(&authority, 403, why), Box::new(async { Ok(()) }) as Box<_>))
            });
        }
        let Ok(permit) = self.outgoing.clone().try_acquire_owned() else {
            tracing::warn!(plugin = %self.plugin, host = %authority, "outgoing HTTP refused: too many requests in flight");
            return Box::new(async move {
                Ok((
                    refusal(&authority, 429, "too many of this plugin's requests are in flight"),
                    Box::new(async { Ok(()) }) as Box<_>,
                ))
            });
        };
        // The default sender (hyper, rustls with the webpki roots) does the rest; the permit is
        // held until the request's I/O is done (or dropped with the store).
        let sending = wasmtime_wasi_http::default_hooks().send_request(request, options, fut);
        Box::new(async move {
            let (response, io) = Box::into_pin(sending).await?;
            let io = Box::new(async move {
                let _permit = permit;
                Box::into_pin(io).await
            }) as Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;
            Ok((response, io))
        })
    }
}

/// The relay's own answer to a request it did not send.
fn refusal(authority: &str, status: u16, why: &str) -> hyper::Response<wasmtime_wasi_http::WasiBody> {
    use http_body_util::BodyExt;
    let message = format!("the relay refused a request to {authority}: {why}");
    let body = serde_json::json!({"error": {"message": message, "type": "relay_refused"}}).to_string();
    let body = http_body_util::Full::new(bytes::Bytes::from(body)).map_err(|never| match never {}).boxed_unsync();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-relay-refused", "grants.http")
        .body(body)
        .expect("a static response")
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
    for (dirs, perms) in [(&ctx.read_dirs, FsPerms::ReadOnly), (&ctx.write_dirs, FsPerms::ReadWrite)] {
        for dir in dirs {
            let guest = dir.to_string_lossy();
            if let Err(error) = wasi.preopened_dir(dir, &guest, perms) {
                // Checked at load; a directory removed since is logged and left out.
                tracing::warn!(plugin = %ctx.name, dir = %guest, %error, "granted directory unavailable");
            }
        }
    }
    let limiter = CallLimiter { max_bytes: (ctx.limits.memory_mb as usize) << 20, denied: false, current: 0 };
    let http_grant =
        HttpGrant { plugin: ctx.name.clone(), hosts: ctx.http_hosts.clone(), outgoing: ctx.outgoing.clone() };
    let mut table = ResourceTable::new();
    // Host resources are host memory: one call cannot pile up more than this many.
    table.set_max_capacity(MAX_RESOURCES);
    let state = PluginState {
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        http_grant,
        table,
        limiter,
        ctx: ctx.clone(),
        caller: None,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    arm(&mut store);
    store
}

/// Most host resources one store may hold.
const MAX_RESOURCES: usize = 4096;

/// Prepares a (new or warm) store for one call: a clean memory-cap flag, and guest code that
/// yields to the runtime at every epoch tick, so a busy guest never holds a worker thread and
/// the call's wall-clock deadline (enforced around the call) can end it.
pub fn arm(store: &mut Store<PluginState>) {
    store.data_mut().limiter.denied = false;
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(YIELD_EVERY.as_millis().div_ceil(TICK.as_millis()).max(1) as u64);
}

/// How often running guest code yields to the runtime.
const YIELD_EVERY: std::time::Duration = std::time::Duration::from_millis(2);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_grants_name_a_host_or_an_exact_host_and_port() {
        let hosts = ["api.openai.com", "127.0.0.1:8080", "secure.example:443"].map(str::to_owned);
        let outgoing = Arc::new(Semaphore::new(1));
        let grant = HttpGrant { plugin: "p".into(), hosts: Arc::from(hosts.to_vec()), outgoing };
        let allows = |uri: &str| grant.allows(&uri.parse().unwrap());
        assert!(allows("https://api.openai.com/v1/chat/completions"));
        assert!(allows("https://API.openai.com:8443/v1"));
        assert!(allows("http://127.0.0.1:8080/v1"));
        assert!(!allows("http://127.0.0.1:9/v1"));
        assert!(!allows("http://127.0.0.1/v1"), "port 80 is not the granted 8080");
        assert!(allows("https://secure.example/x"), "443 is https's default port");
        assert!(!allows("http://secure.example/x"), "80 is not the granted 443");
        assert!(!allows("https://evil.example/"));
        assert!(!allows("https://api.openai.com.evil.example/"));
        assert!(!allows("http://api.openai.com:x@h.evil.example/"), "user info is refused");
        assert!(!allows("/relative"));
    }
}
