//! Keyed caps on things that are open at once: sessions per principal and per remote address,
//! connections per address that have not authenticated yet. One counter type serves every
//! such cap, so they all count and release the same way: a guard held for the thing's lifetime.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The key a client address is counted under by every per-address cap (sessions, connections
/// not yet authenticated, failed authentications): itself for IPv4 (an IPv4-mapped IPv6
/// address as the IPv4 one), its /64 for IPv6, which one holder commonly has whole: rotating
/// source addresses within it must not multiply the caps.
pub fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Who every per-address cap and the authentication throttle count a client as: its
/// [`address_key`], and whether a trusted proxy named it. A client the proxy names is never the
/// same as one connecting directly from that address: behind a proxy on the same host, the local
/// users who reach the public frontend as 127.0.0.1 must not use up the caps (or the failed
/// authentications) of the operator's own tools that connect to the relay's port directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey {
    /// The client's [`address_key`] (an IPv6 address's /64).
    address: IpAddr,
    /// Whether a trusted proxy named it (a PROXY header), rather than it connecting directly.
    proxied: bool,
}

impl AddressKey {
    /// The key of a client at `addr`, named by a trusted proxy's header when `proxied`.
    pub fn new(addr: IpAddr, proxied: bool) -> Self {
        Self { address: address_key(addr), proxied }
    }
}

impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proxied {
            true => write!(f, "{} (through a trusted proxy)", self.address),
            false => write!(f, "{}", self.address),
        }
    }
}

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
    fn an_ipv6_address_counts_as_its_64_and_a_mapped_one_as_ipv4() {
        let key = |text: &str| address_key(text.parse().unwrap());
        assert_eq!(key("2001:db8:1:1::a"), key("2001:db8:1:1:ffff::9"));
        assert_ne!(key("2001:db8:1:1::a"), key("2001:db8:1:2::a"));
        assert_eq!(key("::ffff:10.0.0.2"), key("10.0.0.2"));
        assert_ne!(key("10.0.0.2"), key("10.0.0.3"));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_ne!(AddressKey::new(local, true), AddressKey::new(local, false), "proxied is not direct");
        assert_eq!(AddressKey::new("::ffff:127.0.0.1".parse().unwrap(), true), AddressKey::new(local, true));
    }

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
