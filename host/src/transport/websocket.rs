//! MCP over WebSocket: one JSON-RPC message per text frame, subprotocol `mcp` when offered.

use std::net::IpAddr;

use axum::extract::ws::{Message as Frame, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use serde_json::Value;

use crate::access::{Principal, TransportKind};
use crate::mcp::{Message, Response};
use crate::session::{Inbound, SessionFactory, drive};

/// Serves one upgraded WebSocket as one session of `principal` (authenticated at the handshake)
/// connected from `remote`.
pub async fn serve(
    socket: WebSocket,
    factory: SessionFactory,
    principal: Principal,
    remote: IpAddr,
    token: Option<String>,
) {
    let (mut sink, stream) = socket.split();
    let limit = factory.limits.max_message_bytes;
    let inbound = stream
        .take_while(|frame| futures::future::ready(matches!(frame, Ok(f) if !matches!(f, Frame::Close(_)))))
        .filter_map(move |frame| {
            futures::future::ready(match frame {
                Ok(Frame::Text(text)) if text.len() > limit => Some(Inbound::TooLarge(text.len())),
                Ok(Frame::Text(text)) => Some(Inbound::Text(bytes::Bytes::from(text))),
                Ok(Frame::Binary(bytes)) if bytes.len() > limit => Some(Inbound::TooLarge(bytes.len())),
                Ok(Frame::Binary(bytes)) => Some(Inbound::Text(bytes)),
                _ => None,
            })
        });
    let (tx, mut rx) = mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Frame::Text(text.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    match factory.open(TransportKind::WebSocket, principal, remote, token.as_deref()) {
        Ok(session) => drive(session, Box::pin(inbound), tx, &factory.limits).await,
        Err(busy) => {
            let _ = tx.send(Message::Response(Response::err(Value::Null, busy)).to_text()).await;
            drop(tx);
        }
    }
    let _ = writer.await;
}
