//! Newline-delimited JSON-RPC 2.0 over plain TCP, as the reference `health_check.py` speaks it.
//! With auth on, the first message carries the bearer token in
//! `params._meta.authorization` (`"Bearer <token>"`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;

use serde_json::Value;

use super::listener::PendingGuard;
use super::write_deadline::WriteDeadline;
use crate::access::{Peer, TransportKind};
use crate::mcp::{Closed, DecodeError, Line, LineCodec, Message, Response, RpcError, decode};
use crate::session::{Inbound, Outbound, SessionFactory, drive, ended_error};

/// How long a refused client's first request is waited for, to answer it by its id.
const REFUSAL_WAIT: Duration = Duration::from_secs(2);

/// Messages fed between two flushes are joined into one write until it is this long.
const BATCH_BYTES: usize = 64 << 10;

/// One line as read, before decoding (the first one is read for its credential).
enum Frame {
    Text(bytes::Bytes),
    TooLarge(usize),
}

/// Serves one newline connection as one session. `pending` counts the connection against its
/// address's cap on unauthenticated connections until its session opens.
pub async fn serve<R, W>(
    read: R,
    write: W,
    peer: Peer,
    factory: &SessionFactory,
    pending: PendingGuard,
    first_by: tokio::time::Instant,
) where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let limits = factory.limits.clone();
    // A client that reads nothing for as long as it may stay silent is gone ([`WriteDeadline`]).
    let write = WriteDeadline::new(write, Duration::from_secs(limits.idle_timeout_secs));
    // Until the client has authenticated, its first line may be only `max_preauth_bytes` long:
    // a connection nobody vouched for holds little memory.
    let preauth = if factory.requires_auth() {
        limits.max_preauth_bytes.min(limits.max_message_bytes)
    } else {
        limits.max_message_bytes
    };
    let mut framed = FramedRead::new(read, LineCodec::new(preauth));
    let mut out = LineWriter { write, batch: String::new() };
    let mut first = None;
    let mut token = None;
    let mut id = Value::Null;
    if factory.requires_auth() {
        // What the connection's first bytes (and TLS) took counts: `first_by` is the one
        // deadline of its unauthenticated phase.
        first = match tokio::time::timeout_at(first_by, next_frame(&mut framed)).await {
            Ok(first) => first,
            Err(_) => {
                tracing::info!(remote = %peer.addr, secs = limits.handshake_timeout_secs, "no first message in time; connection closed");
                return;
            }
        };
        (id, token) = match &first {
            Some(Frame::Text(text)) => credential_of(text),
            Some(Frame::TooLarge(size)) => {
                crate::limit_log::limit_refused(
                    "max_preauth_bytes",
                    format_args!("a first message of {size} bytes from {} before authentication", peer.addr.ip()),
                );
                let message = format!(
                    "the first message ({size} bytes) is larger than {preauth} bytes, the most the relay reads before a client has authenticated (limits.max_preauth_bytes)"
                );
                let refusal =
                    Response::err(Value::Null, RpcError::new(crate::mcp::error_codes::INVALID_REQUEST, message));
                let _ = out.send(Message::Response(refusal)).await;
                return;
            }
            None => (Value::Null, None),
        };
    }
    let admitted = factory.admit(TransportKind::Line, &peer, token).await;
    drop(pending);
    framed.decoder_mut().set_max_length(limits.max_message_bytes);
    let mut inbound = Box::pin(framed.filter_map(|line| futures::future::ready(frame_of(line))));
    match admitted {
        Ok(session) => {
            let replay = futures::stream::iter(first);
            let limits = &factory.limits;
            let decoded = replay.chain(inbound).map(|frame| match frame {
                Frame::Text(text) => decode(&text, limits),
                Frame::TooLarge(size) => Err(DecodeError::TooLarge { size, limit: limits.max_message_bytes }),
            });
            let mut conn = Connection { inbound: decoded, out };
            if let Some(why) = ended_error(drive(session, &mut conn, limits).await) {
                // The last word: why the relay closes the connection.
                let _ = conn.out.send(Message::Response(Response::err(Value::Null, why))).await;
            }
        }
        Err(refused) => {
            if first.is_none() {
                // Refused before reading anything (auth off): the answer goes to the client's
                // first request, by its id, when it comes soon.
                let wait = Duration::from_secs(limits.handshake_timeout_secs).min(REFUSAL_WAIT);
                if let Ok(Some(Frame::Text(text))) = tokio::time::timeout(wait, inbound.next()).await {
                    id = credential_of(&text).0;
                }
            }
            let _ = out.send(Message::Response(Response::err(id, RpcError::from(refused)))).await;
        }
    }
}

/// A newline connection as its session's loop reads and writes it.
struct Connection<S, W> {
    inbound: S,
    out: LineWriter<W>,
}

impl<S: Stream<Item = Inbound> + Unpin, W: Unpin> Stream for Connection<S, W> {
    type Item = Inbound;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        self.get_mut().inbound.poll_next_unpin(cx)
    }
}

impl<S, W: AsyncWrite + Send + Unpin> Outbound for Connection<S, W> {
    type Encoded = String;

    fn encode(message: Message) -> String {
        LineWriter::<W>::encode(message)
    }

    fn feed(&mut self, line: String) -> impl Future<Output = Result<(), Closed>> + Send {
        self.out.feed(line)
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), Closed>> + Send {
        self.out.flush()
    }
}

/// The connection's writing half: one line per message, what is fed between two flushes
/// joined into one write of up to [`BATCH_BYTES`].
struct LineWriter<W> {
    write: W,
    batch: String,
}

impl<W: AsyncWrite + Send + Unpin> Outbound for LineWriter<W> {
    /// The message's text and its newline.
    type Encoded = String;

    fn encode(message: Message) -> String {
        let mut line = message.to_text();
        line.push('\n');
        line
    }

    async fn feed(&mut self, line: String) -> Result<(), Closed> {
        if self.batch.is_empty() {
            self.batch = line;
        } else {
            self.batch.push_str(&line);
        }
        if self.batch.len() >= BATCH_BYTES {
            return self.flush().await;
        }
        Ok(())
    }

    /// Writes what was fed; the buffer goes with it (an idle connection holds none).
    async fn flush(&mut self) -> Result<(), Closed> {
        let batch = std::mem::take(&mut self.batch);
        if batch.is_empty() {
            return Ok(());
        }
        self.write.write_all(batch.as_bytes()).await.map_err(|_| Closed)
    }
}

/// What one read line is to the session: a message's text, an over-long line's size, or
/// nothing (blank lines and read errors are skipped).
fn frame_of(line: std::io::Result<Line>) -> Option<Frame> {
    match line {
        Ok(Line::Text(text)) if Line::is_blank(&text) => None,
        Ok(Line::Text(text)) => Some(Frame::Text(text)),
        Ok(Line::TooLong(skipped)) => Some(Frame::TooLarge(skipped.size)),
        Err(_) => None,
    }
}

/// The next frame that is not blank; `None` at the end of the stream.
async fn next_frame<R: AsyncRead + Unpin>(framed: &mut FramedRead<R, LineCodec>) -> Option<Frame> {
    loop {
        if let Some(frame) = frame_of(framed.next().await?) {
            return Some(frame);
        }
    }
}

/// The id and bearer token of a client's first message (`params._meta.authorization`, the
/// key in any letter case).
fn credential_of(text: &[u8]) -> (Value, Option<String>) {
    let Ok(message) = serde_json::from_slice::<Value>(text) else { return (Value::Null, None) };
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let token = crate::mcp::envelope::credential(message.get("params"))
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned());
    (id, token)
}
