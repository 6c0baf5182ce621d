//! The client's side of a message-oriented connection, written by the connection's own loop.
//!
//! A call's answer is written by the task that polled it to its end ([`super::driver`]): no
//! writer task to wake and no queue to pass through on the way. Messages that other parts of
//! a request send on their own (progress, log messages, the backend's requests to the client)
//! still travel through the session's [`ClientStream`], and go out before whatever the loop
//! writes next, so a request's notifications always precede its answer.

use futures::Stream;

use crate::mcp::{ClientStream, Closed, Message};

/// A connection's outgoing side as its transport encodes it (a text frame per message, a
/// line per message).
pub trait Outbound {
    /// A message as the transport writes it. The message is encoded before anything waits,
    /// so a write in progress holds this, not the message.
    type Encoded: Send;

    /// `message` as the transport writes it.
    fn encode(message: Message) -> Self::Encoded;

    /// Adds `encoded` to what the next [`Outbound::flush`] sends (a transport may write some
    /// of it at once).
    fn feed(&mut self, encoded: Self::Encoded) -> impl Future<Output = Result<(), Closed>> + Send;

    /// Writes out everything fed.
    fn flush(&mut self) -> impl Future<Output = Result<(), Closed>> + Send;

    /// Writes `message` now.
    fn send(&mut self, message: Message) -> impl Future<Output = Result<(), Closed>> + Send
    where
        Self: Send,
    {
        let encoded = Self::encode(message);
        async move {
            self.feed(encoded).await?;
            self.flush().await
        }
    }
}

/// One message-oriented connection: the client's messages as decoded, and the way back.
pub trait Connection: Stream<Item = super::Inbound> + Outbound + Unpin + Send {}

impl<C: Stream<Item = super::Inbound> + Outbound + Unpin + Send> Connection for C {}

/// Sends what `queue` holds now, then `message` (if any), in one flush. Nearly always the
/// queue is empty and this is the message's own write; only the rare wait behind queued
/// messages is a future of its own, boxed: the connection's task awaits this inline, and every
/// idle connection's task would otherwise be as large as that wait.
pub(super) fn deliver<'a, O: Outbound + Send>(
    out: &'a mut O,
    queue: &'a mut ClientStream,
    message: Option<Message>,
) -> impl Future<Output = Result<(), Closed>> + Send + 'a {
    use futures::future::{Either, ready};
    match (queue.try_recv(), message) {
        (None, Some(message)) => Either::Left(Either::Left(out.send(message))),
        (None, None) => Either::Left(Either::Right(ready(Ok(())))),
        (Some(first), message) => Either::Right(Box::pin(after_queued(out, queue, first, message))),
    }
}

/// [`deliver`] when messages are queued: `first` and the rest of them, then `message`.
async fn after_queued<O: Outbound + Send>(
    out: &mut O,
    queue: &mut ClientStream,
    first: Message,
    message: Option<Message>,
) -> Result<(), Closed> {
    out.feed(O::encode(first)).await?;
    while let Some(queued) = queue.try_recv() {
        out.feed(O::encode(queued)).await?;
    }
    if let Some(message) = message {
        out.feed(O::encode(message)).await?;
    }
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::{Notification, Response, client_channel};

    /// Records what was fed and flushed.
    #[derive(Default)]
    struct Recorder {
        fed: Vec<Message>,
        flushes: Vec<usize>,
    }

    impl Outbound for Recorder {
        type Encoded = Message;

        fn encode(message: Message) -> Message {
            message
        }

        async fn feed(&mut self, message: Message) -> Result<(), Closed> {
            self.fed.push(message);
            Ok(())
        }

        async fn flush(&mut self) -> Result<(), Closed> {
            self.flushes.push(self.fed.len());
            Ok(())
        }
    }

    fn note(n: u32) -> Message {
        Message::Notification(Notification { method: format!("n/{n}"), params: None })
    }

    #[tokio::test]
    async fn a_message_with_nothing_queued_is_its_own_write() {
        let (_sink, mut queue) = client_channel();
        let mut out = Recorder::default();
        deliver(&mut out, &mut queue, Some(note(1))).await.expect("delivered");
        deliver(&mut out, &mut queue, None).await.expect("nothing to deliver");
        assert_eq!(out.fed, vec![note(1)]);
        assert_eq!(out.flushes, vec![1]);
    }

    #[tokio::test]
    async fn what_was_queued_goes_out_before_the_message_and_in_one_flush() {
        let (sink, mut queue) = client_channel();
        assert!(sink.try_send(note(1)));
        assert!(sink.try_send(note(2)));
        let answer = Message::Response(Response::ok(1.into(), serde_json::json!({})));
        let mut out = Recorder::default();
        deliver(&mut out, &mut queue, Some(answer.clone())).await.expect("delivered");
        assert_eq!(out.fed, vec![note(1), note(2), answer]);
        assert_eq!(out.flushes, vec![3]);
        assert_eq!(queue.try_recv(), None, "the queue is empty");
    }
}
