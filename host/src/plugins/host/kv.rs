//! `kv`: the host-owned store, with every key under the plugin's own prefix.

use crate::plugins::bindings::adapter::relay::plugin::kv::{Host, KvError};
use crate::plugins::kv_store::KvError as StoreError;
use crate::plugins::sandbox::PluginState;

fn wit(error: StoreError) -> KvError {
    match error {
        StoreError::Invalid(message) => KvError::Invalid(message),
        StoreError::Quota(message) => KvError::Invalid(format!("quota exceeded: {message}")),
    }
}

impl PluginState {
    /// Counts and logs a refused write (quota), then converts the error.
    fn refused(&self, error: StoreError) -> KvError {
        if matches!(error, StoreError::Quota(_)) {
            self.ctx.kv_refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        wit(error)
    }
}

impl Host for PluginState {
    fn get(&mut self, key: String) -> Result<Option<String>, KvError> {
        self.ctx.kv.get(&self.ctx.kv_key(&key)).map_err(wit)
    }

    fn set(&mut self, key: String, value: String, ttl_ms: Option<u64>) -> Result<(), KvError> {
        self.ctx.kv.set(&self.ctx.kv_key(&key), &value, ttl_ms, Some(&self.ctx.kv_quota)).map_err(|e| self.refused(e))
    }

    fn delete(&mut self, key: String) -> Result<(), KvError> {
        self.ctx.kv.delete(&self.ctx.kv_key(&key)).map_err(wit)
    }

    fn increment(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        let quota = Some(&self.ctx.kv_quota);
        self.ctx.kv.increment(&self.ctx.kv_key(&key), delta, ttl_ms, quota).map_err(|e| self.refused(e))
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        new: String,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        let quota = Some(&self.ctx.kv_quota);
        let key = self.ctx.kv_key(&key);
        self.ctx.kv.compare_and_swap(&key, expected.as_deref(), &new, ttl_ms, quota).map_err(|e| self.refused(e))
    }
}
