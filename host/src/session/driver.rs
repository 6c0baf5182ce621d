//! Drives a session over a message-oriented connection (newline JSON-RPC, WebSocket): takes
//! the messages its transport decoded, answers each request on its own task so a slow call
//! never blocks a ping, and interleaves server-initiated notifications. The transport encodes
//! what goes out; nothing here sees bytes.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::task::JoinSet;

use super::Session;
use crate::mcp::{ClientSink, DecodeError, Limits, Message};

/// One message as a transport decoded it, or why it was refused (answered with an error).
pub type Inbound = Result<Message, DecodeError>;

/// Serves `session` until the inbound stream ends, the client stays silent past the idle
/// timeout, or the outbound side closes. Requests still running when it returns are aborted.
/// While the session has `limits.max_requests_in_flight` requests running, nothing more is
/// read from the client (backpressure: the connection's buffers fill, not the relay's memory).
pub async fn drive<S>(session: Arc<Session>, mut inbound: S, outbound: ClientSink, limits: &Limits)
where
    S: Stream<Item = Inbound> + Unpin,
{
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let mut events = session.server_events();
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            next = tokio::time::timeout(idle, inbound.next()), if session.has_free_slot() => {
                let message = match next {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    // A call still running is activity: its answer must not be lost.
                    Err(_) if !tasks.is_empty() => continue,
                    Err(_) => {
                        tracing::info!(session = %session.id, "closing idle connection");
                        break;
                    }
                };
                match message {
                    Ok(Message::Request(request)) => {
                        // Free now (the read waited for one); held until the answer is handed on.
                        let slot = session.slot().await;
                        let running = session.spawn_request(request, Some(outbound.clone()));
                        let outbound = outbound.clone();
                        tasks.spawn(async move {
                            // A cancelled request ends without a response, as MCP asks.
                            if let Ok(Some(response)) = running.await {
                                let _ = outbound.send(Message::Response(response)).await;
                            }
                            drop(slot);
                        });
                    }
                    Ok(other) => {
                        // Boxed: the handler's future is large, and inline it would make every idle
                        // connection's task as large.
                        Box::pin(session.handle(other, None)).await;
                    }
                    Err(refused) => {
                        tracing::debug!(session = %session.id, error = %refused, "refused client input");
                        if outbound.send(Message::Response(refused.into_response())).await.is_err() {
                            break;
                        }
                    }
                }
            }
            Some(message) = events.next() => {
                if outbound.send(message).await.is_err() {
                    break;
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    session.cancel_all();
}
