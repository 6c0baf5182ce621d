//! The session driven in-process, no socket: method dispatch, the admin rule, the protocol
//! rules a session enforces itself, and the stateless differences.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Session, SessionFactory};
use crate::access::{Authenticated, Principal, TransportKind};
use crate::admin::RelayTools;
use crate::admission::AddressKey;
use crate::config::{BackendStore, UpstreamConfig};
use crate::lifecycle::Lifecycle;
use crate::mcp::envelope::Envelope;
use crate::mcp::{Limits, Message, Request, Response};
use crate::plugins::{KvStore, NoBackends, Plugins};
use crate::policy::Policy;
use crate::router::Router;
use crate::upstream::Upstreams;

/// Where the sessions of these tests connect from.
fn here() -> AddressKey {
    AddressKey::new(IpAddr::V4(Ipv4Addr::LOCALHOST), false)
}

/// A factory over no backends and no plugins, with `limits`.
async fn factory(dir: &std::path::Path, limits: Limits) -> SessionFactory {
    let upstreams = Arc::new(Upstreams::new(UpstreamConfig::default(), limits.max_message_bytes));
    let plugins = Plugins::load(&[], &dir.join("relay.yaml"), None, Arc::new(KvStore::default()), Arc::new(NoBackends))
        .await
        .expect("no plugins load");
    let lifecycle = Arc::new(Lifecycle::new("test".into()));
    let store = BackendStore::new(dir.join("backends.yaml"));
    let tools = Arc::new(RelayTools::new(
        upstreams.clone(),
        store,
        lifecycle.clone(),
        plugins.clone(),
        Vec::new(),
        Arc::default(),
        crate::credentials::Credentials::new(
            crate::credentials::Vault::from_env(Arc::default()),
            Some(plugins.clone()),
        ),
    ));
    SessionFactory {
        router: Router::new(upstreams, tools, plugins.clone()),
        policy: Arc::new(Policy::new(plugins.clone())),
        plugins,
        lifecycle,
        limits: Arc::new(limits),
        open_admin: false,
        per_principal: Arc::default(),
        per_address: Arc::default(),
        auth_throttle: Arc::new(crate::auth_throttle::AuthThrottle::new(20, std::time::Duration::from_secs(60))),
    }
}

/// An open-access newline session from a factory over `limits` (and the directory the factory
/// keeps its files in, removed when dropped).
async fn open_session(limits: Limits) -> (tempfile::TempDir, SessionFactory, Arc<Session>) {
    let dir = tempfile::tempdir().unwrap();
    let factory = factory(dir.path(), limits).await;
    let session =
        factory.open(TransportKind::Line, Authenticated::lasting(Principal::open_access(false)), here(), None).unwrap();
    (dir, factory, session)
}

async fn ask(session: &Arc<Session>, id: u64, method: &str, params: Value) -> Response {
    let request = Request { id: id.into(), method: method.into(), params: Some(params.into()) };
    session.handle(Message::Request(request), None).await.expect("a request is answered")
}

fn code(response: &Response) -> i64 {
    response.outcome.as_ref().expect_err("an error").code
}

#[tokio::test]
async fn dispatches_methods_and_enforces_its_own_rules() {
    let (_dir, _factory, session) = open_session(Limits::default()).await;
    let init = ask(&session, 1, "initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}})).await;
    assert_eq!(init.outcome.unwrap()["protocolVersion"], "2025-06-18");
    let tools = ask(&session, 2, "tools/list", json!({})).await.outcome.unwrap();
    assert!(tools["tools"].as_array().unwrap().iter().any(|t| t["name"] == "relay_get_status"));
    assert_eq!(code(&ask(&session, 3, "tools/list", json!({"cursor": "x"})).await), -32602, "no cursors");
    assert_eq!(code(&ask(&session, 4, "nope/nope", json!({})).await), -32601);
    // Open mode is not admin: the policy chain refuses the tools that change the relay.
    let refused =
        ask(&session, 5, "tools/call", json!({"name": "relay_reconnect_server", "arguments": {"name": "x"}})).await;
    assert_eq!(code(&refused), -32013);
    let status = ask(&session, 6, "tools/call", json!({"name": "relay_get_status", "arguments": {}})).await;
    let status = status.outcome.unwrap();
    assert_eq!(status["structuredContent"]["instance"], "test");
}

/// (An auth plugin's principals are capped: `security::no_principal_can_use_up_the_relays_sessions`.)
#[tokio::test]
async fn an_open_relays_sessions_are_capped_per_address_not_as_one_principal() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { max_sessions_per_principal: 1, max_sessions_per_address: 2, ..Limits::default() };
    let factory = factory(dir.path(), limits).await;
    let anonymous = || Authenticated::lasting(Principal::open_access(false));
    let there = AddressKey::new("192.0.2.7".parse().unwrap(), false);
    let _held = [
        factory.open(TransportKind::Line, anonymous(), here(), None).unwrap(),
        factory.open(TransportKind::Line, anonymous(), here(), None).unwrap(),
    ];
    let Err(refused) = factory.open(TransportKind::Line, anonymous(), here(), None) else {
        panic!("a third session from one address over a cap of 2");
    };
    assert!(refused.message.contains("address"), "{}", refused.message);
    assert!(factory.open(TransportKind::Line, anonymous(), there, None).is_ok(), "another address is not refused");
}

#[tokio::test]
async fn stateless_sessions_refuse_the_handshake_era_methods() {
    let dir = tempfile::tempdir().unwrap();
    let factory = factory(dir.path(), Limits::default()).await;
    let envelope =
        Envelope { protocol_version: "2026-07-28".into(), client_name: None, capabilities: json!({}), log_level: None };
    let session =
        factory.open_stateless(Authenticated::lasting(Principal::open_access(false)), here(), &envelope).unwrap();
    for method in ["initialize", "ping", "logging/setLevel"] {
        assert_eq!(code(&ask(&session, 1, method, json!({})).await), -32601, "{method}");
    }
    let discover = ask(&session, 2, "server/discover", json!({})).await.outcome.unwrap();
    assert_eq!(discover["supportedVersions"][0], "2026-07-28");
}

/// An idle connection's task holds the driver's future: it must stay small (the request
/// handler's much larger future is boxed or spawned), or every held session costs kilobytes.
/// It writes to the client itself (a write in progress is part of it), so a connection has no
/// writer task of its own. 1,424 bytes since its queue's receiving side is flume's (32 bytes
/// where tokio's was 8, and 800 bytes less on the heap) and a message's params may be text.
#[tokio::test]
async fn an_idle_connection_holds_a_small_driver() {
    let (_dir, factory, session) = open_session(Limits::default()).await;
    let mut conn = Scripted::new(futures::stream::pending());
    let driver = super::drive(session, &mut conn, &factory.limits);
    let size = std::mem::size_of_val(&driver);
    assert!(size <= 1440, "the driver's future is {size} bytes");
}

/// A request's future is boxed once per call, which copies it whole: what only some requests
/// run (other methods than `tools/call`, policy and interceptor plugins, the relay's own tools,
/// adapters, per-user credentials, an HTTP backend's exchange, list hooks) is boxed where it
/// runs, so it does not make every call's future as large as itself (8 KB before).
#[tokio::test]
async fn a_requests_future_is_small() {
    let (_dir, _factory, session) = open_session(Limits::default()).await;
    let request = Request { id: 1.into(), method: "tools/call".into(), params: Some(json!({"name": "x"}).into()) };
    let handling = session.handle(Message::Request(request), None);
    let size = std::mem::size_of_val(&handling);
    assert!(size <= 3200, "a request's future is {size} bytes");
}

/// A connection that sends nothing for the idle timeout is closed; one that keeps talking is
/// not, however long it lives.
#[tokio::test]
async fn the_driver_closes_a_silent_connection_and_keeps_a_chatty_one() {
    use futures::StreamExt as _;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { idle_timeout_secs: 1, ..Limits::default() };
    let factory = factory(dir.path(), limits).await;
    let open = || {
        factory.open(TransportKind::Line, Authenticated::lasting(Principal::open_access(false)), here(), None).unwrap()
    };

    let mut conn = Scripted::new(futures::stream::pending());
    let silent = super::drive(open(), &mut conn, &factory.limits);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), silent).await.expect("closed when idle");
    assert!(started.elapsed() >= Duration::from_secs(1));

    // A notification every 300 ms for 3 s: never a second of silence.
    let ping =
        || Ok(Message::Notification(crate::mcp::Notification { method: "notifications/x".into(), params: None }));
    let chatty = futures::stream::iter((0..10).map(move |_| ping()))
        .then(|message| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            message
        })
        .chain(futures::stream::pending());
    let started = Instant::now();
    super::drive(open(), &mut Scripted::new(Box::pin(chatty)), &factory.limits).await;
    let lived = started.elapsed();
    assert!(lived >= Duration::from_secs(3), "closed after {lived:?} of a chatty connection");
}

/// A session whose credential expires is ended then ([`super::Ended::CredentialExpired`]),
/// whether it is silent or busy, long before its idle timeout; the one timer the driver keeps
/// serves both.
#[tokio::test]
async fn the_driver_ends_a_session_when_its_credential_expires() {
    use futures::StreamExt as _;
    use std::time::{Duration, Instant, SystemTime};

    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { idle_timeout_secs: 600, ..Limits::default() };
    let factory = factory(dir.path(), limits).await;
    let expiring = || {
        let mut authenticated = Authenticated::lasting(Principal::open_access(false));
        authenticated.expires_at = Some(SystemTime::now() + Duration::from_millis(800));
        factory.open(TransportKind::Line, authenticated, here(), None).unwrap()
    };

    let mut conn = Scripted::new(futures::stream::pending());
    let silent = super::drive(expiring(), &mut conn, &factory.limits);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), silent).await.expect("ended at expiry");
    assert_eq!(ended, super::Ended::CredentialExpired);
    assert!(started.elapsed() >= Duration::from_millis(700), "ended after {:?}", started.elapsed());

    // Talking every 100 ms moves the idle deadline, never the expiry.
    let ping =
        || Ok(Message::Notification(crate::mcp::Notification { method: "notifications/x".into(), params: None }));
    let chatty = futures::stream::iter((0..100).map(move |_| ping())).then(|message| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        message
    });
    let mut conn = Scripted::new(Box::pin(chatty));
    let busy = super::drive(expiring(), &mut conn, &factory.limits);
    let ended = tokio::time::timeout(Duration::from_secs(5), busy).await.expect("ended at expiry");
    assert_eq!(ended, super::Ended::CredentialExpired);
}

/// The driver reads its connection when the connection woke it (or has just yielded a
/// message), not on every turn of its loop: a read that finds nothing costs a WebSocket a
/// zeroed buffer and its waker registrations. Twenty pings, 5 ms apart: each costs the read
/// that yields it and the one that finds the next not there yet (ungated, three: the loop's
/// turn that sends the answer reads again).
#[tokio::test]
async fn the_driver_reads_its_connection_only_when_there_may_be_input() {
    use futures::StreamExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const PINGS: usize = 20;
    // The script then stays silent, and the driver ends at the idle timeout.
    let (_dir, factory, session) = open_session(Limits { idle_timeout_secs: 1, ..Limits::default() }).await;
    let ping = |id: usize| Ok(Message::Request(Request { id: id.into(), method: "ping".into(), params: None }));
    let spaced = futures::stream::iter((0..PINGS).map(ping)).then(|message| async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        message
    });
    let mut spaced = Box::pin(spaced.chain(futures::stream::pending()));
    let polls = Arc::new(AtomicUsize::new(0));
    let counted = polls.clone();
    let inbound = futures::stream::poll_fn(move |cx| {
        counted.fetch_add(1, Ordering::Relaxed);
        spaced.poll_next_unpin(cx)
    });
    let mut conn = Scripted::new(Box::pin(inbound));
    super::drive(session, &mut conn, &factory.limits).await;
    assert_eq!(conn.writes.iter().flatten().count(), PINGS, "every ping answered");
    let polls = polls.load(Ordering::Relaxed);
    assert!(polls <= 2 * PINGS + 1, "{polls} reads for {PINGS} messages");
}

/// A connection for the driver: the client's messages from a script, what the driver writes
/// recorded (each flush closes a write).
pub(super) struct Scripted<S> {
    inbound: S,
    /// Messages fed, not yet flushed.
    fed: Vec<String>,
    /// Each flush's messages, in order.
    pub(super) writes: Vec<Vec<String>>,
}

impl<S> Scripted<S> {
    pub(super) fn new(inbound: S) -> Self {
        Self { inbound, fed: Vec::new(), writes: Vec::new() }
    }
}

impl<S: futures::Stream<Item = super::Inbound> + Unpin> futures::Stream for Scripted<S> {
    type Item = super::Inbound;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<super::Inbound>> {
        use futures::StreamExt as _;
        self.get_mut().inbound.poll_next_unpin(cx)
    }
}

impl<S: Send> super::Outbound for Scripted<S> {
    /// The message's text, as a transport would write it.
    type Encoded = String;

    fn encode(message: Message) -> String {
        message.to_text()
    }

    async fn feed(&mut self, text: String) -> Result<(), crate::mcp::Closed> {
        self.fed.push(text);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), crate::mcp::Closed> {
        if !self.fed.is_empty() {
            self.writes.push(std::mem::take(&mut self.fed));
        }
        Ok(())
    }
}

/// The drain's refusals, a URL elicitation and the authentication throttle are not failures of
/// the relay: `HighErrorRate` (`upstream|timeout|internal|busy`) must not read them as such.
#[test]
fn refusals_that_are_not_failures_are_not_counted_as_the_relays() {
    use crate::mcp::error_codes;
    assert_eq!(super::methods::error_kind(error_codes::SHUTTING_DOWN), "draining");
    assert_eq!(super::methods::error_kind(error_codes::URL_ELICITATION_REQUIRED), "client");
    assert_eq!(super::methods::error_kind(error_codes::AUTH_THROTTLED), "denied");
    assert_eq!(super::methods::error_kind(error_codes::INTERNAL_ERROR), "internal");
}
