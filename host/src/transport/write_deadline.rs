//! A deadline on a connection's writes: a client that reads nothing for the idle timeout while
//! the relay has something to send it (a large answer, an SSE stream, answers to requests it
//! keeps sending) is as good as gone, and its connection is ended with the write's error.
//! Neither hyper nor the newline and WebSocket sessions' loops (which write each answer
//! themselves and wait for the write) have a write timeout of their own: without one, such a
//! connection, its session and what it was owed would stay for ever. Every HTTP connection
//! (a WebSocket session is upgraded from one and keeps it) and every newline connection writes
//! through this.
//!
//! The timer is made only for a connection whose write first has to wait, and moved only while
//! writes wait: nearly every write completes at once and touches no timer, and an idle
//! connection holds no timer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `S`, whose writes fail with [`io::ErrorKind::TimedOut`] once they have made no progress for
/// `patience`.
pub struct WriteDeadline<S> {
    inner: S,
    patience: Duration,
    /// Set while a write waits (made on the first wait, kept for the next).
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, patience: Duration) -> Self {
        Self { inner, patience, timer: None, waiting: false }
    }

    /// What a write that returned `outcome` answers: as it is when it made progress (and the
    /// wait, if any, is over); when it waits, whether the wait has lasted too long.
    fn within<T>(&mut self, cx: &mut Context<'_>, outcome: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.waiting = false;
            return outcome;
        }
        let wake_at = Instant::now() + self.patience;
        let timer = match &mut self.timer {
            Some(timer) if self.waiting => timer,
            Some(timer) => {
                timer.as_mut().reset(wake_at);
                timer
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(wake_at))),
        };
        self.waiting = true;
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client read nothing for the idle timeout")))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.within(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.within(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_flush(cx);
        self.within(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.within(cx, outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::WriteDeadline;

    #[tokio::test]
    async fn a_write_that_waits_too_long_fails_and_one_that_moves_does_not() {
        // A pipe of 64 bytes that nobody reads: the second write waits, then times out.
        let (near, _far) = tokio::io::duplex(64);
        let mut stream = WriteDeadline::new(near, Duration::from_millis(200));
        stream.write_all(&[0; 64]).await.unwrap();
        let started = std::time::Instant::now();
        let error = stream.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));

        // A reader that drains slowly but steadily: every wait is shorter than the patience.
        let (near, mut far2) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut buf = [0; 64];
            let mut total = 0;
            while total < 64 * 8 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                total += far2.read(&mut buf).await.unwrap();
            }
        });
        let mut stream = WriteDeadline::new(near, Duration::from_millis(300));
        for _ in 0..8 {
            stream.write_all(&[1; 64]).await.unwrap();
        }
        reader.await.unwrap();
    }
}
