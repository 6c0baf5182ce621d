//! The accept loop and the first-byte sniff. Every connection counts against its address's cap
//! on unauthenticated connections until it has authenticated (newline), or (HTTP) sent a whole
//! request head on an open relay or had a request vouched for with auth on, and must get that
//! far within `limits.handshake_timeout_secs`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::prefixed::Prefixed;
use super::tcp_write::TcpWrite;
use super::write_deadline::WriteDeadline;
use super::{TransportState, line, tls};
use crate::access::Peer;
use crate::admission::{AddressKey, CountGuard};

/// How long a refused connection's first byte is waited for, to answer in its protocol.
const REFUSAL_PEEK: Duration = Duration::from_millis(250);

/// The most of a new connection's first bytes read to tell its protocol (a client's first
/// message or request head usually fits: the transport then reads no more for it).
const FIRST_READ: usize = 2048;

/// Counts a connection as not yet authenticated until dropped.
pub type PendingGuard = CountGuard<AddressKey>;

/// With auth on, an HTTP connection's [`PendingGuard`] while none of its requests was vouched
/// for (a credential the relay accepted): handed to each request, whose handler calls
/// [`Unvouched::vouch`] once it was. Counted only until its first request head, a client
/// sending `GET /healthz` now and then held any number of connections without a token.
#[derive(Clone)]
pub(super) struct Unvouched(Arc<Mutex<Option<PendingGuard>>>);

impl Unvouched {
    /// The request's credential was accepted: the connection is no longer pending.
    pub(super) fn vouch(&self) {
        self.0.lock().expect("pending lock").take();
    }

    /// Whether no request of the connection was vouched for yet.
    fn is_pending(&self) -> bool {
        self.0.lock().expect("pending lock").is_some()
    }
}

/// Accepts connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<TransportState>, shutdown: CancellationToken) {
    let router = super::http::app(state.clone());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // On Linux the listener's `TCP_NODELAY` is inherited ([`crate::server`]'s `listen`).
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true);
        let Some(pending) = pending_slot(&state, &Peer::at(peer, false)) else {
            tokio::spawn(refuse_pending(stream));
            continue;
        };
        dispatch(stream, peer, state.clone(), router.clone(), pending);
    }
}

/// Serves a connection on the worker [`crate::workers::assign`] picks: whichever worker's accept
/// wins the race, a burst of connections does not all land on it.
fn dispatch(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<TransportState>,
    router: axum::Router,
    pending: PendingGuard,
) {
    let assignment = crate::workers::assign();
    let worker = assignment.worker();
    let serve = move |stream: TcpStream| async move {
        let _assignment = assignment;
        if let Err(e) = handle(stream, peer, state, router, pending).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    };
    if worker == crate::workers::current() {
        tokio::spawn(serve(stream));
        return;
    }
    // Moved to the other worker's runtime, which watches its socket from then on.
    match stream.into_std() {
        Ok(stream) => crate::workers::spawn_on(worker, async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::debug!(%peer, error = %e, "connection could not move to its worker"),
            }
        }),
        Err(e) => tracing::debug!(%peer, error = %e, "connection could not move to its worker"),
    }
}

/// Counts a connection from `peer` as not yet authenticated, unless its address has
/// `limits.max_pending_per_address` such connections already (refused: logged and counted).
fn pending_slot(state: &TransportState, peer: &Peer) -> Option<PendingGuard> {
    let limit = state.sessions_factory.limits.max_pending_per_address;
    let key = peer.address_key();
    let slot = state.pending.try_acquire(&key, limit);
    if slot.is_none() {
        crate::limit_log::limit_refused(
            "max_pending_per_address",
            format_args!("a connection from {key} ({limit} not yet authenticated from there)"),
        );
    }
    slot
}

/// Answers a connection refused before anything was read, in the protocol its first bytes
/// show (HTTP 503 with `Retry-After`, or a JSON-RPC error line), then closes it.
async fn refuse_pending(stream: TcpStream) {
    let mut first = [0u8; 1];
    let answer: &[u8] = match tokio::time::timeout(REFUSAL_PEEK, stream.peek(&mut first)).await {
        Ok(Ok(1)) if sniff(first[0]) == Sniffed::Line => {
            b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32000,\"message\":\"too many connections from this address are not yet authenticated (limits.max_pending_per_address); try again shortly\"}}\n"
        }
        Ok(Ok(1)) if sniff(first[0]) == Sniffed::Http => {
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: text/plain\r\ncontent-length: 84\r\nconnection: close\r\n\r\ntoo many connections from this address are not yet authenticated; try again shortly\n"
        }
        // TLS, or nothing in time: nothing the client could read.
        _ => return,
    };
    answer_and_close(stream, answer).await;
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    state: Arc<TransportState>,
    router: axum::Router,
    mut pending: PendingGuard,
) -> std::io::Result<()> {
    // One deadline for the whole unauthenticated phase before the transport's own first message
    // or request head: PROXY header, first bytes, TLS handshake (each stage had its own, and a
    // client could stretch them to several times `handshake_timeout_secs`).
    let by = Instant::now() + Duration::from_secs(state.sessions_factory.limits.handshake_timeout_secs);
    // Behind a trusted proxy, the client is who its PROXY header says, and is counted so.
    let named = match tokio::time::timeout_at(by, state.proxies.client_of(&mut stream, peer)).await {
        Ok(Ok(named)) => named,
        Ok(Err(e)) => {
            // Once a second at most: anyone may send one from an address not trusted.
            static REFUSED: std::sync::Mutex<crate::limit_log::OncePerSecond> =
                std::sync::Mutex::new(crate::limit_log::OncePerSecond::new());
            if let Some(suppressed) = REFUSED.lock().expect("refusal log lock").admit() {
                tracing::warn!(proxy = %peer, error = %e, also_refused_since_last_logged = suppressed, "PROXY header refused; connection closed");
            }
            return Ok(());
        }
        Err(_) => return Ok(()),
    };
    let peer = match named {
        Some(client) => {
            let client = Peer::at(client, true);
            pending = match pending_slot(&state, &client) {
                Some(slot) => slot,
                None => return Ok(()),
            };
            client
        }
        None => Peer::at(peer, false),
    };
    // The first bytes tell the protocol; the transport reads them again from `head`.
    let Some(head) = first_bytes(&mut stream, by).await? else { return Ok(()) };
    let first = head[0];
    match (&state.tls, sniff(first)) {
        (Some(tls), Sniffed::Tls) => {
            // The handshake is part of the unauthenticated phase and has the same deadline.
            let stream = Prefixed::new(head, stream);
            let (mut stream, subject) = match tokio::time::timeout_at(by, tls.accept(stream)).await {
                Ok(Ok(accepted)) => accepted,
                Ok(Err(e)) => {
                    crate::metrics::metrics().access.tls_refused("handshake");
                    tracing::debug!(peer = %peer.addr, error = %e, "TLS handshake failed");
                    return Ok(());
                }
                Err(_) => {
                    crate::metrics::metrics().access.tls_refused("handshake");
                    tracing::debug!(peer = %peer.addr, "TLS handshake not finished in time");
                    return Ok(());
                }
            };
            // The decrypted first bytes tell the protocol spoken inside, as for a plain one.
            let Ok(Some(head)) = first_bytes(&mut stream, by).await else { return Ok(()) };
            let peer = Peer { client_cert_subject: subject.map(Arc::from), ..peer };
            serve_stream(stream, head, peer, state, router, pending, by).await
        }
        (Some(tls), _) if tls.required() && is_line_start(first) => {
            refuse_plaintext(stream, first).await;
            Ok(())
        }
        // Plain HTTP on a TLS-only port: the probes only (health checks), the rest refused.
        (Some(tls), _) if tls.required() => {
            let probes = super::http::plaintext_probes(state.clone());
            serve_http(Prefixed::new(head, stream), peer, state, probes, Gated::No, pending, by).await
        }
        _ => serve_plain(stream, head, peer, state, router, pending, by).await,
    }
}

/// A connection's first bytes (up to [`FIRST_READ`]: what one read gives), by `by`; `None`
/// when the client closed or sent nothing in time.
async fn first_bytes<S: AsyncRead + Unpin>(stream: &mut S, by: Instant) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(FIRST_READ);
    match tokio::time::timeout_at(by, stream.read_buf(&mut head)).await {
        Ok(Ok(0)) | Err(_) => Ok(None),
        Ok(Ok(_)) => Ok(Some(head)),
        Ok(Err(e)) => Err(e),
    }
}

/// A plaintext connection whose first bytes are `head`: the newline transport reads and writes
/// the socket's halves directly. A newline client's first message is due `by`.
async fn serve_plain(
    stream: TcpStream,
    head: Vec<u8>,
    peer: Peer,
    state: Arc<TransportState>,
    router: axum::Router,
    pending: PendingGuard,
    by: Instant,
) -> std::io::Result<()> {
    if is_line_start(head[0]) {
        let _open = crate::metrics::metrics().clients.connection("line");
        let (read, write) = stream.into_split();
        let (read, write) = (Prefixed::new(head, read), TcpWrite::new(write));
        line::serve(read, write, peer, &state.sessions_factory, pending, by).await;
        return Ok(());
    }
    serve_http(Prefixed::new(head, stream), peer, state, router, Gated::Yes, pending, by).await
}

/// Any stream whose first bytes, `head`, were read from it (the decrypted side of TLS): served
/// by what they say like a plain one.
async fn serve_stream<S>(
    stream: S,
    head: Vec<u8>,
    peer: Peer,
    state: Arc<TransportState>,
    router: axum::Router,
    pending: PendingGuard,
    by: Instant,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let line = is_line_start(head[0]);
    let stream = Prefixed::new(head, stream);
    if line {
        let _open = crate::metrics::metrics().clients.connection("line");
        let (read, write) = tokio::io::split(stream);
        line::serve(read, write, peer, &state.sessions_factory, pending, by).await;
        return Ok(());
    }
    serve_http(stream, peer, state, router, Gated::Yes, pending, by).await
}

/// What a connection's first byte says it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A TLS record carrying a handshake (a ClientHello).
    Tls,
    /// Newline JSON-RPC: a JSON value (or whitespace before it).
    Line,
    /// Anything else is taken for HTTP.
    Http,
}

/// The transport sniff: one home for the rule, so that the listener and the fuzzers agree.
pub fn sniff(first: u8) -> Sniffed {
    match first {
        tls::HANDSHAKE_RECORD => Sniffed::Tls,
        b'{' | b'[' | b' ' | b'\t' | b'\r' | b'\n' => Sniffed::Line,
        _ => Sniffed::Http,
    }
}

fn is_line_start(first: u8) -> bool {
    sniff(first) == Sniffed::Line
}

/// Answers a plaintext client of a TLS-only port with a short, clear refusal in its own
/// protocol, then closes.
async fn refuse_plaintext(stream: TcpStream, first: u8) {
    crate::metrics::metrics().access.tls_refused("plaintext");
    let answer: &[u8] = if is_line_start(first) {
        b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"this port requires TLS\"}}\n"
    } else {
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 23\r\nconnection: close\r\n\r\nthis port requires TLS\n"
    };
    answer_and_close(stream, answer).await;
}

/// Writes a refusal and closes, within a second. Closing with the client's bytes unread would
/// reset the connection and could destroy the answer in flight: write, end our side, then
/// read what the client sent until it closes.
async fn answer_and_close(mut stream: TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Whether an HTTP connection is served the relay's routes behind [`super::gate`], or only the
/// plaintext probes of a TLS-only port (which load balancers' health checks reach as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gated {
    Yes,
    No,
}

/// An HTTP connection, whose first request head is due `by`.
async fn serve_http<S>(
    stream: S,
    peer: Peer,
    state: Arc<TransportState>,
    router: axum::Router,
    gated: Gated,
    pending: PendingGuard,
    by: Instant,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let handshake = Duration::from_secs(state.sessions_factory.limits.handshake_timeout_secs);
    // A client that reads nothing for as long as it may stay silent is gone.
    let idle = Duration::from_secs(state.sessions_factory.limits.idle_timeout_secs);
    // The connection's unauthenticated phase ends with its first request head on an open
    // relay, and with auth on once a request of it is vouched for ([`Unvouched`]); a
    // connection still in it at `by` is closed. Each request authenticates on its own, with
    // its body under `limits.body_timeout_secs`.
    let _open = crate::metrics::metrics().clients.connection("http");
    let max_buf = (state.sessions_factory.limits.max_header_bytes * 2).max(8192);
    let requires_auth = state.sessions_factory.requires_auth();
    let pending = Unvouched(Arc::new(Mutex::new(Some(pending))));
    let unvouched = pending.0.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        if !requires_auth {
            pending.vouch();
        } else if pending.is_pending() {
            // Only then: a request's extensions are allocated on first insert.
            request.extensions_mut().insert(pending.clone());
        }
        let answer = super::http::respond(state.clone(), router.clone(), gated == Gated::Yes, peer.clone(), request);
        async move { Ok::<_, std::convert::Infallible>(answer.await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake)
        // Heads up to twice the limit are read and refused with a clear 431 by the router;
        // hyper closes on larger ones before buffering them.
        .max_buf_size(max_buf)
        .serve_connection(TokioIo::new(WriteDeadline::new(stream, idle)), service)
        .with_upgrades();
    // hyper's `header_read_timeout` starts again at each head: the first one is also due `by`,
    // the one deadline of the connection's unauthenticated phase, which with auth on lasts
    // until a request is vouched for (requests answered `401` or probes do not end it).
    let first_head_late = async move {
        tokio::time::sleep_until(by).await;
        if unvouched.lock().expect("pending lock").is_none() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = connection => served.map_err(std::io::Error::other),
        () = first_head_late => Ok(()),
    }
}
