//! Refusals that stand: a policy plugin's rate-limited denial with a `retry-after-ms` says the
//! same request (session, principal, roles, method and tool) will not pass before then, so the
//! host answers it so until then without a call into the plugin. Kept per session: a policy may
//! limit by session or transport, and on an open relay every client is one principal. A client refused by a rate limit
//! that goes on retrying at full speed then costs no plugin call and no store round trip, and
//! cannot take the plugin's call slots (each a Redis round trip) from every other principal. A
//! version of a plugin keeps its own: a reload, which may change the limit, starts with none.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

use super::bindings::types::{Denial, DenialCode};
use super::holds::{HoldKey, KeptKey, MAX_HOLD};

/// Refusals kept per plugin version: beyond it those that ran out are dropped first, and a new
/// one is not kept when that is not enough (its plugin is asked again, as without the table).
const CAPACITY: usize = 4096;

/// One standing refusal, with the session and key it is for (compared in full on a hit).
struct Standing {
    session: String,
    key: KeptKey,
    denial: Denial,
    until: Instant,
}

impl Standing {
    fn is_for(&self, key: &HoldKey<'_>, session: &str) -> bool {
        self.session == session && self.key.is(key)
    }
}

/// One plugin version's standing refusals, by a hash of their key.
#[derive(Default)]
pub struct Refusals {
    hasher: RandomState,
    entries: Mutex<HashMap<u64, Standing, RandomState>>,
}

impl Refusals {
    /// Forgets every refusal (the version is retired, or starts afresh).
    pub fn clear(&self) {
        self.entries.lock().expect("refusals lock").clear();
    }

    fn hash(&self, key: &HoldKey<'_>, session: &str) -> u64 {
        self.hasher.hash_one((session, key.parts()))
    }

    /// The refusal standing for `key` in `session` at `now`, its wait shortened to what is left.
    pub fn standing(&self, key: &HoldKey<'_>, session: &str, now: Instant) -> Option<Denial> {
        let entries = self.entries.lock().expect("refusals lock");
        let entry = entries.get(&self.hash(key, session)).filter(|e| e.is_for(key, session) && e.until > now)?;
        let left = u64::try_from((entry.until - now).as_millis()).unwrap_or(u64::MAX).max(1);
        Some(Denial { retry_after_ms: Some(left), ..entry.denial.clone() })
    }

    /// Keeps `denial` of `key` in `session` when it says how long it stands (rate-limited, with
    /// a wait; at most [`MAX_HOLD`]).
    pub fn record(&self, key: &HoldKey<'_>, session: &str, denial: &Denial, now: Instant) {
        let (DenialCode::RateLimited, Some(wait @ 1..)) = (denial.code, denial.retry_after_ms) else { return };
        let until = now + Duration::from_millis(wait).min(MAX_HOLD);
        let mut entries = self.entries.lock().expect("refusals lock");
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| e.until > now);
            if entries.len() >= CAPACITY {
                return;
            }
        }
        let standing = Standing { session: session.to_owned(), key: KeptKey::of(key), denial: denial.clone(), until };
        entries.insert(self.hash(key, session), standing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(tool: &str) -> HoldKey<'_> {
        HoldKey { id: "alice", roles: &[], method: "tools/call", backend: None, tool: Some(tool) }
    }

    fn limited(retry_after_ms: Option<u64>) -> Denial {
        Denial { code: DenialCode::RateLimited, message: "slow down".into(), retry_after_ms }
    }

    #[test]
    fn a_rate_limited_denial_stands_for_its_wait_and_its_key_only() {
        let (refusals, now) = (Refusals::default(), Instant::now());
        refusals.record(&alice("echo"), "s1", &limited(Some(1000)), now);
        let later = now + Duration::from_millis(400);
        let standing = refusals.standing(&alice("echo"), "s1", later).expect("stands");
        assert_eq!((standing.message.as_str(), standing.retry_after_ms), ("slow down", Some(600)));
        assert!(refusals.standing(&alice("other"), "s1", later).is_none(), "another tool is asked");
        assert!(refusals.standing(&alice("echo"), "s2", later).is_none(), "another session is asked");
        assert!(refusals.standing(&HoldKey { id: "bob", ..alice("echo") }, "s1", later).is_none());
        assert!(refusals.standing(&alice("echo"), "s1", now + Duration::from_millis(1000)).is_none(), "over");
    }

    #[test]
    fn only_rate_limited_denials_with_a_wait_stand_and_at_most_a_minute() {
        let (refusals, now) = (Refusals::default(), Instant::now());
        let forbidden = Denial { code: DenialCode::Forbidden, ..limited(Some(1000)) };
        refusals.record(&alice("a"), "s", &forbidden, now);
        refusals.record(&alice("b"), "s", &limited(None), now);
        refusals.record(&alice("c"), "s", &limited(Some(3_600_000)), now);
        assert!(
            refusals.standing(&alice("a"), "s", now).is_none() && refusals.standing(&alice("b"), "s", now).is_none()
        );
        assert!(refusals.standing(&alice("c"), "s", now + MAX_HOLD).is_none(), "a minute at most");
    }
}
