//! `relay.yaml`: listener, limits, upstream timing, TLS, state and plugins (logging is in `logging`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, ListenConfig, LoggingConfig, PluginConfig, validate_plugins};
use crate::mcp::Limits;

/// The whole of `relay.yaml`. Every section has working defaults, so an empty file runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Where clients connect.
    pub listen: ListenConfig,
    /// Native TLS on the listener's port; off when absent.
    pub tls: Option<TlsConfig>,
    /// The relay as an OAuth 2.1 protected resource (with an auth plugin such as `jwt-auth`):
    /// its metadata document and the challenges that point to it.
    pub oauth: Option<OAuthConfig>,
    /// Path of the backends file, relative to the directory of `relay.yaml`.
    pub backends_file: Option<PathBuf>,
    /// Bounds on client input.
    pub limits: Limits,
    /// Timing of upstream connections and calls.
    pub upstream: UpstreamConfig,
    /// Log output.
    pub logging: LoggingConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Origins (scheme://host[:port]) allowed to reach any HTTP route (WebSocket upgrades
    /// included) from a browser, besides loopback. Requests without an `Origin` header
    /// (non-browser clients) are always allowed.
    pub allowed_origins: Vec<String>,
    /// `Host` header names (without port) accepted besides loopback names, against DNS
    /// rebinding. Empty: any host when listening beyond loopback, loopback names only when
    /// listening on loopback.
    pub allowed_hosts: Vec<String>,
    /// Who may change the relay when no auth plugin is configured.
    pub access: AccessConfig,
    /// WebAssembly plugins, in order: auth once per session, policies before every request,
    /// adapters as tool sources. None configured: the relay runs open.
    pub plugins: Vec<PluginConfig>,
    /// Where compiled plugins are cached (by content hash and engine); default
    /// `$XDG_CACHE_HOME/relay` or `~/.cache/relay`.
    pub plugin_cache_dir: Option<PathBuf>,
    /// How the process stops (SIGTERM, `relay_drain`).
    pub shutdown: ShutdownConfig,
    /// Where plugins' key-value state lives (shared between instances on Redis).
    pub kv: KvConfig,
}

/// The drain on SIGTERM or `relay_drain`: nothing new starts, running requests get this long to
/// finish, then sessions close and the process exits 0.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Seconds running requests may take to finish once the drain starts.
    pub grace_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_secs: 30 }
    }
}

/// Which store backs the plugins' `kv` interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvBackend {
    /// In this process: fast, lost on restart, not shared between instances.
    #[default]
    Memory,
    /// A Redis server: shared by every instance with the same `namespace` (blue and green).
    Redis,
}

/// The plugins' key-value store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvConfig {
    /// `memory` (default) or `redis`.
    pub backend: KvBackend,
    /// With `redis`: `redis://[user:password@]host:port/db` (or `rediss://`); `RELAY_KV_URL`
    /// overrides, so the password need not be in the file.
    pub url: Option<String>,
    /// Prefix of every key: instances that should share state (blue and green of one
    /// deployment) use the same one, other deployments on the same Redis another.
    pub namespace: String,
    /// Longest a `kv` call may wait for Redis (connecting included) before it is `unavailable`:
    /// below the plugins' deadlines, so a slow Redis costs a decision, not a trapped plugin.
    pub timeout_ms: u64,
}

impl Default for KvConfig {
    fn default() -> Self {
        Self { backend: KvBackend::Memory, url: None, namespace: "relay".into(), timeout_ms: 25 }
    }
}

impl KvConfig {
    /// The Redis URL: `RELAY_KV_URL` from the environment, else `url`.
    pub fn resolved_url(&self) -> Option<String> {
        std::env::var("RELAY_KV_URL").ok().filter(|u| !u.is_empty()).or_else(|| self.url.clone())
    }
}

/// What RFC 9728 Protected Resource Metadata says about the relay.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The relay's canonical resource URL (what tokens' `aud` names), e.g.
    /// `https://relay.example.com/mcp`.
    pub resource: String,
    /// Issuers whose tokens the relay accepts.
    pub authorization_servers: Vec<String>,
    /// Scopes clients may ask for; also put in `WWW-Authenticate` challenges.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
}

/// TLS on the one port: a connection whose first byte starts a TLS handshake is served over TLS
/// (every transport), others in the clear unless `required`. Paths are relative to relay.yaml;
/// the files are watched and a changed pair is used for new handshakes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf.
    pub key: PathBuf,
    /// PEM CA certificates that client certificates are verified against (mTLS); a verified
    /// client's subject reaches the auth plugin. Absent: no client certificates asked for.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse clients without a valid certificate (else they are optional).
    #[serde(default)]
    pub client_cert_required: bool,
    /// Refuse plaintext connections on the port.
    #[serde(default)]
    pub required: bool,
}

impl TlsConfig {
    /// The same settings with every path resolved against the directory that holds relay.yaml.
    pub fn resolved(&self, relay_yaml: &Path) -> Self {
        let dir = relay_yaml.parent().unwrap_or(Path::new("."));
        Self {
            cert: dir.join(&self.cert),
            key: dir.join(&self.key),
            client_ca: self.client_ca.as_ref().map(|ca| dir.join(ca)),
            ..self.clone()
        }
    }
}

/// What an unauthenticated (open) relay allows, and which programs run-time changes may start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Without an auth plugin, give every client the `admin` role (add/remove/reconnect
    /// backends, reload and roll back plugins). Off by default: an open relay serves tools but
    /// cannot be reconfigured by whoever reaches its port. Logged loudly at start-up.
    pub admin_without_auth: bool,
    /// Command lines `relay_add_server` may start as stdio backends: the program *and* its
    /// arguments (and the environment names it may set), see `config::commands`. Empty by
    /// default: only the operator's own edits of backends.yaml add commands.
    pub add_server_commands: Vec<super::CommandRule>,
}

impl AccessConfig {
    /// `add_server_commands`, compiled.
    pub fn allowed_commands(&self) -> Result<Vec<super::AllowedCommand>, String> {
        self.add_server_commands.iter().map(super::CommandRule::compile).collect()
    }
}

/// Where Prometheus scrapes the relay: `/metrics` on the main port always, and on a private
/// listener of its own when `listen` is set (e.g. `127.0.0.1:9090`, as the reference plan
/// has it), which serves nothing else of the relay.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` of the private metrics listener.
    pub listen: Option<String>,
}

/// How the relay treats its upstreams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Deadline of one forwarded call, including waiting for a restarted upstream and re-sending.
    pub call_timeout_secs: f64,
    /// Time allowed to connect and finish `initialize` + `tools/list`.
    pub connect_timeout_secs: f64,
    /// First reconnect delay; doubles per failed attempt, with jitter.
    pub backoff_initial_ms: u64,
    /// Cap on the reconnect delay.
    pub backoff_max_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self { call_timeout_secs: 120.0, connect_timeout_secs: 10.0, backoff_initial_ms: 100, backoff_max_ms: 10_000 }
    }
}

impl RelayConfig {
    /// Reads and validates `relay.yaml`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        let config: RelayConfig =
            serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_owned(), e.to_string()))?;
        config.validate().map_err(|msg| ConfigError::Invalid(path.to_owned(), msg))?;
        Ok(config)
    }

    /// Parses and validates the text of a `relay.yaml` (what [`RelayConfig::load`] does after
    /// reading the file).
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: RelayConfig = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        self.listen.check()?;
        self.access.allowed_commands()?;
        if self.kv.backend == KvBackend::Redis {
            match self.kv.resolved_url() {
                None => return Err("kv.backend is redis but no kv.url (or RELAY_KV_URL) is given".into()),
                Some(url) if !(url.starts_with("redis://") || url.starts_with("rediss://")) => {
                    return Err("kv.url must start with redis:// or rediss://".into());
                }
                Some(_) => {}
            }
        }
        if self.kv.namespace.is_empty() || self.kv.namespace.contains(|c: char| c.is_whitespace()) {
            return Err("kv.namespace must be a non-empty word".into());
        }
        self.logging.check()?;
        // A scheme or path where a bare name (or an origin) belongs matches no request: every
        // browser, or every request naming this host, would be refused with 403 / 421.
        let bad_host = |h: &&String| {
            let ipv6 = h.starts_with('[') && h.ends_with(']');
            h.is_empty() || h.contains(['/', ' ']) || (h.contains(':') && !ipv6)
        };
        if let Some(host) = self.allowed_hosts.iter().find(bad_host) {
            return Err(format!("allowed_hosts entry {host:?} must be a host name without scheme, port or path"));
        }
        if let Some(origin) = self.allowed_origins.iter().find(|o| !is_origin(o)) {
            return Err(format!("allowed_origins entry {origin:?} must be scheme://host[:port] (no path)"));
        }
        if self.upstream.call_timeout_secs <= 0.0 || self.upstream.connect_timeout_secs <= 0.0 {
            return Err("upstream timeouts must be positive".into());
        }
        if self.limits.max_header_bytes < 1024 {
            return Err("limits.max_header_bytes must be >= 1024".into());
        }
        if self.limits.max_message_bytes < 1024 || self.limits.max_json_depth < 4 {
            return Err("limits.max_message_bytes must be >= 1024 and limits.max_json_depth >= 4".into());
        }
        let limits = &self.limits;
        let positive = [
            ("max_sessions", limits.max_sessions as u64),
            ("max_sessions_per_principal", limits.max_sessions_per_principal as u64),
            ("max_sessions_per_address", limits.max_sessions_per_address as u64),
            ("max_requests_in_flight", limits.max_requests_in_flight as u64),
            ("handshake_timeout_secs", limits.handshake_timeout_secs),
            ("body_timeout_secs", limits.body_timeout_secs),
            ("max_pending_per_address", limits.max_pending_per_address as u64),
            ("auth_failures", limits.auth_failures as u64),
            ("auth_failure_window_secs", limits.auth_failure_window_secs),
            ("max_parked_per_principal", limits.max_parked_per_principal as u64),
            ("idle_timeout_secs", limits.idle_timeout_secs),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("limits.{name} must be positive"));
        }
        if let Some(tls) = &self.tls
            && tls.client_cert_required
            && tls.client_ca.is_none()
        {
            return Err(
                "tls.client_cert_required needs tls.client_ca (the CA client certificates are verified against)".into(),
            );
        }
        // Else a client without a certificate would be served anyway, in the clear.
        if let Some(tls) = &self.tls
            && tls.client_cert_required
            && !tls.required
        {
            return Err("tls.client_cert_required needs tls.required: true (plaintext clients have no certificate, and would be served)".into());
        }
        if let Some(oauth) = &self.oauth {
            if !(oauth.resource.starts_with("https://") || oauth.resource.starts_with("http://")) {
                return Err(format!("oauth.resource {:?} must be an absolute http(s) URL", oauth.resource));
            }
            if oauth.authorization_servers.is_empty() {
                return Err("oauth.authorization_servers must name at least one issuer".into());
            }
        }
        validate_plugins(&self.plugins)
    }

    /// The backends file, resolved against the directory that holds `relay.yaml`.
    pub fn backends_path(&self, relay_yaml: &Path) -> PathBuf {
        let file = self.backends_file.clone().unwrap_or_else(|| PathBuf::from("backends.yaml"));
        relay_yaml.parent().unwrap_or(Path::new(".")).join(file)
    }

    /// The store of the backends file, which refuses backends named as an adapter plugin.
    pub fn backend_store(&self, relay_yaml: &Path) -> super::BackendStore {
        let adapters = self.plugins.iter().filter(|p| p.world == super::plugins::World::Adapter);
        super::BackendStore::new(self.backends_path(relay_yaml)).reserving(adapters.map(|p| p.name.clone()).collect())
    }
}

/// Whether `text` reads as a browser origin: a scheme (`https`, or an app's own such as
/// `vscode-webview`), `://`, a host, perhaps a port, nothing after (a trailing `/` is taken);
/// or `null`, what a browser sends for a page without one.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else { return text == "null" };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    scheme_ok && !rest.is_empty() && !rest.contains(['/', ' ', '?', '#'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_and_typos_are_errors() {
        let config: RelayConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(config.listen.port, 8000);
        assert!(serde_yaml::from_str::<RelayConfig>("listen: {prot: 1}").is_err());
    }

    #[test]
    fn hosts_and_origins_must_have_the_form_they_are_matched_in() {
        let check = |yaml: &str| serde_yaml::from_str::<RelayConfig>(yaml).unwrap().validate();
        assert!(check("allowed_hosts: [relay.example.com]").is_ok());
        assert!(check("allowed_hosts: ['http://relay.example.com']").unwrap_err().contains("allowed_hosts"));
        assert!(check("allowed_hosts: ['relay.example.com:443']").is_err());
        assert!(check("allowed_hosts: ['[2001:db8::1]']").is_ok());
        assert!(
            check("allowed_origins: ['https://app.example:8443', 'http://x/', 'vscode-webview://abc', 'null']").is_ok()
        );
        assert!(check("allowed_origins: ['not a url']").unwrap_err().contains("allowed_origins"));
        assert!(check("allowed_origins: ['https://app.example/path']").is_err());
    }

    #[test]
    fn a_required_client_certificate_needs_tls_required() {
        let check = |tls: &str| serde_yaml::from_str::<RelayConfig>(&format!("tls: {tls}")).unwrap().validate();
        let refused = check("{cert: c, key: k, client_ca: ca, client_cert_required: true}").unwrap_err();
        assert!(refused.contains("tls.required"), "{refused}");
        assert!(check("{cert: c, key: k, client_ca: ca, client_cert_required: true, required: true}").is_ok());
        assert!(check("{cert: c, key: k, client_ca: ca}").is_ok(), "optional certificates, plaintext allowed");
    }
}
