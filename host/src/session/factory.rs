//! Who may open a session, and the opening itself: authentication (the auth plugin, or the
//! open-mode principal), then the caps on sessions (in all, per principal, per remote address).
//! Every transport opens its sessions here, so every transport is held to the same caps.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::Semaphore;

use super::{Session, SessionRecord, SessionState, Standing, draining_error};
use crate::access::{Authenticated, ConnectInfo, Denial, DenialCode, Peer, Principal, RequestInfo, TransportKind};
use crate::admission::{AddressKey, KeyedCounts};
use crate::auth_throttle::AuthThrottle;
use crate::lifecycle::Lifecycle;
use crate::mcp::envelope::Envelope;
use crate::mcp::{Limits, RpcError, error_codes};
use crate::plugins::{Admission, Caller, Plugins, Refusal};
use crate::policy::Policy;
use crate::router::Router;

/// Why a client was not admitted: its credentials (or the auth plugin) said no, or a session
/// cap is reached. One mapping to an HTTP status here, one to JSON-RPC below.
#[derive(Debug)]
pub enum Refused {
    /// Authentication refused or failed.
    Auth(Refusal),
    /// A session cap is reached.
    Busy(RpcError),
}

impl Refused {
    /// The refusal of anything new while the relay drains (503 with `Retry-After: 1`).
    pub fn draining() -> Self {
        Refused::Busy(draining_error())
    }

    /// When the client may try again, for `Retry-After`.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refused::Auth(Refusal::Denied(denial)) => denial.retry_after_secs(),
            // Another instance can take the client at once.
            Refused::Busy(error) if error.code == error_codes::SHUTTING_DOWN => Some(1),
            _ => None,
        }
    }

    /// The HTTP status of a refused request or handshake.
    pub fn http_status(&self) -> u16 {
        match self {
            Refused::Auth(Refusal::Denied(denial)) => denial.http_status(),
            Refused::Auth(Refusal::Failed(_)) | Refused::Busy(_) => 503,
        }
    }
}

impl From<Refused> for RpcError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Auth(refusal) => refusal.into(),
            Refused::Busy(error) => error,
        }
    }
}

/// What every session needs; cloned cheaply into each new session.
#[derive(Clone)]
pub struct SessionFactory {
    /// Where admitted requests go.
    pub router: Arc<Router>,
    /// What every request passes before routing.
    pub policy: Arc<Policy>,
    /// The auth plugin (if any) decides who a session is.
    pub plugins: Arc<Plugins>,
    /// Instance facts (session counting).
    pub lifecycle: Arc<Lifecycle>,
    /// Input limits for the transports.
    pub limits: Arc<Limits>,
    /// Without an auth plugin, whether clients get the `admin` role
    /// (`access.admin_without_auth`).
    pub open_admin: bool,
    /// Open sessions per principal id.
    pub per_principal: Arc<KeyedCounts<String>>,
    /// Open sessions per remote address ([`AddressKey`]).
    pub per_address: Arc<KeyedCounts<AddressKey>>,
    /// Failed authentications per address, and who is refused for now.
    pub auth_throttle: Arc<AuthThrottle>,
}

impl SessionFactory {
    /// Whether clients must authenticate (an auth plugin is configured).
    pub fn requires_auth(&self) -> bool {
        self.plugins.has_auth()
    }

    /// Decides who a new connection is: a success remembered for the same credential, the auth
    /// plugin's answer, or without one the open-mode principal (admin only when configured
    /// so). A credential the plugin admitted recently is admitted even while its address is
    /// throttled: other clients' guesses do not lock out a valid caller. Every plugin decision
    /// is logged with its outcome and principal, never with the token.
    pub async fn authenticate(&self, info: &ConnectInfo) -> Result<Authenticated, Refusal> {
        if !self.plugins.has_auth() {
            return Ok(Authenticated::lasting(Principal::open_access(self.open_admin)));
        }
        let transport = info.transport.as_str();
        let remote = info.remote_addr;
        if let Some(mut known) = self.plugins.remembered(info) {
            known.bearer = info.token.as_deref().map(|t| crate::access::Bearer(t.into()));
            tracing::info!(target: "relay::auth", transport, %remote, outcome = "ok", principal = %known.principal.id, remembered = true, "authentication");
            return Ok(known);
        }
        let attempt = match self.auth_throttle.attempt(info.remote_key).await {
            Ok(attempt) => attempt,
            Err(wait) => return Err(Refusal::Denied(self.throttled(info.transport, remote, info.remote_key, wait))),
        };
        let outcome = self.plugins.authenticate(info).await.map(|mut authenticated| {
            authenticated.bearer = info.token.as_deref().map(|t| crate::access::Bearer(t.into()));
            authenticated
        });
        match &outcome {
            Ok(a) => {
                tracing::info!(target: "relay::auth", transport, %remote, outcome = "ok", principal = %a.principal.id, "authentication")
            }
            Err(Refusal::Denied(d)) => {
                attempt.failed();
                crate::metrics::metrics().access.auth_failure(transport);
                tracing::warn!(target: "relay::auth", transport, %remote, outcome = "denied", reason = %crate::mcp::clip(&d.message), "authentication")
            }
            Err(Refusal::Failed(e)) => {
                crate::metrics::metrics().access.auth_failure(transport);
                tracing::error!(target: "relay::auth", transport, %remote, outcome = "error", error = %e, "authentication")
            }
        }
        outcome
    }

    /// Counts a wrong credential presented on an open session (a guess on its id) as a failed
    /// authentication of `remote`; `Err` with the refusal when `remote` is throttled now.
    pub async fn session_credential_failed(&self, transport: TransportKind, peer: &Peer) -> Result<(), Denial> {
        let remote = peer.addr;
        crate::metrics::metrics().access.auth_failure(transport.as_str());
        tracing::warn!(target: "relay::auth", transport = transport.as_str(), %remote, outcome = "denied", reason = "wrong credential for the session", "authentication");
        match self.auth_throttle.attempt(peer.address_key()).await {
            Ok(attempt) => {
                attempt.failed();
                Ok(())
            }
            Err(wait) => Err(self.throttled(transport, remote, peer.address_key(), wait)),
        }
    }

    fn throttled(
        &self,
        transport: TransportKind,
        remote: SocketAddr,
        counted_as: AddressKey,
        wait: std::time::Duration,
    ) -> Denial {
        let transport = transport.as_str();
        crate::metrics::metrics().access.auth_throttled(transport);
        tracing::warn!(target: "relay::auth", transport, %remote, %counted_as, outcome = "throttled", retry_after_s = wait.as_secs(), "authentication");
        let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let message = format!(
            "too many failed authentications from this address; try again in {} s",
            retry_after_ms.div_ceil(1000)
        );
        Denial { retry_after_ms: Some(retry_after_ms), ..Denial::by_relay(DenialCode::TooManyFailures, message) }
    }

    /// Admits a client: authenticates `token` (as the auth plugin decides, or the open-mode
    /// principal) and opens its session under the caps. Every transport that opens sessions
    /// comes through here.
    pub async fn admit(
        &self,
        transport: TransportKind,
        peer: &Peer,
        token: Option<String>,
    ) -> Result<Arc<Session>, Refused> {
        if self.lifecycle.is_draining() {
            return Err(Refused::draining());
        }
        let info = ConnectInfo::new(transport, peer, token);
        let generation = self.plugins.auth_generation();
        let authenticated = self.authenticate(&info).await.map_err(Refused::Auth)?;
        let standing = self.standing(info, generation);
        self.open(transport, authenticated, peer.address_key(), standing).map_err(Refused::Busy)
    }

    /// With auth on, how a session admitted with `info`, by a check that began at auth
    /// `generation` ([`Plugins::auth_generation`], read before it), is checked again after a
    /// reload (see `standing`).
    pub fn standing(&self, info: ConnectInfo, generation: u64) -> Option<Standing> {
        self.requires_auth().then(|| Standing::new(info, self.plugins.clone(), generation))
    }

    /// Opens a session for an authenticated caller connected from `remote`, unless a session
    /// cap is reached. `standing` holds what it authenticated with (none when auth is off):
    /// HTTP requests of the session must keep presenting the same token and certificate
    /// ([`ConnectInfo::credential_digest`]), and the auth plugin is asked again after a reload.
    pub fn open(
        &self,
        transport: TransportKind,
        authenticated: Authenticated,
        remote: AddressKey,
        standing: Option<Standing>,
    ) -> Result<Arc<Session>, RpcError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let credential = standing.as_ref().map(Standing::credential_digest);
        let opened = Opened { authenticated, credential, standing, state: SessionState::default(), stateless: false };
        self.build(id, transport, remote, opened)
    }

    /// Opens, on this instance, the Streamable HTTP session `id` that another instance opened
    /// (its [`SessionRecord`]), for a caller the auth plugin has just authenticated again with
    /// the session's own credential. Held to the same caps as a new session.
    pub fn reopen(
        &self,
        id: String,
        authenticated: Authenticated,
        remote: AddressKey,
        record: &SessionRecord,
        standing: Option<Standing>,
    ) -> Result<Arc<Session>, RpcError> {
        let credential = record.credential_digest();
        let opened = Opened { authenticated, credential, standing, state: record.state(), stateless: false };
        let session = self.build(id, TransportKind::Http, remote, opened)?;
        session.client_requests.declare(record.capabilities.clone(), false);
        // Held with the router once the session is taken up (`resume_upstream`).
        session.client_requests.log_level().replace(record.log_level);
        session.taken_up.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(session)
    }

    /// Opens the session of one stateless (2026-07-28) exchange: what a handshake would have
    /// established comes from the request's envelope instead. It lives as long as the request
    /// (and any input-required rounds of it), under the same caps as any session.
    pub fn open_stateless(
        &self,
        principal: Authenticated,
        remote: AddressKey,
        envelope: &Envelope,
    ) -> Result<Arc<Session>, RpcError> {
        let state = SessionState {
            protocol_version: Some(envelope.protocol_version.clone()),
            client_name: envelope.client_name.clone(),
            subscriptions: HashSet::new(),
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let opened = Opened { authenticated: principal, credential: None, standing: None, state, stateless: true };
        let session = self.build(id, TransportKind::Http, remote, opened)?;
        session.client_requests.declare(envelope.capabilities.clone(), true);
        session.client_requests.log_level().replace(envelope.log_level.as_deref().and_then(crate::mcp::log_rank));
        Ok(session)
    }

    /// The one constructor behind the three ways a session opens.
    fn build(
        &self,
        id: String,
        transport: TransportKind,
        remote: AddressKey,
        opened: Opened,
    ) -> Result<Arc<Session>, RpcError> {
        if self.lifecycle.is_draining() {
            return Err(draining_error());
        }
        let Opened { authenticated, credential, standing, state, stateless } = opened;
        let Authenticated { principal, expires_at, bearer } = authenticated;
        let limits = &self.limits;
        let refuse = |what: &str, limit: usize| {
            tracing::warn!(limit, transport = transport.as_str(), principal = %principal.id, %remote, "session refused: {what} limit reached");
            Err(RpcError::new(
                error_codes::SERVER_BUSY,
                format!(
                    "session refused: {what} already has {limit} sessions open (the relay's limit); close one or try again later"
                ),
            ))
        };
        if self.lifecycle.sessions() >= limits.max_sessions {
            return refuse("the relay", limits.max_sessions);
        }
        // An open relay's one principal is every client: a cap on it would let one client that
        // opens that many sessions (and holds no connection: HTTP sessions outlive them) refuse
        // everyone else until they expire. Its sessions are capped per address alone (an auth
        // plugin's principals are capped, whatever their names).
        let principal_count = if !self.requires_auth() {
            None
        } else {
            match self.per_principal.try_acquire(&principal.id, limits.max_sessions_per_principal) {
                Some(count) => Some(count),
                None => return refuse(&format!("principal {}", principal.id), limits.max_sessions_per_principal),
            }
        };
        let Some(address_count) = self.per_address.try_acquire(&remote, limits.max_sessions_per_address) else {
            return refuse(&format!("address {remote}"), limits.max_sessions_per_address);
        };
        let policy = self.policy.clone();
        let admit: Admission = Arc::new(move |info: RequestInfo<'_>| {
            let policy = policy.clone();
            Box::pin(async move { policy.check(&info).await })
        });
        let caller = Caller { principal: principal.clone(), session_id: id.clone(), transport, admit, bearer };
        Ok(Arc::new(Session {
            tag: OnceLock::new(),
            id,
            transport,
            principal,
            credential,
            standing,
            expires_at,
            stateless,
            router: self.router.clone(),
            policy: self.policy.clone(),
            state: Arc::new(Mutex::new(state)),
            last_seen: Mutex::new(Instant::now()),
            inflight: Mutex::default(),
            started: Default::default(),
            slots: Arc::new(Semaphore::new(limits.max_requests_in_flight)),
            waiters: Semaphore::new(limits.max_requests_in_flight),
            get_stream: Arc::default(),
            client_requests: Arc::default(),
            caller,
            shared_at: Mutex::default(),
            shared_unsaved: Default::default(),
            taken_up: Default::default(),
            counts: (self.lifecycle.session_opened(transport), principal_count, address_count),
        }))
    }
}

/// What a session opens with: who authenticated and with what, and what it established.
struct Opened {
    authenticated: Authenticated,
    /// Digest of the credential HTTP requests of the session must present (none: auth off).
    credential: Option<[u8; 32]>,
    /// How the credential is checked again after a reload (none: auth off, or stateless).
    standing: Option<Standing>,
    state: SessionState,
    /// A 2026-07-28 exchange.
    stateless: bool,
}
