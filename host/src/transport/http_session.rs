//! Who may use a Streamable HTTP session, checked on every request before it is served: the
//! credential a POST presents is vouched for before its body is read, and a request naming a
//! session must present the credential the session was opened with, before it expires.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::http::{SESSION_HEADER, TransportState, VERSION_HEADER, bearer, refused, rpc_error};
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
    if let Some(session) = session.filter(|s| s.credential_matches(&info.credential_digest())) {
        return Ok(Some(session));
    }
    match factory.authenticate(&info).await {
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
    if session.expired() {
        state.sessions.remove(&session.id);
        tracing::debug!(session = %session.tag, principal = %session.principal.id, "session ended: its credential expired");
        return Err(unauthorized(crate::session::expired_error()));
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
    let Some(session) = state.sessions.get(id) else {
        return Err(rpc_error(
            StatusCode::NOT_FOUND,
            mcp::Response::err(
                Value::Null,
                RpcError::new(error_codes::INVALID_REQUEST, "unknown or expired session; initialize again"),
            ),
        ));
    };
    let presented = ConnectInfo::new(TransportKind::Http, peer, bearer(headers)).credential_digest();
    if !session.credential_matches(&presented) {
        let factory = &state.sessions_factory;
        if let Err(throttled) = factory.session_credential_failed(TransportKind::Http, peer.addr).await {
            let refusal = Refused::Auth(crate::plugins::Refusal::Denied(throttled));
            return Err(refused(refusal, Value::Null));
        }
        let error = RpcError::new(
            error_codes::UNAUTHENTICATED,
            "this session needs the credential it was opened with (the same bearer token and client certificate)",
        );
        return Err(unauthorized(error));
    }
    Ok(session)
}

fn unauthorized(error: RpcError) -> Response {
    let mut response = rpc_error(StatusCode::UNAUTHORIZED, mcp::Response::err(Value::Null, error));
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
