//! The writing half of a plain TCP connection that ends with the connection. tokio's
//! `OwnedWriteHalf` shuts its direction down when dropped: a `shutdown` syscall whose FIN the
//! `close` of the connection, a moment later, would send anyway. This half leaves it to the
//! close (one syscall fewer per connection); an explicit shutdown still shuts it down.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;

/// The writing half of a TCP connection, closed with its reading half.
pub struct TcpWrite(Option<OwnedWriteHalf>);

impl TcpWrite {
    /// `half`, no longer shut down on its own when dropped.
    pub fn new(half: OwnedWriteHalf) -> Self {
        Self(Some(half))
    }

    fn half(self: Pin<&mut Self>) -> Pin<&mut OwnedWriteHalf> {
        Pin::new(self.get_mut().0.as_mut().expect("the half is taken only when dropped"))
    }
}

impl Drop for TcpWrite {
    fn drop(&mut self) {
        if let Some(half) = self.0.take() {
            half.forget();
        }
    }
}

impl AsyncWrite for TcpWrite {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.half().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.half().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.half().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.half().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(|half| half.is_write_vectored())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// The peer sees the end of the stream once both halves are gone, not before: dropping the
    /// writing half alone sends nothing.
    #[tokio::test]
    async fn the_connection_ends_when_both_halves_are_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let (read, write) = stream.into_split();
        let mut write = TcpWrite::new(write);
        write.write_all(b"answer").await.unwrap();
        drop(write);
        let mut seen = [0u8; 16];
        let n = peer.read(&mut seen).await.unwrap();
        assert_eq!(&seen[..n], b"answer");
        let early = tokio::time::timeout(std::time::Duration::from_millis(100), peer.read(&mut seen)).await;
        assert!(early.is_err(), "no end of stream while the reading half lives: {early:?}");
        drop(read);
        assert_eq!(peer.read(&mut seen).await.unwrap(), 0, "the end of the stream once both are gone");
    }
}
