//! Newline-delimited JSON-RPC 2.0 over plain TCP, as the reference `health_check.py` speaks it.

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use serde_json::Value;

use crate::mcp::{Line, LineCodec, Message, Response};
use crate::session::{Inbound, SessionFactory, drive};

/// Serves one newline connection as one session.
pub async fn serve(stream: TcpStream, factory: &SessionFactory) {
    let (read, mut write) = stream.into_split();
    let limits = factory.limits.clone();
    let inbound = FramedRead::new(read, LineCodec::new(limits.max_message_bytes)).filter_map(|line| {
        futures::future::ready(match line {
            Ok(Line::Text(text)) if text.trim().is_empty() => None,
            Ok(Line::Text(text)) => Some(Inbound::Text(text.into())),
            Ok(Line::TooLong) => Some(Inbound::TooLarge(limits.max_message_bytes + 1)),
            Err(_) => None,
        })
    });
    let (tx, mut rx) = mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        while let Some(mut text) = rx.recv().await {
            text.push('\n');
            if write.write_all(text.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    match factory.open("line") {
        Ok(session) => drive(session, Box::pin(inbound), tx, &factory.limits).await,
        Err(busy) => {
            let _ = tx.send(Message::Response(Response::err(Value::Null, busy)).to_text()).await;
            drop(tx);
        }
    }
    let _ = writer.await;
}
