//! `sts-credentials`: a `credentials` plugin that asks a company security token service (STS)
//! for each caller's token to a backend: one JSON POST per caller and backend (the relay keeps
//! the token until shortly before its `expires_in`). The template for a custom exchange: the
//! contract is in `sts.rs`, the transport (`wasi:http`, the plugin's `grants.http`) here.

mod sts;

use relay::plugin::{config, log};

wit_bindgen::generate!({ path: "../../wit", world: "credentials" });

use exports::relay::plugin::credential_source::{CredentialError, CredentialRequest, Guest, IssuedCredential};

struct StsCredentials;

impl Guest for StsCredentials {
    fn issue(request: CredentialRequest) -> Result<IssuedCredential, CredentialError> {
        let settings = sts::Settings::parse(&config::get_json()).map_err(|problem| {
            log::log(log::Level::Error, &problem);
            CredentialError::Failed(problem)
        })?;
        let key = match settings.api_key_env.as_deref() {
            Some(variable) => Some(std::env::var(variable).map_err(|_| {
                CredentialError::Failed(format!("{variable} is not set (or not in the plugin's grants.env)"))
            })?),
            None => None,
        };
        let subject = sts::Subject {
            principal: &request.principal.id,
            roles: &request.principal.roles,
            backend: &request.backend,
            backend_url: &request.backend_url,
            subject_token: request.subject_token.as_deref(),
        };
        let body = sts::request_body(&settings, &subject);
        let (status, answer) = post(&settings.url, key.as_deref(), body).map_err(CredentialError::Failed)?;
        match sts::read_answer(&settings, status, &answer) {
            sts::Outcome::Issued { token, expires_in_ms } => Ok(IssuedCredential { secret: token, expires_in_ms }),
            sts::Outcome::Refused(reason) => Err(CredentialError::Refused(reason)),
            sts::Outcome::Failed(reason) => Err(CredentialError::Failed(reason)),
        }
    }
}

/// POSTs `body` as JSON; the answer's status and text.
#[cfg(target_arch = "wasm32")]
fn post(url: &str, key: Option<&str>, body: String) -> Result<(u16, String), String> {
    use wstd::http::{Body, Client, Request};
    wstd::runtime::block_on(async move {
        let mut request = Request::post(url).header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let request = request.body(Body::from(body)).map_err(|e| format!("building the request: {e}"))?;
        let response = Client::new().send(request).await.map_err(|e| format!("the STS cannot be reached: {e}"))?;
        let status = response.status().as_u16();
        let mut answer = response.into_body();
        let text = answer.str_contents().await.map_err(|e| format!("reading the STS's answer: {e}"))?;
        Ok((status, text.to_owned()))
    })
}

/// Off wasm there is no `wasi:http` (only the native unit tests get here).
#[cfg(not(target_arch = "wasm32"))]
fn post(_url: &str, _key: Option<&str>, _body: String) -> Result<(u16, String), String> {
    Err("the STS is reached from the wasm32-wasip2 build only".into())
}

export!(StsCredentials);
