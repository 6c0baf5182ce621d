//! Holds: a policy plugin's `ok` (or an interceptor's `proceed`) that stands for the next
//! requests of the same principal, method and tool (`verdict.hold`), so the host answers them
//! without a call into the plugin. A version of a plugin keeps its own holds: a reload or a
//! rollback starts with none. The table is bounded; a hold that ran out is reported once to the
//! plugin's next call for the same key (`verdict.previous`), so a plugin that paid in advance
//! can give back what was left. [`Slot::decide`] is the one way a call consults them (the
//! policy chain, the interceptors' request hook).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use wasmtime::{Engine, Store};

use super::loaded::{Bound, Version};
use super::registry::Slot;
use super::sandbox::{PluginError, PluginState};

/// Holds kept per plugin version; a new one beyond it first drops those that ran out, and is
/// not kept when that is not enough.
const CAPACITY: usize = 4096;

/// Holds a principal id may have for a new one to be kept once the table is half full: a client
/// that makes many keys (a resource URI per read, a tool name per call) cannot take the whole
/// table from everyone else.
const PER_PRINCIPAL: usize = 256;

/// The longest a hold may stand.
pub const MAX_HOLD: Duration = Duration::from_secs(60);

/// What a hold's decision was about: the caller, the method and the tool.
#[derive(Clone, Copy)]
pub struct HoldKey<'a> {
    /// The caller's id.
    pub id: &'a str,
    /// The caller's roles.
    pub roles: &'a [String],
    /// The JSON-RPC method.
    pub method: &'a str,
    /// The backend that serves the call, as interceptors are told it (policies are not).
    pub backend: Option<&'a str>,
    /// The tool (its catalog name), for `tools/call`; an interceptor's prompt or resource URI.
    pub tool: Option<&'a str>,
}

/// A hold that ended, as `verdict.previous` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndedHold {
    /// The requests it was given for.
    pub granted: u32,
    /// The requests it had not served when it ended.
    pub unused: u32,
}

/// What the table says of one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// A hold answers for the plugin (and counts the request).
    Yes,
    /// The plugin decides; `previous` is the hold of this key that ended since its last call.
    No { previous: Option<EndedHold> },
}

impl HoldKey<'_> {
    /// What a table hashes the key by.
    pub(super) fn parts(&self) -> (&str, &[String], &str, Option<&str>, Option<&str>) {
        (self.id, self.roles, self.method, self.backend, self.tool)
    }
}

/// A [`HoldKey`] as a standing decision keeps it (a hold here, a standing refusal in
/// `refusals`), to compare in full on a hash hit.
pub(super) struct KeptKey {
    id: String,
    roles: Vec<String>,
    method: String,
    backend: Option<String>,
    tool: Option<String>,
}

impl KeptKey {
    pub(super) fn of(key: &HoldKey<'_>) -> Self {
        KeptKey {
            id: key.id.to_owned(),
            roles: key.roles.to_vec(),
            method: key.method.to_owned(),
            backend: key.backend.map(str::to_owned),
            tool: key.tool.map(str::to_owned),
        }
    }

    pub(super) fn is(&self, key: &HoldKey<'_>) -> bool {
        self.id == key.id
            && self.roles == key.roles
            && self.method == key.method
            && self.backend.as_deref() == key.backend
            && self.tool.as_deref() == key.tool
    }
}

struct Entry {
    key: KeptKey,
    granted: u32,
    left: u32,
    until: Instant,
}

/// One plugin version's holds, by a hash of their key (compared in full on a hit).
#[derive(Default)]
pub struct Holds {
    hasher: RandomState,
    entries: Mutex<HashMap<u64, Entry, RandomState>>,
}

impl Holds {
    /// Forgets every hold (the version is retired, or starts afresh).
    pub fn clear(&self) {
        self.entries.lock().expect("holds lock").clear();
    }

    fn hash(&self, key: &HoldKey<'_>) -> u64 {
        self.hasher.hash_one(key.parts())
    }

    /// Serves the request from a standing hold of `key`, or says the plugin must decide (with
    /// the hold of `key` that ended, removed from the table so it is told once).
    pub fn take(&self, key: &HoldKey<'_>, now: Instant) -> Held {
        let hash = self.hash(key);
        let mut entries = self.entries.lock().expect("holds lock");
        let Some(entry) = entries.get_mut(&hash) else { return Held::No { previous: None } };
        if !entry.key.is(key) {
            return Held::No { previous: None };
        }
        if entry.left > 0 && entry.until > now {
            entry.left -= 1;
            return Held::Yes;
        }
        let ended = EndedHold { granted: entry.granted, unused: entry.left };
        entries.remove(&hash);
        Held::No { previous: Some(ended) }
    }

    /// Records the plugin's `verdict.hold(requests, within)` for `key`, after its `ok` (or
    /// `proceed`). A hold still standing for the same key (another request's, decided
    /// meanwhile) is added to.
    pub fn give(&self, key: &HoldKey<'_>, requests: u32, within: Duration, now: Instant) {
        if requests == 0 || within.is_zero() {
            return;
        }
        let until = now + within.min(MAX_HOLD);
        let hash = self.hash(key);
        let mut entries = self.entries.lock().expect("holds lock");
        if let Some(entry) = entries.get_mut(&hash)
            && entry.key.is(key)
        {
            entry.granted = entry.granted.saturating_add(requests);
            entry.left = entry.left.saturating_add(requests);
            entry.until = entry.until.max(until);
            return;
        }
        // Counted only when the table fills: below half of it every principal may hold.
        let crowded = |entries: &HashMap<u64, Entry, RandomState>| {
            entries.len() >= CAPACITY
                || (entries.len() >= CAPACITY / 2
                    && entries.values().filter(|e| e.key.id == key.id).count() >= PER_PRINCIPAL)
        };
        if crowded(&entries) {
            entries.retain(|_, e| e.left > 0 && e.until > now);
            if crowded(&entries) {
                return;
            }
        }
        let entry = Entry { key: KeptKey::of(key), granted: requests, left: requests, until };
        entries.insert(hash, entry);
    }
}

impl Slot {
    /// A decision of `version` (this slot's, as the caller loaded it) that may hold
    /// (`verdict.hold`): `None` when a standing hold of that version answers `key` (counted as
    /// held), else what `call` decided. The call is told the hold of `key` that ended
    /// (`verdict.previous`), and a hold it gives is kept by the version that decided when
    /// `stands` says the decision may stand (a policy's `ok`, an interceptor's `proceed`).
    pub(super) async fn decide<T>(
        &self,
        version: Arc<Version>,
        engine: &Engine,
        key: &HoldKey<'_>,
        stands: impl FnOnce(&T) -> bool,
        call: impl AsyncFnOnce(&Bound, &mut Store<PluginState>) -> wasmtime::Result<T>,
    ) -> Result<Option<T>, PluginError> {
        let previous = match version.holds.take(key, Instant::now()) {
            Held::Yes => {
                self.held();
                return Ok(None);
            }
            Held::No { previous } => previous,
        };
        let (decision, hold) = self
            .invoke_on(version.clone(), engine, None, async |bound, store| {
                let note = &mut store.data_mut().verdict;
                (note.previous, note.hold) = (previous, None);
                let decision = call(bound, &mut *store).await?;
                Ok((decision, store.data_mut().verdict.hold.take()))
            })
            .await?;
        if let Some((requests, within)) = hold
            && stands(&decision)
        {
            version.holds.give(key, requests, within, Instant::now());
        }
        Ok(Some(decision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// alice, with no roles, calling the tool `echo`.
    fn echo_call() -> HoldKey<'static> {
        HoldKey { id: "alice", roles: &[], method: "tools/call", backend: None, tool: Some("echo") }
    }

    #[test]
    fn a_hold_serves_its_requests_then_is_reported_once() {
        let (holds, key, now) = (Holds::default(), echo_call(), Instant::now());
        assert_eq!(holds.take(&key, now), Held::No { previous: None });
        holds.give(&key, 3, Duration::from_secs(1), now);
        for _ in 0..3 {
            assert_eq!(holds.take(&key, now), Held::Yes);
        }
        assert_eq!(holds.take(&key, now), Held::No { previous: Some(EndedHold { granted: 3, unused: 0 }) });
        assert_eq!(holds.take(&key, now), Held::No { previous: None });
    }

    #[test]
    fn a_hold_whose_time_ran_out_reports_what_it_left() {
        let (holds, key, now) = (Holds::default(), echo_call(), Instant::now());
        holds.give(&key, 5, Duration::from_millis(100), now);
        assert_eq!(holds.take(&key, now), Held::Yes);
        let later = now + Duration::from_millis(100);
        assert_eq!(holds.take(&key, later), Held::No { previous: Some(EndedHold { granted: 5, unused: 4 }) });
    }

    #[test]
    fn a_hold_stands_only_for_its_own_principal_roles_method_and_tool() {
        let (holds, now) = (Holds::default(), Instant::now());
        let (user, user_admin) = (["user".to_owned()], ["user".to_owned(), "admin".to_owned()]);
        let key = HoldKey { roles: &user, ..echo_call() };
        holds.give(&key, 100, Duration::from_secs(1), now);
        let others = [
            HoldKey { id: "bob", ..key },
            HoldKey { roles: &user_admin, ..key },
            HoldKey { method: "prompts/get", ..key },
            HoldKey { tool: Some("other"), ..key },
            HoldKey { tool: None, ..key },
            HoldKey { backend: Some("b"), ..key },
        ];
        for other in others {
            assert_eq!(holds.take(&other, now), Held::No { previous: None });
        }
        assert_eq!(holds.take(&key, now), Held::Yes);
    }

    #[test]
    fn holds_given_meanwhile_add_up_and_the_longest_time_stands() {
        let (holds, key, now) = (Holds::default(), HoldKey { tool: None, ..echo_call() }, Instant::now());
        holds.give(&key, 1, Duration::from_millis(10), now);
        holds.give(&key, 2, Duration::from_secs(1), now);
        let later = now + Duration::from_millis(500);
        for _ in 0..3 {
            assert_eq!(holds.take(&key, later), Held::Yes);
        }
        assert!(matches!(holds.take(&key, later), Held::No { previous: Some(EndedHold { granted: 3, unused: 0 }) }));
    }

    #[test]
    fn one_principal_cannot_take_a_crowded_table_from_the_others() {
        let (holds, now) = (Holds::default(), Instant::now());
        let tools: Vec<String> = (0..CAPACITY).map(|i| format!("t{i}")).collect();
        for tool in &tools {
            holds.give(&HoldKey { tool: Some(tool), ..echo_call() }, 1, MAX_HOLD, now);
        }
        // Below half the table alice held freely; past it, not while she has her share.
        assert_eq!(holds.entries.lock().unwrap().len(), CAPACITY / 2);
        let bob = HoldKey { id: "bob", ..echo_call() };
        holds.give(&bob, 1, MAX_HOLD, now);
        assert_eq!(holds.take(&bob, now), Held::Yes, "another principal still holds");
    }

    #[test]
    fn the_table_is_bounded_and_holds_stand_at_most_a_minute() {
        let holds = Holds::default();
        let now = Instant::now();
        let ids: Vec<String> = (0..CAPACITY + 10).map(|i| format!("p{i}")).collect();
        for id in &ids {
            holds.give(&HoldKey { id, ..echo_call() }, 1, Duration::from_secs(3600), now);
        }
        assert_eq!(holds.entries.lock().unwrap().len(), CAPACITY);
        let last = HoldKey { id: &ids[CAPACITY + 9], ..echo_call() };
        assert_eq!(holds.take(&last, now), Held::No { previous: None }, "not kept beyond the capacity");
        let first = HoldKey { id: &ids[0], ..echo_call() };
        assert!(matches!(holds.take(&first, now + MAX_HOLD), Held::No { previous: Some(_) }));
    }
}
