//! The queue of messages on their way to one client's connection or stream, in order; its
//! transport encodes them. A flume channel: made with one small allocation, its slots grown as
//! messages wait (tokio's channel allocated 800 bytes up front, held by every idle session and
//! made again for every HTTP exchange). Each message travels boxed, so the slots a session once
//! grew stay 8 bytes each.

use futures::{FutureExt, StreamExt};

use super::Message;

/// Messages a connection or stream may have waiting before senders wait (backpressure).
pub const CLIENT_QUEUE: usize = 64;

/// The sending side: cloned into every request of the session that may send related messages.
#[derive(Clone, Debug)]
pub struct ClientSink(flume::Sender<Box<Message>>);

/// The receiving side, owned by whoever writes to the client (a connection's loop, an HTTP
/// exchange); also a stream of the messages, ending once every sender is gone.
#[derive(Debug)]
pub struct ClientStream {
    /// What a wait registers with: polled as a stream.
    waiting: flume::r#async::RecvStream<'static, Box<Message>>,
    /// The same queue, read without touching the waker `waiting` registered.
    now: flume::Receiver<Box<Message>>,
}

/// The client went away: nothing more can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client's connection or stream is closed")]
pub struct Closed;

/// A new queue of [`CLIENT_QUEUE`] messages.
pub fn client_channel() -> (ClientSink, ClientStream) {
    let (tx, rx) = flume::bounded(CLIENT_QUEUE);
    (ClientSink(tx), ClientStream { waiting: rx.clone().into_stream(), now: rx })
}

impl ClientSink {
    /// Queues `message`, waiting while the queue is full. Queued at once when there is room
    /// (nearly always); only a wait is a future of its own, boxed: a connection's task awaits
    /// this inline, and every idle connection's task would otherwise be as large as the wait.
    pub fn send(&self, message: Message) -> impl Future<Output = Result<(), Closed>> + Send + '_ {
        use futures::future::{Either, ready};
        match self.0.try_send(Box::new(message)) {
            Ok(()) => Either::Left(ready(Ok(()))),
            Err(flume::TrySendError::Disconnected(_)) => Either::Left(ready(Err(Closed))),
            Err(flume::TrySendError::Full(message)) => {
                Either::Right(Box::pin(self.0.send_async(message)).map(|sent| sent.map_err(|_| Closed)))
            }
        }
    }

    /// Queues `message` unless the queue is full or closed (what may be dropped: progress
    /// and log notifications); says whether it was queued.
    pub fn try_send(&self, message: Message) -> bool {
        self.0.try_send(Box::new(message)).is_ok()
    }
}

impl ClientStream {
    /// The next message; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        self.waiting.next().await.map(|message| *message)
    }

    /// The next message if one is queued now.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.now.try_recv().ok().map(|message| *message)
    }
}

impl futures::Stream for ClientStream {
    type Item = Message;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Message>> {
        self.get_mut().waiting.poll_next_unpin(cx).map(|message| message.map(|message| *message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::Notification;

    fn note(n: u32) -> Message {
        Message::Notification(Notification { method: format!("n/{n}"), params: None })
    }

    #[tokio::test]
    async fn messages_arrive_in_order_and_a_full_queue_refuses_try_send() {
        let (sink, mut stream) = client_channel();
        for n in 0..CLIENT_QUEUE as u32 {
            assert!(sink.try_send(note(n)));
        }
        assert!(!sink.try_send(note(999)), "full");
        for n in 0..CLIENT_QUEUE as u32 {
            assert_eq!(stream.recv().await, Some(note(n)));
        }
        assert_eq!(stream.try_recv(), None);
        drop(stream);
        assert_eq!(sink.send(note(0)).await, Err(Closed));
    }

    #[tokio::test]
    async fn send_waits_while_the_queue_is_full_and_keeps_the_order() {
        let (sink, mut stream) = client_channel();
        for n in 0..CLIENT_QUEUE as u32 {
            sink.send(note(n)).await.expect("room");
        }
        let waiting = tokio::spawn({
            let sink = sink.clone();
            async move { sink.send(note(999)).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a full queue makes the sender wait");
        assert_eq!(stream.recv().await, Some(note(0)));
        assert_eq!(waiting.await.expect("task"), Ok(()));
        for n in 1..CLIENT_QUEUE as u32 {
            assert_eq!(stream.recv().await, Some(note(n)));
        }
        assert_eq!(stream.recv().await, Some(note(999)), "the waiting message comes last");
    }

    /// A message taken with `try_recv` (the loop writing what was queued before an answer)
    /// leaves the stream's wait intact: polled again, it waits, and the next message wakes it.
    #[test]
    fn a_message_taken_without_waiting_leaves_the_wait_to_be_woken_by_the_next() {
        use futures::Stream;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Context, Poll};
        struct Count(AtomicUsize);
        impl futures::task::ArcWake for Count {
            fn wake_by_ref(this: &std::sync::Arc<Self>) {
                this.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let wakes = std::sync::Arc::new(Count(AtomicUsize::new(0)));
        let waker = futures::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let (sink, mut stream) = client_channel();
        let mut poll = |stream: &mut ClientStream| std::pin::Pin::new(stream).poll_next(&mut cx);
        assert_eq!(poll(&mut stream), Poll::Pending);
        assert!(sink.try_send(note(1)));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the first message wakes the wait");
        assert_eq!(stream.try_recv(), Some(note(1)));
        assert_eq!(poll(&mut stream), Poll::Pending, "nothing left: waits again");
        assert!(sink.try_send(note(2)));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2, "the next message wakes it again");
        assert_eq!(poll(&mut stream), Poll::Ready(Some(note(2))));
        drop(sink);
        assert_eq!(poll(&mut stream), Poll::Ready(None), "ends once every sender is gone");
    }
}
