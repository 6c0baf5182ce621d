//! The auth plugin's successes, remembered in the relay's own memory: a client that
//! authenticates on every request (stateless 2026-07-28, a reconnecting client) does not pay a
//! signature check each time, and a credential verified recently is admitted even while its
//! address is throttled for other clients' failures. Entries are keyed by the credential's
//! digest (never the credential), held until the credential expires (`credential.expires-at`)
//! and for at most [`MAX_AGE`], and belong to one version of the auth plugin. A reload of any
//! plugin (even one that finds its file unchanged: SIGHUP, `relay_reload_plugins`) or a rollback
//! forgets them all, and what a check that started before is not remembered: an operator who
//! revoked a credential where the plugin reads it (a file grant, `kv`) and asks for a reload is
//! obeyed by every new connection and stateless call at once, and by every open session at its
//! next request (`session::Standing`). Nothing is stored where anyone but this process can
//! write it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::access::Authenticated;

/// The longest a success is remembered, whatever the credential's own expiry.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// Entries kept; a put beyond it first drops what no longer holds, and everything when that
/// is not enough.
const CAPACITY: usize = 8192;

struct Entry {
    authenticated: Authenticated,
    /// The auth plugin version that decided.
    version: String,
    /// [`AuthCache::generation`] when the check began.
    generation: u64,
    until: Instant,
}

/// Successes by credential digest.
#[derive(Default)]
pub struct AuthCache {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    /// Moved on by each [`AuthCache::clear`]: a check that began before one is not remembered.
    generation: AtomicU64,
}

impl AuthCache {
    /// Now; a check takes it before it begins and gives it to [`AuthCache::put`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The remembered success for `credential`, if `version` decided it and it still holds.
    pub fn get(&self, credential: &[u8; 32], version: &str) -> Option<Authenticated> {
        let mut entries = self.entries.lock().expect("auth cache lock");
        let entry = entries.get(credential)?;
        let expired = entry.authenticated.expires_at.is_some_and(|at| at <= SystemTime::now());
        let forgotten = entry.generation != self.generation();
        if entry.version != version || entry.until <= Instant::now() || expired || forgotten {
            entries.remove(credential);
            return None;
        }
        Some(entry.authenticated.clone())
    }

    /// Remembers that `version` admitted `credential` as `authenticated`, in a check that
    /// began at `generation`.
    pub fn put(&self, credential: [u8; 32], version: &str, generation: u64, authenticated: &Authenticated) {
        let now = Instant::now();
        let left = match authenticated.expires_at {
            Some(at) => match at.duration_since(SystemTime::now()) {
                Ok(left) => left.min(MAX_AGE),
                Err(_) => return,
            },
            None => MAX_AGE,
        };
        let mut entries = self.entries.lock().expect("auth cache lock");
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| e.until > now && e.version == version);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        let entry =
            Entry { authenticated: authenticated.clone(), version: version.to_owned(), generation, until: now + left };
        entries.insert(credential, entry);
    }

    /// Forgets every success, and every check running now.
    pub fn clear(&self) {
        let mut entries = self.entries.lock().expect("auth cache lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Entries held now (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().expect("auth cache lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Principal;

    fn alice(expires_at: Option<SystemTime>) -> Authenticated {
        Authenticated { principal: Principal { id: "alice".into(), roles: vec![] }, expires_at, bearer: None }
    }

    #[test]
    fn a_success_holds_for_its_version_until_its_credential_expires() {
        let cache = AuthCache::default();
        cache.put([1; 32], "v1", 0, &alice(None));
        assert_eq!(cache.get(&[1; 32], "v1").unwrap().principal.id, "alice");
        assert!(cache.get(&[2; 32], "v1").is_none(), "another credential");
        assert!(cache.get(&[1; 32], "v2").is_none(), "a reloaded plugin decides again");
        assert_eq!(cache.len(), 0, "and the stale entry is gone");
        cache.put([1; 32], "v1", 0, &alice(Some(SystemTime::now() - Duration::from_secs(1))));
        assert_eq!(cache.len(), 0, "an expired credential is not remembered");
        cache.put([1; 32], "v1", 0, &alice(Some(SystemTime::now() + Duration::from_millis(30))));
        assert!(cache.get(&[1; 32], "v1").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&[1; 32], "v1").is_none(), "gone when the credential expires");
    }

    /// A check that began before a reload forgot everything is not remembered after it.
    #[test]
    fn a_check_begun_before_a_clear_is_not_remembered() {
        let cache = AuthCache::default();
        let begun = cache.generation();
        cache.clear();
        cache.put([1; 32], "v1", begun, &alice(None));
        assert!(cache.get(&[1; 32], "v1").is_none());
        cache.put([1; 32], "v1", cache.generation(), &alice(None));
        assert!(cache.get(&[1; 32], "v1").is_some());
    }
}
