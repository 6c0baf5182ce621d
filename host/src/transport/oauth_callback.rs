//! `GET /oauth/callback`: where a backend's authorization server sends the user's browser back
//! after the user authorized the relay (or refused) for an `oauth` backend. The relay redeems
//! the code for the principal who was asked, stores the grant sealed, and says in the page what
//! happened; the user's client then calls again. The page is never cached and sends no
//! referrer (its URL held the code).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::TransportState;
use crate::credentials::{Callback, CallbackError};

/// Completes the authorization the query's `state` names.
pub async fn callback(State(state): State<Arc<TransportState>>, RawQuery(query): RawQuery) -> Response {
    let mut callback = Callback::default();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let slot = match name.as_ref() {
            "state" => &mut callback.state,
            "code" => &mut callback.code,
            "error" => &mut callback.error,
            _ => continue,
        };
        // A parameter given twice is not an answer an authorization server sends.
        if slot.replace(value.into_owned()).is_some() {
            return page(StatusCode::BAD_REQUEST, "Not authorized", "the callback named a parameter twice");
        }
    }
    match state.relay_tools.credentials().complete(&callback).await {
        Ok(authorized) => {
            // Heard by the session this instance holds that asked with it (a session on another
            // instance is not told; its client retries when the user says so).
            state.sessions_factory.router.elicitation_completed(authorized.backend.clone(), authorized.elicitation_id);
            page(
                StatusCode::OK,
                "Authorized",
                &format!(
                    "The relay now calls {} as you. You can close this page and call the tool again from your client.",
                    authorized.backend
                ),
            )
        }
        Err(error) => {
            let status = match error {
                CallbackError::Vault(_) => StatusCode::SERVICE_UNAVAILABLE,
                CallbackError::Redeem(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::BAD_REQUEST,
            };
            page(status, "Not authorized", &error.to_string())
        }
    }
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>relay: {title}</title><h1>{title}</h1><p>{}</p>\n",
        escape(message)
    );
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    (status, headers, body).into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
