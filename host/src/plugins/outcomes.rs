//! How a plugin's calls ended, counted once for `/status` (the slot's stats) and `/metrics`
//! (`relay_plugin_calls_total`, `relay_plugin_held_total`): one home for both.

use std::sync::atomic::Ordering;

use super::registry::Slot;
use super::sandbox::PluginError;
use crate::metrics::PluginOutcomeKind;

impl Slot {
    /// A request an earlier decision answered without a call (a hold, a standing refusal).
    pub(super) fn held(&self) {
        self.stats.held.fetch_add(1, Ordering::Relaxed);
        self.metrics.held();
    }

    /// A call that answered: `ok`, or `denied` (counted apart).
    pub(super) fn settled(&self, denied: bool) {
        if denied {
            self.stats.denials.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.call(if denied { PluginOutcomeKind::Denied } else { PluginOutcomeKind::Ok });
    }

    pub(super) fn record_failure(&self, error: &PluginError) {
        let outcome = match error {
            PluginError::Timeout { .. } => PluginOutcomeKind::Timeout,
            // Not called at all: its other callers held every instance (a flood, not a fault).
            PluginError::Busy { .. } => PluginOutcomeKind::Busy,
            _ => PluginOutcomeKind::Trap,
        };
        self.metrics.call(outcome);
        if outcome != PluginOutcomeKind::Busy {
            self.stats.traps.fetch_add(1, Ordering::Relaxed);
        }
        *self.last_error.lock().expect("last_error lock") = Some(error.to_string());
        tracing::warn!(plugin = %self.config.name, error = %error, "plugin call failed");
    }
}
