//! MCP over WebSocket: one JSON-RPC message per text frame, subprotocol `mcp` when offered.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as Frame, WebSocket, close_code};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};

use crate::mcp::{ClientStream, DecodeError, Limits, Message, client_channel, decode};
use crate::session::{Ended, Inbound, Session, SessionFactory, drive};

/// Serves one upgraded WebSocket as `session` (admitted at the handshake). Not an `async fn`:
/// the set-up runs here, and the future returned (the connection's task for its whole life)
/// holds only what the session needs while it lasts; an `async fn` would also keep its
/// arguments (the socket itself, moved into its halves a moment later) and the stream before
/// it was boxed: half a kilobyte more per idle connection (2,240 against 1,736 bytes).
pub fn serve(socket: WebSocket, factory: SessionFactory, session: Arc<Session>) -> impl Future<Output = ()> + Send {
    let open = crate::metrics::metrics().clients.connection("websocket");
    let (sink, stream) = socket.split();
    let limits = factory.limits;
    let inbound = Box::pin(inbound(stream, limits.clone()));
    let (tx, rx) = client_channel();
    let writer = tokio::spawn(write(sink, rx));
    let draining = session.draining();
    async move {
        let _open = open;
        let ended = drive(session, inbound, tx, &limits).await;
        if let Ok(mut sink) = writer.await {
            let close = if ended == Ended::CredentialExpired {
                // 1008 Policy Violation: the client must authenticate again, with a fresh token.
                Some((close_code::POLICY, "credential expired; connect again with a fresh token"))
            } else if draining.is_cancelled() {
                // 1001 Going Away: the client should connect again (to another instance).
                Some((close_code::AWAY, "relay draining; connect again"))
            } else {
                None
            };
            if let Some((code, reason)) = close {
                let _ = sink.send(Frame::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
            }
            let _ = sink.close().await;
        }
    }
}

/// The client's messages, decoded, until it closes: one per text or binary frame; a frame
/// over the message limit is refused by its size (answered with an error) without decoding.
fn inbound(stream: SplitStream<WebSocket>, limits: Arc<Limits>) -> impl futures::Stream<Item = Inbound> + Send {
    let limit = limits.max_message_bytes;
    let too_large = move |size| Some(Err(DecodeError::TooLarge { size, limit }));
    stream
        .take_while(|frame| futures::future::ready(matches!(frame, Ok(f) if !matches!(f, Frame::Close(_)))))
        .filter_map(move |frame| {
            futures::future::ready(match frame {
                Ok(Frame::Text(text)) if text.len() > limit => too_large(text.len()),
                Ok(Frame::Text(text)) => Some(decode(text.as_bytes(), &limits)),
                Ok(Frame::Binary(bytes)) if bytes.len() > limit => too_large(bytes.len()),
                Ok(Frame::Binary(bytes)) => Some(decode(&bytes, &limits)),
                _ => None,
            })
        })
}

/// Writes the session's messages to the client, one text frame each; everything already
/// queued goes out in one write. Returns the sink for the closing frame.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps a second copy of its arguments: 64 bytes more per connection"
)]
fn write(
    mut sink: SplitSink<WebSocket, Frame>,
    mut rx: ClientStream,
) -> impl Future<Output = SplitSink<WebSocket, Frame>> {
    async move {
        while let Some(message) = rx.recv().await {
            let mut sent = sink.feed(text_frame(message)).await;
            while sent.is_ok()
                && let Some(message) = rx.try_recv()
            {
                sent = sink.feed(text_frame(message)).await;
            }
            if sent.is_err() || sink.flush().await.is_err() {
                break;
            }
        }
        sink
    }
}

/// One message as its frame; the message is gone once written (the writer does not hold it
/// while the frame is sent).
fn text_frame(message: Message) -> Frame {
    Frame::Text(message.to_text().into())
}
