//! The `credentials` world's hook: the credential a caller's call to a backend carries, for
//! the backends whose `credentials` are `{mode: plugin, plugin: <name>}`. The host's
//! credential step (`credentials`) keeps what it issues and decides when to ask again; this
//! module only asks the plugin and checks its answer.

use super::bindings::credentials::exports::relay::plugin::credential_source::{
    CredentialError, CredentialRequest, IssuedCredential,
};
use super::bindings::types;
use super::loaded::Bound;
use super::registry::Plugins;
use super::sandbox::PluginError;
use crate::access::Principal;
use crate::config::World;

/// Longest sentence a refusal may put before the client.
const MAX_REFUSAL: usize = 512;
/// Longest secret a plugin may issue (a large JWT fits; a header of megabytes does not).
const MAX_SECRET: usize = 16 * 1024;

/// One caller's call to one backend, as the plugin is told it.
pub struct CredentialAsk<'a> {
    /// The caller.
    pub principal: &'a Principal,
    /// The backend's name.
    pub backend: &'a str,
    /// The backend's URL.
    pub resource: &'a str,
    /// The caller's own bearer token, as the `auth` plugin verified it.
    pub subject_token: Option<&'a str>,
}

/// What the plugin issued.
pub struct Issued {
    /// Goes into the backend's `credentials.format`.
    pub secret: String,
    /// How long it stays valid from now; `None`: not to be kept.
    pub expires_in: Option<std::time::Duration>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// Why the plugin issued nothing.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The plugin refused the caller; the sentence is for the client.
    #[error("{0}")]
    Refused(String),
    /// The plugin's source failed (logged by the host, not shown in full to the client).
    #[error("{0}")]
    Failed(String),
    /// The plugin itself failed (trap, deadline, not loaded).
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// Why `secret` cannot be sent (checked before the host keeps it: a bad one would fail every
/// call until it expired).
fn unusable(secret: &str) -> Option<&'static str> {
    if secret.is_empty() {
        Some("issued an empty secret")
    } else if secret.len() > MAX_SECRET {
        Some("issued a secret over 16 KiB")
    } else if http::HeaderValue::from_str(secret).is_err() {
        Some("issued a secret that cannot be a header value")
    } else {
        None
    }
}

impl Plugins {
    /// Asks the `credentials` plugin `name` for the credential `ask`'s call carries.
    pub async fn issue_credential(&self, name: &str, ask: CredentialAsk<'_>) -> Result<Issued, IssueError> {
        let slot =
            self.slots.iter().find(|s| s.config.name == name && s.config.world == World::Credentials).ok_or_else(
                || PluginError::Load {
                    plugin: name.to_owned(),
                    message: "no credentials plugin of that name is configured".into(),
                },
            )?;
        let request = CredentialRequest {
            principal: types::Principal { id: ask.principal.id.clone(), roles: ask.principal.roles.clone() },
            backend: ask.backend.to_owned(),
            backend_url: ask.resource.to_owned(),
            subject_token: ask.subject_token.map(str::to_owned),
        };
        let answer = slot
            .invoke(&self.engine, None, async |bound, store| {
                let Bound::Credentials(source) = bound else { unreachable!("credentials slot") };
                source.relay_plugin_credential_source().call_issue(store, &request).await
            })
            .await?;
        slot.settled(matches!(answer, Err(CredentialError::Refused(_))));
        match answer {
            Ok(IssuedCredential { secret, expires_in_ms }) => match unusable(&secret) {
                None => Ok(Issued { secret, expires_in: expires_in_ms.map(std::time::Duration::from_millis) }),
                Some(problem) => {
                    Err(IssueError::Plugin(PluginError::BadAnswer { plugin: name.to_owned(), message: problem.into() }))
                }
            },
            Err(CredentialError::Refused(reason)) => {
                Err(IssueError::Refused(crate::mcp::clip_to(&reason, MAX_REFUSAL).into_owned()))
            }
            Err(CredentialError::Failed(reason)) => {
                Err(IssueError::Failed(crate::mcp::clip_to(&reason, MAX_REFUSAL).into_owned()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_issued_secret_must_fit_in_a_header() {
        assert_eq!(super::unusable("eyJ.abc-_~+/="), None);
        assert!(super::unusable("").is_some());
        assert!(super::unusable("tok\r\nx-admin: yes").is_some(), "no header smuggling");
        assert!(super::unusable(&"a".repeat(super::MAX_SECRET + 1)).is_some());
    }
}
