//! The upstream layer's series: requests to each backend by outcome, their durations,
//! reconnections, and each backend's health. The upstream reports its state here (pushed on
//! every change); metrics never reads the upstreams.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::histogram::{DurationHistogram, Histograms};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendOutcome {
    backend: String,
    outcome: &'static str,
}

/// Every backend's series (the families are shared handles: a backend's metrics keep a copy
/// to take their series out when it is removed).
#[derive(Clone, Debug)]
pub struct BackendSeries {
    requests: Family<BackendOutcome, Counter>,
    duration: Histograms<BackendLabel>,
    reconnects: Family<BackendLabel, Counter>,
    health: Family<BackendLabel, Gauge>,
}

impl BackendSeries {
    /// The series, registered in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let series = Self {
            requests: Family::default(),
            duration: Family::default(),
            reconnects: Family::default(),
            health: Family::default(),
        };
        registry.register("relay_backend_requests", "Requests sent to backends", series.requests.clone());
        registry.register(
            "relay_backend_request_duration_seconds",
            "Time a backend took to answer",
            series.duration.clone(),
        );
        registry.register(
            "relay_backend_reconnects",
            "Reconnections to a backend after its connection was lost",
            series.reconnects.clone(),
        );
        registry.register(
            "relay_backend_health",
            "1 while the backend is connected and initialized, 0 otherwise",
            series.health.clone(),
        );
        series
    }

    /// The series of one backend, resolved once and kept by its upstream (recording through
    /// them is a few atomic additions). Its health reads 0 until it says it is ready.
    pub fn series(&self, backend: &str) -> BackendMetrics {
        // One lookup per statement: a family's read guard lives to the end of its statement,
        // and the next lookup may need the write lock.
        let outcome = |outcome| {
            let series = self.requests.get_or_create(&BackendOutcome { backend: backend.to_owned(), outcome });
            series.clone()
        };
        let (ok, error, timeout, down) = (outcome("ok"), outcome("error"), outcome("timeout"), outcome("down"));
        let label = BackendLabel { backend: backend.to_owned() };
        let duration = self.duration.get_or_create(&label).clone();
        let reconnects = self.reconnects.get_or_create(&label).clone();
        let health = self.health.get_or_create(&label).clone();
        health.set(0);
        BackendMetrics { ok, error, timeout, down, duration, reconnects, health, families: self.clone(), label }
    }
}

/// One backend's series (see [`BackendSeries::series`]).
#[derive(Clone, Debug)]
pub struct BackendMetrics {
    ok: Counter,
    error: Counter,
    timeout: Counter,
    down: Counter,
    duration: DurationHistogram,
    reconnects: Counter,
    health: Gauge,
    /// The families, to take this backend's series out of them when it is removed.
    families: BackendSeries,
    label: BackendLabel,
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
    /// Not sent: the backend is known to be down.
    Down,
}

impl BackendMetrics {
    /// One request and how long it took.
    pub fn request(&self, outcome: BackendOutcomeKind, elapsed: Duration) {
        match outcome {
            BackendOutcomeKind::Ok => &self.ok,
            BackendOutcomeKind::Error => &self.error,
            BackendOutcomeKind::Timeout => &self.timeout,
            BackendOutcomeKind::Down => &self.down,
        }
        .inc();
        self.duration.observe(elapsed);
    }

    /// The connection is being made again after it was lost.
    pub fn reconnect(&self) {
        self.reconnects.inc();
    }

    /// Whether the backend is connected and initialized now.
    pub fn ready(&self, ready: bool) {
        self.health.set(i64::from(ready));
    }

    /// The backend was removed from the configuration: its series go (an alert on
    /// `relay_backend_health == 0` must not fire for a backend nobody runs any more, and
    /// backends added and removed under new names must not grow the metrics without end). A
    /// backend added again under the name starts series of its own.
    pub fn forget(&self) {
        let families = &self.families;
        for outcome in ["ok", "error", "timeout", "down"] {
            families.requests.remove(&BackendOutcome { backend: self.label.backend.clone(), outcome });
        }
        families.duration.remove(&self.label);
        families.reconnects.remove(&self.label);
        families.health.remove(&self.label);
    }

    /// Requests so far, and how many of them failed or timed out (for status).
    pub fn counts(&self) -> (u64, u64) {
        let failed = self.error.get() + self.timeout.get();
        (self.ok.get() + failed, failed)
    }
}
