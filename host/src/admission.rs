//! Keyed caps on things that are open at once: sessions per principal and per remote address,
//! connections per address that have not authenticated yet. One counter type serves every
//! such cap, so they all count and release the same way: a guard held for the thing's lifetime.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// How many of something each key holds now.
#[derive(Debug)]
pub struct KeyedCounts<K: Eq + Hash + Clone> {
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash + Clone> Default for KeyedCounts<K> {
    fn default() -> Self {
        Self { counts: Mutex::default() }
    }
}

/// Counts one item of its key until dropped.
#[derive(Debug)]
pub struct CountGuard<K: Eq + Hash + Clone> {
    counts: Arc<KeyedCounts<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> KeyedCounts<K> {
    /// Counts one more for `key` unless it already holds `limit`; `None` when full.
    pub fn try_acquire(self: &Arc<Self>, key: &K, limit: usize) -> Option<CountGuard<K>> {
        let mut counts = self.counts.lock().expect("counts lock");
        let count = counts.entry(key.clone()).or_default();
        if *count >= limit {
            if *count == 0 {
                counts.remove(key);
            }
            return None;
        }
        *count += 1;
        Some(CountGuard { counts: self.clone(), key: key.clone() })
    }

    /// How many `key` holds now.
    #[cfg(test)]
    fn count(&self, key: &K) -> usize {
        self.counts.lock().expect("counts lock").get(key).copied().unwrap_or(0)
    }
}

impl<K: Eq + Hash + Clone> Drop for CountGuard<K> {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().expect("counts lock");
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_key_and_releases_on_drop() {
        let counts = Arc::new(KeyedCounts::<String>::default());
        let a = "a".to_owned();
        let first = counts.try_acquire(&a, 2).unwrap();
        let _second = counts.try_acquire(&a, 2).unwrap();
        assert!(counts.try_acquire(&a, 2).is_none(), "a third is over the cap");
        assert!(counts.try_acquire(&"b".to_owned(), 2).is_some(), "other keys have their own cap");
        drop(first);
        assert_eq!(counts.count(&a), 1);
        assert!(counts.try_acquire(&a, 2).is_some());
    }
}
