//! The relay as an OAuth 2.1 protected resource (the MCP authorization spec): its Protected
//! Resource Metadata (RFC 9728) at `/.well-known/oauth-protected-resource[/mcp]`, and the
//! `WWW-Authenticate` challenges that point clients at it ([`super::gate`] adds them to every
//! bearer challenge, and keeps tokens out of query strings).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::config::OAuthConfig;

/// The metadata document and the challenge parameters derived from `oauth` in relay.yaml.
#[derive(Debug)]
pub struct ProtectedResource {
    metadata: Value,
    /// Where the metadata is served, for `resource_metadata="…"`.
    metadata_url: String,
    /// `scope="…"` in challenges (the supported scopes, space-separated), when configured.
    scope: Option<String>,
}

impl ProtectedResource {
    /// From the configured resource URL, authorization servers and scopes.
    pub fn new(config: &OAuthConfig) -> Self {
        let metadata = json!({
            "resource": config.resource,
            "authorization_servers": config.authorization_servers,
            "scopes_supported": config.scopes_supported,
            "bearer_methods_supported": ["header"],
        });
        let scope = (!config.scopes_supported.is_empty()).then(|| config.scopes_supported.join(" "));
        Self {
            metadata,
            metadata_url: crate::oauth_url::well_known(&config.resource, "oauth-protected-resource"),
            scope,
        }
    }

    /// The `WWW-Authenticate` value for a refusal whose own challenge is `base` (`Bearer` or
    /// `Bearer error="insufficient_scope"`).
    pub(super) fn challenge(&self, base: &str) -> String {
        let mut value = base.to_owned();
        let mut add = |param: String| {
            value.push_str(if value.contains(' ') { ", " } else { " " });
            value.push_str(&param);
        };
        if let Some(scope) = &self.scope {
            add(format!("scope=\"{scope}\""));
        }
        add(format!("resource_metadata=\"{}\"", self.metadata_url));
        value
    }
}

/// `GET /.well-known/oauth-protected-resource[/mcp]`: the metadata, or 404 when `oauth` is not
/// configured.
pub async fn metadata(State(resource): State<Option<Arc<ProtectedResource>>>) -> Response {
    match resource {
        Some(resource) => axum::Json(resource.metadata.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no OAuth protected resource metadata configured").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_carry_scope_and_metadata() {
        let config = OAuthConfig {
            resource: "https://r.test/mcp".into(),
            authorization_servers: vec!["https://as.test".into()],
            scopes_supported: vec!["mcp".into(), "admin".into()],
        };
        let resource = ProtectedResource::new(&config);
        assert_eq!(
            resource.challenge("Bearer"),
            r#"Bearer scope="mcp admin", resource_metadata="https://r.test/.well-known/oauth-protected-resource/mcp""#
        );
        assert_eq!(
            resource.challenge(r#"Bearer error="insufficient_scope""#),
            r#"Bearer error="insufficient_scope", scope="mcp admin", resource_metadata="https://r.test/.well-known/oauth-protected-resource/mcp""#
        );
    }
}
