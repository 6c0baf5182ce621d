//! Rarely ready futures in a busy `select!` loop, polled only when they asked to be.
//!
//! A connection's loop ([`super::driver`]) wakes twice per call (a request read, its answer
//! ready) and `select!` then polls every branch. The server events (a catalog watch and a
//! broadcast receiver) and the drain signal fire perhaps once a day, yet polling them costs
//! locks and waker registrations each time. Behind a [`WakeGate`] such a branch is polled with
//! the gate's own waker, and again only after that waker fired: otherwise it answers
//! `Pending` at the price of one atomic load.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::Stream;
use futures::task::AtomicWaker;

/// The waker the gated branches are polled with: it counts its wake-ups and passes each on to
/// the task that polls them.
#[derive(Default)]
struct Signal {
    wakes: AtomicU64,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::AcqRel);
        self.task.wake();
    }
}

/// One signal for the rare branches of one loop (any of them waking lets each be polled once).
#[derive(Clone, Default)]
pub(super) struct WakeGate(Arc<Signal>);

impl WakeGate {
    /// `inner` behind this gate: polled at first, then only after the gate's waker fired.
    pub(super) fn gate<T: Unpin>(&self, inner: T) -> Gated<T> {
        Gated { inner, seen: None, signal: self.0.clone() }
    }
}

/// A future or stream behind a [`WakeGate`]: polled at first, after each item it yields, and
/// after the gate's waker fired.
pub(super) struct Gated<T> {
    inner: T,
    /// The gate's wake count when `inner` last answered `Pending`.
    seen: Option<u64>,
    signal: Arc<Signal>,
}

impl<T: Unpin> Gated<T> {
    /// The gated future or stream itself, for what its owner does besides polling it (taking
    /// what a queue holds now).
    pub(super) fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    fn poll_gated<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        self.signal.task.register(cx.waker());
        // Read before `inner` is polled: a wake-up during or after that poll is seen next time.
        let wakes = self.signal.wakes.load(Ordering::Acquire);
        if self.seen == Some(wakes) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.signal.clone());
        let polled = poll(Pin::new(&mut self.inner), &mut Context::from_waker(&waker));
        // Only `Pending` promises a wake-up: after an item, a stream is polled again at once.
        self.seen = polled.is_pending().then_some(wakes);
        polled
    }
}

impl<F: Future + Unpin> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.get_mut().poll_gated(cx, |inner, cx| inner.poll(cx))
    }
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.get_mut().poll_gated(cx, |inner, cx| inner.poll_next(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::StreamExt;

    use super::*;

    /// A stream that counts its polls and yields whatever its channel holds.
    struct Counted {
        polls: Arc<AtomicUsize>,
        rx: tokio::sync::mpsc::UnboundedReceiver<u32>,
    }

    impl Stream for Counted {
        type Item = u32;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.rx.poll_recv(cx)
        }
    }

    #[tokio::test]
    async fn a_gated_stream_is_polled_only_after_its_own_wake_up() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let polls = Arc::new(AtomicUsize::new(0));
        let gate = WakeGate::default();
        let mut gated = gate.gate(Counted { polls: polls.clone(), rx });
        let (busy_tx, mut busy) = tokio::sync::mpsc::unbounded_channel::<u32>();
        // The busy branch wakes the loop 100 times; the gated one is polled once for all.
        for turn in 0..100 {
            busy_tx.send(turn).unwrap();
            tokio::select! {
                biased;
                item = gated.next() => panic!("nothing was sent to the gated stream: {item:?}"),
                Some(_) = busy.recv() => {}
            }
        }
        for turn in 0..100 {
            busy_tx.send(turn).unwrap();
            tokio::select! {
                Some(_) = busy.recv() => {}
                item = gated.next() => panic!("nothing was sent to the gated stream: {item:?}"),
            }
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "polled at first, then never woken");
        // Its own wake-up gets it polled, and what it holds comes out; after an item it is
        // polled again (a stream only promises a wake-up after `Pending`).
        tx.send(7).unwrap();
        tx.send(8).unwrap();
        assert_eq!(next_within_a_second(&mut gated).await, Some(7));
        assert_eq!(next_within_a_second(&mut gated).await, Some(8));
        drop(tx);
        assert_eq!(next_within_a_second(&mut gated).await, None);
        assert!(polls.load(Ordering::Relaxed) <= 6, "{polls:?}");
    }

    #[tokio::test]
    async fn each_gated_branch_sees_a_wake_up_of_the_shared_gate() {
        let gate = WakeGate::default();
        let token = tokio_util::sync::CancellationToken::new();
        let mut cancelled = gate.gate(Box::pin(token.clone().cancelled_owned()));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut events = gate.gate(tokio_stream_of(rx));
        assert!(futures::poll!(&mut cancelled).is_pending());
        assert!(futures::poll!(events.next()).is_pending());
        tx.send(1).unwrap();
        token.cancel();
        // One gate, two branches: the first to be polled must not hide the wake-up from the other.
        assert_eq!(next_within_a_second(&mut events).await, Some(1));
        tokio::time::timeout(std::time::Duration::from_secs(1), cancelled).await.expect("the drain seen too");
    }

    /// The stream's next item, failing the test (not hanging it) when none comes.
    async fn next_within_a_second<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
        let next = tokio::time::timeout(std::time::Duration::from_secs(1), stream.next());
        next.await.expect("the gated stream was polled again")
    }

    fn tokio_stream_of(mut rx: tokio::sync::mpsc::UnboundedReceiver<u32>) -> impl Stream<Item = u32> + Unpin {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
