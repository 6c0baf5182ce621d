//! The HTTP the credential modes speak to authorization servers, in one place: a token
//! request (RFC 6749 section 3.2: a form, the client authenticated with HTTP Basic when it has
//! a secret) and its answer or error, and JSON documents fetched or posted (metadata, client
//! registration). Every answer is read up to a bound, within a deadline, and errors say what
//! went wrong without ever carrying a token.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use serde_json::Value;

use crate::mcp::clip;
use crate::upstream::HttpClient;

/// The most of an answer read.
const MAX_ANSWER: usize = 64 * 1024;
/// How long one request may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// What a token endpoint issued (no `Debug`: it holds tokens).
#[derive(Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub issued_token_type: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// A client's credentials at a token endpoint: HTTP Basic when it has a secret, otherwise its
/// id in the form (a public client, RFC 6749 section 2.3.1 and 3.2.1).
pub struct ClientAuth<'a> {
    pub client_id: &'a str,
    pub secret: Option<&'a str>,
}

/// Why a token request issued nothing: the endpoint refused it (an OAuth error answer, RFC 6749
/// section 5.2: the grant is spent), or could not be used now (unreachable, 5xx, an answer
/// that is not one: worth trying again later, and no reason to forget a grant).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<TokenError> for String {
    fn from(error: TokenError) -> Self {
        error.to_string()
    }
}

/// Posts the form of `pairs` to `endpoint` (`what` names the request in errors) and reads the
/// token issued.
pub async fn token_request(
    client: &HttpClient,
    endpoint: &str,
    pairs: &[(&str, &str)],
    auth: Option<ClientAuth<'_>>,
    what: &str,
) -> Result<TokenAnswer, TokenError> {
    // A public client names itself in the form; one with a secret authenticates with Basic.
    let public_id = match &auth {
        Some(ClientAuth { client_id, secret: None }) => Some(*client_id),
        _ => None,
    };
    let form = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.extend_pairs(pairs);
        if let Some(client_id) = public_id {
            form.append_pair("client_id", client_id);
        }
        form.finish()
    };
    let mut request = http::Request::post(endpoint)
        .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(http::header::ACCEPT, "application/json");
    if let Some(ClientAuth { client_id, secret: Some(secret) }) = auth {
        // RFC 6749 2.3.1: both parts form-encoded before the Basic encoding.
        let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", encode(client_id), encode(secret)));
        request = request.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
    }
    let request = request
        .body(Full::new(Bytes::from(form)))
        .map_err(|e| TokenError::Refused(format!("the token endpoint is not a usable URL: {e}")))?;
    let (status, body) = send(client, request, "the token endpoint").await.map_err(TokenError::Unavailable)?;
    if !status.is_success() {
        // A client error (RFC 6749 5.2: 400, 401 for the client's own authentication; anything
        // else a 4xx says) is the endpoint's answer; a server error, a timeout or "slow down"
        // is its trouble, which passes.
        let passing = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
        return Err(match serde_json::from_slice::<ErrorAnswer>(&body) {
            Ok(e) if !passing => TokenError::Refused(format!(
                "the token endpoint refused the {what}: {}{}",
                clip(&e.error),
                e.error_description.map(|d| format!(" ({})", clip(&d))).unwrap_or_default()
            )),
            _ if !passing => TokenError::Refused(format!("the token endpoint answered the {what} with HTTP {status}")),
            _ => TokenError::Unavailable(format!("the token endpoint answered the {what} with HTTP {status}")),
        });
    }
    let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
        TokenError::Unavailable(format!("the token endpoint's answer to the {what} is not a token response"))
    })?;
    if answer.access_token.is_empty() {
        return Err(TokenError::Unavailable("the token endpoint issued an empty token".into()));
    }
    Ok(answer)
}

/// GETs a JSON document; `None` when the server says it has none (404 and the like).
pub async fn get_json(client: &HttpClient, url: &str, what: &str) -> Result<Option<Value>, String> {
    let request = http::Request::get(url)
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("{what} is not at a usable URL ({}): {e}", clip(url)))?;
    let (status, body) = send(client, request, what).await?;
    if status.is_client_error() {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(format!("{what} at {} answered HTTP {status}", clip(url)));
    }
    serde_json::from_slice(&body).map(Some).map_err(|_| format!("{what} at {} is not JSON", clip(url)))
}

/// POSTs a JSON document and reads the JSON answer (client registration).
pub async fn post_json(client: &HttpClient, url: &str, document: &Value, what: &str) -> Result<Value, String> {
    let request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(document.to_string())))
        .map_err(|e| format!("{what} is not at a usable URL: {e}"))?;
    let (status, body) = send(client, request, what).await?;
    if !status.is_success() {
        let reason = serde_json::from_slice::<ErrorAnswer>(&body).map(|e| clip(&e.error).into_owned());
        return Err(format!("{what} answered HTTP {status}{}", reason.map(|r| format!(" ({r})")).unwrap_or_default()));
    }
    serde_json::from_slice(&body).map_err(|_| format!("{what}'s answer is not JSON"))
}

/// The `resource_metadata` URL a protected resource names in its 401 challenge (RFC 9728
/// section 5.1), asked by an unauthenticated `POST`; `None` when it names none.
pub async fn challenge_metadata(client: &HttpClient, resource: &str) -> Option<String> {
    let probe = r#"{"jsonrpc":"2.0","id":0,"method":"ping"}"#;
    let request = http::Request::post(resource)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream")
        .body(Full::new(Bytes::from_static(probe.as_bytes())))
        .ok()?;
    let response = tokio::time::timeout(DEADLINE, client.request(request)).await.ok()?.ok()?;
    let challenge = response.headers().get(http::header::WWW_AUTHENTICATE)?.to_str().ok()?;
    let (_, rest) = challenge.split_once("resource_metadata=\"")?;
    rest.split_once('"').map(|(url, _)| url.to_owned())
}

async fn send(
    client: &HttpClient,
    request: http::Request<Full<Bytes>>,
    what: &str,
) -> Result<(http::StatusCode, Bytes), String> {
    let response = tokio::time::timeout(DEADLINE, client.request(request))
        .await
        .map_err(|_| format!("{what} did not answer within {} s", DEADLINE.as_secs()))?
        .map_err(|e| format!("{what} cannot be reached: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|_| format!("{what}'s answer is too large or broken"))?
        .to_bytes();
    Ok((status, body))
}
