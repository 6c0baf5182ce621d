//! A Streamable HTTP session's one GET stream: whether it is open, and how it learns that its
//! session ended (it must not outlive it, delivering to whoever holds it).

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Whether a session's GET stream is open.
#[derive(Default)]
pub(super) enum GetStream {
    #[default]
    Free,
    /// Open; cancelled when the session ends.
    Open(CancellationToken),
    /// The session ended (a stream claimed now ends at once).
    Ended,
}

/// Holds a session's GET stream open; released on drop.
pub struct GetStreamClaim {
    slot: Arc<Mutex<GetStream>>,
    ended: CancellationToken,
}

impl GetStreamClaim {
    /// Claims the stream of `slot`; `None` while another is open. A session that ended gives
    /// a claim already ended.
    pub(super) fn claim(slot: &Arc<Mutex<GetStream>>) -> Option<Self> {
        let mut state = slot.lock().expect("get stream lock");
        let ended = CancellationToken::new();
        match &*state {
            GetStream::Open(_) => return None,
            GetStream::Ended => ended.cancel(),
            GetStream::Free => *state = GetStream::Open(ended.clone()),
        }
        Some(Self { slot: slot.clone(), ended })
    }

    /// Fires when the session ends (`DELETE`, idle expiry, ended as its credential expired):
    /// its GET stream must not outlive it, delivering to whoever holds the stream.
    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }
}

impl Drop for GetStreamClaim {
    fn drop(&mut self) {
        let mut slot = self.slot.lock().expect("get stream lock");
        if matches!(*slot, GetStream::Open(_)) {
            *slot = GetStream::Free;
        }
    }
}

/// Whether the stream of `slot` is open.
pub(super) fn is_open(slot: &Mutex<GetStream>) -> bool {
    matches!(*slot.lock().expect("get stream lock"), GetStream::Open(_))
}

/// The session of `slot` ended: its open stream is told, and none opens after.
pub(super) fn end(slot: &Mutex<GetStream>) {
    if let GetStream::Open(ended) = std::mem::replace(&mut *slot.lock().expect("get stream lock"), GetStream::Ended) {
        ended.cancel();
    }
}
