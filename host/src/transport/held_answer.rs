//! A JSON answer whose body holds what counts its request (its session's slot under
//! `limits.max_requests_in_flight`; a stateless call's session, counted per address) until the
//! connection has taken it in: released when the answer was made, a client that reads none of
//! its answers had the relay hold any number of them (534 MB over 100 connections) while its
//! session looked idle. hyper asks for the next part of a body only when its write buffer
//! has room, so the slot goes once all but the last megabyte or so is on its way.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use super::media;
use crate::mcp::Message;

/// The part of the body handed to the connection at a time.
const PART: usize = 64 << 10;

/// `message` as an `application/json` answer with `status`, whose body holds `guard` (a slot,
/// a session) until it is read out.
pub(super) fn json_holding<G: Send + Unpin + 'static>(status: StatusCode, message: &Message, guard: G) -> Response {
    let body = Held { rest: Bytes::from(message.to_text()), guard: Some(guard) };
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, media::APPLICATION_JSON);
    response
}

/// The body not yet handed to the connection, and what it holds until then.
struct Held<G> {
    rest: Bytes,
    guard: Option<G>,
}

impl<G: Send + Unpin + 'static> hyper::body::Body for Held<G> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.rest.is_empty() {
            self.guard = None;
            return Poll::Ready(None);
        }
        let part = self.rest.len().min(PART);
        Poll::Ready(Some(Ok(Frame::data(self.rest.split_to(part)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::BodyExt;
    use tokio::sync::Semaphore;

    use super::*;

    #[tokio::test]
    async fn the_slot_is_held_until_the_last_part_is_taken() {
        let slots = Arc::new(Semaphore::new(1));
        let text = "x".repeat(3 * PART);
        let message = Message::Response(crate::mcp::Response::ok(serde_json::json!(1), serde_json::json!(text)));
        let response = json_holding(StatusCode::OK, &message, slots.clone().try_acquire_owned().unwrap());
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let mut body = response.into_body();
        let mut read = 0;
        while let Some(frame) = body.frame().await {
            assert_eq!(slots.available_permits(), 0, "held while parts remain");
            read += frame.unwrap().into_data().unwrap().len();
        }
        assert_eq!(read, message.to_text().len());
        assert_eq!(slots.available_permits(), 1, "released once read out");
    }
}
