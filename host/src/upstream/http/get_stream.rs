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
use crate::mcp::{Message, Response};
use crate::upstream::routes::{ClientRoutes, SERVER_REQUESTS_AT_ONCE};

/// The longest an answer's POST may take (the backend reads it, or the answer is dropped).
const ANSWER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// How one answer goes back to the backend: a POST on the session the stream belongs to,
/// within [`ANSWER_DEADLINE`], and not after the connection closed.
struct Answer {
    client: Arc<super::HttpPool>,
    uri: http::Uri,
    headers: http::HeaderMap,
    closed: tokio_util::sync::CancellationToken,
}

impl Answer {
    async fn send(self, reply: Response) {
        let mut post = http::Request::new(Full::new(Bytes::from(Message::Response(reply).to_text())));
        *post.method_mut() = Method::POST;
        *post.uri_mut() = self.uri;
        *post.headers_mut() = self.headers;
        tokio::select! {
            _ = tokio::time::timeout(ANSWER_DEADLINE, self.client.request(post)) => {}
            () = self.closed.cancelled() => {}
        }
    }
}

impl HttpConnection {
    /// Opens the server-to-client stream; a server without one answers 405 and that is fine.
    pub(super) fn spawn_get_stream(&self) {
        let client = self.client.clone();
        let session = self.session_headers();
        let mut request = self.request_to(Method::GET, &session, Full::default(), None);
        request.headers_mut().insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        // What each answer's POST is made of (the session is the one the stream belongs to).
        let (answer, _) = self.post_request(Bytes::new(), &session, None).into_parts();
        let (events, routes, closed) = (self.events.clone(), self.routes.clone(), self.closed.clone());
        let max_message_bytes = self.max_message_bytes;
        let at_once = Arc::new(tokio::sync::Semaphore::new(SERVER_REQUESTS_AT_ONCE));
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
                            let (uri, headers) = (answer.uri.clone(), answer.headers.clone());
                            let post = Answer { client: client.clone(), uri, headers, closed: closed.clone() };
                            match at_once.clone().try_acquire_owned() {
                                // Each may wait for a client's answer: on its own task, holding
                                // its turn until its answer is posted.
                                Ok(turn) => {
                                    let routes = routes.clone();
                                    tokio::spawn(async move {
                                        post.send(routes.answer(request, None).await).await;
                                        drop(turn);
                                    });
                                }
                                // Past the cap: refused here, before the stream is read on, so
                                // a flood slows itself down rather than grow the relay.
                                Err(_) => post.send(ClientRoutes::too_many(request)).await,
                            }
                        }
                        _ => {}
                    }
                }
            };
            tokio::select! { _ = stream => {}, _ = closed.cancelled() => {} }
        });
    }
}
