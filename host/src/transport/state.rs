//! What every transport on the port shares: the session factory and registry, the rules every
//! request passes, and the port's TLS and OAuth settings.

use std::sync::Arc;

use super::browser_guard::BrowserRules;
use super::parked::ParkedCalls;
use super::resumable::ResumableStreams;
use crate::admission::{AddressKey, KeyedCounts};
use crate::lifecycle::Lifecycle;
use crate::session::{SessionFactory, SessionRegistry};

/// What every transport on the port needs (newline and WebSocket clients too, not only HTTP).
pub struct TransportState {
    /// Opens sessions for every transport on this port.
    pub sessions_factory: SessionFactory,
    /// Streamable HTTP sessions by id.
    pub sessions: SessionRegistry,
    /// Readiness for `/readyz`.
    pub lifecycle: Arc<Lifecycle>,
    /// Origin and Host rules for every route.
    pub browser: Arc<BrowserRules>,
    /// Connections per remote address not yet authenticated (or without a whole request head).
    pub pending: Arc<KeyedCounts<AddressKey>>,
    /// Stateless (2026-07-28) calls waiting for their client's input.
    pub parked: Arc<ParkedCalls>,
    /// The relay's own tools, for the status page.
    pub relay_tools: Arc<crate::admin::RelayTools>,
    /// TLS on this port, when configured.
    pub tls: Option<Arc<super::Tls>>,
    /// The OAuth protected resource metadata, when configured.
    pub oauth: Option<Arc<super::ProtectedResource>>,
    /// Proxies whose PROXY protocol headers name the client (`listen.trusted_proxies`).
    pub proxies: super::TrustedProxies,
    /// Answer streams a client may resume with `Last-Event-ID`.
    pub resumable: Arc<ResumableStreams>,
}
