//! The in-memory `kv` backend: values with optional expiry, atomic increment and
//! compare-and-swap, in this process. Every plugin's keys sit under its own prefix
//! (`plugin:key`), and each prefix's entries and bytes are counted, so a plugin's writes can be
//! held to its quota. State survives a plugin reload, not a restart, and is not shared between
//! instances (the Redis backend is).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::kv_store::{KvError, Quota, check};

/// What one prefix holds now.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    entries: usize,
    bytes: usize,
}

fn namespace(key: &str) -> &str {
    key.split_once(':').map_or("", |(ns, _)| ns)
}

/// Expired entries are swept once the map has grown by this many inserts.
const SWEEP_EVERY: usize = 4096;

struct Entry {
    value: String,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }

    /// [`Self::live`], reading the clock only for an entry that can expire.
    fn live_now(&self) -> bool {
        self.expires.is_none_or(|t| t > Instant::now())
    }
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    inserts_since_sweep: usize,
    usage: HashMap<String, Usage>,
}

/// The store. Every operation holds one lock for its whole duration, which is what makes
/// increment and compare-and-swap atomic.
#[derive(Default)]
pub struct MemoryKv {
    inner: Mutex<Inner>,
}

fn expiry(now: Instant, ttl_ms: Option<u64>) -> Option<Instant> {
    ttl_ms.map(|ms| now + Duration::from_millis(ms))
}

impl MemoryKv {
    /// The live value at `key`.
    pub fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        check(key, None)?;
        let inner = self.inner.lock().expect("kv lock");
        Ok(inner.map.get(key).filter(|e| e.live_now()).map(|e| e.value.clone()))
    }

    /// Stores `value` at `key`, within `quota` (if any) for the key's prefix.
    pub fn set(&self, key: &str, value: &str, ttl_ms: Option<u64>, quota: Option<&Quota>) -> Result<(), KvError> {
        check(key, Some(value))?;
        let mut inner = self.inner.lock().expect("kv lock");
        inner.insert(key, Entry { value: value.to_owned(), expires: expiry(Instant::now(), ttl_ms) }, quota)
    }

    /// Removes `key`.
    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        check(key, None)?;
        self.inner.lock().expect("kv lock").remove(key);
        Ok(())
    }

    /// Adds `delta` to the counter at `key` (missing or expired counts as 0).
    pub fn increment(&self, key: &str, delta: i64, ttl_ms: Option<u64>, quota: Option<&Quota>) -> Result<i64, KvError> {
        check(key, None)?;
        let mut inner = self.inner.lock().expect("kv lock");
        let now = Instant::now();
        let (current, expires) = match inner.map.get(key).filter(|e| e.live(now)) {
            Some(entry) => {
                let n = entry.value.parse::<i64>().map_err(|_| KvError::Invalid(format!("{key} is not a counter")))?;
                (n, entry.expires)
            }
            None => (0, expiry(now, ttl_ms)),
        };
        let next = current.checked_add(delta).ok_or_else(|| KvError::Invalid("counter overflow".into()))?;
        inner.insert(key, Entry { value: next.to_string(), expires }, quota)?;
        Ok(next)
    }

    /// Replaces the value at `key` with `new` if it equals `expected` (`None`: absent).
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl_ms: Option<u64>,
        quota: Option<&Quota>,
    ) -> Result<bool, KvError> {
        check(key, Some(new))?;
        let mut inner = self.inner.lock().expect("kv lock");
        let now = Instant::now();
        let current = inner.map.get(key).filter(|e| e.live(now)).map(|e| e.value.as_str());
        if current != expected {
            return Ok(false);
        }
        inner.insert(key, Entry { value: new.to_owned(), expires: expiry(now, ttl_ms) }, quota)?;
        Ok(true)
    }
}

impl Inner {
    /// Stores `entry` unless that takes the key's prefix past `quota` (expired entries are
    /// swept first before a write is refused). A key already present is overwritten in place:
    /// the hot path (a counter or a rate-limit bucket rewritten on every request) allocates
    /// nothing but the value.
    fn insert(&mut self, key: &str, entry: Entry, quota: Option<&Quota>) -> Result<(), KvError> {
        let size = key.len() + entry.value.len();
        let mut replaced = self.map.get(key).map(|e| key.len() + e.value.len());
        if let Some(quota) = quota {
            let fits = |usage: Usage, replaced: Option<usize>| {
                let entries = usage.entries + usize::from(replaced.is_none());
                let bytes = usage.bytes - replaced.unwrap_or(0) + size;
                entries <= quota.entries && bytes <= quota.bytes
            };
            if !fits(self.usage_of(key), replaced) {
                self.sweep();
                // The sweep may have dropped the entry this write replaces.
                replaced = self.map.get(key).map(|e| key.len() + e.value.len());
                let usage = self.usage_of(key);
                if !fits(usage, replaced) {
                    return Err(KvError::Quota(format!(
                        "{} entries and {} bytes held, at most {} and {} allowed",
                        usage.entries, usage.bytes, quota.entries, quota.bytes
                    )));
                }
            }
        }
        let account = |usage: &mut Usage| {
            usage.entries += usize::from(replaced.is_none());
            usage.bytes = usage.bytes - replaced.unwrap_or(0) + size;
        };
        match self.usage.get_mut(namespace(key)) {
            Some(usage) => account(usage),
            None => {
                let mut usage = Usage::default();
                account(&mut usage);
                self.usage.insert(namespace(key).to_owned(), usage);
            }
        }
        match self.map.get_mut(key) {
            Some(held) => *held = entry,
            None => {
                self.map.insert(key.to_owned(), entry);
            }
        }
        self.inserts_since_sweep += 1;
        if self.inserts_since_sweep >= SWEEP_EVERY {
            self.sweep();
        }
        Ok(())
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.map.remove(key) {
            self.release(key, &entry);
        }
    }

    fn usage_of(&self, key: &str) -> Usage {
        self.usage.get(namespace(key)).copied().unwrap_or_default()
    }

    fn release(&mut self, key: &str, entry: &Entry) {
        if let Some(usage) = self.usage.get_mut(namespace(key)) {
            usage.entries -= 1;
            usage.bytes -= key.len() + entry.value.len();
        }
    }

    /// Drops expired entries.
    fn sweep(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self.map.iter().filter(|(_, e)| !e.live(now)).map(|(k, _)| k.clone()).collect();
        for key in expired {
            self.remove(&key);
        }
        self.inserts_since_sweep = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_atomically_across_threads() {
        let store = MemoryKv::default();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        store.increment("n", 1, None, None).unwrap();
                    }
                });
            }
        });
        assert_eq!(store.get("n").unwrap().as_deref(), Some("8000"));
    }

    #[test]
    fn compare_and_swap_and_expiry() {
        let store = MemoryKv::default();
        assert!(store.compare_and_swap("k", None, "1", None, None).unwrap());
        assert!(!store.compare_and_swap("k", None, "2", None, None).unwrap());
        assert!(store.compare_and_swap("k", Some("1"), "2", Some(1), None).unwrap());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.get("k").unwrap(), None);
        assert!(store.compare_and_swap("k", None, "3", None, None).unwrap());
        store.set("c", "x", None, None).unwrap();
        assert!(store.increment("c", 1, None, None).is_err());
    }

    #[test]
    fn each_prefix_is_held_to_its_quota() {
        let store = MemoryKv::default();
        let quota = Quota { entries: 2, bytes: 40 };
        store.set("p:a", "1", None, Some(&quota)).unwrap();
        store.set("p:b", "2", None, Some(&quota)).unwrap();
        assert!(matches!(store.set("p:c", "3", None, Some(&quota)), Err(KvError::Quota(_))), "a third entry");
        store.set("p:a", "replaced", None, Some(&quota)).unwrap();
        assert!(matches!(store.set("p:a", &"x".repeat(64), None, Some(&quota)), Err(KvError::Quota(_))), "bytes");
        store.set("q:c", "3", None, Some(&quota)).unwrap();
        store.delete("p:b").unwrap();
        store.set("p:c", "3", None, Some(&quota)).unwrap();
        store.set("p:t", "expiring", Some(1), None).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        store.delete("p:c").unwrap();
        store.set("p:d", "4", None, Some(&quota)).expect("expired entries are swept before a refusal");
    }
}
