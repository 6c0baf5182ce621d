//! Stateless (2026-07-28) calls waiting for their client's input, by `requestState`: the call
//! keeps running here (its upstream speaks an older protocol and waits for the answer), and the
//! client's retry continues it. A `requestState` names the process that issued it, so a retry
//! that a blue/green switch (or a restart) sent elsewhere is told apart from a spent or stolen
//! one; the drain ends the calls parked here, which no retry will reach any more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;

use super::stateless::Call;
use super::stateless_headers::target_of;
use crate::mcp::{self, Message, Request, RpcError, error_codes};

/// How long a call waiting for the client's input stays parked before it is cancelled. The
/// upstream's own wait for the answer (its call deadline, 120 s by default) usually ends first;
/// a retry after that gets the call's timeout error.
const PARKED_FOR: Duration = Duration::from_secs(150);

/// Calls waiting for their client's input, by `requestState`.
pub struct ParkedCalls {
    /// What every `requestState` of this process starts with: random for each process.
    issuer: String,
    /// `None` once the drain ended them: nothing is parked after that.
    calls: Mutex<Option<HashMap<String, Parked>>>,
}

impl Default for ParkedCalls {
    fn default() -> Self {
        let issuer = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Self { issuer, calls: Mutex::new(Some(HashMap::new())) }
    }
}

/// A call waiting for its client's retry.
struct Parked {
    /// The principal whose retry may continue it.
    principal: String,
    /// Whose count it is in: its principal, or its client's address (an open relay's).
    holder: String,
    call: Call,
}

impl ParkedCalls {
    /// Parks `call` until the client's retry (or [`PARKED_FOR`]); returns its `requestState`.
    /// A `holder` with `limit` calls parked already gets an error instead (the call ends).
    pub(super) fn park(self: &Arc<Self>, call: Call, holder: String, limit: usize) -> Result<String, RpcError> {
        let token = format!("{}.{}", self.issuer, uuid::Uuid::new_v4().simple());
        let principal = call.session.principal.id.clone();
        let full = {
            let mut calls = self.calls.lock().expect("parked lock");
            // Draining: its retry would reach another instance (which starts it again there).
            let Some(calls) = calls.as_mut() else {
                return Err(RpcError::new(
                    error_codes::SHUTTING_DOWN,
                    "this instance is shutting down; send the request again (without requestState)",
                ));
            };
            let full = calls.values().filter(|parked| parked.holder == holder).count() >= limit;
            if !full {
                calls.insert(token.clone(), Parked { principal, holder: holder.clone(), call });
            }
            full
        };
        if full {
            let holder = crate::mcp::clip(&holder);
            crate::limit_log::limit_refused(
                "max_parked_per_principal",
                format_args!("a stateless call of {holder} waiting for input"),
            );
            return Err(RpcError::new(
                error_codes::SERVER_BUSY,
                format!("{holder} has {limit} calls waiting for input already (limits.max_parked_per_principal)"),
            ));
        }
        let parked: Weak<Self> = Arc::downgrade(self);
        let key = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PARKED_FOR).await;
            if let Some(parked) = parked.upgrade() {
                // Dropping the call cancels it.
                parked.calls.lock().expect("parked lock").as_mut().and_then(|calls| calls.remove(&key));
            }
        });
        Ok(token)
    }

    /// Whether this process issued `token` (its call may be parked here, spent or expired);
    /// one another process issued names a call this one never held.
    pub(super) fn issued_here(&self, token: &str) -> bool {
        token.split_once('.').is_some_and(|(issuer, _)| issuer == self.issuer)
    }

    /// Takes the call a retry continues, after checking it belongs to the same principal and
    /// method, and hands the client's answers to the requests waiting for them.
    pub(super) async fn resume(&self, token: &str, principal: &str, retry: &Request) -> Result<Call, RpcError> {
        let call = self.take(token, principal, retry).ok_or_else(|| {
            RpcError::new(
                error_codes::INVALID_PARAMS,
                "requestState names no waiting request (finished, expired or not yours)",
            )
        })?;
        let answers = retry.params.as_ref().and_then(|p| p.get("inputResponses")).and_then(Value::as_object);
        for (key, answer) in answers.into_iter().flatten() {
            let response = mcp::Response::ok(Value::String(key.clone()), answer.clone());
            call.session.handle(Message::Response(response), None).await;
        }
        Ok(call)
    }

    fn take(&self, token: &str, principal: &str, retry: &Request) -> Option<Call> {
        let mut calls = self.calls.lock().expect("parked lock");
        let calls = calls.as_mut()?;
        let matches = calls.get(token).is_some_and(|Parked { principal: owner, call, .. }| {
            owner == principal && call.method == retry.method && call.target.as_deref() == target_of(retry)
        });
        if matches { calls.remove(token).map(|parked| parked.call) } else { None }
    }

    /// Cancels every parked call, and parks none from now on (the drain: their clients'
    /// retries go to another instance, which starts them again, and the drain need not wait for
    /// them); how many there were.
    pub fn end_all(&self) -> usize {
        let ended = self.calls.lock().expect("parked lock").take();
        ended.map_or(0, |calls| calls.len())
    }
}

/// `retry` as a new request: without the `requestState` and `inputResponses` of a round
/// another instance held.
pub(super) fn anew(retry: &Request) -> Request {
    let mut request = retry.clone();
    if let Some(params) = request.params.as_mut().and_then(|params| params.as_object_mut()) {
        params.remove("requestState");
        params.remove("inputResponses");
    }
    request
}
