//! The `relay_auth_*` tools: a principal stores its own credential for a backend whose
//! `credentials:` mode is per user, sees which backends it has one for (never the value), and
//! revokes it; an admin may revoke another principal's. The secret travels as a tool argument
//! to the relay alone: built-in tools are never intercepted, and arguments are never logged.

use serde_json::{Value, json};

use super::{AdminError, BuiltinTool, RelayTools};
use crate::access::Principal;
use crate::config::CredentialMode;
use crate::credentials::CredentialError;

impl RelayTools {
    /// `relay_auth_set_secret {backend, secret}`.
    pub(super) async fn auth_set_secret(&self, arguments: &Value, caller: &Principal) -> Result<Value, AdminError> {
        if !self.plugins.has_auth() {
            // Every client is the same principal then: a credential stored here would be everyone's.
            return Err(AdminError::BadArguments(
                "the relay has no auth plugin, so every client is the same principal: a credential stored now would be used for everyone; configure an auth plugin first".into(),
            ));
        }
        let upstream = self.per_user_backend(arguments)?;
        let backend = upstream.name();
        // Tokens the relay obtains itself (exchanged, or an OAuth grant with the endpoints to
        // refresh it at) are never written by a caller: a forged grant could send the relay
        // anywhere.
        let mode = &upstream.backend.credentials;
        if !matches!(mode, CredentialMode::PerUserSecret { .. }) {
            return Err(AdminError::BadArguments(format!(
                "backend {backend} obtains your token itself ({}); there is no secret to store",
                mode.name()
            )));
        }
        let secret = arguments.get("secret").and_then(Value::as_str).filter(|s| !s.is_empty());
        let secret =
            secret.ok_or_else(|| AdminError::BadArguments("secret (a non-empty string) is required".into()))?;
        if secret.len() > 8192 || secret.chars().any(char::is_control) {
            return Err(AdminError::BadArguments("secret must be at most 8 KiB, without control characters".into()));
        }
        let vault = &self.credentials.vault;
        let slot = mode.slot(backend);
        vault.put(&caller.id, &slot, secret).await.map_err(|e| AdminError::BadArguments(e.to_string()))?;
        tracing::info!(principal = %caller.id, backend, "credential stored");
        Ok(json!({"backend": backend, "stored": true}))
    }

    /// `relay_auth_status {principal?}`: for each per-user backend, whether the caller (or, for
    /// an admin, the principal named) has a credential.
    pub(super) async fn auth_status(&self, arguments: &Value, caller: &Principal) -> Result<Value, AdminError> {
        let whose = whose(arguments, caller, "listing")?;
        let mut backends = Vec::new();
        for upstream in self.per_user_backends() {
            let name = upstream.name();
            let stored = self.credentials.vault.get(&whose, &upstream.backend.credentials.slot(name)).await;
            let mut entry = match stored {
                Ok(found) => {
                    json!({"backend": name, "mode": upstream.backend.credentials.name(), "authorized": found.is_some()})
                }
                Err(e) => {
                    json!({"backend": name, "mode": upstream.backend.credentials.name(), "authorized": false, "error": e.to_string()})
                }
            };
            // Where to authorize an `oauth` backend not authorized yet (the way in for a
            // backend whose tools are not listed until someone does). Only for the caller's own:
            // a link asked for someone else would bind whoever follows it to that principal.
            if entry["authorized"] == false
                && whose == caller.id
                && matches!(upstream.backend.credentials, CredentialMode::Oauth { .. })
            {
                match self.credentials.header_for(&upstream.backend, caller, None).await {
                    Err(CredentialError::AuthorizationRequired { url, .. }) => entry["authorize_url"] = json!(url),
                    Err(error) => entry["error"] = json!(error.to_string()),
                    Ok(_) => entry["authorized"] = json!(true),
                }
            }
            backends.push(entry);
        }
        Ok(json!({"principal": whose, "backends": backends}))
    }

    /// `relay_auth_revoke {backend?, principal?}`: the caller's own credential for `backend` (or
    /// for every per-user backend); another principal's needs the admin role.
    pub(super) async fn auth_revoke(&self, arguments: &Value, caller: &Principal) -> Result<Value, AdminError> {
        let whose = whose(arguments, caller, "revoking")?;
        let backends = match arguments.get("backend") {
            Some(_) => vec![self.per_user_backend(arguments)?],
            None => self.per_user_backends(),
        };
        let mut revoked = Vec::new();
        for upstream in backends {
            let slot = upstream.backend.credentials.slot(upstream.name());
            if matches!(upstream.backend.credentials, CredentialMode::Oauth { .. }) {
                // A grant kept before grants had their own place goes too.
                let legacy = self.credentials.vault.delete(&whose, upstream.name()).await;
                legacy.map_err(|e| AdminError::BadArguments(e.to_string()))?;
            }
            if self
                .credentials
                .vault
                .delete(&whose, &slot)
                .await
                .map_err(|e| AdminError::BadArguments(e.to_string()))?
            {
                revoked.push(upstream.name().to_owned());
            }
        }
        tracing::info!(principal = %whose, by = %caller.id, revoked = ?revoked, "credentials revoked");
        Ok(json!({"principal": whose, "revoked": revoked}))
    }

    /// The running backends called with each caller's own credential.
    fn per_user_backends(&self) -> Vec<std::sync::Arc<crate::upstream::Upstream>> {
        self.upstreams.list().into_iter().filter(|u| u.backend.credentials.is_per_user()).collect()
    }

    /// The `backend` argument, naming a running backend whose mode is per user.
    fn per_user_backend(&self, arguments: &Value) -> Result<std::sync::Arc<crate::upstream::Upstream>, AdminError> {
        let name = arguments.get("backend").and_then(Value::as_str);
        let name = name.ok_or_else(|| AdminError::BadArguments("backend (a backend name) is required".into()))?;
        let upstream = self.upstreams.get(name).ok_or_else(|| AdminError::NoSuchBackend(name.to_owned()))?;
        if !upstream.backend.credentials.is_per_user() {
            return Err(AdminError::BadArguments(format!(
                "backend {name} is called with the relay's own credentials; there is nothing of yours to store"
            )));
        }
        Ok(upstream)
    }
}

/// The principal `arguments` name (the caller's own by default); another's needs the admin role
/// (`doing` says what for, in the refusal).
fn whose(arguments: &Value, caller: &Principal, doing: &str) -> Result<String, AdminError> {
    match arguments.get("principal").and_then(Value::as_str) {
        Some(other) if other != caller.id && !caller.has_role(Principal::ADMIN) => {
            Err(AdminError::BadArguments(format!("{doing} another principal's credentials needs the admin role")))
        }
        Some(other) => Ok(other.to_owned()),
        None => Ok(caller.id.clone()),
    }
}

/// The three tools' definitions (none needs the admin role; revoking another principal's does).
pub(super) fn definitions() -> Vec<BuiltinTool> {
    let backend = json!({"type": "string", "description": "Backend name"});
    vec![
        BuiltinTool {
            admin: false,
            definition: json!({
                "name": "relay_auth_set_secret",
                "description": "Store your own credential (e.g. an API key) for a backend that is called with each user's own credential. Sealed at rest; never shown again.",
                "inputSchema": {"type": "object", "properties": {"backend": backend, "secret": {"type": "string"}}, "required": ["backend", "secret"], "additionalProperties": false},
            }),
        },
        BuiltinTool {
            admin: false,
            definition: json!({
                "name": "relay_auth_status",
                "description": "Which backends called with each user's own credential you have authorized (never the credentials themselves). An admin may name another principal.",
                "inputSchema": {"type": "object", "properties": {"principal": {"type": "string"}}, "additionalProperties": false},
            }),
        },
        BuiltinTool {
            admin: false,
            definition: json!({
                "name": "relay_auth_revoke",
                "description": "Remove your stored credential for a backend (or for all). An admin may name another principal.",
                "inputSchema": {"type": "object", "properties": {"backend": backend, "principal": {"type": "string"}}, "additionalProperties": false},
            }),
        },
    ]
}
