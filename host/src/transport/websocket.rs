//! MCP over WebSocket: one JSON-RPC message per text frame, subprotocol `mcp` when offered.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use axum::extract::ws::{CloseFrame, Message as Frame, WebSocket, close_code};
use futures::{SinkExt, Stream, StreamExt};

use crate::mcp::{Closed, DecodeError, Limits, Message, decode};
use crate::session::{Ended, Inbound, Outbound, Session, SessionFactory, drive};

/// Serves one upgraded WebSocket as `session` (admitted at the handshake). Not an `async fn`:
/// the set-up runs here, and the future returned (the connection's task for its whole life)
/// holds only what the session needs while it lasts, the socket once: an `async fn` would also
/// keep its arguments, and a socket moved inside the future would be kept twice (as captured
/// and as moved).
pub fn serve(socket: WebSocket, factory: SessionFactory, session: Arc<Session>) -> impl Future<Output = ()> + Send {
    let open = crate::metrics::metrics().clients.connection("websocket");
    let draining = session.draining();
    let mut conn = Connection { socket, limits: factory.limits, ended: false, pong_unsent: false, gated: None };
    async move {
        let _open = open;
        let limits = conn.limits.clone();
        let ended = drive(session, &mut conn, &limits).await;
        let close = if ended == Ended::CredentialExpired {
            // 1008 Policy Violation: the client must authenticate again, with a fresh token.
            Some((close_code::POLICY, "credential expired; connect again with a fresh token"))
        } else if ended == Ended::CredentialRevoked {
            Some((close_code::POLICY, "credential no longer admitted; connect again with a valid one"))
        } else if draining.is_cancelled() {
            // 1001 Going Away: the client should connect again (to another instance).
            Some((close_code::AWAY, "relay draining; connect again"))
        } else {
            None
        };
        if let Some((code, reason)) = close {
            let _ = conn.socket.send(Frame::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
        }
        let _ = conn.socket.close().await;
    }
}

/// One client's WebSocket, read and written by its session's loop (one task, no halves).
struct Connection {
    socket: WebSocket,
    limits: Arc<Limits>,
    /// The client closed, or reading failed: nothing more is read.
    ended: bool,
    /// A ping was read whose pong (queued by tungstenite) may not be out yet.
    pong_unsent: bool,
    /// The reader waiting for that pong to go out: woken by a flush of the session's own
    /// messages too, which may have taken the socket's write wake-up for itself.
    gated: Option<Waker>,
}

impl Stream for Connection {
    type Item = Inbound;

    /// The client's messages, decoded, until it closes: one per text or binary frame; a frame
    /// over the message limit is refused by its size (answered with an error) without decoding.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        let this = self.get_mut();
        let limit = this.limits.max_message_bytes;
        let too_large = |size| Some(Err(DecodeError::TooLarge { size, limit }));
        while !this.ended {
            if this.pong_unsent {
                // tungstenite queues a pong for every ping it reads: from a client that sends
                // pings and reads nothing, each read queued one more (gigabytes in seconds).
                // Nothing more is read until the pong is out.
                match this.socket.poll_flush_unpin(cx) {
                    Poll::Pending => {
                        this.gated = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(_)) => {
                        this.ended = true;
                        break;
                    }
                    Poll::Ready(Ok(())) => this.pong_unsent = false,
                }
            }
            let message = match ready!(this.socket.poll_next_unpin(cx)) {
                Some(Ok(Frame::Text(text))) if text.len() > limit => too_large(text.len()),
                Some(Ok(Frame::Text(text))) => Some(decode(text.as_bytes(), &this.limits)),
                Some(Ok(Frame::Binary(bytes))) if bytes.len() > limit => too_large(bytes.len()),
                Some(Ok(Frame::Binary(bytes))) => Some(decode(&bytes, &this.limits)),
                Some(Ok(Frame::Ping(_))) => {
                    this.pong_unsent = true;
                    None
                }
                Some(Ok(Frame::Pong(_))) => None,
                Some(Ok(Frame::Close(_)) | Err(_)) | None => {
                    this.ended = true;
                    None
                }
            };
            if message.is_some() {
                return Poll::Ready(message);
            }
        }
        Poll::Ready(None)
    }
}

impl Outbound for Connection {
    /// One text frame per message.
    type Encoded = Frame;

    fn encode(message: Message) -> Frame {
        Frame::Text(message.to_text().into())
    }

    async fn feed(&mut self, frame: Frame) -> Result<(), Closed> {
        self.socket.feed(frame).await.map_err(|_| Closed)
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        SinkExt::flush(&mut self.socket).await.map_err(|_| Closed)?;
        // The pong went out with it.
        self.pong_unsent = false;
        if let Some(reader) = self.gated.take() {
            reader.wake();
        }
        Ok(())
    }
}
