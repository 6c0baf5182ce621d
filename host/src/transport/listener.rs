//! The accept loop and the first-byte sniff. Every connection counts against its address's cap
//! on unauthenticated connections until it has authenticated (newline) or sent a whole request
//! head (HTTP), and must get that far within `limits.handshake_timeout_secs`.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{TransportState, line};
use crate::admission::CountGuard;

/// Counts a connection as not yet authenticated until dropped.
pub type PendingGuard = CountGuard<IpAddr>;

/// Largest HTTP request head (request line + headers) accepted.
const MAX_HEADER_BYTES: usize = 64 * 1024;

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
        let limit = state.sessions_factory.limits.max_pending_per_address;
        let Some(pending) = state.pending.try_acquire(&peer.ip(), limit) else {
            tracing::debug!(%peer, limit, "connection refused: too many unauthenticated connections from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let router = router.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, peer, state, router, pending).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<TransportState>,
    router: axum::Router,
    pending: PendingGuard,
) -> std::io::Result<()> {
    let handshake = Duration::from_secs(state.sessions_factory.limits.handshake_timeout_secs);
    let mut first = [0u8; 1];
    match tokio::time::timeout(handshake, stream.peek(&mut first)).await {
        Ok(Ok(0)) | Err(_) => return Ok(()),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
    }
    if matches!(first[0], b'{' | b'[' | b' ' | b'\t' | b'\r' | b'\n') {
        let _open = crate::metrics::metrics().connection("line");
        line::serve(stream, peer, &state.sessions_factory, pending).await;
        return Ok(());
    }
    // Handlers read the peer address through axum's `ConnectInfo` extractor. The first whole
    // request head ends the connection's unauthenticated phase (each request then
    // authenticates on its own, with its body under `limits.body_timeout_secs`).
    let _open = crate::metrics::metrics().connection("http");
    let router = router.layer(axum::Extension(ConnectInfo(peer)));
    let pending = Mutex::new(Some(pending));
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        pending.lock().expect("pending lock").take();
        router.clone().oneshot(request.map(axum::body::Body::new))
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await
        .map_err(std::io::Error::other)
}
