//! The host-owned key-value store behind the `kv` interface, with the semantics the WIT
//! promises (expiry, atomic increment, compare-and-swap) on either backend: in memory (the
//! default; one process) or on Redis (shared by every instance of a deployment, so blue and
//! green share rate-limit budgets and run-time settings). One store per relay process, shared by
//! every plugin (each under its own key prefix, `plugin:key`) and by every version of a plugin,
//! so state survives a reload.

use std::time::Duration;

use super::kv_memory::MemoryKv;
use super::kv_redis::RedisKv;

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The key or value is unacceptable (too long, not a counter).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The write would take the plugin past its quota of entries or bytes.
    #[error("quota exceeded: {0}")]
    Quota(String),
    /// The backing store cannot be reached (Redis down, or slower than the kv timeout).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// How much one prefix (plugin) may hold.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    /// Most live entries.
    pub entries: usize,
    /// Most bytes of keys and values together.
    pub bytes: usize,
}

/// Longest key, after the plugin prefix.
const MAX_KEY: usize = 512;
/// Longest value.
const MAX_VALUE: usize = 64 * 1024;

/// The size limits every backend applies before anything is stored.
pub(super) fn check(key: &str, value: Option<&str>) -> Result<(), KvError> {
    if key.len() > MAX_KEY {
        return Err(KvError::Invalid(format!("key longer than {MAX_KEY} bytes")));
    }
    if value.is_some_and(|v| v.len() > MAX_VALUE) {
        return Err(KvError::Invalid(format!("value longer than {MAX_VALUE} bytes")));
    }
    Ok(())
}

/// The store, on the backend `relay.yaml`'s `kv` chose.
///
/// Each operation boxes the Redis future and only it: a plugin's host call boxes the
/// operation's future, and one sized for a Redis round trip would make every in-memory call
/// allocate (and free) hundreds of bytes (504 for `get`), through glibc's slow path.
pub enum KvStore {
    /// In this process.
    Memory(MemoryKv),
    /// On a Redis server.
    Redis(RedisKv),
}

/// Where a shared store keeps its [`KvStore::identity`] (under the namespace, apart from
/// plugins' keys, `<plugin>:...`, and sessions', `relay.session:...`).
const IDENTITY_KEY: &str = "relay.store";

impl Default for KvStore {
    fn default() -> Self {
        KvStore::Memory(MemoryKv::default())
    }
}

impl KvStore {
    /// The store `config` describes. A Redis store connects lazily and reconnects by itself:
    /// the relay starts while Redis is down, and `kv` calls say `unavailable` until it is up.
    pub fn from_config(config: &crate::config::KvConfig) -> Result<Self, KvError> {
        match config.backend {
            crate::config::KvBackend::Memory => Ok(Self::default()),
            crate::config::KvBackend::Redis => {
                let url = config.resolved_url().ok_or_else(|| KvError::Invalid("kv.url is missing".into()))?;
                let timeout = Duration::from_millis(config.timeout_ms);
                Ok(KvStore::Redis(RedisKv::new(&url, &config.namespace, timeout)?))
            }
        }
    }

    /// Whether other processes see what this store holds (Redis).
    pub fn is_shared(&self) -> bool {
        matches!(self, KvStore::Redis(_))
    }

    /// Which shared store this is: an id the first instance to ask writes into it, which every
    /// other reads back (Redis); `None` for a store in this process, which nobody shares.
    /// Instances that report the same identity see the same sessions, budgets and grants (the
    /// same server and namespace): what a blue/green deploy checks before it switches.
    pub async fn identity(&self) -> Result<Option<String>, KvError> {
        match self {
            KvStore::Memory(_) => Ok(None),
            KvStore::Redis(store) => {
                // Read: written once, it is there for every later asker (one round trip).
                if let Some(known) = Box::pin(store.get(IDENTITY_KEY)).await? {
                    return Ok(Some(known));
                }
                let mine = uuid::Uuid::new_v4().simple().to_string();
                if Box::pin(store.compare_and_swap(IDENTITY_KEY, None, &mine, None)).await? {
                    return Ok(Some(mine));
                }
                // Another instance wrote its id first.
                Box::pin(store.get(IDENTITY_KEY)).await
            }
        }
    }

    /// The live value at `key`.
    pub async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        match self {
            KvStore::Memory(store) => store.get(key),
            KvStore::Redis(store) => Box::pin(store.get(key)).await,
        }
    }

    /// Stores `value` at `key`, within `quota` (if any) for the key's prefix (memory only:
    /// on Redis, bound memory with Redis's own `maxmemory`).
    pub async fn set(&self, key: &str, value: &str, ttl_ms: Option<u64>, quota: Option<&Quota>) -> Result<(), KvError> {
        match self {
            KvStore::Memory(store) => store.set(key, value, ttl_ms, quota),
            KvStore::Redis(store) => Box::pin(store.set(key, value, ttl_ms)).await,
        }
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        match self {
            KvStore::Memory(store) => store.delete(key),
            KvStore::Redis(store) => Box::pin(store.delete(key)).await,
        }
    }

    /// Adds `delta` to the counter at `key` (missing or expired counts as 0); `ttl_ms` applies
    /// when the counter is created.
    pub async fn increment(
        &self,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
        quota: Option<&Quota>,
    ) -> Result<i64, KvError> {
        match self {
            KvStore::Memory(store) => store.increment(key, delta, ttl_ms, quota),
            KvStore::Redis(store) => Box::pin(store.increment(key, delta, ttl_ms)).await,
        }
    }

    /// Replaces the value at `key` with `new` if it equals `expected` (`None`: absent).
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl_ms: Option<u64>,
        quota: Option<&Quota>,
    ) -> Result<bool, KvError> {
        match self {
            KvStore::Memory(store) => store.compare_and_swap(key, expected, new, ttl_ms, quota),
            KvStore::Redis(store) => Box::pin(store.compare_and_swap(key, expected, new, ttl_ms)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plugin's `kv` call boxes the operation's future: on the in-memory store it must stay
    /// small (the Redis round trip is boxed apart), or every call allocates hundreds of bytes.
    #[test]
    fn operations_are_small_futures_whatever_the_backend() {
        let store = KvStore::default();
        let quota = Quota { entries: 1, bytes: 1 };
        let sizes = [
            ("get", std::mem::size_of_val(&store.get("k"))),
            ("set", std::mem::size_of_val(&store.set("k", "v", None, Some(&quota)))),
            ("delete", std::mem::size_of_val(&store.delete("k"))),
            ("increment", std::mem::size_of_val(&store.increment("k", 1, None, Some(&quota)))),
            ("compare_and_swap", std::mem::size_of_val(&store.compare_and_swap("k", None, "v", None, Some(&quota)))),
        ];
        for (operation, size) in sizes {
            assert!(size <= 160, "{operation}: a {size}-byte future");
        }
    }
}
