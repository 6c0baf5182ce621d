//! Routes for operators rather than MCP clients: `/metrics` (Prometheus, OpenMetrics text),
//! `/status` (an HTML page) and `/status.json`. The main port serves them all, behind the
//! `admin` role when an auth plugin is configured (they name every backend and plugin); the
//! private listener (`metrics.listen`) serves them open, for Prometheus, and nothing else of
//! the relay.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::TransportState;
use super::browser_guard::{self, BrowserRules};
use super::http::bearer;
use crate::access::{Peer, Principal, TransportKind};
use crate::admin::{RelayTools, render_status_page};
use crate::metrics::metrics;

/// The content type of the OpenMetrics text format, which Prometheus negotiates.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics` on the private listener.
pub async fn render_metrics() -> Response {
    ([(header::CONTENT_TYPE, OPENMETRICS)], metrics().render()).into_response()
}

/// `GET /metrics` on the main port.
pub async fn main_port_metrics(
    State(state): State<Arc<TransportState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    match admitted(&state, &peer, &headers).await {
        Ok(()) => render_metrics().await,
        Err(refusal) => refusal,
    }
}

/// `GET /status` on the main port.
pub async fn status_page(
    State(state): State<Arc<TransportState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    match admitted(&state, &peer, &headers).await {
        Ok(()) => html(&state.relay_tools).await,
        Err(refusal) => refusal,
    }
}

/// `GET /status.json` on the main port.
pub async fn status_json(
    State(state): State<Arc<TransportState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    match admitted(&state, &peer, &headers).await {
        Ok(()) => axum::Json(state.relay_tools.status_report().await).into_response(),
        Err(refusal) => refusal,
    }
}

async fn html(tools: &RelayTools) -> Response {
    let page = render_status_page(&tools.status_report().await);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], page).into_response()
}

/// With an auth plugin, the status and metrics are for principals with the `admin` role (401
/// without a valid bearer token or certificate, 403 without the role); without one they are
/// as open as the relay.
async fn admitted(state: &TransportState, peer: &Peer, headers: &HeaderMap) -> Result<(), Response> {
    let factory = &state.sessions_factory;
    if !factory.requires_auth() {
        return Ok(());
    }
    let info = crate::access::ConnectInfo::new(TransportKind::Http, peer, bearer(headers));
    match factory.authenticate(&info).await {
        Ok(admitted) if admitted.principal.has_role(Principal::ADMIN) => Ok(()),
        Ok(_) => Err((StatusCode::FORBIDDEN, "this page needs the admin role").into_response()),
        Err(_) => {
            let mut refusal = (StatusCode::UNAUTHORIZED, "this page needs an admin's credential").into_response();
            refusal.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Err(refusal)
        }
    }
}

/// The private listener's routes, behind the same browser rules as the main port.
fn private_app(browser: Arc<BrowserRules>, tools: Arc<RelayTools>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/status", get(|State(tools): State<Arc<RelayTools>>| async move { html(&tools).await }))
        .route(
            "/status.json",
            get(|State(tools): State<Arc<RelayTools>>| async move { axum::Json(tools.status_report().await) }),
        )
        .with_state(tools)
        .layer(axum::middleware::from_fn_with_state(browser, browser_guard::enforce))
}

/// Serves the private listener until `shutdown`.
pub async fn serve_private(
    listener: TcpListener,
    browser: Arc<BrowserRules>,
    tools: Arc<RelayTools>,
    shutdown: CancellationToken,
) {
    let app = private_app(browser, tools);
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    if let Err(error) = served {
        tracing::error!(%error, "metrics listener failed");
    }
}
