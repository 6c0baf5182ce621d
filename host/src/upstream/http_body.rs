//! A backend's answer body over Streamable HTTP: one JSON message read into one buffer (within
//! the message limit), or an SSE stream whose every event is held to the same limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use http::header;
use http_body_util::{BodyExt, BodyStream, Limited};

use super::UpstreamError;
use super::http_pool::PooledBody;
use crate::mcp::{Message, Payload};

/// A backend's message from its text, or why it is not one.
pub(super) fn parse(text: &str) -> Result<Message, UpstreamError> {
    Message::from_text(text)
        .map_err(|e| UpstreamError::BadAnswer(format!("bad JSON: {e}")))?
        .map_err(|_| UpstreamError::BadAnswer("its answer is not a valid JSON-RPC message".into()))
}

/// The body of an SSE response as a byte stream that fails once more than `limit` bytes arrive
/// without an event being taken from it (the reader resets the returned counter per event),
/// so one event can never grow past the limit in memory.
pub(super) fn capped_events(
    response: http::Response<PooledBody>,
    limit: usize,
) -> (impl futures::Stream<Item = Result<Bytes, std::io::Error>>, Arc<AtomicUsize>) {
    let since_event = Arc::new(AtomicUsize::new(0));
    let counter = since_event.clone();
    // Some slack for the `data:` framing and keep-alive comments around one message.
    let cap = limit.saturating_add(64 * 1024);
    let body = BodyStream::new(response.into_body()).filter_map(move |frame| {
        let chunk = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(chunk) => chunk,
                // Trailers: nothing to read.
                Err(_) => return futures::future::ready(None),
            },
            Err(e) => return futures::future::ready(Some(Err(std::io::Error::other(e)))),
        };
        if counter.fetch_add(chunk.len(), Ordering::Relaxed) + chunk.len() > cap {
            counter.store(usize::MAX / 2, Ordering::Relaxed);
            return futures::future::ready(Some(Err(std::io::Error::other("SSE event over the size limit"))));
        }
        futures::future::ready(Some(Ok(chunk)))
    });
    (body, since_event)
}

/// A JSON response body, read up to `limit` bytes into one buffer and parsed from it.
pub(super) async fn read_json(
    response: http::Response<PooledBody>,
    id: u64,
    limit: usize,
) -> Result<Payload, UpstreamError> {
    let length = response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    if length.and_then(|v| v.parse::<u64>().ok()).is_some_and(|length| length > limit as u64) {
        return Err(UpstreamError::too_large(limit));
    }
    let body = match Limited::new(response.into_body(), limit).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(UpstreamError::too_large(limit)),
        Err(_) => return Err(UpstreamError::ConnectionLost),
    };
    let text =
        std::str::from_utf8(&body).map_err(|_| UpstreamError::BadAnswer("its answer is not UTF-8 text".into()))?;
    match parse(text)? {
        Message::Response(r) if r.id.as_u64() == Some(id) => UpstreamError::check_answer(r.outcome),
        _ => Err(UpstreamError::Protocol("HTTP response did not answer the request".into())),
    }
}
