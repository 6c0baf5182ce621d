//! The queue of messages on their way to one client's connection or stream, in order; its
//! transport encodes them. Each message travels boxed: a tokio channel allocates its slots 32
//! at a time when it is made, and 32 unboxed messages would cost every idle session 3 KB.

use tokio::sync::mpsc;

use super::Message;

/// Messages a connection or stream may have waiting before senders wait (backpressure).
pub const CLIENT_QUEUE: usize = 64;

/// The sending side: cloned into every request of the session that may send related messages.
#[derive(Clone, Debug)]
pub struct ClientSink(mpsc::Sender<Box<Message>>);

/// The receiving side, owned by the transport's writer.
#[derive(Debug)]
pub struct ClientStream(mpsc::Receiver<Box<Message>>);

/// The client went away: nothing more can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client's connection or stream is closed")]
pub struct Closed;

/// A new queue of [`CLIENT_QUEUE`] messages.
pub fn client_channel() -> (ClientSink, ClientStream) {
    let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
    (ClientSink(tx), ClientStream(rx))
}

impl ClientSink {
    /// Queues `message`, waiting while the queue is full.
    pub async fn send(&self, message: Message) -> Result<(), Closed> {
        self.0.send(Box::new(message)).await.map_err(|_| Closed)
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
        self.0.recv().await.map(|message| *message)
    }

    /// The next message if one is queued now.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.0.try_recv().ok().map(|message| *message)
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
}
