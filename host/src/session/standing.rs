//! Whether an open session's credential still admits it. The auth plugin decides when a session
//! opens; a reload of any plugin (a new token list, a revoked key, roles taken away: see
//! `plugins::auth_cache`) makes the next request of every open session ask it again, with the
//! credential the session opened with. A session the plugin now refuses, or admits as another
//! principal or with other roles, is ended as one whose credential expired is: its request is
//! refused (`-32011`), an HTTP session ends with 401, a WebSocket or newline connection closes.
//! Without a reload nothing is asked: two atomic loads per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::access::{ConnectInfo, Denial, DenialCode, Principal};
use crate::plugins::{Plugins, Refusal};

/// What a session with an auth plugin needs to be checked again after a reload.
pub struct Standing {
    /// What the session authenticated with (the token and certificate subject it opened
    /// with, from where it opened).
    info: ConnectInfo,
    /// Where the auth plugin is.
    plugins: Arc<Plugins>,
    /// The auth plugin's generation ([`Plugins::auth_generation`]) when the session's
    /// credential was last found to admit it.
    checked: AtomicU64,
    /// Set once the plugin refused the credential, or named another principal: for good.
    revoked: AtomicBool,
}

impl Standing {
    /// The standing of a session admitted with `info` by a check that began at `generation`.
    pub fn new(info: ConnectInfo, plugins: Arc<Plugins>, generation: u64) -> Self {
        Self { info, plugins, checked: AtomicU64::new(generation), revoked: AtomicBool::new(false) }
    }

    /// What the session must keep presenting ([`ConnectInfo::credential_digest`]).
    pub fn credential_digest(&self) -> [u8; 32] {
        self.info.credential_digest()
    }

    /// Whether the auth plugin no longer admits the session.
    pub fn revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Whether no plugin was reloaded since the session's credential was last checked.
    pub fn current(&self) -> bool {
        self.checked.load(Ordering::Acquire) == self.plugins.auth_generation()
    }

    /// Asks the auth plugin again (or what it admitted since the reload) whether the session's
    /// credential admits it as `principal`. Refused for good when it does not. An auth plugin
    /// that fails, or asks the client to wait, refuses this request only: the next asks again.
    pub async fn confirm(&self, principal: &Principal, session: &str) -> Result<(), Refusal> {
        let generation = self.plugins.auth_generation();
        let outcome = match self.plugins.remembered(&self.info) {
            Some(known) => Ok(known),
            None => self.plugins.authenticate(&self.info).await,
        };
        let reason = match outcome {
            Ok(now) if same_principal(&now.principal, principal) => {
                self.checked.fetch_max(generation, Ordering::AcqRel);
                return Ok(());
            }
            Ok(now) => format!("it now names {} {:?}", now.principal.id, now.principal.roles),
            // The credential itself is refused. Any other denial (wait, a bad request, a plugin
            // that cannot read its keys for a moment) refuses this request only.
            Err(Refusal::Denied(denial))
                if denial.retry_after_ms.is_none()
                    && matches!(denial.code, DenialCode::Unauthenticated | DenialCode::Forbidden) =>
            {
                crate::mcp::clip(&denial.message).into_owned()
            }
            Err(refusal) => return Err(refusal),
        };
        self.revoked.store(true, Ordering::Release);
        tracing::warn!(target: "relay::auth", session, principal = %principal.id, transport = self.info.transport.as_str(), %reason, outcome = "revoked", "the auth plugin no longer admits an open session's credential: the session ends");
        Err(revoked())
    }
}

/// Whether `now` is who `then` was: the same id and the same roles, in any order.
fn same_principal(now: &Principal, then: &Principal) -> bool {
    fn roles(p: &Principal) -> std::collections::BTreeSet<&str> {
        p.roles.iter().map(String::as_str).collect()
    }
    now.id == then.id && (now.roles == then.roles || roles(now) == roles(then))
}

/// The refusal of a request on a session whose credential the auth plugin, asked again after a
/// reload, no longer admits as the session's principal.
pub fn revoked() -> Refusal {
    let message = "the credential this session authenticated with no longer admits it (the auth plugin was reloaded since); authenticate again";
    Refusal::Denied(Denial::by_relay(DenialCode::Unauthenticated, message))
}
