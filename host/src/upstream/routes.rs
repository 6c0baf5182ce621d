//! The way back from an upstream to the clients it is working for: the upstream side of the
//! typed way back (the session side is `mcp::Related`). Requests made on a client's behalf
//! register here while they run; the connection's reader consults this before anything else,
//! so a request's progress and log messages reach its stream in the order the upstream sent
//! them, ahead of the response that follows them. Requests the upstream itself sends (sampling,
//! elicitation, ping) are answered here too, by asking the client they are for.
//!
//! Progress tokens are swapped for relay-unique ones (two clients may use the same token on
//! the same backend) and restored on the way back. Every request forwarded for a client is
//! registered, streamed or not (adapter plugins' calls as callers of their own), so log
//! messages and requests from the upstream (sampling, elicitation) go to a client only when
//! every request in flight on the upstream is that client session's, unless they came on one
//! request's own answer stream (Streamable HTTP), which says whose they are.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::mcp::{Message, Notification, Payload, Related, Request, Response, RpcError, error_codes};

/// How many requests from one upstream (pings, sampling, elicitation) are handled at once, on
/// any transport.
pub const SERVER_REQUESTS_AT_ONCE: usize = 32;

/// The key of a progress token, as params spell it (unless with an escape).
static PROGRESS_TOKEN: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"progressToken\""));

/// Client requests in flight on one upstream.
pub struct ClientRoutes {
    /// The backend's name, for logs.
    backend: String,
    /// How long a client gets to answer the upstream's request (the backend's call deadline).
    answer_within: Duration,
    /// In flight, latest last.
    callers: Mutex<Vec<(u64, Related)>>,
    /// Relay progress token → (caller id, the client's own token).
    progress: Mutex<HashMap<String, (u64, Value)>>,
    next: AtomicU64,
}

/// Unregisters a request (and its progress token) when it ends or is cancelled.
pub struct RouteGuard<'a> {
    routes: &'a ClientRoutes,
    id: u64,
    token: Option<String>,
}

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        self.routes.callers.lock().expect("callers lock").retain(|(id, _)| *id != self.id);
        if let Some(token) = &self.token {
            self.routes.progress.lock().expect("progress lock").remove(token);
        }
    }
}

impl ClientRoutes {
    /// No requests in flight yet on `backend`, whose clients get `answer_within` to answer it.
    pub fn new(backend: &str, answer_within: Duration) -> Self {
        Self {
            backend: backend.to_owned(),
            answer_within,
            callers: Mutex::default(),
            progress: Mutex::default(),
            next: AtomicU64::new(0),
        }
    }

    /// The answer to a request the upstream sent past [`SERVER_REQUESTS_AT_ONCE`]: refused at
    /// once, so reading on does not wait for a client's answer (and a flood cannot grow the
    /// relay).
    pub fn too_many(request: Request) -> Response {
        let message = format!(
            "{}: the relay already handles {SERVER_REQUESTS_AT_ONCE} of this server's requests",
            request.method
        );
        Response { id: request.id, outcome: Err(RpcError::new(error_codes::SERVER_BUSY, message)) }
    }

    /// Answers a request the upstream sent to the relay: `ping` at once; what the relay offered
    /// (sampling, elicitation; anything else is refused) by asking the client it is about: the
    /// one whose request's own stream carried it (`on_stream_of`: a Streamable HTTP answer
    /// stream), else the one client the upstream works for, or an error when that client cannot
    /// be told apart.
    pub async fn answer(&self, request: Request, on_stream_of: Option<&Related>) -> Response {
        let Request { id, method, params } = request;
        if method == "ping" {
            return Response::ok(id, json!({}));
        }
        // Only what the relay declared in its `initialize` reaches a client (not `roots/list`:
        // the relay offers no roots, and a client's would tell the backend about its files).
        if !super::handshake::OFFERED_TO_UPSTREAMS.contains(&method.as_str()) {
            let offered = super::handshake::OFFERED_TO_UPSTREAMS.join(", ");
            let refusal = format!("{method}: the relay does not offer it to its servers (only {offered})");
            return Response { id, outcome: Err(RpcError::new(error_codes::METHOD_NOT_FOUND, refusal)) };
        }
        let about = match on_stream_of {
            Some(related) => Some(related.clone()),
            None => self.sole_caller(),
        };
        let outcome = match about {
            Some(related) => {
                tracing::info!(backend = %self.backend, method, "forwarding a request from the upstream to its client");
                related.request(&self.backend, &method, params.map(Payload::into_value), self.answer_within).await
            }
            None => Err(RpcError::new(
                error_codes::METHOD_NOT_FOUND,
                format!(
                    "{method}: the relay cannot tell which client this is for (no client request, or requests of several clients, are in flight on this backend)"
                ),
            )),
        };
        Response { id, outcome }
    }

    /// Registers a request made for the client behind `related`; swaps the progress token in
    /// `params._meta`, if any, for a relay token. Params still text are decoded for that only
    /// when they may hold one.
    pub fn register<'a>(&'a self, params: &mut Option<Payload>, related: &Related) -> RouteGuard<'a> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.callers.lock().expect("callers lock").push((id, related.clone()));
        // Not `pointer_mut`, which copies each segment of its path.
        let slot = params
            .as_mut()
            .filter(|p| p.may_hold_key(&PROGRESS_TOKEN))
            .and_then(|p| p.get_mut("_meta"))
            .and_then(|meta| meta.get_mut("progressToken"));
        let token = slot.map(|slot| {
            let token = format!("relay-{id}");
            let client_token = std::mem::replace(slot, Value::String(token.clone()));
            self.progress.lock().expect("progress lock").insert(token.clone(), (id, client_token));
            token
        });
        RouteGuard { routes: self, id, token }
    }

    /// The one client this upstream works for right now: every request in flight on it comes
    /// from the same client session. `None` when there is none, or when requests of several
    /// clients are in flight: a request or log message from the upstream carries nothing that
    /// says which of them it is about, and guessing would show one client another's data.
    /// Of that client's requests, the newest with a stream of its own (an HTTP request answered
    /// with plain JSON has none, and another of the session's may).
    pub fn sole_caller(&self) -> Option<Related> {
        let callers = self.callers.lock().expect("callers lock");
        let (_, first) = callers.first()?;
        if !callers.iter().all(|(_, r)| std::sync::Arc::ptr_eq(&r.client, &first.client)) {
            return None;
        }
        let streamed = callers.iter().rev().find(|(_, r)| r.sink.is_some());
        Some(streamed.map_or(first, |(_, r)| r).clone())
    }

    /// Sends a notification that belongs to a client request to its stream, unbuffered: a
    /// progress notification by its token; a log message to the request whose own stream
    /// carried it (`on_stream_of`), else to the one client the upstream works for, unless that
    /// client asked for a higher level (the backend logs at the most verbose level any client
    /// asked for) or takes nothing but the answer: dropped then, never shown to another; with
    /// requests of several clients in flight, dropped too. False when it belongs to none (no
    /// client request is in flight: the caller then treats it as a notification for all).
    /// Either is cut to [`crate::mcp::NOTICE_BYTES`] of params (it waits in the client's queue).
    pub fn deliver(&self, notification: &Notification, on_stream_of: Option<&Related>) -> bool {
        match notification.method.as_str() {
            "notifications/progress" => {
                let mut params = notification.params.clone().unwrap_or(Value::Null);
                let Some(token) = params.get("progressToken").and_then(Value::as_str).map(str::to_owned) else {
                    return false;
                };
                let Some((caller, client_token)) = self.progress.lock().expect("progress lock").get(&token).cloned()
                else {
                    return false;
                };
                params["progressToken"] = client_token;
                let sink = self
                    .callers
                    .lock()
                    .expect("callers lock")
                    .iter()
                    .find(|(id, _)| *id == caller)
                    .and_then(|(_, r)| r.sink.clone());
                if let Some(sink) = sink {
                    let message = Message::Notification(Notification {
                        method: notification.method.clone(),
                        params: Some(crate::mcp::progress_params(params)),
                    });
                    sink.try_send(message);
                }
                true
            }
            "notifications/message" => {
                // On a request's own stream it is that request's; else the sole caller's guess.
                // With several clients' requests in flight it may be about any of them: shown to
                // none. With none, it is about no client request: for every session at its level.
                let Some(related) = on_stream_of.cloned().or_else(|| self.sole_caller()) else {
                    return !self.callers.lock().expect("callers lock").is_empty();
                };
                let level = notification.params.as_ref().and_then(|p| p.get("level")).and_then(Value::as_str);
                if let Some(sink) = &related.sink
                    && related.client.log_level().wants_about_own_request(level.unwrap_or(""))
                {
                    sink.try_send(Message::Notification(Notification {
                        method: notification.method.clone(),
                        params: notification.params.clone().map(crate::mcp::related_log_params),
                    }));
                }
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::mcp::ClientRequests;

    fn text(text: &str) -> Option<Payload> {
        Payload::from_raw(serde_json::value::RawValue::from_string(text.to_owned()).unwrap())
    }

    #[test]
    fn progress_tokens_are_swapped_and_restored_while_the_request_runs() {
        let routes = ClientRoutes::new("b", Duration::from_secs(1));
        let (tx, mut rx) = crate::mcp::client_channel();
        let related = Related { sink: Some(tx), client: Arc::new(ClientRequests::default()) };
        // Params as a client's text: read for the token, its key spelled with an escape too.
        for mut unread in
            [text(r#"{"name":"t","_meta":{"progress\u0054oken":7}}"#), text(r#"{"_meta":{"progressToken":7}}"#)]
        {
            let _guard = routes.register(&mut unread, &related);
            let token = &unread.as_ref().unwrap()["_meta"]["progressToken"];
            assert!(token.as_str().is_some_and(|t| t.starts_with("relay-")), "{token}");
        }
        // Without one, they stay text.
        let mut unread = text(r#"{"name":"t","arguments":{"progress":1}}"#);
        drop(routes.register(&mut unread, &related));
        assert!(unread.unwrap().unread_text().is_some(), "no token: not decoded");
        let mut params = Some(json!({"name": "t", "_meta": {"progressToken": 7}}).into());
        let guard = routes.register(&mut params, &related);
        let relay_token = params.as_ref().unwrap()["_meta"]["progressToken"].clone();
        assert_ne!(relay_token, json!(7));
        let progress = |n| Notification {
            method: "notifications/progress".into(),
            params: Some(json!({"progressToken": relay_token, "progress": n})),
        };
        assert!(routes.deliver(&progress(1), None));
        let Some(Message::Notification(sent)) = rx.try_recv() else { panic!("a notification") };
        assert_eq!(sent.params, Some(json!({"progressToken": 7, "progress": 1})));
        drop(guard);
        assert!(!routes.deliver(&progress(2), None), "a finished request gets no more progress");
        assert!(routes.sole_caller().is_none());
    }

    #[test]
    fn a_log_message_on_a_requests_own_stream_is_that_requests_alone() {
        let routes = ClientRoutes::new("b", Duration::from_secs(1));
        let (tx, mut rx) = crate::mcp::client_channel();
        let streamed = Related { sink: Some(tx), client: Arc::new(ClientRequests::default()) };
        let json_only = Related { sink: None, client: Arc::new(ClientRequests::default()) };
        let (_a, _b) = (routes.register(&mut None, &streamed), routes.register(&mut None, &json_only));
        let log = Notification {
            method: "notifications/message".into(),
            params: Some(json!({"level": "info", "data": "private"})),
        };
        assert!(routes.deliver(&log, None), "two clients in flight: it may be either's, shown to none");
        assert!(rx.try_recv().is_none());
        assert!(routes.deliver(&log, Some(&streamed)));
        assert!(matches!(rx.try_recv(), Some(Message::Notification(n)) if n == log));
        assert!(routes.deliver(&log, Some(&json_only)), "its client takes only the answer: dropped, not for all");
        assert!(rx.try_recv().is_none());
        // Below the level its client asked for: dropped (the backend logs for the most verbose).
        streamed.client.log_level().replace(crate::mcp::log_rank("error"));
        assert!(routes.deliver(&log, Some(&streamed)));
        assert!(rx.try_recv().is_none(), "info is below error");
    }

    #[test]
    fn the_sole_callers_log_message_goes_to_it_at_its_level_or_nowhere() {
        let routes = ClientRoutes::new("b", Duration::from_secs(1));
        let log = |level: &str| Notification {
            method: "notifications/message".into(),
            params: Some(json!({"level": level, "data": "private"})),
        };
        let json_only = Related { sink: None, client: Arc::new(ClientRequests::default()) };
        let guard = routes.register(&mut None, &json_only);
        assert!(routes.deliver(&log("info"), None), "its sole caller takes only the answer: dropped, not for all");
        drop(guard);
        let (tx, mut rx) = crate::mcp::client_channel();
        let streamed = Related { sink: Some(tx), client: Arc::new(ClientRequests::default()) };
        streamed.client.log_level().replace(crate::mcp::log_rank("warning"));
        let _guard = routes.register(&mut None, &streamed);
        assert!(routes.deliver(&log("info"), None) && rx.try_recv().is_none(), "below its level");
        assert!(routes.deliver(&log("error"), None));
        assert!(matches!(rx.try_recv(), Some(Message::Notification(n)) if n == log("error")));
    }

    #[test]
    fn requests_from_the_upstream_go_to_a_client_only_when_it_is_the_only_one() {
        let routes = ClientRoutes::new("b", Duration::from_secs(1));
        let client = Arc::new(ClientRequests::default());
        let (tx, _rx) = crate::mcp::client_channel();
        let first = Related { sink: Some(tx.clone()), client: client.clone() };
        let same_session = Related { sink: Some(tx.clone()), client };
        // Another session's request without a stream (plain JSON over HTTP) counts as much.
        let other_session = Related { sink: None, client: Arc::new(ClientRequests::default()) };
        let _a = routes.register(&mut None, &first);
        let b = routes.register(&mut None, &same_session);
        assert!(routes.sole_caller().is_some(), "two requests of one session");
        let c = routes.register(&mut None, &other_session);
        assert!(routes.sole_caller().is_none(), "two sessions: the upstream's request is not attributable");
        drop((b, c));
        assert!(routes.sole_caller().is_some());
        let _adapter = routes.register(&mut None, &Related::detached());
        assert!(routes.sole_caller().is_none(), "an adapter plugin's call is a caller of its own");
    }

    #[test]
    fn the_sole_clients_request_with_a_stream_is_the_one_asked() {
        let routes = ClientRoutes::new("b", Duration::from_secs(1));
        let client = Arc::new(ClientRequests::default());
        let (tx, _rx) = crate::mcp::client_channel();
        let _json_only = routes.register(&mut None, &Related { sink: None, client: client.clone() });
        let _streamed = routes.register(&mut None, &Related { sink: Some(tx), client });
        assert!(routes.sole_caller().is_some_and(|r| r.sink.is_some()), "the request whose stream can carry it");
    }

    #[tokio::test]
    async fn only_the_requests_the_relay_offered_reach_a_client() {
        let routes = ClientRoutes::new("b", Duration::from_millis(50));
        let client = Arc::new(ClientRequests::default());
        client.declare(json!({"roots": {}, "sampling": {}}), false);
        let (tx, mut rx) = crate::mcp::client_channel();
        let _guard = routes.register(&mut None, &Related { sink: Some(tx), client });
        let ask = |method: &str| Request { id: json!(1), method: method.into(), params: None };
        let refused = routes.answer(ask("roots/list"), None).await.outcome.unwrap_err();
        assert_eq!(refused.code, error_codes::METHOD_NOT_FOUND, "{}", refused.message);
        assert!(rx.try_recv().is_none(), "the client is not asked for its roots");
        let _ = routes.answer(ask("sampling/createMessage"), None).await;
        assert!(matches!(rx.try_recv(), Some(Message::Request(r)) if r.method == "sampling/createMessage"));
    }
}
