//! One upstream: its connection, lists, status and requests. The task that keeps it connected
//! is [`lifecycle`].

mod lifecycle;
mod status;

pub use status::{State, Status};

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use serde_json::Value;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use super::handshake::{self, Listing, ServerIdentity};
use super::routes::ClientRoutes;
use super::{UpstreamError, http, stdio, websocket};
use crate::config::{Backend, Transport, UpstreamConfig};
use crate::mcp::{Notification, Payload, Related};
use crate::metrics::{BackendMetrics, BackendOutcomeKind, metrics};

/// How long a connection (the supervisor's or a lane's) must stay up before the reconnect
/// backoff starts again from its first delay: a backend that drops connections right after
/// their handshake keeps being backed off from.
pub(super) const STABLE_AFTER: Duration = Duration::from_secs(10);

/// A notification from an upstream, for the router.
#[derive(Debug, Clone)]
pub struct UpstreamEvent {
    /// The backend that sent it.
    pub backend: String,
    /// The notification as sent.
    pub notification: Notification,
}

/// An upstream: its configuration, its live connection (if any) and its last known lists.
pub struct Upstream {
    /// The validated configuration entry.
    pub backend: Backend,
    /// Timing shared by all upstreams.
    timing: UpstreamConfig,
    /// Largest message accepted from the upstream.
    max_message_bytes: usize,
    /// The live connection; `None` while (re)connecting.
    pub(super) connection: watch::Sender<Option<Arc<Connection>>>,
    /// The other workers' own connections, for tool calls (WebSocket backends).
    pub(super) lanes: super::lanes::Lanes,
    /// Last lists received (tools, prompts, resources, templates). Kept while reconnecting so
    /// that clients do not see them flicker away during a restart and calls can wait for the
    /// upstream to return.
    listing: watch::Sender<Listing>,
    /// Where notifications that are not list changes go (resource updates, log messages,
    /// progress): the router routes them to the sessions they belong to.
    notifications: broadcast::Sender<UpstreamEvent>,
    /// Health for status output.
    status: Mutex<Status>,
    /// Asks the supervisor to drop the connection and connect again now.
    reconnect: Notify,
    /// Stops the supervisor for good.
    pub(super) stop: CancellationToken,
    /// Client requests in flight on this upstream: where their progress, log messages and the
    /// upstream's own requests (sampling, elicitation) go.
    routes: Arc<ClientRoutes>,
    /// This backend's series in the metrics.
    metrics: BackendMetrics,
    /// Set when a connection attempt fails, cleared when one succeeds: while it is set,
    /// requests fail at once instead of waiting for a backend that is not coming back soon.
    down: std::sync::atomic::AtomicBool,
    /// The catalog user's credential, for a backend listed as its first authorized user.
    catalog: super::CatalogCredentialSlot,
    /// The subscriptions and log level the backend's session holds, made again on each new
    /// connection (the level on each lane's too); shared with the upstream that replaces this
    /// one (its entry edited), so what finishes here after that is known there too.
    pub(super) replay: Arc<super::replay::SessionReplay>,
    /// Set when a changed entry of the same name took over, or the backend was removed: the
    /// connections retire (their calls in flight finish on them) instead of closing under
    /// those calls.
    retiring: std::sync::atomic::AtomicBool,
}

impl Upstream {
    /// Creates the upstream and starts its supervisor; `changed` is bumped on every tool list
    /// change so the router can rebuild its catalog.
    pub fn spawn(
        backend: Backend,
        timing: UpstreamConfig,
        max_message_bytes: usize,
        changed: watch::Sender<u64>,
        notifications: broadcast::Sender<UpstreamEvent>,
        catalog: super::CatalogCredentialSlot,
        replay: Arc<super::replay::SessionReplay>,
    ) -> Arc<Self> {
        let routes = Arc::new(ClientRoutes::new(&backend.name, call_deadline(&backend, &timing)));
        let series = metrics().backends.series(&backend.name);
        let lanes = super::lanes::Lanes::new(backend.session_per_worker);
        let upstream = Arc::new(Self {
            backend,
            timing,
            max_message_bytes,
            connection: watch::Sender::new(None),
            lanes,
            listing: watch::Sender::new(Listing::default()),
            notifications,
            status: Mutex::new(Status {
                state: State::Connecting,
                since: SystemTime::now(),
                last_error: None,
                connects: 0,
                connected_since: None,
                identity: None,
                lanes: 0,
            }),
            reconnect: Notify::new(),
            stop: CancellationToken::new(),
            routes,
            metrics: series,
            down: std::sync::atomic::AtomicBool::new(false),
            catalog,
            replay,
            retiring: std::sync::atomic::AtomicBool::new(false),
        });
        // What lanes' backend sessions send that is not for a call goes to the supervisor.
        let (lane_events_tx, lane_events) = mpsc::channel(64);
        if upstream.backend.session_per_worker {
            super::lanes::start(&upstream, &lane_events_tx);
        }
        tokio::spawn(lifecycle::supervise(upstream.clone(), changed, lane_events));
        upstream
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.backend.name
    }

    /// The last known tools, as the upstream described them.
    pub fn tools(&self) -> Arc<Vec<Value>> {
        self.listing.borrow().tools.clone()
    }

    /// The last known lists of every kind.
    pub fn listing(&self) -> Listing {
        self.listing.borrow().clone()
    }

    /// Requests sent to this backend so far, and how many failed (for status).
    pub fn request_counts(&self) -> (u64, u64) {
        self.metrics.counts()
    }

    /// A health snapshot.
    pub fn status(&self) -> Status {
        let status = self.status.lock().expect("status lock").clone();
        Status { lanes: self.lanes.connected(), ..status }
    }

    /// The deadline of one call to this upstream.
    pub fn call_timeout(&self) -> Duration {
        call_deadline(&self.backend, &self.timing)
    }

    /// How long a connection attempt, handshake included, may take.
    pub(super) fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timing.connect_timeout_secs)
    }

    /// The delays between connection attempts, the supervisor's and each lane's: from
    /// `backoff_initial_ms` doubling up to `backoff_max_ms`, with jitter, never giving up.
    pub(super) fn reconnect_delays(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.timing.backoff_initial_ms))
            .with_max_delay(Duration::from_millis(self.timing.backoff_max_ms))
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Drops the current connection and connects again at once.
    pub fn request_reconnect(&self) {
        self.reconnect.notify_one();
    }

    /// Stops the upstream for the changed entry that replaces it: new calls go to that one,
    /// and the calls in flight here finish on their connections (within their deadline), which
    /// close then.
    pub fn replace(&self) {
        self.retiring.store(true, std::sync::atomic::Ordering::Release);
        // Not forgotten from the metrics: the new one goes on with the same series.
        self.stop.cancel();
    }

    /// Stops the upstream of a backend removed from the configuration (or renamed): new calls
    /// fail with `Gone`, and the calls in flight finish on their connections (within their
    /// deadline), which close then, as a replaced one's do.
    pub fn remove(&self) {
        self.metrics.forget();
        self.replace();
    }

    /// Whether [`Upstream::replace`] or [`Upstream::remove`] stopped it: its connections retire
    /// instead of closing.
    pub(super) fn is_retiring(&self) -> bool {
        self.retiring.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops the supervisor and closes the connection (the relay is stopping); waiting
    /// requests fail with `Gone`.
    pub fn stop(&self) {
        self.metrics.forget();
        self.stop.cancel();
    }

    /// Sends a request on the relay's own behalf (see [`Upstream::request_for`]).
    pub async fn request(
        &self,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        self.request_for(method, params, timeout, None).await.map(Payload::into_value)
    }

    /// Sends a request, waiting for a live connection first. If the connection drops before the
    /// answer, the request is sent once more, on the next connection (never twice on one, and
    /// never a third time: a call that crashes its backend would otherwise run without end);
    /// all of it within `timeout`. With `related`, requests the upstream makes meanwhile
    /// (sampling, elicitation) go to that client.
    pub async fn request_for(
        &self,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
        related: Option<&Related>,
    ) -> Result<Payload, UpstreamError> {
        self.request_as(method, params.map(Payload::from), timeout, related, None).await
    }

    /// [`Upstream::request_for`], the request carrying `credential` (its caller's own).
    pub async fn request_as(
        &self,
        method: &str,
        mut params: Option<Payload>,
        timeout: Duration,
        related: Option<&Related>,
        credential: Option<&super::http::Credential>,
    ) -> Result<Payload, UpstreamError> {
        let _route = related.map(|related| self.routes.register(&mut params, related));
        let started = std::time::Instant::now();
        let attempt = async {
            let mut connection = self.connection.subscribe();
            let mut lost_on: Option<Arc<Connection>> = None;
            // A request waits this long for a connection (a restart), not its whole deadline,
            // counted from when it has to wait (again from the loss, for a call whose connection
            // was lost under it, however long it had run). Nearly every call finds its
            // connection at once and makes no timer.
            let mut patience = std::pin::pin!(None::<tokio::time::Sleep>);
            loop {
                let conn = loop {
                    if self.stop.is_cancelled() {
                        return Err(UpstreamError::Gone(self.name().to_owned()));
                    }
                    let not_lost = |c: &Arc<Connection>| !lost_on.as_ref().is_some_and(|lost| Arc::ptr_eq(lost, c));
                    // A tool call takes its worker's own connection when it has one.
                    if let Some(lane) = self.lanes.for_call(method).filter(not_lost) {
                        break lane;
                    }
                    let live = connection.borrow_and_update().clone().filter(|c| !c.is_closed());
                    if let Some(conn) = live.filter(not_lost) {
                        break conn;
                    }
                    // A new request fails at once while the backend is known down; one whose
                    // connection was lost under it waits (up to `patience`) to be re-sent.
                    if lost_on.is_none() && self.down.load(std::sync::atomic::Ordering::Acquire) {
                        return Err(self.is_down());
                    }
                    if patience.is_none() {
                        patience.set(Some(tokio::time::sleep(self.connect_timeout())));
                    }
                    let waited_long_enough = patience.as_mut().as_pin_mut().expect("set above");
                    tokio::select! {
                        changed = connection.changed() => if changed.is_err() {
                            return Err(UpstreamError::Gone(self.name().to_owned()));
                        },
                        _ = self.stop.cancelled() => {}
                        () = waited_long_enough => return Err(UpstreamError::Down {
                            backend: self.name().to_owned(),
                            reason: format!("not connected within connect_timeout_secs ({:.1}s)", self.timing.connect_timeout_secs),
                        }),
                    }
                };
                match conn.request_as(method, params.as_ref(), credential, related).await {
                    Err(UpstreamError::ConnectionLost) if lost_on.is_some() => {
                        tracing::warn!(backend = self.name(), method, "connection lost again mid-request; giving up");
                        return Err(UpstreamError::LostTwice(self.name().to_owned()));
                    }
                    Err(UpstreamError::ConnectionLost) => {
                        tracing::info!(
                            backend = self.name(),
                            method,
                            "connection lost mid-request; re-sending once when the upstream is back"
                        );
                        lost_on = Some(conn);
                        patience.set(None);
                    }
                    other => return other,
                }
            }
        };
        let outcome = tokio::time::timeout(timeout, attempt).await.unwrap_or_else(|_| {
            Err(UpstreamError::Timeout { backend: self.name().to_owned(), secs: timeout.as_secs_f64() })
        });
        if outcome.is_ok() {
            self.replay.note(method, params.as_ref());
            if method == "logging/setLevel" {
                self.lanes.set_log_level(&self.replay, self.name()).await;
            }
        }
        let kind = match &outcome {
            Ok(_) | Err(UpstreamError::Rpc(_)) => BackendOutcomeKind::Ok,
            Err(UpstreamError::Timeout { .. }) => BackendOutcomeKind::Timeout,
            Err(UpstreamError::Down { .. }) => BackendOutcomeKind::Down,
            Err(_) => BackendOutcomeKind::Error,
        };
        self.metrics.request(kind, started.elapsed());
        outcome
    }

    /// The refusal of a request while the backend is down, with its last error.
    fn is_down(&self) -> UpstreamError {
        let last = self.status.lock().expect("status lock").last_error.clone();
        UpstreamError::Down {
            backend: self.name().to_owned(),
            reason: format!(
                "its last connection attempt failed ({}); calls fail at once until it is back",
                last.as_deref().unwrap_or("no reason given")
            ),
        }
    }

    /// Changes the status, and tells the metrics whether the backend is ready now.
    fn set_status(&self, change: impl FnOnce(&mut Status)) {
        let mut status = self.status.lock().expect("status lock");
        let before = status.state;
        change(&mut status);
        if status.state != before {
            status.since = SystemTime::now();
        }
        self.metrics.ready(status.state == State::Ready);
    }

    async fn open(&self) -> Result<(Connection, mpsc::Receiver<Notification>), UpstreamError> {
        let name = self.name();
        match &self.backend.transport {
            Transport::WebSocket { url, headers } => {
                websocket::connect(name, url, headers, self.max_message_bytes, self.routes.clone()).await
            }
            Transport::Http { url, headers } => {
                let headers = super::catalog_credential::connection_headers(&self.catalog, &self.backend, headers)
                    .await
                    .map_err(UpstreamError::Connect)?;
                http::connect(url, &headers, self.connect_timeout(), self.max_message_bytes, self.routes.clone())
            }
            Transport::Stdio { command, args, env, inherit_env, cwd } => stdio::connect(
                name,
                stdio::StdioCommand { command, args, env, inherit_env, cwd: cwd.as_ref() },
                self.max_message_bytes,
                self.routes.clone(),
            ),
        }
    }

    /// Connects and performs the handshake and first listing, within the connect timeout.
    async fn establish(
        &self,
    ) -> Result<(Arc<Connection>, mpsc::Receiver<Notification>, ServerIdentity, Listing), UpstreamError> {
        self.within_connect_timeout(async {
            let (conn, events, identity) = self.open_initialized().await?;
            match handshake::list_everything(&conn, &identity).await {
                Ok(listing) => {
                    self.replay.replay(&conn, self.name()).await;
                    Ok((conn, events, identity, listing))
                }
                Err(e) => {
                    conn.close().await;
                    Err(e)
                }
            }
        })
        .await
    }

    /// A new connection that has answered `initialize` (closed again when it did not), with its
    /// notifications: how the supervisor's connections and the lanes' ([`super::lanes`]) start.
    pub(super) async fn open_initialized(
        &self,
    ) -> Result<(Arc<Connection>, mpsc::Receiver<Notification>, ServerIdentity), UpstreamError> {
        let (conn, events) = self.open().await?;
        let conn = Arc::new(conn);
        match handshake::initialize(&conn).await {
            Ok(identity) => Ok((conn, events, identity)),
            Err(e) => {
                conn.close().await;
                Err(e)
            }
        }
    }

    /// `attempt`, a connection's set-up, within `connect_timeout_secs`.
    pub(super) async fn within_connect_timeout<T>(
        &self,
        attempt: impl std::future::Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let timeout = self.connect_timeout();
        tokio::time::timeout(timeout, attempt).await.unwrap_or_else(|_| {
            Err(UpstreamError::Connect(format!("no complete handshake within {:.1}s", timeout.as_secs_f64())))
        })
    }

    fn publish(&self, listing: Listing, changed: &watch::Sender<u64>) {
        self.listing.send_replace(listing);
        changed.send_modify(|generation| *generation += 1);
    }
}

/// The deadline of one call to `backend`: its own, or the relay-wide one.
fn call_deadline(backend: &Backend, timing: &UpstreamConfig) -> Duration {
    Duration::from_secs_f64(backend.call_timeout_secs.unwrap_or(timing.call_timeout_secs))
}
