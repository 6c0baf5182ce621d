//! Prometheus metrics: the one home of every metric name, label and bucket, one module per
//! layer's series (`clients`, `access`, `backends`, `plugins`, `process`). Layers record
//! through their part (`metrics().clients.request(...)`); `/metrics` renders the registry in
//! the OpenMetrics text format (prometheus-client). Labels stay bounded: methods from a fixed
//! list, backend and plugin names from the configuration, never session ids or arguments.
//!
//! Recording never waits for another request: counters and the histograms' buckets are
//! atomics, and a labelled series is found under a read lock that readers share (a write lock
//! is taken once, when a series first appears). Layers report into metrics; metrics reads no
//! layer but the lifecycle's session count, at scrape time.

mod access;
mod backends;
mod clients;
mod histogram;
mod plugins;
mod process;

use std::sync::LazyLock;

use prometheus_client::registry::Registry;

pub use access::AccessSeries;
pub use backends::{BackendMetrics, BackendOutcomeKind, BackendSeries};
pub use clients::{ClientSeries, ConnectionGauge, method_label};
pub use histogram::DurationHistogram;
pub use plugins::{PluginMetrics, PluginOutcomeKind, PluginSeries};
pub use process::ProcessSeries;

/// Every metric the relay keeps, by the layer that records it.
pub struct Metrics {
    registry: Registry,
    /// Client connections and requests (transports, sessions).
    pub clients: ClientSeries,
    /// Refusals at the door: authentication, TLS, limits, rate limits.
    pub access: AccessSeries,
    /// Requests to backends and their health (upstreams).
    pub backends: BackendSeries,
    /// Plugin calls and reloads.
    pub plugins: PluginSeries,
    /// Sessions, build, memory and CPU, log forwarding.
    pub process: ProcessSeries,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let clients = ClientSeries::register(&mut registry);
        let access = AccessSeries::register(&mut registry);
        let backends = BackendSeries::register(&mut registry);
        let plugins = PluginSeries::register(&mut registry);
        let process = ProcessSeries::register(&mut registry);
        Self { registry, clients, access, backends, plugins, process }
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn renders_counters_histograms_and_process_figures_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.clients.request(method_label("tools/call"), "ok", None, Duration::from_millis(3));
        metrics.clients.request(
            method_label("x/secret-method-name"),
            "error",
            Some("client"),
            Duration::from_micros(50),
        );
        metrics.backends.series("alpha").request(BackendOutcomeKind::Timeout, Duration::from_secs(2));
        let _open = metrics.clients.connection("line");
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

    #[test]
    fn a_backend_reports_its_health_and_a_removed_one_leaves_no_series() {
        let metrics = Metrics::new();
        let alpha = metrics.backends.series("alpha");
        assert!(metrics.render().contains(r#"relay_backend_health{backend="alpha"} 0"#));
        alpha.ready(true);
        alpha.reconnect();
        alpha.request(crate::metrics::BackendOutcomeKind::Ok, std::time::Duration::from_millis(1));
        assert!(metrics.render().contains(r#"relay_backend_health{backend="alpha"} 1"#));
        alpha.forget();
        // Its supervisor may still say it stopped: that reaches no series.
        alpha.ready(false);
        alpha.request(crate::metrics::BackendOutcomeKind::Error, std::time::Duration::from_millis(1));
        assert!(
            !metrics.render().contains(r#"backend="alpha""#),
            "a removed backend has no series:\n{}",
            metrics.render()
        );
        // Added again under the same name: a series of its own.
        let again = metrics.backends.series("alpha");
        again.ready(true);
        assert!(metrics.render().contains(r#"relay_backend_health{backend="alpha"} 1"#));
    }
}
