//! `kv`: the host-owned store, with every key under the plugin's own prefix and the plugin's
//! writes within its quota (`limits.kv_entries`, `limits.kv_bytes`; in memory).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::{HasData, Linker};

use crate::plugins::bindings::adapter::relay::plugin::kv::{self, Host, KvError};
use crate::plugins::kv_store::{KvError as StoreError, KvStore, Quota};

/// The `kv` capability of one plugin.
pub struct KvGrant {
    /// The store every plugin shares.
    store: Arc<KvStore>,
    /// `<plugin>:`, put before every key.
    prefix: String,
    /// What the plugin may hold.
    quota: Quota,
    /// Writes refused by the quota.
    pub refusals: AtomicU64,
}

impl KvGrant {
    /// `plugin`'s namespace in `store`, within `quota`.
    pub fn new(plugin: &str, store: Arc<KvStore>, quota: Quota) -> Self {
        Self { store, prefix: format!("{plugin}:"), quota, refusals: AtomicU64::new(0) }
    }

    fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    /// Counts a refused write (quota), then converts the error.
    fn refused(&self, error: StoreError) -> KvError {
        if matches!(error, StoreError::Quota(_)) {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            let plugin = self.prefix.strip_suffix(':').unwrap_or(&self.prefix);
            crate::metrics::metrics().plugins.kv_refused(plugin);
        }
        wit(error)
    }
}

fn wit(error: StoreError) -> KvError {
    match error {
        StoreError::Invalid(message) => KvError::Invalid(message),
        StoreError::Quota(message) => KvError::Invalid(format!("quota exceeded: {message}")),
        StoreError::Unavailable(message) => KvError::Unavailable(message),
    }
}

/// The view the generated `Host` trait is implemented on.
pub struct Kv<'a>(pub &'a KvGrant);

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = Kv<'a>;
}

/// Adds `kv` to `linker`; `get` finds the calling plugin's grant in the store data.
pub fn add_to_linker<T: Send + 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> Kv<'_>) -> wasmtime::Result<()> {
    kv::add_to_linker::<T, HasKv>(linker, get)
}

// Async: on Redis each call is a network round trip (bounded by `kv.timeout_ms`); in memory
// the futures are ready at once.
impl Host for Kv<'_> {
    async fn get(&mut self, key: String) -> Result<Option<String>, KvError> {
        self.0.store.get(&self.0.key(&key)).await.map_err(wit)
    }

    async fn set(&mut self, key: String, value: String, ttl_ms: Option<u64>) -> Result<(), KvError> {
        let grant = self.0;
        grant.store.set(&grant.key(&key), &value, ttl_ms, Some(&grant.quota)).await.map_err(|e| grant.refused(e))
    }

    async fn delete(&mut self, key: String) -> Result<(), KvError> {
        self.0.store.delete(&self.0.key(&key)).await.map_err(wit)
    }

    async fn increment(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        let grant = self.0;
        grant.store.increment(&grant.key(&key), delta, ttl_ms, Some(&grant.quota)).await.map_err(|e| grant.refused(e))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        new: String,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        let grant = self.0;
        let key = grant.key(&key);
        let quota = Some(&grant.quota);
        grant.store.compare_and_swap(&key, expected.as_deref(), &new, ttl_ms, quota).await.map_err(|e| grant.refused(e))
    }
}
