//! A forwarded request's answer over Streamable HTTP: one `application/json` body while nothing
//! is streamed before it, a resumable SSE stream from the first message that is.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use futures::{StreamExt, stream};
use tokio::sync::OwnedSemaphorePermit;

use super::held_answer::json_holding;
use super::resumable::{RESUME_WINDOW, RETAIN};
use super::{TransportState, sse};
use crate::mcp::{self, ClientStream, Message};
use crate::session::{RunningRequest, Session};

/// Answers a forwarded request the cheapest way its backend allows: while nothing is streamed
/// before the answer, the request runs on this exchange's own task and its answer goes back as
/// one `application/json` body (the transport lets the server choose); a client that goes away
/// then cancels it. The first message streamed before the answer (progress, a log message, the
/// backend's own request) turns the answer into a resumable SSE stream: the request moves,
/// unfinished, to a task of its own that records each event ([`super::resumable`]), and the
/// response body reads them. `slot` is held until the answer is read out: a JSON one until the
/// connection has taken it in, a stream until it is read to its end (or nobody reads it).
pub(super) async fn answer_or_stream(
    state: &TransportState,
    session: &Arc<Session>,
    request: mcp::Request,
    slot: OwnedSemaphorePermit,
) -> Response {
    let (tx, mut rx) = crate::mcp::client_channel();
    let mut running = session.request(request, Some(tx));
    let streamed = tokio::select! {
        biased;
        Some(first) = rx.recv() => (Some(first), Streaming::Running(running, rx)),
        answer = &mut running => match rx.try_recv() {
            // Streamed in the same step as the answer: still first.
            Some(first) => (Some(first), Streaming::Answered(answer, rx)),
            None => {
                return match answer {
                    Some(response) => json_holding(StatusCode::OK, &Message::Response(response), slot),
                    // Cancelled by the client's notifications/cancelled: no answer is owed.
                    None => sse::respond(stream::empty(), false),
                };
            }
        },
    };
    let (first, streaming) = streamed;
    let (number, replay) = state.resumable.open(&session.id);
    // Held until the stream is read to its end, or nobody reads it once answered.
    replay.hold(slot);
    if let Some(first) = &first {
        replay.push(first);
    }
    let streams = state.resumable.clone();
    let session_id = session.id.clone();
    let pumped = replay.clone();
    tokio::spawn(async move {
        let mut messages = std::pin::pin!(stream::unfold(Some(streaming), Streaming::next));
        let mut check = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                next = messages.next() => match next {
                    Some(message) => pumped.push(&message),
                    None => break,
                },
                _ = check.tick() => if pumped.abandoned(RESUME_WINDOW) {
                    // Nobody came back for it: the request is cancelled (dropped with the stream).
                    tracing::info!(stream = number, "an answer stream nobody resumed was given up; its request is cancelled");
                    streams.forget(&session_id, number);
                    return;
                },
            }
        }
        pumped.finish();
        streams.retain(&session_id, number, &pumped);
        tokio::time::sleep(RETAIN).await;
        streams.expire();
    });
    sse::respond_events(replay.read_from(number, 0))
}

/// A forwarded request whose answer streams: running, or answered with messages still queued
/// before its answer. Dropping it (the client closed the stream) cancels the request.
enum Streaming {
    Running(RunningRequest, ClientStream),
    Answered(Option<mcp::Response>, ClientStream),
}

impl Streaming {
    /// The next message for the stream, the response last; `None` after it.
    async fn next(state: Option<Self>) -> Option<(Message, Option<Self>)> {
        match state? {
            Self::Running(mut running, mut rx) => tokio::select! {
                biased;
                Some(message) = rx.recv() => Some((message, Some(Self::Running(running, rx)))),
                answer = &mut running => Self::after(answer, rx),
            },
            Self::Answered(answer, rx) => Self::after(answer, rx),
        }
    }

    /// What follows a request's answer: what was queued before it, then the answer itself
    /// (nothing when the request was cancelled).
    fn after(answer: Option<mcp::Response>, mut rx: ClientStream) -> Option<(Message, Option<Self>)> {
        if let Some(message) = rx.try_recv() {
            return Some((message, Some(Self::Answered(answer, rx))));
        }
        answer.map(|response| (Message::Response(response), None))
    }
}
