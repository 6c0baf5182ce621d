//! What `relay_get_status`, `/status` and `/status.json` say: what an operator asks first
//! (ready or draining and since when, each backend's state and since when, whether the kv store
//! answers, when the TLS certificate expires), then sessions, requests, backends and plugins.
//!
//! Written from typed records rather than a `Value` tree: every client of the reference
//! scenario asks for it, and building, writing and dropping the tree was most of what such a
//! client cost the relay. The fields are in alphabetical order, as a `Value`'s keys were.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use super::RelayTools;
use crate::upstream::ServerIdentity;

/// The relay's status, as `relay_get_status` answers it.
#[derive(Serialize)]
pub(super) struct Status {
    backends: Vec<Server>,
    draining: bool,
    draining_since: Option<u64>,
    instance: String,
    kv: KvStatus,
    log_forward: LogForward,
    plugins: Vec<Value>,
    running_requests: usize,
    sessions: usize,
    sessions_by_transport: BTreeMap<&'static str, usize>,
    state: &'static str,
    tls: Option<TlsStatus>,
    uptime_secs: f64,
    version: &'static str,
}

/// One backend in the status and in `relay_list_servers`.
#[derive(Serialize)]
pub(super) struct Server {
    connected_since: Option<u64>,
    connects: u64,
    errors: u64,
    lanes: usize,
    last_error: Option<String>,
    name: String,
    requests: u64,
    /// The backend's `serverInfo`, written from the identity the supervisor shares (not copied).
    #[serde(serialize_with = "server_info")]
    server_info: Option<Arc<ServerIdentity>>,
    state: &'static str,
    state_since: u64,
    /// Where the backend lives: admins only.
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    tools: usize,
    transport: &'static str,
}

/// `relay_list_servers`' answer.
#[derive(Serialize)]
pub(super) struct ServerList {
    pub(super) servers: Vec<Server>,
}

/// An identity's `serverInfo` (null before the backend first answered `initialize`).
fn server_info<S: serde::Serializer>(identity: &Option<Arc<ServerIdentity>>, out: S) -> Result<S::Ok, S::Error> {
    identity.as_ref().map(|identity| &identity.server_info).serialize(out)
}

/// Whether the kv store answers, and which shared store it is.
#[derive(Serialize)]
struct KvStatus {
    backend: &'static str,
    checked_in_ms: f64,
    error: Option<String>,
    reachable: bool,
    /// [`crate::plugins::KvStore::identity`]: instances showing the same one share state.
    store: Option<String>,
}

#[derive(Serialize)]
struct LogForward {
    connected: bool,
    dropped: u64,
}

#[derive(Serialize)]
struct TlsStatus {
    certificate_expires: i64,
    days_left: f64,
    files_error: Option<String>,
}

impl RelayTools {
    pub(super) async fn status(&self, admin: bool) -> Status {
        let (dropped, connected) = crate::metrics::metrics().process.log_forward_state();
        let state = if self.lifecycle.is_draining() {
            "draining"
        } else if self.lifecycle.is_ready() {
            "ready"
        } else {
            "starting"
        };
        let tls = crate::metrics::metrics().access.tls_state().map(|(not_after, files_error)| {
            let days_left = (not_after - unix_now()) as f64 / 86_400.0;
            TlsStatus { certificate_expires: not_after, days_left: (days_left * 10.0).round() / 10.0, files_error }
        });
        Status {
            backends: self.servers(admin),
            draining: self.lifecycle.is_draining(),
            draining_since: self.lifecycle.drain_started().map(unix_secs),
            instance: self.lifecycle.instance.clone(),
            kv: self.kv_status().await,
            log_forward: LogForward { connected, dropped },
            plugins: self.plugins.status(admin),
            running_requests: self.lifecycle.running_requests(),
            sessions: self.lifecycle.sessions(),
            sessions_by_transport: self.lifecycle.sessions_by_transport().into_iter().collect(),
            state,
            tls,
            uptime_secs: self.lifecycle.started.elapsed().as_secs_f64(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// What the status page shows (`relay_get_status` as a non-admin sees it: no backend
    /// targets).
    pub async fn status_report(&self) -> Value {
        serde_json::to_value(self.status(false).await).unwrap_or_default()
    }

    /// Whether the kv store answers, and its identity (Redis is asked, within a second).
    async fn kv_status(&self) -> KvStatus {
        let backend = if self.kv.is_shared() { "redis" } else { "memory" };
        let started = std::time::Instant::now();
        let identity = tokio::time::timeout(Duration::from_secs(1), self.kv.identity()).await;
        let (store, error) = match identity {
            Ok(Ok(store)) => (store, None),
            Ok(Err(e)) => (None, Some(e.to_string())),
            Err(_) => (None, Some("no answer within 1 s".to_owned())),
        };
        let checked_in_ms = started.elapsed().as_secs_f64() * 1000.0;
        let seen = match (&store, &error) {
            (Some(store), _) => store.as_str(),
            (None, None) => "none",
            (None, Some(_)) => "unreachable",
        };
        crate::metrics::metrics().process.kv_store(seen);
        KvStatus { backend, checked_in_ms, reachable: error.is_none(), error, store }
    }

    pub(super) fn servers(&self, admin: bool) -> Vec<Server> {
        self.upstreams
            .list()
            .iter()
            .map(|upstream| {
                let status = upstream.status();
                let backend = &upstream.backend;
                let (requests, errors) = upstream.request_counts();
                Server {
                    connected_since: status.connected_since.map(unix_secs),
                    connects: status.connects,
                    errors,
                    lanes: status.lanes,
                    // Non-admins learn why a backend failed, not where it lives.
                    last_error: status
                        .last_error
                        .map(|e| if admin { backend.redact(&e) } else { backend.without_address(&e) }),
                    name: upstream.name().to_owned(),
                    requests,
                    server_info: status.identity,
                    state: status.state.as_str(),
                    state_since: unix_secs(status.since),
                    target: admin.then(|| backend.shown_target()),
                    tools: upstream.tools().len(),
                    transport: backend.transport.kind(),
                }
            })
            .collect()
    }
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unix_now() -> i64 {
    i64::try_from(unix_secs(SystemTime::now())).unwrap_or(i64::MAX)
}
