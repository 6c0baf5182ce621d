//! The way back to one client request: the stream its related messages travel on (progress,
//! server-to-client requests), and the session's table of requests that await the client's
//! answer. Upstream requests made on a client's behalf carry it, so what the upstream sends
//! about that request reaches that client and no other.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use super::{ClientLogLevel, ClientSink, Message, Payload, Request, Response, RpcError, error_codes};

/// Who one upstream request is for, and where messages related to it go (its SSE stream or
/// its connection). Every request the relay forwards on a client's behalf carries one, so the
/// upstream side always knows how many client sessions it is working for.
#[derive(Clone)]
pub struct Related {
    /// The request's stream; `None` when the client takes nothing but the response (an HTTP
    /// request answered with plain JSON, an adapter plugin's call). The transport encodes.
    pub sink: Option<ClientSink>,
    /// The session's requests awaiting the client's answer; its identity is the session's.
    pub client: Arc<ClientRequests>,
}

/// Requests the relay sent to one client session, by the relay-assigned id, and what the
/// client declared it can answer.
pub struct ClientRequests {
    pending: Mutex<HashMap<String, oneshot::Sender<Result<Payload, RpcError>>>>,
    /// Random for each session on each instance, and part of every id: another instance that
    /// takes the session up (a blue/green switch) numbers its own requests apart, so an answer
    /// meant for one instance's request never answers the other's.
    salt: u64,
    next: AtomicU64,
    /// The client's capabilities (from `initialize` or the stateless envelope) and whether it
    /// speaks 2026-07-28 (which has its own refusal code).
    declared: Mutex<(Value, bool)>,
    /// The URL elicitations the client was asked with (a `-32042` error, an
    /// `elicitation/create` in URL mode), as the backend that asked and the `elicitationId`,
    /// newest last, at most [`MAX_AWAITED_ELICITATIONS`]: the ones whose completion it hears.
    awaited_elicitations: Mutex<VecDeque<(String, String)>>,
    /// The log level the client asked for: what it hears of the backends' log messages.
    log_level: ClientLogLevel,
}

impl Default for ClientRequests {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            salt: uuid::Uuid::new_v4().as_u64_pair().0,
            next: AtomicU64::default(),
            declared: Mutex::default(),
            awaited_elicitations: Mutex::default(),
            log_level: ClientLogLevel::default(),
        }
    }
}

/// How many of the relay's requests one session may leave unanswered at once: a backend's
/// requests wait for their client's answer in a few slots shared by every client of that
/// backend, and one client must not hold them all.
const MAX_AWAITED_ANSWERS: usize = 8;
/// How many URL elicitations one session remembers, for their completion notifications.
const MAX_AWAITED_ELICITATIONS: usize = 16;
/// Longest `elicitationId` remembered.
const MAX_ELICITATION_ID: usize = 256;

/// The client capability a server-to-client request needs.
pub fn capability_for(method: &str) -> Option<&'static str> {
    match method {
        "elicitation/create" => Some("elicitation"),
        "sampling/createMessage" => Some("sampling"),
        _ => None,
    }
}

impl Related {
    /// A caller of its own that takes nothing but responses (an adapter plugin calling a
    /// backend): it counts as one more client on the upstream, and nothing is sent to it.
    pub fn detached() -> Self {
        Self { sink: None, client: Arc::default() }
    }

    /// Sends `backend`'s request to the client over this stream and waits (up to `timeout`) for
    /// the answer, which arrives through the session as a response message.
    pub async fn request(
        &self,
        backend: &str,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
    ) -> Result<Payload, RpcError> {
        if let Some(refusal) = self.client.refusal(method, params.as_ref()) {
            return Err(refusal);
        }
        if method == "elicitation/create"
            && let Some(elicitation) = params.as_ref().filter(|p| p.get("mode").and_then(Value::as_str) == Some("url"))
        {
            self.client.await_elicitation(backend, elicitation);
        }
        let id = format!("relay-{:016x}-{}", self.client.salt, self.client.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.client.pending.lock().expect("client requests lock");
            if pending.len() >= MAX_AWAITED_ANSWERS {
                return Err(RpcError::new(
                    error_codes::SERVER_BUSY,
                    format!("{method}: the client has {MAX_AWAITED_ANSWERS} requests of the relay's unanswered"),
                ));
            }
            pending.insert(id.clone(), tx);
        }
        // Whatever ends this wait (answered, timed out, the caller gone) ends its entry.
        let _entry = PendingEntry { client: &self.client, id: &id };
        let message = Message::Request(Request {
            id: Value::String(id.clone()),
            method: method.into(),
            params: params.map(Payload::from),
        });
        let unavailable = |message: &str| RpcError::new(error_codes::UPSTREAM_UNAVAILABLE, message.to_owned());
        let Some(sink) = &self.sink else {
            return Err(RpcError::new(
                error_codes::METHOD_NOT_FOUND,
                format!("{method}: the client's request has no stream the relay could send it on"),
            ));
        };
        // The send is within the deadline too: a client that does not read holds it as long.
        let asked = async {
            sink.send(message).await.map_err(|_| unavailable("the client's stream is closed"))?;
            rx.await.unwrap_or_else(|_| Err(unavailable("the client session ended")))
        };
        tokio::time::timeout(timeout, asked).await.unwrap_or_else(|_| {
            Err(RpcError::new(error_codes::REQUEST_TIMEOUT, format!("the client did not answer {method} in time")))
        })
    }
}

/// Removes one awaited answer's entry from its session's table when the wait ends.
struct PendingEntry<'a> {
    client: &'a ClientRequests,
    id: &'a str,
}

impl Drop for PendingEntry<'_> {
    fn drop(&mut self) {
        self.client.pending.lock().expect("client requests lock").remove(self.id);
    }
}

impl ClientRequests {
    /// The log level the client asked for.
    pub fn log_level(&self) -> &ClientLogLevel {
        &self.log_level
    }

    /// Records what the client can answer (`capabilities` as it declared them).
    pub fn declare(&self, capabilities: Value, stateless: bool) {
        *self.declared.lock().expect("declared lock") = (capabilities, stateless);
    }

    /// Remembers the URL elicitation `elicitation` (its `elicitationId`) `backend` is asking
    /// the client with, so that it hears when that backend says it completed.
    pub fn await_elicitation(&self, backend: &str, elicitation: &Value) {
        let Some(id) = elicitation.get("elicitationId").and_then(Value::as_str) else { return };
        if id.len() > MAX_ELICITATION_ID {
            return;
        }
        let mut awaited = self.awaited_elicitations.lock().expect("elicitations lock");
        if awaited.len() == MAX_AWAITED_ELICITATIONS {
            awaited.pop_front();
        }
        awaited.push_back((backend.to_owned(), id.to_owned()));
    }

    /// Whether `backend` asked the client with the URL elicitation `id` and the client has not
    /// heard it complete (it then has: a completion is told once).
    pub fn completes_elicitation(&self, backend: &str, id: &str) -> bool {
        let mut awaited = self.awaited_elicitations.lock().expect("elicitations lock");
        let at = awaited.iter().position(|(asker, awaited)| asker == backend && awaited == id);
        at.and_then(|at| awaited.remove(at)).is_some()
    }

    /// Whether the client declared elicitation in `mode` (`form` or `url`, MCP 2025-11-25): a
    /// mode named under `elicitation`, or for `form` an empty `elicitation: {}` (form only).
    pub fn takes_elicitation(&self, mode: &str) -> bool {
        let declared = &self.declared.lock().expect("declared lock").0;
        let Some(modes) = declared.get("elicitation").filter(|c| !c.is_null()) else { return false };
        let form_only = modes.as_object().is_some_and(|modes| modes.is_empty());
        modes.get(mode).is_some_and(|m| !m.is_null()) || (mode == "form" && form_only)
    }

    /// The capabilities the client declared.
    pub fn declared(&self) -> Value {
        self.declared.lock().expect("declared lock").0.clone()
    }

    /// Why `method` may not be sent to this client: it never declared the capability (MCP
    /// forbids sending it then). 2026-07-28 clients get MissingRequiredClientCapability.
    /// An elicitation needs its mode declared too (MCP 2025-11-25): `url` for URL mode, and
    /// `form` (or an empty `elicitation: {}`, which means form only) for form mode.
    fn refusal(&self, method: &str, params: Option<&Value>) -> Option<RpcError> {
        let needed = capability_for(method)?;
        let (declared, stateless) = {
            let (capabilities, stateless) = &*self.declared.lock().expect("declared lock");
            (capabilities.get(needed).is_some_and(|c| !c.is_null()), *stateless)
        };
        let code = if stateless { error_codes::MISSING_CLIENT_CAPABILITY } else { error_codes::METHOD_NOT_FOUND };
        if !declared {
            return Some(RpcError::new(code, format!("{method}: the client did not declare the {needed} capability")));
        }
        let mode = params.and_then(|p| p.get("mode")).and_then(Value::as_str).unwrap_or("form");
        (method == "elicitation/create" && !self.takes_elicitation(mode)).then(|| {
            RpcError::new(code, format!("{method}: the client did not declare elicitation.{mode} ({mode} mode)"))
        })
    }

    /// Fails every request still waiting for the client's answer (its session ended): a
    /// backend's request must not wait out its deadline for a client that is gone.
    pub fn end(&self) {
        self.pending.lock().expect("client requests lock").clear();
    }

    /// Hands a client's response to the request waiting for it; false if none waits.
    pub fn resolve(&self, response: Response) -> bool {
        let key = match &response.id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match self.pending.lock().expect("client requests lock").remove(&key) {
            Some(waiter) => waiter.send(response.outcome).is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_url_elicitation_completes_once_for_the_client_asked_and_few_are_remembered() {
        let client = ClientRequests::default();
        client.await_elicitation("a", &json!({"mode": "url", "elicitationId": "e1"}));
        assert!(!client.completes_elicitation("b", "e1"), "only the backend that asked completes it");
        assert!(client.completes_elicitation("a", "e1"));
        assert!(!client.completes_elicitation("a", "e1"), "told once");
        assert!(!ClientRequests::default().completes_elicitation("a", "e1"), "another client was not asked");
        for n in 0..=MAX_AWAITED_ELICITATIONS {
            client.await_elicitation("a", &json!({"elicitationId": format!("e{n}")}));
        }
        assert!(!client.completes_elicitation("a", "e0"), "the oldest is forgotten");
        assert!(client.completes_elicitation("a", &format!("e{MAX_AWAITED_ELICITATIONS}")));
        client.await_elicitation("a", &json!({"elicitationId": "x".repeat(MAX_ELICITATION_ID + 1)}));
        assert!(!client.completes_elicitation("a", &"x".repeat(MAX_ELICITATION_ID + 1)));
    }

    #[tokio::test]
    async fn a_client_holds_a_few_unanswered_requests_and_its_end_fails_them() {
        let client = Arc::new(ClientRequests::default());
        client.declare(json!({"sampling": {}}), false);
        let (sink, _rx) = crate::mcp::client_channel();
        let related = Related { sink: Some(sink), client: client.clone() };
        let ask = || {
            let related = related.clone();
            tokio::spawn(
                async move { related.request("b", "sampling/createMessage", None, Duration::from_secs(60)).await },
            )
        };
        let waiting: Vec<_> = (0..MAX_AWAITED_ANSWERS).map(|_| ask()).collect();
        while client.pending.lock().unwrap().len() < MAX_AWAITED_ANSWERS {
            tokio::task::yield_now().await;
        }
        let refused = ask().await.unwrap().unwrap_err();
        assert_eq!(refused.code, error_codes::SERVER_BUSY, "{}", refused.message);
        client.end();
        for waiting in waiting {
            let ended = waiting.await.unwrap().unwrap_err();
            assert!(ended.message.contains("session ended"), "{}", ended.message);
        }
        assert!(client.pending.lock().unwrap().is_empty());
    }

    #[test]
    fn an_elicitation_needs_its_mode_declared() {
        let client = ClientRequests::default();
        let refused = |declared: Value, params: Value| {
            client.declare(declared, false);
            client.refusal("elicitation/create", Some(&params)).map(|e| e.message)
        };
        let (url, form) = (json!({"mode": "url", "url": "https://x"}), json!({"message": "m"}));
        assert!(refused(json!({"elicitation": {}}), form.clone()).is_none(), "{{}} means form");
        assert!(refused(json!({"elicitation": {}}), url.clone()).unwrap().contains("elicitation.url"));
        assert!(refused(json!({"elicitation": {"url": {}}}), url.clone()).is_none());
        assert!(refused(json!({"elicitation": {"url": {}}}), form.clone()).unwrap().contains("elicitation.form"));
        assert!(refused(json!({"elicitation": {"form": {}, "url": {}}}), form).is_none());
        assert!(refused(json!({}), url).unwrap().contains("elicitation capability"));
        client.declare(json!({"sampling": {}}), false);
        assert!(client.refusal("sampling/createMessage", None).is_none());
    }
}
