//! Prometheus metrics: the one home of every metric name, label and bucket. Layers record
//! through the functions here (`metrics().request(...)`); `/metrics` renders the registry in
//! the OpenMetrics text format (prometheus-client). Labels stay bounded: methods from a fixed
//! list, backend and plugin names from the configuration, never session ids or arguments.
//!
//! Recording never waits for another request: counters and the histograms' buckets are
//! atomics, and a labelled series is found under a read lock that readers share (a write lock
//! is taken once, when a series first appears). What is cheaper to read than to track (session
//! count, backend health, process memory and CPU) is read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::lifecycle::Lifecycle;
use crate::upstream::{State, Upstreams};

/// Upper bounds of every duration histogram, in seconds: 100 µs to 60 s.
const BUCKETS: [f64; 17] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0];

/// The MCP methods that get their own label value; anything else is `other`.
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
];

/// The label value of an MCP method: its own name when the protocol has it, `other` otherwise
/// (a client's made-up method names never become series).
pub fn method_label(method: &str) -> &'static str {
    METHODS.iter().copied().find(|m| *m == method).unwrap_or("other")
}

/// A duration histogram whose recording is lock-free (prometheus-client's own takes a write
/// lock per observation). Clones share the counts, so a layer can keep its handle.
#[derive(Debug, Clone, Default)]
pub struct DurationHistogram(Arc<HistogramCounts>);

#[derive(Debug)]
struct HistogramCounts {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Default for HistogramCounts {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl DurationHistogram {
    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let counts = &self.0;
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            counts.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        counts.count.fetch_add(1, Ordering::Relaxed);
        counts.sum_ns.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = &self.0;
        let buckets: Vec<(f64, u64)> =
            BUCKETS.iter().zip(&counts.buckets).map(|(bound, n)| (*bound, n.load(Ordering::Relaxed))).collect();
        let sum = counts.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, counts.count.load(Ordering::Relaxed), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

type Histograms<L> = Family<L, DurationHistogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodOutcome {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendOutcome {
    backend: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginOutcome {
    plugin: String,
    outcome: &'static str,
}

/// Every metric the relay keeps.
pub struct Metrics {
    registry: Registry,
    connections: Family<TransportLabel, Gauge>,
    requests: Family<MethodOutcome, Counter>,
    request_duration: Histograms<MethodLabel>,
    errors: Family<KindLabel, Counter>,
    backend_requests: Family<BackendOutcome, Counter>,
    backend_duration: Histograms<BackendLabel>,
    backend_reconnects: Family<BackendLabel, Counter>,
    plugin_calls: Family<PluginOutcome, Counter>,
    plugin_reloads: Family<PluginOutcome, Counter>,
    plugin_duration: Histograms<PluginLabel>,
    auth_failures: Family<TransportLabel, Counter>,
    auth_throttled: Family<TransportLabel, Counter>,
    tls_refused: Family<ReasonLabel, Counter>,
    limit_refusals: Family<LimitLabel, Counter>,
    kv_unavailable: Counter,
    plugin_failed_open: Family<PluginLabel, Counter>,
    rate_limited: Counter,
    log_forward_dropped: Counter,
    log_forward_connected: Gauge,
    sources: Arc<ScrapeSources>,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Counts a connection of one transport while it is held.
pub struct ConnectionGauge(Gauge);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let sources = Arc::new(ScrapeSources::default());
        let metrics = Self {
            registry: Registry::default(),
            connections: Family::default(),
            requests: Family::default(),
            request_duration: Family::default(),
            errors: Family::default(),
            backend_requests: Family::default(),
            backend_duration: Family::default(),
            backend_reconnects: Family::default(),
            plugin_calls: Family::default(),
            plugin_reloads: Family::default(),
            plugin_duration: Family::default(),
            auth_failures: Family::default(),
            auth_throttled: Family::default(),
            tls_refused: Family::default(),
            limit_refusals: Family::default(),
            kv_unavailable: Counter::default(),
            plugin_failed_open: Family::default(),
            rate_limited: Counter::default(),
            log_forward_dropped: Counter::default(),
            log_forward_connected: Gauge::default(),
            sources: sources.clone(),
        };
        let m = &metrics;
        registry.register("relay_connections", "Open client connections", m.connections.clone());
        registry.register("relay_requests", "Client requests answered", m.requests.clone());
        registry.register(
            "relay_request_duration_seconds",
            "Time to answer a client request",
            m.request_duration.clone(),
        );
        registry.register("relay_errors", "Client requests answered with an error, by kind", m.errors.clone());
        registry.register("relay_backend_requests", "Requests sent to backends", m.backend_requests.clone());
        registry.register(
            "relay_backend_request_duration_seconds",
            "Time a backend took to answer",
            m.backend_duration.clone(),
        );
        registry.register(
            "relay_backend_reconnects",
            "Reconnections to a backend after its connection was lost",
            m.backend_reconnects.clone(),
        );
        registry.register(
            "relay_plugin_calls",
            "Plugin calls by outcome (ok, denied, trap, timeout)",
            m.plugin_calls.clone(),
        );
        registry.register("relay_plugin_reloads", "Plugin reloads by outcome (ok, error)", m.plugin_reloads.clone());
        registry.register("relay_plugin_call_duration_seconds", "Time a plugin call took", m.plugin_duration.clone());
        registry.register("relay_auth_failures", "Failed authentications", m.auth_failures.clone());
        registry.register(
            "relay_auth_throttled",
            "Authentication attempts refused without asking the auth plugin (too many failures from the address)",
            m.auth_throttled.clone(),
        );
        registry.register(
            "relay_tls_refused",
            "Connections refused at TLS: handshake (failed or too slow), plaintext (TLS required)",
            m.tls_refused.clone(),
        );
        registry.register(
            "relay_limit_refusals",
            "Requests refused by a limit of relay.yaml (max_header_bytes, max_parked_per_principal)",
            m.limit_refusals.clone(),
        );
        registry.register("relay_rate_limited", "Requests refused by a rate limit", m.rate_limited.clone());
        registry.register(
            "relay_plugin_failed_open",
            "Requests that went on without a policy or interceptor that failed (on_error: fail-open)",
            m.plugin_failed_open.clone(),
        );
        registry.register(
            "relay_kv_unavailable",
            "Plugin kv calls that could not reach the store (Redis down or slower than kv.timeout_ms)",
            m.kv_unavailable.clone(),
        );
        registry.register(
            "relay_log_forward_dropped",
            "Log records not forwarded (queue full or logger away)",
            m.log_forward_dropped.clone(),
        );
        registry.register(
            "relay_log_forward_connected",
            "1 while the log forwarder is connected to its logger",
            m.log_forward_connected.clone(),
        );
        registry.register_collector(Box::new(sources));
        Self { registry, ..metrics }
    }

    /// Gives the scrape-time sources (sessions, backend health, instance colour).
    pub fn attach(&self, upstreams: Arc<Upstreams>, lifecycle: Arc<Lifecycle>) {
        let _ = self.sources.attached.set((upstreams, lifecycle));
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }

    /// Counts a connection of `transport` until the returned guard is dropped.
    pub fn connection(&self, transport: &'static str) -> ConnectionGauge {
        let gauge = self.connections.get_or_create(&TransportLabel { transport }).clone();
        gauge.inc();
        ConnectionGauge(gauge)
    }

    /// One client request answered: `outcome` is `ok`, `tool_error` or `error` (then `kind`
    /// says which, for `relay_errors_total`).
    pub fn request(
        &self,
        method: &'static str,
        outcome: &'static str,
        error_kind: Option<&'static str>,
        elapsed: Duration,
    ) {
        self.requests.get_or_create(&MethodOutcome { method, outcome }).inc();
        self.request_duration.get_or_create(&MethodLabel { method }).observe(elapsed);
        if let Some(kind) = error_kind {
            self.errors.get_or_create(&KindLabel { kind }).inc();
        }
    }

    /// The series of one backend, resolved once and kept by its upstream (recording through
    /// them is a few atomic additions).
    pub fn backend(&self, backend: &str) -> BackendMetrics {
        // One lookup per statement: a family's read guard lives to the end of its statement,
        // and the next lookup may need the write lock.
        let outcome = |outcome| {
            let series = self.backend_requests.get_or_create(&BackendOutcome { backend: backend.to_owned(), outcome });
            series.clone()
        };
        let (ok, error, timeout) = (outcome("ok"), outcome("error"), outcome("timeout"));
        let label = BackendLabel { backend: backend.to_owned() };
        let duration = self.backend_duration.get_or_create(&label).clone();
        let reconnects = self.backend_reconnects.get_or_create(&label).clone();
        BackendMetrics { ok, error, timeout, duration, reconnects }
    }

    /// The series of one plugin, resolved once and kept by its slot.
    pub fn plugin(&self, plugin: &str) -> PluginMetrics {
        let label = |outcome| PluginOutcome { plugin: plugin.to_owned(), outcome };
        let call = |outcome| self.plugin_calls.get_or_create(&label(outcome)).clone();
        let reload = |outcome| self.plugin_reloads.get_or_create(&label(outcome)).clone();
        let (ok, denied, trap, timeout) = (call("ok"), call("denied"), call("trap"), call("timeout"));
        let (reloaded, reload_failed) = (reload("ok"), reload("error"));
        let duration = self.plugin_duration.get_or_create(&PluginLabel { plugin: plugin.to_owned() }).clone();
        PluginMetrics { ok, denied, trap, timeout, duration, reloaded, reload_failed }
    }

    /// A client failed to authenticate over `transport`.
    pub fn auth_failure(&self, transport: &'static str) {
        self.auth_failures.get_or_create(&TransportLabel { transport }).inc();
    }

    /// An authentication attempt over `transport` refused for the address's earlier failures.
    pub fn auth_throttled(&self, transport: &'static str) {
        self.auth_throttled.get_or_create(&TransportLabel { transport }).inc();
    }

    /// A connection refused at TLS, for `reason` (`handshake` or `plaintext`).
    pub fn tls_refused(&self, reason: &'static str) {
        self.tls_refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A request refused by the relay.yaml limit named `limit`.
    pub fn limit_refused(&self, limit: &'static str) {
        self.limit_refusals.get_or_create(&LimitLabel { limit }).inc();
    }

    /// A request that went on without the failed policy or interceptor `plugin` (`on_error:
    /// fail-open`).
    pub fn plugin_failed_open(&self, plugin: &str) {
        self.plugin_failed_open.get_or_create(&PluginLabel { plugin: plugin.to_owned() }).inc();
    }

    /// A plugin `kv` call that could not reach the store.
    pub fn kv_unavailable(&self) {
        self.kv_unavailable.inc();
    }

    /// A request refused by a rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// A log record the forwarder could not take or send.
    pub fn log_forward_dropped(&self) {
        self.log_forward_dropped.inc();
    }

    /// Whether the log forwarder is connected now.
    pub fn log_forward_connected(&self, connected: bool) {
        self.log_forward_connected.set(i64::from(connected));
    }

    /// Log records dropped so far, and whether the forwarder is connected (for status).
    pub fn log_forward_state(&self) -> (u64, bool) {
        (self.log_forward_dropped.get(), self.log_forward_connected.get() == 1)
    }
}

/// One backend's series (see [`Metrics::backend`]).
#[derive(Clone, Debug)]
pub struct BackendMetrics {
    ok: Counter,
    error: Counter,
    timeout: Counter,
    duration: DurationHistogram,
    reconnects: Counter,
}

/// How a request to a backend ended.
#[derive(Clone, Copy, Debug)]
pub enum BackendOutcomeKind {
    /// Answered (a JSON-RPC error from the backend is an answer too).
    Ok,
    /// Failed: connection lost, answer refused, backend gone.
    Error,
    /// The deadline passed.
    Timeout,
}

impl BackendMetrics {
    /// One request and how long it took.
    pub fn request(&self, outcome: BackendOutcomeKind, elapsed: Duration) {
        match outcome {
            BackendOutcomeKind::Ok => &self.ok,
            BackendOutcomeKind::Error => &self.error,
            BackendOutcomeKind::Timeout => &self.timeout,
        }
        .inc();
        self.duration.observe(elapsed);
    }

    /// The connection is being made again after it was lost.
    pub fn reconnect(&self) {
        self.reconnects.inc();
    }

    /// Requests so far, and how many of them failed or timed out (for status).
    pub fn counts(&self) -> (u64, u64) {
        let failed = self.error.get() + self.timeout.get();
        (self.ok.get() + failed, failed)
    }
}

/// One plugin's series (see [`Metrics::plugin`]).
#[derive(Clone, Debug)]
pub struct PluginMetrics {
    ok: Counter,
    denied: Counter,
    trap: Counter,
    timeout: Counter,
    duration: DurationHistogram,
    reloaded: Counter,
    reload_failed: Counter,
}

/// How a plugin call ended.
#[derive(Clone, Copy, Debug)]
pub enum PluginOutcomeKind {
    /// It answered and let the request through (or served its tool).
    Ok,
    /// It answered with a denial.
    Denied,
    /// It trapped (out of memory included).
    Trap,
    /// It ran past its deadline.
    Timeout,
}

impl PluginMetrics {
    /// One call's outcome.
    pub fn call(&self, outcome: PluginOutcomeKind) {
        match outcome {
            PluginOutcomeKind::Ok => &self.ok,
            PluginOutcomeKind::Denied => &self.denied,
            PluginOutcomeKind::Trap => &self.trap,
            PluginOutcomeKind::Timeout => &self.timeout,
        }
        .inc();
    }

    /// How long one call took, whatever its outcome.
    pub fn duration(&self, elapsed: Duration) {
        self.duration.observe(elapsed);
    }

    /// A reload that loaded a new version (`true`) or failed.
    pub fn reload(&self, loaded: bool) {
        if loaded { &self.reloaded } else { &self.reload_failed }.inc();
    }
}

/// What is read at scrape time rather than tracked.
#[derive(Default)]
struct ScrapeSources {
    attached: OnceLock<(Arc<Upstreams>, Arc<Lifecycle>)>,
}

impl std::fmt::Debug for ScrapeSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeSources").field("attached", &self.attached.get().is_some()).finish()
    }
}

impl Collector for ScrapeSources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some((upstreams, lifecycle)) = self.attached.get() {
            let sessions = ConstGauge::new(lifecycle.sessions() as i64);
            sessions.encode(encoder.encode_descriptor(
                "relay_sessions",
                "Open client sessions",
                None,
                sessions.metric_type(),
            )?)?;
            let health = Family::<BackendLabel, Gauge>::default();
            for upstream in upstreams.list() {
                let ready = upstream.status().state == State::Ready;
                health.get_or_create(&BackendLabel { backend: upstream.name().to_owned() }).set(i64::from(ready));
            }
            let help = "1 while the backend is connected and initialized, 0 otherwise";
            health.encode(encoder.encode_descriptor("relay_backend_health", help, None, health.metric_type())?)?;
            let info = Family::<BuildLabels, Gauge>::default();
            let labels = BuildLabels { version: env!("CARGO_PKG_VERSION"), instance: lifecycle.instance.clone() };
            info.get_or_create(&labels).set(1);
            let help = "The relay's version and blue/green colour (RELAY_INSTANCE); always 1";
            info.encode(encoder.encode_descriptor("relay_build_info", help, None, info.metric_type())?)?;
        }
        if let Some(process) = Process::read() {
            let rss = ConstGauge::new(process.resident_bytes as i64);
            let help = "Resident memory of the relay process";
            rss.encode(encoder.encode_descriptor("process_resident_memory_bytes", help, None, rss.metric_type())?)?;
            let cpu = ConstCounter::new(process.cpu_seconds);
            let help = "CPU time the relay process used (user and system)";
            cpu.encode(encoder.encode_descriptor("process_cpu_seconds", help, None, cpu.metric_type())?)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    instance: String,
}

/// This process's memory and CPU time, from `/proc/self`.
struct Process {
    resident_bytes: u64,
    cpu_seconds: f64,
}

impl Process {
    fn read() -> Option<Self> {
        // Linux reports these in pages and clock ticks; both are the kernel's fixed defaults on
        // every platform the relay ships for (4 KiB pages, 100 ticks a second).
        const PAGE: u64 = 4096;
        const TICKS: f64 = 100.0;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces) start at the state, field 3.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some(Self { resident_bytes: resident_pages * PAGE, cpu_seconds: (utime + stime) / TICKS })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_process_figures_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.request(method_label("tools/call"), "ok", None, Duration::from_millis(3));
        metrics.request(method_label("x/secret-method-name"), "error", Some("client"), Duration::from_micros(50));
        metrics.backend("alpha").request(BackendOutcomeKind::Timeout, Duration::from_secs(2));
        let _open = metrics.connection("line");
        let text = metrics.render();
        assert!(text.contains(r#"relay_requests_total{method="tools/call",outcome="ok"} 1"#), "{text}");
        assert!(text.contains(r#"relay_requests_total{method="other",outcome="error"} 1"#), "{text}");
        assert!(!text.contains("secret-method-name"), "unknown methods are not labels");
        assert!(text.contains(r#"relay_errors_total{kind="client"} 1"#), "{text}");
        assert!(text.contains(r#"relay_request_duration_seconds_bucket{le="0.005",method="tools/call"} 1"#), "{text}");
        assert!(text.contains(r#"relay_request_duration_seconds_bucket{le="0.0001",method="other"} 1"#), "{text}");
        assert!(text.contains(r#"relay_backend_requests_total{backend="alpha",outcome="timeout"} 1"#), "{text}");
        assert!(text.contains(r#"relay_connections{transport="line"} 1"#), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        drop(_open);
        assert!(metrics.render().contains(r#"relay_connections{transport="line"} 0"#));
    }
}
