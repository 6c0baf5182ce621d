//! Stateless Streamable HTTP (protocol 2026-07-28): every POST is a whole exchange. There is no
//! `initialize` and no `Mcp-Session-Id`; the request carries its version and the client's
//! capabilities in `params._meta`, and its method and name again in the `Mcp-Method` and
//! `Mcp-Name` headers, which must agree with the body. Closing the response stream cancels the
//! request.
//!
//! An upstream that asks its client something mid-request (elicitation, sampling) speaks
//! an older protocol, where the relay would send a request on the client's stream. A 2026 client
//! takes no requests, so the relay answers the POST with an `input_required` result instead and
//! parks the running call under an opaque `requestState`; the client's retry (same method, new
//! id, `inputResponses` plus that `requestState`) hands the answers to the waiting upstream and
//! continues the same call.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::TransportState;
use super::http::{bearer, json_response, refused, rpc_error};
use super::parked::{self, ParkedCalls};
use super::stateless_headers::target_of;
pub use super::stateless_headers::{check, is_stateless};
use crate::access::{ConnectInfo, Peer, TransportKind};
use crate::mcp::envelope;
use crate::mcp::{self, Message, Request, RpcError, error_codes};
use crate::session::{Refused, Session};

/// How long a quiet call may run before its answer is committed to an SSE stream (so the
/// client and any proxy in between see keep-alives rather than a silent connection).
const STREAM_AFTER: Duration = Duration::from_secs(10);

/// One POST of a stateless client. `message` is the decoded body.
pub async fn post(
    state: &Arc<TransportState>,
    peer: &Peer,
    headers: &HeaderMap,
    accept: super::media::Accept,
    message: Message,
) -> Response {
    let request = match message {
        Message::Request(request) => request,
        Message::Notification(_) => return StatusCode::ACCEPTED.into_response(),
        Message::Response(_) => {
            let error = RpcError::new(
                error_codes::INVALID_REQUEST,
                "Body must be a single JSON-RPC request or notification object",
            );
            return rpc_error(StatusCode::BAD_REQUEST, mcp::Response::err(Value::Null, error));
        }
    };
    let id = request.id.clone();
    let envelope = match check(headers, &request) {
        Ok(envelope) => envelope,
        Err(error) => return rpc_error(StatusCode::BAD_REQUEST, mcp::Response::err(id, error)),
    };
    let token = bearer(headers);
    let info = ConnectInfo::new(TransportKind::Http, peer, token);
    let authenticated = match state.sessions_factory.authenticate(&info).await {
        Ok(authenticated) => authenticated,
        Err(refusal) => return refused(Refused::Auth(refusal), id),
    };
    // An open relay's one principal is every client: its parked calls are counted per address,
    // or one client parking 64 would refuse every other client's (as for sessions).
    let counted_by_address = (!state.sessions_factory.requires_auth()).then(|| peer.address_key());

    let request_state = request.params.as_ref().and_then(|p| p.get("requestState")).and_then(Value::as_str);
    let call = match request_state {
        Some(request_state) if !state.parked.issued_here(request_state) => {
            // Parked by another instance (or this one before a restart), which a blue/green
            // switch took the client away from: the call is started again here, as a stateless
            // server runs a request anew on each round. What it asked is asked again.
            tracing::info!(method = %crate::mcp::clip(&request.method), "a stateless call another instance held for its client's input is started again here");
            None
        }
        Some(request_state) => match state.parked.resume(request_state, &authenticated.principal.id, &request).await {
            Ok(call) => Some(call),
            Err(error) => return rpc_error(StatusCode::BAD_REQUEST, mcp::Response::err(id, error)),
        },
        None => None,
    };
    let call = match call {
        Some(call) => call,
        None => {
            let session = match state.sessions_factory.open_stateless(authenticated, peer.address_key(), &envelope) {
                Ok(session) => session,
                Err(busy) => return refused(Refused::Busy(busy), id),
            };
            Call::start(session, parked::anew(&request))
        }
    };
    let mut exchange = Exchange {
        call: Some(call),
        id,
        method: request.method,
        parked: state.parked.clone(),
        counted_by_address,
        park_limit: state.sessions_factory.limits.max_parked_per_principal,
        error_code: None,
        answered_by: None,
    };
    let streaming = accept.names_event_stream;
    // A quick answer goes out as one JSON body; a call that streams progress, or that runs
    // longer than STREAM_AFTER, gets an SSE stream (with keep-alives).
    let waited = if streaming {
        tokio::time::timeout(STREAM_AFTER, exchange.next_message(true)).await.ok()
    } else {
        Some(exchange.next_message(false).await)
    };
    let first = match waited {
        Some(None) => {
            let cancelled = RpcError::new(error_codes::REQUEST_CANCELLED, "request cancelled");
            return json_response(&Message::Response(mcp::Response::err(exchange.id, cancelled)));
        }
        Some(Some(answer)) if exchange.call.is_none() => {
            let status = status_for(exchange.error_code);
            // Its session (counted per address) stays until the client has taken the answer.
            return super::held_answer::json_holding(status, &answer, exchange.answered_by.take());
        }
        Some(Some(notification)) => Some(notification),
        None => None,
    };
    // Closing the stream drops the exchange, which cancels the call.
    let rest = stream::unfold(exchange, |mut exchange| async move {
        let message = exchange.next_message(true).await?;
        Some((message, exchange))
    });
    super::sse::respond(stream::iter(first).chain(rest), true)
}

/// The HTTP status of an answer: client mistakes are 400, an unknown method 404, and
/// everything else (results, failures of the call itself) 200.
fn status_for(error_code: Option<i64>) -> StatusCode {
    match error_code {
        Some(
            error_codes::PARSE_ERROR
            | error_codes::INVALID_REQUEST
            | error_codes::INVALID_PARAMS
            | error_codes::HEADER_MISMATCH
            | error_codes::UNSUPPORTED_PROTOCOL_VERSION,
        ) => StatusCode::BAD_REQUEST,
        Some(error_codes::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// GET and DELETE have no meaning without a session.
pub fn method_not_allowed() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST")]).into_response()
}

/// A request running in its stateless session, and the stream of messages related to it.
pub(super) struct Call {
    pub(super) session: Arc<Session>,
    pub(super) method: String,
    /// The tool name, prompt name or resource URI it is for (a retry must name the same).
    pub(super) target: Option<String>,
    task: JoinHandle<Option<mcp::Response>>,
    related: mcp::ClientStream,
    /// The task's outcome once it ended (`Some(None)`: cancelled); messages queued before it
    /// still go out first.
    finished: Option<Option<mcp::Response>>,
}

/// What a call produced next.
enum Step {
    /// A notification about the request (progress).
    Notify(Message),
    /// A log message about the request, at this level.
    Log(String, Message),
    /// The upstream asks the client something.
    Ask(Request),
    /// The call is over (`None`: it was cancelled).
    Done(Option<mcp::Response>),
}

impl Call {
    fn start(session: Arc<Session>, request: Request) -> Self {
        let (sink, related) = mcp::client_channel();
        let method = request.method.clone();
        let target = target_of(&request).map(str::to_owned);
        let task = session.spawn_request(request, Some(sink));
        Self { session, method, target, task, related, finished: None }
    }

    /// Waits for what the call produces next; after [`Step::Done`] the call is spent.
    async fn next_step(&mut self) -> Step {
        if self.finished.is_none() {
            tokio::select! {
                biased;
                Some(message) = self.related.recv() => return classify(message),
                outcome = &mut self.task => self.finished = Some(outcome.ok().flatten()),
            }
        }
        match self.related.try_recv() {
            Some(message) => classify(message),
            None => Step::Done(self.finished.take().flatten()),
        }
    }
}

fn classify(message: Message) -> Step {
    match message {
        Message::Request(request) => Step::Ask(request),
        Message::Notification(note) if note.method == "notifications/message" => {
            let level = note.params.as_ref().and_then(|p| p.get("level")).and_then(Value::as_str).unwrap_or("");
            Step::Log(level.to_owned(), Message::Notification(note))
        }
        other => Step::Notify(other),
    }
}

impl Drop for Call {
    /// A call nobody waits for any more (stream closed, parked too long) is cancelled, and its
    /// session (this exchange's alone) ends: what a backend asked its client fails at once
    /// instead of holding one of the backend's slots to its deadline.
    fn drop(&mut self) {
        self.task.abort();
        self.session.end();
    }
}

/// One POST's view of a call: it answers with this POST's id.
struct Exchange {
    call: Option<Call>,
    id: Value,
    method: String,
    /// Where a call waiting for the client's input is parked.
    parked: Arc<ParkedCalls>,
    /// The client's address, when `park_limit` counts parked calls by it (an open relay's),
    /// not by principal.
    counted_by_address: Option<crate::admission::AddressKey>,
    /// `limits.max_parked_per_principal`.
    park_limit: usize,
    /// The error code of the answer, once given.
    error_code: Option<i64>,
    /// The session of the call, once it answered.
    answered_by: Option<Arc<Session>>,
}

impl Exchange {
    /// The next message for the client, the last being the response (or the `input_required`
    /// result); `None` after that. Notifications are skipped unless `notifications` is set.
    async fn next_message(&mut self, notifications: bool) -> Option<Message> {
        loop {
            let call = self.call.as_mut()?;
            match call.next_step().await {
                Step::Notify(message) if notifications => return Some(message),
                // 2026-07-28 sends log messages only to requests whose envelope asks for them.
                Step::Log(level, message) if notifications && call.session.wants_log(&level) => {
                    return Some(message);
                }
                Step::Notify(_) | Step::Log(..) => {}
                Step::Ask(request) => {
                    let call = self.call.take().expect("checked above");
                    let key = match &request.id {
                        Value::String(id) => id.clone(),
                        other => other.to_string(),
                    };
                    let asks = json!({ key: {"method": request.method, "params": request.params} });
                    let holder = match self.counted_by_address {
                        Some(address) => format!("address {address}"),
                        None => call.session.principal.id.clone(),
                    };
                    let token = match self.parked.park(call, holder, self.park_limit) {
                        Ok(token) => token,
                        Err(error) => {
                            self.error_code = Some(error.code);
                            return Some(Message::Response(mcp::Response::err(self.id.clone(), error)));
                        }
                    };
                    let mut result =
                        json!({"resultType": "input_required", "inputRequests": asks, "requestState": token});
                    envelope::stamp(&self.method, &mut result, &envelope::server_info());
                    return Some(Message::Response(mcp::Response::ok(self.id.clone(), result)));
                }
                Step::Done(outcome) => {
                    self.answered_by = self.call.take().map(|call| call.session.clone());
                    let mut response = outcome?;
                    response.id = self.id.clone();
                    // 2026-07-28 has no "resource not found" code: an unknown URI is a bad param.
                    if let Err(error) = &mut response.outcome
                        && error.code == error_codes::RESOURCE_NOT_FOUND
                    {
                        error.code = error_codes::INVALID_PARAMS;
                    }
                    self.error_code = response.outcome.as_ref().err().map(|e| e.code);
                    return Some(Message::Response(response));
                }
            }
        }
    }
}
