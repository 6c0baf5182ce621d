//! A Streamable HTTP backend's server-to-client stream (`GET`): its notifications (list
//! changes, updates, log messages) go out as those of a backend without such a stream do, and
//! its requests (`ping`, sampling, elicitation) are answered with a `POST`, as those on a
//! request's own stream are: to the one client the backend works for, or refused, never left
//! unanswered (the backend would wait for ever).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use http::{HeaderValue, Method, header};
use http_body_util::Full;

use super::{HttpConnection, capped_events, parse};
use crate::mcp::{Message, Response, RpcError, error_codes};

/// The backend's requests on its GET stream answered at once (each may wait for a client's
/// answer); past that, one is refused at once.
const REQUESTS_AT_ONCE: usize = 32;

impl HttpConnection {
    /// Opens the server-to-client stream; a server without one answers 405 and that is fine.
    pub(super) fn spawn_get_stream(&self) {
        let client = self.client.clone();
        let session = self.session_headers();
        let mut request = self.request_to(Method::GET, &session, Full::default());
        request.headers_mut().insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        // What each answer's POST is made of (the session is the one the stream belongs to).
        let (answer, _) = self.post_request(Bytes::new(), &session).into_parts();
        let (events, routes, closed) = (self.events.clone(), self.routes.clone(), self.closed.clone());
        let max_message_bytes = self.max_message_bytes;
        let at_once = Arc::new(tokio::sync::Semaphore::new(REQUESTS_AT_ONCE));
        tokio::spawn(async move {
            let stream = async {
                let Ok(response) = client.request(request).await else { return };
                if !response.status().is_success() {
                    return;
                }
                let (body, since_event) = capped_events(response, max_message_bytes);
                let mut sse = body.eventsource();
                while let Some(Ok(event)) = sse.next().await {
                    since_event.store(0, Ordering::Relaxed);
                    match parse(&event.data) {
                        // About no request of a client's by the spec: as a stdio backend's are.
                        Ok(Message::Notification(n)) if routes.deliver(&n, None) => {}
                        Ok(Message::Notification(n)) => {
                            let _ = events.try_send(n);
                        }
                        Ok(Message::Request(request)) => {
                            let (client, routes, at_once) = (client.clone(), routes.clone(), at_once.clone());
                            let (uri, headers) = (answer.uri.clone(), answer.headers.clone());
                            tokio::spawn(async move {
                                let reply = match at_once.try_acquire() {
                                    Ok(_turn) => routes.answer(request, None).await,
                                    Err(_) => {
                                        let busy = format!(
                                            "{}: the relay already handles {REQUESTS_AT_ONCE} of this server's requests",
                                            request.method
                                        );
                                        let busy = RpcError::new(error_codes::SERVER_BUSY, busy);
                                        Response { id: request.id, outcome: Err(busy) }
                                    }
                                };
                                let mut post =
                                    http::Request::new(Full::new(Bytes::from(Message::Response(reply).to_text())));
                                *post.method_mut() = Method::POST;
                                *post.uri_mut() = uri;
                                *post.headers_mut() = headers;
                                let _ = client.request(post).await;
                            });
                        }
                        _ => {}
                    }
                }
            };
            tokio::select! { _ = stream => {}, _ = closed.cancelled() => {} }
        });
    }
}
