//! RFC 8693 token exchange: the caller's own validated bearer token is sent to the configured
//! token endpoint as `subject_token`, and the access token that comes back (audience: the
//! backend) is what calls to the backend carry. The relay authenticates itself to the endpoint
//! with HTTP Basic (`client_id`, secret from the environment) when configured.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;

/// The form's grant type and token types (RFC 8693 section 2.1, 3).
const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The most of a token response read.
const MAX_RESPONSE: usize = 64 * 1024;
/// How long an exchange may take.
const DEADLINE: Duration = Duration::from_secs(10);

/// What the exchange is for (the backend's `credentials:`).
pub struct Exchange<'a> {
    pub token_endpoint: &'a str,
    pub audience: Option<&'a str>,
    pub resource: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub client_secret_env: Option<&'a str>,
}

/// A token the endpoint issued, and for how long it holds.
pub struct Issued {
    pub access_token: String,
    pub expires_in: Option<Duration>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    issued_token_type: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl Exchange<'_> {
    /// The request's form (RFC 8693 section 2.1).
    fn form(&self, subject_token: &str) -> String {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", GRANT);
        form.append_pair("subject_token", subject_token);
        form.append_pair("subject_token_type", ACCESS_TOKEN);
        form.append_pair("requested_token_type", ACCESS_TOKEN);
        for (name, value) in [("audience", self.audience), ("resource", self.resource), ("scope", self.scope)] {
            if let Some(value) = value {
                form.append_pair(name, value);
            }
        }
        form.finish()
    }

    /// Exchanges `subject_token`; the error says why not (the server's `error`, its status, or
    /// what was wrong with its answer), never the tokens.
    pub async fn run(&self, client: &crate::upstream::HttpClient, subject_token: &str) -> Result<Issued, String> {
        let form = self.form(subject_token);
        let mut request = http::Request::post(self.token_endpoint)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json");
        if let Some(client_id) = self.client_id {
            let secret = self.client_secret_env.and_then(|name| std::env::var(name).ok()).unwrap_or_default();
            // RFC 6749 2.3.1: both parts form-encoded before the Basic encoding.
            let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", encode(client_id), encode(&secret)));
            request = request.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let request = request
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| format!("token_endpoint is not a usable URL: {e}"))?;
        let response = tokio::time::timeout(DEADLINE, client.request(request))
            .await
            .map_err(|_| format!("the token endpoint did not answer within {} s", DEADLINE.as_secs()))?
            .map_err(|e| format!("the token endpoint cannot be reached: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|_| "the token endpoint's answer is too large or broken".to_owned())?
            .to_bytes();
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorResponse>(&body) {
                Ok(e) => format!(
                    "the token endpoint refused the exchange: {}{}",
                    crate::mcp::clip(&e.error),
                    e.error_description.map(|d| format!(" ({})", crate::mcp::clip(&d))).unwrap_or_default()
                ),
                Err(_) => format!("the token endpoint answered HTTP {status}"),
            });
        }
        let issued: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| "the token endpoint's answer is not a token response".to_owned())?;
        if issued.issued_token_type.as_deref().is_some_and(|t| t != ACCESS_TOKEN) {
            return Err("the token endpoint issued something other than an access token".into());
        }
        if issued.access_token.is_empty() {
            return Err("the token endpoint issued an empty token".into());
        }
        Ok(Issued { access_token: issued.access_token, expires_in: issued.expires_in.map(Duration::from_secs) })
    }
}
