//! The client side's series (transport and session layers): open connections, requests
//! answered by method and outcome, their durations, and errors by kind.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::histogram::Histograms;

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

/// A series per client transport (`line`, `websocket`, `http`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TransportLabel {
    pub(super) transport: &'static str,
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

/// Connections and requests of clients.
pub struct ClientSeries {
    connections: Family<TransportLabel, Gauge>,
    requests: Family<MethodOutcome, Counter>,
    request_duration: Histograms<MethodLabel>,
    errors: Family<KindLabel, Counter>,
}

/// Counts a connection of one transport while it is held.
pub struct ConnectionGauge(Gauge);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ClientSeries {
    /// The series, registered in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let series = Self {
            connections: Family::default(),
            requests: Family::default(),
            request_duration: Family::default(),
            errors: Family::default(),
        };
        registry.register("relay_connections", "Open client connections", series.connections.clone());
        registry.register("relay_requests", "Client requests answered", series.requests.clone());
        registry.register(
            "relay_request_duration_seconds",
            "Time to answer a client request",
            series.request_duration.clone(),
        );
        registry.register("relay_errors", "Client requests answered with an error, by kind", series.errors.clone());
        series
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
}
