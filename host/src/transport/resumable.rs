//! Resumable answer streams (Streamable HTTP, 2025-06-18 and later): a POST whose answer
//! streams (progress, log messages, the backend's own requests before the answer) gets events
//! with ids `<stream>-<n>`, kept while the request runs and for [`RETAIN`] after its answer. A
//! client whose connection broke sends `GET /mcp` with `Last-Event-ID` and gets every event
//! after that one, then the rest live, the answer last. A disconnect is not a cancellation
//! (the transport says so): the request keeps running, but a stream nobody reads again within
//! [`RESUME_WINDOW`] is given up and its request cancelled, so nothing runs for nobody.
//!
//! Streams live in the memory of the instance that runs the request: a resume that reaches
//! another instance (after a blue/green switch) finds nothing to replay and gets the session's
//! ordinary GET stream; the request itself is answered on the instance it started on. Each
//! instance numbers its streams from a random start, so one instance's event id never names
//! another instance's stream of the same session (which it would replay as the client's).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::mcp::Message;

/// How long a broken stream waits for its client to come back before its request is cancelled.
pub const RESUME_WINDOW: Duration = Duration::from_secs(30);
/// How long a finished stream's events stay for a late resume.
pub const RETAIN: Duration = Duration::from_secs(60);
/// The most events one stream keeps, and the most bytes of them (older ones are dropped; a
/// resume from before them starts at the oldest kept), so a backend streaming without end
/// cannot make the relay hold more.
const MAX_EVENTS: usize = 1024;
const MAX_BYTES: usize = 8 << 20;
/// The most bytes the finished streams of this instance keep for late resumes, all together:
/// past it the oldest are forgotten first. Each kept up to [`MAX_BYTES`] for [`RETAIN`]: a
/// client reading every answer, one call at a time, made the relay hold 1.7 GB.
const MAX_RETAINED_BYTES: usize = 64 << 20;

/// A stream by session id and number.
type StreamKey = (String, u64);

/// The resumable streams of every session on this instance, by session id and stream number.
pub struct ResumableStreams {
    streams: Mutex<HashMap<StreamKey, Arc<Replay>>>,
    next: AtomicU64,
    /// The finished streams kept, oldest first: each with its bytes and when it finished.
    finished: Mutex<Finished>,
    /// [`MAX_RETAINED_BYTES`] (smaller in tests).
    retained_at_most: usize,
}

/// The finished streams kept, oldest first, and their bytes together.
#[derive(Default)]
struct Finished {
    streams: std::collections::VecDeque<(StreamKey, usize, Instant)>,
    bytes: usize,
}

impl Default for ResumableStreams {
    /// Numbering from a random start below 2^52 (so ids stay exact in any client's JSON
    /// numbers, should one parse them).
    fn default() -> Self {
        let start = uuid::Uuid::new_v4().as_u64_pair().0 >> 12;
        Self {
            streams: Mutex::default(),
            next: AtomicU64::new(start),
            finished: Mutex::default(),
            retained_at_most: MAX_RETAINED_BYTES,
        }
    }
}

/// One answer stream's events so far, and whether its answer has been sent.
#[derive(Default)]
pub struct Replay {
    state: Mutex<ReplayState>,
    changed: Notify,
}

#[derive(Default)]
struct ReplayState {
    /// Event texts; the first is number `first`.
    events: std::collections::VecDeque<String>,
    /// Their total length.
    bytes: usize,
    first: u64,
    done: bool,
    readers: usize,
    /// The request's in-flight slot: held until a reader has read the stream to its end, or
    /// nobody reads it once it is done (a client reading none of its answers could otherwise
    /// have any number of them kept).
    slot: Option<OwnedSemaphorePermit>,
    /// When the last reader went away (`None` while one reads).
    unread_since: Option<Instant>,
}

impl ResumableStreams {
    /// A new stream of `session`: its number (for event ids) and its events.
    pub fn open(&self, session: &str) -> (u64, Arc<Replay>) {
        let number = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let replay = Arc::new(Replay::default());
        self.streams.lock().expect("streams lock").insert((session.to_owned(), number), replay.clone());
        (number, replay)
    }

    /// The stream a `Last-Event-ID` of `session` names, and the first event number not yet
    /// seen; `None` when it is not (or no longer) here.
    pub fn find(&self, session: &str, last_event_id: &str) -> Option<(u64, Arc<Replay>, u64)> {
        let (stream, n) = last_event_id.split_once('-')?;
        let (stream, n) = (stream.parse::<u64>().ok()?, n.parse::<u64>().ok()?);
        let replay = self.streams.lock().expect("streams lock").get(&(session.to_owned(), stream)).cloned()?;
        Some((stream, replay, n + 1))
    }

    /// Forgets stream `number` of `session` (it was given up).
    pub fn forget(&self, session: &str, number: u64) {
        self.streams.lock().expect("streams lock").remove(&(session.to_owned(), number));
    }

    /// Keeps finished stream `number` of `session` for a late resume, for [`RETAIN`] (see
    /// [`ResumableStreams::expire`]) and while the finished streams kept hold at most
    /// [`MAX_RETAINED_BYTES`] together: the oldest are forgotten first.
    pub fn retain(&self, session: &str, number: u64, replay: &Replay) {
        let mut finished = self.finished.lock().expect("finished lock");
        let bytes = replay.bytes();
        finished.streams.push_back(((session.to_owned(), number), bytes, Instant::now()));
        finished.bytes += bytes;
        let mut forgotten = Vec::new();
        while finished.bytes > self.retained_at_most
            && let Some((key, bytes, _)) = finished.streams.pop_front()
        {
            finished.bytes -= bytes;
            forgotten.push(key);
        }
        drop(finished);
        self.remove(forgotten);
    }

    /// Forgets the finished streams kept for [`RETAIN`] (the oldest first: all are kept alike).
    pub fn expire(&self) {
        let mut finished = self.finished.lock().expect("finished lock");
        let mut forgotten = Vec::new();
        while finished.streams.front().is_some_and(|(_, _, at)| at.elapsed() >= RETAIN)
            && let Some((key, bytes, _)) = finished.streams.pop_front()
        {
            finished.bytes -= bytes;
            forgotten.push(key);
        }
        drop(finished);
        self.remove(forgotten);
    }

    fn remove(&self, keys: Vec<StreamKey>) {
        if !keys.is_empty() {
            let mut streams = self.streams.lock().expect("streams lock");
            keys.iter().for_each(|key| drop(streams.remove(key)));
        }
    }
}

impl Replay {
    /// Adds the next event.
    pub fn push(&self, message: &Message) {
        let text = message.to_text();
        let mut state = self.state.lock().expect("replay lock");
        state.bytes += text.len();
        state.events.push_back(text);
        while state.events.len() > 1 && (state.events.len() > MAX_EVENTS || state.bytes > MAX_BYTES) {
            let dropped = state.events.pop_front().map_or(0, |e| e.len());
            state.bytes -= dropped;
            state.first += 1;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// The bytes of the events kept.
    fn bytes(&self) -> usize {
        self.state.lock().expect("replay lock").bytes
    }

    /// Holds the request's in-flight slot (see [`ReplayState::slot`]).
    pub fn hold(&self, slot: OwnedSemaphorePermit) {
        self.state.lock().expect("replay lock").slot = Some(slot);
    }

    /// No event follows (the answer was the last).
    pub fn finish(&self) {
        let mut state = self.state.lock().expect("replay lock");
        state.done = true;
        if state.readers == 0 {
            state.slot = None;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Whether nobody has read the stream for longer than `window`.
    pub fn abandoned(&self, window: Duration) -> bool {
        let state = self.state.lock().expect("replay lock");
        state.readers == 0 && state.unread_since.is_some_and(|since| since.elapsed() >= window)
    }

    /// Events from number `from` on (ids `<stream>-<n>`, numbered from 0), live until the
    /// answer: what one response body sends.
    pub fn read_from(self: Arc<Self>, stream: u64, from: u64) -> impl Stream<Item = (String, String)> + Send {
        {
            let mut state = self.state.lock().expect("replay lock");
            state.readers += 1;
            state.unread_since = None;
        }
        let reader = Reader { replay: self, next: from };
        futures::stream::unfold(reader, move |mut reader| async move {
            loop {
                let replay = reader.replay.clone();
                let woken = replay.changed.notified();
                {
                    let state = replay.state.lock().expect("replay lock");
                    let at = reader.next.max(state.first);
                    if let Some(text) = usize::try_from(at - state.first).ok().and_then(|i| state.events.get(i)) {
                        let event = (format!("{stream}-{at}"), text.clone());
                        drop(state);
                        reader.next = at + 1;
                        return Some((event, reader));
                    }
                    if state.done {
                        drop(state);
                        // Read to its end: the slot goes back.
                        reader.replay.state.lock().expect("replay lock").slot = None;
                        return None;
                    }
                }
                woken.await;
            }
        })
    }
}

/// One reader of a stream; counted while it lives.
struct Reader {
    replay: Arc<Replay>,
    next: u64,
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut state = self.replay.state.lock().expect("replay lock");
        state.readers -= 1;
        if state.readers == 0 {
            state.unread_since = Some(Instant::now());
            if state.done {
                state.slot = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn note(n: u64) -> Message {
        Message::Notification(crate::mcp::Notification {
            method: "notifications/progress".into(),
            params: Some(serde_json::json!({"progress": n})),
        })
    }

    /// Two instances (blue and green after a switch) number their streams apart: blue's event
    /// id names nothing on green, where it named green's own first stream of the session.
    #[test]
    fn an_event_id_of_one_instance_names_no_stream_of_another() {
        let (blue, green) = (ResumableStreams::default(), ResumableStreams::default());
        let (on_blue, _) = blue.open("s1");
        let (on_green, _) = green.open("s1");
        assert_ne!(on_blue, on_green);
        assert!(green.find("s1", &format!("{on_blue}-0")).is_none());
    }

    #[tokio::test]
    async fn a_reader_that_comes_back_gets_what_it_missed_then_the_rest() {
        let streams = ResumableStreams::default();
        let (number, replay) = streams.open("s1");
        replay.push(&note(0));
        replay.push(&note(1));
        let first: Vec<_> = replay.clone().read_from(number, 0).take(2).collect().await;
        assert_eq!(first[1].0, format!("{number}-1"));
        assert!(replay.abandoned(Duration::ZERO), "nobody reads now");
        replay.push(&note(2));
        replay.finish();
        // Another session cannot name this stream; this one resumes after event 0.
        assert!(streams.find("s2", &format!("{number}-0")).is_none());
        let (stream, replay, from) = streams.find("s1", &format!("{number}-0")).unwrap();
        let rest: Vec<_> = replay.read_from(stream, from).collect().await;
        let ids: Vec<_> = rest.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids, [format!("{number}-1"), format!("{number}-2")]);
        assert!(rest[1].1.contains("\"progress\":2"));
    }

    #[tokio::test]
    async fn the_slot_is_held_until_the_stream_is_read_to_its_end_or_nobody_reads_it() {
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        let streams = ResumableStreams::default();
        let (number, read) = streams.open("s1");
        read.hold(slots.clone().try_acquire_owned().unwrap());
        read.push(&note(0));
        let mut reader = std::pin::pin!(read.clone().read_from(number, 0));
        assert!(reader.next().await.is_some());
        read.push(&note(1));
        read.finish();
        assert_eq!(slots.available_permits(), 1, "answered, but not read yet: held");
        assert!(reader.next().await.is_some() && reader.next().await.is_none());
        assert_eq!(slots.available_permits(), 2, "read to its end");
        let (_, unread) = streams.open("s1");
        unread.hold(slots.clone().try_acquire_owned().unwrap());
        unread.push(&note(0));
        unread.finish();
        assert_eq!(slots.available_permits(), 2, "nobody reads it: not held");
    }

    #[test]
    fn finished_streams_are_kept_within_a_budget_for_all_the_oldest_forgotten_first() {
        let one = note(0).to_text().len();
        let streams = ResumableStreams { retained_at_most: 3 * one, ..ResumableStreams::default() };
        let numbers: Vec<u64> = (0..4)
            .map(|_| {
                let (number, replay) = streams.open("s1");
                replay.push(&note(0));
                replay.finish();
                streams.retain("s1", number, &replay);
                number
            })
            .collect();
        let kept: Vec<bool> = numbers.iter().map(|n| streams.find("s1", &format!("{n}-0")).is_some()).collect();
        assert_eq!(kept, [false, true, true, true]);
        streams.expire();
        assert!(streams.find("s1", &format!("{}-0", numbers[3])).is_some(), "kept for RETAIN");
    }
}
