//! A stream with bytes already read from it put back in front. The listener reads a new
//! connection's first bytes to tell its protocol (one read instead of a peek and a read), and
//! the first decrypted byte of a TLS connection (there is no peek below TLS); the transport that
//! serves the connection then reads them again from here.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, whose reads return `prefix` first. The prefix's memory is freed once it is read, and
/// until then it is one pointer in the stream: an idle connection holds 8 bytes for it.
pub struct Prefixed<S> {
    prefix: Option<Box<Prefix>>,
    inner: S,
}

/// The bytes put back, and how many of them were read again.
struct Prefix {
    bytes: Vec<u8>,
    taken: usize,
}

impl<S> Prefixed<S> {
    /// `inner`, whose reads return `prefix` first.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        let prefix = (!prefix.is_empty()).then(|| Box::new(Prefix { bytes: prefix, taken: 0 }));
        Self { prefix, inner }
    }

    /// The bytes not read yet.
    #[cfg(test)]
    fn pending(&self) -> &[u8] {
        self.prefix.as_ref().map_or(&[], |prefix| &prefix.bytes[prefix.taken..])
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(prefix) = self.prefix.as_mut() {
            let n = (prefix.bytes.len() - prefix.taken).min(buf.remaining());
            buf.put_slice(&prefix.bytes[prefix.taken..prefix.taken + n]);
            prefix.taken += n;
            if prefix.taken == prefix.bytes.len() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn the_prefix_is_read_first_in_pieces_then_freed_then_the_stream() {
        let (mut far, near) = tokio::io::duplex(64);
        far.write_all(b" and the rest").await.unwrap();
        drop(far);
        let mut stream = Prefixed::new(b"first bytes".to_vec(), near);
        let mut piece = [0u8; 5];
        let n = stream.read(&mut piece).await.unwrap();
        assert_eq!(&piece[..n], b"first", "a short read takes part of the prefix");
        assert_eq!(stream.pending(), b" bytes");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b" bytes and the rest");
        assert!(stream.prefix.is_none(), "the prefix's memory is freed once read");
        assert_eq!(size_of::<Prefixed<()>>(), 8, "one pointer while the stream lives");
    }
}
