//! The plugin layer's series: calls by outcome and their durations, requests answered without
//! a call (holds and standing refusals), reloads (and whether the file on disk loads), requests
//! that went on without a failed plugin, kv calls that could not reach the store, kv writes
//! past a plugin's quota and log records past its budget.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::histogram::{DurationHistogram, Histograms};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginOutcome {
    plugin: String,
    outcome: &'static str,
}

/// Every plugin's series.
pub struct PluginSeries {
    calls: Family<PluginOutcome, Counter>,
    reloads: Family<PluginOutcome, Counter>,
    reload_failing: Family<PluginLabel, Gauge>,
    duration: Histograms<PluginLabel>,
    failed_open: Family<PluginLabel, Counter>,
    kv_unavailable: Counter,
    held: Family<PluginLabel, Counter>,
    kv_refused: Family<PluginLabel, Counter>,
    logs_dropped: Family<PluginLabel, Counter>,
}

impl PluginSeries {
    /// The series, registered in `registry`.
    pub(super) fn register(registry: &mut Registry) -> Self {
        let series = Self {
            calls: Family::default(),
            reloads: Family::default(),
            reload_failing: Family::default(),
            duration: Family::default(),
            failed_open: Family::default(),
            kv_unavailable: Counter::default(),
            held: Family::default(),
            kv_refused: Family::default(),
            logs_dropped: Family::default(),
        };
        registry.register(
            "relay_plugin_held",
            "Requests a plugin's earlier decision answered without a call (verdict.hold, a standing rate-limited denial)",
            series.held.clone(),
        );
        registry.register(
            "relay_plugin_kv_refusals",
            "Plugin kv writes refused by the plugin's quota (limits.kv_entries, limits.kv_bytes)",
            series.kv_refused.clone(),
        );
        registry.register(
            "relay_plugin_logs_dropped",
            "Plugin log records dropped past the plugin's budget (limits.logs_per_sec)",
            series.logs_dropped.clone(),
        );
        registry.register(
            "relay_plugin_calls",
            "Plugin calls by outcome (ok, denied, trap, timeout, busy: not called, no instance free in time)",
            series.calls.clone(),
        );
        registry.register("relay_plugin_reloads", "Plugin reloads by outcome (ok, error)", series.reloads.clone());
        registry.register(
            "relay_plugin_reload_failing",
            "1 while the plugin's file does not load (its last reload failed; the previous version runs)",
            series.reload_failing.clone(),
        );
        registry.register("relay_plugin_call_duration_seconds", "Time a plugin call took", series.duration.clone());
        registry.register(
            "relay_plugin_failed_open",
            "Requests that went on without a policy or interceptor that failed (on_error: fail-open)",
            series.failed_open.clone(),
        );
        registry.register(
            "relay_kv_unavailable",
            "Plugin kv calls that could not reach the store (Redis down or slower than kv.timeout_ms)",
            series.kv_unavailable.clone(),
        );
        series
    }

    /// The series of one plugin, resolved once and kept by its slot.
    pub fn series(&self, plugin: &str) -> PluginMetrics {
        let label = |outcome| PluginOutcome { plugin: plugin.to_owned(), outcome };
        let call = |outcome| self.calls.get_or_create(&label(outcome)).clone();
        let reload = |outcome| self.reloads.get_or_create(&label(outcome)).clone();
        let (ok, denied, trap, timeout, busy) =
            (call("ok"), call("denied"), call("trap"), call("timeout"), call("busy"));
        let (reloaded, reload_failed) = (reload("ok"), reload("error"));
        let label = PluginLabel { plugin: plugin.to_owned() };
        let (duration, failing) =
            (self.duration.get_or_create(&label).clone(), self.reload_failing.get_or_create(&label).clone());
        let held = self.held.get_or_create(&label).clone();
        PluginMetrics { ok, denied, trap, timeout, busy, held, duration, reloaded, reload_failed, failing }
    }

    /// A request that went on without the failed policy or interceptor `plugin` (`on_error:
    /// fail-open`).
    pub fn failed_open(&self, plugin: &str) {
        self.failed_open.get_or_create(&PluginLabel { plugin: plugin.to_owned() }).inc();
    }

    /// A plugin `kv` call that could not reach the store.
    pub fn kv_unavailable(&self) {
        self.kv_unavailable.inc();
    }

    /// A `kv` write of `plugin` refused by its quota.
    pub fn kv_refused(&self, plugin: &str) {
        self.kv_refused.get_or_create(&PluginLabel { plugin: plugin.to_owned() }).inc();
    }

    /// A log record of `plugin` dropped past its budget.
    pub fn log_dropped(&self, plugin: &str) {
        self.logs_dropped.get_or_create(&PluginLabel { plugin: plugin.to_owned() }).inc();
    }
}

/// One plugin's series (see [`PluginSeries::series`]).
#[derive(Clone, Debug)]
pub struct PluginMetrics {
    ok: Counter,
    denied: Counter,
    trap: Counter,
    timeout: Counter,
    busy: Counter,
    held: Counter,
    duration: DurationHistogram,
    reloaded: Counter,
    reload_failed: Counter,
    failing: Gauge,
}

/// How a plugin call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginOutcomeKind {
    /// It answered and let the request through (or served its tool).
    Ok,
    /// It answered with a denial.
    Denied,
    /// It trapped (out of memory included).
    Trap,
    /// It ran past its deadline.
    Timeout,
    /// No instance of it was free within its deadline (it was not called).
    Busy,
}

impl PluginMetrics {
    /// One call's outcome.
    pub fn call(&self, outcome: PluginOutcomeKind) {
        match outcome {
            PluginOutcomeKind::Ok => &self.ok,
            PluginOutcomeKind::Denied => &self.denied,
            PluginOutcomeKind::Trap => &self.trap,
            PluginOutcomeKind::Timeout => &self.timeout,
            PluginOutcomeKind::Busy => &self.busy,
        }
        .inc();
    }

    /// A request an earlier decision answered without a call.
    pub fn held(&self) {
        self.held.inc();
    }

    /// How long one call took, whatever its outcome.
    pub fn duration(&self, elapsed: Duration) {
        self.duration.observe(elapsed);
    }

    /// A reload that loaded a new version (`true`) or failed.
    pub fn reload(&self, loaded: bool) {
        if loaded { &self.reloaded } else { &self.reload_failed }.inc();
        self.failing.set(i64::from(!loaded));
    }

    /// The plugin's file is the running version again: the failed reload before is history.
    pub fn file_loads_again(&self) {
        self.failing.set(0);
    }
}
