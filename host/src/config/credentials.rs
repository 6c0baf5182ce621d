//! How the relay authenticates to a backend (`credentials:` of a backends.yaml entry): as itself
//! with the entry's static `headers` (the default), or, per call, as the calling principal with
//! a credential of that principal's own: `per_user_secret` (a secret each principal stores once
//! with `relay_auth_set_secret`, sent in the header the entry names) or `token_exchange` (RFC
//! 8693: the principal's own validated bearer token exchanged at `token_endpoint` for one whose
//! audience is the backend) or `oauth` (the relay as each principal's OAuth 2.1 client of the
//! backend's authorization server: the user authorizes once in a browser) or `plugin` (a
//! `credentials` Wasm plugin issues it: a custom exchange without a new relay build).

use serde::{Deserialize, Serialize};

use crate::oauth_url::secure_or_loopback;

/// A backend's credential mode.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialMode {
    /// The entry's `headers` (or `env`), one identity for every caller.
    #[default]
    Static,
    /// Each principal's own secret, in `header`, written as `format` with `{secret}` in it.
    PerUserSecret {
        /// The header that carries it.
        #[serde(default = "authorization")]
        header: String,
        /// Its value, `{secret}` replaced by the principal's secret.
        #[serde(default = "bearer")]
        format: String,
    },
    /// The caller's bearer token, exchanged (RFC 8693) for one meant for this backend; sent as
    /// `Authorization: Bearer <token>`, cached per principal until it expires.
    TokenExchange {
        /// The authorization server's token endpoint (`https://`, or `http://` on loopback).
        token_endpoint: String,
        /// `audience` of the exchange (the backend's identifier at the server), if any.
        #[serde(default)]
        audience: Option<String>,
        /// `resource` of the exchange (RFC 8707), if any.
        #[serde(default)]
        resource: Option<String>,
        /// `scope` asked for, if any.
        #[serde(default)]
        scope: Option<String>,
        /// The relay's client id at the server (HTTP Basic with the secret below), if it has one.
        #[serde(default)]
        client_id: Option<String>,
        /// The environment variable holding the client secret.
        #[serde(default)]
        client_secret_env: Option<String>,
    },
    /// The relay as each principal's OAuth 2.1 client of the backend's authorization server
    /// (found from the backend's RFC 9728 metadata): authorization code with PKCE S256 and the
    /// `resource` parameter, tokens refreshed before they expire. The entry's `headers` (a
    /// service credential) are what the relay lists the backend's tools with.
    Oauth {
        /// Where the authorization server sends the user back: this relay's
        /// `/oauth/callback`, as users' browsers reach it.
        redirect_uri: String,
        /// The relay's client id at the server; without it the relay registers itself (RFC 7591).
        #[serde(default)]
        client_id: Option<String>,
        /// The environment variable holding that client's secret (none: a public client).
        #[serde(default)]
        client_secret_env: Option<String>,
        /// `scope` asked for, if any.
        #[serde(default)]
        scope: Option<String>,
        /// The authorization server's issuer, when the backend's metadata does not name one.
        #[serde(default)]
        authorization_server: Option<String>,
        /// Whose identity the relay lists the backend's tools with: the entry's `headers` (a
        /// service credential, the default) or the first user who authorizes it.
        #[serde(default)]
        catalog: CatalogSource,
    },
    /// The `credentials` plugin named `plugin` issues each principal's secret (a company STS, a
    /// secrets service), sent in `header` as `format` with `{secret}` in it; kept per principal
    /// until the expiry the plugin gives.
    Plugin {
        /// The plugin (`world: credentials` in relay.yaml).
        plugin: String,
        /// The header that carries it.
        #[serde(default = "authorization")]
        header: String,
        /// Its value, `{secret}` replaced by what the plugin issued.
        #[serde(default = "bearer")]
        format: String,
    },
}

/// Where an `oauth` backend's catalog comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogSource {
    /// The entry's `headers`.
    #[default]
    Service,
    /// The first principal who authorized the backend (every user then sees its tool list).
    FirstUser,
}

impl CatalogSource {
    /// Whether the first authorized user's token lists the catalog.
    pub fn is_first_user(self) -> bool {
        self == CatalogSource::FirstUser
    }
}

fn authorization() -> String {
    "authorization".into()
}

fn bearer() -> String {
    "Bearer {secret}".into()
}

impl CredentialMode {
    /// Whether calls carry the calling principal's own credential.
    pub fn is_per_user(&self) -> bool {
        !matches!(self, CredentialMode::Static)
    }

    /// The mode's name, as status output says it.
    pub fn name(&self) -> &'static str {
        match self {
            CredentialMode::Static => "static",
            CredentialMode::PerUserSecret { .. } => "per_user_secret",
            CredentialMode::TokenExchange { .. } => "token_exchange",
            CredentialMode::Oauth { .. } => "oauth",
            CredentialMode::Plugin { .. } => "plugin",
        }
    }

    /// The environment variable whose value the relay sends as its client secret (to a token
    /// or authorization server the entry names), if any.
    pub fn secret_env(&self) -> Option<&str> {
        match self {
            CredentialMode::TokenExchange { client_secret_env, .. }
            | CredentialMode::Oauth { client_secret_env, .. } => client_secret_env.as_deref(),
            _ => None,
        }
    }

    /// Checks the mode for `backend`, whose transport is `transport` (a per-user credential
    /// needs a request per call to carry it: Streamable HTTP only).
    pub fn validate(&self, backend: &str, transport: &str) -> Result<(), String> {
        if !self.is_per_user() {
            return Ok(());
        }
        if transport != "http" {
            return Err(format!(
                "backend {backend}: credentials mode {} needs an http(s):// backend (one connection of a {transport} backend is shared by every caller)",
                self.name()
            ));
        }
        let (header, format) = match self {
            CredentialMode::Oauth { redirect_uri, client_id, client_secret_env, authorization_server, .. } => {
                if !secure_or_loopback(redirect_uri) || !redirect_uri.ends_with("/oauth/callback") {
                    return Err(format!(
                        "backend {backend}: credentials.redirect_uri must be this relay's /oauth/callback, https:// (http:// only on loopback)"
                    ));
                }
                if authorization_server.as_deref().is_some_and(|issuer| !secure_or_loopback(issuer)) {
                    return Err(format!(
                        "backend {backend}: credentials.authorization_server must be https:// (http:// only on loopback)"
                    ));
                }
                if client_secret_env.is_some() && client_id.is_none() {
                    return Err(format!("backend {backend}: credentials.client_secret_env needs client_id"));
                }
                return Ok(());
            }
            CredentialMode::TokenExchange { token_endpoint, client_id, client_secret_env, .. } => {
                if !secure_or_loopback(token_endpoint) {
                    return Err(format!(
                        "backend {backend}: credentials.token_endpoint must be https:// (http:// only on loopback): callers' tokens travel there"
                    ));
                }
                if client_secret_env.is_some() && client_id.is_none() {
                    return Err(format!("backend {backend}: credentials.client_secret_env needs client_id"));
                }
                return Ok(());
            }
            CredentialMode::PerUserSecret { header, format } => (header, format),
            CredentialMode::Plugin { plugin, header, format } => {
                if plugin.is_empty() {
                    return Err(format!("backend {backend}: credentials.plugin names no plugin"));
                }
                (header, format)
            }
            CredentialMode::Static => return Ok(()),
        };
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(format!("backend {backend}: credentials.header {header:?} is not a header name"));
        }
        if !format.contains("{secret}") {
            return Err(format!("backend {backend}: credentials.format must contain {{secret}}"));
        }
        Ok(())
    }

    /// Where the kv keeps a principal's credential for `backend` under this mode: the backend's
    /// name for the secret a principal stored, and with the mode (and plugin) appended for what
    /// the relay obtained (an `oauth` grant, an exchanged token, a plugin's secret), so that a
    /// mode changed in backends.yaml never serves what another mode kept: a grant (with its
    /// refresh token) is never sent as a secret, and a secret stored as a forged grant never
    /// sends the relay to refresh it.
    pub fn slot<'a>(&self, backend: &'a str) -> std::borrow::Cow<'a, str> {
        match self {
            CredentialMode::Oauth { .. } => Self::oauth_slot(backend).into(),
            CredentialMode::TokenExchange { .. } => format!("{backend}#token_exchange").into(),
            CredentialMode::Plugin { plugin, .. } => format!("{backend}#plugin:{plugin}").into(),
            _ => backend.into(),
        }
    }

    /// Where an `oauth` backend's grants are kept ([`Self::slot`]).
    pub fn oauth_slot(backend: &str) -> String {
        format!("{backend}#oauth")
    }

    /// The header a call carries for `secret` (`None`: not a header value).
    pub fn header_for(&self, secret: &str) -> Option<(http::HeaderName, http::HeaderValue)> {
        let (name, value) = match self {
            CredentialMode::PerUserSecret { header, format } | CredentialMode::Plugin { header, format, .. } => {
                (http::HeaderName::from_bytes(header.as_bytes()).ok()?, format.replace("{secret}", secret))
            }
            CredentialMode::TokenExchange { .. } | CredentialMode::Oauth { .. } => {
                (http::header::AUTHORIZATION, format!("Bearer {secret}"))
            }
            CredentialMode::Static => return None,
        };
        let mut value = http::HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        Some((name, value))
    }
}

/// Each backend of `backends` with a per-user mode on a relay whose `plugins` hold no auth
/// plugin, said: every client is then the one principal `anonymous`, so the first user's grant
/// (or exchanged or plugin-issued token) is every client's, and any client may revoke it.
/// Legal (a relay one person uses on loopback), warned about by check-config and serve.
pub fn shared_per_user_backends(backends: &[super::Backend], plugins: &[super::PluginConfig]) -> Vec<String> {
    if plugins.iter().any(|p| p.world == super::World::Auth) {
        return Vec::new();
    }
    backends
        .iter()
        .filter(|backend| !matches!(backend.credentials, CredentialMode::Static))
        .map(|backend| {
            format!(
                "backend {}: credentials mode {} gives each caller their own credential, and relay.yaml has no auth plugin: every client is the one principal anonymous, and shares (and may revoke) what the first one stores or authorizes",
                backend.name,
                backend.credentials.name()
            )
        })
        .collect()
}

/// Why each backend of `backends` whose `plugin` mode names no `credentials` plugin of
/// `plugins` cannot be called (its calls would fail).
pub fn unknown_credential_plugins(backends: &[super::Backend], plugins: &[super::PluginConfig]) -> Vec<String> {
    backends
        .iter()
        .filter_map(|backend| match &backend.credentials {
            CredentialMode::Plugin { plugin, .. }
                if !plugins.iter().any(|p| p.name == *plugin && p.world == super::World::Credentials) =>
            {
                Some(format!(
                    "backend {}: credentials.plugin {plugin:?} is not a plugin of world credentials in relay.yaml",
                    backend.name
                ))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_secrets_need_http_a_header_name_and_a_place_for_the_secret() {
        let mode: CredentialMode =
            serde_yaml::from_str("{mode: per_user_secret, header: X-Api-Key, format: '{secret}'}").unwrap();
        assert!(mode.validate("b", "http").is_ok());
        assert!(mode.validate("b", "stdio").unwrap_err().contains("needs an http(s)://"));
        let (name, value) = mode.header_for("s3").unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-api-key", "s3"));
        assert!(value.is_sensitive());
        let default: CredentialMode = serde_yaml::from_str("{mode: per_user_secret}").unwrap();
        assert_eq!(default.header_for("t").unwrap().1, "Bearer t");
        let bad: CredentialMode = serde_yaml::from_str("{mode: per_user_secret, format: 'Bearer'}").unwrap();
        assert!(bad.validate("b", "http").is_err());
        assert!(serde_yaml::from_str::<CredentialMode>("{mode: per_user_secret, extra: 1}").is_err());
        assert!(serde_yaml::from_str::<CredentialMode>("{mode: telepathy}").is_err());
        assert!(default.header_for("line\nbreak").is_none(), "a secret cannot smuggle a header");
    }

    #[test]
    fn what_the_relay_derived_is_kept_apart_per_mode_and_plugin() {
        let parse = |yaml: &str| serde_yaml::from_str::<CredentialMode>(yaml).unwrap();
        assert_eq!(parse("{mode: per_user_secret}").slot("b"), "b");
        assert_eq!(parse("{mode: oauth, redirect_uri: 'https://r/oauth/callback'}").slot("b"), "b#oauth");
        assert_eq!(parse("{mode: token_exchange, token_endpoint: 'https://as/t'}").slot("b"), "b#token_exchange");
        assert_eq!(parse("{mode: plugin, plugin: sts}").slot("b"), "b#plugin:sts");
        assert_ne!(parse("{mode: plugin, plugin: sts}").slot("b"), parse("{mode: plugin, plugin: other}").slot("b"));
    }

    #[test]
    fn a_plugin_mode_names_its_plugin_and_a_header_like_a_stored_secret() {
        let parse = |yaml: &str| serde_yaml::from_str::<CredentialMode>(yaml).unwrap();
        let mode = parse("{mode: plugin, plugin: sts}");
        assert!(mode.validate("b", "http").is_ok());
        assert_eq!(mode.header_for("t").unwrap().1, "Bearer t");
        assert!(mode.validate("b", "ws").unwrap_err().contains("needs an http(s)://"));
        let keyed = parse("{mode: plugin, plugin: sts, header: X-Key, format: 'k={secret}'}");
        assert_eq!(keyed.header_for("s").unwrap().1, "k=s");
        assert!(parse("{mode: plugin, plugin: ''}").validate("b", "http").is_err());
        assert!(parse("{mode: plugin, plugin: sts, format: x}").validate("b", "http").is_err());
        assert!(serde_yaml::from_str::<CredentialMode>("{mode: plugin}").is_err(), "the plugin must be named");
    }

    #[test]
    fn a_token_endpoint_is_https_or_loopback_and_a_client_secret_needs_a_client() {
        let parse = |yaml: &str| serde_yaml::from_str::<CredentialMode>(yaml).unwrap().validate("b", "http");
        assert!(parse("{mode: token_exchange, token_endpoint: 'https://as.example/token'}").is_ok());
        assert!(parse("{mode: token_exchange, token_endpoint: 'http://127.0.0.1:9/token'}").is_ok());
        assert!(
            parse("{mode: token_exchange, token_endpoint: 'http://as.example/token'}")
                .unwrap_err()
                .contains("https://")
        );
        let secret_alone = "{mode: token_exchange, token_endpoint: 'https://as/t', client_secret_env: S}";
        assert!(parse(secret_alone).unwrap_err().contains("needs client_id"));
        let mode: CredentialMode =
            serde_yaml::from_str("{mode: token_exchange, token_endpoint: 'https://as/t'}").unwrap();
        assert_eq!(mode.header_for("tok").unwrap().1, "Bearer tok");
    }

    #[test]
    fn an_oauth_redirect_is_the_relays_callback_over_https_or_loopback() {
        let parse = |yaml: &str| serde_yaml::from_str::<CredentialMode>(yaml).unwrap().validate("b", "http");
        assert!(parse("{mode: oauth, redirect_uri: 'https://relay.example/oauth/callback'}").is_ok());
        assert!(parse("{mode: oauth, redirect_uri: 'http://127.0.0.1:8000/oauth/callback'}").is_ok());
        assert!(parse("{mode: oauth, redirect_uri: 'http://relay.example/oauth/callback'}").is_err());
        assert!(parse("{mode: oauth, redirect_uri: 'https://relay.example/elsewhere'}").is_err());
        let secret_alone = "{mode: oauth, redirect_uri: 'https://r/oauth/callback', client_secret_env: S}";
        assert!(parse(secret_alone).unwrap_err().contains("needs client_id"));
        let issuer = "{mode: oauth, redirect_uri: 'https://r/oauth/callback', authorization_server: 'http://as'}";
        assert!(parse(issuer).is_err());
        let mode: CredentialMode =
            serde_yaml::from_str("{mode: oauth, redirect_uri: 'https://r/oauth/callback'}").unwrap();
        assert!(mode.validate("b", "ws").unwrap_err().contains("needs an http(s)://"));
        assert_eq!(mode.header_for("tok").unwrap().1, "Bearer tok");
    }
}
