//! `backends.yaml`: the MCP servers behind the relay, in the reference plan's format
//! (`name` + `url`) plus fields for stdio and HTTP upstreams.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The file is not valid YAML for its schema.
    #[error("cannot parse {0}: {1}")]
    Parse(PathBuf, String),
    /// The file parses but its content is inconsistent.
    #[error("invalid {0}: {1}")]
    Invalid(PathBuf, String),
}

/// The file as written on disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsFile {
    /// The configured backends, in order.
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
}

/// One backend as written in the file. Exactly one of `url` (ws://, wss://, http://, https://)
/// or `command` (stdio) is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Unique name; also the prefix that disambiguates colliding tool names.
    pub name: String,
    /// WebSocket or Streamable HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Program to run for a stdio backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Arguments of `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment for `command`, on top of a minimal safe set (`PATH`, `HOME`, ...); the
    /// relay's own environment is not passed on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of the relay's environment variables that `command` inherits as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherit_env: Vec<String>,
    /// Working directory of `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Extra HTTP headers sent to a `url` backend (e.g. its own credentials).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Per-call deadline for this backend, overriding `upstream.call_timeout_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_secs: Option<f64>,
    /// Whose identity calls carry: the relay's (`static`, the default) or the caller's own.
    #[serde(default, skip_serializing_if = "is_static")]
    pub credentials: super::CredentialMode,
    /// A WebSocket backend only: open one MCP session per worker thread and send each tool call
    /// on its caller's worker's session (faster on many cores). Off by default, because the
    /// backend then sees several sessions: only for backends whose tools do not depend on the
    /// session that calls them (a tool registered, or state set, in one is not in the others).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub session_per_worker: bool,
}

fn is_static(mode: &super::CredentialMode) -> bool {
    !mode.is_per_user()
}

/// A validated backend, ready for an upstream supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    /// Unique name, `[A-Za-z0-9_-]{1,64}`.
    pub name: String,
    /// How to reach it.
    pub transport: Transport,
    /// Per-call deadline override in seconds.
    pub call_timeout_secs: Option<f64>,
    /// Whose identity calls carry.
    pub credentials: super::CredentialMode,
    /// One backend session per worker for tool calls ([`BackendSpec::session_per_worker`]).
    pub session_per_worker: bool,
}

/// The transport of an upstream.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// MCP over WebSocket, one message per text frame.
    WebSocket { url: String, headers: BTreeMap<String, String> },
    /// MCP Streamable HTTP.
    Http { url: String, headers: BTreeMap<String, String> },
    /// A child process speaking newline-delimited JSON-RPC on stdin/stdout.
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        inherit_env: Vec<String>,
        cwd: Option<PathBuf>,
    },
}

impl Transport {
    /// Short name for status output and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::WebSocket { .. } => "websocket",
            Transport::Http { .. } => "http",
            Transport::Stdio { .. } => "stdio",
        }
    }

    /// The backend's URL (`None` for a process).
    pub fn url(&self) -> Option<&str> {
        match self {
            Transport::WebSocket { url, .. } | Transport::Http { url, .. } => Some(url),
            Transport::Stdio { .. } => None,
        }
    }
}

/// True for names that can prefix a tool name: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_backend_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl BackendSpec {
    /// Checks one entry and resolves its transport.
    pub fn validate(&self) -> Result<Backend, String> {
        if !valid_backend_name(&self.name) {
            return Err(format!("backend name {:?} must match [A-Za-z0-9_-]{{1,64}}", self.name));
        }
        if let Some(t) = self.call_timeout_secs
            && t <= 0.0
        {
            return Err(format!("backend {}: call_timeout_secs must be positive", self.name));
        }
        let transport = match (&self.url, &self.command) {
            (Some(url), None) => {
                let headers = self.headers.clone();
                if url.starts_with("ws://") || url.starts_with("wss://") {
                    Transport::WebSocket { url: url.clone(), headers }
                } else if url.starts_with("http://") || url.starts_with("https://") {
                    Transport::Http { url: url.clone(), headers }
                } else {
                    return Err(format!(
                        "backend {}: url must start with ws://, wss://, http:// or https://",
                        self.name
                    ));
                }
            }
            (None, Some(command)) if !command.is_empty() => Transport::Stdio {
                command: command.clone(),
                args: self.args.clone(),
                env: self.env.clone(),
                inherit_env: self.inherit_env.clone(),
                cwd: self.cwd.clone(),
            },
            _ => return Err(format!("backend {}: set exactly one of url or command", self.name)),
        };
        self.credentials.validate(&self.name, transport.kind())?;
        if self.session_per_worker && !matches!(transport, Transport::WebSocket { .. }) {
            return Err(format!(
                "backend {}: session_per_worker applies to ws:// and wss:// backends only ({} given)",
                self.name,
                transport.kind()
            ));
        }
        Ok(Backend {
            name: self.name.clone(),
            transport,
            call_timeout_secs: self.call_timeout_secs,
            credentials: self.credentials.clone(),
            session_per_worker: self.session_per_worker,
        })
    }
}

impl BackendsFile {
    /// Parses the YAML text of a backends file (an empty file means no backends).
    pub fn parse(text: &str) -> Result<Self, String> {
        if Self::holds_nothing(text) {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    /// Whether `text` holds no YAML but blank lines and comments: an emptied file, not a list
    /// of no backends (`backends: []` says that), which a reload must not take for one.
    pub fn holds_nothing(text: &str) -> bool {
        text.lines().map(str::trim).all(|line| line.is_empty() || line.starts_with('#') || line == "---")
    }

    /// Validates every entry and that names are unique.
    pub fn validate(&self) -> Result<Vec<Backend>, String> {
        let mut seen = HashSet::new();
        self.backends
            .iter()
            .map(|spec| {
                if !seen.insert(spec.name.as_str()) {
                    return Err(format!("backend name {:?} appears twice", spec.name));
                }
                spec.validate()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reference_format_and_stdio_entries() {
        let file = BackendsFile::parse(
            "backends:\n  - name: fiedler\n    url: ws://localhost:9012\n  - name: everything\n    command: npx\n    args: [server]\n",
        )
        .unwrap();
        let backends = file.validate().unwrap();
        assert_eq!(backends[0].transport.kind(), "websocket");
        assert_eq!(backends[1].transport.kind(), "stdio");
    }

    #[test]
    fn refuses_duplicates_bad_names_and_ambiguous_entries() {
        let dup =
            BackendsFile::parse("backends:\n  - {name: a, url: 'ws://x'}\n  - {name: a, url: 'ws://y'}\n").unwrap();
        assert!(dup.validate().unwrap_err().contains("twice"));
        let bad = BackendsFile::parse("backends:\n  - {name: 'a b', url: 'ws://x'}\n").unwrap();
        assert!(bad.validate().is_err());
        let both = BackendsFile::parse("backends:\n  - {name: a, url: 'ws://x', command: c}\n").unwrap();
        assert!(both.validate().is_err());
        assert!(BackendsFile::parse("backends:\n  - {name: a, uri: 'ws://x'}\n").is_err());
    }

    #[test]
    fn a_session_per_worker_is_asked_for_and_only_of_websocket_backends() {
        let ws = BackendsFile::parse(
            "backends:\n  - {name: a, url: 'ws://x'}\n  - {name: b, url: 'ws://y', session_per_worker: true}\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        assert!(!ws[0].session_per_worker, "off unless asked for");
        assert!(ws[1].session_per_worker);
        for other in ["url: 'http://x/mcp'", "command: cat"] {
            let file = BackendsFile::parse(&format!("backends:\n  - {{name: a, {other}, session_per_worker: true}}\n"))
                .unwrap();
            assert!(file.validate().unwrap_err().contains("session_per_worker applies to ws://"), "{other}");
        }
    }
}
