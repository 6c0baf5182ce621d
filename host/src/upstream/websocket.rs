//! MCP over WebSocket: one JSON-RPC message per text frame.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message as Frame, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::UpstreamError;
use super::connection::Connection;
use super::framed::{FramedConnection, Incoming};
use super::routes::ClientRoutes;
use crate::mcp::{Notification, Oversized};

/// The most one read from a backend's WebSocket takes: a larger message is read in chunks of
/// this size (each a syscall), a smaller one in one read. tungstenite zero-fills the chunk
/// before every read, also before one that finds nothing yet (about two per answer), and each
/// fill pulls that much into the cache: 4 KiB holds most answers whole without evicting the
/// call's working set (16 KiB cost 4% more CPU per call, `scripts/ab.sh`).
const READ_CHUNK: usize = 4 << 10;

/// Opens the WebSocket and starts its reader and writer tasks.
pub async fn connect(
    backend: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    max_message_bytes: usize,
    routes: Arc<ClientRoutes>,
) -> Result<(Connection, mpsc::Receiver<Notification>), UpstreamError> {
    let mut request = url.into_client_request().map_err(|e| UpstreamError::Connect(e.to_string()))?;
    for (name, value) in headers {
        let name = http::HeaderName::try_from(name.as_str()).map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let value = http::HeaderValue::try_from(value.as_str()).map_err(|e| UpstreamError::Connect(e.to_string()))?;
        request.headers_mut().insert(name, value);
    }
    // Frames a little over the limit are read and refused by size (failing their call alone);
    // far larger ones end the connection before being buffered.
    let hard_cap = max_message_bytes.saturating_mul(2);
    let config = tungstenite::protocol::WebSocketConfig::default()
        // tungstenite zero-fills the whole chunk before each read (128 KiB by default): a
        // backend's answer of a few hundred bytes paid that memset on every read.
        .read_buffer_size(READ_CHUNK)
        .max_message_size(Some(hard_cap))
        .max_frame_size(Some(hard_cap))
        // tungstenite queues a pong for each ping it reads, and its write buffer has no bound by
        // default: a backend sending pings and reading nothing grew the relay by 1.4 GB in
        // seconds. Full, it keeps one pong pending; a message of ours fits (at most the cap).
        .max_write_buffer_size(hard_cap.saturating_add(1 << 20));
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(|e| UpstreamError::Connect(format!("{url}: {e}")))?;
    let (mut sink, stream) = socket.split();
    let closed = CancellationToken::new();
    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);

    let writer_closed = closed.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                next = out_rx.recv() => match next {
                    Some(text) => {
                        // Everything already queued goes out in one write: under load, one
                        // syscall carries many calls.
                        let mut sent = sink.feed(Frame::text(text)).await;
                        while sent.is_ok()
                            && let Ok(text) = out_rx.try_recv()
                        {
                            sent = sink.feed(Frame::text(text)).await;
                        }
                        if sent.is_err() || sink.flush().await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                _ = writer_closed.cancelled() => break,
            }
        }
        let _ = sink.close().await;
        writer_closed.cancel();
    });

    let backend_name = backend.to_owned();
    let incoming = Box::pin(stream.filter_map(move |frame| {
        let text = match frame {
            Ok(Frame::Text(text)) if text.len() > max_message_bytes => {
                Some(Incoming::Oversized(Oversized::of(text.as_bytes())))
            }
            // The frame's own bytes, read in place: not copied into a string of their own.
            Ok(Frame::Text(text)) => Some(Incoming::Text(text)),
            Ok(Frame::Binary(bytes)) if bytes.len() > max_message_bytes => {
                Some(Incoming::Oversized(Oversized::of(&bytes)))
            }
            Ok(Frame::Binary(bytes)) => Some(match Utf8Bytes::try_from(bytes.clone()) {
                Ok(text) => Incoming::Text(text),
                Err(_) => Incoming::Unreadable(Oversized::of(&bytes)),
            }),
            Ok(_) => None,
            Err(tungstenite::Error::Capacity(e)) => {
                Some(Incoming::Overflowed(format!("sent a message far over max_message_bytes ({e})")))
            }
            Err(e) => {
                tracing::debug!(backend = %backend_name, error = %e, "websocket read error");
                None
            }
        };
        futures::future::ready(text)
    }));
    // A read error ends the stream through `Frame::Close`/EOF; treat errors as the end too.
    let (conn, events) = FramedConnection::start(backend, incoming, out_tx, closed, routes);
    Ok((Connection::Framed(conn), events))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;

    /// A backend that answers each request with `answer(id)` as a binary frame.
    async fn binary_backend(answer: fn(u64) -> Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}/", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut socket = tokio_tungstenite::accept_async(stream).await.expect("handshake");
            while let Some(Ok(Frame::Text(request))) = socket.next().await {
                let request: Value = serde_json::from_str(&request).expect("JSON");
                let id = request["id"].as_u64().expect("numeric id");
                socket.send(Frame::Binary(answer(id).into())).await.expect("send");
            }
        });
        url
    }

    async fn ping(url: &str) -> Result<String, UpstreamError> {
        let routes = Arc::new(ClientRoutes::new("b", Duration::from_secs(5)));
        let (connection, _events) = connect("b", url, &BTreeMap::new(), 1 << 20, routes).await.expect("connect");
        let answered = tokio::time::timeout(Duration::from_secs(10), connection.request("ping", None));
        answered.await.expect("answered or failed, not left waiting").map(|result| result.text().into_owned())
    }

    #[tokio::test]
    async fn a_binary_frame_of_utf8_text_is_read_as_text_and_one_that_is_not_fails_its_call() {
        let text =
            binary_backend(|id| json!({"jsonrpc": "2.0", "id": id, "result": {"é": "ok"}}).to_string().into()).await;
        assert_eq!(ping(&text).await.expect("answered"), r#"{"é":"ok"}"#);
        let unreadable = binary_backend(|id| {
            let mut answer = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"x":""#).into_bytes();
            answer.extend_from_slice(&[0xff, 0xfe, b'"', b'}', b'}']);
            answer
        })
        .await;
        let error = ping(&unreadable).await.expect_err("not UTF-8");
        assert!(error.to_string().contains("not UTF-8"), "{error}");
    }
}
