//! Streamable HTTP sessions that outlive the instance that opened them: what `initialize` and
//! later requests established (negotiated version, client capabilities and name, log level,
//! subscriptions, and the digest of the credential the session is bound to) is kept in the
//! `kv` when it is shared (Redis), so any instance sharing it (the other colour, after a
//! blue/green switch, or a peer behind round-robin) serves the session without a new
//! `initialize`, and a session ended anywhere (`DELETE`, credential expiry) is refused
//! everywhere.
//!
//! An ended session's record is replaced by a marker ([`ENDED`]), not deleted: a record that is
//! simply gone was lost by the kv (Redis restarted or flushed, or it lapsed between two
//! refreshes), and the instance serving the session writes it again instead of ending it. The
//! marker must outlive every other instance's copy of the session, so it is kept long (twice
//! the idle timeout) only for a session another instance took up (which marks it held there,
//! before it reads the record): the end of one no other instance saw is recorded for seconds,
//! and a client opening and ending sessions in a loop does not fill Redis with markers.
//!
//! Nothing in a record admits anyone: the instance that takes a session over authenticates the
//! presented credential itself (the auth plugin, as for a new session) and requires it to match
//! the record's credential digest and principal. Whoever can write to Redis can end sessions
//! (as they could end anything there), not join or widen one. With the in-memory `kv` there is
//! one process and the local registry is the whole truth: nothing is written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Session, SessionRecord};
use crate::plugins::{KvError, KvStore};

/// Where records live in the kv: plugin prefixes are `[A-Za-z0-9_-]` only, so no plugin's key
/// can be one of these.
const PREFIX: &str = "relay.session:";

/// What an ended session's record reads: not JSON, so never a record.
const ENDED: &str = "ended";

/// Where an instance that took a session up says so (under the digest of its id, as records):
/// the session's end must then be recorded for as long as that copy may live.
const HELD_PREFIX: &str = "relay.session-held:";

/// How long the end of a session no other instance took up is recorded: past a write of its
/// record already on its way when it ended (a request of the session finishing).
const BRIEF_END: Duration = Duration::from_secs(10);

/// The records of open sessions in the shared `kv` (a no-op on the in-memory one).
pub struct SharedSessions {
    /// `None` unless the kv is shared by instances.
    kv: Option<Arc<KvStore>>,
    /// How long a record outlives its session's last request (`limits.idle_timeout_secs`).
    ttl: Duration,
}

impl SharedSessions {
    /// Records in `kv` when other instances can read it, each kept `ttl` past its last use.
    pub fn new(kv: Arc<KvStore>, ttl: Duration) -> Self {
        Self { kv: kv.is_shared().then_some(kv), ttl }
    }

    /// Records nowhere (one process).
    pub fn local() -> Self {
        Self { kv: None, ttl: Duration::ZERO }
    }

    /// Whether sessions are shared with other instances.
    pub fn enabled(&self) -> bool {
        self.kv.is_some()
    }

    /// Writes what `session` established now (after `initialize`, and whenever it changes).
    /// One the kv did not take is written again by the session's next request
    /// ([`SharedSessions::still_open`]).
    /// A session ended meanwhile (anywhere) is not written: its end marker stays.
    pub async fn save(&self, session: &Session) {
        let Some(kv) = &self.kv else { return };
        if session.has_ended() {
            // Its end is (being) recorded: not brought back by a request finishing after it.
            return;
        }
        let record = serde_json::to_string(&session.record()).expect("a record serializes");
        let saved = self.write_unless_ended(kv, &key(&session.id), &record).await;
        session.shared_unsaved.store(saved.is_err(), std::sync::atomic::Ordering::Relaxed);
        match saved {
            Ok(true) => *session.shared_at.lock().expect("shared_at lock") = Some((Instant::now(), record)),
            Ok(false) => {}
            Err(e) => unavailable("could not store a session for the other instances", &e),
        }
    }

    /// Writes `text` at `key` unless it reads [`ENDED`] (compare-and-swap against what it
    /// read, so an end written meanwhile is not overwritten); whether it did.
    async fn write_unless_ended(&self, kv: &KvStore, key: &str, text: &str) -> Result<bool, KvError> {
        for _ in 0..3 {
            let current = kv.get(key).await?;
            if current.as_deref() == Some(ENDED) {
                return Ok(false);
            }
            if kv.compare_and_swap(key, current.as_deref(), text, Some(self.ttl_ms()), None).await? {
                return Ok(true);
            }
        }
        // Rewritten by others three times over: theirs stands.
        Ok(false)
    }

    /// The record of session `id`, if some instance opened it and it has not ended; an error
    /// when the kv cannot be asked (the session may well be open: the client should retry).
    async fn load(&self, id: &str) -> Result<Option<SessionRecord>, KvError> {
        let Some(kv) = self.kv.as_ref() else { return Ok(None) };
        match kv.get(&key(id)).await {
            Ok(Some(text)) => Ok(serde_json::from_str(&text).ok()),
            Ok(None) => Ok(None),
            Err(e) => {
                unavailable("could not look up a session another instance opened", &e);
                Err(e)
            }
        }
    }

    /// The record of session `id` for this instance to take the session up: marked as held here
    /// first (only when some instance has it open: an id no instance opened writes nothing),
    /// then read again, so its end, wherever it comes, is recorded for as long as this copy may
    /// live ([`SharedSessions::forget`]).
    pub async fn take_up(&self, id: &str) -> Result<Option<SessionRecord>, KvError> {
        let Some(kv) = self.kv.as_ref() else { return Ok(None) };
        if self.load(id).await?.is_none() {
            return Ok(None);
        }
        if let Err(e) = self.hold(kv, id).await {
            unavailable("could not take up a session another instance opened", &e);
            return Err(e);
        }
        self.load(id).await
    }

    /// Marks session `id` as held by this instance for twice the TTL.
    async fn hold(&self, kv: &KvStore, id: &str) -> Result<(), KvError> {
        kv.set(&held_key(id), "1", Some(self.ttl_ms().saturating_mul(2)), None).await
    }

    /// Whether `session` is still open for every instance (not ended elsewhere). What another
    /// instance changed in its record (log level, client capabilities) is taken over here, and
    /// the record's expiry moves on while the session is used (a compare-and-swap every quarter
    /// of the TTL, so an ended session is never brought back). While the kv cannot be reached
    /// the local copy is trusted; what this instance could not write meanwhile is written now
    /// (a session opened while Redis was away has no record until then), and so is a record
    /// the kv lost.
    pub async fn still_open(&self, session: &Session) -> bool {
        let Some(kv) = &self.kv else { return true };
        let key = key(&session.id);
        let unsaved = session.shared_unsaved.load(std::sync::atomic::Ordering::Relaxed);
        let current = match kv.get(&key).await {
            Ok(Some(text)) if text == ENDED => return false,
            Ok(Some(_)) if unsaved => {
                self.save(session).await;
                return true;
            }
            Ok(Some(current)) => current,
            // Gone without an end marker: lost by the kv, not ended. Written again from this
            // instance's copy, unless an instance ended it meanwhile (only if still absent).
            Ok(None) => {
                self.restore(kv, &key, session, self.ttl).await;
                return true;
            }
            Err(e) => {
                unavailable("could not check a session with the other instances; serving it as this one knows it", &e);
                return true;
            }
        };
        let saved = session.shared_at.lock().expect("shared_at lock").clone();
        if saved.as_ref().is_none_or(|(_, text)| *text != current)
            && let Ok(record) = serde_json::from_str::<SessionRecord>(&current)
        {
            session.take_over(&record).await;
        }
        let due = saved.as_ref().is_none_or(|(at, _)| at.elapsed() >= self.ttl / 4);
        let mut refreshed_at = saved.map(|(at, _)| at).unwrap_or_else(Instant::now);
        if due && self.refresh(kv, &key, &current, session).await == Ok(true) {
            refreshed_at = Instant::now();
        }
        *session.shared_at.lock().expect("shared_at lock") = Some((refreshed_at, current));
        true
    }

    /// Looks after the record of `session`, a session of this instance (the sweep does, for
    /// each): one the kv lost is written again, one ended elsewhere is reported (a client that
    /// only listens sends nothing that would find out), and one in use has its expiry moved on
    /// once a quarter of the TTL has passed since it last was (a request may run, or a client
    /// listen, longer than the TTL, which is the idle timeout).
    pub async fn look_after(&self, session: &Session) -> RecordState {
        let Some(kv) = &self.kv else { return RecordState::Open };
        let (in_use, idle) = (session.is_in_use(), session.last_seen().elapsed());
        // A request of its own looked at the record lately ([`Self::still_open`]).
        if !in_use && idle < self.ttl / 4 {
            return RecordState::Open;
        }
        let key = key(&session.id);
        let saved = session.shared_at.lock().expect("shared_at lock").clone();
        if let Some((_, text)) = saved.clone().filter(|(at, _)| in_use && at.elapsed() >= self.ttl / 4) {
            match self.refresh(kv, &key, &text, session).await {
                Ok(true) => {
                    *session.shared_at.lock().expect("shared_at lock") = Some((Instant::now(), text));
                    return RecordState::Open;
                }
                // Changed, ended or lost since: read it.
                Ok(false) => {}
                Err(_) => return RecordState::Unreachable,
            }
        }
        match kv.get(&key).await {
            Ok(Some(text)) if text == ENDED => RecordState::Ended,
            // Changed by another instance while in use here (a GET stream here, its requests
            // there): taken over, and kept from lapsing.
            Ok(Some(current)) if in_use => {
                if saved.is_none_or(|(_, text)| text != current)
                    && let Ok(record) = serde_json::from_str::<SessionRecord>(&current)
                {
                    session.take_over(&record).await;
                }
                if self.refresh(kv, &key, &current, session).await == Ok(true) {
                    *session.shared_at.lock().expect("shared_at lock") = Some((Instant::now(), current));
                }
                RecordState::Open
            }
            Ok(Some(_)) => RecordState::Open,
            // Lost by the kv: written again, for what is left of its idle time. One that lapsed
            // as its session idled out stays lapsed (the session ends here too).
            Ok(None) if in_use || idle < self.ttl => {
                self.restore(kv, &key, session, if in_use { self.ttl } else { self.ttl - idle }).await;
                RecordState::Open
            }
            Ok(None) => RecordState::Open,
            Err(_) => RecordState::Unreachable,
        }
    }

    /// Makes sure the kv holds `session`'s record before this instance lets go of it (the
    /// drain): one never written (the kv was away when it opened or changed) is written now, and
    /// so is one the kv lost (with a whole TTL: a client that only listened on its GET stream,
    /// closed by the drain, has not been seen for a while); one ended elsewhere is left so.
    /// `Unreachable` when the kv did not take it.
    pub async fn hand_over(&self, session: &Session) -> RecordState {
        let Some(kv) = &self.kv else { return RecordState::Open };
        let key = key(&session.id);
        let unsaved = || session.shared_unsaved.load(std::sync::atomic::Ordering::Relaxed);
        match kv.get(&key).await {
            Ok(Some(text)) if text == ENDED => RecordState::Ended,
            Ok(Some(_)) if unsaved() => {
                self.save(session).await;
                if unsaved() { RecordState::Unreachable } else { RecordState::Open }
            }
            Ok(Some(_)) => RecordState::Open,
            Ok(None) if self.restore(kv, &key, session, self.ttl).await => RecordState::Open,
            Ok(None) | Err(_) => RecordState::Unreachable,
        }
    }

    /// Gives `session`'s record at `key` a full TTL again if it still reads `text`
    /// (compare-and-swap: an ended session is never brought back); whether it did. A session
    /// taken up here stays marked held as long.
    async fn refresh(&self, kv: &KvStore, key: &str, text: &str, session: &Session) -> Result<bool, KvError> {
        let refreshed = kv.compare_and_swap(key, Some(text), text, Some(self.ttl_ms()), None).await?;
        if refreshed && session.taken_up.load(std::sync::atomic::Ordering::Relaxed) {
            self.hold(kv, &session.id).await?;
        }
        Ok(refreshed)
    }

    /// Writes `session`'s record at `key` again where the kv lost it, if it is still absent,
    /// to expire after `ttl`.
    /// Whether the kv answered.
    async fn restore(&self, kv: &KvStore, key: &str, session: &Session, ttl: Duration) -> bool {
        let record = serde_json::to_string(&session.record()).expect("a record serializes");
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1000);
        match kv.compare_and_swap(key, None, &record, Some(ttl_ms), None).await {
            Ok(true) => {
                tracing::info!(session = %session.tag(), "a session's shared record was lost by the kv; written again");
                // Its held mark was lost with it: an end made meanwhile must still be kept long.
                if session.taken_up.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = self.hold(kv, &session.id).await;
                }
                session.shared_unsaved.store(false, std::sync::atomic::Ordering::Relaxed);
                *session.shared_at.lock().expect("shared_at lock") = Some((Instant::now(), record));
                true
            }
            Ok(false) => true,
            Err(e) => {
                unavailable("could not write a lost session record again", &e);
                false
            }
        }
    }

    /// Ends session `id` for every instance: its record becomes the [`ENDED`] marker, kept
    /// twice the TTL (past the idle expiry of any instance's copy of the session) when another
    /// instance took the session up, [`BRIEF_END`] otherwise. False when the kv could not be
    /// reached (the record may stay, and another instance could take the session up: try
    /// again).
    pub async fn forget(&self, id: &str) -> bool {
        let Some(kv) = &self.kv else { return true };
        // The end first, then whether it is held elsewhere: an instance taking the session up
        // marks it held before it reads the record again, so either it reads this end or this
        // sees its mark.
        let ended = async {
            let brief = u64::try_from(BRIEF_END.as_millis()).expect("a few seconds");
            kv.set(&key(id), ENDED, Some(brief.min(self.ttl_ms().saturating_mul(2))), None).await?;
            if kv.get(&held_key(id)).await?.is_some() {
                kv.set(&key(id), ENDED, Some(self.ttl_ms().saturating_mul(2)), None).await?;
            }
            Ok::<_, KvError>(())
        };
        match ended.await {
            Ok(()) => true,
            Err(e) => {
                unavailable("could not end a session for the other instances; tried again until it does", &e);
                false
            }
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX).max(1000)
    }
}

/// What [`SharedSessions::look_after`] found of a session's record.
#[derive(Debug, PartialEq)]
pub enum RecordState {
    /// There (or written again).
    Open,
    /// Ended on some instance: the session ends here too.
    Ended,
    /// The kv did not answer (the sweep stops there: each try waits its timeout).
    Unreachable,
}

/// The kv key of session `id`: a digest, so Redis never holds an id a client could present.
fn key(id: &str) -> String {
    format!("{PREFIX}{}", crate::digest::sha256_hex(id.as_bytes()))
}

/// The kv key saying session `id` was taken up by an instance ([`SharedSessions::take_up`]).
fn held_key(id: &str) -> String {
    format!("{HELD_PREFIX}{}", crate::digest::sha256_hex(id.as_bytes()))
}

/// Says, at most once a minute, that the kv failed a session operation.
fn unavailable(what: &str, error: &KvError) {
    static LAST: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().expect("warning lock");
    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
        *last = Some(Instant::now());
        tracing::warn!(error = %error, "{what} (said at most once a minute)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_keys_never_hold_the_id() {
        let record = SessionRecord {
            principal: "alice".into(),
            credential: Some(crate::digest::hex(&[7u8; 32])),
            expires_at_ms: Some(1_900_000_000_000),
            protocol_version: Some("2025-06-18".into()),
            client_name: Some("c".into()),
            log_level: Some(3),
            subscriptions: vec!["file:///a".into()],
            capabilities: serde_json::json!({"elicitation": {}}),
        };
        let text = serde_json::to_string(&record).unwrap();
        let back: SessionRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.credential_digest(), Some([7u8; 32]));
        assert_eq!(back.state().subscriptions.len(), 1);
        let k = key("0123456789abcdef");
        assert!(k.starts_with(PREFIX) && !k.contains("0123456789abcdef"), "{k}");
    }
}
