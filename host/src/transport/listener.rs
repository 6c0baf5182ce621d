//! The accept loop and the first-byte sniff.

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{HttpState, line};

/// Time a new connection has to send its first byte.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest HTTP request head (request line + headers) accepted.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Accepts connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, shutdown: CancellationToken) {
    let router = super::app(state.clone());
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
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let router = router.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, peer, state, router).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<HttpState>,
    router: axum::Router,
) -> std::io::Result<()> {
    let mut first = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(0)) | Err(_) => return Ok(()),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
    }
    if matches!(first[0], b'{' | b'[' | b' ' | b'\t' | b'\r' | b'\n') {
        line::serve(stream, peer, &state.sessions_factory).await;
        return Ok(());
    }
    // Handlers read the peer address through axum's `ConnectInfo` extractor.
    let service = TowerToHyperService::new(router.layer(axum::Extension(ConnectInfo(peer))));
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await
        .map_err(std::io::Error::other)
}
