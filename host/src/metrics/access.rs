//! Admission's series: failed and throttled authentications, TLS refusals, refusals by a
//! relay.yaml limit, and rate limiting.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::clients::TransportLabel;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

/// What was refused at the door, and why.
pub struct AccessSeries {
    auth_failures: Family<TransportLabel, Counter>,
    auth_throttled: Family<TransportLabel, Counter>,
    tls_refused: Family<ReasonLabel, Counter>,
    limit_refusals: Family<LimitLabel, Counter>,
    rate_limited: Counter,
    tls_expiry: Gauge,
    /// Whether TLS is configured, and why the files on disk are not in use (if they are not).
    tls_state: std::sync::Mutex<Option<Option<String>>>,
}

impl AccessSeries {
    /// The series, registered in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let series = Self {
            auth_failures: Family::default(),
            auth_throttled: Family::default(),
            tls_refused: Family::default(),
            limit_refusals: Family::default(),
            rate_limited: Counter::default(),
            tls_expiry: Gauge::default(),
            tls_state: std::sync::Mutex::default(),
        };
        registry.register("relay_auth_failures", "Failed authentications", series.auth_failures.clone());
        registry.register(
            "relay_auth_throttled",
            "Authentication attempts refused without asking the auth plugin (too many failures from the address)",
            series.auth_throttled.clone(),
        );
        registry.register(
            "relay_tls_refused",
            "Connections refused at TLS: handshake (failed or too slow), plaintext (TLS required)",
            series.tls_refused.clone(),
        );
        registry.register(
            "relay_limit_refusals",
            "Requests refused by a limit of relay.yaml (max_header_bytes, max_parked_per_principal)",
            series.limit_refusals.clone(),
        );
        registry.register("relay_rate_limited", "Requests refused by a rate limit", series.rate_limited.clone());
        registry.register(
            "relay_tls_certificate_expiry_timestamp_seconds",
            "When the TLS certificate in use expires (Unix time; 0 without TLS)",
            series.tls_expiry.clone(),
        );
        series
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

    /// The TLS certificate in use now expires at `not_after` (Unix seconds); `error` says why
    /// the files on disk are not in use, if they are not.
    pub fn tls_certificate(&self, not_after: i64, error: Option<String>) {
        self.tls_expiry.set(not_after);
        *self.tls_state.lock().expect("tls state lock") = Some(error);
    }

    /// For `/status`: when the certificate in use expires, and why the files on disk are not in
    /// use (`None` without TLS).
    pub fn tls_state(&self) -> Option<(i64, Option<String>)> {
        let state = self.tls_state.lock().expect("tls state lock").clone()?;
        Some((self.tls_expiry.get(), state))
    }

    /// A request refused by a rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }
}
