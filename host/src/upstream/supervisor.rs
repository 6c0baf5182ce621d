//! One upstream and the task that keeps it connected.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use serde_json::Value;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use super::handshake::{self, Listing, ServerIdentity};
use super::routes::ClientRoutes;
use super::{UpstreamError, http, stdio, websocket};
use crate::config::{Backend, Transport, UpstreamConfig};
use crate::mcp::ListKind;
use crate::mcp::{Notification, Payload, Related};
use crate::metrics::{BackendMetrics, BackendOutcomeKind, metrics};

/// Where the supervisor is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// First connection attempt in progress.
    Connecting,
    /// Connected and initialized; requests flow.
    Ready,
    /// Was connected, lost it; waiting out the backoff before the next attempt.
    Reconnecting,
    /// Never connected: every attempt so far failed (`last_error` says why).
    Down,
    /// Removed from the configuration or the relay is stopping.
    Stopped,
}

impl State {
    /// Lower-case name for status output.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Ready => "ready",
            State::Reconnecting => "reconnecting",
            State::Down => "down",
            State::Stopped => "stopped",
        }
    }
}

/// A snapshot of an upstream's health, for status output.
#[derive(Debug, Clone)]
pub struct Status {
    /// Current state.
    pub state: State,
    /// Since when it is in that state.
    pub since: SystemTime,
    /// The last connect or handshake error, if any.
    pub last_error: Option<String>,
    /// How many times a connection was established.
    pub connects: u64,
    /// When the current connection was established.
    pub connected_since: Option<SystemTime>,
    /// `serverInfo` and version from the upstream's `initialize` answer.
    pub identity: Option<ServerIdentity>,
    /// Other workers' own connections to it, for their tool calls ([`super::lanes`]).
    pub lanes: usize,
}

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
    ) -> Arc<Self> {
        let routes = Arc::new(ClientRoutes::new(&backend.name, call_deadline(&backend, &timing)));
        let series = metrics().backends.series(&backend.name);
        let upstream = Arc::new(Self {
            backend,
            timing,
            max_message_bytes,
            connection: watch::Sender::new(None),
            lanes: super::lanes::Lanes::new(),
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
        });
        // What lanes' backend sessions send that is not for a call goes to the supervisor.
        let (lane_events_tx, lane_events) = mpsc::channel(64);
        if upstream.backend.session_per_worker {
            super::lanes::start(&upstream, &lane_events_tx);
        }
        tokio::spawn(supervise(upstream.clone(), changed, lane_events));
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

    /// The first and the longest delay between connection attempts.
    pub(super) fn backoff_bounds(&self) -> (Duration, Duration) {
        (Duration::from_millis(self.timing.backoff_initial_ms), Duration::from_millis(self.timing.backoff_max_ms))
    }

    /// Drops the current connection and connects again at once.
    pub fn request_reconnect(&self) {
        self.reconnect.notify_one();
    }

    /// Stops the supervisor and closes the connection; waiting requests fail with `Gone`.
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
        self.request_as(method, params, timeout, related, None).await
    }

    /// [`Upstream::request_for`], the request carrying `credential` (its caller's own).
    pub async fn request_as(
        &self,
        method: &str,
        mut params: Option<Value>,
        timeout: Duration,
        related: Option<&Related>,
        credential: Option<&super::http::Credential>,
    ) -> Result<Payload, UpstreamError> {
        let _route = related.map(|related| self.routes.register(&mut params, related));
        let started = std::time::Instant::now();
        let attempt = async {
            let mut connection = self.connection.subscribe();
            let mut lost_on: Option<Arc<Connection>> = None;
            // A request waits this long for a connection (a restart), not its whole deadline.
            let patience = tokio::time::sleep(Duration::from_secs_f64(self.timing.connect_timeout_secs));
            tokio::pin!(patience);
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
                    tokio::select! {
                        changed = connection.changed() => if changed.is_err() {
                            return Err(UpstreamError::Gone(self.name().to_owned()));
                        },
                        _ = self.stop.cancelled() => {}
                        () = &mut patience => return Err(UpstreamError::Down {
                            backend: self.name().to_owned(),
                            reason: format!("not connected within connect_timeout_secs ({:.1}s)", self.timing.connect_timeout_secs),
                        }),
                    }
                };
                match conn.request_as(method, params.as_ref(), credential).await {
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
                    }
                    other => return other,
                }
            }
        };
        let outcome = tokio::time::timeout(timeout, attempt).await.unwrap_or_else(|_| {
            Err(UpstreamError::Timeout { backend: self.name().to_owned(), secs: timeout.as_secs_f64() })
        });
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

    pub(super) async fn open(&self) -> Result<(Connection, mpsc::Receiver<Notification>), UpstreamError> {
        let name = self.name();
        match &self.backend.transport {
            Transport::WebSocket { url, headers } => {
                websocket::connect(name, url, headers, self.max_message_bytes, self.routes.clone()).await
            }
            Transport::Http { url, headers } => {
                let headers = super::catalog_credential::connection_headers(&self.catalog, &self.backend, headers)
                    .await
                    .map_err(UpstreamError::Connect)?;
                http::connect(
                    url,
                    &headers,
                    Duration::from_secs_f64(self.timing.connect_timeout_secs),
                    self.max_message_bytes,
                    self.routes.clone(),
                )
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
        let timeout = Duration::from_secs_f64(self.timing.connect_timeout_secs);
        let attempt = async {
            let (conn, events) = self.open().await?;
            let conn = Arc::new(conn);
            let setup = async {
                let identity = handshake::initialize(&conn).await?;
                let listing = handshake::list_everything(&conn, &identity).await?;
                Ok::<_, UpstreamError>((identity, listing))
            };
            match setup.await {
                Ok((identity, listing)) => Ok((conn, events, identity, listing)),
                Err(e) => {
                    conn.close().await;
                    Err(e)
                }
            }
        };
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

/// How long a connection must stay up before the reconnect backoff starts again from its
/// first delay.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The supervisor loop: connect, serve, and on loss reconnect with capped backoff and jitter.
async fn supervise(
    upstream: Arc<Upstream>,
    changed: watch::Sender<u64>,
    mut lane_events: mpsc::Receiver<Notification>,
) {
    let name = upstream.name().to_owned();
    let backoff_builder = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(upstream.timing.backoff_initial_ms))
        .with_max_delay(Duration::from_millis(upstream.timing.backoff_max_ms))
        .with_jitter()
        .without_max_times();
    let mut backoff = backoff_builder.build();
    loop {
        let established = tokio::select! {
            result = upstream.establish() => result,
            _ = upstream.stop.cancelled() => break,
        };
        match established {
            Ok((conn, mut events, identity, listing)) => {
                let connected = Instant::now();
                tracing::info!(backend = %name, tools = listing.tools.len(), prompts = listing.prompts.len(), resources = listing.resources.len(), server = %identity.server_info, version = %identity.protocol_version, "upstream ready");
                // Lists and connection first: once the status says ready, calls route.
                upstream.publish(listing, &changed);
                upstream.connection.send_replace(Some(conn.clone()));
                upstream.down.store(false, std::sync::atomic::Ordering::Release);
                upstream.set_status(|s| {
                    s.state = State::Ready;
                    s.last_error = None;
                    s.connects += 1;
                    s.connected_since = Some(SystemTime::now());
                    s.identity = Some(identity);
                });
                let reason = serve(&upstream, &conn, [&mut events, &mut lane_events], &changed).await;
                upstream.connection.send_replace(None);
                conn.close().await;
                // Only a connection that stayed up a while earns a quick reconnect: a backend
                // that dies right after its handshake keeps backing off.
                if connected.elapsed() >= STABLE_AFTER {
                    backoff = backoff_builder.build();
                }
                if upstream.stop.is_cancelled() {
                    break;
                }
                tracing::warn!(backend = %name, reason, "upstream connection ended; reconnecting");
                upstream.metrics.reconnect();
                upstream.set_status(|s| {
                    s.state = State::Reconnecting;
                    s.connected_since = None;
                    s.last_error = Some(reason.to_owned());
                });
            }
            Err(e) => {
                // URLs in the error lose their user info and query values, like everywhere
                // else the relay shows a backend.
                let error = upstream.backend.redact(&e.to_string());
                tracing::warn!(backend = %name, %error, "upstream connect failed");
                upstream.set_status(|s| {
                    s.state = if s.connects > 0 { State::Reconnecting } else { State::Down };
                    s.last_error = Some(error);
                });
                // Requests waiting for a connection learn it is not coming soon.
                upstream.down.store(true, std::sync::atomic::Ordering::Release);
                upstream.connection.send_replace(None);
            }
        }
        let delay = backoff.next().unwrap_or(Duration::from_millis(upstream.timing.backoff_max_ms));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = upstream.reconnect.notified() => {}
            _ = upstream.stop.cancelled() => break,
        }
    }
    upstream.set_status(|s| s.state = State::Stopped);
    tracing::info!(backend = %name, "upstream stopped");
}

/// Lists again what a `list_changed` notification says changed, each list within the connect
/// timeout, and publishes the result.
async fn relist(upstream: &Upstream, conn: &Connection, method: &str, changed: &watch::Sender<u64>) {
    let deadline = Duration::from_secs_f64(upstream.timing.connect_timeout_secs);
    let mut listing = upstream.listing();
    for &kind in ListKind::changed_by(method) {
        match tokio::time::timeout(deadline, handshake::list(conn, kind)).await {
            Ok(Ok(items)) => {
                tracing::info!(
                    backend = upstream.name(),
                    list = kind.method(),
                    items = items.len(),
                    "upstream list changed"
                );
                listing.set(kind, items);
            }
            Ok(Err(e)) => {
                tracing::warn!(backend = upstream.name(), list = kind.method(), error = %upstream.backend.redact(&e.to_string()), "re-listing failed")
            }
            Err(_) => tracing::warn!(
                backend = upstream.name(),
                list = kind.method(),
                secs = deadline.as_secs_f64(),
                "re-listing got no answer in time; the last list stays"
            ),
        }
    }
    upstream.publish(listing, changed);
}

/// Serves one connection until it ends; returns why. `events` are its notifications and those
/// of the lanes ([`super::lanes`]).
async fn serve(
    upstream: &Upstream,
    conn: &Connection,
    events: [&mut mpsc::Receiver<Notification>; 2],
    changed: &watch::Sender<u64>,
) -> &'static str {
    let started = Instant::now();
    let [own, lanes] = events;
    loop {
        let notification = tokio::select! {
            _ = upstream.stop.cancelled() => return "stopped",
            _ = upstream.reconnect.notified() => return "reconnect requested",
            _ = conn.closed() => return "connection closed",
            event = own.recv() => match event {
                None => return "connection closed",
                Some(n) => n,
            },
            Some(n) = lanes.recv() => n,
        };
        if !ListKind::changed_by(&notification.method).is_empty() {
            // The re-list has a deadline and gives way to stop, reconnect and close: a
            // backend that never answers it cannot freeze its supervisor.
            tokio::select! {
                _ = relist(upstream, conn, &notification.method, changed) => {}
                _ = upstream.stop.cancelled() => return "stopped",
                _ = upstream.reconnect.notified() => return "reconnect requested",
                _ = conn.closed() => return "connection closed",
            }
        } else {
            tracing::trace!(backend = upstream.name(), method = %notification.method, up_secs = started.elapsed().as_secs(), "upstream notification");
            let _ = upstream.notifications.send(UpstreamEvent { backend: upstream.name().to_owned(), notification });
        }
    }
}
