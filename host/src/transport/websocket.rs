//! MCP over WebSocket: one JSON-RPC message per text frame, subprotocol `mcp` when offered.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as Frame, WebSocket, close_code};
use futures::{SinkExt, StreamExt};

use crate::mcp::{DecodeError, client_channel, decode};
use crate::session::{Ended, Session, SessionFactory, drive};

/// Serves one upgraded WebSocket as `session` (admitted at the handshake).
pub async fn serve(socket: WebSocket, factory: SessionFactory, session: Arc<Session>) {
    let _open = crate::metrics::metrics().clients.connection("websocket");
    let (mut sink, stream) = socket.split();
    let limits = factory.limits.clone();
    let limit = limits.max_message_bytes;
    let too_large = move |size| Some(Err(DecodeError::TooLarge { size, limit }));
    let inbound = stream
        .take_while(|frame| futures::future::ready(matches!(frame, Ok(f) if !matches!(f, Frame::Close(_)))))
        .filter_map(move |frame| {
            futures::future::ready(match frame {
                Ok(Frame::Text(text)) if text.len() > limit => too_large(text.len()),
                Ok(Frame::Text(text)) => Some(decode(text.as_bytes(), &limits)),
                Ok(Frame::Binary(bytes)) if bytes.len() > limit => too_large(bytes.len()),
                Ok(Frame::Binary(bytes)) => Some(decode(&bytes, &limits)),
                _ => None,
            })
        });
    let (tx, mut rx) = client_channel();
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            // Everything already queued goes out in one write.
            let mut sent = sink.feed(Frame::Text(message.to_text().into())).await;
            while sent.is_ok()
                && let Some(message) = rx.try_recv()
            {
                sent = sink.feed(Frame::Text(message.to_text().into())).await;
            }
            if sent.is_err() || sink.flush().await.is_err() {
                break;
            }
        }
        sink
    });
    let draining = session.draining();
    let ended = drive(session, Box::pin(inbound), tx, &factory.limits).await;
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
