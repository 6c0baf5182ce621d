//! Who is calling and why a request is refused: the vocabulary that the session, the policy
//! chain and the plugins share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use serde_json::{Value, json};

use crate::admission::AddressKey;
use crate::mcp::{RpcError, error_codes};

/// The transport a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Newline-delimited JSON-RPC over TCP.
    Line,
    /// MCP over WebSocket.
    WebSocket,
    /// Streamable HTTP.
    Http,
}

impl TransportKind {
    /// Every transport.
    pub const ALL: [TransportKind; 3] = [TransportKind::Line, TransportKind::WebSocket, TransportKind::Http];

    /// Lower-case name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Line => "line",
            TransportKind::WebSocket => "websocket",
            TransportKind::Http => "http",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// Stable id: rate-limit key, log field.
    pub id: String,
    /// Roles; `admin` unlocks the management tools.
    pub roles: Vec<String>,
}

impl Principal {
    /// The role that may change the relay at run time.
    pub const ADMIN: &'static str = "admin";
    /// The id of every caller an open relay (no auth plugin) serves.
    pub const ANONYMOUS: &'static str = "anonymous";

    /// The caller when no auth plugin is configured: anonymous, and admin only when relay.yaml
    /// says `access.admin_without_auth: true`.
    pub fn open_access(admin: bool) -> Self {
        let roles = if admin { vec![Self::ADMIN.into()] } else { Vec::new() };
        Self { id: Self::ANONYMOUS.into(), roles }
    }

    /// Whether the principal has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// A principal as authentication established it, and how long that holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Who the caller is.
    pub principal: Principal,
    /// When the credential stops being valid (the auth plugin's `credential.expires-at`);
    /// sessions opened with it are refused after that. `None`: it does not expire.
    pub expires_at: Option<SystemTime>,
    /// The bearer token it authenticated with, for a backend whose credential is exchanged
    /// for it (`token_exchange`); never sent on as it is.
    pub bearer: Option<Bearer>,
}

impl Authenticated {
    /// A caller whose credential does not expire.
    pub fn lasting(principal: Principal) -> Self {
        Self { principal, expires_at: None, bearer: None }
    }
}

/// A client's bearer token, kept for a token exchange: its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Bearer(pub Arc<str>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(..)")
    }
}

/// Who is on the other end of a connection, as the listener established it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The remote address.
    pub addr: SocketAddr,
    /// Whether a trusted proxy's PROXY header named `addr` (the connection came through it).
    pub proxied: bool,
    /// The subject (RFC 4514, e.g. `CN=agent-7,O=Example`) of the client certificate the TLS
    /// handshake verified against `tls.client_ca`.
    pub client_cert_subject: Option<Arc<str>>,
}

impl Peer {
    /// A peer known by its address alone (plaintext, or TLS without a client certificate),
    /// `proxied` when a trusted proxy named it.
    pub fn at(addr: SocketAddr, proxied: bool) -> Self {
        Self { addr, proxied, client_cert_subject: None }
    }

    /// What the per-address caps and the authentication throttle count this peer as.
    pub fn address_key(&self) -> AddressKey {
        AddressKey::new(self.addr.ip(), self.proxied)
    }
}

/// What authentication sees of a new connection or session.
#[derive(Debug, Clone)]
pub struct ConnectInfo {
    /// The client's transport.
    pub transport: TransportKind,
    /// The peer address.
    pub remote_addr: SocketAddr,
    /// What the peer is counted as (its address, and whether a trusted proxy named it).
    pub remote_key: AddressKey,
    /// The bearer token, if the client sent one.
    pub token: Option<String>,
    /// The verified client certificate's subject (mTLS).
    pub client_cert_subject: Option<String>,
}

impl ConnectInfo {
    /// What `peer` presents over `transport`, with `token`.
    pub fn new(transport: TransportKind, peer: &Peer, token: Option<String>) -> Self {
        Self {
            transport,
            remote_addr: peer.addr,
            remote_key: peer.address_key(),
            token,
            client_cert_subject: peer.client_cert_subject.as_deref().map(str::to_owned),
        }
    }

    /// SHA-256 over everything the client authenticates with (its bearer token and its
    /// verified certificate subject, each tagged so neither can stand for the other): what a
    /// session is bound to and what the auth cache is keyed by. Never logged.
    pub fn credential_digest(&self) -> [u8; 32] {
        credential_digest(self.token.as_deref(), self.client_cert_subject.as_deref())
    }
}

/// [`ConnectInfo::credential_digest`] of a token and a certificate subject.
fn credential_digest(token: Option<&str>, subject: Option<&str>) -> [u8; 32] {
    let mut hash = Sha256::new();
    for (tag, part) in [(b"token", token), (b"subj_", subject)] {
        hash.update(tag);
        match part {
            Some(part) => {
                hash.update([1]);
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part.as_bytes());
            }
            None => hash.update([0]),
        }
    }
    hash.finalize().into()
}

/// What the policy chain sees of one request, borrowed from the session and the request: a
/// call with no policy to ask copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The caller.
    pub principal: &'a Principal,
    /// The session.
    pub session_id: &'a str,
    /// The client's transport.
    pub transport: TransportKind,
    /// The JSON-RPC method.
    pub method: &'a str,
    /// The tool, for `tools/call`.
    pub tool: Option<&'a str>,
    /// Where a `tools/call` goes, when the tool exists (policies bound to backends or tools
    /// run only for the calls it matches).
    pub route: Option<Route<'a>>,
}

impl<'a> RequestInfo<'a> {
    /// A `tools/call` of `tool` by `principal` on a newline session `s` whose route is not
    /// known (what benches and in-process callers ask the policy chain about).
    pub fn tool_call(principal: &'a Principal, tool: &'a str) -> Self {
        RequestInfo {
            principal,
            session_id: "s",
            transport: TransportKind::Line,
            method: "tools/call",
            tool: Some(tool),
            route: None,
        }
    }
}

/// The backend (or adapter) that serves a tool call, and the tool's name in the relay's
/// catalog (before any interceptor renamed it; for an adapter's own backend calls, the
/// backend's name for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The backend or adapter.
    pub backend: &'a str,
    /// The tool.
    pub tool: &'a str,
}

/// The category of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialCode {
    /// No or unknown credentials.
    Unauthenticated,
    /// Known caller, not allowed.
    Forbidden,
    /// Too many requests.
    RateLimited,
    /// Too many failed authentications from the client's address (the relay's own rule).
    TooManyFailures,
    /// The request is unacceptable.
    Invalid,
}

/// A refusal from authentication or policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denial {
    /// The category.
    pub code: DenialCode,
    /// A sentence for the client.
    pub message: String,
    /// When to retry, for rate limits.
    pub retry_after_ms: Option<u64>,
    /// Which plugin (or `relay` for built-in rules) refused.
    pub refused_by: String,
}

impl Denial {
    /// A denial by the relay's own rules.
    pub fn by_relay(code: DenialCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after_ms: None, refused_by: "relay".into() }
    }

    /// Seconds to put in `Retry-After` (rounded up), when the denial says when to retry.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_ms.map(|ms| ms.div_ceil(1000).max(1))
    }

    /// The HTTP status for a refused connection or session.
    pub fn http_status(&self) -> u16 {
        match self.code {
            DenialCode::Unauthenticated => 401,
            DenialCode::Forbidden => 403,
            DenialCode::RateLimited | DenialCode::TooManyFailures => 429,
            DenialCode::Invalid => 400,
        }
    }
}

impl From<Denial> for RpcError {
    fn from(denial: Denial) -> Self {
        let code = match denial.code {
            DenialCode::Unauthenticated => error_codes::UNAUTHENTICATED,
            DenialCode::Forbidden => error_codes::FORBIDDEN,
            DenialCode::RateLimited => error_codes::RATE_LIMITED,
            DenialCode::TooManyFailures => error_codes::AUTH_THROTTLED,
            DenialCode::Invalid => error_codes::INVALID_PARAMS,
        };
        let mut data = json!({"refused_by": denial.refused_by});
        if let Some(ms) = denial.retry_after_ms {
            data["retry_after_ms"] = Value::from(ms);
        }
        RpcError::new(code, denial.message).with_data(data)
    }
}
