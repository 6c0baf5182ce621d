//! One way to answer with Server-Sent Events, for every SSE response of the relay (a POST's
//! answer stream, a session's GET stream, a stateless call that streams): each JSON-RPC message
//! is one `message` event with an id, keep-alives where a stream may stay quiet, and
//! `X-Accel-Buffering: no` so proxies in front (nginx and the like) pass events on unbuffered.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};

use crate::mcp::Message;

/// How often a quiet stream gets a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// An SSE response carrying events already numbered: `(id, JSON-RPC message text)` (a
/// resumable answer stream's, [`super::resumable`]).
pub fn respond_events<S>(events: S) -> Response
where
    S: Stream<Item = (String, String)> + Send + 'static,
{
    let events = events.map(|(id, text)| Ok::<_, Infallible>(Event::default().event("message").id(id).data(text)));
    let mut response = Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response();
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// An SSE response carrying `messages`, numbered from 1.
pub fn respond<S>(messages: S, keep_alive: bool) -> Response
where
    S: Stream<Item = Message> + Send + 'static,
{
    let events = messages.enumerate().map(|(n, message)| {
        Ok::<_, Infallible>(Event::default().event("message").id((n + 1).to_string()).data(message.to_text()))
    });
    let mut response = if keep_alive {
        Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
    } else {
        Sse::new(events).into_response()
    };
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
