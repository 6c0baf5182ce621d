//! RFC 8693 token exchange: the caller's own validated bearer token is sent to the configured
//! token endpoint as `subject_token`, and the access token that comes back (audience: the
//! backend) is what calls to the backend carry. The relay authenticates itself to the endpoint
//! with HTTP Basic (`client_id`, secret from the environment) when configured.

use std::time::Duration;

use super::wire::{ClientAuth, token_request};

/// The form's grant type and token types (RFC 8693 section 2.1, 3).
const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

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

impl Exchange<'_> {
    /// The request's form (RFC 8693 section 2.1).
    fn form<'a>(&'a self, subject_token: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut form = vec![
            ("grant_type", GRANT),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN),
            ("requested_token_type", ACCESS_TOKEN),
        ];
        for (name, value) in [("audience", self.audience), ("resource", self.resource), ("scope", self.scope)] {
            if let Some(value) = value {
                form.push((name, value));
            }
        }
        form
    }

    /// Exchanges `subject_token`; the error says why not (the server's `error`, its status, or
    /// what was wrong with its answer), never the tokens.
    pub async fn run(&self, client: &crate::upstream::HttpClient, subject_token: &str) -> Result<Issued, String> {
        // The relay authenticates with HTTP Basic when it has a client id (secret from env).
        let secret = self.client_secret_env.and_then(|name| std::env::var(name).ok()).unwrap_or_default();
        let auth = self.client_id.map(|client_id| ClientAuth { client_id, secret: Some(&secret) });
        let issued = token_request(client, self.token_endpoint, &self.form(subject_token), auth, "exchange")
            .await
            .map_err(String::from)?;
        if issued.issued_token_type.as_deref().is_some_and(|t| t != ACCESS_TOKEN) {
            return Err("the token endpoint issued something other than an access token".into());
        }
        Ok(Issued { access_token: issued.access_token, expires_in: issued.expires_in.map(Duration::from_secs) })
    }
}
