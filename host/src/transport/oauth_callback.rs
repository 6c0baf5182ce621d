//! `GET /oauth/callback`: where a backend's authorization server sends the user's browser back
//! after the user authorized the relay (or refused) for an `oauth` backend. The page first
//! names the relay principal the grant would be stored for and asks the user to confirm (a
//! link to the same URL with `confirm=1`): a link one user asked for and sent to another would
//! otherwise store the second user's account as the first's without a word. Confirmed, the
//! relay redeems the code for that principal, stores the grant sealed, and says in the page what
//! happened; the user's client then calls again. The pages are never cached, send no referrer
//! (their URL holds the code) and may not be framed (no click can be stolen).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::TransportState;
use crate::credentials::{Callback, CallbackError};

/// Completes the authorization the query's `state` names.
pub async fn callback(State(state): State<Arc<TransportState>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let mut callback = Callback::default();
    let mut confirmed = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "state" => &mut callback.state,
            "code" => &mut callback.code,
            "error" => &mut callback.error,
            "confirm" => &mut confirmed,
            _ => continue,
        };
        // A parameter given twice is not an answer an authorization server sends.
        if slot.replace(value.into_owned()).is_some() {
            return page(StatusCode::BAD_REQUEST, "Not authorized", "the callback named a parameter twice");
        }
    }
    let credentials = state.relay_tools.credentials();
    // A refusal stores nothing: it needs no confirmation.
    if callback.error.is_none() && confirmed.as_deref() != Some("1") {
        return match credentials.pending(&callback).await {
            Ok((principal, backend)) => confirmation(&query, &principal, &backend),
            Err(error) => failed(error),
        };
    }
    match credentials.complete(&callback).await {
        Ok(authorized) => {
            // Heard by the session this instance holds that asked with it (a session on another
            // instance is not told; its client retries when the user says so).
            state.sessions_factory.router.elicitation_completed(authorized.backend.clone(), authorized.elicitation_id);
            page(
                StatusCode::OK,
                "Authorized",
                &format!(
                    "The relay now calls {} as relay user {}, with the account you signed in with. You can close this page and call the tool again from your client.",
                    authorized.backend, authorized.principal
                ),
            )
        }
        Err(error) => failed(error),
    }
}

/// The page that asks the user to confirm whose grant this is, before anything is stored.
fn confirmation(query: &str, principal: &str, backend: &str) -> Response {
    let (principal, backend) = (escape(principal), escape(backend));
    let body = format!(
        "<p>The relay will call <b>{backend}</b> as relay user <b>{principal}</b>, with the account you just signed in with.</p>\
         <p>Go on only if you are {principal} and asked for this from your own client: whoever asked for this link acts with your account once you confirm.</p>\
         <p><a href=\"?{}&amp;confirm=1\">Connect {backend} for {principal}</a></p>",
        escape(query)
    );
    html(StatusCode::OK, &format!("Connect {backend}?"), &body)
}

fn failed(error: CallbackError) -> Response {
    let status = match error {
        CallbackError::Vault(_) => StatusCode::SERVICE_UNAVAILABLE,
        CallbackError::Redeem(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::BAD_REQUEST,
    };
    page(status, "Not authorized", &error.to_string())
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    html(status, title, &format!("<p>{}</p>", escape(message)))
}

/// A page of `body` (HTML, escaped by the caller) under `title` (escaped by the caller).
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let body = format!("<!doctype html><meta charset=utf-8><title>relay: {title}</title><h1>{title}</h1>{body}\n");
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"),
    ];
    (status, headers, body).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
