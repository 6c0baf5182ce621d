//! Who may use a Streamable HTTP session, checked on every request before it is served: the
//! credential a POST presents is vouched for before its body is read, and a request naming a
//! session must present the credential the session was opened with, before it expires. A
//! session another instance opened (shared kv) is taken up here on its first request.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::TransportState;
use super::http::{SESSION_HEADER, VERSION_HEADER, bearer, refused, rpc_error};
use crate::access::{ConnectInfo, Peer, TransportKind};
use crate::mcp::{self, RpcError, error_codes, version};
use crate::session::{Refused, Session};

/// With auth on, a POST's credential (all of it is in its head: the bearer token, the client
/// certificate) is checked before its body is read, so nobody the relay cannot vouch for makes
/// it buffer up to `max_message_bytes`: the credential of an open session it names, or one the
/// auth plugin admits (remembered, so the session's or the stateless call's own check after is
/// free). A refusal answers with id `null`: the request was not read. Gives the open session
/// whose credential vouched, so [`find_session`] need not look it up and hash it again.
#[allow(clippy::result_large_err)] // the refusal is the handler's response, built once
pub(super) async fn vouched_for(
    state: &TransportState,
    peer: &Peer,
    headers: &HeaderMap,
) -> Result<Option<Arc<Session>>, Response> {
    let factory = &state.sessions_factory;
    if !factory.requires_auth() {
        return Ok(None);
    }
    let info = ConnectInfo::new(TransportKind::Http, peer, bearer(headers));
    let session = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()).and_then(|id| state.sessions.get(id));
    if let Some(session) = session.filter(|s| s.credential_matches(|| info.credential_digest())) {
        return Ok(Some(session));
    }
    // Boxed, as every rare branch of the exchange is: its future is kilobytes, and inline it
    // would make every request's future as large (moved whole into hyper's slot).
    match Box::pin(factory.authenticate(&info)).await {
        Ok(_) => Ok(None),
        Err(refusal) => Err(refused(Refused::Auth(refusal), Value::Null)),
    }
}

/// The session named by `Mcp-Session-Id`, after checking that the request presents the
/// credential the session was opened with (the same bearer token and client certificate
/// subject: a wrong one counts as a failed authentication of the address), that the
/// credential has not expired, and `MCP-Protocol-Version`. `vouched` is the session
/// [`vouched_for`] already found with a matching credential, if it did.
pub(super) async fn find_session(
    state: &TransportState,
    headers: &HeaderMap,
    peer: &Peer,
    vouched: Option<Arc<Session>>,
) -> Result<Arc<Session>, Response> {
    let session = match vouched {
        Some(session) => session,
        None => named_session(state, headers, peer).await?,
    };
    let shared = state.sessions.shared();
    if shared.enabled() && !Box::pin(shared.still_open(&session)).await {
        // Ended on another instance (DELETE there, or its record expired).
        state.sessions.remove(&session.id);
        return Err(unknown_session());
    }
    if let Err(refusal) = session.still_admitted().await {
        if !session.lapsed() {
            // The auth plugin failed, or asks to wait: this request is refused, the session stands.
            return Err(refused(Refused::Auth(refusal), Value::Null));
        }
        Box::pin(state.sessions.end(&session.id)).await;
        tracing::debug!(session = %session.tag(), principal = %session.principal.id, "session ended: its credential expired or no longer admits it");
        return Err(unauthorized(refusal.into()));
    }
    if let Some(requested) = headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok())
        && !version::is_supported(requested)
    {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            mcp::Response::err(
                Value::Null,
                RpcError::new(error_codes::INVALID_REQUEST, format!("unsupported MCP-Protocol-Version {requested}"))
                    .with_data(json!({"supported": version::SUPPORTED})),
            ),
        ));
    }
    Ok(session)
}

/// The session `Mcp-Session-Id` names, if the request presents its credential.
async fn named_session(state: &TransportState, headers: &HeaderMap, peer: &Peer) -> Result<Arc<Session>, Response> {
    let Some(id) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            mcp::Response::err(
                Value::Null,
                RpcError::new(error_codes::INVALID_REQUEST, "Mcp-Session-Id header required; send initialize first"),
            ),
        ));
    };
    let session = match state.sessions.get(id) {
        Some(session) => session,
        None if state.sessions.was_ended(id) => return Err(unknown_session()),
        None => Box::pin(taken_up(state, id, headers, peer)).await?.ok_or_else(unknown_session)?,
    };
    // Hashed only when the session has a credential to compare (auth is on).
    let presented = || ConnectInfo::new(TransportKind::Http, peer, bearer(headers)).credential_digest();
    if !session.credential_matches(presented) {
        return Err(Box::pin(wrong_credential(state, peer)).await);
    }
    Ok(session)
}

/// Session `id` as another instance opened it (its record in the shared kv), served here from
/// now on: the presented credential must be the session's own (by digest) and authenticate
/// again, here, as the session's principal. `None` when no instance has it open.
async fn taken_up(
    state: &TransportState,
    id: &str,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<Option<Arc<Session>>, Response> {
    use subtle::ConstantTimeEq;
    let record = match state.sessions.shared().take_up(id).await {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(None),
        Err(_) => return Err(sessions_unreachable()),
    };
    let factory = &state.sessions_factory;
    if factory.requires_auth() && record.credential.is_none() {
        // Opened where auth was off: bound to no credential, so not served where it is on.
        return Ok(None);
    }
    let info = ConnectInfo::new(TransportKind::Http, peer, bearer(headers));
    if let Some(expected) = record.credential_digest()
        && !bool::from(expected.ct_eq(&info.credential_digest()))
    {
        return Err(wrong_credential(state, peer).await);
    }
    let generation = state.sessions_factory.plugins.auth_generation();
    let authenticated = factory.authenticate(&info).await.map_err(|r| refused(Refused::Auth(r), Value::Null))?;
    if authenticated.principal.id != record.principal {
        tracing::info!(principal = %authenticated.principal.id, "a session's credential now names another principal; not taken up");
        return Ok(None);
    }
    let session = factory
        .reopen(id.to_owned(), authenticated, peer.address_key(), &record, factory.standing(info, generation))
        .map_err(|e| refused(Refused::Busy(e), Value::Null))?;
    let (session, adopted) = state.sessions.adopt(session);
    if adopted {
        session.resume_upstream().await;
        tracing::info!(session = %session.tag(), principal = %session.principal.id, "session taken up from another instance");
    }
    Ok(Some(session))
}

/// The answer to a wrong credential on a session: counted as a failed authentication of the
/// address (throttled past the limit), 401 otherwise.
async fn wrong_credential(state: &TransportState, peer: &Peer) -> Response {
    let factory = &state.sessions_factory;
    if let Err(throttled) = factory.session_credential_failed(TransportKind::Http, peer).await {
        let refusal = Refused::Auth(crate::plugins::Refusal::Denied(throttled));
        return refused(refusal, Value::Null);
    }
    let error = RpcError::new(
        error_codes::UNAUTHENTICATED,
        "this session needs the credential it was opened with (the same bearer token and client certificate)",
    );
    unauthorized(error)
}

/// While the shared kv cannot be asked, a session another instance opened may be open: 503
/// and `Retry-After`, not 404 (which tells the client to start a new session).
fn sessions_unreachable() -> Response {
    let error = RpcError::new(
        error_codes::UPSTREAM_UNAVAILABLE,
        "this session's record cannot be read now (the shared store is unreachable); try again",
    );
    let mut response = rpc_error(StatusCode::SERVICE_UNAVAILABLE, mcp::Response::err(Value::Null, error));
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
    response
}

/// 404: the session named is not open (anywhere); the client initializes again.
pub(super) fn unknown_session() -> Response {
    rpc_error(
        StatusCode::NOT_FOUND,
        mcp::Response::err(
            Value::Null,
            RpcError::new(error_codes::INVALID_REQUEST, "unknown or expired session; initialize again"),
        ),
    )
}

fn unauthorized(error: RpcError) -> Response {
    let mut response = rpc_error(StatusCode::UNAUTHORIZED, mcp::Response::err(Value::Null, error));
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
